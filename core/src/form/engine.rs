//! A pure form engine: answers in memory, recomputed along the form's dependency graph.

use super::model::Form;

/// The engine over one form's answers.
#[derive(Debug, Clone)]
pub struct Engine {
    form: Form,
}

impl Engine {
    pub fn new(form: &Form) -> Engine {
        Engine { form: form.clone() }
    }

    pub fn form(&self) -> &Form {
        &self.form
    }
}
