//! Local writes: drafts, answers, repeat rows, finalizing, deletes and conflict resolution.
//! Each public method is one transaction.

use crate::doc::{meta, Comment};
use rusqlite::{params, Transaction};
use serde_json::{json, Value};
use uuid::Uuid;

use super::read::{is_deleted_in, load_leaves, Leaf};
use super::remote::{enqueue, merge_op, save_clock, write_json};
use super::{Result, Store, StoreError};
use crate::crdt::{Change, Collection, DocId, FieldOp, FieldPath, OpId};

/// Which of a field's open values a write replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replaces {
    /// An ordinary edit: the value on screen (the winner) and this replica's own earlier values.
    Shown,
    /// A resolution: every open value.
    AllOpen,
}

/// The marker field that says a repeat row exists.
const ROW_MARKER: &str = meta::ROW_MARKER;

impl Store {
    /// Starts a draft submission of a form. Drafts stay on this device until finalized.
    pub fn start_submission(&self, form_id: &str, form_version: &str) -> Result<DocId> {
        let doc = DocId::new();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let tx = inner.conn.transaction()?;
        tx.execute(
            "INSERT INTO documents (doc, collection, draft) VALUES (?1, 'submission', 1)",
            [doc.0.as_bytes().as_slice()],
        )?;
        let hlc = inner.clock.tick();
        let id = OpId { hlc, replica: self.replica };
        let meta = [
            (meta::FORM, json!(form_id)),
            (meta::FORM_VERSION, json!(form_version)),
            (meta::AUTHOR, json!(self.replica.to_string())),
        ];
        for (field, value) in meta {
            merge_op(&tx, doc.0.as_bytes(), field, id, &value.to_string(), &[])?;
        }
        save_clock(&tx, hlc)?;
        tx.commit()?;
        inner.committed();
        Ok(doc)
    }

    /// Creates a document of another collection (a shared-list entity, a comment) with its
    /// first values; it is eligible to sync at once.
    pub fn create_document(&self, collection: Collection, fields: &[(&str, Value)]) -> Result<DocId> {
        let doc = DocId::new();
        let writes = parse_writes(fields)?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let tx = inner.conn.transaction()?;
        tx.execute(
            "INSERT INTO documents (doc, collection, draft) VALUES (?1, ?2, 0)",
            params![doc.0.as_bytes().as_slice(), collection.as_str()],
        )?;
        let hlc = inner.clock.tick();
        let change = write_fields(&tx, self, doc, collection, hlc, writes, Replaces::Shown)?;
        enqueue(&tx, &change)?;
        save_clock(&tx, hlc)?;
        tx.commit()?;
        inner.committed();
        Ok(doc)
    }

    /// A coordinator's review of a submission, in one transaction: `_review/state` set to
    /// `state` (one of [`crate::doc::REVIEW_STATES`]), replacing every open review value, and
    /// with a comment, a comment document naming the submission and the state. Returns the
    /// comment's id. The server adds the comment's author when it receives it.
    pub fn review_submission(&self, doc: DocId, state: &str, comment: Option<&str>) -> Result<Option<DocId>> {
        if !crate::doc::REVIEW_STATES.contains(&state) {
            return Err(StoreError::UnknownReviewState);
        }
        let mut guard = self.lock();
        let inner = &mut *guard;
        let tx = inner.conn.transaction()?;
        let (collection, draft) = document_kind(&tx, doc)?;
        if collection != Collection::Submission {
            return Err(StoreError::NotASubmission(doc));
        }
        if is_deleted_in(&tx, doc)? {
            return Err(StoreError::Deleted(doc));
        }
        let mut hlc = inner.clock.tick();
        let review = vec![(FieldPath::parse(meta::REVIEW_STATE)?, json!(state))];
        let change = write_fields(&tx, self, doc, collection, hlc, review, Replaces::AllOpen)?;
        if !draft {
            enqueue(&tx, &change)?;
        }
        let comment_id = match comment {
            Some(text) => {
                hlc = inner.clock.tick();
                let fields = [
                    (Comment::SUBMISSION, json!(doc.to_string())),
                    (Comment::TEXT, json!(text)),
                    (Comment::REVIEW_STATE, json!(state)),
                ];
                Some(insert_document(&tx, self, Collection::Comment, hlc, &fields)?)
            }
            None => None,
        };
        save_clock(&tx, hlc)?;
        tx.commit()?;
        inner.committed();
        Ok(comment_id)
    }

