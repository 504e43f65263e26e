//! `TejidoStore`: the device's store as the apps see it. Every method is safe to call from any
//! thread at any time (a UI thread and a sync worker share one store); calls are serialised
//! inside the core store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tejido_core::doc::{meta, Comment};

use tejido_core::store::{self as core_store, StatusFilter, StoreOptions};
use tejido_core::{DocId, Store};
use uuid::Uuid;

use crate::forms::typed_answer;
use crate::values::AnswerValue;
use crate::TejidoError;
use tejido_core::form::Form;

/// Where a submission is in its life on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SubmissionStatus {
    /// Still being filled; it stays on this device.
    Draft,
    /// Finalized: it syncs, and later edits sync too.
    Finalized,
}

/// Which submissions to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SubmissionFilter {
    All,
    Drafts,
    Finalized,
}

/// One line of the submission list.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SubmissionSummary {
    pub id: String,
    pub form_id: Option<String>,
    pub form_version: Option<String>,
    pub status: SubmissionStatus,
    /// The coordinator's review state (`approved`, `has_issues`, ...), once reviewed.
    pub review_state: Option<String>,
    /// How many fields hold concurrent values waiting for review.
    pub conflict_count: u32,
    /// The coordinators' comments, oldest first.
    pub comments: Vec<ReviewComment>,
}

/// A coordinator's comment on a submission, received on sync.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ReviewComment {
    pub id: String,
    pub text: String,
    /// Who wrote it, as the server names them.
    pub author: Option<String>,
    /// The review state the comment came with (`has_issues`, `approved`).
    pub review_state: Option<String>,
}

/// One review state a submission was given.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ReviewEvent {
    /// `approved` or `has_issues`.
    pub state: String,
    /// When, in milliseconds since 1970 (the reviewing replica's clock).
    pub at_ms: u64,
    /// The replica that wrote it (a coordinator's device, or the server).
    pub replica: String,
}

/// A submission's review history.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ReviewHistory {
    /// The review state now, if reviewed.
    pub current_state: Option<String>,
    /// Review states written concurrently with the current one and not yet replaced.
    pub concurrent_states: Vec<String>,
    /// Every review state given, oldest first (superseded ones too).
    pub reviews: Vec<ReviewEvent>,
    /// The comments on it, oldest first.
    pub comments: Vec<ReviewComment>,
}

/// One answer of a submission.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Answer {
    /// The field path: `place`, or inside a repeat row `members/<row id>/age`.
    pub field: String,
    pub value: AnswerValue,
}

/// A field whose value was overwritten by a concurrent edit: both are kept for review.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct FieldConflict {
    pub field: String,
    /// The value shown now (the winner).
    pub current: AnswerValue,
    /// The concurrent values nobody has yet replaced.
    pub others: Vec<AnswerValue>,
}

/// A submission as this device sees it now.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Submission {
    pub id: String,
    pub form_id: Option<String>,
    pub form_version: Option<String>,
    pub status: SubmissionStatus,
    pub review_state: Option<String>,
    /// Answers (not metadata), by field path.
    pub answers: Vec<Answer>,
    pub conflicts: Vec<FieldConflict>,
    /// The coordinators' comments, oldest first.
    pub comments: Vec<ReviewComment>,
}

/// A document's fields with open conflicts.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct DocumentConflicts {
    pub document_id: String,
    pub fields: Vec<FieldConflict>,
}

/// The device's store: one SQLite file, with attachments in a folder beside it.
#[derive(uniffi::Object)]
pub struct TejidoStore {
    pub(crate) store: Arc<Store>,
}

impl std::fmt::Debug for TejidoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.store.fmt(f)
    }
}

#[uniffi::export]
impl TejidoStore {
    /// Opens the store at `path`, creating it if there is none.
    ///
    /// A store has one owner: while a handle is open, opening the same path again, in this app
    /// or in another process, fails at once with `StoreLocked`. Within an app, open the store
    /// once and share that handle (it is safe to use from several threads).
    #[uniffi::constructor]
    pub fn open(path: String) -> Result<Arc<TejidoStore>, TejidoError> {
        Self::open_with(path, true)
    }

