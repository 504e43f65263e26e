//! `tejido-bench sync`, scaled down, so it cannot rot.

#[test]
fn the_sync_benchmark_runs_scaled_down() {
    let args: Vec<String> =
        ["--submissions", "120", "--devices", "6", "--fields", "20"].iter().map(|s| s.to_string()).collect();
    tejido_tests::bench_sync::run(&args).expect("the benchmark runs");
}

#[test]
fn the_sync_benchmark_refuses_bad_options() {
    let bad =
        |a: &[&str]| tejido_tests::bench_sync::run(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert!(bad(&["--submissions"]).is_err());
    assert!(bad(&["--devices", "zero"]).is_err());
    assert!(bad(&["--devices", "0"]).is_err());
    assert!(bad(&["--frobnicate", "1"]).is_err());
}
