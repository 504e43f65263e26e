//! A child process writing answers is killed with SIGKILL at random moments; each time, the
//! reopened store must be consistent and hold every answer the child reported committed, and
//! no transaction may be half there.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::json;
use tejido_core::{Collection, Store};

#[test]
fn a_writer_killed_at_random_moments_loses_nothing_it_committed() {
    let kills: usize = if std::env::var_os("TEJIDO_SOAK").is_some() { 1000 } else { 60 };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7e71d0);
    let mut last_committed: Option<u64> = None;
    let mut mid_write_kills = 0;
    for round in 0..kills {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tejido-crash-writer"))
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "ready" {
                    let _ = ready_tx.send(());
                } else if let Some(n) = line.strip_prefix("committed ") {
                    last = Some(n.parse::<u64>().unwrap());
                }
            }
            last
        });
        // Half the rounds kill at a random moment after the store is open, so that a slow
        // start (a debug build on a loaded machine) cannot leave every round without a write;
        // the other half from the spawn, which kills during the open and its migrations too.
        if round % 2 == 1 {
            let _ = ready_rx.recv_timeout(Duration::from_secs(20));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(5..60)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let mut errors = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut errors);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "round {round}: the writer stopped by itself ({status:?}): {errors}"
        );
        if let Some(n) = reader.join().unwrap() {
            last_committed = Some(last_committed.map_or(n, |m| m.max(n)));
        }

        let store = Store::open(&path).unwrap();
        assert_eq!(store.check_integrity().unwrap(), Vec::<String>::new(), "round {round}");
        let Some(doc) = store.list_documents(Collection::Entity).unwrap().first().copied() else {
            assert!(last_committed.is_none());
            continue;
        };
        let d = store.read_document(doc).unwrap();
        let present: Vec<u64> = (0..).take_while(|i| d.value(&format!("q{i}/a")).is_some()).collect();
        // Every reported commit is there; at most one more (committed, killed before printing).
        if let Some(last) = last_committed {
            assert!(present.len() as u64 > last, "round {round}: lost commits after {last}");
            assert!(present.len() as u64 <= last + 2, "round {round}: more than one unreported commit");
            if present.len() as u64 == last + 2 {
                mid_write_kills += 1;
            }
        }
        // No transaction is half there.
        for i in &present {
            assert_eq!(d.value(&format!("q{i}/b")), Some(&json!(i)), "round {round}: half-written q{i}");
            assert_eq!(d.value(&format!("q{i}/c")), Some(&json!(format!("answer {i}"))));
        }
        let all = d.fields.keys().filter(|f| f.as_str().ends_with("/a")).count();
        assert_eq!(all, present.len(), "round {round}: a gap in the answers");
        // Every committed change is in the outbox: the entity's creation, one per answer set and
        // one per finalized draft.
        let finalized = store.list_submissions(tejido_core::store::StatusFilter::Finalized).unwrap().len();
        assert_eq!(store.pending_count().unwrap() as usize, 1 + present.len() + finalized, "round {round}");
    }
    let total = last_committed.unwrap_or(0);
    println!(
        "crash test: {kills} kills, {total} committed writes checked, {mid_write_kills} kills between commit and report"
    );
    assert!(total > kills as u64, "the writer barely wrote: {total}");
}
