//! The coordinators' web app, rendered on the server (maud; no JavaScript): sign in, the
//! projects a user belongs to, the submissions table with its filters, one submission with its
//! answers under the form's labels, history, comments, review and conflict resolution.
//!
//! Sessions live in the database ([`crate::service::accounts`]); the cookie is HttpOnly and
//! SameSite=Lax, and every form carries the session's CSRF token (the login form a
//! double-submitted one). A project the user does not belong to is a 404, as is anything in it.

mod i18n;
mod pages;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::header::{ACCEPT_LANGUAGE, CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use uuid::Uuid;

pub use i18n::{Key, Lang};

use crate::api::AppState;
use crate::secrets::new_token;
use crate::service::accounts::{Account, Login};
use crate::service::read_model::{parse_cursor, Flag};
use crate::storage::{Session, StorageError, SubmissionFilter};

const SESSION_COOKIE: &str = "tejido_session";
const LOGIN_CSRF_COOKIE: &str = "tejido_login_csrf";
const LANG_COOKIE: &str = "tejido_lang";
/// Rows of the submissions table per page.
pub const PAGE_ROWS: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/projects", get(projects))
        .route("/projects/{project}/submissions", get(submissions))
        .route("/projects/{project}/indicators", get(indicators))
        .route("/projects/{project}/settings", post(settings))
        .route("/projects/{project}/export", get(export))
        .route("/submissions/{doc}", get(submission))
        .route("/submissions/{doc}/review", post(review))
        .route("/submissions/{doc}/resolve", post(resolve))
        .route("/submissions/{doc}/edit", post(edit))
        .route("/submissions/{doc}/attachments/{sha256}", get(attachment))
}

/// An error page (or a redirect to sign in).
pub enum WebError {
    SignIn,
    NotFound(Lang),
    BadCsrf(Lang),
    Bad(Lang, String),
    Busy(Lang),
    Failed(Lang),
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::SignIn => redirect("/login", None),
            WebError::NotFound(lang) => {
                (StatusCode::NOT_FOUND, page_headers(), Html(pages::message(lang, lang.t(Key::NotFound))))
                    .into_response()
            }
            WebError::BadCsrf(lang) => {
                (StatusCode::FORBIDDEN, page_headers(), Html(pages::message(lang, lang.t(Key::BadCsrf))))
                    .into_response()
            }
            WebError::Bad(lang, m) => {
                (StatusCode::BAD_REQUEST, page_headers(), Html(pages::message(lang, &m))).into_response()
            }
            WebError::Busy(lang) => (
                StatusCode::SERVICE_UNAVAILABLE,
                page_headers(),
                [(axum::http::header::RETRY_AFTER, HeaderValue::from_static("30"))],
                Html(pages::message(lang, lang.t(Key::Busy))),
            )
                .into_response(),
            WebError::Failed(lang) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                page_headers(),
                Html(pages::message(lang, "the server failed; try again later")),
            )
                .into_response(),
        }
    }
}

fn failed(lang: Lang) -> impl FnOnce(StorageError) -> WebError {
    move |e| match e {
        StorageError::NotFound(_) => WebError::NotFound(lang),
        StorageError::Invalid(m)
        | StorageError::Conflict(m)
        | StorageError::Forbidden(m)
        | StorageError::TooLarge(m) => WebError::Bad(lang, m),
        StorageError::Busy(m) => {
            tracing::warn!(error = %m, "busy");
            WebError::Busy(lang)
        }
        other => {
            tracing::error!(error = %other, "a page failed");
            WebError::Failed(lang)
        }
    }
}

