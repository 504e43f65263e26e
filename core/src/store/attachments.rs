//! Attachments: files content-addressed by SHA-256 in a folder beside the database. A field's
//! value refers to the file as `sha256:<hex>`.
//!
//! A plain store keeps each file's bytes as they are. An encrypted store seals them with
//! XChaCha20-Poly1305 in the STREAM construction (`aead::stream::StreamBE32`): the file is
//! `TJDOATT1`, a random 19-byte nonce prefix, then the plaintext in 64 KiB chunks, each
//! encrypted and authenticated under a nonce holding its position and a last-chunk flag, so
//! reordering, dropping or truncating chunks fails authentication. The last chunk also carries
//! the SHA-256 of the whole plaintext: a sealed file copied under another attachment's name is
//! refused, and a reader that reads a file to its end checks the hash of what it returned.
//!
//! The attachment key is HKDF-SHA256 (with its own info string) of a random 32-byte secret
//! kept inside the encrypted database: the store key protects it, and `rekey` changes the
//! store key without re-encrypting every photo.
//!
//! Files are written and read in chunks, so memory stays bounded (one chunk, a little over
//! 64 KiB) whatever the size of the file: a 20 MB video never sits in memory whole.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::stream::{NewStream, StreamBE32, StreamPrimitive};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use rusqlite::{params, Connection, OptionalExtension};
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
    is_sha256_hex(hex).then_some(hex)
}

fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The first bytes of a sealed attachment file.
const MAGIC: &[u8; 8] = b"TJDOATT1";
/// XChaCha20's 24-byte nonce less STREAM-BE32's 5 bytes (32-bit position, last-chunk flag).
const NONCE_PREFIX: usize = 19;
const HEADER: u64 = (MAGIC.len() + NONCE_PREFIX) as u64;
/// Plaintext bytes per chunk; every chunk but the last holds exactly this many.
pub(crate) const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
/// The SHA-256 of the plaintext, at the end of the last chunk's plaintext.
const TRAILER: usize = 32;
const SEALED_CHUNK: u64 = (CHUNK + TAG) as u64;
/// The smallest last chunk: no data, the trailer and the tag.
const MIN_LAST: u64 = (TRAILER + TAG) as u64;
/// Where the encrypted database keeps the attachment secret.
const SECRET_STATE_KEY: &str = "attachments.secret.v1";
const HKDF_INFO: &[u8] = b"tejido attachments v1: XChaCha20-Poly1305 STREAM-BE32, 64 KiB chunks";

type Stream = StreamBE32<XChaCha20Poly1305>;

/// The key that seals an encrypted store's attachments.
#[derive(Clone)]
pub(crate) struct AttachmentKey([u8; 32]);

impl std::fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttachmentKey(..)")
    }
}

impl AttachmentKey {
    fn derive(secret: &[u8]) -> Option<AttachmentKey> {
        let mut okm = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(None, secret).expand(HKDF_INFO, &mut okm).ok()?;
        Some(AttachmentKey(okm))
    }

    fn stream(&self, prefix: &[u8]) -> Stream {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        Stream::from_aead(cipher, prefix.into())
    }

    /// The key of an encrypted store, from the secret its database holds (created on first
    /// use, in the same database, so it is as safe as the answers).
    pub(crate) fn load_or_create(conn: &Connection, shown: &Path) -> Result<AttachmentKey> {
        let stored: Option<String> = conn
            .query_row("SELECT value FROM sync_state WHERE key = ?1", [SECRET_STATE_KEY], |r| r.get(0))
            .optional()?;
        let secret = match stored {
            Some(hex) => hex::decode(hex)
                .ok()
                .filter(|s| s.len() == 32)
                .ok_or_else(|| StoreError::Corrupt(shown.to_path_buf()))?,
            None => {
                let mut secret = vec![0u8; 32];
                getrandom::fill(&mut secret).map_err(|e| StoreError::Io {
                    path: shown.to_path_buf(),
                    source: std::io::Error::other(format!("no randomness for the attachment key: {e}")),
                })?;
                conn.execute(
                    "INSERT INTO sync_state (key, value) VALUES (?1, ?2)",
                    params![SECRET_STATE_KEY, hex::encode(&secret)],
                )?;
                secret
            }
        };
        AttachmentKey::derive(&secret).ok_or_else(|| StoreError::Corrupt(shown.to_path_buf()))
    }
}

