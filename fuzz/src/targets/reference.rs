//! Image references (`wharf_distribution::Reference`): parsing never panics, a parsed reference
//! prints as a string that parses back to itself, and its domain is safe to use as a directory
//! name under the hosts.toml directory (`certs.d/<domain>`).

use wharf_distribution::Reference;

pub const TARGET: crate::Target = crate::Target {
    name: "reference",
    run,
    seeds,
    dictionary: &[
        b"docker.io/",
        b"library/",
        b":latest",
        b"@sha256:",
        b"localhost:5000/",
        b"[::1]:5000/",
        b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        b"..",
        b"/",
        b"__",
        b"--",
    ],
};

pub fn run(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(r) = Reference::parse(s) else {
        return;
    };
    let printed = r.to_string();
    let again = Reference::parse(&printed)
        .unwrap_or_else(|e| panic!("{s:?} printed as {printed:?}, which does not parse: {e}"));
    assert_eq!(again, r, "{s:?} -> {printed:?} is not a fixed point");
    let domain = r.domain();
    assert!(
        !domain.is_empty() && !domain.contains('/') && domain != "." && domain != "..",
        "{s:?}: domain {domain:?} is not a single path component"
    );
    assert!(
        r.path()
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".."),
        "{s:?}: path {:?} has an empty or dot component",
        r.path()
    );
    let _ = (r.name(), r.object());
}

fn seeds() -> Vec<Vec<u8>> {
    [
        "busybox",
        "library/busybox:1.36",
        "docker.io/library/busybox:latest",
        "index.docker.io/library/busybox",
        "127.0.0.1:5000/a/b/c:tag",
        "localhost/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "reg.example:443/ns/img:t@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "[::1]:5000/img",
        "a__b/c-d.e:Tag_1",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    // Regression: a short name that only normalises beyond the 255-character limit.
    .chain(std::iter::once("a".repeat(240).into_bytes()))
    .collect()
}
