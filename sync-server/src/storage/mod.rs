//! The server's storage: transactions of typed primitives (load a document, merge an op, append
//! to the log, read a page of the log or of a scope, the server's clock, upload records…).
//! SQL (and its dialect) lives only in the implementations: [`sqlite`] now, PostgreSQL later.
//! The rules that decide what to store are in [`crate::service`].

pub mod copy;
pub mod postgres;
pub mod postgres_blobs;
pub mod sqlite;
#[cfg(test)]
mod tests;

use serde::Serialize;
use tejido_core::sync::wire::Role;
use tejido_core::{Collection, DocId, Hlc, OpId, ReplicaId};
use uuid::Uuid;

use crate::service::enroll::{CodeState, ReplicaState};
use crate::service::rules::Scope;

pub use postgres::PostgresStorage;
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
    /// The version's media files, whose bytes are already in the blob store.
    pub media: Vec<MediaFile>,
    pub now_ms: u64,
}

/// A media file of a form version (`places.csv`), its bytes kept as a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaFile {
    pub name: String,
    pub sha256: String,
    pub size: u64,
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

/// A person who signs in to the web app (a coordinator or an admin of some projects).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: Uuid,
    /// Lowercased.
    pub email: String,
    #[serde(skip)]
    pub password_hash: String,
    pub created_ms: i64,
}

/// What a user may do in a project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    Coordinator,
    /// A coordinator who may also change the project's settings.
    Admin,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Coordinator => "coordinator",
            UserRole::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<UserRole> {
        match s {
            "coordinator" => Some(UserRole::Coordinator),
            "admin" => Some(UserRole::Admin),
            _ => None,
        }
    }
}

/// A user's membership of one project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub project: Uuid,
    pub role: UserRole,
}

/// A signed-in session; the token is kept only as its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub token_hash: [u8; 32],
    pub user: Uuid,
    /// The token every form of this session carries.
    pub csrf: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// The review state of a submission nobody has reviewed yet.
pub const PENDING_REVIEW: &str = "pending";

/// The read model's row of one submission: its current state.
#[derive(Clone, Debug, PartialEq)]
pub struct SubmissionState {
    pub doc: Uuid,
    pub project: Uuid,
    pub form_id: String,
    pub form_version: String,
    pub author_device: Option<Uuid>,
    /// `approved`, `has_issues` or [`PENDING_REVIEW`].
    pub review_state: String,
    pub finalized: bool,
    pub deleted: bool,
    /// Fields with open conflicts.
    pub conflicts: u32,
    /// Quality flags ([`crate::service::read_model::Flag`] bits).
    pub flags: u32,
    /// From the form's `start` to its `end`, when it has both.
    pub duration_s: Option<i64>,
    /// When the server first got it.
    pub received_ms: i64,
    pub updated_ms: i64,
    /// Every answer's winning value by field path (metadata fields left out), as a JSON object.
    pub answers: String,
}

/// Which submissions a list shows, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubmissionFilter {
    pub project: Uuid,
    pub form_id: Option<String>,
    pub review_state: Option<String>,
    pub author_device: Option<Uuid>,
    /// Received at or after.
    pub from_ms: Option<i64>,
    /// Received before.
    pub to_ms: Option<i64>,
    /// Rows with every one of these flag bits.
    pub flags: u32,
    /// An answer (field path) with this value (its JSON text, or a string's text).
    pub answer: Option<(String, String)>,
    /// Leave out deleted submissions.
    pub hide_deleted: bool,
    /// Keyset: rows after (older than) this (received_ms, doc).
    pub after: Option<(i64, Uuid)>,
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
    /// The database could not take the transaction now (a deadlock, a lock timeout); the
    /// caller may try again.
    #[error("busy: {0}")]
    Busy(String),
    /// The database failed (its message, never the values of a statement).
    #[error("database error: {0}")]
    Database(String),
    #[error("storage error: {0}")]
    Other(String),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Whether a transaction may write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Read,
    /// Writers are serialized (or conflict-checked) by the backend.
    Write,
    /// A push: where the backend lets writers run at once, it runs beside other pushes and
    /// holds only the documents it names with [`Tx::lock_documents`] (taken before it reads
    /// them); log positions are still handed out in commit order, and every other writer waits
    /// for the pushes in flight. Elsewhere the same as [`Mode::Write`].
    Push,
}

