//! The device store as a user of it sees it: drafts, finalizing, repeats, attachments, deletes,
//! conflicts across devices, wrong clocks, and files that are not stores.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;
use tejido_core::store::{schema, StatusFilter, StoreError, StoreOptions, SubmissionStatus};
use tejido_core::{Change, Collection, Store, WallClock};

const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;

#[derive(Debug)]
struct Wall(AtomicU64);
impl WallClock for Wall {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn store_at(ms: u64) -> (Arc<Wall>, Store) {
    let wall = Arc::new(Wall(AtomicU64::new(ms)));
    let store = Store::open_in_memory_with(StoreOptions { wall_clock: wall.clone(), create: true }).unwrap();
    (wall, store)
}

/// Takes a store's pending changes and acknowledges them, as a successful push would.
fn push(store: &Store) -> Vec<Change> {
    let pending = store.pending_changes(10_000).unwrap();
    store.acknowledge(&pending.iter().map(|p| p.seq).collect::<Vec<_>>()).unwrap();
    pending.into_iter().map(|p| p.change).collect()
}

#[test]
fn a_draft_stays_on_the_device_until_finalized_then_syncs_as_one_change() {
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission("victimization", "2026-11").unwrap();
    store.set_answer(doc, "household/size", json!(4)).unwrap();
    store.set_answer(doc, "household/size", json!(5)).unwrap();
    store.set_answer(doc, "consent", json!("yes")).unwrap();
    store.set_answer(doc, "dv/asked", json!("no")).unwrap();
    store.clear_answer(doc, "consent").unwrap();
    assert_eq!(store.pending_count().unwrap(), 0, "drafts never leave the device");
    assert_eq!(store.list_submissions(StatusFilter::Drafts).unwrap().len(), 1);
    assert!(store.list_submissions(StatusFilter::Finalized).unwrap().is_empty());

    store.finalize_omitting(doc, &|f| f.as_str().starts_with("dv/")).unwrap();
    let pending = store.pending_changes(10).unwrap();
    assert_eq!(pending.len(), 1);
    let change = &pending[0].change;
    let fields: Vec<&str> = change.ops.iter().map(|o| o.field.as_str()).collect();
    assert!(fields.contains(&"household/size") && fields.contains(&"_status"));
    assert!(!fields.contains(&"consent"), "a cleared answer is not sent");
    assert!(!fields.contains(&"dv/asked"), "a non-relevant answer is not sent");
    assert!(change.ops.iter().all(|o| o.seen.is_empty()), "the draft's history is not on the wire");

    let read = store.read_document(doc).unwrap();
    assert_eq!(read.status(), SubmissionStatus::Finalized);
    assert_eq!(read.value("household/size"), Some(&json!(5)));
    assert_eq!(read.text("_form"), Some("victimization"));
    let listed = store.list_submissions(StatusFilter::Finalized).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].form.as_deref(), Some("victimization"));
    assert!(matches!(store.finalize(doc), Err(StoreError::AlreadyFinalized(_))));

    // An edit after finalizing (a fix the coordinator asked for) syncs on its own.
    store.set_answer(doc, "household/size", json!(6)).unwrap();
    assert_eq!(store.pending_count().unwrap(), 2);
}

