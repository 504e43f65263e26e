//! What `form check` and `form preview` report, computed here so the command-line tool stays a
//! thin printer and the reports are tested with the library.

use std::fmt;

use serde::Serialize;
use serde_json::Value as Json;
use uuid::Uuid;

use super::engine::{Engine, RowAction};
use super::import::ImportError;
use super::model::{Form, QuestionType};
use super::session::{FormError, QuestionView, ValidationError};

/// A summary of an imported form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckSummary {
    pub form_id: String,
    pub version: String,
    pub title: String,
    pub languages: Vec<String>,
    pub questions: usize,
    pub groups: usize,
    pub repeats: usize,
    pub calculations: usize,
    pub choice_lists: usize,
}

/// Summarises a form.
pub fn summarize(form: &Form) -> CheckSummary {
    let count = |f: &dyn Fn(QuestionType) -> bool| form.nodes.iter().filter(|n| f(n.kind)).count();
    CheckSummary {
        form_id: form.settings.form_id.clone(),
        version: form.settings.version.clone(),
        title: form.settings.title.clone(),
        languages: form.languages.clone(),
        questions: count(&|k| !k.is_container() && k.is_shown()),
        groups: count(&|k| k == QuestionType::Group),
        repeats: count(&|k| k == QuestionType::Repeat),
        calculations: form.nodes.iter().filter(|n| n.calculation.is_some()).count(),
        choice_lists: form.choice_lists.len(),
    }
}

impl fmt::Display for CheckSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} (form_id {}, version {})", self.title, self.form_id, self.version)?;
        writeln!(f, "languages: {}", self.languages.join(", "))?;
        write!(
            f,
            "{} questions, {} groups, {} repeats, {} calculations, {} choice lists",
            self.questions, self.groups, self.repeats, self.calculations, self.choice_lists
        )
    }
}

/// An import error as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct ImportErrorReport {
    pub sheet: String,
    pub row: u32,
    pub column: String,
    pub message: String,
}

impl From<&ImportError> for ImportErrorReport {
    fn from(e: &ImportError) -> Self {
        ImportErrorReport {
            sheet: e.sheet.clone(),
            row: e.row,
            column: e.column.clone(),
            message: e.message.clone(),
        }
    }
}

/// A calculated value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalculatedValue {
    pub path: String,
    pub value: Json,
}

/// What a form shows for a set of answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preview {
    pub language: String,
    pub questions: Vec<QuestionView>,
    pub calculated: Vec<CalculatedValue>,
    pub errors: Vec<ValidationError>,
    /// Answers that could not be set (unknown question, wrong type), one message each.
    pub rejected: Vec<String>,
}

/// Fills a form in memory with `answers`, a JSON object from question names (or field paths)
/// to values, where a repeat's value is an array of objects, one per row, and reports what it
/// shows. Rows get ids 00000000-…-0001, …-0002 in order, so output is reproducible.
pub fn preview(form: &Form, answers: &Json, lang: Option<&str>) -> Result<Preview, FormError> {
    let mut engine = Engine::new(form)?;
    engine.set_language(lang);
    engine.load(&[], &|_| Vec::new());
    engine.apply_defaults(&|_| false);
    let Json::Object(map) = answers else {
        return Err(FormError::WrongType { question: "(answers)".into(), expected: "a JSON object".into() });
    };
    let mut rejected = Vec::new();
    let mut next_row = 0u128;
    fill(&mut engine, map, None, &mut next_row, &mut rejected);
    for _ in 0..8 {
        let actions = engine.repeat_count_actions();
        if actions.is_empty() {
            break;
        }
        for action in actions {
            let result = match action {
                RowAction::Add(path) => {
                    next_row += 1;
                    engine.add_row(&path, Uuid::from_u128(next_row))
                }
                RowAction::Remove(path, row) => engine.remove_row(&path, row),
            };
            if let Err(e) = result {
                rejected.push(e.to_string());
            }
        }
    }
    let language = form.language(lang);
    Ok(Preview {
        language,
        questions: engine.visible_questions(lang),
        calculated: engine
            .calculated_values()
            .into_iter()
            .map(|(path, value)| CalculatedValue { path, value })
            .collect(),
        errors: engine.errors(lang),
        rejected,
    })
}

/// Sets the answers of one object: the top level (`row` None) or a repeat row
/// (`row` = (the row's field path, the repeat's schema path)).
fn fill(
    engine: &mut Engine,
    map: &serde_json::Map<String, Json>,
    row: Option<(&str, &str)>,
    next_row: &mut u128,
    rejected: &mut Vec<String>,
) {
    for (name, value) in map {
        let node = engine.form().node(name).cloned();
        let path = match (&node, row) {
            (Some(n), Some((row_path, repeat_schema))) => match n.path.strip_prefix(repeat_schema) {
                Some(rest) => format!("{row_path}{rest}"),
                None => name.clone(),
            },
            (Some(n), None) if !n.path.contains('/') || engine.key_of(&n.path).is_ok() => n.path.clone(),
            _ => name.clone(),
        };
        if node.as_ref().is_some_and(|n| n.kind == QuestionType::Repeat) {
            let Json::Array(rows) = value else {
                rejected.push(format!("{name}: a repeat takes an array of rows"));
                continue;
            };
            let repeat_schema = node.as_ref().map(|n| n.path.clone()).unwrap_or_default();
            let path = match engine.repeat_field_path(&path) {
                Ok(p) => p,
                Err(e) => {
                    rejected.push(e.to_string());
                    continue;
                }
            };
            for r in rows {
                *next_row += 1;
                let id = Uuid::from_u128(*next_row);
                if let Err(e) = engine.add_row(&path, id) {
                    rejected.push(format!("{name}: {e}"));
                    break;
                }
                let Json::Object(fields) = r else {
                    rejected.push(format!("{name}: each row is an object of answers"));
                    continue;
                };
                let row_path = format!("{path}/{id}");
                fill(engine, fields, Some((&row_path, &repeat_schema)), next_row, rejected);
            }
            continue;
        }
        if let Err(e) = engine.set_answer(&path, value) {
            rejected.push(e.to_string());
        }
    }
}

impl fmt::Display for Preview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Visible questions ({}):", self.language)?;
        for q in &self.questions {
            let value = match &q.value {
                Json::Null => String::new(),
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            let req = if q.required { " *" } else { "" };
            write!(f, "  {} [{}]{req} {}: {}", q.path, q.kind.as_str(), q.label, value)?;
            if let Some(e) = &q.error {
                write!(f, "   <- {e}")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "Calculated values:")?;
        for c in &self.calculated {
            writeln!(f, "  {} = {}", c.path, c.value)?;
        }
        writeln!(f, "Errors: {}", self.errors.len())?;
        for e in &self.errors {
            writeln!(f, "  {}: {}", e.path, e.message)?;
        }
        if !self.rejected.is_empty() {
            writeln!(f, "Rejected answers:")?;
            for r in &self.rejected {
                writeln!(f, "  {r}")?;
            }
        }
        Ok(())
    }
}
