//! Hostile traffic on the monitor's dump socket. Each case runs in its own process tree, like
//! the crash matrix:
//!
//! test (this process) -> monitor (this binary, re-executed) -> child (re-executed again).
//!
//! The child tells the test its socket's name; then either the test (a foreign process: not
//! the child) or the child itself on a second connection sends something hostile: a bare
//! connection, a header claiming 4 GiB, a crash request for a pid that is not the child's,
//! garbage. Then the child asks the monitor's dump thread whether it still serves, and either
//! segfaults (its dump must still be written: one dump, one `crash` record, both the child's)
//! or exits cleanly (no dump, no `crash` record).

#![cfg(feature = "crash")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "support/common.rs"]
mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dispatch_journal::Record;
use dispatch_journal::record::MemorySample;
use dispatch_telemetry::crash::{CrashBuilder, ENV_MONITOR_PID, ENV_SOCKET};
use dispatch_telemetry::journal::JournalBuilder;
use uds::{UnixSeqpacketConn, UnixSocketAddr};

const CASE: &str = "DISPATCH_TEST_CRASH_CASE";
const DIR: &str = "DISPATCH_TEST_CRASH_DIR";
const DEADLINE: Duration = Duration::from_secs(60);

fn header(kind: u32, size: u32) -> Vec<u8> {
    [kind.to_ne_bytes(), size.to_ne_bytes()].concat()
}

