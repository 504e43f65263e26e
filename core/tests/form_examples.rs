//! The demo forms in examples/forms import and behave as designed; the `form check` and
//! `form preview` reports work on them.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::json;
use tejido_core::form::report::{preview, summarize};
use tejido_core::form::{import_xlsform, Form, FormSession, ValidationKind};
use tejido_core::Store;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/forms").join(name)
}

fn victimization() -> Form {
    import_xlsform(&example("victimizacion_hogares.xlsx")).unwrap_or_else(|e| panic!("{e}"))
}

fn activity_log() -> Form {
    import_xlsform(&example("bitacora_red_juvenil.xlsx")).unwrap_or_else(|e| panic!("{e}"))
}

fn visible(s: &FormSession<'_>) -> Vec<String> {
    s.visible_questions(None).into_iter().map(|q| q.name).collect()
}

#[test]
fn both_demo_forms_import_in_spanish_and_english() {
    for form in [victimization(), activity_log()] {
        assert_eq!(form.languages, vec!["Español (es)".to_owned(), "English (en)".to_owned()]);
        assert_eq!(form.settings.default_language.as_deref(), Some("Español (es)"));
        for n in form.nodes.iter().filter(|n| n.kind.is_shown() && !n.kind.is_container()) {
            assert!(
                n.label.contains_key("Español (es)") && n.label.contains_key("English (en)"),
                "{}",
                n.name
            );
        }
    }
}

#[test]
fn the_domestic_violence_module_needs_consent_and_privacy() {
    let form = victimization();
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission(&form.settings.form_id, &form.settings.version).unwrap();
    let mut s = FormSession::open(&store, &form, doc).unwrap();
    assert!(!visible(&s).contains(&"district".to_owned()), "nothing before consent");
    s.set_answer("consent", json!("yes")).unwrap();
    assert!(visible(&s).contains(&"district".to_owned()));
    assert!(!visible(&s).contains(&"dv_consent".to_owned()));
    assert!(!visible(&s).contains(&"dv_physical".to_owned()));
    s.set_answer("respondent_alone", json!("no")).unwrap();
    assert!(!visible(&s).contains(&"dv_physical".to_owned()));
    s.set_answer("respondent_alone", json!("yes")).unwrap();
    assert!(visible(&s).contains(&"dv_consent".to_owned()));
    assert!(!visible(&s).contains(&"dv_physical".to_owned()));
    s.set_answer("dv_consent", json!("no")).unwrap();
    assert!(!visible(&s).contains(&"dv_physical".to_owned()));
    s.set_answer("dv_consent", json!("yes")).unwrap();
    assert!(visible(&s).contains(&"dv_physical".to_owned()));
    s.set_answer("dv_physical", json!("yes")).unwrap();
    assert!(visible(&s).contains(&"dv_help".to_owned()));
    // Someone walks in: the module disappears and its answers stay out of the submission.
    s.set_answer("respondent_alone", json!("no")).unwrap();
    assert!(!visible(&s).contains(&"dv_physical".to_owned()));
    assert!(!s.engine().keeps_field("survey/domestic_violence/dv_physical"));
}

#[test]
fn crime_follow_ups_appear_only_when_relevant() {
    let form = victimization();
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission(&form.settings.form_id, &form.settings.version).unwrap();
    let mut s = FormSession::open(&store, &form, doc).unwrap();
    s.set_answer("consent", json!("yes")).unwrap();
    s.set_answer("crimes", json!(["none"])).unwrap();
    assert!(!visible(&s).contains(&"crime_when".to_owned()));
    assert_eq!(s.value("victim").unwrap(), json!("0"));
    s.set_answer("crimes", json!("none theft")).unwrap();
    assert!(s.errors(Some("en")).iter().any(|e| e.name == "crimes" && e.message.contains("'None' cannot")));
    s.set_answer("crimes", json!(["theft", "extortion"])).unwrap();
    assert_eq!(s.value("victim").unwrap(), json!("1"));
    let v = visible(&s);
    assert!(v.contains(&"crime_when".to_owned()) && v.contains(&"reported".to_owned()));
    assert!(!v.contains(&"why_not_reported".to_owned()));
    let recent = s.visible_questions(Some("en")).into_iter().find(|q| q.name == "recent_crime").unwrap();
    assert_eq!(
        recent.choices.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        vec!["theft", "extortion"]
    );
    s.set_answer("reported", json!("no")).unwrap();
    assert!(visible(&s).contains(&"why_not_reported".to_owned()));
    assert!(!visible(&s).contains(&"why_not_other".to_owned()));
    s.set_answer("why_not_reported", json!(["fear", "other"])).unwrap();
    assert!(visible(&s).contains(&"why_not_other".to_owned()));
}

#[test]
fn corregimientos_cascade_from_the_district() {
    let form = victimization();
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission(&form.settings.form_id, &form.settings.version).unwrap();
    let mut s = FormSession::open(&store, &form, doc).unwrap();
    s.set_answer("consent", json!("yes")).unwrap();
    let corregimientos = |s: &FormSession<'_>| -> Vec<String> {
        s.visible_questions(None)
            .into_iter()
            .find(|q| q.name == "corregimiento")
            .unwrap()
            .choices
            .into_iter()
            .map(|c| c.label)
            .collect()
    };
    assert!(corregimientos(&s).is_empty());
    s.set_answer("district", json!("san_miguelito")).unwrap();
    let sm = corregimientos(&s);
    assert_eq!(sm.len(), 9);
    assert!(sm.contains(&"Belisario Porras".to_owned()) && !sm.contains(&"Burunga".to_owned()));
    s.set_answer("district", json!("arraijan")).unwrap();
    let ar = corregimientos(&s);
    assert!(ar.contains(&"Burunga".to_owned()) && !ar.contains(&"Belisario Porras".to_owned()));
    for d in ["panama", "la_chorrera"] {
        s.set_answer("district", json!(d)).unwrap();
        assert!(!corregimientos(&s).is_empty());
    }
}

