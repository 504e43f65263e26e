//! Form sessions: answers through the store, incremental recomputation, repeats, errors in
//! the chosen language, and finalizing without non-relevant answers.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use serde_json::json;
use tejido_core::form::model::DEFAULT_LANGUAGE;
use tejido_core::form::synthetic::generated_form;
use tejido_core::form::{
    Choice, Engine, Form, FormError, FormSession, Node, QuestionType, Settings, ValidationKind,
};
use tejido_core::Store;

type Row<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
type List<'a> = (&'a str, &'a [(&'a str, &'a str, &'a str)]);

/// A form from rows of (type, name, [(column, value)]); `begin_group`/`begin_repeat` open a
/// container and `end` closes it. Labels are given as `label` (Spanish) and `label_en`.
fn build(rows: &[Row<'_>], lists: &[List<'_>]) -> Form {
    let mut nodes: Vec<Node> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    for (ty, name, cols) in rows {
        if *ty == "end" {
            stack.pop();
            continue;
        }
        let kind = match *ty {
            "begin_group" => QuestionType::Group,
            "begin_repeat" => QuestionType::Repeat,
            "integer" => QuestionType::Integer,
            "decimal" => QuestionType::Decimal,
            "text" => QuestionType::Text,
            "calculate" => QuestionType::Calculate,
            "date" => QuestionType::Date,
            "note" => QuestionType::Note,
            t if t.starts_with("select_one") => QuestionType::SelectOne,
            t if t.starts_with("select_multiple") => QuestionType::SelectMultiple,
            other => panic!("{other}"),
        };
        let parent = stack.last().copied();
        let path = match parent {
            Some(p) => format!("{}/{}", nodes[p].path, name),
            None => name.to_string(),
        };
        let mut n = Node::new(name, &path, kind, parent);
        if let Some(list) = ty.split_whitespace().nth(1) {
            n.list = Some(list.to_owned());
        }
        for (c, v) in *cols {
            let v = v.to_string();
            match *c {
                "label" => {
                    n.label.insert("Español (es)".into(), v);
                }
                "label_en" => {
                    n.label.insert("English (en)".into(), v);
                }
                "relevant" => n.relevant = Some(v),
                "calculation" => n.calculation = Some(v),
                "constraint" => n.constraint = Some(v),
                "constraint_message" => {
                    n.constraint_message.insert("Español (es)".into(), v);
                }
                "constraint_message_en" => {
                    n.constraint_message.insert("English (en)".into(), v);
                }
                "required" => n.required = Some(v),
                "default" => n.default = Some(v),
                "choice_filter" => n.choice_filter = Some(v),
                "read_only" => n.read_only = true,
                other => panic!("{other}"),
            }
        }
        nodes.push(n);
        if kind.is_container() {
            stack.push(nodes.len() - 1);
        }
    }
    let meta = nodes.len();
    nodes.push(Node::new("meta", "meta", QuestionType::Group, None));
    nodes.push(Node::new("instanceID", "meta/instanceID", QuestionType::InstanceId, Some(meta)));
    nodes.push(Node::new("start", "start", QuestionType::Start, None));
    let choice_lists = lists
        .iter()
        .map(|(l, cs)| {
            let choices = cs
                .iter()
                .map(|(name, es, extra)| Choice {
                    name: name.to_string(),
                    label: BTreeMap::from([("Español (es)".to_owned(), es.to_string())]),
                    extra: if extra.is_empty() {
                        BTreeMap::new()
                    } else {
                        BTreeMap::from([("parent".to_owned(), extra.to_string())])
                    },
                })
                .collect();
            (l.to_string(), choices)
        })
        .collect();
    Form {
        settings: Settings {
            form_id: "test".into(),
            version: "1".into(),
            title: "Test".into(),
            default_language: Some("es".into()),
            instance_name: None,
        },
        languages: vec!["Español (es)".into(), "English (en)".into()],
        nodes,
        choice_lists,
        entities: Vec::new(),
        media: Default::default(),
    }
}

