//! Blob bytes on disk, content-addressed: complete blobs at `blobs/ab/abcdef…`, uploads in
//! progress per device at `blobs/partial/<project>/<device>/<sha256>` (each device proves it
//! holds the bytes by sending them, so no device learns what another uploaded, and no device
//! can add bytes to another's upload).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

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

#[derive(Debug)]
pub struct BlobStore {
    root: PathBuf,
}

/// A blob name: 64 lowercase hex digits.
pub fn valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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

    /// The size of a complete blob, if held.
    pub fn complete_size(&self, sha256: &str) -> Option<u64> {
        std::fs::metadata(self.complete_path(sha256)).ok().filter(|m| m.is_file()).map(|m| m.len())
    }

    /// How many bytes of a device's upload have arrived.
    pub fn partial_len(&self, owner: UploadOwner, sha256: &str) -> u64 {
        std::fs::metadata(self.partial_path(owner, sha256)).map(|m| m.len()).unwrap_or(0)
    }

    /// Opens the partial file for appending, creating it (and its folder) when new.
    pub fn open_partial(&self, owner: UploadOwner, sha256: &str) -> std::io::Result<std::fs::File> {
        let path = self.partial_path(owner, sha256);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new().create(true).append(true).open(path)
    }

    /// Cuts a partial upload back to `len` bytes (after a refused chunk).
    pub fn truncate_partial(&self, owner: UploadOwner, sha256: &str, len: u64) -> std::io::Result<()> {
        let f = std::fs::OpenOptions::new().write(true).open(self.partial_path(owner, sha256))?;
        f.set_len(len)?;
        f.sync_all()
    }

    pub fn discard_partial(&self, owner: UploadOwner, sha256: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.partial_path(owner, sha256)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Verifies a finished upload: if its bytes hash to the name, moves it into place and
    /// returns true; otherwise deletes it and returns false.
    pub fn complete(&self, owner: UploadOwner, sha256: &str) -> std::io::Result<bool> {
        let partial = self.partial_path(owner, sha256);
        let mut hasher = Sha256::new();
        let mut f = std::fs::File::open(&partial)?;
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
            std::fs::remove_file(&partial)?;
            return Ok(false);
        }
        let target = self.complete_path(sha256);
        if target.exists() {
            std::fs::remove_file(&partial)?;
            return Ok(true);
        }
        let dir = target.parent().map(Path::to_path_buf).unwrap_or_else(|| self.root.clone());
        std::fs::create_dir_all(&dir)?;
        std::fs::rename(&partial, &target)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(true)
    }

    /// Writes bytes at the end of a partial upload.
    pub fn append(file: &mut std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
        file.write_all(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_upload_is_kept_only_when_its_hash_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path());
        let project = UploadOwner { project: Uuid::new_v4(), device: Uuid::new_v4() };
        let bytes = b"a photo";
        let sha = hex::encode(Sha256::digest(bytes));
        let mut f = store.open_partial(project, &sha).unwrap();
        BlobStore::append(&mut f, &bytes[..3]).unwrap();
        BlobStore::append(&mut f, &bytes[3..]).unwrap();
        assert_eq!(store.partial_len(project, &sha), 7);
        assert!(store.complete(project, &sha).unwrap());
        assert_eq!(store.complete_size(&sha), Some(7));

        let wrong = "0".repeat(64);
        let mut f = store.open_partial(project, &wrong).unwrap();
        BlobStore::append(&mut f, bytes).unwrap();
        assert!(!store.complete(project, &wrong).unwrap());
        assert_eq!(store.complete_size(&wrong), None);
        assert_eq!(store.partial_len(project, &wrong), 0);
        assert!(valid_sha256(&sha) && !valid_sha256(&sha.to_uppercase()) && !valid_sha256("../x"));
    }
}
