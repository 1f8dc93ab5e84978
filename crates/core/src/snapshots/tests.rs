use std::process::Command;

use super::*;
use crate::content::Store;

fn setup(overlay: bool) -> (tempfile::TempDir, Db, SnapshotStore) {
    // /var/tmp is on the real disk: overlayfs can't use tmpfs upper dirs with every option.
    let t = tempfile::Builder::new()
        .prefix("wharf-snap")
        .tempdir_in("/var/tmp")
        .unwrap();
    let db = Db::open(
        &t.path().join("meta.db"),
        Store::open(t.path().join("content")).unwrap(),
    )
    .unwrap();
    let backend: Arc<dyn Backend> = if overlay {
        Arc::new(Overlay)
    } else {
        Arc::new(Native)
    };
    let name = if overlay { "overlayfs" } else { "native" };
    let s = SnapshotStore::open(name, t.path().join(name), db.clone(), backend).unwrap();
    (t, db, s)
}

fn upper(s: &SnapshotStore, ns: &str, key: &str) -> PathBuf {
    s.dir(&s.stat(ns, key).unwrap().id).join("fs")
}

/// Mounts `mounts` on `target` the way a client would (root only).
fn mount(mounts: &[Mount], target: &Path) {
    for m in mounts {
        // util-linux applies `ro` to bind mounts with a remount, as containerd's mount package does.
        let kind = if m.kind == "bind" {
            "none"
        } else {
            m.kind.as_str()
        };
        let opts: Vec<&str> = m.options.iter().map(String::as_str).collect();
        let mut c = Command::new("mount");
        c.arg("-t").arg(kind);
        if !opts.is_empty() {
            c.arg("-o").arg(opts.join(","));
        }
        let st = c.arg(&m.source).arg(target).status().unwrap();
        assert!(st.success(), "mount {m:?}");
    }
}

fn umount(target: &Path) {
    assert!(Command::new("umount")
        .arg(target)
        .status()
        .unwrap()
        .success());
}

fn chain(overlay: bool) {
    let (t, _db, s) = setup(overlay);
    let ns = "test";
    s.prepare(ns, "l1-active", None, Labels::new(), None)
        .unwrap();
    std::fs::write(upper(&s, ns, "l1-active").join("a"), "one").unwrap();
    s.commit(ns, "l1", "l1-active", Labels::new(), None)
        .unwrap();
    assert!(s.stat(ns, "l1-active").unwrap_err().is_not_found());
    assert_eq!(s.stat(ns, "l1").unwrap().kind, Kind::Committed);

    let m = s
        .prepare(ns, "l2-active", Some("l1"), Labels::new(), None)
        .unwrap();
    if overlay {
        assert_eq!(m[0].kind, "overlay");
        // Apply straight into the upper dir: the parent's files are not there.
        assert!(!upper(&s, ns, "l2-active").join("a").exists());
    } else {
        assert_eq!(
            std::fs::read_to_string(upper(&s, ns, "l2-active").join("a")).unwrap(),
            "one"
        );
    }
    std::fs::write(upper(&s, ns, "l2-active").join("b"), "two").unwrap();
    s.commit(ns, "l2", "l2-active", Labels::new(), None)
        .unwrap();

    // A container rootfs on top: mounting its mounts shows both layers, writes stay in its upper.
    let mounts = s
        .prepare(ns, "ctr", Some("l2"), Labels::new(), None)
        .unwrap();
    let target = t.path().join("mnt");
    std::fs::create_dir(&target).unwrap();
    mount(&mounts, &target);
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "one");
    assert_eq!(std::fs::read_to_string(target.join("b")).unwrap(), "two");
    std::fs::write(target.join("c"), "three").unwrap();
    umount(&target);
    assert!(upper(&s, ns, "ctr").join("c").exists());
    assert!(!upper(&s, ns, "l2").join("c").exists());

    // A view of l2 is read-only.
    let vm = s.view(ns, "v", Some("l2"), Labels::new(), None).unwrap();
    mount(&vm, &target);
    assert!(std::fs::write(target.join("d"), "x").is_err());
    umount(&target);

    // Removing a parent with children is refused; children first works.
    assert!(matches!(
        s.remove(ns, "l2"),
        Err(Error::FailedPrecondition(_))
    ));
    assert!(matches!(
        s.commit(ns, "x", "v", Labels::new(), None),
        Err(Error::FailedPrecondition(_))
    ));
    assert!(s
        .prepare(ns, "ctr", Some("l2"), Labels::new(), None)
        .unwrap_err()
        .is_already_exists());
    assert!(s
        .prepare(ns, "y", Some("missing"), Labels::new(), None)
        .unwrap_err()
        .is_not_found());
    let dir = s.dir(&s.stat(ns, "ctr").unwrap().id);
    s.remove(ns, "ctr").unwrap();
    assert!(!dir.exists());
    s.remove(ns, "v").unwrap();
    s.remove(ns, "l2").unwrap();
    assert_eq!(s.walk(ns, &Filter::default()).unwrap().len(), 1);
    // Other namespaces do not see it.
    assert!(s.walk("other", &Filter::default()).unwrap().is_empty());
}

#[test]
fn overlay_chain() {
    chain(true);
}

#[test]
fn native_chain() {
    chain(false);
}

