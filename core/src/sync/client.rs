//! The HTTP sync client: one [`SyncClient::sync`] that uploads pending attachments (resumably),
//! pushes the outbox in bounded batches, pulls pages until caught up and fetches the attachments
//! pulled changes refer to. Every step commits to the store before the next starts, so a sync
//! that is cancelled, cut off or killed at any point resumes where it stopped when called again,
//! and nothing is lost or sent twice (pushes are idempotent on the server).
//!
//! Errors name endpoints, statuses and server error codes; they never contain answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::wire::{
    EnrollRequest, EnrollResponse, ErrorBody, PullResponse, PushRequest, PushResponse, Role, MAX_BLOB_BYTES,
    MAX_BODY_BYTES, MAX_PUSH_CHANGES, PROTOCOL_HEADER, PROTOCOL_VERSION, UPLOAD_LENGTH_HEADER,
    UPLOAD_OFFSET_HEADER,
};
use crate::crdt::{Change, Hlc, ReplicaId};
use crate::store::{parse_attachment_ref, AttachmentInfo, Store, StoreError};

/// Keys of the store's sync state that hold the enrollment.
pub mod state_keys {
    pub const SERVER_URL: &str = "server_url";
    pub const DEVICE_TOKEN: &str = "device_token";
    pub const DEVICE_ID: &str = "device_id";
    pub const PROJECT_ID: &str = "project_id";
    pub const PROJECT_NAME: &str = "project_name";
    pub const ROLE: &str = "role";
    /// Attachments that pulled changes refer to and this store does not hold yet (JSON array).
    pub const WANTED_BLOBS: &str = "wanted_blobs";
}

/// The header naming an attachment's media type on upload and download.
pub const MEDIA_TYPE_HEADER: &str = "upload-media-type";

/// What can go wrong in a sync. Never contains answers.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The token is unknown or has been revoked (HTTP 401): enroll again.
    #[error("the server refused this device's token (unknown or revoked); enroll the device again")]
    Unauthorized,
    /// The server refused an enrollment code (HTTP 401 `bad_code`).
    #[error("this enrollment code is unknown, used up or expired")]
    BadCode,
    /// The token is valid but may not do this (HTTP 403).
    #[error("the server forbids this: {message}")]
    Forbidden { message: String },
    /// The server speaks another protocol version.
    #[error("the server speaks another sync protocol (this app speaks version {client}): {message}")]
    ProtocolMismatch { client: u32, message: String },
    /// The server's answer does not follow the protocol.
    #[error("the server's answer to {endpoint} does not follow the protocol: {detail}")]
    Protocol { endpoint: String, detail: String },
    /// The server could not be reached, or the connection broke, after every retry.
    #[error("network error talking to {endpoint} after {attempts} attempts: {detail}")]
    Network { endpoint: String, attempts: u32, detail: String },
    /// The server failed (5xx) after every retry.
    #[error("the server failed on {endpoint} (HTTP {status}, {code}) after {attempts} attempts: {message}")]
    Server { endpoint: String, status: u16, code: String, message: String, attempts: u32 },
    /// The server refused the request (4xx other than 401/403).
    #[error("the server refused {endpoint} (HTTP {status}, {code}): {message}")]
    Rejected { endpoint: String, status: u16, code: String, message: String },
    /// The store is not enrolled with a server.
    #[error("this device is not enrolled with a server")]
    NotEnrolled,
    /// A setup link or server address that cannot be used.
    #[error("invalid setup link or server address: {0}")]
    InvalidLink(String),
    /// The sync was cancelled; everything done so far is committed.
    #[error("the sync was cancelled")]
    Cancelled,
    #[error("store error: {0}")]
    Store(#[from] StoreError),
}

impl SyncError {
    /// Whether calling sync again later may succeed without anyone doing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, SyncError::Network { .. } | SyncError::Server { .. } | SyncError::Cancelled)
    }
}

/// A cancellation signal shared between the caller and a running sync.
#[derive(Clone, Default, Debug)]
pub struct CancelToken(Arc<CancelInner>);

#[derive(Default, Debug)]
struct CancelInner {
    cancelled: AtomicBool,
    notify: tokio::sync::Notify,
}

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Stops the sync at the next point where it can: between steps, or by abandoning the
    /// request in flight (whatever it did on the server is idempotent and is redone next time).
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Resolves once [`cancel`](Self::cancel) has been called.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Which step a sync is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPhase {
    UploadingAttachments,
    Pushing,
    Pulling,
    DownloadingAttachments,
    Done,
}

/// A progress report: items of the current phase done (and expected, when known), and bytes
/// moved so far in this sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub phase: SyncPhase,
    pub items_done: u64,
    pub items_total: Option<u64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// Receives progress reports; called from the task running the sync, so keep it quick.
pub trait SyncProgress: Sync {
    fn progress(&self, progress: &Progress);
}

/// No progress reports.
impl SyncProgress for () {
    fn progress(&self, _: &Progress) {}
}

impl<F: Fn(&Progress) + Sync> SyncProgress for F {
    fn progress(&self, progress: &Progress) {
        self(progress)
    }
}