#[test]
fn repeat_rows_are_keyed_by_uuid_and_rows_added_offline_on_two_devices_never_collide() {
    let (a, b) = (Store::open_in_memory().unwrap(), Store::open_in_memory().unwrap());
    let doc = a.create_document(Collection::Entity, &[("name", json!("household 12"))]).unwrap();
    b.apply_remote(&push(&a)).unwrap();
    let row_a = a.add_repeat_row(doc, "members").unwrap();
    a.set_answer(doc, &format!("members/{row_a}/age"), json!(34)).unwrap();
    let row_b = b.add_repeat_row(doc, "members").unwrap();
    b.set_answer(doc, &format!("members/{row_b}/age"), json!(9)).unwrap();
    let (from_a, from_b) = (push(&a), push(&b));
    a.apply_remote(&from_b).unwrap();
    b.apply_remote(&from_a).unwrap();
    let (da, db) = (a.read_document(doc).unwrap(), b.read_document(doc).unwrap());
    assert_eq!(da, db);
    assert_eq!(da.rows("members").len(), 2);
    assert!(da.conflicts().next().is_none());

    a.remove_repeat_row(doc, "members", row_b).unwrap();
    assert_eq!(a.read_document(doc).unwrap().rows("members"), vec![row_a]);
    assert!(matches!(
        a.remove_repeat_row(doc, "members", uuid::Uuid::now_v7()),
        Err(StoreError::UnknownRow { .. })
    ));
}

#[test]
fn three_devices_converge_through_partial_reordered_duplicated_deliveries() {
    let (wall_a, a) = store_at(1_800_000_000_000);
    let (_, b) = store_at(1_800_000_000_000 - YEAR_MS); // a year behind
    let (_, c) = store_at(1_800_000_000_000 + 5_000);
    let doc = a.create_document(Collection::Entity, &[("site", json!("Parque"))]).unwrap();
    let first = push(&a);
    b.apply_remote(&first).unwrap();
    c.apply_remote(&first).unwrap();

    // B, whose clock is a year behind, edits after seeing A's value: its edit must win.
    b.set_answer(doc, "site", json!("Parque Omar")).unwrap();
    let from_b = push(&b);
    // Meanwhile C edits the same field without having seen B's edit: a conflict.
    c.set_answer(doc, "site", json!("Plaza")).unwrap();
    let from_c = push(&c);
    wall_a.0.fetch_add(10, Ordering::SeqCst);
    a.set_answer(doc, "attendance", json!(12)).unwrap();
    let from_a = push(&a);

    // Partial, reordered, duplicated.
    a.apply_remote(&[from_c[0].clone()]).unwrap();
    c.apply_remote(&[from_a[0].clone(), from_a[0].clone()]).unwrap();
    b.apply_remote(&[from_c[0].clone(), from_a[0].clone()]).unwrap();
    a.apply_remote(&[from_b[0].clone(), from_c[0].clone(), first[0].clone()]).unwrap();
    c.apply_remote(&[from_b[0].clone(), first[0].clone()]).unwrap();

    let (da, db, dc) =
        (a.read_document(doc).unwrap(), b.read_document(doc).unwrap(), c.read_document(doc).unwrap());
    assert_eq!(da, db);
    assert_eq!(db, dc);
    let site = da.fields.iter().find(|(f, _)| f.as_str() == "site").unwrap().1;
    let values: Vec<_> =
        std::iter::once(&site.value).chain(site.conflicts.iter().map(|c| &c.value)).collect();
    assert!(values.contains(&&json!("Parque Omar")) && values.contains(&&json!("Plaza")));
    assert!(!values.contains(&&json!("Parque")), "the value both edits saw is replaced");
    assert_eq!(site.conflicts.len(), 1);

    // A coordinator resolves: the conflict closes everywhere once the resolution arrives.
    a.resolve_conflict(doc, "site", json!("Parque Omar")).unwrap();
    let resolution = push(&a);
    b.apply_remote(&resolution).unwrap();
    let db = b.read_document(doc).unwrap();
    assert!(db.conflicts().next().is_none());
    assert_eq!(db.value("site"), Some(&json!("Parque Omar")));
}

#[test]
fn a_year_behind_clock_still_orders_its_edit_after_the_value_it_saw() {
    let (_, ahead) = store_at(1_800_000_000_000);
    let (_, behind) = store_at(1_800_000_000_000 - YEAR_MS);
    let doc = ahead.create_document(Collection::Entity, &[("status", json!("open"))]).unwrap();
    behind.apply_remote(&push(&ahead)).unwrap();
    behind.set_answer(doc, "status", json!("closed")).unwrap();
    let edit = push(&behind);
    assert!(edit[0].hlc.ms() >= 1_800_000_000_000);
    ahead.apply_remote(&edit).unwrap();
    let d = ahead.read_document(doc).unwrap();
    assert_eq!(d.value("status"), Some(&json!("closed")));
    assert!(d.conflicts().next().is_none());
}

