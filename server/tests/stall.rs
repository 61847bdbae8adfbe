//! The runtime-stall watchdog on the real server under its crash monitor: the admin `stall`
//! fault blocks every tokio worker; the sampler's OS thread sees the heartbeat stop, writes one
//! `stall` record and gets a live minidump from the monitor while the process is still alive;
//! when the block ends the server serves again and a `stall` `end` record closes it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use common::{ServerProcess, of_kind, read_journal, wait_for};
use minidump::Minidump;
use serde_json::json;

const TOKEN: &str = "stall-test-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_runtime_gets_one_stall_record_and_a_live_dump_and_recovers() {
    let var = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start_with_env(
        var.path(),
        &["--sample-interval-ms", "100", "--stall-threshold-ms", "1000"],
        &[("DISPATCH_ADMIN_TOKEN", TOKEN)],
    );
    let http = server.client();
    let (status, health) = http.json("GET", "/health", None).await;
    assert_eq!(status, 200, "{health}");
    // Let the heartbeat arm the watchdog, then block every worker for 4 s.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let auth = format!("Bearer {TOKEN}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let body = serde_json::to_vec(&json!({ "seconds": 4 })).unwrap();
    let answered = http.try_raw("POST", "/admin/fault/stall", &headers, body).await;
    assert_eq!(answered, Some(200), "the stall fault answers before it blocks");

    let journal = server.journal_dir();
    let begin = wait_for("a stall begin record", || {
        let r = read_journal(&journal);
        of_kind(&r, "stall").into_iter().find(|s| s["phase"] == "begin").cloned()
    });
    // Still alive: the block has not ended yet when the record is written.
    assert!(server.child.try_wait().unwrap().is_none(), "the process is alive during the stall");
    assert!(begin["stalled_ms"].as_u64().unwrap() >= 1000, "{begin}");
    assert_eq!(begin["threshold_ms"], 1000);
    assert!(begin["rss"].as_u64().is_some(), "{begin}");
    let dump = begin["minidump"].as_str().unwrap_or_else(|| panic!("a live dump: {begin}"));
    let meta = std::fs::metadata(dump).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "the live dump is 0600");
    let md = Minidump::read_path(dump).expect("the live dump parses");
    let threads = md.get_stream::<minidump::MinidumpThreadList>().expect("a thread list");
    let names = md.get_stream::<minidump::MinidumpThreadNames>().ok();
    let workers = threads
        .threads
        .iter()
        .filter(|t| {
            names
                .as_ref()
                .and_then(|n| n.get_name(t.raw.thread_id))
                .is_some_and(|n| n.starts_with("dispatch-worker"))
        })
        .count();
    assert!(workers >= 2, "the dump shows the blocked runtime workers ({workers} found)");

    // The block ends: the runtime beats again, `end` closes the stall, the server serves.
    let end = wait_for("a stall end record", || {
        let r = read_journal(&journal);
        of_kind(&r, "stall").into_iter().find(|s| s["phase"] == "end").cloned()
    });
    assert!(end["stalled_ms"].as_u64().unwrap() >= 3000, "the whole stall: {end}");
    let (status, health) = http.json("GET", "/health", None).await;
    assert_eq!(status, 200, "serving again: {health}");
    let c = http.create_conversation().await;
    let events = http.stream_turn(&c, "size:20 rate:0", |_| {}).await;
    assert_eq!(common::end(&events)["outcome"], "ok");

    let records = read_journal(&journal);
    assert_eq!(of_kind(&records, "stall").len(), 2, "one begin and one end for one stall");
    assert!(of_kind(&records, "crash").is_empty(), "a live dump is not a crash");
    let status = server.signal_and_wait(libc_sigterm());
    assert_eq!(status.code(), Some(0), "a clean stop after the stall");
    let records = read_journal(&journal);
    assert!(of_kind(&records, "crash").is_empty(), "nor is it one at exit");
}

fn libc_sigterm() -> i32 {
    15
}
