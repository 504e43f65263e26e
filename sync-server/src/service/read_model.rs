//! The read model: one row per submission with its current state (winning values, open
//! conflicts, review state, form and version, times, quality flags), rewritten in the same
//! transaction as every change applied to it, so the coordinators' list is never behind the log.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tejido_core::doc::{meta, PublishedForm};
use tejido_core::form::{Form, QuestionType};
use tejido_core::{Hlc, OpId};
use uuid::Uuid;

use super::clock;
use crate::blobs::BlobBytes;
use crate::storage::{Result, StorageError, StoredOp, SubmissionState, Tx, PENDING_REVIEW};

/// Quality flags, computed when a change arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Flag {
    /// Some field holds concurrent values nobody has resolved.
    Conflicts = 1,
    /// Deleted, and edited after the delete.
    EditedAfterDelete = 2,
    /// Written with a clock far ahead of the server's.
    ClockFarOff = 4,
    /// The interview took under a third of the form's median.
    ShortInterview = 8,
    /// Finalized with a required answer missing (cleared by an edit, or never given).
    RequiredMissing = 16,
}

impl Flag {
    pub const ALL: [Flag; 5] = [
        Flag::Conflicts,
        Flag::EditedAfterDelete,
        Flag::ClockFarOff,
        Flag::ShortInterview,
        Flag::RequiredMissing,
    ];

    pub fn bit(self) -> u32 {
        self as u32
    }

    pub fn name(self) -> &'static str {
        match self {
            Flag::Conflicts => "conflicts",
            Flag::EditedAfterDelete => "edited_after_delete",
            Flag::ClockFarOff => "clock_far_off",
            Flag::ShortInterview => "short_interview",
            Flag::RequiredMissing => "required_missing",
        }
    }

    pub fn parse(s: &str) -> Option<Flag> {
        Flag::ALL.into_iter().find(|f| f.name() == s)
    }

    /// The flags set in `bits`.
    pub fn of(bits: u32) -> Vec<Flag> {
        Flag::ALL.into_iter().filter(|f| bits & f.bit() != 0).collect()
    }
}

/// An interview is short when under this share of the form's median.
const SHORT_SHARE: f64 = 1.0 / 3.0;
/// Durations a median needs before any interview is called short.
const MIN_DURATIONS: usize = 10;
/// The latest durations a median is taken over.
const MEDIAN_OVER: usize = 501;

/// (project, form id, version).
type FormKey = (Uuid, String, String);

/// Published forms, parsed once (a version is immutable, so a found form is never stale), and
/// for a short while the versions found missing: a push of submissions for a form that is not
/// published asks the database once per [`MISSING_FORM_MS`], not once per submission.
#[derive(Clone, Default)]
pub struct FormCache {
    forms: Arc<Mutex<HashMap<FormKey, Cached>>>,
    /// Where the forms' media files are, once the server has its blobs: the choices of a
    /// `…_from_file` question are read from its file, so that pages and exports show their labels.
    media: Arc<std::sync::OnceLock<Arc<dyn BlobBytes>>>,
}

#[derive(Clone)]
enum Cached {
    Found(Arc<Form>),
    /// Not published when looked up at this instant.
    Missing(std::time::Instant),
}

/// Forms kept parsed at most.
const MAX_CACHED_FORMS: usize = 256;
/// How long a form version found missing is taken as missing. Publishing through this process
/// forgets it at once; another process's publish is seen within this long (a submission that
/// arrived for a form before it was published gets the form's flags at its next change).
pub const MISSING_FORM_MS: u64 = 5_000;

