//! Admin operations over HTTP, for the admin token or a coordinator of the project: projects,
//! enrollment codes, devices, reviews and the server's open conflicts.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tejido_core::sync::wire::Role;
use tejido_core::DocId;
use uuid::Uuid;

use super::openapi::docs;
use super::{body_error, parse_json, public_url, ApiError, AppState, Caller};
use crate::secrets::{enrollment_link, hash_code, new_code};
use crate::service::enroll::Expiry;
use crate::storage::{Device, FieldConflict, NewEnrollmentCode, Review, ReviewOutcome};

fn parse_uuid(s: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(s).map_err(|_| ApiError::bad_request(format!("the {what} in the path is not a UUID")))
}

/// Coordinators of another project get the same answer as for a project that does not exist.
fn check_project(caller: &Caller, project: Uuid) -> Result<(), ApiError> {
    if caller.may_manage(project) {
        Ok(())
    } else {
        Err(ApiError::forbidden("this token cannot manage that project"))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewProject {
    pub name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ProjectView {
    pub id: Uuid,
    pub name: String,
}

/// Create a project (admin token only).
#[utoipa::path(post, path = "/v1/projects", tag = "admin",
    params(docs::ProtocolHeader),
    request_body = NewProject,
    security(("bearer" = [])),
    responses(
        (status = 201, body = ProjectView),
        (status = 403, body = docs::ErrorBody, description = "Not the admin token"),
        (status = 409, body = docs::ErrorBody, description = "The name is taken"),
    ))]
pub(crate) async fn create_project(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ProjectView>), ApiError> {
    if !matches!(caller, Caller::Admin) {
        return Err(ApiError::forbidden("only the admin token can create projects"));
    }
    let req: NewProject = parse_json(&body.map_err(body_error)?, "project")?;
    let p = state.service.create_project(&req.name, crate::now_ms()).await?;
    Ok((StatusCode::CREATED, Json(ProjectView { id: p.id, name: p.name })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewEnrollmentCodeRequest {
    #[schema(value_type = String, example = "enumerator")]
    pub role: Role,
    /// How many devices may enroll with it (default 1).
    #[serde(default)]
    pub uses: Option<u32>,
    /// How long it stays valid, e.g. `7d`, `12h`, or `never` (default: a day for coordinator
    /// codes, no expiry for the others).
    #[serde(default)]
    pub expires: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EnrollmentCodeView {
    /// The code; shown once, the server keeps only its hash.
    pub code: String,
    /// The setup link (also what the QR code holds).
    pub link: String,
    pub project_id: Uuid,
    #[schema(value_type = String)]
    pub role: Role,
    pub uses: u32,
    pub expires_ms: Option<i64>,
}

/// Create an enrollment code for a role in a project.
#[utoipa::path(post, path = "/v1/projects/{project}/enrollment-codes", tag = "admin",
    params(docs::ProtocolHeader, ("project" = Uuid, Path)),
    request_body = NewEnrollmentCodeRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, body = EnrollmentCodeView),
        (status = 400, body = docs::ErrorBody),
        (status = 403, body = docs::ErrorBody, description = "Not a coordinator of this project"),
        (status = 404, body = docs::ErrorBody),
    ))]
pub(crate) async fn create_enrollment_code(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<EnrollmentCodeView>), ApiError> {
    let project = parse_uuid(&project, "project")?;
    check_project(&caller, project)?;
    let req: NewEnrollmentCodeRequest = parse_json(&body.map_err(body_error)?, "enrollment code")?;
    let uses = req.uses.unwrap_or(1);
    let now = crate::now_ms();
    let expires_ms =
        Expiry::parse(req.expires.as_deref(), now).map_err(ApiError::bad_request)?.resolve(req.role, now);
    let code = new_code();
    let new = NewEnrollmentCode {
        code_hash: hash_code(&code),
        project,
        role: req.role,
        uses,
        expires_ms,
        now_ms: crate::now_ms(),
    };
    state.service.create_enrollment_code(&new).await?;
    let link = enrollment_link(&public_url(&state), &code);
    tracing::info!(project = %project, role = req.role.as_str(), uses, "enrollment code created");
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentCodeView { code, link, project_id: project, role: req.role, uses, expires_ms }),
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeviceView {
    pub id: Uuid,
    pub project_id: Uuid,
    #[schema(value_type = String)]
    pub role: Role,
    pub replica: Uuid,
    pub name: Option<String>,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
    /// When the device last pushed changes stamped far in the future (its clock is wrong).
    pub far_future_ms: Option<i64>,
}

impl From<Device> for DeviceView {
    fn from(d: Device) -> DeviceView {
        DeviceView {
            id: d.id,
            project_id: d.project,
            role: d.role,
            replica: d.replica.0,
            name: d.name,
            created_ms: d.created_ms,
            revoked_ms: d.revoked_ms,
            far_future_ms: d.far_future_ms,
        }
    }
}

/// List a project's devices.
#[utoipa::path(get, path = "/v1/projects/{project}/devices", tag = "admin",
    params(docs::ProtocolHeader, ("project" = Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = Vec<DeviceView>), (status = 403, body = docs::ErrorBody)))]
