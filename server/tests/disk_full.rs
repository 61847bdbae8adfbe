//! The real server with its journal on a filesystem that fills up (a 256 KiB tmpfs mounted
//! by the test; CI runs as root, and the test fails rather than skips when it cannot mount):
//! it keeps serving turns, `/health` says the journal is failing and why, and once space
//! returns the same process journals again, with the lost lines counted in a
//! `journal.dropped` record and in the next sample's `dropped`. No restart.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::tmpfs::Tmpfs;
use common::{Http, ServerProcess, of_kind, read_journal, wait_for_async};
use serde_json::{Value, json};

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
    let failing = wait_for_async("/health to say the journal is failing", || async {
        let (status, h) = health(&http).await;
        (status == 503 && h["telemetry"]["journal"] == "failing").then_some(h)
    })
    .await;
    let error = failing["telemetry"]["journal_error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("No space left on device"), "{failing}");
    assert!(failing["telemetry"]["journal_dropped_lines"].as_u64() > Some(0), "{failing}");

    // Still serving: a conversation and a whole turn while nothing can be journaled.
    let (status, created) = http.json("POST", "/v1/conversations", Some(json!({}))).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, turn) = http
        .json(
            "POST",
            &format!("/v1/conversations/{id}/turns"),
            Some(json!({ "message": "size:100 rate:0" })),
        )
        .await;
    assert_eq!(status, 200, "a turn is served on a full journal disk: {turn}");

    // Space returns: the same process journals again.
    std::fs::remove_file(&filler).unwrap();
    let healthy = wait_for_async("/health to recover", || async {
        let (status, h) = health(&http).await;
        (status == 200 && h["telemetry"]["journal"] == "ok").then_some(h)
    })
    .await;
    assert_eq!(healthy["pid"].as_u64(), Some(pid), "the same process: no restart");
    assert!(healthy["telemetry"]["journal_error"].is_null(), "{healthy}");
    let lost = healthy["telemetry"]["journal_dropped_lines"].as_u64().unwrap();
    assert!(lost > 0);
    let records = wait_for_async("the journal.dropped record and a sample with dropped", || {
        let journal = journal.clone();
        async move {
            let r = read_journal(&journal);
            let reported: u64 =
                of_kind(&r, "journal.dropped").iter().filter_map(|d| d["count"].as_u64()).sum();
            let sampled: u64 =
                of_kind(&r, "memory.sample").iter().filter_map(|s| s["dropped"].as_u64()).sum();
            (reported > 0 && sampled > 0).then_some((reported, sampled))
        }
    })
    .await;
    assert!(records.0 <= lost && records.1 <= lost, "counts agree: {records:?}, {lost} lost");
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
