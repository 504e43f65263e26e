//! One owner per store: a second open of a store that is already open, in this process or in
//! another, is refused at once with `StoreError::Locked`, and the store opens again as soon as
//! its owner is dropped or its process dies.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tejido_core::store::StoreError;
use tejido_core::Store;

const CHILD_STORE: &str = "TEJIDO_CHILD_OWNER_STORE";
const CHILD_MODE: &str = "TEJIDO_CHILD_OWNER_MODE";

/// Runs `child_store_owner` in a new process of this test binary.
fn child(path: &Path, mode: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_store_owner", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_STORE, path)
        .env(CHILD_MODE, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

/// What the child printed about its open: `OPENED`, `LOCKED` or `ERROR …`.
fn child_open_result(path: &Path) -> String {
    let out = child(path, "try").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().find_map(child_report).unwrap_or("no report").to_owned()
}

/// The child's report in a line of its output (the test harness may print before it).
fn child_report(line: &str) -> Option<&str> {
    line.split_once("TEJIDO_CHILD: ").map(|(_, report)| report.trim())
}

/// The store side of another app process. `try` opens the store, reports and exits; `hold`
/// opens it, reports and keeps it open until killed. Run only by the tests below.
/// The tests of this file run one at a time. A test that spawns a child process (the crash
/// tests) forks while another test's thread may hold a store's owner lock open: the child's
/// copy of that descriptor keeps the `flock` until it execs, and the other test's next open of
/// the store would see `Locked`. (An app does not fork while it holds stores, so this is only a
/// test harness matter.)
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
#[ignore = "run by the cross-process tests in this file"]
fn child_store_owner() {
    let path = std::env::var_os(CHILD_STORE).expect("run by a parent test");
    let mode = std::env::var(CHILD_MODE).unwrap_or_default();
    let report = |s: &str| println!("TEJIDO_CHILD: {s}");
    match Store::open(&path) {
        Ok(store) => {
            report("OPENED");
            if mode == "hold" {
                let _keep = store;
                std::thread::sleep(Duration::from_secs(120));
            }
        }
        Err(StoreError::Locked(_)) => report("LOCKED"),
        Err(e) => report(&format!("ERROR {e}")),
    }
}

#[test]
fn a_second_open_in_the_same_process_is_refused_until_the_first_handle_drops() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let first = Store::open(&path).unwrap();
    let doc = first.start_submission("f", "1").unwrap();
    first.set_answer(doc, "q", json!("first")).unwrap();

    let started = Instant::now();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Locked(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "refused at once, not after a busy timeout");
    assert!(err.to_string().contains("already open"), "{err}");
    // Refused again, however many times it is tried; the owner keeps working meanwhile.
    assert!(matches!(Store::open(&path), Err(StoreError::Locked(_))));
    first.set_answer(doc, "q", json!("second")).unwrap();
    assert_eq!(first.read_document(doc).unwrap().value("q"), Some(&json!("second")));

    drop(first);
    let again = Store::open(&path).unwrap();
    assert_eq!(again.read_document(doc).unwrap().value("q"), Some(&json!("second")));
    assert!(again.check_integrity().unwrap().is_empty());
}

#[test]
fn a_failed_open_does_not_keep_the_store_locked() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.db");
    drop(Store::open(&path).unwrap());
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", 999).unwrap();
    assert!(matches!(Store::open(&path), Err(StoreError::TooNew { .. })));
    // The refused open released its lock: a second attempt gets the same answer, not Locked.
    assert!(matches!(Store::open(&path), Err(StoreError::TooNew { .. })));
}

#[test]
fn another_process_is_refused_while_the_store_is_open_and_admitted_after() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let store = Store::open(&path).unwrap();
    assert_eq!(child_open_result(&path), "LOCKED");
    drop(store);
    assert_eq!(child_open_result(&path), "OPENED");
    // And the child's handle is gone with its process.
    drop(Store::open(&path).unwrap());
}

#[test]
fn a_store_held_by_another_process_opens_once_that_process_is_killed() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    drop(Store::open(&path).unwrap());
    let mut holder = child(&path, "hold").spawn().unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let reported = lines.find_map(|l| child_report(&l.ok()?).map(str::to_owned));
    assert_eq!(reported.as_deref(), Some("OPENED"));

    assert!(matches!(Store::open(&path), Err(StoreError::Locked(_))));
    holder.kill().unwrap();
    holder.wait().unwrap();
    let store = Store::open(&path).unwrap();
    assert!(store.check_integrity().unwrap().is_empty());
}
