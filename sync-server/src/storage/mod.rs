//! The server's storage: one trait with one method per operation, typed parameters and results.
//! SQL (and its dialect) lives only in the implementations: [`sqlite`] now, PostgreSQL later.

pub mod sqlite;
#[cfg(test)]
mod tests;

use serde::Serialize;
use tejido_core::sync::wire::Role;
use tejido_core::{Change, Collection, DocId, ReplicaId};
use uuid::Uuid;

pub use sqlite::SqliteStorage;

pub use crate::blobs::UploadOwner;

/// A project: the boundary nothing crosses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    pub created_ms: i64,
}

/// An enrolled device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Device {
    pub id: Uuid,
    pub project: Uuid,
    pub role: Role,
    pub replica: ReplicaId,
    pub name: Option<String>,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
    /// Set when the device pushed changes stamped far ahead of the server's clock.
    pub far_future_ms: Option<i64>,
}

impl Device {
    pub fn is_revoked(&self) -> bool {
        self.revoked_ms.is_some()
    }
}

/// A new enrollment code; the code itself is kept only as its hash.
#[derive(Clone, Debug)]
pub struct NewEnrollmentCode {
    pub code_hash: [u8; 32],
    pub project: Uuid,
    pub role: Role,
    pub uses: u32,
    pub expires_ms: Option<i64>,
    pub now_ms: i64,
}

/// A device trading an enrollment code for a token.
#[derive(Clone, Debug)]
pub struct Redeem {
    pub code_hash: [u8; 32],
    pub replica: ReplicaId,
    pub device_name: Option<String>,
    /// The new device's id, used unless this is a retry of an enrollment that already happened.
    pub device_id: Uuid,
    pub token_hash: [u8; 32],
    pub now_ms: i64,
}

/// A device enrolled (or re-issued a token after a retried enrollment).
#[derive(Clone, Debug)]
pub struct Enrolled {
    pub device: Device,
    pub project: Project,
}

/// What a push did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushOutcome {
    pub accepted_ops: u64,
    pub duplicate_ops: u64,
}

/// Where a device is in its pull: taking the snapshot, or following the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// A fresh device: the snapshot of current state, from the start.
    Start,
    /// Inside a snapshot taken when the log ended at `upto`, after document `after`.
    Snapshot { upto: i64, after: Uuid },
    /// Following the log after this sequence number.
    Log(i64),
}

impl Cursor {
    pub fn parse(s: &str) -> Option<Cursor> {
        if s.is_empty() {
            return Some(Cursor::Start);
        }
        if let Some(seq) = s.strip_prefix('l') {
            let seq: i64 = seq.parse().ok()?;
            return (seq >= 0).then_some(Cursor::Log(seq));
        }
        let rest = s.strip_prefix('s')?;
        let (upto, after) = rest.split_once('.')?;
        let upto: i64 = upto.parse().ok()?;
        let after = Uuid::try_parse(after).ok()?;
        (upto >= 0).then_some(Cursor::Snapshot { upto, after })
    }

    pub fn encode(&self) -> String {
        match self {
            Cursor::Start => String::new(),
            Cursor::Log(seq) => format!("l{seq}"),
            Cursor::Snapshot { upto, after } => format!("s{upto}.{}", after.simple()),
        }
    }
}

/// One page of a pull. Each change is its wire JSON, ready to be sent as it is.
#[derive(Clone, Debug)]
pub struct PullPage {
    pub changes: Vec<String>,
    pub cursor: Cursor,
    pub more: bool,
}

