//! `tejido-bench sync [--submissions N] [--devices N] [--fields N] [--database postgres://…|--backend postgres]`:
//! simulated devices (real stores and the real client) push finalized submissions concurrently
//! to the real server through a byte-counting proxy, then a fresh coordinator pulls them all.
//! Beside them, raw SQLite inserts and reads of the same rows in the same run.
//!
//! On PostgreSQL (`--database` names an empty database, or `--backend postgres` makes one in a
//! throwaway cluster) it also writes the same rows with `COPY` (`sync.raw_copy_submissions_per_s`,
//! with `.ratio` lines against it), and pushes a second set of submissions through two server
//! processes on the one database, half the devices each (`sync.two_process_push_submissions_per_s`,
//! with its ratio to one process; these devices reach the servers directly, not through the
//! proxy).
//!
//! `sync.push_machine_busy` (and `sync.two_process_push_machine_busy`) is the share of all the
//! machine's cores busy during the push, whatever used them; with a local PostgreSQL,
//! `sync.push_database_cpu_s` (and `sync.two_process_push_database_cpu_s`) is its processes'
//! CPU seconds. Beside `sync.push_server_cpu_s` and `sync.push_devices_cpu_s` they tell whether
//! the push waits on the CPU or on something else (one writer at a time).

use std::time::Instant;

use rand::SeedableRng;
use tejido_core::store::StatusFilter;
use tejido_core::sync::client::{CancelToken, SyncOptions, SyncReport};

use crate::device::{fill_submission, Device};
use crate::proxy::{FaultConfig, FaultProxy};
use crate::server::TestServer;
use crate::{report, report_ratio};

struct Args {
    submissions: usize,
    devices: usize,
    fields: usize,
    /// The PostgreSQL database, when not SQLite.
    database: Option<String>,
    /// A throwaway PostgreSQL cluster's database.
    throwaway: bool,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args { submissions: 20_000, devices: 200, fields: 50, database: None, throwaway: false };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--database" if value.starts_with("postgres://") || value.starts_with("postgresql://") => {
                a.database = Some(value.clone());
                continue;
            }
            "--database" => return Err("--database takes a postgres://… URL".into()),
            "--backend" if value == "postgres" => {
                a.throwaway = true;
                continue;
            }
            "--backend" if value == "sqlite" => continue,
            "--backend" => return Err("--backend takes sqlite or postgres".into()),
            _ => {}
        }
        let n: usize = value.parse().map_err(|_| format!("{flag} takes a positive number, not {value:?}"))?;
        if n == 0 {
            return Err(format!("{flag} must be at least 1"));
        }
        match flag.as_str() {
            "--submissions" => a.submissions = n,
            "--devices" => a.devices = n,
            "--fields" => a.fields = n,
            other => {
                return Err(format!(
                "unknown option {other}; expected --submissions, --devices, --fields, --database, --backend"
            ))
            }
        }
    }
    a.devices = a.devices.min(a.submissions);
    Ok(a)
}

