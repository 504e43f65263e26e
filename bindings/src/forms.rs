//! Forms on the device and form sessions: the questions to show in a language, answers checked
//! against their question's type, repeat rows, errors, and finalizing only a complete form.

use std::sync::{Arc, Mutex, MutexGuard};
use tejido_core::doc::{meta, PublishedForm};

use serde_json::Value;
use tejido_core::form::{self, Form, FormSession, QuestionType, ValidationKind};
use tejido_core::{Collection, DocId};
use uuid::Uuid;

use crate::store::{parse_doc, TejidoStore};
use crate::values::{typed_value, AnswerValue};
use crate::TejidoError;

/// A form definition: received from the server on sync, or imported from an XLSForm file.
#[derive(Debug, uniffi::Object)]
pub struct TejidoForm {
    form: Form,
}

#[uniffi::export]
impl TejidoForm {
    /// Imports an XLSForm (.xlsx, .xls or .ods). A broken form is `InvalidForm`, listing every
    /// problem by sheet, row and column.
    #[uniffi::constructor]
    pub fn import_xlsform(path: String) -> Result<Arc<TejidoForm>, TejidoError> {
        Ok(Arc::new(TejidoForm { form: form::import_xlsform(std::path::Path::new(&path))? }))
    }

    pub fn form_id(&self) -> String {
        self.form.settings.form_id.clone()
    }

    pub fn version(&self) -> String {
        self.form.settings.version.clone()
    }

    pub fn title(&self) -> String {
        self.form.settings.title.clone()
    }

    /// The languages of the form's text, as the form names them (`Español (es)`).
    pub fn languages(&self) -> Vec<String> {
        self.form.languages.clone()
    }
}

/// A choice of a select question, in the session's language.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct QuestionChoice {
    pub name: String,
    pub label: String,
}

/// A question to show now, with its value and error, in one language.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Question {
    /// The answer's field path (`place`, `participants/<row id>/age`): pass it to `set_answer`.
    pub path: String,
    pub name: String,
    /// The XLSForm type: `text`, `integer`, `select_multiple`, `image`, `geopoint`, ...
    pub kind: String,
    pub label: String,
    pub hint: Option<String>,
    pub value: AnswerValue,
    pub required: bool,
    pub read_only: bool,
    pub choices: Vec<QuestionChoice>,
    pub error: Option<String>,
}

/// What kind of check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum IssueKind {
    Required,
    Constraint,
    Store,
}

/// A failed check on one answer, with the form's message in the session's language.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct FormIssue {
    pub path: String,
    pub name: String,
    pub kind: IssueKind,
    pub message: String,
}

/// A form being filled in over a draft submission. Every answer is written to the store at
/// once, so nothing is lost if the app is killed; `TejidoStore.resume_form_session` reopens it.
#[derive(uniffi::Object)]
pub struct TejidoFormSession {
    session: Mutex<FormSession<'static>>,
    store: Arc<tejido_core::Store>,
    doc: DocId,
}

impl std::fmt::Debug for TejidoFormSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TejidoFormSession").field("doc", &self.doc).finish()
    }
}

#[uniffi::export]
impl TejidoFormSession {
    pub fn submission_id(&self) -> String {
        self.doc.to_string()
    }

    /// Sets an answer by question name (or field path inside a repeat) and recomputes what
    /// depends on it. A value of the wrong type is `InvalidAnswer`, a question the form does
    /// not have is `UnknownQuestion`; either way nothing changes.
    pub fn set_answer(&self, question: String, value: AnswerValue) -> Result<(), TejidoError> {
        let json = value.into_json()?;
        Ok(self.lock().set_answer(&question, json)?)
    }

    pub fn clear_answer(&self, question: String) -> Result<(), TejidoError> {
        Ok(self.lock().set_answer(&question, Value::Null)?)
    }