/// A coordinator's review of a submission, written by the server's own replica.
#[derive(Clone, Debug)]
pub struct Review {
    pub project: Uuid,
    pub submission: DocId,
    pub state: String,
    pub comment: Option<String>,
    /// Who reviewed: a coordinator device, or the admin.
    pub author: Option<Uuid>,
    pub author_label: String,
    pub now_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReviewOutcome {
    pub submission: DocId,
    pub state: String,
    pub comment: Option<DocId>,
}

/// A form version to publish to the devices of some roles.
#[derive(Clone, Debug)]
pub struct PublishForm {
    pub project: Uuid,
    pub form_id: String,
    pub version: String,
    pub roles: Vec<Role>,
    pub form: serde_json::Value,
    pub now_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublishOutcome {
    pub doc: DocId,
    /// False when this exact version was already published (nothing changed).
    pub published: bool,
}

/// A document the server knows, for authorizing admin operations on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentInfo {
    pub doc: DocId,
    pub project: Uuid,
    pub collection: Collection,
    pub author: Option<Uuid>,
    /// The submission a comment is about.
    pub parent: Option<Uuid>,
}

/// One open conflict on the server: a field with several values nobody has replaced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldConflict {
    pub doc: DocId,
    pub field: String,
    /// The open values' op ids, greatest (the winner) first.
    pub ops: Vec<String>,
}

/// A partial or complete blob upload's recorded length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadInfo {
    pub length: u64,
    pub media_type: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("the enrollment code is unknown, used up or expired")]
    BadCode,
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("storage error: {0}")]
    Other(String),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything the server keeps, apart from blob bytes. Implementations are safe to share
/// between request threads; each method is one transaction.
pub trait Storage: Send + Sync + 'static {
    fn create_project(&self, name: &str, now_ms: i64) -> Result<Project>;
    /// A project by id or by name.
    fn find_project(&self, id_or_name: &str) -> Result<Option<Project>>;
    fn list_projects(&self) -> Result<Vec<Project>>;

    fn create_enrollment_code(&self, code: &NewEnrollmentCode) -> Result<()>;
    /// Uses the code once and enrolls the device, if [`crate::service::enroll::check_code`]
    /// allows it.
    fn redeem_enrollment_code(&self, redeem: &Redeem) -> Result<Enrolled>;

    fn device_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<Device>>;
    fn device(&self, id: Uuid) -> Result<Option<Device>>;
    fn list_devices(&self, project: Uuid) -> Result<Vec<Device>>;
    /// Revokes a device at once; returns false when it was already revoked.
    fn revoke_device(&self, id: Uuid, now_ms: i64) -> Result<bool>;

    /// Applies a device's batch in one transaction, after checking every change against the
    /// device's scope: all or nothing.
    fn push(&self, device: &Device, changes: &[Change], now_ms: u64) -> Result<PushOutcome>;
    /// One page of what the device may see after its cursor.
    fn pull(&self, device: &Device, cursor: Cursor, limit: usize) -> Result<PullPage>;

    fn document(&self, doc: DocId) -> Result<Option<DocumentInfo>>;
    fn review(&self, review: &Review) -> Result<ReviewOutcome>;
    fn publish_form(&self, form: &PublishForm) -> Result<PublishOutcome>;
    fn conflicts(&self, project: Uuid) -> Result<Vec<FieldConflict>>;

    /// Whether a device may download a blob, and its media type if so: see
    /// [`crate::service::rules`] ("Blobs") for who may.
    fn blob_access(&self, device: &Device, sha256: &str) -> Result<Option<String>>;
    /// Whether this device has uploaded the complete blob.
    fn blob_held(&self, owner: UploadOwner, sha256: &str) -> Result<bool>;
    /// Records a verified, complete blob as uploaded by this device.
    fn record_blob(
        &self,
        device: &Device,
        sha256: &str,
        size: u64,
        media_type: &str,
        now_ms: i64,
    ) -> Result<()>;
    fn upload(&self, owner: UploadOwner, sha256: &str) -> Result<Option<UploadInfo>>;
    /// Starts (or restarts with another length) a device's upload.
    fn start_upload(
        &self,
        owner: UploadOwner,
        sha256: &str,
        length: u64,
        media_type: &str,
        now_ms: i64,
    ) -> Result<()>;
    fn end_upload(&self, owner: UploadOwner, sha256: &str) -> Result<()>;
    /// The bytes a device's other uploads in progress will take.
    fn upload_bytes_in_progress(&self, device: Uuid, except_sha256: &str) -> Result<u64>;
    /// Uploads started before `before_ms`, at most `limit` of them.
    fn stale_uploads(&self, before_ms: i64, limit: usize) -> Result<Vec<(UploadOwner, String)>>;
}
