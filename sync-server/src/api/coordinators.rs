//! The coordinators' read API: the submissions of a project (the read model, filtered and
//! paged by keyset) and one submission with its answers, history, conflicts and comments. For
//! a signed-in user of the web app (session cookie) or a bearer token (the admin token, or a
//! coordinator device of the project). Another project's submissions are a 404, and so are
//! submissions not yet approved when the project holds the API to approved ones.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::Json;
use serde::{Deserialize, Serialize};
use tejido_core::DocId;
use uuid::Uuid;

use super::openapi::docs;
use super::{body_error, parse_json, ApiError, AppState, Caller};
use crate::service::accounts::Account;
use crate::service::read_model::{CommentView, FieldValue, Flag, MAX_LIST_LIMIT};
use crate::service::rules::AnswerInput;
use crate::storage::SubmissionState;
use crate::web::ListQuery;

/// Who reads: a web app user, or a bearer token.
pub enum Reader {
    User(Account),
    Token(Caller),
}

impl Reader {
    fn may_read(&self, project: Uuid) -> bool {
        match self {
            Reader::User(a) => a.role_in(project).is_some(),
            Reader::Token(c) => c.may_manage(project),
        }
    }
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if parts.headers.get(axum::http::header::AUTHORIZATION).is_none() {
            if let Some((_, account)) = crate::web::session_of(state, &parts.headers).await? {
                return Ok(Reader::User(account));
            }
        }
        Ok(Reader::Token(Caller::from_request_parts(parts, state).await?))
    }
}

/// Who writes (reviews, edits, resolves): a bearer token, or a web app user whose request
/// carries the session's CSRF token in `X-CSRF-Token` (a cookie alone is refused, so another
/// site cannot write through a signed-in browser).
pub enum Writer {
    User(Account),
    Token(Caller),
}

/// The header a session's JSON writes carry its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

impl Writer {
    pub fn may_write(&self, project: Uuid) -> bool {
        match self {
            Writer::User(a) => a.role_in(project).is_some(),
            Writer::Token(c) => c.may_manage(project),
        }
    }

    /// The name a review's comment is signed with.
    pub fn label(&self) -> String {
        match self {
            Writer::User(a) => a.user.email.clone(),
            Writer::Token(c) => c.label(),
        }
    }

    /// The coordinator device that writes, if a device does.
    pub fn device_id(&self) -> Option<Uuid> {
        match self {
            Writer::User(_) => None,
            Writer::Token(c) => c.device_id(),
        }
    }
}

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if parts.headers.get(axum::http::header::AUTHORIZATION).is_none() {
            if let Some((session, account)) = crate::web::session_of(state, &parts.headers).await? {
                let given = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
                if !crate::secrets::same_secret(given, &session.csrf) {
                    return Err(ApiError::forbidden(format!(
                        "a signed-in write needs the session's CSRF token in {CSRF_HEADER}"
                    )));
                }
                return Ok(Writer::User(account));
            }
        }
        Ok(Writer::Token(Caller::from_request_parts(parts, state).await?))
    }
}

/// One row of the submissions list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SubmissionSummary {
    pub doc: Uuid,
    pub project: Uuid,
    pub form_id: String,
    pub form_version: String,
    #[schema(required = true)]
    pub author_device: Option<Uuid>,
    /// `pending`, `approved` or `has_issues`.
    pub review_state: String,
    pub finalized: bool,
    pub deleted: bool,
    /// Fields with open conflicts.
    pub conflicts: u32,
    /// `conflicts`, `edited_after_delete`, `clock_far_off`, `short_interview`, `required_missing`.
    pub flags: Vec<String>,
    /// Seconds from the form's `start` to its `end`.
    #[schema(required = true)]
    pub duration_s: Option<i64>,
    /// When the server first got it (ms since 1970).
    pub received_ms: i64,
    pub updated_ms: i64,
}

