//! The OpenAPI document, generated from the handlers' annotations, served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, blobs, coordinators, sync};

/// Schemas of the wire types (which live in `tejido-core`, free of server dependencies),
/// described here for the document.
pub mod docs {
    #![allow(dead_code)]
    use utoipa::{IntoParams, ToSchema};
    use uuid::Uuid;

    /// `tejido-protocol: 1` is required on every `/v1` request.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Header)]
    pub struct ProtocolHeader {
        /// The protocol version the client speaks; this server speaks 1.
        #[param(rename = "tejido-protocol", example = 1)]
        pub tejido_protocol: u32,
    }

    #[derive(ToSchema)]
    pub struct ErrorBody {
        /// `bad_request`, `unauthorized`, `bad_code`, `forbidden`, `not_found`, `too_large`,
        /// `unsupported_media_type`, `protocol_mismatch`, `hash_mismatch`, `conflict` or
        /// `internal`.
        pub error: String,
        /// What went wrong, for people. Never contains answers.
        pub message: String,
    }

    #[derive(ToSchema)]
    pub struct EnrollRequest {
        pub code: String,
        /// The device store's replica id; every change it pushes must carry it.
        pub replica: Uuid,
        pub device_name: Option<String>,
    }

    #[derive(ToSchema)]
    pub struct EnrollResponse {
        pub device_id: Uuid,
        /// The bearer token for every later request; shown once.
        pub token: String,
        pub project_id: Uuid,
        pub project_name: String,
        /// `enumerator`, `youth` or `coordinator`.
        pub role: String,
    }

    #[derive(ToSchema)]
    pub struct FieldOp {
        /// A field path such as `household/size` or `members/<row uuid>/age`.
        pub field: String,
        /// Any JSON value.
        #[schema(value_type = Value)]
        pub value: serde_json::Value,
        /// Op ids (`<hlc hex>@<replica>`) of the values the writer saw and replaces; left out
        /// when it saw none.
        #[schema(required = false)]
        pub seen: Vec<String>,
    }

    #[derive(ToSchema)]
    pub struct Change {
        pub doc: Uuid,
        /// `submission`, `entity`, `comment` or `form`.
        pub collection: String,
        pub replica: Uuid,
        /// The hybrid logical clock, 16 hex digits.
        pub hlc: String,
        pub ops: Vec<FieldOp>,
    }

    #[derive(ToSchema)]
    pub struct PushRequest {
        /// At most 500 changes.
        pub changes: Vec<Change>,
    }

    #[derive(ToSchema)]
    pub struct PushResponse {
        pub accepted_ops: u64,
        pub duplicate_ops: u64,
        /// The server's epoch: a new one means it was restored from a backup, and the device
        /// sends its whole history again.
        pub epoch: String,
    }

    #[derive(ToSchema)]
    pub struct PullResponse {
        pub changes: Vec<Change>,
        /// Pass back on the next pull; store it with the page.
        pub cursor: String,
        /// More pages wait.
        pub more: bool,
        /// The server's epoch, as in `PushResponse`.
        pub epoch: String,
    }

    #[derive(ToSchema)]
    pub struct FieldConflict {
        pub doc: Uuid,
        pub field: String,
        /// The open values' op ids, the winner first.
        pub ops: Vec<String>,
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // The web app's session cookie (sign in at /login).
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
                utoipa::openapi::security::ApiKeyValue::new("tejido_session"),
            )),
        );
    }
}

/// The answers every `/v1` endpoint can give whatever it does, added to each operation so the
/// document lists every status the server can answer: a protocol mismatch (400), a missing or
/// revoked token (401) and a device of the wrong role (403) where a token is needed, a body
/// too large (413) or in an unknown encoding (415) where there is a body, a server failure
/// (500), and a database too busy to take the request now (503).
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let ops = [&mut item.get, &mut item.post, &mut item.patch, &mut item.head];
            for op in ops.into_iter().flatten() {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_body = op.request_body.is_some();
                let responses = &mut op.responses.responses;
                let mut add = |status: &str, what: &str| {
                    responses.entry(status.to_owned()).or_insert_with(|| error(what).into());
                };
                add("400", "A malformed request, or a protocol mismatch");
                if secured {
                    add("401", "Missing, unknown or revoked token");
                    add("403", "The token may not do this");
                }
                if has_body {
                    add("413", "The body is too large");
                    add("415", "The body is in an unknown encoding or not JSON");
                }
                add("500", "The server failed; try again later");
                add("503", "The database is busy (`busy`); try again after `Retry-After` seconds");
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Tejido sync server", description = "The sync protocol; see docs/protocol.md."),
    paths(
        super::healthz, serve,
        sync::enroll, sync::push, sync::pull,
        blobs::status, blobs::upload, blobs::download,
        admin::create_project, admin::create_enrollment_code, admin::list_devices,
        admin::revoke_device, admin::review_submission, admin::list_conflicts,
        coordinators::list_submissions, coordinators::get_submission, coordinators::export,
        coordinators::edit_answer, coordinators::resolve,
    ),
    components(schemas(
        docs::ErrorBody, docs::EnrollRequest, docs::EnrollResponse, docs::FieldOp, docs::Change,
        docs::PushRequest, docs::PushResponse, docs::PullResponse, docs::FieldConflict,
        blobs::BlobStatus, admin::NewProject, admin::ProjectView, admin::NewEnrollmentCodeRequest,
        admin::EnrollmentCodeView, admin::DeviceView, admin::RevokeView, admin::ReviewRequest,
        admin::ReviewView, coordinators::SubmissionSummary, coordinators::SubmissionList,
        coordinators::FieldValueView, coordinators::FieldHistory, coordinators::CommentItem,
        coordinators::SubmissionView, coordinators::EditRequest, coordinators::ResolveRequest,
    )),
    modifiers(&BearerAuth, &CommonResponses),
)]
pub struct ApiDoc;

/// The document `/openapi.json` serves.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, description = "The OpenAPI document")))]
pub(crate) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}
