//! The device's store: one SQLite file (WAL, foreign keys, bundled SQLite) holding the replica's
//! identity and clock, documents with every op of every field, the outbox of unacknowledged local
//! changes, the sync cursor, and attachments as content-addressed files beside the database.
//!
//! Every public write is one transaction, so a process killed at any moment leaves the last
//! committed state. SQL lives in this module's files only; the rest of the code calls methods.

mod attachments;
mod audit;
mod convert;
mod local;
mod profile;
mod read;
mod remote;
pub mod schema;
mod sql;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use uuid::Uuid;

use crate::crdt::{ChangeError, DocId, FieldPathError, Hlc, HybridClock, ReplicaId, SystemClock, WallClock};

pub use attachments::{
    attachment_ref, parse_attachment_ref, AttachmentInfo, AttachmentReader, AttachmentWriter,
};
pub use audit::{audit_csv, AuditEvent, MAX_AUDIT_EVENTS};
pub use convert::ConversionStep;
pub use profile::{DeviceMetadata, MAX_DEVICE_METADATA_CHARS};
pub use read::{
    ConflictValue, Document, DocumentConflicts, FieldState, StatusFilter, SubmissionStatus, SubmissionSummary,
};
pub use remote::{ApplyReport, PendingChange};

/// Everything that can go wrong in the store. Messages name documents and fields, never answers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("there is no store at {0}")]
    Missing(PathBuf),
    #[error("the store at {0} is already open (in this app or another process); share the one handle")]
    Locked(PathBuf),
    #[error("{0} is not a readable database: the file is corrupt, encrypted, or not SQLite")]
    Corrupt(PathBuf),
    /// Opened without a key, a file that looks like an encrypted store (no SQLite header, and
    /// a first page that reads as ciphertext).
    #[error("the store at {0} is encrypted (or is not a database at all): open it with its key")]
    Encrypted(PathBuf),
    #[error(
        "the key does not open the store at {0} (it was encrypted with another key, or is not encrypted)"
    )]
    WrongKey(PathBuf),
    #[error("the store is not encrypted, so it has no key to change")]
    NotEncrypted,
    #[error("{0} is a SQLite database but not a Tejido store")]
    NotATejidoStore(PathBuf),
    #[error(
        "the store was written by a newer Tejido (schema version {found}; this build knows up to {known})"
    )]
    TooNew { found: u32, known: u32 },
    #[error("there is no document {0}")]
    UnknownDocument(DocId),
    #[error("document {0} is not a submission")]
    NotASubmission(DocId),
    #[error("document {0} has been deleted; restore it before editing")]
    Deleted(DocId),
    #[error("submission {0} is already finalized")]
    AlreadyFinalized(DocId),
    #[error("invalid field path: {0}")]
    FieldPath(#[from] FieldPathError),
    #[error("repeat row {row} does not exist in {repeat}")]
    UnknownRow { repeat: String, row: Uuid },
    #[error("a review state is one of: approved, has_issues")]
    UnknownReviewState,
    #[error("field {0} has no open conflict")]
    NoConflict(String),
    /// A device setting's value was refused (the message names the setting, not the value).
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    #[error("a change for document {doc} was refused: {reason}")]
    InvalidChange { doc: DocId, reason: ChangeError },
    #[error("document {doc} is a {existing}, not a {received}")]
    CollectionMismatch { doc: DocId, existing: String, received: String },
    #[error("attachments are not available in an in-memory store")]
    NoAttachmentDir,
    #[error("there is no attachment {0}")]
    UnknownAttachment(String),
    /// A sealed (or plain) attachment file fails authentication or its hash.
    #[error("attachment {0} is damaged or was tampered with; fetch it again from the server")]
    AttachmentDamaged(String),
    /// An encrypted store's attachment files are sealed: there is no file of plain bytes.
    #[error("attachment {0} is encrypted on disk; read it through the store (open_attachment, read_attachment, export_attachment)")]
    EncryptedAttachment(String),
    #[error("file system error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// SQLite found a damaged page or a malformed image while the store was in use.
    #[error("the store's database is damaged ({0}); restore it from a backup or sync to a fresh store")]
    Damaged(String),
    /// The device's storage is full; the write that hit it was rolled back.
    #[error("the device's storage is full; free some space and try again (nothing was written)")]
    DiskFull,
    /// SQLite could not read or write the store's files (an I/O error, a read-only file).
    #[error("the store's files could not be read or written: {0}")]
    StorageIo(String),
    /// Anything else SQLite reports: a bug in Tejido, not something a user can cause.
    #[error("database error: {0}")]
    Sqlite(#[source] rusqlite::Error),
}

/// Every SQLite failure is classified here, where it leaves SQLite: what a damaged file, a full
/// disk or a failing file system causes gets its own variant; only the rest is `Sqlite`.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::DatabaseCorrupt | C::NotADatabase) => StoreError::Damaged(sqlite_message(&e)),
            Some(C::DiskFull) => StoreError::DiskFull,
            Some(
                C::SystemIoFailure
                | C::CannotOpen
                | C::ReadOnly
                | C::PermissionDenied
                | C::NoLargeFileSupport,
            ) => StoreError::StorageIo(sqlite_message(&e)),
            _ => StoreError::Sqlite(e),
        }
    }
}

