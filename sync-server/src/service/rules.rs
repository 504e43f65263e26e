//! Who may write what: the one place the server decides whether a device's change is admitted.
//! The table is also in `docs/protocol.md` ("Who writes what").
//!
//! | field | enumerator, youth (own documents) | coordinator (any of its project) |
//! | --- | --- | --- |
//! | answers (`household/size`, `members/<row>/age`, `…/_row`) | yes | yes |
//! | `_deleted` | yes | yes |
//! | `_form`, `_form_version` | once, in the change that creates the submission | same |
//! | `_author` | once, when creating, and only its own replica | same |
//! | `_status` | `"finalized"` only | same |
//! | `_review/state` | no | `approved` or `has_issues` |
//! | any other `_…` field | no | no |
//! | comment `submission`, `text` | yes, on its own submissions | yes |
//! | comment `review_state` | no | `approved` or `has_issues` |
//! | comment `author` | no: the server writes it from the credential | no |
//! | entities | no | yes (answers and `_deleted`) |
//! | forms | no: published by the server | no |

use tejido_core::doc::{meta, Comment};
use tejido_core::sync::wire::Role;
use tejido_core::{Change, Collection, FieldOp};
use uuid::Uuid;

use crate::storage::{Device, Result, StorageError, Tx};

/// The review states a coordinator may set.
pub use tejido_core::doc::REVIEW_STATES;

/// What a device receives (its scope), as data a backend turns into its query: coordinators
/// the whole project; enumerators and youth the project's entities, the forms published for
/// their role, the documents they created, and comments on the submissions they created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    pub project: Uuid,
    /// Everything of the project.
    pub everything: bool,
    /// The device whose own documents (and comments on them) are in scope.
    pub device: Uuid,
    /// Forms published for this role are in scope.
    pub role: Role,
}

impl Scope {
    pub fn of(device: &Device) -> Scope {
        Scope {
            project: device.project,
            everything: device.role == Role::Coordinator,
            device: device.id,
            role: device.role,
        }
    }
}

/// Blobs: a device may download a blob it uploaded, or one that a document it may read refers
/// to, when the reference was written by the blob's uploader or by a coordinator. (Putting
/// another device's photo hash into one's own submission does not make the photo readable.)
/// A coordinator may download any blob of its project.
pub fn reference_counts(writer: &Device, writer_uploaded_it: bool) -> bool {
    writer.role == Role::Coordinator || writer_uploaded_it
}

/// Whether a review (its state and its comment, if any) may be written at all.
/// An answer a coordinator gives: the text typed into the web app's box, or JSON from the API.
#[derive(Clone, Debug)]
pub enum AnswerInput {
    Text(String),
    Json(serde_json::Value),
}

