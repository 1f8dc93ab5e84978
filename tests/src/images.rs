//! OCI test images built from the installed static busybox — never downloaded — and pushed to a
//! test registry. Layers are deterministic (fixed mtimes, fixed order) so digests are stable.

use std::io::Write;

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

use crate::registry::Registry;

pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

const MTIME: u64 = 1_700_000_000;

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// One entry of a test layer.
#[derive(Clone, Debug)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    File {
        path: String,
        mode: u32,
        uid: u64,
        gid: u64,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
    /// Raw tar entry with an arbitrary name (for hostile layers): a regular file.
    RawFile {
        name: Vec<u8>,
        data: Vec<u8>,
    },
    /// Raw symlink or hard link with arbitrary bytes.
    RawLink {
        name: Vec<u8>,
        target: Vec<u8>,
        hard: bool,
    },
}

pub fn dir(path: &str, mode: u32) -> Entry {
    Entry::Dir {
        path: path.into(),
        mode,
        uid: 0,
        gid: 0,
    }
}

pub fn file(path: &str, mode: u32, data: &[u8]) -> Entry {
    Entry::File {
        path: path.into(),
        mode,
        uid: 0,
        gid: 0,
        data: data.to_vec(),
    }
}

pub fn owned_file(path: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) -> Entry {
    Entry::File {
        path: path.into(),
        mode,
        uid,
        gid,
        data: data.to_vec(),
    }
}

pub fn symlink(path: &str, target: &str) -> Entry {
    Entry::Symlink {
        path: path.into(),
        target: target.into(),
    }
}

pub fn hardlink(path: &str, target: &str) -> Entry {
    Entry::Hardlink {
        path: path.into(),
        target: target.into(),
    }
}

fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(MTIME);
    h
}

/// Writes `name` into the header's name field as raw bytes, bypassing the tar crate's checks.
fn raw_name(h: &mut tar::Header, name: &[u8]) {
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
}

fn raw_link(h: &mut tar::Header, target: &[u8]) {
    let field = &mut h.as_old_mut().linkname;
    field.fill(0);
    field[..target.len().min(100)].copy_from_slice(&target[..target.len().min(100)]);
}

/// The uncompressed tar of `entries`, in order.
pub fn tar(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            Entry::Dir {
                path,
                mode,
                uid,
                gid,
            } => {
                let mut h = header(tar::EntryType::Directory, *mode, *uid, *gid, 0);
                b.append_data(
                    &mut h,
                    format!("{}/", path.trim_end_matches('/')),
                    std::io::empty(),
                )?;
            }
            Entry::File {
                path,
                mode,
                uid,
                gid,
                data,
            } => {
                let mut h = header(
                    tar::EntryType::Regular,
                    *mode,
                    *uid,
                    *gid,
                    data.len() as u64,
                );
                b.append_data(&mut h, path, data.as_slice())?;
            }
            Entry::Symlink { path, target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
                b.append_link(&mut h, path, target)?;
            }
            Entry::Hardlink { path, target } => {
                let mut h = header(tar::EntryType::Link, 0o644, 0, 0, 0);
                b.append_link(&mut h, path, target)?;
            }
            Entry::RawFile { name, data } => {
                let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, data.len() as u64);
                raw_name(&mut h, name);
                h.set_cksum();
                b.append(&h, data.as_slice())?;
            }
            Entry::RawLink { name, target, hard } => {
                let kind = if *hard {
                    tar::EntryType::Link
                } else {
                    tar::EntryType::Symlink
                };
                let mut h = header(kind, 0o777, 0, 0, 0);
                raw_name(&mut h, name);
                raw_link(&mut h, target);
                h.set_cksum();
                b.append(&h, std::io::empty())?;
            }
        }
    }
    Ok(b.into_inner()?)
}

pub fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

#[derive(Clone, Debug)]
pub struct Layer {
    pub entries: Vec<Entry>,
    pub tar: Vec<u8>,
    pub gz: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
}

