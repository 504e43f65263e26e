//! 20 devices fill submissions offline and edit shared documents concurrently, sync in random
//! orders and random partitions, and converge: every device and the server agree, every
//! finalized submission arrives exactly once, every concurrent overwrite is a conflict on the
//! server.
#![allow(clippy::unwrap_used, clippy::needless_range_loop)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::json;
use tejido_core::crdt::OpId;
use tejido_core::store::StatusFilter;
use tejido_core::{Collection, DocId};
use tejido_tests::device::{documents, fill_submission, reference_store, test_options, Device};
use tejido_tests::server::TestServer;

const ENUMERATORS: usize = 14;
const COORDINATORS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_devices_converge() {
    let seed: u64 =
        std::env::var("TEJIDO_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed}");
    let started = std::time::Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let soak = std::env::var_os("TEJIDO_SOAK").is_some();
    let rounds = if soak { 12 } else { 3 };

    let server = TestServer::start();
    let project = server.create_project("observatorio");
    let (_, enum_link) = server.enrollment_code(project, "enumerator", ENUMERATORS as u32, &server.url());
    let (_, coord_link) =
        server.enrollment_code(project, "coordinator", COORDINATORS as u32 + 1, &server.url());
    let mut devices = Vec::new();
    for i in 0..ENUMERATORS {
        devices.push(Device::enroll(&enum_link, &format!("enumerator-{i}"), test_options()).await.unwrap());
    }
    for i in 0..COORDINATORS {
        devices.push(Device::enroll(&coord_link, &format!("coordinator-{i}"), test_options()).await.unwrap());
    }
    let is_coord = |i: usize| i >= ENUMERATORS;

    // A coordinator creates the shared list; everyone gets it.
    let entities: Vec<DocId> = (0..4)
        .map(|k| {
            devices[ENUMERATORS]
                .store()
                .create_document(
                    Collection::Entity,
                    &[("name", json!(format!("place {k}"))), ("visits", json!(0))],
                )
                .unwrap()
        })
        .collect();
    let mut accepted = 0u64;
    for d in devices.iter_mut() {
        accepted += d.sync().await.unwrap().ops_accepted;
    }
    let mut finalized: BTreeSet<DocId> = BTreeSet::new();
    let mut drafts: BTreeSet<DocId> = BTreeSet::new();
    let mut own: HashMap<usize, Vec<DocId>> = HashMap::new();

    for _round in 0..rounds {
        // Offline work.
        for i in 0..devices.len() {
            let store = devices[i].store();
            if is_coord(i) {
                for _ in 0..rng.random_range(1..4) {
                    let e = entities[rng.random_range(0..entities.len())];
                    let field = ["visits", "name", "notes"][rng.random_range(0..3)];
                    store.set_answer(e, field, json!(rng.random_range(0..1000))).unwrap();
                }
                let visible: Vec<DocId> = store
                    .list_submissions(StatusFilter::Finalized)
                    .unwrap()
                    .into_iter()
                    .map(|s| s.id)
                    .collect();
                if let Some(s) = visible.choose(&mut rng) {
                    store.set_answer(*s, "_review/state", json!("approved")).unwrap();
                    store.set_answer(*s, "q0", json!("corrected")).unwrap();
                }
            } else {
                for _ in 0..rng.random_range(0..3) {
                    let doc = fill_submission(store, "victimization", rng.random_range(1..6), &mut rng);
                    finalized.insert(doc);
                    own.entry(i).or_default().push(doc);
                }
                if rng.random_bool(0.3) {
                    let d = store.start_submission("victimization", "1").unwrap();
                    store.set_answer(d, "q0", json!("never leaves")).unwrap();
                    drafts.insert(d);
                }
                if let Some(s) = own.get(&i).and_then(|v| v.choose(&mut rng)) {
                    store.set_answer(*s, "q1", json!(rng.random_range(0..100))).unwrap();
                }
            }
        }
        // A random partition syncs, in random order, some of it concurrently.
        let mut order: Vec<usize> = (0..devices.len()).filter(|_| rng.random_bool(0.6)).collect();
        order.shuffle(&mut rng);
        for group in order.chunks(4) {
            let mut futures = Vec::new();
            let mut picked: Vec<&mut Device> = Vec::new();
            for (i, d) in devices.iter_mut().enumerate() {
                if group.contains(&i) {
                    picked.push(d);
                }
            }
            for d in picked {
                futures.push(d.sync());
            }
            for r in futures_join(futures).await {
                accepted += r.unwrap().ops_accepted;
            }
        }
    }

    // Concurrent overwrites: every coordinator writes the same fields offline, and each
    // enumerator edits an answer of its own that a coordinator corrects at the same time.
    let mut concurrent: BTreeMap<(DocId, String), BTreeSet<OpId>> = BTreeMap::new();
    for (i, d) in devices.iter().enumerate().filter(|(i, _)| is_coord(*i)) {
        for f in ["contested/a", "contested/b"] {
            let e = entities[i % 2];
            d.store().set_answer(e, f, json!(format!("from {i}"))).unwrap();
            let op = d
                .store()
                .read_document(e)
                .unwrap()
                .fields
                .iter()
                .find(|(p, _)| p.as_str() == f)
                .unwrap()
                .1
                .op;
            concurrent.entry((e, f.into())).or_default().insert(op);
        }
    }
    for i in 0..ENUMERATORS {
        let Some(docs) = own.get(&i) else { continue };
        let doc = docs[0];
        let coord = ENUMERATORS + rng.random_range(0..COORDINATORS);
        for who in [i, coord] {
            let store = devices[who].store();
            if store.read_document(doc).is_err() {
                continue; // the coordinator has not pulled it yet: no overwrite
            }
            store.set_answer(doc, "contested", json!(format!("by {who}"))).unwrap();
            let op = store
                .read_document(doc)
                .unwrap()
                .fields
                .iter()
                .find(|(p, _)| p.as_str() == "contested")
                .unwrap()
                .1
                .op;
            concurrent.entry((doc, "contested".into())).or_default().insert(op);
        }
    }

    // Everyone syncs, in random order, until all are caught up: push all, then pull all.
    for _ in 0..2 {
        let mut order: Vec<usize> = (0..devices.len()).collect();
        order.shuffle(&mut rng);
        for i in order {
            accepted += devices[i].sync().await.unwrap().ops_accepted;
        }
    }

    println!("synced in {:?}", started.elapsed());
    // The reference: a store holding every change any device wrote.
    let all_changes: HashMap<(DocId, u64, uuid::Uuid), tejido_core::Change> = devices
        .iter()
        .flat_map(|d| d.written.values().map(|c| ((c.doc, c.hlc.0, c.replica.0), c.clone())))
        .collect();
    let total_ops: u64 = all_changes.values().map(|c| c.ops.len() as u64).sum();
    let reference = documents(&reference_store(all_changes.values()));
    // The entities' first change was created before any device recorded: it is in the reference
    // through the coordinator's record of its outbox.
    assert_eq!(accepted, total_ops, "the server accepted each op exactly once");

    // A fresh coordinator (the server's view) and every coordinator hold the reference.
    let mut auditor = Device::enroll(&coord_link, "auditor", test_options()).await.unwrap();
    auditor.sync().await.unwrap();
    let audited = documents(auditor.store());
    assert_eq!(audited.len(), reference.len());
    for (id, doc) in &reference {
        assert_eq!(audited.get(id), Some(doc), "the server's view of {id}");
    }
    for (i, d) in devices.iter().enumerate() {
        let held = documents(d.store());
        if is_coord(i) {
            assert_eq!(held, reference, "coordinator {i} converged");
        } else {
            // An enumerator holds the shared list and exactly its own submissions.
            let mut expected: BTreeSet<DocId> = entities.iter().copied().collect();
            expected.extend(own.get(&i).into_iter().flatten().copied());
            assert_eq!(held.keys().copied().collect::<BTreeSet<_>>(), expected, "enumerator {i}'s scope");
            for (id, doc) in &held {
                assert_eq!(Some(doc), reference.get(id), "enumerator {i} agrees on {id}");
            }
        }
    }

    // Every finalized submission exactly once; no draft.
    let subs: Vec<DocId> = auditor
        .store()
        .list_submissions(StatusFilter::Finalized)
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(subs.len(), finalized.len());
    assert_eq!(subs.iter().copied().collect::<BTreeSet<_>>(), finalized);
    assert!(drafts.iter().all(|d| !audited.contains_key(d)));

    // Every concurrent overwrite is an open conflict on the server, with exactly those values.
    let server_conflicts = server.admin_get(&format!("/v1/projects/{project}/conflicts")).await;
    let mut on_server: BTreeMap<(DocId, String), BTreeSet<String>> = BTreeMap::new();
    for c in server_conflicts.as_array().unwrap() {
        let doc: DocId = c["doc"].as_str().unwrap().parse().unwrap();
        let ops = c["ops"].as_array().unwrap().iter().map(|o| o.as_str().unwrap().to_owned()).collect();
        on_server.insert((doc, c["field"].as_str().unwrap().to_owned()), ops);
    }
    let mut checked = 0;
    for ((doc, field), ops) in &concurrent {
        if ops.len() < 2 {
            continue;
        }
        let expected: BTreeSet<String> = ops.iter().map(|o| o.to_string()).collect();
        assert_eq!(on_server.get(&(*doc, field.clone())), Some(&expected), "conflict on {doc}/{field}");
        let shown = &audited[doc].fields.iter().find(|(p, _)| p.as_str() == field).unwrap().1;
        assert_eq!(shown.conflicts.len(), ops.len() - 1, "the auditor shows the conflict on {doc}/{field}");
        checked += 1;
    }
    assert!(checked >= 2);
    println!(
        "devices {} rounds {rounds} submissions {} ops {total_ops} conflicts checked {checked}",
        devices.len(),
        finalized.len()
    );
}

/// Runs futures concurrently and returns their outputs in order.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}