/// An answer as the form's question takes it: a whole number for integer questions, a number
/// for decimal ones (a decimal comma read as a point), text otherwise; empty text clears the
/// answer. JSON other than a string is kept as given, but a numeric question takes only a
/// number (or null). `form` is the submission's form when it is published.
pub fn typed_answer(
    form: Option<&tejido_core::form::Form>,
    field: &str,
    input: AnswerInput,
) -> Result<serde_json::Value> {
    use serde_json::Value;
    use tejido_core::form::QuestionType;
    let schema: Vec<&str> = field.split('/').filter(|p| Uuid::try_parse(p).is_err()).collect();
    let node = form.and_then(|f| f.node_at(&schema.join("/")));
    let kind = node.map(|n| n.kind);
    let invalid = |m: &str| StorageError::Invalid(m.to_owned());
    let whole = "this question takes a whole number";
    let number = "this question takes a number";
    // A select question with its choices in the form takes their names, stored as the form
    // engine stores them: space-separated.
    let choices = match (form, node) {
        (Some(f), Some(n))
            if matches!(
                n.kind,
                QuestionType::SelectOne | QuestionType::SelectMultiple | QuestionType::Rank
            ) =>
        {
            n.list.as_ref().and_then(|l| f.choice_lists.get(l)).map(|list| (n.kind, list))
        }
        _ => None,
    };
    if let Some((kind, list)) = choices {
        let picks: Vec<String> = match input {
            AnswerInput::Text(text) | AnswerInput::Json(Value::String(text)) => {
                text.split_whitespace().map(str::to_owned).collect()
            }
            AnswerInput::Json(Value::Null) => Vec::new(),
            AnswerInput::Json(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.trim().to_owned()),
                    _ => Err(invalid("this question takes the names of its choices")),
                })
                .collect::<Result<_>>()?,
            AnswerInput::Json(_) => return Err(invalid("this question takes the names of its choices")),
        };
        if picks.is_empty() {
            return Ok(Value::Null);
        }
        if kind == QuestionType::SelectOne && picks.len() > 1 {
            return Err(invalid("this question takes one of its choices"));
        }
        let unknown = picks.iter().filter(|p| !list.iter().any(|c| &c.name == *p)).count();
        if unknown > 0 {
            return Err(StorageError::Invalid(format!(
                "{unknown} of the names given is not a choice of this question"
            )));
        }
        return Ok(Value::String(picks.join(" ")));
    }
    match input {
        AnswerInput::Text(text) | AnswerInput::Json(Value::String(text)) => {
            let text = text.trim();
            if text.is_empty() {
                return Ok(Value::Null);
            }
            match kind {
                Some(QuestionType::Integer) => {
                    text.parse::<i64>().map(Value::from).map_err(|_| invalid(whole))
                }
                Some(QuestionType::Decimal) => text
                    .replace(',', ".")
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .map(Value::from)
                    .ok_or_else(|| invalid(number)),
                _ => Ok(Value::String(text.to_owned())),
            }
        }
        AnswerInput::Json(Value::Null) => Ok(Value::Null),
        AnswerInput::Json(v) => match kind {
            Some(QuestionType::Integer) if !(v.is_i64() || v.is_u64()) => Err(invalid(whole)),
            Some(QuestionType::Decimal) if !v.is_number() => Err(invalid(number)),
            _ => Ok(v),
        },
    }
}

pub fn check_review(state: &str, comment: Option<&str>) -> Result<()> {
    if !REVIEW_STATES.contains(&state) {
        return Err(StorageError::Invalid("state must be approved or has_issues".into()));
    }
    if comment.is_some_and(|c| c.len() > super::limits::MAX_COMMENT_BYTES) {
        return Err(StorageError::TooLarge(format!(
            "a review comment has at most {} bytes",
            super::limits::MAX_COMMENT_BYTES
        )));
    }
    Ok(())
}

/// What admitting a change asks storage to do before merging it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The change creates its document: record it, authored by the pushing device, with this
    /// parent (the submission a comment is about).
    pub create: Option<Option<Uuid>>,
    /// The change creates a comment: the server adds its `author` from the credential.
    pub new_comment: bool,
}

/// The kinds of field the table above distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldKind {
    Answer,
    Deleted,
    WriteOnce,
    Author,
    Status,
    ReviewState,
    CommentSubmission,
    CommentText,
    CommentReviewState,
    ServerWritten,
    Refused,
}

fn kind(collection: Collection, field: &str) -> FieldKind {
    match collection {
        Collection::Submission | Collection::Entity => {
            let submission = collection == Collection::Submission;
            match field {
                meta::DELETED => FieldKind::Deleted,
                meta::FORM | meta::FORM_VERSION if submission => FieldKind::WriteOnce,
                meta::AUTHOR if submission => FieldKind::Author,
                meta::STATUS if submission => FieldKind::Status,
                meta::REVIEW_STATE if submission => FieldKind::ReviewState,
                f if f.starts_with('_') => FieldKind::Refused,
                _ => FieldKind::Answer,
            }
        }
        Collection::Comment => match field {
            Comment::SUBMISSION => FieldKind::CommentSubmission,
            Comment::TEXT => FieldKind::CommentText,
            Comment::REVIEW_STATE => FieldKind::CommentReviewState,
            Comment::AUTHOR => FieldKind::ServerWritten,
            meta::DELETED => FieldKind::Deleted,
            _ => FieldKind::Refused,
        },
        Collection::Form => FieldKind::ServerWritten,
    }
}

fn forbidden(change: &Change, op: &FieldOp, why: &str) -> StorageError {
    StorageError::Forbidden(format!("change to document {}: field {} {why}", change.doc.0, op.field.as_str()))
}

