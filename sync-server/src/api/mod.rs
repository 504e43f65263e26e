//! The HTTP API: `fn router(state) -> Router`, the one error type every handler answers with,
//! authentication and the protocol-version check.

mod admin;
mod blobs;
pub mod coordinators;
pub mod openapi;

mod sync;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tejido_core::sync::wire::{ErrorBody, Role, MAX_BODY_BYTES, PROTOCOL_HEADER, PROTOCOL_VERSION};
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::trace::TraceLayer;

use crate::blobs::BlobBytes;
use crate::secrets::hash_token;
use crate::service::Service;
use crate::storage::{Device, StorageError};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub service: Service,
    pub blobs: Arc<dyn BlobBytes>,
    /// The hash of the admin token, when one is configured.
    pub admin_token_hash: Option<[u8; 32]>,
    /// The address phones use to reach this server, for enrollment links.
    pub public_url: Option<String>,
    /// How long a blob upload's lease lasts: longer than any request body may take.
    pub upload_lease_ms: i64,
    /// Reverse proxies whose `X-Forwarded-For` names the client (`--trusted-proxy`).
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl AppState {
    pub fn new(service: Service, blobs: Arc<dyn BlobBytes>) -> AppState {
        service.read_media_from(blobs.clone());
        AppState {
            service,
            blobs,
            admin_token_hash: None,
            public_url: None,
            upload_lease_ms: lease_for(crate::serve::ConnectionLimits::default().body_timeout),
            trusted_proxies: Vec::new(),
        }
    }

    pub fn with_trusted_proxies(mut self, proxies: Vec<std::net::IpAddr>) -> AppState {
        self.trusted_proxies = proxies;
        self
    }

    pub fn with_admin_token(mut self, token: &str) -> AppState {
        self.admin_token_hash = Some(hash_token(token));
        self
    }

    /// Holds upload leases for as long as a request body may take under `body_timeout`.
    pub fn with_body_timeout(mut self, body_timeout: std::time::Duration) -> AppState {
        self.upload_lease_ms = lease_for(body_timeout);
        self
    }

    pub fn with_public_url(mut self, url: impl Into<String>) -> AppState {
        self.public_url = Some(url.into());
        self
    }
}

/// A lease outlasts the longest request body by a margin.
fn lease_for(body_timeout: std::time::Duration) -> i64 {
    i64::try_from(body_timeout.as_millis()).unwrap_or(i64::MAX / 2).saturating_add(30_000)
}

/// The API. Tests bind it to 127.0.0.1:0; `serve` to its `--listen` address.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/enroll", post(sync::enroll))
        .route("/v1/push", post(sync::push))
        .route("/v1/pull", get(sync::pull))
        .route("/v1/blobs/{sha256}", get(blobs::download).head(blobs::status).patch(blobs::upload))
        .route("/v1/projects", post(admin::create_project))
        .route("/v1/projects/{project}/enrollment-codes", post(admin::create_enrollment_code))
        .route("/v1/projects/{project}/devices", get(admin::list_devices))
        .route("/v1/projects/{project}/conflicts", get(admin::list_conflicts))
        .route("/v1/devices/{device}/revoke", post(admin::revoke_device))
        .route("/v1/submissions/{doc}/review", post(admin::review_submission))
        .route("/v1/projects/{project}/submissions", get(coordinators::list_submissions))
        .route("/v1/submissions/{doc}", get(coordinators::get_submission))
        .route("/v1/submissions/{doc}/answers", post(coordinators::edit_answer))
        .route("/v1/submissions/{doc}/resolve", post(coordinators::resolve))
        .route("/v1/projects/{project}/export", get(coordinators::export))
        .route_layer(middleware::from_fn(require_protocol));
    let api = Router::new()
        .merge(v1)
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi::serve))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestDecompressionLayer::new())
        .layer(middleware::map_response(json_errors));
    // The coordinators' pages answer in HTML, errors included.
    let web = crate::web::router().layer(DefaultBodyLimit::max(64 * 1024));
    web.merge(api)
        // Pull pages are large and repetitive JSON: the fastest level keeps most of the saving
        // for a fraction of the CPU.
        .layer(CompressionLayer::new().quality(tower_http::CompressionLevel::Fastest))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The server is up")))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

async fn not_found() -> ApiError {
    ApiError::not_found("there is no such endpoint")
}

