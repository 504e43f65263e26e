//! The storage conformance suite: the same tests for every implementation of [`Storage`]
//! (SQLite now; PostgreSQL runs them too when it lands).

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tejido_core::crdt::register::Replica;
use tejido_core::sync::wire::Role;
use tejido_core::{Change, Collection, DocId, FieldOp, FieldPath, Hlc, OpId, ReplicaId, Store};
use uuid::Uuid;

use super::*;
use crate::service::Service;

pub(crate) async fn sqlite() -> (tempfile::TempDir, Service) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStorage::open(dir.path().join("tejido.db")).unwrap();
    (dir, Service::new(std::sync::Arc::new(s)).await.unwrap())
}

/// A fresh database in this process's throwaway PostgreSQL cluster.
pub(crate) async fn postgres() -> (tempfile::TempDir, Service) {
    let url = crate::testing::cluster().fresh_database().await;
    let s = PostgresStorage::open(&url).await.unwrap();
    (tempfile::tempdir().unwrap(), Service::new(std::sync::Arc::new(s)).await.unwrap())
}

/// Every conformance test, run against the backend `$make` makes: a new backend adds one line
/// below.
macro_rules! conformance {
    ($make:path) => {
        conformance!($make =>
            push_is_idempotent_and_logged_once,
            concurrent_overwrites_are_conflicts_matching_the_reference_register,
            snapshot_and_log_paging_reach_the_same_state_as_the_full_history,
            a_snapshot_remembers_seen_ops_that_arrive_later,
            scope_refusals_write_nothing,
            pull_scope_by_role,
            enrollment_codes_count_uses_and_expire,
            reviews_and_forms_are_written_by_the_server_replica,
            a_document_past_its_bound_is_refused_and_pages_stay_bounded,
            an_upload_lease_has_one_holder_until_it_expires,
            writers_commit_in_log_order_and_no_pull_skips_a_late_commit,
            pushes_naming_one_document_take_turns,
            users_sessions_and_login_failures_round_trip,
            the_read_model_follows_changes_and_filters_by_keyset,
            the_read_model_is_rebuilt_when_missing,
            a_new_submission_row_equals_the_row_rebuilt_from_its_ops,
            a_new_document_of_many_answers_is_stored_whole,
            a_new_document_is_seen_and_sized_within_its_transaction,
        );
    };
    ($make:path => $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_dir, service) = $make().await;
                super::$name(&service).await;
            }
        )*
    };
}

mod sqlite_backend {
    conformance!(super::sqlite);
}

mod postgres_backend {
    conformance!(super::postgres);
}

async fn device(s: &Service, project: Uuid, role: Role) -> Device {
    let code: [u8; 32] = rand::random();
    s.create_enrollment_code(&NewEnrollmentCode {
        code_hash: code,
        project,
        role,
        uses: 1,
        expires_ms: None,
        now_ms: 1,
    })
    .await
    .unwrap();
    s.redeem_enrollment_code(&Redeem {
        code_hash: code,
        replica: ReplicaId::random(),
        device_name: None,
        device_id: Uuid::new_v4(),
        token_hash: rand::random(),
        now_ms: 2,
    })
    .await
    .unwrap()
    .device
}

async fn project(s: &Service) -> Uuid {
    s.create_project(&format!("p-{}", Uuid::new_v4()), 1).await.unwrap().id
}

fn change(
    d: &Device,
    doc: DocId,
    collection: Collection,
    hlc: u64,
    fields: &[(&str, Value, Vec<OpId>)],
) -> Change {
    Change {
        doc,
        collection,
        replica: d.replica,
        hlc: Hlc(hlc),
        ops: fields
            .iter()
            .map(|(f, v, seen)| FieldOp {
                field: FieldPath::parse(f).unwrap(),
                value: v.clone(),
                seen: seen.clone(),
            })
            .collect(),
    }
}

/// Pulls everything from `cursor` on, `limit` at a time.
async fn pull_all(s: &Service, d: &Device, mut cursor: Cursor, limit: usize) -> (Vec<Change>, Cursor) {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let page = s.pull(d, cursor, limit).await.unwrap();
        out.extend(page.changes.iter().map(|c| serde_json::from_str::<Change>(c).unwrap()));
        cursor = page.cursor;
        if !page.more {
            return (out, cursor);
        }
    }
    panic!("the pull never finished");
}

fn now() -> u64 {
    crate::now_ms() as u64
}

async fn push_is_idempotent_and_logged_once(s: &Service) {
    let p = project(s).await;
    let e = device(s, p, Role::Enumerator).await;
    let c = device(s, p, Role::Coordinator).await;
    let doc = DocId::new();
    let batch = vec![change(
        &e,
        doc,
        Collection::Submission,
        10,
        &[("a", json!(1), vec![]), ("b", json!("x"), vec![])],
    )];
    assert_eq!(s.push(&e, &batch, now()).await.unwrap(), PushOutcome { accepted_ops: 2, duplicate_ops: 0 });
    assert_eq!(s.push(&e, &batch, now()).await.unwrap(), PushOutcome { accepted_ops: 0, duplicate_ops: 2 });
    let (log, _) = pull_all(s, &c, Cursor::Log(0), 100).await;
    assert_eq!(log, batch, "the change is in the log exactly once");
    // A change carrying one known and one new op logs only the new one.
    let mixed = vec![change(
        &e,
        doc,
        Collection::Submission,
        10,
        &[("a", json!(1), vec![]), ("c", json!(3), vec![])],
    )];
    assert_eq!(s.push(&e, &mixed, now()).await.unwrap(), PushOutcome { accepted_ops: 1, duplicate_ops: 1 });
    let (log, _) = pull_all(s, &c, Cursor::Log(0), 100).await;
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].ops.len(), 1);
    assert_eq!(log[1].ops[0].field.as_str(), "c");
}

