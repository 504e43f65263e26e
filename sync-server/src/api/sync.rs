//! Enroll, push and pull.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tejido_core::sync::wire::{EnrollRequest, EnrollResponse, PushRequest, PushResponse, MAX_PUSH_CHANGES};
use uuid::Uuid;

use super::openapi::docs;
use super::{body_error, parse_json, require_json, ApiError, AppState, DeviceAuth};
use crate::secrets::{hash_code, hash_token, new_token};
use crate::storage::{Cursor, Redeem};
use axum::http::HeaderMap;

/// A page of a pull holds at most this many changes, and this many by default.
pub const MAX_PULL_LIMIT: usize = 1_000;
pub const DEFAULT_PULL_LIMIT: usize = 500;

/// Trade an enrollment code for a device token.
#[utoipa::path(post, path = "/v1/enroll", tag = "sync",
    params(docs::ProtocolHeader),
    request_body = docs::EnrollRequest,
    responses(
        (status = 200, body = docs::EnrollResponse, description = "Enrolled; the token is shown once"),
        (status = 400, body = docs::ErrorBody, description = "Malformed request or protocol mismatch"),
        (status = 401, body = docs::ErrorBody, description = "`bad_code`: an unknown, used-up or expired code"),
        (status = 409, body = docs::ErrorBody, description = "The replica is already enrolled"),
    ))]
pub(crate) async fn enroll(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let body = body.map_err(body_error)?;
    let req: EnrollRequest = parse_json(&body, "enroll")?;
    if req.code.is_empty() || req.code.len() > 64 {
        return Err(ApiError::bad_code());
    }
    let token = new_token();
    let redeem = Redeem {
        code_hash: hash_code(&req.code),
        replica: req.replica,
        device_name: req.device_name,
        device_id: Uuid::new_v4(),
        token_hash: hash_token(&token),
        now_ms: crate::now_ms(),
    };
    let enrolled = state.service.redeem_enrollment_code(&redeem).await?;
    tracing::info!(device = %enrolled.device.id, project = %enrolled.project.id, role = enrolled.device.role.as_str(), "enrolled");
    Ok(Json(EnrollResponse {
        device_id: enrolled.device.id,
        token,
        project_id: enrolled.project.id,
        project_name: enrolled.project.name,
        role: enrolled.device.role,
    }))
}

/// Push a bounded batch of changes; applied in one transaction, idempotent.
#[utoipa::path(post, path = "/v1/push", tag = "sync",
    params(docs::ProtocolHeader),
    request_body = docs::PushRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = docs::PushResponse, description = "The whole batch is stored"),
        (status = 400, body = docs::ErrorBody, description = "Malformed batch; nothing written"),
        (status = 401, body = docs::ErrorBody, description = "Missing, unknown or revoked token"),
        (status = 403, body = docs::ErrorBody, description = "A change is outside the device's scope or writes a field its role may not; nothing written"),
        (status = 409, body = docs::ErrorBody, description = "A change contradicts what the server holds; nothing written"),
        (status = 413, body = docs::ErrorBody, description = "Too many changes or bytes, or a document past its size bound; nothing written"),
        (status = 415, body = docs::ErrorBody, description = "The body is not declared as application/json"),
    ))]
pub(crate) async fn push(
    State(state): State<AppState>,
    DeviceAuth(device): DeviceAuth,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PushResponse>, ApiError> {
    require_json(&headers)?;
    let body = body.map_err(body_error)?;
    // Parsed only in its turn, so waiting pushes hold their bytes and no parsed batch.
    let _turn = state.service.push_permit().await?;
    let req: PushRequest = parse_json(&body, "push")?;
    if req.changes.len() > MAX_PUSH_CHANGES {
        return Err(ApiError::too_large(format!("a push may carry at most {MAX_PUSH_CHANGES} changes")));
    }
    let count = req.changes.len();
    let device_id = device.id;
    let now = crate::now_ms().max(0) as u64;
    let outcome = state.service.push(&device, &req.changes, now).await?;
    tracing::info!(
        device = %device_id, changes = count, accepted_ops = outcome.accepted_ops,
        duplicate_ops = outcome.duplicate_ops, bytes = body.len(), "push"
    );
    Ok(Json(PushResponse {
        accepted_ops: outcome.accepted_ops,
        duplicate_ops: outcome.duplicate_ops,
        epoch: Some(state.service.epoch().to_owned()),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PullParams {
    /// The cursor of the last page; absent or empty for a fresh device (which gets a snapshot).
    cursor: Option<String>,
    /// Most changes in the page (1 to 1000, default 500).
    limit: Option<usize>,
}

/// Pull one bounded page of what the device may see after its cursor.
#[utoipa::path(get, path = "/v1/pull", tag = "sync",
    params(docs::ProtocolHeader, PullParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = docs::PullResponse, description = "One page and the cursor after it"),
        (status = 400, body = docs::ErrorBody, description = "A malformed cursor or limit"),
        (status = 401, body = docs::ErrorBody, description = "Missing, unknown or revoked token"),
    ))]
pub(crate) async fn pull(
    State(state): State<AppState>,
    DeviceAuth(device): DeviceAuth,
    params: Result<Query<PullParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) =
        params.map_err(|_| ApiError::bad_request("pull takes ?cursor=<cursor>&limit=<1..1000>"))?;
    let cursor = Cursor::parse(params.cursor.as_deref().unwrap_or(""))
        .ok_or_else(|| ApiError::bad_request("the cursor is not one this server gave out"))?;
    let limit = params.limit.unwrap_or(DEFAULT_PULL_LIMIT);
    if limit == 0 || limit > MAX_PULL_LIMIT {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_PULL_LIMIT}")));
    }
    let device_id = device.id;
    let page = state.service.pull(&device, cursor, limit).await?;
    // The changes are stored as wire JSON: splice them in rather than parse and re-encode.
    let cursor = page.cursor.encode();
    let mut body = String::with_capacity(page.changes.iter().map(|c| c.len() + 1).sum::<usize>() + 64);
    body.push_str("{\"changes\":[");
    for (i, c) in page.changes.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(c);
    }
    body.push_str("],\"cursor\":");
    body.push_str(&serde_json::Value::String(cursor).to_string());
    body.push_str(",\"more\":");
    body.push_str(if page.more { "true" } else { "false" });
    body.push_str(",\"epoch\":");
    body.push_str(&serde_json::Value::String(state.service.epoch().to_owned()).to_string());
    body.push('}');
    tracing::info!(device = %device_id, changes = page.changes.len(), more = page.more, bytes = body.len(), "pull");
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}