    /// Opens an existing store; a missing file is `StoreMissing`, never a new empty store.
    #[uniffi::constructor]
    pub fn open_existing(path: String) -> Result<Arc<TejidoStore>, TejidoError> {
        Self::open_with(path, false)
    }

    /// Opens (or creates) the store at `path` encrypted with `key`: bytes the app keeps in the
    /// Android Keystore or the iOS Keychain (32 random bytes). A wrong key is `WrongKey` and
    /// changes nothing. The one-owner rule of `open` applies.
    #[uniffi::constructor]
    pub fn open_encrypted(path: String, key: Vec<u8>) -> Result<Arc<TejidoStore>, TejidoError> {
        let store = Store::open_encrypted(&path, &key)?;
        Ok(Arc::new(TejidoStore { store: Arc::new(store) }))
    }

    /// Converts the plain store at `path` into one encrypted with `key`, in place (the
    /// database and every attachment), then opens it. The store must not be open
    /// (`StoreLocked` otherwise); an encrypted store gives `StoreEncrypted`. A crash part-way
    /// leaves the plain store or the encrypted one at the next open, never a mix; afterwards
    /// only `open_encrypted` with this key opens it.
    #[uniffi::constructor]
    pub fn encrypt_in_place(path: String, key: Vec<u8>) -> Result<Arc<TejidoStore>, TejidoError> {
        Store::encrypt_in_place(&path, &key)?;
        Self::open_encrypted(path, key)
    }

    /// Re-encrypts an encrypted store with a new key, atomically.
    pub fn rekey(&self, new_key: Vec<u8>) -> Result<(), TejidoError> {
        Ok(self.store.rekey(&new_key)?)
    }

    /// This device's replica id.
    pub fn replica_id(&self) -> String {
        self.store.replica_id().to_string()
    }

    /// Sets the enumerator's `username`, `email` or `phonenumber` (`name`) for forms that record
    /// them, as ODK Collect's form metadata settings do; `None` or blank clears it. New drafts
    /// record it; a value over 254 characters or with a control character is `InvalidInput`.
    pub fn set_device_metadata(&self, name: String, value: Option<String>) -> Result<(), TejidoError> {
        Ok(self.store.set_device_metadata(device_metadata(&name)?, value.as_deref())?)
    }

    /// The value [`TejidoStore::set_device_metadata`] set, if any.
    pub fn device_metadata(&self, name: String) -> Result<Option<String>, TejidoError> {
        Ok(self.store.device_metadata(device_metadata(&name)?)?)
    }

    /// Starts a draft submission of a form version and returns its id.
    pub fn start_submission(&self, form_id: String, form_version: String) -> Result<String, TejidoError> {
        Ok(self.store.start_submission(&form_id, &form_version)?.to_string())
    }

    /// Sets one answer. Without a form session the store takes any well-formed field path.
    pub fn set_answer(
        &self,
        submission_id: String,
        field: String,
        value: AnswerValue,
    ) -> Result<(), TejidoError> {
        let doc = parse_doc(&submission_id)?;
        Ok(self.store.set_answer(doc, &field, value.into_json()?)?)
    }

    /// Clears an answer.
    pub fn clear_answer(&self, submission_id: String, field: String) -> Result<(), TejidoError> {
        Ok(self.store.clear_answer(parse_doc(&submission_id)?, &field)?)
    }

    /// Adds a row to a repeat and returns the row's id; its fields are `<repeat>/<row id>/<name>`.
    pub fn add_repeat_row(&self, submission_id: String, repeat: String) -> Result<String, TejidoError> {
        Ok(self.store.add_repeat_row(parse_doc(&submission_id)?, &repeat)?.to_string())
    }

    /// Removes a repeat row.
    pub fn remove_repeat_row(
        &self,
        submission_id: String,
        repeat: String,
        row_id: String,
    ) -> Result<(), TejidoError> {
        let row = Uuid::parse_str(&row_id)
            .map_err(|_| TejidoError::InvalidInput("a repeat row id must be a UUID".into()))?;
        Ok(self.store.remove_repeat_row(parse_doc(&submission_id)?, &repeat, row)?)
    }

