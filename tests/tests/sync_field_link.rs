//! A field link: 50 kbit/s, 500 ms round trips, 5% of connections cut. Ten submissions with a
//! 30 KB photo each reach the server, resuming where they stopped, with at most 1.5× the
//! payload sent in total.
#![allow(clippy::unwrap_used)]

use rand::{Rng, SeedableRng};
use tejido_core::sync::client::SyncOptions;
use tejido_tests::device::{documents, fill_submission, test_options, Device};
use tejido_tests::proxy::{FaultConfig, FaultProxy};
use tejido_tests::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_photos_over_a_slow_flaky_link() {
    let seed: u64 =
        std::env::var("TEJIDO_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let server = TestServer::start();
    let project = server.create_project("campo");
    let (_, link) = server.enrollment_code(project, "enumerator", 1, &server.url());
    let (_, coord_link) = server.enrollment_code(project, "coordinator", 1, &server.url());
    let proxy = FaultProxy::start(server.addr(), FaultConfig::field_link());
    let options = SyncOptions {
        // Slow links: generous timeouts, patient retries.
        read_timeout: std::time::Duration::from_secs(30),
        connect_timeout: std::time::Duration::from_secs(10),
        max_attempts: 6,
        backoff_base: std::time::Duration::from_millis(200),
        backoff_max: std::time::Duration::from_secs(2),
        // A connection per request: each has its 5% chance of being cut.
        keep_alive: false,
        ..test_options()
    };
    let mut dev = Device::enroll(&link, "phone", options).await.unwrap();
    dev.set_server(&proxy.url());

    let mut docs = Vec::new();
    let mut payload = 0usize;
    for _ in 0..10 {
        let doc = fill_submission(dev.store(), "youth_activity", 8, &mut rng);
        // A photo does not compress: random bytes.
        let photo: Vec<u8> = (0..30 * 1024).map(|_| rng.random()).collect();
        payload += photo.len();
        dev.store().attach_file(doc, "photo", &photo, "image/jpeg").unwrap();
        docs.push(doc);
    }
    payload += dev
        .store()
        .pending_changes(1000)
        .unwrap()
        .iter()
        .map(|p| serde_json::to_vec(&p.change).unwrap().len())
        .sum::<usize>();

    let started = std::time::Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match dev.sync().await {
            Ok(_) => break,
            Err(e) if e.is_transient() && attempts < 30 => continue,
            Err(e) => panic!("seed {seed}: the field link never got through: {e}"),
        }
    }
    let sent = proxy.bytes_up();
    println!(
        "field link seed {seed}: {} s, {attempts} syncs, {} connections, {} cut; sent {sent} bytes for a payload of {payload} ({:.2}x)",
        started.elapsed().as_secs(),
        proxy.stats().connections.load(std::sync::atomic::Ordering::SeqCst),
        proxy.cuts(),
        sent as f64 / payload as f64
    );
    assert!(sent as f64 <= 1.5 * payload as f64, "sent {sent} bytes for a payload of {payload}");

    // Everything arrived: a coordinator on a good link sees the ten submissions and photos.
    let mut coord = Device::enroll(&coord_link, "office", test_options()).await.unwrap();
    coord.sync_until_done(5).await;
    let held = documents(coord.store());
    for doc in &docs {
        let mine = dev.store().read_document(*doc).unwrap();
        assert_eq!(held.get(doc), Some(&mine));
        let sha = tejido_core::store::parse_attachment_ref(mine.value("photo").unwrap()).unwrap().to_owned();
        let theirs = std::fs::read(coord.store().attachment_path(&sha).unwrap()).unwrap();
        let ours = std::fs::read(dev.store().attachment_path(&sha).unwrap()).unwrap();
        assert_eq!(theirs, ours);
    }
}
