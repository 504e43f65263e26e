//! A generated form of any size, for the benchmark and the tests that keep it honest.

use std::collections::BTreeMap;

use super::model::{Choice, Form, Node, QuestionType, Settings, Translations, DEFAULT_LANGUAGE};

fn text(s: &str) -> Translations {
    Translations::from([(DEFAULT_LANGUAGE.to_owned(), s.to_owned())])
}

/// A form of about `questions` questions in sections of ten: six whole numbers (constrained),
/// a yes/no choice, a text shown only when the first number is over 3, the section's sum, and
/// a note; a grand total adds up the sections. Names: `s{k}_n{j}`, `s{k}_yn`, `s{k}_why`,
/// `s{k}_sum`, `total`.
pub fn generated_form(questions: usize) -> Form {
    let sections = questions.div_ceil(10).max(1);
    let mut nodes = Vec::new();
    for k in 0..sections {
        let group = nodes.len();
        let gname = format!("s{k}");
        let mut g = Node::new(&gname, &gname, QuestionType::Group, None);
        g.label = text(&format!("Section {k}"));
        nodes.push(g);
        let mut push = |name: String, kind: QuestionType, f: &dyn Fn(&mut Node)| {
            let mut n = Node::new(&name, &format!("{gname}/{name}"), kind, Some(group));
            n.label = text(&name);
            f(&mut n);
            nodes.push(n);
        };
        for j in 0..6 {
            push(format!("s{k}_n{j}"), QuestionType::Integer, &|n| {
                n.constraint = Some(". >= 0 and . < 1000".into());
                n.required = (j == 0).then(|| "true()".into());
            });
        }
        push(format!("s{k}_yn"), QuestionType::SelectOne, &|n| n.list = Some("yn".into()));
        push(format!("s{k}_why"), QuestionType::Text, &|n| n.relevant = Some(format!("${{s{k}_n0}} > 3")));
        let sum = (0..6).map(|j| format!("coalesce(${{s{k}_n{j}}}, 0)")).collect::<Vec<_>>().join(" + ");
        push(format!("s{k}_sum"), QuestionType::Calculate, &|n| n.calculation = Some(sum.clone()));
        push(format!("s{k}_note"), QuestionType::Note, &|n| n.label = text(&format!("Sum: ${{s{k}_sum}}")));
    }
    let total = (0..sections).map(|k| format!("coalesce(${{s{k}_sum}}, 0)")).collect::<Vec<_>>().join(" + ");
    let mut t = Node::new("total", "total", QuestionType::Calculate, None);
    t.calculation = Some(total);
    nodes.push(t);
    let yn = vec![
        Choice { name: "yes".into(), label: text("Yes"), extra: BTreeMap::new() },
        Choice { name: "no".into(), label: text("No"), extra: BTreeMap::new() },
    ];
    Form {
        settings: Settings {
            form_id: "generated".into(),
            version: "1".into(),
            title: "Generated".into(),
            default_language: None,
            instance_name: None,
        },
        languages: vec![DEFAULT_LANGUAGE.to_owned()],
        nodes,
        choice_lists: BTreeMap::from([("yn".to_owned(), yn)]),
        entities: Vec::new(),
        media: Default::default(),
    }
}
