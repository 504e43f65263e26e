//! The harness the HTTP API tests share: a real server on 127.0.0.1:0, reqwest, helpers to
//! enroll devices and push and pull.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tejido_core::sync::wire::PROTOCOL_HEADER;
use tejido_core::{Change, Collection, DocId, FieldOp, FieldPath, Hlc, ReplicaId};
use tejido_server::api::{router, AppState};
use tejido_server::blobs::{BlobBytes, BlobStore};
use tejido_server::storage::SqliteStorage;
use uuid::Uuid;

pub const ADMIN: &str = "admin-secret-for-tests";
/// The address enrollment links name.
pub const PUBLIC_URL: &str = "http://tejido.test:8080";

pub struct Server {
    pub url: String,
    pub http: reqwest::Client,
    pub dir: Arc<tempfile::TempDir>,
    /// The PostgreSQL database, when the tests run on PostgreSQL.
    pub database: Option<String>,
    /// Where the server keeps blob bytes (files, or PostgreSQL rows).
    pub blobs: Arc<dyn BlobBytes>,
    /// The server's service, for what the tests set up below HTTP (users of the web app).
    pub service: tejido_server::service::Service,
    /// Every (method, route, status) the server answered, checked against the OpenAPI
    /// document when the server is dropped.
    answered: Answered,
}

/// What the server answered: every (method, route, status), and a sample of the JSON bodies
/// for each.
#[derive(Clone, Default)]
struct Answered(Arc<Mutex<AnsweredInner>>);

#[derive(Default)]
struct AnsweredInner {
    seen: BTreeSet<(String, String, u16)>,
    bodies: Vec<(String, String, u16, Value)>,
}

/// JSON bodies kept per (method, route, status) to check against their schema.
const BODIES_PER_ANSWER: usize = 8;

async fn record(
    axum::extract::State(answered): axum::extract::State<Answered>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().as_str().to_ascii_lowercase();
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_owned());
    let res = next.run(req).await;
    let Some(route) = route else { return res };
    let status = res.status().as_u16();
    let json = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let kept = {
        let inner = answered.0.lock().unwrap();
        inner.bodies.iter().filter(|(m, r, s, _)| *m == method && *r == route && *s == status).count()
    };
    // A HEAD answer carries no body on the wire.
    let res = if json
        && method != "head"
        && kept < BODIES_PER_ANSWER
        && res.headers().get("content-encoding").is_none()
    {
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap();
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {route} {status} answered JSON that does not parse: {e}"));
        answered.0.lock().unwrap().bodies.push((method.clone(), route.clone(), status, value));
        axum::response::Response::from_parts(parts, axum::body::Body::from(bytes))
    } else {
        res
    };
    answered.0.lock().unwrap().seen.insert((method, route, status));
    res
}

/// How a JSON body answered to (method, route, status) differs from the schema the OpenAPI
/// document gives for it (empty when it matches).
pub fn schema_errors(doc: &Value, method: &str, route: &str, status: u16, body: &Value) -> Vec<String> {
    let Some(response) = doc["paths"][route].get(method) else { return Vec::new() };
    if route == "/openapi.json" {
        // The document itself.
        return Vec::new();
    }
    if response["responses"][status.to_string()]["content"]["application/json"]["schema"].is_null() {
        return vec![format!("{method} {route} {status}: a JSON body, but no JSON schema documented")];
    }
    let pointer = format!(
        "#/paths/{}/{method}/responses/{status}/content/application~1json/schema",
        route.replace('~', "~0").replace('/', "~1").replace('{', "%7B").replace('}', "%7D")
    );
    // The whole document is the root, so `#/components/...` references resolve.
    let mut root = doc.clone();
    root["$ref"] = Value::String(pointer);
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .unwrap_or_else(|e| panic!("the schema of {method} {route} {status} does not compile: {e}"));
    validator
        .iter_errors(body)
        .map(|error| format!("{method} {route} {status}: {error} at {}", error.instance_path()))
        .collect()
}

impl Drop for Server {
    /// Every status a handler gave in the test is one the OpenAPI document lists for it, and
    /// every JSON body sampled matches the schema the document gives for that status.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let doc = serde_json::to_value(tejido_server::api::openapi::document()).unwrap();
        let inner = self.answered.0.lock().unwrap();
        let mut missing = Vec::new();
        for (method, route, status) in inner.seen.iter() {
            // The web app's pages are HTML, outside the API's document.
            if !route.starts_with("/v1/") && doc["paths"].get(route.as_str()).is_none() {
                continue;
            }
            let Some(op) = doc["paths"][route.as_str()].get(method.as_str()) else {
                assert_eq!(*status, 405, "{method} {route} is undocumented and answered {status}");
                continue;
            };
            if op["responses"].get(status.to_string()).is_none() {
                missing.push(format!("{method} {route} {status}"));
            }
        }
        assert!(missing.is_empty(), "answered but not in the OpenAPI document: {missing:?}");
        let mut wrong = Vec::new();
        for (method, route, status, body) in inner.bodies.iter() {
            wrong.extend(schema_errors(&doc, method, route, *status, body));
        }
        assert!(wrong.is_empty(), "responses that do not match the OpenAPI document: {wrong:#?}");
    }
}

#[derive(Clone, Debug)]
pub struct Dev {
    pub token: String,
    pub id: Uuid,
    pub replica: ReplicaId,
}