/// Reads until `buf` is full or the reader ends; returns how many bytes were read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn damaged(sha: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("attachment {sha} is damaged or was tampered with (it fails authentication or its hash)"),
    )
}

/// An attachment file being written under a temporary name in the attachment folder: hashed
/// as it goes and, when a key is given, sealed as it goes, so at most one chunk of plaintext is
/// in memory and none reaches the disk of an encrypted store. Dropped before
/// [`Partial::install`], it removes its file.
struct Partial {
    tmp: PathBuf,
    out: Option<std::io::BufWriter<File>>,
    sealer: Option<Stream>,
    hasher: Sha256,
    size: u64,
    position: u32,
    /// Plaintext not written yet: always fewer than `CHUNK` bytes between calls.
    buf: Vec<u8>,
    installed: bool,
}

impl Partial {
    fn create(dir: &Path, key: Option<&AttachmentKey>) -> Result<Partial> {
        let tmp = dir.join(format!(".partial-{}", uuid::Uuid::new_v4()));
        let file = File::create(&tmp).map_err(|source| StoreError::Io { path: tmp.clone(), source })?;
        let mut partial = Partial {
            tmp,
            out: Some(std::io::BufWriter::new(file)),
            sealer: None,
            hasher: Sha256::new(),
            size: 0,
            position: 0,
            buf: Vec::with_capacity(CHUNK + TRAILER + TAG),
            installed: false,
        };
        if let Some(key) = key {
            let mut prefix = [0u8; NONCE_PREFIX];
            getrandom::fill(&mut prefix)
                .map_err(|e| partial.io(std::io::Error::other(format!("no randomness for a nonce: {e}"))))?;
            let header =
                partial.out.as_mut().map(|out| out.write_all(MAGIC).and_then(|_| out.write_all(&prefix)));
            if let Some(Err(e)) = header {
                return Err(partial.io(e));
            }
            partial.sealer = Some(key.stream(&prefix));
        }
        Ok(partial)
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io { path: self.tmp.clone(), source }
    }

