//! Acceptance: the real binary under its real crash monitor. `POST /admin/fault/segfault`
//! during a streaming turn: the started process (the monitor) dies of SIGSEGV like its child,
//! the crash directory holds a minidump the `minidump` crate parses (SIGSEGV, modules, the
//! crashing thread), and the journal has `crash` then `exit` under the child's boot, naming
//! the conversation whose turn was in flight. A restart on the same var directory seals that
//! turn.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;

use common::{ServerProcess, of_kind, read_journal, wait_for};

const TOKEN: &str = "drill-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segfault_leaves_a_minidump_crash_and_exit_records_and_a_sealed_turn() {
    let var = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(var.path(), &["--admin-token", TOKEN]);
    let http = server.client();
    let (status, health) = http.json("GET", "/health", None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["telemetry"]["crash_monitor"], "attached", "{health}");
    let boot = health["boot"].as_str().unwrap().to_owned();

    // A slow streaming turn, in flight when the server crashes.
    let conversation = http.create_conversation().await;
    let (h, c) = (http.clone(), conversation.clone());
    let client =
        tokio::spawn(async move { h.stream_turn(&c, "rate:10 size:100000", |_| {}).await });
    let journal = server.journal_dir();
    let turn = wait_for("the turn's turn.start on disk", || {
        let r = read_journal(&journal);
        of_kind(&r, "turn.start")
            .into_iter()
            .find(|t| t["conversation"] == conversation.as_str())
            .and_then(|t| t["turn"].as_str().map(str::to_owned))
    });

    let auth = format!("Bearer {TOKEN}");
    let (status, body) =
        http.raw("POST", "/admin/fault/segfault", &[("authorization", &auth)], Vec::new()).await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let status = server.child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "the monitor dies the way its child did");
    let _ = client.await;

    // The minidump: 0600, parses, SIGSEGV, a module list, the crashing thread in it.
    let dumps: Vec<PathBuf> = std::fs::read_dir(var.path().join("crashes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dmp"))
        .collect();
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dumps[0]).unwrap().permissions().mode() & 0o777, 0o600);
    let md = minidump::Minidump::read_path(&dumps[0]).unwrap();
    let exc: minidump::MinidumpException<'_> = md.get_stream().unwrap();
    assert_eq!(exc.raw.exception_record.exception_code as i32, libc::SIGSEGV);
    let modules: minidump::MinidumpModuleList = md.get_stream().unwrap();
    assert!(
        modules.iter().any(|m| m.name.ends_with("dispatch-server")),
        "the server binary is among the modules"
    );
    let threads: minidump::MinidumpThreadList<'_> = md.get_stream().unwrap();
    let tid = exc.get_crashing_thread_id();
    assert!(threads.get_thread(tid).is_some(), "the crashing thread's stack is in the dump");

    // `crash` then `exit`, last, under the child's boot.
    let records = read_journal(&journal);
    let ours: Vec<_> = records.iter().filter(|r| r["boot"] == boot.as_str()).collect();
    let n = ours.len();
    let (crash, exit) = (ours[n - 2], ours[n - 1]);
    assert_eq!(crash["kind"], "crash", "{crash}");
    assert_eq!(exit["kind"], "exit", "{exit}");
    assert_eq!(crash["signal"], "SIGSEGV");
    assert_eq!(crash["thread"], u64::from(tid));
    assert_eq!(crash["thread_name"], "dispatch-fault", "{crash}");
    assert_eq!(crash["fault_address"], "0x0000000000000000", "a write through a null pointer");
    assert_eq!(crash["minidump"], dumps[0].to_str().unwrap());
    let active: Vec<&str> = crash["active_conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(active.contains(&conversation.as_str()), "{crash}");
    assert!(crash["last_sample"]["rss"].as_u64().is_some(), "{crash}");
    assert_eq!(exit["signal"], "SIGSEGV");
    assert!(exit["status"].is_null());
    assert_eq!(exit["seq"].as_u64().unwrap(), crash["seq"].as_u64().unwrap() + 1);
    drop(server);

    // The next start seals the cut-off turn.
    let server = ServerProcess::start(var.path(), &[]);
    let (_, conv) =
        server.client().json("GET", &format!("/v1/conversations/{conversation}"), None).await;
    assert_eq!(conv["status"], "idle", "{conv}");
    assert_eq!(conv["turns_list"][0]["status"], "sealed", "{conv}");
    let records = read_journal(&server.journal_dir());
    let sealed = of_kind(&records, "turn.end")
        .into_iter()
        .find(|e| e["turn"] == turn.as_str() && e["outcome"] == "sealed");
    assert!(sealed.is_some_and(|e| e["boot"] != boot.as_str()), "sealed by the next boot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_whether_the_crash_monitor_is_attached() {
    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(var.path(), &[]);
    let (status, health) = server.client().json("GET", "/health", None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["telemetry"]["crash_monitor"], "attached", "{health}");
    assert_ne!(server.pid(), server.child.id() as i32, "the server runs as the monitor's child");
    let records = read_journal(&server.journal_dir());
    assert_eq!(of_kind(&records, "process.start")[0]["config"]["crash_monitor"], "attached");
    drop(server);

    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(var.path(), &["--no-crash-monitor"]);
    let (status, health) = server.client().json("GET", "/health", None).await;
    assert_eq!(status, 200, "a detached monitor is reported, not fatal: {health}");
    assert_eq!(health["telemetry"]["crash_monitor"], "detached", "{health}");
    let note = health["telemetry"]["crash_monitor_note"].as_str().unwrap();
    assert!(note.contains("disabled"), "{note}");
    assert_eq!(server.pid(), server.child.id() as i32, "no monitor process");
    let records = read_journal(&server.journal_dir());
    let start = of_kind(&records, "process.start")[0].clone();
    assert_eq!(start["config"]["crash_monitor"], "detached", "{start}");
}
