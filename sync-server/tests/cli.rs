//! The binary: admin commands with `--json` (the data option before or after the subcommand),
//! `serve` printing its address for port 0, and a graceful stop on SIGTERM.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tejido-server"))
}

fn json(cmd: &mut Command) -> Value {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn admin_commands_print_json_and_serve_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("deploy");
    let project = json(bin().arg("--data").arg(&data).args(["--json", "project", "create", "San Miguelito"]));
    let id = project["id"].as_str().unwrap().to_owned();
    // --data after the subcommand, and through the environment.
    let code = json(
        bin()
            .args([
                "enroll",
                "--project",
                "San Miguelito",
                "--role",
                "youth",
                "--uses",
                "3",
                "--json",
                "--data",
            ])
            .arg(&data),
    );
    assert!(code["code"].as_str().unwrap().len() >= 12);
    assert!(code["link"].as_str().unwrap().starts_with("tejido://enroll?"));
    let devices = json(bin().env("TEJIDO_DATA", &data).args(["devices", "list", "--project", &id, "--json"]));
    assert_eq!(devices["devices"].as_array().unwrap().len(), 0);
    // Text mode shows the QR code.
    let out = bin()
        .arg("--data")
        .arg(&data)
        .args(["enroll", "--project", &id, "--role", "enumerator"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains('█'));
    // Mistakes are reported, not panicked on.
    let out = bin()
        .arg("--data")
        .arg(&data)
        .args(["enroll", "--project", "nope", "--role", "youth"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = bin()
        .arg("--data")
        .arg(&data)
        .args(["enroll", "--project", &id, "--role", "mayor"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin().arg("--data").arg(&data).args(["devices", "revoke", "not-a-uuid"]).output().unwrap();
    assert!(!out.status.success());

    let (mut child, addr) = spawn_serve(&data, "", &[]);
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::{Read, Write};
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "serve exits cleanly on SIGTERM: {exit:?}");
}

/// Starts `serve` on a free port, after a shell `prefix` (such as `ulimit -n 1024 &&`) and with
/// `extra` options; returns the child and its address.
fn spawn_serve(data: &std::path::Path, prefix: &str, extra: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("{prefix} exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_tejido-server"))
        .arg("--data")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("TEJIDO_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on http://").unwrap().to_owned();
    (child, addr)
}

#[test]
fn eleven_hundred_idle_connections_leave_healthz_answering() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    // Under a 1,024-descriptor limit, with a short header timeout.
    let (mut child, addr) = spawn_serve(dir.path(), "ulimit -n 1024 &&", &["--header-timeout", "2s"]);
    // 1,100 connections that send nothing, or half a request, and then sit there.
    let mut idle = Vec::new();
    for i in 0..1_100 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-half: ").unwrap();
        }
        idle.push(s);
    }
    let started = std::time::Instant::now();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "healthz after {:?}: {answer:?}", started.elapsed());
    println!("healthz answered {:?} after 1,100 idle connections", started.elapsed());
    // The server closed the idle ones.
    let mut closed = 0;
    for s in idle.iter_mut().take(50) {
        s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 512];
        if s.read(&mut buf).is_ok() {
            closed += 1;
        }
    }
    assert_eq!(closed, 50, "idle connections are closed by the server");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

#[test]
fn a_closed_stdout_is_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let form = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/forms/victimizacion_hogares.xlsx");
    for args in [
        vec!["project", "create", "p"],
        vec!["project", "list"],
        vec!["--json", "project", "list"],
        vec!["form", "check", form],
        vec!["enroll", "--project", "nope", "--role", "youth", "--json"],
    ] {
        // `>&-` closes stdout, as `tejido-server … | head` does once head has had enough.
        let out = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" >&-")
            .arg(env!("CARGO_BIN_EXE_tejido-server"))
            .arg("--data")
            .arg(dir.path())
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(101), "{args:?} panicked: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// One sign-in attempt over a raw connection, as from behind a proxy that sent
/// `X-Forwarded-For: forwarded`; the status code. The login form's CSRF check is a
/// double-submit cookie, so the attempt brings its own.
fn sign_in(addr: &str, email: &str, password: &str, forwarded: &str) -> u16 {
    use std::io::{Read, Write};
    let body = format!("email={email}&password={password}&csrf=abc");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nCookie: tejido_login_csrf=abc\r\n\
         X-Forwarded-For: {forwarded}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn behind_a_trusted_proxy_the_login_limit_counts_each_client_and_nobody_else_picks_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("deploy");
    json(bin().arg("--data").arg(&data).args(["--json", "project", "create", "Panamá"]));
    let mut add = bin()
        .arg("--data")
        .arg(&data)
        .args([
            "user",
            "add",
            "ana@example.org",
            "--project",
            "Panamá",
            "--role",
            "coordinator",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut add.stdin.take().unwrap(), b"una clave bien larga\n").unwrap();
    assert!(add.wait().unwrap().success());
    let password = "una+clave+bien+larga";
    let free = tejido_server::service::accounts::FREE_FAILURES_PER_ADDRESS;

    // Behind a proxy this server trusts: one client's failures slow that client only.
    let (mut child, addr) = spawn_serve(&data, "", &["--trusted-proxy", "127.0.0.1"]);
    for i in 0..=free {
        let status = sign_in(&addr, &format!("nobody{i}@example.org"), "wrong", "203.0.113.7");
        assert!(status == 401 || status == 429, "{status}");
    }
    assert_eq!(sign_in(&addr, "ana@example.org", password, "203.0.113.7"), 429, "that client waits");
    assert_eq!(sign_in(&addr, "ana@example.org", password, "198.51.100.2"), 303, "another signs in");
    // A client that writes its own X-Forwarded-For in front of the proxy's hop gains nothing.
    assert_eq!(sign_in(&addr, "ana@example.org", password, "198.51.100.9, 203.0.113.7"), 429);
    child.kill().unwrap();
    child.wait().unwrap();

    // Without --trusted-proxy the header is ignored: changing it on every try evades nothing.
    let other = dir.path().join("other");
    json(bin().arg("--data").arg(&other).args(["--json", "project", "create", "Colón"]));
    let (mut child, addr) = spawn_serve(&other, "", &[]);
    for i in 0..=free {
        let status = sign_in(&addr, &format!("nobody{i}@example.org"), "wrong", &format!("203.0.113.{i}"));
        assert!(status == 401 || status == 429, "{status}");
    }
    assert_eq!(sign_in(&addr, "someone@example.org", "wrong", "198.51.100.77"), 429);
    child.kill().unwrap();
    child.wait().unwrap();
}
