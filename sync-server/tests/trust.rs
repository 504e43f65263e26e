//! The trust boundary inside a project: what a device of the project may not do, whatever it
//! claims. Each test here failed on the server before the service layer took the rules over.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tejido_core::{Change, Collection, DocId, FieldOp, FieldPath, Hlc, OpId};

fn now_hlc() -> Hlc {
    Hlc::new(tejido_server::now_ms() as u64, 0)
}

fn op<'a>(changes: &'a [Change], doc: DocId, field: &str) -> Vec<(OpId, &'a Value)> {
    changes
        .iter()
        .filter(|c| c.doc == doc)
        .flat_map(|c| c.ops.iter().filter(|o| o.field.as_str() == field).map(move |o| (c.op_id(), &o.value)))
        .collect()
}

async fn review(s: &Server, doc: DocId, state: &str) -> Value {
    let (st, body) = s
        .send(
            s.req(Method::POST, &format!("/v1/submissions/{doc}/review"), Some(ADMIN))
                .json(&json!({ "state": state })),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body
}

/// Every page after `cursor`, and the cursor after them.
async fn pull_from(s: &Server, d: &Dev, mut cursor: String) -> (Vec<Change>, String) {
    let mut out = Vec::new();
    loop {
        let (st, body) =
            s.send(s.req(Method::GET, &format!("/v1/pull?cursor={cursor}"), Some(&d.token))).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        out.extend(serde_json::from_value::<Vec<Change>>(body["changes"].clone()).unwrap());
        cursor = body["cursor"].as_str().unwrap().to_owned();
        if !body["more"].as_bool().unwrap() {
            return (out, cursor);
        }
    }
}

/// The server's stamps, as the coordinator's log shows them.
fn server_stamps(changes: &[Change], device_replicas: &[tejido_core::ReplicaId]) -> Vec<Hlc> {
    changes.iter().filter(|c| !device_replicas.contains(&c.replica)).map(|c| c.hlc).collect()
}

#[tokio::test]
async fn a_device_clock_far_ahead_never_moves_the_server_clock_for_anyone() {
    let s = start().await;
    let (pa, pb) = (s.project("Chorrera").await, s.project("Arraiján").await);
    let ea = s.device(pa, "enumerator").await;
    let eb = s.device(pb, "enumerator").await;
    let cb = s.device(pb, "coordinator").await;
    let poisoned = DocId::new();
    let (st, body) =
        s.push(&ea, &[change(&ea, poisoned, Collection::Submission, u64::MAX, &[("age", json!(30))])]).await;
    assert_eq!(st, StatusCode::OK, "a stamp at the end of time is kept: {body}");
    let fifty_years = DocId::new();
    let ahead = Hlc::new(tejido_server::now_ms() as u64 + 50 * 365 * 86_400_000, 0);
    let (st, _) = s
        .push(&ea, &[change(&ea, fifty_years, Collection::Submission, ahead.0, &[("age", json!(31))])])
        .await;
    assert_eq!(st, StatusCode::OK);
    review(&s, poisoned, "approved").await;
    review(&s, fifty_years, "approved").await;

    // Another project: two reviews in a row must both be kept, with sane stamps.
    let sub = DocId::new();
    let (st, _) =
        s.push(&eb, &[change(&eb, sub, Collection::Submission, now_hlc().0, &[("age", json!(40))])]).await;
    assert_eq!(st, StatusCode::OK);
    review(&s, sub, "approved").await;
    let (mut seen, cursor) = pull_from(&s, &cb, String::new()).await;
    review(&s, sub, "has_issues").await;
    seen.extend(pull_from(&s, &cb, cursor).await.0);
    let states = op(&seen, sub, "_review/state");
    assert_eq!(states.len(), 2, "both reviews are in the log: {states:?}");
    assert_ne!(states[0].0, states[1].0, "two reviews never share an op id");
    let mut view = tejido_core::crdt::register::Register::default();
    for c in &seen {
        for o in c.ops.iter().filter(|o| c.doc == sub && o.field.as_str() == "_review/state") {
            view.apply(c.op_id(), o.value.clone(), &o.seen);
        }
    }
    assert_eq!(view.winner().map(|(_, v)| v.clone()), Some(json!("has_issues")), "the later review wins");
    let bound = Hlc::new(tejido_server::now_ms() as u64 + 86_400_000 + 60_000, 0);
    for h in server_stamps(&seen, &[eb.replica, cb.replica]) {
        assert!(h < bound, "a server stamp {h} is past the clock bound");
    }

    // Forms published afterwards carry a sane stamp too.
    let ca = s.device(pa, "coordinator").await;
    let all = s.pull_all(&ca).await;
    for h in server_stamps(&all, &[ea.replica, ca.replica]) {
        assert!(h < bound, "a server stamp {h} in the poisoned project is past the bound");
    }
    // The device whose clock is far ahead is flagged.
    let (_, devices) = s.send(s.req(Method::GET, &format!("/v1/projects/{pa}/devices"), Some(ADMIN))).await;
    let flagged: Vec<&Value> =
        devices.as_array().unwrap().iter().filter(|d| !d["far_future_ms"].is_null()).collect();
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0]["id"], json!(ea.id));
}

