//! The embedded storage: one SQLite file (WAL, synchronous=FULL, so an acknowledged push
//! survives a crash), one writer connection and a small pool of readers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use sha2::{Digest, Sha256};
use tejido_core::doc;
use tejido_core::store::parse_attachment_ref;
use tejido_core::sync::wire::Role;
use tejido_core::{Change, Collection, DocId, Hlc, OpId, ReplicaId};
use uuid::Uuid;

use super::*;
use crate::service::rules::{self, DocLookup};
use crate::service::{clock, enroll, limits};

/// 'TJSV': marks a SQLite file as a Tejido server database.
const APPLICATION_ID: i32 = 0x544A_5356;
/// The schema's migrations, in order: migration `n` takes `user_version` from `n - 1` to `n`.
/// A fresh database runs them all, so an upgraded database and a fresh one are the same.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_document_sizes.sql"),
    include_str!("migrations/0003_device_uploads.sql"),
];
const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;
const MAX_READERS: usize = 8;

pub struct SqliteStorage {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    replica: ReplicaId,
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStorage").field("path", &self.path).finish()
    }
}

fn hlc_to_sql(h: Hlc) -> i64 {
    (h.0 ^ (1 << 63)) as i64
}

fn hlc_from_sql(v: i64) -> Hlc {
    Hlc((v as u64) ^ (1 << 63))
}

fn uuid_col(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Uuid> {
    let bytes: Vec<u8> = row.get(idx)?;
    Uuid::from_slice(&bytes)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Blob, Box::new(e)))
}

fn opt_uuid_col(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Option<Uuid>> {
    let bytes: Option<Vec<u8>> = row.get(idx)?;
    bytes
        .map(|b| {
            Uuid::from_slice(&b).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Blob, Box::new(e))
            })
        })
        .transpose()
}

fn role_col(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Role> {
    let s: String = row.get(idx)?;
    Role::parse(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("unknown role {s}").into(),
        )
    })
}

fn collection_col(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Collection> {
    let s: String = row.get(idx)?;
    Collection::parse(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("unknown collection {s}").into(),
        )
    })
}

const DEVICE_COLUMNS: &str = "id, project, role, replica, name, created_ms, revoked_ms, far_future_ms";

fn device_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        id: uuid_col(row, 0)?,
        project: uuid_col(row, 1)?,
        role: role_col(row, 2)?,
        replica: ReplicaId(uuid_col(row, 3)?),
        name: row.get(4)?,
        created_ms: row.get(5)?,
        revoked_ms: row.get(6)?,
        far_future_ms: row.get(7)?,
    })
}

fn project_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Project> {
    Ok(Project { id: uuid_col(row, 0)?, name: row.get(1)?, created_ms: row.get(2)? })
}

/// The documents a [`rules::Scope`] covers, as a condition on `d` (a row of `documents`).
/// Parameters: ?1 project, ?2 device id, ?3 ',role,' for form audiences, ?4 1 for everything.
const SCOPE: &str = "d.project = ?1 AND (?4 = 1 OR d.collection = 'entity'
    OR (d.collection = 'form' AND instr(d.audience, ?3) > 0)
    OR d.author_device = ?2
    OR (d.collection = 'comment' AND d.parent IN (SELECT doc FROM documents WHERE author_device = ?2)))";

struct ScopeParams {
    project: [u8; 16],
    device: [u8; 16],
    audience: String,
    coordinator: i64,
}

impl ScopeParams {
    /// The query parameters of the service's scope.
    fn of(device: &Device) -> ScopeParams {
        let scope = rules::Scope::of(device);
        ScopeParams {
            project: *scope.project.as_bytes(),
            device: *scope.device.as_bytes(),
            audience: format!(",{},", scope.role.as_str()),
            coordinator: i64::from(scope.everything),
        }
    }
}

/// A document as the server records it.
struct DocRow {
    project: Uuid,
    collection: Collection,
    author: Option<Uuid>,
    parent: Option<Uuid>,
}

impl DocRow {
    fn info(&self, doc: Uuid) -> DocumentInfo {
        DocumentInfo {
            doc: DocId(doc),
            project: self.project,
            collection: self.collection,
            author: self.author,
            parent: self.parent,
        }
    }
}

fn load_doc(tx: &Connection, doc: &Uuid) -> rusqlite::Result<Option<DocRow>> {
    tx.prepare_cached("SELECT project, collection, author_device, parent FROM documents WHERE doc = ?1")?
        .query_row([doc.as_bytes().as_slice()], |r| {
            Ok(DocRow {
                project: uuid_col(r, 0)?,
                collection: collection_col(r, 1)?,
                author: opt_uuid_col(r, 2)?,
                parent: opt_uuid_col(r, 3)?,
            })
        })
        .optional()
}