/// The error every endpoint answers with: a status and a [`ErrorBody`]. Messages never carry
/// answers, tokens or internals.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), headers: Vec::new() }
    }
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn unauthorized(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
    }
    pub fn forbidden(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", m)
    }
    pub fn not_found(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn too_large(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", m)
    }
    pub fn conflict(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", m)
    }
    /// An enrollment code that is unknown, used up or expired (all three look the same).
    pub fn bad_code() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_code",
            "the enrollment code is unknown, used up or expired",
        )
    }
    pub fn unsupported_media_type(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", m)
    }
    pub fn internal() -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the server failed; try again later")
    }
    pub fn with_header(mut self, name: &'static str, value: impl ToString) -> ApiError {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(ErrorBody { error: self.code.to_owned(), message: self.message }))
            .into_response();
        for (k, v) in self.headers {
            res.headers_mut().insert(k, v);
        }
        res
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        match e {
            StorageError::NotFound(m) => ApiError::not_found(format!("{m} does not exist")),
            StorageError::Forbidden(m) => ApiError::forbidden(m),
            StorageError::Invalid(m) => ApiError::bad_request(m),
            StorageError::Conflict(m) => ApiError::conflict(m),
            StorageError::TooLarge(m) => ApiError::too_large(m),
            StorageError::BadCode => ApiError::bad_code(),
            StorageError::Busy(m) => {
                tracing::warn!(error = %m, "storage busy");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the server is busy; try again shortly",
                )
                .with_header("retry-after", 1)
            }
            StorageError::Database(e) => {
                tracing::error!(error = %e, "storage failed");
                ApiError::internal()
            }
            StorageError::Other(m) => {
                tracing::error!(error = %m, "storage failed");
                ApiError::internal()
            }
        }
    }
}

/// Parses a JSON body; the message names the position, never the content.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "is not valid JSON",
            serde_json::error::Category::Data => "does not have the expected fields and types",
            serde_json::error::Category::Io => "could not be read",
        };
        ApiError::bad_request(format!("the {what} body {kind} (line {}, column {})", e.line(), e.column()))
    })
}

/// Maps a failure to read the body (too large, a broken compressed stream).
pub(crate) fn body_error(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(format!("a request body may have at most {MAX_BODY_BYTES} bytes"))
    } else {
        ApiError::bad_request("the request body could not be read (is its compression broken?)")
    }
}

/// An enrolled, unrevoked device, from `Authorization: Bearer <token>`.
pub struct DeviceAuth(pub Device);

/// Who may run an admin operation: the admin token, or a coordinator of the project.
pub enum Caller {
    Admin,
    Coordinator(Device),
}

impl Caller {
    /// Admin operations on a project are for the admin and that project's coordinators.
    pub fn may_manage(&self, project: uuid::Uuid) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Coordinator(d) => d.project == project,
        }
    }

    pub fn label(&self) -> String {
        match self {
            Caller::Admin => "admin".into(),
            Caller::Coordinator(d) => d.name.clone().unwrap_or_else(|| format!("coordinator {}", d.id)),
        }
    }

    pub fn device_id(&self) -> Option<uuid::Uuid> {
        match self {
            Caller::Admin => None,
            Caller::Coordinator(d) => Some(d.id),
        }
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("this request needs an Authorization: Bearer <token> header")
    })?;
    let value =
        value.to_str().map_err(|_| ApiError::unauthorized("the Authorization header is malformed"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be Bearer <token>"))?
        .trim();
    if token.is_empty() || token.len() > 512 {
        return Err(ApiError::unauthorized("the token is malformed"));
    }
    Ok(token)
}

async fn device_for(state: &AppState, token: &str) -> Result<Option<Device>, ApiError> {
    let hash = hash_token(token);
    let device = state.service.device_by_token(&hash).await?;
    Ok(device.filter(|d| !d.is_revoked()))
}

impl FromRequestParts<AppState> for DeviceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        match device_for(state, token).await? {
            Some(d) => Ok(DeviceAuth(d)),
            None => Err(ApiError::unauthorized("the token is unknown or revoked")),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        if let Some(admin) = &state.admin_token_hash {
            let given = hash_token(token);
            // Comparing hashes keeps the comparison independent of the secret's bytes.
            if &given == admin {
                return Ok(Caller::Admin);
            }
        }
        match device_for(state, token).await? {
            Some(d) if d.role == Role::Coordinator => Ok(Caller::Coordinator(d)),
            Some(d) => Err(ApiError::forbidden(format!("a {} device cannot do this", d.role.as_str()))),
            None => Err(ApiError::unauthorized("the token is unknown or revoked")),
        }
    }
}

