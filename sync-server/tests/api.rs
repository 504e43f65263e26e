//! The HTTP API over a real port (127.0.0.1:0) with reqwest: enrollment, revocation,
//! authorization across projects and enumerators, bad input, blobs, compression and reviews.
#![allow(clippy::unwrap_used)]

use std::io::Write;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tejido_core::sync::wire::{MAX_PUSH_CHANGES, PROTOCOL_HEADER};
use tejido_core::{Change, Collection, DocId, ReplicaId};
use uuid::Uuid;

mod common;
use common::*;

#[tokio::test]
async fn an_enrollment_code_works_the_number_of_times_it_was_made_for() {
    let s = start().await;
    let p = s.project("Arraiján").await;
    let code = s.code(p, "enumerator", 2).await;
    let r1 = ReplicaId::random();
    let (st, first) = s.try_enroll(&code, r1).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(first["role"], "enumerator");
    assert_eq!(first["project_name"], "Arraiján");
    // The same phone again, while enrolled: refused, and the code is not used.
    let (st, _) = s.try_enroll(&code.to_lowercase(), r1).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) = s.try_enroll(&code, ReplicaId::random()).await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = s.try_enroll(&code, ReplicaId::random()).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "bad_code");
    assert_eq!(body["message"], "the enrollment code is unknown, used up or expired");
    let (st, body) = s.try_enroll("NOPE-NOPE-NOPE", ReplicaId::random()).await;
    assert_eq!((st, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("bad_code")));

    // A spent single-use code never works again, not even for the replica that spent it (it
    // used to re-issue a token and cut off the original one).
    let once = s.code(p, "enumerator", 1).await;
    let r2 = ReplicaId::random();
    let (st, original) = s.try_enroll(&once, r2).await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = s.try_enroll(&once, r2).await;
    assert_eq!((st, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("bad_code")));
    let (st, _) = s.send(s.req(Method::GET, "/v1/pull", original["token"].as_str())).await;
    assert_eq!(st, StatusCode::OK, "the original token still works");

    // A revoked device cannot come back with a multi-use code made before its revocation.
    let many = s.code(p, "enumerator", 10).await;
    let (st, _) = s
        .send(s.req(
            Method::POST,
            &format!("/v1/devices/{}/revoke", original["device_id"].as_str().unwrap()),
            Some(ADMIN),
        ))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = s.try_enroll(&many, r2).await;
    assert_eq!((st, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("bad_code")));

    // Coordinator codes expire in a day unless asked otherwise; other roles' do not.
    for (role, expires, lasts) in
        [("coordinator", None, Some(86_400_000)), ("coordinator", Some("never"), None), ("youth", None, None)]
    {
        let mut req = json!({ "role": role });
        if let Some(e) = expires {
            req["expires"] = json!(e);
        }
        let (st, body) = s
            .send(s.req(Method::POST, &format!("/v1/projects/{p}/enrollment-codes"), Some(ADMIN)).json(&req))
            .await;
        assert_eq!(st, StatusCode::CREATED);
        let left = body["expires_ms"].as_i64().map(|e| e - tejido_server::now_ms());
        match lasts {
            Some(day) => assert!(left.is_some_and(|l| l > day - 60_000 && l <= day), "{role}: {left:?}"),
            None => assert_eq!(left, None, "{role} {expires:?}"),
        }
    }
    let (st, devices) = s.send(s.req(Method::GET, &format!("/v1/projects/{p}/devices"), Some(ADMIN))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(devices.as_array().unwrap().len(), 3);

    let (st, body) = s
        .send(
            s.req(Method::POST, &format!("/v1/projects/{p}/enrollment-codes"), Some(ADMIN))
                .json(&json!({ "role": "youth", "expires": "1ms" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (st, _) = s.try_enroll(body["code"].as_str().unwrap(), ReplicaId::random()).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "an expired code");
}

#[tokio::test]
async fn a_revoked_token_gets_401_on_its_next_request() {
    let s = start().await;
    let p = s.project("p").await;
    let d = s.device(p, "enumerator").await;
    let coord = s.device(p, "coordinator").await;
    let doc = DocId::new();
    let (st, _) = s.push(&d, &[change(&d, doc, Collection::Submission, 10, &[("a", json!(1))])]).await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) =
        s.send(s.req(Method::POST, &format!("/v1/devices/{}/revoke", d.id), Some(&coord.token))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["revoked"], true);
    let sha = "a".repeat(64);
    let requests = [
        s.req(Method::POST, "/v1/push", Some(&d.token)).json(&json!({ "changes": [] })),
        s.req(Method::GET, "/v1/pull", Some(&d.token)),
        s.req(Method::HEAD, &format!("/v1/blobs/{sha}"), Some(&d.token)),
        s.req(Method::GET, &format!("/v1/blobs/{sha}"), Some(&d.token)),
        s.req(Method::PATCH, &format!("/v1/blobs/{sha}"), Some(&d.token))
            .header("upload-offset", 0)
            .header("upload-length", 1)
            .body("x"),
    ];
    for r in requests {
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // The coordinator that revoked it is unaffected.
    let (st, _) = s.send(s.req(Method::GET, "/v1/pull", Some(&coord.token))).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn nobody_reads_or_writes_another_project_or_another_enumerators_data() {
    let s = start().await;
    let a = s.project("A").await;
    let b = s.project("B").await;
    let a_e1 = s.device(a, "enumerator").await;
    let a_e2 = s.device(a, "enumerator").await;
    let a_y = s.device(a, "youth").await;
    let a_coord = s.device(a, "coordinator").await;
    let b_coord = s.device(b, "coordinator").await;
    let b_e = s.device(b, "enumerator").await;

    let photo = b"jpeg bytes of a private photo".to_vec();
    let sha = hex::encode(Sha256::digest(&photo));
    let (st, body) = s.upload(&a_e1, &photo, 0, &photo).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let sub = DocId::new();
    let (st, _) = s
        .push(
            &a_e1,
            &[change(
                &a_e1,
                sub,
                Collection::Submission,
                10,
                &[("age", json!(34)), ("photo", json!(format!("sha256:{sha}")))],
            )],
        )
        .await;
    assert_eq!(st, StatusCode::OK);

    // Writes into someone else's scope: all refused, and nothing written.
    let writes: Vec<(&str, &Dev, Change, StatusCode)> = vec![
        (
            "other enumerator edits",
            &a_e2,
            change(&a_e2, sub, Collection::Submission, 20, &[("age", json!(1))]),
            StatusCode::FORBIDDEN,
        ),
        (
            "youth edits",
            &a_y,
            change(&a_y, sub, Collection::Submission, 20, &[("age", json!(1))]),
            StatusCode::FORBIDDEN,
        ),
        (
            "other project's coordinator edits",
            &b_coord,
            change(&b_coord, sub, Collection::Submission, 20, &[("age", json!(1))]),
            StatusCode::FORBIDDEN,
        ),
        (
            "other project comments",
            &b_e,
            change(&b_e, DocId::new(), Collection::Comment, 20, &[("submission", json!(sub.to_string()))]),
            StatusCode::FORBIDDEN,
        ),
        (
            "other enumerator comments",
            &a_e2,
            change(&a_e2, DocId::new(), Collection::Comment, 20, &[("submission", json!(sub.to_string()))]),
            StatusCode::FORBIDDEN,
        ),
        (
            "enumerator writes an entity",
            &a_e2,
            change(&a_e2, DocId::new(), Collection::Entity, 20, &[("n", json!(1))]),
            StatusCode::FORBIDDEN,
        ),
        (
            "another device's replica",
            &a_e2,
            change(&a_e1, DocId::new(), Collection::Submission, 20, &[("n", json!(1))]),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (what, d, c, expected) in writes {
        let (st, body) = s.push(d, &[c]).await;
        assert_eq!(st, expected, "{what}: {body}");
        assert_eq!(body["error"], "forbidden", "{what}");
    }

    // Reads: only the author and the project's coordinator see the submission and its photo.
    for (who, d, sees) in [
        ("author", &a_e1, true),
        ("coordinator", &a_coord, true),
        ("other enumerator", &a_e2, false),
        ("youth", &a_y, false),
        ("other project", &b_coord, false),
        ("other project's enumerator", &b_e, false),
    ] {
        let changes = s.pull_all(d).await;
        assert_eq!(changes.iter().any(|c| c.doc == sub), sees, "{who} pull");
        if sees {
            let seen = changes
                .iter()
                .filter(|c| c.doc == sub)
                .flat_map(|c| &c.ops)
                .find(|o| o.field.as_str() == "age");
            assert_eq!(seen.unwrap().value, json!(34), "{who}: the refused edits changed nothing");
        }
        let resp = s.req(Method::GET, &format!("/v1/blobs/{sha}"), Some(&d.token)).send().await.unwrap();
        assert_eq!(resp.status() == StatusCode::OK, sees, "{who} blob download");
        if sees {
            assert_eq!(resp.headers()["upload-media-type"], "image/jpeg");
            assert_eq!(resp.bytes().await.unwrap().as_ref(), photo.as_slice());
        }
    }
    // Another project learns nothing from HEAD either.
    let resp = s.req(Method::HEAD, &format!("/v1/blobs/{sha}"), Some(&b_coord.token)).send().await.unwrap();
    assert_eq!(resp.headers()["upload-offset"], "0");

    // Admin endpoints: another project's coordinator and non-coordinators are refused.
    let admin_calls = |t: &str| {
        vec![
            ("list devices", s.req(Method::GET, &format!("/v1/projects/{a}/devices"), Some(t))),
            ("conflicts", s.req(Method::GET, &format!("/v1/projects/{a}/conflicts"), Some(t))),
            (
                "create code",
                s.req(Method::POST, &format!("/v1/projects/{a}/enrollment-codes"), Some(t))
                    .json(&json!({ "role": "coordinator" })),
            ),
            ("revoke", s.req(Method::POST, &format!("/v1/devices/{}/revoke", a_e1.id), Some(t))),
            (
                "review",
                s.req(Method::POST, &format!("/v1/submissions/{sub}/review"), Some(t))
                    .json(&json!({ "state": "approved", "comment": "x" })),
            ),
            ("create project", s.req(Method::POST, "/v1/projects", Some(t)).json(&json!({ "name": "C" }))),
        ]
    };
    for (who, token) in
        [("other project's coordinator", &b_coord.token), ("enumerator", &a_e1.token), ("youth", &a_y.token)]
    {
        for (what, r) in admin_calls(token) {
            let (st, body) = s.send(r).await;
            assert!(st == StatusCode::FORBIDDEN || st == StatusCode::NOT_FOUND, "{who} {what}: {st} {body}");
        }
    }
    // Without a token, every endpoint answers 401.
    let anonymous = [
        s.req(Method::POST, "/v1/push", None).json(&json!({ "changes": [] })),
        s.req(Method::GET, "/v1/pull", None),
        s.req(Method::GET, &format!("/v1/blobs/{sha}"), None),
        s.req(Method::HEAD, &format!("/v1/blobs/{sha}"), None),
        s.req(Method::PATCH, &format!("/v1/blobs/{sha}"), None),
        s.req(Method::GET, &format!("/v1/projects/{a}/devices"), None),
        s.req(Method::POST, &format!("/v1/devices/{}/revoke", a_e1.id), None),
        s.req(Method::POST, &format!("/v1/submissions/{sub}/review"), None),
    ];
    for r in anonymous {
        assert_eq!(r.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    // Still enrolled, still unreviewed.
    let (_, devices) =
        s.send(s.req(Method::GET, &format!("/v1/projects/{a}/devices"), Some(&a_coord.token))).await;
    assert!(devices.as_array().unwrap().iter().all(|d| d["revoked_ms"].is_null()));
    let changes = s.pull_all(&a_e1).await;
    assert!(changes.iter().all(|c| c.ops.iter().all(|o| o.field.as_str() != "_review/state")));
    assert!(changes.iter().all(|c| c.collection != Collection::Comment));
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_writes_nothing() {
    let s = start().await;
    let p = s.project("p").await;
    let d = s.device(p, "coordinator").await;
    let good = change(&d, DocId::new(), Collection::Entity, 10, &[("a", json!(1))]);
    let big_value = "x".repeat(9 * 1024 * 1024);
    let too_many: Vec<Change> = (0..=MAX_PUSH_CHANGES)
        .map(|i| change(&d, DocId::new(), Collection::Entity, 10 + i as u64, &[("a", json!(i))]))
        .collect();
    let gzip_bomb = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(b"{\"changes\":[{\"doc\":\"").unwrap();
        e.write_all(&vec![b'0'; 20 * 1024 * 1024]).unwrap();
        e.finish().unwrap()
    };
    let photo = b"some bytes".to_vec();
    let sha = hex::encode(Sha256::digest(&photo));
    let wrong_sha = hex::encode(Sha256::digest(b"other bytes"));
    let t = Some(d.token.as_str());
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        ("malformed JSON", s.req(Method::POST, "/v1/push", t).body("{\"changes\": [").header("content-type", "application/json"), StatusCode::BAD_REQUEST, "bad_request"),
        ("wrong types", s.req(Method::POST, "/v1/push", t).json(&json!({ "changes": 5 })), StatusCode::BAD_REQUEST, "bad_request"),
        ("a bad clock", s.req(Method::POST, "/v1/push", t).json(&json!({ "changes": [{"doc": Uuid::new_v4(), "collection": "entity", "replica": d.replica, "hlc": 5, "ops": [{"field": "a", "value": 1}]}] })), StatusCode::BAD_REQUEST, "bad_request"),
        ("a bad field path", s.req(Method::POST, "/v1/push", t).json(&json!({ "changes": [{"doc": Uuid::new_v4(), "collection": "entity", "replica": d.replica, "hlc": "0000000000000005", "ops": [{"field": "a//b", "value": 1}]}] })), StatusCode::BAD_REQUEST, "bad_request"),
        ("an unknown collection", s.req(Method::POST, "/v1/push", t).json(&json!({ "changes": [{"doc": Uuid::new_v4(), "collection": "secrets", "replica": d.replica, "hlc": "0000000000000005", "ops": [{"field": "a", "value": 1}]}] })), StatusCode::BAD_REQUEST, "bad_request"),
        ("an empty change", s.req(Method::POST, "/v1/push", t).json(&json!({ "changes": [good.clone(), {"doc": Uuid::new_v4(), "collection": "entity", "replica": d.replica, "hlc": "0000000000000005", "ops": []}] })), StatusCode::BAD_REQUEST, "bad_request"),
        ("too many changes", s.req(Method::POST, "/v1/push", t).json(&json!({ "changes": too_many })), StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        ("too many bytes", s.req(Method::POST, "/v1/push", t).json(&json!({ "changes": [change(&d, DocId::new(), Collection::Entity, 10, &[("a", json!(big_value))])] })), StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        ("a gzip bomb", s.req(Method::POST, "/v1/push", t).header("content-encoding", "gzip").header("content-type", "application/json").body(gzip_bomb), StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        ("broken gzip", s.req(Method::POST, "/v1/push", t).header("content-encoding", "gzip").header("content-type", "application/json").body(b"not gzip at all".to_vec()), StatusCode::BAD_REQUEST, "bad_request"),
        ("a push that is not JSON", s.req(Method::POST, "/v1/push", t).header("content-type", "text/plain").body(serde_json::to_vec(&json!({ "changes": [good.clone()] })).unwrap()), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ("a push without a content type", s.req(Method::POST, "/v1/push", t).body(serde_json::to_vec(&json!({ "changes": [good.clone()] })).unwrap()), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ("an unknown encoding", s.req(Method::POST, "/v1/push", t).header("content-encoding", "br").body("{}"), StatusCode::UNSUPPORTED_MEDIA_TYPE, "bad_request"),
        ("an unknown protocol", s.req(Method::POST, "/v1/push", t).header(PROTOCOL_HEADER, "2").json(&json!({ "changes": [good.clone()] })), StatusCode::BAD_REQUEST, "protocol_mismatch"),
        ("no protocol", s.http.post(format!("{}/v1/push", s.url)).bearer_auth(&d.token).json(&json!({ "changes": [good.clone()] })), StatusCode::BAD_REQUEST, "protocol_mismatch"),
        ("a forged cursor", s.req(Method::GET, "/v1/pull?cursor=l-5", t), StatusCode::BAD_REQUEST, "bad_request"),
        ("a zero limit", s.req(Method::GET, "/v1/pull?limit=0", t), StatusCode::BAD_REQUEST, "bad_request"),
        ("a word for a limit", s.req(Method::GET, "/v1/pull?limit=many", t), StatusCode::BAD_REQUEST, "bad_request"),
        ("a malformed enrollment", s.req(Method::POST, "/v1/enroll", None).json(&json!({ "code": 5 })), StatusCode::BAD_REQUEST, "bad_request"),
        ("a bad review state", s.req(Method::POST, &format!("/v1/submissions/{}/review", Uuid::new_v4()), t).json(&json!({ "state": "lovely" })), StatusCode::BAD_REQUEST, "bad_request"),
        ("a bad blob name", s.req(Method::PATCH, "/v1/blobs/..%2Fetc", t).header("upload-offset", 0).header("upload-length", 1).body("x"), StatusCode::BAD_REQUEST, "bad_request"),
        ("a blob without headers", s.req(Method::PATCH, &format!("/v1/blobs/{sha}"), t).body(photo.clone()), StatusCode::BAD_REQUEST, "bad_request"),
        ("a huge blob", s.req(Method::PATCH, &format!("/v1/blobs/{sha}"), t).header("upload-offset", 0).header("upload-length", 1u64 << 40).body(photo.clone()), StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        ("a blob past its length", s.req(Method::PATCH, &format!("/v1/blobs/{sha}"), t).header("upload-offset", 0).header("upload-length", 3).body(photo.clone()), StatusCode::BAD_REQUEST, "bad_request"),
        ("a blob that does not match its hash", s.req(Method::PATCH, &format!("/v1/blobs/{wrong_sha}"), t).header("upload-offset", 0).header("upload-length", photo.len()).body(photo.clone()), StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch"),
        ("an unknown endpoint", s.req(Method::GET, "/v1/nothing", t), StatusCode::NOT_FOUND, "not_found"),
        ("a wrong method", s.req(Method::DELETE, "/v1/push", t), StatusCode::METHOD_NOT_ALLOWED, "bad_request"),
    ];
    for (what, r, status, code) in cases {
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), status, "{what}");
        assert_eq!(resp.headers()["content-type"], "application/json", "{what}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], code, "{what}: {body}");
        assert!(!body["message"].as_str().unwrap().is_empty(), "{what}");
        assert!(!body.to_string().contains("xxxxxxxx"), "{what}: the error repeats no content");
    }
    // A blob at the wrong offset is refused with where it stands.
    let (st, _) = s.upload(&d, &photo, 0, &photo[..4]).await;
    assert_eq!(st, StatusCode::OK);
    let resp = s
        .req(Method::PATCH, &format!("/v1/blobs/{sha}"), t)
        .header("upload-offset", 2)
        .header("upload-length", photo.len())
        .body(photo[2..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(resp.headers()["upload-offset"], "4");

    // Nothing of it was written.
    assert!(s.pull_all(&d).await.is_empty());
    for name in [&sha, &wrong_sha] {
        let resp = s.req(Method::GET, &format!("/v1/blobs/{name}"), t).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    let resp = s.req(Method::HEAD, &format!("/v1/blobs/{wrong_sha}"), t).send().await.unwrap();
    assert_eq!(resp.headers()["upload-offset"], "0", "the mismatched upload was discarded");
}

#[tokio::test]
async fn blobs_resume_where_they_stopped_and_are_verified() {
    let s = start().await;
    let p = s.project("p").await;
    let d = s.device(p, "youth").await;
    let photo: Vec<u8> = (0..30_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha = hex::encode(Sha256::digest(&photo));
    let head = |d: &Dev| s.req(Method::HEAD, &format!("/v1/blobs/{sha}"), Some(&d.token)).send();
    assert_eq!(head(&d).await.unwrap().headers()["upload-offset"], "0");
    let (st, body) = s.upload(&d, &photo, 0, &photo[..10_000]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["complete"], false);
    let resp = head(&d).await.unwrap();
    assert_eq!(resp.headers()["upload-offset"], "10000");
    assert_eq!(resp.headers()["upload-length"], "30000");
    let (st, body) = s.upload(&d, &photo, 10_000, &photo[10_000..]).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["complete"], true);
    assert_eq!(head(&d).await.unwrap().headers()["upload-offset"], "30000");
    // Uploading again is a no-op that says it is complete.
    let (st, body) = s.upload(&d, &photo, 0, &photo).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["complete"], true);
    let resp = s.req(Method::GET, &format!("/v1/blobs/{sha}"), Some(&d.token)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), photo.as_slice());
}

/// What a request that brought an upload's last bytes and ended before verifying them leaves:
/// the upload started and all of `bytes` held. Returns the blob's name.
async fn unverified_upload(s: &Server, owner: tejido_server::blobs::UploadOwner, bytes: &[u8]) -> String {
    let sha = hex::encode(Sha256::digest(bytes));
    s.service
        .start_upload(owner, &sha, bytes.len() as u64, "image/jpeg", tejido_server::now_ms())
        .await
        .unwrap();
    s.blobs.append(owner, &sha, bytes).await.unwrap();
    s.blobs.sync_partial(owner, &sha).await.unwrap();
    sha
}

/// A request that brought an upload's last bytes and ended before verifying them (its process
/// killed, its task cancelled) leaves every byte held: the device, told so by HEAD, never sends
/// them again, so HEAD verifies them and the blob is there to download.
#[tokio::test]
async fn an_upload_whose_bytes_all_arrived_unverified_is_finished_when_asked_where_it_stands() {
    let s = start().await;
    let p = s.project("p").await;
    let d = s.device(p, "enumerator").await;
    let photo: Vec<u8> = (0..20_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let owner = tejido_server::blobs::UploadOwner { project: p, device: d.id };
    let sha = unverified_upload(&s, owner, &photo).await;
    let get = || s.req(Method::GET, &format!("/v1/blobs/{sha}"), Some(&d.token)).send();
    assert_eq!(get().await.unwrap().status(), StatusCode::NOT_FOUND, "not verified yet");
    let resp = s.req(Method::HEAD, &format!("/v1/blobs/{sha}"), Some(&d.token)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["upload-offset"], "20000");
    let resp = get().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "HEAD verified and kept the bytes");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), photo.as_slice());

    // The same, with bytes that do not hash to the name: HEAD discards them and says 0.
    let other: Vec<u8> = photo.iter().rev().copied().collect();
    let other_sha = hex::encode(Sha256::digest(&other));
    s.service
        .start_upload(owner, &other_sha, other.len() as u64, "image/jpeg", tejido_server::now_ms())
        .await
        .unwrap();
    s.blobs.append(owner, &other_sha, &photo).await.unwrap();
    let resp = s.req(Method::HEAD, &format!("/v1/blobs/{other_sha}"), Some(&d.token)).send().await.unwrap();
    assert_eq!(resp.headers()["upload-offset"], "0", "the wrong bytes were discarded");
    let (st, body) = s.upload(&d, &other, 0, &other).await;
    assert_eq!((st, body["complete"].as_bool()), (StatusCode::OK, Some(true)), "{body}");
}

/// Several requests asking at once where an unverified upload stands: one verifies it, and
/// every other, whatever it read before that one finished, answers where the upload stands
/// then (never a 500 for bytes another request already moved).
#[tokio::test]
async fn requests_asking_at_once_about_an_unverified_upload_all_get_where_it_stands() {
    let s = start().await;
    let p = s.project("p").await;
    let d = s.device(p, "enumerator").await;
    let owner = tejido_server::blobs::UploadOwner { project: p, device: d.id };
    for round in 0..20u32 {
        let photo: Vec<u8> = (0..20_000u32).map(|i| ((i * 13 + round) % 251) as u8).collect();
        let sha = unverified_upload(&s, owner, &photo).await;
        let path = format!("/v1/blobs/{sha}");
        let heads = (0..6).map(|_| s.req(Method::HEAD, &path, Some(&d.token)).send());
        for resp in futures_util::future::join_all(heads).await {
            let resp = resp.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "round {round}");
            let offset = resp.headers()["upload-offset"].to_str().unwrap().to_owned();
            assert_eq!(offset, "20000", "round {round}: every byte is held, verified or not");
        }
        let resp = s.req(Method::GET, &path, Some(&d.token)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "round {round}: verified and kept");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), photo.as_slice());
    }
}

#[tokio::test]
async fn requests_and_answers_may_be_gzip_or_zstd() {
    let s = start().await;
    let p = s.project("p").await;
    let d = s.device(p, "coordinator").await;
    let c1 = change(&d, DocId::new(), Collection::Entity, 10, &[("a", json!("uno"))]);
    let c2 = change(&d, DocId::new(), Collection::Entity, 11, &[("a", json!("dos"))]);
    let body1 = serde_json::to_vec(&json!({ "changes": [c1] })).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body1).unwrap();
    let (st, body) = s
        .send(
            s.req(Method::POST, "/v1/push", Some(&d.token))
                .header("content-encoding", "gzip")
                .header("content-type", "application/json")
                .body(gz.finish().unwrap()),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["accepted_ops"], 1);
    let body2 =
        zstd::encode_all(serde_json::to_vec(&json!({ "changes": [c2] })).unwrap().as_slice(), 3).unwrap();
    let (st, body) = s
        .send(
            s.req(Method::POST, "/v1/push", Some(&d.token))
                .header("content-encoding", "zstd")
                .header("content-type", "application/json")
                .body(body2),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let resp = s
        .req(Method::GET, "/v1/pull", Some(&d.token))
        .header("accept-encoding", "zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "zstd");
    let raw = zstd::decode_all(resp.bytes().await.unwrap().as_ref()).unwrap();
    let page: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(page["changes"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_review_and_its_comment_reach_only_the_author() {
    let s = start().await;
    let p = s.project("p").await;
    let e1 = s.device(p, "enumerator").await;
    let e2 = s.device(p, "enumerator").await;
    let coord = s.device(p, "coordinator").await;
    let sub = DocId::new();
    let (st, _) = s.push(&e1, &[change(&e1, sub, Collection::Submission, 10, &[("age", json!(200))])]).await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = s
        .send(
            s.req(Method::POST, &format!("/v1/submissions/{sub}/review"), Some(&coord.token))
                .json(&json!({ "state": "has_issues", "comment": "¿200 años?" })),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let comment: Uuid = body["comment"].as_str().unwrap().parse().unwrap();
    let got = s.pull_all(&e1).await;
    let review = got
        .iter()
        .flat_map(|c| c.ops.iter().map(move |o| (c.doc, o)))
        .find(|(doc, o)| *doc == sub && o.field.as_str() == "_review/state");
    assert_eq!(review.unwrap().1.value, json!("has_issues"));
    let text = got.iter().find(|c| c.doc.0 == comment).unwrap();
    assert_eq!(text.collection, Collection::Comment);
    assert!(text.ops.iter().any(|o| o.field.as_str() == "text" && o.value == json!("¿200 años?")));
    assert!(text.ops.iter().any(|o| o.field.as_str() == "submission" && o.value == json!(sub.to_string())));
    let other = s.pull_all(&e2).await;
    assert!(other.iter().all(|c| c.doc != sub && c.doc.0 != comment));
    // The author may answer on its own submission.
    let reply = change(
        &e1,
        DocId::new(),
        Collection::Comment,
        20,
        &[("submission", json!(sub.to_string())), ("text", json!("typo"))],
    );
    let (st, body) = s.push(&e1, &[reply]).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // A conflict on the server shows in the coordinator's list.
    let first = change(&coord, DocId::new(), Collection::Entity, 30, &[("n", json!(1))]);
    let id = first.op_id();
    let mut a = change(&coord, first.doc, Collection::Entity, 31, &[("n", json!(2))]);
    a.ops[0].seen = vec![id];
    let other_coord = s.device(p, "coordinator").await;
    let mut b = change(&other_coord, first.doc, Collection::Entity, 32, &[("n", json!(3))]);
    b.ops[0].seen = vec![id];
    assert_eq!(s.push(&coord, &[first, a]).await.0, StatusCode::OK);
    assert_eq!(s.push(&other_coord, &[b]).await.0, StatusCode::OK);
    let (st, conflicts) =
        s.send(s.req(Method::GET, &format!("/v1/projects/{p}/conflicts"), Some(&coord.token))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(conflicts.as_array().unwrap().len(), 1);
    assert_eq!(conflicts[0]["field"], "n");
}

#[tokio::test]
async fn health_and_the_openapi_document_are_served() {
    let s = start().await;
    let resp = s.http.get(format!("{}/healthz", s.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value =
        s.http.get(format!("{}/openapi.json", s.url)).send().await.unwrap().json().await.unwrap();
    for path in ["/v1/enroll", "/v1/push", "/v1/pull", "/v1/blobs/{sha256}", "/v1/submissions/{doc}/review"] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert!(doc["components"]["schemas"]["PushRequest"].is_object());
    // As the server sends them: `seen` is left out when empty, and a value is any JSON.
    let field_op = &doc["components"]["schemas"]["FieldOp"];
    let required: Vec<&str> =
        field_op["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(required, ["field", "value"], "{field_op}");
    assert!(field_op["properties"]["value"].get("type").is_none(), "{field_op}");
}

#[test]
fn the_schema_check_catches_a_body_that_disagrees_with_the_document() {
    let doc = serde_json::to_value(tejido_server::api::openapi::document()).unwrap();
    let good = json!({ "accepted_ops": 2, "duplicate_ops": 0, "epoch": "5f0c" });
    let wrong = json!({ "accepted_ops": "two" });
    let errors = |body: &Value| schema_errors(&doc, "post", "/v1/push", 200, body);
    assert!(errors(&good).is_empty(), "{:?}", errors(&good));
    assert!(!errors(&wrong).is_empty(), "a string count and a missing field pass the check");
    let enrolled = schema_errors(&doc, "post", "/v1/projects/{project}/enrollment-codes", 201, &json!({}));
    assert!(!enrolled.is_empty(), "an empty enrollment answer passes the check");
}
