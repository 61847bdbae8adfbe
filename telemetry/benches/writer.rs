//! Journal writer throughput: lines/s and MB/s with 1 and 8 producer threads.
//!
//! `cargo bench -p dispatch-telemetry --bench writer [-- LINES]` (default 1,000,000 lines per
//! run, three runs per thread count, median reported). Each run opens a fresh journal in a
//! temporary directory under `$TMPDIR` with the default 64 MiB segments, emits `turn.end`
//! records of about 250 bytes, and stops the clock after `flush` (every line written and
//! `fdatasync`ed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatch_journal::Record;
use dispatch_journal::record::TurnEnd;
use dispatch_telemetry::journal::JournalBuilder;

fn record(t: usize, i: usize) -> Record {
    Record::TurnEnd(TurnEnd {
        conversation: Some(format!("c-{t:02}-7f3a9e2b41d0")),
        turn: Some(format!("t-{i:08}")),
        outcome: Some("ok".into()),
        duration_ms: Some(1234 + i as u64 % 1000),
        steps: Some(3),
        tool_calls: Some(2),
        output_bytes: Some(48_211),
        tool_output_truncated: Some(false),
        alloc_bytes: Some(9_437_184 + i as u64),
        freed_bytes: Some(9_400_000 + i as u64),
        error: None,
    })
}

fn run(threads: usize, lines: usize) -> (f64, f64, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = Arc::new(JournalBuilder::new(dir.path()).service("bench").open().expect("open"));
    let per = lines / threads;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let j = journal.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    j.emit(record(t, i));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("producer");
    }
    assert!(journal.flush(Duration::from_secs(120)), "flush");
    let secs = start.elapsed().as_secs_f64();
    let bytes: u64 = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    let dropped = journal.stats().lines_dropped;
    ((threads * per) as f64 / secs, bytes as f64 / secs / 1e6, dropped)
}

/// The anchor: `dd` appending the same number of same-sized blocks (one write(2) each, no
/// encoding, no lock), then fdatasync, to a file in the same temp directory.
fn dd_anchor(lines: usize, block: usize) -> Option<f64> {
    let dir = tempfile::tempdir().ok()?;
    let out = dir.path().join("dd.out");
    let start = Instant::now();
    let status = std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", out.display()))
        .arg(format!("bs={block}"))
        .arg(format!("count={lines}"))
        .arg("oflag=append")
        .arg("conv=notrunc,fdatasync")
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| lines as f64 / start.elapsed().as_secs_f64())
}

fn main() {
    let lines: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    println!("journal writer, {lines} lines per run, median of 3");
    let mut sample = Vec::new();
    dispatch_journal::PendingLine::encode(
        dispatch_journal::Timestamp::now(),
        "6f1c2d9e-8a41-4b7e-9a55-0c1e2f3a4b5c",
        "bench",
        &record(0, 0),
    )
    .expect("encodes")
    .finish_into(123_456, &mut sample);
    println!("line size: {} bytes", sample.len());
    match dd_anchor(lines, sample.len()) {
        Some(lps) => println!(
            "anchor dd bs={} count={lines} oflag=append conv=fdatasync: lines/s={lps:>10.0}",
            sample.len()
        ),
        None => println!("anchor dd: not available"),
    }
    for threads in [1, 8] {
        let mut runs: Vec<_> = (0..3).map(|_| run(threads, lines)).collect();
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (lps, mbs, dropped) = runs[1];
        println!(
            "threads={threads:<2} lines/s={lps:>10.0} MB/s={mbs:>7.1} dropped={dropped} (runs: {})",
            runs.iter().map(|r| format!("{:.0}", r.0)).collect::<Vec<_>>().join(", ")
        );
    }
}