/// A new device, as the service decided to enroll it.
#[derive(Clone, Debug)]
pub struct NewDevice {
    pub id: Uuid,
    pub project: Uuid,
    pub role: Role,
    pub replica: ReplicaId,
    pub name: Option<String>,
    pub token_hash: [u8; 32],
    pub code_hash: [u8; 32],
    pub created_ms: i64,
}

/// A document the server starts to keep.
#[derive(Clone, Debug)]
pub struct NewDocument {
    pub doc: Uuid,
    pub project: Uuid,
    pub collection: Collection,
    pub author: Option<Uuid>,
    pub parent: Option<Uuid>,
    /// For forms: the roles they are published to.
    pub audience: Vec<Role>,
}

/// A row of `documents` that a transaction created and holds back until its first change has
/// grown it, so it is written once with its sizes (both backends).
pub(crate) struct DocumentRow {
    pub doc: Uuid,
    pub project: Uuid,
    pub collection: &'static str,
    pub author: Option<Uuid>,
    pub parent: Option<Uuid>,
    /// For forms: `,role,role,`, so a role is found as `,role,` in it.
    pub audience: Option<String>,
    pub ops: i64,
    pub bytes: i64,
}

impl DocumentRow {
    /// The row of a document not yet grown.
    pub fn of(d: &NewDocument) -> DocumentRow {
        let audience = (d.collection == Collection::Form).then(|| {
            let mut a = String::from(",");
            for r in &d.audience {
                a.push_str(r.as_str());
                a.push(',');
            }
            a
        });
        DocumentRow {
            doc: d.doc,
            project: d.project,
            collection: d.collection.as_str(),
            author: d.author,
            parent: d.parent,
            audience,
            ops: 0,
            bytes: 0,
        }
    }

    /// Adds to its sizes; returns them as [`Tx::grow_document`] does.
    pub fn grow(&mut self, ops: u64, bytes: u64) -> (u64, u64) {
        self.ops = self.ops.saturating_add(ops as i64);
        self.bytes = self.bytes.saturating_add(bytes as i64);
        (self.ops.max(0) as u64, self.bytes.max(0) as u64)
    }
}

/// One op of a field's history as stored: a value, or a placeholder for an op that another op
/// saw before the server got it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredOp {
    pub field: String,
    pub id: OpId,
    /// The value's JSON text, if known.
    pub value: Option<String>,
    /// Not yet replaced by an op that saw it.
    pub leaf: bool,
}

/// A change as the log keeps it.
#[derive(Clone, Debug)]
pub struct LogEntry<'a> {
    pub project: Uuid,
    pub doc: Uuid,
    pub hlc: Hlc,
    pub replica: ReplicaId,
    /// The device that pushed it; none for the server's own changes.
    pub device: Option<Uuid>,
    /// The change's wire JSON.
    pub body: &'a str,
    pub received_ms: i64,
}

/// A complete blob a device uploaded.
#[derive(Clone, Debug)]
pub struct BlobOwner<'a> {
    pub sha256: &'a str,
    pub project: Uuid,
    pub device: Uuid,
    pub size: u64,
    pub media_type: &'a str,
    pub created_ms: i64,
}

/// A published form version's record.
#[derive(Clone, Debug)]
pub struct FormRecord {
    pub content_hash: String,
    pub doc: Uuid,
}

/// What the server keeps, apart from blob bytes: a source of transactions. Implementations
/// are safe to share between tasks.
///
/// Storage stores: it holds no rule. Every decision (who may write what, clock bounds, size
/// limits, who may read a blob, which codes still work) is made by [`crate::service`], which
/// drives these primitives inside one transaction per operation.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Starts a transaction. Dropping it without [`Tx::commit`] rolls it back.
    async fn begin(&self, mode: Mode) -> Result<Box<dyn Tx>>;
    /// Whether two [`Mode::Push`] transactions naming different documents run at once (each
    /// then holds only the documents it names), rather than taking turns on one writer.
    fn concurrent_pushes(&self) -> bool {
        false
    }
}

