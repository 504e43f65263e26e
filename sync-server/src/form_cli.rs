//! `tejido-server form check|preview`: checking and previewing XLSForms from the command line.
//! The reports are built by `tejido_core::form::report`; this module only prints them.

use std::path::Path;

use tejido_core::form::report::{preview as preview_form, summarize, ImportErrorReport};
use tejido_core::form::{import_xlsform, Form};

fn import(file: &Path, json: bool) -> Result<Form, i32> {
    import_xlsform(file).map_err(|errors| {
        if json {
            let list: Vec<ImportErrorReport> = errors.0.iter().map(ImportErrorReport::from).collect();
            println!("{}", serde_json::json!({ "ok": false, "errors": list }));
        } else {
            eprintln!("{}: {} error(s)", file.display(), errors.0.len());
            eprintln!("{errors}");
        }
        1
    })
}

/// `form check FILE`: exit 0 with a summary, or 1 with every error.
pub fn check(file: &Path, json: bool) -> i32 {
    let form = match import(file, json) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let summary = summarize(&form);
    if json {
        println!("{}", serde_json::json!({ "ok": true, "summary": summary }));
    } else {
        println!("{summary}");
    }
    0
}

/// `form preview FILE --answers ANSWERS.json [--lang CODE] [--json]`: the visible questions,
/// calculated values and errors for those answers.
pub fn preview(file: &Path, answers: &Path, lang: Option<&str>, json: bool) -> i32 {
    let form = match import(file, json) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let text = match std::fs::read_to_string(answers) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {}: {e}", answers.display());
            return 1;
        }
    };
    let values: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{} is not valid JSON (line {}, column {})", answers.display(), e.line(), e.column());
            return 1;
        }
    };
    match preview_form(&form, &values, lang) {
        Ok(p) => {
            if json {
                match serde_json::to_string_pretty(&p) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("cannot print the preview: {e}");
                        return 1;
                    }
                }
            } else {
                print!("{p}");
            }
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
