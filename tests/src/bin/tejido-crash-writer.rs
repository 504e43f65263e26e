//! A writer for the crash test: opens a store and writes answers forever, three fields per
//! transaction, printing `ready` once the store is open and `committed <i>` after each commit.
//! The test kills it with SIGKILL at random moments and checks what survived.

use std::io::Write;

use serde_json::json;
use tejido_core::{Collection, Store};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: tejido-crash-writer STORE");
        std::process::exit(2);
    };
    if let Err(e) = run(&path) {
        eprintln!("tejido-crash-writer: {e}");
        std::process::exit(1);
    }
}

fn run(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open(path)?;
    let doc = match store.list_documents(Collection::Entity)?.first() {
        Some(doc) => *doc,
        None => store.create_document(Collection::Entity, &[("kind", json!("crash-test"))])?,
    };
    let done = store.read_document(doc)?.fields.keys().filter(|f| f.as_str().ends_with("/a")).count();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for i in done.. {
        let (a, b, c) = (format!("q{i}/a"), format!("q{i}/b"), format!("q{i}/c"));
        store.set_fields(doc, &[(&a, json!(i)), (&b, json!(i)), (&c, json!(format!("answer {i}")))])?;
        if i % 7 == 0 {
            // Drafts and finalizing are killed mid-way too.
            let draft = store.start_submission("crash", "1")?;
            store.set_answer(draft, "n", json!(i))?;
            store.finalize(draft)?;
        }
        writeln!(out, "committed {i}")?;
        out.flush()?;
    }
    Ok(())
}
