//! Reading documents, submissions and conflicts.

use crate::doc::meta;
use std::collections::BTreeMap;

use rusqlite::{params, Connection};
use serde_json::Value;
use uuid::Uuid;

use super::local::document_kind;
use super::sql::{doc_from_row, json_from_sql, op_id_from_row};
use super::{Result, Store};
use crate::crdt::{Collection, DocId, FieldPath, OpId};

/// An open value of a field other than the winner: a concurrent edit waiting for review.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictValue {
    pub op: OpId,
    pub value: Value,
}

/// A field's current value, who wrote it, and the concurrent values still open.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldState {
    pub value: Value,
    pub op: OpId,
    pub conflicts: Vec<ConflictValue>,
}

/// A document as this replica sees it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: DocId,
    pub collection: Collection,
    /// A local draft that has not been finalized.
    pub draft: bool,
    pub fields: BTreeMap<FieldPath, FieldState>,
}

/// Where a submission is in its life on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubmissionStatus {
    Draft,
    Finalized,
}

/// Which submissions to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    All,
    Drafts,
    Finalized,
}

/// A document's fields that hold open conflicts.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentConflicts {
    pub doc: DocId,
    pub fields: Vec<(FieldPath, FieldState)>,
}

/// One line of the submission list.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmissionSummary {
    pub id: DocId,
    pub form: Option<String>,
    pub form_version: Option<String>,
    pub status: SubmissionStatus,
    /// The coordinator's review state (`_review/state`), if any.
    pub review_state: Option<String>,
    pub deleted: bool,
    /// Fields with open conflicts.
    pub conflicts: usize,
}

impl Document {
    /// The current value of a field, if it has one.
    pub fn value(&self, field: &str) -> Option<&Value> {
        self.fields.iter().find(|(f, _)| f.as_str() == field).map(|(_, s)| &s.value)
    }

    /// Text of a metadata or answer field.
    pub fn text(&self, field: &str) -> Option<&str> {
        self.value(field).and_then(Value::as_str)
    }

    /// Answers (non-metadata fields with a value), excluding repeat-row markers.
    pub fn answers(&self) -> impl Iterator<Item = (&FieldPath, &Value)> {
        self.fields
            .iter()
            .filter(|(f, s)| !f.is_meta() && !s.value.is_null() && !f.as_str().ends_with("/_row"))
            .map(|(f, s)| (f, &s.value))
    }

    /// The rows of a repeat that currently exist, oldest first.
    pub fn rows(&self, repeat: &str) -> Vec<Uuid> {
        let prefix = format!("{repeat}/");
        let mut rows: Vec<Uuid> = self
            .fields
            .iter()
            .filter_map(|(f, s)| {
                let rest = f.as_str().strip_prefix(&prefix)?;
                let (row, marker) = rest.split_once('/')?;
                (marker == "_row" && s.value == Value::Bool(true)).then(|| Uuid::parse_str(row).ok())?
            })
            .collect();
        rows.sort();
        rows
    }

    pub fn status(&self) -> SubmissionStatus {
        if self.draft {
            SubmissionStatus::Draft
        } else {
            SubmissionStatus::Finalized
        }
    }

    pub fn review_state(&self) -> Option<&str> {
        self.text(crate::doc::meta::REVIEW_STATE)
    }

    pub fn is_deleted(&self) -> bool {
        deleted_flag(self.value(crate::doc::meta::DELETED))
    }

    /// Deleted, but holding an edit the deleter never saw: kept, and shown for review.
    pub fn edited_after_delete(&self) -> bool {
        let Some(tombstone) = self.value(crate::doc::meta::DELETED) else { return false };
        if !deleted_flag(Some(tombstone)) {
            return false;
        }
        let covers: Vec<&str> = tombstone
            .get("covers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        self.fields.iter().filter(|(f, _)| !f.is_meta()).any(|(_, s)| {
            std::iter::once(s.op)
                .chain(s.conflicts.iter().map(|c| c.op))
                .any(|op| !covers.contains(&op.to_string().as_str()))
        })
    }

    /// Fields with open conflicts.
    pub fn conflicts(&self) -> impl Iterator<Item = (&FieldPath, &FieldState)> {
        self.fields.iter().filter(|(_, s)| !s.conflicts.is_empty())
    }
}

