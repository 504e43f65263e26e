//! `tejido-server migrate --to postgres://…`: a SQLite deployment that devices already sync
//! with is copied into PostgreSQL; both sides' counts and checksums match, a non-empty target
//! is refused, and the same devices keep syncing against the server on PostgreSQL without
//! enrolling again (their tokens, cursors and photos carry over).
#![allow(clippy::unwrap_used)]

use std::process::Command;

use rand::SeedableRng;
use tejido_core::store::StatusFilter;
use tejido_tests::device::{documents, fill_submission, test_options, Device};
use tejido_tests::server::{server_binary, TestServer};

fn migrate(data: &std::path::Path, to: &str) -> std::process::Output {
    Command::new(server_binary())
        .arg("--data")
        .arg(data)
        .arg("--json")
        .args(["migrate", "--to", to])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_deployment_moves_to_postgres_and_its_devices_keep_syncing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let mut sqlite = TestServer::start_on(&data, None, None);
    let project = sqlite.create_project("observatorio");
    let (_, enum_link) = sqlite.enrollment_code(project, "enumerator", 1, &sqlite.url());
    let (_, coord_link) = sqlite.enrollment_code(project, "coordinator", 1, &sqlite.url());
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut ana = Device::enroll(&enum_link, "ana", test_options()).await.unwrap();
    let mut coord = Device::enroll(&coord_link, "coord", test_options()).await.unwrap();
    let first = fill_submission(ana.store(), "victimization", 6, &mut rng);
    let photo: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    let sha = ana.store().attach_file(first, "photo", &photo, "image/jpeg").unwrap();
    ana.sync().await.unwrap();
    coord.sync().await.unwrap();
    assert!(documents(coord.store()).contains_key(&first));
    sqlite.kill();

    let url = tejido_server::testing::fresh_database_blocking();
    let out = migrate(&data, &url);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains(&url), "the URL is never printed");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let tables = report["tables"].as_array().unwrap();
    let rows = |name: &str| {
        let t = tables.iter().find(|t| t["table"] == name).unwrap_or_else(|| panic!("{name} in {report}"));
        assert_eq!(t["source_rows"], t["target_rows"], "{name}");
        assert_eq!(t["source_sha256"], t["target_sha256"], "{name}");
        t["target_rows"].as_u64().unwrap()
    };
    assert_eq!(rows("projects"), 1);
    assert_eq!(rows("devices"), 2);
    assert!(rows("changes") >= 2);
    assert!(rows("field_ops") > 6);
    assert_eq!(rows("blob bytes"), 1);
    for t in tables {
        assert_eq!(t["source_sha256"], t["target_sha256"], "{t}");
    }

    // A second run into the same database is refused, and changes nothing.
    let again = migrate(&data, &url);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    // The server on PostgreSQL: the same devices, the same tokens, their cursors go on.
    let pg = TestServer::start_on(&tmp.path().join("elsewhere"), None, Some(url.clone()));
    ana.set_server(&pg.url());
    coord.set_server(&pg.url());
    let second = fill_submission(ana.store(), "victimization", 4, &mut rng);
    ana.sync().await.unwrap();
    let report = coord.sync().await.unwrap();
    assert!(report.changes_pulled >= 1 && report.changes_pulled < 10, "only what is new: {report:?}");
    let seen = documents(coord.store());
    assert!(seen.contains_key(&first) && seen.contains_key(&second));
    assert_eq!(coord.store().list_submissions(StatusFilter::Finalized).unwrap().len(), 2);
    // The photo moved with it: a coordinator enrolled on the new server downloads it.
    let (_, link) = pg.enrollment_code(project, "coordinator", 1, &pg.url());
    let mut fresh = Device::enroll(&link, "fresh", test_options()).await.unwrap();
    let r = fresh.sync().await.unwrap();
    assert_eq!(r.attachments_downloaded, 1);
    assert_eq!(fresh.store().read_attachment(&sha).unwrap(), photo);
}

