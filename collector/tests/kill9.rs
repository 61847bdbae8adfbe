//! The acceptance test of exactly-once: the real journal writer rotating every 1 MiB, and the
//! collector binary SIGKILLed at 20 random points and restarted, in 20 runs. Every run must end
//! with exactly one stored record per line written: no loss, no duplicate.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use dispatch_synth::mix as synth;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dispatch_collector::{schema, status};
use dispatch_telemetry::journal::JournalBuilder;

const RUNS: u64 = 20;
const KILLS_PER_RUN: u64 = 20;

fn collector(journal: &Path, db: &Path, follow: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dispatch-collector"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DISPATCH_") {
            c.env_remove(k);
        }
    }
    c.arg("--journal").arg(journal).arg("--db").arg(db).arg("--retention-days").arg("0");
    if follow {
        c.arg("--follow");
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Lines in every segment file of `dir` (complete lines only: the writer is done).
fn lines_written(dir: &Path) -> (u64, u64) {
    let (mut lines, mut files) = (0, 0);
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "ndjson") {
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(
                bytes.last(),
                Some(&b'\n'),
                "{}: the writer left a partial line",
                p.display()
            );
            lines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
            files += 1;
        }
    }
    (lines, files)
}

fn one_run(run: u64) {
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = dir.path().join("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let db = dir.path().join("traces.db");
    let mut rng = synth::Rng(0x9e37_79b9 ^ (run + 1).wrapping_mul(0x5851_f42d));

    // The writer: about 12 MiB of the realistic mix, in bursts, so the collector is killed
    // while segments are being written, rotated and read.
    let journal = JournalBuilder::new(&journal_dir)
        .service("dispatch")
        .max_segment_bytes(1 << 20)
        .budget_bytes(1 << 30)
        .open()
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut g = synth::Gen::new(run);
            for i in 0..40_000u64 {
                let r = g.next_record();
                // A dropped line is counted by the writer and absent from the files; the
                // files are the truth this test compares with.
                let _ = journal.emit(r);
                if i % 1_000 == 999 {
                    std::thread::sleep(Duration::from_millis(15));
                }
            }
            assert!(journal.flush(Duration::from_secs(30)), "writer flushed");
            drop(journal);
            done.store(true, Ordering::Relaxed);
        })
    };

    for kill in 0..KILLS_PER_RUN {
        let mut child = collector(&journal_dir, &db, true).spawn().unwrap();
        // Early kills land in start-up (lock, migration, checkpoint load), later ones in
        // reading and committing.
        let wait_ms = if kill % 5 == 0 { rng.below(40) } else { 20 + rng.below(300) };
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success(), "run {run} kill {kill}: the collector was killed, not done");
    }
    writer.join().unwrap();
    assert!(done.load(Ordering::Relaxed));

    // Restart once more and drain to the end.
    let out = collector(&journal_dir, &db, false).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "run {run}: {}", String::from_utf8_lossy(&out.stderr));

    let (lines, files) = lines_written(&journal_dir);
    assert!(files >= 8, "run {run}: the writer rotated ({files} segments)");
    let conn = schema::open_read_only(&db).unwrap();
    let st = status::status(&conn).unwrap();
    assert_eq!(
        st.total_records(),
        lines as i64,
        "run {run}: {} records for {lines} lines ({:?})",
        st.total_records(),
        st.kinds
    );
    assert_eq!(st.ingest_errors, 0, "run {run}: nothing quarantined");
    assert_eq!(st.boots.len(), 1);
    let (_, records, last_seq) = &st.boots[0];
    assert_eq!(Some(*records - 1), *last_seq, "run {run}: seqs 0..=last each stored once");
    let dups: i64 = conn
        .query_row("SELECT count(*) - count(DISTINCT turn) FROM turn_starts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(dups, 0, "run {run}: no turn stored twice");
    // The attribution rollups, upserted in the same transactions, counted every turn once.
    let (rolled, started): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT sum(turns) FROM rollup_conversation),
                    (SELECT count(*) FROM turn_starts)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(rolled, started, "run {run}: rollup turns");
    let off: i64 = conn
        .query_row(
            "SELECT count(*) FROM rollup_conversation r
             WHERE r.turns <> (SELECT count(*) FROM turn_starts s
                               WHERE coalesce(s.conversation, '') = r.conversation)
                OR r.alloc_bytes <> (SELECT coalesce(sum(e.alloc_bytes), 0) FROM turn_ends e
                                     WHERE coalesce(e.conversation, '') = r.conversation
                                       AND coalesce(e.outcome, '') <> 'sealed')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(off, 0, "run {run}: per-conversation rollups equal their raw turns");
    // Every closed segment is drained and marked; the last one is still open.
    let mut segs: Vec<_> = std::fs::read_dir(&journal_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".ndjson"))
        .collect();
    segs.sort();
    for (i, s) in segs.iter().enumerate() {
        let marker = journal_dir.join(format!("{s}.drained")).exists();
        assert_eq!(marker, i + 1 < segs.len(), "run {run}: marker of {s}");
    }
}

#[test]
fn sigkill_at_20_random_points_in_20_runs_stores_every_line_once() {
    let started = Instant::now();
    for run in 0..RUNS {
        one_run(run);
    }
    eprintln!("{RUNS} runs x {KILLS_PER_RUN} kills in {:.1} s", started.elapsed().as_secs_f64());
}
