//! `tejido-server form check|preview`: checking and previewing XLSForms from the command line.
//! (Filled by the forms work.)

use std::path::Path;

/// `form check FILE`: exit 0 with a summary, or 1 with every error.
pub fn check(_file: &Path, _json: bool) -> i32 {
    eprintln!("form check is not built yet");
    2
}

/// `form preview FILE --answers ANSWERS.json [--lang CODE] [--json]`.
pub fn preview(_file: &Path, _answers: &Path, _lang: Option<&str>, _json: bool) -> i32 {
    eprintln!("form preview is not built yet");
    2
}
