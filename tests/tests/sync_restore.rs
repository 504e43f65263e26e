//! A server restored from an older backup, on SQLite and on PostgreSQL: after `tejido-server
//! restored` gives it a new epoch, the next sync of each device sends its whole history (and
//! its photos) again, and the server again holds every op it had acknowledged after the backup.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::SeedableRng;
use tejido_tests::device::{documents, fill_submission, test_options, Device};
use tejido_tests::server::{server_binary, TestServer};

/// Where the backup of each backend goes.
enum Backup {
    Sqlite(PathBuf),
    Postgres(PathBuf),
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

async fn restore_scenario(postgres: bool) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let cluster = postgres.then(tejido_server::testing::cluster);
    let url = postgres.then(tejido_server::testing::fresh_database_blocking);
    let mut server = TestServer::start_on(&data, None, url.clone());
    let project = server.create_project("observatorio");
    let (_, enum_link) = server.enrollment_code(project, "enumerator", 1, &server.url());
    let (_, coord_link) = server.enrollment_code(project, "coordinator", 2, &server.url());
    let mut ana = Device::enroll(&enum_link, "ana", test_options()).await.unwrap();
    let mut coord = Device::enroll(&coord_link, "coord", test_options()).await.unwrap();
    let before = fill_submission(ana.store(), "victimization", 5, &mut rng);
    ana.sync().await.unwrap();

    // The backup, taken with the server stopped.
    server.kill();
    let backup = match (&cluster, &url) {
        (Some(c), Some(url)) => {
            let dump = tmp.path().join("backup.dump");
            run(Command::new(c.bin.join("pg_dump")).args(["-Fc", "-f"]).arg(&dump).arg(url));
            Backup::Postgres(dump)
        }
        _ => {
            let copy = tmp.path().join("backup");
            copy_dir(&data, &copy);
            Backup::Sqlite(copy)
        }
    };
    server.restart();

    // Work the backup does not have: acknowledged, so it left the outbox.
    let after = fill_submission(ana.store(), "victimization", 7, &mut rng);
    let photo: Vec<u8> = (0..80_000u32).map(|i| (i.wrapping_mul(2246822519) >> 9) as u8).collect();
    let sha = ana.store().attach_file(after, "photo", &photo, "image/jpeg").unwrap();
    ana.sync().await.unwrap();
    assert_eq!(ana.store().pending_count().unwrap(), 0);
    coord.sync().await.unwrap();
    assert!(documents(coord.store()).contains_key(&after));

    // The disaster, and the restore.
    server.kill();
    let restored_url = match &backup {
        Backup::Postgres(dump) => {
            let (c, target) = (cluster.unwrap(), tejido_server::testing::fresh_database_blocking());
            run(Command::new(c.bin.join("pg_restore")).args(["--no-owner", "-d"]).arg(&target).arg(dump));
            Some(target)
        }
        Backup::Sqlite(copy) => {
            std::fs::remove_dir_all(&data).unwrap();
            copy_dir(copy, &data);
            None
        }
    };
    let mut cmd = Command::new(server_binary());
    if let Some(u) = &restored_url {
        cmd.arg("--database").arg(u);
    }
    run(cmd.arg("--data").arg(&data).args(["--json", "restored"]));
    let restored = TestServer::start_on(&data, None, restored_url);
    ana.set_server(&restored.url());
    coord.set_server(&restored.url());

    // The restored server lacks `after` until Ana's next sync sends her history again.
    let r = ana.sync().await.unwrap();
    assert!(r.server_restored, "{r:?}");
    assert!(r.ops_accepted > 0, "what the server lost was pushed again: {r:?}");
    assert!(r.ops_duplicate > 0, "what it kept was known: {r:?}");
    assert_eq!(r.attachments_uploaded, 1, "the photo went again: {r:?}");
    let r = coord.sync().await.unwrap();
    assert!(r.server_restored);
    // A coordinator enrolled afresh sees everything Ana was ever acknowledged for.
    let mut fresh =
        Device::enroll(&coord_link.replace(&server.url(), &restored.url()), "fresh", test_options()).await;
    if postgres || fresh.is_err() {
        // The restored database predates the coordinator code's second use; make a new code.
        let (_, link) = restored.enrollment_code(project, "coordinator", 1, &restored.url());
        fresh = Device::enroll(&link, "fresh", test_options()).await;
    }
    let mut fresh = fresh.unwrap();
    fresh.sync().await.unwrap();
    let seen = documents(fresh.store());
    for doc in [before, after] {
        assert_eq!(seen.get(&doc), Some(&ana.store().read_document(doc).unwrap()), "{doc}");
    }
    assert_eq!(fresh.store().read_attachment(&sha).unwrap(), photo);
    assert_eq!(documents(coord.store()).get(&after), seen.get(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_server_restored_from_an_older_backup_gets_back_what_it_acknowledged() {
    restore_scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_server_restored_from_an_older_backup_gets_back_what_it_acknowledged() {
    restore_scenario(true).await;
}