fn wait_for_file(path: &Path) -> String {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return s;
        }
        assert!(Instant::now() < until, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `text` to `path` whole (the other side polls for it).
fn publish(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

fn connect(socket: &str) -> UnixSeqpacketConn {
    let c = UnixSeqpacketConn::connect_unix_addr(&UnixSocketAddr::from_abstract(socket).unwrap())
        .unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    c
}

/// Whether the server closed `c` without answering (the refusal).
fn closed_without_answer(c: &UnixSeqpacketConn) -> bool {
    let mut b = [0u8; 64];
    // EOF, or a reset when the server closed with our packet unread; never a timeout.
    match c.recv(&mut b) {
        Ok(n) => n == 0,
        Err(e) => {
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        }
    }
}

/// A crash request for `pid` (thread `pid`) with the real client: refused means no ack.
fn request_dump_for(socket: &str, pid: u32) -> Result<(), String> {
    let client = minidumper::Client::with_name(minidumper::SocketName::Abstract(socket))
        .map_err(|e| e.to_string())?;
    // SAFETY: CrashContext is plain data (integers and raw pointers); all zeroes is valid.
    #[allow(unsafe_code)]
    let mut ctx: crash_handler::CrashContext = unsafe { std::mem::zeroed() };
    ctx.pid = pid as i32;
    ctx.tid = pid as i32;
    client.request_dump(&ctx).map_err(|e| e.to_string())
}

/// The monitor's peak resident memory, KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One hostile act against the dump socket; panics if the server did not refuse it.
fn attack(kind: &str, socket: &str, wrong_pid: u32, monitor: u32) {
    match kind {
        "connect" => {
            let c = connect(socket);
            assert!(closed_without_answer(&c), "{kind}: the connection was refused");
        }
        "4gib" => {
            let c = connect(socket);
            let _ = c.send(&header(0, u32::MAX));
            assert!(closed_without_answer(&c), "{kind}: no ack");
            let peak = peak_rss_kib(monitor);
            assert!(
                peak < 256 * 1024,
                "{kind}: the monitor allocated what the header said: {peak} KiB"
            );
        }
        "garbage" => {
            let c = connect(socket);
            let _ = c.send(b"\x01\x02\x03");
            assert!(closed_without_answer(&c), "{kind}: no answer");
        }
        "wrong-pid" => {
            let r = request_dump_for(socket, wrong_pid);
            assert!(r.is_err(), "{kind}: the dump request for pid {wrong_pid} was acked");
        }
        other => panic!("unknown attack {other}"),
    }
}

/// The "service": tells the test its socket, suffers the attack, checks its monitor still
/// serves, then segfaults or exits.
fn service(case: &str, dir: &Path) -> ! {
    let supervised =
        CrashBuilder::new(dir.join("journal"), dir.join("crashes")).service("svc").start();
    // Only the monitored child gets here.
    if !supervised.is_monitored() {
        eprintln!("not monitored: {:?}", supervised.note());
        std::process::exit(3);
    }
    let journal = JournalBuilder::new(dir.join("journal"))
        .service("svc")
        .boot_id(supervised.boot_id())
        .open()
        .unwrap();
    journal.emit(Record::MemorySample(MemorySample { rss: Some(1), ..Default::default() }));
    assert!(journal.flush(Duration::from_secs(10)));
    let (who, rest) = case.split_once(':').unwrap();
    let (kind, end) = rest.split_once(':').unwrap();
    let socket = std::env::var(ENV_SOCKET).unwrap();
    publish(&dir.join("socket"), &socket);
    if who == "own" {
        // A process the monitor could ptrace (its grandchild), as the victim of a false
        // dump request.
        let mut victim = Command::new("sleep").arg("60").spawn().unwrap();
        let monitor = std::env::var(ENV_MONITOR_PID).unwrap().parse().unwrap();
        attack(kind, &socket, victim.id(), monitor);
        let _ = victim.kill();
        let _ = victim.wait();
    }
    wait_for_file(&dir.join("go"));
    let status = match supervised.dump_server_status() {
        Ok(()) => "ok".to_string(),
        Err(e) => e,
    };
    let dumps = std::fs::read_dir(dir.join("crashes")).map_or(0, |d| d.count());
    // The crashing thread, for the dump to name.
    let tid = std::fs::read_link("/proc/thread-self").unwrap();
    publish(&dir.join("tid"), tid.file_name().unwrap().to_str().unwrap());
    publish(&dir.join("status"), &format!("{status}\n{dumps}"));
    match end {
        "segv" => segfault(),
        "exit" => std::process::exit(0),
        other => panic!("unknown end {other}"),
    }
}

#[allow(unsafe_code)]
fn segfault() -> ! {
    // SAFETY: deliberately crashes the process; that is the test.
    unsafe { sadness_generator::raise_segfault() }
}

/// In the re-executed processes, be the service; in the test, run the case's tree, attack from
/// here when the case says so, and return what it left.
fn run_case(test: &str, case: &str) -> (tempfile::TempDir, std::process::Output) {
    if let (Ok(c), Ok(d)) = (std::env::var(CASE), std::env::var(DIR)) {
        service(&c, Path::new(&d));
    }
    let dir = tempfile::tempdir().unwrap();
    let monitor = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CASE, case)
        .env(DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let socket = wait_for_file(&dir.path().join("socket"));
    let (who, rest) = case.split_once(':').unwrap();
    if who == "foreign" {
        let kind = rest.split_once(':').unwrap().0;
        // The test is not the child: whatever it sends, even a request for its own pid.
        attack(kind, &socket, std::process::id(), monitor.id());
    }
    publish(&dir.path().join("go"), "go");
    let out = monitor.wait_with_output().unwrap();
    (dir, out)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map_or(Vec::new(), |d| d.map(|e| e.unwrap().path()).collect())
}

/// Runs `case` and checks that the monitor shrugged it off.
fn check(test: &str, case: &str) {
    let (dir, out) = run_case(test, case);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let status = std::fs::read_to_string(dir.path().join("status")).unwrap_or_default();
    let (serving, dumps_before) = status.split_once('\n').unwrap_or(("", ""));
    assert_eq!(serving, "ok", "{case}: the dump thread still serves; stderr: {stderr}");
    assert_eq!(dumps_before, "0", "{case}: the attack left no dump");
    assert!(stderr.contains("refused"), "{case}: the monitor says what it refused: {stderr}");
    let back = common::read_back(&dir.path().join("journal"), "svc");
    let crashes: Vec<_> = back
        .lines
        .iter()
        .filter_map(|l| if let Record::Crash(c) = &l.record { Some(c) } else { None })
        .collect();
    let dumps = files(&dir.path().join("crashes"));
    if case.ends_with(":exit") {
        assert_eq!(out.status.code(), Some(0), "{case}: {:?} {stderr}", out.status);
        assert!(crashes.is_empty(), "{case}: no crash record: {crashes:?}");
        assert!(dumps.is_empty(), "{case}: no dump: {dumps:?}");
        return;
    }
    // The real segfault that follows still gets its dump, and only that one.
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{case}: {:?} {stderr}", out.status);
    assert_eq!(dumps.len(), 1, "{case}: {dumps:?}");
    assert!(dumps[0].extension().is_some_and(|e| e == "dmp"), "{case}: scrubbed: {dumps:?}");
    assert_eq!(crashes.len(), 1, "{case}: {crashes:?}");
    let c = crashes[0];
    assert_eq!(c.signal.as_deref(), Some("SIGSEGV"));
    assert_eq!(c.minidump.as_deref(), Some(dumps[0].to_str().unwrap()));
    assert_eq!(c.dump_error, None);
    let tid: u64 = std::fs::read_to_string(dir.path().join("tid")).unwrap().parse().unwrap();
    assert_eq!(c.thread, Some(tid), "{case}: the dump is of the child's crashing thread");
}

#[test]
fn a_foreign_connection_is_refused() {
    check("a_foreign_connection_is_refused", "foreign:connect:segv");
}

#[test]
fn a_foreign_4gib_header_is_refused() {
    check("a_foreign_4gib_header_is_refused", "foreign:4gib:segv");
}

#[test]
fn a_foreign_request_with_its_own_pid_is_refused() {
    check("a_foreign_request_with_its_own_pid_is_refused", "foreign:wrong-pid:segv");
}

#[test]
fn a_foreign_request_leaves_no_crash_record_on_a_clean_exit() {
    check("a_foreign_request_leaves_no_crash_record_on_a_clean_exit", "foreign:wrong-pid:exit");
}

#[test]
fn a_4gib_header_from_the_child_is_refused() {
    check("a_4gib_header_from_the_child_is_refused", "own:4gib:segv");
}

#[test]
fn garbage_from_the_child_is_refused() {
    check("garbage_from_the_child_is_refused", "own:garbage:segv");
}

#[test]
fn a_request_from_the_child_for_another_pid_is_refused() {
    check("a_request_from_the_child_for_another_pid_is_refused", "own:wrong-pid:segv");
}

#[test]
fn a_request_for_another_pid_leaves_no_crash_record_on_a_clean_exit() {
    check("a_request_for_another_pid_leaves_no_crash_record_on_a_clean_exit", "own:wrong-pid:exit");
}
