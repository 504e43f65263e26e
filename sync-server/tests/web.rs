//! The coordinators' web app and read API over HTTP: accounts and sessions, CSRF, login
//! throttling, the boundary between projects, the read model behind the submissions list, a
//! review that reaches the enumerator's device, and a conflict resolved from the page.
#![allow(clippy::unwrap_used)]

mod common;

use common::{change, start, Dev, Server, ADMIN};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tejido_core::{Change, Collection, DocId, FieldOp, FieldPath, Hlc, OpId};
use tejido_server::storage::UserRole;
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery";

/// A browser without JavaScript: follows no redirects, keeps the cookies it is given.
struct Browser {
    http: reqwest::Client,
    url: String,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new(server: &Server) -> Browser {
        Browser {
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            url: server.url.clone(),
            cookies: Vec::new(),
        }
    }

    fn keep(&mut self, res: &reqwest::Response) {
        for v in res.headers().get_all(SET_COOKIE) {
            let v = v.to_str().unwrap();
            let (kv, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !attrs.contains("Max-Age=0") {
                self.cookies.push((k.to_owned(), val.to_owned()));
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn get(&mut self, path: &str) -> (StatusCode, String, reqwest::header::HeaderMap) {
        let res = self
            .http
            .get(format!("{}{path}", self.url))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&res);
        let (status, headers) = (res.status(), res.headers().clone());
        (status, res.text().await.unwrap(), headers)
    }

    async fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, String, reqwest::header::HeaderMap) {
        let res = self
            .http
            .post(format!("{}{path}", self.url))
            .header(COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep(&res);
        let (status, headers) = (res.status(), res.headers().clone());
        (status, res.text().await.unwrap(), headers)
    }

    async fn login(&mut self, email: &str, password: &str) -> StatusCode {
        let (status, page, _) = self.get("/login").await;
        assert_eq!(status, StatusCode::OK);
        let csrf = hidden(&page, "csrf");
        let (status, _, headers) =
            self.post("/login", &[("email", email), ("password", password), ("csrf", &csrf)]).await;
        if status == StatusCode::SEE_OTHER {
            assert_eq!(headers[LOCATION], "/projects");
        }
        status
    }

    /// The session's CSRF token, from any signed-in page.
    async fn csrf(&mut self) -> String {
        let (status, page, _) = self.get("/projects").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        hidden(&page, "csrf")
    }

    /// A JSON API call with this browser's session.
    async fn api(&mut self, path: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.url))
            .header(COOKIE, self.cookie_header())
            .header(tejido_core::sync::wire::PROTOCOL_HEADER, "1")
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, serde_json::from_str(&res.text().await.unwrap()).unwrap_or(Value::Null))
    }
}

