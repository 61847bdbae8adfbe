//! The embedded collector with the traces database on a filesystem that fills up (a 2 MiB
//! tmpfs mounted by the test; CI runs as root, and the test fails rather than skips when it
//! cannot mount): commits fail, nothing committed is lost, `/health` says the collector is
//! retrying and why, the server keeps serving, and once space returns ingest resumes by
//! itself and every journal line is in the database exactly once. No restart.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;

use common::tmpfs::Tmpfs;
use common::{Http, ServerProcess, of_kind, read_journal, wait_for_async};
use serde_json::Value;

async fn collector_state(http: &Http) -> Value {
    http.json("GET", "/health", None).await.1["telemetry"].clone()
}

fn count(db: &Path, table: &str) -> Option<usize> {
    let conn = dispatch_collector::schema::open_read_only(db).ok()?;
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get::<_, i64>(0))
        .ok()
        .map(|n| n as usize)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_disk_is_retried_and_ingest_resumes_exactly_once() {
    let var = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&var.path().join("db-fs"), "2m");
    let db = fs.0.join("traces.db");
    let server = ServerProcess::start(
        var.path(),
        &["--traces-db", db.to_str().unwrap(), "--sample-interval-ms", "50"],
    );
    let http = server.client();
    wait_for_async("the collector running and the database made", || async {
        let t = collector_state(&http).await;
        (t["collector"] == "running" && count(&db, "samples").is_some_and(|n| n > 0)).then_some(())
    })
    .await;

    let filler = fs.fill("filler");
    // Turns while the database cannot grow: the journal keeps every line.
    for _ in 0..4 {
        let c = http.create_conversation().await;
        http.stream_turn(&c, "size:20000 rate:0", |_| {}).await;
    }
    let retrying = wait_for_async("/health to say the collector is retrying", || async {
        let t = collector_state(&http).await;
        (t["collector"] == "retrying").then_some(t)
    })
    .await;
    let warnings = retrying["warnings"].to_string();
    assert!(warnings.contains("embedded collector retrying"), "{retrying}");
    let (status, _) = http.json("GET", "/health", None).await;
    assert_eq!(status, 200, "a retrying collector does not fail liveness");

    std::fs::remove_file(&filler).unwrap();
    wait_for_async("the collector to resume", || async {
        (collector_state(&http).await["collector"] == "running").then_some(())
    })
    .await;
    // Every line of the journal, exactly once: the rows are keyed by (boot, seq), so equal
    // counts mean none lost and none twice.
    let journal = server.journal_dir();
    wait_for_async("the database to catch up with the journal", || {
        let (journal, db) = (journal.clone(), db.clone());
        async move {
            let r = read_journal(&journal);
            let lines = |kind| of_kind(&r, kind).len();
            let want = [
                ("turn_starts", lines("turn.start")),
                ("turn_ends", lines("turn.end")),
                ("samples", lines("memory.sample")),
            ];
            want.iter().all(|(t, n)| count(&db, t) == Some(*n)).then_some(())
        }
    })
    .await;
    assert_eq!(count(&db, "turn_starts"), Some(4), "the four turns made while the disk was full");
    let stderr = std::fs::read_to_string(var.path().join("server.stderr")).unwrap();
    assert!(stderr.contains("embedded collector resumed"), "{stderr}");
    assert_eq!(stderr.matches("retrying from the last commit").count(), 1, "said once: {stderr}");
}
