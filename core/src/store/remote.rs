//! The merge in SQL, remote changes, the outbox and sync state.

use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::Value;

use super::sql::{doc_from_row, hlc_to_sql};
use super::{schema, Result, Store, StoreError};
use crate::crdt::{Change, Collection, DocId, Hlc, OpId, ReplicaId};

/// What applying a batch of remote changes did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ApplyReport {
    /// Ops this store did not have before.
    pub new_ops: usize,
    /// Ops it already had (duplicates, or its own ops echoed back).
    pub known_ops: usize,
    /// Writers whose clocks run far ahead of ours: accepted, and reported for review.
    pub far_future: Vec<(ReplicaId, Hlc)>,
    /// Documents that received at least one new op.
    pub changed_docs: Vec<DocId>,
}

/// A local change waiting for the server's acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingChange {
    pub seq: i64,
    pub change: Change,
}

/// Applies one op to the field's history: inserts it, or fills the placeholder left when
/// another op saw it first (which keeps it a non-leaf), then retires what it saw. Returns whether
/// the op was new.
pub(super) fn merge_op(
    tx: &Transaction<'_>,
    doc: &[u8],
    field: &str,
    id: OpId,
    value: &str,
    seen: &[OpId],
) -> rusqlite::Result<bool> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO field_ops (doc, field, hlc, replica, value, known, leaf) VALUES (?1, ?2, ?3, ?4, ?5, 1, 1)
         ON CONFLICT (doc, field, hlc, replica) DO UPDATE SET value = excluded.value, known = 1 WHERE known = 0",
    )?;
    let new =
        insert.execute(params![doc, field, hlc_to_sql(id.hlc), id.replica.0.as_bytes().as_slice(), value])?
            > 0;
    if new && !seen.is_empty() {
        let mut retire = tx.prepare_cached(
            "INSERT INTO field_ops (doc, field, hlc, replica, value, known, leaf) VALUES (?1, ?2, ?3, ?4, NULL, 0, 0)
             ON CONFLICT (doc, field, hlc, replica) DO UPDATE SET leaf = 0 WHERE leaf = 1",
        )?;
        for s in seen {
            retire.execute(params![doc, field, hlc_to_sql(s.hlc), s.replica.0.as_bytes().as_slice()])?;
        }
    }
    Ok(new)
}

/// Makes sure the document exists with this collection. Returns `Some(draft)` for an existing
/// document.
pub(super) fn ensure_document(tx: &Transaction<'_>, doc: DocId, collection: Collection) -> Result<()> {
    let existing: Option<String> = {
        let mut stmt = tx.prepare_cached("SELECT collection FROM documents WHERE doc = ?1")?;
        let mut rows = stmt.query([doc.0.as_bytes().as_slice()])?;
        match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        }
    };
    match existing {
        Some(c) if c == collection.as_str() => Ok(()),
        Some(c) => {
            Err(StoreError::CollectionMismatch { doc, existing: c, received: collection.as_str().into() })
        }
        None => {
            let mut stmt =
                tx.prepare_cached("INSERT INTO documents (doc, collection, draft) VALUES (?1, ?2, 0)")?;
            stmt.execute(params![doc.0.as_bytes().as_slice(), collection.as_str()])?;
            Ok(())
        }
    }
}

pub(super) fn save_clock(tx: &Transaction<'_>, clock: Hlc) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE replica SET clock = ?1 WHERE id = 1")?.execute([hlc_to_sql(clock)])?;
    Ok(())
}

pub(super) fn enqueue(tx: &Transaction<'_>, change: &Change) -> rusqlite::Result<()> {
    let json =
        serde_json::to_string(change).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    tx.prepare_cached("INSERT INTO outbox (doc, change) VALUES (?1, ?2)")?
        .execute(params![change.doc.0.as_bytes().as_slice(), json])?;
    Ok(())
}

impl Store {
    /// Merges changes received from elsewhere, in one transaction: all of them or, on error,
    /// none. Applying the same changes again, or in another order, gives the same state.
    pub fn apply_remote(&self, changes: &[Change]) -> Result<ApplyReport> {
        self.apply_remote_with_state(changes, None)
    }

    /// Merges a pulled page and records the new sync cursor in the same transaction, so a crash
    /// between the two can neither skip nor repeat the page.
    pub fn apply_pulled(&self, changes: &[Change], cursor: &str) -> Result<ApplyReport> {
        self.apply_remote_with_state(changes, Some(("cursor", cursor)))
    }