    /// Adds plaintext bytes.
    fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = (CHUNK - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == CHUNK {
                self.write_chunk(false)?;
            }
        }
        Ok(())
    }

    /// Adds everything a reader gives, reading straight into the chunk buffer.
    fn copy_from(&mut self, source: &mut dyn Read) -> Result<()> {
        loop {
            let start = self.buf.len();
            self.buf.resize(CHUNK, 0);
            let n = match read_full(source, &mut self.buf[start..]) {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(self.io(e));
                }
            };
            self.buf.truncate(start + n);
            self.hasher.update(&self.buf[start..]);
            self.size += n as u64;
            if self.buf.len() == CHUNK {
                self.write_chunk(false)?;
            }
            if n == 0 {
                return Ok(());
            }
        }
    }

    /// Seals (if sealing) and writes the buffered plaintext as chunk `position`. A full chunk is
    /// never the last: the last holds fewer than `CHUNK` bytes of data (possibly none) and the
    /// trailer.
    fn write_chunk(&mut self, last: bool) -> Result<()> {
        if let Some(stream) = &self.sealer {
            if last {
                self.buf.extend_from_slice(&self.hasher.clone().finalize());
            }
            if stream.encrypt_in_place(self.position, last, b"", &mut self.buf).is_err() {
                return Err(self.io(std::io::Error::other("the attachment could not be encrypted")));
            }
            self.position = self.position.checked_add(1).ok_or_else(|| {
                self.io(std::io::Error::new(std::io::ErrorKind::FileTooLarge, "attachment too large"))
            })?;
        }
        let Some(out) = self.out.as_mut() else {
            return Err(self.io(std::io::Error::other("the attachment file is already finished")));
        };
        let written = out.write_all(&self.buf);
        self.buf.clear();
        written.map_err(|e| self.io(e))
    }

    /// The SHA-256 of the plaintext written so far, in hex.
    fn sha256(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    /// Writes the last chunk and makes the file durable; returns the SHA-256 and the size.
    fn finish(&mut self) -> Result<(String, u64)> {
        self.write_chunk(true)?;
        let out = self.out.take().ok_or_else(|| self.io(std::io::Error::other("already finished")))?;
        let file = out.into_inner().map_err(|e| self.io(e.into_error()))?;
        file.sync_all().map_err(|e| self.io(e))?;
        Ok((self.sha256(), self.size))
    }

    /// Moves the finished file to its content-addressed name (a file already there holds the
    /// same content), so a crash never leaves a partial file under the final name.
    fn install(mut self, target: &Path) -> Result<()> {
        self.installed = true;
        if target.exists() {
            let _ = std::fs::remove_file(&self.tmp);
            return Ok(());
        }
        if let Err(source) = std::fs::rename(&self.tmp, target) {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(StoreError::Io { path: target.to_path_buf(), source });
        }
        sync_dir(target.parent().unwrap_or(Path::new(".")));
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.installed {
            self.out = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Makes a rename durable (best effort: not every platform can fsync a directory).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Removes temporary files a crash left in an attachment folder (the store's one owner calls it
/// at open, so no writer is using them).
pub(crate) fn sweep_partials(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".partial-") || (name.starts_with('.') && name.ends_with(".partial")) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Writes a copy of the attachment file at `source` (named by its hash), sealed with `key`,
/// into `target_dir`: the step of converting a plain store that encrypts its attachments.
/// Checks the plaintext's hash on the way.
pub(crate) fn seal_copy(source: &Path, target_dir: &Path, key: &AttachmentKey) -> Result<()> {
    let Some(sha) = source.file_name().and_then(|n| n.to_str()).filter(|n| is_sha256_hex(n)) else {
        return Ok(());
    };
    let target = target_dir.join(sha);
    if target.exists() {
        return Ok(());
    }
    let mut file =
        File::open(source).map_err(|e| StoreError::Io { path: source.to_path_buf(), source: e })?;
    let mut partial = Partial::create(target_dir, Some(key))?;
    partial.copy_from(&mut file)?;
    let (got, _) = partial.finish()?;
    if got != sha {
        return Err(StoreError::AttachmentDamaged(sha.to_owned()));
    }
    partial.install(&target)
}

/// Reads an attachment's plaintext: a plain file as it is, a sealed one chunk by chunk. Reading
/// from the start to the end checks the SHA-256 of every byte returned against the
/// attachment's name: a damaged or tampered file gives an `InvalidData` error, never wrong
/// bytes. Seeking is supported (an upload resumes at an offset); each sealed chunk is still
/// authenticated.
pub struct AttachmentReader {
    sha: String,
    path: PathBuf,
    expected: [u8; 32],
    /// The hash of the bytes returned so far, while reading from the start in order.
    hasher: Option<Sha256>,
    pos: u64,
    len: u64,
    file: File,
    sealed: Option<Sealed>,
    verified: bool,
}

struct Sealed {
    stream: Stream,
    chunks: u64,
    /// The ciphertext length of the last chunk.
    last_len: u64,
    /// The plaintext of the chunk read last, and its index.
    buf: Vec<u8>,
    loaded: Option<u64>,
}

impl std::fmt::Debug for AttachmentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentReader").field("sha256", &self.sha).field("len", &self.len).finish()
    }
}

impl AttachmentReader {
    fn open(path: &Path, sha: &str, key: Option<&AttachmentKey>) -> Result<AttachmentReader> {
        let io = |source| StoreError::Io { path: path.to_path_buf(), source };
        let mut expected = [0u8; 32];
        hex::decode_to_slice(sha, &mut expected)
            .map_err(|_| StoreError::UnknownAttachment(sha.to_owned()))?;
        let mut file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let bad = || StoreError::AttachmentDamaged(sha.to_owned());
        let (len, sealed) = match key {
            None => (file_len, None),
            Some(key) => {
                if file_len < HEADER + MIN_LAST {
                    return Err(bad());
                }
                let mut header = [0u8; HEADER as usize];
                file.read_exact(&mut header).map_err(io)?;
                if &header[..MAGIC.len()] != MAGIC {
                    return Err(bad());
                }
                let body = file_len - HEADER;
                let full = (body - MIN_LAST) / SEALED_CHUNK;
                let last_len = body - full * SEALED_CHUNK;
                if last_len - MIN_LAST >= CHUNK as u64 || full >= u64::from(u32::MAX) {
                    return Err(bad());
                }
                let len = full * CHUNK as u64 + (last_len - MIN_LAST);
                let stream = key.stream(&header[MAGIC.len()..]);
                let buf = Vec::with_capacity(CHUNK + TRAILER + TAG);
                (len, Some(Sealed { stream, chunks: full + 1, last_len, buf, loaded: None }))
            }
        };
        Ok(AttachmentReader {
            sha: sha.to_owned(),
            path: path.to_path_buf(),
            expected,
            hasher: Some(Sha256::new()),
            pos: 0,
            len,
            file,
            sealed,
            verified: false,
        })
    }

    /// The plaintext's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The plaintext bytes from `start` up to `end` (or the end of the attachment): one
    /// upload request's worth, read without holding the rest of the file.
    pub fn read_range(&mut self, start: u64, end: u64) -> Result<Vec<u8>> {
        let end = end.min(self.len);
        let mut out = vec![0u8; end.saturating_sub(start) as usize];
        let result = self.seek(SeekFrom::Start(start)).and_then(|_| read_full(self, &mut out));
        match result {
            Ok(n) if n == out.len() => Ok(out),
            Ok(_) => Err(StoreError::AttachmentDamaged(self.sha.clone())),
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, e: std::io::Error) -> StoreError {
        if e.kind() == std::io::ErrorKind::InvalidData {
            StoreError::AttachmentDamaged(self.sha.clone())
        } else {
            StoreError::Io { path: self.path.clone(), source: e }
        }
    }

    /// Decrypts and authenticates chunk `index` into the buffer.
    fn load(&mut self, index: u64) -> std::io::Result<()> {
        let Some(s) = &mut self.sealed else { return Ok(()) };
        if s.loaded == Some(index) {
            return Ok(());
        }
        s.loaded = None;
        let last = index + 1 == s.chunks;
        let ct_len = if last { s.last_len } else { SEALED_CHUNK } as usize;
        self.file.seek(SeekFrom::Start(HEADER + index * SEALED_CHUNK))?;
        s.buf.resize(ct_len, 0);
        if read_full(&mut self.file, &mut s.buf)? != ct_len {
            return Err(damaged(&self.sha));
        }
        let position = u32::try_from(index).map_err(|_| damaged(&self.sha))?;
        s.stream.decrypt_in_place(position, last, b"", &mut s.buf).map_err(|_| damaged(&self.sha))?;
        if last {
            let data = s.buf.len() - TRAILER;
            if s.buf[data..] != self.expected {
                return Err(damaged(&self.sha));
            }
            s.buf.truncate(data);
        }
        s.loaded = Some(index);
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        if let Some(h) = self.hasher.take() {
            if h.finalize()[..] != self.expected {
                return Err(damaged(&self.sha));
            }
            self.verified = true;
        }
        Ok(())
    }
}

impl Read for AttachmentReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.len {
            self.finish()?;
            return Ok(0);
        }
        let n = if self.sealed.is_some() {
            let index = self.pos / CHUNK as u64;
            self.load(index)?;
            let Some(s) = &self.sealed else { return Ok(0) };
            let at = (self.pos - index * CHUNK as u64) as usize;
            let n = out.len().min(s.buf.len().saturating_sub(at));
            out[..n].copy_from_slice(&s.buf[at..at + n]);
            n
        } else {
            self.file.seek(SeekFrom::Start(self.pos))?;
            let want = out.len().min((self.len - self.pos).min(usize::MAX as u64) as usize);
            let n = self.file.read(&mut out[..want])?;
            if n == 0 {
                // The file is shorter than when it was opened.
                return Err(damaged(&self.sha));
            }
            n
        };
        if let Some(h) = &mut self.hasher {
            h.update(&out[..n]);
        }
        self.pos += n as u64;
        if self.pos >= self.len {
            self.finish()?;
        }
        Ok(n)
    }
}

impl Seek for AttachmentReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let new = match to {
            SeekFrom::Start(o) => Some(o),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"))?;
        if new != self.pos {
            // Only a read from the start, in order, can check the whole file's hash.
            self.hasher = (new == 0).then(Sha256::new);
            self.pos = new;
        }
        Ok(new)
    }
}

