//! A child process writing continuously is SIGKILLed: it loses at most the line in flight, and
//! a critical record written just before the kill is on disk. Each child is this test binary
//! re-executed with `DISPATCH_TEST_CHILD` set.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "support/common.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use dispatch_journal::Record;
use dispatch_journal::record::{Panic, TurnStart};
use dispatch_telemetry::journal::JournalBuilder;

const CHILD: &str = "DISPATCH_TEST_CHILD";
const CHILD_DIR: &str = "DISPATCH_TEST_CHILD_DIR";

/// The child: emit forever, printing `emitted N` after emit N returned.
fn child(dir: &Path, critical: bool) -> ! {
    let journal = JournalBuilder::new(dir)
        .service("k")
        .max_segment_bytes(64 * 1024)
        // Wait for the lock as long as it takes: nothing is queued, so what `emit` returned
        // for has had its write(2).
        .lock_wait(Duration::from_secs(30))
        .open()
        .unwrap();
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    for i in 0u64.. {
        if critical && i == 1000 {
            journal.emit(Record::Panic(Panic {
                message: Some("critical before kill".into()),
                fatal: Some(true),
                ..Default::default()
            }));
            writeln!(out, "critical-done").unwrap();
            out.flush().unwrap();
        }
        journal.emit(Record::TurnStart(TurnStart {
            conversation: Some("c".into()),
            turn: Some(i.to_string()),
            ..Default::default()
        }));
        writeln!(out, "emitted {i}").unwrap();
        out.flush().unwrap();
    }
    unreachable!()
}

fn spawn_child(test: &str, dir: &Path, critical: bool) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, if critical { "critical" } else { "plain" })
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn kill9(child: &mut std::process::Child) {
    let status = Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "child died by SIGKILL: {status:?}");
}

fn maybe_be_child() {
    if let (Ok(mode), Ok(dir)) = (std::env::var(CHILD), std::env::var(CHILD_DIR)) {
        child(Path::new(&dir), mode == "critical");
    }
}

#[test]
fn sigkill_loses_at_most_the_line_in_flight() {
    maybe_be_child();
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let mut c = spawn_child("sigkill_loses_at_most_the_line_in_flight", dir.path(), false);
        let mut reader = BufReader::new(c.stdout.take().unwrap());
        let mut last_reported: Option<u64> = None;
        let stop_after = 2_000 + round * 3_000;
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 {
            if let Some(n) = line.trim().strip_prefix("emitted ") {
                let n: u64 = n.parse().unwrap();
                last_reported = Some(n);
                if n >= stop_after {
                    break;
                }
            }
            line.clear();
        }
        kill9(&mut c);
        let last_reported = last_reported.expect("child emitted lines");
        let back = common::read_back(dir.path(), "k");
        assert!(back.segments.len() > 1, "the child rotated");
        // Seq is gapless from 0, and the turns are gapless from 0.
        let mut turns = Vec::new();
        for (i, l) in back.lines.iter().enumerate() {
            assert_eq!(l.envelope.seq, i as u64);
            if let Record::TurnStart(t) = &l.record {
                turns.push(t.turn.as_deref().unwrap().parse::<u64>().unwrap());
            }
        }
        for (i, t) in turns.iter().enumerate() {
            assert_eq!(*t, i as u64, "turns gapless and once");
        }
        let on_disk = turns.len() as u64;
        // Everything emit returned for is on disk; beyond it, at most the line in flight
        // (complete or torn) plus those the child emitted while we read its stdout.
        assert!(on_disk > last_reported, "line {last_reported} was reported but is not on disk");
        assert!(back.torn_tail.is_none_or(|b| b > 0));
    }
}

#[test]
fn critical_record_before_sigkill_is_on_disk() {
    maybe_be_child();
    let dir = tempfile::tempdir().unwrap();
    let mut c = spawn_child("critical_record_before_sigkill_is_on_disk", dir.path(), true);
    let mut reader = BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "child ended before the critical record");
        if line.trim() == "critical-done" {
            break;
        }
    }
    kill9(&mut c);
    let back = common::read_back(dir.path(), "k");
    let panics: Vec<_> =
        back.lines.iter().filter(|l| matches!(l.record, Record::Panic(_))).collect();
    assert_eq!(panics.len(), 1, "the panic record is on disk exactly once");
    // Its segment carries the keep marker, so the byte budget will not delete it undrained.
    let seg = back
        .segments
        .iter()
        .find(|s| {
            std::fs::read_to_string(dir.path().join(s.file_name()))
                .unwrap()
                .contains("\"kind\":\"panic\"")
        })
        .unwrap();
    assert!(dir.path().join(seg.keep_marker()).exists(), "{} has no keep marker", seg);
}