    /// The rows of a repeat that exist now, oldest first.
    pub fn repeat_rows(&self, submission_id: String, repeat: String) -> Result<Vec<String>, TejidoError> {
        let doc = self.store.read_document(parse_doc(&submission_id)?)?;
        Ok(doc.rows(&repeat).into_iter().map(|r| r.to_string()).collect())
    }

    /// Finalizes a draft: its answers become eligible to sync.
    pub fn finalize(&self, submission_id: String) -> Result<(), TejidoError> {
        Ok(self.store.finalize(parse_doc(&submission_id)?)?)
    }

    /// Deletes a submission (a draft is removed; a finalized one gets a tombstone that syncs).
    pub fn delete_submission(&self, submission_id: String) -> Result<(), TejidoError> {
        Ok(self.store.delete_document(parse_doc(&submission_id)?)?)
    }

    /// The submissions on this device, oldest first, with their review state.
    pub fn list_submissions(&self, filter: SubmissionFilter) -> Result<Vec<SubmissionSummary>, TejidoError> {
        let filter = match filter {
            SubmissionFilter::All => StatusFilter::All,
            SubmissionFilter::Drafts => StatusFilter::Drafts,
            SubmissionFilter::Finalized => StatusFilter::Finalized,
        };
        let list = self.store.list_submissions(filter)?;
        let mut comments = self.comments_by_submission()?;
        Ok(list
            .into_iter()
            .map(|s| SubmissionSummary {
                comments: comments.remove(&s.id.to_string()).unwrap_or_default(),
                id: s.id.to_string(),
                form_id: s.form,
                form_version: s.form_version,
                status: status(s.status),
                review_state: s.review_state,
                conflict_count: u32::try_from(s.conflicts).unwrap_or(u32::MAX),
            })
            .collect())
    }

    /// Reads one submission: its answers, review state and open conflicts.
    pub fn read_submission(&self, submission_id: String) -> Result<Submission, TejidoError> {
        let doc = self.store.read_document(parse_doc(&submission_id)?)?;
        if doc.collection != tejido_core::Collection::Submission {
            return Err(TejidoError::NotFound(format!("there is no submission {submission_id}")));
        }
        // Typed by the submission's form when this device has it.
        let form = self.form_of(&doc)?;
        Ok(Submission {
            id: doc.id.to_string(),
            form_id: doc.text(meta::FORM).map(str::to_owned),
            form_version: doc.text(meta::FORM_VERSION).map(str::to_owned),
            status: status(doc.status()),
            review_state: doc.review_state().map(str::to_owned),
            answers: doc
                .answers()
                .map(|(f, v)| Answer {
                    field: f.to_string(),
                    value: typed_answer(form.as_ref(), f.as_str(), v),
                })
                .collect(),
            conflicts: doc.conflicts().map(|(f, s)| typed_conflict(form.as_ref(), f.as_str(), s)).collect(),
            comments: self.comments_by_submission()?.remove(&submission_id).unwrap_or_default(),
        })
    }

    /// Keeps a file's bytes beside the store and sets the field to refer to them; returns the
    /// file's SHA-256.
    pub fn attach_file(
        &self,
        submission_id: String,
        field: String,
        bytes: Vec<u8>,
        media_type: String,
    ) -> Result<String, TejidoError> {
        Ok(self.store.attach_file(parse_doc(&submission_id)?, &field, &bytes, &media_type)?)
    }

    /// Like `attach_file`, reading the file (a photo the camera saved) from disk.
    pub fn attach_file_from_path(
        &self,
        submission_id: String,
        field: String,
        path: String,
        media_type: String,
    ) -> Result<String, TejidoError> {
        let doc = parse_doc(&submission_id)?;
        Ok(self.store.attach_file_from_path(doc, &field, &PathBuf::from(path), &media_type)?)
    }

    /// Where an attachment's bytes are on disk, in a plain store. An encrypted store's files
    /// are sealed, so this fails with `NotAllowed` there: use `read_attachment` or
    /// `export_attachment`.
    pub fn attachment_path(&self, sha256: String) -> Result<String, TejidoError> {
        Ok(self.store.attachment_path(&sha256)?.to_string_lossy().into_owned())
    }