/// A server on SQLite, or on a fresh PostgreSQL database with `TEJIDO_TEST_BACKEND=postgres`.
pub async fn start() -> Server {
    let database = if tejido_server::testing::postgres_requested() {
        Some(tejido_server::testing::cluster().fresh_database().await)
    } else {
        None
    };
    start_in(Arc::new(tempfile::tempdir().unwrap()), database).await
}

/// A server over the deployment in `dir`: a second one over the same folder is another server
/// process of the same deployment (its own connections, the same database and blobs).
async fn start_in(dir: Arc<tempfile::TempDir>, database: Option<String>) -> Server {
    let (storage, blobs): (Arc<dyn tejido_server::storage::Storage>, Arc<dyn BlobBytes>) = match &database {
        Some(url) => {
            let pg = tejido_server::storage::PostgresStorage::open(url).await.unwrap();
            let blobs = Arc::new(pg.blobs());
            (Arc::new(pg), blobs)
        }
        None => (
            Arc::new(SqliteStorage::open(dir.path().join("tejido.db")).unwrap()),
            Arc::new(BlobStore::new(dir.path().join("blobs"))),
        ),
    };
    let service = tejido_server::service::Service::new(storage).await.unwrap();
    let state =
        AppState::new(service.clone(), blobs.clone()).with_admin_token(ADMIN).with_public_url(PUBLIC_URL);
    let answered = Answered::default();
    let app = router(state).layer(axum::middleware::from_fn_with_state(answered.clone(), record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        url: format!("http://{addr}"),
        http: reqwest::Client::builder()
            // See the raw encodings: in a workspace build reqwest may have gzip/zstd enabled by
            // another crate and would otherwise decode (and strip) them itself.
            .no_gzip()
            .no_zstd()
            .build()
            .unwrap(),
        dir,
        database,
        blobs,
        service,
        answered,
    }
}

impl Server {
    /// Another server process of this deployment.
    pub async fn another_process(&self) -> Server {
        start_in(self.dir.clone(), self.database.clone()).await
    }

    pub fn req(&self, method: Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.url)).header(PROTOCOL_HEADER, "1");
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    }

    pub async fn send(&self, r: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn project(&self, name: &str) -> Uuid {
        let (status, body) = self
            .send(self.req(Method::POST, "/v1/projects", Some(ADMIN)).json(&json!({ "name": name })))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn code(&self, project: Uuid, role: &str, uses: u32) -> String {
        let (status, body) = self
            .send(
                self.req(Method::POST, &format!("/v1/projects/{project}/enrollment-codes"), Some(ADMIN))
                    .json(&json!({ "role": role, "uses": uses })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert!(body["link"].as_str().unwrap().starts_with("tejido://enroll?server="));
        body["code"].as_str().unwrap().to_owned()
    }

    pub async fn try_enroll(&self, code: &str, replica: ReplicaId) -> (StatusCode, Value) {
        self.send(
            self.req(Method::POST, "/v1/enroll", None).json(&json!({ "code": code, "replica": replica })),
        )
        .await
    }

    pub async fn device(&self, project: Uuid, role: &str) -> Dev {
        let code = self.code(project, role, 1).await;
        let replica = ReplicaId::random();
        let (status, body) = self.try_enroll(&code, replica).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Dev {
            token: body["token"].as_str().unwrap().to_owned(),
            id: body["device_id"].as_str().unwrap().parse().unwrap(),
            replica,
        }
    }

    pub async fn push(&self, d: &Dev, changes: &[Change]) -> (StatusCode, Value) {
        self.send(self.req(Method::POST, "/v1/push", Some(&d.token)).json(&json!({ "changes": changes })))
            .await
    }

    /// Everything a device sees, from a fresh snapshot to the end of the log.
    pub async fn pull_all(&self, d: &Dev) -> Vec<Change> {
        let mut cursor = String::new();
        let mut out = Vec::new();
        loop {
            let (status, body) = self
                .send(self.req(Method::GET, &format!("/v1/pull?cursor={cursor}&limit=3"), Some(&d.token)))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            out.extend(serde_json::from_value::<Vec<Change>>(body["changes"].clone()).unwrap());
            cursor = body["cursor"].as_str().unwrap().to_owned();
            if !body["more"].as_bool().unwrap() {
                return out;
            }
        }
    }

    pub async fn upload(&self, d: &Dev, bytes: &[u8], offset: u64, chunk: &[u8]) -> (StatusCode, Value) {
        let sha = hex::encode(Sha256::digest(bytes));
        self.send(
            self.req(Method::PATCH, &format!("/v1/blobs/{sha}"), Some(&d.token))
                .header("upload-offset", offset)
                .header("upload-length", bytes.len())
                .header("upload-media-type", "image/jpeg")
                .body(chunk.to_vec()),
        )
        .await
    }
}

pub fn change(d: &Dev, doc: DocId, collection: Collection, hlc: u64, fields: &[(&str, Value)]) -> Change {
    Change {
        doc,
        collection,
        replica: d.replica,
        hlc: Hlc(hlc),
        ops: fields
            .iter()
            .map(|(f, v)| FieldOp { field: FieldPath::parse(f).unwrap(), value: v.clone(), seen: vec![] })
            .collect(),
    }
}
