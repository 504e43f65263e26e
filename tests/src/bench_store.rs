//! `tejido-bench store [--ops N] [--writes N]`: the device store's figures beside plain rusqlite
//! baselines measured in the same run.
//!
//! - answer-write latency (p50, p99): one answer per transaction, as a form session writes; the
//!   baseline is one plain INSERT per transaction on a table with the same pragmas.
//! - finalize of a 250-field submission.
//! - merging N remote ops (default 1,000,000: 16,000 fresh 50-field submissions and 4,000
//!   50-field edits of them, in pull pages of 500 changes) beside plain INSERTs of the same rows
//!   in one transaction.
//! - the same answer writes and merge on an encrypted store (SQLCipher):
//!   `store.encrypted.answer_write_p99` (target under 1 ms) and
//!   `store.encrypted.merge_ops_per_s.ratio`, the encrypted merge rate over the unencrypted
//!   store's in this run (target at least 0.7).

use std::time::Instant;

use rusqlite::params;
use serde_json::json;
use tejido_core::{Change, Collection, DocId, FieldOp, FieldPath, Hlc, OpId, ReplicaId, Store};

use crate::{report, report_ratio};

struct Options {
    ops: usize,
    writes: usize,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options { ops: 1_000_000, writes: 10_000 };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            it.next().and_then(|v| v.parse().ok()).ok_or(format!("{name} takes a number"))
        };
        match a.as_str() {
            "--ops" => o.ops = value("--ops")?,
            "--writes" => o.writes = value("--writes")?,
            other => return Err(format!("unknown option {other:?}; expected --ops N or --writes N")),
        }
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    answer_writes(&dir, o.writes)?;
    finalize(&dir)?;
    merge(&dir, o.ops)?;
    Ok(())
}

/// The key of the encrypted store the benchmark measures.
const BENCH_KEY: &[u8; 32] = b"tejido-bench-encrypted-store-key";

fn open_store(path: std::path::PathBuf, encrypted: bool) -> Result<Store, String> {
    if encrypted { Store::open_encrypted(path, BENCH_KEY) } else { Store::open(path) }
        .map_err(|e| e.to_string())
}

/// Answer-write latencies (ms, sorted), one answer per transaction.
fn time_answer_writes(store: &Store, writes: usize) -> Result<Vec<f64>, String> {
    let doc = store.start_submission("bench", "1").map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(writes);
    for i in 0..writes {
        let field = format!("section{}/q{}", i % 25, i % 250);
        let t = Instant::now();
        store.set_answer(doc, &field, json!(i)).map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn baseline_conn(path: &std::path::Path) -> Result<rusqlite::Connection, String> {
    let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| e.to_string())?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| e.to_string())?;
    conn.execute_batch(
        "CREATE TABLE plain (doc BLOB, field TEXT, hlc INTEGER, replica BLOB, value TEXT,
         PRIMARY KEY (doc, field, hlc, replica)) WITHOUT ROWID",
    )
    .map_err(|e| e.to_string())?;
    Ok(conn)
}

fn answer_writes(dir: &tempfile::TempDir, writes: usize) -> Result<(), String> {
    let ours = time_answer_writes(&open_store(dir.path().join("writes.db"), false)?, writes)?;
    let encrypted = time_answer_writes(&open_store(dir.path().join("writes-encrypted.db"), true)?, writes)?;
    let conn = baseline_conn(&dir.path().join("writes-baseline.db"))?;
    let mut base = Vec::with_capacity(writes);
    let docb = DocId::new();
    for i in 0..writes {
        let field = format!("section{}/q{}", i % 25, i % 250);
        let t = Instant::now();
        let tx = conn.unchecked_transaction().map_err(|e| e.to_string())?;
        tx.prepare_cached("INSERT INTO plain VALUES (?1, ?2, ?3, ?4, ?5)")
            .and_then(|mut s| {
                s.execute(params![
                    docb.0.as_bytes().as_slice(),
                    field,
                    i as i64,
                    [0u8; 16].as_slice(),
                    i.to_string()
                ])
            })
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        base.push(t.elapsed().as_secs_f64() * 1e3);
    }
    base.sort_by(f64::total_cmp);
    report("store.answer_write_p50", percentile(&ours, 0.50), "ms");
    report("store.answer_write_p99", percentile(&ours, 0.99), "ms");
    report("store.answer_write_baseline_p50", percentile(&base, 0.50), "ms");
    report("store.answer_write_baseline_p99", percentile(&base, 0.99), "ms");
    // Target: p99 under 1 ms. The ratio is against a plain one-row insert transaction.
    report_ratio("store.answer_write_p99", percentile(&ours, 0.99) / percentile(&base, 0.99).max(1e-9));
    report("store.answer_write_p99.target", 1.0, "ms");
    report("store.encrypted.answer_write_p50", percentile(&encrypted, 0.50), "ms");
    report("store.encrypted.answer_write_p99", percentile(&encrypted, 0.99), "ms");
    report("store.encrypted.answer_write_p99.target", 1.0, "ms");
    Ok(())
}