impl From<&SubmissionState> for SubmissionSummary {
    fn from(s: &SubmissionState) -> SubmissionSummary {
        SubmissionSummary {
            doc: s.doc,
            project: s.project,
            form_id: s.form_id.clone(),
            form_version: s.form_version.clone(),
            author_device: s.author_device,
            review_state: s.review_state.clone(),
            finalized: s.finalized,
            deleted: s.deleted,
            conflicts: s.conflicts,
            flags: Flag::of(s.flags).into_iter().map(|f| f.name().to_owned()).collect(),
            duration_s: s.duration_s,
            received_ms: s.received_ms,
            updated_ms: s.updated_ms,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SubmissionList {
    pub submissions: Vec<SubmissionSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub next_cursor: Option<String>,
}

/// One op of a field's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct FieldValueView {
    pub op: String,
    /// Any JSON value; null for an op the server has not received.
    #[schema(value_type = Value)]
    pub value: Option<serde_json::Value>,
    pub open: bool,
    pub written_ms: u64,
    pub writer: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct FieldHistory {
    pub field: String,
    /// Greatest op first: the winner is the first open value.
    pub values: Vec<FieldValueView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CommentItem {
    pub doc: Uuid,
    pub text: String,
    #[schema(required = true)]
    pub author: Option<String>,
    #[schema(required = true)]
    pub review_state: Option<String>,
    pub written_ms: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SubmissionView {
    #[serde(flatten)]
    pub summary: SubmissionSummary,
    #[schema(required = true)]
    pub author_name: Option<String>,
    /// Every answer's winning value by field path (`roster/<row>/age` in repeats).
    #[schema(value_type = Object)]
    pub answers: serde_json::Value,
    /// Fields with more than one open value.
    pub conflicted_fields: Vec<String>,
    pub history: Vec<FieldHistory>,
    pub comments: Vec<CommentItem>,
}

fn value_view(v: FieldValue) -> FieldValueView {
    FieldValueView { op: v.op, value: v.value, open: v.open, written_ms: v.written_ms, writer: v.writer }
}

fn comment_item(c: CommentView) -> CommentItem {
    CommentItem {
        doc: c.doc,
        text: c.text,
        author: c.author,
        review_state: c.review_state,
        written_ms: c.written_ms,
    }
}

/// List a project's submissions, newest first.
#[utoipa::path(get, path = "/v1/projects/{project}/submissions", tag = "coordinators",
    params(docs::ProtocolHeader, ("project" = Uuid, Path),
        ("form" = Option<String>, Query, description = "A form id"),
        ("review" = Option<String>, Query, description = "pending, approved or has_issues"),
        ("author" = Option<Uuid>, Query, description = "The device that created it"),
        ("from" = Option<String>, Query, description = "Received on or after this day (YYYY-MM-DD, UTC)"),
        ("to" = Option<String>, Query, description = "Received on or before this day"),
        ("flag" = Option<String>, Query, description = "A quality flag"),
        ("field" = Option<String>, Query, description = "A question's field path, with value"),
        ("value" = Option<String>, Query, description = "The answer the field must have"),
        ("cursor" = Option<String>, Query), ("limit" = Option<u32>, Query, description = "At most 500; 100 by default")),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = SubmissionList), (status = 404, body = docs::ErrorBody)))]
pub(crate) async fn list_submissions(
    State(state): State<AppState>,
    reader: Reader,
    Path(project): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<SubmissionList>, ApiError> {
    let project = Uuid::try_parse(&project).map_err(|_| ApiError::not_found("no such project"))?;
    if !reader.may_read(project) {
        return Err(ApiError::not_found("no such project"));
    }
    let mut filter = q.filter(project).map_err(ApiError::bad_request)?;
    // Under the review gate the API holds to approved submissions only.
    if state.service.approved_only(project).await? {
        if filter.review_state.as_deref().is_some_and(|s| s != "approved") {
            return Ok(Json(SubmissionList { submissions: Vec::new(), next_cursor: None }));
        }
        filter.review_state = Some("approved".into());
    }
    let limit = match q.limit.as_deref() {
        None | Some("") => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIST_LIMIT).contains(l))
            .ok_or_else(|| ApiError::bad_request(format!("limit is between 1 and {MAX_LIST_LIMIT}")))?,
    };
    let page = state.service.list_submissions(&filter, limit).await?;
    Ok(Json(SubmissionList {
        submissions: page.rows.iter().map(SubmissionSummary::from).collect(),
        next_cursor: page.next,
    }))
}

