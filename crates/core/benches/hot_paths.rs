//! Hot paths of wharf-core, measured with criterion (`cargo bench -p wharf-core`): the digest of
//! content, decompress+apply of a gzip layer, and one metadata transaction.

use std::io::Write;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use wharf_core::content::Store;
use wharf_core::diff::{apply_layer, ApplyMode};
use wharf_core::metadata::{Db, Descriptor, Image, Labels};
use wharf_core::Digest;

/// A gzip'd layer of `files` files of `size` bytes each, with a directory per 64 files.
fn layer(files: usize, size: usize) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    for i in 0..files {
        let mut h = tar::Header::new_gnu();
        h.set_size(size as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        let path = format!("d{}/f{i}", i / 64);
        tar.append_data(&mut h, path, data.as_slice())
            .expect("tar entry");
    }
    let raw = tar.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).expect("gzip");
    gz.finish().expect("gzip")
}

fn digest(c: &mut Criterion) {
    let data = vec![7u8; 8 << 20];
    let mut g = c.benchmark_group("digest");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("sha256 8 MiB", |b| b.iter(|| Digest::of(&data)));
    g.finish();
}

fn apply(c: &mut Criterion) {
    let gz = layer(1024, 16 << 10);
    let mut g = c.benchmark_group("apply");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(1024 * (16 << 10)));
    g.bench_function("gzip layer, 1024 x 16 KiB files", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            |dir| {
                apply_layer(
                    gz.as_slice(),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                    dir.path(),
                    ApplyMode::Native,
                    None,
                )
                .expect("apply")
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn metadata(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("content")).expect("store");
    let db = Db::open(&dir.path().join("meta.db"), store).expect("db");
    db.namespace_create("bench", Labels::new())
        .expect("namespace");
    let mut n = 0u64;
    c.bench_function("metadata: image create (one transaction)", |b| {
        b.iter(|| {
            n += 1;
            db.image_create(
                "bench",
                Image {
                    name: format!("example.com/img:{n}"),
                    labels: Labels::new(),
                    target: Descriptor {
                        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                        digest: format!("sha256:{:064x}", n),
                        size: 1,
                        ..Default::default()
                    },
                    created_at: SystemTime::now(),
                    updated_at: SystemTime::now(),
                },
            )
            .expect("create")
        })
    });
    c.bench_function("metadata: image get", |b| {
        b.iter(|| db.image_get("bench", "example.com/img:1").expect("get"))
    });
}

/// OCI spec generation for a `wharf run` / CRI container: image config merge, default mounts,
/// capabilities and the default seccomp profile resolved against them, serialised as the
/// CLI sends it.
fn spec(c: &mut Criterion) {
    let image: wharf_core::images::ImageConfig = match serde_json::from_value(serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": []}
    })) {
        Ok(i) => i,
        Err(e) => panic!("image config: {e}"),
    };
    let opts = wharf_core::spec::SpecOptions {
        args: Some(vec!["httpd".into(), "-f".into()]),
        env: vec!["A=1".into()],
        hostname: Some("web".into()),
        cap_drop: vec!["NET_RAW".into()],
        memory_limit: Some(64 << 20),
        ..Default::default()
    };
    c.bench_function("spec/generate+serialize", |b| {
        b.iter(|| {
            let s = wharf_core::spec::generate(&image, None, &opts).map(|s| serde_json::to_vec(&s));
            assert!(matches!(s, Ok(Ok(_))));
        })
    });
}

criterion_group!(benches, digest, apply, metadata, spec);
criterion_main!(benches);