    /// An attachment's bytes (decrypted in an encrypted store), checked against its SHA-256; a
    /// damaged or tampered file gives `AttachmentDamaged`, never wrong bytes.
    pub fn read_attachment(&self, sha256: String) -> Result<Vec<u8>, TejidoError> {
        Ok(self.store.read_attachment(&sha256)?)
    }

    /// Writes an attachment's bytes to `path` (a viewer's cache file), streamed in chunks and
    /// checked against its SHA-256; returns the number of bytes written. The file written is
    /// plain: delete it when the viewer is done.
    pub fn export_attachment(&self, sha256: String, path: String) -> Result<u64, TejidoError> {
        Ok(self.store.export_attachment(&sha256, &PathBuf::from(path))?)
    }

    /// Every document with fields holding concurrent values.
    pub fn conflicts(&self) -> Result<Vec<DocumentConflicts>, TejidoError> {
        Ok(self
            .store
            .conflicts()?
            .into_iter()
            .map(|d| DocumentConflicts {
                document_id: d.doc.to_string(),
                fields: d.fields.iter().map(|(f, s)| field_conflict(f.as_str(), s)).collect(),
            })
            .collect())
    }

    /// Replaces every open value of a field with `value`, closing its conflict.
    pub fn resolve_conflict(
        &self,
        document_id: String,
        field: String,
        value: AnswerValue,
    ) -> Result<(), TejidoError> {
        let doc = parse_doc(&document_id)?;
        Ok(self.store.resolve_conflict(doc, &field, value.into_json()?)?)
    }

    /// A coordinator's review of a submission: `state` is `approved` or `has_issues`
    /// (another is `InvalidInput`); it replaces every open review value. With a comment, a
    /// comment carrying the state is created too, in the same transaction; its id is returned.
    /// Both reach the enumerator on the next syncs.
    pub fn review_submission(
        &self,
        submission_id: String,
        state: String,
        comment: Option<String>,
    ) -> Result<Option<String>, TejidoError> {
        let doc = parse_doc(&submission_id)?;
        Ok(self.store.review_submission(doc, &state, comment.as_deref())?.map(|id| id.to_string()))
    }

    /// Comments on a submission (a coordinator's question, or an enumerator's reply); returns
    /// the comment's id. The server records who wrote it.
    pub fn add_comment(&self, submission_id: String, text: String) -> Result<String, TejidoError> {
        Ok(self.store.add_comment(parse_doc(&submission_id)?, &text)?.to_string())
    }

    /// A submission's review history: every review state it was given (superseded ones too),
    /// oldest first, the state now (and concurrent ones not yet replaced), and its comments.
    pub fn review_history(&self, submission_id: String) -> Result<ReviewHistory, TejidoError> {
        let doc_id = parse_doc(&submission_id)?;
        let doc = self.store.read_document(doc_id)?;
        if doc.collection != tejido_core::Collection::Submission {
            return Err(TejidoError::NotFound(format!("there is no submission {submission_id}")));
        }
        let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        let reviews = self
            .store
            .field_history(doc_id, meta::REVIEW_STATE)?
            .into_iter()
            .filter_map(|c| {
                Some(ReviewEvent {
                    state: text(&c.value)?,
                    at_ms: c.op.hlc.ms(),
                    replica: c.op.replica.to_string(),
                })
            })
            .collect();
        let open = doc.fields.iter().find(|(f, _)| f.as_str() == meta::REVIEW_STATE).map(|(_, s)| s);
        Ok(ReviewHistory {
            current_state: open.and_then(|s| text(&s.value)),
            concurrent_states: open
                .map(|s| s.conflicts.iter().filter_map(|c| text(&c.value)).collect())
                .unwrap_or_default(),
            reviews,
            comments: self.comments_by_submission()?.remove(&submission_id).unwrap_or_default(),
        })
    }

    /// How many local changes wait to be sent to the server.
    pub fn pending_change_count(&self) -> Result<u64, TejidoError> {
        Ok(self.store.pending_count()?)
    }
}

