//! PostgreSQL storage, for several server processes in front of one database: a pool of
//! connections (deadpool), numbered migrations run at start-up under an advisory lock, and the
//! primitives of [`Tx`] and nothing else.
//!
//! Pushes run at once; every other writer takes turns with them. A push holds one advisory lock
//! shared ([`WRITE_LOCK`]) and, before it reads them, a lock on each document it names (taken in
//! one order, so two pushes never wait on each other in a cycle); the server clock's row is
//! locked by a push that takes a stamp. Its log entries are held back to its commit and written
//! under a second lock ([`LOG_LOCK`]) held through `COMMIT`, so log positions are handed out in
//! commit order: a reader never sees a later position before an earlier one (a device that
//! pulled past a gap would never see the op that fills it). Other writers (reviews, publishing,
//! enrollment, uploads) take [`WRITE_LOCK`] alone, for the length of their transaction, as
//! SQLite's single writer does: their read-then-write rules need no retries. Readers run at
//! REPEATABLE READ, so every query of a pull page sees one snapshot, and never wait for writers.
//!
//! A writer holds back the writes whose answer nobody reads (a new document's row, the ops of
//! its first change, log entries, read-model rows) and sends them together, pipelined in one
//! round trip, before its next read and at commit: a push of 100 new submissions was some 600
//! round trips, each waited for under the write lock. What it holds back it also answers from
//! (a new document's row and counters), so a transaction sees its own writes as before.

use std::borrow::Cow;
use std::collections::HashMap;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use futures_util::{pin_mut, TryStreamExt};
use tejido_core::sync::wire::Role;
use tejido_core::{Collection, DocId, Hlc, OpId, ReplicaId};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use super::*;
use crate::service::enroll::{CodeState, ReplicaState};
use crate::service::rules::Scope;

/// The schema's migrations, in order, as for SQLite.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/0001_init.sql"),
    include_str!("migrations/postgres/0002_blobs.sql"),
    include_str!("migrations/postgres/0003_epoch.sql"),
    include_str!("migrations/postgres/0004_coordinators.sql"),
];
const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;
/// Advisory lock keys (first half 'TJSV').
const MIGRATION_LOCK: i64 = 0x544A_5356_0000_0001;
const WRITE_LOCK: i64 = 0x544A_5356_0000_0002;
/// Held by a push from the moment it writes its log entries until it commits.
const LOG_LOCK: i64 = 0x544A_5356_0000_0003;
/// Connections per server process.
pub(crate) const POOL_SIZE: usize = 16;

pub struct PostgresStorage {
    pool: Pool,
}

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStorage").finish_non_exhaustive()
    }
}

impl From<tokio_postgres::Error> for StorageError {
    /// The code and message only: a detail line can quote the values of a row.
    fn from(e: tokio_postgres::Error) -> StorageError {
        match e.as_db_error() {
            Some(db) => {
                let code = db.code().code();
                if code == "40P01" || code == "40001" || code == "55P03" {
                    StorageError::Busy(format!("the database is busy ({code}); try again"))
                } else {
                    StorageError::Database(format!("{code}: {}", db.message()))
                }
            }
            None => StorageError::Database(format!(
                "postgres: {}",
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
            )),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StorageError {
    fn from(e: deadpool_postgres::PoolError) -> StorageError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StorageError::Database(format!("no database connection: {other}")),
        }
    }
}

fn hlc_to_sql(h: Hlc) -> i64 {
    (h.0 ^ (1 << 63)) as i64
}

fn hlc_from_sql(v: i64) -> Hlc {
    Hlc((v as u64) ^ (1 << 63))
}

fn bad_row(what: &str) -> StorageError {
    StorageError::Database(format!("a stored {what} is not one this server knows"))
}

fn role(s: &str) -> Result<Role> {
    Role::parse(s).ok_or_else(|| bad_row("role"))
}

fn collection(s: &str) -> Result<Collection> {
    Collection::parse(s).ok_or_else(|| bad_row("collection"))
}

const DEVICE_COLUMNS: &str = "id, project, role, replica, name, created_ms, revoked_ms, far_future_ms";

fn device_row(r: &Row) -> Result<Device> {
    Ok(Device {
        id: r.try_get(0)?,
        project: r.try_get(1)?,
        role: role(r.try_get(2)?)?,
        replica: ReplicaId(r.try_get(3)?),
        name: r.try_get(4)?,
        created_ms: r.try_get(5)?,
        revoked_ms: r.try_get(6)?,
        far_future_ms: r.try_get(7)?,
    })
}

fn document_row(r: &Row, doc: Uuid) -> Result<DocumentInfo> {
    Ok(DocumentInfo {
        doc: DocId(doc),
        project: r.try_get(0)?,
        collection: collection(r.try_get(1)?)?,
        author: r.try_get(2)?,
        parent: r.try_get(3)?,
    })
}

fn project_row(r: &Row) -> Result<Project> {
    Ok(Project { id: r.try_get(0)?, name: r.try_get(1)?, created_ms: r.try_get(2)? })
}

fn op_id(r: &Row, at: usize) -> Result<OpId> {
    Ok(OpId { hlc: hlc_from_sql(r.try_get(at)?), replica: ReplicaId(r.try_get(at + 1)?) })
}

const USER_COLUMNS: &str = "id, email, password_hash, created_ms";

fn user_row(r: &Row) -> Result<User> {
    Ok(User {
        id: r.try_get(0)?,
        email: r.try_get(1)?,
        password_hash: r.try_get(2)?,
        created_ms: r.try_get(3)?,
    })
}

const STATE_COLUMNS: &str = "doc, project, form_id, form_version, author_device, review_state, finalized, \
     deleted, conflicts, flags, duration_s, received_ms, updated_ms, answers::TEXT";

fn state_row(r: &Row) -> Result<SubmissionState> {
    Ok(SubmissionState {
        doc: r.try_get(0)?,
        project: r.try_get(1)?,
        form_id: r.try_get(2)?,
        form_version: r.try_get(3)?,
        author_device: r.try_get(4)?,
        review_state: r.try_get(5)?,
        finalized: r.try_get(6)?,
        deleted: r.try_get(7)?,
        conflicts: r.try_get::<_, i64>(8)?.clamp(0, i64::from(u32::MAX)) as u32,
        flags: r.try_get::<_, i64>(9)?.clamp(0, i64::from(u32::MAX)) as u32,
        duration_s: r.try_get(10)?,
        received_ms: r.try_get(11)?,
        updated_ms: r.try_get(12)?,
        answers: r.try_get(13)?,
    })
}

/// The documents a [`Scope`] covers, as a condition on `d`. Parameters: $1 project, $2 device,
/// $3 ',role,' for form audiences, $4 true for everything.
const SCOPE: &str = "d.project = $1 AND ($4 OR d.collection = 'entity'
    OR (d.collection = 'form' AND strpos(d.audience, $3) > 0)
    OR d.author_device = $2
    OR (d.collection = 'comment' AND d.parent IN (SELECT doc FROM documents WHERE author_device = $2)))";

struct ScopeParams {
    project: Uuid,
    device: Uuid,
    audience: String,
    everything: bool,
}

impl ScopeParams {
    fn of(scope: &Scope) -> ScopeParams {
        ScopeParams {
            project: scope.project,
            device: scope.device,
            audience: format!(",{},", scope.role.as_str()),
            everything: scope.everything,
        }
    }
}

