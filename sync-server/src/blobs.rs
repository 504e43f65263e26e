//! Blob bytes, content-addressed, behind one small trait ([`BlobBytes`]) with two homes:
//! files ([`BlobStore`], the default beside SQLite: complete blobs at `blobs/ab/abcdef…`, uploads
//! in progress per device at `blobs/partial/<project>/<device>/<sha256>`) and PostgreSQL rows
//! ([`crate::storage::postgres_blobs::PgBlobs`], so several server processes share them).
//! Each device proves it holds the bytes by sending them, so no device learns what another
//! uploaded, and no device can add bytes to another's upload. Who may read a blob is the
//! service's rule, not this module's.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Whose upload: one device of one project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UploadOwner {
    pub project: Uuid,
    pub device: Uuid,
}

impl UploadOwner {
    pub fn of(device: &crate::storage::Device) -> UploadOwner {
        UploadOwner { project: device.project, device: device.id }
    }
}

/// A blob's bytes, a chunk at a time.
pub type BlobStream = Pin<Box<dyn futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send>>;

/// Where blob bytes live: uploads in progress per device, and complete blobs by name. Bytes are
/// streamed both ways; no implementation holds a whole blob in memory.
#[async_trait::async_trait]
pub trait BlobBytes: Send + Sync + 'static {
    /// The size of a complete blob, if held.
    async fn complete_size(&self, sha256: &str) -> std::io::Result<Option<u64>>;
    /// How many bytes of a device's upload have arrived.
    async fn partial_len(&self, owner: UploadOwner, sha256: &str) -> std::io::Result<u64>;
    /// Adds bytes at the end of a device's upload.
    async fn append(&self, owner: UploadOwner, sha256: &str, bytes: &[u8]) -> std::io::Result<()>;
    /// Makes what was appended durable.
    async fn sync_partial(&self, owner: UploadOwner, sha256: &str) -> std::io::Result<()>;
    /// Cuts an upload back to `len` bytes (after a refused request).
    async fn truncate_partial(&self, owner: UploadOwner, sha256: &str, len: u64) -> std::io::Result<()>;
    async fn discard_partial(&self, owner: UploadOwner, sha256: &str) -> std::io::Result<()>;
    /// Verifies a finished upload: if its bytes hash to the name, keeps them as the complete
    /// blob (once, however many devices upload it) and returns true; otherwise discards them.
    async fn complete(&self, owner: UploadOwner, sha256: &str) -> std::io::Result<bool>;
    /// A complete blob's bytes.
    async fn read(&self, sha256: &str) -> std::io::Result<BlobStream>;
}

/// Keeps a file from disk as a complete blob, streamed in 64 KiB chunks (hashed in a first
/// pass, then appended as `owner`'s upload and verified); returns its SHA-256 and size. A file
/// larger than `max_bytes` is refused before anything is kept.
pub async fn store_file(
    blobs: &dyn BlobBytes,
    owner: UploadOwner,
    path: &Path,
    max_bytes: u64,
) -> std::io::Result<(String, u64)> {
    use std::io::{Error, ErrorKind};
    let size = std::fs::metadata(path)?.len();
    if size > max_bytes {
        return Err(Error::new(ErrorKind::InvalidInput, format!("larger than {max_bytes} bytes")));
    }
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let sha256 = hex::encode(hasher.finalize());
    if blobs.complete_size(&sha256).await?.is_some() {
        return Ok((sha256, size));
    }
    blobs.discard_partial(owner, &sha256).await?;
    let mut file = std::fs::File::open(path)?;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        blobs.append(owner, &sha256, &buf[..n]).await?;
    }
    blobs.sync_partial(owner, &sha256).await?;
    if !blobs.complete(owner, &sha256).await? {
        return Err(Error::new(ErrorKind::InvalidData, "the file changed while it was read"));
    }
    Ok((sha256, size))
}

/// Blob bytes as files under one folder.
#[derive(Debug)]
pub struct BlobStore {
    root: PathBuf,
}

/// A blob name: 64 lowercase hex digits.
pub fn valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

async fn blocking_io<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(std::io::Error::other)?
}

impl BlobStore {
    pub fn new(root: impl Into<PathBuf>) -> BlobStore {
        BlobStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a complete blob lives. The name must have been checked with [`valid_sha256`].
    pub fn complete_path(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(sha256)
    }

    pub fn partial_path(&self, owner: UploadOwner, sha256: &str) -> PathBuf {
        self.root
            .join("partial")
            .join(owner.project.simple().to_string())
            .join(owner.device.simple().to_string())
            .join(sha256)
    }

    fn complete_blocking(root: &Path, partial: &Path, target: &Path, sha256: &str) -> std::io::Result<bool> {
        let mut hasher = Sha256::new();
        let mut f = std::fs::File::open(partial)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        drop(f);
        if hex::encode(hasher.finalize()) != sha256 {
            std::fs::remove_file(partial)?;
            return Ok(false);
        }
        if target.exists() {
            std::fs::remove_file(partial)?;
            return Ok(true);
        }
        let dir = target.parent().map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf());
        std::fs::create_dir_all(&dir)?;
        std::fs::rename(partial, target)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(true)
    }
}