    /// Comments on a submission (a coordinator's question, an enumerator's answer to it);
    /// returns the comment's id.
    pub fn add_comment(&self, submission: DocId, text: &str) -> Result<DocId> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let tx = inner.conn.transaction()?;
        let (collection, _) = document_kind(&tx, submission)?;
        if collection != Collection::Submission {
            return Err(StoreError::NotASubmission(submission));
        }
        let hlc = inner.clock.tick();
        let fields = [(Comment::SUBMISSION, json!(submission.to_string())), (Comment::TEXT, json!(text))];
        let id = insert_document(&tx, self, Collection::Comment, hlc, &fields)?;
        save_clock(&tx, hlc)?;
        tx.commit()?;
        inner.committed();
        Ok(id)
    }

    /// Sets one answer. On a finalized submission the edit syncs like any other.
    pub fn set_answer(&self, doc: DocId, field: &str, value: Value) -> Result<()> {
        self.set_fields(doc, &[(field, value)])
    }

    /// Clears an answer (a null value, which replaces what was there).
    pub fn clear_answer(&self, doc: DocId, field: &str) -> Result<()> {
        self.set_fields(doc, &[(field, Value::Null)])
    }

    /// Sets several fields of one document in one transaction, as one change.
    pub fn set_fields(&self, doc: DocId, fields: &[(&str, Value)]) -> Result<()> {
        let writes = parse_writes(fields)?;
        self.write(doc, writes, Replaces::Shown)
    }

    /// Replaces every open value of a field, closing its conflict (a coordinator's resolution).
    pub fn resolve_conflict(&self, doc: DocId, field: &str, value: Value) -> Result<()> {
        let field = FieldPath::parse(field)?;
        self.write(doc, vec![(field, value)], Replaces::AllOpen)
    }

    /// Adds a row to a repeat; rows are addressed by their own UUID, never by position.
    pub fn add_repeat_row(&self, doc: DocId, repeat: &str) -> Result<Uuid> {
        let repeat = FieldPath::parse(repeat)?;
        let row = Uuid::now_v7();
        let marker = FieldPath::in_row(&repeat, row, ROW_MARKER)?;
        self.write(doc, vec![(marker, Value::Bool(true))], Replaces::Shown)?;
        Ok(row)
    }

    /// Removes a repeat row (its answers are kept in history; the row no longer shows).
    pub fn remove_repeat_row(&self, doc: DocId, repeat: &str, row: Uuid) -> Result<()> {
        let repeat_path = FieldPath::parse(repeat)?;
        let marker = FieldPath::in_row(&repeat_path, row, ROW_MARKER)?;
        let exists = self.read_document(doc)?.value(marker.as_str()) == Some(&Value::Bool(true));
        if !exists {
            return Err(StoreError::UnknownRow { repeat: repeat.to_owned(), row });
        }
        self.write(doc, vec![(marker, Value::Bool(false))], Replaces::Shown)
    }

    /// Finalizes a draft: its current answers become one change, eligible to sync. The draft's
    /// own history never leaves the device. Fields for which `omit` returns true (non-relevant
    /// answers) are left out.
    pub fn finalize_omitting(&self, doc: DocId, omit: &dyn Fn(&FieldPath) -> bool) -> Result<()> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let tx = inner.conn.transaction()?;
        let (collection, draft) = document_kind(&tx, doc)?;
        if collection != Collection::Submission {
            return Err(StoreError::NotASubmission(doc));
        }
        if !draft {
            return Err(StoreError::AlreadyFinalized(doc));
        }
        let leaves = load_leaves(&tx, doc)?;
        let mut current: Vec<(FieldPath, Value)> = Vec::new();
        for leaf in leaves {
            // Leaves come greatest first per field: the first one is the value on screen.
            if current.last().map(|(f, _)| f == &leaf.field).unwrap_or(false) {
                continue;
            }
            current.push((leaf.field, leaf.value));
        }
        current.retain(|(f, v)| !v.is_null() && !omit(f) && f.as_str() != meta::STATUS);
        current.push((FieldPath::parse(meta::STATUS)?, json!(meta::FINALIZED)));
        tx.execute("DELETE FROM field_ops WHERE doc = ?1", [doc.0.as_bytes().as_slice()])?;
        let hlc = inner.clock.tick();
        let change = write_fields(&tx, self, doc, collection, hlc, current, Replaces::Shown)?;
        tx.execute("UPDATE documents SET draft = 0 WHERE doc = ?1", [doc.0.as_bytes().as_slice()])?;
        // The draft's audit log ends here: a session wrote what it wants kept into the draft.
        tx.execute("DELETE FROM audit_events WHERE doc = ?1", [doc.0.as_bytes().as_slice()])?;
        enqueue(&tx, &change)?;
        save_clock(&tx, hlc)?;
        tx.commit()?;
        inner.committed();
        Ok(())
    }

    /// Finalizes a draft with all its answers.
    pub fn finalize(&self, doc: DocId) -> Result<()> {
        self.finalize_omitting(doc, &|_| false)
    }

    /// Deletes a document: a `_deleted` tombstone that names the values the deleter had, so an
    /// edit made elsewhere without seeing the delete is kept and flagged, never silently revived
    /// or lost. A draft, which never left the device, is removed outright.
    pub fn delete_document(&self, doc: DocId) -> Result<()> {
        {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let tx = inner.conn.transaction()?;
            let (_, draft) = document_kind(&tx, doc)?;
            if draft {
                tx.execute("DELETE FROM documents WHERE doc = ?1", [doc.0.as_bytes().as_slice()])?;
                tx.commit()?;
                inner.committed();
                return Ok(());
            }
        }
        let covers: Vec<String> = self
            .read_document(doc)?
            .fields
            .iter()
            .filter(|(f, _)| !f.is_meta())
            .flat_map(|(_, s)| std::iter::once(s.op).chain(s.conflicts.iter().map(|c| c.op)))
            .map(|id| id.to_string())
            .collect();
        let deleted = FieldPath::parse(meta::DELETED)?;
        self.write_unchecked(
            doc,
            vec![(deleted, json!({ "deleted": true, "covers": covers }))],
            Replaces::AllOpen,
        )
    }

    /// Restores a deleted document.
    pub fn restore_document(&self, doc: DocId) -> Result<()> {
        let deleted = FieldPath::parse(meta::DELETED)?;
        self.write_unchecked(doc, vec![(deleted, json!({ "deleted": false }))], Replaces::AllOpen)
    }

    fn write(&self, doc: DocId, writes: Vec<(FieldPath, Value)>, replaces: Replaces) -> Result<()> {
        self.write_checked(doc, writes, replaces, true)
    }

    fn write_unchecked(&self, doc: DocId, writes: Vec<(FieldPath, Value)>, replaces: Replaces) -> Result<()> {
        self.write_checked(doc, writes, replaces, false)
    }

    fn write_checked(
        &self,
        doc: DocId,
        writes: Vec<(FieldPath, Value)>,
        replaces: Replaces,
        refuse_deleted: bool,
    ) -> Result<()> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let tx = inner.conn.transaction()?;
        let (collection, draft) = document_kind(&tx, doc)?;
        if refuse_deleted && is_deleted_in(&tx, doc)? {
            return Err(StoreError::Deleted(doc));
        }
        let hlc = inner.clock.tick();
        let change = write_fields(&tx, self, doc, collection, hlc, writes, replaces)?;
        if !draft {
            enqueue(&tx, &change)?;
        }
        save_clock(&tx, hlc)?;
        tx.commit()?;
        inner.committed();
        Ok(())
    }
}

