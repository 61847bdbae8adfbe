//! The real server with its journal on a filesystem that turns read-only under it (ext4 in a
//! loop-mounted image with `errors=remount-ro`, and an ext4 error raised through sysfs, as a
//! failing disk does; CI runs as root, and the test fails rather than skips when it cannot
//! mount): it keeps serving turns, `/health` says the journal is failing and why, and the
//! lines it cannot write are counted. A filesystem the kernel aborted is never writable again
//! (not even after `remount,rw`), so the operator's fix is a working disk mounted at the same
//! path; the writer, which no longer trusts its old descriptor, opens a new segment there by
//! path and the same process journals again, with the lost lines counted in a
//! `journal.dropped` record and in the next sample's `dropped`. No restart.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::journal_disk::{drops_reported, health_says, serves_a_turn};
use common::tmpfs::{Ext4, Tmpfs};
use common::{ServerProcess, wait_for_async};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_disk_that_turns_read_only_degrades_telemetry_and_a_new_disk_recovers_it() {
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
    let failing = health_says(&http, 503, "failing").await;
    let error = failing["telemetry"]["journal_error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("Read-only file system"), "{failing}");
    assert!(error.contains(&fs.at.display().to_string()), "the error names the segment: {error}");
    let dropped = failing["telemetry"]["journal_dropped_lines"].as_u64().unwrap();
    assert!(dropped > 0, "{failing}");

    // Still serving: a conversation and a whole turn while nothing can be journaled.
    let id = serves_a_turn(&http, "on a read-only journal disk").await;
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

    // The operator's fix: the failed disk unmounted (lazily: the server still holds its old
    // segment open) and a working one mounted at the same path.
    let umount = std::process::Command::new("umount").arg("-l").arg(&fs.at).status().unwrap();
    assert!(umount.success());
    let fresh = Tmpfs::mount(&fs.at, "16m");
    let healthy = health_says(&http, 200, "ok").await;
    assert_eq!(healthy["pid"].as_u64(), Some(pid), "the same process: no restart");
    assert!(healthy["telemetry"]["journal_error"].is_null(), "{healthy}");
    let lost = healthy["telemetry"]["journal_dropped_lines"].as_u64().unwrap();
    let r = drops_reported(&fresh.0, lost).await;
    assert_eq!(r[0]["kind"], "journal.segment", "the new disk's segment starts with its header");
    let boot = healthy["boot"].as_str().unwrap();
    assert!(r.iter().all(|l| l["boot"] == boot), "only this boot's lines on the new disk");

    // A stop still ends cleanly.
    let status = server.signal_and_wait(libc::SIGTERM);
    assert!(status.code().is_some(), "the server stopped on SIGTERM: {status:?}");
}
