//! Converting a plain store into an encrypted one in place, crash-safely.
//!
//! Everything new is built beside the store first: `<store>.encrypting` (the database, copied
//! by `sqlcipher_export` under the new key and fsynced) and `<store>.attachments.encrypting/`
//! (every attachment sealed). Then `<store>.encrypting.done` is written and fsynced: that marker
//! is the commit point. After it, renames put the new files in place of the old (the plain
//! attachments moved aside to `<store>.attachments.plain` and deleted, the plain database's
//! empty `-wal`/`-shm` removed before the encrypted database takes its name), and the marker
//! goes last. Every open of the store runs [`recover`] first: with the marker present it
//! finishes the renames (each step can be redone), without it it removes the half-built files,
//! leaving the plain store as it was. The store's owner lock is held throughout, so nothing
//! writes to the store meanwhile.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::attachments::{seal_copy, sync_dir, AttachmentKey};
use super::{
    attachment_dir_for, classify_open_error, schema, OwnerLock, Result, Store, StoreError, StoreKey,
};

/// The steps of a conversion, for tests that stop one part-way (as a crash would).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConversionStep {
    /// The encrypted copy of the database is written and fsynced.
    DatabaseExported,
    /// Every attachment is sealed into the new folder (not yet committed).
    AttachmentsSealed,
    /// The commit marker is written: from here the conversion finishes at the next open.
    Committed,
    /// The sealed attachment folder has replaced the plain one.
    AttachmentsSwapped,
    /// The encrypted database has replaced the plain one.
    DatabaseSwapped,
    /// Everything is done and cleaned up.
    Done,
}

struct Paths {
    store: PathBuf,
    new_db: PathBuf,
    marker: PathBuf,
    attachments: PathBuf,
    new_attachments: PathBuf,
    old_attachments: PathBuf,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

impl Paths {
    fn new(store: &Path) -> Paths {
        let attachments = attachment_dir_for(store);
        Paths {
            store: store.to_path_buf(),
            new_db: with_suffix(store, ".encrypting"),
            marker: with_suffix(store, ".encrypting.done"),
            new_attachments: with_suffix(&attachments, ".encrypting"),
            old_attachments: with_suffix(&attachments, ".plain"),
            attachments,
        }
    }

