//! Any string through the expression parser; what parses is printed, reparsed (printing must be
//! stable) and evaluated against a small fixed context. Nothing may panic or run unbounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tejido_core::form::expr::{self, Context, Item, Value};

/// Answers and lists in the shape a form session gives them, with a fixed clock.
struct Fixed;

impl Context for Fixed {
    fn reference(&self, name: &str) -> Value {
        match name {
            "age" => Value::Nodes(vec!["34".to_owned()]),
            "name" => Value::Nodes(vec!["Ana María".to_owned()]),
            "fruits" => Value::Nodes(vec!["apple banana".to_owned()]),
            "visit" => Value::Nodes(vec!["2024-05-15".to_owned()]),
            "when" => Value::Nodes(vec!["2024-05-15T10:30:00.000-05:00".to_owned()]),
            "members" => Value::Nodes(vec!["3".to_owned(), "".to_owned(), "-1.5".to_owned()]),
            _ => Value::Nodes(Vec::new()),
        }
    }
    fn current(&self) -> Value {
        Value::Nodes(vec!["7".to_owned()])
    }
    fn position(&self) -> f64 {
        2.0
    }
    fn indexed_repeat(&self, question: &str, indices: &[(String, f64)]) -> Value {
        let Value::Nodes(values) = self.reference(question) else { return Value::Nodes(Vec::new()) };
        let i = indices.first().map(|(_, n)| *n).unwrap_or(f64::NAN);
        let picked = if i >= 1.0 && i.is_finite() { values.get(i as usize - 1).cloned() } else { None };
        Value::Nodes(picked.into_iter().collect())
    }
    fn choice_label(&self, question: &str, choice: &str) -> Option<String> {
        (question == "fruits" && choice == "apple").then(|| "Manzana".to_owned())
    }
    fn instance(&self, list: &str) -> Option<Vec<Item>> {
        (list == "districts").then(|| {
            [("d1", "Panamá", "pa"), ("d2", "San Miguelito", "pa"), ("d3", "Colón", "co")]
                .iter()
                .map(|(n, l, p)| {
                    Item::from([
                        ("name".to_owned(), n.to_string()),
                        ("label".to_owned(), l.to_string()),
                        ("province".to_owned(), p.to_string()),
                    ])
                })
                .collect()
        })
    }
    fn now(&self) -> chrono::DateTime<chrono::Local> {
        chrono::DateTime::from_timestamp(1_715_767_800, 0).unwrap_or_default().into()
    }
}

fuzz_target!(|source: &str| {
    let Ok(parsed) = expr::parse(source) else { return };
    let printed = parsed.to_string();
    match expr::parse(&printed) {
        Ok(again) => assert_eq!(again.to_string(), printed, "printing is not stable"),
        Err(e) => panic!("a parsed expression prints as one that does not parse ({printed:?}): {e}"),
    }
    let _ = parsed.references();
    let _ = parsed.functions();
    let item = Item::from([("name".to_owned(), "d1".to_owned()), ("label".to_owned(), "Panamá".to_owned())]);
    for value in [expr::evaluate(&parsed, &Fixed), expr::evaluate_with_item(&parsed, &Fixed, &item)] {
        let _ = value.to_str();
        let _ = value.to_num();
        let _ = value.to_bool();
        let _ = value.to_days();
        let _ = value.items();
    }
});