impl FormCache {
    /// The form a submission was filled against, if it is published.
    pub async fn get(
        &self,
        tx: &mut dyn Tx,
        project: Uuid,
        form_id: &str,
        version: &str,
    ) -> Result<Option<Arc<Form>>> {
        let key = (project, form_id.to_owned(), version.to_owned());
        match self.lock().get(&key) {
            Some(Cached::Found(f)) => return Ok(Some(f.clone())),
            Some(Cached::Missing(at)) if at.elapsed().as_millis() < u128::from(MISSING_FORM_MS) => {
                return Ok(None)
            }
            _ => {}
        }
        let form = self.load(tx, project, form_id, version).await?;
        let mut forms = self.lock();
        if forms.len() >= MAX_CACHED_FORMS {
            forms.clear();
        }
        let cached = match &form {
            Some(f) => Cached::Found(f.clone()),
            None => Cached::Missing(std::time::Instant::now()),
        };
        forms.insert(key, cached);
        Ok(form)
    }

    async fn load(
        &self,
        tx: &mut dyn Tx,
        project: Uuid,
        form_id: &str,
        version: &str,
    ) -> Result<Option<Arc<Form>>> {
        let Some(record) = tx.form(project, form_id, version).await? else { return Ok(None) };
        let ops = tx.field_ops(record.doc).await?;
        let Some(text) = winners(&ops).into_iter().find(|(f, _, _)| *f == PublishedForm::FORM).map(|w| w.2)
        else {
            return Ok(None);
        };
        let mut form: Form = serde_json::from_str(text)
            .map_err(|e| StorageError::Other(format!("a published form does not parse: {e}")))?;
        if let Some(blobs) = self.media.get() {
            add_file_choices(&mut form, blobs.as_ref()).await;
        }
        Ok(Some(Arc::new(form)))
    }

    /// Reads the forms' media files from `blobs` from now on (see [`FormCache::media`]).
    pub fn read_media_from(&self, blobs: Arc<dyn BlobBytes>) {
        if self.media.set(blobs).is_ok() {
            // Forms parsed before (a read model rebuilt at start-up) lack their files' choices.
            self.lock().clear();
        }
    }