/// SQLite's own description of a failure (it names no values); rusqlite's display would add
/// the failing statement's text for some errors.
fn sqlite_message(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(err, Some(msg)) => format!("{msg} ({:?})", err.code),
        rusqlite::Error::SqliteFailure(err, None) => format!("{err}"),
        other => other.to_string(),
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The physical clock the store's hybrid logical clock reads.
    pub wall_clock: Arc<dyn WallClock>,
    /// Create the store if the file does not exist (the default); otherwise a missing file is
    /// an error.
    pub create: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { wall_clock: Arc::new(SystemClock), create: true }
    }
}

struct Inner {
    conn: Connection,
    clock: HybridClock,
    commits: u64,
    checkpointer: Option<Checkpointer>,
}

impl Inner {
    /// Counts a commit; every so often asks the checkpointer to fold the WAL into the database.
    fn committed(&mut self) {
        self.commits += 1;
        if self.commits.is_multiple_of(CHECKPOINT_EVERY) {
            if let Some(c) = &self.checkpointer {
                // A full channel means a checkpoint is already pending: nothing to do.
                let _ = c.wake.try_send(());
            }
        }
    }
}

/// Commits between two background checkpoints.
const CHECKPOINT_EVERY: u64 = 64;

/// Checkpoints the WAL on its own thread and connection, so the fsync and page copying of a
/// checkpoint never land on a write: an answer write stays sub-millisecond at the 99th
/// percentile. PASSIVE checkpoints never block the writer.
struct Checkpointer {
    wake: std::sync::mpsc::SyncSender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path, key: Option<&StoreKey>) -> Result<Checkpointer> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        if let Some(key) = key {
            key.apply(&conn, "key")?;
        }
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let (wake, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("tejido-checkpoint".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "background WAL checkpoint failed");
                    }
                }
            })
            .map_err(|source| StoreError::Io { path: path.to_path_buf(), source })?;
        Ok(Checkpointer { wake, thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Closing the channel ends the thread once its current checkpoint is done.
        let (dead, _) = std::sync::mpsc::sync_channel(1);
        drop(std::mem::replace(&mut self.wake, dead));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A device's store. Safe to share between threads (a UI thread and a sync worker): calls are
/// serialised on one connection.
pub struct Store {
    inner: Mutex<Inner>,
    replica: ReplicaId,
    path: Option<PathBuf>,
    attachment_dir: Option<PathBuf>,
    /// The key sealing attachments, in an encrypted store.
    attachment_key: Option<attachments::AttachmentKey>,
    /// The SQLCipher key of an encrypted store.
    key: Mutex<Option<StoreKey>>,
    /// The exclusive lock on `<store>.lock` that makes this handle the store's one owner. Last
    /// field, so it is released only after the connections above have closed; the operating
    /// system releases it too if the process dies.
    _owner: Option<OwnerLock>,
}

/// The raw 256-bit SQLCipher key of a store, derived from the key the app holds. SQLCipher
/// uses a raw key as is (no passphrase stretching: the app's key is already random), and
/// encrypts and authenticates every page (AES-256, HMAC-SHA512), the WAL's included.
#[derive(Clone)]
struct StoreKey {
    hex: String,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

impl StoreKey {
    fn derive(app_key: &[u8]) -> StoreKey {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"tejido store key v1\0");
        h.update(app_key);
        StoreKey { hex: hex::encode(h.finalize()) }
    }

    /// `PRAGMA key` or `PRAGMA rekey` with this key (only hex digits reach the SQL text).
    fn apply(&self, conn: &Connection, pragma: &str) -> rusqlite::Result<()> {
        conn.execute_batch(&format!("PRAGMA {pragma} = \"{}\";", self.sql_literal()))
    }

    /// The key as SQLCipher takes a raw key: `x'<hex>'`.
    fn sql_literal(&self) -> String {
        format!("x'{}'", self.hex)
    }
}

/// An exclusive advisory lock (`flock` on Unix, `LockFileEx` on Windows) on a file beside the
/// store. A separate file, never the database itself: closing another descriptor of the
/// database would drop SQLite's own POSIX locks. Two handles in one process conflict as well,
/// since each open of the lock file is its own open file description.
struct OwnerLock {
    _file: std::fs::File,
}

impl OwnerLock {
    fn acquire(store: &Path) -> Result<OwnerLock> {
        let path = lock_path_for(store);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| StoreError::Io { path: path.clone(), source })?;
        match file.try_lock() {
            Ok(()) => Ok(OwnerLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(store.to_path_buf())),
            Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Io { path, source }),
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("replica", &self.replica).field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens the store at `path`, creating it if needed.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(path, StoreOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        Store::open_file(path.as_ref(), options, None)
    }

    /// Opens (or creates) a store encrypted with `key`: bytes the app keeps in the Android
    /// Keystore or the iOS Keychain (32 random bytes). Every page of the database and of its
    /// write-ahead log is encrypted and authenticated. A wrong key gives `WrongKey` and changes
    /// nothing. Attachments are sealed too (XChaCha20-Poly1305, in authenticated 64 KiB chunks).
    pub fn open_encrypted(path: impl AsRef<Path>, key: &[u8]) -> Result<Store> {
        Store::open_encrypted_with(path, key, StoreOptions::default())
    }

    pub fn open_encrypted_with(path: impl AsRef<Path>, key: &[u8], options: StoreOptions) -> Result<Store> {
        Store::open_file(path.as_ref(), options, Some(StoreKey::derive(key)))
    }

    /// Re-encrypts an encrypted store with a new key, in one transaction: a crash leaves it
    /// under the old key or the new one, never half of each.
    pub fn rekey(&self, new_key: &[u8]) -> Result<()> {
        let mut key = self.key.lock().unwrap_or_else(|p| p.into_inner());
        if key.is_none() {
            return Err(StoreError::NotEncrypted);
        }
        let new = StoreKey::derive(new_key);
        let mut inner = self.lock();
        // The checkpointer's connection holds the old key: stop it, rekey, start it anew.
        inner.checkpointer = None;
        let result = new.apply(&inner.conn, "rekey");
        if result.is_ok() {
            *key = Some(new);
        }
        if let Some(p) = &self.path {
            inner.checkpointer = Some(Checkpointer::start(p, key.as_ref())?);
        }
        Ok(result?)
    }

    fn open_file(path: &Path, options: StoreOptions, key: Option<StoreKey>) -> Result<Store> {
        let path = path.to_path_buf();
        check_store_path(&path, options.create)?;
        let owner = OwnerLock::acquire(&path)?;
        // An in-place encryption that a crash interrupted is finished or rolled back first.
        convert::recover(&path)?;
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| classify_open_error(e, &path))?;
        let encrypted = key.is_some();
        if let Some(key) = &key {
            key.apply(&conn, "key")?;
        }
        let attachment_dir = attachment_dir_for(&path);
        // This handle is the store's one owner: what a crash left half-written is nobody's.
        attachments::sweep_partials(&attachment_dir);
        Store::init(conn, Some(path.clone()), Some(attachment_dir), Some(owner), key, options).map_err(|e| {
            match e {
                // With a key, a first page that does not decrypt is the wrong key (SQLCipher
                // cannot tell it from damage to that page).
                StoreError::Corrupt(_) if encrypted => StoreError::WrongKey(path),
                // Without a key, an encrypted store is not "corrupt": it needs its key.
                StoreError::Corrupt(_) if looks_encrypted(&path) => StoreError::Encrypted(path),
                // Damage met anywhere else while opening (migrations, identity) is a corrupt store.
                StoreError::Damaged(_) => StoreError::Corrupt(path),
                e => e,
            }
        })
    }

    /// A store that lives only in memory (tests, simulations); it cannot hold attachments.
    pub fn open_in_memory() -> Result<Store> {
        Store::open_in_memory_with(StoreOptions::default())
    }

    pub fn open_in_memory_with(options: StoreOptions) -> Result<Store> {
        let conn = Connection::open_in_memory()?;
        Store::init(conn, None, None, None, None, options)
    }

    fn init(
        mut conn: Connection,
        path: Option<PathBuf>,
        attachment_dir: Option<PathBuf>,
        owner: Option<OwnerLock>,
        key: Option<StoreKey>,
        options: StoreOptions,
    ) -> Result<Store> {
        let shown = path.clone().unwrap_or_else(|| PathBuf::from(":memory:"));
        let kind = schema::inspect(&conn).map_err(|e| classify_open_error(e, &shown))?;
        let version = match kind {
            schema::FileKind::Foreign => return Err(StoreError::NotATejidoStore(shown)),
            schema::FileKind::Empty => 0,
            schema::FileKind::Tejido(v) if v > schema::LATEST => {
                return Err(StoreError::TooNew { found: v, known: schema::LATEST })
            }
            schema::FileKind::Tejido(v) => v,
        };
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // WAL with synchronous=NORMAL: a committed write survives the app being killed; only a
        // power cut can lose the last moments, and never corrupts the file.
        if path.is_some() {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        if version < schema::LATEST {
            schema::migrate(&mut conn, version, schema::LATEST)?;
        }
        let wall = options.wall_clock.clone();
        let existing: Option<(Vec<u8>, i64)> = conn
            .query_row("SELECT replica_id, clock FROM replica WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let (replica, last) = match existing {
            Some((bytes, clock)) => {
                let uuid = Uuid::from_slice(&bytes).map_err(|_| StoreError::Corrupt(shown.clone()))?;
                (ReplicaId(uuid), sql::hlc_from_sql(clock))
            }
            None => {
                let replica = ReplicaId::random();
                conn.execute(
                    "INSERT INTO replica (id, replica_id, clock, created_ms) VALUES (1, ?1, ?2, ?3)",
                    rusqlite::params![
                        replica.0.as_bytes().as_slice(),
                        sql::hlc_to_sql(Hlc::ZERO),
                        wall.now_ms() as i64
                    ],
                )?;
                (replica, Hlc::ZERO)
            }
        };
        let attachment_key = match &key {
            Some(_) => Some(attachments::AttachmentKey::load_or_create(&conn, &shown)?),
            None => None,
        };
        let checkpointer = match &path {
            Some(p) => Some(Checkpointer::start(p, key.as_ref())?),
            None => None,
        };
        Ok(Store {
            inner: Mutex::new(Inner { conn, clock: HybridClock::new(wall, last), commits: 0, checkpointer }),
            replica,
            path,
            attachment_dir,
            attachment_key,
            key: Mutex::new(key),
            _owner: owner,
        })
    }

    /// This store's replica id.
    pub fn replica_id(&self) -> ReplicaId {
        self.replica
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The greatest timestamp this replica has issued or observed.
    pub fn clock(&self) -> Hlc {
        self.lock().clock.last()
    }

    /// Runs SQLite's integrity check and the store's own consistency checks; returns the
    /// problems found (empty when the store is sound).
    pub fn check_integrity(&self) -> Result<Vec<String>> {
        let inner = self.lock();
        let mut problems = Vec::new();
        let mut stmt = inner.conn.prepare("PRAGMA integrity_check")?;
        for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
            let row = row?;
            if row != "ok" {
                problems.push(row);
            }
        }
        let fk: i64 =
            inner.conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))?;
        if fk > 0 {
            problems.push(format!("{fk} rows break foreign keys"));
        }
        let bad_leaves: i64 = inner.conn.query_row(
            "SELECT count(*) FROM field_ops WHERE (known = 0 AND (leaf = 1 OR value IS NOT NULL)) OR (known = 1 AND value IS NULL)",
            [],
            |r| r.get(0),
        )?;
        if bad_leaves > 0 {
            problems.push(format!("{bad_leaves} op rows are inconsistent"));
        }
        let max_clock: Option<i64> = inner.conn.query_row(
            "SELECT max(hlc) FROM field_ops WHERE replica = ?1",
            [self.replica.0.as_bytes().as_slice()],
            |r| r.get(0),
        )?;
        if let Some(max) = max_clock {
            if sql::hlc_from_sql(max) > inner.clock.last() {
                problems.push("the stored clock is behind this replica's own ops".into());
            }
        }
        Ok(problems)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written transaction behind (rusqlite
        // rolls back on drop), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn attachment_dir_for(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".attachments");
    path.with_file_name(name)
}

/// `<store>.lock`, beside the store; it stays on disk (empty) after the store closes.
fn lock_path_for(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    path.with_file_name(name)
}

/// Refuses, before SQLite sees it, a path that cannot hold a store: a missing file when asked
/// not to create one, a directory, or a file the process cannot open for reading and writing.
/// Each gets the operating system's own error.
fn check_store_path(path: &Path, create: bool) -> Result<()> {
    let io = |source| StoreError::Io { path: path.to_path_buf(), source };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            Err(io(std::io::Error::new(std::io::ErrorKind::IsADirectory, "a directory is not a store file")))
        }
        Ok(_) => std::fs::OpenOptions::new().read(true).write(true).open(path).map(drop).map_err(io),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => {
            Err(StoreError::Missing(path.to_path_buf()))
        }
        // A missing file is created by SQLite; a missing or unusable parent shows up then.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
    }
}