/// What one sync did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncReport {
    pub attachments_uploaded: u64,
    /// Attachment bytes sent (a resumed upload counts only what it sent this time).
    pub attachment_bytes_uploaded: u64,
    pub changes_pushed: u64,
    pub push_batches: u64,
    /// Ops the server did not have.
    pub ops_accepted: u64,
    /// Ops the server already had (a batch whose acknowledgement was lost, pushed again).
    pub ops_duplicate: u64,
    pub pull_pages: u64,
    pub changes_pulled: u64,
    /// Pulled ops this store did not have.
    pub ops_new: u64,
    /// Pulled ops this store already had (its own, echoed back, or a page pulled again).
    pub ops_known: u64,
    pub attachments_downloaded: u64,
    /// Request and response body bytes, as they went over the wire (compressed).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Requests repeated after a network error or a server failure.
    pub retries: u64,
    /// Writers whose clocks run far ahead, seen in pulled changes.
    pub far_future: Vec<(ReplicaId, Hlc)>,
    /// Local changes the server refused (outside this device's scope, or invalid). They stay
    /// in the outbox; everything else was pushed past them. Show them for review.
    pub refused: Vec<RefusedChange>,
    /// The server answered with a new epoch (it was restored from a backup): this sync sent the
    /// device's whole history and attachments again, and pulled from the start.
    pub server_restored: bool,
}

/// A local change the server refused, and why (the server's message names no answers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedChange {
    pub doc: crate::crdt::DocId,
    pub reason: String,
}

/// Tuning for a [`SyncClient`].
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Most changes per push (the server accepts at most [`MAX_PUSH_CHANGES`]).
    pub push_batch_changes: usize,
    /// Most (uncompressed) bytes per push body.
    pub push_batch_bytes: usize,
    /// Most changes per pulled page.
    pub pull_limit: usize,
    /// Most bytes per attachment upload request; a cut upload resumes from the server's offset.
    pub upload_chunk_bytes: usize,
    /// Gzip request bodies (the server accepts gzip and zstd).
    pub compress_requests: bool,
    /// Fetch attachments that pulled changes refer to.
    pub download_attachments: bool,
    /// Attempts per request before giving up (network errors, 5xx, 429).
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
    /// How long a request may wait for the next bytes before it counts as cut.
    pub read_timeout: Duration,
    /// Reuse connections between requests (off: a new connection for every request, for
    /// networks whose middleboxes break idle connections).
    pub keep_alive: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            push_batch_changes: 200,
            push_batch_bytes: 2 * 1024 * 1024,
            pull_limit: 500,
            upload_chunk_bytes: 1024 * 1024,
            compress_requests: true,
            download_attachments: true,
            max_attempts: 8,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            keep_alive: true,
        }
    }
}

/// A parsed setup link: which server, which enrollment code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupLink {
    pub server_url: String,
    pub code: String,
}

/// Parses the link an enrollment prints and shows as a QR code:
/// `tejido://enroll?server=<url>&code=<code>`. An `http(s)://host/…/enroll?code=…` link without
/// a `server` parameter names its own origin as the server.
pub fn parse_setup_link(link: &str) -> Result<SetupLink, SyncError> {
    let url = reqwest::Url::parse(link.trim())
        .map_err(|_| SyncError::InvalidLink("the setup link is not a URL".into()))?;
    let mut server = None;
    let mut code = None;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "server" => server = Some(v.into_owned()),
            "code" => code = Some(v.into_owned()),
            _ => {}
        }
    }
    let code = code
        .filter(|c| !c.is_empty())
        .ok_or_else(|| SyncError::InvalidLink("the setup link has no enrollment code".into()))?;
    let server = match (url.scheme(), server) {
        (_, Some(s)) => s,
        ("http" | "https", None) => url.origin().ascii_serialization(),
        _ => return Err(SyncError::InvalidLink("the setup link does not name a server".into())),
    };
    let server_url = normalize_server_url(&server)?;
    Ok(SetupLink { server_url, code })
}

