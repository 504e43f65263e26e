//! The shapes of synced documents, in one place for every side (the device store, the
//! bindings, the server, the demo): the metadata field names a submission carries, and typed
//! writers and readers for comments, reviews and published forms. Nothing else spells these
//! field names.

use serde_json::{json, Value};

use crate::crdt::{FieldOp, FieldPath, OpId};
use crate::store::Document;
use crate::DocId;

/// Metadata fields of a submission (they start with `_`; see `docs/protocol.md`, "Who writes
/// what", for who may write each).
pub mod meta {
    /// The form id the submission was filled against.
    pub const FORM: &str = "_form";
    /// The form version it was filled against.
    pub const FORM_VERSION: &str = "_form_version";
    /// The replica that created it.
    pub const AUTHOR: &str = "_author";
    /// `"finalized"` once it left the device.
    pub const STATUS: &str = "_status";
    pub const FINALIZED: &str = "finalized";
    /// A coordinator's review state.
    pub const REVIEW_STATE: &str = "_review/state";
    /// The tombstone: `{"deleted": true, "covers": [op ids]}`.
    pub const DELETED: &str = "_deleted";
    /// The last segment of a repeat row's marker field (`members/<row>/_row`).
    pub const ROW_MARKER: &str = "_row";
}

/// The review states a coordinator may set.
pub const REVIEW_STATES: &[&str] = &["approved", "has_issues"];

fn path(name: &'static str) -> FieldPath {
    // Every name passed here is one of this module's constants, all valid paths.
    FieldPath::parse(name).unwrap_or_else(|_| unreachable!("{name} is a valid field path"))
}

fn op(name: &'static str, value: Value, seen: Vec<OpId>) -> FieldOp {
    FieldOp { field: path(name), value, seen }
}

/// A comment on a submission: written by a device (its `text`) or by the server with a review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    pub submission: DocId,
    pub text: String,
    /// Who wrote it, as the server knows them from their credential (never a device's claim).
    pub author: Option<String>,
    /// The review state the comment came with.
    pub review_state: Option<String>,
}

impl Comment {
    pub const SUBMISSION: &'static str = "submission";
    pub const TEXT: &'static str = "text";
    pub const AUTHOR: &'static str = "author";
    pub const REVIEW_STATE: &'static str = "review_state";

    /// The ops a device writes to create it (`author` and `review_state` are not theirs).
    pub fn device_ops(submission: DocId, text: &str) -> Vec<FieldOp> {
        vec![op(Self::SUBMISSION, json!(submission.to_string()), vec![]), op(Self::TEXT, json!(text), vec![])]
    }

    /// Every op of the comment, as the server writes it.
    pub fn ops(&self) -> Vec<FieldOp> {
        let mut ops = Self::device_ops(self.submission, &self.text);
        if let Some(a) = &self.author {
            ops.push(Self::author_op(a));
        }
        if let Some(s) = &self.review_state {
            ops.push(op(Self::REVIEW_STATE, json!(s), vec![]));
        }
        ops
    }

    /// The `author` op the server adds to a comment a device created.
    pub fn author_op(author: &str) -> FieldOp {
        op(Self::AUTHOR, json!(author), vec![])
    }

    /// Reads a comment document; `None` when it does not have a submission and a text.
    pub fn read(doc: &Document) -> Option<Comment> {
        let submission = doc.text(Self::SUBMISSION).and_then(|s| uuid::Uuid::try_parse(s).ok())?;
        Some(Comment {
            submission: DocId(submission),
            text: doc.text(Self::TEXT)?.to_owned(),
            author: doc.text(Self::AUTHOR).map(str::to_owned),
            review_state: doc.text(Self::REVIEW_STATE).map(str::to_owned),
        })
    }
}

/// A coordinator's review: the `_review/state` op, replacing the open values it saw.
pub fn review_op(state: &str, seen: Vec<OpId>) -> FieldOp {
    op(meta::REVIEW_STATE, json!(state), seen)
}

/// A published form version, as the server writes it to a `form` document.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishedForm {
    pub form_id: String,
    pub version: String,
    /// The roles it is published to.
    pub roles: Vec<String>,
    /// The form model as JSON.
    pub form: Value,
}

impl PublishedForm {
    pub const FORM_ID: &'static str = "form_id";
    pub const VERSION: &'static str = "version";
    pub const ROLES: &'static str = "roles";
    pub const FORM: &'static str = "form";
    /// `media/<sha256>`: an attachment reference to one of the version's media files, so that
    /// devices download it as any attachment (the form's `media` map gives its file name).
    pub const MEDIA_PREFIX: &'static str = "media/";

    /// The op that carries a media file's reference; `None` if `sha256` is not a SHA-256 in hex.
    pub fn media_op(sha256: &str) -> Option<FieldOp> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let field = FieldPath::parse(&format!("{}{sha256}", Self::MEDIA_PREFIX)).ok()?;
        Some(FieldOp { field, value: json!(crate::store::attachment_ref(sha256)), seen: vec![] })
    }

    pub fn ops(&self) -> Vec<FieldOp> {
        vec![
            op(Self::FORM_ID, json!(self.form_id), vec![]),
            op(Self::VERSION, json!(self.version), vec![]),
            op(Self::ROLES, json!(self.roles), vec![]),
            op(Self::FORM, self.form.clone(), vec![]),
        ]
    }

    /// Reads a form document; `None` when a field is missing.
    pub fn read(doc: &Document) -> Option<PublishedForm> {
        let roles = doc
            .value(Self::ROLES)?
            .as_array()?
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect();
        Some(PublishedForm {
            form_id: doc.text(Self::FORM_ID)?.to_owned(),
            version: doc.text(Self::VERSION)?.to_owned(),
            roles,
            form: doc.value(Self::FORM)?.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_a_valid_path_and_metadata_names_are_metadata() {
        for name in
            [meta::FORM, meta::FORM_VERSION, meta::AUTHOR, meta::STATUS, meta::REVIEW_STATE, meta::DELETED]
        {
            assert!(path(name).is_meta(), "{name}");
        }
        let c = Comment {
            submission: DocId::new(),
            text: "¿200 años?".into(),
            author: Some("Ana".into()),
            review_state: Some("has_issues".into()),
        };
        let ops = c.ops();
        let fields: Vec<&str> = ops.iter().map(|o| o.field.as_str()).collect();
        assert_eq!(fields, ["submission", "text", "author", "review_state"]);
        assert!(REVIEW_STATES.contains(&"approved"));
    }
}
