//! The sync client against the real server: enroll by setup link, push, pull, attachments both
//! ways, resuming a cut upload, cancellation, a revoked token, enrollment-code uses, projects
//! kept apart.
#![allow(clippy::unwrap_used)]

use rand::SeedableRng;
use serde_json::json;
use tejido_core::store::StatusFilter;
use tejido_core::sync::client::{CancelToken, Progress, SyncError, SyncPhase};
use tejido_tests::device::{documents, fill_submission, test_options, Device};
use tejido_tests::proxy::{FaultConfig, FaultProxy};
use tejido_tests::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pull_attachments_and_authorization() {
    let server = TestServer::start();
    let project = server.create_project("observatorio");
    let (_, enum_link) = server.enrollment_code(project, "enumerator", 2, &server.url());
    let (_, coord_link) = server.enrollment_code(project, "coordinator", 1, &server.url());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    let mut a = Device::enroll(&enum_link, "a", test_options()).await.unwrap();
    let mut b = Device::enroll(&enum_link, "b", test_options()).await.unwrap();
    // The code was made for two devices: a third is refused.
    let third = Device::enroll(&enum_link, "c", test_options()).await;
    let third = third.err();
    assert!(matches!(third, Some(SyncError::BadCode)), "{third:?}");
    assert_eq!(third.unwrap().to_string(), "this enrollment code is unknown, used up or expired");
    let mut coord = Device::enroll(&coord_link, "coord", test_options()).await.unwrap();

    let a1 = fill_submission(a.store(), "victimization", 8, &mut rng);
    let photo: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let sha = a.store().attach_file(a1, "photo", &photo, "image/jpeg").unwrap();
    let b1 = fill_submission(b.store(), "victimization", 5, &mut rng);
    let draft = b.store().start_submission("victimization", "1").unwrap();
    b.store().set_answer(draft, "q0", json!("draft only")).unwrap();

    let ra = a.sync().await.unwrap();
    assert_eq!(ra.attachments_uploaded, 1);
    assert_eq!(ra.changes_pushed, 2);
    assert_eq!(a.store().pending_count().unwrap(), 0);
    b.sync().await.unwrap();
    let rc = coord.sync().await.unwrap();
    assert_eq!(rc.attachments_downloaded, 1);
    assert_eq!(std::fs::read(coord.store().attachment_path(&sha).unwrap()).unwrap(), photo);
    assert_eq!(coord.store().attachment(&sha).unwrap().unwrap().media_type, "image/jpeg");

    // The coordinator sees both submissions, not the draft; each enumerator sees only its own.
    let seen = documents(coord.store());
    assert!(seen.contains_key(&a1) && seen.contains_key(&b1) && !seen.contains_key(&draft));
    assert_eq!(seen[&a1], a.store().read_document(a1).unwrap());
    a.sync().await.unwrap();
    assert!(!documents(a.store()).contains_key(&b1));
    assert_eq!(coord.store().list_submissions(StatusFilter::Finalized).unwrap().len(), 2);

    // A coordinator's correction reaches the enumerator.
    coord.store().set_answer(a1, "q1", json!("corrected")).unwrap();
    coord.sync().await.unwrap();
    a.sync().await.unwrap();
    assert_eq!(a.store().read_document(a1).unwrap().value("q1"), Some(&json!("corrected")));

    // Another project's coordinator sees nothing of this one.
    let other = server.create_project("otro");
    let (_, other_link) = server.enrollment_code(other, "coordinator", 1, &server.url());
    let mut stranger = Device::enroll(&other_link, "stranger", test_options()).await.unwrap();
    stranger.sync().await.unwrap();
    assert!(documents(stranger.store()).is_empty());

    // A revoked device gets 401 on its next sync, and its new work stays in its outbox.
    server.revoke(b.enrollment.device_id);
    fill_submission(b.store(), "victimization", 3, &mut rng);
    let r = b.sync().await;
    assert!(matches!(r, Err(SyncError::Unauthorized)), "{r:?}");
    assert_eq!(b.store().pending_count().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_upload_resumes_where_it_stopped_and_cancel_stops_cleanly() {
    let server = TestServer::start();
    let project = server.create_project("p");
    let proxy = FaultProxy::start(server.addr(), FaultConfig::clean());
    let (_, link) = server.enrollment_code(project, "enumerator", 1, &proxy.url());
    let mut options = test_options();
    options.upload_chunk_bytes = 4 * 1024 * 1024;
    let mut dev = Device::enroll(&link, "dev", options).await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let doc = fill_submission(dev.store(), "f", 4, &mut rng);
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i.wrapping_mul(2246822519) >> 11) as u8).collect();
    dev.store().attach_file(doc, "video", &big, "video/mp4").unwrap();

    // Cancel: a cancelled sync returns Cancelled and leaves the outbox for the next one.
    let pending = dev.store().pending_count().unwrap();
    let cancel = CancelToken::new();
    cancel.cancel();
    let r = dev.client().sync(dev.store(), &(), &cancel).await;
    assert!(matches!(r, Err(SyncError::Cancelled)), "{r:?}");
    assert_eq!(dev.store().pending_count().unwrap(), pending);

    // Cancelling during a request abandons it at once (the link is slow: 1 s each way, so the
    // first request alone would take 2 s).
    proxy.set_config(FaultConfig { latency: std::time::Duration::from_millis(1000), ..FaultConfig::clean() });
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        c2.cancel();
    });
    let started = std::time::Instant::now();
    let r = dev.client().sync(dev.store(), &(), &cancel).await;
    assert!(matches!(r, Err(SyncError::Cancelled)), "{r:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1500),
        "cancel took {:?}",
        started.elapsed()
    );
    assert_eq!(dev.store().pending_count().unwrap(), pending);
    proxy.set_config(FaultConfig::clean());

    // Cut the upload's connection 700 KB in; the next sync resumes from what the server kept.
    proxy.cut_next_up_at(700_000);
    let before = proxy.bytes_up();
    let first = dev.sync().await;
    assert!(first.is_ok() || first.as_ref().err().is_some_and(SyncError::is_transient), "{first:?}");
    assert!(proxy.cuts() >= 1, "the proxy cut the upload");

    // Progress reports items and bytes.
    fill_submission(dev.store(), "f", 4, &mut rng);
    fill_submission(dev.store(), "f", 4, &mut rng);
    let pending = dev.store().pending_count().unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let progress = |p: &Progress| seen.lock().unwrap().push(*p);
    let cancel = CancelToken::new();
    let mut ok = false;
    for _ in 0..10 {
        if dev.client().sync(dev.store(), &progress, &cancel).await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok);
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.last().map(|p| p.phase), Some(SyncPhase::Done));
    assert!(seen.iter().any(|p| p.phase == SyncPhase::Pushing && p.items_total == Some(pending)));
    assert!(seen.last().unwrap().bytes_sent > 0 && seen.last().unwrap().bytes_received > 0);
    assert_eq!(dev.store().pending_attachments().unwrap().len(), 0);
    assert_eq!(dev.store().pending_count().unwrap(), 0);
    let sent = proxy.bytes_up() - before;
    // Starting over would send at least 2.2 MB (700 KB lost, then all 1.5 MB again), and so
    // would a PATCH sent while the cut request still held the upload (refused after its body
    // went out); resuming sends the rest after what the server kept, about 1.5 MB in all (bytes
    // in flight at the cut are lost).
    assert!(sent < 1_800_000, "sent {sent} bytes for a 1.5 MB attachment cut at 700 KB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_stays_in_the_outbox_and_does_not_block_the_rest() {
    let server = TestServer::start();
    let project = server.create_project("p");
    let (_, link) = server.enrollment_code(project, "enumerator", 1, &server.url());
    let (_, coord_link) = server.enrollment_code(project, "coordinator", 1, &server.url());
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut dev = Device::enroll(&link, "dev", test_options()).await.unwrap();
    let mut subs: Vec<_> = (0..7).map(|_| fill_submission(dev.store(), "f", 3, &mut rng)).collect();
    // The store lets an enumerator write the shared list offline; the server refuses it.
    let entity =
        dev.store().create_document(tejido_core::Collection::Entity, &[("name", json!("x"))]).unwrap();
    subs.extend((0..5).map(|_| fill_submission(dev.store(), "f", 3, &mut rng)));

    let r = dev.sync().await.unwrap();
    assert_eq!(r.refused.len(), 1, "{:?}", r.refused);
    assert_eq!(r.refused[0].doc, entity);
    assert_eq!(r.changes_pushed, 12);
    assert_eq!(dev.store().pending_count().unwrap(), 1, "the refused change is kept");

    let mut coord = Device::enroll(&coord_link, "coord", test_options()).await.unwrap();
    coord.sync().await.unwrap();
    let held = documents(coord.store());
    assert!(subs.iter().all(|s| held.contains_key(s)));
    assert!(!held.contains_key(&entity));
}