fn household() -> Form {
    build(
        &[
            (
                "integer",
                "age",
                &[
                    ("label", "Edad"),
                    ("label_en", "Age"),
                    ("required", "true()"),
                    ("constraint", ". >= 0 and . < 130"),
                    ("constraint_message", "Edad imposible"),
                    ("constraint_message_en", "Impossible age"),
                ],
            ),
            ("calculate", "adult", &[("calculation", "if(${age} >= 18, 'yes', 'no')")]),
            (
                "text",
                "job",
                &[("label", "Trabajo de ${name}"), ("relevant", "${adult} = 'yes'"), ("required", "true()")],
            ),
            ("text", "name", &[("label", "Nombre"), ("default", "Anónimo")]),
            ("select_one yn", "consent", &[("label", "Consentimiento")]),
            ("begin_group", "private", &[("relevant", "${consent} = 'yes'")]),
            ("text", "secret", &[("label", "Secreto")]),
            ("end", "", &[]),
            ("select_one prov", "province", &[("label", "Provincia")]),
            (
                "select_one dist",
                "district",
                &[("label", "Distrito"), ("choice_filter", "parent = ${province}")],
            ),
            ("begin_repeat", "members", &[("label", "Miembros")]),
            ("integer", "m_age", &[("label", "Edad del miembro")]),
            ("calculate", "m_double", &[("calculation", "${m_age} * 2")]),
            ("calculate", "m_pos", &[("calculation", "position(..)")]),
            ("text", "m_note", &[("label", "Nota"), ("relevant", "${m_age} > ${age}")]),
            ("end", "", &[]),
            ("calculate", "total", &[("calculation", "sum(${m_age})")]),
            ("calculate", "count", &[("calculation", "count(${members})")]),
            ("calculate", "first", &[("calculation", "indexed-repeat(${m_age}, ${members}, 1)")]),
        ],
        &[
            ("yn", &[("yes", "Sí", ""), ("no", "No", "")]),
            ("prov", &[("pa", "Panamá", ""), ("po", "Panamá Oeste", "")]),
            (
                "dist",
                &[
                    ("pma", "Panamá", "pa"),
                    ("smi", "San Miguelito", "pa"),
                    ("arr", "Arraiján", "po"),
                    ("cho", "La Chorrera", "po"),
                ],
            ),
        ],
    )
}

#[test]
fn answers_drive_relevance_calculations_and_errors() {
    let form = household();
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission("test", "1").unwrap();
    let mut s = FormSession::open(&store, &form, doc).unwrap();
    // Defaults and metadata are filled on open.
    assert_eq!(s.value("name").unwrap(), json!("Anónimo"));
    assert!(s.value("instanceID").unwrap().as_str().unwrap().starts_with("uuid:"));
    assert!(s.value("start").unwrap().as_str().unwrap().len() > 20);
    let visible: Vec<String> = s.visible_questions(None).into_iter().map(|q| q.name).collect();
    assert!(!visible.contains(&"job".to_owned()) && !visible.contains(&"secret".to_owned()), "{visible:?}");

    s.set_answer("age", json!(34)).unwrap();
    assert_eq!(s.value("adult").unwrap(), json!("yes"));
    let job = s.visible_questions(Some("es")).into_iter().find(|q| q.name == "job").unwrap();
    assert_eq!(job.label, "Trabajo de Anónimo");
    assert!(job.required);
    assert_eq!(job.error.as_deref(), Some("Esta pregunta es obligatoria."));
    s.set_answer("age", json!(12)).unwrap();
    assert_eq!(s.value("adult").unwrap(), json!("no"));
    assert!(!s.visible_questions(None).iter().any(|q| q.name == "job"));

    // Constraint messages in the chosen language, defaults by language.
    s.set_answer("age", json!(200)).unwrap();
    let errs = s.errors(Some("en"));
    assert!(
        errs.iter().any(|e| e.name == "age"
            && e.kind == ValidationKind::Constraint
            && e.message == "Impossible age"),
        "{errs:?}"
    );
    let errs = s.errors(Some("es"));
    assert!(errs.iter().any(|e| e.name == "age" && e.message == "Edad imposible"), "{errs:?}");
    s.set_answer("age", json!(null)).unwrap();
    let errs = s.errors(Some("en"));
    assert!(errs.iter().any(|e| e.name == "age"
        && e.kind == ValidationKind::Required
        && e.message == "This question is required."));

    // Answers reach the store as typed JSON.
    s.set_answer("age", json!("41")).unwrap();
    let stored = store.read_document(doc).unwrap();
    assert_eq!(stored.value("age"), Some(&json!(41)));
    assert_eq!(stored.value("adult"), Some(&json!("yes")));
}

