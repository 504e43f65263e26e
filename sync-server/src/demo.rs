//! `tejido-server demo`: the server with a seeded project, the example forms, and simulated
//! devices that fill and sync submissions through the real library and protocol.
//!
//! Each simulated device is a real `tejido-core` store in `DIR/devices/<n>.db`, enrolled over
//! HTTP with a code made for its role. It syncs to receive the forms published to its role,
//! fills submissions through a [`FormSession`] with plausible random answers (a generated photo
//! for youth activities), finalizes them and syncs them back. The log shows counts only, never
//! answer values.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tejido_core::form::{import_xlsform_bytes, Form, FormSession, QuestionType};
use tejido_core::store::attachment_ref;
use tejido_core::sync::client::{enroll_with_link, CancelToken, SyncClient, SyncReport};
use tejido_core::sync::wire::Role;
use tejido_core::{Collection, Store};
use tejido_server::api::{router, AppState};
use tejido_server::secrets::{enrollment_link, hash_code, new_code};
use tejido_server::service::Service;
use tejido_server::storage::{NewEnrollmentCode, Project, PublishForm, UserRole};
use tokio_util::sync::CancellationToken;

use crate::{open_deployment, shutdown_signal, Failure};

/// The demo project's name.
pub const PROJECT: &str = "Observatorio demo";

/// The example forms (examples/forms), built into the binary so the demo runs from anywhere,
/// with the role each is published to.
/// The example forms' indicator definitions, by form id.
const INDICATORS: [(&str, &str); 2] = [
    ("victimizacion_hogares", include_str!("../../examples/forms/victimizacion_hogares.indicators.json")),
    ("bitacora_red_juvenil", include_str!("../../examples/forms/bitacora_red_juvenil.indicators.json")),
];

const FORMS: [(&str, &[u8], Role); 2] = [
    (
        "victimizacion_hogares.xlsx",
        include_bytes!("../../examples/forms/victimizacion_hogares.xlsx"),
        Role::Enumerator,
    ),
    (
        "bitacora_red_juvenil.xlsx",
        include_bytes!("../../examples/forms/bitacora_red_juvenil.xlsx"),
        Role::Youth,
    ),
];

/// What `tejido-server demo` was asked to do.
#[derive(Debug)]
pub struct DemoOptions {
    pub listen: String,
    pub devices: u32,
    pub rounds: u32,
    pub per_round: u32,
    pub exit_after_rounds: bool,
}

fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Runs the demo in `data/demo` until Ctrl-C (or after the rounds, with `exit_after_rounds`).
pub fn run(data: &Path, database: Option<&str>, options: DemoOptions) -> Result<(), Failure> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TEJIDO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let dir = data.join("demo");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start the runtime: {e}"), 1))?;
    runtime.block_on(async move {
        let (storage, blobs) = open_deployment(&dir, database).await?;
        let service = Service::new(storage).await?;
        let project = seed(&service).await?;
        for (form, role) in &project_forms()? {
            let value =
                serde_json::to_value(form).map_err(|e| Failure(format!("cannot encode the form: {e}"), 1))?;
            let outcome = service
                .publish_form(&PublishForm {
                    project: project.id,
                    form_id: form.settings.form_id.clone(),
                    version: form.settings.version.clone(),
                    roles: vec![*role],
                    form: value,
                    media: Vec::new(),
                    now_ms: tejido_server::now_ms().max(0) as u64,
                })
                .await?;
            say(&format!(
                "demo: form {} version {} {} to {}",
                form.settings.form_id,
                form.settings.version,
                if outcome.published { "published" } else { "already published" },
                role.as_str()
            ));
        }
        for (form_id, definition) in INDICATORS {
            service.set_indicators(project.id, form_id, definition).await?;
        }
        let listener = tokio::net::TcpListener::bind(&options.listen)
            .await
            .map_err(|e| Failure(format!("cannot listen on {}: {e}", options.listen), 1))?;
        let addr = listener.local_addr().map_err(|e| Failure(format!("cannot listen: {e}"), 1))?;
        let url = format!("http://{addr}");
        let state = AppState::new(service.clone(), blobs).with_public_url(url.clone());
        let stop = CancellationToken::new();
        let server = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tejido_server::serve::serve(
                    listener,
                    router(state),
                    tejido_server::serve::ConnectionLimits::default(),
                    stop.cancelled_owned(),
                )
                .await
            })
        };
        {
            let stop = stop.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                stop.cancel();
            });
        }
        say(&format!("listening on {url}"));
        say(&format!("demo: data in {}", dir.display()));
        let password = coordinator_login(&service, &project).await?;
        say(&format!(
            "demo: coordinators' page: {url}/login  user: {COORDINATOR_EMAIL}  password: {password}  (a new password every run)"
        ));
        let coordinator = make_code(&service, &project, Role::Coordinator, 1).await?;
        let link = enrollment_link(&url, &coordinator);
        say(&format!("demo: coordinator enrollment link (one device): {link}"));
        say(&qr(&link));

        tokio::select! {
            result = simulate(&service, &project, &url, &dir, &options, &stop) => {
                if let Err(Failure(message, _)) = result {
                    say(&format!("demo: the simulated devices stopped: {message}"));
                }
            }
            _ = stop.cancelled() => {}
        }
        if options.exit_after_rounds {
            stop.cancel();
        } else if !stop.is_cancelled() {
            say(&format!("demo: still serving on {url}; Ctrl-C to stop"));
        }
        match server.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failure(format!("the server failed: {e}"), 1)),
            Err(e) => Err(Failure(format!("the server task failed: {e}"), 1)),
        }
    })
}

/// The demo coordinator's sign-in.
pub const COORDINATOR_EMAIL: &str = "coordinadora@demo.tejido";

/// Makes the demo coordinator (or gives her a new password): the password is printed once and
/// kept only as its hash.
async fn coordinator_login(service: &Service, project: &Project) -> Result<String, Failure> {
    let password = tejido_server::secrets::new_token()[..20].to_owned();
    let exists = service.list_users().await?.iter().any(|a| a.user.email == COORDINATOR_EMAIL);
    if exists {
        service.set_password(COORDINATOR_EMAIL, &password).await?;
        service
            .add_user(COORDINATOR_EMAIL, None, project.id, UserRole::Coordinator, tejido_server::now_ms())
            .await?;
    } else {
        service
            .add_user(
                COORDINATOR_EMAIL,
                Some(&password),
                project.id,
                UserRole::Coordinator,
                tejido_server::now_ms(),
            )
            .await?;
    }
    Ok(password)
}

async fn seed(service: &Service) -> Result<Project, Failure> {
    if let Some(p) = service.find_project(PROJECT).await? {
        say(&format!("demo: project {} ({}) already exists", p.name, p.id));
        return Ok(p);
    }
    let p = service.create_project(PROJECT, tejido_server::now_ms()).await?;
    say(&format!("demo: created project {} ({})", p.name, p.id));
    Ok(p)
}

fn project_forms() -> Result<Vec<(Form, Role)>, Failure> {
    FORMS
        .iter()
        .map(|(name, bytes, role)| {
            import_xlsform_bytes(bytes, name)
                .map(|f| (f, *role))
                .map_err(|errors| Failure(format!("the example form {name} has errors:\n{errors}"), 1))
        })
        .collect()
}

async fn make_code(service: &Service, project: &Project, role: Role, uses: u32) -> Result<String, Failure> {
    let code = new_code();
    service
        .create_enrollment_code(&NewEnrollmentCode {
            code_hash: hash_code(&code),
            project: project.id,
            role,
            uses,
            expires_ms: Some(tejido_server::now_ms() + 24 * 3600 * 1000),
            now_ms: tejido_server::now_ms(),
        })
        .await?;
    Ok(code)
}