pub fn run(args: &[String]) -> Result<(), String> {
    let args = parse(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(bench(args))
}

async fn bench(mut args: Args) -> Result<(), String> {
    if args.throwaway && args.database.is_none() {
        args.database = Some(tejido_server::testing::cluster().fresh_database().await);
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server = TestServer::start_on(&tmp.path().join("server"), None, args.database.clone());
    let project = server.create_project("bench");
    let proxy = FaultProxy::start(server.addr(), FaultConfig::clean());
    let (_, enum_link) = server.enrollment_code(project, "enumerator", args.devices as u32, &proxy.url());
    let (_, coord_link) = server.enrollment_code(project, "coordinator", 1, &proxy.url());
    let options = SyncOptions { push_batch_changes: 200, pull_limit: 1000, ..SyncOptions::default() };

    // Devices fill their submissions offline (not measured).
    let devices = filled_devices(&[enum_link], "bench", &args, &options, 42).await?;

    // Push: every device at once.
    proxy.reset_stats();
    let cpu_before = (server.cpu_seconds(), crate::cpu_seconds(std::process::id()));
    let machine_before = (crate::machine_ticks(), crate::local_postgres_cpu_seconds());
    let started = Instant::now();
    let devices = push_all(devices).await?;
    let push_secs = started.elapsed().as_secs_f64();
    let machine_busy = crate::busy_share(machine_before.0, crate::machine_ticks());
    let database_cpu = machine_before.1.zip(crate::local_postgres_cpu_seconds()).map(|(a, b)| b - a);
    let cpu_after = (server.cpu_seconds(), crate::cpu_seconds(std::process::id()));
    let push_bytes = proxy.bytes_up() + proxy.bytes_down();
    let peak = server.peak_memory_bytes();

    // Pull: a fresh coordinator takes everything.
    let coord = Device::enroll(&coord_link, "bench-coordinator", options.clone())
        .await
        .map_err(|e| format!("enrolling the coordinator: {e}"))?;
    proxy.reset_stats();
    let started = Instant::now();
    let mut r = SyncReport::default();
    coord
        .client()
        .pull(coord.store(), &(), &CancelToken::new(), &mut r)
        .await
        .map_err(|e| format!("pull failed: {e}"))?;
    let pull_secs = started.elapsed().as_secs_f64();
    let pull_bytes = proxy.bytes_up() + proxy.bytes_down();
    let pulled = coord.store().list_submissions(StatusFilter::Finalized).map_err(|e| e.to_string())?.len();
    if pulled != args.submissions {
        return Err(format!("the coordinator pulled {pulled} submissions, expected {}", args.submissions));
    }
    let peak = server.peak_memory_bytes().or(peak);
    drop(devices);

    let n = args.submissions as f64;
    let push_rate = n / push_secs;
    let pull_rate = n / pull_secs;
    report("sync.push_submissions_per_s", push_rate, "submissions/s");
    report("sync.pull_submissions_per_s", pull_rate, "submissions/s");
    // Where the push's CPU went: the server, and the devices with the proxy (this process).
    if let ((Some(s0), Some(c0)), (Some(s1), Some(c1))) = (cpu_before, cpu_after) {
        report("sync.push_server_cpu_s", s1 - s0, "s");
        report("sync.push_devices_cpu_s", c1 - c0, "s");
        report("sync.push_wall_s", push_secs, "s");
    }
    // How much of the machine was busy (a local database included): well under all of it
    // means the push waits on something other than the CPU.
    if let Some(b) = machine_busy {
        report("sync.push_machine_busy", b, "of all cores");
    }
    if let Some(c) = database_cpu.filter(|_| args.database.is_some()) {
        report("sync.push_database_cpu_s", c, "s");
    }
    report("sync.wire_bytes_per_submission", push_bytes as f64 / n, "bytes");
    report("sync.pull_wire_bytes_per_submission", pull_bytes as f64 / n, "bytes");
    if let Some(p) = peak {
        report("sync.server_peak_memory", p as f64, "bytes");
    }

    // The baseline (for both directions): the same rows straight into SQLite. Reading them back
    // is reported beside it.
    let (insert_rate, select_rate) = raw_sqlite(&coord, args.submissions, args.fields)?;
    report("sync.raw_sqlite_insert_submissions_per_s", insert_rate, "submissions/s");
    report("sync.raw_sqlite_select_submissions_per_s", select_rate, "submissions/s");
    report_ratio("sync.push_submissions_per_s", push_rate / insert_rate);
    report_ratio("sync.pull_submissions_per_s", pull_rate / insert_rate);

    if let Some(url) = &args.database {
        let copy_rate = raw_copy(url, &baseline_changes(&coord)?).await?;
        report("sync.raw_copy_submissions_per_s", copy_rate, "submissions/s");
        report_ratio("sync.push_submissions_per_s.copy", push_rate / copy_rate);
        report_ratio("sync.pull_submissions_per_s.copy", pull_rate / copy_rate);
        let (two, two_busy, two_db) =
            two_processes(&server, project, url, &args, &options, tmp.path()).await?;
        report("sync.two_process_push_submissions_per_s", two, "submissions/s");
        if let Some(b) = two_busy {
            report("sync.two_process_push_machine_busy", b, "of all cores");
        }
        if let Some(c) = two_db {
            report("sync.two_process_push_database_cpu_s", c, "s");
        }
        report_ratio("sync.two_process_push_submissions_per_s", two / push_rate);
    }
    Ok(())
}

/// `args.devices` devices, enrolled through `links` in turn, holding `args.submissions`
/// finalized submissions between them.
async fn filled_devices(
    links: &[String],
    name: &str,
    args: &Args,
    options: &SyncOptions,
    seed: u64,
) -> Result<Vec<Device>, String> {
    let mut devices = Vec::with_capacity(args.devices);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..args.devices {
        let link = &links[i % links.len()];
        let d = Device::enroll(link, &format!("{name}-{i}"), options.clone())
            .await
            .map_err(|e| format!("enrolling device {i}: {e}"))?;
        let share = args.submissions / args.devices + usize::from(i < args.submissions % args.devices);
        for _ in 0..share {
            fill_submission(d.store(), "bench", args.fields, &mut rng);
        }
        devices.push(d);
    }
    Ok(devices)
}

/// A second set of submissions from fresh devices, half pushing through this server and half
/// through a second server process on the same database, all at once. Returns submissions per
/// second, the share of the machine's cores that was busy meanwhile, and a local database's
/// CPU seconds.
async fn two_processes(
    first: &TestServer,
    project: uuid::Uuid,
    url: &str,
    args: &Args,
    options: &SyncOptions,
    dir: &std::path::Path,
) -> Result<(f64, Option<f64>, Option<f64>), String> {
    let second = TestServer::start_on(&dir.join("second"), None, Some(url.to_owned()));
    let links: Vec<String> = [first, &second]
        .iter()
        .map(|s| s.enrollment_code(project, "enumerator", args.devices as u32, &s.url()).1)
        .collect();
    let devices = filled_devices(&links, "bench-two", args, options, 43).await?;
    let before = (crate::machine_ticks(), crate::local_postgres_cpu_seconds());
    let started = Instant::now();
    push_all(devices).await?;
    let rate = args.submissions as f64 / started.elapsed().as_secs_f64();
    let database_cpu = before.1.zip(crate::local_postgres_cpu_seconds()).map(|(a, b)| b - a);
    Ok((rate, crate::busy_share(before.0, crate::machine_ticks()), database_cpu))
}

/// Every device pushes its outbox, all at once.
async fn push_all(devices: Vec<Device>) -> Result<Vec<Device>, String> {
    let mut tasks = Vec::new();
    for d in devices {
        tasks.push(tokio::spawn(async move {
            let mut r = SyncReport::default();
            let result = d.client().push(d.store(), &(), &CancelToken::new(), &mut r).await;
            (d, result)
        }));
    }
    let mut devices = Vec::new();
    for t in tasks {
        let (d, result) = t.await.map_err(|e| format!("a device task failed: {e}"))?;
        result.map_err(|e| format!("{}: push failed: {e}", d.name))?;
        devices.push(d);
    }
    Ok(devices)
}

/// Writes the rows `raw_sqlite` writes (the log's change JSON, one row per answer) into two
/// fresh tables of the PostgreSQL database with `COPY`, 200 submissions a transaction, then
/// drops them. Returns submissions per second.
async fn raw_copy(url: &str, changes: &[tejido_core::Change]) -> Result<f64, String> {
    use futures_util::SinkExt;
    use std::fmt::Write as _;
    let (mut client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    client
        .batch_execute(
            "DROP TABLE IF EXISTS bench_raw_log, bench_raw_ops;
             CREATE TABLE bench_raw_log (seq bigserial PRIMARY KEY, doc bytea NOT NULL, body text NOT NULL);
             CREATE TABLE bench_raw_ops (doc bytea NOT NULL, field text NOT NULL, hlc bigint NOT NULL,
                 replica bytea NOT NULL, value text, PRIMARY KEY (doc, field, hlc, replica));",
        )
        .await
        .map_err(|e| e.to_string())?;
    // COPY's text format: backslash, tab, newline and carriage return escaped.
    fn text(out: &mut String, s: &str) {
        for ch in s.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
    fn bytea(out: &mut String, b: &[u8]) {
        out.push_str("\\\\x");
        for x in b {
            let _ = write!(out, "{x:02x}");
        }
    }
    let started = Instant::now();
    for batch in changes.chunks(200) {
        let (mut log, mut ops) = (String::new(), String::new());
        for c in batch {
            let body = serde_json::to_string(c).map_err(|e| e.to_string())?;
            bytea(&mut log, c.doc.0.as_bytes());
            log.push('\t');
            text(&mut log, &body);
            log.push('\n');
            for op in &c.ops {
                bytea(&mut ops, c.doc.0.as_bytes());
                ops.push('\t');
                text(&mut ops, op.field.as_str());
                let _ = write!(ops, "\t{}\t", c.hlc.0 as i64);
                bytea(&mut ops, c.replica.0.as_bytes());
                ops.push('\t');
                text(&mut ops, &op.value.to_string());
                ops.push('\n');
            }
        }
        let tx = client.transaction().await.map_err(|e| e.to_string())?;
        for (sql, rows) in [
            ("COPY bench_raw_log (doc, body) FROM STDIN", log),
            ("COPY bench_raw_ops (doc, field, hlc, replica, value) FROM STDIN", ops),
        ] {
            let sink = tx.copy_in::<_, bytes::Bytes>(sql).await.map_err(|e| e.to_string())?;
            futures_util::pin_mut!(sink);
            sink.send(bytes::Bytes::from(rows)).await.map_err(|e| e.to_string())?;
            sink.finish().await.map_err(|e| e.to_string())?;
        }
        tx.commit().await.map_err(|e| e.to_string())?;
    }
    let secs = started.elapsed().as_secs_f64();
    let (count,): (i64,) = {
        let row =
            client.query_one("SELECT count(*) FROM bench_raw_log", &[]).await.map_err(|e| e.to_string())?;
        (row.get(0),)
    };
    client.batch_execute("DROP TABLE bench_raw_log, bench_raw_ops").await.map_err(|e| e.to_string())?;
    if count as usize != changes.len() {
        return Err(format!("COPY wrote {count} rows, expected {}", changes.len()));
    }
    Ok(changes.len() as f64 / secs)
}

/// The pulled submissions, each as one change of all its answers (as a device first sends it).
fn baseline_changes(coord: &Device) -> Result<Vec<tejido_core::Change>, String> {
    let store = coord.store();
    store
        .list_submissions(StatusFilter::Finalized)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|s| {
            let doc = store.read_document(s.id).map_err(|e| e.to_string())?;
            let first = doc.fields.values().next().map(|f| f.op).ok_or("an empty document")?;
            Ok(tejido_core::Change {
                doc: s.id,
                collection: tejido_core::Collection::Submission,
                replica: first.replica,
                hlc: first.hlc,
                ops: doc
                    .fields
                    .iter()
                    .map(|(p, f)| tejido_core::FieldOp {
                        field: p.clone(),
                        value: f.value.clone(),
                        seen: vec![],
                    })
                    .collect(),
            })
        })
        .collect()
}

/// Inserts the pulled submissions' rows (one per answer, plus the change as JSON, as a server
/// log keeps them) into a fresh SQLite file in batches of 200 submissions, then reads them back.
/// Returns submissions per second for each.
fn raw_sqlite(coord: &Device, submissions: usize, _fields: usize) -> Result<(f64, f64), String> {
    let changes = baseline_changes(coord)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut conn = rusqlite::Connection::open(dir.path().join("raw.db")).map_err(|e| e.to_string())?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| e.to_string())?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| e.to_string())?;
    conn.execute_batch(
        "CREATE TABLE log (seq INTEGER PRIMARY KEY, doc BLOB NOT NULL, body TEXT NOT NULL);
         CREATE TABLE ops (doc BLOB NOT NULL, field TEXT NOT NULL, hlc INTEGER NOT NULL, replica BLOB NOT NULL,
                           value TEXT, PRIMARY KEY (doc, field, hlc, replica)) WITHOUT ROWID;",
    )
    .map_err(|e| e.to_string())?;
    let started = Instant::now();
    for batch in changes.chunks(200) {
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        {
            let mut log = tx
                .prepare_cached("INSERT INTO log (doc, body) VALUES (?1, ?2)")
                .map_err(|e| e.to_string())?;
            let mut ops = tx
                .prepare_cached(
                    "INSERT INTO ops (doc, field, hlc, replica, value) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| e.to_string())?;
            for c in batch {
                let body = serde_json::to_string(c).map_err(|e| e.to_string())?;
                log.execute(rusqlite::params![c.doc.0.as_bytes().as_slice(), body])
                    .map_err(|e| e.to_string())?;
                for op in &c.ops {
                    ops.execute(rusqlite::params![
                        c.doc.0.as_bytes().as_slice(),
                        op.field.as_str(),
                        c.hlc.0 as i64,
                        c.replica.0.as_bytes().as_slice(),
                        op.value.to_string()
                    ])
                    .map_err(|e| e.to_string())?;
                }
            }
        }
        tx.commit().map_err(|e| e.to_string())?;
    }
    let insert_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut read = 0usize;
    {
        let mut stmt = conn.prepare("SELECT body FROM log ORDER BY seq").map_err(|e| e.to_string())?;
        let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
        while let Some(row) = rows.next().map_err(|e| e.to_string())? {
            let body: String = row.get(0).map_err(|e| e.to_string())?;
            let _: tejido_core::Change = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            read += 1;
        }
    }
    let select_secs = started.elapsed().as_secs_f64();
    if read != submissions {
        return Err(format!("the baseline read {read} rows, expected {submissions}"));
    }
    Ok((submissions as f64 / insert_secs, submissions as f64 / select_secs))
}