/// An attachment arriving a piece at a time: each piece is hashed and, in an encrypted store,
/// sealed as it is written, into a temporary file in the attachment folder, so neither memory
/// (one chunk, a little over 64 KiB) nor the disk ever holds the plaintext whole. Nothing is
/// kept until [`keep`](Self::keep); dropped before, it leaves nothing behind.
pub struct AttachmentWriter<'s> {
    store: &'s Store,
    partial: Partial,
}

impl std::fmt::Debug for AttachmentWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentWriter").field("len", &self.partial.size).finish()
    }
}

impl AttachmentWriter<'_> {
    /// Adds the next bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.partial.write(bytes)
    }

    /// How many bytes were written so far.
    pub fn len(&self) -> u64 {
        self.partial.size
    }

    pub fn is_empty(&self) -> bool {
        self.partial.size == 0
    }

    /// The SHA-256 (hex) of the bytes written so far: what the attachment will be named.
    pub fn sha256(&self) -> String {
        self.partial.sha256()
    }

    /// Keeps the attachment (once per content) and returns its SHA-256 in hex.
    pub fn keep(mut self, media_type: &str, uploaded: bool) -> Result<String> {
        let (sha, size) = self.partial.finish()?;
        let dir = self.store.attachment_dir()?;
        self.partial.install(&dir.join(&sha))?;
        let inner = self.store.lock();
        inner.conn.execute(
            "INSERT INTO attachments (sha256, size, media_type, uploaded, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (sha256) DO UPDATE SET uploaded = max(uploaded, excluded.uploaded)",
            params![sha, size as i64, media_type, uploaded, std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)],
        )?;
        Ok(sha)
    }
}

