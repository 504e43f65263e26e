//! The embedded storage: one SQLite file (WAL, synchronous=FULL, so an acknowledged push
//! survives a crash), one writer connection and a small pool of readers. It implements the
//! primitives of [`Tx`] and nothing else: no rule is decided here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tejido_core::sync::wire::Role;
use tejido_core::{Collection, DocId, Hlc, OpId, ReplicaId};
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use super::*;
use crate::service::enroll::{CodeState, ReplicaState};
use crate::service::rules::Scope;

/// 'TJSV': marks a SQLite file as a Tejido server database.
const APPLICATION_ID: i32 = 0x544A_5356;
/// The schema's migrations, in order: migration `n` takes `user_version` from `n - 1` to `n`.
/// A fresh database runs them all, so an upgraded database and a fresh one are the same.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_document_sizes.sql"),
    include_str!("migrations/0003_device_uploads.sql"),
    include_str!("migrations/0004_upload_leases.sql"),
    include_str!("migrations/0005_epoch.sql"),
    include_str!("migrations/0006_coordinators.sql"),
];
const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;
const MAX_READERS: usize = 8;
/// The writer connection's page cache, in KiB (as `PRAGMA cache_size` takes it, negated).
const WRITER_CACHE_KIB: i64 = -64 * 1024;
/// Prepared statements kept per connection: more than this backend's distinct statements.
const STATEMENT_CACHE: usize = 128;

pub struct SqliteStorage {
    path: PathBuf,
    writer: Arc<tokio::sync::Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Wakes the checkpointer after a commit.
    checkpoint: std::sync::mpsc::SyncSender<()>,
}

/// How long the checkpointer gathers commits before it folds the WAL into the database: the
/// pages a burst of pushes rewrote (the same index pages, over and over) are copied once.
const CHECKPOINT_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// Checkpoints the WAL on its own thread and connection, so that the page copying and fsync
/// of a checkpoint never run inside a push, which holds the one writer connection while it
/// does (SQLite's automatic checkpoint runs in the committing connection). PASSIVE never
/// blocks the writer or a reader. The thread ends when the storage and its transactions are
/// gone (the channel closes).
fn start_checkpointer(path: &Path) -> Result<std::sync::mpsc::SyncSender<()>> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let (wake, rx) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("tejido-server-checkpoint".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                std::thread::sleep(CHECKPOINT_DELAY);
                while rx.try_recv().is_ok() {}
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "background WAL checkpoint failed");
                }
            }
        })
        .map_err(|e| StorageError::Other(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(wake)
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> StorageError {
        StorageError::Database(e.to_string())
    }
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
    fn of(scope: &Scope) -> ScopeParams {
        ScopeParams {
            project: *scope.project.as_bytes(),
            device: *scope.device.as_bytes(),
            audience: format!(",{},", scope.role.as_str()),
            coordinator: i64::from(scope.everything),
        }
    }
}

const USER_COLUMNS: &str = "id, email, password_hash, created_ms";

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User { id: uuid_col(r, 0)?, email: r.get(1)?, password_hash: r.get(2)?, created_ms: r.get(3)? })
}

const STATE_COLUMNS: &str = "doc, project, form_id, form_version, author_device, review_state, finalized, \
     deleted, conflicts, flags, duration_s, received_ms, updated_ms, answers";

fn state_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SubmissionState> {
    Ok(SubmissionState {
        doc: uuid_col(r, 0)?,
        project: uuid_col(r, 1)?,
        form_id: r.get(2)?,
        form_version: r.get(3)?,
        author_device: opt_uuid_col(r, 4)?,
        review_state: r.get(5)?,
        finalized: r.get(6)?,
        deleted: r.get(7)?,
        conflicts: r.get::<_, i64>(8)?.clamp(0, i64::from(u32::MAX)) as u32,
        flags: r.get::<_, i64>(9)?.clamp(0, i64::from(u32::MAX)) as u32,
        duration_s: r.get(10)?,
        received_ms: r.get(11)?,
        updated_ms: r.get(12)?,
        answers: r.get(13)?,
    })
}

fn hash32(r: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<[u8; 32]> {
    let v: Vec<u8> = r.get(idx)?;
    v.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Blob, "not 32 bytes".into())
    })
}

fn max_seq(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT coalesce(max(seq), 0) FROM changes", [], |r| r.get(0))
}

impl SqliteStorage {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStorage> {
        let path = path.as_ref().to_path_buf();
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        // Room for every statement a push or a page uses (the default keeps 16).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // 16 KiB pages for a new database (an existing one keeps its own): a push's commit
        // writes each dirty page to the WAL with two system calls, and a push dirties a few
        // hundred pages; larger pages also split less often. On `tejido-bench sync` this moved
        // the push from 0.31–0.36 to 0.40–0.42 of raw inserts.
        conn.pragma_update(None, "page_size", 16384)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk before the push is acknowledged.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The writer's page cache: a push lands its answers all over the field_ops b-tree (the
        // ids of submissions from many phones interleave), and SQLite's default 2 MB cache would
        // read most of those pages back from the file on every push.
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        // Checkpoints run on their own thread (`start_checkpointer`), not in a push. But the next
        // writer starts the WAL over only once a checkpoint has copied every frame in it, which
        // the background thread never manages under steady pushes: the WAL then grows without
        // end, and each frame written past its end costs the kernel a zeroed block. So the
        // writer also checkpoints once the WAL holds 4096 frames (64 MiB at 16 KiB pages); the
        // background thread has usually copied all but the last few by then.
        conn.pragma_update(None, "wal_autocheckpoint", 4096)?;
        let app_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if !(app_id == APPLICATION_ID || (app_id == 0 && tables == 0)) {
            return Err(StorageError::Other(format!("{} is not a tejido-server database", path.display())));
        }
        migrate(&mut conn, &path)?;
        let checkpoint = start_checkpointer(&path)?;
        Ok(SqliteStorage {
            path,
            writer: Arc::new(tokio::sync::Mutex::new(conn)),
            readers: Arc::new(Mutex::new(Vec::new())),
            checkpoint,
        })
    }

