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

    let mut child = bin()
        .arg("--data")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TEJIDO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on http://").unwrap().to_owned();
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
