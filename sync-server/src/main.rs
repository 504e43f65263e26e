//! `tejido-server`: the sync server and the admin CLI, one binary.

#[cfg(feature = "demo")]
mod demo;
mod form_cli;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use serde_json::json;
use tejido_core::form::{import_xlsform, Form};
use tejido_core::sync::wire::Role;
use tejido_server::api::{router, AppState};
use tejido_server::blobs::{BlobBytes, BlobStore};
use tejido_server::secrets::{enrollment_link, hash_code, new_code};
use tejido_server::serve::ConnectionLimits;
use tejido_server::service::Service;
use tejido_server::storage::{
    NewEnrollmentCode, PostgresStorage, Project, PublishForm, SqliteStorage, Storage, StorageError, UserRole,
};

/// mimalloc instead of the system allocator: a push allocates and frees many short-lived
/// buffers on every worker thread, and glibc's per-thread arenas hand their tops back to the
/// kernel and fault them in again (`tejido-bench sync` showed a tenth of the server's CPU in
/// malloc, free and page faults).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "tejido-server", version, about = "Tejido's sync server and admin commands")]
struct Cli {
    /// The deployment's folder: the database (tejido.db) and blobs.
    #[arg(long, global = true, env = "TEJIDO_DATA", default_value = "./tejido-data")]
    data: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// The database: a `postgres://user@host:port/db` URL for PostgreSQL (several server
    /// processes may share it); by default the SQLite file tejido.db in --data.
    #[arg(long, global = true, env = "TEJIDO_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run after restoring a backup, with every server process stopped: gives the server a new
    /// epoch, so each device sends its whole history again on its next sync and the server gets
    /// back what it had acknowledged after the backup was taken.
    Restored,
    /// Copy this --data SQLite deployment (database and blobs) into an empty PostgreSQL
    /// database; prints each table's row count and checksum on both sides.
    Migrate {
        /// The target: postgres://user@host:port/db (an empty database).
        #[arg(long, env = "TEJIDO_MIGRATE_TO", hide_env_values = true)]
        to: String,
    },
    /// Run the API; prints `listening on http://ADDR` once it accepts connections.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// A token that may run every admin operation over HTTP.
        #[arg(long, env = "TEJIDO_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// The address phones use, for enrollment links (default: http://<the listen address>).
        #[arg(long, env = "TEJIDO_PUBLIC_URL")]
        public_url: Option<String>,
        /// Most connections served at once; more wait in the listen backlog.
        #[arg(long, default_value_t = 512)]
        max_connections: usize,
        /// How long a client may take to send a request's headers; also how long a connection
        /// may sit idle between requests.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        header_timeout: std::time::Duration,
        /// How long a request body may stall between chunks.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        body_timeout: std::time::Duration,
        /// The address of a reverse proxy in front of this server (repeat for several): its
        /// X-Forwarded-For then names the client, for the per-address login limit. From any
        /// other address the header is ignored.
        #[arg(
            long = "trusted-proxy",
            value_name = "IP",
            env = "TEJIDO_TRUSTED_PROXIES",
            value_delimiter = ','
        )]
        trusted_proxies: Vec<std::net::IpAddr>,
    },
    #[cfg(feature = "demo")]
    /// Serve a seeded demo project (in DATA/demo) with the example forms and simulated devices
    /// that fill and sync submissions through the real client; runs until Ctrl-C.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// How many simulated devices (odd ones are enumerators, even ones youth).
        #[arg(long, default_value_t = 4)]
        devices: u32,
        /// How many rounds of filling and syncing.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Submissions each device fills per round.
        #[arg(long, default_value_t = 2)]
        per_round: u32,
        /// Stop once the rounds are done instead of serving on.
        #[arg(long)]
        exit_after_rounds: bool,
    },
    /// Projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Make an enrollment code (and its setup link and QR code) for a role in a project.
    Enroll {
        #[arg(long)]
        project: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// How many devices may use it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it stays valid, e.g. 7d or 12h, or `never` (default: a day for coordinator
        /// codes, no expiry for the others).
        #[arg(long)]
        expires: Option<String>,
        /// The server address to put in the link.
        #[arg(long, env = "TEJIDO_PUBLIC_URL", default_value = "http://localhost:8080")]
        server: String,
    },
    /// Enrolled devices.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Forms: check, preview, publish.
    #[command(subcommand)]
    Form(FormCommand),
    /// Export a form's submissions (deleted ones left out; approved ones only under the
    /// project's review gate) with the columns of its newest version.
    Export {
        #[arg(long)]
        project: String,
        #[arg(long)]
        form: String,
        /// csv (a zip of CSV files, one per repeat), xlsx or geojson.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Question and choice labels instead of names.
        #[arg(long)]
        labels: bool,
        /// The language of labels (es, en, or as the form names it).
        #[arg(long)]
        lang: Option<String>,
        /// The file to write (written beside it first, then renamed, so a failed export leaves
        /// nothing half-written).
        #[arg(long)]
        out: PathBuf,
    },
    /// Accounts of the coordinators' web app.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user to a project (a new user gets a password; an existing one keeps theirs).
    Add {
        email: String,
        #[arg(long)]
        project: String,
        #[arg(long, value_parser = parse_user_role, default_value = "coordinator")]
        role: UserRole,
        /// Read the password from stdin (one line) instead of asking on the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    List,
    /// Remove a user: their sessions end at once.
    Remove {
        email: String,
    },
    /// Set a user's password: their sessions end at once.
    Passwd {
        email: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

fn parse_user_role(s: &str) -> Result<UserRole, String> {
    UserRole::parse(s).ok_or_else(|| format!("{s:?} is not a user role: coordinator or admin"))
}

/// A password from stdin (scripts) or typed twice on the terminal without echo.
fn read_password(from_stdin: bool) -> Result<String, Failure> {
    let line = |prompt: Option<&str>| -> Result<String, Failure> {
        if let Some(p) = prompt {
            eprint!("{p}");
        }
        let mut s = String::new();
        std::io::stdin()
            .read_line(&mut s)
            .map_err(|e| Failure(format!("cannot read the password: {e}"), 1))?;
        Ok(s.trim_end_matches(['\n', '\r']).to_owned())
    };
    if from_stdin {
        return line(None);
    }
    // No echo while typing: stty is on every Unix the server runs on.
    let echo_off =
        std::process::Command::new("stty").arg("-echo").stdin(std::process::Stdio::inherit()).status();
    let first = line(Some("password: "));
    eprintln!();
    let second = line(Some("again: "));
    eprintln!();
    if echo_off.is_ok_and(|s| s.success()) {
        let _ = std::process::Command::new("stty").arg("echo").stdin(std::process::Stdio::inherit()).status();
    }
    let (first, second) = (first?, second?);
    if first != second {
        return Err(Failure("the passwords differ".into(), 1));
    }
    Ok(first)
}

#[derive(Debug, Subcommand)]
enum ProjectCommand {
    Create { name: String },
    List,
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    List {
        #[arg(long)]
        project: String,
    },
    Revoke {
        device: String,
    },
}

#[derive(Debug, Subcommand)]
enum FormCommand {
    /// Check an XLSForm and report every error.
    Check { file: PathBuf },
    /// Run a form against answers and show what the form session computes.
    Preview {
        file: PathBuf,
        #[arg(long)]
        answers: PathBuf,
        #[arg(long)]
        lang: Option<String>,
    },
    /// Publish a form version to the devices of some roles. Published versions are immutable.
    Publish {
        #[arg(long)]
        project: String,
        file: PathBuf,
        #[arg(long, value_delimiter = ',', value_parser = parse_role, default_value = "enumerator,youth")]
        roles: Vec<Role>,
        /// A media file the form uses (`select_one_from_file places.csv`, `pulldata('places', …)`);
        /// repeat for each. Files the form needs that are not given are taken from the folder
        /// `<form name>-media/` beside the form, as ODK Collect keeps them.
        #[arg(long = "media")]
        media: Vec<PathBuf>,
    },
    /// Set a published form's indicator definitions (JSON; see docs/indicators.md), checked
    /// against its newest version. `form publish` takes `<form>.indicators.json` beside the form.
    Indicators {
        #[arg(long)]
        project: String,
        #[arg(long)]
        form: String,
        file: PathBuf,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|_| format!("{s:?} is not a duration like 30s or 2m"))
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not a role: enumerator, youth or coordinator"))
}

/// A command's failure: the message, and the exit code.
struct Failure(String, u8);

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Failure {
        Failure(e.to_string(), 1)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let result = match cli.command {
        Command::Form(FormCommand::Check { file }) => {
            return ExitCode::from(clamp_code(form_cli::check(&file, json)));
        }
        Command::Form(FormCommand::Preview { file, answers, lang }) => {
            return ExitCode::from(clamp_code(form_cli::preview(&file, &answers, lang.as_deref(), json)));
        }
        command => run(&cli.data, cli.database.as_deref(), json, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message, code)) => {
            if json {
                let _ = writeln!(std::io::stdout(), "{}", json!({ "error": message }));
            } else {
                let _ = writeln!(std::io::stderr(), "tejido-server: {message}");
            }
            ExitCode::from(code)
        }
    }
}

fn clamp_code(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(1)
}

/// The deployment's storage: PostgreSQL when `database` is a PostgreSQL URL, else the SQLite
/// file in `data`. Migrations run here.
async fn open_storage(data: &Path, database: Option<&str>) -> Result<Arc<dyn Storage>, Failure> {
    Ok(open_deployment(data, database).await?.0)
}

/// The deployment's storage and blob bytes: both in PostgreSQL when `database` is a PostgreSQL
/// URL, else the SQLite file and the blobs folder in `data`.
async fn open_deployment(
    data: &Path,
    database: Option<&str>,
) -> Result<(Arc<dyn Storage>, Arc<dyn BlobBytes>), Failure> {
    match database.map(str::trim).filter(|d| !d.is_empty()) {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let storage = PostgresStorage::open(url)
                .await
                .map_err(|e| Failure(format!("cannot open the PostgreSQL database: {e}"), 1))?;
            let blobs = Arc::new(storage.blobs());
            Ok((Arc::new(storage), blobs))
        }
        // The URL may hold a password: it is never repeated.
        Some(_) => Err(Failure(
            "--database takes a postgres:// URL (or leave it out for SQLite in --data)".into(),
            2,
        )),
        None => {
            std::fs::create_dir_all(data)
                .map_err(|e| Failure(format!("cannot create the data folder {}: {e}", data.display()), 1))?;
            let blobs = BlobStore::new(data.join("blobs"));
            std::fs::create_dir_all(blobs.root())
                .map_err(|e| Failure(format!("cannot create {}: {e}", blobs.root().display()), 1))?;
            Ok((Arc::new(SqliteStorage::open(data.join("tejido.db"))?), Arc::new(blobs)))
        }
    }
}

