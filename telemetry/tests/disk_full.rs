//! The journal on a filesystem that fills up, for real: a 64 KiB tmpfs mounted by the test
//! (CI runs as root; the test fails, never skips, when it cannot mount). Writes that do not
//! fit are dropped and counted, a line cut by the full disk is never left torn in the segment,
//! the journal says what failed, and once space returns it writes again without a reopen: a
//! `journal.dropped` record carries the count, the sampler's counter has it, and the segment
//! reads back line by line with consecutive seqs.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use dispatch_journal::Record;
use dispatch_journal::record::TurnStart;
use dispatch_telemetry::journal::JournalBuilder;

#[path = "../../server/tests/common/tmpfs.rs"]
mod tmpfs;
use tmpfs::Tmpfs;

fn turn(i: u64) -> Record {
    Record::TurnStart(TurnStart {
        conversation: Some("c".into()),
        turn: Some(format!("turn-{i:06}-{}", "x".repeat(100))),
        ..Default::default()
    })
}

#[test]
fn a_full_disk_drops_and_counts_lines_tears_none_and_recovers_in_place() {
    let root = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&root.path().join("fs"), "64k");
    let dir = fs.0.join("journal");
    let journal = JournalBuilder::new(&dir)
        .service("full")
        .lock_wait(Duration::from_secs(30))
        .open()
        .unwrap();
    // Fill what is left but a little, so that the next lines run into the end of the disk.
    let filler = fs.0.join("filler");
    let mut size = 64 * 1024;
    while size > 0 {
        if std::fs::write(&filler, vec![0u8; size]).is_ok() {
            break;
        }
        size -= 4096;
    }
    let mut emitted = 0u64;
    let mut refused = 0u64;
    for i in 0..400 {
        if journal.emit(turn(i)) {
            emitted += 1;
        } else {
            refused += 1;
        }
    }
    assert!(refused > 0, "the disk filled: {emitted} written, {refused} refused");
    assert!(!journal.is_healthy());
    let error = journal.last_write_error().unwrap();
    assert!(error.contains("No space left on device") && error.contains("full."), "{error}");
    assert_eq!(journal.stats().lines_dropped, refused, "every refused line is counted");

    // Space returns: the same journal writes again, and says what it lost.
    std::fs::remove_file(&filler).unwrap();
    assert!(journal.emit(turn(10_000)), "writes again once there is space");
    assert!(journal.is_healthy() && journal.last_write_error().is_none());
    assert_eq!(journal.take_dropped(), refused, "the next sample's `dropped`");
    assert!(journal.flush(Duration::from_secs(5)));

    let mut lines = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ndjson") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.ends_with('\n'), "{}: ends in a whole line", path.display());
            lines.extend(text.lines().map(str::to_owned));
        }
    }
    let mut seqs = Vec::new();
    let mut dropped_records = 0;
    let mut turns = 0;
    for (n, line) in lines.iter().enumerate() {
        let decoded = dispatch_journal::decode_line(n as u64 + 1, line.as_bytes())
            .unwrap_or_else(|e| panic!("torn or corrupt ({e}): {line:?}"));
        let dispatch_journal::Decoded::Record(decoded) = decoded else {
            panic!("line {}: not a record of this build: {line:?}", n + 1)
        };
        seqs.push(decoded.envelope.seq);
        match decoded.record {
            Record::JournalDropped(d) => {
                dropped_records += 1;
                assert_eq!(d.count, refused, "the record carries the count");
            }
            Record::TurnStart(_) => turns += 1,
            _ => {}
        }
    }
    assert_eq!(dropped_records, 1, "one journal.dropped record");
    assert_eq!(turns, emitted + 1, "every line emit said was written is there");
    let expected: Vec<u64> = (seqs[0]..seqs[0] + seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "consecutive seqs: a dropped line takes no seq");
}