#[test]
fn far_future_ops_are_accepted_and_reported() {
    let (_, future) = store_at(1_800_000_000_000 + 2 * YEAR_MS);
    let (_, now) = store_at(1_800_000_000_000);
    future.create_document(Collection::Entity, &[("x", json!(1))]).unwrap();
    let report = now.apply_remote(&push(&future)).unwrap();
    assert_eq!(report.new_ops, 1);
    assert_eq!(report.far_future.len(), 1);
    assert_eq!(report.far_future[0].0, future.replica_id());
    assert_eq!(now.list_documents(Collection::Entity).unwrap().len(), 1);
}

#[test]
fn an_edit_that_reaches_a_deleted_document_is_kept_and_flagged() {
    let (a, b) = (Store::open_in_memory().unwrap(), Store::open_in_memory().unwrap());
    let doc = a.create_document(Collection::Entity, &[("name", json!("Centro"))]).unwrap();
    b.apply_remote(&push(&a)).unwrap();
    a.delete_document(doc).unwrap();
    assert!(matches!(a.set_answer(doc, "name", json!("x")), Err(StoreError::Deleted(_))));
    b.set_answer(doc, "name", json!("Centro comunal")).unwrap();
    let (da, db) = (push(&a), push(&b));
    a.apply_remote(&db).unwrap();
    b.apply_remote(&da).unwrap();
    for store in [&a, &b] {
        let d = store.read_document(doc).unwrap();
        assert!(d.is_deleted());
        assert!(d.edited_after_delete());
        assert_eq!(d.value("name"), Some(&json!("Centro comunal")), "the edit is kept");
    }
    // A delete that saw every value is not flagged.
    let doc2 = a.create_document(Collection::Entity, &[("name", json!("Norte"))]).unwrap();
    a.delete_document(doc2).unwrap();
    assert!(!a.read_document(doc2).unwrap().edited_after_delete());
    a.restore_document(doc2).unwrap();
    a.set_answer(doc2, "name", json!("Norte 2")).unwrap();
}

#[test]
fn attachments_are_content_addressed_files_beside_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let store = Store::open(&path).unwrap();
    let doc = store.start_submission("activity", "1").unwrap();
    let photo = vec![7u8; 30_000];
    let sha = store.attach_file(doc, "photo", &photo, "image/jpeg").unwrap();
    let again = store.attach_file(doc, "photo2", &photo, "image/jpeg").unwrap();
    assert_eq!(sha, again);
    let file = store.attachment_path(&sha).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), photo);
    assert!(file.starts_with(dir.path()));
    assert_eq!(store.read_document(doc).unwrap().text("photo"), Some(format!("sha256:{sha}").as_str()));
    assert_eq!(store.pending_attachments().unwrap().len(), 1);
    store.mark_attachment_uploaded(&sha).unwrap();
    assert!(store.pending_attachments().unwrap().is_empty());
    assert!(matches!(store.attachment_path(&"0".repeat(64)), Err(StoreError::UnknownAttachment(_))));
}

#[test]
fn the_store_reopens_with_the_same_identity_clock_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let (replica, clock, doc) = {
        let store = Store::open(&path).unwrap();
        let doc = store.start_submission("f", "1").unwrap();
        store.set_answer(doc, "q", json!("a")).unwrap();
        store.set_sync_state("cursor", "42").unwrap();
        (store.replica_id(), store.clock(), doc)
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(store.replica_id(), replica);
    assert_eq!(store.clock(), clock);
    assert_eq!(store.read_document(doc).unwrap().value("q"), Some(&json!("a")));
    assert_eq!(store.sync_cursor().unwrap().as_deref(), Some("42"));
    assert!(store.check_integrity().unwrap().is_empty());
}