#[test]
fn wrong_types_and_unknown_questions_are_typed_errors() {
    let form = household();
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission("test", "1").unwrap();
    let mut s = FormSession::open(&store, &form, doc).unwrap();
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("age", json!("doce")),
        ("age", json!(1.5)),
        ("age", json!([1])),
        ("name", json!(5)),
        ("consent", json!(["yes", "no"])),
        ("consent", json!({"a": 1})),
    ];
    for (q, v) in cases {
        match s.set_answer(q, v.clone()) {
            Err(FormError::WrongType { question, .. }) => assert_eq!(question, q),
            other => panic!("{q} = {v}: {other:?}"),
        }
    }
    assert!(matches!(s.set_answer("consent", json!("maybe")), Err(FormError::NotAChoice { .. })));
    assert!(matches!(s.set_answer("nope", json!(1)), Err(FormError::UnknownQuestion(_))));
    assert!(matches!(s.set_answer("adult", json!("yes")), Err(FormError::ReadOnly(_))));
    assert!(matches!(s.set_answer("instanceID", json!("x")), Err(FormError::ReadOnly(_))));
    assert!(matches!(s.set_answer("m_age", json!(3)), Err(FormError::InRepeat { .. })));
    assert!(matches!(
        s.set_answer("members", json!(3)),
        Err(FormError::InRepeat { .. } | FormError::UnknownQuestion(_))
    ));
    assert!(matches!(s.set_answer("members/not-a-uuid/m_age", json!(3)), Err(FormError::UnknownQuestion(_))));
    let ghost = uuid::Uuid::now_v7();
    assert!(matches!(
        s.set_answer(&format!("members/{ghost}/m_age"), json!(3)),
        Err(FormError::UnknownRow { .. })
    ));
    assert!(matches!(s.add_repeat_row("age"), Err(FormError::NotARepeat(_))));
    // Messages name the question, never the value.
    let e = s.set_answer("age", json!("secret-value-123")).unwrap_err();
    assert!(!e.to_string().contains("secret-value-123"));
    // Nothing was written.
    assert_eq!(store.read_document(doc).unwrap().value("age"), None);
}

#[test]
fn repeats_resolve_to_their_own_row_and_aggregate_outside() {
    let form = household();
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission("test", "1").unwrap();
    let mut s = FormSession::open(&store, &form, doc).unwrap();
    s.set_answer("age", json!(30)).unwrap();
    let a = s.add_repeat_row("members").unwrap();
    let b = s.add_repeat_row("members").unwrap();
    let c = s.add_repeat_row("members").unwrap();
    assert_eq!(s.value("count").unwrap(), json!("3"));
    s.set_answer(&format!("members/{a}/m_age"), json!(10)).unwrap();
    s.set_answer(&format!("members/{b}/m_age"), json!(40)).unwrap();
    s.set_answer(&format!("members/{c}/m_age"), json!(5)).unwrap();
    assert_eq!(s.value(&format!("members/{b}/m_double")).unwrap(), json!("80"));
    assert_eq!(s.value(&format!("members/{c}/m_pos")).unwrap(), json!("3"));
    assert_eq!(s.value("total").unwrap(), json!("55"));
    assert_eq!(s.value("first").unwrap(), json!("10"));
    // Relevance inside a row reads that row and the top level.
    let notes: Vec<String> =
        s.visible_questions(None).into_iter().filter(|q| q.name == "m_note").map(|q| q.path).collect();
    assert_eq!(notes, vec![format!("members/{b}/m_note")]);
    s.set_answer("age", json!(4)).unwrap();
    assert_eq!(s.visible_questions(None).iter().filter(|q| q.name == "m_note").count(), 3);

    s.remove_repeat_row("members", a).unwrap();
    assert_eq!(s.value("total").unwrap(), json!("45"));
    assert_eq!(s.value("count").unwrap(), json!("2"));
    assert_eq!(s.value("first").unwrap(), json!("40"));
    assert_eq!(s.value(&format!("members/{c}/m_pos")).unwrap(), json!("2"));
    assert!(matches!(s.remove_repeat_row("members", a), Err(FormError::UnknownRow { .. })));

    // A new session over the same draft sees the same state.
    let again = FormSession::open(&store, &form, doc).unwrap();
    assert_eq!(again.repeat_rows("members").unwrap(), vec![b, c]);
    assert_eq!(again.value("total").unwrap(), json!("45"));
    assert_eq!(again.value(&format!("members/{c}/m_age")).unwrap(), json!(5));
}

