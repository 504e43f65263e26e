//! Enrollment and sync. The sync client is async on tokio; this module owns the runtime, so
//! the apps call a plain async function (a Kotlin `suspend fun`, a Swift `async` method, a
//! Python coroutine) from whatever executor they have. Cancelling the foreign call, or calling
//! `SyncCancellation.cancel()`, stops the sync at its next safe point; what it committed stays.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tejido_core::sync::client::{self, CancelToken, Progress, SyncClient, SyncPhase as CorePhase};

use crate::store::TejidoStore;
use crate::TejidoError;

/// The step a sync is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SyncPhase {
    UploadingAttachments,
    Pushing,
    Pulling,
    DownloadingAttachments,
    Done,
}

/// A progress report: items of the current phase done (and expected, when known), and bytes
/// moved so far in this sync.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SyncProgress {
    pub phase: SyncPhase,
    pub items_done: u64,
    pub items_total: Option<u64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// Receives sync progress. Implemented by the app (a ViewModel, a WorkManager worker's
/// `setProgress`); called from Tejido's sync thread, so it should return quickly.
#[uniffi::export(with_foreign)]
pub trait SyncListener: Send + Sync {
    fn on_progress(&self, progress: SyncProgress);
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SyncSummary {
    pub attachments_uploaded: u64,
    pub changes_pushed: u64,
    pub changes_pulled: u64,
    pub attachments_downloaded: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Requests repeated after a network error or a server failure.
    pub retries: u64,
}

/// The enrollment a device holds (never the token).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Enrollment {
    pub server_url: String,
    pub device_id: Option<String>,
    pub project_id: Option<String>,
    pub project_name: Option<String>,
    /// `enumerator`, `youth` or `coordinator`.
    pub role: Option<String>,
}

/// A handle that stops a running sync (for a Cancel button or an expiring background task).
/// Use a new one for each sync: once cancelled it stays cancelled.
#[derive(Debug, Default, uniffi::Object)]
pub struct SyncCancellation {
    token: CancelToken,
}

#[uniffi::export]
impl SyncCancellation {
    #[uniffi::constructor]
    pub fn new() -> Arc<SyncCancellation> {
        Arc::new(SyncCancellation::default())
    }

    /// Stops the sync at its next safe point; it then fails with `Cancelled`.
    pub fn cancel(&self) {
        self.token.cancel()
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}

#[uniffi::export]
impl TejidoStore {
    /// Enrolls this device with a server and an enrollment code; the server and the device
    /// token are kept in the store for every later sync.
    pub async fn enroll(
        &self,
        server_url: String,
        code: String,
        device_name: Option<String>,
    ) -> Result<Enrollment, TejidoError> {
        let store = self.store.clone();
        let cancel = CancelToken::new();
        on_runtime(cancel, async move {
            client::enroll(&server_url, &code, &store, device_name.as_deref()).await?;
            read_enrollment(&store)
        })
        .await
    }

    /// Enrolls with the setup link a coordinator shows as a QR code
    /// (`tejido://enroll?server=…&code=…`).
    pub async fn enroll_with_link(
        &self,
        link: String,
        device_name: Option<String>,
    ) -> Result<Enrollment, TejidoError> {
        let store = self.store.clone();
        on_runtime(CancelToken::new(), async move {
            client::enroll_with_link(&link, &store, device_name.as_deref()).await?;
            read_enrollment(&store)
        })
        .await
    }

    /// The enrollment this store holds, if it is enrolled.
    pub fn enrollment(&self) -> Result<Option<Enrollment>, TejidoError> {
        match client::enrollment(&self.store)? {
            Some(_) => Ok(Some(read_enrollment(&self.store)?)),
            None => Ok(None),
        }
    }

    /// Uploads attachments, pushes every pending change, pulls until caught up (forms, review
    /// states, comments) and downloads attachments. Safe to call again at any point, and while
    /// other threads keep writing answers.
    pub async fn sync(
        &self,
        listener: Option<Arc<dyn SyncListener>>,
        cancellation: Option<Arc<SyncCancellation>>,
    ) -> Result<SyncSummary, TejidoError> {
        let store = self.store.clone();
        let cancel = cancellation.map(|c| c.token.clone()).unwrap_or_default();
        let token = cancel.clone();
        on_runtime(cancel, async move {
            let client = SyncClient::from_store(&store)?;
            let forward = Forward(listener);
            let report = client.sync(&store, &forward, &token).await?;
            Ok(SyncSummary {
                attachments_uploaded: report.attachments_uploaded,
                changes_pushed: report.changes_pushed,
                changes_pulled: report.changes_pulled,
                attachments_downloaded: report.attachments_downloaded,
                bytes_sent: report.bytes_sent,
                bytes_received: report.bytes_received,
                retries: report.retries,
            })
        })
        .await
    }
}

fn read_enrollment(store: &tejido_core::Store) -> Result<Enrollment, TejidoError> {
    let e =
        client::enrollment(store)?.ok_or(TejidoError::NotAllowed("this device is not enrolled".into()))?;
    Ok(Enrollment {
        server_url: e.server_url,
        device_id: e.device_id.map(|u| u.to_string()),
        project_id: e.project_id.map(|u| u.to_string()),
        project_name: store.sync_state(client::state_keys::PROJECT_NAME)?,
        role: e.role.map(|r| r.as_str().to_owned()),
    })
}

struct Forward(Option<Arc<dyn SyncListener>>);

impl client::SyncProgress for Forward {
    fn progress(&self, p: &Progress) {
        if let Some(listener) = &self.0 {
            listener.on_progress(SyncProgress {
                phase: match p.phase {
                    CorePhase::UploadingAttachments => SyncPhase::UploadingAttachments,
                    CorePhase::Pushing => SyncPhase::Pushing,
                    CorePhase::Pulling => SyncPhase::Pulling,
                    CorePhase::DownloadingAttachments => SyncPhase::DownloadingAttachments,
                    CorePhase::Done => SyncPhase::Done,
                },
                items_done: p.items_done,
                items_total: p.items_total,
                bytes_sent: p.bytes_sent,
                bytes_received: p.bytes_received,
            });
        }
    }
}

/// Tejido's own tokio runtime: two worker threads, created on first use.
fn runtime() -> Result<&'static tokio::runtime::Runtime, TejidoError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("tejido-sync")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| TejidoError::Internal(format!("cannot start the sync runtime: {e}")))
}

/// Signals cancellation when the foreign caller drops the future (a cancelled coroutine).
struct CancelOnDrop {
    token: CancelToken,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.token.cancel();
        }
    }
}

/// Runs `work` on Tejido's runtime and waits for it from any executor.
async fn on_runtime<T: Send + 'static>(
    cancel: CancelToken,
    work: impl Future<Output = Result<T, TejidoError>> + Send + 'static,
) -> Result<T, TejidoError> {
    let handle = runtime()?.spawn(work);
    let mut guard = CancelOnDrop { token: cancel, armed: true };
    let out = handle.await;
    guard.armed = false;
    match out {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(TejidoError::Internal("the sync task failed unexpectedly".into())),
        Err(_) => Err(TejidoError::Cancelled("the sync was cancelled".into())),
    }
}
