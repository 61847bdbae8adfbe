//! The real server with its journal on a filesystem that fills up (a 256 KiB tmpfs mounted
//! by the test; CI runs as root, and the test fails rather than skips when it cannot mount):
//! it keeps serving turns, `/health` says the journal is failing and why, and once space
//! returns the same process journals again, with the lost lines counted in a
//! `journal.dropped` record and in the next sample's `dropped`. No restart.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::journal_disk::{drops_reported, health_says, serves_a_turn};
use common::tmpfs::Tmpfs;
use common::{Http, ServerProcess, wait_for_async};
use serde_json::Value;

async fn health(http: &Http) -> (u16, Value) {
    http.json("GET", "/health", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_disk_degrades_telemetry_and_recovers_without_a_restart() {
    let var = tempfile::tempdir().unwrap();
    // The journal directory itself is the mount (the filler file beside the segments is not
    // a segment name, so neither the writer's retention nor the collector reads it).
    let fs = Tmpfs::mount(&var.path().join("journal"), "256k");
    let journal = fs.0.clone();
    let server = ServerProcess::start(var.path(), &["--sample-interval-ms", "100"]);
    let http = server.client();
    let pid = wait_for_async("a healthy server", || async {
        let (status, h) = health(&http).await;
        (status == 200).then(|| h["pid"].as_u64()).flatten()
    })
    .await;

    let filler = fs.fill("filler.bin");
    let failing = health_says(&http, 503, "failing").await;
    let error = failing["telemetry"]["journal_error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("No space left on device"), "{failing}");
    assert!(failing["telemetry"]["journal_dropped_lines"].as_u64() > Some(0), "{failing}");

    // Still serving: a conversation and a whole turn while nothing can be journaled.
    serves_a_turn(&http, "on a full journal disk").await;

    // Space returns: the same process journals again.
    std::fs::remove_file(&filler).unwrap();
    let healthy = health_says(&http, 200, "ok").await;
    assert_eq!(healthy["pid"].as_u64(), Some(pid), "the same process: no restart");
    assert!(healthy["telemetry"]["journal_error"].is_null(), "{healthy}");
    let lost = healthy["telemetry"]["journal_dropped_lines"].as_u64().unwrap();
    assert!(lost > 0);
    drops_reported(&journal, lost).await;
    // Nothing the full disk cut is left torn: every line of every segment parses.
    for entry in std::fs::read_dir(&journal).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ndjson") {
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                assert!(
                    serde_json::from_str::<Value>(line).is_ok(),
                    "{}:{}: torn line {line:?}",
                    path.display(),
                    n + 1
                );
            }
        }
    }
}
