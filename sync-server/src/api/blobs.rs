//! Resumable, content-addressed blob upload (`HEAD`/`PATCH`) and download (`GET`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tejido_core::sync::wire::{MAX_BLOB_BYTES, UPLOAD_LENGTH_HEADER, UPLOAD_OFFSET_HEADER};

use super::openapi::docs;
use super::{ApiError, AppState, DeviceAuth};
use crate::blobs::{valid_sha256, BlobBytes, UploadOwner};
use crate::service::blobs as blob_rules;
use crate::storage::Device;

/// The header naming an attachment's media type on upload and download (as the client sends it).
pub const MEDIA_TYPE_HEADER: &str = "upload-media-type";

/// Where an upload stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct BlobStatus {
    pub sha256: String,
    /// Bytes the server holds.
    pub offset: u64,
    /// The blob's full length.
    pub length: u64,
    pub complete: bool,
}

fn check_name(sha256: &str) -> Result<(), ApiError> {
    if valid_sha256(sha256) {
        Ok(())
    } else {
        Err(ApiError::bad_request("a blob is named by its SHA-256: 64 lowercase hex digits"))
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("the {name} header must be a whole number of bytes"))
        }),
    }
}

fn io_error(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "blob storage failed");
    ApiError::internal()
}

fn lease_wait() -> std::time::Duration {
    std::time::Duration::from_millis(crate::service::limits::UPLOAD_LEASE_WAIT_MS)
}

fn status_response(status: StatusCode, s: BlobStatus) -> Response {
    let offset = s.offset;
    let length = s.length;
    let mut res = (status, Json(s)).into_response();
    let h = res.headers_mut();
    h.insert(UPLOAD_OFFSET_HEADER, offset.into());
    h.insert(UPLOAD_LENGTH_HEADER, length.into());
    res
}

/// How many bytes of a blob the server holds from this device (another device's copy counts
/// for nothing: each device proves it holds a blob by sending it).
#[utoipa::path(head, path = "/v1/blobs/{sha256}", tag = "blobs",
    params(docs::ProtocolHeader, ("sha256" = String, Path, description = "The blob's SHA-256 in hex")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "upload-offset: bytes held; upload-length: the length, once known"),
        (status = 400, description = "A malformed name"),
        (status = 401, description = "Missing, unknown or revoked token"),
    ))]
pub(crate) async fn status(
    State(state): State<AppState>,
    DeviceAuth(device): DeviceAuth,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    check_name(&sha256)?;
    let owner = UploadOwner::of(&device);
    if let Some(done) = held_status(&state, owner, &sha256).await? {
        return Ok(done);
    }
    // A request that a cut connection left behind may still be storing its last bytes: answer
    // once it is done, so the client resumes from where the upload really stands.
    let settled = state.service.upload_lease_settled(owner, &sha256, lease_wait()).await?;
    let name = sha256.clone();
    let upload = state.service.upload(owner, &name).await?;
    let mut offset =
        if upload.is_some() { state.blobs.partial_len(owner, &sha256).await.map_err(io_error)? } else { 0 };
    if !upload.as_ref().is_some_and(|u| u.length > 0 && offset == u.length) {
        // Another request may have finished the upload since the first look: its bytes are moved
        // into place (none left partial), then the blob is recorded as this device's and the
        // upload ended, all under its lease. Once that lease is released, look again.
        if settled && upload.is_some() {
            state.service.upload_lease_settled(owner, &sha256, lease_wait()).await?;
        }
        if let Some(done) = held_status(&state, owner, &sha256).await? {
            return Ok(done);
        }
    }
    if let Some(u) = upload.as_ref().filter(|u| u.length > 0 && offset == u.length) {
        // Every byte arrived but the request that brought them ended (a killed process, a
        // cancelled task) before they were verified. A device told "all held" would never send
        // them again, so verify them now; a mismatch starts the upload afresh.
        let (state, device, sha, length) = (state.clone(), device.clone(), sha256.clone(), u.length);
        let finished = tokio::spawn(async move {
            let Some(lease) = state.service.lease_upload(owner, &sha, state.upload_lease_ms).await? else {
                // A live request holds it: that request verifies the bytes.
                return Ok(None);
            };
            let done = finish_if_all_held(&state, &device, owner, &sha, length).await;
            lease.release().await?;
            done
        })
        .await
        .map_err(task_error)?;
        if let Some(now) = finished? {
            offset = now;
        }
    }
    let mut res = StatusCode::OK.into_response();
    res.headers_mut().insert(UPLOAD_OFFSET_HEADER, offset.into());
    if let Some(u) = upload {
        res.headers_mut().insert(UPLOAD_LENGTH_HEADER, u.length.into());
    }
    Ok(res)
}