/// The primitives of one transaction. Each reads or writes rows and nothing else.
/// One op of a change, for [`Tx::merge_ops`].
#[derive(Clone, Copy, Debug)]
pub struct MergeOp<'a> {
    pub field: &'a str,
    /// The value's JSON text.
    pub value: &'a str,
    pub seen: &'a [OpId],
}

#[async_trait::async_trait]
pub trait Tx: Send {
    async fn commit(self: Box<Self>) -> Result<()>;

    // The server itself.
    /// The server's replica id, which stamps reviews, comments' authors and published forms.
    async fn server_replica(&mut self) -> Result<ReplicaId>;
    async fn set_server_replica(&mut self, replica: ReplicaId) -> Result<()>;
    /// The last stamp the server issued.
    async fn clock(&mut self) -> Result<Hlc>;
    async fn set_clock(&mut self, hlc: Hlc) -> Result<()>;
    /// A value of the server's own settings (`meta`), by key.
    async fn meta_value(&mut self, key: &str) -> Result<Option<String>>;
    async fn set_meta_value(&mut self, key: &str, value: &str) -> Result<()>;
    /// The server's epoch: new after a restore from a backup.
    async fn epoch(&mut self) -> Result<String>;
    async fn set_epoch(&mut self, epoch: &str) -> Result<()>;

    // Projects.
    async fn insert_project(&mut self, project: &Project) -> Result<()>;
    async fn project(&mut self, id: Uuid) -> Result<Option<Project>>;
    async fn project_by_name(&mut self, name: &str) -> Result<Option<Project>>;
    /// Every project, by name.
    async fn projects(&mut self) -> Result<Vec<Project>>;

    // Enrollment codes and devices.
    async fn insert_code(&mut self, code: &NewEnrollmentCode) -> Result<()>;
    /// A code's project, role and state.
    async fn code(&mut self, code_hash: &[u8; 32]) -> Result<Option<(Uuid, Role, CodeState)>>;
    /// Takes one use off a code.
    async fn use_code(&mut self, code_hash: &[u8; 32]) -> Result<()>;
    /// Whether a replica is enrolled in an unrevoked device, and when it was last revoked.
    async fn replica_state(&mut self, replica: ReplicaId) -> Result<ReplicaState>;
    async fn insert_device(&mut self, device: &NewDevice) -> Result<()>;
    async fn device(&mut self, id: Uuid) -> Result<Option<Device>>;
    async fn device_by_token(&mut self, token_hash: &[u8; 32]) -> Result<Option<Device>>;
    /// A project's devices, oldest first.
    async fn devices(&mut self, project: Uuid) -> Result<Vec<Device>>;
    /// Marks a device revoked; false when it already was.
    async fn revoke_device(&mut self, id: Uuid, now_ms: i64) -> Result<bool>;
    async fn flag_far_future(&mut self, id: Uuid, now_ms: i64) -> Result<()>;

