//! The real server with its journal on a filesystem that turns read-only under it (ext4 in a
//! loop-mounted image with `errors=remount-ro`, and an ext4 error raised through sysfs, as a
//! failing disk does; CI runs as root, and the test fails rather than skips when it cannot
//! mount): it keeps serving turns, `/health` says the journal is failing and why, and the
//! lines it cannot write are counted. A filesystem the kernel aborted is not writable again
//! until it is unmounted and checked, so recovery is a restart onto the repaired disk (the
//! disk-full test, `disk_full.rs`, shows recovery without one).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::tmpfs::Ext4;
use common::{ServerProcess, wait_for_async};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_disk_that_turns_read_only_degrades_telemetry_and_the_server_serves_on() {
    let var = tempfile::tempdir().unwrap();
    let fs = Ext4::mount(&var.path().join("journal"), "16M");
    let mut server = ServerProcess::start(var.path(), &["--sample-interval-ms", "100"]);
    let http = server.client();
    let pid = wait_for_async("a healthy server", || async {
        let (status, h) = http.json("GET", "/health", None).await;
        (status == 200 && h["telemetry"]["journal"] == "ok").then(|| h["pid"].as_u64()).flatten()
    })
    .await;

    fs.fail_read_only();
    let failing = wait_for_async("/health to say the journal is failing", || async {
        let (status, h) = http.json("GET", "/health", None).await;
        (status == 503 && h["telemetry"]["journal"] == "failing").then_some(h)
    })
    .await;
    let error = failing["telemetry"]["journal_error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("Read-only file system"), "{failing}");
    assert!(error.contains(&fs.at.display().to_string()), "the error names the segment: {error}");
    let dropped = failing["telemetry"]["journal_dropped_lines"].as_u64().unwrap();
    assert!(dropped > 0, "{failing}");

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
    assert_eq!(status, 200, "a turn is served on a read-only journal disk: {turn}");
    let (status, read) = http.json("GET", &format!("/v1/conversations/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(read["turns_list"][0]["status"], "ok", "{read}");

    // The drops keep being counted (the turn's records and the samples), in the same process.
    let later = wait_for_async("more dropped lines", || async {
        let (_, h) = http.json("GET", "/health", None).await;
        (h["telemetry"]["journal_dropped_lines"].as_u64() > Some(dropped)).then_some(h)
    })
    .await;
    assert_eq!(later["pid"].as_u64(), Some(pid), "the same process: no restart");

    // A stop on a read-only journal still ends: the shutdown path does not wait on the disk.
    let status = server.signal_and_wait(libc::SIGTERM);
    assert!(status.code().is_some(), "the server stopped on SIGTERM: {status:?}");
}
