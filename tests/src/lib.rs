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