    // Documents and their fields.
    async fn document(&mut self, doc: Uuid) -> Result<Option<DocumentInfo>>;
    async fn insert_document(&mut self, doc: &NewDocument) -> Result<()>;
    /// In a [`Mode::Push`] transaction, holds these documents until it ends (another push
    /// naming one of them waits). Where writers take turns, they are held already.
    async fn lock_documents(&mut self, _docs: &[Uuid]) -> Result<()> {
        Ok(())
    }
    /// Looks up many documents at once, for [`Tx::document`] to answer from (a push names up to
    /// a few hundred); a backend whose lookups are cheap does nothing.
    async fn prefetch_documents(&mut self, _docs: &[Uuid]) -> Result<()> {
        Ok(())
    }
    /// The op ids of a field's known values (leaves or not).
    async fn known_op_ids(&mut self, doc: Uuid, field: &str) -> Result<Vec<OpId>>;
    /// The op ids of a field's open values.
    async fn open_op_ids(&mut self, doc: Uuid, field: &str) -> Result<Vec<OpId>>;
    /// The greatest stamp in a document at or below `at_most`.
    async fn max_stamp(&mut self, doc: Uuid, at_most: Hlc) -> Result<Option<Hlc>>;
    /// Merges the ops of one change (one document, one op id), as [`Tx::merge_op`] does each
    /// in turn: for each op, true if it was new. A backend may do it in fewer round trips.
    async fn merge_ops(&mut self, doc: Uuid, id: OpId, ops: &[MergeOp<'_>]) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(self.merge_op(doc, op.field, id, op.value, op.seen).await?);
        }
        Ok(out)
    }
    /// Merges one op into a field's history with the device store's rules (insert it, or fill
    /// the placeholder an op that saw it left, then retire what it saw): true if it was new.
    async fn merge_op(
        &mut self,
        doc: Uuid,
        field: &str,
        id: OpId,
        value: &str,
        seen: &[OpId],
    ) -> Result<bool>;
    /// Adds to a document's size; returns its new (values, bytes).
    async fn grow_document(&mut self, doc: Uuid, ops: u64, bytes: u64) -> Result<(u64, u64)>;
    /// Every op of a document's fields, by field, then greatest op first.
    async fn field_ops(&mut self, doc: Uuid) -> Result<Vec<StoredOp>>;
    /// The open values of every field of a project, by document, field, greatest op first.
    async fn open_values(&mut self, project: Uuid) -> Result<Vec<(DocId, String, OpId)>>;