pub(crate) async fn list_devices(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let project = parse_uuid(&project, "project")?;
    check_project(&caller, project)?;
    let devices = state.service.list_devices(project).await?;
    Ok(Json(devices.into_iter().map(DeviceView::from).collect()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RevokeView {
    pub device: Uuid,
    /// False when it was already revoked.
    pub revoked: bool,
}

/// Revoke a device: its token gets 401 from the next request on.
#[utoipa::path(post, path = "/v1/devices/{device}/revoke", tag = "admin",
    params(docs::ProtocolHeader, ("device" = Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = RevokeView), (status = 404, body = docs::ErrorBody)))]
pub(crate) async fn revoke_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(device): Path<String>,
) -> Result<Json<RevokeView>, ApiError> {
    let id = parse_uuid(&device, "device")?;
    let found = state.service.device(id).await?;
    match found {
        Some(d) if caller.may_manage(d.project) => {}
        _ => return Err(ApiError::not_found("no such device")),
    }
    let revoked = state.service.revoke_device(id, crate::now_ms()).await?;
    tracing::info!(device = %id, "device revoked");
    Ok(Json(RevokeView { device: id, revoked }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReviewRequest {
    /// `approved` or `has_issues`.
    pub state: String,
    /// A comment that reaches the enumerator's phone.
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ReviewView {
    #[schema(value_type = Uuid)]
    pub submission: DocId,
    pub state: String,
    /// The comment document, when a comment was given.
    #[schema(value_type = Option<Uuid>)]
    pub comment: Option<DocId>,
}

impl From<ReviewOutcome> for ReviewView {
    fn from(r: ReviewOutcome) -> ReviewView {
        ReviewView { submission: r.submission, state: r.state, comment: r.comment }
    }
}

/// Set a submission's review state (`_review/state`) and optionally add a comment document;
/// both are written by the server's replica and reach the author's device on its next pull.
#[utoipa::path(post, path = "/v1/submissions/{doc}/review", tag = "admin",
    params(docs::ProtocolHeader, ("doc" = Uuid, Path)),
    request_body = ReviewRequest,
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = ReviewView),
        (status = 400, body = docs::ErrorBody),
        (status = 404, body = docs::ErrorBody, description = "No such submission in the caller's project"),
    ))]
pub(crate) async fn review_submission(
    State(state): State<AppState>,
    writer: super::coordinators::Writer,
    Path(doc): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReviewView>, ApiError> {
    let doc = DocId(parse_uuid(&doc, "submission")?);
    let req: ReviewRequest = parse_json(&body.map_err(body_error)?, "review")?;
    // Checked before the submission is looked up: a bad request is a 400 whatever it names.
    crate::service::rules::check_review(&req.state, req.comment.as_deref())?;
    let info = state.service.document(doc).await?;
    let project = match info {
        Some(i) if writer.may_write(i.project) && i.collection == tejido_core::Collection::Submission => {
            i.project
        }
        _ => return Err(ApiError::not_found("no such submission")),
    };
    let review = Review {
        project,
        submission: doc,
        state: req.state,
        comment: req.comment,
        author: writer.device_id(),
        author_label: writer.label(),
        now_ms: crate::now_ms().max(0) as u64,
    };
    let outcome = state.service.review(&review).await?;
    tracing::info!(submission = %doc, state = %outcome.state, "reviewed");
    Ok(Json(outcome.into()))
}

/// List the project's open conflicts on the server.
#[utoipa::path(get, path = "/v1/projects/{project}/conflicts", tag = "admin",
    params(docs::ProtocolHeader, ("project" = Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = Vec<docs::FieldConflict>), (status = 403, body = docs::ErrorBody)))]
pub(crate) async fn list_conflicts(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
) -> Result<Json<Vec<FieldConflict>>, ApiError> {
    let project = parse_uuid(&project, "project")?;
    check_project(&caller, project)?;
    Ok(Json(state.service.conflicts(project).await?))
}
