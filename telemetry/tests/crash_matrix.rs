//! The crash matrix: for each signal, a real crash in a real child process supervised by the
//! real monitor. Each case runs in its own process tree:
//!
//! test (this process) -> monitor (this binary, re-executed) -> child (re-executed again),
//!
//! and checks what was left behind: the monitor died of the child's signal, a minidump the
//! `minidump` crate parses with that signal and the crashing thread, and `crash` then `exit`
//! records in the child's journal under the child's boot.

#![cfg(feature = "crash")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "support/common.rs"]
mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dispatch_journal::Record;
use dispatch_journal::record::{MemorySample, TurnStart};
use dispatch_telemetry::crash::CrashBuilder;
use dispatch_telemetry::journal::JournalBuilder;

const CASE: &str = "DISPATCH_TEST_CRASH_CASE";
const DIR: &str = "DISPATCH_TEST_CRASH_DIR";

/// The "service": supervised by the monitor, journals a little, then crashes as told.
fn service(case: &str, dir: &Path) -> ! {
    let supervised =
        CrashBuilder::new(dir.join("journal"), dir.join("crashes")).service("svc").start();
    // Only the monitored child gets here.
    if case == "segv-no-dump" {
        // The monitor is up; now make its dump directory impossible to create.
        std::fs::write(dir.join("crashes"), b"a file where the dump directory should be").unwrap();
    }
    if !supervised.is_monitored() {
        eprintln!("not monitored: {:?}", supervised.note());
        std::process::exit(3);
    }
    let journal = JournalBuilder::new(dir.join("journal"))
        .service("svc")
        .boot_id(supervised.boot_id())
        .open()
        .unwrap();
    journal.emit(Record::MemorySample(MemorySample { rss: Some(123_456), ..Default::default() }));
    journal.emit(Record::TurnStart(TurnStart {
        conversation: Some("c-in-flight".into()),
        turn: Some("t-1".into()),
        ..Default::default()
    }));
    assert!(journal.flush(Duration::from_secs(10)));
    // The crashing thread, for the dump to name.
    let tid = std::fs::read_link("/proc/thread-self").unwrap();
    let tid = tid.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::write(dir.join("tid"), tid).unwrap();
    crash(case)
}

#[allow(unsafe_code)]
fn crash(case: &str) -> ! {
    // SAFETY: each of these deliberately crashes the process; that is the test.
    unsafe {
        match case {
            "segv" | "segv-no-dump" => sadness_generator::raise_segfault(),
            "abort" => sadness_generator::raise_abort(),
            "ill" => sadness_generator::raise_illegal_instruction(),
            "bus" => sadness_generator::raise_bus(),
            "fpe" => sadness_generator::raise_floating_point_exception(),
            "stack-overflow" => sadness_generator::raise_stack_overflow(),
            other => panic!("unknown crash case {other}"),
        }
    }
}

/// In the re-executed processes, be the service; in the test itself, run `case` as the
/// service (this binary again, filtered to `test`) in a fresh directory and return what it
/// left: the directory and the monitor's status and output.
fn run_case(test: &str, case: &str) -> (tempfile::TempDir, std::process::Output) {
    if let (Ok(c), Ok(d)) = (std::env::var(CASE), std::env::var(DIR)) {
        service(&c, Path::new(&d));
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CASE, case)
        .env(DIR, dir.path())
        .env("OPENAI_API_KEY", "sk-test-secret-value-1234")
        .output()
        .unwrap();
    (dir, out)
}

