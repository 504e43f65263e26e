//! End to end from encrypted stores: a device whose store is opened with
//! `Store::open_encrypted` fills a submission with a distinctive answer and photo and syncs to a
//! real server (SQLite, or PostgreSQL with `TEJIDO_TEST_BACKEND=postgres`); the server holds
//! both; a coordinator's device, encrypted under another key, syncs and reads both back; and
//! afterwards neither store's database, `-wal`, `-shm` or attachment folder holds any of the
//! distinctive bytes (while a plain store that synced the same holds them, so the search works).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::json;
use tejido_core::sync::client::state_keys;
use tejido_tests::device::{test_options, Device};
use tejido_tests::server::TestServer;

const KEY_A: &[u8; 32] = b"e2e-encrypted-key-a-0123456789ab";
const KEY_B: &[u8; 32] = b"e2e-encrypted-key-b-0123456789ab";
const ANSWER: &str = "CANARY-respuesta-violencia-8815";
const PHOTO_MARK: &[u8] = b"PHOTO-CANARY-rostro-testigo";

/// A photo with its marker repeated through it (several 64 KiB chunks).
fn distinctive_photo() -> Vec<u8> {
    let mut photo = b"\xff\xd8\xff\xe0JFIF".to_vec();
    let mut i = 0u32;
    while photo.len() < 200_000 {
        photo.extend_from_slice(PHOTO_MARK);
        photo.extend_from_slice(format!("-{i:05}|").as_bytes());
        i += 1;
    }
    photo
}

/// A store's database, `-wal` and `-shm` files that exist, and every file in its attachment
/// folder.
fn store_files(db: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", db.display())))
        .filter(|p| p.exists())
        .collect();
    if let Ok(entries) = std::fs::read_dir(format!("{}.attachments", db.display())) {
        files.extend(entries.map(|e| e.unwrap().path()));
    }
    files
}

/// The files among `files` that hold `needle`.
fn holding(files: &[PathBuf], needle: &[u8]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|f| std::fs::read(f).unwrap().windows(needle.len()).any(|w| w == needle))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_stores_sync_an_answer_and_a_photo_and_keep_neither_in_clear() {
    let server = TestServer::start();
    let project = server.create_project("cifrado");
    let (_, enum_link) = server.enrollment_code(project, "enumerator", 1, &server.url());
    let (_, coord_link) = server.enrollment_code(project, "coordinator", 2, &server.url());

    let mut a = Device::enroll_encrypted(&enum_link, "a", test_options(), KEY_A).await.unwrap();
    assert!(a.store().attachments_encrypted());
    let photo = distinctive_photo();
    let doc = a.store().start_submission("victimization", "1").unwrap();
    a.store().set_answer(doc, "relato", json!(ANSWER)).unwrap();
    let sha = a.store().attach_file(doc, "foto", &photo, "image/jpeg").unwrap();
    a.store().finalize(doc).unwrap();
    let up = a.sync().await.unwrap();
    assert_eq!((up.attachments_uploaded, up.changes_pushed), (1, 1));

    // The server holds the submission and the photo.
    let seen = server.admin_get(&format!("/v1/submissions/{doc}")).await;
    assert_eq!(seen["answers"]["relato"], json!(ANSWER), "{seen}");
    assert_eq!(seen["answers"]["foto"], json!(format!("sha256:{sha}")), "{seen}");
    let token = a.store().sync_state(state_keys::DEVICE_TOKEN).unwrap().unwrap();
    let served = server.get_bytes(&format!("/v1/blobs/{sha}"), &token).await;
    assert!(served == photo, "the server serves the photo as taken");

    // A coordinator's encrypted device reads both back.
    let mut b = Device::enroll_encrypted(&coord_link, "b", test_options(), KEY_B).await.unwrap();
    let down = b.sync().await.unwrap();
    assert_eq!(down.attachments_downloaded, 1);
    let read = b.store().read_document(doc).unwrap();
    assert_eq!(read.value("relato"), Some(&json!(ANSWER)));
    assert_eq!(read.value("foto"), Some(&json!(format!("sha256:{sha}"))));
    assert!(b.store().read_attachment(&sha).unwrap() == photo, "the photo reads back as taken");

    // A plain store that synced the same holds both in clear: the search below finds them.
    let mut plain = Device::enroll(&coord_link, "plain", test_options()).await.unwrap();
    plain.sync().await.unwrap();
    plain.close();
    let plain_files = store_files(plain.path());
    assert!(!holding(&plain_files, ANSWER.as_bytes()).is_empty(), "the plain store holds the answer");
    assert!(!holding(&plain_files, PHOTO_MARK).is_empty(), "the plain store holds the photo");

    // Closed, the encrypted stores hold neither anywhere.
    a.close();
    b.close();
    for device in [&a, &b] {
        let files = store_files(device.path());
        assert!(
            files.contains(&PathBuf::from(format!("{}.attachments/{sha}", device.path().display()))),
            "{}: the photo's sealed file is there: {files:?}",
            device.name
        );
        assert_eq!(
            holding(&files, ANSWER.as_bytes()),
            Vec::<PathBuf>::new(),
            "{}: the answer in clear",
            device.name
        );
        assert_eq!(holding(&files, PHOTO_MARK), Vec::<PathBuf>::new(), "{}: the photo in clear", device.name);
        assert_eq!(
            holding(&files, &photo[..64]),
            Vec::<PathBuf>::new(),
            "{}: the photo's start in clear",
            device.name
        );
    }
}