async fn concurrent_overwrites_are_conflicts_matching_the_reference_register(s: &Service) {
    let p = project(s).await;
    let mut coords: Vec<Device> = Vec::new();
    for _ in 0..3 {
        coords.push(device(s, p, Role::Coordinator).await);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let docs: Vec<DocId> = (0..4).map(|_| DocId::new()).collect();
    // Each writer edits having seen a random subset of what exists so far.
    let mut written: Vec<(Change, usize)> = Vec::new();
    let mut reference = Replica::default();
    let mut hlc = 100u64;
    for _ in 0..120 {
        let w = rng.random_range(0..coords.len());
        let doc = docs[rng.random_range(0..docs.len())];
        let field = ["x", "y"][rng.random_range(0..2)];
        hlc += rng.random_range(1..4);
        let seen: Vec<OpId> = written
            .iter()
            .filter(|(c, _)| c.doc == doc && c.ops[0].field.as_str() == field && rng.random_bool(0.5))
            .map(|(c, _)| c.op_id())
            .collect();
        let c = change(&coords[w], doc, Collection::Entity, hlc, &[(field, json!(hlc), seen)]);
        reference.apply(&c);
        written.push((c, w));
    }
    // Pushed in a random order, in random batches, some twice.
    written.shuffle(&mut rng);
    for chunk in written.chunks(7) {
        for (c, w) in chunk {
            s.push(&coords[*w], std::slice::from_ref(c), now()).await.unwrap();
            if rng.random_bool(0.2) {
                s.push(&coords[*w], std::slice::from_ref(c), now()).await.unwrap();
            }
        }
    }
    let mut expected: Vec<FieldConflict> = Vec::new();
    for (doc, fields) in &reference.docs {
        for (field, reg) in fields {
            let leaves = reg.leaves();
            if leaves.len() > 1 {
                expected.push(FieldConflict {
                    doc: *doc,
                    field: field.to_string(),
                    ops: leaves.iter().map(|(id, _)| id.to_string()).collect(),
                });
            }
        }
    }
    expected.sort_by(|a, b| (a.doc, &a.field).cmp(&(b.doc, &b.field)));
    let got = s.conflicts(p).await.unwrap();
    assert!(!expected.is_empty(), "the random history has concurrent edits");
    assert_eq!(got, expected);
}

/// Applies pulled changes to a device store and returns its documents as plain maps.
fn device_view(changes: &[Change]) -> BTreeMap<DocId, BTreeMap<String, (Value, Vec<Value>)>> {
    let store = Store::open_in_memory().unwrap();
    store.apply_remote(changes).unwrap();
    let mut out = BTreeMap::new();
    for collection in [Collection::Submission, Collection::Entity, Collection::Comment, Collection::Form] {
        for doc in store.list_documents(collection).unwrap() {
            let d = store.read_document(doc).unwrap();
            let fields = d
                .fields
                .iter()
                .map(|(f, st)| {
                    (
                        f.to_string(),
                        (st.value.clone(), st.conflicts.iter().map(|c| c.value.clone()).collect()),
                    )
                })
                .collect();
            out.insert(doc, fields);
        }
    }
    out
}

async fn snapshot_and_log_paging_reach_the_same_state_as_the_full_history(s: &Service) {
    let p = project(s).await;
    let a = device(s, p, Role::Coordinator).await;
    let b = device(s, p, Role::Coordinator).await;
    let reader = device(s, p, Role::Coordinator).await;
    let mut all = Vec::new();
    let mut hlc = 1_000;
    let docs: Vec<DocId> = (0..25).map(|_| DocId::new()).collect();
    for (i, doc) in docs.iter().enumerate() {
        hlc += 1;
        let first =
            change(&a, *doc, Collection::Entity, hlc, &[("n", json!(i), vec![]), ("m", json!("a"), vec![])]);
        let first_id = first.op_id();
        // Two concurrent edits of `n` on every third document: a conflict to carry over.
        let mut batch = vec![first];
        if i % 3 == 0 {
            batch.push(change(
                &a,
                *doc,
                Collection::Entity,
                hlc + 1,
                &[("n", json!("a-edit"), vec![first_id])],
            ));
        }
        s.push(&a, &batch, now()).await.unwrap();
        all.extend(batch);
        if i % 3 == 0 {
            let other =
                change(&b, *doc, Collection::Entity, hlc + 2, &[("n", json!("b-edit"), vec![first_id])]);
            s.push(&b, std::slice::from_ref(&other), now()).await.unwrap();
            all.push(other);
        }
        hlc += 3;
    }
    // A fresh device pages through the snapshot while writes keep coming.
    let mut cursor = Cursor::Start;
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let page = s.pull(&reader, cursor, 4).await.unwrap();
        pages += 1;
        got.extend(page.changes.iter().map(|c| serde_json::from_str::<Change>(c).unwrap()));
        cursor = page.cursor;
        if pages == 2 {
            hlc += 1;
            let late = change(&a, docs[0], Collection::Entity, hlc, &[("late", json!(true), vec![])]);
            let newdoc = change(&b, DocId(Uuid::nil()), Collection::Entity, hlc, &[("z", json!(0), vec![])]);
            s.push(&a, std::slice::from_ref(&late), now()).await.unwrap();
            s.push(&b, std::slice::from_ref(&newdoc), now()).await.unwrap();
            all.push(late);
            all.push(newdoc);
        }
        if !page.more {
            break;
        }
    }
    assert!(pages > 5, "the snapshot came in bounded pages ({pages})");
    assert!(matches!(cursor, Cursor::Log(_)));
    assert_eq!(device_view(&got), device_view(&all));
    // Nothing more after catching up; then new writes arrive through the log.
    let page = s.pull(&reader, cursor, 100).await.unwrap();
    assert!(page.changes.is_empty() && !page.more);
    let next = change(&a, docs[1], Collection::Entity, hlc + 10, &[("m", json!("again"), vec![])]);
    s.push(&a, std::slice::from_ref(&next), now()).await.unwrap();
    let page = s.pull(&reader, page.cursor, 100).await.unwrap();
    assert_eq!(page.changes.len(), 1);
}

async fn a_snapshot_remembers_seen_ops_that_arrive_later(s: &Service) {
    let p = project(s).await;
    let a = device(s, p, Role::Coordinator).await;
    let b = device(s, p, Role::Coordinator).await;
    let reader = device(s, p, Role::Coordinator).await;
    // The smallest possible id, to show the snapshot starts before every document.
    let doc = DocId(Uuid::nil());
    // b's edit saw a's value, which has not reached the server yet.
    let old = change(&a, doc, Collection::Entity, 10, &[("f", json!("old"), vec![])]);
    let new = change(&b, doc, Collection::Entity, 20, &[("f", json!("new"), vec![old.op_id()])]);
    s.push(&b, std::slice::from_ref(&new), now()).await.unwrap();
    let (snapshot, cursor) = pull_all(s, &reader, Cursor::Start, 10).await;
    s.push(&a, std::slice::from_ref(&old), now()).await.unwrap();
    let (rest, _) = pull_all(s, &reader, cursor, 10).await;
    let mut got = snapshot;
    got.extend(rest);
    let view = device_view(&got);
    assert_eq!(view[&doc]["f"], (json!("new"), vec![]), "the late op is not an open value");
    assert!(s.conflicts(p).await.unwrap().is_empty());
}

/// A new document's first change goes in by a different path from later ones on both backends
/// (all its ops at once): every answer arrives, once, and later changes merge over them.
async fn a_new_document_of_many_answers_is_stored_whole(s: &Service) {
    let p = project(s).await;
    let e = device(s, p, Role::Enumerator).await;
    let reader = device(s, p, Role::Coordinator).await;
    let doc = DocId::new();
    // 103 answers: more than one multi-row chunk of every size.
    let names: Vec<String> = (0..103).map(|i| format!("q{i:03}")).collect();
    let fields: Vec<(&str, Value, Vec<OpId>)> =
        names.iter().enumerate().map(|(i, n)| (n.as_str(), json!(i), vec![])).collect();
    let first = change(&e, doc, Collection::Submission, 10, &fields);
    // In the same push, a correction of two answers that saw the first change.
    let fix = change(
        &e,
        doc,
        Collection::Submission,
        11,
        &[("q000", json!("fixed"), vec![first.op_id()]), ("q102", json!(null), vec![first.op_id()])],
    );
    // And a second new document whose first change names an op it saw (not yet arrived).
    let other = DocId::new();
    let ghost = OpId { hlc: Hlc(5), replica: e.replica };
    let late = change(
        &e,
        other,
        Collection::Submission,
        12,
        &[("a", json!(1), vec![ghost]), ("b", json!(2), vec![])],
    );
    let batch = vec![first.clone(), fix.clone(), late.clone()];
    assert_eq!(s.push(&e, &batch, now()).await.unwrap(), PushOutcome { accepted_ops: 107, duplicate_ops: 0 });
    assert_eq!(s.push(&e, &batch, now()).await.unwrap(), PushOutcome { accepted_ops: 0, duplicate_ops: 107 });
    let (log, _) = pull_all(s, &reader, Cursor::Log(0), 100).await;
    assert_eq!(log, batch, "each change is in the log once, whole");
    for cursor in [Cursor::Start, Cursor::Log(0)] {
        let (got, _) = pull_all(s, &reader, cursor, 100).await;
        let view = device_view(&got);
        assert_eq!(view[&doc].len(), 103);
        assert_eq!(view[&doc]["q000"], (json!("fixed"), vec![]));
        assert_eq!(view[&doc]["q001"], (json!(1), vec![]));
        assert_eq!(view[&doc]["q102"], (json!(null), vec![]));
        assert_eq!(view[&other]["a"], (json!(1), vec![]));
    }
    assert!(s.conflicts(p).await.unwrap().is_empty(), "the correction replaced what it saw");
    // The op that was seen before it arrived is no open value when it comes.
    let ghost_change =
        Change { hlc: Hlc(5), ..change(&e, other, Collection::Submission, 5, &[("a", json!(0), vec![])]) };
    assert_eq!(
        s.push(&e, &[ghost_change], now()).await.unwrap(),
        PushOutcome { accepted_ops: 1, duplicate_ops: 0 }
    );
    assert!(s.conflicts(p).await.unwrap().is_empty());
}