#[test]
fn cascading_choices_follow_the_filter() {
    let form = household();
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission("test", "1").unwrap();
    let mut s = FormSession::open(&store, &form, doc).unwrap();
    let districts = |s: &FormSession<'_>| -> Vec<String> {
        s.visible_questions(None)
            .into_iter()
            .find(|q| q.name == "district")
            .unwrap()
            .choices
            .into_iter()
            .map(|c| c.label)
            .collect()
    };
    assert!(districts(&s).is_empty());
    s.set_answer("province", json!("po")).unwrap();
    assert_eq!(districts(&s), vec!["Arraiján", "La Chorrera"]);
    s.set_answer("province", json!("pa")).unwrap();
    assert_eq!(districts(&s), vec!["Panamá", "San Miguelito"]);
}

#[test]
fn finalize_refuses_with_every_error_then_leaves_non_relevant_answers_out() {
    let form = household();
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission("test", "1").unwrap();
    let mut s = FormSession::open(&store, &form, doc).unwrap();
    s.set_answer("consent", json!("yes")).unwrap();
    s.set_answer("secret", json!("private words")).unwrap();
    s.set_answer("age", json!(50)).unwrap();
    let errors = s.finalize().unwrap_err();
    assert_eq!(errors.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), vec!["job"]);
    s.set_answer("job", json!("carpenter")).unwrap();
    // Withdrawing consent hides the private group: its answer stays in the draft...
    s.set_answer("consent", json!("no")).unwrap();
    assert_eq!(store.read_document(doc).unwrap().value("private/secret"), Some(&json!("private words")));
    let row = s.add_repeat_row("members").unwrap();
    s.set_answer(&format!("members/{row}/m_age"), json!(60)).unwrap();
    let gone = s.add_repeat_row("members").unwrap();
    s.set_answer(&format!("members/{gone}/m_age"), json!(1)).unwrap();
    s.remove_repeat_row("members", gone).unwrap();
    s.finalize().unwrap();
    let done = store.read_document(doc).unwrap();
    assert!(!done.draft);
    // ...but not in the finalized submission, and neither are removed rows.
    assert_eq!(done.value("private/secret"), None);
    assert_eq!(done.value(&format!("members/{gone}/m_age")), None);
    assert_eq!(done.value(&format!("members/{row}/m_age")), Some(&json!(60)));
    assert_eq!(done.value("job"), Some(&json!("carpenter")));
    assert_eq!(done.value("total"), Some(&json!("60")));
    assert!(done.value("instanceID").or(done.value("meta/instanceID")).is_some());
}

#[test]
fn a_session_refuses_another_forms_submission() {
    let form = household();
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission("other-form", "1").unwrap();
    assert!(matches!(FormSession::open(&store, &form, doc), Err(FormError::WrongForm { .. })));
    assert!(matches!(FormSession::open(&store, &form, tejido_core::DocId::new()), Err(FormError::Store(_))));
}

/// The state after any sequence of incremental updates equals a full recomputation.
#[test]
fn incremental_updates_agree_with_full_recomputation() {
    let form = household();
    let mut engine = Engine::new(&form).unwrap();
    engine.load(&[], &|_| Vec::new());
    let mut rng: u64 = 0x9e3779b97f4a7c15;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut rows: Vec<uuid::Uuid> = Vec::new();
    for step in 0..300 {
        match next(8) {
            0 => {
                let r = uuid::Uuid::from_u128(step + 1);
                engine.add_row("members", r).unwrap();
                rows.push(r);
            }
            1 if !rows.is_empty() => {
                let r = rows.remove(next(rows.len() as u64) as usize);
                engine.remove_row("members", r).unwrap();
            }
            2 if !rows.is_empty() => {
                let r = rows[next(rows.len() as u64) as usize];
                engine.set_answer(&format!("members/{r}/m_age"), &json!(next(90))).unwrap();
            }
            3 => {
                engine.set_answer("consent", &json!(if next(2) == 0 { "yes" } else { "no" })).unwrap();
            }
            4 => {
                engine.set_answer("province", &json!(if next(2) == 0 { "pa" } else { "po" })).unwrap();
            }
            _ => {
                engine.set_answer("age", &json!(next(100))).unwrap();
            }
        }
        let mut full = engine.clone();
        let _ = full.recompute_all();
        assert_eq!(engine.visible_questions(None), full.visible_questions(None), "step {step}");
        assert_eq!(engine.calculated_values(), full.calculated_values(), "step {step}");
        assert_eq!(engine.errors(None), full.errors(None), "step {step}");
    }
}

