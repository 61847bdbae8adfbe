//! Synthetic journals with a known answer: one scenario per verdict, written as real journal
//! segments (format v1) so they go through the same collector and queries as a server's.
//!
//! Each scenario models the process the way the sampler sees it: jemalloc `allocated` is a
//! floor plus the working set of the turns in flight (plus whatever the scenario adds),
//! `resident` and RSS sit above it, and turns carry allocated and freed bytes for their task.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use dispatch_journal::record::{
    CgroupMemory, JemallocStats, Load, MemorySample, ProcessStart, SegmentHeader, TurnEnd,
    TurnStart,
};
use dispatch_journal::{Record, SegmentName, Timestamp};

use crate::{LineEncoder, Rng};

/// A scenario and the verdict it is built to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// 8 MiB/h retained by one conversation's turns under noisy diurnal load, 24 h: LEAK.
    Leak,
    /// The incident's trap: bursts of concurrent heavy turns over an idle floor of 84 MiB,
    /// ending at a 6 GB peak, so first-versus-last RSS reads as gigabytes an hour: WORKING-SET.
    Bursty,
    /// Steady, varying load over a flat floor: WORKING-SET.
    WorkingSet,
    /// A cache of loaded conversations that only grows: STATE-GROWTH.
    StateGrowth,
    /// jemalloc keeps 400 MiB resident after a burst while allocated is back down:
    /// ALLOCATOR-RETENTION.
    AllocatorRetention,
    /// RSS grows 20 MiB/h outside the heap (threads, mmap): NON-HEAP.
    NonHeap,
    /// An idle service: FLAT.
    Flat,
    /// Two minutes of samples: INSUFFICIENT-DATA.
    Insufficient,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 8] = [
        Scenario::Leak,
        Scenario::Bursty,
        Scenario::WorkingSet,
        Scenario::StateGrowth,
        Scenario::AllocatorRetention,
        Scenario::NonHeap,
        Scenario::Flat,
        Scenario::Insufficient,
    ];

    /// The verdict the scenario is built for.
    pub fn expected(self) -> &'static str {
        match self {
            Scenario::Leak => "LEAK",
            Scenario::Bursty | Scenario::WorkingSet => "WORKING-SET",
            Scenario::StateGrowth => "STATE-GROWTH",
            Scenario::AllocatorRetention => "ALLOCATOR-RETENTION",
            Scenario::NonHeap => "NON-HEAP",
            Scenario::Flat => "FLAT",
            Scenario::Insufficient => "INSUFFICIENT-DATA",
        }
    }

    /// Default length, hours.
    pub fn default_hours(self) -> f64 {
        match self {
            Scenario::Leak => 24.0,
            Scenario::Bursty => 2.5,
            Scenario::WorkingSet | Scenario::Flat | Scenario::AllocatorRetention => 6.0,
            Scenario::StateGrowth | Scenario::NonHeap => 12.0,
            Scenario::Insufficient => 2.0 / 60.0,
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    /// Scenario.
    pub scenario: Scenario,
    /// Length, hours (default: the scenario's).
    pub hours: Option<f64>,
    /// PRNG seed: the same seed gives the same journal.
    pub seed: u64,
    /// First sample time.
    pub start: Timestamp,
    /// Sample interval, ms.
    pub interval_ms: i64,
    /// Service name (segment prefix).
    pub service: String,
    /// Leak rate for `leak`, bytes per hour.
    pub leak_bytes_per_hour: f64,
}

impl SynthOptions {
    /// Defaults for `scenario`: seed 1, start 2026-06-27T00:00:00Z, 1 s samples, service
    /// `dispatch`, 8 MiB/h leak.
    pub fn new(scenario: Scenario) -> Self {
        SynthOptions {
            scenario,
            hours: None,
            seed: 1,
            start: Timestamp::from_unix_millis(1_782_518_400_000),
            interval_ms: 1000,
            service: "dispatch".into(),
            leak_bytes_per_hour: 8.0 * MIB,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SynthSummary {
    /// The scenario.
    pub scenario: &'static str,
    /// The verdict it is built for.
    pub expected: &'static str,
    /// The segment file.
    pub path: PathBuf,
    /// Lines written.
    pub lines: u64,
    /// Memory samples written.
    pub samples: u64,
    /// Turns written.
    pub turns: u64,
    /// The conversation that retains memory, for `leak`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaking_conversation: Option<String>,
    /// The boot id of the synthetic process.
    pub boot: String,
}

const MIB: f64 = 1024.0 * 1024.0;
const HOUR_MS: f64 = 3_600_000.0;
/// The conversation that retains memory in the `leak` scenario.
pub const LEAKY_CONVERSATION: &str = "conv-leaky-7";

struct SynthTurn {
    conversation: String,
    id: String,
    start: i64,
    end: i64,
    /// Working set while in flight.
    ws: f64,
    /// Bytes its task keeps after it ends.
    retained: f64,
}

/// Writes the scenario's journal into `dir` (created), one segment.
///
/// # Errors
/// The directory or file cannot be written.
pub fn generate(opts: &SynthOptions, dir: &Path) -> std::io::Result<SynthSummary> {
    let mut rng = Rng(opts.seed ^ 0x5eed);
    let hours = opts.hours.unwrap_or_else(|| opts.scenario.default_hours());
    let t0 = opts.start.unix_millis();
    let span = (hours * HOUR_MS) as i64;
    let step = opts.interval_ms.max(1);
    let turns = make_turns(opts, &mut rng, t0, span);
    let boot = format!("00000000-5e1f-4000-8000-{:012x}", opts.seed & 0xffff_ffff_ffff);
    fs::create_dir_all(dir)?;
    let name = SegmentName::new(opts.service.clone(), 0);
    let path = dir.join(name.file_name());
    let mut out = BufWriter::new(File::create(&path)?);
    let mut lines = LineEncoder::new(boot.clone(), opts.service.clone());
    let mut emit = |ts: i64, record: Record| -> std::io::Result<()> {
        let line = lines.line(ts, &record).map_err(|e| std::io::Error::other(e.to_string()))?;
        out.write_all(&line)
    };
    emit(
        t0,
        Record::SegmentHeader(SegmentHeader {
            segment: 0,
            created: Some(opts.start),
            pid: Some(4242),
            writer: Some(format!("dispatch-synth {}", env!("CARGO_PKG_VERSION"))),
        }),
    )?;
    emit(
        t0,
        Record::ProcessStart(ProcessStart {
            pid: Some(4242),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            allocator: Some("jemalloc 5.3.0 (synthetic)".into()),
            ..Default::default()
        }),
    )?;

    // Turn events in time order, merged with the samples.
    let mut events: Vec<(i64, u8, usize)> = Vec::with_capacity(turns.len() * 2);
    for (i, t) in turns.iter().enumerate() {
        events.push((t.start, 0, i));
        events.push((t.end, 1, i));
    }
    events.sort();
    let mut ev = 0;
    let mut in_flight: Vec<usize> = Vec::new();
    let mut retained_so_far = 0.0;
    let mut samples = 0u64;
    let mut ts = t0;
    while ts <= t0 + span {
        while ev < events.len() && events[ev].0 <= ts {
            let (ets, kind, i) = events[ev];
            let t = &turns[i];
            if kind == 0 {
                in_flight.push(i);
                emit(
                    ets,
                    Record::TurnStart(TurnStart {
                        conversation: Some(t.conversation.clone()),
                        turn: Some(t.id.clone()),
                        provider: Some("sim".into()),
                        model: Some("sim-1".into()),
                    }),
                )?;
            } else {
                in_flight.retain(|&x| x != i);
                retained_so_far += t.retained;
                let alloc = t.ws * (1.5 + rng.f()) + t.retained;
                emit(
                    ets,
                    Record::TurnEnd(TurnEnd {
                        conversation: Some(t.conversation.clone()),
                        turn: Some(t.id.clone()),
                        outcome: Some("ok".into()),
                        duration_ms: Some((t.end - t.start) as u64),
                        steps: Some(2),
                        alloc_bytes: Some(alloc as u64),
                        freed_bytes: Some((alloc - t.retained) as u64),
                        ..Default::default()
                    }),
                )?;
            }
            ev += 1;
        }
        let h = (ts - t0) as f64 / HOUR_MS;
        let ws: f64 = in_flight.iter().map(|&i| turns[i].ws).sum();
        let m = model(opts.scenario, h, hours, ws, retained_so_far, &mut rng);
        emit(
            ts,
            Record::MemorySample(MemorySample {
                rss: Some(m.rss as u64),
                hwm: None,
                threads: Some(m.threads),
                jemalloc: Some(JemallocStats {
                    allocated: Some(m.allocated as u64),
                    active: Some((m.allocated * 1.05) as u64),
                    resident: Some(m.resident as u64),
                    mapped: Some((m.resident * 1.1) as u64),
                    retained: Some((64.0 * MIB) as u64),
                    metadata: Some((6.0 * MIB) as u64),
                }),
                cgroup: Some(CgroupMemory {
                    current: Some((m.rss * 1.02) as u64),
                    ..Default::default()
                }),
                load: Some(Load {
                    conversations_active: Some(in_flight.len() as u64),
                    turns_in_flight: Some(in_flight.len() as u64),
                    queue_depth: Some(0),
                    conversations_loaded: Some(m.loaded as u64),
                    state_bytes: Some(m.state as u64),
                }),
                uptime_ms: Some((ts - t0) as u64),
                cost_us: Some(11),
                ..Default::default()
            }),
        )?;
        samples += 1;
        ts += step;
    }
    out.flush()?;
    Ok(SynthSummary {
        scenario: opts.scenario.expected_name(),
        expected: opts.scenario.expected(),
        path,
        lines: lines.seq,
        samples,
        turns: turns.len() as u64,
        leaking_conversation: (opts.scenario == Scenario::Leak)
            .then(|| LEAKY_CONVERSATION.to_string()),
        boot,
    })
}

impl Scenario {
    fn expected_name(self) -> &'static str {
        match self {
            Scenario::Leak => "leak",
            Scenario::Bursty => "bursty",
            Scenario::WorkingSet => "working-set",
            Scenario::StateGrowth => "state-growth",
            Scenario::AllocatorRetention => "allocator-retention",
            Scenario::NonHeap => "non-heap",
            Scenario::Flat => "flat",
            Scenario::Insufficient => "insufficient",
        }
    }
}

struct Memory {
    allocated: f64,
    resident: f64,
    rss: f64,
    threads: u64,
    loaded: f64,
    state: f64,
}

/// The process's memory at hour `h` with working set `ws` in flight and `retained` bytes kept
/// by finished turns.
fn model(s: Scenario, h: f64, hours: f64, ws: f64, retained: f64, rng: &mut Rng) -> Memory {
    let idle = 84.0 * MIB;
    let noise = 1.5 * MIB * rng.sym();
    let mut m = Memory {
        allocated: idle * 0.7 + ws + noise,
        resident: 0.0,
        rss: 0.0,
        threads: 24,
        loaded: 20.0,
        state: 4.0 * MIB,
    };
    match s {
        Scenario::Leak => m.allocated += retained,
        Scenario::StateGrowth => {
            m.loaded = 20.0 + 40.0 * h;
            m.state = 4.0 * MIB + 10.0 * MIB * h;
            m.allocated += m.state;
        }
        Scenario::AllocatorRetention => {}
        _ => {}
    }
    m.resident = m.allocated * 1.08 + 6.0 * MIB;
    if s == Scenario::AllocatorRetention && h > hours * 0.1 {
        // A burst early on left 400 MiB of dirty pages jemalloc never returned.
        m.resident = m.resident.max(idle * 0.7 + 400.0 * MIB);
    }
    m.rss = m.resident + 22.0 * MIB + MIB * rng.f();
    if s == Scenario::NonHeap {
        m.rss += 20.0 * MIB * h;
        m.threads = 24 + (h * 10.0) as u64;
    }
    m
}

fn make_turns(opts: &SynthOptions, rng: &mut Rng, t0: i64, span: i64) -> Vec<SynthTurn> {
    let mut out = Vec::new();
    let mut n = 0u64;
    let mut push =
        |out: &mut Vec<SynthTurn>, conv: String, start: i64, dur: i64, ws: f64, retained: f64| {
            n += 1;
            out.push(SynthTurn {
                conversation: conv,
                id: format!("turn-{n:06}"),
                start,
                end: start + dur,
                ws,
                retained,
            });
        };
    let hours = span as f64 / HOUR_MS;
    match opts.scenario {
        Scenario::Flat | Scenario::Insufficient => {
            // A turn now and then, small.
            let mut t = t0 + 600_000;
            while t < t0 + span {
                push(&mut out, format!("conv-{}", rng.next_u64() % 5), t, 5_000, 2.0 * MIB, 0.0);
                t += 1_800_000;
            }
        }
        Scenario::Bursty => {
            // Bursts of growing concurrency (the last one is the 6 GB peak at the window's
            // end), each over an idle floor.
            let bursts =
                [(0.25, 4usize, 200.0), (0.8, 8, 300.0), (1.45, 12, 350.0), (2.05, 16, 375.0)];
            for (i, (at_h, conc, ws_mib)) in bursts.iter().enumerate() {
                let start = t0 + (at_h * HOUR_MS) as i64;
                let dur = if i == bursts.len() - 1 {
                    span - (at_h * HOUR_MS) as i64 + 60_000
                } else {
                    1_200_000
                };
                for c in 0..*conc {
                    let stagger = (c as i64) * 20_000;
                    push(
                        &mut out,
                        format!("conv-b{c:02}"),
                        start + stagger,
                        dur - stagger,
                        ws_mib * MIB,
                        0.0,
                    );
                }
            }
        }
        _ => {
            // Diurnal Poisson-ish arrivals: 6 to 60 turns an hour, 20 s to 3 min each.
            let mut t = t0;
            let leaky_every = 300_000; // the leaky conversation: a turn every 5 min
            let leaky_turns = (span / leaky_every).max(1) as f64;
            let per_leaky = if opts.scenario == Scenario::Leak {
                opts.leak_bytes_per_hour * hours / leaky_turns
            } else {
                0.0
            };
            let mut next_leaky = t0 + 60_000;
            while t < t0 + span {
                let h = (t - t0) as f64 / HOUR_MS;
                let rate_per_h = 33.0 + 27.0 * (2.0 * std::f64::consts::PI * h / 24.0).sin();
                let gap = (-(1.0 - rng.f()).ln() * HOUR_MS / rate_per_h) as i64;
                t += gap.max(1000);
                if t >= t0 + span {
                    break;
                }
                let dur = 20_000 + (rng.f() * 160_000.0) as i64;
                let ws = (8.0 + 40.0 * rng.f()) * MIB;
                push(&mut out, format!("conv-{:02}", rng.next_u64() % 40), t, dur, ws, 0.0);
                while next_leaky <= t && next_leaky < t0 + span {
                    let ws = (8.0 + 16.0 * rng.f()) * MIB;
                    push(
                        &mut out,
                        LEAKY_CONVERSATION.to_string(),
                        next_leaky,
                        30_000,
                        ws,
                        per_leaky,
                    );
                    next_leaky += leaky_every;
                }
            }
        }
    }
    out.sort_by_key(|t| t.start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_journal() {
        let d = tempfile::tempdir().unwrap();
        let mut o = SynthOptions::new(Scenario::Flat);
        o.hours = Some(0.5);
        let a = generate(&o, &d.path().join("a")).unwrap();
        let b = generate(&o, &d.path().join("b")).unwrap();
        assert_eq!(fs::read(&a.path).unwrap(), fs::read(&b.path).unwrap());
        assert_eq!(a.samples, 1801);
        // Every line decodes and seq is gapless.
        let data = fs::read(&a.path).unwrap();
        for (i, line) in data.split(|&c| c == b'\n').filter(|l| !l.is_empty()).enumerate() {
            match dispatch_journal::decode_line(i as u64 + 1, line).unwrap() {
                dispatch_journal::Decoded::Record(l) => assert_eq!(l.envelope.seq, i as u64),
                other => panic!("{other:?}"),
            }
        }
    }
}
