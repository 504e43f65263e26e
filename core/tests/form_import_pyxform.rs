//! What the forms pyxform accepts mean once imported: legacy spellings, `or_other`, loops,
//! metadata, nameless notes, names reused in other groups, entities, choice duplicates. (That
//! they import at all is `form_pyxform_diff`; this is what comes out.)
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::json;
use tejido_core::form::{import_xlsform, Form, FormSession, QuestionType};
use tejido_core::Store;

fn form(name: &str) -> Form {
    let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/forms/pyxform").join(name);
    import_xlsform(&p).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn refused(name: &str) -> String {
    let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/forms/pyxform").join(name);
    let e = import_xlsform(&p).unwrap_err();
    assert!(e.0.iter().all(|x| x.row > 0), "{name}: {e}");
    e.to_string()
}

#[test]
fn legacy_select_spellings_and_or_other() {
    let f = form("legacy_selects.xlsx");
    let kind = |n: &str| f.node(n).unwrap().kind;
    assert_eq!(kind("q1"), QuestionType::SelectOne);
    assert_eq!(kind("q2"), QuestionType::SelectMultiple);
    assert_eq!(kind("q3"), QuestionType::SelectOne);
    assert_eq!(kind("q5"), QuestionType::SelectMultiple);
    assert_eq!(f.node("q1").unwrap().list.as_deref(), Some("yes_no"));
    // `or specify other`: an "other" choice, once, and a text question shown when it is picked.
    let names: Vec<&str> = f.choice_lists["yes_no"].iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["yes", "no", "other"]);
    for q in ["q3", "q4", "q5", "q6"] {
        let other = f.node(&format!("{q}_other")).unwrap();
        assert_eq!(other.kind, QuestionType::Text);
        assert_eq!(other.relevant.as_deref(), Some(format!("selected(${{{q}}}, 'other')").as_str()));
    }
    assert!(f.node("q1_other").is_none());
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission(&f.settings.form_id, &f.settings.version).unwrap();
    let mut s = FormSession::open(&store, &f, doc).unwrap();
    let shown = |s: &FormSession<'_>| s.visible_questions(None).into_iter().any(|q| q.name == "q3_other");
    assert!(!shown(&s));
    s.set_answer("q3", json!("other")).unwrap();
    assert!(shown(&s));
}

#[test]
fn a_loop_is_a_group_per_choice() {
    let f = form("legacy_loop.xlsx");
    let paths: Vec<&str> = f.nodes.iter().map(|n| n.path.as_str()).collect();
    assert!(paths.starts_with(&[
        "per_answer",
        "per_answer/yes",
        "per_answer/yes/count",
        "per_answer/no",
        "per_answer/no/count"
    ]));
    assert_eq!(f.node_at("per_answer/no").unwrap().label["default"], "No");
    assert_eq!(f.node_at("per_answer/yes").unwrap().kind, QuestionType::Group);
    // `count` is in both groups: reached by its path.
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission(&f.settings.form_id, &f.settings.version).unwrap();
    let mut s = FormSession::open(&store, &f, doc).unwrap();
    s.set_answer("per_answer/no/count", json!("3")).unwrap();
    assert_eq!(s.value("per_answer/no/count").unwrap(), json!(3));
    assert!(s.set_answer("count", json!("1")).is_err(), "an ambiguous name names no question");
}

#[test]
fn metadata_types_and_their_uri_forms() {
    let f = form("metadata.xlsx");
    let kind = |n: &str| f.node(n).unwrap().kind;
    assert_eq!(kind("simserial"), QuestionType::SimSerial);
    assert_eq!(kind("subscriberid"), QuestionType::SubscriberId);
    assert_eq!(kind("audit"), QuestionType::Audit);
    assert_eq!(kind("imei"), QuestionType::DeviceId);
    assert_eq!(kind("uri_email"), QuestionType::Email);
    assert!(f.node("uri_email").unwrap().uri && !f.node("email").unwrap().uri);
    // `phone number` is pyxform's old name of a text question, not the device's number.
    assert_eq!(kind("contact_phone"), QuestionType::Text);
    for n in ["start", "end", "today", "deviceid", "simserial", "audit", "uri_deviceid"] {
        assert!(f.node(n).unwrap().kind.is_metadata(), "{n}");
    }
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission(&f.settings.form_id, &f.settings.version).unwrap();
    let s = FormSession::open(&store, &f, doc).unwrap();
    let device = s.value("deviceid").unwrap();
    let uri = s.value("uri_deviceid").unwrap();
    assert_eq!(uri, json!(format!("uuid:{}", device.as_str().unwrap())));
    assert_eq!(roundtrip(&f), f);
}

fn roundtrip(f: &Form) -> Form {
    Form::from_json(&f.to_json()).unwrap()
}

#[test]
fn nameless_notes_sheet1_duplicates_entities_and_form_ids() {
    let f = form("nameless_notes.xlsx");
    assert_eq!(f.node("generated_note_name_2").unwrap().kind, QuestionType::Note);
    assert_eq!(f.node("generated_note_name_4").unwrap().label["default"], "Thank you");
    let f = form("lone_sheet1.xlsx");
    assert!(f.node("a").is_some() && f.node("b").is_some());
    let f = form("choice_duplicates.xlsx");
    assert_eq!(f.choice_lists["l"].len(), 3);
    let f = form("group_child_group_name.xlsx");
    assert_eq!(f.node_at("household/household").unwrap().kind, QuestionType::Integer);
    let f = form("entities.xlsx");
    assert_eq!(f.entities.len(), 1);
    assert_eq!(f.entities[0].list_name, "trees");
    assert_eq!(f.entities[0].columns["label"], "${tree_name}");
    assert_eq!(roundtrip(&f), f);
    let f = form("form_id_values.xlsx");
    assert_eq!(f.settings.form_id, "2024 household survey");
    let f = form("comment_rows.xlsx");
    assert_eq!(f.nodes.iter().filter(|n| n.kind.is_shown() && !n.kind.is_container()).count(), 2);
}

#[test]
fn what_pyxform_refuses_is_refused_on_its_row() {
    assert!(
        refused("refused_ambiguous_reference.xlsx").contains("row 8, column relevant: ${age} is ambiguous")
    );
    assert!(refused("refused_duplicate_header.xlsx").contains("row 1, column label"));
    assert!(refused("refused_audit_name.xlsx").contains("row 2"));
    assert!(refused("refused_unclosed_loop.xlsx").contains("row 2"));
    assert!(refused("refused_loop_without_list.xlsx").contains("row 2, column type: the choice list nowhere"));
    assert!(refused("refused_uri_text.xlsx").contains("row 2"));
    assert!(refused("refused_end_loop_closes_group.xlsx").contains("row 4"));
    assert!(refused("refused_choice_duplicates.xlsx").contains("allow_choice_duplicates"));
    assert!(refused("refused_duplicate_name.xlsx").contains("row 3"));
}

#[test]
fn version_gives_the_forms_version() {
    let mut f = form("form_id_values.xlsx");
    let mut calc = tejido_core::form::Node::new("v", "v", QuestionType::Calculate, None);
    calc.calculation = Some("concat('v', version())".into());
    f.nodes.push(calc);
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission(&f.settings.form_id, &f.settings.version).unwrap();
    let s = FormSession::open(&store, &f, doc).unwrap();
    assert_eq!(s.value("v").unwrap(), json!("v1"));
}