#[async_trait::async_trait]
impl BlobBytes for BlobStore {
    async fn complete_size(&self, sha256: &str) -> std::io::Result<Option<u64>> {
        match tokio::fs::metadata(self.complete_path(sha256)).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn partial_len(&self, owner: UploadOwner, sha256: &str) -> std::io::Result<u64> {
        match tokio::fs::metadata(self.partial_path(owner, sha256)).await {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    async fn append(&self, owner: UploadOwner, sha256: &str, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let path = self.partial_path(owner, sha256);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut f = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
        f.write_all(bytes).await?;
        f.flush().await
    }

    async fn sync_partial(&self, owner: UploadOwner, sha256: &str) -> std::io::Result<()> {
        match tokio::fs::File::open(self.partial_path(owner, sha256)).await {
            Ok(f) => f.sync_all().await,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn truncate_partial(&self, owner: UploadOwner, sha256: &str, len: u64) -> std::io::Result<()> {
        let f = tokio::fs::OpenOptions::new().write(true).open(self.partial_path(owner, sha256)).await?;
        f.set_len(len).await?;
        f.sync_all().await
    }

    async fn discard_partial(&self, owner: UploadOwner, sha256: &str) -> std::io::Result<()> {
        match tokio::fs::remove_file(self.partial_path(owner, sha256)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    async fn complete(&self, owner: UploadOwner, sha256: &str) -> std::io::Result<bool> {
        let (root, partial, target) =
            (self.root.clone(), self.partial_path(owner, sha256), self.complete_path(sha256));
        let sha = sha256.to_owned();
        blocking_io(move || BlobStore::complete_blocking(&root, &partial, &target, &sha)).await
    }

    async fn read(&self, sha256: &str) -> std::io::Result<BlobStream> {
        let file = tokio::fs::File::open(self.complete_path(sha256)).await?;
        Ok(Box::pin(tokio_util::io::ReaderStream::new(file)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[tokio::test]
    async fn a_finished_upload_is_kept_only_when_its_hash_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path());
        let project = UploadOwner { project: Uuid::new_v4(), device: Uuid::new_v4() };
        let bytes = b"a photo";
        let sha = hex::encode(Sha256::digest(bytes));
        blob_bytes_conformance(&store, project, bytes, &sha).await;
        assert!(valid_sha256(&sha) && !valid_sha256(&sha.to_uppercase()) && !valid_sha256("../x"));
    }

    /// What every [`BlobBytes`] does (files here, PostgreSQL in `storage::postgres_blobs`).
    pub(crate) async fn blob_bytes_conformance(
        store: &dyn BlobBytes,
        owner: UploadOwner,
        bytes: &[u8],
        sha: &str,
    ) {
        use futures_util::TryStreamExt;
        store.append(owner, sha, &bytes[..3]).await.unwrap();
        store.append(owner, sha, &bytes[3..]).await.unwrap();
        store.sync_partial(owner, sha).await.unwrap();
        assert_eq!(store.partial_len(owner, sha).await.unwrap(), bytes.len() as u64);
        assert_eq!(store.complete_size(sha).await.unwrap(), None, "not complete before it is verified");
        assert!(store.complete(owner, sha).await.unwrap());
        assert_eq!(store.complete_size(sha).await.unwrap(), Some(bytes.len() as u64));
        assert_eq!(store.partial_len(owner, sha).await.unwrap(), 0);
        let read: Vec<u8> = store
            .read(sha)
            .await
            .unwrap()
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await
            .unwrap();
        assert_eq!(read, bytes);
        // Another device uploading the same blob leaves one copy.
        let other = UploadOwner { project: owner.project, device: Uuid::new_v4() };
        store.append(other, sha, bytes).await.unwrap();
        assert!(store.complete(other, sha).await.unwrap());
        assert_eq!(store.complete_size(sha).await.unwrap(), Some(bytes.len() as u64));

        let wrong = "0".repeat(64);
        store.append(owner, &wrong, bytes).await.unwrap();
        store.truncate_partial(owner, &wrong, 2).await.unwrap();
        assert_eq!(store.partial_len(owner, &wrong).await.unwrap(), 2);
        store.append(owner, &wrong, &bytes[2..]).await.unwrap();
        assert!(!store.complete(owner, &wrong).await.unwrap());
        assert_eq!(store.complete_size(&wrong).await.unwrap(), None);
        assert_eq!(store.partial_len(owner, &wrong).await.unwrap(), 0);
        store.append(owner, &wrong, bytes).await.unwrap();
        store.discard_partial(owner, &wrong).await.unwrap();
        assert_eq!(store.partial_len(owner, &wrong).await.unwrap(), 0);
    }
}
