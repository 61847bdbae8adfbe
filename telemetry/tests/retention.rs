//! The byte budget with the real writer: old segments go, a segment holding a panic record
//! stays until the collector's drained marker appears.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "support/common.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use dispatch_journal::record::{Panic, TurnStart};
use dispatch_journal::{Record, SegmentName};
use dispatch_telemetry::journal::JournalBuilder;

fn segments(dir: &Path) -> Vec<SegmentName> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| SegmentName::parse(e.unwrap().file_name().to_str()?))
        .collect();
    v.sort();
    v
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fill(j: &dispatch_telemetry::journal::Journal, n: usize) {
    for i in 0..n {
        j.emit(Record::TurnStart(TurnStart {
            turn: Some(format!("{i:06}")),
            ..Default::default()
        }));
    }
}

#[test]
fn budget_deletes_old_segments_but_keeps_crash_windows_until_drained() {
    let dir = tempfile::tempdir().unwrap();
    let j = JournalBuilder::new(dir.path())
        .service("r")
        .max_segment_bytes(4096)
        .budget_bytes(32 * 1024)
        .open()
        .unwrap();
    fill(&j, 10);
    j.emit(Record::Panic(Panic { message: Some("the crash window".into()), ..Default::default() }));
    let kept = segments(dir.path()).last().unwrap().clone();
    assert!(dir.path().join(kept.keep_marker()).exists(), "keep marker written with the panic");
    fill(&j, 2000); // ~200 KB: far over the 32 KiB budget
    assert!(j.flush(Duration::from_secs(30)));
    wait_for("the budget to be enforced", || {
        let segs = segments(dir.path());
        segs.len() <= 10 && segs.first() == Some(&kept)
    });
    let segs = segments(dir.path());
    assert_eq!(segs[0], kept, "the panic's segment is still there");
    assert!(segs[1].segment > kept.segment + 10, "segments after it were deleted: {segs:?}");
    // The collector marks it drained: the next enforcement deletes it.
    std::fs::write(dir.path().join(kept.drained_marker()), b"").unwrap();
    fill(&j, 200);
    // The io thread removes the segment, then its two markers: wait for all three (checking
    // the markers the moment the segment is gone raced with the io thread).
    wait_for("the drained segment and its markers to go", || {
        !dir.path().join(kept.file_name()).exists()
            && !dir.path().join(kept.keep_marker()).exists()
            && !dir.path().join(kept.drained_marker()).exists()
    });
}

#[test]
fn a_new_boot_continues_segment_numbers_and_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let first = JournalBuilder::new(dir.path()).service("b").open().unwrap();
    let boot1 = first.boot().to_string();
    first.emit(Record::TurnStart(TurnStart::default()));
    assert!(first.flush(Duration::from_secs(10)));
    drop(first);
    let second = JournalBuilder::new(dir.path()).service("b").open().unwrap();
    assert_ne!(second.boot(), boot1);
    second.emit(Record::TurnStart(TurnStart::default()));
    assert!(second.flush(Duration::from_secs(10)));
    let segs = segments(dir.path());
    assert_eq!(segs.iter().map(|s| s.segment).collect::<Vec<_>>(), vec![0, 1]);
    use std::os::unix::fs::PermissionsExt;
    for s in &segs {
        let mode = std::fs::metadata(dir.path().join(s.file_name())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{s} is {mode:o}");
    }
    let back = common::read_back(dir.path(), "b");
    let boots: Vec<_> =
        back.lines.iter().map(|l| (l.envelope.boot.clone(), l.envelope.seq)).collect();
    assert_eq!(boots[0], (boot1.clone(), 0));
    assert_eq!(boots[1], (boot1, 1));
    assert_eq!(boots[2].1, 0, "seq restarts per boot");
}