/// Runs one case and checks everything it left.
fn check(test: &str, case: &str, signo: i32, name: &str) {
    let (dir, out) = run_case(test, case);
    let status = out.status;
    // The monitor exits the way its child did: the service manager sees the real signal.
    assert_eq!(status.signal(), Some(signo), "{case}: monitor status {status:?}");

    // A minidump, 0600, that the minidump crate parses, with the signal and the thread.
    let dumps: Vec<PathBuf> = std::fs::read_dir(dir.path().join("crashes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dmp"))
        .collect();
    assert_eq!(dumps.len(), 1, "{case}: dumps {dumps:?}");
    let dump_path = &dumps[0];
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dump_path).unwrap().permissions().mode() & 0o777, 0o600);
    let md = minidump::Minidump::read_path(dump_path).unwrap();
    let exc: minidump::MinidumpException<'_> = md.get_stream().unwrap();
    assert_eq!(exc.raw.exception_record.exception_code as i32, signo, "{case}: dump signal");
    let tid: u32 = std::fs::read_to_string(dir.path().join("tid")).unwrap().parse().unwrap();
    assert_eq!(exc.get_crashing_thread_id(), tid, "{case}: crashing thread");
    let threads: minidump::MinidumpThreadList<'_> = md.get_stream().unwrap();
    assert!(threads.get_thread(tid).is_some(), "{case}: crashing thread's stack in the dump");
    let raw = std::fs::read(dump_path).unwrap();
    assert!(
        !raw.windows(b"sk-test-secret-value-1234".len()).any(|w| w == b"sk-test-secret-value-1234"),
        "{case}: the secret environment value was scrubbed from the dump"
    );

    // crash then exit, in the child's journal, under the child's boot, continuing its seq.
    let back = common::read_back(&dir.path().join("journal"), "svc");
    let n = back.lines.len();
    assert!(n >= 5, "{case}: {n} lines");
    let (crash, exit) = (&back.lines[n - 2], &back.lines[n - 1]);
    let boot = &back.lines[0].envelope.boot;
    assert_eq!(&crash.envelope.boot, boot);
    assert_eq!(&exit.envelope.boot, boot);
    assert_eq!(crash.envelope.seq, back.lines[n - 3].envelope.seq + 1);
    assert_eq!(exit.envelope.seq, crash.envelope.seq + 1);
    let Record::Crash(c) = &crash.record else { panic!("{case}: {:?}", crash.record) };
    assert_eq!(c.signal.as_deref(), Some(name));
    assert_eq!(c.signo, Some(signo));
    assert_eq!(c.thread, Some(u64::from(tid)));
    assert_eq!(c.minidump.as_deref(), Some(dump_path.to_str().unwrap()));
    assert_eq!(c.minidump_bytes, Some(raw.len() as u64));
    assert!(c.build_id.as_deref().is_some_and(|b| b.len() >= 16));
    assert_eq!(c.last_sample.as_ref().and_then(|s| s.rss), Some(123_456));
    assert_eq!(c.active_conversations.as_deref(), Some(&["c-in-flight".to_string()][..]));
    assert_eq!(c.dump_error, None);
    let Record::Exit(e) = &exit.record else { panic!("{case}: {:?}", exit.record) };
    assert_eq!(e.status, None, "a death by signal has no exit code");
    assert_eq!(e.signal.as_deref(), Some(name));
    assert_eq!(e.signo, Some(signo));
    assert!(e.pid.is_some() && e.uptime_ms.is_some());
    // The segment with the crash is kept past the byte budget until drained.
    let last = back.segments.last().unwrap();
    assert!(dir.path().join("journal").join(last.keep_marker()).exists());
}

#[test]
fn segv() {
    check("segv", "segv", libc::SIGSEGV, "SIGSEGV");
}

#[test]
fn abort() {
    check("abort", "abort", libc::SIGABRT, "SIGABRT");
}

#[test]
fn illegal_instruction() {
    check("illegal_instruction", "ill", libc::SIGILL, "SIGILL");
}

#[test]
fn bus_error() {
    check("bus_error", "bus", libc::SIGBUS, "SIGBUS");
}

#[test]
fn floating_point_exception() {
    check("floating_point_exception", "fpe", libc::SIGFPE, "SIGFPE");
}

#[test]
fn stack_overflow() {
    check("stack_overflow", "stack-overflow", libc::SIGSEGV, "SIGSEGV");
}

#[test]
fn a_dump_that_cannot_be_written_is_said_so_in_the_journal_and_on_stderr() {
    let (dir, out) = run_case(
        "a_dump_that_cannot_be_written_is_said_so_in_the_journal_and_on_stderr",
        "segv-no-dump",
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSEGV),
        "the true status still reaches the service manager"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no minidump: creating a dump file in"), "stderr: {stderr}");
    let back = common::read_back(&dir.path().join("journal"), "svc");
    let n = back.lines.len();
    let Record::Crash(c) = &back.lines[n - 2].record else {
        panic!("{:?}", back.lines[n - 2].record)
    };
    assert_eq!(c.signal.as_deref(), Some("SIGSEGV"));
    assert!(c.minidump.is_none());
    assert!(
        c.dump_error.as_deref().is_some_and(|e| e.contains("creating a dump file")),
        "{:?}",
        c.dump_error
    );
    assert_eq!(
        c.last_sample.as_ref().and_then(|s| s.rss),
        Some(123_456),
        "the journal still tells the story"
    );
    let Record::Exit(e) = &back.lines[n - 1].record else { panic!() };
    assert_eq!(e.signal.as_deref(), Some("SIGSEGV"));
}
