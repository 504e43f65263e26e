//! `tejido-server migrate --to postgres://…`: copies a SQLite deployment (its database and
//! blobs folder) into an empty PostgreSQL database, table by table, keeping every id, stamp and
//! log position, so devices keep syncing against the new server without re-enrolling (their
//! tokens, cursors and the server's replica id carry over). Each table is counted and digested
//! on both sides after the copy; any difference fails the migration.
//!
//! Uploads in progress are not copied: their devices start them again. Neither are failed logins
//! nor the read model of submissions, which the new server rebuilds when it starts.

use std::path::Path;

use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};
use tokio_postgres::types::{ToSql, Type};

use super::postgres_blobs::CHUNK;
use super::{PostgresStorage, Result, SqliteStorage, StorageError};

/// How a column is held: SQLite's affinity on one side, PostgreSQL's type on the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    Uuid,
    Bytes,
    Int,
    Text,
    Bool,
}

/// A table to copy: its name, its columns (in the order digested), and its key (the order rows
/// are digested in).
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Col)],
    key: &'static [&'static str],
}

use Col::*;

const TABLES: &[Table] = &[
    Table { name: "meta", columns: &[("key", Text), ("value", Text)], key: &["key"] },
    Table { name: "projects", columns: &[("id", Uuid), ("name", Text), ("created_ms", Int)], key: &["id"] },
    Table {
        name: "enrollment_codes",
        columns: &[
            ("code_hash", Bytes),
            ("project", Uuid),
            ("role", Text),
            ("uses_left", Int),
            ("expires_ms", Int),
            ("created_ms", Int),
        ],
        key: &["code_hash"],
    },
    Table {
        name: "devices",
        columns: &[
            ("id", Uuid),
            ("project", Uuid),
            ("role", Text),
            ("replica", Uuid),
            ("name", Text),
            ("token_hash", Bytes),
            ("code_hash", Bytes),
            ("created_ms", Int),
            ("revoked_ms", Int),
            ("far_future_ms", Int),
        ],
        key: &["id"],
    },
    Table {
        name: "documents",
        columns: &[
            ("doc", Uuid),
            ("project", Uuid),
            ("collection", Text),
            ("author_device", Uuid),
            ("parent", Uuid),
            ("audience", Text),
            ("ops", Int),
            ("bytes", Int),
        ],
        key: &["doc"],
    },
    Table {
        name: "changes",
        columns: &[
            ("seq", Int),
            ("project", Uuid),
            ("doc", Uuid),
            ("hlc", Int),
            ("replica", Uuid),
            ("device", Uuid),
            ("body", Text),
            ("received_ms", Int),
        ],
        key: &["seq"],
    },
    Table {
        name: "field_ops",
        columns: &[
            ("doc", Uuid),
            ("field", Text),
            ("hlc", Int),
            ("replica", Uuid),
            ("value", Text),
            ("known", Bool),
            ("leaf", Bool),
        ],
        key: &["doc", "field", "hlc", "replica"],
    },
    Table {
        name: "forms",
        columns: &[
            ("project", Uuid),
            ("form_id", Text),
            ("version", Text),
            ("content_hash", Text),
            ("doc", Uuid),
            ("published_ms", Int),
        ],
        key: &["project", "form_id", "version"],
    },
    Table {
        name: "blob_owners",
        columns: &[
            ("sha256", Text),
            ("project", Uuid),
            ("device", Uuid),
            ("size", Int),
            ("media_type", Text),
            ("created_ms", Int),
        ],
        key: &["sha256", "project", "device"],
    },
    Table { name: "blob_refs", columns: &[("sha256", Text), ("doc", Uuid)], key: &["sha256", "doc"] },
    Table {
        name: "project_settings",
        columns: &[("project", Uuid), ("key", Text), ("value", Text)],
        key: &["project", "key"],
    },
    Table {
        name: "users",
        columns: &[("id", Uuid), ("email", Text), ("password_hash", Text), ("created_ms", Int)],
        key: &["id"],
    },
    Table {
        name: "memberships",
        columns: &[("user_id", Uuid), ("project", Uuid), ("role", Text)],
        key: &["user_id", "project"],
    },
    Table {
        name: "sessions",
        columns: &[
            ("token_hash", Bytes),
            ("user_id", Uuid),
            ("csrf", Text),
            ("created_ms", Int),
            ("expires_ms", Int),
        ],
        key: &["token_hash"],
    },
];

/// One table's figures on both sides.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TableReport {
    pub table: String,
    pub source_rows: u64,
    pub target_rows: u64,
    pub source_sha256: String,
    pub target_sha256: String,
}

