//! Shared helpers for Tejido's end-to-end tests and benchmarks.
#![allow(clippy::unwrap_used)]

pub mod bench_export;
pub mod bench_forms;
pub mod bench_store;
pub mod bench_sync;
pub mod bench_web;
pub mod browser;
pub mod device;
pub mod proxy;
pub mod server;

/// One benchmark figure, printed as `<name> = <value> <unit>`.
pub fn report(name: &str, value: f64, unit: &str) {
    println!("{name} = {value:.3} {unit}");
}

/// A benchmark ratio against a baseline measured in the same run, printed as `<name>.ratio = <r>`.
pub fn report_ratio(name: &str, ratio: f64) {
    println!("{name}.ratio = {ratio:.3}");
}

/// CPU seconds (user and system) process `pid` has used so far, from `/proc/<pid>/stat`
/// (`std::process::id()` for this one). Linux reports them in USER_HZ, 100 per second.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of the whole line are 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// The whole machine's CPU time so far, from the first line of `/proc/stat`, in USER_HZ ticks:
/// (busy, all), busy being all but idle and iowait. Two readings give the share of every core
/// that was busy between them, whichever process (a local database included) used it.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let t: Vec<u64> = line.split_whitespace().take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let all: u64 = t.iter().sum();
    let idle = t.get(3)? + t.get(4)?;
    Some((all - idle, all))
}

/// The share (0 to 1) of all the machine's cores that was busy between two [`machine_ticks`].
pub fn busy_share(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((b0, a0), (b1, a1)) = (before?, after?);
    let all = a1.checked_sub(a0).filter(|&d| d > 0)?;
    Some(b1.saturating_sub(b0) as f64 / all as f64)
}

/// CPU seconds used so far by the live processes of a local PostgreSQL (named `postgres`):
/// the pooled connections' backends live as long as the servers, so two readings around a
/// push give the database's share of it. None when no such process runs here.
pub fn local_postgres_cpu_seconds() -> Option<f64> {
    let mut total = 0.0;
    let mut any = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let is_postgres =
            std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.trim() == "postgres");
        if let (true, Some(s)) = (is_postgres, cpu_seconds(pid)) {
            total += s;
            any = true;
        }
    }
    any.then_some(total)
}
