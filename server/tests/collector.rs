//! The embedded collector: on by default, it drains the server's journal into
//! `<var dir>/traces.db` while the server runs and, at SIGTERM, after the final flush (so
//! `process.stop` lands too). `--no-collector` leaves no database; a database locked by
//! another collector is reported in one line and the server serves without it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{ServerProcess, of_kind, read_journal, wait_for};
use dispatch_collector::{query, schema, status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_and_turns_reach_the_traces_database_and_the_stop_lands_too() {
    let var = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(var.path(), &["--sample-interval-ms", "100"]);
    let http = server.client();
    let (_, health) = http.json("GET", "/health", None).await;
    assert_eq!(health["telemetry"]["collector"], "running", "{health}");
    let boot = health["boot"].as_str().unwrap().to_owned();
    let c = http.create_conversation().await;
    let events = http.stream_turn(&c, "size:300 rate:0", |_| {}).await;
    assert_eq!(common::end(&events)["outcome"], "ok");

    let db = var.path().join("traces.db");
    let turns = wait_for("the turn and memory samples in traces.db", || {
        let conn = schema::open_read_only(&db).ok()?;
        let kinds = status::status(&conn).ok()?.kinds;
        let turns = query::turns_for_conversation(&conn, &c).ok()?;
        let ended = turns.iter().any(|t| t.outcome.as_deref() == Some("ok"));
        (kinds.get("memory.sample").is_some_and(|n| *n >= 2) && ended).then_some(turns)
    });
    assert_eq!(turns.len(), 1, "{turns:?}");
    assert_eq!(turns[0].boot, boot);

    let status = server.signal_and_wait(libc::SIGTERM);
    assert_eq!(status.code(), Some(0));
    // No polling: the server waited for its collector's last drain before exiting.
    let conn = schema::open_read_only(&db).unwrap();
    let boots = query::boots(&conn).unwrap();
    let ours = boots.iter().find(|b| b.boot == boot).expect("our boot in traces.db");
    assert_eq!(ours.stop_reason.as_deref(), Some("signal:SIGTERM"), "{ours:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_collector_leaves_no_database() {
    let var = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start(var.path(), &["--no-collector", "--sample-interval-ms", "100"]);
    let http = server.client();
    let (_, health) = http.json("GET", "/health", None).await;
    assert_eq!(health["telemetry"]["collector"], "off", "{health}");
    let c = http.create_conversation().await;
    http.stream_turn(&c, "size:300 rate:0", |_| {}).await;
    wait_for("a few memory samples in the journal", || {
        let r = read_journal(&server.journal_dir());
        (of_kind(&r, "memory.sample").len() >= 3).then_some(())
    });
    assert!(!var.path().join("traces.db").exists());
    assert!(!var.path().join("traces.db.lock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_held_by_another_collector_is_reported_and_the_server_serves() {
    let var = tempfile::tempdir().unwrap();
    let journal = var.path().join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    let db = var.path().join("traces.db");
    let _standalone = dispatch_collector::Collector::builder(&journal, &db).open().unwrap();
    let server = ServerProcess::start(var.path(), &[]);
    let http = server.client();
    let (status, health) = http.json("GET", "/health", None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["telemetry"]["collector"], "failed", "{health}");
    let c = http.create_conversation().await;
    let events = http.stream_turn(&c, "size:300 rate:0", |_| {}).await;
    assert_eq!(common::end(&events)["outcome"], "ok");
    let stderr = std::fs::read_to_string(var.path().join("server.stderr")).unwrap();
    let lines: Vec<&str> =
        stderr.lines().filter(|l| l.contains("embedded collector not started")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("collector_locked") || lines[0].contains("another"), "{stderr}");
}
