//! Blob bytes in PostgreSQL: chunks of at most [`CHUNK`] bytes by offset, for uploads in
//! progress (per device) and for complete blobs, streamed both ways. Every server process on
//! the database shares them with no other set-up.

use deadpool_postgres::Pool;
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};

use crate::blobs::{BlobBytes, BlobStream, UploadOwner};

/// The largest chunk stored in one row.
pub const CHUNK: usize = 256 * 1024;
/// Chunks a download reads ahead of the client.
const READ_AHEAD: usize = 2;

/// Blob bytes in the database of a [`super::PostgresStorage`].
#[derive(Clone)]
pub struct PgBlobs {
    pool: Pool,
}

impl std::fmt::Debug for PgBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBlobs").finish_non_exhaustive()
    }
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("blob storage: {e}"))
}

/// A database error with its code and message (tokio-postgres alone says "db error").
fn db(e: tokio_postgres::Error) -> std::io::Error {
    io(super::StorageError::from(e))
}

impl PgBlobs {
    pub(super) fn new(pool: Pool) -> PgBlobs {
        PgBlobs { pool }
    }

    async fn client(&self) -> std::io::Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(io)
    }
}

#[async_trait::async_trait]
impl BlobBytes for PgBlobs {
    async fn complete_size(&self, sha256: &str) -> std::io::Result<Option<u64>> {
        let c = self.client().await?;
        let row = c.query_opt("SELECT size FROM blobs WHERE sha256 = $1", &[&sha256]).await.map_err(db)?;
        Ok(row.map(|r| r.get::<_, i64>(0).max(0) as u64))
    }

