//! `tejido-bench forms [--fixtures DIR] [--iterations N]`: import time of the largest fixture
//! form; on a generated 500-question form, the p99 time to set one answer and re-evaluate
//! incrementally, beside a full re-evaluation of the same form in the same run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use tejido_core::form::synthetic::generated_form;
use tejido_core::form::{import_xlsform, Engine};

use crate::{report, report_ratio};

fn largest_fixture(dir: &Path) -> Result<PathBuf, String> {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| format!("cannot read {}: {e}", d.display()))?;
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "xlsx" || e == "xls" || e == "ods") {
                let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                if best.as_ref().is_none_or(|(b, _)| len > *b) {
                    best = Some((len, p));
                }
            }
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| format!("no XLSForm under {}", dir.display()))
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/forms");
    let mut iterations = 2000usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--fixtures" => fixtures = it.next().ok_or("--fixtures needs a folder")?.into(),
            "--iterations" => {
                iterations = it.next().and_then(|v| v.parse().ok()).ok_or("--iterations needs a number")?
            }
            other => return Err(format!("unknown option {other}")),
        }
    }

    // Import of the largest fixture: the median of five runs.
    let file = largest_fixture(&fixtures)?;
    let mut imports = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        import_xlsform(&file).map_err(|e| format!("{} does not import:\n{e}", file.display()))?;
        imports.push(ms(t.elapsed()));
    }
    imports.sort_by(f64::total_cmp);
    report("forms.import_largest_fixture", percentile(&imports, 0.5), "ms");

    // A 500-question form: one answer at a time, incremental re-evaluation.
    let form = generated_form(500);
    let mut engine = Engine::new(&form).map_err(|e| e.to_string())?;
    engine.load(&[], &|_| Vec::new());
    let sections = form.nodes.iter().filter(|n| n.name.ends_with("_sum")).count() as u64;
    let mut state: u64 = 0x2545f4914f6cdd1d;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let q = format!("s{}_n{}", next(sections), next(6));
        let v = json!(next(20));
        let t = Instant::now();
        engine.set_answer(&q, &v).map_err(|e| e.to_string())?;
        times.push(ms(t.elapsed()));
    }
    times.sort_by(f64::total_cmp);
    let p99 = percentile(&times, 0.99);
    report("forms.set_answer_p99", p99, "ms");

    // The same form re-evaluated in full: the median of 50 runs.
    let mut full = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let _ = engine.recompute_all();
        full.push(ms(t.elapsed()));
    }
    full.sort_by(f64::total_cmp);
    let full_ms = percentile(&full, 0.5);
    report("forms.full_reevaluation", full_ms, "ms");
    report_ratio("forms.set_answer_p99", p99 / full_ms);
    Ok(())
}