/// The value of the first hidden input named `name`.
fn hidden(page: &str, name: &str) -> String {
    let at = page.find(&format!("name=\"{name}\" value=\"")).unwrap_or_else(|| panic!("no {name} in {page}"));
    let rest = &page[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

async fn coordinator(server: &Server, email: &str, project: Uuid) {
    server.service.add_user(email, Some(PASSWORD), project, UserRole::Coordinator, 0).await.unwrap();
}

/// A finalized submission of form `f` from an enumerator.
fn submission(d: &Dev, hlc: u64, answers: &[(&str, Value)]) -> (DocId, Change) {
    let doc = DocId::new();
    let mut fields: Vec<(&str, Value)> =
        vec![("_form", json!("f")), ("_form_version", json!("1")), ("_status", json!("finalized"))];
    fields.extend(answers.iter().cloned());
    (doc, change(d, doc, Collection::Submission, hlc, &fields))
}

#[tokio::test]
async fn a_coordinator_signs_in_sees_only_her_projects_and_signs_out() {
    let server = start().await;
    let a = server.project("Observatorio A").await;
    let b = server.project("Observatorio B").await;
    coordinator(&server, "Ana@Example.org", a).await;

    let mut browser = Browser::new(&server);
    // Signed out: every page sends to the login.
    let (status, _, headers) = browser.get("/projects").await;
    assert_eq!((status, headers[LOCATION].to_str().unwrap()), (StatusCode::SEE_OTHER, "/login"));
    assert_eq!(browser.login("ana@example.org", "wrong password!!").await, StatusCode::UNAUTHORIZED);
    assert_eq!(browser.login("ana@example.org", PASSWORD).await, StatusCode::SEE_OTHER);
    let session = browser.cookies.iter().find(|c| c.0 == "tejido_session").unwrap().1.clone();
    let (status, page, headers) = browser.get("/projects").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Observatorio A") && !page.contains("Observatorio B"), "{page}");
    assert!(page.contains("Proyectos"), "Spanish first: {page}");
    assert_eq!(headers["cache-control"], "no-store");
    let (_, english, _) = browser.get("/projects?lang=en").await;
    assert!(english.contains("Projects") && english.contains("Sign out"), "{english}");

    // Project B does not exist for her: pages and API alike.
    let (status, _, _) = browser.get(&format!("/projects/{b}/submissions")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = browser.api(&format!("/v1/projects/{b}/submissions")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = browser.api(&format!("/v1/projects/{a}/submissions")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Logout needs the session's CSRF token; without it nothing happens.
    let (status, _, _) = browser.post("/logout", &[("csrf", "forged")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(browser.get("/projects").await.0, StatusCode::OK);
    let csrf = browser.csrf().await;
    let (status, _, _) = browser.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // The old cookie stops working at once, pages and API.
    browser.cookies = vec![("tejido_session".into(), session)];
    assert_eq!(browser.get("/projects").await.0, StatusCode::SEE_OTHER);
    assert_eq!(browser.api(&format!("/v1/projects/{a}/submissions")).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_login_without_its_csrf_token_is_refused() {
    let server = start().await;
    let a = server.project("A").await;
    coordinator(&server, "ana@example.org", a).await;
    let mut browser = Browser::new(&server);
    let (status, _, _) =
        browser.post("/login", &[("email", "ana@example.org"), ("password", PASSWORD), ("csrf", "x")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(browser.cookies.iter().all(|c| c.0 != "tejido_session"));
}

#[tokio::test]
async fn repeated_failed_logins_are_slowed_down_even_with_the_right_password() {
    let server = start().await;
    let a = server.project("A").await;
    coordinator(&server, "ana@example.org", a).await;
    let mut browser = Browser::new(&server);
    for _ in 0..tejido_server::service::accounts::FREE_FAILURES_PER_ACCOUNT {
        assert_eq!(browser.login("ana@example.org", "not the password").await, StatusCode::UNAUTHORIZED);
    }
    let (_, page, _) = browser.get("/login").await;
    let csrf = hidden(&page, "csrf");
    let (status, page, headers) = browser
        .post("/login", &[("email", "ana@example.org"), ("password", PASSWORD), ("csrf", &csrf)])
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{page}");
    assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert!(browser.cookies.iter().all(|c| c.0 != "tejido_session"));
    // After the wait, the right password works and clears the count.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(browser.login("ana@example.org", PASSWORD).await, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_submission_arrives_is_listed_filtered_and_its_review_reaches_the_device() {
    let server = start().await;
    let a = server.project("A").await;
    let b = server.project("B").await;
    coordinator(&server, "ana@example.org", a).await;
    let enumerator = server.device(a, "enumerator").await;
    let other = server.device(b, "enumerator").await;
    let (doc, c1) =
        submission(&enumerator, Hlc::new(1_000, 0).0, &[("district", json!("arraijan")), ("age", json!(41))]);
    let (_, c2) = submission(&enumerator, Hlc::new(2_000, 0).0, &[("district", json!("panama"))]);
    let (b_doc, c3) = submission(&other, Hlc::new(3_000, 0).0, &[("district", json!("colon"))]);
    assert_eq!(server.push(&enumerator, &[c1, c2]).await.0, StatusCode::OK);
    assert_eq!(server.push(&other, &[c3]).await.0, StatusCode::OK);

    let mut browser = Browser::new(&server);
    assert_eq!(browser.login("ana@example.org", PASSWORD).await, StatusCode::SEE_OTHER);
    let (status, body) = browser.api(&format!("/v1/projects/{a}/submissions")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body["submissions"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "only project A's: {body}");
    assert!(rows.iter().all(|r| r["review_state"] == "pending" && r["finalized"] == true));
    // Filter by an answer, and by review state.
    let (_, body) = browser.api(&format!("/v1/projects/{a}/submissions?field=district&value=arraijan")).await;
    assert_eq!(body["submissions"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["submissions"][0]["doc"], json!(doc.0));
    let (_, body) = browser.api(&format!("/v1/projects/{a}/submissions?field=age&value=41")).await;
    assert_eq!(body["submissions"].as_array().unwrap().len(), 1, "a number compares as its text: {body}");
    // Another project's submission is a 404, page and API.
    assert_eq!(browser.api(&format!("/v1/submissions/{}", b_doc.0)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(browser.get(&format!("/submissions/{}", b_doc.0)).await.0, StatusCode::NOT_FOUND);

    // The page shows it; a review without the CSRF token changes nothing.
    let (status, page, _) = browser.get(&format!("/submissions/{}", doc.0)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("arraijan"), "{page}");
    let review = format!("/submissions/{}/review", doc.0);
    let (status, _, _) =
        browser.post(&review, &[("csrf", "nope"), ("state", "has_issues"), ("comment", "x")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, body) = browser.api(&format!("/v1/submissions/{}", doc.0)).await;
    assert_eq!(body["review_state"], "pending", "{body}");
    let csrf = browser.csrf().await;
    let (status, _, _) = browser
        .post(
            &review,
            &[("csrf", &csrf), ("state", "has_issues"), ("comment", "Falta la edad del segundo miembro")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, body) = browser.api(&format!("/v1/submissions/{}", doc.0)).await;
    assert_eq!(body["review_state"], "has_issues", "{body}");
    assert_eq!(body["comments"][0]["text"], "Falta la edad del segundo miembro");
    assert_eq!(body["comments"][0]["author"], "ana@example.org");
    let (_, body) = browser.api(&format!("/v1/projects/{a}/submissions?review=pending")).await;
    assert_eq!(body["submissions"].as_array().unwrap().len(), 1, "the queue holds the other one: {body}");

    // The enumerator's device gets the review and the comment on its next pull.
    let pulled = server.pull_all(&enumerator).await;
    let review_op = pulled
        .iter()
        .flat_map(|c| c.ops.iter().map(move |o| (c, o)))
        .find(|(c, o)| c.doc == doc && o.field.as_str() == "_review/state");
    assert_eq!(review_op.unwrap().1.value, json!("has_issues"));
    assert!(pulled.iter().any(|c| c.collection == Collection::Comment
        && c.ops.iter().any(|o| o.value == json!("Falta la edad del segundo miembro"))));
}

/// A device's change of one field of `doc`, having seen `seen`.
fn edit_seeing(d: &Dev, doc: DocId, hlc: u64, field: &str, v: &str, seen: OpId) -> Change {
    Change {
        doc,
        collection: Collection::Submission,
        replica: d.replica,
        hlc: Hlc::new(hlc, 0),
        ops: vec![FieldOp { field: FieldPath::parse(field).unwrap(), value: json!(v), seen: vec![seen] }],
    }
}

#[tokio::test]
async fn a_conflict_is_shown_and_resolved_from_the_page_for_every_device() {
    let server = start().await;
    let a = server.project("A").await;
    coordinator(&server, "ana@example.org", a).await;
    let enumerator = server.device(a, "enumerator").await;
    let (doc, first) = submission(&enumerator, Hlc::new(1_000, 0).0, &[("district", json!("panama"))]);
    assert_eq!(server.push(&enumerator, &[first]).await.0, StatusCode::OK);
    // A coordinator device and the enumerator both edit the district having seen the first value.
    let seen = OpId { hlc: Hlc::new(1_000, 0), replica: enumerator.replica };
    let coordinator_device = server.device(a, "coordinator").await;
    let edit = |d: &Dev, hlc: u64, v: &str| edit_seeing(d, doc, hlc, "district", v, seen);
    assert_eq!(server.push(&enumerator, &[edit(&enumerator, 2_000, "arraijan")]).await.0, StatusCode::OK);
    assert_eq!(
        server.push(&coordinator_device, &[edit(&coordinator_device, 2_500, "la_chorrera")]).await.0,
        StatusCode::OK
    );

    let mut browser = Browser::new(&server);
    assert_eq!(browser.login("ana@example.org", PASSWORD).await, StatusCode::SEE_OTHER);
    let (_, body) = browser.api(&format!("/v1/projects/{a}/submissions?flag=conflicts")).await;
    assert_eq!(body["submissions"].as_array().unwrap().len(), 1, "{body}");
    let (status, page, _) = browser.get(&format!("/submissions/{}", doc.0)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("id=\"conflicts\"") && page.contains("arraijan") && page.contains("la_chorrera"),
        "{page}"
    );
    let (_, body) = browser.api(&format!("/v1/submissions/{}", doc.0)).await;
    assert_eq!(body["conflicted_fields"], json!(["district"]), "{body}");
    let keep = body["history"].as_array().unwrap().iter().find(|h| h["field"] == "district").unwrap()
        ["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["value"] == "arraijan")
        .unwrap()["op"]
        .as_str()
        .unwrap()
        .to_owned();
    let csrf = browser.csrf().await;
    let resolve = format!("/submissions/{}/resolve", doc.0);
    let (status, _, _) =
        browser.post(&resolve, &[("csrf", &csrf), ("field", "district"), ("op", &keep)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, body) = browser.api(&format!("/v1/submissions/{}", doc.0)).await;
    assert_eq!(body["conflicted_fields"], json!([]), "{body}");
    assert_eq!(body["answers"]["district"], "arraijan");
    assert!(body["flags"].as_array().unwrap().is_empty(), "{body}");
    // Resolving again is refused: nothing is open any more.
    let (status, _, _) =
        browser.post(&resolve, &[("csrf", &csrf), ("field", "district"), ("op", &keep)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Both devices converge on the kept value with no open conflict.
    for d in [&enumerator, &coordinator_device] {
        let mut store_ops: Vec<(OpId, Value, Vec<OpId>)> = Vec::new();
        for c in server.pull_all(d).await.into_iter().filter(|c| c.doc == doc) {
            let id = c.op_id();
            for o in c.ops.into_iter().filter(|o| o.field.as_str() == "district") {
                store_ops.push((id, o.value, o.seen));
            }
        }
        let seen_all: Vec<OpId> = store_ops.iter().flat_map(|o| o.2.clone()).collect();
        let open: Vec<&Value> = store_ops.iter().filter(|o| !seen_all.contains(&o.0)).map(|o| &o.1).collect();
        assert_eq!(open, vec![&json!("arraijan")], "one open value, the kept one");
    }
}

#[tokio::test]
async fn the_list_pages_by_keyset_without_gaps_or_repeats() {
    let server = start().await;
    let a = server.project("A").await;
    let enumerator = server.device(a, "enumerator").await;
    let mut docs = Vec::new();
    for i in 0..25u64 {
        let (doc, c) = submission(&enumerator, Hlc::new(1_000 + i, 0).0, &[("n", json!(i))]);
        assert_eq!(server.push(&enumerator, &[c]).await.0, StatusCode::OK);
        docs.push(doc.0);
    }
    // The admin token reads the API too.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, body) = server
            .send(server.req(
                Method::GET,
                &format!("/v1/projects/{a}/submissions?limit=7&cursor={cursor}"),
                Some(ADMIN),
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        seen.extend(
            body["submissions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["doc"].as_str().unwrap().parse::<Uuid>().unwrap()),
        );
        match body["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let mut expected = docs.clone();
    expected.sort();
    let mut got = seen.clone();
    got.sort();
    assert_eq!(got, expected, "every submission once");
    assert_eq!(seen.len(), 25);
    let (status, _) = server
        .send(server.req(Method::GET, &format!("/v1/projects/{a}/submissions?limit=0"), Some(ADMIN)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server
        .send(server.req(Method::GET, &format!("/v1/projects/{a}/submissions?cursor=zzz"), Some(ADMIN)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // An enumerator's token reads nothing here.
    let (status, _) = server
        .send(server.req(Method::GET, &format!("/v1/projects/{a}/submissions"), Some(&enumerator.token)))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Publishes the demo victimization survey with its indicators.
async fn publish_victimization(server: &Server, project: Uuid) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/forms");
    let form = tejido_core::form::import_xlsform(&root.join("victimizacion_hogares.xlsx")).unwrap();
    let version = form.settings.version.clone();
    server
        .service
        .publish_form(&tejido_server::storage::PublishForm {
            project,
            form_id: "victimizacion_hogares".into(),
            version: version.clone(),
            roles: vec![tejido_core::sync::wire::Role::Enumerator],
            form: serde_json::to_value(&form).unwrap(),
            media: Vec::new(),
            now_ms: 1,
        })
        .await
        .unwrap();
    let definition = std::fs::read_to_string(root.join("victimizacion_hogares.indicators.json")).unwrap();
    server.service.set_indicators(project, "victimizacion_hogares", &definition).await.unwrap();
    version
}

#[tokio::test]
async fn the_indicators_page_draws_each_table_with_small_cells_suppressed() {
    let server = start().await;
    let a = server.project("A").await;
    coordinator(&server, "ana@example.org", a).await;
    let version = publish_victimization(&server, a).await;
    // A definition naming a question the form lacks is refused and changes nothing.
    let bad = server.service.set_indicators(a, "victimizacion_hogares", r#"{"indicators": [{"id": "x", "kind": "count", "where": {"question": "nope", "answered": true}}]}"#).await;
    assert!(bad.is_err());
    let enumerator = server.device(a, "enumerator").await;
    for i in 0..3u64 {
        let doc = DocId::new();
        let c = change(
            &enumerator,
            doc,
            Collection::Submission,
            Hlc::new(1_000 + i, 0).0,
            &[
                ("_form", json!("victimizacion_hogares")),
                ("_form_version", json!(version)),
                ("_status", json!("finalized")),
                ("consent", json!("yes")),
                ("survey/location/district", json!("panama")),
                ("survey/victimization/crimes", json!(if i == 0 { "robbery" } else { "none" })),
            ],
        );
        assert_eq!(server.push(&enumerator, &[c]).await.0, StatusCode::OK);
    }
    let mut browser = Browser::new(&server);
    assert_eq!(browser.login("ana@example.org", PASSWORD).await, StatusCode::SEE_OTHER);
    let (status, page, _) = browser.get(&format!("/projects/{a}/indicators")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("<svg") && page.contains("data-table="), "{page}");
    // Three households: every cell is under the minimum of 5, so none shows a figure.
    assert!(page.contains("suprimido"), "{page}");
    let other = server.project("B").await;
    assert_eq!(browser.get(&format!("/projects/{other}/indicators")).await.0, StatusCode::NOT_FOUND);
}

/// The indicators are kept computed between changes, and any change is seen at the next view:
/// a new submission, and the review gate.
#[tokio::test]
async fn computed_indicators_follow_every_change() {
    let server = start().await;
    let a = server.project("A").await;
    let version = publish_victimization(&server, a).await;
    let enumerator = &server.device(a, "enumerator").await;
    let push = |i: u64| {
        let c = change(
            enumerator,
            DocId::new(),
            Collection::Submission,
            Hlc::new(1_000 + i, 0).0,
            &[
                ("_form", json!("victimizacion_hogares")),
                ("_form_version", json!(version)),
                ("_status", json!("finalized")),
                ("consent", json!("yes")),
                ("survey/location/district", json!("panama")),
                ("survey/victimization/crimes", json!("none")),
            ],
        );
        let server = &server;
        async move { assert_eq!(server.push(enumerator, &[c]).await.0, StatusCode::OK) }
    };
    // The largest count of the "total" tables.
    let total = || async {
        let tables = server.service.compute_indicators(a, "victimizacion_hogares").await.unwrap().unwrap();
        tables
            .iter()
            .filter(|t| t.dimension == "total")
            .flat_map(|t| &t.rows)
            .filter_map(|r| r.denominator)
            .max()
    };
    for i in 0..6 {
        push(i).await;
    }
    assert_eq!(total().await, Some(6));
    assert_eq!(total().await, Some(6), "computed again from the cache, the same");
    push(6).await;
    assert_eq!(total().await, Some(7), "a new submission is counted at the next view");
    server.service.set_approved_only(a, true).await.unwrap();
    assert_ne!(total().await, Some(7), "under the review gate only approved submissions count");
    server.service.set_approved_only(a, false).await.unwrap();
    assert_eq!(total().await, Some(7));
}

#[tokio::test]
async fn an_admin_holds_the_api_to_approved_submissions_and_a_coordinator_cannot() {
    let server = start().await;
    let a = server.project("A").await;
    coordinator(&server, "ana@example.org", a).await;
    server.service.add_user("jefa@example.org", Some(PASSWORD), a, UserRole::Admin, 0).await.unwrap();
    let enumerator = server.device(a, "enumerator").await;
    let (approved, c1) = submission(&enumerator, Hlc::new(1_000, 0).0, &[]);
    let (waiting, c2) = submission(&enumerator, Hlc::new(2_000, 0).0, &[]);
    assert_eq!(server.push(&enumerator, &[c1, c2]).await.0, StatusCode::OK);

    let mut coordinator_browser = Browser::new(&server);
    assert_eq!(coordinator_browser.login("ana@example.org", PASSWORD).await, StatusCode::SEE_OTHER);
    let csrf = coordinator_browser.csrf().await;
    let settings = format!("/projects/{a}/settings");
    let (status, _, _) =
        coordinator_browser.post(&settings, &[("csrf", &csrf), ("approved_only", "on")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a coordinator may not change the project's settings");
    assert!(!server.service.approved_only(a).await.unwrap());

    let mut admin = Browser::new(&server);
    assert_eq!(admin.login("jefa@example.org", PASSWORD).await, StatusCode::SEE_OTHER);
    let csrf = admin.csrf().await;
    let (status, _, _) = admin.post(&settings, &[("csrf", "forged"), ("approved_only", "on")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = admin.post(&settings, &[("csrf", &csrf), ("approved_only", "on")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(server.service.approved_only(a).await.unwrap());
    let review = format!("/submissions/{}/review", approved.0);
    let (status, _, _) =
        admin.post(&review, &[("csrf", &csrf), ("state", "approved"), ("comment", "")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    let list = |token: &str| server.req(Method::GET, &format!("/v1/projects/{a}/submissions"), Some(token));
    let (_, body) = server.send(list(ADMIN)).await;
    let docs: Vec<&str> =
        body["submissions"].as_array().unwrap().iter().map(|r| r["doc"].as_str().unwrap()).collect();
    assert_eq!(docs, vec![approved.0.to_string()], "{body}");
    let (status, _) =
        server.send(server.req(Method::GET, &format!("/v1/submissions/{}", waiting.0), Some(ADMIN))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        server.send(server.req(Method::GET, &format!("/v1/submissions/{}", approved.0), Some(ADMIN))).await;
    assert_eq!(status, StatusCode::OK);
    // The web app still shows both to review.
    let (_, page, _) = admin.get(&format!("/projects/{a}/submissions")).await;
    assert!(page.contains(&waiting.0.to_string()) && page.contains(&approved.0.to_string()));
}

#[tokio::test]
async fn a_coordinator_edits_an_answer_keeping_its_history_and_sees_the_photo() {
    let server = start().await;
    let a = server.project("A").await;
    let b = server.project("B").await;
    coordinator(&server, "ana@example.org", a).await;
    coordinator(&server, "beto@example.org", b).await;
    let enumerator = server.device(a, "enumerator").await;
    let photo = b"\xFF\xD8\xFF\xE0 not really a jpeg, but bytes".to_vec();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&photo))
    };
    let (status, body) = server.upload(&enumerator, &photo, 0, &photo).await;
    assert!(status.is_success(), "{body}");
    let (doc, c) = submission(
        &enumerator,
        Hlc::new(1_000, 0).0,
        &[("district", json!("panama")), ("photo", json!(format!("sha256:{sha}")))],
    );
    assert_eq!(server.push(&enumerator, &[c]).await.0, StatusCode::OK);

    let mut browser = Browser::new(&server);
    assert_eq!(browser.login("ana@example.org", PASSWORD).await, StatusCode::SEE_OTHER);
    let path = format!("/submissions/{}/attachments/{sha}", doc.0);
    let res = browser
        .http
        .get(format!("{}{path}", browser.url))
        .header(COOKIE, browser.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "image/jpeg");
    assert_eq!(res.bytes().await.unwrap().to_vec(), photo);
    // A blob the submission does not name is not served through it.
    let other = format!("/submissions/{}/attachments/{}", doc.0, "0".repeat(64));
    assert_eq!(browser.get(&other).await.0, StatusCode::NOT_FOUND);
    let mut outsider = Browser::new(&server);
    assert_eq!(outsider.login("beto@example.org", PASSWORD).await, StatusCode::SEE_OTHER);
    assert_eq!(outsider.get(&path).await.0, StatusCode::NOT_FOUND);
    let csrf = outsider.csrf().await;
    let edit = format!("/submissions/{}/edit", doc.0);
    assert_eq!(
        outsider.post(&edit, &[("csrf", &csrf), ("field", "district"), ("value", "x")]).await.0,
        StatusCode::NOT_FOUND
    );

    let csrf = browser.csrf().await;
    assert_eq!(
        browser.post(&edit, &[("csrf", "nope"), ("field", "district"), ("value", "arraijan")]).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        browser.post(&edit, &[("csrf", &csrf), ("field", "_review/state"), ("value", "approved")]).await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, _, _) =
        browser.post(&edit, &[("csrf", &csrf), ("field", "district"), ("value", "arraijan")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, body) = browser.api(&format!("/v1/submissions/{}", doc.0)).await;
    assert_eq!(body["answers"]["district"], "arraijan");
    assert_eq!(body["review_state"], "pending", "an edit is not a review");
    let history =
        body["history"].as_array().unwrap().iter().find(|h| h["field"] == "district").unwrap().clone();
    let values: Vec<(&str, bool, &str)> = history["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["value"].as_str().unwrap(), v["open"].as_bool().unwrap(), v["writer"].as_str().unwrap()))
        .collect();
    assert_eq!(values.len(), 2, "{history}");
    assert_eq!(values[0], ("arraijan", true, "server"));
    assert_eq!((values[1].0, values[1].1), ("panama", false));
    // The enumerator's device gets the edit.
    let pulled = server.pull_all(&enumerator).await;
    assert!(pulled.iter().any(|c| c.doc == doc
        && c.ops.iter().any(|o| o.field.as_str() == "district" && o.value == json!("arraijan"))));
}

#[tokio::test]
async fn each_export_downloads_from_the_page_and_the_api_within_the_project_and_the_gate() {
    let server = start().await;
    let a = server.project("A").await;
    let b = server.project("B").await;
    coordinator(&server, "ana@example.org", a).await;
    coordinator(&server, "beto@example.org", b).await;
    let version = publish_victimization(&server, a).await;
    let enumerator = server.device(a, "enumerator").await;
    let row = Uuid::new_v4();
    let mut docs = Vec::new();
    for (i, district) in ["panama", "arraijan"].iter().enumerate() {
        let doc = DocId::new();
        let roster = format!("survey/roster/{row}");
        let c = change(
            &enumerator,
            doc,
            Collection::Submission,
            Hlc::new(1_000 + i as u64, 0).0,
            &[
                ("_form", json!("victimizacion_hogares")),
                ("_form_version", json!(version)),
                ("_status", json!("finalized")),
                ("consent", json!("yes")),
                ("survey/location/district", json!(district)),
                ("survey/location/home_gps", json!("8.9824 -79.5199 10 5")),
                (&format!("{roster}/_row"), json!(true)),
                (&format!("{roster}/member_name"), json!("=HYPERLINK(\"x\")")),
            ],
        );
        assert_eq!(server.push(&enumerator, &[c]).await.0, StatusCode::OK);
        docs.push(doc);
    }
    let mut browser = Browser::new(&server);
    assert_eq!(browser.login("ana@example.org", PASSWORD).await, StatusCode::SEE_OTHER);
    let (_, page, _) = browser.get(&format!("/projects/{a}/submissions")).await;
    assert!(page.contains("id=\"exports\"") && page.contains("format=xlsx"), "{page}");
    let download = |path: String| {
        let http = browser.http.clone();
        let cookie = browser.cookie_header();
        let url = format!("{}{path}", browser.url);
        async move {
            let res = http.get(url).header(COOKIE, cookie).send().await.unwrap();
            let status = res.status();
            let headers = res.headers().clone();
            (status, headers, res.bytes().await.unwrap().to_vec())
        }
    };
    let base = format!("/projects/{a}/export?form=victimizacion_hogares");
    let (status, headers, zip_bytes) = download(format!("{base}&format=csv")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-disposition"], "attachment; filename=\"victimizacion_hogares.zip\"");
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
    assert!(names.contains(&"victimizacion_hogares.csv".to_owned()), "{names:?}");
    let roster_csv = names.iter().find(|n| n.contains("roster")).unwrap().clone();
    let mut main = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("victimizacion_hogares.csv").unwrap(), &mut main).unwrap();
    assert_eq!(main.lines().count(), 3, "a header and two submissions: {main}");
    assert!(main.contains("arraijan") && main.contains(&docs[0].0.to_string()));
    let mut roster = String::new();
    std::io::Read::read_to_string(&mut zip.by_name(&roster_csv).unwrap(), &mut roster).unwrap();
    assert!(roster.contains("'=HYPERLINK"), "a formula is written as text: {roster}");
    let (status, _, xlsx) = download(format!("{base}&format=xlsx&headers=labels&lang=es")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(xlsx.starts_with(b"PK"), "an xlsx is a zip");
    let (status, _, geojson) = download(format!("{base}&format=geojson")).await;
    assert_eq!(status, StatusCode::OK);
    let geojson: Value = serde_json::from_slice(&geojson).unwrap();
    assert_eq!(geojson["features"].as_array().unwrap().len(), 2);
    assert_eq!(geojson["features"][0]["geometry"]["coordinates"][0], json!(-79.5199));
    assert_eq!(download(format!("{base}&format=pdf")).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(download(format!("/projects/{a}/export?form=nope")).await.0, StatusCode::NOT_FOUND);

    // While as many exports as a process streams at once are running, another is refused
    // (503, with Retry-After), on the page and in the API, and taken again once one ends.
    let running: Vec<_> = (0..tejido_server::service::limits::MAX_CONCURRENT_EXPORTS)
        .map(|_| server.service.export_permit().unwrap())
        .collect();
    let (status, headers, body) = download(format!("{base}&format=csv")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    assert!(String::from_utf8_lossy(&body).contains("ocupado"), "said in Spanish");
    let (status, body) = server
        .send(server.req(
            Method::GET,
            &format!("/v1/projects/{a}/export?form=victimizacion_hogares"),
            Some(ADMIN),
        ))
        .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("busy")));
    drop(running);
    assert_eq!(download(format!("{base}&format=csv")).await.0, StatusCode::OK);

    // Another project's coordinator gets a 404, page and API alike.
    let mut outsider = Browser::new(&server);
    assert_eq!(outsider.login("beto@example.org", PASSWORD).await, StatusCode::SEE_OTHER);
    assert_eq!(outsider.get(&format!("{base}&format=csv")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        outsider.api(&format!("/v1/projects/{a}/export?form=victimizacion_hogares")).await.0,
        StatusCode::NOT_FOUND
    );

    // The API with the admin token; under the review gate, approved submissions only.
    server.service.set_approved_only(a, true).await.unwrap();
    server
        .service
        .review(&tejido_server::storage::Review {
            project: a,
            submission: docs[1],
            state: "approved".into(),
            comment: None,
            author: None,
            author_label: "admin".into(),
            now_ms: 5,
        })
        .await
        .unwrap();
    let res = server
        .req(
            Method::GET,
            &format!("/v1/projects/{a}/export?form=victimizacion_hogares&format=geojson"),
            Some(ADMIN),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let geojson: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let ids: Vec<&str> =
        geojson["features"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![docs[1].0.to_string()]);
}

impl Browser {
    /// A JSON write with this browser's session, carrying `csrf` in the CSRF header when given.
    async fn api_post(&mut self, path: &str, csrf: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .header(COOKIE, self.cookie_header())
            .header(tejido_core::sync::wire::PROTOCOL_HEADER, "1")
            .json(body);
        if let Some(t) = csrf {
            req = req.header("x-csrf-token", t);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, serde_json::from_str(&res.text().await.unwrap()).unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn the_api_edits_resolves_and_reviews_for_a_session_with_its_csrf_header_or_a_bearer_token() {
    let server = start().await;
    let a = server.project("A").await;
    let b = server.project("B").await;
    coordinator(&server, "ana@example.org", a).await;
    coordinator(&server, "beto@example.org", b).await;
    let version = publish_victimization(&server, a).await;
    let enumerator = server.device(a, "enumerator").await;
    let doc = DocId::new();
    let first = change(
        &enumerator,
        doc,
        Collection::Submission,
        Hlc::new(1_000, 0).0,
        &[
            ("_form", json!("victimizacion_hogares")),
            ("_form_version", json!(version)),
            ("_status", json!("finalized")),
            ("consent", json!("yes")),
            ("survey/household_size", json!(3)),
            ("survey/location/district", json!("panama")),
        ],
    );
    assert_eq!(server.push(&enumerator, &[first]).await.0, StatusCode::OK);
    let answers = format!("/v1/submissions/{}/answers", doc.0);
    let resolve = format!("/v1/submissions/{}/resolve", doc.0);
    let review = format!("/v1/submissions/{}/review", doc.0);

    let mut browser = Browser::new(&server);
    assert_eq!(browser.login("ana@example.org", PASSWORD).await, StatusCode::SEE_OTHER);
    let csrf = browser.csrf().await;
    let size = |v: Value| json!({ "field": "survey/household_size", "value": v });
    // A cookie alone does not write (another site could send it), nor a wrong token.
    assert_eq!(browser.api_post(&answers, None, &size(json!(4))).await.0, StatusCode::FORBIDDEN);
    assert_eq!(browser.api_post(&answers, Some("forged"), &size(json!(4))).await.0, StatusCode::FORBIDDEN);
    // Another project's coordinator gets a 404, whatever she sends.
    let mut outsider = Browser::new(&server);
    assert_eq!(outsider.login("beto@example.org", PASSWORD).await, StatusCode::SEE_OTHER);
    let outsider_csrf = outsider.csrf().await;
    assert_eq!(
        outsider.api_post(&answers, Some(&outsider_csrf), &size(json!(4))).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        outsider.api_post(&review, Some(&outsider_csrf), &json!({ "state": "approved" })).await.0,
        StatusCode::NOT_FOUND
    );
    // Typed by the form's question: an integer takes a whole number, as a number or as text.
    for bad in [json!(2.5), json!("tres"), json!(["3"]), json!(true)] {
        let (status, body) = browser.api_post(&answers, Some(&csrf), &size(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["message"].as_str().unwrap().contains("whole number"), "{body}");
    }
    let (status, body) = browser
        .api_post(&answers, Some(&csrf), &json!({ "field": "_review/state", "value": "approved" }))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = browser.api_post(&answers, Some(&csrf), &json!({ "field": "x" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a missing value: {body}");
    let (_, before) = browser.api(&format!("/v1/submissions/{}", doc.0)).await;
    assert_eq!(before["answers"]["survey/household_size"], 3, "nothing refused was written");
    let (status, body) = browser.api_post(&answers, Some(&csrf), &size(json!(" 4 "))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["doc"], json!(doc.0));
    let (_, after) = browser.api(&format!("/v1/submissions/{}", doc.0)).await;
    assert_eq!(after["answers"]["survey/household_size"], 4, "text typed as the integer question takes it");

    // A conflict: the enumerator and a coordinator device both change the district unseen by
    // each other; the API resolves it for a bearer token of the project.
    let seen = OpId { hlc: Hlc::new(1_000, 0), replica: enumerator.replica };
    let coordinator_device = server.device(a, "coordinator").await;
    let district = |d: &Dev, hlc: u64, v: &str| edit_seeing(d, doc, hlc, "survey/location/district", v, seen);
    assert_eq!(server.push(&enumerator, &[district(&enumerator, 2_000, "arraijan")]).await.0, StatusCode::OK);
    assert_eq!(
        server.push(&coordinator_device, &[district(&coordinator_device, 2_500, "la_chorrera")]).await.0,
        StatusCode::OK
    );
    let (_, body) = browser.api(&format!("/v1/submissions/{}", doc.0)).await;
    assert_eq!(body["conflicted_fields"], json!(["survey/location/district"]), "{body}");
    let keep = body["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["field"] == "survey/location/district")
        .unwrap()["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["value"] == "la_chorrera")
        .unwrap()["op"]
        .as_str()
        .unwrap()
        .to_owned();
    let resolution = json!({ "field": "survey/location/district", "op": keep });
    let bearer = |t: &str, path: &str, body: &Value| server.req(Method::POST, path, Some(t)).json(body);
    let other = server.device(b, "coordinator").await;
    assert_eq!(server.send(bearer(&other.token, &resolve, &resolution)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.send(bearer(&enumerator.token, &resolve, &resolution)).await.0.as_u16() / 100, 4);
    let (status, body) = server
        .send(bearer(
            &coordinator_device.token,
            &resolve,
            &json!({ "field": "survey/location/district", "op": "nonsense" }),
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = server.send(bearer(&coordinator_device.token, &resolve, &resolution)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["conflicts"].as_u64(), body["flags"].clone()), (Some(0), json!([])), "{body}");
    let (status, body) = server.send(bearer(&coordinator_device.token, &resolve, &resolution)).await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing is open any more: {body}");

    // A review from the session, signed with the coordinator's email, reaches the device.
    let (status, body) = browser
        .api_post(
            &review,
            Some(&csrf),
            &json!({ "state": "has_issues", "comment": "Revise el tamaño del hogar" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pulled = server.pull_all(&enumerator).await;
    let seen_district: Vec<Value> = pulled
        .iter()
        .filter(|c| c.doc == doc)
        .flat_map(|c| {
            c.ops.iter().filter(|o| o.field.as_str() == "survey/location/district").map(|o| o.value.clone())
        })
        .collect();
    assert!(seen_district.contains(&json!("la_chorrera")));
    assert!(pulled.iter().any(|c| c.doc == doc
        && c.ops.iter().any(|o| o.field.as_str() == "survey/household_size" && o.value == json!(4))));
    assert!(pulled.iter().any(|c| c.doc == doc
        && c.ops.iter().any(|o| o.field.as_str() == "_review/state" && o.value == json!("has_issues"))));
    assert!(
        pulled.iter().any(|c| c.ops.iter().any(|o| o.value == json!("ana@example.org"))),
        "signed by her"
    );
}

/// A form whose repeat holds a photo inside a group: `visits/place`, `visits/details/photo`.
fn visits_form() -> tejido_core::form::Form {
    use tejido_core::form::{Form, Node, QuestionType, Settings};
    let mut nodes = vec![
        Node::new("name", "name", QuestionType::Text, None),
        Node::new("visits", "visits", QuestionType::Repeat, None),
        Node::new("place", "visits/place", QuestionType::Text, Some(1)),
        Node::new("details", "visits/details", QuestionType::Group, Some(1)),
        Node::new("photo", "visits/details/photo", QuestionType::Image, Some(3)),
        Node::new("people", "visits/people", QuestionType::Repeat, Some(1)),
        Node::new("who", "visits/people/who", QuestionType::Text, Some(5)),
    ];
    nodes[1].label.insert("default".into(), "Visita".into());
    nodes[2].label.insert("default".into(), "Lugar".into());
    nodes[4].label.insert("default".into(), "Foto del lugar".into());
    nodes[5].label.insert("default".into(), "Personas".into());
    nodes[6].label.insert("default".into(), "Quién".into());
    Form {
        settings: Settings {
            form_id: "visits".into(),
            version: "1".into(),
            title: "Visitas".into(),
            default_language: None,
            instance_name: None,
        },
        languages: vec!["default".into()],
        nodes,
        choice_lists: Default::default(),
        entities: Vec::new(),
        media: Default::default(),
    }
}

#[tokio::test]
async fn a_photo_in_a_repeat_row_is_shown_in_the_row_and_a_removed_row_is_not() {
    let server = start().await;
    let a = server.project("A").await;
    coordinator(&server, "ana@example.org", a).await;
    server
        .service
        .publish_form(&tejido_server::storage::PublishForm {
            project: a,
            form_id: "visits".into(),
            version: "1".into(),
            roles: vec![tejido_core::sync::wire::Role::Enumerator],
            form: serde_json::to_value(visits_form()).unwrap(),
            media: Vec::new(),
            now_ms: 1,
        })
        .await
        .unwrap();
    let enumerator = server.device(a, "enumerator").await;
    let photo = b"\xFF\xD8\xFF\xE0 a market, in bytes".to_vec();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&photo))
    };
    let (status, body) = server.upload(&enumerator, &photo, 0, &photo).await;
    assert!(status.is_success(), "{body}");
    let (row, gone) = (Uuid::now_v7(), Uuid::now_v7());
    let doc = DocId::new();
    let c = change(
        &enumerator,
        doc,
        Collection::Submission,
        Hlc::new(1_000, 0).0,
        &[
            ("_form", json!("visits")),
            ("_form_version", json!("1")),
            ("_status", json!("finalized")),
            ("name", json!("Ruta norte")),
            (&format!("visits/{row}/_row"), json!(true)),
            (&format!("visits/{row}/place"), json!("Mercado")),
            (&format!("visits/{row}/details/photo"), json!(format!("sha256:{sha}"))),
            (&format!("visits/{gone}/_row"), json!(false)),
            (&format!("visits/{gone}/place"), json!("Borrado")),
        ],
    );
    assert_eq!(server.push(&enumerator, &[c]).await.0, StatusCode::OK);

    let mut browser = Browser::new(&server);
    assert_eq!(browser.login("ana@example.org", PASSWORD).await, StatusCode::SEE_OTHER);
    let (status, page, _) = browser.get(&format!("/submissions/{}", doc.0)).await;
    assert_eq!(status, StatusCode::OK);
    let src = format!("/submissions/{}/attachments/{sha}", doc.0);
    assert!(page.contains("Foto del lugar") && page.contains("Mercado"), "{page}");
    assert!(page.contains(&format!("img class=\"photo\" src=\"{src}\"")), "the photo is in its row: {page}");
    assert!(page.contains(&format!("data-field=\"visits/{row}/details/photo\"")), "{page}");
    let table = page.split("data-repeat=\"visits\"").nth(1).and_then(|t| t.split("</table>").next()).unwrap();
    assert!(table.contains("Mercado") && table.contains(&src), "{table}");
    assert!(!table.contains("Borrado"), "a removed row is not shown: {table}");
    assert!(
        !table.contains("Quién"),
        "a nested repeat's question is not a column of the outer table: {table}"
    );
    let res = browser
        .http
        .get(format!("{}{src}", browser.url))
        .header(COOKIE, browser.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().to_vec(), photo);
}

#[tokio::test]
async fn a_nested_repeat_is_shown_as_its_own_table_with_the_row_it_belongs_to() {
    let server = start().await;
    let a = server.project("A").await;
    coordinator(&server, "ana@example.org", a).await;
    server
        .service
        .publish_form(&tejido_server::storage::PublishForm {
            project: a,
            form_id: "visits".into(),
            version: "1".into(),
            roles: vec![tejido_core::sync::wire::Role::Enumerator],
            form: serde_json::to_value(visits_form()).unwrap(),
            media: Vec::new(),
            now_ms: 1,
        })
        .await
        .unwrap();
    let enumerator = server.device(a, "enumerator").await;
    // Row ids in creation order, as the device makes them.
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let (p1, p2, p3, gone) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let doc = DocId::new();
    let c = change(
        &enumerator,
        doc,
        Collection::Submission,
        Hlc::new(1_000, 0).0,
        &[
            ("_form", json!("visits")),
            ("_form_version", json!("1")),
            ("_status", json!("finalized")),
            (&format!("visits/{first}/_row"), json!(true)),
            (&format!("visits/{first}/place"), json!("Mercado")),
            (&format!("visits/{first}/people/{p1}/_row"), json!(true)),
            (&format!("visits/{first}/people/{p1}/who"), json!("Berta")),
            (&format!("visits/{second}/_row"), json!(true)),
            (&format!("visits/{second}/place"), json!("Escuela")),
            (&format!("visits/{second}/people/{p2}/_row"), json!(true)),
            (&format!("visits/{second}/people/{p2}/who"), json!("Carlos")),
            (&format!("visits/{second}/people/{gone}/_row"), json!(false)),
            (&format!("visits/{second}/people/{gone}/who"), json!("Borrada")),
            (&format!("visits/{second}/people/{p3}/_row"), json!(true)),
            (&format!("visits/{second}/people/{p3}/who"), json!("Dora")),
        ],
    );
    assert_eq!(server.push(&enumerator, &[c]).await.0, StatusCode::OK);

    let mut browser = Browser::new(&server);
    assert_eq!(browser.login("ana@example.org", PASSWORD).await, StatusCode::SEE_OTHER);
    let (status, page, _) = browser.get(&format!("/submissions/{}", doc.0)).await;
    assert_eq!(status, StatusCode::OK);
    let table = page
        .split("data-repeat=\"visits/people\"")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .unwrap_or_else(|| panic!("the nested repeat has its table: {page}"));
    assert!(table.contains("<th class=\"position\">Visita</th>") && table.contains("Quién"), "{table}");
    // One line per existing person, each with the position of its visit, in the order made.
    let positions: Vec<&str> =
        table.split("<td class=\"position\">").skip(1).map(|c| c.split("</td>").next().unwrap()).collect();
    assert_eq!(positions, ["1", "2", "2"], "{table}");
    for (who, key) in [
        ("Berta", format!("visits/{first}/people/{p1}/who")),
        ("Carlos", format!("visits/{second}/people/{p2}/who")),
        ("Dora", format!("visits/{second}/people/{p3}/who")),
    ] {
        assert!(table.contains(&format!("data-field=\"{key}\">{who}</td>")), "{who} in her row: {table}");
    }
    assert!(!table.contains("Borrada"), "a removed nested row is not shown: {table}");
    let outer = page.split("data-repeat=\"visits\"").nth(1).and_then(|t| t.split("</table>").next()).unwrap();
    assert!(outer.contains("Mercado") && outer.contains("Escuela") && !outer.contains("Berta"), "{outer}");
}
