//! Attachments: files content-addressed by SHA-256 in a folder beside the database. A field's
//! value refers to the file as `sha256:<hex>`.

use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Result, Store, StoreError};
use crate::crdt::DocId;

/// An attachment this store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentInfo {
    pub sha256: String,
    pub size: u64,
    pub media_type: String,
    pub uploaded: bool,
}

/// The value a field holds when it refers to an attachment.
pub fn attachment_ref(sha256: &str) -> String {
    format!("sha256:{sha256}")
}

/// The hash an attachment reference names, if the value is one.
pub fn parse_attachment_ref(value: &Value) -> Option<&str> {
    let hex = value.as_str()?.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())).then_some(hex)
}

impl Store {
    fn attachment_dir(&self) -> Result<&Path> {
        self.attachment_dir.as_deref().ok_or(StoreError::NoAttachmentDir)
    }

    /// Keeps a file's bytes (once per content) and returns their SHA-256 in hex.
    pub fn store_attachment(&self, bytes: &[u8], media_type: &str, uploaded: bool) -> Result<String> {
        let dir = self.attachment_dir()?.to_path_buf();
        let sha = hex::encode(Sha256::digest(bytes));
        let target = dir.join(&sha);
        if !target.exists() {
            std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io { path: dir.clone(), source })?;
            // Write then rename, so a crash never leaves a partial file under the final name.
            let tmp = dir.join(format!(".{sha}.partial"));
            let io = |source| StoreError::Io { path: tmp.clone(), source };
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
            std::fs::rename(&tmp, &target)
                .map_err(|source| StoreError::Io { path: target.clone(), source })?;
        }
        let inner = self.lock();
        inner.conn.execute(
            "INSERT INTO attachments (sha256, size, media_type, uploaded, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (sha256) DO UPDATE SET uploaded = max(uploaded, excluded.uploaded)",
            params![sha, bytes.len() as i64, media_type, uploaded, std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)],
        )?;
        Ok(sha)
    }

    /// Attaches a file to a field of a document: the bytes are kept beside the database and the
    /// field's value becomes `sha256:<hex>`.
    pub fn attach_file(&self, doc: DocId, field: &str, bytes: &[u8], media_type: &str) -> Result<String> {
        let sha = self.store_attachment(bytes, media_type, false)?;
        self.set_answer(doc, field, Value::String(attachment_ref(&sha)))?;
        Ok(sha)
    }

    /// Attaches a file from disk (a photo the camera app saved).
    pub fn attach_file_from_path(
        &self,
        doc: DocId,
        field: &str,
        path: &Path,
        media_type: &str,
    ) -> Result<String> {
        let bytes =
            std::fs::read(path).map_err(|source| StoreError::Io { path: path.to_path_buf(), source })?;
        self.attach_file(doc, field, &bytes, media_type)
    }

    /// Where an attachment's bytes are, if this store holds them.
    pub fn attachment_path(&self, sha256: &str) -> Result<PathBuf> {
        let path = self.attachment_dir()?.join(sha256);
        let known = self.attachment(sha256)?.is_some();
        if known && path.exists() {
            Ok(path)
        } else {
            Err(StoreError::UnknownAttachment(sha256.to_owned()))
        }
    }

    pub fn attachment(&self, sha256: &str) -> Result<Option<AttachmentInfo>> {
        let inner = self.lock();
        Ok(inner
            .conn
            .query_row(
                "SELECT sha256, size, media_type, uploaded FROM attachments WHERE sha256 = ?1",
                [sha256],
                |r| {
                    Ok(AttachmentInfo {
                        sha256: r.get(0)?,
                        size: r.get::<_, i64>(1)? as u64,
                        media_type: r.get(2)?,
                        uploaded: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Attachments not yet uploaded, which must reach the server before the ops that name them.
    pub fn pending_attachments(&self) -> Result<Vec<AttachmentInfo>> {
        let inner = self.lock();
        let mut stmt = inner.conn.prepare(
            "SELECT sha256, size, media_type, uploaded FROM attachments WHERE uploaded = 0 ORDER BY created_ms, sha256",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(AttachmentInfo {
                sha256: r.get(0)?,
                size: r.get::<_, i64>(1)? as u64,
                media_type: r.get(2)?,
                uploaded: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn mark_attachment_uploaded(&self, sha256: &str) -> Result<()> {
        let inner = self.lock();
        inner.conn.execute("UPDATE attachments SET uploaded = 1 WHERE sha256 = ?1", [sha256])?;
        Ok(())
    }
}
