//! Layer tars applied by wharf-core (`diff::apply::apply_tar`) into a scratch root, in both
//! whiteout modes. After every input the harness checks that nothing outside the root changed:
//! a canary directory beside the root (at a fixed path, so inputs can name it absolutely or
//! through `..` and symlinks) must be exactly as before, and the shared parent must hold nothing
//! new. Any write, link, chmod, xattr or removal that escaped the root fails the check.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use wharf_core::diff::apply::apply_tar;
use wharf_core::diff::ApplyMode;

/// Parent of the canary and of each process's scratch roots (fixed: inputs may name it).
pub const BASE: &str = "/var/tmp/wharf-fuzz-apply";
const CANARY: &str = "/var/tmp/wharf-fuzz-apply/canary";
/// Entries larger than this are skipped (a sparse entry can claim gigabytes of holes).
const MAX_ENTRY: u64 = 1 << 20;

pub const TARGET: crate::Target = crate::Target {
    name: "tar_apply",
    run,
    seeds,
    dictionary: &[
        b"../",
        b"..",
        b"/var/tmp/wharf-fuzz-apply/canary",
        b"/var/tmp/wharf-fuzz-apply/canary/file",
        b"canary/file",
        b".wh.",
        b".wh..wh..opq",
        b"ustar\x00",
        b"ustar  \x00",
        b"././@LongLink",
        b"SCHILY.xattr.user.x=1\n",
        b"linkpath=",
        b"path=",
    ],
};

/// What an outside observer can see of a directory tree: per path, its type, mode, size, link
/// count, owner, mtime and (for files and symlinks) content.
type Snapshot = BTreeMap<PathBuf, String>;

fn snapshot(dir: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let content = if m.file_type().is_symlink() {
            format!("-> {:?}", std::fs::read_link(&p).ok())
        } else if m.is_file() {
            format!("{:?}", std::fs::read(&p).ok())
        } else {
            String::new()
        };
        out.insert(
            p.clone(),
            format!(
                "mode={:o} size={} nlink={} uid={} gid={} mtime={}.{} {content}",
                m.mode(),
                m.size(),
                m.nlink(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec()
            ),
        );
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())) {
                stack.push(e.unwrap_or_else(|e| panic!("{}: {e}", p.display())).path());
            }
        }
    }
    out
}

struct Env {
    canary: Snapshot,
    root: PathBuf,
}

/// Creates the canary once, atomically (a finished directory renamed into place), so runs in
/// parallel processes see it whole.
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        std::fs::create_dir_all(BASE).unwrap_or_else(|e| panic!("create {BASE}: {e}"));
        if !Path::new(CANARY).exists() {
            let tmp = PathBuf::from(format!("{BASE}/.canary-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(tmp.join("sub")).expect("create canary");
            std::fs::write(tmp.join("file"), b"canary").expect("write canary");
            std::fs::write(tmp.join("sub/deep"), b"canary").expect("write canary");
            std::os::unix::fs::symlink("file", tmp.join("link")).expect("canary symlink");
            if std::fs::rename(&tmp, CANARY).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        Env {
            canary: snapshot(Path::new(CANARY)),
            root: PathBuf::from(format!("{BASE}/root-{}", std::process::id())),
        }
    })
}

/// Skips inputs with entries too large to be worth writing.
fn small_enough(tar: &[u8]) -> bool {
    let mut a = tar::Archive::new(tar);
    let Ok(entries) = a.entries() else {
        return false;
    };
    for e in entries {
        match e {
            Ok(e) if e.size() > MAX_ENTRY => return false,
            Ok(e) if e.header().entry_type().is_gnu_sparse() => return false,
            Ok(_) => {}
            Err(_) => return true,
        }
    }
    true
}

