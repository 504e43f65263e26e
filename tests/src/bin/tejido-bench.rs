//! Tejido's benchmarks: `tejido-bench store|forms|sync|web|export [options]`. Each prints one line per
//! figure, `<group>.<metric> = <value> <unit>`, and `<group>.<metric>.ratio = <r>` against a
//! baseline measured in the same run.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(group) = args.first() else {
        eprintln!("usage: tejido-bench store|forms|sync|web|export [options]");
        std::process::exit(2);
    };
    let rest = &args[1..];
    let result = match group.as_str() {
        "store" => tejido_tests::bench_store::run(rest),
        "forms" => tejido_tests::bench_forms::run(rest),
        "sync" => tejido_tests::bench_sync::run(rest),
        "web" => tejido_tests::bench_web::run(rest),
        "export" => tejido_tests::bench_export::run(rest),
        other => {
            Err(format!("unknown benchmark group {other:?}; expected store, forms, sync, web or export"))
        }
    };
    if let Err(e) = result {
        eprintln!("tejido-bench: {e}");
        std::process::exit(1);
    }
}
