//! Acceptance on the release build: every native fault of the admin API (`segfault`, `abort`,
//! `stack-overflow`, `sigbus`, `sigill`) crashes the optimised server for real. For each, the
//! started process (the crash monitor) dies of the fault's signal, the crash directory holds
//! one 0600 minidump whose exception is that signal, and the journal ends with `crash` then
//! `exit` under the child's boot, both naming the signal and the crash naming the dump.
//!
//! `tests/crash.rs` runs the same drills on the debug build; this file exists because the
//! optimiser changes them (the release build once turned the stack-overflow recursion into an
//! endless loop: the server spun a core and never crashed). The binary comes from
//! `common::release_server` (`cargo build --release`, a no-op after `.ci/run` built it).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{DEADLINE, ServerProcess, read_journal, release_server};

const TOKEN: &str = "drill-token-0123456789";

/// The finished minidumps (`*.dmp`) in `<var>/crashes`.
fn dumps_in(var: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(var.join("crashes"))
        .map(|rd| rd.map(|e| e.unwrap().path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dmp"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_native_fault_crashes_the_release_build_with_a_dump_and_records() {
    let binary = release_server();
    for (fault, signo, name) in [
        ("segfault", libc::SIGSEGV, "SIGSEGV"),
        ("abort", libc::SIGABRT, "SIGABRT"),
        ("stack-overflow", libc::SIGSEGV, "SIGSEGV"),
        ("sigbus", libc::SIGBUS, "SIGBUS"),
        ("sigill", libc::SIGILL, "SIGILL"),
    ] {
        let var = tempfile::tempdir().unwrap();
        let mut server =
            ServerProcess::start_binary(&binary, var.path(), &["--admin-token", TOKEN], &[]);
        let http = server.client();
        let (status, health) = http.json("GET", "/health", None).await;
        assert_eq!(status, 200, "{fault}: {health}");
        assert_eq!(health["telemetry"]["crash_monitor"], "attached", "{fault}: {health}");
        let boot = health["boot"].as_str().unwrap().to_owned();

        let auth = format!("Bearer {TOKEN}");
        let path = format!("/admin/fault/{fault}");
        let (status, body) = http.raw("POST", &path, &[("authorization", &auth)], Vec::new()).await;
        assert_eq!(status, 202, "{fault}: {}", String::from_utf8_lossy(&body));

        // Bounded: a drill the optimiser defused would leave the server running for good.
        let end = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < end,
                "{fault}: the release server was still running {} s after POST {path}: the drill \
                 did not crash it",
                DEADLINE.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status.signal(), Some(signo), "{fault}: the monitor dies like its child");

        let dumps = dumps_in(var.path());
        assert_eq!(dumps.len(), 1, "{fault}: {dumps:?}");
        let mode = std::fs::metadata(&dumps[0]).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{fault}: the dump's mode is {mode:o}");
        let md = minidump::Minidump::read_path(&dumps[0]).unwrap();
        let exc: minidump::MinidumpException<'_> = md.get_stream().unwrap();
        assert_eq!(exc.raw.exception_record.exception_code as i32, signo, "{fault}");

        let records = read_journal(&server.journal_dir());
        let ours: Vec<_> = records.iter().filter(|r| r["boot"] == boot.as_str()).collect();
        assert!(ours.len() >= 2, "{fault}: {ours:?}");
        let (crash, exit) = (ours[ours.len() - 2], ours[ours.len() - 1]);
        assert_eq!(crash["kind"], "crash", "{fault}: {crash}");
        assert_eq!(crash["signal"], name, "{fault}: {crash}");
        assert_eq!(crash["thread_name"], "dispatch-fault", "{fault}: {crash}");
        assert_eq!(crash["minidump"], dumps[0].to_str().unwrap(), "{fault}: {crash}");
        assert_eq!(exit["kind"], "exit", "{fault}: {exit}");
        assert_eq!(exit["signal"], name, "{fault}: {exit}");
        assert!(exit["status"].is_null(), "{fault}: a death by signal has no status: {exit}");
        assert_eq!(exit["seq"].as_u64(), crash["seq"].as_u64().map(|s| s + 1), "{fault}");
    }
}
