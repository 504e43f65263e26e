//! A form version published with its media files: the files travel to the devices the version
//! is published to as blobs, and a form session on the phone offers their choices and looks
//! values up in them; a device of another role cannot download them, and a form whose media
//! files are missing is not published.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::json;
use tejido_core::doc::PublishedForm;
use tejido_core::form::{Form, FormSession};
use tejido_core::Collection;
use tejido_tests::device::{test_options, Device};
use tejido_tests::server::TestServer;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/forms/pyxform/media_form.xlsx")
}

/// The form version a device received, as published.
fn received_form(d: &Device, form_id: &str) -> Option<Form> {
    let store = d.store();
    store.list_documents(Collection::Form).unwrap().into_iter().find_map(|doc| {
        let p = PublishedForm::read(&store.read_document(doc).unwrap())?;
        (p.form_id == form_id).then(|| serde_json::from_value(p.form).unwrap())
    })
}

fn choices(s: &FormSession<'_>, question: &str) -> Vec<String> {
    let q = s.visible_questions(None).into_iter().find(|q| q.name == question).unwrap();
    q.choices.into_iter().map(|c| format!("{}={}", c.name, c.label)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_published_with_media_files_offers_their_choices_and_lookups_on_the_phone() {
    let server = TestServer::start();
    let project = server.create_project("medios");
    let pid = project.to_string();

    // Without its media folder, the form is refused, naming each missing file.
    let bare = tempfile::tempdir().unwrap();
    let lone = bare.path().join("media_form.xlsx");
    std::fs::copy(fixture(), &lone).unwrap();
    let refused = server.cli_fails(&["form", "publish", "--project", &pid, lone.to_str().unwrap()]);
    for f in ["crops.xml", "districts.csv", "places.csv", "wells.geojson"] {
        assert!(refused.contains(f), "{refused}");
    }
    // A file the form does not use is refused too.
    let extra = bare.path().join("extra.csv");
    std::fs::write(&extra, "name,label\nx,X\n").unwrap();
    let media_dir = fixture().with_file_name("media_form-media");
    let mut args: Vec<String> =
        ["form", "publish", "--project", &pid].iter().map(|s| s.to_string()).collect();
    args.push(fixture().to_string_lossy().into_owned());
    let with_extra: Vec<String> =
        args.iter().cloned().chain(["--media".to_owned(), extra.to_string_lossy().into_owned()]).collect();
    let refused = server.cli_fails(&with_extra.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(refused.contains("does not use the media files extra.csv"), "{refused}");
    // A refused list is refused before any byte is stored: no blob is left behind (checked in
    // the blob folder, which the SQLite deployment keeps; PostgreSQL keeps blobs in tables).
    if !server.on_postgres() {
        let files = walk_files(&server.data_dir().join("blobs"));
        assert!(files.is_empty(), "a refused publish stored {files:?}");
    }

    // Published with the files of its folder (media_form-media/), to enumerators only.
    let published = server.cli(&[
        "form",
        "publish",
        "--project",
        &pid,
        "--roles",
        "enumerator",
        fixture().to_str().unwrap(),
    ]);
    assert_eq!(published["media"], json!(["crops.xml", "districts.csv", "places.csv", "wells.geojson"]));

    let (_, enum_link) = server.enrollment_code(project, "enumerator", 1, &server.url());
    let (_, youth_link) = server.enrollment_code(project, "youth", 1, &server.url());
    let mut phone = Device::enroll(&enum_link, "Encuestadora", test_options()).await.unwrap();
    let report = phone.sync_until_done(5).await;
    assert_eq!(report.attachments_downloaded, 4, "the four media files arrived");

    let form = received_form(&phone, "media_form").expect("the form arrived");
    let places_sha = form.media["places.csv"].clone();
    let on_disk = std::fs::read(media_dir.join("places.csv")).unwrap();
    assert_eq!(
        phone.store().read_attachment(&places_sha).unwrap(),
        on_disk,
        "the phone holds the file as published"
    );

    let doc = phone.store().start_submission(&form.settings.form_id, &form.settings.version).unwrap();
    let mut s = FormSession::open(phone.store(), &form, doc).unwrap();
    assert_eq!(choices(&s, "district"), ["a=Arraiján", "b=La Chorrera"]);
    s.set_answer("district", json!("a")).unwrap();
    assert_eq!(choices(&s, "place"), ["p1=Vista Alegre", "p2=Burunga"], "filtered by district");
    s.set_answer("place", json!("p2")).unwrap();
    assert_eq!(s.value("code").unwrap(), json!("0802"), "pulldata looks the place up");
    assert_eq!(choices(&s, "crops"), ["maize=Maíz", "rice=Arroz"]);
    assert_eq!(choices(&s, "well"), ["w1=Pozo norte", "w2=Pozo sur"]);
    s.set_answer("crops", json!(["rice"])).unwrap();
    s.set_answer("well", json!("w2")).unwrap();
    s.finalize().unwrap();
    phone.sync_until_done(5).await;

    // The coordinators' export names the choices of the file questions by their labels, read
    // from the files as published (names without `--labels`).
    // Not in the data folder: on PostgreSQL there is none.
    let exports = tempfile::tempdir().unwrap();
    let exported = |labels: bool| {
        let out = exports.path().join(format!("media-{labels}.zip"));
        let mut args =
            vec!["export", "--project", &pid, "--form", "media_form", "--out", out.to_str().unwrap()];
        if labels {
            args.push("--labels");
        }
        server.cli(&args);
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut zip.by_name("media_form.csv").unwrap(), &mut text).unwrap();
        text
    };
    let with_labels = exported(true);
    for label in ["Arraiján", "Burunga", "Arroz", "Pozo sur"] {
        assert!(with_labels.contains(label), "{label} in the labelled export:\n{with_labels}");
    }
    let with_names = exported(false);
    assert!(!with_names.contains("Burunga") && with_names.contains(",p2"), "{with_names}");

    // A youth-network phone is not sent the enumerators' form, and may not fetch its files.
    let mut youth = Device::enroll(&youth_link, "Joven", test_options()).await.unwrap();
    youth.sync_until_done(5).await;
    assert!(received_form(&youth, "media_form").is_none());
    let token =
        youth.store().sync_state(tejido_core::sync::client::state_keys::DEVICE_TOKEN).unwrap().unwrap();
    let fetch = |token: String| {
        let url = format!("{}/v1/blobs/{places_sha}", server.url());
        async move {
            let wire = tejido_core::sync::wire::PROTOCOL_VERSION.to_string();
            let req = reqwest::Client::new().get(url).bearer_auth(token);
            req.header(tejido_core::sync::wire::PROTOCOL_HEADER, wire).send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(fetch(token).await, 404, "a device the version is not published to cannot read its media");
    let phone_token =
        phone.store().sync_state(tejido_core::sync::client::state_keys::DEVICE_TOKEN).unwrap().unwrap();
    assert_eq!(fetch(phone_token).await, 200, "the same request from a phone it is published to");

    // Publishing the same version again with the same files changes nothing.
    let again = server.cli(&[
        "form",
        "publish",
        "--project",
        &pid,
        "--roles",
        "enumerator",
        fixture().to_str().unwrap(),
    ]);
    assert_eq!(again["published"], false);
}

/// Every file under `dir` (none when it does not exist).
fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}
