//! pyxform as the oracle: every form of the corpus goes through pyxform 4.5.0 (the reference
//! XLSForm converter, installed by `scripts/setup` into `.venv-pyxform`) and through Tejido's
//! importer. A form pyxform accepts, Tejido accepts, unless it is listed in `docs/forms.md`
//! (section "Forms pyxform accepts and Tejido refuses") with its reason; a form pyxform
//! refuses, Tejido refuses too, with an error that names a row.
//!
//! The corpus: `../shared/fixtures/forms/` (with pyxform's legacy `.xls` examples),
//! `examples/forms/`, and the small forms under `core/tests/forms/pyxform/`, one per feature.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tejido_core::form::import_xlsform;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `xls2xform` from `TEJIDO_XLS2XFORM`, or from the virtual environment `scripts/setup` makes.
fn xls2xform() -> PathBuf {
    let path = std::env::var_os("TEJIDO_XLS2XFORM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv-pyxform/bin/xls2xform"));
    let works = Command::new(&path).arg("--help").output().is_ok_and(|o| o.status.success());
    assert!(
        works,
        "pyxform's xls2xform is not at {}: run scripts/setup (it installs pyxform 4.5.0 into \
         .venv-pyxform), or point TEJIDO_XLS2XFORM at an xls2xform",
        path.display()
    );
    path
}

/// Every spreadsheet under the corpus folders, named relative to its folder's parent.
fn corpus() -> Vec<(String, PathBuf)> {
    let roots = [
        (String::new(), workspace().join("../shared/fixtures/forms")),
        ("examples/forms".to_owned(), workspace().join("examples/forms")),
        ("core/tests/forms/pyxform".to_owned(), workspace().join("core/tests/forms/pyxform")),
    ];
    let mut out = Vec::new();
    for (prefix, root) in roots {
        let mut dirs = vec![root.clone()];
        let mut found = 0;
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    ["xlsx", "xls", "xlsm", "ods"].contains(&e.to_ascii_lowercase().as_str())
                }) {
                    let rel = p.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
                    let name = if prefix.is_empty() { rel } else { format!("{prefix}/{rel}") };
                    out.push((name, p));
                    found += 1;
                }
            }
        }
        assert!(found > 0, "no forms under {}", root.display());
    }
    out.sort();
    out
}

/// The forms `docs/forms.md` lists as accepted by pyxform and refused by Tejido, with the
/// reason given there: lines `` - `name`: reason `` in the section of that name.
fn listed_exceptions() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(workspace().join("docs/forms.md")).unwrap();
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in doc.lines() {
        if line.starts_with("## ") {
            inside = line.trim() == "## Forms pyxform accepts and Tejido refuses";
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(rest) = line.strip_prefix("- `") {
            let (name, reason) = rest.split_once('`').unwrap();
            let reason = reason.trim_start_matches(':').trim();
            assert!(!reason.is_empty(), "docs/forms.md lists {name} without a reason");
            out.insert(name.to_owned(), reason.to_owned());
        }
    }
    out
}

/// pyxform's verdict: `Ok(())`, or its message.
fn pyxform(bin: &Path, form: &Path, out_dir: &Path) -> Result<(), String> {
    let out_file = out_dir.join(format!("{}.xml", form.file_name().unwrap().to_string_lossy()));
    let output = Command::new(bin)
        .arg("--skip_validate")
        .arg("--json")
        .arg(form)
        .arg(&out_file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    // xls2xform writes its JSON verdict to stderr.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let json: serde_json::Value =
        stderr.lines().chain(stdout.lines()).rev().find_map(|l| serde_json::from_str(l).ok()).unwrap_or_else(
            || panic!("xls2xform gave no JSON verdict for {}: {stdout} {stderr}", form.display()),
        );
    match json["code"].as_i64() {
        // 100: "Ok!", 101: "Ok with warnings."; 999: refused.
        Some(100 | 101) => Ok(()),
        _ => Err(json["message"].as_str().unwrap_or("").to_owned()),
    }
}

#[test]
fn tejido_accepts_what_pyxform_accepts_and_refuses_what_it_refuses() {
    let bin = xls2xform();
    let forms = corpus();
    let exceptions = listed_exceptions();
    let out_dir = tempfile::tempdir().unwrap();
    // pyxform takes a fraction of a second a form, mostly starting Python: run it on two threads.
    let verdicts: Vec<Result<(), String>> = std::thread::scope(|s| {
        let chunks: Vec<_> = forms.chunks(forms.len().div_ceil(2).max(1)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let (bin, dir) = (&bin, out_dir.path());
                s.spawn(move || chunk.iter().map(|(_, p)| pyxform(bin, p, dir)).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let (mut both_accept, mut both_refuse, mut excepted) = (0, 0, 0);
    let mut failures = Vec::new();
    for ((name, path), verdict) in forms.iter().zip(verdicts) {
        let tejido = import_xlsform(path);
        match (verdict, tejido) {
            (Ok(()), Ok(_)) => {
                both_accept += 1;
                if exceptions.contains_key(name) {
                    failures.push(format!(
                        "{name}: listed in docs/forms.md as refused, but Tejido accepts it (remove it from the list)"
                    ));
                }
            }
            (Ok(()), Err(e)) => match exceptions.get(name) {
                Some(reason) => {
                    excepted += 1;
                    println!("listed exception {name}: {reason}\n    Tejido: {}", e.0[0]);
                }
                None => failures.push(format!("{name}: pyxform accepts it, Tejido refuses it:\n    {e}")),
            },
            (Err(p), Ok(_)) => failures.push(format!("{name}: pyxform refuses it ({p}), Tejido accepts it")),
            (Err(p), Err(e)) => {
                if exceptions.contains_key(name) {
                    failures.push(format!("{name}: listed in docs/forms.md, but pyxform refuses it too"));
                }
                if e.0.iter().any(|x| x.row > 0) {
                    both_refuse += 1;
                } else {
                    failures.push(format!(
                        "{name}: both refuse it, but Tejido names no row:\n    pyxform: {p}\n    Tejido: {e}"
                    ));
                }
            }
        }
    }
    println!(
        "{} forms: accepted by both {both_accept}, refused by both {both_refuse}, listed exceptions {excepted}",
        forms.len()
    );
    for name in exceptions.keys() {
        if !forms.iter().any(|(n, _)| n == name) {
            failures.push(format!("docs/forms.md lists {name}, which is not in the corpus"));
        }
    }
    assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.join("\n"));
}
