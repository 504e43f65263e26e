//! `tejido-bench sync`, scaled down, so it cannot rot.

#[test]
fn the_sync_benchmark_runs_scaled_down() {
    let args: Vec<String> =
        ["--submissions", "120", "--devices", "6", "--fields", "20"].iter().map(|s| s.to_string()).collect();
    tejido_tests::bench_sync::run(&args).expect("the benchmark runs");
}

/// The PostgreSQL path (throwaway cluster, COPY baseline, two server processes), scaled down.
#[test]
fn the_sync_benchmark_runs_scaled_down_on_postgres() {
    let args: Vec<String> =
        ["--backend", "postgres", "--submissions", "120", "--devices", "6", "--fields", "20"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    tejido_tests::bench_sync::run(&args).expect("the benchmark runs on PostgreSQL");
}

#[test]
fn the_sync_benchmark_refuses_bad_options() {
    let bad =
        |a: &[&str]| tejido_tests::bench_sync::run(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert!(bad(&["--submissions"]).is_err());
    assert!(bad(&["--devices", "zero"]).is_err());
    assert!(bad(&["--devices", "0"]).is_err());
    assert!(bad(&["--frobnicate", "1"]).is_err());
    assert!(bad(&["--backend", "oracle"]).is_err());
    assert!(bad(&["--database", "mysql://localhost/x"]).is_err());
}