/// A backend may hold a new document's row back (to write it once, with its sizes): within the
/// transaction it is still seen, sized and refused a second time, and after the commit it
/// grows from where it stood.
async fn a_new_document_is_seen_and_sized_within_its_transaction(s: &Service) {
    let p = project(s).await;
    let e = device(s, p, Role::Enumerator).await;
    let (doc, other) = (Uuid::now_v7(), Uuid::now_v7());
    let new = |doc| NewDocument {
        doc,
        project: p,
        collection: Collection::Submission,
        author: Some(e.id),
        parent: None,
        audience: Vec::new(),
    };
    let mut tx = s.storage().begin(Mode::Push).await.unwrap();
    tx.insert_document(&new(doc)).await.unwrap();
    assert_eq!(tx.grow_document(doc, 3, 100).await.unwrap(), (3, 100));
    assert_eq!(tx.grow_document(doc, 2, 50).await.unwrap(), (5, 150));
    let seen = tx.document(doc).await.unwrap().expect("the new document is seen in its transaction");
    assert_eq!((seen.project, seen.collection, seen.author), (p, Collection::Submission, Some(e.id)));
    // Grown after it was seen, and beside a second held document.
    assert_eq!(tx.grow_document(doc, 1, 10).await.unwrap(), (6, 160));
    tx.insert_document(&new(other)).await.unwrap();
    assert_eq!(tx.grow_document(other, 7, 70).await.unwrap(), (7, 70));
    tx.commit().await.unwrap();

    let mut tx = s.storage().begin(Mode::Push).await.unwrap();
    assert_eq!(tx.grow_document(doc, 1, 1).await.unwrap(), (7, 161));
    assert_eq!(tx.grow_document(other, 1, 1).await.unwrap(), (8, 71));
    tx.commit().await.unwrap();
    // A committed document is not created twice: refused at once, or by the commit.
    let mut tx = s.storage().begin(Mode::Push).await.unwrap();
    let refused = match tx.insert_document(&new(doc)).await {
        Err(_) => true,
        Ok(()) => tx.commit().await.is_err(),
    };
    assert!(refused, "a second creation of a committed document is refused");
    // Nor twice in one transaction, before or after it was read.
    for read_between in [false, true] {
        let twice = Uuid::now_v7();
        let mut tx = s.storage().begin(Mode::Push).await.unwrap();
        tx.insert_document(&new(twice)).await.unwrap();
        if read_between {
            assert!(tx.document(twice).await.unwrap().is_some());
        }
        let refused = match tx.insert_document(&new(twice)).await {
            Err(_) => true,
            Ok(()) => tx.commit().await.is_err(),
        };
        assert!(
            refused,
            "a document created twice in one transaction is refused (read between: {read_between})"
        );
    }
    let mut tx = s.storage().begin(Mode::Push).await.unwrap();
    assert_eq!(tx.grow_document(doc, 0, 0).await.unwrap(), (7, 161), "the refused creation changed nothing");
    drop(tx);
    // A rolled-back creation leaves nothing.
    let gone = Uuid::now_v7();
    let mut tx = s.storage().begin(Mode::Push).await.unwrap();
    tx.insert_document(&new(gone)).await.unwrap();
    drop(tx);
    let mut tx = s.storage().begin(Mode::Read).await.unwrap();
    assert!(tx.document(gone).await.unwrap().is_none());
    assert!(tx.document(doc).await.unwrap().is_some());
}

async fn scope_refusals_write_nothing(s: &Service) {
    let p = project(s).await;
    let other_project = project(s).await;
    let e1 = device(s, p, Role::Enumerator).await;
    let e2 = device(s, p, Role::Enumerator).await;
    let outsider = device(s, other_project, Role::Coordinator).await;
    let coord = device(s, p, Role::Coordinator).await;
    let mine = DocId::new();
    s.push(&e1, &[change(&e1, mine, Collection::Submission, 10, &[("a", json!(1), vec![])])], now())
        .await
        .unwrap();
    let loose = DocId::new();
    s.push(
        &coord,
        &[change(&coord, loose, Collection::Comment, 10, &[("text", json!("hi"), vec![])])],
        now(),
    )
    .await
    .unwrap();
    let ok = change(&e2, DocId::new(), Collection::Submission, 11, &[("a", json!(2), vec![])]);
    let refusals: Vec<(&str, &Device, Change)> = vec![
        (
            "another enumerator's submission",
            &e2,
            change(&e2, mine, Collection::Submission, 12, &[("a", json!(3), vec![])]),
        ),
        (
            "another project's document",
            &outsider,
            change(&outsider, mine, Collection::Submission, 12, &[("a", json!(3), vec![])]),
        ),
        (
            "an entity by an enumerator",
            &e2,
            change(&e2, DocId::new(), Collection::Entity, 12, &[("a", json!(3), vec![])]),
        ),
        (
            "a form by a coordinator",
            &coord,
            change(&coord, DocId::new(), Collection::Form, 12, &[("a", json!(3), vec![])]),
        ),
        (
            "a replica not the device's",
            &e2,
            change(&e1, DocId::new(), Collection::Submission, 12, &[("a", json!(3), vec![])]),
        ),
        (
            "a wrong collection",
            &coord,
            change(&coord, mine, Collection::Entity, 12, &[("a", json!(3), vec![])]),
        ),
        (
            "a comment on another's submission",
            &e2,
            change(
                &e2,
                DocId::new(),
                Collection::Comment,
                12,
                &[("submission", json!(mine.to_string()), vec![])],
            ),
        ),
        (
            "a comment gaining a submission later",
            &coord,
            change(
                &coord,
                loose,
                Collection::Comment,
                12,
                &[("submission", json!(mine.to_string()), vec![])],
            ),
        ),
        (
            "a self-seen op",
            &e2,
            change(
                &e2,
                DocId::new(),
                Collection::Submission,
                12,
                &[("a", json!(3), vec![OpId { hlc: Hlc(12), replica: e2.replica }])],
            ),
        ),
    ];
    for (what, d, bad) in refusals {
        // The good change before the bad one must not survive either.
        let ok = Change { replica: d.replica, ..ok.clone() };
        let err = s.push(d, &[ok, bad], now()).await.expect_err(what);
        assert!(matches!(err, StorageError::Forbidden(_) | StorageError::Invalid(_)), "{what}: {err}");
    }
    let (log, _) = pull_all(s, &coord, Cursor::Log(0), 100).await;
    // The two device changes, and the author the server wrote for the coordinator's comment.
    assert_eq!(log.len(), 3, "only the allowed changes made before are stored");
    let (other_log, _) = pull_all(s, &outsider, Cursor::Start, 100).await;
    assert!(other_log.is_empty());
    // A revoked device's push is refused inside the transaction.
    s.revoke_device(e1.id, 5).await.unwrap();
    assert!(s
        .push(&e1, &[change(&e1, mine, Collection::Submission, 20, &[("b", json!(1), vec![])])], now())
        .await
        .is_err());
}