impl Layer {
    pub fn new(entries: Vec<Entry>) -> Result<Layer> {
        let tar = tar(&entries)?;
        let gz = gzip(&tar)?;
        Ok(Layer {
            digest: sha256(&gz),
            diff_id: sha256(&tar),
            entries,
            tar,
            gz,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Image {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

impl Image {
    /// An OCI image of `layers` for `arch` running `cmd`.
    pub fn new(layers: Vec<Layer>, arch: &str, cmd: &[&str]) -> Result<Image> {
        Image::with_config(
            layers,
            arch,
            serde_json::json!({
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": cmd,
                "WorkingDir": "/",
            }),
        )
    }

    /// An OCI image of `layers` for `arch` whose runtime config (`config` in the image config
    /// JSON: Cmd, Env, Volumes...) is `runtime`.
    pub fn with_config(
        layers: Vec<Layer>,
        arch: &str,
        runtime: serde_json::Value,
    ) -> Result<Image> {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": runtime,
            "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>() },
            "history": layers.iter().map(|_| serde_json::json!({"created_by": "wharf test fixture"})).collect::<Vec<_>>(),
        }))?;
        let config_digest = sha256(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": { "mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config.len() },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": MEDIA_LAYER_GZIP, "digest": l.digest, "size": l.gz.len()
            })).collect::<Vec<_>>(),
        }))?;
        Ok(Image {
            manifest_digest: sha256(&manifest),
            layers,
            config,
            config_digest,
            manifest,
        })
    }
}

/// The busybox applets the test image links to.
pub const APPLETS: &[&str] = &[
    "sh",
    "echo",
    "true",
    "false",
    "sleep",
    "cat",
    "id",
    "ls",
    "env",
    "pwd",
    "mkdir",
    "rm",
    "touch",
    "stat",
    "wc",
    "head",
    "tail",
    "grep",
    "sed",
    "dd",
    "hostname",
    "ps",
    "kill",
    "test",
    "readlink",
    "tty",
    "uname",
    "printf",
    "cp",
    "mv",
    "ln",
    "chmod",
    "chown",
    "find",
    "sha256sum",
    "xargs",
    "seq",
    "yes",
    "nproc",
    "mount",
    "umount",
];

/// A one-layer busybox image: `/bin/busybox` with its applets, passwd/group with `user` (1000).
pub fn busybox() -> Result<Image> {
    let bb = std::fs::read("/bin/busybox")
        .context("read /bin/busybox (Debian package busybox-static)")?;
    let mut e = vec![dir("bin", 0o755), file("bin/busybox", 0o755, &bb)];
    for a in APPLETS {
        e.push(symlink(&format!("bin/{a}"), "busybox"));
    }
    e.extend([
        dir("dev", 0o755),
        dir("etc", 0o755),
        file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
        ),
        file("etc/group", 0o644, b"root:x:0:\nuser:x:1000:\n"),
        dir("home", 0o755),
        Entry::Dir {
            path: "home/user".into(),
            mode: 0o755,
            uid: 1000,
            gid: 1000,
        },
        dir("proc", 0o755),
        dir("root", 0o700),
        dir("sys", 0o755),
        dir("tmp", 0o1777),
        dir("usr", 0o755),
        dir("var", 0o755),
    ]);
    Image::new(vec![Layer::new(e)?], "amd64", &["sh"])
}

/// busybox and a layer with `/data` (uid 1000, 0750) holding `seed` (uid 1000, 0640), plus
/// `extra`, declaring `volumes` (a Dockerfile's `VOLUME`): for the volume tests.
pub fn with_volumes(extra: Vec<Entry>, volumes: &[&str]) -> Result<Image> {
    let base = busybox()?;
    let mut entries = vec![
        Entry::Dir {
            path: "data".into(),
            mode: 0o750,
            uid: 1000,
            gid: 1000,
        },
        owned_file("data/seed", 0o640, 1000, 1000, b"seeded\n"),
    ];
    entries.extend(extra);
    let volumes: serde_json::Map<String, serde_json::Value> = volumes
        .iter()
        .map(|v| (v.to_string(), serde_json::json!({})))
        .collect();
    let base_layer = base
        .layers
        .into_iter()
        .next()
        .context("busybox has a layer")?;
    Image::with_config(
        vec![base_layer, Layer::new(entries)?],
        "amd64",
        serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh"], "Volumes": volumes}),
    )
}

