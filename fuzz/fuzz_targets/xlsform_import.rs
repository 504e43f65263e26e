//! Any bytes as an XLSForm workbook (.xlsx, .xls or .ods, detected from the bytes): the importer
//! gives a form or errors, never a panic, an abort or an unbounded cost; a form it gives passes
//! validation and compiles into an engine.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use tejido_core::form::{import_xlsform_bytes, Engine};

/// libFuzzer's panic hook aborts on every panic, even one that is caught. The importer runs the
/// spreadsheet parser (calamine, whose .xls and zip readers panic on some broken files) under
/// `catch_unwind` by design and turns its panics into an import error, so here a panic counts
/// only when it escapes `import_xlsform_bytes`: libfuzzer-sys aborts on a panic that reaches it.
fn count_only_escaping_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            eprintln!("panic (caught by the importer unless the run stops here): {info}");
        }));
    });
}

fuzz_target!(|bytes: &[u8]| {
    count_only_escaping_panics();
    // No extension: the format is detected, so one corpus exercises every reader.
    let Ok(form) = import_xlsform_bytes(bytes, "fuzzed") else { return };
    if let Err(e) = form.validate() {
        panic!("the importer gave a form that does not validate: {e}");
    }
    if let Err(e) = Engine::new(&form) {
        panic!("the importer gave a form the engine refuses: {e}");
    }
    let json = serde_json::to_string(&form).expect("a form serializes");
    let _: tejido_core::form::Form = serde_json::from_str(&json).expect("a form's JSON parses back");
});