/// The benchmark's path (one answer, incremental re-evaluation) on a 500-question form.
#[test]
fn a_500_question_form_recomputes_incrementally() {
    let form = generated_form(500);
    assert!(form.nodes.len() >= 500);
    let mut engine = Engine::new(&form).unwrap();
    engine.load(&[], &|_| Vec::new());
    let changes = engine.set_answer("s7_n0", &json!(5)).unwrap();
    // The answer, its section's sum and the grand total; nothing else.
    let paths: Vec<&str> = changes.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, vec!["s7/s7_n0", "s7/s7_sum", "total"]);
    assert_eq!(engine.value("total").unwrap(), json!("5"));
    assert!(engine.visible_questions(None).iter().any(|q| q.name == "s7_why"));
    engine.set_answer("s49_n5", &json!(7)).unwrap();
    assert_eq!(engine.value("total").unwrap(), json!("12"));
    let mut full = engine.clone();
    assert!(full.recompute_all().is_empty());
    assert_eq!(full.errors(None).len(), 49);
    let _ = DEFAULT_LANGUAGE;
}

#[test]
fn repeat_count_sets_the_number_of_rows() {
    let form = build(
        &[
            ("integer", "children", &[("label", "Hijos")]),
            ("begin_repeat", "child", &[]),
            ("integer", "child_age", &[("label", "Edad"), ("default", "0")]),
            ("end", "", &[]),
            ("calculate", "ages", &[("calculation", "sum(${child_age})")]),
        ],
        &[],
    );
    let mut form = form;
    form.nodes[1].repeat_count = Some("${children}".into());
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission("test", "1").unwrap();
    let mut s = FormSession::open(&store, &form, doc).unwrap();
    assert!(s.repeat_rows("child").unwrap().is_empty());
    s.set_answer("children", json!(3)).unwrap();
    let rows = s.repeat_rows("child").unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(s.value(&format!("child/{}/child_age", rows[2])).unwrap(), json!(0));
    s.set_answer(&format!("child/{}/child_age", rows[0]), json!(7)).unwrap();
    s.set_answer(&format!("child/{}/child_age", rows[2]), json!(2)).unwrap();
    assert_eq!(s.value("ages").unwrap(), json!("9"));
    s.set_answer("children", json!(1)).unwrap();
    assert_eq!(s.repeat_rows("child").unwrap(), vec![rows[0]]);
    assert_eq!(s.value("ages").unwrap(), json!("7"));
    assert!(matches!(s.add_repeat_row("child"), Err(FormError::ReadOnly(_))));
    assert_eq!(store.read_document(doc).unwrap().rows("child"), vec![rows[0]]);
    s.set_answer("children", json!(-4)).unwrap();
    assert!(s.repeat_rows("child").unwrap().is_empty());
}

#[test]
fn dynamic_defaults_are_computed_and_literal_ones_kept() {
    let form = build(
        &[
            ("date", "when", &[("label", "Fecha"), ("default", "today()")]),
            ("text", "greeting", &[("label", "Saludo"), ("default", "hola (mundo)")]),
            ("integer", "n", &[("label", "N"), ("default", "5")]),
        ],
        &[],
    );
    let store = Store::open_in_memory().unwrap();
    let doc = store.start_submission("test", "1").unwrap();
    let s = FormSession::open(&store, &form, doc).unwrap();
    assert_eq!(s.value("when").unwrap(), json!(chrono::Local::now().format("%Y-%m-%d").to_string()));
    assert_eq!(s.value("greeting").unwrap(), json!("hola (mundo)"));
    assert_eq!(s.value("n").unwrap(), json!(5));
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(json!(null)),
            any::<bool>().prop_map(|b| json!(b)),
            any::<i64>().prop_map(|i| json!(i)),
            any::<f64>().prop_map(|f| json!(f)),
            "\\PC{0,12}".prop_map(|s| json!(s)),
            prop::collection::vec("[a-z ]{0,5}", 0..3).prop_map(|v| json!(v)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn any_name_and_value_gives_a_result(
            ops in prop::collection::vec((
                prop::sample::select(vec!["age", "name", "consent", "province", "district", "job", "members", "m_age", "members/x/m_age", "", "/", "a/b/c", "adult"]),
                json_value(),
            ), 1..12)
        ) {
            let form = household();
            let mut engine = Engine::new(&form).unwrap();
            engine.load(&[], &|_| Vec::new());
            let row = uuid::Uuid::from_u128(1);
            engine.add_row("members", row).unwrap();
            for (name, value) in ops {
                let _ = engine.set_answer(name, &value);
                let _ = engine.set_answer(&format!("members/{row}/m_age"), &value);
            }
            let _ = engine.visible_questions(Some("xx"));
            let _ = engine.errors(None);
        }
    }
}