    // The log.
    async fn append_log(&mut self, entry: &LogEntry<'_>) -> Result<()>;
    /// The last sequence number of the log.
    async fn log_end(&mut self) -> Result<i64>;
    /// Log entries in scope after `after`, in order: at most `limit` of them, and no more
    /// bytes than `max_bytes` unless the first alone is larger. Returns the entries and whether
    /// the page stopped early (more entries in scope may follow).
    async fn log_page(
        &mut self,
        scope: &Scope,
        after: i64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<(i64, String)>, bool)>;
    /// Documents in scope, by id, after `after` (or from it, when `inclusive`).
    async fn scope_documents(
        &mut self,
        scope: &Scope,
        after: Uuid,
        inclusive: bool,
        limit: usize,
    ) -> Result<Vec<(Uuid, Collection)>>;

    // Forms.
    async fn form(&mut self, project: Uuid, form_id: &str, version: &str) -> Result<Option<FormRecord>>;
    async fn insert_form(
        &mut self,
        project: Uuid,
        form_id: &str,
        version: &str,
        record: &FormRecord,
        now_ms: i64,
    ) -> Result<()>;

    /// A project's published form versions (form id, version), by form id then newest first.
    async fn form_versions(&mut self, project: Uuid) -> Result<Vec<(String, String)>>;

    // Blobs.
    /// A blob's media type, if any device of the project uploaded it.
    async fn blob_media_type(&mut self, project: Uuid, sha256: &str) -> Result<Option<String>>;
    /// Whether this device (any device, for `None`) of the project uploaded the blob.
    async fn blob_uploaded(&mut self, project: Uuid, device: Option<Uuid>, sha256: &str) -> Result<bool>;
    async fn insert_blob_owner(&mut self, owner: &BlobOwner<'_>) -> Result<()>;
    /// Records that a document refers to a blob (a reference that lets readers download it).
    async fn insert_blob_ref(&mut self, sha256: &str, doc: Uuid) -> Result<()>;
    /// Whether a document in scope holds a recorded reference to the blob.
    async fn blob_referenced(&mut self, scope: &Scope, sha256: &str) -> Result<bool>;

    // Uploads in progress.
    async fn upload(&mut self, owner: UploadOwner, sha256: &str) -> Result<Option<UploadInfo>>;
    /// Records (or restarts) an upload.
    async fn put_upload(
        &mut self,
        owner: UploadOwner,
        sha256: &str,
        info: &UploadInfo,
        started_ms: i64,
    ) -> Result<()>;
    async fn delete_upload(&mut self, owner: UploadOwner, sha256: &str) -> Result<()>;
    /// Takes the lease on an upload for `holder` until `until_ms`, unless another holder's
    /// lease is still running at `now_ms`: true if taken.
    async fn take_upload_lease(
        &mut self,
        owner: UploadOwner,
        sha256: &str,
        holder: Uuid,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool>;
    /// Gives up `holder`'s lease (if it still holds it).
    async fn release_upload_lease(&mut self, owner: UploadOwner, sha256: &str, holder: Uuid) -> Result<()>;
    /// Whether some holder's lease on an upload is still running at `now_ms`.
    async fn upload_lease_held(&mut self, owner: UploadOwner, sha256: &str, now_ms: i64) -> Result<bool>;
    /// The bytes a device's uploads other than `except_sha256` will take.
    async fn upload_bytes(&mut self, device: Uuid, except_sha256: &str) -> Result<u64>;
    /// Uploads started before `before_ms`, oldest first, at most `limit`.
    async fn uploads_started_before(
        &mut self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<(UploadOwner, String)>>;
    // Project settings.
    async fn project_setting(&mut self, project: Uuid, key: &str) -> Result<Option<String>>;
    /// Sets (or with `None` removes) a project's setting.
    async fn set_project_setting(&mut self, project: Uuid, key: &str, value: Option<&str>) -> Result<()>;

    // Users of the web app, their sessions and failed logins.
    async fn insert_user(&mut self, user: &User) -> Result<()>;
    async fn user(&mut self, id: Uuid) -> Result<Option<User>>;
    async fn user_by_email(&mut self, email: &str) -> Result<Option<User>>;
    /// Every user, by email.
    async fn users(&mut self) -> Result<Vec<User>>;
    /// Removes a user with their memberships and sessions; false when there was none.
    async fn delete_user(&mut self, id: Uuid) -> Result<bool>;
    async fn set_password_hash(&mut self, id: Uuid, hash: &str) -> Result<()>;
    /// Adds or changes a user's role in a project.
    async fn put_membership(&mut self, user: Uuid, membership: &Membership) -> Result<()>;
    async fn memberships(&mut self, user: Uuid) -> Result<Vec<Membership>>;
    async fn insert_session(&mut self, session: &Session) -> Result<()>;
    async fn session(&mut self, token_hash: &[u8; 32]) -> Result<Option<Session>>;
    async fn delete_session(&mut self, token_hash: &[u8; 32]) -> Result<()>;
    async fn delete_user_sessions(&mut self, user: Uuid) -> Result<()>;
    /// Sessions that expired before `now_ms` are removed; returns how many.
    async fn delete_expired_sessions(&mut self, now_ms: i64) -> Result<u64>;
    /// Failed logins in a row for a key, and when the last was.
    async fn login_failures(&mut self, key: &str) -> Result<Option<(u32, i64)>>;
    async fn set_login_failures(&mut self, key: &str, failures: u32, last_ms: i64) -> Result<()>;
    async fn clear_login_failures(&mut self, key: &str) -> Result<()>;
    /// Forgets failure counts whose last failure was before `before_ms`; returns how many.
    async fn forget_login_failures(&mut self, before_ms: i64) -> Result<u64>;

    // The read model of submissions.
    async fn put_submission_state(&mut self, row: &SubmissionState) -> Result<()>;
    async fn submission_state(&mut self, doc: Uuid) -> Result<Option<SubmissionState>>;
    /// A page of the filter's rows, newest first, at most `limit`.
    async fn submission_states(
        &mut self,
        filter: &SubmissionFilter,
        limit: usize,
    ) -> Result<Vec<SubmissionState>>;
    /// The interview durations of a form's latest submissions, at most `limit`.
    async fn form_durations(&mut self, project: Uuid, form_id: &str, limit: usize) -> Result<Vec<i64>>;
    /// The comments (documents whose parent is `doc`), oldest first.
    async fn child_documents(&mut self, parent: Uuid) -> Result<Vec<Uuid>>;
    /// Every submission of a project, by id, after `after`, at most `limit` (to rebuild the
    /// read model).
    async fn submission_docs(&mut self, after: Uuid, limit: usize)
        -> Result<Vec<(Uuid, Uuid, Option<Uuid>)>>;
    /// When the log first holds a change of the document.
    async fn first_received(&mut self, doc: Uuid) -> Result<Option<i64>>;
}
