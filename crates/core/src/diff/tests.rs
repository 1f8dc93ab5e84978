//! Apply tests, including hostile layers: each checks the host filesystem afterwards.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;
use crate::{Digest, Error};

enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a [u8]),
    Owned(&'a str, u32, u32, &'a [u8]),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Fifo(&'a str),
    Xattr(&'a str, &'a str, &'a [u8]),
}

/// A tar whose names are written raw (the tar crate's safe API refuses `..`).
fn tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let (name, link, data): (&str, Option<&str>, &[u8]) = match e {
            E::Dir(n, m) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*m);
                (n, None, &[])
            }
            E::File(n, m, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*m);
                (n, None, d)
            }
            E::Owned(n, m, id, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*m);
                h.set_uid(*id as u64);
                h.set_gid(*id as u64);
                (n, None, d)
            }
            E::Sym(n, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                (n, Some(t), &[])
            }
            E::Hard(n, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                (n, Some(t), &[])
            }
            E::Fifo(n) => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o600);
                (n, None, &[])
            }
            E::Xattr(n, k, v) => {
                b.append_pax_extensions([(format!("SCHILY.xattr.{k}").as_str(), *v)])
                    .unwrap();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                (n, None, b"x")
            }
        };
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

struct Sandbox {
    _t: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

/// A root plus a canary directory next to it that no layer may touch.
fn sandbox() -> Sandbox {
    let t = tempfile::Builder::new()
        .prefix("wharf-diff")
        .tempdir_in("/var/tmp")
        .unwrap();
    let root = t.path().join("a/b/root");
    std::fs::create_dir_all(&root).unwrap();
    let outside = t.path().join("a/b/outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("canary"), "untouched").unwrap();
    Sandbox {
        root,
        outside,
        _t: t,
    }
}

fn apply(s: &Sandbox, entries: &[E], mode: ApplyMode) -> crate::Result<ApplyResult> {
    apply_layer(tar(entries).as_slice(), TAR, &s.root, mode, None)
}

fn assert_outside_untouched(s: &Sandbox) {
    let names: Vec<_> = std::fs::read_dir(&s.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "outside dir changed: {names:?}");
    assert_eq!(
        std::fs::read_to_string(s.outside.join("canary")).unwrap(),
        "untouched"
    );
    // Nothing was created next to the root or in the temp dir's parents either.
    let parent: Vec<_> = std::fs::read_dir(s.root.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(parent.len(), 2, "{parent:?}");
}

#[test]
fn dotdot_and_absolute_paths_stay_inside() {
    for mode in [ApplyMode::Native, ApplyMode::Overlay] {
        let s = sandbox();
        apply(
            &s,
            &[
                E::File("../../outside/evil", 0o644, b"x"),
                E::File("/abs/path", 0o644, b"y"),
            ],
            mode,
        )
        .unwrap();
        assert_outside_untouched(&s);
        assert!(s.root.join("outside/evil").exists());
        assert_eq!(std::fs::read(s.root.join("abs/path")).unwrap(), b"y");
        assert!(!Path::new("/abs/path").exists());
    }
}

#[test]
fn symlink_to_root_then_write_through_it_lands_inside() {
    let s = sandbox();
    apply(
        &s,
        &[
            E::Sym("a", "/"),
            E::File("a/etc/passwd", 0o644, b"root::0:0::/:/bin/sh\n"),
        ],
        ApplyMode::Native,
    )
    .unwrap();
    assert_eq!(
        std::fs::read_link(s.root.join("a")).unwrap(),
        Path::new("/")
    );
    assert_eq!(
        std::fs::read(s.root.join("etc/passwd")).unwrap(),
        b"root::0:0::/:/bin/sh\n"
    );
    assert_ne!(
        std::fs::read("/etc/passwd").unwrap(),
        b"root::0:0::/:/bin/sh\n"
    );
    assert_outside_untouched(&s);
}

#[test]
fn relative_and_chained_symlinks_cannot_escape() {
    let s = sandbox();
    apply(
        &s,
        &[
            E::Sym("up", "../../.."),
            E::File("up/outside/x", 0o644, b"1"),
            E::Sym("b", "/"),
            E::Sym("c", "b"),
            E::File("c/outside/y", 0o644, b"2"),
        ],
        ApplyMode::Native,
    )
    .unwrap();
    assert_outside_untouched(&s);
    assert!(s.root.join("outside/x").exists() && s.root.join("outside/y").exists());
}

#[test]
fn symlink_loops_fail_cleanly() {
    let s = sandbox();
    let err = apply(
        &s,
        &[
            E::Sym("l1", "l2"),
            E::Sym("l2", "l1"),
            E::File("l1/x", 0o644, b"x"),
        ],
        ApplyMode::Native,
    )
    .unwrap_err();
    assert!(err.to_string().contains("l1"), "{err}");
    assert_outside_untouched(&s);
}

#[test]
fn hardlinks_cannot_reach_host_files() {
    let s = sandbox();
    let err = apply(&s, &[E::Hard("h1", "../outside/canary")], ApplyMode::Native).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let err = apply(&s, &[E::Hard("h2", "/etc/passwd")], ApplyMode::Native).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(!s.root.join("h1").exists() && !s.root.join("h2").exists());
    // Through a symlink to / the target still resolves inside the root.
    apply(
        &s,
        &[
            E::Sym("r", "/"),
            E::File("inside", 0o644, b"i"),
            E::Hard("h3", "r/inside"),
        ],
        ApplyMode::Native,
    )
    .unwrap();
    assert_eq!(
        std::fs::metadata(s.root.join("h3")).unwrap().ino(),
        std::fs::metadata(s.root.join("inside")).unwrap().ino()
    );
    assert_outside_untouched(&s);
    assert_eq!(
        std::fs::metadata(s.outside.join("canary")).unwrap().nlink(),
        1
    );
}

#[test]
fn whiteouts_cannot_delete_outside() {
    for mode in [ApplyMode::Native, ApplyMode::Overlay] {
        let s = sandbox();
        let _ = apply(&s, &[E::File(".wh.../outside", 0o644, b"")], mode);
        let _ = apply(&s, &[E::File("../.wh.outside", 0o644, b"")], mode);
        let _ = apply(
            &s,
            &[E::Sym("s", "/"), E::File("s/../.wh.outside", 0o644, b"")],
            mode,
        );
        assert_outside_untouched(&s);
    }
}

#[test]
fn native_whiteouts_and_opaque_dirs() {
    let s = sandbox();
    apply(
        &s,
        &[
            E::Dir("d", 0o755),
            E::File("d/a", 0o644, b"a"),
            E::Dir("gone", 0o755),
            E::File("gone/x", 0o644, b"x"),
            E::Dir("opq", 0o755),
            E::File("opq/old", 0o644, b"old"),
        ],
        ApplyMode::Native,
    )
    .unwrap();
    apply(
        &s,
        &[
            E::File("d/.wh.a", 0o644, b""),
            E::File(".wh.gone", 0o644, b""),
            E::Dir("opq", 0o755),
            E::File("opq/new", 0o644, b"new"),
            E::File("opq/.wh..wh..opq", 0o644, b""),
        ],
        ApplyMode::Native,
    )
    .unwrap();
    assert!(!s.root.join("d/a").exists() && s.root.join("d").is_dir());
    assert!(!s.root.join("gone").exists());
    assert!(!s.root.join("opq/old").exists());
    assert_eq!(std::fs::read(s.root.join("opq/new")).unwrap(), b"new");
}

#[test]
fn overlay_whiteouts_are_char_devices_and_opaque_xattrs() {
    let s = sandbox();
    apply(
        &s,
        &[
            E::File(".wh.gone", 0o644, b""),
            E::Dir("opq", 0o755),
            E::File("opq/.wh..wh..opq", 0o644, b""),
        ],
        ApplyMode::Overlay,
    )
    .unwrap();
    use std::os::unix::fs::FileTypeExt;
    let md = std::fs::symlink_metadata(s.root.join("gone")).unwrap();
    assert!(md.file_type().is_char_device() && md.rdev() == 0);
    let mut buf = [0u8; 4];
    let p = std::ffi::CString::new(s.root.join("opq").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings and buffer.
    let n = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            4,
        )
    };
    assert_eq!(&buf[..n.max(0) as usize], b"y");
}

#[test]
fn metadata_is_kept() {
    let s = sandbox();
    apply(
        &s,
        &[
            E::File("suid", 0o4755, b"s"),
            E::File("sgid", 0o2755, b"g"),
            E::Owned("user", 0o4750, 1000, b"u"),
            E::File("f", 0o644, b"f"),
            E::Hard("f2", "f"),
            E::Sym("rel", "f"),
            E::Fifo("pipe"),
            E::Xattr("x", "user.foo", b"bar"),
            E::Dir("sticky", 0o1777),
        ],
        ApplyMode::Native,
    )
    .unwrap();
    let md = |p: &str| std::fs::symlink_metadata(s.root.join(p)).unwrap();
    assert_eq!(md("suid").permissions().mode() & 0o7777, 0o4755);
    assert_eq!(md("sgid").permissions().mode() & 0o7777, 0o2755);
    assert_eq!((md("user").uid(), md("user").gid()), (1000, 1000));
    assert_eq!(
        md("user").permissions().mode() & 0o7777,
        0o4750,
        "setuid survives chown"
    );
    assert_eq!(md("f").ino(), md("f2").ino());
    assert_eq!(md("f").mtime(), 1_600_000_000);
    assert_eq!(
        std::fs::read_link(s.root.join("rel")).unwrap(),
        Path::new("f")
    );
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &md("pipe").file_type()
    ));
    assert_eq!(md("sticky").permissions().mode() & 0o7777, 0o1777);
    let p = std::ffi::CString::new(s.root.join("x").as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = [0u8; 8];
    // SAFETY: valid C strings and buffer.
    let n =
        unsafe { libc::lgetxattr(p.as_ptr(), c"user.foo".as_ptr(), buf.as_mut_ptr().cast(), 8) };
    assert_eq!(&buf[..n.max(0) as usize], b"bar");
}

#[test]
fn diff_id_is_verified_and_corrupt_streams_fail() {
    let s = sandbox();
    let t = tar(&[E::File("a", 0o644, b"hello")]);
    let good = Digest::of(&t);
    let r = apply_layer(
        gz(&t).as_slice(),
        GZ,
        &s.root,
        ApplyMode::Native,
        Some(&good),
    )
    .unwrap();
    assert_eq!((r.diff_id, r.uncompressed_size), (good, t.len() as u64));
    let wrong = Digest::of(b"nope");
    let err = apply_layer(
        gz(&t).as_slice(),
        GZ,
        &s.root,
        ApplyMode::Native,
        Some(&wrong),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::FailedPrecondition(ref m) if m.contains("diff ID")),
        "{err}"
    );
    let mut corrupt = gz(&t);
    let n = corrupt.len();
    corrupt[n / 2] ^= 0xff;
    corrupt.truncate(n - 4);
    assert!(apply_layer(corrupt.as_slice(), GZ, &s.root, ApplyMode::Native, None).is_err());
    let z = zstd::encode_all(t.as_slice(), 3).unwrap();
    let r = apply_layer(
        z.as_slice(),
        "application/vnd.oci.image.layer.v1.tar+zstd",
        &s.root,
        ApplyMode::Native,
        None,
    )
    .unwrap();
    assert_eq!(r.diff_id, Digest::of(&t));
    assert!(matches!(
        apply_layer(
            t.as_slice(),
            "application/x-unknown",
            &s.root,
            ApplyMode::Native,
            None
        ),
        Err(Error::NotImplemented(_))
    ));
}