/// Append bytes to an upload at `upload-offset`; the upload completes when `upload-length`
/// bytes arrived and they hash to the name.
#[utoipa::path(patch, path = "/v1/blobs/{sha256}", tag = "blobs",
    params(
        docs::ProtocolHeader,
        ("sha256" = String, Path, description = "The blob's SHA-256 in hex"),
        ("upload-offset" = u64, Header, description = "Where these bytes start (the offset HEAD gave)"),
        ("upload-length" = u64, Header, description = "The blob's full length"),
        ("upload-media-type" = Option<String>, Header, description = "The attachment's media type, returned on download"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    security(("bearer" = [])),
    responses(
        (status = 200, body = BlobStatus, description = "The bytes are stored; `complete` once verified"),
        (status = 400, body = docs::ErrorBody, description = "Missing headers or more bytes than upload-length"),
        (status = 409, body = docs::ErrorBody, description = "upload-offset is not where the upload stands (see the upload-offset header)"),
        (status = 413, body = docs::ErrorBody, description = "The blob is larger than the limit"),
        (status = 422, body = docs::ErrorBody, description = "The bytes do not hash to the name; the upload is discarded"),
    ))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    DeviceAuth(device): DeviceAuth,
    Path(sha256): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_name(&sha256)?;
    let offset = header_u64(&headers, UPLOAD_OFFSET_HEADER)?
        .ok_or_else(|| ApiError::bad_request(format!("a PATCH needs the {UPLOAD_OFFSET_HEADER} header")))?;
    let length = header_u64(&headers, UPLOAD_LENGTH_HEADER)?
        .ok_or_else(|| ApiError::bad_request(format!("a PATCH needs the {UPLOAD_LENGTH_HEADER} header")))?;
    if length > MAX_BLOB_BYTES {
        return Err(ApiError::too_large(format!("a blob may have at most {MAX_BLOB_BYTES} bytes")));
    }
    // The upload runs as a task of its own: a client that goes away mid-request cancels the
    // handler, and the bytes being written, the verification and the lease's release would
    // otherwise stop halfway (with file writes still running on blocking threads after the
    // lease was given up). The task ends by itself once the body stops.
    tokio::spawn(leased_upload(state, device, sha256, offset, length, headers, body))
        .await
        .map_err(task_error)?
}

fn task_error(e: tokio::task::JoinError) -> ApiError {
    tracing::error!(error = %e, "a blob upload task failed");
    ApiError::internal()
}

/// [`upload`] once its headers are checked: takes the upload's lease and appends under it.
async fn leased_upload(
    state: AppState,
    device: Device,
    sha256: String,
    offset: u64,
    length: u64,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let owner = UploadOwner::of(&device);
    // One writer per upload in every process: the lease lives in the database.
    let mut lease = state.service.lease_upload(owner, &sha256, state.upload_lease_ms).await?;
    if lease.is_none() && state.service.upload_lease_settled(owner, &sha256, lease_wait()).await? {
        lease = state.service.lease_upload(owner, &sha256, state.upload_lease_ms).await?;
    }
    let Some(lease) = lease else {
        let held = state.blobs.partial_len(owner, &sha256).await.map_err(io_error)?;
        return Err(ApiError::conflict(
            "another request is appending to this upload; ask where it stands and resume",
        )
        .with_header(UPLOAD_OFFSET_HEADER, held));
    };
    let result = append(&state, device, owner, sha256, offset, length, &headers, body).await;
    lease.release().await?;
    result
}