#[test]
fn the_household_roster_is_a_repeat() {
    let form = victimization();
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission(&form.settings.form_id, &form.settings.version).unwrap();
    let mut s = FormSession::open(&store, &form, doc).unwrap();
    s.set_answer("consent", json!("yes")).unwrap();
    let a = s.add_repeat_row("survey/roster").unwrap();
    s.add_repeat_row("survey/roster").unwrap();
    s.set_answer(&format!("survey/roster/{a}/member_age"), json!(150)).unwrap();
    assert_eq!(s.value("members_listed").unwrap(), json!("2"));
    let errs = s.errors(Some("es"));
    assert!(errs.iter().any(|e| e.path == format!("survey/roster/{a}/member_age")
        && e.message == "La edad debe estar entre 0 y 120."));
    s.set_answer("household_size", json!(2)).unwrap();
    let note = s.visible_questions(Some("en")).into_iter().find(|q| q.name == "roster_check").unwrap();
    assert_eq!(note.label, "Members listed: 2 of 2");
}

#[test]
fn attendance_parts_must_add_up_to_the_total() {
    let form = activity_log();
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission(&form.settings.form_id, &form.settings.version).unwrap();
    let mut s = FormSession::open(&store, &form, doc).unwrap();
    for (q, v) in [
        ("women_under_18", 4),
        ("women_18_29", 6),
        ("women_30_plus", 2),
        ("men_under_18", 3),
        ("men_18_29", 5),
        ("men_30_plus", 0),
    ] {
        s.set_answer(q, json!(v)).unwrap();
    }
    s.set_answer("total_attendees", json!(21)).unwrap();
    let errs = s.errors(Some("es"));
    let total = errs.iter().find(|e| e.name == "total_attendees").unwrap();
    assert_eq!(total.kind, ValidationKind::Constraint);
    assert_eq!(total.message, "La suma por sexo y edad (20) debe ser igual al total.");
    let en = s.errors(Some("en"));
    assert!(en.iter().any(|e| e.message == "The parts by sex and age (20) must add up to the total."));
    s.set_answer("total_attendees", json!(20)).unwrap();
    assert!(!s.errors(None).iter().any(|e| e.name == "total_attendees"));
    assert_eq!(s.value("women_share").unwrap(), json!("60"));
    // The rest of the form: topics, place with GPS, a photo, then it finalizes.
    s.set_answer("activity_type", json!("workshop")).unwrap();
    s.set_answer("activity_name", json!("Taller de cultura de paz")).unwrap();
    s.set_answer("activity_date", json!("2026-11-20")).unwrap();
    s.set_answer("district", json!("la_chorrera")).unwrap();
    s.set_answer("corregimiento", json!("la__guadalupe")).unwrap();
    s.set_answer("place", json!("Escuela")).unwrap();
    s.set_answer("place_gps", json!("8.88 -79.78 10 5")).unwrap();
    s.set_answer("topics", json!(["gender", "culture_of_peace"])).unwrap();
    s.set_answer("activity_date", json!("2999-01-01")).unwrap();
    assert!(s.errors(Some("en")).iter().any(|e| e.message == "The date cannot be in the future."));
    s.set_answer("activity_date", json!("2026-11-20")).unwrap();
    let missing: Vec<String> = s.errors(None).into_iter().map(|e| e.name).collect();
    assert_eq!(missing, vec!["photo_1"]);
    s.set_answer("photo_1", json!("sha256:0011")).unwrap();
    s.finalize().unwrap();
    assert!(!store.read_document(doc).unwrap().draft);
}

#[test]
fn check_and_preview_reports() {
    let form = activity_log();
    let summary = summarize(&form);
    assert_eq!(summary.form_id, "bitacora_red_juvenil");
    assert_eq!(summary.repeats, 0);
    assert!(summary.questions > 15);
    assert!(summary.to_string().contains("Bitácora de actividades de la red juvenil"));

    let p = preview(&form, &json!({"women_under_18": 2, "men_under_18": 1, "total_attendees": 5, "nope": 1, "topics": "dancing"}), Some("en")).unwrap();
    assert_eq!(p.language, "English (en)");
    assert!(p.questions.iter().any(|q| q.name == "total_attendees" && q.error.is_some()));
    assert!(p.calculated.iter().any(|c| c.path == "attendance/attendance_sum" && c.value == json!("3")));
    assert_eq!(p.rejected.len(), 2, "{:?}", p.rejected);
    assert!(p.errors.iter().any(|e| e.name == "activity_name"));
    let text = p.to_string();
    assert!(text.contains("Total attendees") && text.contains("attendance_sum = \"3\""), "{text}");

    let form = victimization();
    let p = preview(
        &form,
        &json!({"consent": "yes", "roster": [{"member_name": "A", "member_age": 30}, {"member_name": "B", "member_age": 200}]}),
        None,
    )
    .unwrap();
    assert!(p.rejected.is_empty(), "{:?}", p.rejected);
    let row2 = "survey/roster/00000000-0000-0000-0000-000000000002/member_age";
    assert!(
        p.errors.iter().any(|e| e.path == row2 && e.kind == ValidationKind::Constraint),
        "{:?}",
        p.errors
    );
    assert!(p.calculated.iter().any(|c| c.path == "survey/members_listed" && c.value == json!("2")));
    assert!(preview(&form, &json!([1, 2]), None).is_err());
}
