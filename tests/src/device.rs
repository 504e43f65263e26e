//! Simulated devices for end-to-end tests: a real `tejido-core` store in a temporary directory,
//! enrolled with a real server through the real client, plus helpers to compare what stores
//! hold.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use tejido_core::store::Document;
use tejido_core::sync::client::{
    enroll_with_link, CancelToken, SyncClient, SyncError, SyncOptions, SyncReport,
};
use tejido_core::sync::wire::EnrollResponse;
use tejido_core::{Change, Collection, DocId, Store};

/// Options for tests: quick backoff and timeouts, few attempts, small batches.
pub fn test_options() -> SyncOptions {
    SyncOptions {
        push_batch_changes: 25,
        pull_limit: 50,
        max_attempts: 4,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(5),
        ..SyncOptions::default()
    }
}

/// A device: its store on disk and a client for the server it enrolled with.
pub struct Device {
    pub name: String,
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: Option<Store>,
    client: Option<SyncClient>,
    pub options: SyncOptions,
    pub enrollment: EnrollResponse,
    /// Every change this device ever had in its outbox, by op identity (the test's record of
    /// what the device wrote and must reach the server).
    pub written: HashMap<(DocId, u64), Change>,
    /// The store key, for an encrypted store.
    key: Option<Vec<u8>>,
}

impl Device {
    /// A new store enrolled with a setup link.
    pub async fn enroll(link: &str, name: &str, options: SyncOptions) -> Result<Device, SyncError> {
        Device::enroll_with_key(link, name, options, None).await
    }

    /// A new store encrypted with `key` (`Store::open_encrypted`), enrolled with a setup link.
    pub async fn enroll_encrypted(
        link: &str,
        name: &str,
        options: SyncOptions,
        key: &[u8],
    ) -> Result<Device, SyncError> {
        Device::enroll_with_key(link, name, options, Some(key.to_vec())).await
    }

