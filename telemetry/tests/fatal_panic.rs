//! A fatal panic (on the real main thread, so this test has its own `main`) outside any turn:
//! the `panic` record is journaled, the monitor writes a minidump, and the monitor exits with
//! the child's status 101.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[cfg(feature = "crash")]
#[path = "support/common.rs"]
mod common;

#[cfg(not(feature = "crash"))]
fn main() {
    println!("fatal_panic: needs --features crash; 0 passed, 0 failed");
}

#[cfg(feature = "crash")]
fn main() {
    use std::time::Duration;

    use dispatch_journal::Record;
    use dispatch_telemetry::crash::{CrashBuilder, install_panic_hook};
    use dispatch_telemetry::journal::JournalBuilder;

    const DIR: &str = "DISPATCH_TEST_FATAL_DIR";
    if let Ok(dir) = std::env::var(DIR) {
        // The service: monitor (never returns here) or child.
        let dir = std::path::PathBuf::from(dir);
        let supervised =
            CrashBuilder::new(dir.join("journal"), dir.join("crashes")).service("f").start();
        let journal = JournalBuilder::new(dir.join("journal"))
            .service("f")
            .boot_id(supervised.boot_id())
            .open()
            .unwrap();
        let supervised = std::sync::Arc::new(supervised);
        let s = supervised.clone();
        install_panic_hook(
            journal.clone(),
            Some(Box::new(move || {
                if let Some(g) = s.guard() {
                    g.dump_now();
                }
            })),
        );
        let _ = journal.flush(Duration::from_secs(5));
        panic!("fatal: configuration invariant broken");
    }

    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .env(DIR, dir.path())
        .env("RUST_BACKTRACE", "0")
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(101), "the monitor exits with the child's panic status");
    let back = common::read_back(&dir.path().join("journal"), "f");
    let panic = back
        .lines
        .iter()
        .find_map(|l| match &l.record {
            Record::Panic(p) => Some(p),
            _ => None,
        })
        .expect("panic record");
    assert_eq!(panic.fatal, Some(true));
    assert_eq!(panic.thread.as_deref(), Some("main"));
    assert_eq!(panic.message.as_deref(), Some("fatal: configuration invariant broken"));
    let crash = back
        .lines
        .iter()
        .find_map(|l| match &l.record {
            Record::Crash(c) => Some(c),
            _ => None,
        })
        .expect("crash record for the fatal panic's dump");
    let dump = std::path::PathBuf::from(crash.minidump.as_deref().expect("a dump was written"));
    minidump::Minidump::read_path(&dump).expect("the dump parses");
    let exit = back.lines.last().unwrap();
    let Record::Exit(e) = &exit.record else { panic!("last record is {:?}", exit.record) };
    assert_eq!(e.status, Some(101));
    assert_eq!(e.signal, None);
    println!("fatal_panic: 1 passed, 0 failed");
}
