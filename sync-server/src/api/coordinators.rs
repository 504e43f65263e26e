//! The coordinators' read API: the submissions of a project (the read model, filtered and
//! paged by keyset) and one submission with its answers, history, conflicts and comments. For
//! a signed-in user of the web app (session cookie) or a bearer token (the admin token, or a
//! coordinator device of the project). Another project's submissions are a 404, and so are
//! submissions not yet approved when the project holds the API to approved ones.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::Json;
use serde::Serialize;
use uuid::Uuid;

use super::openapi::docs;
use super::{ApiError, AppState, Caller};
use crate::service::accounts::Account;
use crate::service::read_model::{CommentView, FieldValue, Flag, MAX_LIST_LIMIT};
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