    async fn enroll_with_key(
        link: &str,
        name: &str,
        options: SyncOptions,
        key: Option<Vec<u8>>,
    ) -> Result<Device, SyncError> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("device.db");
        let store = open_store(&path, key.as_deref())?;
        let enrollment = enroll_with_link(link, &store, Some(name)).await?;
        let client = SyncClient::from_store_with_options(&store, options.clone())?;
        Ok(Device {
            name: name.to_owned(),
            _dir: dir,
            path,
            store: Some(store),
            client: Some(client),
            options,
            enrollment,
            written: HashMap::new(),
            key,
        })
    }

    pub fn store(&self) -> &Store {
        self.store.as_ref().expect("the store is open")
    }

    pub fn client(&self) -> &SyncClient {
        self.client.as_ref().expect("the client exists")
    }

    /// Records what the outbox holds (call before syncing).
    pub fn record_outbox(&mut self) {
        let pending = self.store().pending_changes(1_000_000).expect("the outbox reads");
        for p in pending {
            self.written.insert((p.change.doc, p.change.hlc.0), p.change);
        }
    }

    /// One sync.
    pub async fn sync(&mut self) -> Result<SyncReport, SyncError> {
        self.record_outbox();
        let cancel = CancelToken::new();
        self.client().sync(self.store(), &(), &cancel).await
    }

    /// Syncs until a sync succeeds, retrying transient failures (at most `tries` times).
    pub async fn sync_until_done(&mut self, tries: usize) -> SyncReport {
        let mut total = SyncReport::default();
        let mut last = None;
        for _ in 0..tries {
            match self.sync().await {
                Ok(r) => {
                    add_report(&mut total, &r);
                    return total;
                }
                Err(e) if e.is_transient() => last = Some(e),
                Err(e) => panic!("{}: sync failed: {e}", self.name),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{}: no sync succeeded in {tries} tries; last error: {last:?}", self.name);
    }

    /// Points the device at another address for the same server (a proxy in front of it).
    pub fn set_server(&mut self, url: &str) {
        self.store()
            .set_sync_state(tejido_core::sync::client::state_keys::SERVER_URL, url)
            .expect("the sync state is written");
        self.client =
            Some(SyncClient::from_store_with_options(self.store(), self.options.clone()).expect("enrolled"));
    }

    /// The store's file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Closes the store and the client (another process may use the store meanwhile); call
    /// [`reopen`](Self::reopen) to use the device again.
    pub fn close(&mut self) {
        self.client = None;
        self.store = None;
    }

    /// Simulates the app being killed and started again: drops the store and the client and
    /// opens both afresh from disk.
    pub fn reopen(&mut self) {
        self.client = None;
        self.store = None;
        let store = open_store(&self.path, self.key.as_deref()).expect("the store reopens");
        let problems = store.check_integrity().expect("the integrity check runs");
        assert!(problems.is_empty(), "{}: store damaged after a kill: {problems:?}", self.name);
        self.client =
            Some(SyncClient::from_store_with_options(&store, self.options.clone()).expect("enrolled"));
        self.store = Some(store);
    }

    /// Every op this device wrote, as (doc, field, hlc) → value.
    pub fn written_ops(&self) -> usize {
        self.written.values().map(|c| c.ops.len()).sum()
    }
}

/// Opens the store, waiting out a `Locked` that only this test process causes: when another
/// test's thread spawns a process (a server restart, a device child), the child holds a copy of
/// every open descriptor, the store's owner lock included, until it execs, so a store closed
/// and reopened meanwhile sees its own lock for a millisecond or so. (An app does not spawn
/// processes while it holds stores.) A lock held for longer is a real second owner and fails.
fn open_store(path: &std::path::Path, key: Option<&[u8]>) -> Result<Store, tejido_core::StoreError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let opened = match key {
            Some(key) => Store::open_encrypted(path, key),
            None => Store::open(path),
        };
        match opened {
            Err(tejido_core::StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Adds `r` into `total`.
pub fn add_report(total: &mut SyncReport, r: &SyncReport) {
    total.attachments_uploaded += r.attachments_uploaded;
    total.attachment_bytes_uploaded += r.attachment_bytes_uploaded;
    total.changes_pushed += r.changes_pushed;
    total.push_batches += r.push_batches;
    total.ops_accepted += r.ops_accepted;
    total.ops_duplicate += r.ops_duplicate;
    total.pull_pages += r.pull_pages;
    total.changes_pulled += r.changes_pulled;
    total.ops_new += r.ops_new;
    total.ops_known += r.ops_known;
    total.attachments_downloaded += r.attachments_downloaded;
    total.bytes_sent += r.bytes_sent;
    total.bytes_received += r.bytes_received;
    total.retries += r.retries;
}

/// Every synced (non-draft) document a store holds.
pub fn documents(store: &Store) -> BTreeMap<DocId, Document> {
    let mut out = BTreeMap::new();
    for c in [Collection::Submission, Collection::Entity, Collection::Comment, Collection::Form] {
        for id in store.list_documents(c).expect("documents list") {
            let d = store.read_document(id).expect("the document reads");
            if !d.draft {
                out.insert(id, d);
            }
        }
    }
    out
}

/// A store holding exactly the given changes: what every replica that saw them must show.
pub fn reference_store<'a>(changes: impl IntoIterator<Item = &'a Change>) -> Store {
    let store = Store::open_in_memory().expect("an in-memory store");
    let all: Vec<Change> = changes.into_iter().cloned().collect();
    for chunk in all.chunks(500) {
        store.apply_remote(chunk).expect("the reference applies");
    }
    store
}

/// A random finalized submission with `fields` answers; returns its id.
pub fn fill_submission(store: &Store, form: &str, fields: usize, rng: &mut impl rand::Rng) -> DocId {
    let doc = store.start_submission(form, "1").expect("a draft starts");
    let answers: Vec<(String, serde_json::Value)> = (0..fields)
        .map(|i| {
            let v = match rng.random_range(0..3) {
                0 => serde_json::json!(rng.random_range(0..1000)),
                1 => serde_json::json!(format!("answer-{}", rng.random_range(0..1_000_000))),
                _ => serde_json::json!(rng.random_bool(0.5)),
            };
            (format!("q{i}"), v)
        })
        .collect();
    let refs: Vec<(&str, serde_json::Value)> = answers.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    store.set_fields(doc, &refs).expect("answers are set");
    store.finalize(doc).expect("the submission finalizes");
    doc
}