    /// The current value of a question, typed by its question type.
    pub fn value(&self, question: String) -> Result<AnswerValue, TejidoError> {
        let session = self.lock();
        let value = session.value(&question)?;
        let kind = question_kind(session.form(), &question);
        Ok(kind.map(|k| typed_value(k, &value)).unwrap_or_else(|| AnswerValue::from_json(&value)))
    }

    /// Keeps a photo (or any file) beside the store and answers the question with it; returns
    /// the file's SHA-256.
    pub fn attach_file(
        &self,
        question: String,
        bytes: Vec<u8>,
        media_type: String,
    ) -> Result<String, TejidoError> {
        let sha = self.store.store_attachment(&bytes, &media_type, false)?;
        let reference = tejido_core::store::attachment_ref(&sha);
        self.lock().set_answer(&question, Value::String(reference))?;
        Ok(sha)
    }

    /// Adds a row to a repeat and returns its id; its questions are `<repeat>/<row id>/<name>`.
    pub fn add_repeat_row(&self, repeat: String) -> Result<String, TejidoError> {
        Ok(self.lock().add_repeat_row(&repeat)?.to_string())
    }

    pub fn remove_repeat_row(&self, repeat: String, row_id: String) -> Result<(), TejidoError> {
        let row = Uuid::parse_str(&row_id)
            .map_err(|_| TejidoError::InvalidInput("a repeat row id must be a UUID".into()))?;
        Ok(self.lock().remove_repeat_row(&repeat, row)?)
    }

    pub fn repeat_rows(&self, repeat: String) -> Result<Vec<String>, TejidoError> {
        Ok(self.lock().repeat_rows(&repeat)?.iter().map(Uuid::to_string).collect())
    }

    /// The questions to show now, in order, in `language` (a code such as `es`, a name, or
    /// none for the form's default).
    pub fn visible_questions(&self, language: Option<String>) -> Vec<Question> {
        self.lock()
            .visible_questions(language.as_deref())
            .into_iter()
            .map(|q| Question {
                value: typed_value(q.kind, &q.value),
                path: q.path,
                name: q.name,
                kind: q.kind.as_str().to_owned(),
                label: q.label,
                hint: q.hint,
                required: q.required,
                read_only: q.read_only,
                choices: q
                    .choices
                    .into_iter()
                    .map(|c| QuestionChoice { name: c.name, label: c.label })
                    .collect(),
                error: q.error,
            })
            .collect()
    }

    /// Every failed check (required, constraint) among the questions that apply.
    pub fn errors(&self, language: Option<String>) -> Vec<FormIssue> {
        self.lock().errors(language.as_deref()).into_iter().map(issue).collect()
    }

    /// Finalizes the submission: it syncs from now on. While checks fail it is refused with
    /// `Incomplete`, naming the questions; `errors()` gives the details.
    pub fn finalize(&self) -> Result<(), TejidoError> {
        self.lock().finalize().map_err(|errors| {
            if let [only] = &errors[..] {
                if only.kind == ValidationKind::Store {
                    return TejidoError::NotAllowed(only.message.clone());
                }
            }
            let names: Vec<String> = errors.iter().map(|e| e.name.clone()).collect();
            TejidoError::Incomplete(format!(
                "the form cannot be finalized: {} question(s) need attention: {}",
                errors.len(),
                names.join(", ")
            ))
        })
    }
}

