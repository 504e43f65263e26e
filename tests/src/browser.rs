//! A real headless Chromium for browser tests, driven step by step: `web-tests/driver.mjs` runs
//! Debian's Chromium through playwright-core and executes one JSON command per line; this
//! module spawns it, sends commands and waits (with a deadline) for each answer. Any failure
//! panics with the command, the driver's error and the driver's stderr.
//!
//! What it needs, installed by `scripts/setup`: `node`, Debian's `chromium` at
//! `/usr/bin/chromium` (or `TEJIDO_CHROMIUM`) and `web-tests/node_modules` (`npm ci`). A missing
//! one is a failure with a clear message, never a skipped test.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// How long one command may take in the driver (Playwright's own timeout); the test waits a
/// little longer than that for the answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

/// The project's `web-tests/` folder (the driver and its `node_modules`).
pub fn web_tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web-tests")
}

/// The Chromium binary the driver launches.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("TEJIDO_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// A folder for a test's artifacts under the target directory (`<target>/<name>`), made
/// fresh: the target directory is found from the test executable, as the server's binary is.
pub fn artifacts_dir(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps" || n == "examples") {
        dir.pop();
    }
    let target = dir.parent().expect("the target directory").to_path_buf();
    let out = target.join(name);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("the artifacts folder is made");
    out
}

/// Panics with a clear message when something the driver needs is missing.
fn check_installed() {
    let setup = "run scripts/setup, which installs it";
    let node = std::env::var("TEJIDO_NODE").unwrap_or_else(|_| "node".into());
    let ok = Command::new(&node).arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(ok, "browser tests: Node.js ({node}) is missing: {setup}");
    let chromium = chromium_path();
    assert!(
        chromium.exists(),
        "browser tests: Chromium is missing at {} ({setup}: apt-get install -y chromium)",
        chromium.display()
    );
    let module = web_tests_dir().join("node_modules/playwright-core/package.json");
    assert!(
        module.exists(),
        "browser tests: playwright-core is not installed in {} ({setup}: npm ci in web-tests)",
        web_tests_dir().join("node_modules").display()
    );
}

/// One headless Chromium page.
pub struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    answers: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    next_id: u64,
    screenshots: PathBuf,
    shots: usize,
    /// Every screenshot taken, in order.
    pub taken: Vec<PathBuf>,
}