async fn pull_scope_by_role(s: &Service) {
    let p = project(s).await;
    let other = project(s).await;
    let e1 = device(s, p, Role::Enumerator).await;
    let e2 = device(s, p, Role::Enumerator).await;
    let y = device(s, p, Role::Youth).await;
    let coord = device(s, p, Role::Coordinator).await;
    let outsider = device(s, other, Role::Coordinator).await;
    let sub1 = DocId::new();
    let sub2 = DocId::new();
    let entity = DocId::new();
    let note = DocId::new();
    s.push(&e1, &[change(&e1, sub1, Collection::Submission, 10, &[("a", json!(1), vec![])])], now())
        .await
        .unwrap();
    s.push(&e2, &[change(&e2, sub2, Collection::Submission, 10, &[("a", json!(2), vec![])])], now())
        .await
        .unwrap();
    s.push(
        &coord,
        &[change(&coord, entity, Collection::Entity, 11, &[("name", json!("school"), vec![])])],
        now(),
    )
    .await
    .unwrap();
    s.push(
        &coord,
        &[change(
            &coord,
            note,
            Collection::Comment,
            12,
            &[("submission", json!(sub1.to_string()), vec![]), ("text", json!("ok"), vec![])],
        )],
        now(),
    )
    .await
    .unwrap();
    s.push(
        &outsider,
        &[change(&outsider, DocId::new(), Collection::Entity, 13, &[("x", json!(1), vec![])])],
        now(),
    )
    .await
    .unwrap();
    let form = s
        .publish_form(&PublishForm {
            project: p,
            form_id: "victim".into(),
            version: "1".into(),
            roles: vec![Role::Enumerator],
            form: json!({"settings": {}}),
            media: Vec::new(),
            now_ms: now(),
        })
        .await
        .unwrap()
        .doc;
    let docs_of = async |d: &Device, cursor: Cursor| {
        let (changes, _) = pull_all(s, d, cursor, 2).await;
        let mut docs: Vec<DocId> = changes.iter().map(|c| c.doc).collect();
        docs.sort();
        docs.dedup();
        docs
    };
    let sorted = |mut v: Vec<DocId>| {
        v.sort();
        v
    };
    for cursor in [Cursor::Start, Cursor::Log(0)] {
        assert_eq!(docs_of(&e1, cursor).await, sorted(vec![sub1, entity, note, form]));
        assert_eq!(docs_of(&e2, cursor).await, sorted(vec![sub2, entity, form]));
        assert_eq!(docs_of(&y, cursor).await, sorted(vec![entity]), "the form is for enumerators only");
        assert_eq!(docs_of(&coord, cursor).await, sorted(vec![sub1, sub2, entity, note, form]));
        assert_eq!(docs_of(&outsider, cursor).await.len(), 1);
    }
}

async fn enrollment_codes_count_uses_and_expire(s: &Service) {
    let p = project(s).await;
    let code: [u8; 32] = rand::random();
    s.create_enrollment_code(&NewEnrollmentCode {
        code_hash: code,
        project: p,
        role: Role::Youth,
        uses: 2,
        expires_ms: Some(1_000),
        now_ms: 1,
    })
    .await
    .unwrap();
    let redeem = async |replica: ReplicaId, now_ms: i64| {
        s.redeem_enrollment_code(&Redeem {
            code_hash: code,
            replica,
            device_name: Some("phone".into()),
            device_id: Uuid::new_v4(),
            token_hash: rand::random(),
            now_ms,
        })
        .await
    };
    let r1 = ReplicaId::random();
    let first = redeem(r1, 10).await.unwrap();
    assert_eq!(first.device.role, Role::Youth);
    // The same replica again, while enrolled: refused without using the code.
    assert!(matches!(redeem(r1, 11).await, Err(StorageError::Conflict(_))), "already enrolled");
    redeem(ReplicaId::random(), 12).await.unwrap();
    assert!(matches!(redeem(ReplicaId::random(), 13).await, Err(StorageError::BadCode)), "used up");
    // A spent code never works again, not even for a replica that spent it.
    assert!(matches!(redeem(r1, 14).await, Err(StorageError::BadCode)), "spent, same replica");
    assert_eq!(s.list_devices(p).await.unwrap().len(), 2);

    // A revoked device cannot come back with a code made before its revocation.
    let many: [u8; 32] = rand::random();
    let make = async |hash: [u8; 32], now_ms: i64| {
        s.create_enrollment_code(&NewEnrollmentCode {
            code_hash: hash,
            project: p,
            role: Role::Youth,
            uses: 10,
            expires_ms: None,
            now_ms,
        })
        .await
        .unwrap()
    };
    make(many, 15).await;
    assert!(s.revoke_device(first.device.id, 16).await.unwrap());
    let again = async |hash: [u8; 32], now_ms: i64| {
        s.redeem_enrollment_code(&Redeem {
            code_hash: hash,
            replica: r1,
            device_name: None,
            device_id: Uuid::new_v4(),
            token_hash: rand::random(),
            now_ms,
        })
        .await
    };
    assert!(matches!(again(many, 17).await, Err(StorageError::BadCode)), "code older than the revocation");
    let newer: [u8; 32] = rand::random();
    make(newer, 18).await;
    again(newer, 19).await.expect("a code made after the revocation enrolls the replica again");

    let late: [u8; 32] = rand::random();
    s.create_enrollment_code(&NewEnrollmentCode {
        code_hash: late,
        project: p,
        role: Role::Youth,
        uses: 5,
        expires_ms: Some(100),
        now_ms: 1,
    })
    .await
    .unwrap();
    let expired = s
        .redeem_enrollment_code(&Redeem {
            code_hash: late,
            replica: ReplicaId::random(),
            device_name: None,
            device_id: Uuid::new_v4(),
            token_hash: rand::random(),
            now_ms: 100,
        })
        .await;
    assert!(matches!(expired, Err(StorageError::BadCode)));
    assert!(!s.revoke_device(first.device.id, 21).await.unwrap());
    assert!(s.device(first.device.id).await.unwrap().unwrap().is_revoked());
}

async fn reviews_and_forms_are_written_by_the_server_replica(s: &Service) {
    let p = project(s).await;
    let e = device(s, p, Role::Enumerator).await;
    let sub = DocId::new();
    s.push(&e, &[change(&e, sub, Collection::Submission, 10, &[("a", json!(1), vec![])])], now())
        .await
        .unwrap();
    let review = async |state: &str, comment: Option<&str>| {
        s.review(&Review {
            project: p,
            submission: sub,
            state: state.into(),
            comment: comment.map(str::to_owned),
            author: None,
            author_label: "admin".into(),
            now_ms: now(),
        })
        .await
        .unwrap()
    };
    let first = review("has_issues", Some("check the age")).await;
    review("approved", None).await;
    let (changes, _) = pull_all(s, &e, Cursor::Start, 100).await;
    let view = device_view(&changes);
    assert_eq!(
        view[&sub]["_review/state"],
        (json!("approved"), vec![]),
        "the second review replaced the first"
    );
    let comment = first.comment.unwrap();
    assert_eq!(view[&comment]["text"].0, json!("check the age"));
    assert_eq!(view[&comment]["submission"].0, json!(sub.to_string()));
    // Someone else's project cannot be reviewed through this one.
    let other = project(s).await;
    assert!(matches!(
        s.review(&Review {
            project: other,
            submission: sub,
            state: "approved".into(),
            comment: None,
            author: None,
            author_label: "x".into(),
            now_ms: now()
        })
        .await,
        Err(StorageError::NotFound(_))
    ));
    let form = |content: Value| PublishForm {
        project: p,
        form_id: "f".into(),
        version: "2024".into(),
        roles: vec![Role::Enumerator, Role::Youth],
        form: content,
        media: Vec::new(),
        now_ms: now(),
    };
    let published = s.publish_form(&form(json!({"a": 1}))).await.unwrap();
    assert!(published.published);
    assert_eq!(
        s.publish_form(&form(json!({"a": 1}))).await.unwrap(),
        PublishOutcome { doc: published.doc, published: false }
    );
    assert!(matches!(s.publish_form(&form(json!({"a": 2}))).await, Err(StorageError::Conflict(_))));
}