    async fn partial_len(&self, owner: UploadOwner, sha256: &str) -> std::io::Result<u64> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(
                "SELECT coalesce(sum(octet_length(data)), 0)::BIGINT FROM partial_chunks
                 WHERE project = $1 AND device = $2 AND sha256 = $3",
                &[&owner.project, &owner.device, &sha256],
            )
            .await
            .map_err(db)?
            .get(0);
        Ok(n.max(0) as u64)
    }

    async fn append(&self, owner: UploadOwner, sha256: &str, bytes: &[u8]) -> std::io::Result<()> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "INSERT INTO partial_chunks (project, device, sha256, off, data)
                 SELECT $1, $2, $3, coalesce(max(off + octet_length(data)), 0), $4 FROM partial_chunks
                 WHERE project = $1 AND device = $2 AND sha256 = $3",
            )
            .await
            .map_err(db)?;
        // Each chunk is its own committed row: what arrived survives a cut connection.
        for chunk in bytes.chunks(CHUNK) {
            c.execute(&stmt, &[&owner.project, &owner.device, &sha256, &chunk]).await.map_err(db)?;
        }
        Ok(())
    }

    async fn sync_partial(&self, _owner: UploadOwner, _sha256: &str) -> std::io::Result<()> {
        // Every appended chunk was committed.
        Ok(())
    }

    async fn truncate_partial(&self, owner: UploadOwner, sha256: &str, len: u64) -> std::io::Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let len = len as i64;
        let key: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&owner.project, &owner.device, &sha256, &len];
        tx.execute(
            "DELETE FROM partial_chunks WHERE project = $1 AND device = $2 AND sha256 = $3 AND off >= $4",
            &key,
        )
        .await
        .map_err(db)?;
        tx.execute(
            "UPDATE partial_chunks SET data = substring(data FROM 1 FOR ($4 - off)::INTEGER)
             WHERE project = $1 AND device = $2 AND sha256 = $3 AND off < $4 AND off + octet_length(data) > $4",
            &key,
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn discard_partial(&self, owner: UploadOwner, sha256: &str) -> std::io::Result<()> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM partial_chunks WHERE project = $1 AND device = $2 AND sha256 = $3",
            &[&owner.project, &owner.device, &sha256],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn complete(&self, owner: UploadOwner, sha256: &str) -> std::io::Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let key: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&owner.project, &owner.device, &sha256];
        // Hash the upload a chunk at a time, as the rows stream in.
        let rows = tx
            .query_raw(
                "SELECT data FROM partial_chunks WHERE project = $1 AND device = $2 AND sha256 = $3 ORDER BY off",
                key,
            )
            .await
            .map_err(db)?;
        futures_util::pin_mut!(rows);
        let mut hasher = Sha256::new();
        let mut size: i64 = 0;
        while let Some(row) = rows.try_next().await.map_err(db)? {
            let data: &[u8] = row.get(0);
            hasher.update(data);
            size += data.len() as i64;
        }
        let matches = hex::encode(hasher.finalize()) == sha256;
        if matches {
            let new = tx
                .execute(
                    "INSERT INTO blobs (sha256, size) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&sha256, &size],
                )
                .await
                .map_err(db)?
                > 0;
            if new {
                tx.execute(
                    "INSERT INTO blob_chunks (sha256, off, data)
                     SELECT sha256, off, data FROM partial_chunks WHERE project = $1 AND device = $2 AND sha256 = $3",
                    &key,
                )
                .await
                .map_err(db)?;
            }
        }
        tx.execute("DELETE FROM partial_chunks WHERE project = $1 AND device = $2 AND sha256 = $3", &key)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(matches)
    }

    async fn read(&self, sha256: &str) -> std::io::Result<BlobStream> {
        let client = self.client().await?;
        let sha = sha256.to_owned();
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(READ_AHEAD);
        // One chunk per query, so memory holds at most READ_AHEAD chunks whatever the blob's size.
        tokio::spawn(async move {
            let stmt = match client
                .prepare_cached(
                    "SELECT off, data FROM blob_chunks WHERE sha256 = $1 AND off >= $2 ORDER BY off LIMIT 1",
                )
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(db(e))).await;
                    return;
                }
            };
            let mut at: i64 = 0;
            loop {
                let row = match client.query_opt(&stmt, &[&sha, &at]).await {
                    Ok(Some(row)) => row,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(db(e))).await;
                        return;
                    }
                };
                let off: i64 = row.get(0);
                let data: Vec<u8> = row.get(1);
                at = off + data.len() as i64;
                if tx.send(Ok(bytes::Bytes::from(data))).await.is_err() {
                    // The client went away.
                    return;
                }
            }
        });
        // Fused: the HTTP body may poll once more after the end, which a bare `unfold` answers
        // with a panic (seen serving a 20 MB blob).
        Ok(Box::pin(futures_util::StreamExt::fuse(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))))
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blob_bytes_in_postgres_behave_as_files() {
        let url = crate::testing::cluster().fresh_database().await;
        let storage = super::super::PostgresStorage::open(&url).await.unwrap();
        let blobs = storage.blobs();
        let owner = UploadOwner { project: Uuid::new_v4(), device: Uuid::new_v4() };
        // Bigger than a chunk, so it spans rows.
        let bytes: Vec<u8> = (0..(CHUNK * 2 + 1000)).map(|i| (i % 251) as u8).collect();
        let sha = hex::encode(Sha256::digest(&bytes));
        crate::blobs::tests::blob_bytes_conformance(&blobs, owner, &bytes, &sha).await;
    }

    /// Found by the proxy fault test (a client hanging up while the server opened a
    /// transaction): the connection went back to the pool inside a transaction, the chunks
    /// appended on it later never committed, and once one statement failed on it every request
    /// it served answered 500 with "current transaction is aborted".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_cancelled_while_it_begins_leaves_its_connection_clean() {
        use futures_util::FutureExt;

        use crate::storage::postgres::POOL_SIZE;
        use crate::storage::{Mode, Storage};

        let url = crate::testing::cluster().fresh_database().await;
        let storage = super::super::PostgresStorage::open(&url).await.unwrap();
        let blobs = storage.blobs();
        // Every connection of the pool open and idle, so that taking one does not wait.
        let warm: Vec<_> = futures_util::future::join_all((0..POOL_SIZE).map(|_| storage.client()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        drop(warm);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut cancelled = 0;
        for round in 0..POOL_SIZE * 2 {
            let mode = [Mode::Read, Mode::Write, Mode::Push][round % 3];
            // One poll sends BEGIN; dropping the future then is a client hanging up.
            match storage.begin(mode).now_or_never() {
                None => cancelled += 1,
                Some(tx) => drop(tx.unwrap()),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(cancelled > 0, "no begin was cut short; the test proves nothing");
        let owner = UploadOwner { project: Uuid::new_v4(), device: Uuid::new_v4() };
        let n = POOL_SIZE * 2;
        for i in 0..n {
            blobs.append(owner, &format!("{i:064x}"), b"chunk").await.unwrap();
        }
        // Seen from a connection of its own: each appended chunk committed.
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        let task = tokio::spawn(conn);
        let rows: i64 = client
            .query_one("SELECT count(*) FROM partial_chunks WHERE device = $1", &[&owner.device])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, n as i64, "chunks appended on a connection left inside a transaction");
        // And a transaction on every connection still works.
        for _ in 0..n {
            let mut tx = storage.begin(Mode::Write).await.unwrap();
            tx.set_meta_value("probe", "1").await.unwrap();
            tx.commit().await.unwrap();
        }
        drop(client);
        let _ = task.await;
    }
}