fn deleted_flag(v: Option<&Value>) -> bool {
    v.and_then(|v| v.get("deleted")).and_then(Value::as_bool).unwrap_or(false)
}

/// An open value of a field.
pub(super) struct Leaf {
    pub field: FieldPath,
    pub op: OpId,
    pub value: Value,
}

/// Every open value of a document, by field, greatest first within a field.
pub(super) fn load_leaves(conn: &Connection, doc: DocId) -> Result<Vec<Leaf>> {
    let mut stmt = conn.prepare_cached(
        "SELECT field, hlc, replica, value FROM field_ops WHERE doc = ?1 AND leaf = 1
         ORDER BY field, hlc DESC, replica DESC",
    )?;
    let rows = stmt.query_map([doc.0.as_bytes().as_slice()], |r| {
        let field: String = r.get(0)?;
        let field = FieldPath::parse(&field).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?;
        let value: String = r.get(3)?;
        Ok(Leaf { field, op: op_id_from_row(r, 1, 2)?, value: json_from_sql(&value)? })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn is_deleted_in(conn: &Connection, doc: DocId) -> Result<bool> {
    let mut stmt = conn.prepare_cached(
        "SELECT value FROM field_ops WHERE doc = ?1 AND field = '_deleted' AND leaf = 1
         ORDER BY hlc DESC, replica DESC LIMIT 1",
    )?;
    let mut rows = stmt.query([doc.0.as_bytes().as_slice()])?;
    match rows.next()? {
        Some(r) => {
            let text: String = r.get(0)?;
            Ok(deleted_flag(Some(&json_from_sql(&text)?)))
        }
        None => Ok(false),
    }
}

fn group_leaves(leaves: Vec<Leaf>) -> BTreeMap<FieldPath, FieldState> {
    let mut fields: BTreeMap<FieldPath, FieldState> = BTreeMap::new();
    for leaf in leaves {
        match fields.get_mut(&leaf.field) {
            Some(state) => state.conflicts.push(ConflictValue { op: leaf.op, value: leaf.value }),
            None => {
                fields
                    .insert(leaf.field, FieldState { value: leaf.value, op: leaf.op, conflicts: Vec::new() });
            }
        }
    }
    fields
}

impl Store {
    /// Reads one document: every field's current value and open conflicts.
    pub fn read_document(&self, doc: DocId) -> Result<Document> {
        let mut guard = self.lock();
        let tx = guard.conn.transaction()?;
        let (collection, draft) = document_kind(&tx, doc)?;
        let fields = group_leaves(load_leaves(&tx, doc)?);
        Ok(Document { id: doc, collection, draft, fields })
    }

    /// Every value a field has held, superseded ones included, oldest first (by timestamp):
    /// the history of a submission's review state, say.
    pub fn field_history(&self, doc: DocId, field: &str) -> Result<Vec<ConflictValue>> {
        let field = FieldPath::parse(field)?;
        let mut guard = self.lock();
        let tx = guard.conn.transaction()?;
        document_kind(&tx, doc)?;
        let mut stmt = tx.prepare_cached(
            "SELECT hlc, replica, value FROM field_ops WHERE doc = ?1 AND field = ?2 AND known = 1
             ORDER BY hlc, replica",
        )?;
        let rows = stmt.query_map(params![doc.0.as_bytes().as_slice(), field.as_str()], |r| {
            let value: String = r.get(2)?;
            Ok(ConflictValue { op: op_id_from_row(r, 0, 1)?, value: json_from_sql(&value)? })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every document id of a collection, oldest first.
    pub fn list_documents(&self, collection: Collection) -> Result<Vec<DocId>> {
        let inner = self.lock();
        let mut stmt =
            inner.conn.prepare_cached("SELECT doc FROM documents WHERE collection = ?1 ORDER BY doc")?;
        let rows = stmt.query_map([collection.as_str()], |r| doc_from_row(r, 0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The submissions on this device, oldest first; deleted ones are left out.
    pub fn list_submissions(&self, filter: StatusFilter) -> Result<Vec<SubmissionSummary>> {
        let inner = self.lock();
        let mut stmt = inner.conn.prepare_cached(
            "SELECT d.doc, d.draft, f.field, f.value FROM documents d
             JOIN field_ops f ON f.doc = d.doc AND f.leaf = 1
                AND f.field IN ('_form', '_form_version', '_review/state', '_deleted')
             WHERE d.collection = 'submission' AND (?1 = 0 OR d.draft = ?2)
             ORDER BY d.doc, f.field, f.hlc DESC, f.replica DESC",
        )?;
        let (filtered, draft) = match filter {
            StatusFilter::All => (0, 0),
            StatusFilter::Drafts => (1, 1),
            StatusFilter::Finalized => (1, 0),
        };
        let rows = stmt.query_map(params![filtered, draft], |r| {
            let value: String = r.get(3)?;
            Ok((doc_from_row(r, 0)?, r.get::<_, bool>(1)?, r.get::<_, String>(2)?, json_from_sql(&value)?))
        })?;
        let mut out: Vec<SubmissionSummary> = Vec::new();
        let mut last_field: Option<(DocId, String)> = None;
        for row in rows {
            let (doc, draft, field, value) = row?;
            if out.last().map(|s| s.id) != Some(doc) {
                out.push(SubmissionSummary {
                    id: doc,
                    form: None,
                    form_version: None,
                    status: if draft { SubmissionStatus::Draft } else { SubmissionStatus::Finalized },
                    review_state: None,
                    deleted: false,
                    conflicts: 0,
                });
            }
            // Rows come greatest first within a field: only the first is the current value.
            let key = (doc, field);
            if last_field.as_ref() == Some(&key) {
                continue;
            }
            let Some(summary) = out.last_mut() else { continue };
            let text = value.as_str().map(str::to_owned);
            match key.1.as_str() {
                meta::FORM => summary.form = text,
                meta::FORM_VERSION => summary.form_version = text,
                meta::REVIEW_STATE => summary.review_state = text,
                meta::DELETED => summary.deleted = deleted_flag(Some(&value)),
                _ => {}
            }
            last_field = Some(key);
        }
        out.retain(|s| !s.deleted);
        drop(stmt);
        // Per document, over its own ops only (the primary key's prefix): no index to maintain on
        // the merge path, and no scan of other documents.
        let mut count = inner.conn.prepare_cached(
            "SELECT count(*) FROM (SELECT field FROM field_ops WHERE doc = ?1 AND leaf = 1
             GROUP BY field HAVING count(*) > 1)",
        )?;
        for s in &mut out {
            s.conflicts = count.query_row([s.id.0.as_bytes().as_slice()], |r| r.get::<_, i64>(0))? as usize;
        }
        Ok(out)
    }

    /// Every document with open conflicts, and the conflicting fields' states.
    pub fn conflicts(&self) -> Result<Vec<DocumentConflicts>> {
        let docs: Vec<DocId> = {
            let inner = self.lock();
            let mut stmt = inner.conn.prepare_cached(
                "SELECT DISTINCT doc FROM (SELECT doc, field FROM field_ops WHERE leaf = 1
                 GROUP BY doc, field HAVING count(*) > 1) ORDER BY doc",
            )?;
            let rows = stmt.query_map([], |r| doc_from_row(r, 0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::new();
        for doc in docs {
            let d = self.read_document(doc)?;
            let fields = d.fields.into_iter().filter(|(_, s)| !s.conflicts.is_empty()).collect();
            out.push(DocumentConflicts { doc, fields });
        }
        Ok(out)
    }
}
