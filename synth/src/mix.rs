//! Journals with the kind mix of a server, for the collector's exactly-once tests and its
//! ingest benchmark: [`Mix::STANDARD`] (a lightly loaded server, the tests' mix) and
//! [`Mix::BUSY`] (a server under load: mostly samples and turn records, UUID ids over 10k
//! conversations, 30 days of 1 Hz samples in 3.7M lines).

use dispatch_journal::record::*;
use dispatch_journal::{Record, SegmentName, Timestamp};

use crate::LineEncoder;
pub use crate::{Rng, boot_id};

/// Start of synthetic time: 2026-06-28T00:00:00.000Z.
pub const T0_MS: i64 = 1_782_604_800_000;

/// A kind mix: lines per 100 of each kind (the rest, 3 per 100, are pressure, error and heap
/// profile records), the conversations turns and memory records name, and the time between
/// lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// `memory.sample` lines per 100.
    pub samples: u64,
    /// `conversation.memory` lines per 100.
    pub conversation_memory: u64,
    /// `turn.start` lines per 100, and as many `turn.end` lines.
    pub turns: u64,
    /// Distinct conversations.
    pub conversations: u64,
    /// Conversation and turn ids are random UUIDs (as the server writes them) instead of
    /// short ordered names.
    pub uuid_ids: bool,
    /// Milliseconds between lines.
    pub line_ms: i64,
}

impl Mix {
    /// The tests' mix: 60 samples, 25 conversation memory records, 6 turn starts and 6 ends
    /// per 100 lines over 40 conversations with short ids, 40 ms apart.
    pub const STANDARD: Mix = Mix {
        samples: 60,
        conversation_memory: 25,
        turns: 6,
        conversations: 40,
        uuid_ids: false,
        line_ms: 40,
    };

    /// A busy server: 70 samples, 7 conversation memory records, 10 turn starts and 10 ends
    /// per 100 lines, over 10,000 conversations with UUID ids, 700 ms apart (about 1.4 lines
    /// a second with one sample a second: 3.7M lines are 30 days).
    pub const BUSY: Mix = Mix {
        samples: 70,
        conversation_memory: 7,
        turns: 10,
        conversations: 10_000,
        uuid_ids: true,
        line_ms: 700,
    };

    /// The mix called `name` (`standard` or `busy`).
    pub fn named(name: &str) -> Option<Mix> {
        match name {
            "standard" => Some(Mix::STANDARD),
            "busy" => Some(Mix::BUSY),
            _ => None,
        }
    }
}

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
    /// The kind mix.
    pub mix: Mix,
    /// The conversation ids of a [`Mix::uuid_ids`] mix.
    conversation_ids: Vec<String>,
}

impl Gen {
    /// Lines of synthetic boot number `boot_no` (its id is [`crate::boot_id`]).
    pub fn new(boot_no: u64) -> Gen {
        Gen::with_mix(boot_no, Mix::STANDARD)
    }

    /// Lines of synthetic boot number `boot_no` in `mix`.
    pub fn with_mix(boot_no: u64, mix: Mix) -> Gen {
        let conversation_ids = if mix.uuid_ids {
            let mut r = Rng(0xc0_5e ^ boot_no);
            (0..mix.conversations).map(|_| crate::uuid_v4(&mut r)).collect()
        } else {
            Vec::new()
        };
        Gen {
            lines: LineEncoder::new(crate::boot_id(boot_no), "dispatch"),
            ts_ms: T0_MS,
            rng: Rng(0x1234_5678 ^ boot_no.wrapping_mul(7919)),
            turn_no: 0,
            open_turns: Vec::new(),
            mix,
            conversation_ids,
        }
    }

