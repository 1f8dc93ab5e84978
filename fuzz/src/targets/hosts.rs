//! hosts.toml (`wharf_distribution::hosts::parse_hosts_toml`): no panic on any file, and every
//! host it yields is an http(s) URL on a non-empty host with an absolute API path.

use std::path::Path;

use wharf_distribution::hosts::parse_hosts_toml;

pub const TARGET: crate::Target = crate::Target {
    name: "hosts",
    run,
    seeds,
    dictionary: &[
        b"server = \"https://registry.example\"\n",
        b"[host.\"http://mirror:5000\"]\n",
        b"capabilities = [\"pull\", \"resolve\", \"push\"]\n",
        b"ca = \"ca.pem\"\n",
        b"client = [[\"c.pem\", \"k.pem\"]]\n",
        b"skip_verify = true\n",
        b"override_path = true\n",
        b"[header]\nx-a = [\"1\", \"2\"]\n",
        b"://",
        b"/v2",
        b"\"",
        b"[",
        b"]",
    ],
};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = Path::new("/nonexistent/certs.d/registry.example");
    let Ok(hosts) = parse_hosts_toml("registry.example:5000", text, base) else {
        return;
    };
    assert!(!hosts.is_empty(), "no server host for {text:?}");
    for h in hosts {
        assert!(h.scheme == "http" || h.scheme == "https", "{h:?}");
        assert!(!h.host.is_empty() && !h.host.contains('/'), "{h:?}");
        assert!(h.path.starts_with('/'), "{h:?}");
        let url = h.url("/library/busybox/manifests/latest");
        assert!(
            url.starts_with(&format!("{}://{}/", h.scheme, h.host)),
            "{url}"
        );
    }
}

fn seeds() -> Vec<Vec<u8>> {
    [
        "server = \"https://registry.example:5000\"\n",
        "server = \"http://127.0.0.1:5000/v2/prefix\"\noverride_path = true\n\n[host.\"https://mirror.example\"]\ncapabilities = [\"pull\", \"resolve\"]\nca = [\"/etc/ca.pem\", \"rel.pem\"]\nclient = [[\"c.pem\", \"k.pem\"], \"both.pem\"]\nskip_verify = true\n[host.\"https://mirror.example\".header]\nx-custom = \"1\"\n",
        "[header]\nauthorization = [\"Basic x\", \"y\"]\n[host.\"mirror\"]\n",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}