impl Browser {
    /// Launches the driver and Chromium; screenshots go to `screenshots`.
    pub fn launch(screenshots: &Path) -> Browser {
        check_installed();
        let node = std::env::var("TEJIDO_NODE").unwrap_or_else(|_| "node".into());
        let mut child = Command::new(node)
            .arg(web_tests_dir().join("driver.mjs"))
            .current_dir(web_tests_dir())
            .env("TEJIDO_CHROMIUM", chromium_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("browser tests: node runs the driver");
        let stdout = child.stdout.take().expect("the driver's stdout");
        let stderr = child.stderr.take().expect("the driver's stderr");
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.by_ref().take(64 * 1024).read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let mut log = log2.lock().unwrap_or_else(|p| p.into_inner());
                        if log.len() > 200 {
                            log.drain(..100);
                        }
                        log.push(String::from_utf8_lossy(&buf).trim_end().to_owned());
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        let mut browser = Browser {
            child,
            stdin,
            answers,
            stderr: log,
            next_id: 1,
            screenshots: screenshots.to_path_buf(),
            shots: 0,
            taken: Vec::new(),
        };
        let ready = browser.answer(Duration::from_secs(60), "the browser's start");
        let ready: Value = serde_json::from_str(&ready).unwrap_or(Value::Null);
        if ready["ready"] != json!(true) {
            panic!("browser tests: the browser did not start: {}{}", ready["error"], browser.stderr_tail());
        }
        browser
    }

    fn stderr_tail(&self) -> String {
        let log = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        if log.is_empty() {
            String::new()
        } else {
            format!("\ndriver stderr:\n{}", log[log.len().saturating_sub(20)..].join("\n"))
        }
    }

    fn answer(&mut self, wait: Duration, what: &str) -> String {
        match self.answers.recv_timeout(wait) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("browser: no answer to {what} in {wait:?}{}", self.stderr_tail())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                panic!("browser: the driver ended ({status:?}) before answering {what}{}", self.stderr_tail())
            }
        }
    }

    /// Sends one command and returns its answer: `Ok(value)` or the driver's error.
    pub fn try_call(&mut self, mut cmd: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        cmd["id"] = json!(id);
        cmd["timeout_ms"] = json!(COMMAND_TIMEOUT.as_millis() as u64);
        let what = cmd.to_string();
        let stdin = self.stdin.as_mut().expect("the driver's stdin is open");
        writeln!(stdin, "{what}").and_then(|()| stdin.flush()).unwrap_or_else(|e| {
            panic!("browser: cannot send {what}: {e}");
        });
        let line = self.answer(COMMAND_TIMEOUT + Duration::from_secs(10), &what);
        let answer: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("browser: {what}: not JSON ({e}): {line}"));
        assert_eq!(answer["id"], json!(id), "browser: an answer out of order to {what}: {line}");
        if answer["ok"] == json!(true) {
            Ok(answer["value"].clone())
        } else {
            Err(answer["error"].as_str().unwrap_or("(no message)").to_owned())
        }
    }

    /// Sends one command; panics if it fails.
    pub fn call(&mut self, cmd: Value) -> Value {
        let what = cmd.to_string();
        self.try_call(cmd).unwrap_or_else(|e| panic!("browser: {what} failed: {e}"))
    }

    /// Opens `url` and waits for it to load; returns the HTTP status.
    pub fn goto(&mut self, url: &str) -> u64 {
        self.call(json!({"cmd": "goto", "url": url}))["status"].as_u64().unwrap_or(0)
    }

    pub fn fill(&mut self, selector: &str, value: &str) {
        self.call(json!({"cmd": "fill", "selector": selector, "value": value}));
    }

    pub fn select(&mut self, selector: &str, value: &str) {
        self.call(json!({"cmd": "select", "selector": selector, "value": value}));
    }

    /// Clicks something that loads a page (a link, a form's button) and waits for that page.
    pub fn click_and_load(&mut self, selector: &str) {
        self.call(json!({"cmd": "click", "selector": selector, "navigates": true}));
    }

    pub fn click(&mut self, selector: &str) {
        self.call(json!({"cmd": "click", "selector": selector}));
    }

    /// Waits until `selector` is visible.
    pub fn wait(&mut self, selector: &str) {
        self.call(json!({"cmd": "wait", "selector": selector}));
    }

    /// Waits until nothing matches `selector`.
    pub fn wait_gone(&mut self, selector: &str) {
        self.call(json!({"cmd": "wait", "selector": selector, "state": "detached"}));
    }

    /// The text of the first element matching `selector` (waiting for it).
    pub fn text(&mut self, selector: &str) -> String {
        self.call(json!({"cmd": "text", "selector": selector})).as_str().unwrap_or_default().to_owned()
    }

    /// How many elements match `selector` now.
    pub fn count(&mut self, selector: &str) -> usize {
        self.call(json!({"cmd": "count", "selector": selector})).as_u64().unwrap_or(0) as usize
    }

    pub fn url(&mut self) -> String {
        self.call(json!({"cmd": "url"})).as_str().unwrap_or_default().to_owned()
    }

    /// A screenshot of the whole page, numbered in order (`01-login.png`); returns its path.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        self.shots += 1;
        let path = self.screenshots.join(format!("{:02}-{name}.png", self.shots));
        self.call(json!({"cmd": "screenshot", "path": path}));
        self.taken.push(path.clone());
        path
    }

    /// Clicks a download link and saves what it sends to `path`; returns the suggested name.
    pub fn download(&mut self, selector: &str, path: &Path) -> String {
        self.call(json!({"cmd": "download", "selector": selector, "path": path}))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing stdin makes the driver close the browser and exit; kill it if it lingers.
        if !std::thread::panicking() {
            let _ = self.try_close();
        }
        self.stdin = None;
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn try_close(&mut self) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("closed")?;
        let id = self.next_id;
        writeln!(stdin, "{}", json!({"id": id, "cmd": "close"})).map_err(|e| e.to_string())?;
        stdin.flush().map_err(|e| e.to_string())?;
        self.answers.recv_timeout(Duration::from_secs(10)).map(|_| ()).map_err(|e| e.to_string())
    }
}
