//! A throwaway PostgreSQL cluster for tests: Debian's PostgreSQL binaries (installed by
//! `scripts/setup`), a data folder and socket under a temporary folder, a free port on
//! 127.0.0.1, started once per test process and removed when that process exits (a watchdog
//! shell stops the cluster and deletes the folder). Each test takes a fresh database.
//!
//! No test skips when PostgreSQL is missing: [`cluster`] fails with what to install.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    /// The PostgreSQL programs (`pg_dump`, `pg_restore`, …).
    pub bin: PathBuf,
}

/// The PostgreSQL programs' folder: `TEJIDO_PG_BIN`, else the newest of
/// `/usr/lib/postgresql/*/bin`, else wherever `initdb` is on the `PATH`.
fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("TEJIDO_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).find(|p| p.join("initdb").exists()).ok_or_else(|| {
        "PostgreSQL is not installed (no initdb): run scripts/setup, which installs it".to_owned()
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command that runs as the `postgres` user when we are root (PostgreSQL refuses root).
fn as_owner(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| format!("no free port: {e}"))
}

fn start() -> Result<Cluster, String> {
    let bin = bin_dir()?;
    let root = is_root();
    let dir =
        std::env::temp_dir().join(format!("tejido-pg-{}-{:08x}", std::process::id(), rand::random::<u32>()));
    let data = dir.join("data");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if root {
        let ok = Command::new("chown").arg("postgres:").arg(&dir).status().is_ok_and(|s| s.success());
        if !ok {
            return Err("cannot give the cluster's folder to the postgres user (is the postgresql package installed?)".into());
        }
    }
    let out = as_owner(&bin.join("initdb"), root)
        .arg("-D")
        .arg(&data)
        .args(["-U", "tejido", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"])
        .output()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let port = free_port()?;
    let postgres = bin.join("postgres");
    let owner = if root { "setpriv --reuid=postgres --regid=postgres --init-groups " } else { "" };
    // The watchdog: runs the server while this test process lives, then stops it and removes
    // the folder, however the tests end.
    let script = format!(
        "{owner}\"$PG\" -D \"$D/data\" -k \"$D\" -p {port} -h 127.0.0.1 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=200 >\"$D/log\" 2>&1 & pg=$!
         while kill -0 $WATCH 2>/dev/null && kill -0 $pg 2>/dev/null; do sleep 0.5; done
         kill -INT $pg 2>/dev/null; wait $pg; rm -rf \"$D\""
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("PG", &postgres)
        .env("D", &dir)
        .env("WATCH", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start postgres: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "tejido", "-q"])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Ok(Cluster { port, dir, bin });
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            return Err(format!("postgres did not start within a minute:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The cluster of this test process, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(start) {
        Ok(c) => c,
        Err(e) => panic!("the test PostgreSQL cluster: {e}"),
    }
}

impl Cluster {
    /// The URL of a database of this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://tejido@127.0.0.1:{}/{database}", self.port)
    }

    /// A new, empty database, and its URL.
    pub async fn fresh_database(&self) -> String {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test cluster: {e}"));
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
        drop(client);
        let _ = task.await;
        self.url(&name)
    }
}

/// Which backend the end-to-end tests run on: `TEJIDO_TEST_BACKEND=postgres` for a fresh
/// database in the throwaway cluster, else SQLite (`scripts/test` runs them both ways).
pub fn postgres_requested() -> bool {
    match std::env::var("TEJIDO_TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("TEJIDO_TEST_BACKEND={other:?}: use sqlite or postgres"),
    }
}

/// A fresh database's URL, from synchronous code (a thread with its own runtime, so it works
/// inside an async test too).
pub fn fresh_database_blocking() -> String {
    std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("no runtime for the test database: {e}"));
        runtime.block_on(cluster().fresh_database())
    })
    .join()
    .unwrap_or_else(|_| panic!("creating the test database failed"))
}