fn qr(link: &str) -> String {
    qrcode::QrCode::new(link.as_bytes())
        .map(|q| {
            q.render::<qrcode::render::unicode::Dense1x2>()
                .dark_color(qrcode::render::unicode::Dense1x2::Light)
                .light_color(qrcode::render::unicode::Dense1x2::Dark)
                .quiet_zone(true)
                .build()
        })
        .unwrap_or_default()
}

/// One simulated phone.
struct Device {
    n: u32,
    role: Role,
    store: Store,
    client: SyncClient,
}

fn role_of(n: u32) -> Role {
    if n % 2 == 1 {
        Role::Enumerator
    } else {
        Role::Youth
    }
}

fn sync_error(n: u32, e: impl std::fmt::Display) -> Failure {
    Failure(format!("device {n}: sync failed: {e}"), 1)
}

async fn simulate(
    service: &Service,
    project: &Project,
    url: &str,
    dir: &Path,
    options: &DemoOptions,
    stop: &CancellationToken,
) -> Result<(), Failure> {
    let devices_dir = dir.join("devices");
    // The simulated devices start afresh every run (the server keeps the old ones' data).
    if devices_dir.exists() {
        std::fs::remove_dir_all(&devices_dir)
            .map_err(|e| Failure(format!("cannot clear {}: {e}", devices_dir.display()), 1))?;
    }
    std::fs::create_dir_all(&devices_dir)
        .map_err(|e| Failure(format!("cannot create {}: {e}", devices_dir.display()), 1))?;
    let cancel = CancelToken::new();
    let mut devices = Vec::new();
    // One code per role, usable by as many devices as take that role.
    let mut codes: BTreeMap<&str, String> = BTreeMap::new();
    for role in [Role::Enumerator, Role::Youth] {
        let uses = (1..=options.devices).filter(|n| role_of(*n) == role).count() as u32;
        if uses > 0 {
            codes.insert(role.as_str(), make_code(service, project, role, uses).await?);
        }
    }
    for n in 1..=options.devices {
        let role = role_of(n);
        let path = devices_dir.join(format!("{n}.db"));
        let store = Store::open(&path)
            .map_err(|e| Failure(format!("cannot open the device store {}: {e}", path.display()), 1))?;
        let code = codes.get(role.as_str()).cloned().unwrap_or_default();
        let link = enrollment_link(url, &code);
        let name = format!("demo {} {n}", role.as_str());
        enroll_with_link(&link, &store, Some(&name))
            .await
            .map_err(|e| Failure(format!("device {n}: enrollment failed: {e}"), 1))?;
        let client = SyncClient::from_store(&store).map_err(|e| sync_error(n, e))?;
        let report = client.sync(&store, &(), &cancel).await.map_err(|e| sync_error(n, e))?;
        let forms = received_forms(&store)?;
        say(&format!(
            "demo: device {n} ({}) enrolled and received {} form(s), {} change(s)",
            role.as_str(),
            forms.len(),
            report.changes_pulled
        ));
        devices.push(Device { n, role, store, client });
    }
    let mut rng = StdRng::from_os_rng();
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let mut photos = 0u64;
    for round in 1..=options.rounds {
        let mut synced = 0u64;
        for device in &devices {
            if stop.is_cancelled() {
                return Ok(());
            }
            let forms = received_forms(&device.store)?;
            let mut filled: BTreeMap<String, u64> = BTreeMap::new();
            for i in 0..options.per_round {
                let Some(form) = forms.choose(&mut rng) else { break };
                let doc = device
                    .store
                    .start_submission(&form.settings.form_id, &form.settings.version)
                    .map_err(|e| Failure(format!("device {}: {e}", device.n), 1))?;
                let mut session = FormSession::open(&device.store, form, doc)
                    .map_err(|e| Failure(format!("device {}: {e}", device.n), 1))?;
                let mut filler = Filler { rng: &mut rng, seq: round * 1000 + i, photos: 0 };
                match filler.fill(&mut session) {
                    Ok(()) => {
                        *filled.entry(form.settings.form_id.clone()).or_default() += 1;
                        photos += filler.photos;
                    }
                    Err(problem) => say(&format!(
                        "demo: device {} left a draft of {}: {problem}",
                        device.n, form.settings.form_id
                    )),
                }
            }
            let report: SyncReport =
                device.client.sync(&device.store, &(), &cancel).await.map_err(|e| sync_error(device.n, e))?;
            let count: u64 = filled.values().sum();
            synced += count;
            for (form, n) in filled {
                *totals.entry(form).or_default() += n;
            }
            say(&format!(
                "demo: round {round}: device {} ({}) filled {count} submission(s); pushed {} change(s), \
                 {} attachment(s), {} bytes",
                device.n,
                device.role.as_str(),
                report.changes_pushed,
                report.attachments_uploaded,
                report.bytes_sent
            ));
        }
        say(&format!("demo: round {round} of {} done: {synced} submission(s) synced", options.rounds));
    }
    let per_form: Vec<String> = totals.iter().map(|(f, n)| format!("{f}={n}")).collect();
    say(&format!("demo: totals {} photos={photos}", per_form.join(" ")));
    Ok(())
}