/// JavaRosa's `TriggerableDagTest.non_relevant_node_values_are_always_null_regardless_of_their_actual_value`:
/// an expression sees a non-relevant question as empty, while its stored answer is kept (and
/// seen again once the question is relevant again). ODK Collect behaves so; Enketo once did not.
#[test]
fn expressions_see_a_non_relevant_answer_as_empty_and_the_answer_is_kept() {
    let form = build(
        &[
            ("integer", "trigger", &[("label", "Disparador")]),
            ("integer", "some_field", &[("label", "Campo"), ("relevant", "${trigger} = 1")]),
            ("calculate", "result", &[("calculation", "if(${some_field} != '', ${some_field} + 33, 33)")]),
            (
                "calculate",
                "hidden_sum",
                &[("calculation", "${some_field} + 0"), ("relevant", "${trigger} = 2")],
            ),
            ("calculate", "after_hidden", &[("calculation", "concat('[', ${hidden_sum}, ']')")]),
        ],
        &[],
    );
    let mut engine = Engine::new(&form).unwrap();
    engine.load(&[], &|_| Vec::new());
    engine.set_answer("trigger", &json!(1)).unwrap();
    engine.set_answer("some_field", &json!(42)).unwrap();
    assert_eq!(engine.value("result").unwrap(), json!("75"));
    // A calculate that is not relevant exposes no value either, though it computes one.
    assert_eq!(engine.value("after_hidden").unwrap(), json!("[]"));
    engine.set_answer("trigger", &json!(0)).unwrap();
    assert_eq!(engine.value("result").unwrap(), json!("33"), "the hidden 42 is empty to expressions");
    assert_eq!(engine.value("some_field").unwrap(), json!(42), "the stored answer is kept");
    engine.set_answer("trigger", &json!(1)).unwrap();
    assert_eq!(engine.value("result").unwrap(), json!("75"));
    engine.set_answer("trigger", &json!(2)).unwrap();
    assert_eq!(engine.value("after_hidden").unwrap(), json!("[]"), "some_field is hidden again");
    let mut full = engine.clone();
    let _ = full.recompute_all();
    assert_eq!(engine.calculated_values(), full.calculated_values());
}

/// `username`, `email` and `phonenumber` metadata take what the enumerator set on the device
/// (ODK Collect's form metadata settings); `uri:` forms get their scheme; a draft keeps its value.
#[test]
fn device_metadata_fills_new_drafts_and_bad_values_change_nothing() {
    use tejido_core::store::DeviceMetadata;
    let mut form = build(&[("text", "name", &[("label", "Nombre")])], &[]);
    form.nodes.push(Node::new("username", "username", QuestionType::Username, None));
    let mut email = Node::new("email", "email", QuestionType::Email, None);
    email.uri = true;
    form.nodes.push(email);
    form.nodes.push(Node::new("phonenumber", "phonenumber", QuestionType::PhoneNumber, None));
    let store = Store::open_in_memory().unwrap();
    let before = store.start_submission("test", "1").unwrap();
    FormSession::open(&store, &form, before).unwrap();
    assert_eq!(store.read_document(before).unwrap().value("username"), None, "nothing set yet");

    store.set_device_metadata(DeviceMetadata::Username, Some("  ana.p ")).unwrap();
    store.set_device_metadata(DeviceMetadata::Email, Some("ana@example.org")).unwrap();
    // Refused values change nothing and do not appear in the message.
    let long = "9".repeat(255);
    let err = store.set_device_metadata(DeviceMetadata::PhoneNumber, Some(&long)).unwrap_err();
    assert!(!err.to_string().contains(&long));
    assert!(store.set_device_metadata(DeviceMetadata::Username, Some("ana\u{0}")).is_err());
    assert_eq!(store.device_metadata(DeviceMetadata::Username).unwrap().as_deref(), Some("ana.p"));
    assert_eq!(store.device_metadata(DeviceMetadata::PhoneNumber).unwrap(), None);

    let doc = store.start_submission("test", "1").unwrap();
    FormSession::open(&store, &form, doc).unwrap();
    let d = store.read_document(doc).unwrap();
    assert_eq!(d.value("username"), Some(&json!("ana.p")));
    assert_eq!(d.value("email"), Some(&json!("mailto:ana@example.org")));
    assert_eq!(d.value("phonenumber"), None);
    // Changing the setting does not rewrite a draft that holds a value; clearing removes it.
    store.set_device_metadata(DeviceMetadata::Username, Some("beto")).unwrap();
    FormSession::open(&store, &form, doc).unwrap();
    assert_eq!(store.read_document(doc).unwrap().value("username"), Some(&json!("ana.p")));
    store.set_device_metadata(DeviceMetadata::Username, None).unwrap();
    assert_eq!(store.device_metadata(DeviceMetadata::Username).unwrap(), None);
}

