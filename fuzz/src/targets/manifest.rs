//! Manifests, indexes and image configs as wharf-core parses them for pulls, unpacks and spec
//! generation: no panic on any input, and what parses has digests that parse.

use wharf_core::images::{self, Platform};
use wharf_core::spec::{self, SpecOptions};
use wharf_core::Digest;

pub const TARGET: crate::Target = crate::Target {
    name: "manifest",
    run,
    seeds,
    dictionary: &[
        b"\"schemaVersion\":2",
        b"\"mediaType\":",
        b"\"digest\":\"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"",
        b"\"size\":",
        b"\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}",
        b"\"variant\":\"v8\"",
        b"\"diff_ids\":[",
        b"\"annotations\":{}",
        b"-1",
        b"1e999",
        b"null",
    ],
};

pub fn run(data: &[u8]) {
    if let Ok(m) = images::parse_manifest(data) {
        assert_eq!(m.schema_version, 2);
        for d in std::iter::once(&m.config).chain(&m.layers) {
            assert!(Digest::parse(&d.digest).is_ok(), "{:?}", d.digest);
            let _ = images::is_layer(&d.media_type);
        }
    }
    if let Ok(i) = images::parse_index(data) {
        let host = Platform::host();
        for m in &i.manifests {
            assert!(Digest::parse(&m.digest).is_ok(), "{:?}", m.digest);
            if let Some(p) = &m.platform {
                let _ = host.matches(p);
            }
        }
    }
    if let Ok(c) = images::parse_config(data) {
        let diffs: Vec<Digest> = c
            .rootfs
            .diff_ids
            .iter()
            .map(|d| Digest::parse(d).expect("parse_config checked every diff id"))
            .collect();
        assert_eq!(images::chain_ids(&diffs).len(), diffs.len());
        // The image's own settings (User, Env, Cmd, WorkingDir…) feed the runtime spec.
        let _ = spec::generate(&c, None, &SpecOptions::default());
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = Platform::parse(s);
    }
}

const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn seeds() -> Vec<Vec<u8>> {
    vec![
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D}","size":10,"annotations":{{"a":"b"}}}}]}}"#
        ),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D}","size":5,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#
        ),
        format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"User":"1000:1000","Env":["PATH=/bin"],"Entrypoint":["/bin/sh"],"Cmd":["-c","true"],"WorkingDir":"/","ExposedPorts":{{"80/tcp":{{}}}},"Volumes":{{"/data":{{}}}},"Labels":{{"a":"b"}},"StopSignal":"SIGTERM"}},"rootfs":{{"type":"layers","diff_ids":["{D}","{D}"]}}}}"#
        ),
        "linux/arm64/v8".to_string(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}
