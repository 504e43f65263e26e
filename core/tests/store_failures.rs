//! Every SQLite failure a user can cause is classified where it happens: a damaged store is
//! corrupt, a full disk is `DiskFull`, a path that cannot hold a store is `Io`; none of them
//! comes out as the catch-all `Sqlite` (which the bindings report as `Internal`).
#![allow(clippy::unwrap_used)]

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use serde_json::json;
use tejido_core::store::{StatusFilter, StoreError};
use tejido_core::Store;

/// A real store with enough submissions to span many pages, closed.
fn filled_store(path: &Path) -> usize {
    let store = Store::open(path).unwrap();
    let n = 300;
    for i in 0..n {
        let doc = store.start_submission("victimization", "2026-11").unwrap();
        store.set_answer(doc, "household/size", json!(i)).unwrap();
        store.set_answer(doc, "notes", json!("x".repeat(200))).unwrap();
        store.finalize(doc).unwrap();
    }
    drop(store);
    assert!(std::fs::metadata(path).unwrap().len() > 64 * 1024, "the store spans many pages");
    n
}

fn overwrite(path: &Path, at: u64, len: usize) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    let garbage: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8 ^ 0x5A).collect();
    f.write_all(&garbage).unwrap();
    f.sync_all().unwrap();
}

fn is_corrupt(e: &StoreError) -> bool {
    matches!(e, StoreError::Corrupt(_) | StoreError::Damaged(_))
}

/// Opens the damaged store and reads everything; every failure must say the store is damaged,
/// and the damage must be reported somewhere.
fn open_and_read_everything(path: &Path) {
    let store = match Store::open(path) {
        Ok(store) => store,
        Err(e) => {
            assert!(is_corrupt(&e), "opening a damaged store: {e:?}");
            return;
        }
    };
    let mut reported = false;
    let mut check = |r: Result<(), StoreError>| {
        if let Err(e) = r {
            assert!(is_corrupt(&e), "reading a damaged store: {e:?}");
            reported = true;
        }
    };
    for filter in [StatusFilter::All, StatusFilter::Drafts, StatusFilter::Finalized] {
        check(store.list_submissions(filter).map(|list| {
            for s in list {
                let _ = store.read_document(s.id).map_err(|e| assert!(is_corrupt(&e), "{e:?}"));
            }
        }));
    }
    check(store.pending_changes(10_000).map(drop));
    check(store.pending_count().map(drop));
    match store.check_integrity() {
        Ok(problems) => reported |= !problems.is_empty(),
        Err(e) => check(Err(e)),
    }
    assert!(reported, "the damage went unnoticed");
}

#[test]
fn a_store_with_its_second_page_overwritten_is_corrupt_not_internal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    filled_store(&path);
    overwrite(&path, 4096, 4096);
    open_and_read_everything(&path);
}

#[test]
fn a_store_damaged_mid_file_is_corrupt_not_internal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    filled_store(&path);
    let len = std::fs::metadata(&path).unwrap().len();
    overwrite(&path, (len / 2) & !4095, 3 * 4096);
    open_and_read_everything(&path);
}

#[test]
fn a_damaged_page_found_while_reading_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    filled_store(&path);
    // Damaged while open (a failing flash chip): every page but the first is overwritten
    // behind the open store's back, and the next read finds it.
    let store = Store::open(&path).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    overwrite(&path, 4096, (len - 4096) as usize);
    let err = store.list_submissions(StatusFilter::All).unwrap_err();
    assert!(matches!(err, StoreError::Damaged(_)), "{err:?}");
    assert!(err.to_string().contains("damaged"), "{err}");
    drop(store);
    // Found while opening, it names the store.
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(&err, StoreError::Corrupt(p) if p == &path), "{err:?}");
}

#[test]
fn a_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing is created");
}

#[test]
fn a_path_through_a_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"hello").unwrap();
    let err = Store::open(file.join("device.db")).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    let err = Store::open(dir.path().join("missing-folder").join("device.db")).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
}