/// Applies one op to the field's history with the device store's rules: insert it, or fill the
/// placeholder left when another op saw it first, then retire what it saw.
fn merge_op(
    tx: &Transaction<'_>,
    insert: &mut rusqlite::CachedStatement<'_>,
    doc: &[u8],
    field: &str,
    id: OpId,
    value: &str,
    seen: &[OpId],
) -> rusqlite::Result<bool> {
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

/// Merges a change and logs its new ops (if any) as one log entry. Returns (new, known) ops.
fn apply_change(
    tx: &Transaction<'_>,
    project: &Uuid,
    writer: Option<&Device>,
    change: &Change,
    now_ms: i64,
) -> Result<(u64, u64)> {
    let doc = change.doc.0.as_bytes();
    let id = change.op_id();
    let mut fresh: Vec<usize> = Vec::with_capacity(change.ops.len());
    let mut value = String::new();
    // Inserts the op, or fills the placeholder an op that saw it left (which stays a non-leaf).
    let mut insert = tx.prepare_cached(
        "INSERT INTO field_ops (doc, field, hlc, replica, value, known, leaf) VALUES (?1, ?2, ?3, ?4, ?5, 1, 1)
         ON CONFLICT (doc, field, hlc, replica) DO UPDATE SET value = excluded.value, known = 1 WHERE known = 0",
    )?;
    for (i, op) in change.ops.iter().enumerate() {
        value.clear();
        let _ = write!(value, "{}", op.value);
        if merge_op(tx, &mut insert, doc, op.field.as_str(), id, &value, &op.seen)? {
            fresh.push(i);
            if let (Some(sha), Some(writer)) = (parse_attachment_ref(&op.value), writer) {
                let uploaded: bool = tx
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM blob_owners WHERE sha256 = ?1 AND project = ?2 AND device = ?3)",
                    )?
                    .query_row(
                        params![sha, writer.project.as_bytes().as_slice(), writer.id.as_bytes().as_slice()],
                        |r| r.get(0),
                    )?;
                if rules::reference_counts(writer, uploaded) {
                    tx.prepare_cached("INSERT OR IGNORE INTO blob_refs (sha256, doc) VALUES (?1, ?2)")?
                        .execute(params![sha, doc.as_slice()])?;
                }
            }
        }
    }
    let known = (change.ops.len() - fresh.len()) as u64;
    if fresh.is_empty() {
        return Ok((0, known));
    }
    let body = if fresh.len() == change.ops.len() {
        serde_json::to_string(change)
    } else {
        let partial = Change {
            ops: fresh.iter().filter_map(|&i| change.ops.get(i).cloned()).collect(),
            ..change.clone()
        };
        serde_json::to_string(&partial)
    }
    .map_err(|e| StorageError::Other(format!("cannot encode a change: {e}")))?;
    let (ops, bytes): (i64, i64) = tx
        .prepare_cached(
            "UPDATE documents SET ops = ops + ?2, bytes = bytes + ?3 WHERE doc = ?1 RETURNING ops, bytes",
        )?
        .query_row(params![doc.as_slice(), fresh.len() as i64, body.len() as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if writer.is_some() && (ops as u64 > limits::MAX_DOC_OPS || bytes as u64 > limits::MAX_DOC_BYTES) {
        return Err(StorageError::TooLarge(format!(
            "document {} would hold {ops} values in {bytes} bytes; a document holds at most {} values in {} bytes",
            change.doc.0,
            limits::MAX_DOC_OPS,
            limits::MAX_DOC_BYTES
        )));
    }
    tx.prepare_cached(
        "INSERT INTO changes (project, doc, hlc, replica, device, body, received_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        project.as_bytes().as_slice(),
        doc.as_slice(),
        hlc_to_sql(change.hlc),
        change.replica.0.as_bytes().as_slice(),
        writer.map(|d| d.id.as_bytes().to_vec()),
        body,
        now_ms
    ])?;
    Ok((fresh.len() as u64, known))
}

fn insert_document(
    tx: &Transaction<'_>,
    doc: &Uuid,
    project: &Uuid,
    collection: Collection,
    author: Option<&Uuid>,
    parent: Option<&Uuid>,
    audience: Option<&str>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO documents (doc, project, collection, author_device, parent, audience)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        doc.as_bytes().as_slice(),
        project.as_bytes().as_slice(),
        collection.as_str(),
        author.map(|a| a.as_bytes().to_vec()),
        parent.map(|p| p.as_bytes().to_vec()),
        audience
    ])?;
    Ok(())
}

/// The rules' view of the transaction.
struct TxLookup<'a, 'b>(&'a Transaction<'b>);

impl DocLookup for TxLookup<'_, '_> {
    fn doc(&mut self, doc: Uuid) -> Result<Option<DocumentInfo>> {
        Ok(load_doc(self.0, &doc)?.map(|row| row.info(doc)))
    }

