//! The bounds every document, page and upload is held to. Each one past which a request is
//! refused gets a clear 4xx naming the bound.

/// Most ops (values ever written, history included) one document may hold on the server.
pub const MAX_DOC_OPS: u64 = 20_000;
/// Most bytes (its changes as wire JSON, history included) one document may hold. A document
/// can never outgrow a pull page, so a page that holds one change alone is still bounded.
pub const MAX_DOC_BYTES: u64 = 2 * 1024 * 1024;
/// A pull page stops before a change that would take it past this many bytes (a first change
/// always fits, since no document exceeds [`MAX_DOC_BYTES`]).
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// How long an unfinished blob upload is kept.
pub const UPLOAD_EXPIRY_MS: i64 = 24 * 60 * 60 * 1000;
/// Most bytes one device may have in uploads in progress at once.
pub const UPLOAD_QUOTA_BYTES: u64 = 256 * 1024 * 1024;
/// How long a HEAD or PATCH of an upload waits for another request's lease on it to end (the
/// request a cut connection left behind is usually still storing its last bytes) before it
/// answers; a client that asked too early would send its body only to be refused.
pub const UPLOAD_LEASE_WAIT_MS: u64 = 3_000;
/// Coordinator enrollment codes expire after this long unless made with `--expires never`.
pub const COORDINATOR_CODE_EXPIRY_MS: i64 = 24 * 60 * 60 * 1000;

const _: () = assert!(MAX_DOC_BYTES as usize * 2 <= MAX_PAGE_BYTES);
/// Most bytes of a review comment.
pub const MAX_COMMENT_BYTES: usize = 10_000;
/// Most uses one enrollment code may be made for.
pub const MAX_CODE_USES: u32 = 100_000;
/// Longest device name, in characters.
pub const MAX_DEVICE_NAME_CHARS: usize = 200;

/// Most exports one server process streams at once; another is refused with "busy" (each holds
/// a database connection and a writer thread for as long as the download lasts).
pub const MAX_CONCURRENT_EXPORTS: usize = 4;

/// Most pushes one server process parses and applies at once; more wait their turn with their
/// body received but not parsed. Pushes write one at a time anyway (one writer), so more at
/// once would only hold more parsed batches in memory: 200 phones pushing together held 200.
pub const MAX_CONCURRENT_PUSHES: usize = 8;

/// The most media files (choice lists, lookup tables) one form version carries.
pub const MAX_FORM_MEDIA_FILES: usize = 64;

/// The largest answer a coordinator writes from the web app.
pub const MAX_EDIT_BYTES: usize = 16 * 1024;
