//! A form session over a draft in the device store: answers are read from and written through
//! the store, the engine recomputes what depends on each answer, and finalizing leaves
//! non-relevant answers out of the submission.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::engine::Engine;
use super::engine::{FieldChange, RowAction};
use super::media;
use super::model::{Form, QuestionType};
use crate::crdt::DocId;
use crate::store::{audit_csv, AuditEvent, DeviceMetadata, Store, StoreError};

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
    /// A calculated or read-only question, metadata, or a repeat whose rows follow its
    /// repeat_count.
    #[error("{0} is read-only, calculated or counted")]
    ReadOnly(String),
    #[error("{0} is not a repeat of the form")]
    NotARepeat(String),
    #[error("question {question} is inside repeat {repeat}: name it by its path, {repeat}/<row id>/…")]
    InRepeat { question: String, repeat: String },
    #[error("repeat {repeat} has no row {row}")]
    UnknownRow { repeat: String, row: Uuid },
    #[error("document {doc} is a submission of form {found:?}, not of {expected:?}")]
    WrongForm { doc: DocId, expected: String, found: String },
    #[error("the form cannot be run: {0}")]
    InvalidForm(String),
    /// A media file of the form version (choices, `pulldata()` tables) has not reached the
    /// device yet.
    #[error("the form's media file {0} is not on this device yet: sync, then open the form again")]
    MissingMedia(String),
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
    /// The checks passed but the store could not finalize (the message says why).
    Store,
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
    /// The form's `audit` question, when it has one and the document is a draft.
    audit: Option<Audit>,
}

/// What the form's `audit` question asks to record.
struct Audit {
    /// The audit question's field path, which the attachment goes into.
    path: String,
    /// `track-changes=true`: each answer's old and new value.
    track_changes: bool,
    /// `identify-user=true`: who filled the form in, from the device's username setting.
    user: Option<Option<String>>,
}

/// An answer as text in the audit log (a string as it is, a number as written, none as empty).
fn audit_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl std::fmt::Debug for FormSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormSession")
            .field("doc", &self.doc)
            .field("form", &self.form().settings.form_id)
            .finish()
    }
}

/// At most this many failed checks of one refused finalize go into the audit log.
const MAX_ERRORS_AUDITED: usize = 50;

/// Gives the engine the form version's media files that the device holds. A draft cannot be
/// filled in without them, so one that has not arrived is an error; a finalized submission is
/// shown with what there is.
fn load_media(store: &Store, form: &Form, engine: &mut Engine, draft: bool) -> Result<(), FormError> {
    use std::io::Read;
    // Most forms carry no media: skip parsing every expression to find the files they use.
    if form.media.is_empty() {
        return Ok(());
    }
    for file in media::needed_media(form) {
        let Some(sha) = form.media.get(&file) else { continue };
        let reader = match store.open_attachment(sha) {
            Ok(r) => r,
            Err(StoreError::UnknownAttachment(_)) if !draft => continue,
            Err(StoreError::UnknownAttachment(_)) => return Err(FormError::MissingMedia(file)),
            Err(e) => return Err(e.into()),
        };
        let mut bytes = Vec::new();
        reader
            .take(media::MAX_MEDIA_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| FormError::InvalidForm(format!("media file {file} cannot be read: {e}")))?;
        let rows = media::parse_media(&file, &bytes).map_err(|e| FormError::InvalidForm(e.to_string()))?;
        engine.set_media(&file, rows);
    }
    Ok(())
}

/// The form's `audit` question, if it has one outside repeats.
fn session_audit(form: &Form, store: &Store) -> Result<Option<Audit>, FormError> {
    let Some(node) = form.nodes.iter().find(|n| n.kind == QuestionType::Audit) else { return Ok(None) };
    let on = |name: &str| node.parameters.get(name).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let user =
        if on("identify-user") { Some(store.device_metadata(DeviceMetadata::Username)?) } else { None };
    Ok(Some(Audit { path: node.path.clone(), track_changes: on("track-changes"), user }))
}

fn now_iso() -> String {
    chrono::Local::now().format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()
}