fn finalize(dir: &tempfile::TempDir) -> Result<(), String> {
    let store = Store::open(dir.path().join("finalize.db")).map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    for _ in 0..20 {
        let doc = store.start_submission("bench", "1").map_err(|e| e.to_string())?;
        let fields: Vec<(String, serde_json::Value)> =
            (0..250).map(|i| (format!("s{}/q{i}", i / 25), json!(format!("answer {i}")))).collect();
        let refs: Vec<(&str, serde_json::Value)> =
            fields.iter().map(|(f, v)| (f.as_str(), v.clone())).collect();
        store.set_fields(doc, &refs).map_err(|e| e.to_string())?;
        let t = Instant::now();
        store.finalize(doc).map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    report("store.finalize_250_fields_p50", percentile(&times, 0.5), "ms");
    report("store.finalize_250_fields_max", percentile(&times, 1.0), "ms");
    Ok(())
}

/// The remote changes a fresh device pulls: submissions, then edits of some of them.
fn remote_changes(ops: usize) -> Vec<Change> {
    const FIELDS: usize = 50;
    let replicas: Vec<ReplicaId> = (0..200).map(|_| ReplicaId::random()).collect();
    let changes_total = ops.div_ceil(FIELDS);
    let fresh = changes_total * 4 / 5;
    let fields: Vec<FieldPath> =
        (0..FIELDS).filter_map(|i| FieldPath::parse(&format!("section{}/q{i}", i / 10)).ok()).collect();
    let mut changes = Vec::with_capacity(changes_total);
    let base_ms = 1_800_000_000_000u64;
    for i in 0..fresh {
        let replica = replicas[i % replicas.len()];
        changes.push(Change {
            doc: DocId::new(),
            collection: Collection::Submission,
            replica,
            hlc: Hlc::new(base_ms + i as u64, 0),
            ops: fields.iter().map(|f| FieldOp { field: f.clone(), value: json!(i), seen: vec![] }).collect(),
        });
    }
    for j in 0..changes_total - fresh {
        let original = &changes[j % fresh.max(1)];
        let seen = vec![original.op_id()];
        let (doc, replica) = (original.doc, replicas[(j + 7) % replicas.len()]);
        changes.push(Change {
            doc,
            collection: Collection::Submission,
            replica,
            hlc: Hlc::new(base_ms + (fresh + j) as u64, 1),
            ops: fields
                .iter()
                .map(|f| FieldOp { field: f.clone(), value: json!(j), seen: seen.clone() })
                .collect(),
        });
    }
    changes
}

fn merge(dir: &tempfile::TempDir, ops: usize) -> Result<(), String> {
    let changes = remote_changes(ops);
    let total_ops: usize = changes.iter().map(|c| c.ops.len()).sum();

    let conn = baseline_conn(&dir.path().join("merge-baseline.db"))?;
    let t = Instant::now();
    {
        let tx = conn.unchecked_transaction().map_err(|e| e.to_string())?;
        let mut stmt =
            tx.prepare("INSERT INTO plain VALUES (?1, ?2, ?3, ?4, ?5)").map_err(|e| e.to_string())?;
        let mut buf = String::new();
        for c in &changes {
            let id: OpId = c.op_id();
            for op in &c.ops {
                buf.clear();
                buf.push_str(&op.value.to_string());
                stmt.execute(params![
                    c.doc.0.as_bytes().as_slice(),
                    op.field.as_str(),
                    (id.hlc.0 ^ (1 << 63)) as i64,
                    id.replica.0.as_bytes().as_slice(),
                    buf
                ])
                .map_err(|e| e.to_string())?;
            }
        }
        drop(stmt);
        tx.commit().map_err(|e| e.to_string())?;
    }
    let baseline_s = t.elapsed().as_secs_f64();

    let ours_s = time_merge(&open_store(dir.path().join("merge.db"), false)?, &changes, total_ops)?;
    let encrypted_s =
        time_merge(&open_store(dir.path().join("merge-encrypted.db"), true)?, &changes, total_ops)?;
    let (ours_rate, base_rate) = (total_ops as f64 / ours_s, total_ops as f64 / baseline_s);
    report("store.merge_ops", total_ops as f64, "ops");
    report("store.merge_ops_per_s", ours_rate, "ops/s");
    report("store.merge_baseline_rows_per_s", base_rate, "rows/s");
    // Target: at least 0.5.
    report_ratio("store.merge_ops_per_s", ours_rate / base_rate);
    let encrypted_rate = total_ops as f64 / encrypted_s;
    report("store.encrypted.merge_ops_per_s", encrypted_rate, "ops/s");
    // Against the unencrypted store in this run. Target: at least 0.7.
    report_ratio("store.encrypted.merge_ops_per_s", encrypted_rate / ours_rate);
    Ok(())
}

/// Seconds to merge `changes` in pull pages of 500.
fn time_merge(store: &Store, changes: &[Change], total_ops: usize) -> Result<f64, String> {
    let t = Instant::now();
    let mut new_ops = 0;
    for page in changes.chunks(500) {
        new_ops += store.apply_remote(page).map_err(|e| e.to_string())?.new_ops;
    }
    let took = t.elapsed().as_secs_f64();
    if new_ops != total_ops {
        return Err(format!("merged {new_ops} new ops, expected {total_ops}"));
    }
    Ok(took)
}