/// Pages are never cached (they hold answers) nor framed, and say what they are.
fn page_headers() -> [(axum::http::HeaderName, HeaderValue); 4] {
    [
        (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (axum::http::HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY")),
        (axum::http::HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff")),
        (
            axum::http::HeaderName::from_static("content-security-policy"),
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'"),
        ),
    ]
}

fn redirect(to: &str, cookie: Option<String>) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        res.headers_mut().insert(LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        res.headers_mut().append(SET_COOKIE, c);
    }
    res
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn secure(state: &AppState) -> &'static str {
    if state.public_url.as_deref().is_some_and(|u| u.starts_with("https://")) {
        "; Secure"
    } else {
        ""
    }
}

/// The pages' language: `?lang=`, else the cookie, else the browser's, else Spanish.
fn lang_of(headers: &HeaderMap, query: Option<&str>) -> Lang {
    query
        .and_then(Lang::parse)
        .or_else(|| cookie(headers, LANG_COOKIE).and_then(Lang::parse))
        .or_else(|| headers.get(ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).and_then(Lang::parse))
        .unwrap_or(Lang::Es)
}

/// A signed-in user, from the session cookie.
pub struct WebUser {
    pub session: Session,
    pub account: Account,
    pub lang: Lang,
}

impl WebUser {
    /// The user's projects are theirs; any other is a 404.
    fn check_project(&self, project: Uuid) -> Result<(), WebError> {
        match self.account.role_in(project) {
            Some(_) => Ok(()),
            None => Err(WebError::NotFound(self.lang)),
        }
    }

    fn check_csrf(&self, given: &str) -> Result<(), WebError> {
        if crate::secrets::same_secret(given, &self.session.csrf) {
            Ok(())
        } else {
            Err(WebError::BadCsrf(self.lang))
        }
    }
}

/// The session's account, if the request carries a current session cookie.
pub async fn session_of(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Session, Account)>, StorageError> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else { return Ok(None) };
    state.service.session(token, crate::now_ms()).await
}

impl FromRequestParts<AppState> for WebUser {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let lang_q = query.split('&').find_map(|kv| kv.strip_prefix("lang="));
        let lang = lang_of(&parts.headers, lang_q);
        match session_of(state, &parts.headers).await.map_err(failed(lang))? {
            Some((session, account)) => Ok(WebUser { session, account, lang }),
            None => Err(WebError::SignIn),
        }
    }
}

/// A page, with the language cookie set when `?lang=` chose one.
fn page(lang: Lang, chose: bool, body: maud::Markup) -> Response {
    let mut res = (page_headers(), Html(body.into_string())).into_response();
    if chose {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{LANG_COOKIE}={}; Path=/; SameSite=Lax; Max-Age=31536000",
            lang.code()
        )) {
            res.headers_mut().append(SET_COOKIE, v);
        }
    }
    res
}

async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match session_of(&state, &headers).await {
        Ok(Some(_)) => redirect("/projects", None),
        _ => redirect("/login", None),
    }
}

#[derive(Deserialize)]
struct LangQuery {
    lang: Option<String>,
}

async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    let lang = lang_of(&headers, q.lang.as_deref());
    login_form(&state, lang, StatusCode::OK, None)
}

fn login_form(state: &AppState, lang: Lang, status: StatusCode, error: Option<&str>) -> Response {
    let csrf = new_token();
    let mut res =
        (status, page_headers(), Html(pages::login(lang, &csrf, error).into_string())).into_response();
    let c = format!(
        "{LOGIN_CSRF_COOKIE}={csrf}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600{}",
        secure(state)
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        res.headers_mut().append(SET_COOKIE, v);
    }
    res
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
    csrf: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    connect: Option<axum::extract::Extension<ConnectInfo<std::net::SocketAddr>>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let lang = lang_of(&headers, None);
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    if expected.is_empty() || !crate::secrets::same_secret(&form.csrf, expected) {
        return WebError::BadCsrf(lang).into_response();
    }
    let peer = connect.map(|c| c.0 .0.ip());
    let addr = crate::api::client_ip(peer, &headers, &state.trusted_proxies)
        .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    match state.service.login(&form.email, &form.password, &addr, crate::now_ms()).await {
        Ok(Login::Ok { token, .. }) => {
            tracing::info!("a user signed in");
            let c = format!(
                "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
                crate::service::accounts::SESSION_MS / 1000,
                secure(&state)
            );
            redirect("/projects", Some(c))
        }
        Ok(Login::Refused) => {
            login_form(&state, lang, StatusCode::UNAUTHORIZED, Some(lang.t(Key::WrongLogin)))
        }
        Ok(Login::Throttled { retry_after }) => {
            let mut res =
                login_form(&state, lang, StatusCode::TOO_MANY_REQUESTS, Some(lang.t(Key::Throttled)));
            if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
                res.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
            res
        }
        Err(e) => failed(lang)(e).into_response(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    user: WebUser,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(e) = user.check_csrf(&form.csrf) {
        return e.into_response();
    }
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = state.service.logout(token).await {
            return failed(user.lang)(e).into_response();
        }
    }
    let c = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}", secure(&state));
    redirect("/login", Some(c))
}

