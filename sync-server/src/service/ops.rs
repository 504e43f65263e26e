//! The server's operations: each one transaction of storage primitives, with every decision
//! taken here (through [`super::rules`], [`super::clock`], [`super::enroll`], [`super::blobs`]
//! and [`super::limits`]). HTTP handlers, admin commands and the demo all call these.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tejido_core::doc;
use tejido_core::store::parse_attachment_ref;
use tejido_core::{Change, Collection, DocId, Hlc, OpId, ReplicaId};
use uuid::Uuid;

use super::rules::{self, Scope};
use super::{blobs, clock, enroll, limits, read_model, snapshot};
use crate::storage::*;

/// The meta key that records which version of the read model the rows were built by.
const READ_MODEL_KEY: &str = "read_model";
const READ_MODEL_VERSION: &str = "1";

/// What a coordinator writes to a field: a new value, or one of its open values kept.
enum Answer {
    New(rules::AnswerInput),
    Keep(OpId),
}

/// The most changes one pull page holds.
pub const MAX_PAGE_CHANGES: usize = 5_000;

/// The longest project name.
const MAX_PROJECT_NAME: usize = 200;

/// Every operation the server offers, over one storage backend.
#[derive(Clone)]
pub struct Service {
    storage: Arc<dyn Storage>,
    replica: ReplicaId,
    epoch: Arc<str>,
    pub(super) forms: read_model::FormCache,
    /// Exports streaming now, at most [`limits::MAX_CONCURRENT_EXPORTS`].
    pub(super) exports: Arc<tokio::sync::Semaphore>,
    /// Pushes being read or applied now, at most [`limits::MAX_CONCURRENT_PUSHES`].
    pushes: Arc<tokio::sync::Semaphore>,
    /// The indicators last computed per (project, form): see [`Service::compute_indicators`].
    pub(super) indicators: Arc<std::sync::Mutex<super::settings::IndicatorCache>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("replica", &self.replica).finish()
    }
}

impl Service {
    /// The service over a storage whose migrations have run. A clock that an older server let
    /// a device move far ahead is retired here, with the replica id it stamped under.
    pub async fn new(storage: Arc<dyn Storage>) -> Result<Service> {
        let mut tx = storage.begin(Mode::Write).await?;
        let mut replica = tx.server_replica().await?;
        if clock::is_poisoned(tx.clock().await?, crate::now_ms().max(0) as u64) {
            // Stamps far past the bound were issued under the old replica id; a new id keeps
            // every stamp issued from now on unique.
            tracing::warn!(
                "the server clock was moved far ahead by a device; the server takes a new replica id"
            );
            replica = ReplicaId::random();
            tx.set_server_replica(replica).await?;
            tx.set_clock(Hlc(0)).await?;
        }
        let epoch: Arc<str> = tx.epoch().await?.into();
        let read_model_built = tx.meta_value(READ_MODEL_KEY).await?.as_deref() == Some(READ_MODEL_VERSION);
        tx.commit().await?;
        let service = Service {
            storage,
            replica,
            epoch,
            forms: read_model::FormCache::default(),
            exports: Arc::new(tokio::sync::Semaphore::new(limits::MAX_CONCURRENT_EXPORTS)),
            pushes: Arc::new(tokio::sync::Semaphore::new(limits::MAX_CONCURRENT_PUSHES)),
            indicators: Arc::default(),
        };
        if !read_model_built {
            service.rebuild_read_model().await?;
        }
        Ok(service)
    }

    /// Rewrites every submission's row of the read model (after an upgrade or a migration),
    /// a batch per transaction.
    pub async fn rebuild_read_model(&self) -> Result<u64> {
        let mut after = Uuid::nil();
        let mut count = 0;
        loop {
            let mut tx = self.write().await?;
            let docs = tx.submission_docs(after, 500).await?;
            for (doc, project, author) in &docs {
                read_model::refresh(tx.as_mut(), &self.forms, *doc, *project, *author, crate::now_ms())
                    .await?;
            }
            if docs.len() < 500 {
                tx.set_meta_value(READ_MODEL_KEY, READ_MODEL_VERSION).await?;
                tx.commit().await?;
                return Ok(count + docs.len() as u64);
            }
            tx.commit().await?;
            count += docs.len() as u64;
            after = docs.last().map_or(after, |d| d.0);
        }
    }

    /// The epoch devices see on every push and pull (read at start-up: a restore happens with
    /// every server process stopped).
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// After restoring a backup: a new epoch, so that every device sends its whole history
    /// again and the server gets back what it had acknowledged after the backup was taken.
    /// Takes effect when the servers start.
    pub async fn renew_epoch(&self) -> Result<String> {
        let epoch = Uuid::new_v4().simple().to_string();
        let mut tx = self.write().await?;
        tx.set_epoch(&epoch).await?;
        tx.commit().await?;
        Ok(epoch)
    }