#[test]
fn files_that_are_not_stores_give_clear_errors_and_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    let bytes: Vec<u8> = (0..8192u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&junk, &bytes).unwrap();
    let err = Store::open(&junk).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("corrupt"));
    assert_eq!(std::fs::read(&junk).unwrap(), bytes, "a corrupt file is not modified");

    // A real SQLite database that belongs to something else.
    let other = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&other).unwrap();
        conn.execute_batch("CREATE TABLE contacts (name TEXT)").unwrap();
    }
    let err = Store::open(&other).unwrap_err();
    assert!(matches!(err, StoreError::NotATejidoStore(_)), "{err:?}");
    assert!(err.to_string().contains("not a Tejido store"));

    // A store from a newer Tejido.
    let newer = dir.path().join("newer.db");
    drop(Store::open(&newer).unwrap());
    rusqlite::Connection::open(&newer).unwrap().pragma_update(None, "user_version", 999).unwrap();
    assert!(matches!(Store::open(&newer), Err(StoreError::TooNew { found: 999, .. })));

    // Missing, when asked not to create.
    let missing = dir.path().join("missing.db");
    let err =
        Store::open_with(&missing, StoreOptions { create: false, ..StoreOptions::default() }).unwrap_err();
    assert!(matches!(err, StoreError::Missing(_)));
    assert!(!missing.exists());
}

#[test]
fn an_upgraded_store_equals_a_freshly_created_one() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    {
        // A store as the first release wrote it, with data in it.
        let mut conn = rusqlite::Connection::open(&old).unwrap();
        schema::migrate(&mut conn, 0, 1).unwrap();
        conn.execute(
            "INSERT INTO replica (id, replica_id, clock, created_ms) VALUES (1, randomblob(16), 0, 0)",
            [],
        )
        .unwrap();
    }
    let upgraded = Store::open(&old).unwrap();
    assert!(upgraded.check_integrity().unwrap().is_empty());
    drop(upgraded);
    let fresh_path = dir.path().join("fresh.db");
    drop(Store::open(&fresh_path).unwrap());
    let describe = |p: &std::path::Path| schema::describe(&rusqlite::Connection::open(p).unwrap()).unwrap();
    assert_eq!(describe(&old), describe(&fresh_path));
    let version = |p: &std::path::Path| {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0))
            .unwrap()
    };
    assert_eq!(version(&old), schema::LATEST);
}

#[test]
fn bad_input_changes_nothing() {
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission("f", "1").unwrap();
    assert!(matches!(store.set_answer(doc, "a//b", json!(1)), Err(StoreError::FieldPath(_))));
    assert!(matches!(
        store.set_answer(tejido_core::DocId::new(), "a", json!(1)),
        Err(StoreError::UnknownDocument(_))
    ));
    // A remote batch with one invalid change is refused whole.
    let other = Store::open_in_memory().unwrap();
    let good = other.create_document(Collection::Entity, &[("a", json!(1))]).unwrap();
    let mut changes = push(&other);
    let mut bad = changes[0].clone();
    bad.doc = tejido_core::DocId::new();
    bad.ops.clear();
    changes.push(bad);
    assert!(matches!(store.apply_remote(&changes), Err(StoreError::InvalidChange { .. })));
    assert!(matches!(store.read_document(good), Err(StoreError::UnknownDocument(_))));
    // A change that names an existing document under another collection is refused whole.
    let mut wrong = push(&Store::open_in_memory().unwrap());
    wrong.push(Change { doc, collection: Collection::Entity, ..changes[0].clone() });
    assert!(matches!(store.apply_remote(&wrong), Err(StoreError::CollectionMismatch { .. })));
    let d = store.read_document(doc).unwrap();
    assert_eq!(d.value("a"), None);
}
