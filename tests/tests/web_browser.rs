//! The coordinators' web app in a real headless Chromium (Debian's `chromium`, driven by
//! playwright-core through `web-tests/driver.mjs`), against the real `tejido-server` binary and
//! real devices: a coordinator signs in (after a wrong password), filters the submissions by
//! form and review state, opens one and marks it "has issues" with a comment that reaches the
//! enumerator's phone on its next sync; two devices edit the same answer offline, the conflict
//! shows on the page, the coordinator keeps one value and both phones converge on it; signing
//! out sends back to the login.
//!
//! Every page visited is screenshotted into `<target>/web-screenshots/` (printed at the start).
//! `TEJIDO_UPDATE_SCREENSHOTS=1` also copies the submissions list and a submission page into
//! `docs/screenshots/`, the two the README shows.
//!
//! Needs Node.js, Chromium and `web-tests/node_modules`, which `scripts/setup` installs; without
//! them the test fails saying so.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use serde_json::json;
use tejido_core::doc::{Comment, PublishedForm};
use tejido_core::form::{Form, FormSession};
use tejido_core::{Collection, DocId, Store};
use tejido_tests::browser::{artifacts_dir, Browser};
use tejido_tests::device::{test_options, Device};
use tejido_tests::server::TestServer;

const EMAIL: &str = "ana.coordinadora@observatorio.pa";
const PASSWORD: &str = "ocho-ballenas-azules";
const SURVEY: &str = "victimizacion_hogares";

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/forms").join(name).display().to_string()
}

/// The newest version of a form the device received.
fn received_form(store: &Store, form_id: &str) -> Form {
    let mut found = None;
    for doc in store.list_documents(Collection::Form).unwrap() {
        let d = store.read_document(doc).unwrap();
        if let Some(p) = PublishedForm::read(&d).filter(|p| p.form_id == form_id) {
            found = Some(serde_json::from_value::<Form>(p.form).unwrap());
        }
    }
    found.unwrap_or_else(|| panic!("the device did not receive {form_id}"))
}

/// One household interview, answered through a form session as the app does.
fn interview(store: &Store, form: &Form, district: &str, member: &str, age: i64, safe_night: &str) -> DocId {
    let doc = store.start_submission(&form.settings.form_id, &form.settings.version).unwrap();
    let mut s = FormSession::open(store, form, doc).unwrap();
    s.set_answer("consent", json!("yes")).unwrap();
    s.set_answer("district", json!(district)).unwrap();
    let corregimiento = s
        .visible_questions(None)
        .into_iter()
        .find(|q| q.name == "corregimiento")
        .and_then(|q| q.choices.first().map(|c| c.name.clone()))
        .expect("corregimientos of the district");
    s.set_answer("corregimiento", json!(corregimiento)).unwrap();
    s.set_answer("household_size", json!(1)).unwrap();
    let roster = form.node("roster").unwrap().path.clone();
    let row = s.add_repeat_row("roster").unwrap();
    s.set_answer(&format!("{roster}/{row}/member_name"), json!(member)).unwrap();
    s.set_answer(&format!("{roster}/{row}/member_sex"), json!("female")).unwrap();
    s.set_answer(&format!("{roster}/{row}/member_age"), json!(age)).unwrap();
    s.set_answer("safe_day", json!("safe")).unwrap();
    s.set_answer("safe_night", json!(safe_night)).unwrap();
    s.set_answer("crimes", json!(["none"])).unwrap();
    s.set_answer("respondent_alone", json!("no")).unwrap();
    s.finalize().unwrap_or_else(|e| panic!("the interview does not finalize: {e:?}"));
    doc
}