/// Every `/v1` request must say which protocol it speaks.
async fn require_protocol(req: Request<Body>, next: Next) -> Response {
    let expected = PROTOCOL_VERSION.to_string();
    let mut values = req.headers().get_all(PROTOCOL_HEADER).iter();
    let first = values.next();
    if first.is_some() && values.next().is_some() {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "protocol_mismatch",
            format!(
                "send exactly one {PROTOCOL_HEADER} header; this server speaks protocol {PROTOCOL_VERSION}"
            ),
        )
        .into_response();
    }
    match first.map(|v| v.to_str().map(str::trim)) {
        Some(Ok(v)) if v == expected => next.run(req).await,
        Some(Ok(v)) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "protocol_mismatch",
            format!(
                "this server speaks tejido protocol {PROTOCOL_VERSION}, the request {PROTOCOL_HEADER} {:?}; \
                 update the app or the server",
                v.chars().take(20).collect::<String>()
            ),
        )
        .into_response(),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "protocol_mismatch",
            format!("send the header `{PROTOCOL_HEADER}: {PROTOCOL_VERSION}`; this server speaks protocol {PROTOCOL_VERSION}"),
        )
        .into_response(),
    }
}

/// Errors produced outside the handlers (an unsupported content encoding, a wrong method) get
/// the same JSON body as every other error; every answer names the protocol version.
async fn json_errors(mut res: Response) -> Response {
    res.headers_mut().insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("bad_request", "this endpoint does not take that method"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("bad_request", "unsupported content encoding; send identity, gzip or zstd")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "the request body is too large"),
        StatusCode::NOT_FOUND => ("not_found", "not found"),
        s if s.is_server_error() => ("internal", "the server failed; try again later"),
        _ => ("bad_request", "the request was refused"),
    };
    let headers = res.headers().clone();
    let mut out = ApiError::new(status, code, message).into_response();
    for name in [HeaderName::from_static("accept-encoding"), HeaderName::from_static("allow")] {
        if let Some(v) = headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out.headers_mut().insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    out
}

/// The address to put in enrollment links: the configured public URL (which `serve` sets from
/// `--public-url`, else from its listen address). Never the request's `Host` header, which the
/// requester controls.
pub(crate) fn public_url(state: &AppState) -> String {
    state.public_url.clone().unwrap_or_else(|| "http://localhost:8080".to_owned())
}

/// Refuses a body that does not say it is JSON (415); a missing `Content-Type` is refused too.
pub(crate) fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let ok = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if ok {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type("send the body as JSON, with Content-Type: application/json"))
    }
}

/// The client's address, for per-address limits. A request from a trusted reverse proxy names
/// the client in `X-Forwarded-For`: the right-most entry that is not itself a trusted proxy is
/// the client (entries further left were written by the client and prove nothing). From any
/// other peer the header is ignored, so a client cannot pick its own address.
pub fn client_ip(
    peer: Option<std::net::IpAddr>,
    headers: &axum::http::HeaderMap,
    trusted: &[std::net::IpAddr],
) -> Option<std::net::IpAddr> {
    let peer = peer?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let mut hops: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else { return Some(peer) };
        hops.extend(text.split(',').map(str::trim));
    }
    for hop in hops.iter().rev() {
        match hop.parse::<std::net::IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return Some(ip),
            // A malformed hop: nothing left of it can be trusted.
            Err(_) => return Some(peer),
        }
    }
    Some(peer)
}

#[cfg(test)]
mod client_ip_tests {
    use super::client_ip;
    use axum::http::{HeaderMap, HeaderValue};
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_first_hop_a_trusted_proxy_saw() {
        let proxy = ip("10.0.0.5");
        let trusted = [proxy, ip("10.0.0.6")];
        let peer = Some(proxy);
        assert_eq!(client_ip(peer, &forwarded(&["203.0.113.7"]), &trusted), Some(ip("203.0.113.7")));
        // A client's own claim to the left of the real hop proves nothing.
        assert_eq!(client_ip(peer, &forwarded(&["1.2.3.4, 203.0.113.7"]), &trusted), Some(ip("203.0.113.7")));
        // Through two trusted proxies, over two header lines.
        assert_eq!(
            client_ip(peer, &forwarded(&["198.51.100.2", "10.0.0.6"]), &trusted),
            Some(ip("198.51.100.2"))
        );
        assert_eq!(client_ip(peer, &forwarded(&["2001:db8::1"]), &trusted), Some(ip("2001:db8::1")));
        // No header, or a malformed hop: the proxy itself.
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), Some(proxy));
        assert_eq!(client_ip(peer, &forwarded(&["1.2.3.4, garbage"]), &trusted), Some(proxy));
        // From a peer that is not trusted, the header is ignored.
        let stranger = Some(ip("192.0.2.9"));
        assert_eq!(client_ip(stranger, &forwarded(&["203.0.113.7"]), &trusted), stranger);
        assert_eq!(client_ip(stranger, &forwarded(&["203.0.113.7"]), &[]), stranger);
        assert_eq!(client_ip(None, &forwarded(&["203.0.113.7"]), &trusted), None);
    }
}