#[tokio::test]
async fn a_device_cannot_enroll_with_the_server_replica_and_reopening_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let open = || async {
        let s = SqliteStorage::open(dir.path().join("tejido.db")).unwrap();
        Service::new(std::sync::Arc::new(s)).await.unwrap()
    };
    let s = open().await;
    let p = project(&s).await;
    let code: [u8; 32] = rand::random();
    s.create_enrollment_code(&NewEnrollmentCode {
        code_hash: code,
        project: p,
        role: Role::Coordinator,
        uses: 1,
        expires_ms: None,
        now_ms: 1,
    })
    .await
    .unwrap();
    let redeem = Redeem {
        code_hash: code,
        replica: s.replica(),
        device_name: None,
        device_id: Uuid::new_v4(),
        token_hash: rand::random(),
        now_ms: 2,
    };
    assert!(matches!(s.redeem_enrollment_code(&redeem).await, Err(StorageError::Conflict(_))));
    let replica = s.replica();
    drop(s);
    let again = open().await;
    assert_eq!(again.replica(), replica);
    assert_eq!(again.list_projects().await.unwrap().len(), 1);
    std::fs::write(dir.path().join("other.db"), b"not a database at all, just text").unwrap();
    assert!(SqliteStorage::open(dir.path().join("other.db")).is_err());
}