#[test]
fn labels_filters_usage_and_cleanup() {
    let (_t, _db, s) = setup(true);
    let ns = "n";
    s.prepare(
        ns,
        "a",
        None,
        Labels::from([("x".into(), "1".into())]),
        None,
    )
    .unwrap();
    std::fs::write(upper(&s, ns, "a").join("f"), vec![7u8; 10_000]).unwrap();
    let u = s.usage(ns, "a").unwrap();
    assert!(u.size >= 10_000 && u.inodes == 2, "{u:?}");
    let info = s
        .update(
            ns,
            "a",
            &Labels::from([("y".into(), "2".into())]),
            &["labels.y".into()],
        )
        .unwrap();
    assert_eq!(info.labels.len(), 2);
    assert!(s
        .update(ns, "a", &Labels::new(), &["parent".into()])
        .is_err());
    assert_eq!(
        s.walk(ns, &Filter::parse(&["labels.y==2"]).unwrap())
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.walk(ns, &Filter::parse(&["kind==committed"]).unwrap())
            .unwrap()
            .len(),
        0
    );
    // An orphan directory (crash between dir and record) is cleaned up; live ones stay.
    std::fs::create_dir_all(s.root().join("snapshots/999/fs")).unwrap();
    assert_eq!(s.orphans().unwrap(), vec!["999".to_string()]);
    assert_eq!(s.cleanup().unwrap(), 1);
    assert!(upper(&s, ns, "a").exists());
    // One orphan at a time (the consistency check's repair); a live directory is never one.
    std::fs::create_dir_all(s.root().join("snapshots/998/fs")).unwrap();
    let live = s.stat(ns, "a").unwrap().id;
    assert!(!s.remove_orphan(&live).unwrap());
    assert!(s.remove_orphan("998").unwrap());
    assert!(s.orphans().unwrap().is_empty());
    // A record whose directory is gone.
    assert!(s.missing_dirs().unwrap().is_empty());
    std::fs::remove_dir_all(s.dir(&live)).unwrap();
    assert_eq!(
        s.missing_dirs().unwrap(),
        vec![(ns.to_string(), "a".to_string(), live)]
    );
}

#[test]
fn gc_removes_unreferenced_snapshots() {
    let (_t, db, s) = setup(true);
    let ns = "n";
    s.prepare(ns, "base-a", None, Labels::new(), None).unwrap();
    s.commit(ns, "base", "base-a", Labels::new(), None).unwrap();
    s.prepare(ns, "top-a", Some("base"), Labels::new(), None)
        .unwrap();
    s.commit(ns, "top", "top-a", Labels::new(), None).unwrap();
    db.lease_create(ns, "l", Labels::new()).unwrap();
    s.prepare(ns, "leased", None, Labels::new(), Some("l"))
        .unwrap();
    // Referenced from a content label, like an image config's unpacked chain.
    let data = b"config";
    let d = crate::Digest::of(data);
    let mut w = db.content_writer(ns, "cfg", 0, None, None).unwrap();
    w.write(data).unwrap();
    w.commit(
        0,
        Some(d.clone()),
        Labels::from([(
            "containerd.io/gc.ref.snapshot.overlayfs".into(),
            "top".into(),
        )]),
    )
    .unwrap();
    db.image_create(
        ns,
        crate::metadata::Image {
            name: "img".into(),
            labels: Labels::new(),
            target: crate::metadata::Descriptor {
                media_type: "application/vnd.oci.image.config.v1+json".into(),
                digest: d.to_string(),
                size: data.len() as i64,
                annotations: Labels::new(),
            },
            created_at: SystemTime::now(),
            updated_at: SystemTime::now(),
        },
    )
    .unwrap();
    s.prepare(ns, "orphan", None, Labels::new(), None).unwrap();
    let stats = db.gc().unwrap();
    assert_eq!(
        stats.snapshots,
        vec![(
            ns.to_string(),
            "overlayfs".to_string(),
            "orphan".to_string()
        )]
    );
    assert_eq!(s.cleanup().unwrap(), 1);
    db.image_delete(ns, "img").unwrap();
    db.lease_delete(ns, "l").unwrap();
    let stats = db.gc().unwrap();
    let keys: Vec<_> = stats.snapshots.iter().map(|s| s.2.as_str()).collect();
    // Children before parents.
    assert!(keys.iter().position(|k| *k == "top") < keys.iter().position(|k| *k == "base"));
    assert_eq!(keys.len(), 3);
    assert_eq!(s.cleanup().unwrap(), 3);
}

#[test]
fn ids_are_never_reused_across_restarts_or_orphans() {
    let (t, db, s) = setup(false);
    let ns = "default";
    s.prepare(ns, "a", None, Labels::new(), None).unwrap();
    let a: u64 = s.stat(ns, "a").unwrap().id.parse().unwrap();
    // A crash between a directory and its record leaves an orphan numbered past the stored
    // sequence; so does a directory someone made by hand.
    std::fs::create_dir_all(s.root().join(format!("snapshots/{}/fs", a + 5))).unwrap();
    drop(s);
    let reopen = || {
        SnapshotStore::open(
            "native",
            t.path().join("native"),
            db.clone(),
            Arc::new(Native),
        )
        .unwrap()
    };
    let s = reopen();
    s.prepare(ns, "b", None, Labels::new(), None).unwrap();
    let b: u64 = s.stat(ns, "b").unwrap().id.parse().unwrap();
    assert_eq!(b, a + 6, "a new id skips the orphan's");
    // The orphan goes; the stored sequence still keeps its number from coming back.
    assert_eq!(s.cleanup().unwrap(), 1);
    drop(s);
    let s = reopen();
    s.prepare(ns, "c", None, Labels::new(), None).unwrap();
    let c: u64 = s.stat(ns, "c").unwrap().id.parse().unwrap();
    assert_eq!(c, b + 1);
    // Concurrent prepares get distinct directories.
    let ids: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let s = &s;
                sc.spawn(move || {
                    s.prepare(ns, &format!("p{i}"), None, Labels::new(), None)
                        .unwrap();
                    s.stat(ns, &format!("p{i}")).unwrap().id
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 8);
}