    fn apply_remote_with_state(
        &self,
        changes: &[Change],
        state: Option<(&str, &str)>,
    ) -> Result<ApplyReport> {
        for c in changes {
            c.validate().map_err(|reason| StoreError::InvalidChange { doc: c.doc, reason })?;
        }
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut clock = inner.clock.clone();
        let tx = inner.conn.transaction()?;
        let mut report = ApplyReport::default();
        let mut value_buf = String::new();
        for change in changes {
            ensure_document(&tx, change.doc, change.collection)?;
            let doc = change.doc.0.as_bytes();
            let id = change.op_id();
            let mut any_new = false;
            for op in &change.ops {
                value_buf.clear();
                write_json(&mut value_buf, &op.value);
                if merge_op(&tx, doc, op.field.as_str(), id, &value_buf, &op.seen)? {
                    report.new_ops += 1;
                    any_new = true;
                } else {
                    report.known_ops += 1;
                }
            }
            if any_new && report.changed_docs.last() != Some(&change.doc) {
                report.changed_docs.push(change.doc);
            }
            if clock.observe(change.hlc) && !report.far_future.iter().any(|(r, _)| *r == change.replica) {
                report.far_future.push((change.replica, change.hlc));
            }
        }
        report.changed_docs.sort();
        report.changed_docs.dedup();
        save_clock(&tx, clock.last())?;
        if let Some((key, value)) = state {
            tx.execute(
                "INSERT INTO sync_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
        }
        tx.commit()?;
        inner.committed();
        inner.clock = clock;
        Ok(report)
    }

    /// The oldest unacknowledged local changes, at most `limit` of them.
    pub fn pending_changes(&self, limit: usize) -> Result<Vec<PendingChange>> {
        let inner = self.lock();
        let mut stmt = inner
            .conn
            .prepare_cached("SELECT seq, change FROM outbox WHERE acked = 0 ORDER BY seq LIMIT ?1")?;
        let rows = stmt.query_map([limit as i64], |r| {
            let seq: i64 = r.get(0)?;
            let json: String = r.get(1)?;
            Ok((seq, json))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, json) = row?;
            let change: Change = serde_json::from_str(&json).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
            })?;
            out.push(PendingChange { seq, change });
        }
        Ok(out)
    }

    /// How many local changes wait for the server.
    pub fn pending_count(&self) -> Result<u64> {
        let inner = self.lock();
        Ok(inner.conn.query_row("SELECT count(*) FROM outbox WHERE acked = 0", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// Documents with changes waiting for the server.
    pub fn pending_documents(&self) -> Result<Vec<DocId>> {
        let inner = self.lock();
        let mut stmt = inner.conn.prepare("SELECT DISTINCT doc FROM outbox WHERE acked = 0 ORDER BY doc")?;
        let rows = stmt.query_map([], |r| doc_from_row(r, 0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks changes acknowledged: they leave the outbox's pending list but are kept, to send
    /// again to a server restored from a backup ([`Store::note_server_epoch`]). Acknowledging
    /// twice is harmless.
    pub fn acknowledge(&self, seqs: &[i64]) -> Result<usize> {
        let mut inner = self.lock();
        let tx = inner.conn.transaction()?;
        let mut removed = 0;
        {
            let mut stmt = tx.prepare_cached("UPDATE outbox SET acked = 1 WHERE seq = ?1 AND acked = 0")?;
            for seq in seqs {
                removed += stmt.execute([seq])?;
            }
        }
        tx.commit()?;
        inner.committed();
        Ok(removed)
    }

    /// Records the epoch a server answered with. A server restored from an older backup has a
    /// new epoch and may have lost what it had acknowledged: then, in one transaction, every
    /// change this device ever sent is pending again, every attachment is to be uploaded again
    /// (the server keeps only what it lacks), and the pull starts over from the snapshot, since
    /// the old cursor names positions of the lost log. Returns true when the epoch changed.
    pub fn note_server_epoch(&self, epoch: &str) -> Result<bool> {
        let mut inner = self.lock();
        let tx = inner.conn.transaction()?;
        let known: Option<String> = tx
            .query_row("SELECT value FROM sync_state WHERE key = 'server_epoch'", [], |r| r.get(0))
            .optional()?;
        let changed = known.as_deref().is_some_and(|k| k != epoch);
        if known.as_deref() != Some(epoch) {
            tx.execute(
                "INSERT INTO sync_state (key, value) VALUES ('server_epoch', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [epoch],
            )?;
        }
        if changed {
            tx.execute("UPDATE outbox SET acked = 0 WHERE acked = 1", [])?;
            tx.execute("UPDATE attachments SET uploaded = 0 WHERE uploaded = 1", [])?;
            tx.execute("DELETE FROM sync_state WHERE key = 'cursor'", [])?;
        }
        tx.commit()?;
        inner.committed();
        Ok(changed)
    }

    /// The opaque position of the last pulled page, if any.
    pub fn sync_cursor(&self) -> Result<Option<String>> {
        self.sync_state("cursor")
    }

    pub fn sync_state(&self, key: &str) -> Result<Option<String>> {
        let inner = self.lock();
        Ok(schema::read_sync_state(&inner.conn, key)?)
    }

    pub fn set_sync_state(&self, key: &str, value: &str) -> Result<()> {
        let inner = self.lock();
        inner.conn.execute(
            "INSERT INTO sync_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}

/// Serialises a JSON value into `buf` (serde_json cannot fail on a `Value`).
pub(super) fn write_json(buf: &mut String, value: &Value) {
    use std::fmt::Write;
    let _ = write!(buf, "{value}");
}