#[test]
fn create_then_apply_reproduces_the_tree() {
    let s = sandbox();
    let lower = s.root.join("lower");
    let upper = s.root.join("upper");
    std::fs::create_dir_all(lower.join("d/sub")).unwrap();
    std::fs::write(lower.join("d/sub/gone"), "x").unwrap();
    std::fs::write(lower.join("same"), "same").unwrap();
    std::fs::write(lower.join("deleted"), "bye").unwrap();
    std::os::unix::fs::symlink("/", lower.join("esc")).unwrap();
    // upper = lower with changes.
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(&lower)
        .arg(&upper)
        .status()
        .unwrap()
        .success());
    std::fs::remove_file(upper.join("deleted")).unwrap();
    std::fs::remove_dir_all(upper.join("d/sub")).unwrap();
    std::fs::write(upper.join("new"), "new file").unwrap();
    std::fs::hard_link(upper.join("new"), upper.join("new-link")).unwrap();
    std::fs::set_permissions(upper.join("same"), std::fs::Permissions::from_mode(0o4755)).unwrap();

    let tar_bytes = create::write_diff(&lower, &upper, Vec::new()).unwrap();
    let names: Vec<String> = tar::Archive::new(tar_bytes.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&".wh.deleted".to_string()), "{names:?}");
    assert!(names.contains(&"d/.wh.sub".to_string()), "{names:?}");
    assert!(names.contains(&"new".to_string()) && names.contains(&"new-link".to_string()));
    assert!(!names.iter().any(|n| n.starts_with("d/sub/")), "{names:?}");

    // Applying the diff on a copy of lower gives upper.
    let copy = s.root.join("copy");
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(&lower)
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    apply_layer(tar_bytes.as_slice(), TAR, &copy, ApplyMode::Native, None).unwrap();
    assert!(!copy.join("deleted").exists() && !copy.join("d/sub").exists());
    assert_eq!(std::fs::read(copy.join("new")).unwrap(), b"new file");
    assert_eq!(
        std::fs::metadata(copy.join("new")).unwrap().ino(),
        std::fs::metadata(copy.join("new-link")).unwrap().ino()
    );
    assert_eq!(
        std::fs::metadata(copy.join("same"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o4755
    );
    assert_eq!(
        std::fs::read_link(copy.join("esc")).unwrap(),
        Path::new("/")
    );
    assert_outside_untouched(&s);
}
