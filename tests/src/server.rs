//! The real `tejido-server` binary for end-to-end tests: located next to the test executable
//! (built once per test process with `cargo build -p tejido-server`, honouring
//! `CARGO_TARGET_DIR`), started on `127.0.0.1:0` in a temporary data directory, administered
//! through its CLI with `--json`, and killed with SIGKILL and restarted on demand.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

/// The admin token every test server is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// The path of the `tejido-server` binary, building it first (once per process). Set
/// `TEJIDO_SERVER_BIN` to use a binary built elsewhere.
pub fn server_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("TEJIDO_SERVER_BIN") {
            return PathBuf::from(p);
        }
        // The test executable lives in <target>/<profile>/deps/ (or <target>/<profile>/ for a
        // binary); the server goes in <target>/<profile>/.
        let exe = std::env::current_exe().expect("the test executable's path");
        let mut dir = exe.parent().expect("a directory").to_path_buf();
        if dir.file_name().is_some_and(|n| n == "deps" || n == "examples") {
            dir.pop();
        }
        let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_owned();
        let target = dir.parent().expect("the target directory").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "tejido-server", "--bin", "tejido-server"]);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        cmd.env("CARGO_TARGET_DIR", &target);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building tejido-server failed");
        let bin = dir.join(format!("tejido-server{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
}

/// A running `tejido-server serve` on 127.0.0.1 with its own data directory.
pub struct TestServer {
    data: PathBuf,
    /// `--database`, when the server runs on PostgreSQL.
    database: Option<String>,
    _tmp: Option<tempfile::TempDir>,
    child: Option<Child>,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// Starts a server in a fresh temporary data directory: on SQLite there, or on a fresh
    /// PostgreSQL database with `TEJIDO_TEST_BACKEND=postgres`.
    pub fn start() -> TestServer {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let data = tmp.path().join("server");
        let mut s = TestServer::start_in(&data, None);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on an existing data directory, on `addr` if given.
    pub fn start_in(data: &Path, addr: Option<SocketAddr>) -> TestServer {
        let database = tejido_server::testing::postgres_requested()
            .then(tejido_server::testing::fresh_database_blocking);
        TestServer::start_on(data, addr, database)
    }

    /// Starts a server on `data`, with its database at `database` (PostgreSQL) or, for `None`,
    /// SQLite in `data`.
    pub fn start_on(data: &Path, addr: Option<SocketAddr>, database: Option<String>) -> TestServer {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (child, addr) = spawn_serve(data, database.as_deref(), addr, &log);
        TestServer { data: data.to_path_buf(), database, _tmp: None, child: Some(child), addr, log }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether the server runs on PostgreSQL (`TEJIDO_TEST_BACKEND=postgres`).
    pub fn on_postgres(&self) -> bool {
        self.database.is_some()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server (if it runs) and starts it again on the same data directory, on the
    /// same address when it is free.
    pub fn restart(&mut self) {
        self.kill();
        let mut last = None;
        for _ in 0..50 {
            match try_spawn_serve(&self.data, self.database.as_deref(), Some(self.addr), &self.log) {
                Ok((child, addr)) => {
                    self.child = Some(child);
                    self.addr = addr;
                    return;
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the server did not restart on {}: {last:?}", self.addr);
    }

    /// The server's peak resident memory (VmHWM) in bytes, from /proc.
    pub fn peak_memory_bytes(&self) -> Option<u64> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// CPU seconds (user and system) the server process has used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        crate::cpu_seconds(self.pid()?)
    }

    /// The last lines the server logged (stderr), for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log[log.len().saturating_sub(n)..].join("\n")
    }

    /// Runs an admin command with `--json` against this server's data directory and returns
    /// its JSON answer; panics if it fails.
    pub fn cli(&self, args: &[&str]) -> Value {
        let mut cmd = Command::new(server_binary());
        if let Some(db) = &self.database {
            cmd.arg("--database").arg(db);
        }
        let out =
            cmd.arg("--data").arg(&self.data).arg("--json").args(args).output().expect("tejido-server runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "tejido-server {args:?} failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("tejido-server {args:?} printed no JSON ({e}): {stdout}"))
    }

    /// Runs an admin command that must fail, and returns what it printed on stderr.
    pub fn cli_fails(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(server_binary());
        if let Some(db) = &self.database {
            cmd.arg("--database").arg(db);
        }
        let out = cmd.arg("--data").arg(&self.data).args(args).output().expect("tejido-server runs");
        assert!(
            !out.status.success(),
            "tejido-server {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Adds a coordinators' web-app account to a project (`user add --password-stdin`, the way
    /// a script does it).
    pub fn add_user(&self, email: &str, project: Uuid, role: &str, password: &str) -> Value {
        use std::io::Write as _;
        let mut cmd = Command::new(server_binary());
        if let Some(db) = &self.database {
            cmd.arg("--database").arg(db);
        }
        let project = project.to_string();
        let args = ["user", "add", email, "--project", &project, "--role", role, "--password-stdin"];
        let mut child = cmd
            .arg("--data")
            .arg(&self.data)
            .arg("--json")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tejido-server runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("the password is sent");
        let out = child.wait_with_output().expect("tejido-server ends");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "tejido-server {args:?} failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("tejido-server {args:?} printed no JSON ({e}): {stdout}"))
    }

    /// Creates a project; returns its id.
    pub fn create_project(&self, name: &str) -> Uuid {
        let v = self.cli(&["project", "create", name]);
        v["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).expect("a project id")
    }

    /// Creates an enrollment code usable `uses` times; returns the code and the setup link
    /// (naming `server`, e.g. a proxy in front of this server).
    pub fn enrollment_code(&self, project: Uuid, role: &str, uses: u32, server: &str) -> (String, String) {
        let v = self.cli(&[
            "enroll",
            "--project",
            &project.to_string(),
            "--role",
            role,
            "--uses",
            &uses.to_string(),
            "--server",
            server,
        ]);
        (v["code"].as_str().expect("a code").to_owned(), v["link"].as_str().expect("a link").to_owned())
    }

    /// Revokes a device.
    pub fn revoke(&self, device: Uuid) -> Value {
        self.cli(&["devices", "revoke", &device.to_string()])
    }

    /// The devices of a project, as the CLI lists them.
    pub fn devices(&self, project: Uuid) -> Value {
        self.cli(&["devices", "list", "--project", &project.to_string()])
    }

    /// An admin GET on the HTTP API (e.g. `/v1/projects/<id>/conflicts`).
    pub async fn admin_get(&self, path: &str) -> Value {
        let body = self.get_bytes(path, ADMIN_TOKEN).await;
        serde_json::from_slice(&body).expect("a JSON answer")
    }

    /// A GET on the HTTP API with a bearer token (the admin's or a device's); panics unless it
    /// succeeds, and returns the body.
    pub async fn get_bytes(&self, path: &str, token: &str) -> Vec<u8> {
        let resp = reqwest::Client::new()
            .get(format!("{}{path}", self.url()))
            .header(tejido_core::sync::wire::PROTOCOL_HEADER, tejido_core::sync::wire::PROTOCOL_VERSION)
            .bearer_auth(token)
            .send()
            .await
            .expect("the request is answered");
        let status = resp.status();
        let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        assert!(status.is_success(), "GET {path}: {status} {}", String::from_utf8_lossy(&body));
        body
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        // A test that fails while this server runs shows what the server logged (warnings and
        // errors by default: no answer ever appears in them).
        if std::thread::panicking() {
            eprintln!("--- the server's last log lines ---\n{}", self.log_tail(40));
        }
    }
}

fn spawn_serve(
    data: &Path,
    database: Option<&str>,
    addr: Option<SocketAddr>,
    log: &Arc<Mutex<Vec<String>>>,
) -> (Child, SocketAddr) {
    try_spawn_serve(data, database, addr, log).unwrap_or_else(|e| panic!("the server did not start: {e}"))
}

fn try_spawn_serve(
    data: &Path,
    database: Option<&str>,
    addr: Option<SocketAddr>,
    log: &Arc<Mutex<Vec<String>>>,
) -> Result<(Child, SocketAddr), String> {
    let listen = addr.map(|a| a.to_string()).unwrap_or_else(|| "127.0.0.1:0".into());
    let mut cmd = Command::new(server_binary());
    if let Some(db) = database {
        cmd.arg("--database").arg(db);
    }
    let mut child = cmd
        .arg("--data")
        .arg(data)
        .args(["serve", "--listen", &listen])
        .env("TEJIDO_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TEJIDO_LOG", std::env::var("TEJIDO_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run tejido-server: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("listening on http://") {
                if let (Some(tx), Ok(a)) = (tx.take(), rest.trim().parse::<SocketAddr>()) {
                    let _ = tx.send(a);
                }
            }
        }
    });
    let log2 = log.clone();
    let echo = std::env::var_os("TEJIDO_TEST_SERVER_LOG").is_some();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.by_ref().take(64 * 1024).read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    if echo {
                        eprintln!("[server] {line}");
                    }
                    let mut log = log2.lock().unwrap_or_else(|p| p.into_inner());
                    if log.len() > 2000 {
                        log.drain(..1000);
                    }
                    log.push(line);
                }
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(addr) => Ok((child, addr)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = log.lock().unwrap_or_else(|p| p.into_inner());
            Err(format!("no `listening on` line; log: {}", log.join("\n")))
        }
    }
}