/// The newest version of every form the device received.
fn received_forms(store: &Store) -> Result<Vec<Form>, Failure> {
    let store_error = |e: tejido_core::StoreError| Failure(format!("device store: {e}"), 1);
    let mut latest: Vec<Form> = Vec::new();
    for doc in store.list_documents(Collection::Form).map_err(store_error)? {
        let d = store.read_document(doc).map_err(store_error)?;
        let Some(form) = d.value("form").and_then(|v| serde_json::from_value::<Form>(v.clone()).ok()) else {
            continue;
        };
        match latest.iter_mut().find(|f| f.settings.form_id == form.settings.form_id) {
            Some(slot) => *slot = form,
            None => latest.push(form),
        }
    }
    Ok(latest)
}

/// Fills a form with plausible random answers, the way an enumerator would: whatever is shown,
/// in order, until nothing new appears.
struct Filler<'r> {
    rng: &'r mut StdRng,
    seq: u32,
    photos: u64,
}

const NAMES: [&str; 8] = ["Ana", "Luis", "María", "José", "Yaritza", "Carlos", "Elena", "Iván"];
const ACTIVITIES: [&str; 5] = [
    "Taller de cultura de paz",
    "Torneo de fútbol comunitario",
    "Mural en el parque",
    "Charla sobre derechos humanos",
    "Limpieza de la cancha",
];
const PLACES: [&str; 5] = ["Escuela", "Parque", "Cancha", "Casa comunal", "Iglesia"];

