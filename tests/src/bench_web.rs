//! `tejido-bench web`: the coordinators' submissions page at scale. A project's read model is
//! filled with `--rows` submissions (100,000 by default: two forms, three review states,
//! answers of about a kilobyte), then the real server renders the list page of 100, filtered by
//! form and review state, many times over HTTP with a signed-in session, on SQLite and on
//! PostgreSQL (a throwaway cluster). Prints the p50 and p99 latency of each, and beside them the
//! same query through the service alone (`.ratio` = page time over query time, what rendering
//! and HTTP add).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tejido_server::api::{router, AppState};
use tejido_server::blobs::BlobStore;
use tejido_server::service::Service;
use tejido_server::storage::{Mode, Storage, SubmissionFilter, SubmissionState, UserRole};
use uuid::Uuid;

use crate::report;

const PASSWORD: &str = "bench password 1234";

pub fn run(args: &[String]) -> Result<(), String> {
    let mut rows = 100_000usize;
    let mut requests = 300usize;
    let mut backends = vec!["sqlite".to_owned(), "postgres".to_owned()];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rows" => rows = it.next().and_then(|v| v.parse().ok()).ok_or("--rows takes a number")?,
            "--requests" => {
                requests = it.next().and_then(|v| v.parse().ok()).ok_or("--requests takes a number")?
            }
            "--backend" => backends = vec![it.next().ok_or("--backend takes sqlite or postgres")?.clone()],
            other => return Err(format!("unknown option {other}")),
        }
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    for backend in backends {
        runtime.block_on(bench(&backend, rows, requests))?;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

async fn bench(backend: &str, rows: usize, requests: usize) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let storage: Arc<dyn Storage> = match backend {
        "sqlite" => Arc::new(
            tejido_server::storage::SqliteStorage::open(dir.path().join("tejido.db"))
                .map_err(|e| e.to_string())?,
        ),
        "postgres" => {
            let url = tejido_server::testing::cluster().fresh_database().await;
            Arc::new(tejido_server::storage::PostgresStorage::open(&url).await.map_err(|e| e.to_string())?)
        }
        other => return Err(format!("unknown backend {other}")),
    };
    let service = Service::new(storage.clone()).await.map_err(|e| e.to_string())?;
    let project = service.create_project("bench", 0).await.map_err(|e| e.to_string())?.id;
    service
        .add_user("bench@example.org", Some(PASSWORD), project, UserRole::Coordinator, 0)
        .await
        .map_err(|e| e.to_string())?;

    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let devices: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    let states = ["pending", "approved", "has_issues"];
    let mut written = 0;
    while written < rows {
        let mut tx = storage.begin(Mode::Write).await.map_err(|e| e.to_string())?;
        for _ in 0..5_000.min(rows - written) {
            let i = written as i64;
            let district = ["panama", "san_miguelito", "arraijan", "la_chorrera"][rng.random_range(0..4)];
            let safety = ["very_safe", "safe", "unsafe", "very_unsafe"][rng.random_range(0..4)];
            let answers = serde_json::json!({
                "consent": "yes",
                "survey/location/district": district,
                "survey/perception/night_safety": safety,
                "survey/victimization/crimes": "robbery theft",
                "survey/notes": "x".repeat(700),
            });
            tx.put_submission_state(&SubmissionState {
                doc: Uuid::new_v4(),
                project,
                form_id: if i % 3 == 0 {
                    "bitacora_red_juvenil".into()
                } else {
                    "victimizacion_hogares".into()
                },
                form_version: "1".into(),
                author_device: Some(devices[rng.random_range(0..devices.len())]),
                review_state: states[rng.random_range(0..3)].into(),
                finalized: true,
                deleted: false,
                conflicts: 0,
                flags: 0,
                duration_s: Some(rng.random_range(300..3_000)),
                received_ms: 1_700_000_000_000 + i * 1_000,
                updated_ms: 1_700_000_000_000 + i * 1_000,
                answers: answers.to_string(),
            })
            .await
            .map_err(|e| e.to_string())?;
            written += 1;
        }
        tx.commit().await.map_err(|e| e.to_string())?;
    }
    report(&format!("web.{backend}.fill_s"), started.elapsed().as_secs_f64(), "s");

    let state = AppState::new(service.clone(), Arc::new(BlobStore::new(dir.path().join("blobs"))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let stop = tokio_util_cancel();
    let server = tokio::spawn(tejido_server::serve::serve(
        listener,
        router(state),
        tejido_server::serve::ConnectionLimits::default(),
        stop.1,
    ));
    let url = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let cookie = login(&http, &url).await?;

    let path = format!("{url}/projects/{project}/submissions?form=victimizacion_hogares&review=pending");
    // Warm up, then measure.
    for _ in 0..10 {
        fetch(&http, &path, &cookie).await?;
    }
    let mut page_times = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        let body = fetch(&http, &path, &cookie).await?;
        page_times.push(t.elapsed());
        if !body.contains("data-doc=") {
            return Err("the list page shows no rows".into());
        }
    }
    let mut query_times = Vec::with_capacity(requests);
    let f = SubmissionFilter {
        project,
        form_id: Some("victimizacion_hogares".into()),
        review_state: Some("pending".into()),
        ..SubmissionFilter::default()
    };
    for _ in 0..requests {
        let t = Instant::now();
        let page = service.list_submissions(&f, 100).await.map_err(|e| e.to_string())?;
        query_times.push(t.elapsed());
        if page.rows.len() != 100 {
            return Err(format!("a page held {} rows", page.rows.len()));
        }
    }
    page_times.sort();
    query_times.sort();
    report(&format!("web.{backend}.list_page_p50"), percentile(&page_times, 0.5), "ms");
    report(&format!("web.{backend}.list_page_p99"), percentile(&page_times, 0.99), "ms");
    report(&format!("web.{backend}.list_query_p99"), percentile(&query_times, 0.99), "ms");
    crate::report_ratio(
        &format!("web.{backend}.list_page_p99"),
        percentile(&page_times, 0.99) / percentile(&query_times, 0.99).max(1e-9),
    );
    println!(
        "web.{backend}: {rows} submissions, {requests} pages of 100 (target: list_page_p99 under 50 ms)"
    );
    let _ = stop.0.send(());
    let _ = server.await;
    Ok(())
}

/// A shutdown signal for the server: send on the first to stop it.
fn tokio_util_cancel() -> (tokio::sync::oneshot::Sender<()>, impl std::future::Future<Output = ()> + Send) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

async fn fetch(http: &reqwest::Client, url: &str, cookie: &str) -> Result<String, String> {
    let res = http.get(url).header("cookie", cookie).send().await.map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!("the list page answered {}", res.status()));
    }
    res.text().await.map_err(|e| e.to_string())
}

/// Signs in as a browser would: the login page's CSRF cookie and field, then the form.
async fn login(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let res = http.get(format!("{url}/login")).send().await.map_err(|e| e.to_string())?;
    let csrf_cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("tejido_login_csrf="))
        .and_then(|v| v.split(';').next())
        .ok_or("the login page set no CSRF cookie")?
        .to_owned();
    let token = csrf_cookie.trim_start_matches("tejido_login_csrf=").to_owned();
    let res = http
        .post(format!("{url}/login"))
        .header("cookie", &csrf_cookie)
        .form(&[("email", "bench@example.org"), ("password", PASSWORD), ("csrf", &token)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("tejido_session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .ok_or_else(|| format!("the login failed ({})", res.status()))
}