/// Layers of the multi-layer image: whiteouts of a file and of a directory, an opaque directory,
/// a hard link, relative and absolute symlinks, setuid/setgid files, uid 1000 files, an empty dir,
/// a file overwritten in a later layer.
pub fn multilayer_layers() -> Vec<Vec<Entry>> {
    vec![
        vec![
            dir("etc", 0o755),
            file("etc/a", 0o644, b"a from layer 1\n"),
            file("etc/b", 0o644, b"b from layer 1\n"),
            dir("gone", 0o755),
            file("gone/x", 0o644, b"x"),
            dir("gone/sub", 0o755),
            file("gone/sub/y", 0o644, b"y"),
            dir("opq", 0o755),
            file("opq/old1", 0o644, b"old1"),
            file("opq/old2", 0o644, b"old2"),
            file("keep", 0o644, b"kept through all layers\n"),
            dir("empty", 0o700),
        ],
        vec![
            file("etc/.wh.a", 0o644, b""),
            file(".wh.gone", 0o644, b""),
            dir("opq", 0o755),
            file("opq/.wh..wh..opq", 0o644, b""),
            file("opq/new", 0o644, b"new in layer 2"),
            hardlink("keep-link", "keep"),
            symlink("rel-link", "etc/b"),
            file("suid", 0o4755, b"#!/bin/sh\necho suid\n"),
            file("sgid", 0o2755, b"#!/bin/sh\necho sgid\n"),
            dir("home", 0o755),
            Entry::Dir {
                path: "home/user".into(),
                mode: 0o750,
                uid: 1000,
                gid: 1000,
            },
            owned_file("home/user/notes", 0o600, 1000, 1000, b"user's file\n"),
        ],
        vec![
            file("etc/b", 0o640, b"b rewritten in layer 3\n"),
            symlink("abs-link", "/etc/b"),
            dir("gone", 0o711),
            file("gone/again", 0o644, b"a new gone/ in layer 3"),
        ],
    ]
}

pub fn multilayer() -> Result<Image> {
    let layers = multilayer_layers()
        .into_iter()
        .map(Layer::new)
        .collect::<Result<Vec<_>>>()?;
    Image::new(layers, "amd64", &["sh"])
}

fn put(url: &str, content_type: &str, data: &[u8]) -> Result<()> {
    ureq::put(url)
        .set("Content-Type", content_type)
        .send_bytes(data)
        .with_context(|| format!("PUT {url}"))?;
    Ok(())
}

/// Uploads one blob (monolithic POST + PUT ?digest=).
pub fn push_blob(reg: &Registry, repo: &str, digest: &str, data: &[u8]) -> Result<()> {
    let url = format!("{}/v2/{repo}/blobs/uploads/", reg.url());
    let resp = ureq::post(&url)
        .send_bytes(&[])
        .with_context(|| format!("POST {url}"))?;
    let loc = resp
        .header("Location")
        .context("upload has no Location")?
        .to_string();
    let loc = if loc.starts_with("http") {
        loc
    } else {
        format!("{}{loc}", reg.url())
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    put(
        &format!("{loc}{sep}digest={digest}"),
        "application/octet-stream",
        data,
    )
}

/// Pushes an image's blobs and its manifest as `repo:tag`.
pub fn push(reg: &Registry, repo: &str, tag: &str, img: &Image) -> Result<()> {
    for l in &img.layers {
        push_blob(reg, repo, &l.digest, &l.gz)?;
    }
    push_blob(reg, repo, &img.config_digest, &img.config)?;
    put(
        &format!("{}/v2/{repo}/manifests/{tag}", reg.url()),
        MEDIA_MANIFEST,
        &img.manifest,
    )
}

/// Pushes a raw manifest (any media type) as `repo:tag`.
pub fn push_manifest(
    reg: &Registry,
    repo: &str,
    tag: &str,
    media_type: &str,
    data: &[u8],
) -> Result<()> {
    put(
        &format!("{}/v2/{repo}/manifests/{tag}", reg.url()),
        media_type,
        data,
    )
}