impl Filler<'_> {
    fn fill(&mut self, s: &mut FormSession<'_>) -> Result<(), String> {
        let err = |e: tejido_core::form::FormError| e.to_string();
        let mut decided: HashSet<String> = HashSet::new();
        for _ in 0..16 {
            let mut progressed = false;
            for q in s.visible_questions(None) {
                if q.read_only || !q.value.is_null() || decided.contains(&q.path) {
                    continue;
                }
                if q.name == "total_attendees" {
                    continue; // set once the parts are known
                }
                if !q.required && !self.rng.random_bool(0.7) {
                    decided.insert(q.path.clone());
                    continue;
                }
                if q.name == "household_size" {
                    let size = self.rng.random_range(1..=6);
                    s.set_answer(&q.path, json!(size)).map_err(err)?;
                    let roster = s
                        .form()
                        .nodes
                        .iter()
                        .find(|n| n.kind == QuestionType::Repeat)
                        .map(|n| n.path.clone());
                    if let Some(roster) = roster {
                        for _ in 0..size {
                            s.add_repeat_row(&roster).map_err(err)?;
                        }
                    }
                } else if q.kind == QuestionType::Image {
                    let bytes = photo(self.rng);
                    let sha = s
                        .store()
                        .store_attachment(&bytes, "image/bmp", false)
                        .map_err(|e| format!("cannot keep a photo: {e}"))?;
                    s.set_answer(&q.path, json!(attachment_ref(&sha))).map_err(err)?;
                    self.photos += 1;
                } else {
                    let choices: Vec<&str> = q.choices.iter().map(|c| c.name.as_str()).collect();
                    // Nothing to answer yet (a choice list filtered by an earlier answer).
                    let Some(value) = self.answer(&q.name, q.kind, &choices) else { continue };
                    s.set_answer(&q.path, value).map_err(err)?;
                }
                decided.insert(q.path.clone());
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        if s.visible_questions(None).iter().any(|q| q.name == "total_attendees") {
            let sum = match s.value("attendance_sum").map_err(err)? {
                Value::Number(n) => n.as_i64().unwrap_or(0),
                Value::String(t) => t.parse().unwrap_or(0),
                _ => 0,
            };
            s.set_answer("total_attendees", json!(sum)).map_err(err)?;
        }
        s.finalize().map_err(|errors| {
            let names: Vec<String> =
                errors.into_iter().map(|e| format!("{} ({:?})", e.path, e.kind)).collect();
            format!("it does not pass its checks: {}", names.join(", "))
        })
    }

    fn answer(&mut self, name: &str, kind: QuestionType, choices: &[&str]) -> Option<Value> {
        let rng = &mut *self.rng;
        Some(match kind {
            QuestionType::SelectOne => {
                if name == "consent" && choices.contains(&"yes") && rng.random_bool(0.9) {
                    return Some(json!("yes"));
                }
                json!(choices.choose(rng)?)
            }
            QuestionType::SelectMultiple => {
                let others: Vec<&str> = choices.iter().copied().filter(|c| *c != "none").collect();
                if choices.contains(&"none") && (others.is_empty() || rng.random_bool(0.3)) {
                    json!(["none"])
                } else if others.is_empty() {
                    return None;
                } else {
                    let mut picked = others;
                    picked.shuffle(rng);
                    picked.truncate(rng.random_range(1..=2));
                    json!(picked)
                }
            }
            QuestionType::Integer => match name {
                "member_age" => json!(rng.random_range(0..=90)),
                _ => json!(rng.random_range(1..=12)),
            },
            QuestionType::Decimal => json!(rng.random_range(0.0..100.0_f64)),
            QuestionType::Text => match name {
                "member_name" => json!(NAMES.choose(rng)?),
                "activity_name" => json!(format!("{} #{}", ACTIVITIES.choose(rng)?, self.seq)),
                "place" => json!(PLACES.choose(rng)?),
                "notes" => json!("Actividad simulada por la demo."),
                _ => json!("Otro"),
            },
            QuestionType::Date => json!(days_ago(rng.random_range(1..=20))),
            QuestionType::Geopoint => json!(format!(
                "{:.5} {:.5} {} {}",
                rng.random_range(8.90..9.10),
                rng.random_range(-79.85..-79.40),
                rng.random_range(0..60),
                rng.random_range(3..15)
            )),
            _ => return None,
        })
    }
}

/// A date `days` before today (UTC), as `YYYY-MM-DD`.
fn days_ago(days: i64) -> String {
    let today = tejido_server::now_ms().div_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = today - days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A small generated picture (a 32×32 BMP gradient in random colours, about 3 KB).
fn photo(rng: &mut StdRng) -> Vec<u8> {
    const SIDE: u32 = 32;
    let row = SIDE * 3; // already a multiple of 4
    let pixels = row * SIDE;
    let mut out = Vec::with_capacity(54 + pixels as usize);
    out.extend_from_slice(b"BM");
    out.extend_from_slice(&(54 + pixels).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&SIDE.to_le_bytes());
    out.extend_from_slice(&SIDE.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&pixels.to_le_bytes());
    out.extend_from_slice(&[0; 16]);
    let (r, g, b): (u8, u8, u8) = (rng.random(), rng.random(), rng.random());
    for y in 0..SIDE {
        for x in 0..SIDE {
            let shade = ((x + y) * 4) as u8;
            out.extend_from_slice(&[b.wrapping_add(shade), g.wrapping_add(shade / 2), r ^ shade]);
        }
    }
    out
}
