//! `tejido-server demo`: the real binary seeds a project, publishes the example forms, and its
//! simulated devices enroll, fill and sync finalized submissions (with photos) over HTTP; the
//! server's database then holds exactly what the demo reports.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run_demo(data: &std::path::Path) -> String {
    run_demo_on(data, None)
}

fn run_demo_on(data: &std::path::Path, database: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tejido-server"));
    if let Some(db) = database {
        cmd.env("TEJIDO_DATABASE_URL", db);
    }
    let mut child = cmd
        .arg("--data")
        .arg(data)
        .args(["demo", "--listen", "127.0.0.1:0", "--devices", "3", "--rounds", "1", "--exit-after-rounds"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the demo did not stop by itself");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "demo failed:\n{out}\n{err}");
    out
}

/// The `demo: totals form=n ... photos=n` line, as a map.
fn totals(out: &str) -> BTreeMap<String, u64> {
    let line = out.lines().find_map(|l| l.strip_prefix("demo: totals ")).unwrap_or_else(|| panic!("{out}"));
    line.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

fn server_counts(db: &std::path::Path) -> (BTreeMap<String, u64>, u64, u64, u64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut per_form = BTreeMap::new();
    let mut stmt = conn
        .prepare(
            "SELECT f.value, count(DISTINCT d.doc) FROM documents d
             JOIN field_ops f ON f.doc = d.doc AND f.field = '_form' AND f.leaf = 1
             JOIN field_ops s ON s.doc = d.doc AND s.field = '_status' AND s.leaf = 1
             WHERE d.collection = 'submission' AND s.value = '\"finalized\"'
             GROUP BY f.value",
        )
        .unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))).unwrap();
    for row in rows {
        let (form, n) = row.unwrap();
        let form: String = serde_json::from_str(&form).unwrap();
        per_form.insert(form, n);
    }
    let one = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64;
    (
        per_form,
        one("SELECT count(*) FROM blob_owners"),
        one("SELECT count(*) FROM devices"),
        one("SELECT count(*) FROM forms"),
    )
}

#[test]
fn the_demo_fills_and_syncs_both_example_forms() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_demo(dir.path());
    assert!(out.contains("listening on http://127.0.0.1:"), "{out}");
    assert!(out.contains("tejido://enroll?server="), "{out}");
    let mut reported = totals(&out);
    let photos = reported.remove("photos").unwrap();
    // 3 devices: two enumerators (victimization survey), one youth (activity log), 2 each.
    assert_eq!(reported.get("victimizacion_hogares"), Some(&4), "{out}");
    assert_eq!(reported.get("bitacora_red_juvenil"), Some(&2), "{out}");
    assert!(photos >= 2, "every activity has at least one photo: {out}");

    let db = dir.path().join("demo").join("tejido.db");
    let (per_form, blobs, devices, forms) = server_counts(&db);
    assert_eq!(per_form, reported, "the server holds what the demo reports");
    assert_eq!(blobs, photos, "each generated photo reached the server once");
    assert_eq!(devices, 3);
    assert_eq!(forms, 2);
    // The read model holds every finalized submission.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM submission_state WHERE finalized = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows as u64, reported.values().sum::<u64>());
    drop(conn);
    // The printed coordinator login signs in to the web app.
    let login = out
        .lines()
        .find_map(|l| l.strip_prefix("demo: coordinators' page: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(login.starts_with("http://127.0.0.1:") && login.contains("/login"), "{login}");
    let email = login.split("user: ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let password = login.split("password: ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let signed_in = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let storage = tejido_server::storage::SqliteStorage::open(&db).unwrap();
        let service = tejido_server::service::Service::new(std::sync::Arc::new(storage)).await.unwrap();
        service.login(&email, &password, "127.0.0.1", tejido_server::now_ms()).await.unwrap()
    });
    assert!(matches!(signed_in, tejido_server::service::accounts::Login::Ok { .. }), "{signed_in:?}");
    // Survey answers stay out of the log: no generated names or places.
    for value in ["Yaritza", "Casa comunal", "Actividad simulada"] {
        assert!(!out.contains(value), "{value} in the output");
    }

    // A second run reuses the project and forms and adds new devices and submissions.
    let out = run_demo(dir.path());
    assert!(out.contains("already exists"), "{out}");
    let (per_form, _, devices, forms) = server_counts(&db);
    assert_eq!(per_form.get("victimizacion_hogares"), Some(&8));
    assert_eq!(devices, 6);
    assert_eq!(forms, 2);
}

#[test]
fn the_demo_runs_on_postgresql_too() {
    let dir = tempfile::tempdir().unwrap();
    let url = tejido_server::testing::fresh_database_blocking();
    let out = run_demo_on(dir.path(), Some(&url));
    assert!(!out.contains(&url), "the database URL is never printed");
    let mut reported = totals(&out);
    let photos = reported.remove("photos").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (finalized, blobs, devices, forms) = runtime.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let one = async |sql: &str| client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) as u64;
        (
            one("SELECT count(DISTINCT doc)::BIGINT FROM field_ops WHERE field = '_status' AND leaf AND value = '\"finalized\"'")
                .await,
            one("SELECT count(*) FROM blob_owners").await,
            one("SELECT count(*) FROM devices").await,
            one("SELECT count(*) FROM forms").await,
        )
    });
    assert_eq!(finalized, reported.values().sum::<u64>(), "the database holds what the demo reports: {out}");
    assert_eq!(blobs, photos);
    assert_eq!(devices, 3);
    assert_eq!(forms, 2);
    // Nothing went to a SQLite file.
    assert!(!dir.path().join("demo").join("tejido.db").exists());
}

#[test]
fn a_coordinator_enrolls_with_the_printed_link_and_receives_every_submission() {
    use std::io::{BufRead, BufReader};
    use tejido_core::sync::client::{enroll_with_link, CancelToken, SyncClient};
    use tejido_core::{Collection, Store};

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tejido-server"))
        .arg("--data")
        .arg(dir.path())
        .args(["demo", "--listen", "127.0.0.1:0", "--devices", "2", "--rounds", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut child = KillOnDrop(Some(child));
    let mut lines = BufReader::new(stdout).lines();
    let (mut link, mut totals_line) = (None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(l) = line.strip_prefix("demo: coordinator enrollment link (one device): ") {
            link = Some(l.to_owned());
        }
        if line.starts_with("demo: totals ") {
            totals_line = Some(line.clone());
        }
        if line.starts_with("demo: still serving") {
            break;
        }
    }
    let link = link.expect("a coordinator link");
    let mut reported = totals(&totals_line.expect("a totals line"));
    reported.remove("photos");
    let expected: u64 = reported.values().sum();
    assert_eq!(expected, 4);

    let store = Store::open(dir.path().join("coordinator.db")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let received = rt.block_on(async {
        let enrolled = enroll_with_link(&link, &store, Some("coordinator")).await.unwrap();
        assert_eq!(enrolled.project_name, "Observatorio demo");
        let client = SyncClient::from_store(&store).unwrap();
        client.sync(&store, &(), &CancelToken::new()).await.unwrap();
        store.list_documents(Collection::Submission).unwrap().len() as u64
    });
    assert_eq!(received, expected, "the coordinator receives every synced submission");
    assert_eq!(store.list_documents(Collection::Form).unwrap().len(), 2);

    let mut child = child.0.take().unwrap();
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "the demo stops cleanly on SIGTERM");
}

/// Stops the demo if the test fails before it does.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