/// Creates a synced document with its first fields inside `tx`, queued for the server.
fn insert_document(
    tx: &Transaction<'_>,
    store: &Store,
    collection: Collection,
    hlc: crate::crdt::Hlc,
    fields: &[(&str, Value)],
) -> Result<DocId> {
    let doc = DocId::new();
    let writes = parse_writes(fields)?;
    tx.execute(
        "INSERT INTO documents (doc, collection, draft) VALUES (?1, ?2, 0)",
        params![doc.0.as_bytes().as_slice(), collection.as_str()],
    )?;
    let change = write_fields(tx, store, doc, collection, hlc, writes, Replaces::Shown)?;
    enqueue(tx, &change)?;
    Ok(doc)
}

fn parse_writes(fields: &[(&str, Value)]) -> Result<Vec<(FieldPath, Value)>> {
    fields.iter().map(|(f, v)| Ok((FieldPath::parse(f)?, v.clone()))).collect()
}

pub(super) fn document_kind(tx: &Transaction<'_>, doc: DocId) -> Result<(Collection, bool)> {
    let row: Option<(String, bool)> = {
        let mut stmt = tx.prepare_cached("SELECT collection, draft FROM documents WHERE doc = ?1")?;
        let mut rows = stmt.query([doc.0.as_bytes().as_slice()])?;
        match rows.next()? {
            Some(r) => Some((r.get(0)?, r.get(1)?)),
            None => None,
        }
    };
    let (collection, draft) = row.ok_or(StoreError::UnknownDocument(doc))?;
    let collection = Collection::parse(&collection).ok_or(StoreError::UnknownDocument(doc))?;
    Ok((collection, draft))
}

