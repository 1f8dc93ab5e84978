use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("content")).unwrap();
    (t, s)
}

#[test]
fn write_commit_read() {
    let (_t, s) = store();
    let data = b"hello world".to_vec();
    let d = Digest::of(&data);
    let mut w = s.writer("r1", data.len() as u64, Some(d.clone())).unwrap();
    w.write_at(0, &data[..5]).unwrap();
    w.write_at(5, &data[5..]).unwrap();
    assert_eq!(s.status("r1").unwrap().offset, 11);
    assert_eq!(w.commit(0, None).unwrap(), d);
    assert_eq!(s.info(&d).unwrap().size, 11);
    assert_eq!(s.read_at(&d, 6, 0).unwrap(), b"world");
    assert_eq!(s.read_at(&d, 0, 5).unwrap(), b"hello");
    assert!(s.read_at(&d, 12, 0).is_err());
    assert!(s.status("r1").unwrap_err().is_not_found());
    assert!(s
        .writer("r2", 0, Some(d.clone()))
        .err()
        .is_some_and(|e| e.is_already_exists()));
    assert_eq!(s.walk().unwrap().len(), 1);
    s.verify(&d).unwrap();
}

#[test]
fn wrong_digest_is_never_visible() {
    let (_t, s) = store();
    let want = Digest::of(b"expected");
    let mut w = s.writer("bad", 0, Some(want.clone())).unwrap();
    w.write(b"something else").unwrap();
    let err = w.commit(0, None).unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
    assert!(s.walk().unwrap().is_empty());
    assert!(s.info(&want).unwrap_err().is_not_found());
    // The failed ingest stays until aborted.
    assert_eq!(s.list_statuses().unwrap().len(), 1);
    s.abort("bad").unwrap();
    assert!(s.list_statuses().unwrap().is_empty());
}

#[test]
fn resume_after_drop_and_lock() {
    let (_t, s) = store();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::of(&data);
    {
        let mut w = s.writer("res", data.len() as u64, None).unwrap();
        assert!(matches!(
            s.writer("res", 0, None),
            Err(Error::Unavailable(_))
        ));
        w.write_at(0, &data[..40_000]).unwrap();
    }
    // A new store handle (as after a restart) resumes from the offset on disk.
    let s2 = Store::open(s.root()).unwrap();
    let st = s2.status("res").unwrap();
    assert_eq!((st.offset, st.total), (40_000, 100_000));
    let mut w = s2.writer("res", 0, Some(d.clone())).unwrap();
    assert_eq!(w.offset(), 40_000);
    assert!(matches!(w.write_at(10, b"x"), Err(Error::OutOfRange(_))));
    w.write_at(40_000, &data[40_000..]).unwrap();
    assert_eq!(w.commit(data.len() as u64, None).unwrap(), d);
    assert_eq!(s2.read_at(&d, 0, 0).unwrap(), data);
}

/// A blob of several writeback steps, in uneven chunks, through both write paths, interrupted
/// and resumed, then restarted at zero: the bytes and digest come out exact.
#[test]
fn large_blob_across_writeback_steps_resumes_and_restarts() {
    let (_t, s) = store();
    let data: Vec<u8> = (0..(11u32 << 20) + 777)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let d = Digest::of(&data);
    let chunk = (1 << 20) + 4099;
    let cut = 6 * chunk;
    {
        let mut w = s.writer("big", data.len() as u64, None).unwrap();
        for (i, c) in data[..cut].chunks(chunk).enumerate() {
            if i % 2 == 0 {
                w.write(c).unwrap();
            } else {
                w.absorb(c);
                w.persist(c).unwrap();
            }
        }
        assert_eq!(w.offset(), cut as u64);
    }
    let mut w = s.writer("big", 0, Some(d.clone())).unwrap();
    assert_eq!(w.offset(), cut as u64);
    for c in data[cut..].chunks(chunk) {
        w.absorb(c);
        w.persist(c).unwrap();
    }
    assert_eq!(w.digest(), d);
    // Restarting at zero drops what was written, whatever writeback had started.
    w.write_at(0, &data[..chunk]).unwrap();
    assert_eq!(w.offset(), chunk as u64);
    for c in data[chunk..].chunks(3 << 20) {
        w.write(c).unwrap();
    }
    assert_eq!(w.commit(data.len() as u64, None).unwrap(), d);
    assert!(s.read_at(&d, 0, 0).unwrap() == data);
}

#[test]
fn size_mismatch_and_restart_at_zero() {
    let (_t, s) = store();
    let mut w = s.writer("sz", 10, None).unwrap();
    w.write(b"12345").unwrap();
    assert!(matches!(
        w.commit(0, None),
        Err(Error::FailedPrecondition(_))
    ));
    let mut w = s.writer("sz", 0, None).unwrap();
    w.write_at(0, b"abc").unwrap();
    assert_eq!(w.offset(), 3);
    assert_eq!(w.commit(3, None).unwrap(), Digest::of(b"abc"));
}

#[test]
fn corrupt_blob_detected() {
    let (_t, s) = store();
    let mut w = s.writer("c", 0, None).unwrap();
    w.write(b"payload").unwrap();
    let d = w.commit(0, None).unwrap();
    let p = s.blob_path(&d);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&p, b"paylaod").unwrap();
    assert!(matches!(s.verify(&d), Err(Error::FailedPrecondition(_))));
}

#[test]
fn ingest_dirs_include_half_created_ones_and_spare_locked_ones() {
    let (_t, s) = store();
    let mut w = s.writer("held", 0, None).unwrap();
    w.write(b"abc").unwrap();
    std::fs::create_dir_all(s.root().join("ingest/half")).unwrap();
    let dirs = s.ingest_dirs().unwrap();
    assert_eq!(dirs.len(), 2);
    let half = dirs.iter().find(|d| d.status.is_none()).unwrap();
    let held = dirs.iter().find(|d| d.status.is_some()).unwrap();
    assert_eq!(held.status.as_ref().unwrap().offset, 3);
    // A writer holds it: never removed.
    assert!(matches!(
        s.remove_ingest_dir(held),
        Err(Error::Unavailable(_))
    ));
    s.remove_ingest_dir(half).unwrap();
    drop(w);
    s.remove_ingest_dir(held).unwrap();
    assert!(s.ingest_dirs().unwrap().is_empty());
}