    fn known_op_ids(&mut self, doc: Uuid, field: &str) -> Result<Vec<OpId>> {
        Ok(self
            .0
            .prepare_cached("SELECT hlc, replica FROM field_ops WHERE doc = ?1 AND field = ?2 AND known = 1")?
            .query_map(params![doc.as_bytes().as_slice(), field], |r| {
                Ok(OpId { hlc: hlc_from_sql(r.get(0)?), replica: ReplicaId(uuid_col(r, 1)?) })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }
}

/// One field's ops as a snapshot needs them.
#[derive(Default)]
struct FieldHistory {
    /// Open values (their JSON text), greatest first: the winner first.
    leaves: Vec<(OpId, String)>,
    /// Every op (known or a placeholder) that some op has seen.
    seen: Vec<OpId>,
}

/// A document's current state as snapshot changes, in wire JSON: its open values grouped by op
/// id, with the winner of each field naming every op of the field that is not a leaf, so a
/// device that gets only the snapshot still knows which late ops have already been replaced.
/// Values are spliced in as stored (valid JSON), not parsed and re-encoded.
fn snapshot_changes(conn: &Connection, doc: Uuid, collection: Collection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT field, hlc, replica, value, known, leaf FROM field_ops WHERE doc = ?1
         ORDER BY field, hlc DESC, replica DESC",
    )?;
    let mut rows = stmt.query([doc.as_bytes().as_slice()])?;
    let mut fields: Vec<(String, FieldHistory)> = Vec::new();
    while let Some(row) = rows.next()? {
        let field = row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
        if fields.last().is_none_or(|(f, _)| f != field) {
            fields.push((field.to_owned(), FieldHistory::default()));
        }
        let id = OpId { hlc: hlc_from_sql(row.get(1)?), replica: ReplicaId(uuid_col(row, 2)?) };
        let known: bool = row.get(4)?;
        let leaf: bool = row.get(5)?;
        let value: Option<String> = row.get(3)?;
        if let Some(entry) = fields.last_mut().map(|(_, h)| h) {
            match value {
                Some(v) if known && leaf => entry.leaves.push((id, v)),
                _ => entry.seen.push(id),
            }
        }
    }
    // op id -> the ops' JSON objects
    let mut by_op: BTreeMap<OpId, Vec<String>> = BTreeMap::new();
    for (field, history) in &fields {
        let field_json = serde_json::to_string(field)
            .map_err(|e| StorageError::Other(format!("cannot encode a field path: {e}")))?;
        for (i, (id, value)) in history.leaves.iter().enumerate() {
            let mut op = String::with_capacity(field_json.len() + value.len() + 24);
            op.push_str("{\"field\":");
            op.push_str(&field_json);
            op.push_str(",\"value\":");
            op.push_str(value);
            if i == 0 && !history.seen.is_empty() {
                op.push_str(",\"seen\":[");
                for (j, s) in history.seen.iter().enumerate() {
                    if j > 0 {
                        op.push(',');
                    }
                    let _ = write!(op, "\"{s}\"");
                }
                op.push(']');
            }
            op.push('}');
            by_op.entry(*id).or_default().push(op);
        }
    }
    Ok(by_op
        .into_iter()
        .map(|(id, ops)| {
            let mut c = String::with_capacity(ops.iter().map(|o| o.len() + 1).sum::<usize>() + 160);
            let _ = write!(
                c,
                "{{\"doc\":\"{doc}\",\"collection\":\"{}\",\"replica\":\"{}\",\"hlc\":\"{:016x}\",\"ops\":[",
                collection.as_str(),
                id.replica,
                id.hlc.0
            );
            for (i, o) in ops.iter().enumerate() {
                if i > 0 {
                    c.push(',');
                }
                c.push_str(o);
            }
            c.push_str("]}");
            c
        })
        .collect())
}

fn max_seq(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT coalesce(max(seq), 0) FROM changes", [], |r| r.get(0))
}

fn content_hash(value: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(value.to_string().as_bytes()))
}

impl SqliteStorage {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStorage> {
        let path = path.as_ref().to_path_buf();
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk before the push is acknowledged.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let app_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if !(app_id == APPLICATION_ID || (app_id == 0 && tables == 0)) {
            return Err(StorageError::Other(format!("{} is not a tejido-server database", path.display())));
        }
        migrate(&mut conn, &path)?;
        let replica: String =
            conn.query_row("SELECT value FROM meta WHERE key = 'replica'", [], |r| r.get(0))?;
        let replica = Uuid::try_parse(&replica)
            .map_err(|_| StorageError::Other("the server's replica id is corrupt".into()))?;
        Ok(SqliteStorage {
            path,
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            replica: ReplicaId(replica),
        })
    }

