//! The one error type that crosses the FFI. Core errors are detailed; this enum is small and
//! stable, and every conversion happens here. Messages name stores, documents and fields, never
//! answers (answers are personal data).

use tejido_core::form::{FormError, ImportErrors};
use tejido_core::sync::client::SyncError;
use tejido_core::StoreError;

/// Everything a Tejido call can fail with. Kotlin and Swift see one exception type with a case
/// per variant; Python sees `TejidoError.<Variant>`.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum TejidoError {
    /// There is no store at the path (and the call was not allowed to create one).
    #[error("{0}")]
    StoreMissing(String),
    /// The file is not a readable Tejido store: corrupt, not SQLite, or another app's database.
    #[error("{0}")]
    StoreCorrupt(String),
    /// The store is already open, in this app or in another process. A store has one owner:
    /// within an app, share the one `TejidoStore` handle instead of opening it again.
    #[error("{0}")]
    StoreLocked(String),
    /// The key does not open this encrypted store (or the store is not encrypted). Nothing
    /// was changed.
    #[error("{0}")]
    WrongKey(String),
    /// An attachment's file fails authentication or its hash (damaged, or tampered with); its
    /// bytes are never returned. Fetching it again from the server repairs it.
    #[error("{0}")]
    AttachmentDamaged(String),
    /// The store is encrypted (or is not a database at all) and was opened without a key: open
    /// it with `open_encrypted` and its key.
    #[error("{0}")]
    StoreEncrypted(String),
    /// The store was written by a newer version of Tejido.
    #[error("{0}")]
    StoreTooNew(String),
    /// A submission, repeat row, attachment or form that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A question the form does not have, or a field name that cannot name one.
    #[error("{0}")]
    UnknownQuestion(String),
    /// An answer of the wrong type for its question, or one a constraint refuses.
    #[error("{0}")]
    InvalidAnswer(String),
    /// An argument that is malformed: an id that is not one, a bad link.
    #[error("{0}")]
    InvalidInput(String),
    /// The call is not allowed in the current state (finalized, deleted, not enrolled...).
    #[error("{0}")]
    NotAllowed(String),
    /// A form that cannot be used: a broken spreadsheet (every problem is listed).
    #[error("{0}")]
    InvalidForm(String),
    /// Finalizing was refused because answers are missing or break constraints; the form
    /// session's `errors()` lists them.
    #[error("{0}")]
    Incomplete(String),
    /// The server could not be reached or failed; syncing again later may succeed.
    #[error("{0}")]
    Network(String),
    /// The server refused the device's token or the request; enrolling again may be needed.
    #[error("{0}")]
    Unauthorized(String),
    /// The server answered something this app cannot use (another protocol, a refusal).
    #[error("{0}")]
    Server(String),
    /// The sync was cancelled; everything done so far is kept and the next sync resumes.
    #[error("{0}")]
    Cancelled(String),
    /// The device's storage is full; the call changed nothing and can be retried once space
    /// is freed.
    #[error("{0}")]
    DiskFull(String),
    /// Reading or writing a file failed.
    #[error("{0}")]
    Io(String),
    /// Anything else: a bug or an unexpected database failure.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for TejidoError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::Missing(_) => TejidoError::StoreMissing(message),
            StoreError::Locked(_) => TejidoError::StoreLocked(message),
            StoreError::WrongKey(_) => TejidoError::WrongKey(message),
            StoreError::Encrypted(_) => TejidoError::StoreEncrypted(message),
            StoreError::Corrupt(_) | StoreError::NotATejidoStore(_) | StoreError::Damaged(_) => {
                TejidoError::StoreCorrupt(message)
            }
            StoreError::DiskFull => TejidoError::DiskFull(message),
            StoreError::StorageIo(_) => TejidoError::Io(message),
            StoreError::TooNew { .. } => TejidoError::StoreTooNew(message),
            StoreError::UnknownDocument(_)
            | StoreError::UnknownRow { .. }
            | StoreError::UnknownAttachment(_) => TejidoError::NotFound(message),
            StoreError::AttachmentDamaged(_) => TejidoError::AttachmentDamaged(message),
            StoreError::FieldPath(_) => TejidoError::UnknownQuestion(message),
            StoreError::NotASubmission(_)
            | StoreError::Deleted(_)
            | StoreError::AlreadyFinalized(_)
            | StoreError::NoConflict(_)
            | StoreError::NoAttachmentDir
            | StoreError::EncryptedAttachment(_)
            | StoreError::NotEncrypted
            | StoreError::CollectionMismatch { .. } => TejidoError::NotAllowed(message),
            StoreError::InvalidChange { .. }
            | StoreError::UnknownReviewState
            | StoreError::InvalidSetting(_) => TejidoError::InvalidInput(message),
            StoreError::Io { .. } => TejidoError::Io(message),
            StoreError::Sqlite(_) => TejidoError::Internal(message),
        }
    }
}

impl From<FormError> for TejidoError {
    fn from(e: FormError) -> Self {
        let message = e.to_string();
        match e {
            FormError::UnknownQuestion(_) | FormError::NotARepeat(_) => TejidoError::UnknownQuestion(message),
            FormError::WrongType { .. } | FormError::NotAChoice { .. } | FormError::ReadOnly(_) => {
                TejidoError::InvalidAnswer(message)
            }
            FormError::InRepeat { .. } => TejidoError::UnknownQuestion(message),
            FormError::UnknownRow { .. } | FormError::MissingMedia(_) => TejidoError::NotFound(message),
            FormError::WrongForm { .. } => TejidoError::NotAllowed(message),
            FormError::InvalidForm(_) => TejidoError::InvalidForm(message),
            FormError::Store(e) => e.into(),
        }
    }
}

impl From<ImportErrors> for TejidoError {
    fn from(e: ImportErrors) -> Self {
        TejidoError::InvalidForm(e.to_string())
    }
}

impl From<SyncError> for TejidoError {
    fn from(e: SyncError) -> Self {
        let message = e.to_string();
        match e {
            SyncError::Unauthorized | SyncError::Forbidden { .. } | SyncError::BadCode => {
                TejidoError::Unauthorized(message)
            }
            SyncError::Network { .. } => TejidoError::Network(message),
            SyncError::Server { .. } => TejidoError::Network(message),
            SyncError::ProtocolMismatch { .. } | SyncError::Protocol { .. } | SyncError::Rejected { .. } => {
                TejidoError::Server(message)
            }
            SyncError::NotEnrolled => TejidoError::NotAllowed(message),
            SyncError::InvalidLink(_) => TejidoError::InvalidInput(message),
            SyncError::Cancelled => TejidoError::Cancelled(message),
            SyncError::Store(e) => e.into(),
        }
    }
}