impl TejidoStore {
    /// Every comment document, grouped by the submission it is about, oldest first.
    fn comments_by_submission(&self) -> Result<HashMap<String, Vec<ReviewComment>>, TejidoError> {
        let mut out: HashMap<String, Vec<ReviewComment>> = HashMap::new();
        // Comment ids are time-ordered (UUIDv7), and list_documents returns them in id order.
        for id in self.store.list_documents(tejido_core::Collection::Comment)? {
            let doc = self.store.read_document(id)?;
            if doc.is_deleted() {
                continue;
            }
            let Some(comment) = Comment::read(&doc) else { continue };
            out.entry(comment.submission.to_string()).or_default().push(ReviewComment {
                id: id.to_string(),
                text: comment.text,
                author: comment.author,
                review_state: comment.review_state,
            });
        }
        Ok(out)
    }

    fn open_with(path: String, create: bool) -> Result<Arc<TejidoStore>, TejidoError> {
        let options = StoreOptions { create, ..StoreOptions::default() };
        let store = Store::open_with(&path, options)?;
        Ok(Arc::new(TejidoStore { store: Arc::new(store) }))
    }
}

pub(crate) fn parse_doc(id: &str) -> Result<DocId, TejidoError> {
    id.parse().map_err(|_| TejidoError::InvalidInput("a submission id must be a UUID".into()))
}

fn status(s: core_store::SubmissionStatus) -> SubmissionStatus {
    match s {
        core_store::SubmissionStatus::Draft => SubmissionStatus::Draft,
        core_store::SubmissionStatus::Finalized => SubmissionStatus::Finalized,
    }
}

fn field_conflict(field: &str, state: &core_store::FieldState) -> FieldConflict {
    typed_conflict(None, field, state)
}

fn typed_conflict(form: Option<&Form>, field: &str, state: &core_store::FieldState) -> FieldConflict {
    FieldConflict {
        field: field.to_owned(),
        current: typed_answer(form, field, &state.value),
        others: state.conflicts.iter().map(|c| typed_answer(form, field, &c.value)).collect(),
    }
}