/// What an admin command works with: the service over the deployment's storage, and a
/// runtime to drive it.
struct Admin {
    runtime: tokio::runtime::Runtime,
    service: Service,
}

impl Admin {
    fn open(data: &Path, database: Option<&str>) -> Result<Admin, Failure> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure(format!("cannot start the runtime: {e}"), 1))?;
        let service = runtime.block_on(async {
            let storage = open_storage(data, database).await?;
            Ok::<_, Failure>(Service::new(storage).await?)
        })?;
        Ok(Admin { runtime, service })
    }

    /// [`Admin::open`], with the deployment's blob bytes too.
    fn open_with_blobs(data: &Path, database: Option<&str>) -> Result<(Admin, Arc<dyn BlobBytes>), Failure> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure(format!("cannot start the runtime: {e}"), 1))?;
        let (service, blobs) = runtime.block_on(async {
            let (storage, blobs) = open_deployment(data, database).await?;
            let service = Service::new(storage).await?;
            service.read_media_from(blobs.clone());
            Ok::<_, Failure>((service, blobs))
        })?;
        Ok((Admin { runtime, service }, blobs))
    }

    fn run<T>(&self, f: impl std::future::Future<Output = Result<T, StorageError>>) -> Result<T, Failure> {
        Ok(self.runtime.block_on(f)?)
    }

    fn project(&self, p: &str) -> Result<Project, Failure> {
        self.run(self.service.find_project(p))?
            .ok_or_else(|| Failure(format!("there is no project {p:?}"), 1))
    }
}