impl PostgresStorage {
    /// Connects to the database at `url` (`postgres://user@host:port/db`) and brings its schema
    /// up to date.
    pub async fn open(url: &str) -> Result<PostgresStorage> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StorageError::Other(format!("the database URL is not a PostgreSQL URL: {e}")))?;
        let manager =
            Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(std::time::Duration::from_secs(30)))
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            .build()
            .map_err(|e| StorageError::Other(format!("cannot make a connection pool: {e}")))?;
        migrate(&pool).await?;
        Ok(PostgresStorage { pool })
    }

    /// A connection of the pool, for tools that work below the primitives (the migration).
    pub(super) async fn client(&self) -> Result<Object> {
        Ok(self.pool.get().await?)
    }

    /// The blob bytes kept in this database.
    pub fn blobs(&self) -> super::postgres_blobs::PgBlobs {
        super::postgres_blobs::PgBlobs::new(self.pool.clone())
    }
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction, under a lock, so that several
/// processes starting at once migrate it once.
async fn migrate(pool: &Pool) -> Result<()> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    let ours: bool =
        tx.query_one("SELECT to_regclass('public.tejido_schema') IS NOT NULL", &[]).await?.try_get(0)?;
    let version: i32 = if ours {
        tx.query_one("SELECT version FROM tejido_schema", &[]).await?.try_get(0)?
    } else {
        let tables: i64 = tx
            .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[])
            .await?
            .try_get(0)?;
        if tables > 0 {
            return Err(StorageError::Other(
                "the database holds tables but is not a tejido-server database; give the server an empty one"
                    .into(),
            ));
        }
        tx.batch_execute(
            "CREATE TABLE tejido_schema (version INTEGER NOT NULL); INSERT INTO tejido_schema VALUES (0)",
        )
        .await?;
        0
    };
    if version > SCHEMA_VERSION {
        return Err(StorageError::Other(format!(
            "the database has schema version {version}; this server knows up to {SCHEMA_VERSION}: run a newer tejido-server"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql).await?;
        if i == 0 {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('replica', $1), ('clock', '0')",
                &[&Uuid::new_v4().to_string()],
            )
            .await?;
        }
        tx.execute("UPDATE tejido_schema SET version = $1", &[&(i as i32 + 1)]).await?;
    }
    tx.commit().await?;
    Ok(())
}

#[async_trait::async_trait]
impl Storage for PostgresStorage {
    async fn begin(&self, mode: Mode) -> Result<Box<dyn Tx>> {
        // The guard exists before BEGIN is sent: a caller cancelled at any await below (a client
        // that hangs up) drops it, and its drop rolls back. A bare connection dropped after BEGIN
        // went out would go back to the pool inside a transaction, where the autocommit writes
        // of the blob store would never commit, and one failed statement would leave every later
        // user of that connection with "current transaction is aborted".
        let mut tx = PgTx::new(self.pool.get().await?);
        match mode {
            Mode::Read => tx.c()?.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?,
            Mode::Write => {
                tx.c()?.batch_execute("BEGIN").await?;
                // Held until commit or rollback: one writer at a time, log positions in commit order.
                tx.c()?.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK]).await?;
            }
            Mode::Push => {
                tx.c()?.batch_execute("BEGIN").await?;
                tx.concurrent = true;
                // Shared with other pushes; every other writer waits for them, and they for it.
                tx.c()?.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&WRITE_LOCK]).await?;
            }
        }
        Ok(Box::new(tx))
    }

    fn concurrent_pushes(&self) -> bool {
        true
    }
}

/// One PostgreSQL transaction on a pooled connection.
pub struct PgTx {
    client: Option<Object>,
    open: bool,
    /// Rows held back, sent before the next read or at commit: new documents' first ops, log
    /// entries (in the order they were appended), and read-model rows (the last for each).
    held_ops: Vec<OpRow>,
    held_log: Vec<LogRow>,
    held_states: Vec<SubmissionState>,
    state_index: HashMap<Uuid, usize>,
    /// Documents inserted by this transaction and not yet sent, with their counters.
    new_docs: Vec<NewDocRow>,
    /// Which of `new_docs` each new document is, while it has not been sent.
    new_index: HashMap<Uuid, usize>,
    /// Documents this transaction has looked up or inserted (`None`: not there).
    docs: HashMap<Uuid, Option<DocumentInfo>>,
    /// A push beside others: its log entries are held until commit, and written under
    /// [`LOG_LOCK`] so that positions follow commit order.
    concurrent: bool,
}

/// A held-back write: one statement for all the rows of one kind.
struct Held {
    sql: Cow<'static, str>,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

/// An op of a new document's first change.
struct OpRow {
    doc: Uuid,
    field: String,
    hlc: i64,
    replica: Uuid,
    value: String,
}

struct LogRow {
    project: Uuid,
    doc: Uuid,
    hlc: i64,
    replica: Uuid,
    device: Option<Uuid>,
    body: String,
    received_ms: i64,
}

/// One column of held rows, as an array parameter.
fn column<R, T: ToSql + Sync + Send + 'static>(
    rows: &[R],
    f: impl Fn(&R) -> T,
) -> Box<dyn ToSql + Sync + Send> {
    Box::new(rows.iter().map(f).collect::<Vec<T>>())
}

/// A document inserted by this transaction, not yet sent.
struct NewDocRow {
    row: DocumentRow,
    /// No op has been merged into it yet: it holds no row of `field_ops`.
    empty: bool,
}

impl PgTx {
    fn new(client: Object) -> PgTx {
        PgTx {
            client: Some(client),
            open: true,
            held_ops: Vec::new(),
            held_log: Vec::new(),
            held_states: Vec::new(),
            state_index: HashMap::new(),
            new_docs: Vec::new(),
            new_index: HashMap::new(),
            docs: HashMap::new(),
            concurrent: false,
        }
    }

    fn c(&mut self) -> Result<&mut Object> {
        self.client.as_mut().ok_or_else(|| StorageError::Other("the transaction has ended".into()))
    }

    /// Sends the held-back rows, one INSERT for each kind (new documents first, which the
    /// others name), all pipelined: tokio-postgres sends requests in the order their futures
    /// are first polled, and the server runs them in that order.
    async fn send_held(&mut self) -> Result<()> {
        self.send_held_with(!self.concurrent).await
    }