fn device_metadata(name: &str) -> Result<tejido_core::store::DeviceMetadata, TejidoError> {
    tejido_core::store::DeviceMetadata::parse(name).ok_or_else(|| {
        TejidoError::InvalidInput("device metadata is one of: username, email, phonenumber".into())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tejido_core::doc::PublishedForm;

    fn store() -> (tempfile::TempDir, Arc<TejidoStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = TejidoStore::open(dir.path().join("device.db").display().to_string()).unwrap();
        (dir, store)
    }

    /// A form as the server publishes it, so that submissions of it read back typed.
    fn receive_form(store: &TejidoStore) -> Form {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/forms/victimizacion_hogares.xlsx");
        let form = tejido_core::form::import_xlsform(std::path::Path::new(path)).unwrap();
        let published = PublishedForm {
            form_id: form.settings.form_id.clone(),
            version: form.settings.version.clone(),
            roles: vec!["enumerator".into()],
            form: serde_json::to_value(&form).unwrap(),
        };
        let fields: Vec<(String, serde_json::Value)> =
            published.ops().into_iter().map(|op| (op.field.as_str().to_owned(), op.value)).collect();
        let refs: Vec<(&str, serde_json::Value)> =
            fields.iter().map(|(f, v)| (f.as_str(), v.clone())).collect();
        store.store.create_document(tejido_core::Collection::Form, &refs).unwrap();
        form
    }

    fn answer(sub: &Submission, field: &str) -> Option<AnswerValue> {
        sub.answers.iter().find(|a| a.field == field).map(|a| a.value.clone())
    }

    #[test]
    fn typed_values_read_back_as_written() {
        let (_dir, store) = store();
        let form = receive_form(&store);
        let sub =
            store.start_submission(form.settings.form_id.clone(), form.settings.version.clone()).unwrap();
        let picks = AnswerValue::Choices { names: vec!["drugs".into(), "robberies".into()] };
        let one = AnswerValue::Choices { names: vec!["yes".into()] };
        let point = AnswerValue::Geopoint {
            latitude: 8.98,
            longitude: -79.52,
            altitude: Some(12.5),
            accuracy: Some(4.0),
        };
        store.set_answer(sub.clone(), "problems".into(), picks.clone()).unwrap();
        store.set_answer(sub.clone(), "consent".into(), one.clone()).unwrap();
        store.set_answer(sub.clone(), "home_gps".into(), point.clone()).unwrap();
        let read = store.read_submission(sub.clone()).unwrap();
        assert_eq!(answer(&read, "problems"), Some(picks.clone()));
        assert_eq!(answer(&read, "home_gps"), Some(point));
        // select_one reads back as the one choice picked.
        assert_eq!(answer(&read, "consent"), Some(one));

        // A point with no altitude (and no accuracy) keeps having none.
        let flat =
            AnswerValue::Geopoint { latitude: 8.98, longitude: -79.52, altitude: None, accuracy: None };
        store.set_answer(sub.clone(), "home_gps".into(), flat.clone()).unwrap();
        assert_eq!(answer(&store.read_submission(sub.clone()).unwrap(), "home_gps"), Some(flat));

        // Without the form, choices still read back as choices, dates as text.
        let other = store.start_submission("unknown_form".into(), "1".into()).unwrap();
        store.set_answer(other.clone(), "problems".into(), picks.clone()).unwrap();
        store
            .set_answer(other.clone(), "when".into(), AnswerValue::Date { value: "2026-11-28".into() })
            .unwrap();
        let read = store.read_submission(other).unwrap();
        assert_eq!(answer(&read, "problems"), Some(picks));
        assert_eq!(answer(&read, "when"), Some(AnswerValue::Text { value: "2026-11-28".into() }));
    }

    #[test]
    fn a_coordinator_reviews_comments_and_reads_the_history() {
        let (_dir, store) = store();
        let sub = store.start_submission("f".into(), "1".into()).unwrap();
        store.set_answer(sub.clone(), "age".into(), AnswerValue::Integer { value: 200 }).unwrap();
        store.finalize(sub.clone()).unwrap();
        let before = store.pending_change_count().unwrap();

        let comment = store
            .review_submission(sub.clone(), "has_issues".into(), Some("¿200 años?".into()))
            .unwrap()
            .unwrap();
        assert_eq!(store.pending_change_count().unwrap(), before + 2, "the review and its comment sync");
        assert!(store.review_submission(sub.clone(), "approved".into(), None).unwrap().is_none());
        let reply = store.add_comment(sub.clone(), "Corregido: 20".into()).unwrap();
        let err = store.review_submission(sub.clone(), "maybe".into(), None).unwrap_err();
        assert!(matches!(err, TejidoError::InvalidInput(_)), "{err:?}");
        let err = store.review_submission("not-an-id".into(), "approved".into(), None).unwrap_err();
        assert!(matches!(err, TejidoError::InvalidInput(_)), "{err:?}");

        let history = store.review_history(sub.clone()).unwrap();
        assert_eq!(history.current_state.as_deref(), Some("approved"));
        assert!(history.concurrent_states.is_empty());
        let states: Vec<&str> = history.reviews.iter().map(|r| r.state.as_str()).collect();
        assert_eq!(states, ["has_issues", "approved"]);
        assert!(history.reviews[0].at_ms <= history.reviews[1].at_ms);
        assert_eq!(history.reviews[0].replica, store.replica_id());
        let comments: Vec<(&str, &str, Option<&str>)> = history
            .comments
            .iter()
            .map(|c| (c.id.as_str(), c.text.as_str(), c.review_state.as_deref()))
            .collect();
        assert_eq!(
            comments,
            [(comment.as_str(), "¿200 años?", Some("has_issues")), (reply.as_str(), "Corregido: 20", None)]
        );
        assert_eq!(store.read_submission(sub.clone()).unwrap().review_state.as_deref(), Some("approved"));

        // A comment or review must name a submission.
        let err = store.add_comment(comment.clone(), "x".into()).unwrap_err();
        assert!(matches!(err, TejidoError::NotAllowed(_)), "{err:?}");
        let err = store.review_history(comment).unwrap_err();
        assert!(matches!(err, TejidoError::NotFound(_)), "{err:?}");
    }
}