    /// The server's own replica id, which stamps reviews, comment authors and published forms.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    /// The storage underneath, for tests and tools that work on its primitives.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub(super) async fn read(&self) -> Result<Box<dyn Tx>> {
        self.storage.begin(Mode::Read).await
    }

    pub(super) async fn write(&self) -> Result<Box<dyn Tx>> {
        self.storage.begin(Mode::Write).await
    }

    pub async fn create_project(&self, name: &str, now_ms: i64) -> Result<Project> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_PROJECT_NAME {
            return Err(StorageError::Invalid(format!(
                "a project name has 1 to {MAX_PROJECT_NAME} characters"
            )));
        }
        let mut tx = self.write().await?;
        if tx.project_by_name(name).await?.is_some() {
            return Err(StorageError::Conflict(format!("a project named {name:?} exists already")));
        }
        let project = Project { id: Uuid::new_v4(), name: name.to_owned(), created_ms: now_ms };
        tx.insert_project(&project).await?;
        tx.commit().await?;
        Ok(project)
    }

    /// A project by id or by name.
    pub async fn find_project(&self, id_or_name: &str) -> Result<Option<Project>> {
        let mut tx = self.read().await?;
        if let Ok(id) = Uuid::try_parse(id_or_name) {
            if let Some(p) = tx.project(id).await? {
                return Ok(Some(p));
            }
        }
        tx.project_by_name(id_or_name).await
    }

    pub async fn list_projects(&self) -> Result<Vec<Project>> {
        self.read().await?.projects().await
    }

    pub async fn create_enrollment_code(&self, code: &NewEnrollmentCode) -> Result<()> {
        if code.uses == 0 || code.uses > limits::MAX_CODE_USES {
            return Err(StorageError::Invalid(format!(
                "uses must be between 1 and {}",
                limits::MAX_CODE_USES
            )));
        }
        let mut tx = self.write().await?;
        if tx.project(code.project).await?.is_none() {
            return Err(StorageError::NotFound(format!("project {}", code.project)));
        }
        tx.insert_code(code).await?;
        tx.commit().await
    }

    /// Uses the code once and enrolls the device, if [`enroll::check_code`] allows it.
    pub async fn redeem_enrollment_code(&self, redeem: &Redeem) -> Result<Enrolled> {
        if redeem.device_name.as_ref().is_some_and(|n| n.chars().count() > limits::MAX_DEVICE_NAME_CHARS) {
            return Err(StorageError::Invalid(format!(
                "a device name has at most {} characters",
                limits::MAX_DEVICE_NAME_CHARS
            )));
        }
        if redeem.replica == self.replica {
            return Err(StorageError::Conflict("that replica id is the server's own".into()));
        }
        let mut tx = self.write().await?;
        let code = tx.code(&redeem.code_hash).await?;
        let state = tx.replica_state(redeem.replica).await?;
        enroll::check_code(code.as_ref().map(|c| &c.2), &state, redeem.now_ms)?;
        let Some((project_id, role, _)) = code else { return Err(StorageError::BadCode) };
        tx.use_code(&redeem.code_hash).await?;
        tx.insert_device(&NewDevice {
            id: redeem.device_id,
            project: project_id,
            role,
            replica: redeem.replica,
            name: redeem.device_name.clone(),
            token_hash: redeem.token_hash,
            code_hash: redeem.code_hash,
            created_ms: redeem.now_ms,
        })
        .await?;
        let device = tx
            .device(redeem.device_id)
            .await?
            .ok_or_else(|| StorageError::Other("an enrolled device was not stored".into()))?;
        let project = tx
            .project(project_id)
            .await?
            .ok_or_else(|| StorageError::NotFound(format!("project {project_id}")))?;
        tx.commit().await?;
        Ok(Enrolled { device, project })
    }

    pub async fn device_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<Device>> {
        self.read().await?.device_by_token(token_hash).await
    }

    pub async fn device(&self, id: Uuid) -> Result<Option<Device>> {
        self.read().await?.device(id).await
    }

    pub async fn list_devices(&self, project: Uuid) -> Result<Vec<Device>> {
        self.read().await?.devices(project).await
    }

    /// Revokes a device at once; returns false when it was already revoked.
    pub async fn revoke_device(&self, id: Uuid, now_ms: i64) -> Result<bool> {
        let mut tx = self.write().await?;
        if tx.device(id).await?.is_none() {
            return Err(StorageError::NotFound(format!("device {id}")));
        }
        let revoked = tx.revoke_device(id, now_ms).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// A turn to parse and apply one push: waits while [`limits::MAX_CONCURRENT_PUSHES`] others
    /// hold theirs. Taken once the push's body has arrived (a slow sender holds only its own
    /// connection), before it is parsed, and held until it is applied.
    pub async fn push_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        // The semaphore is never closed, so this waits and never fails in practice.
        self.pushes
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StorageError::Busy("the server is stopping".into()))
    }

    /// Applies a device's batch in one transaction, after admitting every change with
    /// [`rules::admit_change`]: all or nothing.
    pub async fn push(&self, device: &Device, changes: &[Change], now_ms: u64) -> Result<PushOutcome> {
        // What each change needs encoded, and the row each submission it may create would
        // have, are computed before taking the writer, beside another push's writes.
        let mut prepared: Vec<Prepared> =
            changes.iter().map(|c| Prepared::of(c, now_ms as i64)).collect::<Result<_>>()?;
        let mut tx = self.storage.begin(Mode::Push).await?;
        let docs: Vec<Uuid> = changes.iter().map(|c| c.doc.0).collect();
        tx.lock_documents(&docs).await?;
        // Revocation is checked inside the transaction: a push racing a revoke loses.
        match tx.device(device.id).await? {
            Some(d) if !d.is_revoked() => {}
            _ => return Err(StorageError::Forbidden("the device is revoked".into())),
        }
        tx.prefetch_documents(&docs).await?;
        let mut outcome = PushOutcome::default();
        let mut far_future = false;
        // Each submission this push changed, its author, and the change that created it when
        // that change is all it holds (its row is then computed from the change alone).
        let mut touched: Vec<(Uuid, Option<Uuid>, Option<usize>)> = Vec::new();
        for (index, change) in changes.iter().enumerate() {
            let admitted = rules::admit_change(tx.as_mut(), device, change).await?;
            if let Some(parent) = admitted.create {
                tx.insert_document(&NewDocument {
                    doc: change.doc.0,
                    project: device.project,
                    collection: change.collection,
                    author: Some(device.id),
                    parent,
                    audience: Vec::new(),
                })
                .await?;
            }
            let ready = prepared.get(index).map(|p| (&p.values, &p.body));
            let (new, known) = apply_change_prepared(
                tx.as_mut(),
                device.project,
                Some(device),
                change,
                now_ms as i64,
                ready,
            )
            .await?;
            outcome.accepted_ops += new;
            outcome.duplicate_ops += known;
            if new > 0 && change.collection == Collection::Submission {
                if let Some(t) = touched.iter_mut().find(|t| t.0 == change.doc.0) {
                    // Changed again in this push: read back what it holds.
                    t.2 = None;
                } else {
                    let author = match admitted.create {
                        Some(_) => Some(device.id),
                        None => tx.document(change.doc.0).await?.and_then(|d| d.author),
                    };
                    // Its ops are all the document holds, each a leaf, unless one names an op seen
                    // (a device's first change sees nothing; one that does is read back).
                    let whole = admitted.create.is_some()
                        && known == 0
                        && change.ops.iter().all(|op| op.seen.is_empty());
                    touched.push((change.doc.0, author, whole.then_some(index)));
                }
            }
            far_future |= clock::is_far_future(change.hlc, now_ms);
            if admitted.new_comment {
                // The author of a comment is the credential that created it, never a claim.
                let hlc = tick_after(tx.as_mut(), change.doc.0).await?;
                let label =
                    device.name.clone().unwrap_or_else(|| format!("{} {}", device.role.as_str(), device.id));
                let author = Change {
                    doc: change.doc,
                    collection: Collection::Comment,
                    replica: self.replica,
                    hlc,
                    ops: vec![doc::Comment::author_op(&label)],
                };
                apply_change(tx.as_mut(), device.project, None, &author, now_ms as i64).await?;
            }
        }
        if far_future {
            tx.flag_far_future(device.id, now_ms as i64).await?;
        }
        for (doc, author, created_by) in touched {
            match created_by.and_then(|i| prepared.get_mut(i)).and_then(|p| p.row.take()) {
                Some(parts) => {
                    read_model::refresh_created(
                        tx.as_mut(),
                        &self.forms,
                        parts,
                        doc,
                        device.project,
                        author,
                        now_ms as i64,
                    )
                    .await?
                }
                None => {
                    read_model::refresh(tx.as_mut(), &self.forms, doc, device.project, author, now_ms as i64)
                        .await?
                }
            }
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// One page of what the device may see after its cursor: the snapshot of current state
    /// first, then the log. Pages hold at most `limit` changes and about
    /// [`limits::MAX_PAGE_BYTES`] (one oversized document or change alone may pass it, and
    /// documents are bounded well below it).
    pub async fn pull(&self, device: &Device, cursor: Cursor, limit: usize) -> Result<PullPage> {
        let limit = limit.clamp(1, MAX_PAGE_CHANGES);
        let scope = Scope::of(device);
        let mut tx = self.read().await?;
        let (upto, after, from_start) = match cursor {
            Cursor::Log(after) => {
                let (entries, stopped) = tx.log_page(&scope, after, limit, limits::MAX_PAGE_BYTES).await?;
                let last = entries.last().map_or(after, |(seq, _)| *seq);
                let changes = entries.into_iter().map(|(_, body)| body).collect();
                if stopped {
                    return Ok(PullPage { changes, cursor: Cursor::Log(last), more: true });
                }
                // Everything up to the end of the log as this transaction sees it was scanned.
                let end = tx.log_end().await?.max(last);
                return Ok(PullPage { changes, cursor: Cursor::Log(end), more: false });
            }
            Cursor::Start => (tx.log_end().await?, Uuid::nil(), true),
            Cursor::Snapshot { upto, after } => (upto, after, false),
        };
        // From the start, the bound includes the smallest id; later it is the last one sent.
        let docs = tx.scope_documents(&scope, after, from_start, limit).await?;
        let exhausted = docs.len() < limit;
        let mut changes = Vec::new();
        let mut bytes = 0;
        let mut last = after;
        for (i, (doc, collection)) in docs.iter().enumerate() {
            let ops = tx.field_ops(*doc).await?;
            let snapshot = snapshot::changes(*doc, *collection, &ops)?;
            let size: usize = snapshot.iter().map(String::len).sum();
            if !changes.is_empty() && bytes + size > limits::MAX_PAGE_BYTES {
                // This document starts the next page.
                return Ok(PullPage { changes, cursor: Cursor::Snapshot { upto, after: last }, more: true });
            }
            bytes += size;
            changes.extend(snapshot);
            last = *doc;
            if changes.len() >= limit && i + 1 < docs.len() {
                return Ok(PullPage { changes, cursor: Cursor::Snapshot { upto, after: last }, more: true });
            }
        }
        if exhausted {
            let more = tx.log_end().await? > upto;
            Ok(PullPage { changes, cursor: Cursor::Log(upto), more })
        } else {
            Ok(PullPage { changes, cursor: Cursor::Snapshot { upto, after: last }, more: true })
        }
    }

    pub async fn document(&self, doc: DocId) -> Result<Option<DocumentInfo>> {
        self.read().await?.document(doc.0).await
    }

    /// A coordinator's review, written by the server's replica: it replaces every open review
    /// state it can order after, and its comment (if any) is a comment document on the
    /// submission.
    pub async fn review(&self, review: &Review) -> Result<ReviewOutcome> {
        rules::check_review(&review.state, review.comment.as_deref())?;
        let sub = review.submission.0;
        let mut tx = self.write().await?;
        let author = match tx.document(sub).await? {
            Some(r) if r.project == review.project && r.collection == Collection::Submission => r.author,
            _ => return Err(StorageError::NotFound(format!("submission {sub}"))),
        };
        let hlc = tick_after(tx.as_mut(), sub).await?;
        let open = tx.open_op_ids(sub, doc::meta::REVIEW_STATE).await?;
        // One stamped beyond the clock bound (a coordinator device's clock far ahead) stays
        // open, as a conflict.
        let seen: Vec<OpId> = open.into_iter().filter(|id| id.hlc < hlc).collect();
        let change = Change {
            doc: review.submission,
            collection: Collection::Submission,
            replica: self.replica,
            hlc,
            ops: vec![doc::review_op(&review.state, seen)],
        };
        let now = review.now_ms as i64;
        apply_change(tx.as_mut(), review.project, None, &change, now).await?;
        let mut comment_doc = None;
        if let Some(text) = review.comment.as_ref().filter(|c| !c.trim().is_empty()) {
            let doc = DocId::new();
            tx.insert_document(&NewDocument {
                doc: doc.0,
                project: review.project,
                collection: Collection::Comment,
                author: review.author,
                parent: Some(sub),
                audience: Vec::new(),
            })
            .await?;
            let comment = doc::Comment {
                submission: review.submission,
                text: text.clone(),
                author: Some(review.author_label.clone()),
                review_state: Some(review.state.clone()),
            };
            let change = Change {
                doc,
                collection: Collection::Comment,
                replica: self.replica,
                hlc,
                ops: comment.ops(),
            };
            apply_change(tx.as_mut(), review.project, None, &change, now).await?;
            comment_doc = Some(doc);
        }
        read_model::refresh(tx.as_mut(), &self.forms, sub, review.project, author, now).await?;
        tx.commit().await?;
        Ok(ReviewOutcome { submission: review.submission, state: review.state.clone(), comment: comment_doc })
    }

    /// A coordinator's resolution of a conflict: the server writes the value kept (one of the
    /// field's open values) having seen every open value, so the conflict closes on every replica.
    pub async fn resolve(
        &self,
        project: Uuid,
        doc: DocId,
        field: &str,
        keep: OpId,
        now_ms: i64,
    ) -> Result<()> {
        self.write_answer(project, doc, field, Answer::Keep(keep), now_ms).await
    }

    /// A coordinator's edit of an answer (from the web app or the API), typed as the form's
    /// question takes it ([`rules::typed_answer`]) and written by the server's replica having
    /// seen every open value of the field; the history keeps every earlier value.
    pub async fn edit_answer(
        &self,
        project: Uuid,
        doc: DocId,
        field: &str,
        input: rules::AnswerInput,
        now_ms: i64,
    ) -> Result<()> {
        if field.starts_with('_') || field.split('/').any(|s| s.starts_with('_')) {
            return Err(StorageError::Forbidden("metadata fields are not edited as answers".into()));
        }
        self.write_answer(project, doc, field, Answer::New(input), now_ms).await
    }

    async fn write_answer(
        &self,
        project: Uuid,
        doc: DocId,
        field: &str,
        answer: Answer,
        now_ms: i64,
    ) -> Result<()> {
        let path = tejido_core::FieldPath::parse(field)
            .map_err(|_| StorageError::Invalid("that is not a field of the submission".into()))?;
        let mut tx = self.write().await?;
        let author = match tx.document(doc.0).await? {
            Some(r) if r.project == project && r.collection == Collection::Submission => r.author,
            _ => return Err(StorageError::NotFound(format!("submission {}", doc.0))),
        };
        let ops = tx.field_ops(doc.0).await?;
        let open: Vec<&StoredOp> =
            ops.iter().filter(|o| o.field == field && o.leaf && o.value.is_some()).collect();
        let value = match answer {
            Answer::New(input) => {
                let win = read_model::winners(&ops);
                let meta_of = |name: &str| {
                    win.iter()
                        .find(|(f, _, _)| *f == name)
                        .and_then(|(_, _, v)| serde_json::from_str::<String>(v).ok())
                };
                let form = match (meta_of(doc::meta::FORM), meta_of(doc::meta::FORM_VERSION)) {
                    (Some(id), Some(version)) => self.forms.get(tx.as_mut(), project, &id, &version).await?,
                    _ => None,
                };
                let value = rules::typed_answer(form.as_deref(), field, input)?;
                if value.to_string().len() > limits::MAX_EDIT_BYTES {
                    return Err(StorageError::TooLarge(format!(
                        "an answer has at most {} bytes",
                        limits::MAX_EDIT_BYTES
                    )));
                }
                value
            }
            Answer::Keep(keep) => {
                if open.len() < 2 {
                    return Err(StorageError::Conflict(
                        "that field has no open conflict (someone may have resolved it)".into(),
                    ));
                }
                let Some(kept) = open.iter().find(|o| o.id == keep).and_then(|o| o.value.as_deref()) else {
                    return Err(StorageError::Conflict("that value is no longer open".into()));
                };
                serde_json::from_str(kept)
                    .map_err(|e| StorageError::Other(format!("a stored value does not parse: {e}")))?
            }
        };
        let hlc = tick_after(tx.as_mut(), doc.0).await?;
        let seen: Vec<OpId> = open.iter().map(|o| o.id).filter(|id| id.hlc < hlc).collect();
        let change = Change {
            doc,
            collection: Collection::Submission,
            replica: self.replica,
            hlc,
            ops: vec![tejido_core::FieldOp { field: path, value, seen }],
        };
        apply_change(tx.as_mut(), project, None, &change, now_ms).await?;
        read_model::refresh(tx.as_mut(), &self.forms, doc.0, project, author, now_ms).await?;
        tx.commit().await
    }

    /// The media type of a blob that the submission refers to (for the web app's photos), if
    /// its bytes are held.
    pub async fn submission_blob(&self, doc: Uuid, sha256: &str) -> Result<Option<(Uuid, String)>> {
        let mut tx = self.read().await?;
        let Some(state) = tx.submission_state(doc).await? else { return Ok(None) };
        let ops = tx.field_ops(doc).await?;
        let referred = ops.iter().any(|o| {
            o.value
                .as_deref()
                .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
                .is_some_and(|v| parse_attachment_ref(&v) == Some(sha256))
        });
        if !referred {
            return Ok(None);
        }
        Ok(tx.blob_media_type(state.project, sha256).await?.map(|m| (state.project, m)))
    }

    /// The form versions published in a project, parsed: (form id, version, form).
    pub async fn project_forms(
        &self,
        project: Uuid,
    ) -> Result<Vec<(String, String, Arc<tejido_core::form::Form>)>> {
        let mut tx = self.read().await?;
        let mut out = Vec::new();
        for (form_id, version) in tx.form_versions(project).await? {
            if let Some(form) = self.forms.get(tx.as_mut(), project, &form_id, &version).await? {
                out.push((form_id, version, form));
            }
        }
        Ok(out)
    }

    /// Publishes a form version; published versions are immutable. Its media files (whose
    /// bytes are already blobs) must be exactly those the form needs; they go into the form
    /// as its `media` map and onto the form document as attachment references, so every device
    /// the version is published to may download them, and no other.
    pub async fn publish_form(&self, form: &PublishForm) -> Result<PublishOutcome> {
        let (content, media) = with_media(&form.form, &form.media)?;
        let hash = hex::encode(Sha256::digest(content.to_string().as_bytes()));
        let mut tx = self.write().await?;
        if tx.project(form.project).await?.is_none() {
            return Err(StorageError::NotFound(format!("project {}", form.project)));
        }
        match tx.form(form.project, &form.form_id, &form.version).await? {
            Some(r) if r.content_hash == hash => {
                return Ok(PublishOutcome { doc: DocId(r.doc), published: false })
            }
            Some(_) => {
                return Err(StorageError::Conflict(format!(
                    "form {} version {} is already published with other content; published versions \
                     are immutable, so give the change a new version",
                    form.form_id, form.version
                )))
            }
            None => {}
        }
        let doc = DocId::new();
        tx.insert_document(&NewDocument {
            doc: doc.0,
            project: form.project,
            collection: Collection::Form,
            author: None,
            parent: None,
            audience: form.roles.clone(),
        })
        .await?;
        let hlc = tick_after(tx.as_mut(), doc.0).await?;
        let published = doc::PublishedForm {
            form_id: form.form_id.clone(),
            version: form.version.clone(),
            roles: form.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            form: content,
        };
        let mut ops = published.ops();
        for m in media {
            ops.push(doc::PublishedForm::media_op(&m.sha256).ok_or_else(|| {
                StorageError::Invalid(format!("media file {} has no valid SHA-256", m.name))
            })?);
            tx.insert_blob_owner(&BlobOwner {
                sha256: &m.sha256,
                project: form.project,
                // Published by the server, not uploaded by a device.
                device: self.replica.0,
                size: m.size,
                media_type: blobs::allowed_media_type(media_type_of(&m.name)),
                created_ms: form.now_ms as i64,
            })
            .await?;
            tx.insert_blob_ref(&m.sha256, doc.0).await?;
        }
        let change = Change { doc, collection: Collection::Form, replica: self.replica, hlc, ops };
        apply_change(tx.as_mut(), form.project, None, &change, form.now_ms as i64).await?;
        tx.insert_form(
            form.project,
            &form.form_id,
            &form.version,
            &FormRecord { content_hash: hash, doc: doc.0 },
            form.now_ms as i64,
        )
        .await?;
        tx.commit().await?;
        self.forms.published(form.project, &form.form_id, &form.version);
        Ok(PublishOutcome { doc, published: true })
    }

    /// The project's open conflicts: fields with more than one open value.
    pub async fn conflicts(&self, project: Uuid) -> Result<Vec<FieldConflict>> {
        let open = self.read().await?.open_values(project).await?;
        let mut fields: Vec<FieldConflict> = Vec::new();
        for (doc, field, id) in open {
            match fields.last_mut() {
                Some(c) if c.doc == doc && c.field == field => c.ops.push(id.to_string()),
                _ => {
                    // The previous field had one open value: no conflict.
                    if fields.last().is_some_and(|c| c.ops.len() < 2) {
                        fields.pop();
                    }
                    fields.push(FieldConflict { doc, field, ops: vec![id.to_string()] });
                }
            }
        }
        if fields.last().is_some_and(|c| c.ops.len() < 2) {
            fields.pop();
        }
        Ok(fields)
    }

    /// Whether a device may download a blob, and its media type if so: see
    /// [`rules::reference_counts`] for who may.
    pub async fn blob_access(&self, device: &Device, sha256: &str) -> Result<Option<String>> {
        let scope = Scope::of(device);
        let mut tx = self.read().await?;
        let Some(media_type) = tx.blob_media_type(scope.project, sha256).await? else { return Ok(None) };
        let uploader = if scope.everything { None } else { Some(device.id) };
        if tx.blob_uploaded(scope.project, uploader, sha256).await?
            || tx.blob_referenced(&scope, sha256).await?
        {
            return Ok(Some(media_type));
        }
        Ok(None)
    }

    /// Whether this device has uploaded the complete blob.
    pub async fn blob_held(&self, owner: UploadOwner, sha256: &str) -> Result<bool> {
        self.read().await?.blob_uploaded(owner.project, Some(owner.device), sha256).await
    }

    /// Records a verified, complete blob as uploaded by this device, and ends its upload.
    pub async fn record_blob(
        &self,
        device: &Device,
        sha256: &str,
        size: u64,
        media_type: &str,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        tx.insert_blob_owner(&BlobOwner {
            sha256,
            project: device.project,
            device: device.id,
            size,
            media_type: blobs::allowed_media_type(media_type),
            created_ms: now_ms,
        })
        .await?;
        tx.delete_upload(UploadOwner::of(device), sha256).await?;
        tx.commit().await
    }

    pub async fn upload(&self, owner: UploadOwner, sha256: &str) -> Result<Option<UploadInfo>> {
        self.read().await?.upload(owner, sha256).await
    }

    /// Starts (or restarts with another length) a device's upload, within its quota of bytes
    /// in progress.
    pub async fn start_upload(
        &self,
        owner: UploadOwner,
        sha256: &str,
        length: u64,
        media_type: &str,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let others = tx.upload_bytes(owner.device, sha256).await?;
        blobs::check_quota(others, length)?;
        let info = UploadInfo { length, media_type: blobs::allowed_media_type(media_type).to_owned() };
        tx.put_upload(owner, sha256, &info, now_ms).await?;
        tx.commit().await
    }

    pub async fn end_upload(&self, owner: UploadOwner, sha256: &str) -> Result<()> {
        let mut tx = self.write().await?;
        tx.delete_upload(owner, sha256).await?;
        tx.commit().await
    }

    /// Waits (at most `wait`) until no request holds the lease on an upload: true once it is
    /// free, false if it is still held when the wait ends. Reads only, so waiting holds up no
    /// writer.
    pub async fn upload_lease_settled(
        &self,
        owner: UploadOwner,
        sha256: &str,
        wait: std::time::Duration,
    ) -> Result<bool> {
        let until = std::time::Instant::now() + wait;
        loop {
            let mut tx = self.read().await?;
            let held = tx.upload_lease_held(owner, sha256, crate::now_ms()).await?;
            drop(tx);
            if !held {
                return Ok(true);
            }
            if std::time::Instant::now() >= until {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// Takes the one lease on a device's upload for `lease_ms`, so that only one request (in any
    /// server process) appends to it at a time; `None` while another request holds it.
    pub async fn lease_upload(
        &self,
        owner: UploadOwner,
        sha256: &str,
        lease_ms: i64,
    ) -> Result<Option<UploadLease>> {
        let holder = Uuid::new_v4();
        let now = crate::now_ms();
        let mut tx = self.write().await?;
        let taken = tx.take_upload_lease(owner, sha256, holder, now, now.saturating_add(lease_ms)).await?;
        tx.commit().await?;
        Ok(taken.then(|| UploadLease {
            released: false,
            service: self.clone(),
            owner,
            sha256: sha256.to_owned(),
            holder,
        }))
    }

    /// Uploads that expired (started more than [`limits::UPLOAD_EXPIRY_MS`] before `now_ms`),
    /// at most `limit` of them.
    pub async fn expired_uploads(&self, now_ms: i64, limit: usize) -> Result<Vec<(UploadOwner, String)>> {
        self.read()
            .await?
            .uploads_started_before(now_ms.saturating_sub(limits::UPLOAD_EXPIRY_MS), limit)
            .await
    }
}

/// A fresh server stamp after everything in the document (within the clock bound), read from
/// and saved to the database in this transaction: see [`clock`].
/// Checks a form version's media files by name and size alone: at most
/// [`limits::MAX_FORM_MEDIA_FILES`], each named once with a name a form can use, none over
/// the size bound, and exactly the files the form needs. [`Service::publish_form`] checks the
/// same; the CLI calls this first, so that a refused list stores no bytes.
pub fn check_form_media(form: &serde_json::Value, files: &[(&str, u64)]) -> Result<()> {
    use tejido_core::form::media::{is_media_name, needed_media, MAX_MEDIA_BYTES};
    let bad = StorageError::Invalid;
    if files.len() > limits::MAX_FORM_MEDIA_FILES {
        return Err(bad(format!(
            "a form version carries at most {} media files",
            limits::MAX_FORM_MEDIA_FILES
        )));
    }
    let mut names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    for w in names.windows(2) {
        if w[0] == w[1] {
            return Err(bad(format!("media file {} is given twice", w[0])));
        }
    }
    for (name, size) in files {
        if !is_media_name(name) {
            return Err(bad(format!(
                "{name:?} is not a media file name a form can use (a .csv, .xml or .geojson file name without folders)"
            )));
        }
        if *size > MAX_MEDIA_BYTES as u64 {
            return Err(bad(format!("media file {name} is larger than {MAX_MEDIA_BYTES} bytes")));
        }
    }
    let needed = match serde_json::from_value::<tejido_core::form::Form>(form.clone()) {
        Ok(f) => needed_media(&f),
        // Not a form model this server reads (the storage tests publish bare JSON): it can
        // need no media file, and may be given none.
        Err(_) if files.is_empty() => return Ok(()),
        Err(e) => return Err(bad(format!("the form cannot take media files: it is not a form model ({e})"))),
    };
    let missing: Vec<&str> =
        needed.iter().filter(|n| !names.contains(&n.as_str())).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "the form needs the media files {} and they were not given",
            missing.join(", ")
        )));
    }
    let extra: Vec<&str> = names.iter().copied().filter(|m| !needed.iter().any(|n| n == m)).collect();
    if !extra.is_empty() {
        return Err(bad(format!("the form does not use the media files {}", extra.join(", "))));
    }
    Ok(())
}