/// One submission: answers, history of every field, conflicts and comments.
#[utoipa::path(get, path = "/v1/submissions/{doc}", tag = "coordinators",
    params(docs::ProtocolHeader, ("doc" = Uuid, Path)),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = SubmissionView), (status = 404, body = docs::ErrorBody)))]
pub(crate) async fn get_submission(
    State(state): State<AppState>,
    reader: Reader,
    Path(doc): Path<String>,
) -> Result<Json<SubmissionView>, ApiError> {
    let doc = Uuid::try_parse(&doc).map_err(|_| ApiError::not_found("no such submission"))?;
    let detail = state.service.submission_detail(doc).await?;
    let Some(d) = detail.filter(|d| reader.may_read(d.state.project)) else {
        return Err(ApiError::not_found("no such submission"));
    };
    if d.state.review_state != "approved" && state.service.approved_only(d.state.project).await? {
        return Err(ApiError::not_found(
            "no such approved submission (the project holds the API to approved ones)",
        ));
    }
    let answers = serde_json::from_str(&d.state.answers).unwrap_or_else(|_| serde_json::json!({}));
    let conflicted_fields = d
        .fields
        .iter()
        .filter(|(_, v)| v.iter().filter(|x| x.open).count() > 1)
        .map(|(f, _)| f.clone())
        .collect();
    Ok(Json(SubmissionView {
        summary: SubmissionSummary::from(&d.state),
        author_name: d.author_name,
        answers,
        conflicted_fields,
        history: d
            .fields
            .into_iter()
            .map(|(field, values)| FieldHistory {
                field,
                values: values.into_iter().map(value_view).collect(),
            })
            .collect(),
        comments: d.comments.into_iter().map(comment_item).collect(),
    }))
}

/// Export a form's submissions as a stream: a zip of CSV files (one per repeat, joined by
/// keys), an XLSX workbook or GeoJSON. Deleted submissions are left out; under the review gate,
/// approved ones only.
#[utoipa::path(get, path = "/v1/projects/{project}/export", tag = "coordinators",
    params(docs::ProtocolHeader, ("project" = Uuid, Path),
        ("form" = String, Query, description = "The form id"),
        ("format" = Option<String>, Query, description = "csv (a zip, the default), xlsx or geojson"),
        ("headers" = Option<String>, Query, description = "names (the default) or labels"),
        ("lang" = Option<String>, Query, description = "The language of labels: es, en")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The file, streamed", content_type = "application/octet-stream"),
        (status = 404, body = docs::ErrorBody, description = "No such project or form for the caller"),
    ))]
pub(crate) async fn export(
    State(state): State<AppState>,
    reader: Reader,
    Path(project): Path<String>,
    Query(q): Query<crate::web::ExportQuery>,
) -> Result<axum::response::Response, ApiError> {
    let project = Uuid::try_parse(&project).map_err(|_| ApiError::not_found("no such project"))?;
    if !reader.may_read(project) {
        return Err(ApiError::not_found("no such project"));
    }
    crate::web::export_response(&state, project, &q).await.map_err(|r| match r {
        crate::web::ExportRefusal::NotFound => ApiError::not_found("no such form in this project"),
        crate::web::ExportRefusal::Bad(m) => ApiError::bad_request(m),
        crate::web::ExportRefusal::Failed(e) => e.into(),
    })
}

/// A coordinator's edit of one answer.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditRequest {
    /// The field path (`roster/<row>/age` in repeats); metadata fields (`_…`) are refused.
    pub field: String,
    /// The new answer: any JSON. A string is typed as the form's question takes it (a number for
    /// integer and decimal questions; empty clears the answer), as in the web app; a numeric
    /// question takes only a number or null.
    #[schema(value_type = Value)]
    pub value: serde_json::Value,
}