/// Writes fields as one change stamped `hlc`, each seeing what `replaces` says, and returns the
/// change for the outbox.
fn write_fields(
    tx: &Transaction<'_>,
    store: &Store,
    doc: DocId,
    collection: Collection,
    hlc: crate::crdt::Hlc,
    writes: Vec<(FieldPath, Value)>,
    replaces: Replaces,
) -> Result<Change> {
    let id = OpId { hlc, replica: store.replica };
    let mut ops = Vec::with_capacity(writes.len());
    let mut buf = String::new();
    for (field, value) in writes {
        let leaves = field_leaves(tx, doc, &field)?;
        let seen: Vec<OpId> = leaves
            .iter()
            .enumerate()
            .filter(|(i, l)| replaces == Replaces::AllOpen || *i == 0 || l.op.replica == store.replica)
            .map(|(_, l)| l.op)
            .collect();
        buf.clear();
        write_json(&mut buf, &value);
        merge_op(tx, doc.0.as_bytes(), field.as_str(), id, &buf, &seen)?;
        ops.push(FieldOp { field, value, seen });
    }
    Ok(Change { doc, collection, replica: store.replica, hlc, ops })
}

/// One field's open values, greatest first.
fn field_leaves(tx: &Transaction<'_>, doc: DocId, field: &FieldPath) -> Result<Vec<Leaf>> {
    let mut stmt = tx.prepare_cached(
        "SELECT hlc, replica FROM field_ops WHERE doc = ?1 AND field = ?2 AND leaf = 1 ORDER BY hlc DESC, replica DESC",
    )?;
    let rows = stmt.query_map(params![doc.0.as_bytes().as_slice(), field.as_str()], |r| {
        Ok(Leaf { field: field.clone(), op: super::sql::op_id_from_row(r, 0, 1)?, value: Value::Null })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
