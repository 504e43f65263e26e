//! The benchmarks run scaled down, so their code cannot rot between benchmark runs. No timing is
//! asserted here: figures are for `tejido-bench`, in release mode.

#[test]
fn the_store_benchmark_runs_scaled_down() {
    let args: Vec<String> = ["--ops", "20000", "--writes", "300"].iter().map(|s| s.to_string()).collect();
    tejido_tests::bench_store::run(&args).expect("the store benchmark runs");
}
