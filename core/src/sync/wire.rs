//! The sync protocol's wire types, shared by the client and `tejido-server`.
//! See `docs/protocol.md` for the flow.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crdt::{Change, ReplicaId};

/// The protocol version this build speaks; sent in the [`PROTOCOL_HEADER`] of every request.
pub const PROTOCOL_VERSION: u32 = 1;
pub const PROTOCOL_HEADER: &str = "tejido-protocol";

/// Most changes one push may carry.
pub const MAX_PUSH_CHANGES: usize = 500;
/// Most bytes one (decompressed) request body may have.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Most bytes one attachment may have.
pub const MAX_BLOB_BYTES: u64 = 64 * 1024 * 1024;

/// What a device may do in a project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Enumerator,
    Youth,
    Coordinator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Enumerator => "enumerator",
            Role::Youth => "youth",
            Role::Coordinator => "coordinator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "enumerator" => Role::Enumerator,
            "youth" => Role::Youth,
            "coordinator" => Role::Coordinator,
            _ => return None,
        })
    }
}

/// `POST /v1/enroll`: trade a one-time enrollment code for a device token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub code: String,
    /// The device store's replica id; every change the device pushes must carry it.
    pub replica: ReplicaId,
    #[serde(default)]
    pub device_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub device_id: Uuid,
    /// The bearer token for every later request. Shown once; the server keeps only its hash.
    pub token: String,
    pub project_id: Uuid,
    pub project_name: String,
    pub role: Role,
}

/// `POST /v1/push`: a bounded batch of local changes, applied in one transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushRequest {
    pub changes: Vec<Change>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    /// Ops the server did not have.
    pub accepted_ops: u64,
    /// Ops it already had (a batch pushed twice).
    pub duplicate_ops: u64,
    /// The server's epoch: new when it was restored from a backup (see
    /// `Store::note_server_epoch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// `GET /v1/pull?cursor=…&limit=…`: one bounded page of changes after the cursor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PullResponse {
    pub changes: Vec<Change>,
    /// Pass back on the next pull; store it with the page.
    pub cursor: String,
    /// More pages wait.
    pub more: bool,
    /// The server's epoch, as in [`PushResponse`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// `HEAD /v1/blobs/{sha256}` answers how many bytes of an upload the server holds in the
/// `upload-offset` header; `PATCH` with `upload-offset` appends from there; the upload completes
/// when `upload-length` bytes arrived and their SHA-256 matches the name.
pub const UPLOAD_OFFSET_HEADER: &str = "upload-offset";
pub const UPLOAD_LENGTH_HEADER: &str = "upload-length";

/// Every error the server answers, as JSON with a 4xx or 5xx status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable machine-readable code: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `too_large`, `protocol_mismatch`, `hash_mismatch`, `conflict`, `internal`.
    pub error: String,
    /// What went wrong, for people. Never contains answers.
    pub message: String,
}

/// The setup link a phone opens (or scans as a QR code) to enroll:
/// `tejido://enroll?server=<url>&code=<code>`, both percent-encoded.
pub fn setup_link(server: &str, code: &str) -> String {
    format!("tejido://enroll?server={}&code={}", percent_encode(server), percent_encode(code))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
