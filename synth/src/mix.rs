//! A journal with the realistic kind mix of a busy server, for the collector's exactly-once
//! tests and its ingest benchmark.

use dispatch_journal::record::*;
use dispatch_journal::{Record, SegmentName, Timestamp};

use crate::LineEncoder;
pub use crate::{Rng, boot_id};

/// Start of synthetic time: 2026-06-28T00:00:00.000Z.
pub const T0_MS: i64 = 1_782_604_800_000;

/// Writes lines of one boot; `seq` counts every line, headers included.
#[derive(Debug)]
pub struct Gen {
    /// The envelope's boot and seq.
    pub lines: LineEncoder,
    /// Time of the next record, Unix ms.
    pub ts_ms: i64,
    /// The generator's randomness.
    pub rng: Rng,
    /// Turns started so far.
    pub turn_no: u64,
    /// Turns started and not ended: (conversation, turn).
    pub open_turns: Vec<(String, String)>,
}

impl Gen {
    /// Lines of synthetic boot number `boot_no` (its id is [`crate::boot_id`]).
    pub fn new(boot_no: u64) -> Gen {
        Gen {
            lines: LineEncoder::new(crate::boot_id(boot_no), "dispatch"),
            ts_ms: T0_MS,
            rng: Rng(0x1234_5678 ^ boot_no.wrapping_mul(7919)),
            turn_no: 0,
            open_turns: Vec::new(),
        }
    }

    /// Encodes `record` as the next line.
    ///
    /// # Panics
    /// The record does not fit a line (the mix's records are small).
    pub fn line(&mut self, record: &Record) -> Vec<u8> {
        self.lines.line(self.ts_ms, record).expect("synthetic records fit a line")
    }

    /// The boot id of every line.
    pub fn boot(&self) -> &str {
        &self.lines.boot
    }

    /// The `journal.segment` header line of segment `n`.
    pub fn header(&mut self, n: u64) -> Vec<u8> {
        self.line(&Record::SegmentHeader(SegmentHeader {
            segment: n,
            created: Some(Timestamp::from_unix_millis(self.ts_ms)),
            pid: Some(4242),
            writer: Some("synth 0".into()),
        }))
    }

    /// A `memory.sample` with the figures `dispatchctl mem` reads (about 300 bytes with the
    /// envelope; the mix averages about 280).
    pub fn sample(&mut self) -> Record {
        let r = &mut self.rng;
        let allocated = 200_000_000 + r.below(50_000_000);
        Record::MemorySample(MemorySample {
            rss: Some(allocated + 90_000_000 + r.below(1_000_000)),
            jemalloc: Some(JemallocStats {
                allocated: Some(allocated),
                resident: Some(allocated + 30_000_000),
                ..Default::default()
            }),
            load: Some(Load {
                turns_in_flight: Some(r.below(5)),
                conversations_active: Some(r.below(8)),
                conversations_loaded: Some(40 + r.below(4)),
                ..Default::default()
            }),
            cost_us: Some(30 + r.below(40)),
            ..Default::default()
        })
    }

    /// The next record of the realistic mix: per 100 lines, 60 `memory.sample`, 25
    /// `conversation.memory`, 6 `turn.start`, 6 `turn.end`, 3 others (process, pressure,
    /// heap profile, error, repair, and a kind this build does not know is not included).
    pub fn next_record(&mut self) -> Record {
        self.ts_ms += 40;
        let pick = self.rng.below(100);
        match pick {
            0..60 => self.sample(),
            60..85 => {
                let c = self.rng.below(40);
                Record::ConversationMemory(ConversationMemory {
                    conversation: format!("c-{c:04}-5a1b7e"),
                    turns: Some(self.rng.below(200)),
                    history_bytes: Some(self.rng.below(5_000_000)),
                    alloc_bytes: Some(self.rng.below(9_000_000)),
                    freed_bytes: Some(self.rng.below(9_000_000)),
                    live_bytes: None,
                })
            }
            85..91 => {
                self.turn_no += 1;
                let conv = format!("c-{:04}-5a1b7e", self.rng.below(40));
                let turn = format!("t-{:08}-{}", self.turn_no, &self.lines.boot[..8]);
                self.open_turns.push((conv.clone(), turn.clone()));
                Record::TurnStart(TurnStart {
                    conversation: Some(conv),
                    turn: Some(turn),
                    provider: Some("sim".into()),
                    model: Some("sim-large-2026".into()),
                })
            }
            91..97 => match self.open_turns.pop() {
                Some((conv, turn)) => Record::TurnEnd(TurnEnd {
                    conversation: Some(conv),
                    turn: Some(turn),
                    outcome: Some("ok".into()),
                    duration_ms: Some(self.rng.below(60_000)),
                    steps: Some(1 + self.rng.below(6)),
                    tool_calls: Some(self.rng.below(4)),
                    output_bytes: Some(self.rng.below(20_000)),
                    alloc_bytes: Some(self.rng.below(50_000_000)),
                    freed_bytes: Some(self.rng.below(50_000_000)),
                    ..Default::default()
                }),
                None => self.sample(),
            },
            97 => Record::Pressure(Pressure {
                level: Some("high".into()),
                rss: Some(900_000_000),
                limit: Some(850_000_000),
                action: Some("shed".into()),
            }),
            98 => Record::ErrorUnhandled(ErrorUnhandled {
                message: Some("tool `shell` failed: exit status 2".into()),
                source: Some("tool".into()),
                conversation: Some("c-0007-5a1b7e".into()),
                turn: Some("t-00000001".into()),
                ..Default::default()
            }),
            _ => Record::HeapProfile(HeapProfile {
                path: Some("/var/lib/dispatch/heap/000001.pb.gz".into()),
                trigger: Some("interval".into()),
                bytes: Some(123_456),
            }),
        }
    }
}

/// Writes `lines` lines of one boot into `dir` as segments of at most `segment_bytes`, each
/// starting with its header. Returns (total lines written, file names).
///
/// # Panics
/// A segment cannot be written (this is test and benchmark support).
pub fn write_journal(
    dir: &std::path::Path,
    boot_no: u64,
    first_segment: u64,
    lines: u64,
    segment_bytes: usize,
) -> (u64, Vec<String>) {
    let mut g = Gen::new(boot_no);
    let mut names = Vec::new();
    let mut seg = first_segment;
    let mut written = 0u64;
    let mut buf = Vec::with_capacity(segment_bytes + 70_000);
    while written < lines {
        buf.clear();
        buf.extend_from_slice(&g.header(seg));
        written += 1;
        while written < lines && buf.len() < segment_bytes {
            let r = g.next_record();
            buf.extend_from_slice(&g.line(&r));
            written += 1;
        }
        let name = SegmentName::new("dispatch", seg).file_name();
        std::fs::write(dir.join(&name), &buf).expect("writing a synthetic segment");
        names.push(name);
        seg += 1;
    }
    (written, names)
}
