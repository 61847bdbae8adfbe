//! Load generator for `dispatch-server`: drives N concurrent conversations through the HTTP
//! API (streamed sim turns over SSE) against the real binary, and reports turns/s and
//! tokens/s with the memory sampler at 1 s against the sampler off (the benchmark-only
//! `--bench-sampler-off` switch), plus the server's idle RSS after start.
//!
//! ```sh
//! cargo bench -p dispatch-server --bench load -- [--conversations 16] [--seconds 10] \
//!     [--warmup 2] [--rounds 3] [--size 2000] [--idle-seconds 5]
//! ```
//!
//! Rounds rotate through three servers so drift on a shared machine hits each mode: sampler
//! at 1 s (the default), sampler off, and sampler at 10 ms. The 10 ms mode amplifies the
//! sampler's cost a hundredfold, so its overhead divided by 100 bounds the 1 s overhead even
//! when round-to-round noise is larger than the 1 s effect.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark binary, not a library

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ServerProcess, of_kind, read_journal, wait_for};

struct Options {
    conversations: usize,
    seconds: u64,
    warmup: u64,
    rounds: usize,
    size: usize,
    idle_seconds: u64,
}

fn options() -> Options {
    let mut o = Options {
        conversations: 16,
        seconds: 10,
        warmup: 2,
        rounds: 3,
        size: 2000,
        idle_seconds: 5,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (args[i].as_str(), value) {
            ("--conversations", Some(v)) => o.conversations = v as usize,
            ("--seconds", Some(v)) => o.seconds = v,
            ("--warmup", Some(v)) => o.warmup = v,
            ("--rounds", Some(v)) => o.rounds = v as usize,
            ("--size", Some(v)) => o.size = v as usize,
            ("--idle-seconds", Some(v)) => o.idle_seconds = v,
            _ => {
                i += 1; // `--bench` and other cargo flags
                continue;
            }
        }
        i += 2;
    }
    o
}

fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

struct RoundResult {
    turns_per_s: f64,
    tokens_per_s: f64,
    errors: u64,
    samples: usize,
    cost_us: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sampler1s,
    Off,
    Sampler10ms,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Sampler1s => "sampler 1 s ",
            Mode::Off => "sampler off ",
            Mode::Sampler10ms => "sampler 10 ms",
        }
    }
}

async fn round(o: &Options, mode: Mode) -> RoundResult {
    let var = tempfile::tempdir().unwrap();
    let mut args = vec!["--sim-tokens-per-sec", "0"];
    match mode {
        Mode::Sampler1s => {}
        Mode::Off => args.push("--bench-sampler-off"),
        Mode::Sampler10ms => args.extend(["--sample-interval-ms", "10"]),
    }
    let server = ServerProcess::start(var.path(), &args);
    let http = server.client();
    let mut conversations = Vec::new();
    for _ in 0..o.conversations {
        conversations.push(http.create_conversation().await);
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let turns = Arc::new(AtomicU64::new(0));
    let tokens = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let message = format!("size:{}", o.size);
    let mut workers = Vec::new();
    for c in conversations {
        let (http, message) = (http.clone(), message.clone());
        let (measuring, stop, turns, tokens, errors) =
            (measuring.clone(), stop.clone(), turns.clone(), tokens.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let events = http.stream_turn(&c, &message, |_| {}).await;
                let n = events.iter().filter(|e| e.event == "token").count() as u64;
                let ok =
                    events.last().is_some_and(|e| e.event == "end" && e.data["outcome"] == "ok");
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        turns.fetch_add(1, Ordering::Relaxed);
                        tokens.fetch_add(n, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(o.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let records = read_journal(&server.journal_dir());
    let samples = of_kind(&records, "memory.sample");
    let cost_us: Vec<u64> = samples.iter().filter_map(|s| s["cost_us"].as_u64()).collect();
    let samples = samples.len();
    RoundResult {
        turns_per_s: turns.load(Ordering::Relaxed) as f64 / elapsed,
        tokens_per_s: tokens.load(Ordering::Relaxed) as f64 / elapsed,
        errors: errors.load(Ordering::Relaxed),
        samples,
        cost_us,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

async fn idle_rss(o: &Options) {
    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(var.path(), &[]);
    let pid = server.pid();
    wait_for("two memory samples", || {
        (of_kind(&read_journal(&server.journal_dir()), "memory.sample").len() >= 2).then_some(())
    });
    let after_start = rss_kib(pid).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(o.idle_seconds)).await;
    let after_idle = rss_kib(pid).unwrap_or(0);
    let records = read_journal(&server.journal_dir());
    let last = of_kind(&records, "memory.sample").last().map(|s| (*s).clone()).unwrap();
    println!(
        "idle RSS (VmRSS, /proc/<pid>/status): {after_start} KiB after start (2 samples taken), {after_idle} KiB after {} s idle",
        o.idle_seconds
    );
    println!(
        "last memory.sample: rss {} B, jemalloc allocated {} B, resident {} B, threads {}",
        last["rss"], last["jemalloc"]["allocated"], last["jemalloc"]["resident"], last["threads"]
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let o = options();
    println!(
        "load: {} conversations, sim size:{} unthrottled, {} s measured after {} s warm-up, {} rounds per mode",
        o.conversations, o.size, o.seconds, o.warmup, o.rounds
    );
    idle_rss(&o).await;
    let modes = [Mode::Sampler1s, Mode::Off, Mode::Sampler10ms];
    let mut results: Vec<(Mode, RoundResult)> = Vec::new();
    for r in 0..o.rounds {
        // Rotate the order so slow drift on a shared machine hits every mode.
        for k in 0..modes.len() {
            let mode = modes[(r + k) % modes.len()];
            let res = round(&o, mode).await;
            println!(
                "round {} {}: {:8.1} turns/s {:10.1} tokens/s, {} errors, {} memory.sample records",
                r + 1,
                mode.name(),
                res.turns_per_s,
                res.tokens_per_s,
                res.errors,
                res.samples
            );
            results.push((mode, res));
        }
    }
    let of = |m: Mode| results.iter().filter(move |(mode, _)| *mode == m).map(|(_, r)| r);
    let med = |m: Mode, f: fn(&RoundResult) -> f64| median(of(m).map(f).collect());
    let off_t = med(Mode::Off, |r| r.turns_per_s);
    for m in modes {
        let (t, k) = (med(m, |r| r.turns_per_s), med(m, |r| r.tokens_per_s));
        println!(
            "median {}: {t:.1} turns/s, {k:.1} tokens/s, {:+.2}% turns/s vs off",
            m.name(),
            (off_t - t) / off_t * 100.0
        );
    }
    let amplified = (off_t - med(Mode::Sampler10ms, |r| r.turns_per_s)) / off_t * 100.0;
    println!(
        "overhead at 1 s implied by the 10 ms mode (100x the samples): {:+.3}%",
        amplified / 100.0
    );
    for m in [Mode::Sampler1s, Mode::Sampler10ms] {
        let mut costs: Vec<u64> = of(m).flat_map(|r| r.cost_us.iter().copied()).collect();
        costs.sort_unstable();
        if let Some(max) = costs.last().copied() {
            let med = costs[costs.len() / 2];
            println!(
                "{} sample cost under load: median {med} us, max {max} us over {} samples",
                m.name(),
                costs.len()
            );
        }
    }
}