    /// The server's own replica id, which stamps reviews and published forms.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let pooled = lock(&self.readers).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open(&self.path)?;
                c.busy_timeout(std::time::Duration::from_secs(30))?;
                c.pragma_update(None, "query_only", "ON")?;
                c
            }
        };
        let out = (|| {
            let tx = conn.transaction()?;
            let out = f(&tx)?;
            tx.finish()?;
            Ok(out)
        })();
        let mut pool = lock(&self.readers);
        if pool.len() < MAX_READERS {
            pool.push(conn);
        }
        out
    }

    /// A fresh server stamp after everything in the document (within the clock bound), read
    /// from and saved to the database in this transaction: see [`crate::service::clock`].
    fn tick_after(&self, tx: &Transaction<'_>, doc: &Uuid) -> Result<Hlc> {
        let wall = crate::now_ms().max(0) as u64;
        let observed: Option<i64> = tx
            .prepare_cached("SELECT max(hlc) FROM field_ops WHERE doc = ?1 AND hlc <= ?2")?
            .query_row(params![doc.as_bytes().as_slice(), hlc_to_sql(clock::bound(wall))], |r| r.get(0))?;
        let stored = read_clock(tx)?;
        let hlc = clock::next_stamp(stored, observed.map(hlc_from_sql), wall);
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'clock'", [hlc.0.to_string()])?;
        Ok(hlc)
    }
}

