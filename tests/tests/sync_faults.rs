//! Faults, in randomized trials against the real server: a TCP proxy that cuts connections
//! mid-request, delays and duplicates requests; the server killed with SIGKILL during a push
//! and restarted; the device killed during a sync (its sync future dropped at a random moment
//! and its store reopened, or the device as its own process killed with SIGKILL). After every trial, 0 ops lost and 0 duplicated: a coordinator that
//! follows the server's log receives every op every device wrote exactly once, and at the end a
//! fresh device's snapshot equals a store holding exactly what the devices wrote.
//!
//! `TEJIDO_SOAK=1` runs five times as many trials; every test prints its counts.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::json;
use tejido_core::{Change, DocId};
use tejido_tests::device::{documents, fill_submission, reference_store, test_options, Device};
use tejido_tests::proxy::{FaultConfig, FaultProxy};
use tejido_tests::server::TestServer;
use uuid::Uuid;

fn trials(n: usize) -> usize {
    if std::env::var_os("TEJIDO_SOAK").is_some() {
        n * 5
    } else {
        n
    }
}

fn seed() -> u64 {
    std::env::var("TEJIDO_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random)
}

/// A project with a coordinator that follows the log directly (no faults), to count what the
/// server accepted.
struct World {
    server: TestServer,
    project: Uuid,
    enum_link: String,
    coord_link: String,
    hub: Device,
    /// Ops the hub has pulled, and of those how many it already had.
    pulled: u64,
    repeated: u64,
}

impl World {
    async fn new(enumerators: u32) -> World {
        let server = TestServer::start();
        let project = server.create_project("faults");
        let (_, enum_link) = server.enrollment_code(project, "enumerator", enumerators, &server.url());
        let (_, coord_link) = server.enrollment_code(project, "coordinator", 2, &server.url());
        let mut hub = Device::enroll(&coord_link, "hub", test_options()).await.unwrap();
        hub.sync().await.unwrap();
        World { server, project, enum_link, coord_link, hub, pulled: 0, repeated: 0 }
    }

    /// After a trial: the hub's pulls carry exactly the ops the devices wrote, each once.
    async fn check(&mut self, devices: &[Device], trial: usize) {
        let r = self.hub.sync_until_done(20).await;
        self.pulled += r.ops_new + r.ops_known;
        self.repeated += r.ops_known;
        let written: u64 = devices.iter().map(|d| d.written_ops() as u64).sum();
        assert_eq!(self.repeated, 0, "trial {trial}: the server's log repeated an op");
        assert_eq!(
            self.pulled, written,
            "trial {trial}: ops written {written}, in the server's log {}",
            self.pulled
        );
    }

    /// At the end: a fresh device's snapshot is exactly what the devices wrote.
    async fn check_final(&mut self, devices: &[Device]) {
        let mut all: HashMap<(DocId, u64, Uuid), Change> = HashMap::new();
        for d in devices {
            for c in d.written.values() {
                all.insert((c.doc, c.hlc.0, c.replica.0), c.clone());
            }
        }
        let reference = documents(&reference_store(all.values()));
        let mut auditor = Device::enroll(&self.coord_link, "auditor", test_options()).await.unwrap();
        auditor.sync_until_done(5).await;
        assert_eq!(documents(auditor.store()), reference, "the server's state is what the devices wrote");
        // Every photo reached the server whole: the auditor downloaded each one referenced.
        let mut photos = 0;
        for doc in reference.values() {
            for field in doc.fields.values() {
                if let Some(sha) = tejido_core::store::parse_attachment_ref(&field.value) {
                    photos += 1;
                    assert!(
                        auditor.store().attachment(sha).unwrap().is_some(),
                        "photo {sha} of {} is not on the server",
                        doc.id
                    );
                }
            }
        }
        println!("photos on the server: {photos}");
        for d in devices {
            for (id, doc) in documents(d.store()) {
                assert_eq!(Some(&doc), reference.get(&id), "{} agrees on {id}", d.name);
            }
        }
        let _ = self.project;
    }
}

/// Offline work on one device: new submissions (some with a photo) and an edit.
fn work(d: &Device, rng: &mut impl Rng, max_subs: usize) {
    for _ in 0..rng.random_range(1..=max_subs) {
        let doc = fill_submission(d.store(), "victimization", rng.random_range(1..8), rng);
        if rng.random_bool(0.15) {
            let n = rng.random_range(1_000..30_000);
            let photo: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            d.store().attach_file(doc, "photo", &photo, "image/jpeg").unwrap();
        }
        if rng.random_bool(0.3) {
            d.store().set_answer(doc, "q0", json!(rng.random_range(0..100))).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_cuts_delays_and_duplicates_lose_and_duplicate_nothing() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut world = World::new(6).await;
    let proxy = FaultProxy::start(world.server.addr(), FaultConfig::hostile());
    let mut devices = Vec::new();
    for i in 0..6 {
        // A connection per request, so the proxy's faults hit requests, not just connections.
        let options = tejido_core::sync::client::SyncOptions { keep_alive: false, ..test_options() };
        let mut d = Device::enroll(&world.enum_link, &format!("device-{i}"), options).await.unwrap();
        d.set_server(&proxy.url());
        devices.push(d);
    }
    let n = trials(50);
    let mut failed_syncs = 0u64;
    for trial in 0..n {
        let i = rng.random_range(0..devices.len());
        work(&devices[i], &mut rng, 6);
        let d = &mut devices[i];
        let mut done = false;
        let mut last = None;
        for _ in 0..60 {
            match d.sync().await {
                Ok(_) => {
                    done = true;
                    break;
                }
                Err(e) if e.is_transient() => {
                    failed_syncs += 1;
                    last = Some(e);
                }
                Err(e) => panic!("trial {trial} (seed {seed}): {e}"),
            }
        }
        assert!(
            done,
            "trial {trial} (seed {seed}): no sync got through; the last error: {last:?}; the server logged:\n{}",
            world.server.log_tail(40)
        );
        world.check(&devices, trial).await;
    }
    world.check_final(&devices).await;
    let s = proxy.stats();
    println!(
        "proxy trials {n} seed {seed}: connections {} cut {} duplicated {} failed syncs {failed_syncs}; ops {} lost 0 duplicated 0",
        s.connections.load(std::sync::atomic::Ordering::SeqCst),
        proxy.cuts(),
        s.duplicated_connections.load(std::sync::atomic::Ordering::SeqCst),
        world.pulled
    );
    assert!(proxy.cuts() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_during_a_push_loses_and_duplicates_nothing() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut world = World::new(3).await;
    let proxy = FaultProxy::start(world.server.addr(), FaultConfig::clean());
    let mut devices = Vec::new();
    for i in 0..3 {
        let mut options = test_options();
        options.push_batch_changes = 4;
        let mut d = Device::enroll(&world.enum_link, &format!("device-{i}"), options).await.unwrap();
        d.set_server(&proxy.url());
        devices.push(d);
    }
    let n = trials(20);
    let mut kills = 0;
    let mut mid_push = 0;
    for trial in 0..n {
        let i = rng.random_range(0..devices.len());
        work(&devices[i], &mut rng, 30);
        let mut d = devices.swap_remove(i);
        d.record_outbox();
        let before = proxy.push_requests();
        let wait_for = rng.random_range(1..4);
        let task = tokio::spawn(async move {
            let r = d.sync().await;
            (d, r)
        });
        // Kill the server while a push is in flight.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while proxy.push_requests() < before + wait_for
            && std::time::Instant::now() < deadline
            && !task.is_finished()
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_micros(rng.random_range(0..5_000))).await;
        let addr = world.server.addr();
        if !task.is_finished() {
            mid_push += 1;
        }
        world.server.kill();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..100))).await;
        world.server.restart();
        assert_eq!(world.server.addr(), addr, "the server came back on its address");
        let (mut d, _) = task.await.unwrap();
        d.sync_until_done(30).await;
        devices.push(d);
        world.check(&devices, trial).await;
    }
    world.check_final(&devices).await;
    println!(
        "server-kill trials {n} seed {seed}: kills {kills}, {mid_push} while the device was pushing; ops {} lost 0 duplicated 0",
        world.pulled
    );
    assert!(mid_push * 2 >= n, "most kills land during a push");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_killed_during_a_sync_loses_and_duplicates_nothing() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut world = World::new(3).await;
    // A slightly slow link, so a kill lands inside requests as often as between them.
    let proxy = FaultProxy::start(
        world.server.addr(),
        FaultConfig { latency: Duration::from_millis(3), ..FaultConfig::clean() },
    );
    let mut devices = Vec::new();
    for i in 0..3 {
        let mut options = test_options();
        options.push_batch_changes = 3;
        options.pull_limit = 5;
        let mut d = Device::enroll(&world.enum_link, &format!("device-{i}"), options).await.unwrap();
        d.set_server(&proxy.url());
        devices.push(d);
    }
    let n = trials(30);
    let mut killed = 0;
    for trial in 0..n {
        let i = rng.random_range(0..devices.len());
        work(&devices[i], &mut rng, 10);
        let d = &mut devices[i];
        let kill_after = Duration::from_millis(rng.random_range(0..120));
        if tokio::time::timeout(kill_after, d.sync()).await.is_err() {
            killed += 1;
        }
        // The app is killed and started again.
        d.reopen();
        d.sync_until_done(10).await;
        world.check(&devices, trial).await;
    }
    world.check_final(&devices).await;
    println!(
        "device-kill trials {n} seed {seed}: killed mid-sync {killed}; ops {} lost 0 duplicated 0",
        world.pulled
    );
    assert!(killed > 0);
}