#[test]
fn the_audit_log_records_the_session_timeline_and_is_attached_at_finalize() {
    use tejido_core::store::DeviceMetadata;
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/forms/pyxform/audit_parameters.xlsx");
    let form = tejido_core::form::import_xlsform(&path).unwrap();
    let audit = form.nodes.iter().find(|n| n.kind == QuestionType::Audit).unwrap().path.clone();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.db")).unwrap();
    store.set_device_metadata(DeviceMetadata::Username, Some("ana")).unwrap();
    let doc = store.start_submission(&form.settings.form_id, &form.settings.version).unwrap();

    let mut s = FormSession::open(&store, &form, doc).unwrap();
    s.set_answer("name", json!("Ana")).unwrap();
    // A second answer to the same question in a row is the same visit: one event.
    s.set_answer("name", json!("Ana María")).unwrap();
    let first = s.add_repeat_row("member").unwrap();
    let second = s.add_repeat_row("member").unwrap();
    s.set_answer(&format!("member/{second}/age"), json!(41)).unwrap();
    s.remove_repeat_row("member", first).unwrap();
    drop(s);
    // The app is closed and the draft opened again.
    let mut s = FormSession::open(&store, &form, doc).unwrap();
    s.set_answer(&format!("member/{second}/age"), json!(42)).unwrap();
    s.finalize().unwrap();

    let d = store.read_document(doc).unwrap();
    let reference = d.text(&audit).expect("the audit attachment is in the submission");
    let sha = reference.rsplit(':').next().unwrap();
    let mut csv = String::new();
    std::io::Read::read_to_string(&mut store.open_attachment(sha).unwrap(), &mut csv).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], ["event", "node", "start", "end", "old-value", "new-value", "user"]);
    let events: Vec<(&str, &str, &str, &str)> = rows[1..].iter().map(|r| (r[0], r[1], r[4], r[5])).collect();
    assert_eq!(
        events,
        [
            ("form start", "", "", ""),
            ("question", "/data/name", "", "Ana María"),
            ("add repeat", "/data/member[1]", "", ""),
            ("add repeat", "/data/member[2]", "", ""),
            ("question", "/data/member[2]/age", "", "41"),
            ("delete repeat", "/data/member[1]", "", ""),
            ("form resume", "", "", ""),
            ("question", "/data/member[1]/age", "41", "42"),
            ("form finalize", "", "", ""),
        ]
    );
    for r in &rows[1..] {
        assert_eq!(r[6], "ana", "identify-user names the device's user");
        let start: i64 = r[2].parse().unwrap();
        assert!(start > 1_700_000_000_000, "times are epoch milliseconds");
    }
    // Finalizing ended the draft's log on the device.
    assert!(store.audit_events(doc).unwrap().is_empty());
}