async fn projects(
    State(state): State<AppState>,
    user: WebUser,
    Query(q): Query<LangQuery>,
) -> Result<Response, WebError> {
    let mut projects = Vec::new();
    for m in &user.account.memberships {
        let found = state.service.find_project(&m.project.to_string()).await.map_err(failed(user.lang))?;
        if let Some(p) = found {
            let gate = state.service.approved_only(p.id).await.map_err(failed(user.lang))?;
            projects.push((p, m.role, gate));
        }
    }
    Ok(page(user.lang, q.lang.is_some(), pages::projects(&user, &projects)))
}

/// The submissions table's filters, as the page's query string carries them.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ListQuery {
    pub form: Option<String>,
    pub review: Option<String>,
    pub author: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub flag: Option<String>,
    pub field: Option<String>,
    pub value: Option<String>,
    pub cursor: Option<String>,
    pub lang: Option<String>,
    /// Rows per page (the API's; the page shows [`PAGE_ROWS`]).
    pub limit: Option<String>,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A date (`YYYY-MM-DD`, UTC) as ms since 1970.
fn day_ms(s: &str) -> Option<i64> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

impl ListQuery {
    /// The storage filter, or what is wrong with the query.
    pub fn filter(&self, project: Uuid) -> Result<SubmissionFilter, String> {
        let mut f = SubmissionFilter { project, hide_deleted: false, ..SubmissionFilter::default() };
        f.form_id = nonempty(&self.form).map(str::to_owned);
        f.review_state = match nonempty(&self.review) {
            None => None,
            Some(s @ ("pending" | "approved" | "has_issues")) => Some(s.to_owned()),
            Some(_) => return Err("review is one of pending, approved, has_issues".into()),
        };
        f.author_device = match nonempty(&self.author) {
            None => None,
            Some(a) => Some(Uuid::try_parse(a).map_err(|_| "author is a device id".to_owned())?),
        };
        f.from_ms = match nonempty(&self.from) {
            None => None,
            Some(d) => Some(day_ms(d).ok_or("from is a date, YYYY-MM-DD")?),
        };
        f.to_ms = match nonempty(&self.to) {
            None => None,
            // The whole day named.
            Some(d) => Some(day_ms(d).ok_or("to is a date, YYYY-MM-DD")? + 86_400_000),
        };
        if let Some(flag) = nonempty(&self.flag) {
            f.flags = Flag::parse(flag).ok_or("flag is not one this server computes")?.bit();
        }
        if let (Some(field), Some(value)) = (nonempty(&self.field), self.value.as_deref()) {
            if field.len() > 500 || field.contains('"') || value.len() > 1000 {
                return Err("the question filter is too long or malformed".into());
            }
            f.answer = Some((field.to_owned(), value.to_owned()));
        }
        if let Some(c) = nonempty(&self.cursor) {
            f.after = Some(parse_cursor(c).ok_or("the cursor is malformed")?);
        }
        Ok(f)
    }
}

fn parse_id(s: &str, lang: Lang) -> Result<Uuid, WebError> {
    Uuid::try_parse(s).map_err(|_| WebError::NotFound(lang))
}