fn print(json: bool, value: serde_json::Value, text: impl FnOnce() -> String) {
    let out = if json { value.to_string() } else { text() };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{out}");
    let _ = stdout.flush();
}

fn run(data: &Path, database: Option<&str>, json: bool, command: Command) -> Result<(), Failure> {
    match command {
        Command::Serve {
            listen,
            admin_token,
            public_url,
            max_connections,
            header_timeout,
            body_timeout,
            trusted_proxies,
        } => {
            let limits = ConnectionLimits { max_connections, header_timeout, body_timeout };
            serve(data, database, &listen, admin_token, public_url, limits, trusted_proxies)
        }
        #[cfg(feature = "demo")]
        Command::Demo { listen, devices, rounds, per_round, exit_after_rounds } => demo::run(
            data,
            database,
            demo::DemoOptions { listen, devices, rounds, per_round, exit_after_rounds },
        ),
        Command::Restored => {
            let admin = Admin::open(data, database)?;
            let epoch = admin.run(admin.service.renew_epoch())?;
            print(json, json!({ "epoch": epoch }), || {
                format!(
                    "new epoch {epoch}: on their next sync, devices send their whole history again and pull from the start"
                )
            });
            Ok(())
        }
        Command::Migrate { to } => {
            if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
                return Err(Failure("--to takes a postgres:// URL".into(), 2));
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure(format!("cannot start the runtime: {e}"), 1))?;
            let report = runtime.block_on(tejido_server::storage::copy::sqlite_to_postgres(
                &data.join("tejido.db"),
                &data.join("blobs"),
                &to,
            ))?;
            print(json, serde_json::to_value(&report).unwrap_or_default(), || {
                let mut out =
                    String::from("table              source rows  target rows  checksum (both sides)\n");
                for t in &report.tables {
                    out.push_str(&format!(
                        "{:<18} {:>11}  {:>11}  {}\n",
                        t.table, t.source_rows, t.target_rows, t.target_sha256
                    ));
                }
                out.push_str(&format!(
                    "migrated: every table matches. {} upload(s) in progress were not copied; their devices start them again.\n                     Now serve with --database (or TEJIDO_DATABASE_URL) set to the target.",
                    report.uploads_not_copied
                ));
                out
            });
            Ok(())
        }
        Command::Project(ProjectCommand::Create { name }) => {
            let admin = Admin::open(data, database)?;
            let p = admin.run(admin.service.create_project(&name, tejido_server::now_ms()))?;
            print(json, json!({ "id": p.id, "name": p.name }), || {
                format!("created project {} ({})", p.name, p.id)
            });
            Ok(())
        }
        Command::Project(ProjectCommand::List) => {
            let admin = Admin::open(data, database)?;
            let projects = admin.run(admin.service.list_projects())?;
            let list: Vec<_> = projects.iter().map(|p| json!({ "id": p.id, "name": p.name })).collect();
            print(json, json!({ "projects": list }), || {
                projects.iter().map(|p| format!("{}  {}", p.id, p.name)).collect::<Vec<_>>().join("\n")
            });
            Ok(())
        }
        Command::Enroll { project: p, role, uses, expires, server } => {
            let admin = Admin::open(data, database)?;
            let p = admin.project(&p)?;
            if uses == 0 {
                return Err(Failure("--uses must be at least 1".into(), 2));
            }
            let now = tejido_server::now_ms();
            let expires_ms = tejido_server::service::enroll::Expiry::parse(expires.as_deref(), now)
                .map_err(|m| Failure(m, 2))?
                .resolve(role, now);
            let code = new_code();
            admin.run(admin.service.create_enrollment_code(&NewEnrollmentCode {
                code_hash: hash_code(&code),
                project: p.id,
                role,
                uses,
                expires_ms,
                now_ms: tejido_server::now_ms(),
            }))?;
            let link = enrollment_link(&server, &code);
            print(
                json,
                json!({ "code": code, "link": link, "project": p.id, "role": role.as_str(), "uses": uses, "expires_ms": expires_ms }),
                || {
                    let qr = qrcode::QrCode::new(link.as_bytes())
                        .map(|q| {
                            q.render::<qrcode::render::unicode::Dense1x2>()
                                .dark_color(qrcode::render::unicode::Dense1x2::Light)
                                .light_color(qrcode::render::unicode::Dense1x2::Dark)
                                .quiet_zone(true)
                                .build()
                        })
                        .unwrap_or_default();
                    format!(
                        "enrollment code for a {} in {}: {code}\n(usable {uses} time(s){})\nsetup link: {link}\n{qr}",
                        role.as_str(),
                        p.name,
                        expires_ms.map(|_| format!(", expires in {}", expires.as_deref().unwrap_or(""))).unwrap_or_default()
                    )
                },
            );
            Ok(())
        }
        Command::Devices(DevicesCommand::List { project: p }) => {
            let admin = Admin::open(data, database)?;
            let p = admin.project(&p)?;
            let devices = admin.run(admin.service.list_devices(p.id))?;
            print(json, json!({ "devices": devices }), || {
                if devices.is_empty() {
                    return format!("no devices in {}", p.name);
                }
                devices
                    .iter()
                    .map(|d| {
                        format!(
                            "{}  {:<11}  {}{}{}",
                            d.id,
                            d.role.as_str(),
                            d.name.as_deref().unwrap_or("-"),
                            if d.is_revoked() { "  (revoked)" } else { "" },
                            if d.far_future_ms.is_some() { "  (clock far ahead)" } else { "" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
        Command::Devices(DevicesCommand::Revoke { device }) => {
            let admin = Admin::open(data, database)?;
            let id = uuid::Uuid::try_parse(&device)
                .map_err(|_| Failure(format!("{device:?} is not a device id"), 2))?;
            let revoked = admin.run(admin.service.revoke_device(id, tejido_server::now_ms()))?;
            print(json, json!({ "device": id, "revoked": revoked }), || {
                if revoked {
                    format!("revoked device {id}")
                } else {
                    format!("device {id} was already revoked")
                }
            });
            Ok(())
        }
        Command::Form(FormCommand::Publish { project: p, file, roles, media }) => {
            let (admin, blobs) = Admin::open_with_blobs(data, database)?;
            let p = admin.project(&p)?;
            let (form_id, version, form) = load_form(&file)?;
            let media = store_media(&admin, blobs.as_ref(), p.id, &file, &form, &media)?;
            let media_names: Vec<String> = media.iter().map(|m| m.name.clone()).collect();
            let outcome = admin.run(admin.service.publish_form(&PublishForm {
                project: p.id,
                form_id: form_id.clone(),
                version: version.clone(),
                roles: roles.clone(),
                form,
                media,
                now_ms: tejido_server::now_ms().max(0) as u64,
            }))?;
            // Indicator definitions beside the form (`<name>.indicators.json`) come with it.
            let beside = file.with_extension("indicators.json");
            let indicators = beside.exists();
            if indicators {
                let text = std::fs::read_to_string(&beside)
                    .map_err(|e| Failure(format!("cannot read {}: {e}", beside.display()), 1))?;
                admin
                    .run(admin.service.set_indicators(p.id, &form_id, &text))
                    .map_err(|Failure(m, c)| Failure(format!("{}: {m}", beside.display()), c))?;
            }
            let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            print(
                json,
                json!({ "doc": outcome.doc, "form_id": form_id, "version": version, "roles": roles, "published": outcome.published, "indicators": indicators, "media": media_names }),
                || {
                    let mut out = if outcome.published {
                        format!("published {form_id} version {version} to {} in {}", roles.join(", "), p.name)
                    } else {
                        format!("{form_id} version {version} was already published; nothing changed")
                    };
                    if !media_names.is_empty() {
                        out.push_str(&format!("\nmedia files: {}", media_names.join(", ")));
                    }
                    if indicators {
                        out.push_str(&format!("\nindicators from {} kept for {form_id}", beside.display()));
                    }
                    out
                },
            );
            Ok(())
        }
        Command::Form(FormCommand::Indicators { project: p, form: form_id, file }) => {
            let admin = Admin::open(data, database)?;
            let p = admin.project(&p)?;
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure(format!("cannot read {}: {e}", file.display()), 1))?;
            admin.run(admin.service.set_indicators(p.id, &form_id, &text))?;
            print(json, json!({ "form_id": form_id, "project": p.id }), || {
                format!("indicators kept for {form_id} in {}", p.name)
            });
            Ok(())
        }
        Command::Form(FormCommand::Check { .. } | FormCommand::Preview { .. }) => Ok(()),
        Command::User(UserCommand::Add { email, project, role, password_stdin }) => {
            let admin = Admin::open(data, database)?;
            let p = admin.project(&project)?;
            let normalized = tejido_server::service::accounts::normalize_email(&email)?;
            let exists = admin.run(admin.service.list_users())?.iter().any(|a| a.user.email == normalized);
            let password = if exists { None } else { Some(read_password(password_stdin)?) };
            let (user, created) = admin.run(admin.service.add_user(
                &email,
                password.as_deref(),
                p.id,
                role,
                tejido_server::now_ms(),
            ))?;
            print(
                json,
                json!({ "email": user.email, "project": p.id, "role": role.as_str(), "created": created }),
                || {
                    if created {
                        format!("added {} to {} as {}", user.email, p.name, role.as_str())
                    } else {
                        format!("{} (an existing user) is now {} in {}", user.email, role.as_str(), p.name)
                    }
                },
            );
            Ok(())
        }
        Command::Export { project, form, format, labels, lang, out } => {
            // With the blobs: the choices of `…_from_file` questions come from their files.
            let (admin, _) = Admin::open_with_blobs(data, database)?;
            let p = admin.project(&project)?;
            let format = tejido_server::export::Format::parse(&format)
                .ok_or_else(|| Failure(format!("{format:?} is not a format: csv, xlsx or geojson"), 2))?;
            let headers = if labels {
                tejido_server::export::Headers::Labels
            } else {
                tejido_server::export::Headers::Names
            };
            let options = tejido_server::export::ExportOptions { format, headers, lang, geopoint: None };
            let partial = out.with_extension("partial");
            let file = std::fs::File::create(&partial)
                .map_err(|e| Failure(format!("cannot create {}: {e}", partial.display()), 1))?;
            let result = admin.run(admin.service.export(p.id, &form, options, std::io::BufWriter::new(file)));
            let summary = match result {
                Ok(s) => s,
                Err(e) => {
                    let _ = std::fs::remove_file(&partial);
                    return Err(e);
                }
            };
            std::fs::rename(&partial, &out)
                .map_err(|e| Failure(format!("cannot write {}: {e}", out.display()), 1))?;
            print(
                json,
                json!({ "out": out, "submissions": summary.submissions, "repeat_rows": summary.repeat_rows }),
                || {
                    format!(
                        "exported {} submissions ({} repeat rows) to {}",
                        summary.submissions,
                        summary.repeat_rows,
                        out.display()
                    )
                },
            );
            Ok(())
        }
        Command::User(UserCommand::List) => {
            let admin = Admin::open(data, database)?;
            let accounts = admin.run(admin.service.list_users())?;
            let projects = admin.run(admin.service.list_projects())?;
            let name = |id: uuid::Uuid| {
                projects.iter().find(|p| p.id == id).map_or_else(|| id.to_string(), |p| p.name.clone())
            };
            let list: Vec<_> = accounts
                .iter()
                .map(|a| {
                    let m: Vec<_> = a
                        .memberships
                        .iter()
                        .map(|m| json!({ "project": m.project, "role": m.role.as_str() }))
                        .collect();
                    json!({ "email": a.user.email, "memberships": m })
                })
                .collect();
            print(json, json!({ "users": list }), || {
                accounts
                    .iter()
                    .map(|a| {
                        let m: Vec<String> = a
                            .memberships
                            .iter()
                            .map(|m| format!("{} ({})", name(m.project), m.role.as_str()))
                            .collect();
                        format!("{}  {}", a.user.email, m.join(", "))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
        Command::User(UserCommand::Remove { email }) => {
            let admin = Admin::open(data, database)?;
            if !admin.run(admin.service.remove_user(&email))? {
                return Err(Failure(format!("there is no user {email:?}"), 1));
            }
            print(json, json!({ "removed": email }), || {
                format!("removed {email}; their sessions have ended")
            });
            Ok(())
        }
        Command::User(UserCommand::Passwd { email, password_stdin }) => {
            let admin = Admin::open(data, database)?;
            let password = read_password(password_stdin)?;
            admin.run(admin.service.set_password(&email, &password))?;
            print(json, json!({ "email": email }), || {
                format!("password set for {email}; their sessions have ended")
            });
            Ok(())
        }
    }
}

/// Reads a form for publishing: an XLSForm (.xlsx, .xls, .ods), imported with every problem
/// reported, or the form model already serialised as JSON.
/// Keeps the media files a form needs as blobs: those given with `--media`, and the others
/// from `<form name>-media/` beside the form. Which files the form may carry is the service's
/// rule; this only finds and stores them.
fn store_media(
    admin: &Admin,
    blobs: &dyn BlobBytes,
    project: uuid::Uuid,
    file: &Path,
    form: &serde_json::Value,
    given: &[PathBuf],
) -> Result<Vec<tejido_server::storage::MediaFile>, Failure> {
    use tejido_core::form::media::{needed_media, MAX_MEDIA_BYTES};
    let mut paths: Vec<(String, PathBuf)> = Vec::new();
    for path in given {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Failure(format!("{} is not a file name", path.display()), 2))?;
        paths.push((name.to_owned(), path.clone()));
    }
    let needed = serde_json::from_value::<Form>(form.clone()).map(|f| needed_media(&f)).unwrap_or_default();
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("form");
    let folder = file.with_file_name(format!("{stem}-media"));
    for name in needed {
        if !paths.iter().any(|(n, _)| *n == name) && folder.join(&name).is_file() {
            paths.push((name.clone(), folder.join(&name)));
        }
    }
    // The service's rule on which files the version carries, checked by name and size before
    // any byte is stored, so that a refused list leaves no blob behind.
    let mut listed: Vec<(&str, u64)> = Vec::with_capacity(paths.len());
    for (name, path) in &paths {
        let size = std::fs::metadata(path)
            .map_err(|e| Failure(format!("cannot read media file {}: {e}", path.display()), 1))?
            .len();
        listed.push((name.as_str(), size));
    }
    tejido_server::service::ops::check_form_media(form, &listed)?;
    // Published by the server, not a device: the nil id names the upload in progress.
    let owner = tejido_server::blobs::UploadOwner { project, device: uuid::Uuid::nil() };
    let mut out = Vec::new();
    for (name, path) in paths {
        let (sha256, size) = admin
            .runtime
            .block_on(tejido_server::blobs::store_file(blobs, owner, &path, MAX_MEDIA_BYTES as u64))
            .map_err(|e| Failure(format!("cannot keep media file {}: {e}", path.display()), 1))?;
        out.push(tejido_server::storage::MediaFile { name, sha256, size });
    }
    Ok(out)
}

fn load_form(file: &Path) -> Result<(String, String, serde_json::Value), Failure> {
    let is_json = file.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let form: Form = if is_json {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Failure(format!("cannot read {}: {e}", file.display()), 1))?;
        serde_json::from_str(&text).map_err(|e| {
            Failure(
                format!(
                    "{} is not a Tejido form in JSON (line {}, column {})",
                    file.display(),
                    e.line(),
                    e.column()
                ),
                1,
            )
        })?
    } else {
        import_xlsform(file)
            .map_err(|errors| Failure(format!("{} has errors:\n{errors}", file.display()), 1))?
    };
    // The one check every form passes, however it arrives (the import runs it too).
    form.validate().map_err(|e| Failure(format!("{} cannot be published: {e}", file.display()), 1))?;
    let id = form.settings.form_id.clone();
    let version = form.settings.version.clone();
    if id.is_empty() || version.is_empty() {
        return Err(Failure(
            "a form needs a form_id and a version (settings sheet) to be published".into(),
            1,
        ));
    }
    let value =
        serde_json::to_value(&form).map_err(|e| Failure(format!("cannot encode the form: {e}"), 1))?;
    Ok((id, version, value))
}

fn serve(
    data: &Path,
    database: Option<&str>,
    listen: &str,
    admin_token: Option<String>,
    public_url: Option<String>,
    limits: ConnectionLimits,
    trusted_proxies: Vec<std::net::IpAddr>,
) -> Result<(), Failure> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TEJIDO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start the runtime: {e}"), 1))?;
    runtime.block_on(async move {
        let (storage, blobs) = open_deployment(data, database).await?;
        let mut state = AppState::new(Service::new(storage).await?, blobs)
            .with_body_timeout(limits.body_timeout)
            .with_trusted_proxies(trusted_proxies);
        if let Some(t) = admin_token.filter(|t| !t.is_empty()) {
            state = state.with_admin_token(&t);
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Failure(format!("cannot listen on {listen}: {e}"), 1))?;
        let addr = listener.local_addr().map_err(|e| Failure(format!("cannot listen: {e}"), 1))?;
        let state = state.with_public_url(public_url.unwrap_or_else(|| format!("http://{addr}")));
        {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "listening on http://{addr}");
            let _ = stdout.flush();
        }
        tracing::info!(%addr, data = %data.display(), "serving");
        tejido_server::serve::serve(listener, router(state), limits, shutdown_signal())
            .await
            .map_err(|e| Failure(format!("the server failed: {e}"), 1))?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Ctrl-C or SIGTERM: stop accepting, finish the requests in flight, then exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
