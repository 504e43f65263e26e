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
