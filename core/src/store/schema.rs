//! The device store's schema: one numbered SQL file per migration, the version in
//! `PRAGMA user_version`, the file marked as Tejido's by `PRAGMA application_id`, and every
//! upgrade applied in one transaction.

use rusqlite::{Connection, OptionalExtension};

/// 'TJDO': marks a SQLite file as a Tejido device store.
pub const APPLICATION_ID: i32 = 0x544A_444F;

pub const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_attachments.sql"),
    include_str!("migrations/0003_outbox_history.sql"),
    include_str!("migrations/0004_audit.sql"),
];

pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// What kind of file an opened connection holds.
#[derive(Debug, PartialEq, Eq)]
pub enum FileKind {
    /// No tables and no application id: a file we may initialise.
    Empty,
    /// A Tejido store at this schema version.
    Tejido(u32),
    /// Some other SQLite database.
    Foreign,
}

pub fn inspect(conn: &Connection) -> rusqlite::Result<FileKind> {
    let app_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    Ok(match app_id {
        APPLICATION_ID => FileKind::Tejido(version),
        0 if tables == 0 && version == 0 => FileKind::Empty,
        _ => FileKind::Foreign,
    })
}

/// Applies every migration after `from` up to `to`, in one transaction.
pub fn migrate(conn: &mut Connection, from: u32, to: u32) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for (i, sql) in MIGRATIONS.iter().enumerate().take(to as usize).skip(from as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as u32 + 1)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.commit()
}

/// The schema as SQLite describes it, for comparing an upgraded store with a fresh one.
pub fn describe(conn: &Connection) -> rusqlite::Result<Vec<(String, String, Option<String>)>> {
    let mut stmt = conn.prepare(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

pub fn read_sync_state(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM sync_state WHERE key = ?1", [key], |r| r.get(0)).optional()
}