/// The device app as its own process, for the real-kill trials: opens the store named by
/// `TEJIDO_CHILD_DEVICE_STORE` and syncs once. Run only by the parent test below.
#[test]
#[ignore = "run by device_process_killed_during_a_sync_loses_and_duplicates_nothing"]
fn child_device_process() {
    let path = std::env::var_os("TEJIDO_CHILD_DEVICE_STORE").expect("run by the parent test");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async {
        let store = tejido_core::Store::open(&path).unwrap();
        let options =
            tejido_core::sync::client::SyncOptions { push_batch_changes: 2, pull_limit: 3, ..test_options() };
        let client = tejido_core::sync::client::SyncClient::from_store_with_options(&store, options).unwrap();
        eprintln!("TEJIDO_CHILD_SYNCING");
        let _ = client.sync(&store, &(), &tejido_core::sync::client::CancelToken::new()).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_process_killed_during_a_sync_loses_and_duplicates_nothing() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut world = World::new(2).await;
    let proxy = FaultProxy::start(
        world.server.addr(),
        FaultConfig { latency: Duration::from_millis(2), ..FaultConfig::clean() },
    );
    let mut devices = Vec::new();
    for i in 0..2 {
        let mut d = Device::enroll(&world.enum_link, &format!("device-{i}"), test_options()).await.unwrap();
        d.set_server(&proxy.url());
        devices.push(d);
    }
    let exe = std::env::current_exe().unwrap();
    let n = trials(10);
    let mut killed = 0;
    for trial in 0..n {
        let i = rng.random_range(0..devices.len());
        work(&devices[i], &mut rng, 12);
        let d = &mut devices[i];
        d.record_outbox();
        d.close();
        let mut child = std::process::Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "child_device_process",
                "--test-threads=1",
                "--quiet",
                "--nocapture",
            ])
            .env("TEJIDO_CHILD_DEVICE_STORE", d.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the child has its store open and starts syncing, then kill it at a random
        // moment of the sync.
        let stderr = child.stderr.take().unwrap();
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stderr).lines();
            let mut seen_tx = Some(seen_tx);
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if line.contains("TEJIDO_CHILD_SYNCING") {
                    if let Some(tx) = seen_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(10), seen_rx).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..60))).await;
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        d.reopen();
        d.sync_until_done(10).await;
        world.check(&devices, trial).await;
    }
    world.check_final(&devices).await;
    println!(
        "device-process-kill trials {n} seed {seed}: SIGKILLed mid-sync {killed}; ops {} lost 0 duplicated 0",
        world.pulled
    );
    assert!(killed > 0);
}