/// The scale: a deployment of 10,000 submissions with a photo each, from 20 devices,
/// under `TEJIDO_SOAK=1`; the test command runs 500 from 5. After the move, a sync of every
/// device sends nothing again (no change, no photo), and a coordinator enrolled on the server
/// on PostgreSQL receives every submission and every photo, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_photographed_submissions_move_and_nothing_is_sent_twice_or_lost() {
    let soak = std::env::var_os("TEJIDO_SOAK").is_some();
    let (device_count, per_device) = if soak { (20usize, 500usize) } else { (5, 100) };
    let total = device_count * per_device;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let mut sqlite = TestServer::start_on(&data, None, None);
    let project = sqlite.create_project("observatorio");
    let (_, link) = sqlite.enrollment_code(project, "enumerator", device_count as u32, &sqlite.url());
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..device_count {
        let link = link.clone();
        tasks.push(tokio::spawn(async move {
            let options =
                tejido_core::sync::client::SyncOptions { push_batch_changes: 200, ..test_options() };
            let mut d = Device::enroll(&link, &format!("enumerator-{i}"), options).await.unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
            let mut photos = std::collections::BTreeSet::new();
            for k in 0..per_device {
                let doc = fill_submission(d.store(), "victimization", 5, &mut rng);
                // A small photo of its own: 2 KB that no other submission has.
                let photo: Vec<u8> = (0..2048u32)
                    .map(|b| ((b ^ (i as u32) << 12 ^ (k as u32) << 1).wrapping_mul(2654435761) >> 13) as u8)
                    .collect();
                photos.insert(d.store().attach_file(doc, "photo", &photo, "image/jpeg").unwrap());
            }
            d.sync_until_done(5).await;
            assert_eq!(d.store().pending_count().unwrap(), 0, "{} pushed everything", d.name);
            assert!(d.store().pending_attachments().unwrap().is_empty(), "{} uploaded every photo", d.name);
            (d, photos)
        }));
    }
    let mut devices = Vec::new();
    let mut photos = std::collections::BTreeSet::new();
    for t in tasks {
        let (d, p) = t.await.unwrap();
        photos.extend(p);
        devices.push(d);
    }
    assert_eq!(photos.len(), total, "every photo is distinct");
    println!(
        "filled and synced {total} submissions with photos from {device_count} devices in {:?}",
        started.elapsed()
    );
    sqlite.kill();

    let url = tejido_server::testing::fresh_database_blocking();
    let started = std::time::Instant::now();
    let out = migrate(&data, &url);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    println!("migrated in {:?}", started.elapsed());
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    for t in report["tables"].as_array().unwrap() {
        assert_eq!(t["source_rows"], t["target_rows"], "{t}");
        assert_eq!(t["source_sha256"], t["target_sha256"], "{t}");
        println!("{} rows of {}", t["target_rows"], t["table"]);
    }
    let table = |name: &str| {
        report["tables"].as_array().unwrap().iter().find(|t| t["table"] == name).unwrap()["target_rows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(table("blob bytes"), total as u64, "every photo's bytes moved");
    assert!(table("changes") >= total as u64);

    let pg = TestServer::start_on(&tmp.path().join("elsewhere"), None, Some(url));
    let started = std::time::Instant::now();
    for d in &mut devices {
        d.set_server(&pg.url());
        let r = d.sync_until_done(5).await;
        assert_eq!(
            (r.changes_pushed, r.attachments_uploaded, r.ops_accepted, r.server_restored),
            (0, 0, 0, false),
            "{} sends nothing again: {r:?}",
            d.name
        );
    }
    println!("every device synced again in {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let (_, coord_link) = pg.enrollment_code(project, "coordinator", 1, &pg.url());
    let mut coord = Device::enroll(
        &coord_link,
        "coord",
        tejido_core::sync::client::SyncOptions { pull_limit: 500, ..test_options() },
    )
    .await
    .unwrap();
    let r = coord.sync_until_done(5).await;
    assert_eq!(coord.store().list_submissions(StatusFilter::Finalized).unwrap().len(), total);
    assert_eq!(r.attachments_downloaded, total as u64, "every photo, once");
    println!("a new coordinator pulled {total} submissions and photos in {:?}", started.elapsed());
    for sha in &photos {
        // read_attachment checks the bytes against their SHA-256.
        assert_eq!(coord.store().read_attachment(sha).unwrap().len(), 2048);
    }
}