async fn a_document_past_its_bound_is_refused_and_pages_stay_bounded(s: &Service) {
    use crate::service::limits::{MAX_DOC_BYTES, MAX_DOC_OPS, MAX_PAGE_BYTES};
    let p = project(s).await;
    let coord = device(s, p, Role::Coordinator).await;
    // One document grown 5,000 fields at a time towards 100,000: refused once past the bound.
    let doc = DocId::new();
    let mut accepted = 0u64;
    let mut refused = None;
    for round in 0..20u64 {
        let fields: Vec<(String, Value)> =
            (0..5_000).map(|i| (format!("q{round}_{i}"), json!(format!("answer {i}")))).collect();
        let ops = fields
            .iter()
            .map(|(f, v)| FieldOp { field: FieldPath::parse(f).unwrap(), value: v.clone(), seen: vec![] })
            .collect();
        let c = Change {
            doc,
            collection: Collection::Entity,
            replica: coord.replica,
            hlc: Hlc(100 + round),
            ops,
        };
        match s.push(&coord, &[c], now()).await {
            Ok(o) => accepted += o.accepted_ops,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert!(accepted <= MAX_DOC_OPS, "{accepted} ops stored");
    assert!(matches!(refused, Some(StorageError::TooLarge(_))), "{refused:?}");
    // Big values: refused by bytes, and the refused change left nothing behind.
    let big = DocId::new();
    let value = "x".repeat(700 * 1024);
    let mut stored = 0;
    for i in 0..4u64 {
        let c = change(
            &coord,
            big,
            Collection::Entity,
            200 + i,
            &[(&format!("photo_note{i}"), json!(value), vec![])],
        );
        if s.push(&coord, &[c], now()).await.is_ok() {
            stored += 1;
        }
    }
    assert_eq!(stored, (MAX_DOC_BYTES / (700 * 1024)) as usize);
    // Every page, from a snapshot or the log, stays within the byte bound.
    for start in [Cursor::Start, Cursor::Log(0)] {
        let mut cursor = start;
        loop {
            let page = s.pull(&coord, cursor, 1_000).await.unwrap();
            let bytes: usize = page.changes.iter().map(String::len).sum();
            assert!(bytes <= MAX_PAGE_BYTES, "a page of {bytes} bytes");
            cursor = page.cursor;
            if !page.more {
                break;
            }
        }
    }
}

/// Column and index definitions of every table, to compare schemas.
fn schema_of(path: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut out = Vec::new();
    let names: Vec<(String, String)> = conn
        .prepare("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    for (kind, name) in names {
        out.push(format!("{kind} {name}"));
        if kind == "table" {
            let mut stmt = conn.prepare(&format!("PRAGMA table_xinfo({name})")).unwrap();
            let cols = stmt
                .query_map([], |r| {
                    Ok(format!(
                        "  {} {} notnull={} default={:?} pk={}",
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, i64>(5)?
                    ))
                })
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap();
            out.extend(cols);
        }
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    out.push(format!("user_version {version}"));
    out
}

#[tokio::test]
async fn an_upgraded_database_equals_a_fresh_one_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    // A database as the first server release made it, with a document and a clock that a
    // device had moved to the end of time.
    let old = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&old).unwrap();
        conn.execute_batch(super::sqlite::MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "PRAGMA application_id = 1414157142; PRAGMA user_version = 1;
             INSERT INTO meta (key, value) VALUES ('replica', '0190a3c4-0000-7000-8000-00000000000a'),
                                                  ('clock', '18446744073709551615');
             INSERT INTO projects VALUES (x'00000000000000000000000000000001', 'p', 1);
             INSERT INTO documents VALUES (x'00000000000000000000000000000002', x'00000000000000000000000000000001',
                                           'entity', NULL, NULL, NULL);
             INSERT INTO field_ops VALUES (x'00000000000000000000000000000002', 'a', 5, x'00000000000000000000000000000003', '1', 1, 1);
             INSERT INTO changes (project, doc, hlc, replica, device, body, received_ms)
                  VALUES (x'00000000000000000000000000000001', x'00000000000000000000000000000002', 5,
                          x'00000000000000000000000000000003', NULL, '0123456789', 1);",
        )
        .unwrap();
    }
    let upgraded = Service::new(std::sync::Arc::new(SqliteStorage::open(&old).unwrap())).await.unwrap();
    let fresh_path = dir.path().join("fresh.db");
    let fresh = SqliteStorage::open(&fresh_path).unwrap();
    drop(fresh);
    assert_eq!(schema_of(&old), schema_of(&fresh_path));
    // The data survived, with the document's size counted.
    assert_eq!(upgraded.list_projects().await.unwrap().len(), 1);
    let conn = rusqlite::Connection::open(&old).unwrap();
    let (ops, bytes): (i64, i64) =
        conn.query_row("SELECT ops, bytes FROM documents", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!((ops, bytes), (1, 10));
    // The poisoned clock was retired with the replica that issued it.
    assert_ne!(upgraded.replica().to_string(), "0190a3c4-0000-7000-8000-00000000000a");
    let clock: String =
        conn.query_row("SELECT value FROM meta WHERE key = 'clock'", [], |r| r.get(0)).unwrap();
    assert_eq!(clock, "0");
    // A newer schema than this server knows is refused, not guessed at.
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(upgraded);
    let err = SqliteStorage::open(&old).unwrap_err().to_string();
    assert!(err.contains("schema version 99"), "{err}");
}

async fn an_upload_lease_has_one_holder_until_it_expires(s: &Service) {
    let p = project(s).await;
    let d = device(s, p, Role::Enumerator).await;
    let owner = UploadOwner::of(&d);
    let sha = "ab".repeat(32);
    let (h1, h2, h3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let take = async |holder: Uuid, now: i64, until: i64| {
        let mut tx = s.storage().begin(Mode::Write).await.unwrap();
        let taken = tx.take_upload_lease(owner, &sha, holder, now, until).await.unwrap();
        tx.commit().await.unwrap();
        taken
    };
    let release = async |holder: Uuid| {
        let mut tx = s.storage().begin(Mode::Write).await.unwrap();
        tx.release_upload_lease(owner, &sha, holder).await.unwrap();
        tx.commit().await.unwrap();
    };
    let held = async |now: i64| {
        let mut tx = s.storage().begin(Mode::Read).await.unwrap();
        tx.upload_lease_held(owner, &sha, now).await.unwrap()
    };
    assert!(!held(10).await);
    assert!(take(h1, 10, 20).await);
    assert!(held(19).await && !held(20).await, "held until 20, not after");
    assert!(!take(h2, 15, 30).await, "held by another until 20");
    // The holder died: its lease runs out and another takes it.
    assert!(take(h2, 20, 30).await);
    // A late release by the dead holder frees nothing.
    release(h1).await;
    assert!(!take(h3, 21, 40).await);
    release(h2).await;
    assert!(!held(21).await, "released");
    assert!(take(h3, 21, 40).await);
    // Another upload of the same device is another lease.
    let mut tx = s.storage().begin(Mode::Write).await.unwrap();
    assert!(tx.take_upload_lease(owner, &"cd".repeat(32), h1, 22, 30).await.unwrap());
    drop(tx);
    // Dropped without commit: rolled back, so the lease was never taken.
    let mut tx = s.storage().begin(Mode::Write).await.unwrap();
    assert!(tx.take_upload_lease(owner, &"cd".repeat(32), h2, 23, 30).await.unwrap());
    tx.commit().await.unwrap();
}

/// Two writers overlap: the second starts while the first is open. Whatever order they finish
/// in, a reader following the log never passes an op that commits after it looked. Writers of
/// every kind take turns here; two pushes (on a backend that runs them at once) may finish in
/// either order, and log positions follow the order they committed in.
async fn writers_commit_in_log_order_and_no_pull_skips_a_late_commit(s: &Service) {
    late_commits(s, Mode::Write).await;
    late_commits(s, Mode::Push).await;
}

async fn late_commits(s: &Service, mode: Mode) {
    let p = project(s).await;
    let coord = device(s, p, Role::Coordinator).await;
    let reader = device(s, p, Role::Coordinator).await;
    let (_, mut cursor) = pull_all(s, &reader, Cursor::Start, 10).await;
    let replica = coord.replica;
    let entry = move |doc: Uuid, body: &'static str| LogEntry {
        project: p,
        doc,
        hlc: Hlc(1),
        replica,
        device: None,
        body,
        received_ms: 1,
    };
    let (d1, d2) = (DocId::new(), DocId::new());
    for d in [d1, d2] {
        s.push(&coord, &[change(&coord, d, Collection::Entity, 5, &[("a", json!(0), vec![])])], now())
            .await
            .unwrap();
    }
    let (_, c) = pull_all(s, &reader, cursor, 10).await;
    cursor = c;
    // Who committed, in order. The first writer holds this across its commit, so a second that
    // commits just after it cannot record itself first.
    let committed = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
    // The first writer appends and holds its transaction open.
    let mut first = s.storage().begin(mode).await.unwrap();
    first.lock_documents(&[d1.0]).await.unwrap();
    first.append_log(&entry(d1.0, r#"{"first":1}"#)).await.unwrap();
    // The second starts meanwhile and tries to commit before the first.
    let storage = s.storage().clone();
    let order = committed.clone();
    let second = tokio::spawn(async move {
        let mut tx = storage.begin(mode).await.unwrap();
        tx.lock_documents(&[d2.0]).await.unwrap();
        tx.append_log(&entry(d2.0, r#"{"second":2}"#)).await.unwrap();
        tx.commit().await.unwrap();
        order.lock().await.push(r#"{"second":2}"#);
    });
    let at_once = matches!(mode, Mode::Push) && s.storage().concurrent_pushes();
    if at_once {
        // The second waits on nothing: let it commit (bounded, so a backend that blocks it
        // fails below instead of hanging).
        for _ in 0..200 {
            if !committed.lock().await.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    } else {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A reader now: whatever it sees, its cursor must not pass the first writer's entry.
    let mut tx = s.storage().begin(Mode::Read).await.unwrap();
    let scope = crate::service::rules::Scope::of(&reader);
    let Cursor::Log(after) = cursor else { panic!("the reader follows the log") };
    let (seen, _) = tx.log_page(&scope, after, 10, 1 << 20).await.unwrap();
    drop(tx);
    {
        let mut order = committed.lock().await;
        first.commit().await.unwrap();
        order.push(r#"{"first":1}"#);
    }
    second.await.unwrap();
    let mut tx = s.storage().begin(Mode::Read).await.unwrap();
    let (all, _) = tx.log_page(&scope, after, 10, 1 << 20).await.unwrap();
    let bodies: Vec<&str> = all.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(bodies, *committed.lock().await, "positions follow commit order");
    // Writers of other kinds always take turns; pushes do where the backend has one writer.
    // Where pushes run at once, the second (which waited on nothing) committed first.
    if at_once {
        assert_eq!(bodies, [r#"{"second":2}"#, r#"{"first":1}"#], "pushes of other documents run at once");
    } else {
        assert_eq!(bodies, [r#"{"first":1}"#, r#"{"second":2}"#], "writers take turns");
    }
    // What the reader saw mid-way is a prefix of the final order: it skipped nothing.
    assert_eq!(seen.as_slice(), &all[..seen.len()], "the reader saw a later entry before an earlier one");
}

/// Two pushes naming one document take turns on it, whatever the backend; one writer of
/// another kind waits for the pushes in flight.
async fn pushes_naming_one_document_take_turns(s: &Service) {
    let p = project(s).await;
    let coord = device(s, p, Role::Coordinator).await;
    let doc = DocId::new();
    s.push(&coord, &[change(&coord, doc, Collection::Entity, 5, &[("a", json!(0), vec![])])], now())
        .await
        .unwrap();
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut first = s.storage().begin(Mode::Push).await.unwrap();
    first.lock_documents(&[doc.0]).await.unwrap();
    let spawn = |mode: Mode, docs: Vec<Uuid>, name: &'static str| {
        let storage = s.storage().clone();
        let order = order.clone();
        tokio::spawn(async move {
            let mut tx = storage.begin(mode).await.unwrap();
            tx.lock_documents(&docs).await.unwrap();
            tx.commit().await.unwrap();
            order.lock().unwrap().push(name);
        })
    };
    let same = spawn(Mode::Push, vec![Uuid::new_v4(), doc.0], "same document");
    let other = spawn(Mode::Write, Vec::new(), "another writer");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(order.lock().unwrap().is_empty(), "{:?} went ahead of a push in flight", order.lock().unwrap());
    order.lock().unwrap().push("first");
    first.commit().await.unwrap();
    same.await.unwrap();
    other.await.unwrap();
    assert_eq!(order.lock().unwrap().len(), 3);
}

async fn users_sessions_and_login_failures_round_trip(s: &Service) {
    use crate::service::accounts::Login;
    let p = project(s).await;
    let q = project(s).await;
    let (user, created) =
        s.add_user(" Ana@Example.org", Some("a long password"), p, UserRole::Coordinator, 5).await.unwrap();
    assert!(created && user.email == "ana@example.org");
    assert!(!user.password_hash.contains("a long password"), "only the hash is kept");
    let (again, created) = s.add_user("ana@example.org", None, q, UserRole::Admin, 6).await.unwrap();
    assert!(!created && again.id == user.id);
    assert!(matches!(
        s.add_user("ana@example.org", Some("another password"), q, UserRole::Admin, 6).await,
        Err(StorageError::Conflict(_))
    ));
    assert!(matches!(
        s.add_user("new@example.org", None, p, UserRole::Admin, 6).await,
        Err(StorageError::Invalid(_))
    ));
    assert!(matches!(
        s.add_user("short@example.org", Some("short"), p, UserRole::Admin, 6).await,
        Err(StorageError::Invalid(_))
    ));
    let accounts = s.list_users().await.unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].role_in(q), Some(UserRole::Admin));
    assert_eq!(accounts[0].role_in(p), Some(UserRole::Coordinator));

    let Login::Ok { token, session } =
        s.login("ana@example.org", "a long password", "10.0.0.1", 1_000).await.unwrap()
    else {
        panic!("the right password signs in")
    };
    let (found, account) = s.session(&token, 2_000).await.unwrap().unwrap();
    assert_eq!((found.user, found.csrf.clone()), (user.id, session.csrf.clone()));
    assert_eq!(account.memberships.len(), 2);
    assert!(s.session(&token, session.expires_ms).await.unwrap().is_none(), "expired");
    assert!(s.session("not-a-token", 2_000).await.unwrap().is_none());
    // A new password ends every session.
    s.set_password("ana@example.org", "a new long password").await.unwrap();
    assert!(s.session(&token, 2_000).await.unwrap().is_none());
    assert!(matches!(
        s.login("ana@example.org", "a long password", "10.0.0.1", 3_000).await.unwrap(),
        Login::Refused
    ));
    let Login::Ok { token, .. } =
        s.login("ana@example.org", "a new long password", "10.0.0.1", 3_000).await.unwrap()
    else {
        panic!()
    };
    s.logout(&token).await.unwrap();
    assert!(s.session(&token, 3_000).await.unwrap().is_none());

    // Failures per address slow down every account tried from it.
    let free = crate::service::accounts::FREE_FAILURES_PER_ADDRESS;
    for i in 0..free {
        let email = format!("nobody{i}@example.org");
        assert!(matches!(s.login(&email, "whatever", "10.0.0.9", 10_000).await.unwrap(), Login::Refused));
    }
    assert!(matches!(
        s.login("ana@example.org", "a new long password", "10.0.0.9", 10_000).await.unwrap(),
        Login::Throttled { .. }
    ));
    assert!(matches!(
        s.login("ana@example.org", "a new long password", "10.0.0.2", 10_000).await.unwrap(),
        Login::Ok { .. }
    ));
    // A day after the last failure, the counts are forgotten.
    let later = 10_000 + crate::service::accounts::FORGET_FAILURES_MS + 1;
    assert!(matches!(
        s.login("someone@example.org", "whatever", "10.0.0.7", later).await.unwrap(),
        Login::Refused
    ));
    assert!(matches!(
        s.login("ana@example.org", "a new long password", "10.0.0.9", later).await.unwrap(),
        Login::Ok { .. }
    ));
    assert!(s.remove_user("ana@example.org").await.unwrap());
    assert!(!s.remove_user("ana@example.org").await.unwrap());
    assert!(s.list_users().await.unwrap().is_empty());
}

fn submission_change(d: &Device, doc: DocId, hlc: u64, form: &str, extra: &[(&str, Value)]) -> Change {
    let mut fields = vec![
        ("_form", json!(form), vec![]),
        ("_form_version", json!("1"), vec![]),
        ("_status", json!("finalized"), vec![]),
    ];
    fields.extend(extra.iter().map(|(f, v)| (*f, v.clone(), vec![])));
    change(d, doc, Collection::Submission, hlc, &fields)
}

async fn the_read_model_follows_changes_and_filters_by_keyset(s: &Service) {
    let p = project(s).await;
    let e = device(s, p, Role::Enumerator).await;
    let f = device(s, p, Role::Enumerator).await;
    let mut docs = Vec::new();
    for i in 0..12u64 {
        let doc = DocId::new();
        let d = if i % 3 == 0 { &f } else { &e };
        let form = if i % 2 == 0 { "hogares" } else { "bitacora" };
        let c = submission_change(
            d,
            doc,
            Hlc::new(1_000 + i, 0).0,
            form,
            &[("district", json!(format!("d{}", i % 4))), ("n", json!(i))],
        );
        // Received times step so the order is known.
        s.push(d, &[c], 1_000_000 + i * 10).await.unwrap();
        docs.push(doc);
    }
    let all = |f: SubmissionFilter| async move {
        let mut out = Vec::new();
        let mut f = f;
        loop {
            let page = s.list_submissions(&f, 5).await.unwrap();
            out.extend(page.rows.iter().map(|r| r.doc));
            match page.next {
                Some(c) => f.after = Some(crate::service::read_model::parse_cursor(&c).unwrap()),
                None => return out,
            }
        }
    };
    let newest_first: Vec<Uuid> = docs.iter().rev().map(|d| d.0).collect();
    assert_eq!(all(SubmissionFilter { project: p, ..Default::default() }).await, newest_first);
    let hogares =
        all(SubmissionFilter { project: p, form_id: Some("hogares".into()), ..Default::default() }).await;
    assert_eq!(hogares.len(), 6);
    let by_f = all(SubmissionFilter { project: p, author_device: Some(f.id), ..Default::default() }).await;
    assert_eq!(by_f.len(), 4);
    let d1 = all(SubmissionFilter {
        project: p,
        answer: Some(("district".into(), "d1".into())),
        ..Default::default()
    })
    .await;
    assert_eq!(d1.len(), 3);
    let n7 =
        all(SubmissionFilter { project: p, answer: Some(("n".into(), "7".into())), ..Default::default() })
            .await;
    assert_eq!(n7, vec![docs[7].0]);
    let window = all(SubmissionFilter {
        project: p,
        from_ms: Some(1_000_030),
        to_ms: Some(1_000_060),
        ..Default::default()
    })
    .await;
    assert_eq!(window.len(), 3);
    // Another project sees none of them.
    let q = project(s).await;
    assert!(all(SubmissionFilter { project: q, ..Default::default() }).await.is_empty());

    // A review moves it out of the queue; a conflict flags it.
    s.review(&Review {
        project: p,
        submission: docs[0],
        state: "approved".into(),
        comment: None,
        author: None,
        author_label: "admin".into(),
        now_ms: now(),
    })
    .await
    .unwrap();
    let pending =
        all(SubmissionFilter { project: p, review_state: Some(PENDING_REVIEW.into()), ..Default::default() })
            .await;
    assert_eq!(pending.len(), 11);
    let approved =
        all(SubmissionFilter { project: p, review_state: Some("approved".into()), ..Default::default() })
            .await;
    assert_eq!(approved, vec![docs[0].0]);
    let seen = OpId { hlc: Hlc::new(1_000, 0), replica: f.replica };
    let coordinator = device(s, p, Role::Coordinator).await;
    s.push(
        &f,
        &[change(
            &f,
            docs[0],
            Collection::Submission,
            Hlc::new(6_000, 0).0,
            &[("district", json!("x"), vec![seen])],
        )],
        now(),
    )
    .await
    .unwrap();
    s.push(
        &coordinator,
        &[change(
            &coordinator,
            docs[0],
            Collection::Submission,
            Hlc::new(6_001, 0).0,
            &[("district", json!("y"), vec![seen])],
        )],
        now(),
    )
    .await
    .unwrap();
    let flagged = all(SubmissionFilter {
        project: p,
        flags: crate::service::read_model::Flag::Conflicts.bit(),
        ..Default::default()
    })
    .await;
    assert_eq!(flagged, vec![docs[0].0]);
    let detail = s.submission_detail(docs[0].0).await.unwrap().unwrap();
    assert_eq!(detail.state.conflicts, 1);
    assert_eq!(detail.state.received_ms, 1_000_000, "received is when it first arrived");
    assert_eq!(detail.state.review_state, "approved");
    let district = detail.fields.iter().find(|(f, _)| f == "district").unwrap();
    assert_eq!(district.1.iter().filter(|v| v.open).count(), 2);
}

async fn the_read_model_is_rebuilt_when_missing(s: &Service) {
    let p = project(s).await;
    let e = device(s, p, Role::Enumerator).await;
    let doc = DocId::new();
    s.push(&e, &[submission_change(&e, doc, Hlc::new(1_000, 0).0, "hogares", &[("a", json!(1))])], now())
        .await
        .unwrap();
    let before = s.submission_detail(doc.0).await.unwrap().unwrap().state;
    // As after an upgrade or a migration: the rows are rebuilt from the documents.
    let mut tx = s.storage().begin(Mode::Write).await.unwrap();
    tx.put_submission_state(&SubmissionState {
        answers: "{}".into(),
        form_id: "wrong".into(),
        ..before.clone()
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(s.rebuild_read_model().await.unwrap() >= 1);
    let after = s.submission_detail(doc.0).await.unwrap().unwrap().state;
    assert_eq!(after.form_id, "hogares");
    assert_eq!(serde_json::from_str::<Value>(&after.answers).unwrap(), json!({ "a": 1 }));
    assert_eq!(after.received_ms, before.received_ms);
}

/// A push writes the row of a submission it creates from the change alone; the row must be the
/// one the document's stored ops give (what a rebuild computes), flags included, beside
/// submissions edited, conflicted or created and edited in the same push.
async fn a_new_submission_row_equals_the_row_rebuilt_from_its_ops(s: &Service) {
    use crate::service::read_model::Flag;
    let p = project(s).await;
    let e = device(s, p, Role::Enumerator).await;
    let form = tejido_core::form::import_xlsform(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/forms/victimizacion_hogares.xlsx"),
    )
    .unwrap();
    let (form_id, version) = (form.settings.form_id.clone(), form.settings.version.clone());
    let interview = |doc: DocId, hlc: u64, minutes: i64, consent: Option<&str>| {
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-02T10:00:00-05:00").unwrap();
        let end = start + chrono::Duration::minutes(minutes);
        let mut fields = vec![
            ("_form", json!(form_id), vec![]),
            ("_form_version", json!(version), vec![]),
            ("_status", json!("finalized"), vec![]),
            ("start", json!(start.to_rfc3339()), vec![]),
            ("end", json!(end.to_rfc3339()), vec![]),
        ];
        if let Some(c) = consent {
            fields.push(("consent", json!(c), vec![]));
        }
        change(&e, doc, Collection::Submission, Hlc::new(hlc, 0).0, &fields)
    };
    let state = async |doc: DocId| s.submission_detail(doc.0).await.unwrap().unwrap().state;

    // Before its form is published, a submission gets no flag that needs the form.
    let early = DocId::new();
    s.push(&e, &[interview(early, 1_000, 1, None)], now()).await.unwrap();
    let before = state(early).await;
    assert_eq!((before.duration_s, before.flags), (None, 0));
    s.publish_form(&PublishForm {
        project: p,
        form_id: form_id.clone(),
        version: version.clone(),
        roles: vec![Role::Enumerator],
        form: serde_json::to_value(&form).unwrap(),
        media: Vec::new(),
        now_ms: now(),
    })
    .await
    .unwrap();

    // One push: an edit of the early one, ten ordinary interviews, a short one without the
    // required consent, one created and edited, one created and then written over unseen.
    let mut changes = vec![change(
        &e,
        early,
        Collection::Submission,
        Hlc::new(2_000, 0).0,
        &[("consent", json!("yes"), vec![])],
    )];
    let ordinary: Vec<DocId> = (0..10).map(|_| DocId::new()).collect();
    for (i, doc) in ordinary.iter().enumerate() {
        changes.push(interview(*doc, 2_001 + i as u64, 30, Some("yes")));
    }
    let (short, edited, conflicted) = (DocId::new(), DocId::new(), DocId::new());
    changes.push(interview(short, 2_100, 2, None));
    changes.push(interview(edited, 2_101, 30, Some("yes")));
    let first = OpId { hlc: Hlc::new(2_101, 0), replica: e.replica };
    changes.push(change(
        &e,
        edited,
        Collection::Submission,
        Hlc::new(2_102, 0).0,
        &[("consent", json!("no"), vec![first])],
    ));
    changes.push(interview(conflicted, 2_103, 30, Some("yes")));
    changes.push(change(
        &e,
        conflicted,
        Collection::Submission,
        Hlc::new(2_104, 0).0,
        &[("consent", json!("no"), vec![])],
    ));
    s.push(&e, &changes, now()).await.unwrap();

    // The form published through this process is seen at once, though it was missing before.
    let early_now = state(early).await;
    assert_eq!((early_now.duration_s, early_now.flags), (Some(60), 0));
    for doc in &ordinary {
        let row = state(*doc).await;
        assert_eq!((row.duration_s, row.flags, row.conflicts), (Some(1_800), 0, 0));
        assert_eq!(row.author_device, Some(e.id));
        assert_eq!(serde_json::from_str::<Value>(&row.answers).unwrap()["consent"], json!("yes"));
    }
    let row = state(short).await;
    assert_eq!(row.flags, Flag::ShortInterview.bit() | Flag::RequiredMissing.bit());
    let row = state(edited).await;
    assert_eq!((row.flags, row.conflicts), (0, 0));
    assert_eq!(serde_json::from_str::<Value>(&row.answers).unwrap()["consent"], json!("no"));
    let row = state(conflicted).await;
    assert_eq!((row.flags, row.conflicts), (Flag::Conflicts.bit(), 1));

    let all: Vec<DocId> =
        [early, short, edited, conflicted].into_iter().chain(ordinary.iter().copied()).collect();
    let mut pushed = Vec::new();
    for doc in &all {
        pushed.push(state(*doc).await);
    }
    assert!(s.rebuild_read_model().await.unwrap() >= all.len() as u64);
    for (doc, was) in all.iter().zip(pushed) {
        let rebuilt = state(*doc).await;
        assert_eq!(SubmissionState { updated_ms: 0, ..rebuilt }, SubmissionState { updated_ms: 0, ..was });
    }
}

/// The writer never checkpoints (a push would pay for it); the checkpointer thread does, soon
/// after commits, so the WAL does not grow without end while the server runs.
#[tokio::test]
async fn the_checkpointer_folds_the_wal_into_the_database_while_the_server_runs() {
    let (dir, s) = sqlite().await;
    let db = dir.path().join("tejido.db");
    let wal = dir.path().join("tejido.db-wal");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    // Let the checkpoint of the set-up's commits finish first.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let before = size(&db);
    let p = project(&s).await;
    let e = device(&s, p, Role::Enumerator).await;
    for i in 0..50u64 {
        let answers: Vec<(String, Value, Vec<OpId>)> = (0..40)
            .map(|f| (format!("q{f}"), json!(format!("answer {i} {f} {}", "x".repeat(40))), vec![]))
            .collect();
        let fields: Vec<(&str, Value, Vec<OpId>)> =
            answers.iter().map(|(f, v, seen)| (f.as_str(), v.clone(), seen.clone())).collect();
        let batch = vec![change(&e, DocId::new(), Collection::Submission, 100 + i, &fields)];
        s.push(&e, &batch, now()).await.unwrap();
    }
    assert!(size(&wal) > 0, "the pushes went to the WAL");
    // The database file itself grows only through a checkpoint; none is run by hand here.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while size(&db) <= before + 64 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint reached the database file: {} → {}",
            before,
            size(&db)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
