use std::time::SystemTime;

use super::*;
use crate::filters::Filter;
use crate::Digest;

fn db() -> (tempfile::TempDir, Db) {
    let t = tempfile::tempdir().unwrap();
    let store = crate::content::Store::open(t.path().join("content")).unwrap();
    let db = Db::open(&t.path().join("meta.db"), store).unwrap();
    (t, db)
}

fn put(db: &Db, ns: &str, data: &[u8], labels: Labels, lease: Option<&str>) -> Digest {
    let d = Digest::of(data);
    let mut w = db
        .content_writer(
            ns,
            &format!("ref-{d}"),
            data.len() as u64,
            Some(d.clone()),
            lease,
        )
        .unwrap();
    w.write(data).unwrap();
    w.commit(0, None, labels).unwrap()
}

fn image(name: &str, d: &Digest) -> Image {
    Image {
        name: name.into(),
        labels: Labels::new(),
        target: Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: d.to_string(),
            size: 1,
            annotations: Labels::new(),
        },
        created_at: SystemTime::now(),
        updated_at: SystemTime::now(),
    }
}

#[test]
fn namespaces_lifecycle() {
    let (_t, db) = db();
    db.namespace_create("a", Labels::from([("k".into(), "v".into())]))
        .unwrap();
    assert!(db
        .namespace_create("a", Labels::new())
        .unwrap_err()
        .is_already_exists());
    assert!(matches!(
        db.namespace_create("../x", Labels::new()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(db.namespace_get("nope").unwrap_err().is_not_found());
    let ns = db
        .namespace_update(
            "a",
            &Labels::from([("k2".into(), "v2".into())]),
            &["labels.k2".into()],
        )
        .unwrap();
    assert_eq!(ns.labels.len(), 2);
    // A namespace holding content cannot be deleted.
    put(&db, "a", b"x", Labels::new(), None);
    let err = db.namespace_delete("a").unwrap_err();
    assert!(
        matches!(err, Error::FailedPrecondition(ref m) if m.contains("blobs")),
        "{err}"
    );
    // Writes create namespaces implicitly.
    put(&db, "b", b"y", Labels::new(), None);
    assert_eq!(db.namespace_list().unwrap().len(), 2);
    // A namespace whose name prefixes another is still seen as empty.
    db.namespace_create("b2", Labels::new()).unwrap();
    db.namespace_create("bb", Labels::new()).unwrap();
    db.namespace_delete("bb").unwrap();
}

#[test]
fn content_is_per_namespace_and_shared_on_disk() {
    let (_t, db) = db();
    let d = put(&db, "a", b"blob", Labels::new(), None);
    assert!(db.content_info("b", &d).unwrap_err().is_not_found());
    // Writing the same blob in b: shared into b, AlreadyExists tells the client to skip it.
    let err = db
        .content_writer("b", "r", 0, Some(d.clone()), None)
        .err()
        .unwrap();
    assert!(err.is_already_exists());
    assert_eq!(db.content_info("b", &d).unwrap().size, 4);
    let info = db
        .content_update(
            "a",
            &d,
            &Labels::from([("x".into(), "1".into())]),
            &["labels.x".into()],
        )
        .unwrap();
    assert_eq!(info.labels.get("x").map(String::as_str), Some("1"));
    let f = Filter::parse(&["labels.x==1"]).unwrap();
    assert_eq!(db.content_list("a", &f).unwrap().len(), 1);
    assert_eq!(db.content_list("b", &f).unwrap().len(), 0);
}

#[test]
fn ingest_status_is_namespaced() {
    let (_t, db) = db();
    let mut w = db.content_writer("a", "my-ref", 10, None, None).unwrap();
    w.write(b"12345").unwrap();
    drop(w);
    let st = db.content_status("a", "my-ref").unwrap();
    assert_eq!(
        (st.reference.as_str(), st.offset, st.total),
        ("my-ref", 5, 10)
    );
    assert!(db.content_status("b", "my-ref").unwrap_err().is_not_found());
    assert_eq!(
        db.content_list_statuses("a", &Filter::default())
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        db.content_list_statuses("b", &Filter::default())
            .unwrap()
            .len(),
        0
    );
    db.content_abort("a", "my-ref").unwrap();
    assert!(db
        .content_list_statuses("a", &Filter::default())
        .unwrap()
        .is_empty());
}

#[test]
fn images_crud() {
    let (_t, db) = db();
    let d = Digest::of(b"m");
    db.image_create("n", image("busybox:latest", &d)).unwrap();
    assert!(db
        .image_create("n", image("busybox:latest", &d))
        .unwrap_err()
        .is_already_exists());
    let mut bad = image("bad", &d);
    bad.target.digest = "sha256:nothex".into();
    assert!(matches!(
        db.image_create("n", bad),
        Err(Error::InvalidArgument(_))
    ));
    let mut upd = image("busybox:latest", &d);
    upd.labels.insert("a".into(), "b".into());
    let got = db.image_update("n", &upd, &["labels.a".into()]).unwrap();
    assert_eq!(got.labels.get("a").map(String::as_str), Some("b"));
    assert!(db
        .image_update("n", &image("missing", &d), &[])
        .unwrap_err()
        .is_not_found());
    assert_eq!(
        db.image_list("n", &Filter::parse(&["name~=busy"]).unwrap())
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        db.image_list("n", &Filter::parse(&["labels.a==c"]).unwrap())
            .unwrap()
            .len(),
        0
    );
    db.image_delete("n", "busybox:latest").unwrap();
    assert!(db
        .image_delete("n", "busybox:latest")
        .unwrap_err()
        .is_not_found());
}

#[test]
fn gc_follows_refs_and_respects_leases() {
    let (_t, db) = db();
    let layer = put(&db, "n", b"layer", Labels::new(), None);
    let config = put(&db, "n", b"config", Labels::new(), None);
    let orphan = put(&db, "n", b"orphan", Labels::new(), None);
    let manifest = put(
        &db,
        "n",
        b"manifest",
        Labels::from([
            (
                "containerd.io/gc.ref.content.config".into(),
                config.to_string(),
            ),
            ("containerd.io/gc.ref.content.l.0".into(), layer.to_string()),
        ]),
        None,
    );
    db.image_create("n", image("img", &manifest)).unwrap();
    db.lease_create("n", "l1", Labels::new()).unwrap();
    let leased = put(&db, "n", b"leased", Labels::new(), Some("l1"));
    let rooted = put(
        &db,
        "n",
        b"rooted",
        Labels::from([(LABEL_GC_ROOT.into(), "x".into())]),
        None,
    );

    let stats = db.gc().unwrap();
    assert_eq!(stats.content, vec![("n".to_string(), orphan.to_string())]);
    assert_eq!(stats.blobs, 1);
    let store = db.content_store();
    for d in [&layer, &config, &manifest, &leased, &rooted] {
        assert!(store.exists(d), "{d} must survive");
    }
    assert!(!store.exists(&orphan));

    // Deleting the lease releases its content; deleting the image releases the chain.
    db.lease_delete("n", "l1").unwrap();
    db.image_delete("n", "img").unwrap();
    let stats = db.gc().unwrap();
    assert_eq!(stats.blobs, 4);
    assert!(store.exists(&rooted));
    assert!(!store.exists(&layer));
}

#[test]
fn gc_keeps_blobs_other_namespaces_use_and_expires_leases() {
    let (_t, db) = db();
    let d = put(&db, "a", b"shared", Labels::new(), None);
    db.image_create("a", image("img", &d)).unwrap();
    assert!(db
        .content_writer("b", "r", 0, Some(d.clone()), None)
        .is_err());
    db.lease_create(
        "b",
        "old",
        Labels::from([(LABEL_GC_EXPIRE.into(), "2000-01-01T00:00:00Z".into())]),
    )
    .unwrap();
    let stats = db.gc().unwrap();
    // b's record goes (nothing in b references it), a's keeps the blob on disk.
    assert_eq!(stats.content, vec![("b".to_string(), d.to_string())]);
    assert_eq!(stats.leases, vec![("b".to_string(), "old".to_string())]);
    assert_eq!(stats.blobs, 0);
    assert!(db.content_store().exists(&d));
}

#[test]
fn lease_resources() {
    let (_t, db) = db();
    db.lease_create("n", "l", Labels::new()).unwrap();
    let r = LeaseResource {
        id: Digest::of(b"q").to_string(),
        kind: "content".into(),
    };
    db.lease_add_resource("n", "l", &r).unwrap();
    let s = LeaseResource {
        id: "k".into(),
        kind: "snapshots/overlayfs".into(),
    };
    db.lease_add_resource("n", "l", &s).unwrap();
    assert_eq!(db.lease_list_resources("n", "l").unwrap().len(), 2);
    assert!(db
        .lease_add_resource(
            "n",
            "l",
            &LeaseResource {
                id: "x".into(),
                kind: "bogus".into()
            }
        )
        .is_err());
    assert!(db
        .lease_add_resource("n", "missing", &r)
        .unwrap_err()
        .is_not_found());
    db.lease_delete_resource("n", "l", &r).unwrap();
    assert_eq!(db.lease_list_resources("n", "l").unwrap(), vec![s]);
    assert!(db
        .lease_create("n", "l", Labels::new())
        .unwrap_err()
        .is_already_exists());
}

#[test]
fn container_changes_bump_the_generation_failed_ones_do_not() {
    let (_t, db) = db();
    let c = Container {
        id: "c1".into(),
        labels: Labels::new(),
        image: String::new(),
        runtime_name: "io.containerd.wharf.v2".into(),
        runtime_options: None,
        spec: Some(Payload::default()),
        snapshotter: String::new(),
        snapshot_key: String::new(),
        extensions: Default::default(),
        sandbox: String::new(),
        created_at: SystemTime::now(),
        updated_at: SystemTime::now(),
    };
    let g0 = db.containers_generation();
    db.container_create("ns", c.clone()).unwrap();
    let g1 = db.containers_generation();
    assert_ne!(g0, g1);
    assert!(db.container_create("ns", c.clone()).is_err());
    assert!(db.container_delete("ns", "nope").is_err());
    assert_eq!(
        db.containers_generation(),
        g1,
        "failed changes change nothing"
    );
    let mut u = c.clone();
    u.image = "busybox".into();
    db.container_update("ns", &u, &["image".into()]).unwrap();
    let g2 = db.containers_generation();
    assert_ne!(g1, g2);
    // Other records leave container readers' caches valid.
    db.namespace_create("other", Labels::new()).unwrap();
    assert_eq!(db.containers_generation(), g2);
    db.container_delete("ns", "c1").unwrap();
    assert_ne!(db.containers_generation(), g2);
}

#[test]
fn filtered_container_lists_match_on_every_field_and_keep_payloads() {
    let (_t, db) = db();
    let mk = |id: &str, label: &str, image: &str| Container {
        id: id.into(),
        labels: [("app".to_string(), label.to_string())].into(),
        image: image.into(),
        runtime_name: "io.containerd.wharf.v2".into(),
        runtime_options: None,
        spec: Some(Payload {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: format!("{{\"id\": \"{id}\"}}").into_bytes(),
        }),
        snapshotter: "overlayfs".into(),
        snapshot_key: id.into(),
        extensions: [(
            "x".to_string(),
            Payload {
                type_url: "t".into(),
                value: vec![0, 255, 16],
            },
        )]
        .into(),
        sandbox: String::new(),
        created_at: SystemTime::now(),
        updated_at: SystemTime::now(),
    };
    // A label value with escapes (quotes, a backslash, non-ASCII) still matches.
    let odd = "we \"quote\" \\ ünï";
    db.container_create("ns", mk("c1", odd, "busybox")).unwrap();
    db.container_create("ns", mk("c2", "web", "nginx")).unwrap();
    let ids = |f: &str| -> Vec<String> {
        let filter = Filter::parse(&[f.to_string()]).unwrap();
        db.container_list("ns", &filter)
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect()
    };
    assert_eq!(ids("labels.app==web"), ["c2"]);
    assert_eq!(
        ids(&format!(
            "labels.app=={}",
            serde_json::to_string(odd).unwrap()
        )),
        ["c1"]
    );
    assert_eq!(ids("image==busybox"), ["c1"]);
    assert_eq!(ids("runtime.name==io.containerd.wharf.v2"), ["c1", "c2"]);
    assert_eq!(ids("snapshotkey==c2"), ["c2"]);
    assert_eq!(ids("id~=^c"), ["c1", "c2"]);
    assert!(ids("labels.app==nope").is_empty());
    // The records that match come back whole.
    let all = db
        .container_list("ns", &Filter::parse(&["image==nginx".to_string()]).unwrap())
        .unwrap();
    assert_eq!(all, [db.container_get("ns", "c2").unwrap()]);
    assert_eq!(all[0].spec.as_ref().unwrap().value, b"{\"id\": \"c2\"}");
    assert_eq!(all[0].extensions["x"].value, [0, 255, 16]);
}