/// What a migration copied.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub tables: Vec<TableReport>,
    /// Uploads in progress left behind (their devices start them again).
    pub uploads_not_copied: u64,
}

/// A value as digested: the same bytes whichever side it was read from.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

fn digest_value(h: &mut Sha256, v: &Value) {
    match v {
        Value::Null => h.update([0u8]),
        Value::Int(i) => {
            h.update([1u8]);
            h.update(i.to_be_bytes());
        }
        Value::Text(t) => {
            h.update([2u8]);
            h.update((t.len() as u64).to_be_bytes());
            h.update(t.as_bytes());
        }
        Value::Bytes(b) => {
            h.update([3u8]);
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        }
    }
}

fn bad(table: &str, column: &str) -> StorageError {
    StorageError::Other(format!("{table}.{column} holds a value of an unexpected type"))
}

fn sqlite_value(table: &str, column: &str, col: Col, v: ValueRef<'_>) -> Result<Value> {
    Ok(match (col, v) {
        (_, ValueRef::Null) => Value::Null,
        (Uuid | Bytes, ValueRef::Blob(b)) => Value::Bytes(b.to_vec()),
        (Int | Bool, ValueRef::Integer(i)) => Value::Int(i),
        (Text, ValueRef::Text(t)) => {
            Value::Text(String::from_utf8(t.to_vec()).map_err(|_| bad(table, column))?)
        }
        _ => return Err(bad(table, column)),
    })
}

fn pg_value(table: &str, column: &str, col: Col, row: &tokio_postgres::Row, i: usize) -> Result<Value> {
    let out = match col {
        Uuid => row.try_get::<_, Option<uuid::Uuid>>(i)?.map(|u| Value::Bytes(u.as_bytes().to_vec())),
        Bytes => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Bytes),
        Int => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Text => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
        Bool => row.try_get::<_, Option<bool>>(i)?.map(|b| Value::Int(i64::from(b))),
    };
    let _ = (table, column);
    Ok(out.unwrap_or(Value::Null))
}

/// A PostgreSQL parameter for a value read from SQLite.
fn pg_param(col: Col, v: &Value) -> Result<Box<dyn ToSql + Sync + Send>> {
    Ok(match (col, v) {
        (Uuid, Value::Null) => Box::new(None::<uuid::Uuid>),
        (Bytes, Value::Null) => Box::new(None::<Vec<u8>>),
        (Int, Value::Null) => Box::new(None::<i64>),
        (Text, Value::Null) => Box::new(None::<String>),
        (Bool, Value::Null) => Box::new(None::<bool>),
        (Uuid, Value::Bytes(b)) => Box::new(
            uuid::Uuid::from_slice(b)
                .map_err(|_| StorageError::Other("a stored id is not 16 bytes".into()))?,
        ),
        (Bytes, Value::Bytes(b)) => Box::new(b.clone()),
        (Int, Value::Int(i)) => Box::new(*i),
        (Bool, Value::Int(i)) => Box::new(*i != 0),
        (Text, Value::Text(t)) => Box::new(t.clone()),
        _ => return Err(StorageError::Other("a value does not fit its column".into())),
    })
}

fn pg_type(col: Col) -> Type {
    match col {
        Uuid => Type::UUID,
        Bytes => Type::BYTEA,
        Int => Type::INT8,
        Text => Type::TEXT,
        Bool => Type::BOOL,
    }
}