/// The form JSON with its `media` map set from `media`, and the files in name order, after
/// checking that they are exactly the files the form needs ([`check_form_media`]).
fn with_media<'m>(
    form: &serde_json::Value,
    media: &'m [MediaFile],
) -> Result<(serde_json::Value, Vec<&'m MediaFile>)> {
    let listed: Vec<(&str, u64)> = media.iter().map(|m| (m.name.as_str(), m.size)).collect();
    check_form_media(form, &listed)?;
    let mut files: Vec<&MediaFile> = media.iter().collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(m) = files.iter().find(|m| !crate::blobs::valid_sha256(&m.sha256)) {
        return Err(StorageError::Invalid(format!("media file {} has no valid SHA-256", m.name)));
    }
    let mut content = form.clone();
    if !files.is_empty() {
        let map: serde_json::Map<String, serde_json::Value> =
            files.iter().map(|m| (m.name.clone(), serde_json::Value::String(m.sha256.clone()))).collect();
        if let Some(obj) = content.as_object_mut() {
            obj.insert("media".into(), serde_json::Value::Object(map));
        }
    }
    Ok((content, files))
}

/// The media type a media file is kept under, from its name.
fn media_type_of(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).as_deref() {
        Some("csv") => "text/csv",
        Some("geojson") => "application/geo+json",
        _ => "application/octet-stream",
    }
}