impl<'s> FormSession<'s> {
    /// Opens a session over submission `doc`, loading its answers; on a draft, fills the
    /// metadata (start, today, deviceid, instanceID), defaults and calculations.
    pub fn open(store: &'s Store, form: &Form, doc: DocId) -> Result<FormSession<'s>, FormError> {
        FormSession::open_with(StoreRef::Borrowed(store), form, doc)
    }

    fn open_with(store: StoreRef<'s>, form: &Form, doc: DocId) -> Result<FormSession<'s>, FormError> {
        let document = store.read_document(doc)?;
        if let Some(found) = document.text(crate::doc::meta::FORM) {
            if found != form.settings.form_id {
                return Err(FormError::WrongForm {
                    doc,
                    expected: form.settings.form_id.clone(),
                    found: found.to_owned(),
                });
            }
        }
        let mut engine = Engine::new(form)?;
        load_media(&store, form, &mut engine, document.draft)?;
        let answers: Vec<(String, serde_json::Value)> =
            document.answers().map(|(p, v)| (p.as_str().to_owned(), v.clone())).collect();
        let mut changes = engine.load(&answers, &|repeat| document.rows(repeat));
        if document.draft {
            changes.extend(engine.apply_defaults(&|path| document.value(path).is_some()));
            let today = chrono::Local::now().format("%Y-%m-%d").to_string();
            changes.extend(engine.set_metadata(QuestionType::Start, &now_iso(), true));
            changes.extend(engine.set_metadata(QuestionType::Today, &today, true));
            changes.extend(engine.set_metadata(
                QuestionType::DeviceId,
                &store.replica_id().to_string(),
                true,
            ));
            changes.extend(engine.set_metadata(QuestionType::InstanceId, &format!("uuid:{}", doc.0), true));
            for (kind, setting) in [
                (QuestionType::Username, DeviceMetadata::Username),
                (QuestionType::Email, DeviceMetadata::Email),
                (QuestionType::PhoneNumber, DeviceMetadata::PhoneNumber),
            ] {
                if let Some(value) = store.device_metadata(setting)? {
                    changes.extend(engine.set_metadata(kind, &value, true));
                }
            }
        }
        let audit = if document.draft { session_audit(form, &store)? } else { None };
        let mut session = FormSession { store, doc, engine, audit };
        // A finalized submission is only re-read: recomputing must not create edits that sync.
        if document.draft {
            session.write(changes)?;
        }
        if document.draft {
            session.follow_repeat_counts()?;
        }
        if session.audit.is_some() {
            let event = if session.store.has_audit_events(doc)? { "form resume" } else { "form start" };
            session.record(event, String::new(), None)?;
        }
        Ok(session)
    }

    /// Appends an event to the draft's audit log, when the form has an `audit` question.
    fn record(&self, event: &str, node: String, change: Option<(String, String)>) -> Result<(), FormError> {
        let Some(audit) = &self.audit else { return Ok(()) };
        let now = now_ms();
        let (old_value, new_value) = match change {
            Some((old, new)) if audit.track_changes => (Some(old), Some(new)),
            _ => (None, None),
        };
        let end_ms = matches!(event, "question" | "add repeat" | "delete repeat").then_some(now);
        self.store.append_audit_event(
            self.doc,
            &AuditEvent {
                event: event.to_owned(),
                node,
                start_ms: now,
                end_ms,
                old_value,
                new_value,
                user: audit.user.clone().flatten(),
            },
        )?;
        Ok(())
    }

    /// Writes changed fields as one change; on failure, reloads the engine from the store so
    /// memory never claims what the store does not hold.
    fn write(&mut self, changes: Vec<FieldChange>) -> Result<(), FormError> {
        if changes.is_empty() {
            return Ok(());
        }
        // Later changes of a field replace earlier ones within one write.
        let mut last: Vec<(String, serde_json::Value)> = Vec::with_capacity(changes.len());
        for (path, value) in changes {
            match last.iter_mut().find(|(p, _)| *p == path) {
                Some(slot) => slot.1 = value,
                None => last.push((path, value)),
            }
        }
        let fields: Vec<(&str, serde_json::Value)> =
            last.iter().map(|(p, v)| (p.as_str(), v.clone())).collect();
        if let Err(e) = self.store.set_fields(self.doc, &fields) {
            self.reload()?;
            return Err(e.into());
        }
        Ok(())
    }

    fn reload(&mut self) -> Result<(), FormError> {
        let document = self.store.read_document(self.doc)?;
        let answers: Vec<(String, serde_json::Value)> =
            document.answers().map(|(p, v)| (p.as_str().to_owned(), v.clone())).collect();
        self.engine.load(&answers, &|repeat| document.rows(repeat));
        Ok(())
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

    /// The engine (answers in memory) behind this session.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Sets an answer by question name (outside repeats) or field path
    /// (`repeat/<row>/question`), writes it to the store with the calculations it changes, and
    /// recomputes what depends on it. `null` clears it. A value of the wrong type, an unknown
    /// question or a read-only one is refused and nothing changes.
    pub fn set_answer(&mut self, name_or_path: &str, value: serde_json::Value) -> Result<(), FormError> {
        let old = match &self.audit {
            Some(a) if a.track_changes => Some(audit_text(&self.engine.value(name_or_path)?)),
            _ => None,
        };
        let changes = self.engine.set_answer(name_or_path, &value)?;
        self.write(changes)?;
        self.follow_repeat_counts()?;
        if self.audit.is_some() {
            let node = self.engine.xpath_of_path(name_or_path)?;
            let new = audit_text(&self.engine.value(name_or_path)?);
            self.record("question", node, old.map(|o| (o, new)))?;
        }
        Ok(())
    }

    /// Adds and removes rows until every repeat with a `repeat_count` has that many rows.
    fn follow_repeat_counts(&mut self) -> Result<(), FormError> {
        // Counts may depend on rows (a count of another repeat): settle in a few rounds.
        for _ in 0..8 {
            let actions = self.engine.repeat_count_actions();
            if actions.is_empty() {
                break;
            }
            for action in actions {
                match action {
                    RowAction::Add(path) => {
                        let row = self.store.add_repeat_row(self.doc, &path)?;
                        let changes = self.engine.add_row(&path, row)?;
                        self.write(changes)?;
                    }
                    RowAction::Remove(path, row) => {
                        self.store.remove_repeat_row(self.doc, &path, row)?;
                        let changes = self.engine.remove_row(&path, row)?;
                        self.write(changes)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The current value of a question (by name or path), as stored.
    pub fn value(&self, name_or_path: &str) -> Result<serde_json::Value, FormError> {
        self.engine.value(name_or_path)
    }

    /// Adds a row to a repeat (by name, or path for a nested repeat) and returns its id.
    pub fn add_repeat_row(&mut self, repeat: &str) -> Result<Uuid, FormError> {
        let path = self.engine.repeat_field_path(repeat)?;
        if self.engine.is_counted(&path) {
            return Err(FormError::ReadOnly(path));
        }
        let row = self.store.add_repeat_row(self.doc, &path)?;
        let changes = match self.engine.add_row(&path, row) {
            Ok(c) => c,
            Err(e) => {
                self.reload()?;
                return Err(e);
            }
        };
        self.write(changes)?;
        self.follow_repeat_counts()?;
        if self.audit.is_some() {
            self.record("add repeat", self.engine.row_xpath(&path, row)?, None)?;
        }
        Ok(row)
    }

    /// Removes a repeat row; its answers leave the submission.
    pub fn remove_repeat_row(&mut self, repeat: &str, row: Uuid) -> Result<(), FormError> {
        let path = self.engine.repeat_field_path(repeat)?;
        if self.engine.is_counted(&path) {
            return Err(FormError::ReadOnly(path));
        }
        if !self.engine.rows(&path)?.contains(&row) {
            return Err(FormError::UnknownRow { repeat: path, row });
        }
        let node = self.engine.row_xpath(&path, row)?;
        self.store.remove_repeat_row(self.doc, &path, row)?;
        let changes = self.engine.remove_row(&path, row)?;
        self.write(changes)?;
        self.follow_repeat_counts()?;
        self.record("delete repeat", node, None)
    }

    /// The rows of a repeat, in order.
    pub fn repeat_rows(&self, repeat: &str) -> Result<Vec<Uuid>, FormError> {
        self.engine.rows(repeat)
    }

    /// The questions to show now, in order, in language `lang` (a code such as `es`, a name,
    /// or `None` for the form's default).
    pub fn visible_questions(&self, lang: Option<&str>) -> Vec<QuestionView> {
        self.engine.visible_questions(lang)
    }

    /// Every failed check (required, constraint) among relevant questions.
    pub fn errors(&self, lang: Option<&str>) -> Vec<ValidationError> {
        self.engine.errors(lang)
    }

    /// Finalizes the draft, leaving non-relevant answers (and removed rows) out of the
    /// submission while the draft's history keeps them. Refuses, returning every error, while
    /// checks fail; a store failure comes back as one error of kind `Store`.
    ///
    /// With an `audit` question, a refusal records a `constraint error` for each failed check,
    /// and finalizing records `form finalize` and writes the draft's whole audit log into the
    /// `audit` attachment (`audit.csv`, as ODK Collect writes it).
    pub fn finalize(&mut self) -> Result<(), Vec<ValidationError>> {
        let store_error = |e: FormError| {
            vec![ValidationError {
                path: String::new(),
                name: String::new(),
                kind: ValidationKind::Store,
                message: e.to_string(),
            }]
        };
        let errors = self.engine.errors(None);
        if !errors.is_empty() {
            if self.audit.is_some() {
                for e in errors.iter().take(MAX_ERRORS_AUDITED) {
                    let node = self.engine.xpath_of_path(&e.path).unwrap_or_default();
                    self.record("constraint error", node, None).map_err(store_error)?;
                }
            }
            return Err(errors);
        }
        let end = self.engine.set_metadata(QuestionType::End, &now_iso(), false);
        self.write(end).map_err(store_error)?;
        if let Some(audit) = &self.audit {
            self.record("form finalize", String::new(), None).map_err(store_error)?;
            let events = self.store.audit_events(self.doc).map_err(|e| store_error(e.into()))?;
            let csv = audit_csv(&events, audit.track_changes, audit.user.is_some());
            self.store
                .attach_file(self.doc, &audit.path, csv.as_bytes(), "text/csv")
                .map_err(|e| store_error(e.into()))?;
        }
        let engine = &self.engine;
        self.store
            .finalize_omitting(self.doc, &|path| !engine.keeps_field(path.as_str()))
            .map_err(|e| store_error(e.into()))
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