    fn dir(&self) -> &Path {
        self.store.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

fn remove_file_if_there(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

fn remove_dir_if_there(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

fn remove_db_files(db: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        remove_file_if_there(&with_suffix(db, suffix))?;
    }
    Ok(())
}

/// Finishes or rolls back a conversion an earlier run left unfinished. The caller holds the
/// store's owner lock.
pub(crate) fn recover(store: &Path) -> Result<()> {
    let p = Paths::new(store);
    if p.marker.exists() {
        roll_forward(&p, None)?;
    } else if p.new_db.exists() || p.new_attachments.exists() {
        remove_db_files(&p.new_db)?;
        remove_dir_if_there(&p.new_attachments)?;
        sync_dir(p.dir());
    }
    Ok(())
}

/// The renames after the commit point; each is skipped if an earlier run already made it.
/// Returns early (as a crash would) after `stop`.
fn roll_forward(p: &Paths, stop: Option<ConversionStep>) -> Result<()> {
    if p.new_attachments.exists() {
        if p.attachments.exists() {
            remove_dir_if_there(&p.old_attachments)?;
            std::fs::rename(&p.attachments, &p.old_attachments).map_err(io(&p.attachments))?;
        }
        std::fs::rename(&p.new_attachments, &p.attachments).map_err(io(&p.new_attachments))?;
        sync_dir(p.dir());
    }
    if stop == Some(ConversionStep::AttachmentsSwapped) {
        return Ok(());
    }
    if p.new_db.exists() {
        // The plain database's WAL was checkpointed into it before the export; an old WAL
        // beside the encrypted database would be applied to it, so it goes first.
        remove_file_if_there(&with_suffix(&p.store, "-wal"))?;
        remove_file_if_there(&with_suffix(&p.store, "-shm"))?;
        std::fs::rename(&p.new_db, &p.store).map_err(io(&p.new_db))?;
        sync_dir(p.dir());
    }
    if stop == Some(ConversionStep::DatabaseSwapped) {
        return Ok(());
    }
    // The plain photos, now that their sealed copies are in place.
    remove_dir_if_there(&p.old_attachments)?;
    remove_file_if_there(&p.marker)?;
    sync_dir(p.dir());
    Ok(())
}

impl Store {
    /// Converts the plain store at `path` into one encrypted with `key` (as
    /// [`Store::open_encrypted`] takes it), in place: the database and every attachment. The
    /// store must not be open (it is `Locked` otherwise). A crash at any moment leaves either the
    /// plain store or the encrypted one once the store is next opened, never a mix. After it,
    /// only `open_encrypted` with this key opens the store.
    pub fn encrypt_in_place(path: impl AsRef<Path>, key: &[u8]) -> Result<()> {
        convert(path.as_ref(), key, None)
    }

    /// [`Store::encrypt_in_place`] that stops after `step` without cleaning up, as a crash
    /// would: for tests of recovery.
    #[doc(hidden)]
    pub fn encrypt_in_place_stopping_after(
        path: impl AsRef<Path>,
        key: &[u8],
        step: ConversionStep,
    ) -> Result<()> {
        convert(path.as_ref(), key, Some(step))
    }
}

fn convert(path: &Path, app_key: &[u8], stop: Option<ConversionStep>) -> Result<()> {
    if !path.is_file() {
        return Err(StoreError::Missing(path.to_path_buf()));
    }
    let _owner = OwnerLock::acquire(path)?;
    recover(path)?;
    let p = Paths::new(path);
    match prepare(&p, &StoreKey::derive(app_key), stop) {
        Ok(true) => roll_forward(&p, stop),
        Ok(false) => Ok(()),
        Err(e) => {
            // Before the commit point: nothing of the plain store was touched.
            let _ = recover(path);
            Err(e)
        }
    }
}

/// Builds the encrypted database and attachments beside the store and writes the commit
/// marker; false if stopped before the marker's renames (a test's crash).
fn prepare(p: &Paths, key: &StoreKey, stop: Option<ConversionStep>) -> Result<bool> {
    let path = p.store.as_path();
    let stopped = |step| stop == Some(step);

    // 1. The encrypted copy of the database.
    remove_db_files(&p.new_db)?;
    {
        // CREATE, so that the attached copy can be created (the store itself exists).
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )
        .map_err(|e| classify_open_error(e, path))?;
        let kind = schema::inspect(&conn).map_err(|e| match classify_open_error(e, path) {
            StoreError::Corrupt(p) if super::looks_encrypted(&p) => StoreError::Encrypted(p),
            e => e,
        })?;
        let version = match kind {
            schema::FileKind::Tejido(v) => v,
            schema::FileKind::Empty => 0,
            schema::FileKind::Foreign => return Err(StoreError::NotATejidoStore(path.to_path_buf())),
        };
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Fold the WAL into the database, so the database file alone is the whole store.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let new_db = p.new_db.to_string_lossy().into_owned();
        conn.execute("ATTACH DATABASE ?1 AS encrypted KEY ?2", [new_db, key.sql_literal()])?;
        conn.query_row("SELECT sqlcipher_export('encrypted')", [], |_| Ok(()))?;
        conn.execute_batch(&format!(
            "PRAGMA encrypted.user_version = {version}; PRAGMA encrypted.application_id = {};",
            schema::APPLICATION_ID
        ))?;
        conn.execute_batch("DETACH DATABASE encrypted")?;
    }
    // The attachment secret, inside the encrypted copy.
    let attachment_key = {
        let conn = Connection::open_with_flags(&p.new_db, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        key.apply(&conn, "key")?;
        AttachmentKey::load_or_create(&conn, &p.new_db)?
    };
    std::fs::File::open(&p.new_db).and_then(|f| f.sync_all()).map_err(io(&p.new_db))?;
    if stopped(ConversionStep::DatabaseExported) {
        return Ok(false);
    }

    // 2. Every attachment, sealed into the new folder.
    remove_dir_if_there(&p.new_attachments)?;
    std::fs::create_dir_all(&p.new_attachments).map_err(io(&p.new_attachments))?;
    if p.attachments.is_dir() {
        for entry in std::fs::read_dir(&p.attachments).map_err(io(&p.attachments))? {
            let entry = entry.map_err(io(&p.attachments))?;
            if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                seal_copy(&entry.path(), &p.new_attachments, &attachment_key)?;
            }
        }
    }
    sync_dir(&p.new_attachments);
    if stopped(ConversionStep::AttachmentsSealed) {
        return Ok(false);
    }

    // 3. The commit point.
    let marker = std::fs::File::create(&p.marker).map_err(io(&p.marker))?;
    marker.sync_all().map_err(io(&p.marker))?;
    drop(marker);
    sync_dir(p.dir());
    Ok(!stopped(ConversionStep::Committed))
}