/// Checks one field op against the table. Values are checked only where the table names them;
/// the message names the field, never the value.
async fn check_field(
    tx: &mut dyn Tx,
    device: &Device,
    change: &Change,
    op: &FieldOp,
    creating: bool,
) -> Result<()> {
    let coordinator = device.role == Role::Coordinator;
    let text = op.value.as_str();
    match kind(change.collection, op.field.as_str()) {
        FieldKind::Answer | FieldKind::Deleted | FieldKind::CommentText => Ok(()),
        FieldKind::CommentSubmission => Ok(()),
        FieldKind::WriteOnce | FieldKind::Author => {
            if kind(change.collection, op.field.as_str()) == FieldKind::Author
                && text != Some(device.replica.to_string().as_str())
            {
                return Err(forbidden(change, op, "must name the writing device's own replica"));
            }
            if creating {
                return Ok(());
            }
            // Set once: only a repeat of the op that set it is accepted.
            let known = tx.known_op_ids(change.doc.0, op.field.as_str()).await?;
            if known.iter().all(|id| *id == change.op_id()) {
                Ok(())
            } else {
                Err(forbidden(change, op, "is set when the submission is created and never changes"))
            }
        }
        FieldKind::Status => {
            if text == Some(meta::FINALIZED) {
                Ok(())
            } else {
                Err(forbidden(change, op, "may only be \"finalized\""))
            }
        }
        FieldKind::ReviewState | FieldKind::CommentReviewState => {
            if !coordinator {
                return Err(forbidden(change, op, "is written only by coordinators"));
            }
            if text.is_some_and(|s| REVIEW_STATES.contains(&s)) {
                Ok(())
            } else {
                Err(StorageError::Invalid(format!(
                    "change to document {}: field {} must be approved or has_issues",
                    change.doc.0,
                    op.field.as_str()
                )))
            }
        }
        FieldKind::ServerWritten => Err(forbidden(change, op, "is written by the server, not by devices")),
        FieldKind::Refused => Err(forbidden(change, op, "is not a field devices may write")),
    }
}

/// The submission a comment change names in its `submission` field, if it writes one.
fn comment_target(change: &Change) -> Result<Option<Uuid>> {
    let Some(op) = change.ops.iter().find(|op| op.field.as_str() == Comment::SUBMISSION) else {
        return Ok(None);
    };
    op.value
        .as_str()
        .and_then(|s| Uuid::try_parse(s).ok())
        .map(Some)
        .ok_or_else(|| StorageError::Invalid("a comment's `submission` field must hold a document id".into()))
}