    /// As [`PgTx::send_held`], the log entries too if `log`.
    async fn send_held_with(&mut self, log: bool) -> Result<()> {
        if self.new_docs.is_empty()
            && self.held_ops.is_empty()
            && (!log || self.held_log.is_empty())
            && self.held_states.is_empty()
        {
            return Ok(());
        }
        let docs = std::mem::take(&mut self.new_docs);
        self.new_index.clear();
        let ops = std::mem::take(&mut self.held_ops);
        let log = if log { std::mem::take(&mut self.held_log) } else { Vec::new() };
        let states = std::mem::take(&mut self.held_states);
        self.state_index.clear();
        let mut held = Vec::with_capacity(4);
        if !docs.is_empty() {
            held.push(Held {
                sql: Cow::Borrowed(
                    "INSERT INTO documents (doc, project, collection, author_device, parent, audience, ops, bytes)
                     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::uuid[],
                                          $6::text[], $7::bigint[], $8::bigint[])",
                ),
                params: vec![
                    column(&docs, |d| d.row.doc),
                    column(&docs, |d| d.row.project),
                    column(&docs, |d| d.row.collection),
                    column(&docs, |d| d.row.author),
                    column(&docs, |d| d.row.parent),
                    column(&docs, |d| d.row.audience.clone()),
                    column(&docs, |d| d.row.ops),
                    column(&docs, |d| d.row.bytes),
                ],
            });
        }
        if !ops.is_empty() {
            // Each (doc, field, op) once: only a new document's first change is held.
            held.push(Held {
                sql: Cow::Borrowed(
                    "INSERT INTO field_ops (doc, field, hlc, replica, value, known, leaf)
                     SELECT t.doc, t.field, t.hlc, t.replica, t.value, true, true
                     FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::uuid[], $5::text[])
                          AS t(doc, field, hlc, replica, value)
                     ON CONFLICT (doc, field, hlc, replica) DO UPDATE SET value = excluded.value, known = true
                     WHERE NOT field_ops.known",
                ),
                params: vec![
                    column(&ops, |o| o.doc),
                    column(&ops, |o| o.field.clone()),
                    column(&ops, |o| o.hlc),
                    column(&ops, |o| o.replica),
                    column(&ops, |o| o.value.clone()),
                ],
            });
        }
        if !log.is_empty() {
            // Positions in the order the entries were appended.
            held.push(Held {
                sql: Cow::Borrowed(
                    "INSERT INTO changes (project, doc, hlc, replica, device, body, received_ms)
                     SELECT t.project, t.doc, t.hlc, t.replica, t.device, t.body, t.received_ms
                     FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::uuid[], $5::uuid[], $6::text[], $7::bigint[])
                          WITH ORDINALITY AS t(project, doc, hlc, replica, device, body, received_ms, n)
                     ORDER BY t.n",
                ),
                params: vec![
                    column(&log, |l| l.project),
                    column(&log, |l| l.doc),
                    column(&log, |l| l.hlc),
                    column(&log, |l| l.replica),
                    column(&log, |l| l.device),
                    column(&log, |l| l.body.clone()),
                    column(&log, |l| l.received_ms),
                ],
            });
        }
        if !states.is_empty() {
            held.push(Held {
                sql: Cow::Borrowed(
                    "INSERT INTO submission_state (doc, project, form_id, form_version, author_device, review_state,
                       finalized, deleted, conflicts, flags, duration_s, received_ms, updated_ms, answers)
                     SELECT t.doc, t.project, t.form_id, t.form_version, t.author_device, t.review_state,
                       t.finalized, t.deleted, t.conflicts, t.flags, t.duration_s, t.received_ms, t.updated_ms,
                       t.answers::JSONB
                     FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::uuid[], $6::text[],
                                 $7::boolean[], $8::boolean[], $9::bigint[], $10::bigint[], $11::bigint[],
                                 $12::bigint[], $13::bigint[], $14::text[])
                          AS t(doc, project, form_id, form_version, author_device, review_state, finalized,
                               deleted, conflicts, flags, duration_s, received_ms, updated_ms, answers)
                     ON CONFLICT (doc) DO UPDATE SET project = excluded.project, form_id = excluded.form_id,
                       form_version = excluded.form_version, author_device = excluded.author_device,
                       review_state = excluded.review_state, finalized = excluded.finalized,
                       deleted = excluded.deleted, conflicts = excluded.conflicts, flags = excluded.flags,
                       duration_s = excluded.duration_s, received_ms = excluded.received_ms,
                       updated_ms = excluded.updated_ms, answers = excluded.answers",
                ),
                params: vec![
                    column(&states, |r| r.doc),
                    column(&states, |r| r.project),
                    column(&states, |r| r.form_id.clone()),
                    column(&states, |r| r.form_version.clone()),
                    column(&states, |r| r.author_device),
                    column(&states, |r| r.review_state.clone()),
                    column(&states, |r| r.finalized),
                    column(&states, |r| r.deleted),
                    column(&states, |r| i64::from(r.conflicts)),
                    column(&states, |r| i64::from(r.flags)),
                    column(&states, |r| r.duration_s),
                    column(&states, |r| r.received_ms),
                    column(&states, |r| r.updated_ms),
                    column(&states, |r| r.answers.clone()),
                ],
            });
        }
        let c =
            self.client.as_mut().ok_or_else(|| StorageError::Other("the transaction has ended".into()))?;
        // Prepared first (a statement not yet cached costs a round trip), so that the writes
        // themselves go out back to back, in order.
        let mut statements = Vec::with_capacity(held.len());
        for h in &held {
            statements.push(c.prepare_cached(&h.sql).await?);
        }
        let c: &Object = c;
        let writes = held.iter().zip(&statements).map(|(h, stmt)| {
            let params: Vec<&(dyn ToSql + Sync)> =
                h.params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
            async move { c.execute(stmt, &params).await }
        });
        futures_util::future::try_join_all(writes).await?;
        Ok(())
    }

    async fn opt(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        self.send_held().await?;
        let c = self.c()?;
        let stmt = c.prepare_cached(sql).await?;
        Ok(c.query_opt(&stmt, params).await?)
    }

    async fn one(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
        self.send_held().await?;
        let c = self.c()?;
        let stmt = c.prepare_cached(sql).await?;
        Ok(c.query_one(&stmt, params).await?)
    }

    async fn all(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        self.send_held().await?;
        let c = self.c()?;
        let stmt = c.prepare_cached(sql).await?;
        Ok(c.query(&stmt, params).await?)
    }

    async fn exec(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        self.send_held().await?;
        let c = self.c()?;
        let stmt = c.prepare_cached(sql).await?;
        Ok(c.execute(&stmt, params).await?)
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        if !self.open {
            return;
        }
        // A connection never goes back to the pool inside a transaction: roll it back first,
        // or close it.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}

#[async_trait::async_trait]
impl Tx for PgTx {
    async fn commit(mut self: Box<Self>) -> Result<()> {
        if self.concurrent && !self.held_log.is_empty() {
            self.send_held_with(false).await?;
            // From here to the commit one push at a time: positions in commit order.
            self.c()?.execute("SELECT pg_advisory_xact_lock($1)", &[&LOG_LOCK]).await?;
        }
        self.send_held_with(true).await?;
        self.c()?.batch_execute("COMMIT").await?;
        self.open = false;
        Ok(())
    }

    async fn server_replica(&mut self) -> Result<ReplicaId> {
        let v: String = self.one("SELECT value FROM meta WHERE key = 'replica'", &[]).await?.try_get(0)?;
        Uuid::try_parse(&v)
            .map(ReplicaId)
            .map_err(|_| StorageError::Other("the server's replica id is corrupt".into()))
    }

    async fn set_server_replica(&mut self, replica: ReplicaId) -> Result<()> {
        self.exec("UPDATE meta SET value = $1 WHERE key = 'replica'", &[&replica.0.to_string()]).await?;
        Ok(())
    }

    async fn clock(&mut self) -> Result<Hlc> {
        // A push beside others holds the clock until it commits: no stamp is issued twice.
        let sql = if self.concurrent {
            "SELECT value FROM meta WHERE key = 'clock' FOR UPDATE"
        } else {
            "SELECT value FROM meta WHERE key = 'clock'"
        };
        let v: String = self.one(sql, &[]).await?.try_get(0)?;
        v.parse().map(Hlc).map_err(|_| StorageError::Other("the server's clock is corrupt".into()))
    }

    async fn epoch(&mut self) -> Result<String> {
        Ok(self.one("SELECT value FROM meta WHERE key = 'epoch'", &[]).await?.try_get(0)?)
    }

    async fn set_epoch(&mut self, epoch: &str) -> Result<()> {
        self.exec("UPDATE meta SET value = $1 WHERE key = 'epoch'", &[&epoch]).await?;
        Ok(())
    }

    async fn set_clock(&mut self, hlc: Hlc) -> Result<()> {
        self.exec("UPDATE meta SET value = $1 WHERE key = 'clock'", &[&hlc.0.to_string()]).await?;
        Ok(())
    }

    async fn insert_project(&mut self, p: &Project) -> Result<()> {
        self.exec(
            "INSERT INTO projects (id, name, created_ms) VALUES ($1, $2, $3)",
            &[&p.id, &p.name, &p.created_ms],
        )
        .await?;
        Ok(())
    }

    async fn project(&mut self, id: Uuid) -> Result<Option<Project>> {
        self.opt("SELECT id, name, created_ms FROM projects WHERE id = $1", &[&id])
            .await?
            .as_ref()
            .map(project_row)
            .transpose()
    }

    async fn project_by_name(&mut self, name: &str) -> Result<Option<Project>> {
        self.opt("SELECT id, name, created_ms FROM projects WHERE name = $1", &[&name])
            .await?
            .as_ref()
            .map(project_row)
            .transpose()
    }

    async fn projects(&mut self) -> Result<Vec<Project>> {
        self.all("SELECT id, name, created_ms FROM projects ORDER BY name", &[])
            .await?
            .iter()
            .map(project_row)
            .collect()
    }

    async fn insert_code(&mut self, code: &NewEnrollmentCode) -> Result<()> {
        self.exec(
            "INSERT INTO enrollment_codes (code_hash, project, role, uses_left, expires_ms, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &code.code_hash.as_slice(),
                &code.project,
                &code.role.as_str(),
                &i64::from(code.uses),
                &code.expires_ms,
                &code.now_ms,
            ],
        )
        .await?;
        Ok(())
    }

    async fn code(&mut self, code_hash: &[u8; 32]) -> Result<Option<(Uuid, Role, CodeState)>> {
        let row = self
            .opt(
                "SELECT project, role, uses_left, expires_ms, created_ms FROM enrollment_codes WHERE code_hash = $1",
                &[&code_hash.as_slice()],
            )
            .await?;
        row.map(|r| {
            Ok((
                r.try_get(0)?,
                role(r.try_get(1)?)?,
                CodeState { uses_left: r.try_get(2)?, expires_ms: r.try_get(3)?, created_ms: r.try_get(4)? },
            ))
        })
        .transpose()
    }

    async fn use_code(&mut self, code_hash: &[u8; 32]) -> Result<()> {
        self.exec(
            "UPDATE enrollment_codes SET uses_left = uses_left - 1 WHERE code_hash = $1",
            &[&code_hash.as_slice()],
        )
        .await?;
        Ok(())
    }

    async fn replica_state(&mut self, replica: ReplicaId) -> Result<ReplicaState> {
        let r = self
            .one(
                "SELECT EXISTS (SELECT 1 FROM devices WHERE replica = $1 AND revoked_ms IS NULL),
                        (SELECT max(revoked_ms) FROM devices WHERE replica = $1)",
                &[&replica.0],
            )
            .await?;
        Ok(ReplicaState { active: r.try_get(0)?, revoked_ms: r.try_get(1)? })
    }

    async fn insert_device(&mut self, d: &NewDevice) -> Result<()> {
        self.exec(
            "INSERT INTO devices (id, project, role, replica, name, token_hash, code_hash, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &d.id,
                &d.project,
                &d.role.as_str(),
                &d.replica.0,
                &d.name,
                &d.token_hash.as_slice(),
                &d.code_hash.as_slice(),
                &d.created_ms,
            ],
        )
        .await?;
        Ok(())
    }

    async fn device(&mut self, id: Uuid) -> Result<Option<Device>> {
        self.opt(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"), &[&id])
            .await?
            .as_ref()
            .map(device_row)
            .transpose()
    }

    async fn device_by_token(&mut self, token_hash: &[u8; 32]) -> Result<Option<Device>> {
        self.opt(
            &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE token_hash = $1"),
            &[&token_hash.as_slice()],
        )
        .await?
        .as_ref()
        .map(device_row)
        .transpose()
    }

    async fn devices(&mut self, project: Uuid) -> Result<Vec<Device>> {
        self.all(
            &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE project = $1 ORDER BY created_ms, id"),
            &[&project],
        )
        .await?
        .iter()
        .map(device_row)
        .collect()
    }

    async fn revoke_device(&mut self, id: Uuid, now_ms: i64) -> Result<bool> {
        Ok(self
            .exec("UPDATE devices SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL", &[&id, &now_ms])
            .await?
            > 0)
    }

    async fn flag_far_future(&mut self, id: Uuid, now_ms: i64) -> Result<()> {
        self.exec("UPDATE devices SET far_future_ms = $2 WHERE id = $1", &[&id, &now_ms]).await?;
        Ok(())
    }

    async fn document(&mut self, doc: Uuid) -> Result<Option<DocumentInfo>> {
        if let Some(known) = self.docs.get(&doc) {
            return Ok(known.clone());
        }
        let row = self
            .opt("SELECT project, collection, author_device, parent FROM documents WHERE doc = $1", &[&doc])
            .await?;
        let info = row.map(|r| document_row(&r, doc)).transpose()?;
        self.docs.insert(doc, info.clone());
        Ok(info)
    }

    async fn lock_documents(&mut self, docs: &[Uuid]) -> Result<()> {
        if !self.concurrent || docs.is_empty() {
            return Ok(());
        }
        // Two-key advisory locks (a space apart from the one-key locks above), taken in one
        // order by every push so that two pushes never wait on each other in a cycle.
        let mut keys: Vec<(i32, i32)> = docs
            .iter()
            .map(|d| {
                let (hi, lo) = d.as_u64_pair();
                let h = hi ^ lo;
                ((h >> 32) as u32 as i32, h as u32 as i32)
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let (a, b): (Vec<i32>, Vec<i32>) = keys.into_iter().unzip();
        self.one(
            "SELECT count(pg_advisory_xact_lock(t.a, t.b)) FROM unnest($1::int4[], $2::int4[]) AS t(a, b)",
            &[&a, &b],
        )
        .await?;
        Ok(())
    }

    async fn prefetch_documents(&mut self, docs: &[Uuid]) -> Result<()> {
        let wanted: Vec<Uuid> = docs.iter().copied().filter(|d| !self.docs.contains_key(d)).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let rows = self
            .all(
                "SELECT project, collection, author_device, parent, doc FROM documents WHERE doc = ANY($1)",
                &[&wanted],
            )
            .await?;
        for d in wanted {
            self.docs.insert(d, None);
        }
        for r in &rows {
            let doc: Uuid = r.try_get(4)?;
            self.docs.insert(doc, Some(document_row(r, doc)?));
        }
        Ok(())
    }

    async fn insert_document(&mut self, d: &NewDocument) -> Result<()> {
        if self.docs.get(&d.doc).is_some_and(Option::is_some) || self.new_index.contains_key(&d.doc) {
            return Err(StorageError::Conflict(format!("document {} already exists", d.doc)));
        }
        // Held back, with its counters, until the next read or the commit.
        self.new_index.insert(d.doc, self.new_docs.len());
        self.new_docs.push(NewDocRow { row: DocumentRow::of(d), empty: true });
        self.docs.insert(
            d.doc,
            Some(DocumentInfo {
                doc: DocId(d.doc),
                project: d.project,
                collection: d.collection,
                author: d.author,
                parent: d.parent,
            }),
        );
        Ok(())
    }

    async fn known_op_ids(&mut self, doc: Uuid, field: &str) -> Result<Vec<OpId>> {
        self.all(
            "SELECT hlc, replica FROM field_ops WHERE doc = $1 AND field = $2 AND known",
            &[&doc, &field],
        )
        .await?
        .iter()
        .map(|r| op_id(r, 0))
        .collect()
    }

    async fn open_op_ids(&mut self, doc: Uuid, field: &str) -> Result<Vec<OpId>> {
        self.all("SELECT hlc, replica FROM field_ops WHERE doc = $1 AND field = $2 AND leaf", &[&doc, &field])
            .await?
            .iter()
            .map(|r| op_id(r, 0))
            .collect()
    }

    async fn max_stamp(&mut self, doc: Uuid, at_most: Hlc) -> Result<Option<Hlc>> {
        let max: Option<i64> = self
            .one("SELECT max(hlc) FROM field_ops WHERE doc = $1 AND hlc <= $2", &[&doc, &hlc_to_sql(at_most)])
            .await?
            .try_get(0)?;
        Ok(max.map(hlc_from_sql))
    }

    async fn merge_ops(&mut self, doc: Uuid, id: OpId, ops: &[MergeOp<'_>]) -> Result<Vec<bool>> {
        // One INSERT for the change's ops and one for what they saw (a change of 50 answers
        // was 50 round trips). A field named twice in one change cannot go in one INSERT … ON
        // CONFLICT (a row is affected once), so such a change goes one op at a time.
        let mut fields: Vec<&str> = ops.iter().map(|o| o.field).collect();
        fields.sort_unstable();
        let distinct = fields.windows(2).all(|w| w[0] != w[1]);
        let first = self.new_index.get(&doc).and_then(|&i| self.new_docs.get_mut(i)).filter(|d| d.empty);
        if let Some(new_doc) = first {
            if distinct && ops.iter().all(|o| o.seen.is_empty()) {
                // The first change of a document this transaction created, not yet sent: it
                // holds no op, so every op is new, and its INSERT is held back too.
                new_doc.empty = false;
                let (hlc, replica) = (hlc_to_sql(id.hlc), id.replica.0);
                self.held_ops.extend(ops.iter().map(|o| OpRow {
                    doc,
                    field: o.field.to_owned(),
                    hlc,
                    replica,
                    value: o.value.to_owned(),
                }));
                return Ok(vec![true; ops.len()]);
            }
            new_doc.empty = false;
        }
        if ops.len() < 2 || !distinct {
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                out.push(self.merge_op(doc, op.field, id, op.value, op.seen).await?);
            }
            return Ok(out);
        }
        let names: Vec<&str> = ops.iter().map(|o| o.field).collect();
        let values: Vec<&str> = ops.iter().map(|o| o.value).collect();
        let rows = self
            .all(
                "INSERT INTO field_ops (doc, field, hlc, replica, value, known, leaf)
                 SELECT $1, t.field, $2, $3, t.value, true, true FROM unnest($4::text[], $5::text[]) AS t(field, value)
                 ON CONFLICT (doc, field, hlc, replica) DO UPDATE SET value = excluded.value, known = true
                 WHERE NOT field_ops.known
                 RETURNING field",
                &[&doc, &hlc_to_sql(id.hlc), &id.replica.0, &names, &values],
            )
            .await?;
        let new: std::collections::HashSet<String> =
            rows.iter().map(|r| r.try_get::<_, String>(0)).collect::<std::result::Result<_, _>>()?;
        let out: Vec<bool> = ops.iter().map(|o| new.contains(o.field)).collect();
        let mut retired: Vec<(&str, i64, Uuid)> = ops
            .iter()
            .zip(&out)
            .filter(|(_, new)| **new)
            .flat_map(|(o, _)| o.seen.iter().map(move |s| (o.field, hlc_to_sql(s.hlc), s.replica.0)))
            .collect();
        retired.sort_unstable();
        retired.dedup();
        if !retired.is_empty() {
            let f: Vec<&str> = retired.iter().map(|r| r.0).collect();
            let h: Vec<i64> = retired.iter().map(|r| r.1).collect();
            let r: Vec<Uuid> = retired.iter().map(|r| r.2).collect();
            self.exec(
                "INSERT INTO field_ops (doc, field, hlc, replica, value, known, leaf)
                 SELECT $1, t.field, t.hlc, t.replica, NULL, false, false
                 FROM unnest($2::text[], $3::bigint[], $4::uuid[]) AS t(field, hlc, replica)
                 ON CONFLICT (doc, field, hlc, replica) DO UPDATE SET leaf = false WHERE field_ops.leaf",
                &[&doc, &f, &h, &r],
            )
            .await?;
        }
        Ok(out)
    }

    async fn merge_op(
        &mut self,
        doc: Uuid,
        field: &str,
        id: OpId,
        value: &str,
        seen: &[OpId],
    ) -> Result<bool> {
        let new = self
            .exec(
                "INSERT INTO field_ops (doc, field, hlc, replica, value, known, leaf) VALUES ($1, $2, $3, $4, $5, true, true)
                 ON CONFLICT (doc, field, hlc, replica) DO UPDATE SET value = excluded.value, known = true
                 WHERE NOT field_ops.known",
                &[&doc, &field, &hlc_to_sql(id.hlc), &id.replica.0, &value],
            )
            .await?
            > 0;
        if new && !seen.is_empty() {
            for s in seen {
                self.exec(
                    "INSERT INTO field_ops (doc, field, hlc, replica, value, known, leaf) VALUES ($1, $2, $3, $4, NULL, false, false)
                     ON CONFLICT (doc, field, hlc, replica) DO UPDATE SET leaf = false WHERE field_ops.leaf",
                    &[&doc, &field, &hlc_to_sql(s.hlc), &s.replica.0],
                )
                .await?;
            }
        }
        Ok(new)
    }

    async fn grow_document(&mut self, doc: Uuid, ops: u64, bytes: u64) -> Result<(u64, u64)> {
        if let Some(new_doc) = self.new_index.get(&doc).and_then(|&i| self.new_docs.get_mut(i)) {
            return Ok(new_doc.row.grow(ops, bytes));
        }
        let r = self
            .one(
                "UPDATE documents SET ops = ops + $2, bytes = bytes + $3 WHERE doc = $1 RETURNING ops, bytes",
                &[&doc, &(ops as i64), &(bytes as i64)],
            )
            .await?;
        let (ops, bytes): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
        Ok((ops.max(0) as u64, bytes.max(0) as u64))
    }

    async fn field_ops(&mut self, doc: Uuid) -> Result<Vec<StoredOp>> {
        self.all(
            "SELECT field, hlc, replica, value, known, leaf FROM field_ops WHERE doc = $1
             ORDER BY field COLLATE \"C\", hlc DESC, replica DESC",
            &[&doc],
        )
        .await?
        .iter()
        .map(|r| {
            let known: bool = r.try_get(4)?;
            let value: Option<String> = r.try_get(3)?;
            Ok(StoredOp {
                field: r.try_get(0)?,
                id: op_id(r, 1)?,
                value: value.filter(|_| known),
                leaf: r.try_get(5)?,
            })
        })
        .collect()
    }

    async fn open_values(&mut self, project: Uuid) -> Result<Vec<(DocId, String, OpId)>> {
        self.all(
            "SELECT f.doc, f.field, f.hlc, f.replica FROM documents d JOIN field_ops f ON f.doc = d.doc
             WHERE d.project = $1 AND f.leaf AND f.known
             ORDER BY f.doc, f.field COLLATE \"C\", f.hlc DESC, f.replica DESC",
            &[&project],
        )
        .await?
        .iter()
        .map(|r| Ok((DocId(r.try_get(0)?), r.try_get(1)?, op_id(r, 2)?)))
        .collect()
    }

    async fn append_log(&mut self, e: &LogEntry<'_>) -> Result<()> {
        // Held back: positions are still handed out in the order entries were appended.
        self.held_log.push(LogRow {
            project: e.project,
            doc: e.doc,
            hlc: hlc_to_sql(e.hlc),
            replica: e.replica.0,
            device: e.device,
            body: e.body.to_owned(),
            received_ms: e.received_ms,
        });
        Ok(())
    }

    async fn log_end(&mut self) -> Result<i64> {
        Ok(self.one("SELECT coalesce(max(seq), 0)::BIGINT FROM changes", &[]).await?.try_get(0)?)
    }

    async fn log_page(
        &mut self,
        scope: &Scope,
        after: i64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<(i64, String)>, bool)> {
        let p = ScopeParams::of(scope);
        let limit = limit as i64;
        // The sizes first (small rows), then only the bodies that fit: a page never holds more
        // than its bound in memory.
        let sizes = self
            .all(
                &format!(
                    "SELECT c.seq, octet_length(c.body)::BIGINT FROM changes c JOIN documents d ON d.doc = c.doc
                     WHERE c.project = $1 AND c.seq > $5 AND {SCOPE} ORDER BY c.seq LIMIT $6"
                ),
                &[&p.project, &p.device, &p.audience, &p.everything, &after, &limit],
            )
            .await?;
        let mut bytes = 0usize;
        let mut take = 0usize;
        for r in &sizes {
            let size: i64 = r.try_get(1)?;
            let size = size.max(0) as usize;
            if take > 0 && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            take += 1;
        }
        let stopped = take < sizes.len() || sizes.len() as i64 >= limit;
        let Some(last) = take.checked_sub(1).and_then(|i| sizes.get(i)) else {
            return Ok((Vec::new(), stopped));
        };
        let last: i64 = last.try_get(0)?;
        self.send_held().await?;
        let c = self.c()?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT c.seq, c.body FROM changes c JOIN documents d ON d.doc = c.doc
                 WHERE c.project = $1 AND c.seq > $5 AND c.seq <= $6 AND {SCOPE} ORDER BY c.seq"
            ))
            .await?;
        let params: [&(dyn ToSql + Sync); 6] =
            [&p.project, &p.device, &p.audience, &p.everything, &after, &last];
        let rows = c.query_raw(&stmt, params).await?;
        pin_mut!(rows);
        let mut entries = Vec::with_capacity(take);
        while let Some(r) = rows.try_next().await? {
            entries.push((r.try_get(0)?, r.try_get(1)?));
        }
        Ok((entries, stopped))
    }

    async fn scope_documents(
        &mut self,
        scope: &Scope,
        after: Uuid,
        inclusive: bool,
        limit: usize,
    ) -> Result<Vec<(Uuid, Collection)>> {
        let p = ScopeParams::of(scope);
        let bound = if inclusive { ">=" } else { ">" };
        self.all(
            &format!("SELECT d.doc, d.collection FROM documents d WHERE {SCOPE} AND d.doc {bound} $5 ORDER BY d.doc LIMIT $6"),
            &[&p.project, &p.device, &p.audience, &p.everything, &after, &(limit as i64)],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, collection(r.try_get(1)?)?)))
        .collect()
    }

    async fn form(&mut self, project: Uuid, form_id: &str, version: &str) -> Result<Option<FormRecord>> {
        self.opt(
            "SELECT content_hash, doc FROM forms WHERE project = $1 AND form_id = $2 AND version = $3",
            &[&project, &form_id, &version],
        )
        .await?
        .map(|r| Ok(FormRecord { content_hash: r.try_get(0)?, doc: r.try_get(1)? }))
        .transpose()
    }

    async fn insert_form(
        &mut self,
        project: Uuid,
        form_id: &str,
        version: &str,
        record: &FormRecord,
        now_ms: i64,
    ) -> Result<()> {
        self.exec(
            "INSERT INTO forms (project, form_id, version, content_hash, doc, published_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&project, &form_id, &version, &record.content_hash, &record.doc, &now_ms],
        )
        .await?;
        Ok(())
    }

    async fn blob_media_type(&mut self, project: Uuid, sha256: &str) -> Result<Option<String>> {
        self.opt(
            "SELECT media_type FROM blob_owners WHERE sha256 = $1 AND project = $2 LIMIT 1",
            &[&sha256, &project],
        )
        .await?
        .map(|r| Ok(r.try_get(0)?))
        .transpose()
    }

    async fn blob_uploaded(&mut self, project: Uuid, device: Option<Uuid>, sha256: &str) -> Result<bool> {
        Ok(self
            .one(
                "SELECT EXISTS (SELECT 1 FROM blob_owners WHERE sha256 = $1 AND project = $2
                 AND ($3::UUID IS NULL OR device = $3))",
                &[&sha256, &project, &device],
            )
            .await?
            .try_get(0)?)
    }

    async fn insert_blob_owner(&mut self, o: &BlobOwner<'_>) -> Result<()> {
        self.exec(
            "INSERT INTO blob_owners (sha256, project, device, size, media_type, created_ms) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT DO NOTHING",
            &[&o.sha256, &o.project, &o.device, &(o.size as i64), &o.media_type, &o.created_ms],
        )
        .await?;
        Ok(())
    }

    async fn insert_blob_ref(&mut self, sha256: &str, doc: Uuid) -> Result<()> {
        self.exec(
            "INSERT INTO blob_refs (sha256, doc) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&sha256, &doc],
        )
        .await?;
        Ok(())
    }

    async fn blob_referenced(&mut self, scope: &Scope, sha256: &str) -> Result<bool> {
        let p = ScopeParams::of(scope);
        Ok(self
            .one(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM blob_refs r JOIN documents d ON d.doc = r.doc
                     WHERE r.sha256 = $5 AND {SCOPE})"
                ),
                &[&p.project, &p.device, &p.audience, &p.everything, &sha256],
            )
            .await?
            .try_get(0)?)
    }

    async fn upload(&mut self, owner: UploadOwner, sha256: &str) -> Result<Option<UploadInfo>> {
        self.opt(
            "SELECT length, media_type FROM uploads WHERE project = $1 AND device = $2 AND sha256 = $3",
            &[&owner.project, &owner.device, &sha256],
        )
        .await?
        .map(|r| {
            let length: i64 = r.try_get(0)?;
            Ok(UploadInfo { length: length.max(0) as u64, media_type: r.try_get(1)? })
        })
        .transpose()
    }

    async fn put_upload(
        &mut self,
        owner: UploadOwner,
        sha256: &str,
        info: &UploadInfo,
        started_ms: i64,
    ) -> Result<()> {
        self.exec(
            "INSERT INTO uploads (project, device, sha256, length, media_type, started_ms) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (project, device, sha256) DO UPDATE
             SET length = excluded.length, media_type = excluded.media_type, started_ms = excluded.started_ms",
            &[&owner.project, &owner.device, &sha256, &(info.length as i64), &info.media_type, &started_ms],
        )
        .await?;
        Ok(())
    }

    async fn delete_upload(&mut self, owner: UploadOwner, sha256: &str) -> Result<()> {
        self.exec(
            "DELETE FROM uploads WHERE project = $1 AND device = $2 AND sha256 = $3",
            &[&owner.project, &owner.device, &sha256],
        )
        .await?;
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
        Ok(self
            .exec(
                "INSERT INTO upload_leases (project, device, sha256, holder, until_ms) VALUES ($1, $2, $3, $4, $6)
                 ON CONFLICT (project, device, sha256) DO UPDATE
                 SET holder = excluded.holder, until_ms = excluded.until_ms WHERE upload_leases.until_ms <= $5",
                &[&owner.project, &owner.device, &sha256, &holder, &now_ms, &until_ms],
            )
            .await?
            > 0)
    }

    async fn release_upload_lease(&mut self, owner: UploadOwner, sha256: &str, holder: Uuid) -> Result<()> {
        self.exec(
            "DELETE FROM upload_leases WHERE project = $1 AND device = $2 AND sha256 = $3 AND holder = $4",
            &[&owner.project, &owner.device, &sha256, &holder],
        )
        .await?;
        Ok(())
    }

    async fn upload_lease_held(&mut self, owner: UploadOwner, sha256: &str, now_ms: i64) -> Result<bool> {
        Ok(self
            .opt(
                "SELECT 1 FROM upload_leases WHERE project = $1 AND device = $2 AND sha256 = $3 AND until_ms > $4",
                &[&owner.project, &owner.device, &sha256, &now_ms],
            )
            .await?
            .is_some())
    }

    async fn upload_bytes(&mut self, device: Uuid, except_sha256: &str) -> Result<u64> {
        let n: i64 = self
            .one(
                "SELECT coalesce(sum(length), 0)::BIGINT FROM uploads WHERE device = $1 AND sha256 <> $2",
                &[&device, &except_sha256],
            )
            .await?
            .try_get(0)?;
        Ok(n.max(0) as u64)
    }

    async fn uploads_started_before(
        &mut self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<(UploadOwner, String)>> {
        self.all(
            "SELECT project, device, sha256 FROM uploads WHERE started_ms < $1 ORDER BY started_ms LIMIT $2",
            &[&before_ms, &(limit as i64)],
        )
        .await?
        .iter()
        .map(|r| Ok((UploadOwner { project: r.try_get(0)?, device: r.try_get(1)? }, r.try_get(2)?)))
        .collect()
    }

    async fn form_versions(&mut self, project: Uuid) -> Result<Vec<(String, String)>> {
        self.all(
            "SELECT form_id, version FROM forms WHERE project = $1 ORDER BY form_id COLLATE \"C\", published_ms DESC",
            &[&project],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
    }

    async fn meta_value(&mut self, key: &str) -> Result<Option<String>> {
        self.opt("SELECT value FROM meta WHERE key = $1", &[&key])
            .await?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
    }

    async fn set_meta_value(&mut self, key: &str, value: &str) -> Result<()> {
        self.exec(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )
        .await?;
        Ok(())
    }

    async fn project_setting(&mut self, project: Uuid, key: &str) -> Result<Option<String>> {
        self.opt("SELECT value FROM project_settings WHERE project = $1 AND key = $2", &[&project, &key])
            .await?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
    }

    async fn set_project_setting(&mut self, project: Uuid, key: &str, value: Option<&str>) -> Result<()> {
        match value {
            Some(v) => {
                self.exec(
                    "INSERT INTO project_settings (project, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT (project, key) DO UPDATE SET value = excluded.value",
                    &[&project, &key, &v],
                )
                .await?
            }
            None => {
                self.exec("DELETE FROM project_settings WHERE project = $1 AND key = $2", &[&project, &key])
                    .await?
            }
        };
        Ok(())
    }

    async fn insert_user(&mut self, u: &User) -> Result<()> {
        self.exec(
            "INSERT INTO users (id, email, password_hash, created_ms) VALUES ($1, $2, $3, $4)",
            &[&u.id, &u.email, &u.password_hash, &u.created_ms],
        )
        .await?;
        Ok(())
    }

    async fn user(&mut self, id: Uuid) -> Result<Option<User>> {
        self.opt(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"), &[&id])
            .await?
            .as_ref()
            .map(user_row)
            .transpose()
    }

    async fn user_by_email(&mut self, email: &str) -> Result<Option<User>> {
        self.opt(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"), &[&email])
            .await?
            .as_ref()
            .map(user_row)
            .transpose()
    }

    async fn users(&mut self) -> Result<Vec<User>> {
        self.all(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY email COLLATE \"C\""), &[])
            .await?
            .iter()
            .map(user_row)
            .collect()
    }

    async fn delete_user(&mut self, id: Uuid) -> Result<bool> {
        self.exec("DELETE FROM sessions WHERE user_id = $1", &[&id]).await?;
        self.exec("DELETE FROM memberships WHERE user_id = $1", &[&id]).await?;
        Ok(self.exec("DELETE FROM users WHERE id = $1", &[&id]).await? > 0)
    }

    async fn set_password_hash(&mut self, id: Uuid, hash: &str) -> Result<()> {
        self.exec("UPDATE users SET password_hash = $2 WHERE id = $1", &[&id, &hash]).await?;
        Ok(())
    }

    async fn put_membership(&mut self, user: Uuid, m: &Membership) -> Result<()> {
        self.exec(
            "INSERT INTO memberships (user_id, project, role) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, project) DO UPDATE SET role = excluded.role",
            &[&user, &m.project, &m.role.as_str()],
        )
        .await?;
        Ok(())
    }

    async fn memberships(&mut self, user: Uuid) -> Result<Vec<Membership>> {
        self.all(
            "SELECT m.project, m.role FROM memberships m JOIN projects p ON p.id = m.project
             WHERE m.user_id = $1 ORDER BY p.name COLLATE \"C\"",
            &[&user],
        )
        .await?
        .iter()
        .map(|r| {
            let role: &str = r.try_get(1)?;
            Ok(Membership {
                project: r.try_get(0)?,
                role: UserRole::parse(role).ok_or_else(|| bad_row("user role"))?,
            })
        })
        .collect()
    }

    async fn insert_session(&mut self, s: &Session) -> Result<()> {
        self.exec(
            "INSERT INTO sessions (token_hash, user_id, csrf, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5)",
            &[&s.token_hash.as_slice(), &s.user, &s.csrf, &s.created_ms, &s.expires_ms],
        )
        .await?;
        Ok(())
    }

    async fn session(&mut self, token_hash: &[u8; 32]) -> Result<Option<Session>> {
        let row = self
            .opt(
                "SELECT token_hash, user_id, csrf, created_ms, expires_ms FROM sessions WHERE token_hash = $1",
                &[&token_hash.as_slice()],
            )
            .await?;
        row.map(|r| {
            let hash: Vec<u8> = r.try_get(0)?;
            Ok(Session {
                token_hash: hash.try_into().map_err(|_| bad_row("session"))?,
                user: r.try_get(1)?,
                csrf: r.try_get(2)?,
                created_ms: r.try_get(3)?,
                expires_ms: r.try_get(4)?,
            })
        })
        .transpose()
    }

    async fn delete_session(&mut self, token_hash: &[u8; 32]) -> Result<()> {
        self.exec("DELETE FROM sessions WHERE token_hash = $1", &[&token_hash.as_slice()]).await?;
        Ok(())
    }

    async fn delete_user_sessions(&mut self, user: Uuid) -> Result<()> {
        self.exec("DELETE FROM sessions WHERE user_id = $1", &[&user]).await?;
        Ok(())
    }

    async fn delete_expired_sessions(&mut self, now_ms: i64) -> Result<u64> {
        self.exec("DELETE FROM sessions WHERE expires_ms < $1", &[&now_ms]).await
    }

    async fn login_failures(&mut self, key: &str) -> Result<Option<(u32, i64)>> {
        self.opt("SELECT failures, last_ms FROM login_failures WHERE key = $1", &[&key])
            .await?
            .map(|r| Ok((r.try_get::<_, i64>(0)?.clamp(0, i64::from(u32::MAX)) as u32, r.try_get(1)?)))
            .transpose()
    }

    async fn set_login_failures(&mut self, key: &str, failures: u32, last_ms: i64) -> Result<()> {
        self.exec(
            "INSERT INTO login_failures (key, failures, last_ms) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, last_ms = excluded.last_ms",
            &[&key, &i64::from(failures), &last_ms],
        )
        .await?;
        Ok(())
    }

    async fn clear_login_failures(&mut self, key: &str) -> Result<()> {
        self.exec("DELETE FROM login_failures WHERE key = $1", &[&key]).await?;
        Ok(())
    }

    async fn forget_login_failures(&mut self, before_ms: i64) -> Result<u64> {
        self.exec("DELETE FROM login_failures WHERE last_ms < $1", &[&before_ms]).await
    }

    async fn put_submission_state(&mut self, s: &SubmissionState) -> Result<()> {
        // Held back (a read sends it first); a later row for the same document replaces it.
        match self.state_index.get(&s.doc) {
            Some(&i) => {
                if let Some(row) = self.held_states.get_mut(i) {
                    *row = s.clone();
                }
            }
            None => {
                self.state_index.insert(s.doc, self.held_states.len());
                self.held_states.push(s.clone());
            }
        }
        Ok(())
    }

    async fn submission_state(&mut self, doc: Uuid) -> Result<Option<SubmissionState>> {
        self.opt(&format!("SELECT {STATE_COLUMNS} FROM submission_state WHERE doc = $1"), &[&doc])
            .await?
            .as_ref()
            .map(state_row)
            .transpose()
    }

    async fn submission_states(
        &mut self,
        f: &SubmissionFilter,
        limit: usize,
    ) -> Result<Vec<SubmissionState>> {
        let mut sql = format!("SELECT {STATE_COLUMNS} FROM submission_state WHERE project = $1");
        let flags = i64::from(f.flags);
        let limit = limit.min(10_000) as i64;
        let mut args: Vec<&(dyn ToSql + Sync)> = vec![&f.project];
        fn push<'a>(
            sql: &mut String,
            cond: &str,
            args: &mut Vec<&'a (dyn ToSql + Sync)>,
            v: &'a (dyn ToSql + Sync),
        ) {
            args.push(v);
            sql.push_str(&cond.replace('?', &format!("${}", args.len())));
        }
        if let Some(form) = &f.form_id {
            push(&mut sql, " AND form_id = ?", &mut args, form);
        }
        if let Some(state) = &f.review_state {
            push(&mut sql, " AND review_state = ?", &mut args, state);
        }
        if let Some(author) = &f.author_device {
            push(&mut sql, " AND author_device = ?", &mut args, author);
        }
        if let Some(from) = &f.from_ms {
            push(&mut sql, " AND received_ms >= ?", &mut args, from);
        }
        if let Some(to) = &f.to_ms {
            push(&mut sql, " AND received_ms < ?", &mut args, to);
        }
        if f.flags != 0 {
            push(&mut sql, " AND (flags & ?) = ?", &mut args, &flags);
        }
        if f.hide_deleted {
            sql.push_str(" AND NOT deleted");
        }
        if let Some((field, value)) = &f.answer {
            push(&mut sql, " AND answers ->> ?", &mut args, field);
            push(&mut sql, " = ?", &mut args, value);
        }
        if let Some((received, doc)) = &f.after {
            push(&mut sql, " AND (received_ms, doc) < (?", &mut args, received);
            push(&mut sql, ", ?)", &mut args, doc);
        }
        push(&mut sql, " ORDER BY received_ms DESC, doc DESC LIMIT ?", &mut args, &limit);
        self.all(&sql, &args).await?.iter().map(state_row).collect()
    }

    async fn form_durations(&mut self, project: Uuid, form_id: &str, limit: usize) -> Result<Vec<i64>> {
        self.all(
            "SELECT duration_s FROM submission_state WHERE project = $1 AND form_id = $2
             AND duration_s IS NOT NULL AND NOT deleted ORDER BY received_ms DESC LIMIT $3",
            &[&project, &form_id, &(limit as i64)],
        )
        .await?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect()
    }

    async fn child_documents(&mut self, parent: Uuid) -> Result<Vec<Uuid>> {
        self.all(
            "SELECT d.doc FROM documents d WHERE d.parent = $1
             ORDER BY (SELECT min(seq) FROM changes c WHERE c.doc = d.doc), d.doc",
            &[&parent],
        )
        .await?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect()
    }

    async fn submission_docs(
        &mut self,
        after: Uuid,
        limit: usize,
    ) -> Result<Vec<(Uuid, Uuid, Option<Uuid>)>> {
        self.all(
            "SELECT doc, project, author_device FROM documents WHERE collection = 'submission' AND doc > $1
             ORDER BY doc LIMIT $2",
            &[&after, &(limit as i64)],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
    }

    async fn first_received(&mut self, doc: Uuid) -> Result<Option<i64>> {
        let stored: Option<i64> =
            self.one("SELECT min(received_ms) FROM changes WHERE doc = $1", &[&doc]).await?.try_get(0)?;
        // A push beside others holds its log entries until commit.
        let held = self.held_log.iter().filter(|l| l.doc == doc).map(|l| l.received_ms).min();
        Ok(match (stored, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }
}