    /// Forgets that a form version was missing (it has just been published).
    pub fn published(&self, project: Uuid, form_id: &str, version: &str) {
        let key = (project, form_id.to_owned(), version.to_owned());
        let mut forms = self.lock();
        if matches!(forms.get(&key), Some(Cached::Missing(_))) {
            forms.remove(&key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FormKey, Cached>> {
        self.forms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Adds to `form.choice_lists`, under the file's name, the choices of each `…_from_file`
/// question's file (the list [`Form::choices_of`] finds). A file that cannot be read leaves its
/// question showing choice names, as before: it is logged, never an error, so that no push or
/// page fails for it.
async fn add_file_choices(form: &mut Form, blobs: &dyn BlobBytes) {
    use futures_util::StreamExt;
    use tejido_core::form::media::{file_choices, parse_media, MAX_MEDIA_BYTES};
    let files: std::collections::BTreeSet<String> =
        form.nodes.iter().filter_map(|n| n.file.clone()).collect();
    for file in files {
        if form.choice_lists.contains_key(&file) {
            continue;
        }
        let Some(sha) = form.media.get(&file).cloned() else { continue };
        let read = async {
            let mut stream = blobs.read(&sha).await?;
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                if bytes.len() + chunk.len() > MAX_MEDIA_BYTES {
                    return Err(std::io::Error::other("larger than a media file may be"));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok::<_, std::io::Error>(bytes)
        };
        match read.await {
            Ok(bytes) => match parse_media(&file, &bytes) {
                Ok(rows) => {
                    form.choice_lists.insert(file, file_choices(&rows));
                }
                Err(e) => {
                    tracing::warn!(form = %form.settings.form_id, error = %e, "a media file does not read")
                }
            },
            Err(e) => {
                tracing::warn!(form = %form.settings.form_id, file = %file, error = %e, "a media file is missing")
            }
        }
    }
}

/// Each field's winner (field, op id, value JSON) from ops by field, greatest first; and how
/// many of its values are open.
pub fn winners(ops: &[StoredOp]) -> Vec<(&str, OpId, &str)> {
    let mut out: Vec<(&str, OpId, &str)> = Vec::new();
    let mut last: Option<&str> = None;
    for op in ops {
        if last == Some(op.field.as_str()) {
            continue;
        }
        if let (true, Some(v)) = (op.leaf, op.value.as_deref()) {
            out.push((&op.field, op.id, v));
            last = Some(&op.field);
        }
    }
    out
}

/// Fields with more than one open value.
pub fn conflicted_fields(ops: &[StoredOp]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    let mut field: Option<&str> = None;
    let mut open = 0;
    for op in ops {
        if field != Some(op.field.as_str()) {
            field = Some(&op.field);
            open = 0;
        }
        if op.leaf && op.value.is_some() {
            open += 1;
            if open == 2 {
                out.push(&op.field);
            }
        }
    }
    out
}

fn text_of(json: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(json).ok()? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

/// Seconds from the `start` answer to the `end` answer (RFC 3339 times).
fn duration_s(form: &Form, answers: &HashMap<&str, &str>) -> Option<i64> {
    let time = |kind: QuestionType| {
        let node = form.nodes.iter().find(|n| n.kind == kind)?;
        let text = text_of(answers.get(node.path.as_str())?)?;
        chrono::DateTime::parse_from_rfc3339(&text).ok()
    };
    let (start, end) = (time(QuestionType::Start)?, time(QuestionType::End)?);
    let s = (end - start).num_seconds();
    (s >= 0).then_some(s)
}

/// Required questions outside repeats (always required, always relevant) with no answer.
fn required_missing(form: &Form, answers: &HashMap<&str, &str>) -> bool {
    let in_repeat_or_relevant = |mut at: Option<usize>| {
        while let Some(i) = at {
            let Some(n) = form.nodes.get(i) else { return true };
            if n.kind == QuestionType::Repeat || n.relevant.is_some() {
                return true;
            }
            at = n.parent;
        }
        false
    };
    form.nodes.iter().any(|n| {
        let always = matches!(n.required.as_deref(), Some("true()"));
        always
            && n.relevant.is_none()
            && n.kind.is_shown()
            && !n.kind.is_container()
            && n.kind != QuestionType::Note
            && n.calculation.is_none()
            && !in_repeat_or_relevant(n.parent)
            && answers.get(n.path.as_str()).is_none_or(|v| *v == "null" || *v == "\"\"")
    })
}

fn median(mut v: Vec<i64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] as f64 } else { (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0 })
}

/// Rewrites a submission's row from its stored ops.
pub async fn refresh(
    tx: &mut dyn Tx,
    forms: &FormCache,
    doc: Uuid,
    project: Uuid,
    author: Option<Uuid>,
    now_ms: i64,
) -> Result<()> {
    let ops = tx.field_ops(doc).await?;
    let previous = tx.submission_state(doc).await?;
    let received_ms = match &previous {
        Some(p) => p.received_ms,
        None => tx.first_received(doc).await?.unwrap_or(now_ms),
    };
    let row = Row { doc, project, author, now_ms, received_ms };
    write_row(tx, forms, row, ops, previous.as_ref()).await
}

/// The row of a submission that `change` creates, computed from the change alone, before the
/// push takes the writer (so that it runs beside another push's writes): its ops are all the
/// document will hold if the change creates it (each field once, none replaced), there is no
/// earlier row, and it is received now. `values` are its ops' values as JSON text, in order.
/// [`refresh_created`] finishes and writes it.
pub fn created_parts(change: &tejido_core::Change, values: &[String], now_ms: i64) -> RowParts {
    let id = change.op_id();
    let mut ops: Vec<StoredOp> = change
        .ops
        .iter()
        .zip(values)
        .map(|(op, value)| StoredOp {
            field: op.field.as_str().to_owned(),
            id,
            value: Some(value.clone()),
            leaf: true,
        })
        .collect();
    ops.sort_by(|a, b| a.field.cmp(&b.field));
    row_parts(ops, now_ms)
}

/// Writes the row of a submission that a change has just created, in the same transaction,
/// from [`created_parts`] of that change. Reads nothing the push does not already have (but
/// the form, usually cached), which keeps the read model's cost to a push to one row written.
pub async fn refresh_created(
    tx: &mut dyn Tx,
    forms: &FormCache,
    parts: RowParts,
    doc: Uuid,
    project: Uuid,
    author: Option<Uuid>,
    now_ms: i64,
) -> Result<()> {
    let row = Row { doc, project, author, now_ms, received_ms: now_ms };
    finish_row(tx, forms, row, parts, None).await
}

/// What a row needs besides the document's ops.
struct Row {
    doc: Uuid,
    project: Uuid,
    author: Option<Uuid>,
    now_ms: i64,
    received_ms: i64,
}

/// What a submission's row holds that its ops alone decide.
pub struct RowParts {
    /// The winning op of each field, by field.
    ops: Vec<StoredOp>,
    form_id: String,
    form_version: String,
    finalized: bool,
    review_state: String,
    deleted: bool,
    conflicts: u32,
    /// The flags that need no form.
    flags: u32,
    answers: String,
}

/// Computes what a submission's ops (by field, greatest first) decide of its row.
fn row_parts(ops: Vec<StoredOp>, now_ms: i64) -> RowParts {
    let win = winners(&ops);
    let conflicts = conflicted_fields(&ops).len() as u32;
    let value_of = |f: &str| win.iter().find(|w| w.0 == f).and_then(|w| text_of(w.2));
    let form_id = value_of(meta::FORM).unwrap_or_default();
    let form_version = value_of(meta::FORM_VERSION).unwrap_or_default();
    let finalized = value_of(meta::STATUS).as_deref() == Some(meta::FINALIZED);
    let review_state = value_of(meta::REVIEW_STATE).unwrap_or_else(|| PENDING_REVIEW.to_owned());
    let deleted_op = win.iter().find(|(f, _, v)| *f == meta::DELETED && *v == "true").map(|w| w.1);

    let mut answers = String::from("{");
    let mut max_hlc = Hlc::ZERO;
    for (field, id, value) in &win {
        max_hlc = max_hlc.max(id.hlc);
        if field.starts_with('_') || *value == "null" {
            continue;
        }
        if answers.len() > 1 {
            answers.push(',');
        }
        let _ = write!(answers, "{}:{value}", serde_json::Value::from(*field));
    }
    answers.push('}');

    let mut flags = 0;
    if conflicts > 0 {
        flags |= Flag::Conflicts.bit();
    }
    if let Some(deleted) = deleted_op {
        if win.iter().any(|(f, id, _)| *f != meta::DELETED && id.hlc > deleted.hlc) {
            flags |= Flag::EditedAfterDelete.bit();
        }
    }
    if clock::is_far_future(max_hlc, now_ms.max(0) as u64) {
        flags |= Flag::ClockFarOff.bit();
    }
    let deleted = deleted_op.is_some();
    // Keep only the winners (in the same order as `ops`): `finish_row` reads the answers from
    // them without choosing again.
    let mut next = win.iter().peekable();
    let keep: Vec<bool> =
        ops.iter().map(|op| next.next_if(|w| w.1 == op.id && w.0 == op.field).is_some()).collect();
    drop(win);
    let mut ops = ops;
    let mut at = 0;
    ops.retain(|_| {
        at += 1;
        keep[at - 1]
    });
    RowParts { ops, form_id, form_version, finalized, review_state, deleted, conflicts, flags, answers }
}

/// Computes and writes a submission's row from its ops (by field, greatest first) and its
/// previous row.
async fn write_row(
    tx: &mut dyn Tx,
    forms: &FormCache,
    row: Row,
    ops: Vec<StoredOp>,
    previous: Option<&SubmissionState>,
) -> Result<()> {
    let parts = row_parts(ops, row.now_ms);
    finish_row(tx, forms, row, parts, previous).await
}

/// Adds what the form decides (the interview's length, required answers) and writes the row.
async fn finish_row(
    tx: &mut dyn Tx,
    forms: &FormCache,
    row: Row,
    parts: RowParts,
    previous: Option<&SubmissionState>,
) -> Result<()> {
    let Row { doc, project, author, now_ms, received_ms } = row;
    let RowParts {
        ops,
        form_id,
        form_version,
        finalized,
        review_state,
        deleted,
        conflicts,
        mut flags,
        answers,
    } = parts;
    let form =
        if form_id.is_empty() { None } else { forms.get(tx, project, &form_id, &form_version).await? };
    let mut duration = None;
    if let Some(form) = &form {
        let by_field: HashMap<&str, &str> =
            ops.iter().filter_map(|op| Some((op.field.as_str(), op.value.as_deref()?))).collect();
        duration = duration_s(form, &by_field);
        if finalized && required_missing(form, &by_field) {
            flags |= Flag::RequiredMissing.bit();
        }
    }
    if let Some(d) = duration {
        // The median of the form's other interviews, fixed when this one arrived.
        let kept_short =
            previous.is_some_and(|p| p.flags & Flag::ShortInterview.bit() != 0 && p.duration_s == Some(d));
        if kept_short {
            flags |= Flag::ShortInterview.bit();
        } else if previous.is_none_or(|p| p.duration_s != Some(d)) {
            let others = tx.form_durations(project, &form_id, MEDIAN_OVER).await?;
            if others.len() >= MIN_DURATIONS && median(others).is_some_and(|m| (d as f64) < m * SHORT_SHARE) {
                flags |= Flag::ShortInterview.bit();
            }
        }
    }
    tx.put_submission_state(&SubmissionState {
        doc,
        project,
        form_id,
        form_version,
        author_device: author,
        review_state,
        finalized,
        deleted,
        conflicts,
        flags,
        duration_s: duration,
        received_ms,
        updated_ms: now_ms,
        answers,
    })
    .await
}

/// The most rows one list page holds.
pub const MAX_LIST_LIMIT: usize = 500;

/// A page of the list, and the cursor of the next page when there is one.
#[derive(Clone, Debug)]
pub struct SubmissionPage {
    pub rows: Vec<SubmissionState>,
    pub next: Option<String>,
}

/// A list cursor: `<received_ms>.<doc>` of the last row shown.
pub fn parse_cursor(s: &str) -> Option<(i64, Uuid)> {
    let (ms, doc) = s.split_once('.')?;
    Some((ms.parse().ok()?, Uuid::try_parse(doc).ok()?))
}

/// One op of a field's history, for the coordinator's view.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FieldValue {
    /// The op id (`hlc-replica`), which a resolution names.
    pub op: String,
    /// The value (`null` for a placeholder the server has not received).
    pub value: Option<serde_json::Value>,
    /// Still open (not replaced by an op that saw it).
    pub open: bool,
    /// When it was written, by the writer's clock (ms since 1970).
    pub written_ms: u64,
    /// Who wrote it: a device's name, or the server.
    pub writer: String,
}

/// One comment on a submission.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CommentView {
    pub doc: Uuid,
    pub text: String,
    pub author: Option<String>,
    pub review_state: Option<String>,
    pub written_ms: u64,
}

/// Everything a coordinator sees of one submission.
#[derive(Clone, Debug)]
pub struct SubmissionDetail {
    pub state: SubmissionState,
    /// Every field's history, greatest op first, by field path.
    pub fields: Vec<(String, Vec<FieldValue>)>,
    pub comments: Vec<CommentView>,
    pub form: Option<Arc<Form>>,
    /// The author device's name, if it has one.
    pub author_name: Option<String>,
}

impl super::Service {
    /// A page of a project's submissions, newest first.
    pub async fn list_submissions(
        &self,
        filter: &crate::storage::SubmissionFilter,
        limit: usize,
    ) -> Result<SubmissionPage> {
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let mut rows = self.read().await?.submission_states(filter, limit + 1).await?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = rows.last().filter(|_| more).map(|r| format!("{}.{}", r.received_ms, r.doc.simple()));
        Ok(SubmissionPage { rows, next })
    }

    /// A submission's state, history and comments; `None` when it is not a submission.
    pub async fn submission_detail(&self, doc: Uuid) -> Result<Option<SubmissionDetail>> {
        let mut tx = self.read().await?;
        let Some(state) = tx.submission_state(doc).await? else { return Ok(None) };
        let devices = tx.devices(state.project).await?;
        let writer = |id: &OpId| -> String {
            if id.replica == self.replica() {
                return "server".into();
            }
            devices
                .iter()
                .filter(|d| d.replica == id.replica)
                .map(|d| d.name.clone().unwrap_or_else(|| format!("{} {}", d.role.as_str(), d.id)))
                .next()
                .unwrap_or_else(|| format!("replica {}", id.replica))
        };
        let ops = tx.field_ops(doc).await?;
        let mut fields: Vec<(String, Vec<FieldValue>)> = Vec::new();
        for op in &ops {
            if fields.last().is_none_or(|(f, _)| *f != op.field) {
                fields.push((op.field.clone(), Vec::new()));
            }
            if let Some((_, values)) = fields.last_mut() {
                values.push(FieldValue {
                    op: op.id.to_string(),
                    value: op.value.as_deref().and_then(|v| serde_json::from_str(v).ok()),
                    open: op.leaf && op.value.is_some(),
                    written_ms: op.id.hlc.ms(),
                    writer: writer(&op.id),
                });
            }
        }
        let mut comments = Vec::new();
        for c in tx.child_documents(doc).await? {
            let ops = tx.field_ops(c).await?;
            let win = winners(&ops);
            let get = |f: &str| win.iter().find(|w| w.0 == f).and_then(|w| text_of(w.2));
            let Some(text) = get(tejido_core::doc::Comment::TEXT) else { continue };
            comments.push(CommentView {
                doc: c,
                text,
                author: get(tejido_core::doc::Comment::AUTHOR),
                review_state: get(tejido_core::doc::Comment::REVIEW_STATE),
                written_ms: win.iter().map(|w| w.1.hlc.ms()).min().unwrap_or(0),
            });
        }
        let form = if state.form_id.is_empty() {
            None
        } else {
            self.forms.get(tx.as_mut(), state.project, &state.form_id, &state.form_version).await?
        };
        let author_name = state
            .author_device
            .and_then(|a| devices.iter().find(|d| d.id == a))
            .map(|d| d.name.clone().unwrap_or_else(|| format!("{} {}", d.role.as_str(), d.id)));
        Ok(Some(SubmissionDetail { state, fields, comments, form, author_name }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tejido_core::ReplicaId;

    fn op(field: &str, hlc: u64, value: Option<&str>, leaf: bool) -> StoredOp {
        StoredOp {
            field: field.into(),
            id: OpId { hlc: Hlc(hlc), replica: ReplicaId(Uuid::nil()) },
            value: value.map(str::to_owned),
            leaf,
        }
    }

    #[test]
    fn the_winner_is_the_greatest_open_value_and_two_open_values_are_a_conflict() {
        let ops = vec![
            op("a", 9, Some("1"), false),
            op("a", 8, Some("2"), true),
            op("b", 7, Some("3"), true),
            op("b", 6, Some("4"), true),
            op("c", 5, None, true),
            op("c", 4, Some("5"), true),
        ];
        let w: Vec<_> = winners(&ops).into_iter().map(|(f, _, v)| (f, v)).collect();
        assert_eq!(w, vec![("a", "2"), ("b", "3"), ("c", "5")]);
        assert_eq!(conflicted_fields(&ops), vec!["b"]);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![4, 1, 3, 2]), Some(2.5));
        assert_eq!(median(vec![5]), Some(5.0));
        assert_eq!(median(vec![]), None);
    }
}