    /// The server's replica id, as stored.
    pub fn replica(&self) -> Result<ReplicaId> {
        let conn = Connection::open(&self.path)?;
        read_replica(&conn)
    }

    fn reader(&self) -> Result<Connection> {
        let pooled = lock(&self.readers).pop();
        match pooled {
            Some(c) => Ok(c),
            None => {
                let c = Connection::open(&self.path)?;
                c.busy_timeout(std::time::Duration::from_secs(30))?;
                c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                c.pragma_update(None, "query_only", "ON")?;
                Ok(c)
            }
        }
    }
}

fn read_replica(conn: &Connection) -> Result<ReplicaId> {
    let replica: String = conn.query_row("SELECT value FROM meta WHERE key = 'replica'", [], |r| r.get(0))?;
    Uuid::try_parse(&replica)
        .map(ReplicaId)
        .map_err(|_| StorageError::Other("the server's replica id is corrupt".into()))
}

fn read_clock(conn: &Connection) -> Result<Hlc> {
    let clock: String = conn.query_row("SELECT value FROM meta WHERE key = 'clock'", [], |r| r.get(0))?;
    clock.parse().map(Hlc).map_err(|_| StorageError::Other("the server's clock is corrupt".into()))
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction (a fresh file runs every
/// migration).
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
    tx.commit()?;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll back).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a call that may wait on the disk (a commit's fsync, a busy database) without holding
/// up the runtime's other tasks: on a multi-threaded runtime the worker hands its tasks on.
fn may_block<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[async_trait::async_trait]
impl Storage for SqliteStorage {
    async fn begin(&self, mode: Mode) -> Result<Box<dyn Tx>> {
        let conn = match mode {
            Mode::Write | Mode::Push => {
                let guard = self.writer.clone().lock_owned().await;
                may_block(|| guard.execute_batch("BEGIN IMMEDIATE"))?;
                Conn::Writer(guard, self.checkpoint.clone())
            }
            Mode::Read => {
                let conn = self.reader()?;
                conn.execute_batch("BEGIN")?;
                Conn::Reader(Some(conn), self.readers.clone())
            }
        };
        Ok(Box::new(SqliteTx { conn, open: true, created: Vec::new(), held: Vec::new() }))
    }
}

enum Conn {
    /// The one writer connection, held for the transaction.
    Writer(OwnedMutexGuard<Connection>, std::sync::mpsc::SyncSender<()>),
    /// A reader from the pool, given back when the transaction ends.
    Reader(Option<Connection>, Arc<Mutex<Vec<Connection>>>),
}

/// One SQLite transaction (`BEGIN IMMEDIATE` for writers, so they never deadlock on upgrade).
pub struct SqliteTx {
    conn: Conn,
    open: bool,
    /// Documents this transaction created that hold no op yet (a push creates a few hundred).
    created: Vec<Uuid>,
    /// Rows of `documents` this transaction created, with their sizes, not yet written: a new
    /// submission's row is written once, after its first change has grown it, instead of an
    /// INSERT and then an UPDATE. Every method that may read `documents` writes them first
    /// ([`SqliteTx::w`]); only those of a push's hot path that never do use [`SqliteTx::c`].
    held: Vec<DocumentRow>,
}

/// Rows in one multi-row INSERT of a new document's ops; a change is sent in chunks of these
/// sizes (largest first), so at most this many statements' texts exist and all stay cached.
const OP_CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// The texts of [`insert_ops_sql`] for each of [`OP_CHUNKS`], made once.
static INSERT_OPS_SQL: std::sync::LazyLock<[String; OP_CHUNKS.len()]> =
    std::sync::LazyLock::new(|| OP_CHUNKS.map(insert_ops_sql));

/// `INSERT INTO field_ops …` of `rows` ops of one document and op id: ?1 doc, ?2 hlc,
/// ?3 replica, then each row's field and value.
fn insert_ops_sql(rows: usize) -> String {
    let mut sql =
        String::from("INSERT INTO field_ops (doc, field, hlc, replica, value, known, leaf) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!("(?1, ?{}, ?2, ?3, ?{}, 1, 1)", 4 + 2 * i, 5 + 2 * i));
    }
    sql
}

impl SqliteTx {
    /// The connection, for a statement that reads nothing of `documents` (see `held`).
    fn c(&self) -> Result<&Connection> {
        match &self.conn {
            Conn::Writer(g, _) => Ok(g),
            Conn::Reader(Some(c), _) => Ok(c),
            Conn::Reader(None, _) => Err(StorageError::Other("the transaction has ended".into())),
        }
    }

    /// The connection, after writing the held rows of `documents`.
    fn w(&mut self) -> Result<&Connection> {
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            let mut stmt = self.c()?.prepare_cached(
                "INSERT INTO documents (doc, project, collection, author_device, parent, audience, ops, bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for d in &held {
                stmt.execute(params![
                    b(&d.doc),
                    b(&d.project),
                    d.collection,
                    d.author.map(|a| a.as_bytes().to_vec()),
                    d.parent.map(|p| p.as_bytes().to_vec()),
                    d.audience,
                    d.ops,
                    d.bytes
                ])?;
            }
        }
        self.c()
    }
}

impl SqliteTx {
    /// Inserts ops known to be new (distinct fields of a document that holds none).
    fn insert_new_ops(&self, doc: Uuid, id: OpId, ops: &[MergeOp<'_>]) -> Result<()> {
        let c = self.c()?;
        let hlc = hlc_to_sql(id.hlc);
        let mut rest = ops;
        for (size, sql) in OP_CHUNKS.iter().zip(INSERT_OPS_SQL.iter()) {
            let size = *size;
            while rest.len() >= size {
                let (chunk, tail) = rest.split_at(size);
                let mut stmt = c.prepare_cached(sql)?;
                stmt.raw_bind_parameter(1, b(&doc))?;
                stmt.raw_bind_parameter(2, hlc)?;
                stmt.raw_bind_parameter(3, b(&id.replica.0))?;
                for (i, op) in chunk.iter().enumerate() {
                    stmt.raw_bind_parameter(4 + 2 * i, op.field)?;
                    stmt.raw_bind_parameter(5 + 2 * i, op.value)?;
                }
                stmt.raw_execute()?;
                rest = tail;
            }
        }
        Ok(())
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if self.open {
            if let Ok(c) = self.c() {
                let _ = c.execute_batch("ROLLBACK");
            }
        }
        if let Conn::Reader(conn, pool) = &mut self.conn {
            if let Some(c) = conn.take() {
                let mut pool = lock(pool);
                if pool.len() < MAX_READERS && c.is_autocommit() {
                    pool.push(c);
                }
            }
        }
    }
}

fn b(u: &Uuid) -> &[u8] {
    u.as_bytes().as_slice()
}

fn op_id_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<OpId> {
    Ok(OpId { hlc: hlc_from_sql(r.get(at)?), replica: ReplicaId(uuid_col(r, at + 1)?) })
}

#[async_trait::async_trait]
impl Tx for SqliteTx {
    async fn commit(mut self: Box<Self>) -> Result<()> {
        let c = self.w()?;
        may_block(|| c.execute_batch("COMMIT"))?;
        self.open = false;
        if let Conn::Writer(_, checkpoint) = &self.conn {
            // A full channel means a checkpoint is already due.
            let _ = checkpoint.try_send(());
        }
        Ok(())
    }

    async fn server_replica(&mut self) -> Result<ReplicaId> {
        read_replica(self.w()?)
    }

    async fn set_server_replica(&mut self, replica: ReplicaId) -> Result<()> {
        self.w()?.execute("UPDATE meta SET value = ?1 WHERE key = 'replica'", [replica.0.to_string()])?;
        Ok(())
    }

    async fn clock(&mut self) -> Result<Hlc> {
        read_clock(self.w()?)
    }

    async fn epoch(&mut self) -> Result<String> {
        Ok(self.w()?.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| r.get(0))?)
    }

    async fn set_epoch(&mut self, epoch: &str) -> Result<()> {
        self.w()?.execute("UPDATE meta SET value = ?1 WHERE key = 'epoch'", [epoch])?;
        Ok(())
    }

    async fn set_clock(&mut self, hlc: Hlc) -> Result<()> {
        self.w()?.execute("UPDATE meta SET value = ?1 WHERE key = 'clock'", [hlc.0.to_string()])?;
        Ok(())
    }

    async fn insert_project(&mut self, p: &Project) -> Result<()> {
        self.w()?.execute(
            "INSERT INTO projects (id, name, created_ms) VALUES (?1, ?2, ?3)",
            params![b(&p.id), p.name, p.created_ms],
        )?;
        Ok(())
    }

    async fn project(&mut self, id: Uuid) -> Result<Option<Project>> {
        Ok(self
            .w()?
            .prepare_cached("SELECT id, name, created_ms FROM projects WHERE id = ?1")?
            .query_row([b(&id)], project_from_row)
            .optional()?)
    }

    async fn project_by_name(&mut self, name: &str) -> Result<Option<Project>> {
        Ok(self
            .w()?
            .prepare_cached("SELECT id, name, created_ms FROM projects WHERE name = ?1")?
            .query_row([name], project_from_row)
            .optional()?)
    }

    async fn projects(&mut self) -> Result<Vec<Project>> {
        let c = self.w()?;
        let mut stmt = c.prepare("SELECT id, name, created_ms FROM projects ORDER BY name")?;
        let rows = stmt.query_map([], project_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn insert_code(&mut self, code: &NewEnrollmentCode) -> Result<()> {
        self.w()?.execute(
            "INSERT INTO enrollment_codes (code_hash, project, role, uses_left, expires_ms, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                code.code_hash.as_slice(),
                b(&code.project),
                code.role.as_str(),
                code.uses,
                code.expires_ms,
                code.now_ms
            ],
        )?;
        Ok(())
    }

    async fn code(&mut self, code_hash: &[u8; 32]) -> Result<Option<(Uuid, Role, CodeState)>> {
        Ok(self
            .w()?
            .query_row(
                "SELECT project, role, uses_left, expires_ms, created_ms FROM enrollment_codes WHERE code_hash = ?1",
                [code_hash.as_slice()],
                |r| {
                    Ok((
                        uuid_col(r, 0)?,
                        role_col(r, 1)?,
                        CodeState { uses_left: r.get(2)?, expires_ms: r.get(3)?, created_ms: r.get(4)? },
                    ))
                },
            )
            .optional()?)
    }

    async fn use_code(&mut self, code_hash: &[u8; 32]) -> Result<()> {
        self.w()?.execute(
            "UPDATE enrollment_codes SET uses_left = uses_left - 1 WHERE code_hash = ?1",
            [code_hash.as_slice()],
        )?;
        Ok(())
    }

    async fn replica_state(&mut self, replica: ReplicaId) -> Result<ReplicaState> {
        Ok(self.w()?.query_row(
            "SELECT EXISTS (SELECT 1 FROM devices WHERE replica = ?1 AND revoked_ms IS NULL),
                    (SELECT max(revoked_ms) FROM devices WHERE replica = ?1)",
            [b(&replica.0)],
            |r| Ok(ReplicaState { active: r.get(0)?, revoked_ms: r.get(1)? }),
        )?)
    }

    async fn insert_device(&mut self, d: &NewDevice) -> Result<()> {
        self.w()?.execute(
            "INSERT INTO devices (id, project, role, replica, name, token_hash, code_hash, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                b(&d.id),
                b(&d.project),
                d.role.as_str(),
                b(&d.replica.0),
                d.name,
                d.token_hash.as_slice(),
                d.code_hash.as_slice(),
                d.created_ms
            ],
        )?;
        Ok(())
    }

    async fn device(&mut self, id: Uuid) -> Result<Option<Device>> {
        Ok(self
            .w()?
            .prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"))?
            .query_row([b(&id)], device_from_row)
            .optional()?)
    }

    async fn device_by_token(&mut self, token_hash: &[u8; 32]) -> Result<Option<Device>> {
        Ok(self
            .w()?
            .prepare_cached(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE token_hash = ?1"))?
            .query_row([token_hash.as_slice()], device_from_row)
            .optional()?)
    }

    async fn devices(&mut self, project: Uuid) -> Result<Vec<Device>> {
        let c = self.w()?;
        let mut stmt = c.prepare(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE project = ?1 ORDER BY created_ms, id"
        ))?;
        let rows = stmt.query_map([b(&project)], device_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn revoke_device(&mut self, id: Uuid, now_ms: i64) -> Result<bool> {
        let n = self.w()?.execute(
            "UPDATE devices SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
            params![b(&id), now_ms],
        )?;
        Ok(n > 0)
    }

    async fn flag_far_future(&mut self, id: Uuid, now_ms: i64) -> Result<()> {
        self.w()?.execute("UPDATE devices SET far_future_ms = ?2 WHERE id = ?1", params![b(&id), now_ms])?;
        Ok(())
    }

    async fn document(&mut self, doc: Uuid) -> Result<Option<DocumentInfo>> {
        Ok(self
            .w()?
            .prepare_cached(
                "SELECT project, collection, author_device, parent FROM documents WHERE doc = ?1",
            )?
            .query_row([b(&doc)], |r| {
                Ok(DocumentInfo {
                    doc: DocId(doc),
                    project: uuid_col(r, 0)?,
                    collection: collection_col(r, 1)?,
                    author: opt_uuid_col(r, 2)?,
                    parent: opt_uuid_col(r, 3)?,
                })
            })
            .optional()?)
    }

    async fn insert_document(&mut self, d: &NewDocument) -> Result<()> {
        // A document this transaction holds already would fail at the INSERT; say so now.
        if self.held.iter().any(|h| h.doc == d.doc) {
            return Err(StorageError::Conflict(format!("document {} already exists", d.doc)));
        }
        self.held.push(DocumentRow::of(d));
        self.created.push(d.doc);
        Ok(())
    }

    async fn merge_ops(&mut self, doc: Uuid, id: OpId, ops: &[MergeOp<'_>]) -> Result<Vec<bool>> {
        // The first change of a document this transaction created: it holds no op, so each op is
        // new (unless a field is named twice or an op names one it saw, which go one at a time),
        // and they go in a few multi-row INSERTs instead of one statement each.
        if let Some(at) = self.created.iter().rposition(|d| *d == doc) {
            self.created.swap_remove(at);
            let mut fields: Vec<&str> = ops.iter().map(|o| o.field).collect();
            fields.sort_unstable();
            if fields.windows(2).all(|w| w[0] != w[1]) && ops.iter().all(|o| o.seen.is_empty()) {
                self.insert_new_ops(doc, id, ops)?;
                return Ok(vec![true; ops.len()]);
            }
        }
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(self.merge_op(doc, op.field, id, op.value, op.seen).await?);
        }
        Ok(out)
    }

    async fn known_op_ids(&mut self, doc: Uuid, field: &str) -> Result<Vec<OpId>> {
        Ok(self
            .c()?
            .prepare_cached("SELECT hlc, replica FROM field_ops WHERE doc = ?1 AND field = ?2 AND known = 1")?
            .query_map(params![b(&doc), field], |r| op_id_row(r, 0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn open_op_ids(&mut self, doc: Uuid, field: &str) -> Result<Vec<OpId>> {
        Ok(self
            .c()?
            .prepare_cached("SELECT hlc, replica FROM field_ops WHERE doc = ?1 AND field = ?2 AND leaf = 1")?
            .query_map(params![b(&doc), field], |r| op_id_row(r, 0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    async fn max_stamp(&mut self, doc: Uuid, at_most: Hlc) -> Result<Option<Hlc>> {
        let max: Option<i64> = self
            .c()?
            .prepare_cached("SELECT max(hlc) FROM field_ops WHERE doc = ?1 AND hlc <= ?2")?
            .query_row(params![b(&doc), hlc_to_sql(at_most)], |r| r.get(0))?;
        Ok(max.map(hlc_from_sql))
    }

    async fn merge_op(
        &mut self,
        doc: Uuid,
        field: &str,
        id: OpId,
        value: &str,
        seen: &[OpId],
    ) -> Result<bool> {
        let c = self.c()?;
        // Inserts the op, or fills the placeholder an op that saw it left (which stays a non-leaf).
        let new = c
            .prepare_cached(
                "INSERT INTO field_ops (doc, field, hlc, replica, value, known, leaf) VALUES (?1, ?2, ?3, ?4, ?5, 1, 1)
                 ON CONFLICT (doc, field, hlc, replica) DO UPDATE SET value = excluded.value, known = 1 WHERE known = 0",
            )?
            .execute(params![b(&doc), field, hlc_to_sql(id.hlc), b(&id.replica.0), value])?
            > 0;
        if new && !seen.is_empty() {
            let mut retire = c.prepare_cached(
                "INSERT INTO field_ops (doc, field, hlc, replica, value, known, leaf) VALUES (?1, ?2, ?3, ?4, NULL, 0, 0)
                 ON CONFLICT (doc, field, hlc, replica) DO UPDATE SET leaf = 0 WHERE leaf = 1",
            )?;
            for s in seen {
                retire.execute(params![b(&doc), field, hlc_to_sql(s.hlc), b(&s.replica.0)])?;
            }
        }
        Ok(new)
    }

    async fn grow_document(&mut self, doc: Uuid, ops: u64, bytes: u64) -> Result<(u64, u64)> {
        if let Some(h) = self.held.iter_mut().rev().find(|h| h.doc == doc) {
            return Ok(h.grow(ops, bytes));
        }
        let (ops, bytes): (i64, i64) = self
            .c()?
            .prepare_cached(
                "UPDATE documents SET ops = ops + ?2, bytes = bytes + ?3 WHERE doc = ?1 RETURNING ops, bytes",
            )?
            .query_row(params![b(&doc), ops as i64, bytes as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((ops.max(0) as u64, bytes.max(0) as u64))
    }

    async fn field_ops(&mut self, doc: Uuid) -> Result<Vec<StoredOp>> {
        let c = self.w()?;
        let mut stmt = c.prepare_cached(
            "SELECT field, hlc, replica, value, known, leaf FROM field_ops WHERE doc = ?1
             ORDER BY field, hlc DESC, replica DESC",
        )?;
        let rows = stmt.query_map([b(&doc)], |r| {
            let known: bool = r.get(4)?;
            let value: Option<String> = r.get(3)?;
            Ok(StoredOp {
                field: r.get(0)?,
                id: op_id_row(r, 1)?,
                value: value.filter(|_| known),
                leaf: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn open_values(&mut self, project: Uuid) -> Result<Vec<(DocId, String, OpId)>> {
        let c = self.w()?;
        let mut stmt = c.prepare(
            "SELECT f.doc, f.field, f.hlc, f.replica FROM documents d JOIN field_ops f ON f.doc = d.doc
             WHERE d.project = ?1 AND f.leaf = 1 AND f.known = 1
             ORDER BY f.doc, f.field, f.hlc DESC, f.replica DESC",
        )?;
        let rows =
            stmt.query_map([b(&project)], |r| Ok((DocId(uuid_col(r, 0)?), r.get(1)?, op_id_row(r, 2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn append_log(&mut self, e: &LogEntry<'_>) -> Result<()> {
        self.c()?
            .prepare_cached(
                "INSERT INTO changes (project, doc, hlc, replica, device, body, received_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                b(&e.project),
                b(&e.doc),
                hlc_to_sql(e.hlc),
                b(&e.replica.0),
                e.device.map(|d| d.as_bytes().to_vec()),
                e.body,
                e.received_ms
            ])?;
        Ok(())
    }

    async fn log_end(&mut self) -> Result<i64> {
        Ok(max_seq(self.w()?)?)
    }

    async fn log_page(
        &mut self,
        scope: &Scope,
        after: i64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<(i64, String)>, bool)> {
        let scope = ScopeParams::of(scope);
        let c = self.w()?;
        let mut stmt = c.prepare_cached(&format!(
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
        let mut entries = Vec::new();
        let mut bytes = 0;
        while let Some(row) = rows.next()? {
            // Measured before it is copied out, so an oversized row is never held for nothing.
            let size = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?.len();
            if !entries.is_empty() && bytes + size > max_bytes {
                return Ok((entries, true));
            }
            bytes += size;
            entries.push((row.get(0)?, row.get(1)?));
            if entries.len() >= limit {
                return Ok((entries, true));
            }
        }
        Ok((entries, false))
    }

    async fn scope_documents(
        &mut self,
        scope: &Scope,
        after: Uuid,
        inclusive: bool,
        limit: usize,
    ) -> Result<Vec<(Uuid, Collection)>> {
        let scope = ScopeParams::of(scope);
        let bound = if inclusive { ">=" } else { ">" };
        let c = self.w()?;
        let mut stmt = c.prepare_cached(&format!(
            "SELECT d.doc, d.collection FROM documents d WHERE {SCOPE} AND d.doc {bound} ?5
             ORDER BY d.doc LIMIT ?6"
        ))?;
        let rows = stmt.query_map(
            params![
                scope.project.as_slice(),
                scope.device.as_slice(),
                scope.audience,
                scope.coordinator,
                b(&after),
                limit as i64
            ],
            |r| Ok((uuid_col(r, 0)?, collection_col(r, 1)?)),
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn form(&mut self, project: Uuid, form_id: &str, version: &str) -> Result<Option<FormRecord>> {
        Ok(self
            .w()?
            .query_row(
                "SELECT content_hash, doc FROM forms WHERE project = ?1 AND form_id = ?2 AND version = ?3",
                params![b(&project), form_id, version],
                |r| Ok(FormRecord { content_hash: r.get(0)?, doc: uuid_col(r, 1)? }),
            )
            .optional()?)
    }

    async fn insert_form(
        &mut self,
        project: Uuid,
        form_id: &str,
        version: &str,
        record: &FormRecord,
        now_ms: i64,
    ) -> Result<()> {
        self.w()?.execute(
            "INSERT INTO forms (project, form_id, version, content_hash, doc, published_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![b(&project), form_id, version, record.content_hash, b(&record.doc), now_ms],
        )?;
        Ok(())
    }

    async fn blob_media_type(&mut self, project: Uuid, sha256: &str) -> Result<Option<String>> {
        Ok(self
            .w()?
            .prepare_cached("SELECT media_type FROM blob_owners WHERE sha256 = ?1 AND project = ?2 LIMIT 1")?
            .query_row(params![sha256, b(&project)], |r| r.get(0))
            .optional()?)
    }

    async fn blob_uploaded(&mut self, project: Uuid, device: Option<Uuid>, sha256: &str) -> Result<bool> {
        Ok(self
            .c()?
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM blob_owners WHERE sha256 = ?1 AND project = ?2
                 AND (?3 IS NULL OR device = ?3))",
            )?
            .query_row(params![sha256, b(&project), device.map(|d| d.as_bytes().to_vec())], |r| r.get(0))?)
    }

    async fn insert_blob_owner(&mut self, o: &BlobOwner<'_>) -> Result<()> {
        self.w()?.execute(
            "INSERT OR IGNORE INTO blob_owners (sha256, project, device, size, media_type, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![o.sha256, b(&o.project), b(&o.device), o.size as i64, o.media_type, o.created_ms],
        )?;
        Ok(())
    }

    async fn insert_blob_ref(&mut self, sha256: &str, doc: Uuid) -> Result<()> {
        self.c()?
            .prepare_cached("INSERT OR IGNORE INTO blob_refs (sha256, doc) VALUES (?1, ?2)")?
            .execute(params![sha256, b(&doc)])?;
        Ok(())
    }

    async fn blob_referenced(&mut self, scope: &Scope, sha256: &str) -> Result<bool> {
        let scope = ScopeParams::of(scope);
        Ok(self.w()?.query_row(
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
        )?)
    }

    async fn upload(&mut self, owner: UploadOwner, sha256: &str) -> Result<Option<UploadInfo>> {
        Ok(self
            .w()?
            .query_row(
                "SELECT length, media_type FROM uploads WHERE project = ?1 AND device = ?2 AND sha256 = ?3",
                params![b(&owner.project), b(&owner.device), sha256],
                |r| Ok(UploadInfo { length: r.get::<_, i64>(0)?.max(0) as u64, media_type: r.get(1)? }),
            )
            .optional()?)
    }

    async fn put_upload(
        &mut self,
        owner: UploadOwner,
        sha256: &str,
        info: &UploadInfo,
        started_ms: i64,
    ) -> Result<()> {
        self.w()?.execute(
            "INSERT INTO uploads (project, device, sha256, length, media_type, started_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (project, device, sha256) DO UPDATE
             SET length = excluded.length, media_type = excluded.media_type, started_ms = excluded.started_ms",
            params![b(&owner.project), b(&owner.device), sha256, info.length as i64, info.media_type, started_ms],
        )?;
        Ok(())
    }

    async fn delete_upload(&mut self, owner: UploadOwner, sha256: &str) -> Result<()> {
        self.w()?.execute(
            "DELETE FROM uploads WHERE project = ?1 AND device = ?2 AND sha256 = ?3",
            params![b(&owner.project), b(&owner.device), sha256],
        )?;
        Ok(())
    }

    async fn take_upload_lease(
        &mut self,
        owner: UploadOwner,
        sha256: &str,
        holder: Uuid,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool> {
        let n = self.w()?.execute(
            "INSERT INTO upload_leases (project, device, sha256, holder, until_ms) VALUES (?1, ?2, ?3, ?4, ?6)
             ON CONFLICT (project, device, sha256) DO UPDATE
             SET holder = excluded.holder, until_ms = excluded.until_ms WHERE upload_leases.until_ms <= ?5",
            params![b(&owner.project), b(&owner.device), sha256, b(&holder), now_ms, until_ms],
        )?;
        Ok(n > 0)
    }

    async fn release_upload_lease(&mut self, owner: UploadOwner, sha256: &str, holder: Uuid) -> Result<()> {
        self.w()?.execute(
            "DELETE FROM upload_leases WHERE project = ?1 AND device = ?2 AND sha256 = ?3 AND holder = ?4",
            params![b(&owner.project), b(&owner.device), sha256, b(&holder)],
        )?;
        Ok(())
    }

    async fn upload_lease_held(&mut self, owner: UploadOwner, sha256: &str, now_ms: i64) -> Result<bool> {
        Ok(self
            .w()?
            .query_row(
                "SELECT 1 FROM upload_leases WHERE project = ?1 AND device = ?2 AND sha256 = ?3 AND until_ms > ?4",
                params![b(&owner.project), b(&owner.device), sha256, now_ms],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    async fn upload_bytes(&mut self, device: Uuid, except_sha256: &str) -> Result<u64> {
        let n: i64 = self.w()?.query_row(
            "SELECT coalesce(sum(length), 0) FROM uploads WHERE device = ?1 AND sha256 <> ?2",
            params![b(&device), except_sha256],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    async fn uploads_started_before(
        &mut self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<(UploadOwner, String)>> {
        let c = self.w()?;
        let mut stmt = c.prepare_cached(
            "SELECT project, device, sha256 FROM uploads WHERE started_ms < ?1 ORDER BY started_ms LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![before_ms, limit as i64], |r| {
            Ok((UploadOwner { project: uuid_col(r, 0)?, device: uuid_col(r, 1)? }, r.get(2)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn form_versions(&mut self, project: Uuid) -> Result<Vec<(String, String)>> {
        let c = self.w()?;
        let mut stmt = c.prepare_cached(
            "SELECT form_id, version FROM forms WHERE project = ?1 ORDER BY form_id, published_ms DESC",
        )?;
        let rows = stmt.query_map([b(&project)], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn meta_value(&mut self, key: &str) -> Result<Option<String>> {
        Ok(self
            .w()?
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    async fn set_meta_value(&mut self, key: &str, value: &str) -> Result<()> {
        self.w()?
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([key, value])?;
        Ok(())
    }

    async fn project_setting(&mut self, project: Uuid, key: &str) -> Result<Option<String>> {
        Ok(self
            .w()?
            .prepare_cached("SELECT value FROM project_settings WHERE project = ?1 AND key = ?2")?
            .query_row(params![b(&project), key], |r| r.get(0))
            .optional()?)
    }

    async fn set_project_setting(&mut self, project: Uuid, key: &str, value: Option<&str>) -> Result<()> {
        let c = self.w()?;
        match value {
            Some(v) => c
                .prepare_cached(
                    "INSERT INTO project_settings (project, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (project, key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![b(&project), key, v])?,
            None => c
                .prepare_cached("DELETE FROM project_settings WHERE project = ?1 AND key = ?2")?
                .execute(params![b(&project), key])?,
        };
        Ok(())
    }

    async fn insert_user(&mut self, u: &User) -> Result<()> {
        self.w()?
            .prepare_cached(
                "INSERT INTO users (id, email, password_hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![b(&u.id), u.email, u.password_hash, u.created_ms])?;
        Ok(())
    }

    async fn user(&mut self, id: Uuid) -> Result<Option<User>> {
        Ok(self
            .w()?
            .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))?
            .query_row([b(&id)], user_from_row)
            .optional()?)
    }

    async fn user_by_email(&mut self, email: &str) -> Result<Option<User>> {
        Ok(self
            .w()?
            .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = ?1"))?
            .query_row([email], user_from_row)
            .optional()?)
    }

    async fn users(&mut self) -> Result<Vec<User>> {
        let c = self.w()?;
        let mut stmt = c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY email"))?;
        let rows = stmt.query_map([], user_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn delete_user(&mut self, id: Uuid) -> Result<bool> {
        let c = self.w()?;
        c.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?.execute([b(&id)])?;
        c.prepare_cached("DELETE FROM memberships WHERE user_id = ?1")?.execute([b(&id)])?;
        Ok(c.prepare_cached("DELETE FROM users WHERE id = ?1")?.execute([b(&id)])? > 0)
    }

    async fn set_password_hash(&mut self, id: Uuid, hash: &str) -> Result<()> {
        self.w()?
            .prepare_cached("UPDATE users SET password_hash = ?2 WHERE id = ?1")?
            .execute(params![b(&id), hash])?;
        Ok(())
    }

    async fn put_membership(&mut self, user: Uuid, m: &Membership) -> Result<()> {
        self.w()?
            .prepare_cached(
                "INSERT INTO memberships (user_id, project, role) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id, project) DO UPDATE SET role = excluded.role",
            )?
            .execute(params![b(&user), b(&m.project), m.role.as_str()])?;
        Ok(())
    }

    async fn memberships(&mut self, user: Uuid) -> Result<Vec<Membership>> {
        let c = self.w()?;
        let mut stmt = c.prepare_cached(
            "SELECT m.project, m.role FROM memberships m JOIN projects p ON p.id = m.project
             WHERE m.user_id = ?1 ORDER BY p.name",
        )?;
        let rows = stmt.query_map([b(&user)], |r| Ok((uuid_col(r, 0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (project, role) = row?;
            let role = UserRole::parse(&role)
                .ok_or_else(|| StorageError::Database("a stored user role is unknown".into()))?;
            out.push(Membership { project, role });
        }
        Ok(out)
    }

    async fn insert_session(&mut self, s: &Session) -> Result<()> {
        self.w()?
            .prepare_cached(
                "INSERT INTO sessions (token_hash, user_id, csrf, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![s.token_hash.as_slice(), b(&s.user), s.csrf, s.created_ms, s.expires_ms])?;
        Ok(())
    }

    async fn session(&mut self, token_hash: &[u8; 32]) -> Result<Option<Session>> {
        Ok(self
            .w()?
            .prepare_cached(
                "SELECT token_hash, user_id, csrf, created_ms, expires_ms FROM sessions WHERE token_hash = ?1",
            )?
            .query_row([token_hash.as_slice()], |r| {
                Ok(Session {
                    token_hash: hash32(r, 0)?,
                    user: uuid_col(r, 1)?,
                    csrf: r.get(2)?,
                    created_ms: r.get(3)?,
                    expires_ms: r.get(4)?,
                })
            })
            .optional()?)
    }

    async fn delete_session(&mut self, token_hash: &[u8; 32]) -> Result<()> {
        self.w()?
            .prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?
            .execute([token_hash.as_slice()])?;
        Ok(())
    }

    async fn delete_user_sessions(&mut self, user: Uuid) -> Result<()> {
        self.w()?.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?.execute([b(&user)])?;
        Ok(())
    }

    async fn delete_expired_sessions(&mut self, now_ms: i64) -> Result<u64> {
        Ok(self.w()?.prepare_cached("DELETE FROM sessions WHERE expires_ms < ?1")?.execute([now_ms])? as u64)
    }

    async fn login_failures(&mut self, key: &str) -> Result<Option<(u32, i64)>> {
        Ok(self
            .w()?
            .prepare_cached("SELECT failures, last_ms FROM login_failures WHERE key = ?1")?
            .query_row([key], |r| Ok((r.get::<_, i64>(0)?.clamp(0, i64::from(u32::MAX)) as u32, r.get(1)?)))
            .optional()?)
    }

    async fn set_login_failures(&mut self, key: &str, failures: u32, last_ms: i64) -> Result<()> {
        self.w()?
            .prepare_cached(
                "INSERT INTO login_failures (key, failures, last_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, last_ms = excluded.last_ms",
            )?
            .execute(params![key, i64::from(failures), last_ms])?;
        Ok(())
    }

    async fn clear_login_failures(&mut self, key: &str) -> Result<()> {
        self.w()?.prepare_cached("DELETE FROM login_failures WHERE key = ?1")?.execute([key])?;
        Ok(())
    }

    async fn forget_login_failures(&mut self, before_ms: i64) -> Result<u64> {
        Ok(self.w()?.prepare_cached("DELETE FROM login_failures WHERE last_ms < ?1")?.execute([before_ms])?
            as u64)
    }

    async fn put_submission_state(&mut self, s: &SubmissionState) -> Result<()> {
        self.w()?
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO submission_state ({STATE_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ))?
            .execute(params![
                b(&s.doc),
                b(&s.project),
                s.form_id,
                s.form_version,
                s.author_device.map(|a| a.as_bytes().to_vec()),
                s.review_state,
                s.finalized,
                s.deleted,
                i64::from(s.conflicts),
                i64::from(s.flags),
                s.duration_s,
                s.received_ms,
                s.updated_ms,
                s.answers
            ])?;
        Ok(())
    }

    async fn submission_state(&mut self, doc: Uuid) -> Result<Option<SubmissionState>> {
        Ok(self
            .w()?
            .prepare_cached(&format!("SELECT {STATE_COLUMNS} FROM submission_state WHERE doc = ?1"))?
            .query_row([b(&doc)], state_from_row)
            .optional()?)
    }

    async fn submission_states(
        &mut self,
        f: &SubmissionFilter,
        limit: usize,
    ) -> Result<Vec<SubmissionState>> {
        use rusqlite::types::Value as V;
        let mut sql = format!("SELECT {STATE_COLUMNS} FROM submission_state WHERE project = ?1");
        let mut args: Vec<V> = vec![V::Blob(f.project.as_bytes().to_vec())];
        let mut arg = |sql: &mut String, cond: &str, v: V| {
            args.push(v);
            sql.push_str(&cond.replace('?', &format!("?{}", args.len())));
            args.len()
        };
        if let Some(form) = &f.form_id {
            arg(&mut sql, " AND form_id = ?", V::Text(form.clone()));
        }
        if let Some(state) = &f.review_state {
            arg(&mut sql, " AND review_state = ?", V::Text(state.clone()));
        }
        if let Some(author) = &f.author_device {
            arg(&mut sql, " AND author_device = ?", V::Blob(author.as_bytes().to_vec()));
        }
        if let Some(from) = f.from_ms {
            arg(&mut sql, " AND received_ms >= ?", V::Integer(from));
        }
        if let Some(to) = f.to_ms {
            arg(&mut sql, " AND received_ms < ?", V::Integer(to));
        }
        if f.flags != 0 {
            arg(&mut sql, " AND (flags & ?) = ?", V::Integer(i64::from(f.flags)));
            // The second placeholder above was numbered like the first: both are the mask.
        }
        if f.hide_deleted {
            sql.push_str(" AND deleted = 0");
        }
        if let Some((field, value)) = &f.answer {
            let path = format!("$.\"{}\"", field.replace('"', ""));
            arg(&mut sql, " AND CAST(json_extract(answers, ?)", V::Text(path));
            arg(&mut sql, " AS TEXT) = ?", V::Text(value.clone()));
        }
        if let Some((received, doc)) = f.after {
            // (received_ms, doc) < (?, ?), as two conditions SQLite's index can use.
            let n = arg(&mut sql, " AND (received_ms < ?", V::Integer(received));
            arg(&mut sql, " OR (doc < ?", V::Blob(doc.as_bytes().to_vec()));
            sql.push_str(&format!(" AND received_ms = ?{n}))"));
        }
        sql.push_str(&format!(" ORDER BY received_ms DESC, doc DESC LIMIT {}", limit.min(10_000)));
        let c = self.w()?;
        let mut stmt = c.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), state_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn form_durations(&mut self, project: Uuid, form_id: &str, limit: usize) -> Result<Vec<i64>> {
        let c = self.w()?;
        let mut stmt = c.prepare_cached(
            "SELECT duration_s FROM submission_state WHERE project = ?1 AND form_id = ?2
             AND duration_s IS NOT NULL AND deleted = 0 ORDER BY received_ms DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![b(&project), form_id, limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn child_documents(&mut self, parent: Uuid) -> Result<Vec<Uuid>> {
        let c = self.w()?;
        let mut stmt = c.prepare_cached(
            "SELECT d.doc FROM documents d WHERE d.parent = ?1
             ORDER BY (SELECT min(seq) FROM changes c WHERE c.doc = d.doc), d.doc",
        )?;
        let rows = stmt.query_map([b(&parent)], |r| uuid_col(r, 0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn submission_docs(
        &mut self,
        after: Uuid,
        limit: usize,
    ) -> Result<Vec<(Uuid, Uuid, Option<Uuid>)>> {
        let c = self.w()?;
        let mut stmt = c.prepare_cached(
            "SELECT doc, project, author_device FROM documents WHERE collection = 'submission' AND doc > ?1
             ORDER BY doc LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![b(&after), limit as i64], |r| {
            Ok((uuid_col(r, 0)?, uuid_col(r, 1)?, opt_uuid_col(r, 2)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn first_received(&mut self, doc: Uuid) -> Result<Option<i64>> {
        Ok(self
            .w()?
            .prepare_cached("SELECT min(received_ms) FROM changes WHERE doc = ?1")?
            .query_row([b(&doc)], |r| r.get(0))?)
    }
}