fn normalize_server_url(server: &str) -> Result<String, SyncError> {
    let url = reqwest::Url::parse(server.trim())
        .map_err(|_| SyncError::InvalidLink("the server address is not a URL".into()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(SyncError::InvalidLink("the server address must be an http or https URL".into()));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Trades an enrollment code for a device token, sending the store's replica id, and keeps the
/// server address and token in the store's sync state so [`SyncClient::from_store`] can sync
/// later.
pub async fn enroll(
    server_url: &str,
    code: &str,
    store: &Store,
    device_name: Option<&str>,
) -> Result<EnrollResponse, SyncError> {
    let server = normalize_server_url(server_url)?;
    let client = SyncClient::new(&server, "")?;
    let body = EnrollRequest {
        code: code.to_owned(),
        replica: store.replica_id(),
        device_name: device_name.map(str::to_owned),
    };
    let cancel = CancelToken::new();
    let mut report = SyncReport::default();
    // An enrollment code is single-use: a retry after a lost answer could find it spent, so
    // only connection failures before anything was sent are retried (reqwest does that).
    let resp: EnrollResponse =
        client.call_json(Method::POST, "/v1/enroll", Some(&body), false, &cancel, &mut report, 1).await?;
    store.set_sync_state(state_keys::SERVER_URL, &server)?;
    store.set_sync_state(state_keys::DEVICE_TOKEN, &resp.token)?;
    store.set_sync_state(state_keys::DEVICE_ID, &resp.device_id.to_string())?;
    store.set_sync_state(state_keys::PROJECT_ID, &resp.project_id.to_string())?;
    store.set_sync_state(state_keys::PROJECT_NAME, &resp.project_name)?;
    store.set_sync_state(state_keys::ROLE, resp.role.as_str())?;
    Ok(resp)
}

/// Enrolls with a setup link (see [`parse_setup_link`]).
pub async fn enroll_with_link(
    link: &str,
    store: &Store,
    device_name: Option<&str>,
) -> Result<EnrollResponse, SyncError> {
    let link = parse_setup_link(link)?;
    enroll(&link.server_url, &link.code, store, device_name).await
}

/// The enrollment a store holds, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrollment {
    pub server_url: String,
    pub device_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    pub role: Option<Role>,
}

/// Reads the enrollment (without the token) a store holds.
pub fn enrollment(store: &Store) -> Result<Option<Enrollment>, SyncError> {
    let Some(server_url) = store.sync_state(state_keys::SERVER_URL)? else { return Ok(None) };
    let uuid = |k| -> Result<Option<Uuid>, SyncError> {
        Ok(store.sync_state(k)?.and_then(|s| Uuid::parse_str(&s).ok()))
    };
    Ok(Some(Enrollment {
        server_url,
        device_id: uuid(state_keys::DEVICE_ID)?,
        project_id: uuid(state_keys::PROJECT_ID)?,
        role: store.sync_state(state_keys::ROLE)?.as_deref().and_then(Role::parse),
    }))
}

/// Talks to one sync server as one enrolled device.
pub struct SyncClient {
    http: reqwest::Client,
    server: String,
    token: String,
    options: SyncOptions,
    /// One sync at a time per client.
    running: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncClient").field("server", &self.server).finish_non_exhaustive()
    }
}

impl SyncClient {
    /// A client for `server_url` with a device token, with default options.
    pub fn new(server_url: &str, token: &str) -> Result<SyncClient, SyncError> {
        SyncClient::with_options(server_url, token, SyncOptions::default())
    }

    pub fn with_options(
        server_url: &str,
        token: &str,
        options: SyncOptions,
    ) -> Result<SyncClient, SyncError> {
        let server = normalize_server_url(server_url)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout);
        if !options.keep_alive {
            builder = builder.pool_max_idle_per_host(0);
        }
        let http = builder
            .build()
            .map_err(|e| SyncError::InvalidLink(format!("cannot build an HTTP client: {e}")))?;
        Ok(SyncClient {
            http,
            server,
            token: token.to_owned(),
            options,
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// The client for the server and token a store was enrolled with.
    pub fn from_store(store: &Store) -> Result<SyncClient, SyncError> {
        SyncClient::from_store_with_options(store, SyncOptions::default())
    }

    pub fn from_store_with_options(store: &Store, options: SyncOptions) -> Result<SyncClient, SyncError> {
        let server = store.sync_state(state_keys::SERVER_URL)?.ok_or(SyncError::NotEnrolled)?;
        let token = store.sync_state(state_keys::DEVICE_TOKEN)?.ok_or(SyncError::NotEnrolled)?;
        SyncClient::with_options(&server, &token, options)
    }

    pub fn server_url(&self) -> &str {
        &self.server
    }

    pub fn options(&self) -> &SyncOptions {
        &self.options
    }

    /// Uploads pending attachments, pushes every pending change, pulls until caught up and
    /// downloads the attachments pulled changes refer to. Safe to call again at any point.
    pub async fn sync(
        &self,
        store: &Store,
        progress: &dyn SyncProgress,
        cancel: &CancelToken,
    ) -> Result<SyncReport, SyncError> {
        let _one_at_a_time = self.running.lock().await;
        let mut report = SyncReport::default();
        self.upload_attachments(store, progress, cancel, &mut report).await?;
        self.push(store, progress, cancel, &mut report).await?;
        self.pull(store, progress, cancel, &mut report).await?;
        if report.server_restored && (store.pending_count()? > 0 || !store.pending_attachments()?.is_empty())
        {
            // A restored server: what it lost goes again (attachments before the changes that
            // name them), then the pull catches up.
            self.upload_attachments(store, progress, cancel, &mut report).await?;
            self.push(store, progress, cancel, &mut report).await?;
            self.pull(store, progress, cancel, &mut report).await?;
        }
        if self.options.download_attachments {
            self.download_attachments(store, progress, cancel, &mut report).await?;
        }
        progress.progress(&Progress {
            phase: SyncPhase::Done,
            items_done: 0,
            items_total: None,
            bytes_sent: report.bytes_sent,
            bytes_received: report.bytes_received,
        });
        Ok(report)
    }

    /// Uploads every attachment not yet on the server, each resumably: HEAD learns how much
    /// the server holds, PATCH sends the rest in chunks.
    pub async fn upload_attachments(
        &self,
        store: &Store,
        progress: &dyn SyncProgress,
        cancel: &CancelToken,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let pending = store.pending_attachments()?;
        let total = pending.len() as u64;
        for (i, info) in pending.iter().enumerate() {
            check(cancel)?;
            report_progress(progress, SyncPhase::UploadingAttachments, i as u64, Some(total), report);
            self.upload_one(store, info, progress, cancel, report).await?;
            store.mark_attachment_uploaded(&info.sha256)?;
            report.attachments_uploaded += 1;
        }
        if total > 0 {
            report_progress(progress, SyncPhase::UploadingAttachments, total, Some(total), report);
        }
        Ok(())
    }

    async fn upload_one(
        &self,
        store: &Store,
        info: &AttachmentInfo,
        progress: &dyn SyncProgress,
        cancel: &CancelToken,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        // Read through the store (an encrypted store's files are sealed), one upload chunk at
        // a time: a long video is never in memory whole.
        let mut reader = store.open_attachment(&info.sha256)?;
        let size = reader.len();
        let endpoint = format!("/v1/blobs/{}", info.sha256);
        let mut failures = 0u32;
        // Where the server's last answer said the upload stands; otherwise ask with HEAD.
        let mut known: Option<u64> = None;
        loop {
            check(cancel)?;
            let offset = match known.take() {
                Some(o) => o,
                None => self.blob_offset(&endpoint, size, cancel, report).await?,
            };
            if offset >= size {
                return Ok(());
            }
            let end = size.min(offset + self.options.upload_chunk_bytes.max(1) as u64);
            let chunk = reader.read_range(offset, end)?;
            let sent = chunk.len() as u64;
            let request = self
                .request(Method::PATCH, &endpoint)
                .header(UPLOAD_OFFSET_HEADER, offset)
                .header(UPLOAD_LENGTH_HEADER, size)
                .header(MEDIA_TYPE_HEADER, header_safe(&info.media_type))
                .header(CONTENT_TYPE, "application/offset+octet-stream")
                .body(chunk);
            let mut answer_body = Vec::new();
            match self.exchange(request, &mut answer_body, cancel).await {
                Ok(Answer { status, headers, received, .. }) if status.is_success() => {
                    report.bytes_sent += sent;
                    report.bytes_received += received;
                    report.attachment_bytes_uploaded += sent;
                    failures = 0;
                    known = header_offset(&headers).filter(|o| *o <= size);
                    report_progress(
                        progress,
                        SyncPhase::UploadingAttachments,
                        report.attachments_uploaded,
                        None,
                        report,
                    );
                }
                // The server holds a different offset than we thought, or another request
                // (one a cut connection left behind) still holds the upload: wait, then ask
                // again.
                Ok(Answer { status: StatusCode::CONFLICT, body, .. }) => {
                    failures += 1;
                    if failures >= self.options.max_attempts {
                        // Still held after every attempt: the upload stands where it is, and a
                        // later sync resumes it, so this is transient, not a refusal.
                        return Err(match status_error(&endpoint, StatusCode::CONFLICT, &body, failures) {
                            SyncError::Rejected { endpoint, status, code, message } => {
                                SyncError::Server { endpoint, status, code, message, attempts: failures }
                            }
                            other => other,
                        });
                    }
                    self.backoff(failures, cancel).await?;
                }
                Ok(Answer { status, body, .. }) => {
                    let retryable = is_retryable(status);
                    if !retryable || failures + 1 >= self.options.max_attempts {
                        return Err(status_error(&endpoint, status, &body, failures + 1));
                    }
                    failures += 1;
                    report.retries += 1;
                    self.backoff(failures, cancel).await?;
                }
                Err(Attempt::Cancelled) => return Err(SyncError::Cancelled),
                Err(Attempt::Failed(e)) => return Err(e),
                Err(Attempt::Network(detail)) => {
                    failures += 1;
                    if failures >= self.options.max_attempts {
                        return Err(SyncError::Network { endpoint, attempts: failures, detail });
                    }
                    report.retries += 1;
                    self.backoff(failures, cancel).await?;
                }
            }
        }
    }

    /// How many bytes of a blob the server holds (HEAD).
    async fn blob_offset(
        &self,
        endpoint: &str,
        size: u64,
        cancel: &CancelToken,
        report: &mut SyncReport,
    ) -> Result<u64, SyncError> {
        let (status, headers) = self
            .call(
                || self.request(Method::HEAD, endpoint).header(UPLOAD_LENGTH_HEADER, size),
                endpoint,
                cancel,
                report,
                &[StatusCode::NOT_FOUND],
                self.options.max_attempts,
                &mut Vec::new(),
            )
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(0);
        }
        let offset = headers
            .get(UPLOAD_OFFSET_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| SyncError::Protocol {
                endpoint: endpoint.to_owned(),
                detail: format!("no valid {UPLOAD_OFFSET_HEADER} header"),
            })?;
        if offset > size {
            return Err(SyncError::Protocol {
                endpoint: endpoint.to_owned(),
                detail: "the server holds more bytes than the attachment has".into(),
            });
        }
        Ok(offset)
    }

    /// Pushes the outbox in bounded batches; each acknowledged batch leaves the outbox before
    /// the next is sent.
    pub async fn push(
        &self,
        store: &Store,
        progress: &dyn SyncProgress,
        cancel: &CancelToken,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let total = store.pending_count()?;
        let mut done = 0u64;
        let batch = self.options.push_batch_changes.clamp(1, MAX_PUSH_CHANGES);
        let mut limit = batch;
        // Changes the server refused in this sync: they stay in the outbox (nothing is
        // dropped), and the rest is pushed past them.
        let mut refused_seqs: Vec<i64> = Vec::new();
        loop {
            check(cancel)?;
            report_progress(progress, SyncPhase::Pushing, done, Some(total.max(done)), report);
            let pending: Vec<_> = store
                .pending_changes(limit + refused_seqs.len())?
                .into_iter()
                .filter(|p| !refused_seqs.contains(&p.seq))
                .take(limit)
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            // Bound the batch by bytes too (always at least one change).
            let mut changes: Vec<Change> = Vec::with_capacity(pending.len());
            let mut seqs = Vec::with_capacity(pending.len());
            let mut bytes = 0usize;
            for p in pending {
                let size = serde_json::to_vec(&p.change).map(|v| v.len()).unwrap_or(0);
                if !changes.is_empty() && bytes + size > self.options.push_batch_bytes.min(MAX_BODY_BYTES / 2)
                {
                    break;
                }
                bytes += size;
                seqs.push(p.seq);
                changes.push(p.change);
            }
            let n = changes.len();
            let body = PushRequest { changes };
            let result: Result<PushResponse, SyncError> = self
                .call_json(
                    Method::POST,
                    "/v1/push",
                    Some(&body),
                    true,
                    cancel,
                    report,
                    self.options.max_attempts,
                )
                .await;
            match result {
                Ok(resp) => {
                    store.acknowledge(&seqs)?;
                    if let Some(epoch) = &resp.epoch {
                        report.server_restored |= store.note_server_epoch(epoch)?;
                    }
                    report.changes_pushed += n as u64;
                    report.push_batches += 1;
                    report.ops_accepted += resp.accepted_ops;
                    report.ops_duplicate += resp.duplicate_ops;
                    done += n as u64;
                }
                // A batch too large for the server: halve it and try again.
                Err(SyncError::Rejected { status: 413, .. }) if n > 1 => limit = (n / 2).max(1),
                // A batch refused whole because of some change in it (outside this device's
                // scope, or invalid): halve until the change is alone, pushing the rest.
                Err(SyncError::Forbidden { .. } | SyncError::Rejected { status: 400, .. }) if n > 1 => {
                    limit = (n / 2).max(1)
                }
                Err(e @ (SyncError::Forbidden { .. } | SyncError::Rejected { status: 400, .. })) => {
                    refused_seqs.extend(&seqs);
                    report.refused.push(RefusedChange { doc: body.changes[0].doc, reason: e.to_string() });
                    limit = batch;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Pulls pages after the store's cursor until the server has no more; each page is applied
    /// together with its cursor.
    pub async fn pull(
        &self,
        store: &Store,
        progress: &dyn SyncProgress,
        cancel: &CancelToken,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let limit = self.options.pull_limit.max(1);
        let pull_path = |cursor: Option<&str>| {
            let mut path = format!("/v1/pull?limit={limit}");
            if let Some(c) = cursor {
                path.push_str("&cursor=");
                path.push_str(&super::wire::percent_encode(c));
            }
            path
        };
        // The next page is fetched while this one is applied (its cursor is known as soon as
        // this page arrives); pages are still applied strictly in order, each with its cursor.
        let mut prefetched: Option<Prefetch> = None;
        loop {
            check(cancel)?;
            report_progress(progress, SyncPhase::Pulling, report.changes_pulled, None, report);
            let cursor = store.sync_cursor()?;
            let path = pull_path(cursor.as_deref());
            let early = match prefetched.take() {
                Some(p) if p.path == path => p.take(cancel).await,
                _ => None,
            };
            let page: PullResponse = match early {
                Some(body) => {
                    report.bytes_received += body.len() as u64;
                    decode_json("/v1/pull", &body)?
                }
                None => {
                    self.call_json::<(), _>(
                        Method::GET,
                        &path,
                        None,
                        false,
                        cancel,
                        report,
                        self.options.max_attempts,
                    )
                    .await?
                }
            };
            if let Some(epoch) = &page.epoch {
                if store.note_server_epoch(epoch)? {
                    // A restored server: this page followed a cursor of the lost log. Start
                    // over from the snapshot (the cursor was just cleared).
                    report.server_restored = true;
                    prefetched = None;
                    continue;
                }
            }
            if page.more {
                let next = pull_path(Some(&page.cursor));
                let request = self.request(Method::GET, &next);
                let handle = tokio::spawn(async move {
                    let resp = request.send().await.ok()?;
                    if !resp.status().is_success() {
                        return None;
                    }
                    resp.bytes().await.ok().map(|b| b.to_vec())
                });
                prefetched = Some(Prefetch { path: next, handle });
            }
            if self.options.download_attachments {
                let wanted = referenced_blobs(&page.changes);
                let mut missing = Vec::new();
                for sha in wanted {
                    if store.attachment(&sha)?.is_none() {
                        missing.push(sha);
                    }
                }
                if !missing.is_empty() {
                    // Remember them before the page commits, so a crash cannot forget them.
                    let mut all = wanted_blobs(store)?;
                    for sha in missing {
                        if !all.contains(&sha) {
                            all.push(sha);
                        }
                    }
                    set_wanted_blobs(store, &all)?;
                }
            }
            let applied = store.apply_pulled(&page.changes, &page.cursor)?;
            report.pull_pages += 1;
            report.changes_pulled += page.changes.len() as u64;
            report.ops_new += applied.new_ops as u64;
            report.ops_known += applied.known_ops as u64;
            for f in applied.far_future {
                if !report.far_future.iter().any(|(r, _)| *r == f.0) {
                    report.far_future.push(f);
                }
            }
            if !page.more {
                report_progress(
                    progress,
                    SyncPhase::Pulling,
                    report.changes_pulled,
                    Some(report.changes_pulled),
                    report,
                );
                return Ok(());
            }
            if page.changes.is_empty() && cursor.as_deref() == Some(page.cursor.as_str()) {
                return Err(SyncError::Protocol {
                    endpoint: "/v1/pull".into(),
                    detail: "the server says more pages wait but the cursor does not move".into(),
                });
            }
        }
    }

    /// Downloads the attachments pulled changes referred to that this store lacks.
    pub async fn download_attachments(
        &self,
        store: &Store,
        progress: &dyn SyncProgress,
        cancel: &CancelToken,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let wanted = wanted_blobs(store)?;
        let total = wanted.len() as u64;
        let mut left = wanted.clone();
        for (i, sha) in wanted.iter().enumerate() {
            check(cancel)?;
            report_progress(progress, SyncPhase::DownloadingAttachments, i as u64, Some(total), report);
            if store.attachment(sha)?.is_none() {
                let endpoint = format!("/v1/blobs/{sha}");
                // The body goes through the store's writer as it arrives, hashed and (in an
                // encrypted store) sealed on the way: a long video is never in memory whole.
                let mut sink = BlobSink { store, endpoint: &endpoint, writer: None };
                let (status, headers) = self
                    .call(
                        || self.request(Method::GET, &endpoint),
                        &endpoint,
                        cancel,
                        report,
                        &[StatusCode::NOT_FOUND],
                        self.options.max_attempts,
                        &mut sink,
                    )
                    .await?;
                if status == StatusCode::NOT_FOUND {
                    // Not uploaded yet by its author: try again next sync.
                    continue;
                }
                let media_type = headers
                    .get(MEDIA_TYPE_HEADER)
                    .or_else(|| headers.get(CONTENT_TYPE))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/octet-stream")
                    .to_owned();
                let Some(writer) = sink.writer.take() else {
                    return Err(SyncError::Protocol { endpoint, detail: "no attachment body".into() });
                };
                if &writer.sha256() != sha {
                    // Dropping the writer removes what it wrote.
                    return Err(SyncError::Protocol {
                        endpoint,
                        detail: "the attachment's bytes do not match its hash".into(),
                    });
                }
                writer.keep(&media_type, true)?;
                report.attachments_downloaded += 1;
            }
            left.retain(|s| s != sha);
            set_wanted_blobs(store, &left)?;
        }
        Ok(())
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut b = self
            .http
            .request(method, format!("{}{}", self.server, path))
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION);
        if !self.token.is_empty() {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", self.token))
                .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
            v.set_sensitive(true);
            b = b.header(AUTHORIZATION, v);
        }
        b
    }

    /// Sends a JSON request (optionally gzip-compressed) and decodes the JSON answer, retrying
    /// network errors and server failures.
    #[allow(clippy::too_many_arguments)]
    async fn call_json<B: serde::Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        compress: bool,
        cancel: &CancelToken,
        report: &mut SyncReport,
        attempts: u32,
    ) -> Result<R, SyncError> {
        let endpoint = path.split('?').next().unwrap_or(path).to_owned();
        let payload = match body {
            Some(b) => {
                let json = serde_json::to_vec(b).map_err(|e| SyncError::Protocol {
                    endpoint: endpoint.clone(),
                    detail: format!("cannot encode the request: {}", e.classify_name()),
                })?;
                if compress && self.options.compress_requests {
                    Some((gzip(&json), true))
                } else {
                    Some((json, false))
                }
            }
            None => None,
        };
        let mut bytes = Vec::new();
        self.call(
            || {
                let mut r = self.request(method.clone(), path);
                if let Some((data, gz)) = &payload {
                    r = r.header(CONTENT_TYPE, "application/json").body(data.clone());
                    if *gz {
                        r = r.header(CONTENT_ENCODING, "gzip");
                    }
                }
                r
            },
            &endpoint,
            cancel,
            report,
            &[],
            attempts,
            &mut bytes,
        )
        .await?;
        decode_json(&endpoint, &bytes)
    }

    /// Sends a request built by `build` until it succeeds, retrying network errors, 5xx and
    /// 429 with exponential backoff and jitter. Statuses in `accept` count as success. A
    /// successful answer's body goes into `sink` as it arrives (started afresh by each attempt;
    /// a body cut midway is a network error, retried like one).
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        endpoint: &str,
        cancel: &CancelToken,
        report: &mut SyncReport,
        accept: &[StatusCode],
        attempts: u32,
        sink: &mut dyn Sink,
    ) -> Result<(StatusCode, HeaderMap), SyncError> {
        let attempts = attempts.max(1);
        let mut attempt = 0;
        loop {
            check(cancel)?;
            attempt += 1;
            let request = build();
            let sent = request
                .try_clone()
                .and_then(|r| r.build().ok())
                .and_then(|r| r.body().and_then(|b| b.as_bytes()).map(|b| b.len() as u64))
                .unwrap_or(0);
            match self.exchange(request, sink, cancel).await {
                Ok(answer) => {
                    report.bytes_sent += sent;
                    report.bytes_received += answer.received;
                    if answer.status.is_success() || accept.contains(&answer.status) {
                        return Ok((answer.status, answer.headers));
                    }
                    if !is_retryable(answer.status) || attempt >= attempts {
                        return Err(status_error(endpoint, answer.status, &answer.body, attempt));
                    }
                }
                Err(Attempt::Cancelled) => return Err(SyncError::Cancelled),
                Err(Attempt::Failed(e)) => return Err(e),
                Err(Attempt::Network(detail)) => {
                    if attempt >= attempts {
                        return Err(SyncError::Network {
                            endpoint: endpoint.to_owned(),
                            attempts: attempt,
                            detail,
                        });
                    }
                }
            }
            report.retries += 1;
            self.backoff(attempt, cancel).await?;
        }
    }

    /// One request and its answer, abandoned if the sync is cancelled. A successful answer's
    /// body goes into `sink` chunk by chunk as it arrives; any other answer's (a small error
    /// body) is returned.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        sink: &mut dyn Sink,
        cancel: &CancelToken,
    ) -> Result<Answer, Attempt> {
        let work = async {
            let mut resp = request.send().await.map_err(|e| Attempt::Network(describe(&e)))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let success = status.is_success();
            if success {
                sink.restart().map_err(Attempt::Failed)?;
            }
            let mut body = Vec::new();
            let mut received = 0u64;
            while let Some(chunk) = resp.chunk().await.map_err(|e| Attempt::Network(describe(&e)))? {
                received += chunk.len() as u64;
                if success {
                    sink.write(&chunk).map_err(Attempt::Failed)?;
                } else {
                    body.extend_from_slice(&chunk);
                }
            }
            Ok(Answer { status, headers, body, received })
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Attempt::Cancelled),
            r = work => r,
        }
    }

    async fn backoff(&self, attempt: u32, cancel: &CancelToken) -> Result<(), SyncError> {
        let base = self.options.backoff_base.as_millis() as u64;
        let cap = self.options.backoff_max.as_millis() as u64;
        let exp = base.saturating_mul(1u64 << attempt.saturating_sub(1).min(20)).min(cap).max(1);
        let wait = {
            use rand::Rng;
            rand::rng().random_range(exp / 2..=exp)
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(SyncError::Cancelled),
            _ = tokio::time::sleep(Duration::from_millis(wait)) => Ok(()),
        }
    }
}

/// A pull page requested ahead of time; abandoned if not used.
struct Prefetch {
    path: String,
    handle: tokio::task::JoinHandle<Option<Vec<u8>>>,
}

impl Prefetch {
    /// The page's body, if the early request succeeded (otherwise the caller asks again).
    async fn take(mut self, cancel: &CancelToken) -> Option<Vec<u8>> {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            r = &mut self.handle => r.ok().flatten(),
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

fn decode_json<R: DeserializeOwned>(endpoint: &str, bytes: &[u8]) -> Result<R, SyncError> {
    serde_json::from_slice(bytes).map_err(|e| SyncError::Protocol {
        endpoint: endpoint.to_owned(),
        detail: format!("invalid JSON ({} at line {} column {})", e.classify_name(), e.line(), e.column()),
    })
}

enum Attempt {
    Cancelled,
    Network(String),
    /// Not worth retrying: the sink refused the body.
    Failed(SyncError),
}

/// An answer to one request.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    /// The body of an answer that is not a success (a success's went into the sink).
    body: Vec<u8>,
    received: u64,
}

/// Where the body of a successful answer goes, a piece at a time as it arrives.
trait Sink: Send {
    /// Forgets whatever an earlier attempt, cut midway, delivered.
    fn restart(&mut self) -> Result<(), SyncError>;
    fn write(&mut self, bytes: &[u8]) -> Result<(), SyncError>;
}

impl Sink for Vec<u8> {
    fn restart(&mut self) -> Result<(), SyncError> {
        self.clear();
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SyncError> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// A downloading attachment: its bytes go through the store's writer (hashed and, in an
/// encrypted store, sealed as they come), at most [`MAX_BLOB_BYTES`] of them.
struct BlobSink<'s> {
    store: &'s Store,
    endpoint: &'s str,
    writer: Option<crate::store::AttachmentWriter<'s>>,
}

impl Sink for BlobSink<'_> {
    fn restart(&mut self) -> Result<(), SyncError> {
        // Dropping the old writer removes what it wrote.
        self.writer = None;
        self.writer = Some(self.store.attachment_writer()?);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SyncError> {
        let too_large = || SyncError::Protocol {
            endpoint: self.endpoint.to_owned(),
            detail: "attachment too large".into(),
        };
        let Some(writer) = self.writer.as_mut() else { return Err(too_large()) };
        if writer.len().saturating_add(bytes.len() as u64) > MAX_BLOB_BYTES {
            return Err(too_large());
        }
        writer.write(bytes)?;
        Ok(())
    }
}

fn check(cancel: &CancelToken) -> Result<(), SyncError> {
    if cancel.is_cancelled() {
        Err(SyncError::Cancelled)
    } else {
        Ok(())
    }
}

fn report_progress(
    progress: &dyn SyncProgress,
    phase: SyncPhase,
    items_done: u64,
    items_total: Option<u64>,
    report: &SyncReport,
) {
    progress.progress(&Progress {
        phase,
        items_done,
        items_total,
        bytes_sent: report.bytes_sent,
        bytes_received: report.bytes_received,
    });
}

fn is_retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// The typed error for a non-success answer. The server's message never contains answers.
fn status_error(endpoint: &str, status: StatusCode, body: &[u8], attempts: u32) -> SyncError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (code, message) = match parsed {
        Some(b) => (b.error, b.message),
        None => (
            status.canonical_reason().unwrap_or("error").to_lowercase().replace(' ', "_"),
            "(no error body)".to_owned(),
        ),
    };
    if code == "protocol_mismatch" || status == StatusCode::UPGRADE_REQUIRED {
        return SyncError::ProtocolMismatch { client: PROTOCOL_VERSION, message };
    }
    match status {
        StatusCode::UNAUTHORIZED if code == "bad_code" => SyncError::BadCode,
        StatusCode::UNAUTHORIZED => SyncError::Unauthorized,
        StatusCode::FORBIDDEN => SyncError::Forbidden { message },
        s if s.is_server_error() || is_retryable(s) => {
            SyncError::Server { endpoint: endpoint.to_owned(), status: s.as_u16(), code, message, attempts }
        }
        s => SyncError::Rejected { endpoint: endpoint.to_owned(), status: s.as_u16(), code, message },
    }
}

/// A reqwest error described without its URL's query (which holds only cursors, but keep it
/// short) and with its cause chain.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "connection broke while reading"
    } else if e.is_request() {
        "request failed"
    } else {
        "error"
    };
    let mut detail = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    detail
}

