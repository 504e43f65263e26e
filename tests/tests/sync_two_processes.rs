//! Scale-out: two `tejido-server` processes on one PostgreSQL database, 50 devices syncing
//! through either at random for several rounds while one process is killed with SIGKILL and
//! restarted three times. Every device and both processes converge, every op reaches the
//! server's log exactly once (a coordinator following the log counts them), and no pull misses
//! one. Runs on PostgreSQL whatever `TEJIDO_TEST_BACKEND` says; `TEJIDO_SOAK=1` runs more rounds.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::json;
use tejido_core::{Change, DocId};
use tejido_tests::device::{documents, fill_submission, reference_store, test_options, Device};
use tejido_tests::server::TestServer;
use uuid::Uuid;

const DEVICES: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_converge_while_one_is_killed() {
    let seed: u64 =
        std::env::var("TEJIDO_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let rounds = if std::env::var_os("TEJIDO_SOAK").is_some() { 12 } else { 4 };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let url = tejido_server::testing::fresh_database_blocking();
    let tmp = tempfile::tempdir().unwrap();
    let mut a = TestServer::start_on(&tmp.path().join("a"), None, Some(url.clone()));
    let b = TestServer::start_on(&tmp.path().join("b"), None, Some(url.clone()));
    let project = a.create_project("observatorio nacional");
    let (_, enum_link) = a.enrollment_code(project, "enumerator", DEVICES as u32, &a.url());
    // A code made through one process is good on the other.
    let (_, coord_link) = b.enrollment_code(project, "coordinator", 3, &b.url());
    let mut hub = Device::enroll(&coord_link, "hub", test_options()).await.unwrap();
    hub.sync().await.unwrap();
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let mut d = Device::enroll(&enum_link, &format!("device-{i}"), test_options()).await.unwrap();
        if i % 2 == 1 {
            d.set_server(&b.url());
        }
        devices.push(d);
    }
    let (mut pulled, mut repeated, mut kills) = (0u64, 0u64, 0);
    for round in 0..rounds {
        for d in &mut devices {
            for _ in 0..rng.random_range(1..=3) {
                let doc = fill_submission(d.store(), "victimization", rng.random_range(1..6), &mut rng);
                if rng.random_bool(0.1) {
                    let photo: Vec<u8> = (0..rng.random_range(1_000..20_000)).map(|_| rng.random()).collect();
                    d.store().attach_file(doc, "photo", &photo, "image/jpeg").unwrap();
                }
                if rng.random_bool(0.3) {
                    d.store().set_answer(doc, "q0", json!(rng.random_range(0..100))).unwrap();
                }
            }
            let url = if rng.random_bool(0.5) { a.url() } else { b.url() };
            d.set_server(&url);
            d.record_outbox();
        }
        // Everyone syncs at once; process A is killed in the middle of it, then comes back.
        let tasks: Vec<_> = devices
            .drain(..)
            .map(|mut d| {
                tokio::spawn(async move {
                    let _ = d.sync().await;
                    d
                })
            })
            .collect();
        if kills < 3 {
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..300))).await;
            a.kill();
            kills += 1;
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..100))).await;
            a.restart();
        }
        for t in tasks {
            devices.push(t.await.unwrap());
        }
        for d in &mut devices {
            // A device that failed against A tries again through either.
            let url = if rng.random_bool(0.5) { a.url() } else { b.url() };
            d.set_server(&url);
            d.sync_until_done(30).await;
        }
        let r = hub.sync_until_done(20).await;
        pulled += r.ops_new + r.ops_known;
        repeated += r.ops_known;
        let written: u64 = devices.iter().map(|d| d.written_ops() as u64).sum();
        assert_eq!(repeated, 0, "round {round}: the log repeated an op (seed {seed})");
        assert_eq!(
            pulled, written,
            "round {round}: ops written {written}, in the log {pulled} (seed {seed})"
        );
    }
    // Both processes serve the same state, and it is exactly what the devices wrote.
    let mut all: HashMap<(DocId, u64, Uuid), Change> = HashMap::new();
    for d in &devices {
        for c in d.written.values() {
            all.insert((c.doc, c.hlc.0, c.replica.0), c.clone());
        }
    }
    let reference = documents(&reference_store(all.values()));
    for server in [&a, &b] {
        // The coordinator code's three uses: the hub and these two auditors.
        let mut auditor = Device::enroll(&coord_link, "auditor", test_options()).await.unwrap();
        auditor.set_server(&server.url());
        auditor.sync_until_done(5).await;
        assert_eq!(documents(auditor.store()), reference, "{} serves what the devices wrote", server.url());
    }
    for d in &devices {
        for (id, doc) in documents(d.store()) {
            assert_eq!(Some(&doc), reference.get(&id), "{} agrees on {id}", d.name);
        }
    }
    println!(
        "two processes, {DEVICES} devices, {rounds} rounds, seed {seed}: process A killed {kills} times; \
         ops {pulled} in the log, lost 0, duplicated 0"
    );
}