impl TejidoFormSession {
    fn lock(&self) -> MutexGuard<'_, FormSession<'static>> {
        // A panic cannot leave a half-written answer (each write is one transaction).
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[uniffi::export]
impl TejidoStore {
    /// The forms this device may fill: the newest version of each form its server published
    /// to it, in the order they were first published.
    pub fn list_forms(&self) -> Result<Vec<Arc<TejidoForm>>, TejidoError> {
        let mut latest: Vec<Form> = Vec::new();
        // Form documents have time-ordered ids, so a later publication comes later.
        for form in self.received_forms()? {
            match latest.iter_mut().find(|f| f.settings.form_id == form.settings.form_id) {
                Some(slot) => *slot = form,
                None => latest.push(form),
            }
        }
        Ok(latest.into_iter().map(|form| Arc::new(TejidoForm { form })).collect())
    }

    /// The exact form version a submission was started with (to resume or fix it after a newer
    /// version arrived).
    pub fn form_of_submission(&self, submission_id: String) -> Result<Arc<TejidoForm>, TejidoError> {
        let doc = self.store.read_document(parse_doc(&submission_id)?)?;
        let (id, version) = (doc.text(meta::FORM), doc.text(meta::FORM_VERSION));
        self.received_forms()?
            .into_iter()
            .find(|f| Some(f.settings.form_id.as_str()) == id && Some(f.settings.version.as_str()) == version)
            .map(|form| Arc::new(TejidoForm { form }))
            .ok_or_else(|| {
                TejidoError::NotFound(format!(
                    "this device has not received the form of submission {submission_id}"
                ))
            })
    }

    /// Starts a new draft submission of `form` and opens a session over it.
    pub fn start_form_session(&self, form: Arc<TejidoForm>) -> Result<Arc<TejidoFormSession>, TejidoError> {
        let s = &form.form.settings;
        let doc = self.store.start_submission(&s.form_id, &s.version)?;
        self.open_session(&form.form, doc)
    }

    /// Reopens a session over a submission of `form` (a draft to continue, or a finalized
    /// submission to fix after a coordinator's comment; fixes sync like any edit).
    pub fn resume_form_session(
        &self,
        form: Arc<TejidoForm>,
        submission_id: String,
    ) -> Result<Arc<TejidoFormSession>, TejidoError> {
        self.open_session(&form.form, parse_doc(&submission_id)?)
    }
}

impl TejidoStore {
    /// Every form version received, in publication order.
    /// The form a submission was started with, if this device received it.
    pub(crate) fn form_of(&self, doc: &tejido_core::store::Document) -> Result<Option<Form>, TejidoError> {
        let (id, version) = (doc.text(meta::FORM), doc.text(meta::FORM_VERSION));
        Ok(self.received_forms()?.into_iter().find(|f| {
            Some(f.settings.form_id.as_str()) == id && Some(f.settings.version.as_str()) == version
        }))
    }

    fn received_forms(&self) -> Result<Vec<Form>, TejidoError> {
        let mut forms = Vec::new();
        for doc in self.store.list_documents(Collection::Form)? {
            let d = self.store.read_document(doc)?;
            let Some(json) = d.value(PublishedForm::FORM) else { continue };
            // A form a newer server published in a shape this build cannot read is left out.
            if let Ok(form) = serde_json::from_value::<Form>(json.clone()) {
                forms.push(form);
            }
        }
        Ok(forms)
    }

    fn open_session(&self, form: &Form, doc: DocId) -> Result<Arc<TejidoFormSession>, TejidoError> {
        let session = FormSession::open_shared(self.store.clone(), form, doc)?;
        Ok(Arc::new(TejidoFormSession { session: Mutex::new(session), store: self.store.clone(), doc }))
    }
}

/// A stored value typed by its question in `form` when there is one (choices, points and dates
/// read back as written), by its JSON shape otherwise.
pub(crate) fn typed_answer(form: Option<&Form>, field: &str, value: &Value) -> AnswerValue {
    match form.and_then(|f| question_kind(f, field)) {
        Some(kind) => typed_value(kind, value),
        None => AnswerValue::from_json(value),
    }
}

fn question_kind(form: &Form, name_or_path: &str) -> Option<QuestionType> {
    let last = name_or_path.rsplit('/').next().unwrap_or(name_or_path);
    form.node(name_or_path).or_else(|| form.node(last)).map(|n| n.kind)
}

fn issue(e: form::ValidationError) -> FormIssue {
    FormIssue {
        path: e.path,
        name: e.name,
        kind: match e.kind {
            ValidationKind::Required => IssueKind::Required,
            ValidationKind::Constraint => IssueKind::Constraint,
            ValidationKind::Store => IssueKind::Store,
        },
        message: e.message,
    }
}