fn read_clock(conn: &Connection) -> Result<Hlc> {
    let clock: String = conn.query_row("SELECT value FROM meta WHERE key = 'clock'", [], |r| r.get(0))?;
    clock.parse().map(Hlc).map_err(|_| StorageError::Other("the server's clock is corrupt".into()))
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction (a fresh file runs every
/// migration), and retires a clock that an older server let devices poison.
fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated the file meanwhile: read the version inside.
    let version: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StorageError::Other(format!(
            "{} has schema version {version}; this server knows up to {SCHEMA_VERSION}: run a newer tejido-server",
            path.display()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        if i == 0 {
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('replica', ?1), ('clock', '0')",
                [Uuid::new_v4().to_string()],
            )?;
        }
        tx.pragma_update(None, "user_version", i as u32 + 1)?;
    }
    let wall = crate::now_ms().max(0) as u64;
    if clock::is_poisoned(read_clock(&tx)?, wall) {
        // Stamps far past the bound were issued under the old replica id; a new id keeps every
        // stamp issued from now on unique.
        tracing::warn!("the server clock was moved far ahead by a device; the server takes a new replica id");
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'replica'", [Uuid::new_v4().to_string()])?;
        tx.execute("UPDATE meta SET value = '0' WHERE key = 'clock'", [])?;
    }
    tx.commit()?;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll back).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Storage for SqliteStorage {
    fn create_project(&self, name: &str, now_ms: i64) -> Result<Project> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(StorageError::Invalid("a project name has 1 to 200 characters".into()));
        }
        self.write(|tx| {
            let exists: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM projects WHERE name = ?1)", [name], |r| r.get(0))?;
            if exists {
                return Err(StorageError::Conflict(format!("a project named {name:?} exists already")));
            }
            let id = Uuid::new_v4();
            tx.execute(
                "INSERT INTO projects (id, name, created_ms) VALUES (?1, ?2, ?3)",
                params![id.as_bytes().as_slice(), name, now_ms],
            )?;
            Ok(Project { id, name: name.to_owned(), created_ms: now_ms })
        })
    }

    fn find_project(&self, id_or_name: &str) -> Result<Option<Project>> {
        self.read(|tx| {
            let by_id = match Uuid::try_parse(id_or_name) {
                Ok(id) => tx
                    .query_row(
                        "SELECT id, name, created_ms FROM projects WHERE id = ?1",
                        [id.as_bytes().as_slice()],
                        project_from_row,
                    )
                    .optional()?,
                Err(_) => None,
            };
            match by_id {
                Some(p) => Ok(Some(p)),
                None => Ok(tx
                    .query_row(
                        "SELECT id, name, created_ms FROM projects WHERE name = ?1",
                        [id_or_name],
                        project_from_row,
                    )
                    .optional()?),
            }
        })
    }

    fn list_projects(&self) -> Result<Vec<Project>> {
        self.read(|tx| {
            let mut stmt = tx.prepare("SELECT id, name, created_ms FROM projects ORDER BY name")?;
            let rows = stmt.query_map([], project_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn create_enrollment_code(&self, code: &NewEnrollmentCode) -> Result<()> {
        if code.uses == 0 {
            return Err(StorageError::Invalid("an enrollment code must allow at least one use".into()));
        }
        self.write(|tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM projects WHERE id = ?1)",
                [code.project.as_bytes().as_slice()],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(StorageError::NotFound(format!("project {}", code.project)));
            }
            tx.execute(
                "INSERT INTO enrollment_codes (code_hash, project, role, uses_left, expires_ms, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    code.code_hash.as_slice(),
                    code.project.as_bytes().as_slice(),
                    code.role.as_str(),
                    code.uses,
                    code.expires_ms,
                    code.now_ms
                ],
            )?;
            Ok(())
        })
    }

    fn redeem_enrollment_code(&self, redeem: &Redeem) -> Result<Enrolled> {
        if redeem.replica == self.replica {
            return Err(StorageError::Conflict("that replica id is the server's own".into()));
        }
        self.write(|tx| {
            let code: Option<(Uuid, Role, enroll::CodeState)> = tx
                .query_row(
                    "SELECT project, role, uses_left, expires_ms, created_ms FROM enrollment_codes WHERE code_hash = ?1",
                    [redeem.code_hash.as_slice()],
                    |r| {
                        Ok((
                            uuid_col(r, 0)?,
                            role_col(r, 1)?,
                            enroll::CodeState { uses_left: r.get(2)?, expires_ms: r.get(3)?, created_ms: r.get(4)? },
                        ))
                    },
                )
                .optional()?;
            let replica = redeem.replica.0.as_bytes().as_slice();
            let state = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM devices WHERE replica = ?1 AND revoked_ms IS NULL),
                        (SELECT max(revoked_ms) FROM devices WHERE replica = ?1)",
                [replica],
                |r| Ok(enroll::ReplicaState { active: r.get(0)?, revoked_ms: r.get(1)? }),
            )?;
            enroll::check_code(code.as_ref().map(|c| &c.2), &state, redeem.now_ms)?;
            let Some((project_id, role, _)) = code else { return Err(StorageError::BadCode) };
            tx.execute(
                "UPDATE enrollment_codes SET uses_left = uses_left - 1 WHERE code_hash = ?1",
                [redeem.code_hash.as_slice()],
            )?;
            tx.execute(
                "INSERT INTO devices (id, project, role, replica, name, token_hash, code_hash, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    redeem.device_id.as_bytes().as_slice(),
                    project_id.as_bytes().as_slice(),
                    role.as_str(),
                    replica,
                    redeem.device_name,
                    redeem.token_hash.as_slice(),
                    redeem.code_hash.as_slice(),
                    redeem.now_ms
                ],
            )?;
            let device_id = redeem.device_id;
            let device = tx.query_row(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"),
                [device_id.as_bytes().as_slice()],
                device_from_row,
            )?;
            let project = tx.query_row(
                "SELECT id, name, created_ms FROM projects WHERE id = ?1",
                [project_id.as_bytes().as_slice()],
                project_from_row,
            )?;
            Ok(Enrolled { device, project })
        })
    }

    fn device_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<Device>> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE token_hash = ?1"))?
                .query_row([token_hash.as_slice()], device_from_row)
                .optional()?)
        })
    }

    fn device(&self, id: Uuid) -> Result<Option<Device>> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"))?
                .query_row([id.as_bytes().as_slice()], device_from_row)
                .optional()?)
        })
    }

    fn list_devices(&self, project: Uuid) -> Result<Vec<Device>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE project = ?1 ORDER BY created_ms, id"
            ))?;
            let rows = stmt.query_map([project.as_bytes().as_slice()], device_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn revoke_device(&self, id: Uuid, now_ms: i64) -> Result<bool> {
        self.write(|tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM devices WHERE id = ?1)",
                [id.as_bytes().as_slice()],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(StorageError::NotFound(format!("device {id}")));
            }
            let n = tx.execute(
                "UPDATE devices SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
                params![id.as_bytes().as_slice(), now_ms],
            )?;
            Ok(n > 0)
        })
    }

    fn push(&self, device: &Device, changes: &[Change], now_ms: u64) -> Result<PushOutcome> {
        self.write(|tx| {
            // Revocation is checked inside the transaction: a push racing a revoke loses.
            let revoked: Option<Option<i64>> = tx
                .prepare_cached("SELECT revoked_ms FROM devices WHERE id = ?1")?
                .query_row([device.id.as_bytes().as_slice()], |r| r.get(0))
                .optional()?;
            if !matches!(revoked, Some(None)) {
                return Err(StorageError::Forbidden("the device is revoked".into()));
            }
            let mut outcome = PushOutcome::default();
            let mut far_future = false;
            for change in changes {
                let admitted = rules::admit_change(&mut TxLookup(tx), device, change)?;
                if let Some(parent) = admitted.create {
                    insert_document(
                        tx,
                        &change.doc.0,
                        &device.project,
                        change.collection,
                        Some(&device.id),
                        parent.as_ref(),
                        None,
                    )?;
                }
                let (new, known) = apply_change(tx, &device.project, Some(device), change, now_ms as i64)?;
                outcome.accepted_ops += new;
                outcome.duplicate_ops += known;
                far_future |= clock::is_far_future(change.hlc, now_ms);
                if admitted.new_comment {
                    // The author of a comment is the credential that created it, never a claim.
                    let hlc = self.tick_after(tx, &change.doc.0)?;
                    let label = device
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{} {}", device.role.as_str(), device.id));
                    let author = Change {
                        doc: change.doc,
                        collection: Collection::Comment,
                        replica: self.replica,
                        hlc,
                        ops: vec![doc::Comment::author_op(&label)],
                    };
                    apply_change(tx, &device.project, None, &author, now_ms as i64)?;
                }
            }
            if far_future {
                tx.execute(
                    "UPDATE devices SET far_future_ms = ?2 WHERE id = ?1",
                    params![device.id.as_bytes().as_slice(), now_ms as i64],
                )?;
            }
            Ok(outcome)
        })
    }

    fn pull(&self, device: &Device, cursor: Cursor, limit: usize) -> Result<PullPage> {
        let limit = limit.clamp(1, 5_000);
        let scope = ScopeParams::of(device);
        self.read(|tx| {
            let (upto, after, from_start) = match cursor {
                Cursor::Log(after) => return log_page(tx, &scope, after, limit),
                Cursor::Start => (max_seq(tx)?, Uuid::nil(), true),
                Cursor::Snapshot { upto, after } => (upto, after, false),
            };
            // From the start, the bound includes the smallest id; later it is the last one sent.
            let bound = if from_start { ">=" } else { ">" };
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT d.doc, d.collection FROM documents d WHERE {SCOPE} AND d.doc {bound} ?5
                 ORDER BY d.doc LIMIT ?6"
            ))?;
            let docs: Vec<(Uuid, Collection)> = stmt
                .query_map(
                    params![
                        scope.project.as_slice(),
                        scope.device.as_slice(),
                        scope.audience,
                        scope.coordinator,
                        after.as_bytes().as_slice(),
                        limit as i64
                    ],
                    |r| Ok((uuid_col(r, 0)?, collection_col(r, 1)?)),
                )?
                .collect::<rusqlite::Result<_>>()?;
            let exhausted = docs.len() < limit;
            let mut changes = Vec::new();
            let mut bytes = 0;
            let mut last = after;
            for (i, (doc, collection)) in docs.iter().enumerate() {
                let snapshot = snapshot_changes(tx, *doc, *collection)?;
                let size: usize = snapshot.iter().map(String::len).sum();
                if !changes.is_empty() && bytes + size > limits::MAX_PAGE_BYTES {
                    // This document starts the next page.
                    return Ok(PullPage {
                        changes,
                        cursor: Cursor::Snapshot { upto, after: last },
                        more: true,
                    });
                }
                bytes += size;
                changes.extend(snapshot);
                last = *doc;
                if changes.len() >= limit && i + 1 < docs.len() {
                    return Ok(PullPage {
                        changes,
                        cursor: Cursor::Snapshot { upto, after: last },
                        more: true,
                    });
                }
            }
            if exhausted {
                let more = max_seq(tx)? > upto;
                Ok(PullPage { changes, cursor: Cursor::Log(upto), more })
            } else {
                Ok(PullPage { changes, cursor: Cursor::Snapshot { upto, after: last }, more: true })
            }
        })
    }

    fn document(&self, doc: DocId) -> Result<Option<DocumentInfo>> {
        self.read(|tx| Ok(load_doc(tx, &doc.0)?.map(|row| row.info(doc.0))))
    }

    fn review(&self, review: &Review) -> Result<ReviewOutcome> {
        self.write(|tx| {
            let sub = review.submission.0;
            let row = load_doc(tx, &sub)?;
            match row {
                Some(r) if r.project == review.project && r.collection == Collection::Submission => {}
                _ => return Err(StorageError::NotFound(format!("submission {sub}"))),
            }
            let hlc = self.tick_after(tx, &sub)?;
            let open: Vec<OpId> = tx
                .prepare_cached(
                    "SELECT hlc, replica FROM field_ops WHERE doc = ?1 AND field = ?2 AND leaf = 1",
                )?
                .query_map(params![sub.as_bytes().as_slice(), doc::meta::REVIEW_STATE], |r| {
                    Ok(OpId { hlc: hlc_from_sql(r.get(0)?), replica: ReplicaId(uuid_col(r, 1)?) })
                })?
                .collect::<rusqlite::Result<_>>()?;
            // A review replaces every open review state it can order after; one stamped beyond
            // the clock bound (a coordinator device's clock far ahead) stays open, as a conflict.
            let seen: Vec<OpId> = open.into_iter().filter(|id| id.hlc < hlc).collect();
            let change = Change {
                doc: review.submission,
                collection: Collection::Submission,
                replica: self.replica,
                hlc,
                ops: vec![doc::review_op(&review.state, seen)],
            };
            apply_change(tx, &review.project, None, &change, review.now_ms as i64)?;
            let mut comment_doc = None;
            if let Some(text) = &review.comment {
                let doc = DocId::new();
                insert_document(
                    tx,
                    &doc.0,
                    &review.project,
                    Collection::Comment,
                    review.author.as_ref(),
                    Some(&sub),
                    None,
                )?;
                let comment = doc::Comment {
                    submission: review.submission,
                    text: text.clone(),
                    author: Some(review.author_label.clone()),
                    review_state: Some(review.state.clone()),
                };
                let change = Change {
                    doc,
                    collection: Collection::Comment,
                    replica: self.replica,
                    hlc,
                    ops: comment.ops(),
                };
                apply_change(tx, &review.project, None, &change, review.now_ms as i64)?;
                comment_doc = Some(doc);
            }
            Ok(ReviewOutcome {
                submission: review.submission,
                state: review.state.clone(),
                comment: comment_doc,
            })
        })
    }

    fn publish_form(&self, form: &PublishForm) -> Result<PublishOutcome> {
        let hash = content_hash(&form.form);
        self.write(|tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM projects WHERE id = ?1)",
                [form.project.as_bytes().as_slice()],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(StorageError::NotFound(format!("project {}", form.project)));
            }
            let existing: Option<(String, Uuid)> = tx
                .query_row(
                    "SELECT content_hash, doc FROM forms WHERE project = ?1 AND form_id = ?2 AND version = ?3",
                    params![form.project.as_bytes().as_slice(), form.form_id, form.version],
                    |r| Ok((r.get(0)?, uuid_col(r, 1)?)),
                )
                .optional()?;
            match existing {
                Some((h, doc)) if h == hash => return Ok(PublishOutcome { doc: DocId(doc), published: false }),
                Some(_) => {
                    return Err(StorageError::Conflict(format!(
                        "form {} version {} is already published with other content; published versions \
                         are immutable, so give the change a new version",
                        form.form_id, form.version
                    )))
                }
                None => {}
            }
            let doc = DocId::new();
            let mut audience = String::from(",");
            for r in &form.roles {
                audience.push_str(r.as_str());
                audience.push(',');
            }
            insert_document(tx, &doc.0, &form.project, Collection::Form, None, None, Some(&audience))?;
            let hlc = self.tick_after(tx, &doc.0)?;
            let published = doc::PublishedForm {
                form_id: form.form_id.clone(),
                version: form.version.clone(),
                roles: form.roles.iter().map(|r| r.as_str().to_owned()).collect(),
                form: form.form.clone(),
            };
            let change = Change { doc, collection: Collection::Form, replica: self.replica, hlc, ops: published.ops() };
            apply_change(tx, &form.project, None, &change, form.now_ms as i64)?;
            tx.execute(
                "INSERT INTO forms (project, form_id, version, content_hash, doc, published_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    form.project.as_bytes().as_slice(),
                    form.form_id,
                    form.version,
                    hash,
                    doc.0.as_bytes().as_slice(),
                    form.now_ms as i64
                ],
            )?;
            Ok(PublishOutcome { doc, published: true })
        })
    }

    fn conflicts(&self, project: Uuid) -> Result<Vec<FieldConflict>> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT f.doc, f.field, f.hlc, f.replica FROM documents d JOIN field_ops f ON f.doc = d.doc
                 WHERE d.project = ?1 AND f.leaf = 1 AND f.known = 1
                 ORDER BY f.doc, f.field, f.hlc DESC, f.replica DESC",
            )?;
            let mut rows = stmt.query([project.as_bytes().as_slice()])?;
            let mut fields: Vec<FieldConflict> = Vec::new();
            while let Some(row) = rows.next()? {
                let doc = DocId(uuid_col(row, 0)?);
                let field: String = row.get(1)?;
                let id = OpId { hlc: hlc_from_sql(row.get(2)?), replica: ReplicaId(uuid_col(row, 3)?) };
                match fields.last_mut() {
                    Some(c) if c.doc == doc && c.field == field => c.ops.push(id.to_string()),
                    _ => {
                        // The previous field had one open value: no conflict.
                        if fields.last().is_some_and(|c| c.ops.len() < 2) {
                            fields.pop();
                        }
                        fields.push(FieldConflict { doc, field, ops: vec![id.to_string()] });
                    }
                }
            }
            if fields.last().is_some_and(|c| c.ops.len() < 2) {
                fields.pop();
            }
            Ok(fields)
        })
    }

    fn blob_access(&self, device: &Device, sha256: &str) -> Result<Option<String>> {
        let scope = ScopeParams::of(device);
        self.read(|tx| {
            let media_type: Option<String> = tx
                .query_row(
                    "SELECT media_type FROM blob_owners WHERE sha256 = ?1 AND project = ?2 LIMIT 1",
                    params![sha256, scope.project.as_slice()],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(media_type) = media_type else { return Ok(None) };
            let owned: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM blob_owners WHERE sha256 = ?1 AND project = ?2 AND (?4 = 1 OR device = ?3))",
                params![sha256, scope.project.as_slice(), scope.device.as_slice(), scope.coordinator],
                |r| r.get(0),
            )?;
            if owned {
                return Ok(Some(media_type));
            }
            let referenced: bool = tx.query_row(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM blob_refs r JOIN documents d ON d.doc = r.doc
                     WHERE r.sha256 = ?5 AND {SCOPE})"
                ),
                params![
                    scope.project.as_slice(),
                    scope.device.as_slice(),
                    scope.audience,
                    scope.coordinator,
                    sha256
                ],
                |r| r.get(0),
            )?;
            Ok(referenced.then_some(media_type))
        })
    }

    fn blob_held(&self, owner: UploadOwner, sha256: &str) -> Result<bool> {
        self.read(|tx| {
            Ok(tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM blob_owners WHERE sha256 = ?1 AND project = ?2 AND device = ?3)",
                params![sha256, owner.project.as_bytes().as_slice(), owner.device.as_bytes().as_slice()],
                |r| r.get(0),
            )?)
        })
    }

    fn record_blob(
        &self,
        device: &Device,
        sha256: &str,
        size: u64,
        media_type: &str,
        now_ms: i64,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO blob_owners (sha256, project, device, size, media_type, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    sha256,
                    device.project.as_bytes().as_slice(),
                    device.id.as_bytes().as_slice(),
                    size as i64,
                    media_type,
                    now_ms
                ],
            )?;
            tx.execute(
                "DELETE FROM uploads WHERE project = ?1 AND device = ?2 AND sha256 = ?3",
                params![device.project.as_bytes().as_slice(), device.id.as_bytes().as_slice(), sha256],
            )?;
            Ok(())
        })
    }

    fn upload(&self, owner: UploadOwner, sha256: &str) -> Result<Option<UploadInfo>> {
        self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT length, media_type FROM uploads WHERE project = ?1 AND device = ?2 AND sha256 = ?3",
                    params![owner.project.as_bytes().as_slice(), owner.device.as_bytes().as_slice(), sha256],
                    |r| Ok(UploadInfo { length: r.get::<_, i64>(0)? as u64, media_type: r.get(1)? }),
                )
                .optional()?)
        })
    }

    fn start_upload(
        &self,
        owner: UploadOwner,
        sha256: &str,
        length: u64,
        media_type: &str,
        now_ms: i64,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO uploads (project, device, sha256, length, media_type, started_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (project, device, sha256) DO UPDATE
                 SET length = excluded.length, media_type = excluded.media_type, started_ms = excluded.started_ms",
                params![
                    owner.project.as_bytes().as_slice(),
                    owner.device.as_bytes().as_slice(),
                    sha256,
                    length as i64,
                    media_type,
                    now_ms
                ],
            )?;
            Ok(())
        })
    }

    fn end_upload(&self, owner: UploadOwner, sha256: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM uploads WHERE project = ?1 AND device = ?2 AND sha256 = ?3",
                params![owner.project.as_bytes().as_slice(), owner.device.as_bytes().as_slice(), sha256],
            )?;
            Ok(())
        })
    }

    fn upload_bytes_in_progress(&self, device: Uuid, except_sha256: &str) -> Result<u64> {
        self.read(|tx| {
            let n: i64 = tx.query_row(
                "SELECT coalesce(sum(length), 0) FROM uploads WHERE device = ?1 AND sha256 <> ?2",
                params![device.as_bytes().as_slice(), except_sha256],
                |r| r.get(0),
            )?;
            Ok(n.max(0) as u64)
        })
    }

    fn stale_uploads(&self, before_ms: i64, limit: usize) -> Result<Vec<(UploadOwner, String)>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT project, device, sha256 FROM uploads WHERE started_ms < ?1 ORDER BY started_ms LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![before_ms, limit as i64], |r| {
                Ok((UploadOwner { project: uuid_col(r, 0)?, device: uuid_col(r, 1)? }, r.get(2)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }
}

fn log_page(tx: &Transaction<'_>, scope: &ScopeParams, after: i64, limit: usize) -> Result<PullPage> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT c.seq, c.body FROM changes c JOIN documents d ON d.doc = c.doc
         WHERE c.project = ?1 AND c.seq > ?5 AND {SCOPE} ORDER BY c.seq LIMIT ?6"
    ))?;
    let mut rows = stmt.query(params![
        scope.project.as_slice(),
        scope.device.as_slice(),
        scope.audience,
        scope.coordinator,
        after,
        limit as i64
    ])?;
    let mut changes = Vec::new();
    let mut bytes = 0;
    let mut last = after;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let body: String = row.get(1)?;
        if !changes.is_empty() && bytes + body.len() > limits::MAX_PAGE_BYTES {
            // This change starts the next page.
            return Ok(PullPage { changes, cursor: Cursor::Log(last), more: true });
        }
        last = seq;
        bytes += body.len();
        changes.push(body);
        if changes.len() >= limit {
            return Ok(PullPage { changes, cursor: Cursor::Log(last), more: true });
        }
    }
    // Everything up to the end of the log as this transaction sees it has been scanned.
    let end = max_seq(tx)?.max(last);
    Ok(PullPage { changes, cursor: Cursor::Log(end), more: false })
}