fn write(d: &Dev, doc: DocId, hlc: Hlc, field: &str, value: Value, seen: Vec<OpId>) -> Change {
    Change {
        doc,
        collection: Collection::Submission,
        replica: d.replica,
        hlc,
        ops: vec![FieldOp { field: FieldPath::parse(field).unwrap(), value, seen }],
    }
}

/// A finalized submission as a device sends it.
fn finalized(d: &Dev, doc: DocId, hlc: Hlc) -> Change {
    change(
        d,
        doc,
        Collection::Submission,
        hlc.0,
        &[
            ("_form", json!("victimization")),
            ("_form_version", json!("1")),
            ("_author", json!(d.replica.to_string())),
            ("_status", json!("finalized")),
            ("age", json!(30)),
        ],
    )
}

#[tokio::test]
async fn an_enumerator_cannot_approve_her_own_submission_or_rewrite_its_metadata() {
    let s = start().await;
    let p = s.project("p").await;
    let e = s.device(p, "enumerator").await;
    let coord = s.device(p, "coordinator").await;
    let sub = DocId::new();
    let create = finalized(&e, sub, now_hlc());
    let (st, body) = s.push(&e, std::slice::from_ref(&create)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // Pushing the creating change again is still a harmless duplicate.
    let (st, body) = s.push(&e, std::slice::from_ref(&create)).await;
    assert_eq!((st, body["duplicate_ops"].as_u64()), (StatusCode::OK, Some(5)));
    review(&s, sub, "has_issues").await;
    let seen = s.pull_all(&e).await;
    let review_op = op(&seen, sub, "_review/state")[0].0;

    let later = || Hlc::new(tejido_server::now_ms() as u64 + 1_000, 0);
    let refused: Vec<(&str, Change)> = vec![
        (
            "self-approval seeing the review",
            write(&e, sub, later(), "_review/state", json!("approved"), vec![review_op]),
        ),
        ("self-approval", write(&e, sub, later(), "_review/state", json!("approved"), vec![])),
        ("a status other than finalized", write(&e, sub, later(), "_status", json!("approved"), vec![])),
        ("another form", write(&e, sub, later(), "_form", json!("other"), vec![create.op_id()])),
        ("another form version", write(&e, sub, later(), "_form_version", json!("2"), vec![create.op_id()])),
        (
            "another author",
            write(&e, sub, later(), "_author", json!(coord.replica.to_string()), vec![create.op_id()]),
        ),
        ("an unknown metadata field", write(&e, sub, later(), "_secret", json!(1), vec![])),
        (
            "a new submission claiming another author",
            change(
                &e,
                DocId::new(),
                Collection::Submission,
                later().0,
                &[("_author", json!(coord.replica.to_string()))],
            ),
        ),
        (
            "a comment with a claimed author",
            change(
                &e,
                DocId::new(),
                Collection::Comment,
                later().0,
                &[
                    ("submission", json!(sub.to_string())),
                    ("text", json!("ok")),
                    ("author", json!("Coordinator Ana")),
                ],
            ),
        ),
        (
            "a comment that approves",
            change(
                &e,
                DocId::new(),
                Collection::Comment,
                later().0,
                &[
                    ("submission", json!(sub.to_string())),
                    ("text", json!("ok")),
                    ("review_state", json!("approved")),
                ],
            ),
        ),
    ];
    for (what, bad) in refused {
        let (st, body) = s.push(&e, &[bad]).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{what}: {body}");
        assert_eq!(body["error"], "forbidden", "{what}");
    }
    let view = s.pull_all(&coord).await;
    let states = op(&view, sub, "_review/state");
    assert_eq!(states.len(), 1, "nothing the enumerator sent reached the review state");
    assert_eq!(states[0].1, &json!("has_issues"));
    assert_eq!(op(&view, sub, "_form"), vec![(create.op_id(), &json!("victimization"))]);
    assert!(view.iter().all(|c| c.collection != Collection::Comment));

    // Her own comment is kept, and its author is what the server knows of her credential.
    let comment = DocId::new();
    let mine = change(
        &e,
        comment,
        Collection::Comment,
        later().0,
        &[("submission", json!(sub.to_string())), ("text", json!("corrected"))],
    );
    let (st, body) = s.push(&e, &[mine]).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let view = s.pull_all(&coord).await;
    let authors = op(&view, comment, "author");
    assert_eq!(authors.len(), 1);
    assert!(authors[0].1.as_str().unwrap().contains(&e.id.to_string()), "{authors:?}");
    assert_ne!(authors[0].0.replica, e.replica, "the server wrote it");
    // Her device receives it too.
    assert_eq!(op(&s.pull_all(&e).await, comment, "author").len(), 1);
}

#[tokio::test]
async fn metadata_fields_by_role() {
    let s = start().await;
    let p = s.project("p").await;
    let reviewer = s.device(p, "coordinator").await;
    // field, value, (enumerator, youth, coordinator) may write it on an existing submission.
    let table: &[(&str, Value, [bool; 3])] = &[
        ("household/size", json!(4), [true, true, true]),
        ("members/0190a3c4-0000-7000-8000-000000000001/_row", json!(true), [true, true, true]),
        ("_deleted", json!({ "deleted": true, "covers": [] }), [true, true, true]),
        ("_status", json!("finalized"), [true, true, true]),
        ("_status", json!("draft"), [false, false, false]),
        ("_review/state", json!("approved"), [false, false, true]),
        ("_review/state", json!("lovely"), [false, false, false]),
        ("_form", json!("other"), [false, false, false]),
        ("_form_version", json!("9"), [false, false, false]),
        ("_author", json!("someone"), [false, false, false]),
        ("_review/comment", json!("x"), [false, false, false]),
        ("_flags", json!([]), [false, false, false]),
    ];
    for (i, role) in ["enumerator", "youth", "coordinator"].into_iter().enumerate() {
        let writer = s.device(p, role).await;
        let author = if role == "coordinator" { s.device(p, "enumerator").await } else { writer.clone() };
        for (field, value, allowed) in table {
            let sub = DocId::new();
            let (st, _) = s.push(&author, &[finalized(&author, sub, now_hlc())]).await;
            assert_eq!(st, StatusCode::OK);
            let hlc = Hlc::new(tejido_server::now_ms() as u64 + 1_000, 0);
            let attempt = write(&writer, sub, hlc, field, value.clone(), vec![]);
            let (st, body) = s.push(&writer, std::slice::from_ref(&attempt)).await;
            let expected = if allowed[i] { StatusCode::OK } else { StatusCode::FORBIDDEN };
            // A coordinator's review state outside the list is malformed, not forbidden.
            let expected = if role == "coordinator" && *field == "_review/state" && !allowed[i] {
                StatusCode::BAD_REQUEST
            } else {
                expected
            };
            assert_eq!(st, expected, "{role} writing {field}: {body}");
            let written =
                op(&s.pull_all(&reviewer).await, sub, field).iter().any(|(id, _)| *id == attempt.op_id());
            assert_eq!(written, allowed[i], "{role} writing {field}: stored");
        }
    }
}

#[tokio::test]
async fn enrollment_links_never_take_the_host_header() {
    let s = start().await;
    let p = s.project("p").await;
    let (st, body) = s
        .send(
            s.req(Method::POST, &format!("/v1/projects/{p}/enrollment-codes"), Some(ADMIN))
                .header("host", "evil.example")
                .json(&json!({ "role": "enumerator" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let link = body["link"].as_str().unwrap();
    assert!(!link.contains("evil"), "{link}");
    assert!(link.contains(&tejido_core::sync::wire::percent_encode(PUBLIC_URL)), "{link}");
}

/// Uploads a whole blob in one PATCH with a claimed media type.
async fn upload_as(s: &Server, d: &Dev, bytes: &[u8], media_type: &str) -> String {
    let sha = hex::encode(Sha256::digest(bytes));
    let (st, body) = s
        .send(
            s.req(Method::PATCH, &format!("/v1/blobs/{sha}"), Some(&d.token))
                .header("upload-offset", 0)
                .header("upload-length", bytes.len())
                .header("upload-media-type", media_type)
                .body(bytes.to_vec()),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["complete"], true);
    sha
}

async fn get_blob(s: &Server, d: &Dev, sha: &str) -> reqwest::Response {
    s.req(Method::GET, &format!("/v1/blobs/{sha}"), Some(&d.token)).send().await.unwrap()
}

#[tokio::test]
async fn another_enumerators_photo_stays_hers_inside_the_project() {
    let s = start().await;
    let p = s.project("p").await;
    let (ana, bea) = (s.device(p, "enumerator").await, s.device(p, "enumerator").await);
    let coord = s.device(p, "coordinator").await;
    let photo = b"a photo of a respondent's house".to_vec();
    let sha = upload_as(&s, &ana, &photo, "image/jpeg").await;
    let (st, _) = s
        .push(
            &ana,
            &[change(
                &ana,
                DocId::new(),
                Collection::Submission,
                now_hlc().0,
                &[("photo", json!(format!("sha256:{sha}")))],
            )],
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    // Bea puts Ana's hash into her own submission: it is kept, but opens nothing.
    let (st, _) = s
        .push(
            &bea,
            &[change(
                &bea,
                DocId::new(),
                Collection::Submission,
                now_hlc().0,
                &[("photo", json!(format!("sha256:{sha}")))],
            )],
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(get_blob(&s, &bea, &sha).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(get_blob(&s, &ana, &sha).await.status(), StatusCode::OK);
    assert_eq!(get_blob(&s, &coord, &sha).await.status(), StatusCode::OK);
    // HEAD tells Bea nothing about what Ana holds.
    let head = s.req(Method::HEAD, &format!("/v1/blobs/{sha}"), Some(&bea.token)).send().await.unwrap();
    assert_eq!(head.headers()["upload-offset"], "0");
    assert!(head.headers().get("upload-length").is_none());
    // Sending the bytes herself proves she holds them: then she may read her copy.
    upload_as(&s, &bea, &photo, "image/jpeg").await;
    assert_eq!(get_blob(&s, &bea, &sha).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_upload_in_progress_belongs_to_its_device() {
    let s = start().await;
    let p = s.project("p").await;
    let (ana, bea) = (s.device(p, "enumerator").await, s.device(p, "enumerator").await);
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let sha = hex::encode(Sha256::digest(&bytes));
    let patch = |d: &Dev, offset: usize, chunk: &[u8]| {
        s.req(Method::PATCH, &format!("/v1/blobs/{sha}"), Some(&d.token))
            .header("upload-offset", offset)
            .header("upload-length", bytes.len())
            .header("upload-media-type", "image/png")
            .body(chunk.to_vec())
    };
    let (st, _) = s.send(patch(&ana, 0, &bytes[..400])).await;
    assert_eq!(st, StatusCode::OK);
    // Bea cannot append to Ana's upload: hers stands at 0.
    let (st, body) = s.send(patch(&bea, 400, b"garbage garbage")).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    let head = s.req(Method::HEAD, &format!("/v1/blobs/{sha}"), Some(&ana.token)).send().await.unwrap();
    assert_eq!(head.headers()["upload-offset"], "400");
    let (st, body) = s.send(patch(&ana, 400, &bytes[400..])).await;
    assert_eq!((st, body["complete"].as_bool()), (StatusCode::OK, Some(true)), "{body}");
    assert_eq!(get_blob(&s, &ana, &sha).await.bytes().await.unwrap().as_ref(), bytes.as_slice());
}

#[tokio::test]
async fn unfinished_uploads_have_a_quota_and_expire() {
    let s = start().await;
    let p = s.project("p").await;
    let d = s.device(p, "enumerator").await;
    let big = tejido_core::sync::wire::MAX_BLOB_BYTES;
    let quota = tejido_server::service::limits::UPLOAD_QUOTA_BYTES;
    let mut started = Vec::new();
    let mut refused = None;
    for i in 0..(quota / big + 2) {
        let sha = hex::encode(Sha256::digest(i.to_le_bytes()));
        let (st, body) = s
            .send(
                s.req(Method::PATCH, &format!("/v1/blobs/{sha}"), Some(&d.token))
                    .header("upload-offset", 0)
                    .header("upload-length", big)
                    .body(vec![7u8; 10]),
            )
            .await;
        if st == StatusCode::OK {
            started.push(sha);
        } else {
            refused = Some((st, body));
            break;
        }
    }
    assert_eq!(started.len() as u64, quota / big);
    let (st, body) = refused.expect("the quota refuses an upload");
    assert_eq!((st, body["error"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large")), "{body}");

    // An upload left for more than a day is forgotten (bytes and all) and frees the quota.
    let storage: Arc<dyn tejido_server::storage::Storage> = match &s.database {
        Some(url) => Arc::new(tejido_server::storage::PostgresStorage::open(url).await.unwrap()),
        None => {
            Arc::new(tejido_server::storage::SqliteStorage::open(s.dir.path().join("tejido.db")).unwrap())
        }
    };
    let service = tejido_server::service::Service::new(storage).await.unwrap();
    let owner = tejido_server::blobs::UploadOwner { project: p, device: d.id };
    service.start_upload(owner, &started[0], big, "application/octet-stream", 1).await.unwrap();
    let sha = hex::encode(Sha256::digest(b"next"));
    let (st, body) = s
        .send(
            s.req(Method::PATCH, &format!("/v1/blobs/{sha}"), Some(&d.token))
                .header("upload-offset", 0)
                .header("upload-length", 4)
                .body(b"next".to_vec()),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let head =
        s.req(Method::HEAD, &format!("/v1/blobs/{}", started[0]), Some(&d.token)).send().await.unwrap();
    assert_eq!(head.headers()["upload-offset"], "0", "the stale upload was forgotten");
    assert_eq!(s.blobs.partial_len(owner, &started[0]).await.unwrap(), 0, "and its bytes removed");
}

#[tokio::test]
async fn served_blobs_never_run_in_a_browser() {
    let s = start().await;
    let p = s.project("p").await;
    let d = s.device(p, "enumerator").await;
    for (claimed, served, inline) in [
        ("text/html", "application/octet-stream", false),
        ("image/svg+xml", "application/octet-stream", false),
        ("IMAGE/JPEG; q=1", "image/jpeg", true),
        ("audio/ogg", "audio/ogg", true),
        ("application/pdf", "application/pdf", false),
    ] {
        let bytes = format!("<script>alert(1)</script> as {claimed}").into_bytes();
        let sha = upload_as(&s, &d, &bytes, claimed).await;
        let resp = get_blob(&s, &d, &sha).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h["content-type"], served, "{claimed}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{claimed}");
        assert_eq!(h.get("content-disposition").is_none(), inline, "{claimed}");
    }
}

#[tokio::test]
async fn one_writer_per_upload_across_server_processes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = start().await;
    let b = a.another_process().await;
    let p = a.project("p").await;
    let ana = a.device(p, "enumerator").await;
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let sha = hex::encode(Sha256::digest(&bytes));
    // Process A receives the first half of a PATCH, and the rest is slow to come.
    let addr = a.url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PATCH /v1/blobs/{sha} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n{}: 1\r\n\
         upload-offset: 0\r\nupload-length: {}\r\ncontent-length: {}\r\nupload-media-type: image/png\r\n\r\n",
        ana.token,
        tejido_core::sync::wire::PROTOCOL_HEADER,
        bytes.len(),
        bytes.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&bytes[..500]).await.unwrap();
    slow.flush().await.unwrap();
    // While A is still receiving, process B is asked to append at the offset the upload stands
    // at: it refuses, saying where the upload stands, rather than write while A is writing.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let head = b.req(Method::HEAD, &format!("/v1/blobs/{sha}"), Some(&ana.token)).send().await.unwrap();
    let stands: usize = head.headers()["upload-offset"].to_str().unwrap().parse().unwrap();
    let refused = b
        .req(Method::PATCH, &format!("/v1/blobs/{sha}"), Some(&ana.token))
        .header("upload-offset", stands)
        .header("upload-length", bytes.len())
        .body(bytes[stands..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::CONFLICT, "B must not write while A holds the upload");
    assert!(refused.headers().contains_key("upload-offset"));
    let body: Value = refused.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("another request"), "{body}");
    // A finishes; the lease is given back, and the blob is whole and right.
    slow.write_all(&bytes[500..]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = slow.read(&mut answer).await.unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    let head = b.req(Method::HEAD, &format!("/v1/blobs/{sha}"), Some(&ana.token)).send().await.unwrap();
    assert_eq!(head.headers()["upload-offset"], "1000");
    assert_eq!(get_blob(&b, &ana, &sha).await.bytes().await.unwrap().as_ref(), bytes.as_slice());
}
