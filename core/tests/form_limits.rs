//! One `Form::validate` guards every way a form comes in (XLSForm import, JSON, the engine), so
//! that a form that passed it can never panic or hang a session, and forms beyond the
//! documented limits are refused with a clear error.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use tejido_core::form::{limits, Choice, Engine, Form, FormError, FormInvalid, Node, QuestionType, Settings};

fn form(nodes: Vec<Node>) -> Form {
    Form {
        settings: Settings {
            form_id: "f".into(),
            version: "1".into(),
            title: "F".into(),
            default_language: None,
            instance_name: None,
        },
        languages: vec!["default".into()],
        nodes,
        choice_lists: BTreeMap::new(),
        entities: Vec::new(),
        media: Default::default(),
    }
}

/// `depth` containers of `kind`, one inside the other, with a question in the innermost.
fn nested(kind: QuestionType, depth: usize) -> Form {
    let mut nodes = Vec::new();
    let mut path = String::new();
    for i in 0..depth {
        let name = format!("c{i}");
        path = if path.is_empty() { name.clone() } else { format!("{path}/{name}") };
        nodes.push(Node::new(&name, &path, kind, i.checked_sub(1)));
    }
    nodes.push(Node::new("q", &format!("{path}/q"), QuestionType::Text, depth.checked_sub(1)));
    form(nodes)
}

/// Compiles a form and runs a session's first steps, as the phone does after a sync.
fn run_session(form: &Form) -> Result<(), FormError> {
    let mut engine = Engine::new(form)?;
    engine.load(&[], &|_| Vec::new());
    engine.apply_defaults(&|_| false);
    let _ = engine.repeat_count_actions();
    let _ = engine.visible_questions(None);
    Ok(())
}

fn refused_quickly(form: &Form) -> String {
    let started = Instant::now();
    let err = run_session(form).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "refused in {:?}", started.elapsed());
    assert!(matches!(err, FormError::InvalidForm(_)), "{err:?}");
    err.to_string()
}

#[test]
fn a_json_form_with_repeat_count_on_a_question_is_refused_not_a_panic() {
    let json = json!({
        "settings": {"form_id": "f", "version": "1", "title": "F"},
        "languages": ["default"],
        "nodes": [{"name": "n", "path": "n", "type": "integer", "parent": null, "repeat_count": "3"}],
        "choice_lists": {}
    });
    let form = Form::from_json(&json.to_string()).unwrap();
    let err = form.validate().unwrap_err();
    assert!(matches!(err, FormInvalid::Structure { .. }), "{err:?}");
    assert!(err.to_string().contains("repeat_count"), "{err}");
    let message = refused_quickly(&form);
    assert!(message.contains("only a repeat can have a repeat_count"), "{message}");
}

#[test]
fn forms_whose_structure_is_inconsistent_are_refused() {
    let q = |name: &str, path: &str, parent| Node::new(name, path, QuestionType::Text, parent);
    let g = |name: &str| Node::new(name, name, QuestionType::Group, None);
    let cases: Vec<(Form, &str)> = vec![
        (form(vec![q("a", "a", None), q("a", "a", None)]), "used twice"),
        (form(vec![q("a", "g/a", Some(1)), g("g")]), "before its group"),
        (form(vec![q("a", "a", None), q("b", "a/b", Some(0))]), "not a group or repeat"),
        (form(vec![g("g"), q("a", "h/a", Some(0))]), "path does not match"),
        (form(vec![q("a", "a", Some(7))]), "before its group"),
        (form(vec![q("", "", None)]), "non-empty"),
        (
            form(vec![{
                let mut n = Node::new("s", "s", QuestionType::SelectOne, None);
                n.list = Some("nope".into());
                n
            }]),
            "no choice list nope",
        ),
        (
            form(vec![{
                let mut n = q("a", "a", None);
                n.relevant = Some("${a} = (".into());
                n
            }]),
            "relevant of a",
        ),
    ];
    for (form, expected) in cases {
        let err = form.validate().unwrap_err();
        assert!(err.to_string().contains(expected), "{err} should say {expected}");
        assert!(refused_quickly(&form).contains(expected));
    }
}

#[test]
fn five_thousand_nested_groups_are_refused_at_once() {
    let form = nested(QuestionType::Group, 5_000);
    let err = form.validate().unwrap_err();
    assert!(matches!(err, FormInvalid::TooDeep { limit: limits::MAX_DEPTH, .. }), "{err:?}");
    assert!(refused_quickly(&form).contains("the limit is 32"));
}

#[test]
fn a_thousand_nested_repeats_are_refused_at_once() {
    let form = nested(QuestionType::Repeat, 1_000);
    assert!(form.validate().is_err());
    refused_quickly(&form);
    let form = nested(QuestionType::Repeat, limits::MAX_REPEAT_DEPTH + 1);
    let err = form.validate().unwrap_err();
    assert!(matches!(err, FormInvalid::TooDeep { what: "repeats", .. }), "{err:?}");
}

#[test]
fn forms_at_the_limits_still_work() {
    for form in [
        nested(QuestionType::Group, limits::MAX_DEPTH),
        nested(QuestionType::Repeat, limits::MAX_REPEAT_DEPTH),
    ] {
        form.validate().unwrap();
        let started = Instant::now();
        run_session(&form).unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    let mut engine = Engine::new(&nested(QuestionType::Group, limits::MAX_DEPTH)).unwrap();
    engine.load(&[], &|_| Vec::new());
    engine.set_answer("q", &json!("hola")).unwrap();
    assert_eq!(engine.value("q").unwrap(), json!("hola"));
}

#[test]
fn too_many_questions_or_choices_are_refused() {
    let nodes = (0..=limits::MAX_NODES)
        .map(|i| Node::new(&format!("q{i}"), &format!("q{i}"), QuestionType::Text, None))
        .collect();
    let big = form(nodes);
    let err = big.validate().unwrap_err();
    assert!(matches!(err, FormInvalid::TooLarge { limit: limits::MAX_NODES, .. }), "{err:?}");
    refused_quickly(&big);

    let mut many_choices = form(vec![]);
    let list: Vec<Choice> = (0..=limits::MAX_CHOICES)
        .map(|i| Choice { name: format!("c{i}"), label: BTreeMap::new(), extra: BTreeMap::new() })
        .collect();
    many_choices.choice_lists.insert("big".into(), list);
    let err = many_choices.validate().unwrap_err();
    assert!(matches!(err, FormInvalid::TooLarge { what: "choices", .. }), "{err:?}");
}

#[test]
fn expressions_beyond_the_parser_limits_are_refused() {
    let mut long = Node::new("a", "a", QuestionType::Calculate, None);
    long.calculation = Some(vec!["1"; 10_000].join(" + "));
    let err = form(vec![long]).validate().unwrap_err();
    assert!(matches!(err, FormInvalid::Expression { column: "calculation", .. }), "{err:?}");

    let mut deep = Node::new("a", "a", QuestionType::Calculate, None);
    deep.calculation = Some(format!("{}1{}", "(".repeat(1_000), ")".repeat(1_000)));
    assert!(form(vec![deep]).validate().is_err());
}