#[test]
fn a_refused_finalize_records_each_failed_check_and_forms_without_audit_record_nothing() {
    let mut form = build(&[("text", "name", &[("label", "Nombre"), ("required", "true()")])], &[]);
    let store = Store::open_in_memory().unwrap();
    let plain = store.start_submission("test", "1").unwrap();
    let mut s = FormSession::open(&store, &form, plain).unwrap();
    s.set_answer("name", json!("x")).unwrap();
    assert!(store.audit_events(plain).unwrap().is_empty(), "no audit question, no log");

    form.nodes.push(Node::new("audit", "audit", QuestionType::Audit, None));
    let doc = store.start_submission("test", "1").unwrap();
    let mut s = FormSession::open(&store, &form, doc).unwrap();
    assert!(s.finalize().is_err());
    let events: Vec<(String, String)> =
        store.audit_events(doc).unwrap().into_iter().map(|e| (e.event, e.node)).collect();
    assert_eq!(
        events,
        [("form start".to_owned(), String::new()), ("constraint error".to_owned(), "/data/name".to_owned())]
    );
    // Without track-changes, no answer is in the log.
    s.set_answer("name", json!("secreto")).unwrap();
    assert!(store.audit_events(doc).unwrap().iter().all(|e| e.old_value.is_none() && e.new_value.is_none()));
}

#[test]
fn media_files_give_choices_lookups_and_instances_and_a_missing_one_is_named() {
    let mut form = build(
        &[
            ("text", "code", &[("label", "Código")]),
            ("calculate", "district", &[("calculation", "pulldata('places', 'district', 'code', ${code})")]),
            (
                "calculate",
                "count_a",
                &[("calculation", "count(instance('places')/root/item[district = 'a'])")],
            ),
        ],
        &[],
    );
    let mut place = Node::new("place", "place", QuestionType::SelectOneFromFile, None);
    place.file = Some("places.csv".into());
    place.choice_filter = Some("district = ${district}".into());
    form.nodes.push(place);
    let mut crops = Node::new("crops", "crops", QuestionType::SelectMultipleFromFile, None);
    crops.file = Some("crops.xml".into());
    form.nodes.push(crops);
    assert_eq!(tejido_core::form::media::needed_media(&form), ["crops.xml", "places.csv"]);

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.db")).unwrap();
    let places = "name,label,label::English (en),district,code\np1,Uno,One,a,100\np2,Dos,Two,a,200\np3,Tres,Three,b,300\n";
    let crops_xml = "<root><item><name>maize</name><label>Maíz</label></item><item><name>rice</name><label>Arroz</label></item></root>";
    form.media
        .insert("places.csv".into(), store.store_attachment(places.as_bytes(), "text/csv", false).unwrap());
    let crops_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(crops_xml.as_bytes()))
    };
    form.media.insert("crops.xml".into(), crops_sha.clone());

    // The XML file has not arrived: a draft cannot be filled in, and the message names the file.
    let doc = store.start_submission("test", "1").unwrap();
    let err = FormSession::open(&store, &form, doc).unwrap_err();
    assert!(matches!(&err, FormError::MissingMedia(f) if f == "crops.xml"), "{err}");
    assert_eq!(store.store_attachment(crops_xml.as_bytes(), "application/xml", false).unwrap(), crops_sha);

    let mut s = FormSession::open(&store, &form, doc).unwrap();
    assert_eq!(s.value("count_a").unwrap(), json!("2"), "instance() reads the CSV");
    s.set_answer("code", json!("300")).unwrap();
    assert_eq!(s.value("district").unwrap(), json!("b"), "pulldata looks the code up");
    let choices = |s: &FormSession<'_>, q: &str, lang: Option<&str>| -> Vec<(String, String)> {
        s.visible_questions(lang)
            .into_iter()
            .find(|v| v.name == q)
            .unwrap()
            .choices
            .into_iter()
            .map(|c| (c.name, c.label))
            .collect()
    };
    assert_eq!(choices(&s, "place", None), [("p3".to_owned(), "Tres".to_owned())], "filtered by district");
    s.set_answer("code", json!("100")).unwrap();
    assert_eq!(
        choices(&s, "place", Some("en")),
        [("p1".to_owned(), "One".to_owned()), ("p2".to_owned(), "Two".to_owned())]
    );
    assert_eq!(
        choices(&s, "crops", None),
        [("maize".into(), "Maíz".into()), ("rice".into(), "Arroz".into())]
    );
    s.set_answer("place", json!("p2")).unwrap();
    s.set_answer("crops", json!(["maize", "rice"])).unwrap();
    assert!(matches!(s.set_answer("place", json!("p9")), Err(FormError::NotAChoice { .. })));
    assert!(matches!(s.set_answer("place", json!(["p1", "p2"])), Err(FormError::WrongType { .. })));
    assert_eq!(s.value("place").unwrap(), json!("p2"), "a refused answer changes nothing");
}
