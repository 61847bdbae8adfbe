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
//! Rounds alternate sampler-on and sampler-off servers so drift on a shared machine hits both.

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

async fn round(o: &Options, sampler_on: bool) -> RoundResult {
    let var = tempfile::tempdir().unwrap();
    let mut args = vec!["--sim-tokens-per-sec", "0"];
    if !sampler_on {
        args.push("--bench-sampler-off");
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
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for r in 0..o.rounds {
        // Alternate which mode goes first so slow drift on a shared machine hits both.
        let order = if r % 2 == 0 { [true, false] } else { [false, true] };
        for sampler_on in order {
            let res = round(&o, sampler_on).await;
            println!(
                "round {} sampler {:3}: {:8.1} turns/s {:10.1} tokens/s, {} errors, {} memory.sample records",
                r + 1,
                if sampler_on { "on" } else { "off" },
                res.turns_per_s,
                res.tokens_per_s,
                res.errors,
                res.samples
            );
            if sampler_on { on.push(res) } else { off.push(res) }
        }
    }
    let m = |v: &[RoundResult], f: fn(&RoundResult) -> f64| median(v.iter().map(f).collect());
    let (on_t, off_t) = (m(&on, |r| r.turns_per_s), m(&off, |r| r.turns_per_s));
    let (on_k, off_k) = (m(&on, |r| r.tokens_per_s), m(&off, |r| r.tokens_per_s));
    println!("median sampler on : {on_t:.1} turns/s, {on_k:.1} tokens/s");
    println!("median sampler off: {off_t:.1} turns/s, {off_k:.1} tokens/s");
    println!("sampling overhead (turns/s, median): {:+.2}%", (off_t - on_t) / off_t * 100.0);
    let mut costs: Vec<u64> = on.iter().flat_map(|r| r.cost_us.iter().copied()).collect();
    costs.sort_unstable();
    if let (Some(max), false) = (costs.last(), costs.is_empty()) {
        let med = costs[costs.len() / 2];
        println!(
            "sample cost under load: median {med} us, max {max} us over {} samples = {:.3}% of one core at 1 Hz",
            costs.len(),
            med as f64 / 1e6 * 100.0
        );
    }
}