/// Decides whether `device` may write `change`, inside the transaction that will apply it.
/// Every refusal is an error; the caller rolls the whole batch back.
pub async fn admit_change(tx: &mut dyn Tx, device: &Device, change: &Change) -> Result<Admitted> {
    let doc_id = change.doc.0;
    change.validate().map_err(|e| StorageError::Invalid(format!("change to document {doc_id}: {e}")))?;
    if change.replica != device.replica {
        return Err(StorageError::Forbidden(format!(
            "change to document {doc_id} carries replica {}, not this device's enrolled replica",
            change.replica
        )));
    }
    let coordinator = device.role == Role::Coordinator;
    match change.collection {
        Collection::Form => {
            return Err(StorageError::Forbidden("forms are published by the server, not pushed".into()))
        }
        Collection::Entity if !coordinator => {
            return Err(StorageError::Forbidden(format!(
                "a {} may write only its own submissions and comments",
                device.role.as_str()
            )))
        }
        _ => {}
    }
    let existing = tx.document(doc_id).await?;
    if let Some(row) = &existing {
        if row.project != device.project {
            return Err(StorageError::Forbidden(format!("document {doc_id} belongs to another project")));
        }
        if row.collection != change.collection {
            return Err(StorageError::Invalid(format!(
                "document {doc_id} is a {}, not a {}",
                row.collection.as_str(),
                change.collection.as_str()
            )));
        }
        if !coordinator && row.author != Some(device.id) {
            return Err(StorageError::Forbidden(format!("document {doc_id} was not created by this device")));
        }
    }
    let creating = existing.is_none();
    for op in &change.ops {
        check_field(tx, device, change, op, creating).await?;
    }
    let mut parent = None;
    if change.collection == Collection::Comment {
        if let Some(target) = comment_target(change)? {
            let allowed = match tx.document(target).await? {
                Some(s) => {
                    s.project == device.project
                        && s.collection == Collection::Submission
                        && (coordinator || s.author == Some(device.id))
                }
                None => false,
            };
            if !allowed {
                return Err(StorageError::Forbidden(format!(
                    "comment {doc_id} names submission {target}, which this device cannot see"
                )));
            }
            match existing.as_ref().map(|e| e.parent) {
                Some(Some(p)) if p != target => {
                    return Err(StorageError::Invalid(format!(
                        "comment {doc_id} is about submission {p}; it cannot move to another"
                    )))
                }
                // Devices following the log would miss what the comment said before it joined
                // their scope: the submission is named when the comment is created.
                Some(None) => {
                    return Err(StorageError::Invalid(format!(
                        "comment {doc_id} was created without a submission; it cannot gain one later"
                    )))
                }
                _ => {}
            }
            parent = Some(target);
        }
    }
    Ok(Admitted {
        create: creating.then_some(parent),
        new_comment: creating && change.collection == Collection::Comment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_sorts_fields() {
        use Collection::*;
        assert_eq!(kind(Submission, "household/size"), FieldKind::Answer);
        assert_eq!(kind(Submission, "members/0190a3/_row"), FieldKind::Answer);
        assert_eq!(kind(Submission, "_review/state"), FieldKind::ReviewState);
        assert_eq!(kind(Submission, "_review/other"), FieldKind::Refused);
        assert_eq!(kind(Submission, "_form"), FieldKind::WriteOnce);
        assert_eq!(kind(Entity, "_form"), FieldKind::Refused);
        assert_eq!(kind(Comment, "author"), FieldKind::ServerWritten);
        assert_eq!(kind(Comment, "review_state"), FieldKind::CommentReviewState);
        assert_eq!(kind(Comment, "anything"), FieldKind::Refused);
        assert_eq!(kind(Form, "form"), FieldKind::ServerWritten);
    }

    #[test]
    fn select_answers_are_names_of_their_choices() {
        use serde_json::json;
        let form = tejido_core::form::import_xlsform_bytes(
            include_bytes!("../../../examples/forms/victimizacion_hogares.xlsx"),
            "victimizacion_hogares.xlsx",
        )
        .expect("the example form imports");
        let typed = |field: &str, input: AnswerInput| typed_answer(Some(&form), field, input);
        let text = |s: &str| AnswerInput::Text(s.to_owned());
        let consent = "consent";
        assert!(form.node_at(consent).is_some(), "the test names a real question");
        assert_eq!(typed(consent, text(" yes ")).unwrap(), json!("yes"));
        assert_eq!(typed(consent, AnswerInput::Json(json!("no"))).unwrap(), json!("no"));
        assert_eq!(typed(consent, text("")).unwrap(), json!(null));
        for bad in [text("Sí"), text("yes no"), AnswerInput::Json(json!(1)), AnswerInput::Json(json!({}))] {
            let e = typed(consent, bad).unwrap_err();
            assert!(matches!(e, StorageError::Invalid(_)), "{e:?}");
            assert!(!e.to_string().contains("Sí"), "the message names no value: {e}");
        }
        let problems = "survey/perception/problems";
        assert!(form.node_at(problems).is_some(), "the test names a real question");
        assert_eq!(typed(problems, text("drugs  gangs")).unwrap(), json!("drugs gangs"));
        assert_eq!(
            typed(problems, AnswerInput::Json(json!(["gangs", "robberies"]))).unwrap(),
            json!("gangs robberies")
        );
        assert!(typed(problems, AnswerInput::Json(json!(["gangs", "aliens"]))).is_err());
        assert!(typed(problems, AnswerInput::Json(json!(["gangs", 3]))).is_err());
        // Without the form, the value is kept as given.
        assert_eq!(typed_answer(None, consent, text("Sí")).unwrap(), json!("Sí"));
    }
}