    /// A conversation id of the mix.
    fn conversation(&mut self) -> String {
        let c = self.rng.below(self.mix.conversations);
        match self.conversation_ids.get(c as usize) {
            Some(id) => id.clone(),
            None => format!("c-{c:04}-5a1b7e"),
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

    /// The next record of the mix (see [`Mix`]; the standard mix per 100 lines: 60
    /// `memory.sample`, 25 `conversation.memory`, 6 `turn.start`, 6 `turn.end`, then one each
    /// of pressure, error and heap profile).
    pub fn next_record(&mut self) -> Record {
        self.ts_ms += self.mix.line_ms;
        let m = self.mix;
        let pick = self.rng.below(100);
        let memory = m.samples + m.conversation_memory;
        let starts = memory + m.turns;
        let ends = starts + m.turns;
        if pick < m.samples {
            self.sample()
        } else if pick < memory {
            let conversation = self.conversation();
            Record::ConversationMemory(ConversationMemory {
                conversation,
                turns: Some(self.rng.below(200)),
                history_bytes: Some(self.rng.below(5_000_000)),
                alloc_bytes: Some(self.rng.below(9_000_000)),
                freed_bytes: Some(self.rng.below(9_000_000)),
                live_bytes: None,
            })
        } else if pick < starts {
            self.turn_no += 1;
            let conv = self.conversation();
            let turn = if m.uuid_ids {
                crate::uuid_v4(&mut self.rng)
            } else {
                format!("t-{:08}-{}", self.turn_no, &self.lines.boot[..8])
            };
            self.open_turns.push((conv.clone(), turn.clone()));
            Record::TurnStart(TurnStart {
                conversation: Some(conv),
                turn: Some(turn),
                provider: Some("sim".into()),
                model: Some("sim-large-2026".into()),
            })
        } else if pick < ends {
            match self.open_turns.pop() {
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
            }
        } else {
            self.other(pick - ends)
        }
    }

    /// One of the rare kinds: 0 pressure, 1 an error, else a heap profile.
    fn other(&mut self, which: u64) -> Record {
        match which {
            0 => Record::Pressure(Pressure {
                level: Some("high".into()),
                rss: Some(900_000_000),
                limit: Some(850_000_000),
                action: Some("shed".into()),
            }),
            1 => Record::ErrorUnhandled(ErrorUnhandled {
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
    write_journal_mix(dir, boot_no, first_segment, lines, segment_bytes, Mix::STANDARD)
}

/// [`write_journal`] in `mix`.
///
/// # Panics
/// A segment cannot be written (this is test and benchmark support).
pub fn write_journal_mix(
    dir: &std::path::Path,
    boot_no: u64,
    first_segment: u64,
    lines: u64,
    segment_bytes: usize,
    mix: Mix,
) -> (u64, Vec<String>) {
    let mut g = Gen::with_mix(boot_no, mix);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(mix: Mix, n: usize) -> std::collections::HashMap<&'static str, usize> {
        let mut g = Gen::with_mix(5, mix);
        let mut by = std::collections::HashMap::new();
        for _ in 0..n {
            *by.entry(g.next_record().kind()).or_default() += 1;
        }
        by
    }

    #[test]
    fn busy_mix_is_mostly_samples_and_turn_records() {
        let by = kinds(Mix::BUSY, 20_000);
        let per100 = |k: &str| by.get(k).copied().unwrap_or(0) as f64 / 200.0;
        assert!((per100("memory.sample") - 70.0).abs() < 3.0, "{by:?}");
        assert!((per100("turn.start") - 10.0).abs() < 1.5, "{by:?}");
        assert!((per100("turn.end") - 10.0).abs() < 1.5, "{by:?}");
        assert!((per100("conversation.memory") - 7.0).abs() < 1.5, "{by:?}");
        let std = kinds(Mix::STANDARD, 20_000);
        let per100 = |k: &str| std.get(k).copied().unwrap_or(0) as f64 / 200.0;
        assert!((per100("conversation.memory") - 25.0).abs() < 2.0, "{std:?}");
    }

    #[test]
    fn busy_ids_are_uuids_over_many_conversations() {
        let mut g = Gen::with_mix(5, Mix::BUSY);
        let mut conversations = std::collections::HashSet::new();
        for _ in 0..20_000 {
            if let Record::TurnStart(t) = g.next_record() {
                let (c, id) = (t.conversation.unwrap(), t.turn.unwrap());
                for s in [&c, &id] {
                    assert_eq!(s.len(), 36, "{s}");
                    assert_eq!(&s[14..15], "4", "version nibble of {s}");
                }
                conversations.insert(c);
            }
        }
        assert!(conversations.len() > 1_000, "{} conversations", conversations.len());
        assert_eq!(Mix::named("busy"), Some(Mix::BUSY));
        assert_eq!(Mix::named("standard"), Some(Mix::STANDARD));
        assert_eq!(Mix::named("light"), None);
    }

    #[test]
    fn thirty_days_of_busy_lines_is_3_7_million() {
        let days = 3_700_000.0 * Mix::BUSY.line_ms as f64 / 86_400_000.0;
        assert!((days - 30.0).abs() < 0.5, "{days}");
        let mut g = Gen::with_mix(5, Mix::BUSY);
        let t0 = g.ts_ms;
        g.next_record();
        assert_eq!(g.ts_ms - t0, 700);
    }
}