/// The PostgreSQL ORDER BY of a key: text in byte order, as SQLite compares it.
fn pg_order(t: &Table) -> String {
    t.key
        .iter()
        .map(|k| match t.columns.iter().find(|(c, _)| c == k) {
            Some((_, Text)) => format!("{k} COLLATE \"C\""),
            _ => (*k).to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn column_list(t: &Table) -> String {
    t.columns.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
}

/// Rows read from SQLite per batch: memory holds a batch, whatever the table's size.
const BATCH: usize = 500;

/// Copies the deployment at `sqlite` (with complete blobs under `blobs_dir`) into the empty
/// PostgreSQL database at `url`, then checks both sides table by table.
pub async fn sqlite_to_postgres(sqlite: &Path, blobs_dir: &Path, url: &str) -> Result<Report> {
    if !sqlite.exists() {
        return Err(StorageError::NotFound(format!(
            "{} (no SQLite deployment to migrate)",
            sqlite.display()
        )));
    }
    // Opening runs the SQLite migrations, so the source has the current schema.
    drop(SqliteStorage::open(sqlite)?);
    let target = PostgresStorage::open(url).await?;
    let source = rusqlite::Connection::open_with_flags(sqlite, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    // One read transaction: a consistent snapshot even if a server still writes.
    source.execute_batch("BEGIN")?;
    let mut client = target.client().await?;
    let tx = client.transaction().await?;
    for t in TABLES.iter().filter(|t| t.name != "meta") {
        let n: i64 = tx.query_one(&format!("SELECT count(*) FROM {}", t.name), &[]).await?.try_get(0)?;
        if n > 0 {
            return Err(StorageError::Conflict(format!(
                "the target database is not empty ({} holds {n} rows): migrate into a new, empty database",
                t.name
            )));
        }
    }
    tx.execute("DELETE FROM meta", &[]).await?;
    for t in TABLES {
        copy_table(&source, &tx, t).await?;
    }
    // Later log positions follow the copied ones.
    tx.execute("SELECT setval(pg_get_serial_sequence('changes', 'seq'), greatest((SELECT max(seq) FROM changes), 1))", &[])
        .await?;
    copy_blobs(&source, &tx, blobs_dir).await?;
    let uploads_not_copied: i64 = source.query_row("SELECT count(*) FROM uploads", [], |r| r.get(0))?;
    let mut tables = Vec::new();
    for t in TABLES {
        let (source_rows, source_sha256) = sqlite_digest(&source, t)?;
        let (target_rows, target_sha256) = pg_digest(&tx, t).await?;
        tables.push(TableReport {
            table: t.name.to_owned(),
            source_rows,
            target_rows,
            source_sha256,
            target_sha256,
        });
    }
    let (source_rows, source_sha256) = blobs_digest_files(&source, blobs_dir)?;
    let (target_rows, target_sha256) = blobs_digest_pg(&tx).await?;
    tables.push(TableReport {
        table: "blob bytes".into(),
        source_rows,
        target_rows,
        source_sha256,
        target_sha256,
    });
    if let Some(t) =
        tables.iter().find(|t| t.source_rows != t.target_rows || t.source_sha256 != t.target_sha256)
    {
        return Err(StorageError::Other(format!(
            "{} differs after the copy ({} rows against {}): nothing was kept",
            t.table, t.source_rows, t.target_rows
        )));
    }
    // The read model (submission_state) is not copied: the first server to start on the target
    // builds it from the copied documents.
    tx.execute("DELETE FROM meta WHERE key = 'read_model'", &[]).await?;
    tx.commit().await?;
    source.execute_batch("COMMIT")?;
    Ok(Report { tables, uploads_not_copied: uploads_not_copied.max(0) as u64 })
}

async fn copy_table(
    source: &rusqlite::Connection,
    tx: &tokio_postgres::Transaction<'_>,
    t: &Table,
) -> Result<()> {
    let columns = column_list(t);
    let placeholders = (1..=t.columns.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
    let overriding = if t.name == "changes" { " OVERRIDING SYSTEM VALUE" } else { "" };
    let types: Vec<Type> = t.columns.iter().map(|(_, c)| pg_type(*c)).collect();
    let insert = tx
        .prepare_typed(
            &format!("INSERT INTO {} ({columns}){overriding} VALUES ({placeholders})", t.name),
            &types,
        )
        .await?;
    let mut stmt =
        source.prepare(&format!("SELECT {columns} FROM {} ORDER BY {}", t.name, t.key.join(", ")))?;
    let mut rows = stmt.query([])?;
    let mut batch: Vec<Vec<Value>> = Vec::with_capacity(BATCH);
    loop {
        let row = rows.next()?;
        if let Some(row) = row {
            let mut values = Vec::with_capacity(t.columns.len());
            for (i, (name, col)) in t.columns.iter().enumerate() {
                values.push(sqlite_value(t.name, name, *col, row.get_ref(i)?)?);
            }
            batch.push(values);
        }
        if batch.len() >= BATCH || (row.is_none() && !batch.is_empty()) {
            for values in batch.drain(..) {
                let params: Vec<Box<dyn ToSql + Sync + Send>> = t
                    .columns
                    .iter()
                    .zip(&values)
                    .map(|((_, c), v)| pg_param(*c, v))
                    .collect::<Result<_>>()?;
                let refs: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
                tx.execute(&insert, &refs).await?;
            }
        }
        if row.is_none() {
            return Ok(());
        }
    }
}

/// Every complete blob a device of the deployment holds, streamed from its file into chunks.
async fn copy_blobs(
    source: &rusqlite::Connection,
    tx: &tokio_postgres::Transaction<'_>,
    dir: &Path,
) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let names = blob_names(source)?;
    let insert = tx.prepare("INSERT INTO blob_chunks (sha256, off, data) VALUES ($1, $2, $3)").await?;
    for sha in names {
        let path = dir.join(&sha[..2]).join(&sha);
        let mut file = tokio::fs::File::open(&path).await.map_err(|e| {
            StorageError::Other(format!("blob {sha} is recorded but its file cannot be read: {e}"))
        })?;
        let mut off: i64 = 0;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let mut filled = 0;
            while filled < CHUNK {
                let n = file
                    .read(&mut buf[filled..])
                    .await
                    .map_err(|e| StorageError::Other(format!("blob {sha}: {e}")))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            tx.execute(&insert, &[&sha, &off, &&buf[..filled]]).await?;
            off += filled as i64;
            if filled < CHUNK {
                break;
            }
        }
        tx.execute("INSERT INTO blobs (sha256, size) VALUES ($1, $2)", &[&sha, &off]).await?;
    }
    Ok(())
}

fn blob_names(source: &rusqlite::Connection) -> Result<Vec<String>> {
    let mut stmt = source.prepare("SELECT DISTINCT sha256 FROM blob_owners ORDER BY sha256")?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
    if let Some(bad) = names.iter().find(|n| !crate::blobs::valid_sha256(n)) {
        return Err(StorageError::Other(format!("a recorded blob name is not a SHA-256: {bad:?}")));
    }
    Ok(names)
}

fn sqlite_digest(source: &rusqlite::Connection, t: &Table) -> Result<(u64, String)> {
    let mut stmt = source.prepare(&format!(
        "SELECT {} FROM {} ORDER BY {}",
        column_list(t),
        t.name,
        t.key.join(", ")
    ))?;
    let mut rows = stmt.query([])?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(row) = rows.next()? {
        for (i, (name, col)) in t.columns.iter().enumerate() {
            digest_value(&mut h, &sqlite_value(t.name, name, *col, row.get_ref(i)?)?);
        }
        n += 1;
    }
    Ok((n, hex::encode(h.finalize())))
}

async fn pg_digest(tx: &tokio_postgres::Transaction<'_>, t: &Table) -> Result<(u64, String)> {
    use futures_util::TryStreamExt;
    let sql = format!("SELECT {} FROM {} ORDER BY {}", column_list(t), t.name, pg_order(t));
    let rows = tx.query_raw(&sql, std::iter::empty::<&(dyn ToSql + Sync)>()).await?;
    futures_util::pin_mut!(rows);
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(row) = rows.try_next().await? {
        for (i, (name, col)) in t.columns.iter().enumerate() {
            digest_value(&mut h, &pg_value(t.name, name, *col, &row, i)?);
        }
        n += 1;
    }
    Ok((n, hex::encode(h.finalize())))
}

/// The blobs' names, sizes and bytes, as the files hold them.
fn blobs_digest_files(source: &rusqlite::Connection, dir: &Path) -> Result<(u64, String)> {
    use std::io::Read;
    let mut h = Sha256::new();
    let names = blob_names(source)?;
    let mut buf = vec![0u8; 64 * 1024];
    for sha in &names {
        digest_value(&mut h, &Value::Text(sha.clone()));
        let mut f = std::fs::File::open(dir.join(&sha[..2]).join(sha))
            .map_err(|e| StorageError::Other(format!("blob {sha}: {e}")))?;
        loop {
            let n = f.read(&mut buf).map_err(|e| StorageError::Other(format!("blob {sha}: {e}")))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok((names.len() as u64, hex::encode(h.finalize())))
}

/// The same digest over the copied chunks.
async fn blobs_digest_pg(tx: &tokio_postgres::Transaction<'_>) -> Result<(u64, String)> {
    use futures_util::TryStreamExt;
    let mut h = Sha256::new();
    let names: Vec<String> = tx
        .query("SELECT sha256 FROM blobs ORDER BY sha256 COLLATE \"C\"", &[])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
    for sha in &names {
        digest_value(&mut h, &Value::Text(sha.clone()));
        let rows = tx.query_raw("SELECT data FROM blob_chunks WHERE sha256 = $1 ORDER BY off", [sha]).await?;
        futures_util::pin_mut!(rows);
        while let Some(row) = rows.try_next().await? {
            let data: &[u8] = row.try_get(0)?;
            h.update(data);
        }
    }
    Ok((names.len() as u64, hex::encode(h.finalize())))
}