/// Whether a file SQLite cannot read looks like a SQLCipher database: whole 4096-byte pages (the
/// page size SQLCipher uses), no SQLite header, and a first page with no repeated 8-byte
/// sequence, as ciphertext has (a damaged or foreign file almost always repeats some). A
/// random file of whole pages looks the same, so the error says so.
fn looks_encrypted(path: &Path) -> bool {
    use std::io::Read;
    const PAGE: usize = 4096;
    let Ok(mut file) = std::fs::File::open(path) else { return false };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len == 0 || len % PAGE as u64 != 0 {
        return false;
    }
    let mut page = vec![0u8; PAGE];
    if file.read_exact(&mut page).is_err() || page.starts_with(b"SQLite format 3\0") {
        return false;
    }
    let mut seen = std::collections::HashSet::with_capacity(PAGE);
    page.windows(8).all(|w| seen.insert(w))
}

fn classify_open_error(e: rusqlite::Error, path: &Path) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) | Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
            StoreError::Corrupt(path.to_path_buf())
        }
        Some(rusqlite::ErrorCode::CannotOpen) if !path.exists() => StoreError::Missing(path.to_path_buf()),
        _ => StoreError::from(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A full disk. SQLite reports ENOSPC and a database that reached `max_page_count` with the
    /// same code (SQLITE_FULL); the page cap stands in for a phone with no space left, on the
    /// store's own connection and through its ordinary write path.
    #[test]
    fn a_full_disk_is_its_own_error_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("device.db")).unwrap();
        let doc = store.start_submission("f", "1").unwrap();
        store.set_answer(doc, "q", serde_json::json!("before")).unwrap();
        {
            let inner = store.lock();
            let pages: i64 = inner.conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
            inner.conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(())).unwrap();
        }
        let big = serde_json::json!("x".repeat(64 * 1024));
        let err = store.set_answer(doc, "q", big).unwrap_err();
        assert!(matches!(err, StoreError::DiskFull), "{err:?}");
        assert!(err.to_string().contains("storage is full"), "{err}");
        assert_eq!(store.read_document(doc).unwrap().value("q"), Some(&serde_json::json!("before")));
        assert!(store.check_integrity().unwrap().is_empty());
    }

    #[test]
    fn sqlite_failures_are_classified_where_they_leave_sqlite() {
        let failure = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        assert!(matches!(failure(rusqlite::ffi::SQLITE_CORRUPT).into(), StoreError::Damaged(_)));
        assert!(matches!(failure(rusqlite::ffi::SQLITE_NOTADB).into(), StoreError::Damaged(_)));
        assert!(matches!(failure(rusqlite::ffi::SQLITE_FULL).into(), StoreError::DiskFull));
        assert!(matches!(failure(rusqlite::ffi::SQLITE_IOERR).into(), StoreError::StorageIo(_)));
        assert!(matches!(failure(rusqlite::ffi::SQLITE_READONLY).into(), StoreError::StorageIo(_)));
        // A bug (SQL that breaks a constraint) stays the catch-all.
        assert!(matches!(failure(rusqlite::ffi::SQLITE_CONSTRAINT).into(), StoreError::Sqlite(_)));
    }
}