/// Which open value of a conflicted field to keep.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveRequest {
    pub field: String,
    /// The op id (`hlc-replica`) of the value to keep, as the submission's history names it.
    pub op: String,
}

/// The submission a write names, if the writer may write to its project.
async fn writable(state: &AppState, writer: &Writer, doc: &str) -> Result<(DocId, Uuid), ApiError> {
    let doc = DocId(Uuid::try_parse(doc).map_err(|_| ApiError::not_found("no such submission"))?);
    match state.service.document(doc).await? {
        Some(i) if i.collection == tejido_core::Collection::Submission && writer.may_write(i.project) => {
            Ok((doc, i.project))
        }
        _ => Err(ApiError::not_found("no such submission")),
    }
}

/// The submission's row after a write.
async fn summary(state: &AppState, doc: DocId) -> Result<Json<SubmissionSummary>, ApiError> {
    match state.service.submission_detail(doc.0).await? {
        Some(d) => Ok(Json(SubmissionSummary::from(&d.state))),
        None => Err(ApiError::not_found("no such submission")),
    }
}

/// Edit one answer. The server's replica writes it, having seen every open value of the field
/// (so an edit also ends a conflict on it); the history keeps every earlier value, and the
/// author's device gets it on its next pull.
#[utoipa::path(post, path = "/v1/submissions/{doc}/answers", tag = "coordinators",
    params(docs::ProtocolHeader, ("doc" = Uuid, Path)),
    request_body = EditRequest,
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = SubmissionSummary, description = "The submission's row after the edit"),
        (status = 400, body = docs::ErrorBody, description = "Malformed, or a value the question does not take"),
        (status = 403, body = docs::ErrorBody, description = "A metadata field, or a session write without its CSRF token"),
        (status = 404, body = docs::ErrorBody, description = "No such submission in the caller's projects"),
        (status = 413, body = docs::ErrorBody),
    ))]
pub(crate) async fn edit_answer(
    State(state): State<AppState>,
    writer: Writer,
    Path(doc): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SubmissionSummary>, ApiError> {
    let req: EditRequest = parse_json(&body.map_err(body_error)?, "edit")?;
    let (doc, project) = writable(&state, &writer, &doc).await?;
    state
        .service
        .edit_answer(project, doc, &req.field, AnswerInput::Json(req.value), crate::now_ms())
        .await?;
    tracing::info!(submission = %doc.0, "an answer was edited through the API");
    summary(&state, doc).await
}

/// Resolve a conflict: keep one of a field's open values. The server's replica writes it,
/// having seen every open value.
#[utoipa::path(post, path = "/v1/submissions/{doc}/resolve", tag = "coordinators",
    params(docs::ProtocolHeader, ("doc" = Uuid, Path)),
    request_body = ResolveRequest,
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = SubmissionSummary, description = "The submission's row after the resolution"),
        (status = 400, body = docs::ErrorBody),
        (status = 403, body = docs::ErrorBody, description = "A session write without its CSRF token"),
        (status = 404, body = docs::ErrorBody, description = "No such submission in the caller's projects"),
        (status = 409, body = docs::ErrorBody, description = "The field has no open conflict, or that value is no longer open"),
    ))]
pub(crate) async fn resolve(
    State(state): State<AppState>,
    writer: Writer,
    Path(doc): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SubmissionSummary>, ApiError> {
    let req: ResolveRequest = parse_json(&body.map_err(body_error)?, "resolution")?;
    let op: tejido_core::OpId = req.op.parse().map_err(|_| ApiError::bad_request("op is not an op id"))?;
    let (doc, project) = writable(&state, &writer, &doc).await?;
    state.service.resolve(project, doc, &req.field, op, crate::now_ms()).await?;
    tracing::info!(submission = %doc.0, "a conflict was resolved through the API");
    summary(&state, doc).await
}
