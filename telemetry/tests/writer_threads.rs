//! Eight threads x 100k lines with rotation every 1 MiB: every line on disk exactly once, in
//! `seq` order, nothing torn or interleaved. And drops are counted, never silent.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "support/common.rs"]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use dispatch_journal::Record;
use dispatch_journal::record::{ProcessStart, TurnStart};
use dispatch_telemetry::journal::JournalBuilder;

const THREADS: usize = 8;
const PER_THREAD: usize = 100_000;

#[test]
fn eight_threads_every_line_once_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let journal = JournalBuilder::new(dir.path())
        .service("t")
        .max_segment_bytes(1 << 20)
        // The property under test is ordering and exactly-once, not the drop policy: give
        // the queue room for every line so none can be dropped even on a starved machine.
        .queue_lines(THREADS * PER_THREAD)
        .open()
        .unwrap();
    let journal = Arc::new(journal);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let j = journal.clone();
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let ok = j.emit(Record::TurnStart(TurnStart {
                        conversation: Some(format!("thread-{t}")),
                        turn: Some(i.to_string()),
                        ..Default::default()
                    }));
                    assert!(ok, "line {t}/{i} dropped");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(journal.flush(Duration::from_secs(60)), "flush timed out");
    let stats = journal.stats();
    assert_eq!(stats.lines_dropped, 0);

    let back = common::read_back(dir.path(), "t");
    assert_eq!(back.torn_tail, None);
    assert!(back.segments.len() > 50, "rotation every 1 MiB: {} segments", back.segments.len());
    let boot = journal.boot().to_string();
    let mut seen = HashSet::new();
    let mut per_thread_last = [None::<usize>; THREADS];
    for (expect_seq, line) in back.lines.iter().enumerate() {
        assert_eq!(line.envelope.boot, boot);
        assert_eq!(line.envelope.seq, expect_seq as u64, "seq order in the file");
        if let Record::TurnStart(t) = &line.record {
            let conv = t.conversation.as_deref().unwrap();
            let thread: usize = conv.strip_prefix("thread-").unwrap().parse().unwrap();
            let i: usize = t.turn.as_deref().unwrap().parse().unwrap();
            assert!(seen.insert((thread, i)), "duplicate line {thread}/{i}");
            // A thread's own lines keep its emit order.
            if let Some(prev) = per_thread_last[thread] {
                assert!(i > prev, "thread {thread}: {i} after {prev}");
            }
            per_thread_last[thread] = Some(i);
        }
    }
    assert_eq!(seen.len(), THREADS * PER_THREAD, "every line on disk");
    // Every segment starts with its header, whose number matches the file name.
    for name in &back.segments {
        let data = std::fs::read(dir.path().join(name.file_name())).unwrap();
        let first = data.split(|&b| b == b'\n').next().unwrap();
        let Ok(dispatch_journal::Decoded::Record(l)) = dispatch_journal::decode_line(1, first)
        else {
            panic!("{name}: first line is not a record");
        };
        let Record::SegmentHeader(h) = l.record else { panic!("{name}: no header first") };
        assert_eq!(h.segment, name.segment);
        assert!(data.len() as u64 <= (1 << 20), "{name} is {} bytes", data.len());
    }
}

#[test]
fn drops_are_counted_and_reported_never_silent() {
    let dir = tempfile::tempdir().unwrap();
    let journal = JournalBuilder::new(dir.path())
        .service("d")
        .queue_lines(1)
        .lock_wait(Duration::ZERO)
        .open()
        .unwrap();
    // One record that cannot be encoded at all (10k short entries: nothing to cut).
    let config = (0..10_000).map(|i| (format!("k{i}"), serde_json::Value::from(i))).collect();
    assert!(
        !journal.emit(Record::ProcessStart(ProcessStart {
            config: Some(config),
            ..Default::default()
        }))
    );
    // And contention with a one-line queue and no lock wait: some lines are dropped.
    let journal = Arc::new(journal);
    let emitted_ok: usize = (0..4)
        .map(|t| {
            let j = journal.clone();
            std::thread::spawn(move || {
                (0..20_000)
                    .filter(|i| {
                        j.emit(Record::TurnStart(TurnStart {
                            turn: Some(format!("{t}-{i}")),
                            ..Default::default()
                        }))
                    })
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .sum();
    assert!(journal.flush(Duration::from_secs(60)));
    // Make sure the last drops are reported: one more emit writes `journal.dropped`.
    journal.emit(Record::TurnStart(TurnStart { turn: Some("last".into()), ..Default::default() }));
    assert!(journal.flush(Duration::from_secs(60)));
    let stats = journal.stats();
    let back = common::read_back(dir.path(), "d");
    let turns = back.lines.iter().filter(|l| matches!(l.record, Record::TurnStart(_))).count();
    let reported: u64 = back
        .lines
        .iter()
        .filter_map(|l| match &l.record {
            Record::JournalDropped(d) => Some(d.count),
            _ => None,
        })
        .sum();
    assert_eq!(turns, emitted_ok + 1, "every accepted line is on disk");
    assert_eq!(stats.lines_dropped, 1 + (80_000 - emitted_ok) as u64);
    assert_eq!(reported, stats.lines_dropped, "every drop is reported in the journal");
    assert_eq!(journal.take_dropped(), stats.lines_dropped, "and handed to the next sample");
}