pub fn run(data: &[u8]) {
    let Some((&mode, tar)) = data.split_first() else {
        return;
    };
    if !small_enough(tar) {
        return;
    }
    let env = env();
    let root = &env.root;
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
    let mode = if mode & 1 == 0 {
        ApplyMode::Native
    } else {
        ApplyMode::Overlay
    };
    let _ = apply_tar(&mut tar::Archive::new(tar), root, mode);

    let now = snapshot(Path::new(CANARY));
    if now != env.canary {
        let diff: Vec<_> = now
            .iter()
            .filter(|(k, v)| env.canary.get(*k) != Some(v))
            .map(|(k, v)| format!("{}: {v}", k.display()))
            .chain(
                env.canary
                    .keys()
                    .filter(|k| !now.contains_key(*k))
                    .map(|k| format!("{}: gone", k.display())),
            )
            .collect();
        panic!("the layer changed the canary outside the root: {diff:#?}");
    }
    for e in std::fs::read_dir(BASE).unwrap_or_else(|e| panic!("{BASE}: {e}")) {
        let name = e.expect("read base").file_name();
        let name = name.to_string_lossy();
        assert!(
            name == "canary" || name.starts_with("root-") || name.starts_with(".canary-"),
            "the layer created {BASE}/{name} outside the root"
        );
    }
    let m = std::fs::symlink_metadata(root).expect("stat root");
    assert!(m.is_dir(), "the root itself was replaced: {m:?}");
    let _ = std::fs::remove_dir_all(&env.root);
}

/// One raw tar entry (GNU header, name and link as given, `..` included: tar::Builder refuses
/// those, which is the point here).
fn entry(name: &str, kind: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    let gnu = h.as_gnu_mut().expect("a GNU header");
    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(0o755);
    h.set_size(data.len() as u64);
    h.set_mtime(1_000_000);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// A pax extended header (`x`) carrying `records` for the next entry.
fn pax(records: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in records {
        let rest = format!(" {k}={v}\n");
        let mut len = rest.len() + 1;
        while format!("{len}{rest}").len() != len {
            len += 1;
        }
        body.extend_from_slice(format!("{len}{rest}").as_bytes());
    }
    entry("pax", b'x', "", &body)
}

fn layer(mode: u8, entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![mode];
    for e in entries {
        out.extend_from_slice(e);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

fn seeds() -> Vec<Vec<u8>> {
    let f = |n: &str| entry(n, b'0', "", b"evil");
    let dir = |n: &str| entry(n, b'5', "", b"");
    let sym = |n: &str, to: &str| entry(n, b'2', to, b"");
    let hard = |n: &str, to: &str| entry(n, b'1', to, b"");
    let mut out = Vec::new();
    for mode in [0u8, 1] {
        out.extend([
            layer(mode, &[dir("a/"), f("a/f"), dir("./")]),
            layer(
                mode,
                &[f("../canary/evil"), f("../../wharf-fuzz-apply/canary/x")],
            ),
            layer(mode, &[f(&format!("{CANARY}/evil"))]),
            layer(mode, &[sym("l", CANARY), f("l/evil"), dir("l/d/")]),
            layer(mode, &[sym("l", "../canary"), f("l/evil"), f("l/sub/deep")]),
            layer(mode, &[sym("l", "../../canary/file"), f("l")]),
            layer(
                mode,
                &[
                    hard("h", &format!("{CANARY}/file")),
                    hard("h2", "../canary/file"),
                    f("h"),
                ],
            ),
            layer(mode, &[sym("l", "../canary/file"), hard("h", "l"), f("h")]),
            layer(
                mode,
                &[
                    sym("l", CANARY),
                    f(".wh.canary"),
                    f("../.wh.canary"),
                    f("l/.wh.file"),
                    f("l/.wh..wh..opq"),
                ],
            ),
            layer(
                mode,
                &[
                    sym("l", "../canary/file"),
                    pax(&[("SCHILY.xattr.user.fuzz", "1")]),
                    sym("l", "../canary/file"),
                    pax(&[("path", "../canary/paxevil")]),
                    f("x"),
                ],
            ),
            layer(
                mode,
                &[
                    sym("s", "../canary/sub"),
                    entry("s/", b'5', "", b""),
                    entry("c", b'3', "", b""),
                    entry("p", b'6', "", b""),
                ],
            ),
        ]);
    }
    out
}