/// [`upload`] under the upload's lease.
#[allow(clippy::too_many_arguments)]
async fn append(
    state: &AppState,
    device: Device,
    owner: UploadOwner,
    sha256: String,
    offset: u64,
    length: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = sha256.clone();
    let held = state.service.blob_held(owner, &name).await?;
    if held {
        if let Some(size) = state.blobs.complete_size(&sha256).await.map_err(io_error)? {
            if size != length {
                return Err(ApiError::bad_request("upload-length differs from the blob's length"));
            }
            return Ok(status_response(
                StatusCode::OK,
                BlobStatus { sha256, offset: size, length: size, complete: true },
            ));
        }
    }
    let name = sha256.clone();
    let media_type = headers
        .get(MEDIA_TYPE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .map(blob_rules::allowed_media_type)
        .unwrap_or("application/octet-stream")
        .to_owned();
    let upload = state.service.upload(owner, &name).await?;
    let held_before =
        if upload.is_some() { state.blobs.partial_len(owner, &sha256).await.map_err(io_error)? } else { 0 };
    let media_type = match upload {
        Some(u) if u.length != length && held_before > 0 => {
            return Err(ApiError::conflict(format!(
                "this upload was started with upload-length {}; send that length",
                u.length
            ))
            .with_header(UPLOAD_LENGTH_HEADER, u.length))
        }
        Some(u) if u.length == length => u.media_type,
        _ => {
            // Only when an upload starts: forget expired ones (the service holds the device
            // to its quota of bytes in progress).
            expire_stale_uploads(state).await?;
            // A fresh start: no bytes of an earlier, forgotten attempt stay behind.
            state.blobs.discard_partial(owner, &sha256).await.map_err(io_error)?;
            state.service.start_upload(owner, &sha256, length, &media_type, crate::now_ms()).await?;
            media_type
        }
    };
    let held = state.blobs.partial_len(owner, &sha256).await.map_err(io_error)?;
    if offset != held {
        return Err(ApiError::conflict(format!("the upload stands at byte {held}; resume from there"))
            .with_header(UPLOAD_OFFSET_HEADER, held));
    }

    let (received, cut) = receive(state.blobs.as_ref(), owner, &sha256, held, length, body).await?;
    if received > length {
        if held == 0 {
            // Nothing was held before this request: leave no trace of it.
            state.blobs.discard_partial(owner, &sha256).await.map_err(io_error)?;
            let name = sha256.clone();
            state.service.end_upload(owner, &name).await?;
        } else {
            state.blobs.truncate_partial(owner, &sha256, held).await.map_err(io_error)?;
        }
        return Err(ApiError::bad_request("the body runs past upload-length; nothing of it was kept"));
    }
    if cut {
        // The client went away mid-body: keep what arrived so the next PATCH resumes after it.
        return Err(ApiError::bad_request("the request body was cut off; resume from upload-offset")
            .with_header(UPLOAD_OFFSET_HEADER, received));
    }
    if received < length {
        return Ok(status_response(
            StatusCode::OK,
            BlobStatus { sha256, offset: received, length, complete: false },
        ));
    }
    if !finish(state, &device, owner, &sha256, length, &media_type).await? {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "hash_mismatch",
            "the uploaded bytes do not hash to the blob's name; the upload was discarded, start again",
        )
        .with_header(UPLOAD_OFFSET_HEADER, 0));
    }
    Ok(status_response(StatusCode::OK, BlobStatus { sha256, offset: length, length, complete: true }))
}

/// HEAD's answer for a blob this device uploaded and the server holds, if it is one.
/// Complete only when this device uploaded it: HEAD tells nothing of other devices' blobs.
async fn held_status(
    state: &AppState,
    owner: UploadOwner,
    sha256: &str,
) -> Result<Option<Response>, ApiError> {
    if !state.service.blob_held(owner, sha256).await? {
        return Ok(None);
    }
    let Some(size) = state.blobs.complete_size(sha256).await.map_err(io_error)? else { return Ok(None) };
    let sha256 = sha256.to_owned();
    Ok(Some(status_response(
        StatusCode::OK,
        BlobStatus { sha256, offset: size, length: size, complete: true },
    )))
}

/// [`finish`] for HEAD, under the upload's lease: what was read before the lease was taken may
/// be out of date (another request may have finished the upload, or started it afresh), so the
/// upload is read again and verified only if it still holds all `length` bytes. Returns the
/// offset to report.
async fn finish_if_all_held(
    state: &AppState,
    device: &Device,
    owner: UploadOwner,
    sha256: &str,
    length: u64,
) -> Result<Option<u64>, ApiError> {
    if state.service.blob_held(owner, sha256).await? {
        if let Some(size) = state.blobs.complete_size(sha256).await.map_err(io_error)? {
            return Ok(Some(size));
        }
    }
    let Some(upload) = state.service.upload(owner, sha256).await? else {
        return Ok(Some(0));
    };
    let held = state.blobs.partial_len(owner, sha256).await.map_err(io_error)?;
    if upload.length != length || held != length {
        return Ok(Some(held));
    }
    let verified = finish(state, device, owner, sha256, length, &upload.media_type).await?;
    Ok(Some(if verified { length } else { 0 }))
}