async fn tick_after(tx: &mut dyn Tx, doc: Uuid) -> Result<Hlc> {
    let wall = crate::now_ms().max(0) as u64;
    let observed = tx.max_stamp(doc, clock::bound(wall)).await?;
    let stored = tx.clock().await?;
    let hlc = clock::next_stamp(stored, observed, wall);
    tx.set_clock(hlc).await?;
    Ok(hlc)
}

/// Merges a change and logs its new ops (if any) as one log entry, holding documents to
/// their bounds. Returns (new, already known) ops.
async fn apply_change(
    tx: &mut dyn Tx,
    project: Uuid,
    writer: Option<&Device>,
    change: &Change,
    now_ms: i64,
) -> Result<(u64, u64)> {
    apply_change_prepared(tx, project, writer, change, now_ms, None).await
}

/// What a pushed change needs encoded, made before the push takes the writer.
struct Prepared {
    /// Each op's value as JSON text.
    values: Vec<String>,
    /// The whole change as wire JSON, as the log keeps it when every op is new.
    body: String,
    /// The read-model row of the submission, if this change creates it.
    row: Option<read_model::RowParts>,
}

impl Prepared {
    fn of(change: &Change, now_ms: i64) -> Result<Prepared> {
        let values: Vec<String> = change.ops.iter().map(|op| op.value.to_string()).collect();
        Ok(Prepared {
            body: encode_change(change)?,
            row: (change.collection == Collection::Submission)
                .then(|| read_model::created_parts(change, &values, now_ms)),
            values,
        })
    }
}