impl Store {
    fn attachment_dir(&self) -> Result<&Path> {
        self.attachment_dir.as_deref().ok_or(StoreError::NoAttachmentDir)
    }

    /// Whether this store's attachments are sealed on disk.
    pub fn attachments_encrypted(&self) -> bool {
        self.attachment_key.is_some()
    }

    /// Keeps a file's bytes (once per content) and returns their SHA-256 in hex.
    pub fn store_attachment(&self, bytes: &[u8], media_type: &str, uploaded: bool) -> Result<String> {
        self.store_attachment_from(&mut &bytes[..], media_type, uploaded)
    }

    /// Keeps the bytes a reader gives (once per content), reading them in chunks, and returns
    /// their SHA-256 in hex.
    pub fn store_attachment_from(
        &self,
        source: &mut dyn Read,
        media_type: &str,
        uploaded: bool,
    ) -> Result<String> {
        let mut writer = self.attachment_writer()?;
        writer.partial.copy_from(source)?;
        writer.keep(media_type, uploaded)
    }

    /// Starts receiving an attachment a piece at a time (a download): see [`AttachmentWriter`].
    pub fn attachment_writer(&self) -> Result<AttachmentWriter<'_>> {
        let dir = self.attachment_dir()?;
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        let partial = Partial::create(dir, self.attachment_key.as_ref())?;
        Ok(AttachmentWriter { store: self, partial })
    }

    /// Attaches a file to a field of a document: the bytes are kept beside the database and the
    /// field's value becomes `sha256:<hex>`.
    pub fn attach_file(&self, doc: DocId, field: &str, bytes: &[u8], media_type: &str) -> Result<String> {
        let sha = self.store_attachment(bytes, media_type, false)?;
        self.set_answer(doc, field, Value::String(attachment_ref(&sha)))?;
        Ok(sha)
    }

    /// Attaches a file from disk (a photo the camera app saved), reading it in chunks.
    pub fn attach_file_from_path(
        &self,
        doc: DocId,
        field: &str,
        path: &Path,
        media_type: &str,
    ) -> Result<String> {
        let mut file =
            File::open(path).map_err(|source| StoreError::Io { path: path.to_path_buf(), source })?;
        let sha = self.store_attachment_from(&mut file, media_type, false)?;
        self.set_answer(doc, field, Value::String(attachment_ref(&sha)))?;
        Ok(sha)
    }

    /// Where an attachment's bytes are, if this store holds them. Only a plain store's files
    /// hold the bytes as they are; an encrypted store's are sealed, so this refuses them with
    /// `EncryptedAttachment` (read them with [`Store::open_attachment`]).
    pub fn attachment_path(&self, sha256: &str) -> Result<PathBuf> {
        let path = self.known_attachment_file(sha256)?;
        if self.attachments_encrypted() {
            return Err(StoreError::EncryptedAttachment(sha256.to_owned()));
        }
        Ok(path)
    }

    fn known_attachment_file(&self, sha256: &str) -> Result<PathBuf> {
        if !is_sha256_hex(sha256) {
            return Err(StoreError::UnknownAttachment(sha256.to_owned()));
        }
        let path = self.attachment_dir()?.join(sha256);
        let known = self.attachment(sha256)?.is_some();
        if known && path.exists() {
            Ok(path)
        } else {
            Err(StoreError::UnknownAttachment(sha256.to_owned()))
        }
    }

    /// Opens an attachment's plaintext for reading, in a plain or an encrypted store.
    pub fn open_attachment(&self, sha256: &str) -> Result<AttachmentReader> {
        let path = self.known_attachment_file(sha256)?;
        AttachmentReader::open(&path, sha256, self.attachment_key.as_ref())
    }

    /// An attachment's bytes, checked against its hash (for small files; stream large ones with
    /// [`Store::open_attachment`] or [`Store::export_attachment`]).
    pub fn read_attachment(&self, sha256: &str) -> Result<Vec<u8>> {
        let mut reader = self.open_attachment(sha256)?;
        let mut bytes = Vec::with_capacity(reader.len().min(64 << 20) as usize);
        reader.read_to_end(&mut bytes).map_err(|e| reader.error(e))?;
        Ok(bytes)
    }

    /// Writes an attachment's plaintext to `dest` (for a viewer that wants a file), in chunks,
    /// checked against its hash; a damaged attachment leaves no file at `dest`.
    pub fn export_attachment(&self, sha256: &str, dest: &Path) -> Result<u64> {
        let mut reader = self.open_attachment(sha256)?;
        let io = |source| StoreError::Io { path: dest.to_path_buf(), source };
        let mut out = File::create(dest).map_err(io)?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        let result = loop {
            match reader.read(&mut buf) {
                Ok(0) => break out.sync_all().map_err(io),
                Ok(n) => {
                    if let Err(e) = out.write_all(&buf[..n]) {
                        break Err(io(e));
                    }
                    total += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(reader.error(e)),
            }
        };
        if let Err(e) = result {
            drop(out);
            let _ = std::fs::remove_file(dest);
            return Err(e);
        }
        Ok(total)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key() -> AttachmentKey {
        AttachmentKey::derive(&[7u8; 32]).unwrap()
    }

    fn seal(dir: &Path, bytes: &[u8]) -> (PathBuf, String) {
        let mut partial = Partial::create(dir, Some(&key())).unwrap();
        partial.copy_from(&mut &bytes[..]).unwrap();
        let (sha, size) = partial.finish().unwrap();
        assert_eq!(size, bytes.len() as u64);
        let target = dir.join(&sha);
        partial.install(&target).unwrap();
        (target, sha)
    }

    fn unseal(path: &Path, sha: &str) -> std::io::Result<Vec<u8>> {
        let mut r = AttachmentReader::open(path, sha, Some(&key()))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn sealed_files_round_trip_at_every_chunk_boundary() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, CHUNK - TRAILER, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 77] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let (path, sha) = seal(dir.path(), &bytes);
            let full = (len / CHUNK) as u64;
            let expected_size = HEADER + full * SEALED_CHUNK + (len % CHUNK) as u64 + MIN_LAST;
            assert_eq!(std::fs::metadata(&path).unwrap().len(), expected_size, "len {len}");
            assert_eq!(unseal(&path, &sha).unwrap(), bytes, "len {len}");
        }
    }

    #[test]
    fn pieces_of_any_size_seal_like_one_read() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 77] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 17 % 241) as u8).collect();
            for piece in [7, 1000, CHUNK, CHUNK + 3] {
                let mut partial = Partial::create(dir.path(), Some(&key())).unwrap();
                for part in bytes.chunks(piece) {
                    partial.write(part).unwrap();
                    assert!(partial.buf.len() < CHUNK, "len {len} piece {piece}");
                }
                assert_eq!(partial.sha256(), hex::encode(Sha256::digest(&bytes)));
                let (sha, size) = partial.finish().unwrap();
                assert_eq!(size, len as u64);
                let target = dir.path().join(format!("{sha}.{piece}"));
                partial.install(&target).unwrap();
                let full = (len / CHUNK) as u64;
                let expected_size = HEADER + full * SEALED_CHUNK + (len % CHUNK) as u64 + MIN_LAST;
                assert_eq!(
                    std::fs::metadata(&target).unwrap().len(),
                    expected_size,
                    "len {len} piece {piece}"
                );
                assert_eq!(unseal(&target, &sha).unwrap(), bytes, "len {len} piece {piece}");
            }
        }
    }

    #[test]
    fn a_writer_dropped_before_it_is_installed_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for finish in [false, true] {
            let mut partial = Partial::create(dir.path(), Some(&key())).unwrap();
            partial.write(&vec![3u8; 2 * CHUNK + 5]).unwrap();
            if finish {
                partial.finish().unwrap();
            }
            drop(partial);
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "finished: {finish}");
        }
    }

    #[test]
    fn seeking_reads_the_right_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..(2 * CHUNK + 500)).map(|i| (i % 253) as u8).collect();
        let (path, sha) = seal(dir.path(), &bytes);
        let mut r = AttachmentReader::open(&path, &sha, Some(&key())).unwrap();
        assert_eq!(r.len(), bytes.len() as u64);
        for at in [CHUNK as u64 - 3, 17, 2 * CHUNK as u64 + 499] {
            r.seek(SeekFrom::Start(at)).unwrap();
            let mut b = [0u8; 10];
            let n = read_full(&mut r, &mut b).unwrap();
            assert_eq!(&b[..n], &bytes[at as usize..(at as usize + 10).min(bytes.len())]);
        }
    }

    #[test]
    fn reordered_truncated_extended_or_renamed_chunks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..(3 * CHUNK + 10)).map(|i| (i % 249) as u8).collect();
        let (path, sha) = seal(dir.path(), &bytes);
        let sealed = std::fs::read(&path).unwrap();
        let h = HEADER as usize;
        let c = SEALED_CHUNK as usize;
        let check = |name: &str, data: Vec<u8>| {
            std::fs::write(&path, data).unwrap();
            let err = unseal(&path, &sha).unwrap_err();
            assert!(
                err.to_string().contains("damaged") || err.to_string().contains("tampered"),
                "{name}: {err}"
            );
        };
        // Two full chunks swapped.
        let mut swapped = sealed.clone();
        swapped[h..h + c].copy_from_slice(&sealed[h + c..h + 2 * c]);
        swapped[h + c..h + 2 * c].copy_from_slice(&sealed[h..h + c]);
        check("swapped", swapped);
        // Cut at a chunk boundary: the remaining last chunk is not flagged last.
        check("truncated at a boundary", sealed[..h + 3 * c].to_vec());
        // The last chunk dropped and a full chunk kept as the end.
        check("truncated mid-chunk", sealed[..h + 2 * c + 100].to_vec());
        // One bit flipped.
        let mut flipped = sealed.clone();
        flipped[h + 5] ^= 1;
        check("flipped", flipped);
        // Bytes appended.
        let mut longer = sealed.clone();
        longer.extend_from_slice(&[0u8; 40]);
        check("extended", longer);
        // Another attachment's sealed file under this one's name.
        let (other, _) = seal(dir.path(), b"another photo");
        let other_bytes = std::fs::read(&other).unwrap();
        check("renamed", other_bytes);
    }

    #[test]
    fn a_plain_file_that_does_not_match_its_hash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sha = hex::encode(Sha256::digest(b"the photo"));
        let path = dir.path().join(&sha);
        std::fs::write(&path, b"the phot0").unwrap();
        let mut r = AttachmentReader::open(&path, &sha, None).unwrap();
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn the_reader_buffers_one_chunk_whatever_the_file_size() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = vec![9u8; 5 * CHUNK + 3];
        let (path, sha) = seal(dir.path(), &bytes);
        let mut r = AttachmentReader::open(&path, &sha, Some(&key())).unwrap();
        let mut sink = [0u8; 1000];
        let mut total = 0;
        loop {
            let n = r.read(&mut sink).unwrap();
            if n == 0 {
                break;
            }
            total += n;
            let cap = r.sealed.as_ref().unwrap().buf.capacity();
            assert!(cap <= CHUNK + TRAILER + TAG, "buffer grew to {cap}");
        }
        assert_eq!(total, bytes.len());
        assert!(r.verified);
    }
}