/// Verifies an upload whose bytes all arrived, under its lease: kept and recorded as this
/// device's (true), or discarded with its upload when they do not hash to the name (false).
async fn finish(
    state: &AppState,
    device: &Device,
    owner: UploadOwner,
    sha256: &str,
    length: u64,
    media_type: &str,
) -> Result<bool, ApiError> {
    if !state.blobs.complete(owner, sha256).await.map_err(io_error)? {
        state.service.end_upload(owner, sha256).await?;
        tracing::warn!(device = %device.id, blob = %sha256, "blob hash mismatch");
        return Ok(false);
    }
    state.service.record_blob(device, sha256, length, media_type, crate::now_ms()).await?;
    tracing::info!(device = %device.id, blob = %sha256, bytes = length, "blob stored");
    Ok(true)
}

/// Streams the body onto the partial file. Returns the bytes held afterwards (more than
/// `length` means the body ran past the end) and whether the stream broke off.
async fn receive(
    blobs: &dyn BlobBytes,
    owner: UploadOwner,
    sha256: &str,
    held: u64,
    length: u64,
    body: Body,
) -> Result<(u64, bool), ApiError> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut total = held;
    let mut cut = false;
    // Written in pieces of at most a storage chunk: memory holds one piece, whatever the blob.
    let mut pending: Vec<u8> = Vec::with_capacity(crate::storage::postgres_blobs::CHUNK);
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(bytes) => {
                let room = length.saturating_sub(total);
                if bytes.len() as u64 > room {
                    // The caller cuts the upload back to what it held before this request.
                    return Ok((length + 1, false));
                }
                pending.extend_from_slice(&bytes);
                total += bytes.len() as u64;
                if pending.len() >= crate::storage::postgres_blobs::CHUNK {
                    blobs.append(owner, sha256, &pending).await.map_err(io_error)?;
                    pending.clear();
                }
            }
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    if !pending.is_empty() {
        blobs.append(owner, sha256, &pending).await.map_err(io_error)?;
    }
    blobs.sync_partial(owner, sha256).await.map_err(io_error)?;
    Ok((total, cut))
}

/// Download a blob this device may see.
#[utoipa::path(get, path = "/v1/blobs/{sha256}", tag = "blobs",
    params(docs::ProtocolHeader, ("sha256" = String, Path, description = "The blob's SHA-256 in hex")),
    security(("bearer" = [])),
    responses(
        (status = 200, content_type = "application/octet-stream", description = "The bytes"),
        (status = 404, body = docs::ErrorBody, description = "No such blob within the device's scope"),
    ))]
pub(crate) async fn download(
    State(state): State<AppState>,
    DeviceAuth(device): DeviceAuth,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    check_name(&sha256)?;
    let name = sha256.clone();
    let media_type = state.service.blob_access(&device, &name).await?;
    let size = state.blobs.complete_size(&sha256).await.map_err(io_error)?;
    let (Some(media_type), Some(size)) = (media_type, size) else {
        return Err(ApiError::not_found("no such blob"));
    };
    let bytes = state.blobs.read(&sha256).await.map_err(io_error)?;
    let mut res = Body::from_stream(bytes).into_response();
    // Blobs recorded before the allow-list existed are checked again on the way out.
    let media_type = blob_rules::allowed_media_type(&media_type);
    let media = HeaderValue::from_static(media_type);
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, media.clone());
    h.insert(MEDIA_TYPE_HEADER, media);
    h.insert(CONTENT_LENGTH, size.into());
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !blob_rules::shown_inline(media_type) {
        h.insert(CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    }
    Ok(res)
}

/// Forgets uploads left unfinished for longer than a day (their bytes too), a few at a time.
async fn expire_stale_uploads(state: &AppState) -> Result<(), ApiError> {
    let stale = state.service.expired_uploads(crate::now_ms(), 16).await?;
    for (owner, sha) in stale {
        state.blobs.discard_partial(owner, &sha).await.map_err(io_error)?;
        state.service.end_upload(owner, &sha).await?;
    }
    Ok(())
}