fn encode_change(change: &Change) -> Result<String> {
    serde_json::to_string(change).map_err(|e| StorageError::Other(format!("cannot encode a change: {e}")))
}

/// [`apply_change`] with the change's values and body already encoded (`ready`).
async fn apply_change_prepared(
    tx: &mut dyn Tx,
    project: Uuid,
    writer: Option<&Device>,
    change: &Change,
    now_ms: i64,
    ready: Option<(&Vec<String>, &String)>,
) -> Result<(u64, u64)> {
    let doc = change.doc.0;
    let id = change.op_id();
    let encoded;
    let values: &Vec<String> = match ready {
        Some((values, _)) => values,
        None => {
            encoded = change.ops.iter().map(|op| op.value.to_string()).collect();
            &encoded
        }
    };
    let merge: Vec<MergeOp<'_>> = change
        .ops
        .iter()
        .zip(values)
        .map(|(op, value)| MergeOp { field: op.field.as_str(), value, seen: &op.seen })
        .collect();
    let merged = tx.merge_ops(doc, id, &merge).await?;
    let mut fresh: Vec<usize> = Vec::with_capacity(change.ops.len());
    for (i, op) in change.ops.iter().enumerate() {
        if merged.get(i) == Some(&true) {
            fresh.push(i);
            if let (Some(sha), Some(writer)) = (parse_attachment_ref(&op.value), writer) {
                let uploaded = tx.blob_uploaded(writer.project, Some(writer.id), sha).await?;
                if rules::reference_counts(writer, uploaded) {
                    tx.insert_blob_ref(sha, doc).await?;
                }
            }
        }
    }
    let known = (change.ops.len() - fresh.len()) as u64;
    if fresh.is_empty() {
        return Ok((0, known));
    }
    let encoded_body;
    let body: &str = match ready {
        Some((_, body)) if fresh.len() == change.ops.len() => body,
        _ if fresh.len() == change.ops.len() => {
            encoded_body = encode_change(change)?;
            &encoded_body
        }
        _ => {
            let partial = Change {
                ops: fresh.iter().filter_map(|&i| change.ops.get(i).cloned()).collect(),
                ..change.clone()
            };
            encoded_body = encode_change(&partial)?;
            &encoded_body
        }
    };
    let (ops, bytes) = tx.grow_document(doc, fresh.len() as u64, body.len() as u64).await?;
    if writer.is_some() && (ops > limits::MAX_DOC_OPS || bytes > limits::MAX_DOC_BYTES) {
        return Err(StorageError::TooLarge(format!(
            "document {doc} would hold {ops} values in {bytes} bytes; a document holds at most {} values in {} bytes",
            limits::MAX_DOC_OPS,
            limits::MAX_DOC_BYTES
        )));
    }
    tx.append_log(&LogEntry {
        project,
        doc,
        hlc: change.hlc,
        replica: change.replica,
        device: writer.map(|d| d.id),
        body,
        received_ms: now_ms,
    })
    .await?;
    Ok((fresh.len() as u64, known))
}

/// The lease on one upload: released by [`UploadLease::release`], or (if the request ends
/// another way) as soon as it is dropped; a process that dies leaves it to expire.
pub struct UploadLease {
    released: bool,
    service: Service,
    owner: UploadOwner,
    sha256: String,
    holder: Uuid,
}

impl UploadLease {
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        let mut tx = self.service.write().await?;
        tx.release_upload_lease(self.owner, &self.sha256, self.holder).await?;
        tx.commit().await
    }
}

impl Drop for UploadLease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (service, owner, sha256, holder) =
            (self.service.clone(), self.owner, std::mem::take(&mut self.sha256), self.holder);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let released = async {
                    let mut tx = service.write().await?;
                    tx.release_upload_lease(owner, &sha256, holder).await?;
                    tx.commit().await
                };
                if let Err(e) = released.await {
                    tracing::warn!(error = %e, "an upload lease was left to expire");
                }
            });
        }
    }
}
