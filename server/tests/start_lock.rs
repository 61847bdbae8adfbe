//! Acceptance: a start that finds the previous server still holding the store waits for it.
//!
//! - The crash monitor is SIGKILLed during a streaming turn and a new server is started on the
//!   same var directory at once: the orphaned server notices (SIGTERM through
//!   `PR_SET_PDEATHSIG`), seals its turn without a grace period and exits; the new server waits
//!   for its start lock instead of failing on `database is locked` or the collector's lock,
//!   then serves with its embedded collector running, and the old boot's turn is sealed.
//! - A lock held by someone who does not let go: the start waits `--start-lock-wait-ms`, then
//!   exits 2 naming the lock file and the holder's pid.
//! - A lock let go during the wait: the start says whom it waited for, then serves.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ServerProcess, of_kind, read_journal, wait_for};

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn has_ended(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => matches!(
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()),
            Some("Z" | "X")
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_right_after_the_monitor_is_killed_waits_for_the_old_server_then_serves() {
    let var = tempfile::tempdir().unwrap();
    let mut old = ServerProcess::start(var.path(), &[]);
    let http = old.client();
    let conversation = http.create_conversation().await;
    // A slow turn (10 tokens/s, 100 KB to go) in flight when the monitor dies.
    let (h, c) = (http.clone(), conversation.clone());
    let client =
        tokio::spawn(async move { h.stream_turn(&c, "rate:10 size:100000", |_| {}).await });
    let journal = old.journal_dir();
    let turn = wait_for("the turn's turn.start on disk", || {
        let r = read_journal(&journal);
        of_kind(&r, "turn.start")
            .into_iter()
            .find(|t| t["conversation"] == conversation.as_str())
            .and_then(|t| t["turn"].as_str().map(str::to_owned))
    });
    let old_boot = {
        let r = read_journal(&journal);
        of_kind(&r, "process.start")[0]["boot"].as_str().unwrap().to_owned()
    };
    let old_server = old.pid();

    // SIGKILL the monitor only (the orphaned server gets SIGTERM from the kernel), and start
    // the replacement at once, as a service manager's restart would.
    old.child.kill().unwrap();
    old.child.wait().unwrap();
    let new = ServerProcess::start(var.path(), &[]);
    assert!(has_ended(old_server), "the new server serves while the old one ({old_server}) runs");
    let (status, health) = new.client().json("GET", "/health", None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["telemetry"]["collector"], "running", "{health}");
    let log = std::fs::read_to_string(var.path().join("server.stderr")).unwrap();
    assert!(!log.contains("database is locked"), "{log}");
    assert!(!log.contains("collector_locked"), "{log}");
    let waited = format!("in use by pid {old_server}");
    eprintln!(
        "the new start {} for the old server",
        if log.contains(&waited) { "waited" } else { "did not have to wait" }
    );
    let _ = client.await;

    // The old boot's turn is sealed: in the store, and by exactly one `turn.end`.
    let (_, conv) =
        new.client().json("GET", &format!("/v1/conversations/{conversation}"), None).await;
    assert_eq!(conv["status"], "idle", "{conv}");
    assert_eq!(conv["turns_list"][0]["status"], "sealed", "{conv}");
    let records = read_journal(&new.journal_dir());
    let sealed: Vec<_> = of_kind(&records, "turn.end")
        .into_iter()
        .filter(|e| e["turn"] == turn.as_str() && e["outcome"] == "sealed")
        .collect();
    assert_eq!(sealed.len(), 1, "{sealed:?}");
    // The orphan stopped on its own, and said why (SIGTERM from the monitor's death).
    let stop = of_kind(&records, "process.stop")
        .into_iter()
        .find(|s| s["boot"] == old_boot.as_str())
        .cloned()
        .expect("the old boot's process.stop");
    assert_eq!(stop["reason"], "signal:SIGTERM", "{stop}");
    assert_eq!(stop["turns_sealed"], 1, "sealed at once, without the grace period: {stop}");
}

/// Takes `<var>/dispatch.db.lock` the way a server does (flock, `pid N` inside) from this
/// test process.
fn hold_start_lock(var: &std::path::Path) -> std::fs::File {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(var.join("dispatch.db.lock"))
        .unwrap();
    #[allow(clippy::incompatible_msrv)] // 1.89; the crate needs it already (see start_lock.rs)
    f.try_lock().unwrap();
    f.set_len(0).unwrap();
    write!(f, "pid {}", std::process::id()).unwrap();
    f
}

#[test]
fn a_start_lock_held_past_the_wait_fails_naming_the_file_and_the_holder() {
    let var = tempfile::tempdir().unwrap();
    let _held = hold_start_lock(var.path());
    let out = Command::new(env!("CARGO_BIN_EXE_dispatch-server"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["--addr", "127.0.0.1:0", "--no-crash-monitor", "--start-lock-wait-ms", "300"])
        .arg("--var-dir")
        .arg(var.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let me = format!("pid {}", std::process::id());
    let lock = var.path().join("dispatch.db.lock");
    assert!(stderr.contains(&format!("in use by {me}")), "the wait is announced: {stderr}");
    assert!(stderr.contains("waiting up to 300 ms"), "{stderr}");
    assert!(stderr.contains("start_lock_held"), "{stderr}");
    assert!(stderr.contains(&lock.display().to_string()), "names the lock file: {stderr}");
    assert!(stderr.contains("--start-lock-wait-ms"), "says what to change: {stderr}");
    assert!(!var.path().join("journal").exists(), "nothing was opened before the lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_lock_released_during_the_wait_lets_the_start_proceed() {
    let var = tempfile::tempdir().unwrap();
    let held = hold_start_lock(var.path());
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(held);
    });
    let server = ServerProcess::start(var.path(), &[]);
    release.join().unwrap();
    let (status, health) = server.client().json("GET", "/health", None).await;
    assert_eq!(status, 200, "{health}");
    let log = std::fs::read_to_string(var.path().join("server.stderr")).unwrap();
    let me = format!("pid {}", std::process::id());
    assert!(log.contains(&format!("in use by {me}")), "{log}");
    assert!(log.contains(&format!("{me} released")), "{log}");
    // The server holds it now, 0600, with its own pid.
    use std::os::unix::fs::PermissionsExt as _;
    let lock = var.path().join("dispatch.db.lock");
    assert_eq!(std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&lock).unwrap();
    assert_eq!(text.trim(), format!("pid {}", server.pid()));
}