fn rows(b: &mut Browser) -> usize {
    b.count("table#submissions tbody tr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_reviews_and_resolves_in_a_real_browser() {
    let shots = artifacts_dir("web-screenshots");
    println!("screenshots: {}", shots.display());
    let mut b = Browser::launch(&shots);

    // A project with both demo forms, a coordinator's account, an enumerator's phone and a
    // coordinator's phone.
    let server = TestServer::start();
    let url = server.url();
    let project = server.create_project("Observatorio de La Chorrera");
    let published = server.cli(&[
        "form",
        "publish",
        "--project",
        &project.to_string(),
        &example(&format!("{SURVEY}.xlsx")),
    ]);
    assert_eq!(published["form_id"], SURVEY, "{published}");
    let log = server.cli(&[
        "form",
        "publish",
        "--project",
        &project.to_string(),
        "--roles",
        "youth",
        &example("bitacora_red_juvenil.xlsx"),
    ]);
    let log_form = log["form_id"].as_str().unwrap().to_owned();
    server.add_user(EMAIL, project, "coordinator", PASSWORD);
    let (_, enum_link) = server.enrollment_code(project, "enumerator", 1, &url);
    let (_, coord_link) = server.enrollment_code(project, "coordinator", 1, &url);
    let mut phone = Device::enroll(&enum_link, "Encuestadora Yaritza", test_options()).await.unwrap();
    let mut coord_phone =
        Device::enroll(&coord_link, "Tablet de coordinación", test_options()).await.unwrap();

    // The enumerator receives the survey, interviews three households and syncs.
    phone.sync().await.unwrap();
    let form = received_form(phone.store(), SURVEY);
    let reviewed = interview(phone.store(), &form, "arraijan", "Ana", 41, "unsafe");
    let contested = interview(phone.store(), &form, "la_chorrera", "Luis", 67, "safe");
    let _third = interview(phone.store(), &form, "san_miguelito", "María", 23, "very_unsafe");
    assert_eq!(phone.sync().await.unwrap().changes_pushed, 3);

    // Signing in: a wrong password first.
    b.goto(&format!("{url}/login"));
    b.wait("#sign-in");
    b.screenshot("login");
    b.fill("input[name=email]", EMAIL);
    b.fill("input[name=password]", "not-the-password");
    b.click_and_load("#sign-in");
    let error = b.text("p.error");
    assert!(error.contains("no son correctos"), "the wrong password is refused in Spanish: {error}");
    assert!(b.url().ends_with("/login"), "{}", b.url());
    b.screenshot("login-wrong-password");
    b.fill("input[name=email]", EMAIL);
    b.fill("input[name=password]", PASSWORD);
    b.click_and_load("#sign-in");
    assert!(b.url().ends_with("/projects"), "signed in: {}", b.url());
    assert!(b.text("main").contains("Observatorio de La Chorrera"));
    b.screenshot("projects");

    // The submissions table, filtered by form and by review state.
    let list = format!("/projects/{project}/submissions");
    b.click_and_load(&format!("a[href=\"{list}\"]"));
    b.wait("table#submissions");
    assert_eq!(rows(&mut b), 3);
    b.select("select[name=form]", &log_form);
    b.click_and_load("#filter");
    assert!(b.url().contains(&format!("form={log_form}")), "{}", b.url());
    assert_eq!(b.count("table#submissions"), 0, "no activity logs were sent");
    b.screenshot("submissions-no-activity-logs");
    b.select("select[name=form]", SURVEY);
    b.select("select[name=review]", "pending");
    b.click_and_load("#filter");
    b.wait("table#submissions");
    assert_eq!(rows(&mut b), 3, "three interviews wait for review");
    assert!(b.text("table#submissions").contains("Encuestadora Yaritza"), "the author's phone is named");
    let list_shot = b.screenshot("submissions-pending");

    // One submission: its answers under the form's labels, then "has issues" with a comment.
    b.click_and_load(&format!("tr[data-doc=\"{}\"] a", reviewed.0));
    assert!(b.url().ends_with(&format!("/submissions/{}", reviewed.0)), "{}", b.url());
    b.wait("section#answers");
    let answers = b.text("section#answers");
    assert!(answers.contains("Arraiján") && answers.contains("Ana") && answers.contains("41"), "{answers}");
    assert_eq!(b.text("#review-state"), "Por revisar");
    b.screenshot("submission");
    let comment = "Falta el teléfono de contacto del hogar; por favor vuelva a visitarlo.";
    b.select("select#state", "has_issues");
    b.fill("textarea#comment", comment);
    b.click_and_load("#save-review");
    assert_eq!(b.text("#review-state"), "Con problemas");
    let comments = b.text("section#comments");
    assert!(comments.contains(comment) && comments.contains(EMAIL), "{comments}");
    b.screenshot("submission-has-issues");

    // The list by review state: the reviewed one has issues, two still wait.
    b.goto(&format!("{url}{list}?review=has_issues"));
    assert_eq!(rows(&mut b), 1);
    assert_eq!(b.count(&format!("tr[data-doc=\"{}\"]", reviewed.0)), 1);
    b.screenshot("submissions-has-issues");
    b.goto(&format!("{url}{list}?review=pending"));
    assert_eq!(rows(&mut b), 2);
    assert_eq!(b.count(&format!("tr[data-doc=\"{}\"]", reviewed.0)), 0);

    // The enumerator's phone gets the review and the comment on its next sync.
    phone.sync().await.unwrap();
    let doc = phone.store().read_document(reviewed).unwrap();
    assert_eq!(doc.review_state(), Some("has_issues"));
    let on_phone: Vec<Comment> = phone
        .store()
        .list_documents(Collection::Comment)
        .unwrap()
        .into_iter()
        .filter_map(|id| Comment::read(&phone.store().read_document(id).unwrap()))
        .filter(|c| c.submission == reviewed)
        .collect();
    assert_eq!(on_phone.len(), 1, "{on_phone:?}");
    assert_eq!(on_phone[0].text, comment);
    assert_eq!(on_phone[0].author.as_deref(), Some(EMAIL));
    assert_eq!(on_phone[0].review_state.as_deref(), Some("has_issues"));

    // A conflict: both phones change the night-safety answer offline, having seen "safe".
    coord_phone.sync().await.unwrap();
    let field = form.node("safe_night").unwrap().path.clone();
    for d in [&phone, &coord_phone] {
        assert_eq!(d.store().read_document(contested).unwrap().value(&field), Some(&json!("safe")));
    }
    phone.store().set_answer(contested, &field, json!("unsafe")).unwrap();
    coord_phone.store().set_answer(contested, &field, json!("very_unsafe")).unwrap();
    phone.sync().await.unwrap();
    coord_phone.sync().await.unwrap();
    phone.sync().await.unwrap();
    for d in [&phone, &coord_phone] {
        let doc = d.store().read_document(contested).unwrap();
        assert_eq!(doc.conflicts().count(), 1, "{}: the conflict is open on the phone too", d.name);
    }

    // The page shows both values; the coordinator keeps the enumerator's.
    b.goto(&format!("{url}{list}?flag=conflicts"));
    assert_eq!(rows(&mut b), 1);
    b.click_and_load(&format!("tr[data-doc=\"{}\"] a", contested.0));
    b.wait("section#conflicts");
    assert_eq!(b.count("section#conflicts button.keep"), 2);
    let shown = b.text("section#conflicts");
    assert!(shown.contains("Muy inseguro(a)") && shown.contains("Inseguro(a)"), "{shown}");
    let conflict_shot = b.screenshot("submission-conflict");
    b.click_and_load("section#conflicts tr.conflict:has(td:text-is(\"Inseguro(a)\")) button.keep");
    assert!(b.url().ends_with(&format!("/submissions/{}", contested.0)), "{}", b.url());
    b.wait_gone("section#conflicts");
    assert!(b.text("section#answers").contains("Inseguro(a)"));
    assert!(!b.text("section#answers").contains("Muy inseguro(a)"));
    b.screenshot("submission-resolved");

    // Both phones show the kept value with no open conflict after their next sync.
    for d in [&mut phone, &mut coord_phone] {
        d.sync().await.unwrap();
        let doc = d.store().read_document(contested).unwrap();
        assert_eq!(doc.value(&field), Some(&json!("unsafe")), "{}", d.name);
        assert_eq!(doc.conflicts().count(), 0, "{}: no open conflict", d.name);
    }

    // Each export downloads from the list page's links.
    b.goto(&format!("{url}{list}"));
    b.click("details#exports summary");
    b.screenshot("exports");
    let form_id = form.settings.form_id.clone();
    let link =
        |format: &str, class: &str| format!("a.{class}[data-form=\"{form_id}\"][data-format=\"{format}\"]");
    let csv_path = shots.join("export.zip");
    let name = b.download(&link("csv", "export"), &csv_path);
    assert_eq!(name, format!("{form_id}.zip"));
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&csv_path).unwrap()).unwrap();
    let mut main = String::new();
    std::io::Read::read_to_string(&mut zip.by_name(&format!("{form_id}.csv")).unwrap(), &mut main).unwrap();
    assert!(main.starts_with("KEY,"), "{main}");
    assert_eq!(main.lines().count(), 4, "a header and the three interviews: {main}");
    assert!(main.contains(&contested.0.to_string()) && main.contains("unsafe"), "{main}");
    assert!(zip.file_names().any(|n| n.is_ok_and(|n| n.contains("roster"))), "the roster has its own file");
    let xlsx_path = shots.join("export.xlsx");
    assert_eq!(b.download(&link("xlsx", "export-labels"), &xlsx_path), format!("{form_id}.xlsx"));
    let xlsx = std::fs::read(&xlsx_path).unwrap();
    assert!(xlsx.starts_with(b"PK") && xlsx.len() > 1_000, "an XLSX workbook");
    let geo_path = shots.join("export.geojson");
    assert_eq!(b.download(&link("geojson", "export"), &geo_path), format!("{form_id}.geojson"));
    let geo: serde_json::Value = serde_json::from_slice(&std::fs::read(&geo_path).unwrap()).unwrap();
    assert_eq!(geo["type"], "FeatureCollection");
    assert!(geo["features"].as_array().is_some(), "{geo}");

    // Signing out sends back to the login, and the pages stay closed.
    b.click_and_load("#logout");
    assert!(b.url().ends_with("/login"), "{}", b.url());
    b.wait("#sign-in");
    b.goto(&format!("{url}{list}"));
    assert!(b.url().ends_with("/login"), "signed out, the list sends to the login: {}", b.url());
    b.screenshot("signed-out");

    if std::env::var_os("TEJIDO_UPDATE_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&list_shot, docs.join("web-submissions.png")).unwrap();
        std::fs::copy(&conflict_shot, docs.join("web-submission.png")).unwrap();
    }
    println!("{} screenshots in {}", b.taken.len(), shots.display());
}
