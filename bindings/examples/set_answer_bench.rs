//! The Rust side of `scripts/bench-bindings`: sets N answers through the same `TejidoStore`
//! methods the apps call, without crossing a foreign boundary, and prints answers per second.
//! Usage: set_answer_bench DIR [N]

use std::time::Instant;

use tejido_ffi::{AnswerValue, TejidoStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: set_answer_bench DIR [N]")?;
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let store = TejidoStore::open(format!("{dir}/rust-bench.db"))?;
    let sub = store.start_submission("bench".into(), "1".into())?;
    let start = Instant::now();
    for i in 0..n {
        store.set_answer(sub.clone(), format!("q{}", i % 100), AnswerValue::Integer { value: i as i64 })?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("ffi.rust.set_answer_per_s = {:.0} answers/s", n as f64 / secs);
    Ok(())
}