fn header_offset(headers: &HeaderMap) -> Option<u64> {
    headers.get(UPLOAD_OFFSET_HEADER)?.to_str().ok()?.trim().parse().ok()
}

fn header_safe(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc =
        flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// The attachments a page's changes refer to.
fn referenced_blobs(changes: &[Change]) -> Vec<String> {
    let mut out: Vec<String> = changes
        .iter()
        .flat_map(|c| c.ops.iter())
        .filter_map(|op| parse_attachment_ref(&op.value).map(str::to_owned))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn wanted_blobs(store: &Store) -> Result<Vec<String>, SyncError> {
    Ok(store
        .sync_state(state_keys::WANTED_BLOBS)?
        .and_then(|s| serde_json::from_str::<Vec<String>>(&s).ok())
        .unwrap_or_default())
}

fn set_wanted_blobs(store: &Store, wanted: &[String]) -> Result<(), SyncError> {
    let json = serde_json::to_string(wanted).unwrap_or_else(|_| "[]".into());
    store.set_sync_state(state_keys::WANTED_BLOBS, &json)?;
    Ok(())
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "i/o error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected structure",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_links_parse() {
        let l = parse_setup_link("tejido://enroll?server=http%3A%2F%2F127.0.0.1%3A8080%2F&code=ABCD-1234")
            .unwrap();
        assert_eq!(l, SetupLink { server_url: "http://127.0.0.1:8080".into(), code: "ABCD-1234".into() });
        let l = parse_setup_link("https://sync.example.org/enroll?code=XYZ").unwrap();
        assert_eq!(l.server_url, "https://sync.example.org");
        assert!(parse_setup_link("tejido://enroll?code=XYZ").is_err());
        assert!(parse_setup_link("tejido://enroll?server=http://x").is_err());
        assert!(parse_setup_link("not a link").is_err());
        assert!(parse_setup_link("tejido://enroll?server=ftp://x&code=1").is_err());
    }

    #[test]
    fn statuses_map_to_typed_errors_without_bodies_leaking() {
        let body = br#"{"error":"protocol_mismatch","message":"this server speaks version 2"}"#;
        assert!(matches!(
            status_error("/v1/push", StatusCode::BAD_REQUEST, body, 1),
            SyncError::ProtocolMismatch { client: PROTOCOL_VERSION, .. }
        ));
        assert!(matches!(
            status_error("/v1/push", StatusCode::UNAUTHORIZED, b"", 1),
            SyncError::Unauthorized
        ));
        assert!(matches!(
            status_error("/v1/push", StatusCode::SERVICE_UNAVAILABLE, b"", 3),
            SyncError::Server { status: 503, attempts: 3, .. }
        ));
        let e = status_error("/v1/push", StatusCode::PAYLOAD_TOO_LARGE, b"{\"x\":\"secret\"}", 1);
        assert!(matches!(e, SyncError::Rejected { status: 413, .. }));
        assert!(!e.to_string().contains("secret"));
    }

    #[test]
    fn referenced_blobs_are_found_and_deduplicated() {
        let sha = "a".repeat(64);
        let change: Change = serde_json::from_value(serde_json::json!({
            "doc": Uuid::now_v7(), "collection": "submission", "replica": Uuid::new_v4(),
            "hlc": "0000000000000010",
            "ops": [{"field": "photo", "value": format!("sha256:{sha}")},
                    {"field": "other", "value": format!("sha256:{sha}")},
                    {"field": "n", "value": 3}]
        }))
        .unwrap();
        assert_eq!(referenced_blobs(&[change]), vec![sha]);
    }

    #[tokio::test]
    async fn cancel_token_wakes_waiters() {
        let t = CancelToken::new();
        let t2 = t.clone();
        let h = tokio::spawn(async move { t2.cancelled().await });
        tokio::task::yield_now().await;
        t.cancel();
        h.await.unwrap();
        assert!(t.is_cancelled());
    }
}
