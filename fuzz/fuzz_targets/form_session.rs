//! A form session on an imported form, driven by the input: the first byte picks one of the
//! example and fixture forms, the rest is a script of answers (of the question's type and of
//! every other), repeat rows added and removed, language changes, error listings and finalize.
//! Nothing may panic or run unbounded; a form that imported must open a session.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value as Json};
use tejido_core::form::{import_xlsform, Engine, Form, FormSession, QuestionType, QuestionView};
use tejido_core::Store;

/// Every form in `examples/forms/` and the shared fixtures that imports and compiles, sorted by
/// file name so that a byte picks the same form on every machine.
fn forms() -> &'static [Form] {
    static FORMS: OnceLock<Vec<Form>> = OnceLock::new();
    FORMS.get_or_init(|| {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<PathBuf> = Vec::new();
        for dir in [
            here.join("../examples/forms"),
            here.join("../../shared/fixtures/forms/odk-web-forms"),
            here.join("../../shared/fixtures/forms/pyxform-xls"),
        ] {
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries.flatten() {
                let p = entry.path();
                if matches!(p.extension().and_then(|e| e.to_str()), Some("xlsx" | "xls")) {
                    files.push(p);
                }
            }
        }
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        let forms: Vec<Form> =
            files.iter().filter_map(|p| import_xlsform(p).ok()).filter(|f| Engine::new(f).is_ok()).collect();
        assert!(forms.len() >= 10, "only {} fixture forms import", forms.len());
        forms
    })
}

/// The input, read a byte or a few at a time; zeros once it runs out.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn done(&self) -> bool {
        self.0.is_empty()
    }
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map(|(b, r)| (*b, r)).unwrap_or((0, &[]));
        self.0 = rest;
        first
    }
    fn pick(&mut self, len: usize) -> usize {
        if len == 0 {
            0
        } else {
            usize::from(u16::from_le_bytes([self.byte(), self.byte()])) % len
        }
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for (i, x) in self.bytes(8).iter().enumerate() {
            b[i] = *x;
        }
        u64::from_le_bytes(b)
    }
    fn text(&mut self) -> String {
        let n = usize::from(self.byte() % 48);
        String::from_utf8_lossy(self.bytes(n)).into_owned()
    }
}

/// An answer for `q`: usually of its type (a choice, a number, a date), sometimes anything.
fn answer(s: &mut Script, q: &QuestionView) -> Json {
    match s.byte() % 12 {
        0 => Json::Null,
        1 | 2 if !q.choices.is_empty() => json!(q.choices[s.pick(q.choices.len())].name),
        3 if !q.choices.is_empty() => {
            let a = &q.choices[s.pick(q.choices.len())].name;
            let b = &q.choices[s.pick(q.choices.len())].name;
            json!([a, b])
        }
        4 => json!(s.u64() as i64 % 1000),
        5 => json!(s.u64() as i64),
        6 => serde_json::Number::from_f64(f64::from_bits(s.u64())).map(Json::Number).unwrap_or(Json::Null),
        7 => {
            let (y, m, d) = (1900 + u32::from(s.byte()), 1 + s.byte() % 13, 1 + s.byte() % 32);
            json!(format!("{y:04}-{m:02}-{d:02}"))
        }
        8 => {
            let (h, m) = (s.byte() % 25, s.byte() % 61);
            json!(format!("2024-05-15T{h:02}:{m:02}:00.000-05:00"))
        }
        9 => {
            let (lat, lon) = (i32::from(s.byte() as i8), i32::from(s.byte() as i8) * 2);
            json!(format!("{lat}.5 {lon}.25 12 5"))
        }
        10 => json!(s.byte() % 2 == 0),
        _ => json!(s.text()),
    }
}

/// The repeats the session can take a row path for: each repeat by name, and each nested
/// repeat under the rows of the repeats around it, as visible question paths show them.
fn repeat_paths(form: &Form, views: &[QuestionView]) -> Vec<String> {
    let repeats: Vec<&str> =
        form.nodes.iter().filter(|n| n.kind == QuestionType::Repeat).map(|n| n.name.as_str()).collect();
    let mut out: Vec<String> = repeats.iter().map(|r| r.to_string()).collect();
    for v in views {
        let segments: Vec<&str> = v.path.split('/').collect();
        for end in 1..segments.len() {
            if repeats.contains(&segments[end - 1]) || !repeats.contains(&segments[end]) {
                continue;
            }
            let prefix = segments[..=end].join("/");
            if !out.contains(&prefix) {
                out.push(prefix);
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let forms = forms();
    let mut s = Script(data);
    let form = &forms[usize::from(s.byte()) % forms.len()];
    let store = Store::open_in_memory().expect("an in-memory store opens");
    let doc = store.start_submission(&form.settings.form_id, &form.settings.version).expect("a draft starts");
    let mut session = FormSession::open(&store, form, doc).expect("a form that compiles opens a session");
    let mut lang: Option<&str> = None;
    let mut steps = 0;
    while !s.done() && steps < 200 {
        steps += 1;
        match s.byte() % 10 {
            0..=3 => {
                let views = session.visible_questions(lang);
                if views.is_empty() {
                    continue;
                }
                let q = &views[s.pick(views.len())];
                let value = answer(&mut s, q);
                let _ = session.set_answer(&q.path, value);
            }
            4 => {
                // Any question by name, with anything: hidden, read-only and unknown ones too.
                let name = match s.byte() % 4 {
                    0 => s.text(),
                    _ => form.nodes[s.pick(form.nodes.len())].name.clone(),
                };
                let view = QuestionView {
                    path: name.clone(),
                    name: name.clone(),
                    kind: QuestionType::Text,
                    label: String::new(),
                    hint: None,
                    value: Json::Null,
                    required: false,
                    read_only: false,
                    choices: Vec::new(),
                    error: None,
                };
                let value = answer(&mut s, &view);
                let _ = session.set_answer(&name, value);
                let _ = session.value(&name);
            }
            5 => {
                let paths = repeat_paths(form, &session.visible_questions(lang));
                if !paths.is_empty() {
                    let _ = session.add_repeat_row(&paths[s.pick(paths.len())]);
                }
            }
            6 => {
                let paths = repeat_paths(form, &session.visible_questions(lang));
                if !paths.is_empty() {
                    let path = &paths[s.pick(paths.len())];
                    if let Ok(rows) = session.repeat_rows(path) {
                        if !rows.is_empty() {
                            let row = rows[s.pick(rows.len())];
                            let _ = session.remove_repeat_row(path, row);
                        }
                    }
                }
            }
            7 => {
                let i = s.pick(form.languages.len() + 1);
                lang = form.languages.get(i).map(String::as_str);
            }
            8 => {
                let _ = session.errors(lang);
            }
            _ => {
                let _ = session.finalize();
            }
        }
    }
    let _ = session.visible_questions(lang);
    let _ = session.errors(lang);
    let _ = session.engine().calculated_values();
});