async fn submissions(
    State(state): State<AppState>,
    user: WebUser,
    Path(project): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, WebError> {
    let lang = user.lang;
    let project = parse_id(&project, lang)?;
    user.check_project(project)?;
    let filter = q.filter(project).map_err(|m| WebError::Bad(lang, m))?;
    let Some(p) = state.service.find_project(&project.to_string()).await.map_err(failed(lang))? else {
        return Err(WebError::NotFound(lang));
    };
    let list = state.service.list_submissions(&filter, PAGE_ROWS).await.map_err(failed(lang))?;
    let devices = state.service.list_devices(project).await.map_err(failed(lang))?;
    let forms = state.service.project_forms(project).await.map_err(failed(lang))?;
    Ok(page(lang, q.lang.is_some(), pages::submissions(&user, &p, &q, &list, &devices, &forms)))
}

async fn submission(
    State(state): State<AppState>,
    user: WebUser,
    Path(doc): Path<String>,
    Query(q): Query<LangQuery>,
) -> Result<Response, WebError> {
    let lang = user.lang;
    let doc = parse_id(&doc, lang)?;
    let Some(detail) = state.service.submission_detail(doc).await.map_err(failed(lang))? else {
        return Err(WebError::NotFound(lang));
    };
    user.check_project(detail.state.project)?;
    Ok(page(lang, q.lang.is_some(), pages::submission(&user, &detail)))
}

/// The submission a form posts to, and its project, for a user of that project with the
/// session's CSRF token. The project is checked before the token: another project's submission
/// is a 404 whatever the form carries.
async fn submission_for(
    state: &AppState,
    user: &WebUser,
    doc: &str,
    csrf: &str,
) -> Result<(Uuid, Uuid), WebError> {
    let lang = user.lang;
    let doc = parse_id(doc, lang)?;
    let info = state.service.document(tejido_core::DocId(doc)).await.map_err(failed(lang))?;
    let project = match info {
        Some(i) if i.collection == tejido_core::Collection::Submission => i.project,
        _ => return Err(WebError::NotFound(lang)),
    };
    user.check_project(project)?;
    user.check_csrf(csrf)?;
    Ok((doc, project))
}

#[derive(Deserialize)]
struct ReviewForm {
    csrf: String,
    state: String,
    #[serde(default)]
    comment: String,
}

async fn review(
    State(state): State<AppState>,
    user: WebUser,
    Path(doc): Path<String>,
    Form(form): Form<ReviewForm>,
) -> Result<Response, WebError> {
    let lang = user.lang;
    let (doc, project) = submission_for(&state, &user, &doc, &form.csrf).await?;
    let comment = Some(form.comment).filter(|c| !c.trim().is_empty());
    let review = crate::storage::Review {
        project,
        submission: tejido_core::DocId(doc),
        state: form.state,
        comment,
        author: None,
        author_label: user.account.user.email.clone(),
        now_ms: crate::now_ms().max(0) as u64,
    };
    state.service.review(&review).await.map_err(failed(lang))?;
    tracing::info!(submission = %doc, "reviewed in the web app");
    Ok(redirect(&format!("/submissions/{doc}"), None))
}

#[derive(Deserialize)]
struct ResolveForm {
    csrf: String,
    field: String,
    op: String,
}

async fn resolve(
    State(state): State<AppState>,
    user: WebUser,
    Path(doc): Path<String>,
    Form(form): Form<ResolveForm>,
) -> Result<Response, WebError> {
    let lang = user.lang;
    let (doc, project) = submission_for(&state, &user, &doc, &form.csrf).await?;
    let op: tejido_core::OpId =
        form.op.parse().map_err(|_| WebError::Bad(lang, "the value to keep is malformed".into()))?;
    state
        .service
        .resolve(project, tejido_core::DocId(doc), &form.field, op, crate::now_ms())
        .await
        .map_err(failed(lang))?;
    tracing::info!(submission = %doc, "a conflict was resolved in the web app");
    Ok(redirect(&format!("/submissions/{doc}"), None))
}

#[derive(Deserialize)]
struct IndicatorQuery {
    form: Option<String>,
    lang: Option<String>,
}

async fn indicators(
    State(state): State<AppState>,
    user: WebUser,
    Path(project): Path<String>,
    Query(q): Query<IndicatorQuery>,
) -> Result<Response, WebError> {
    let lang = user.lang;
    let project = parse_id(&project, lang)?;
    user.check_project(project)?;
    let Some(p) = state.service.find_project(&project.to_string()).await.map_err(failed(lang))? else {
        return Err(WebError::NotFound(lang));
    };
    let mut with_indicators = Vec::new();
    for (form_id, _, form) in state.service.project_forms(project).await.map_err(failed(lang))? {
        if with_indicators.iter().any(|(f, _): &(String, String)| *f == form_id) {
            continue;
        }
        if state.service.indicators(project, &form_id).await.map_err(failed(lang))?.is_some() {
            with_indicators.push((form_id, form.settings.title.clone()));
        }
    }
    let chosen = q.form.clone().or_else(|| with_indicators.first().map(|f| f.0.clone()));
    let tables = match &chosen {
        Some(f) => {
            state.service.compute_indicators(project, f).await.map_err(failed(lang))?.unwrap_or_default()
        }
        None => Vec::new(),
    };
    let gate = state.service.approved_only(project).await.map_err(failed(lang))?;
    Ok(page(
        lang,
        q.lang.is_some(),
        pages::indicators(&user, &p, &with_indicators, chosen.as_deref(), &tables, gate),
    ))
}

#[derive(Deserialize)]
struct SettingsForm {
    csrf: String,
    #[serde(default)]
    approved_only: Option<String>,
}

/// A project's settings: for its admins only.
async fn settings(
    State(state): State<AppState>,
    user: WebUser,
    Path(project): Path<String>,
    Form(form): Form<SettingsForm>,
) -> Result<Response, WebError> {
    let lang = user.lang;
    let project = parse_id(&project, lang)?;
    user.check_project(project)?;
    user.check_csrf(&form.csrf)?;
    let on = form.approved_only.as_deref() == Some("on");
    state.service.set_approved_only_as(&user.account, project, on).await.map_err(|e| match e {
        StorageError::Forbidden(_) => WebError::Bad(lang, lang.t(Key::AdminsOnly).to_owned()),
        e => failed(lang)(e),
    })?;
    tracing::info!(%project, approved_only = on, "the review gate changed");
    Ok(redirect("/projects", None))
}

#[derive(Deserialize)]
struct EditForm {
    csrf: String,
    field: String,
    #[serde(default)]
    value: String,
}

async fn edit(
    State(state): State<AppState>,
    user: WebUser,
    Path(doc): Path<String>,
    Form(form): Form<EditForm>,
) -> Result<Response, WebError> {
    let lang = user.lang;
    let (doc, project) = submission_for(&state, &user, &doc, &form.csrf).await?;
    let input = crate::service::rules::AnswerInput::Text(form.value);
    state
        .service
        .edit_answer(project, tejido_core::DocId(doc), &form.field, input, crate::now_ms())
        .await
        .map_err(failed(lang))?;
    tracing::info!(submission = %doc, "an answer was edited in the web app");
    Ok(redirect(&format!("/submissions/{doc}"), None))
}

/// A photo (or other attachment) of a submission, for a user of its project.
async fn attachment(
    State(state): State<AppState>,
    user: WebUser,
    Path((doc, sha256)): Path<(String, String)>,
) -> Result<Response, WebError> {
    use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
    let lang = user.lang;
    let doc = parse_id(&doc, lang)?;
    if !crate::blobs::valid_sha256(&sha256) {
        return Err(WebError::NotFound(lang));
    }
    let Some((project, media_type)) =
        state.service.submission_blob(doc, &sha256).await.map_err(failed(lang))?
    else {
        return Err(WebError::NotFound(lang));
    };
    user.check_project(project)?;
    let size = state.blobs.complete_size(&sha256).await.map_err(|_| WebError::Failed(lang))?;
    let Some(size) = size else { return Err(WebError::NotFound(lang)) };
    let bytes = state.blobs.read(&sha256).await.map_err(|_| WebError::Failed(lang))?;
    let mut res = axum::body::Body::from_stream(bytes).into_response();
    let media_type = crate::service::blobs::allowed_media_type(&media_type);
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
    h.insert(CONTENT_LENGTH, size.into());
    h.insert(
        axum::http::HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    if !crate::service::blobs::shown_inline(media_type) {
        h.insert(CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    }
    Ok(res)
}

/// What an export request asks for, as the page's links and the API's query carry it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ExportQuery {
    pub form: Option<String>,
    /// `csv` (a zip of CSV files), `xlsx` or `geojson`.
    pub format: Option<String>,
    /// `names` (the default) or `labels`.
    pub headers: Option<String>,
    /// The language of labels (`es`, `en`).
    pub lang: Option<String>,
}

impl ExportQuery {
    /// The form id and options, or what is wrong with the query.
    pub fn options(&self) -> Result<(String, crate::export::ExportOptions), String> {
        use crate::export::{ExportOptions, Format, Headers};
        let form = nonempty(&self.form).ok_or("name the form to export (form=…)")?.to_owned();
        let format = match nonempty(&self.format) {
            None => Format::CsvZip,
            Some(f) => Format::parse(f).ok_or("format is csv, xlsx or geojson")?,
        };
        let headers = match nonempty(&self.headers) {
            None | Some("names") => Headers::Names,
            Some("labels") => Headers::Labels,
            Some(_) => return Err("headers is names or labels".into()),
        };
        let lang = nonempty(&self.lang).map(str::to_owned);
        Ok((form, ExportOptions { format, headers, lang, geopoint: None }))
    }
}

/// Why an export cannot start (checked before the first byte, so the answer can still say so).
pub enum ExportRefusal {
    NotFound,
    Bad(String),
    Failed(StorageError),
}

/// Starts a streaming export: the response's headers and its body, which the export fills at
/// the client's pace.
pub async fn export_response(
    state: &AppState,
    project: Uuid,
    query: &ExportQuery,
) -> Result<Response, ExportRefusal> {
    use crate::export::Format;
    let (form_id, options) = query.options().map_err(ExportRefusal::Bad)?;
    let form = state.service.latest_form(project, &form_id).await.map_err(ExportRefusal::Failed)?;
    let Some(form) = form else { return Err(ExportRefusal::NotFound) };
    if options.format == Format::GeoJson && !has_point(&form) {
        return Err(ExportRefusal::Bad("this form has no geopoint question outside repeats".into()));
    }
    let file_name = options.format.file_name(&form);
    let content_type = options.format.content_type();
    let permit = state.service.export_permit().map_err(ExportRefusal::Failed)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    let service = state.service.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let failed = tx.clone();
        let writer = crate::service::exports::ChannelWriter::new(tx);
        match service.export(project, &form_id, options, writer).await {
            Ok(summary) => tracing::info!(form = %form_id, submissions = summary.submissions, "exported"),
            Err(e) => {
                tracing::warn!(form = %form_id, error = %e, "an export stopped");
                // The client sees a broken download rather than a file that looks complete.
                let _ = failed.send(Err(std::io::Error::other("the export stopped"))).await;
            }
        }
    });
    // A receiver may be polled again after it ends (the body's layers do): it answers None.
    let mut rx = rx;
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut res = axum::body::Body::from_stream(stream).into_response();
    let h = res.headers_mut();
    h.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let disposition = format!("attachment; filename=\"{}\"", file_name.replace(['"', '\\', '\r', '\n'], "_"));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(axum::http::header::CONTENT_DISPOSITION, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        axum::http::HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    Ok(res)
}

async fn export(
    State(state): State<AppState>,
    user: WebUser,
    Path(project): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, WebError> {
    let lang = user.lang;
    let project = parse_id(&project, lang)?;
    user.check_project(project)?;
    export_response(&state, project, &q).await.map_err(|r| match r {
        ExportRefusal::NotFound => WebError::NotFound(lang),
        ExportRefusal::Bad(m) => WebError::Bad(lang, m),
        ExportRefusal::Failed(e) => failed(lang)(e),
    })
}

/// Whether a GeoJSON export can place features: a geopoint question outside repeats.
fn has_point(form: &tejido_core::form::Form) -> bool {
    use tejido_core::form::QuestionType;
    form.nodes.iter().any(|n| {
        let mut at = n.parent;
        let mut in_repeat = false;
        while let Some(i) = at {
            match form.nodes.get(i) {
                Some(p) if p.kind == QuestionType::Repeat => {
                    in_repeat = true;
                    break;
                }
                Some(p) => at = p.parent,
                None => break,
            }
        }
        matches!(n.kind, QuestionType::Geopoint | QuestionType::StartGeopoint) && !in_repeat
    })
}
