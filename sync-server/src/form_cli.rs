//! `tejido-server form check|preview`: checking and previewing XLSForms from the command line.
//! The reports are built by `tejido_core::form::report`; this module only prints them.

use std::io::Write as _;
use std::path::Path;

/// Prints a line; a closed stdout (`tejido-server form check … | head`) is not a failure.
macro_rules! out {
    ($($t:tt)*) => {{ let _ = writeln!(std::io::stdout(), $($t)*); }};
}
/// The same for stderr.
macro_rules! eout {
    ($($t:tt)*) => {{ let _ = writeln!(std::io::stderr(), $($t)*); }};
}

use tejido_core::form::report::{preview as preview_form, summarize, ImportErrorReport};
use tejido_core::form::{import_xlsform, Form};

fn import(file: &Path, json: bool) -> Result<Form, i32> {
    import_xlsform(file).map_err(|errors| {
        if json {
            let list: Vec<ImportErrorReport> = errors.0.iter().map(ImportErrorReport::from).collect();
            out!("{}", serde_json::json!({ "ok": false, "errors": list }));
        } else {
            eout!("{}: {} error(s)", file.display(), errors.0.len());
            eout!("{errors}");
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
        out!("{}", serde_json::json!({ "ok": true, "summary": summary }));
    } else {
        out!("{summary}");
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
            eout!("cannot read {}: {e}", answers.display());
            return 1;
        }
    };
    let values: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eout!("{} is not valid JSON (line {}, column {})", answers.display(), e.line(), e.column());
            return 1;
        }
    };
    match preview_form(&form, &values, lang) {
        Ok(p) => {
            if json {
                match serde_json::to_string_pretty(&p) {
                    Ok(s) => out!("{s}"),
                    Err(e) => {
                        eout!("cannot print the preview: {e}");
                        return 1;
                    }
                }
            } else {
                let _ = write!(std::io::stdout(), "{p}");
            }
            0
        }
        Err(e) => {
            eout!("{e}");
            1
        }
    }
}
