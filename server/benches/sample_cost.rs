//! The memory sample's cost as the server itself pays it: starts the real `dispatch-server`
//! (idle, sim provider, a scratch var directory, the sampler every 100 ms), waits for the
//! samples, reads back the `cost_us` the server journaled in each `memory.sample`
//! (docs/JOURNAL.md) and prints median, p90, min and max.
//!
//! ```sh
//! cargo bench -p dispatch-server --bench sample_cost -- [--samples 200] [--interval-ms 100] \
//!     [--warmup 10] [--binary PATH] [--malloc-conf OPTIONS] [--no-steps]
//! ```
//!
//! `cargo bench` builds the server with the bench profile (the release profile plus line
//! tables), so this measures the optimised binary. `--binary` measures another build (a saved
//! binary of an older commit, for a before/after in the same session). The first `--warmup`
//! samples (start-up: the first one runs while the server is still opening its store) are not
//! counted. `telemetry/benches/sampler.rs` measures `MemoryProbe::sample` in a tight loop of
//! its own process; this one is the figure the server reports.
//!
//! A second server, started with the hidden `--bench-sample-steps` switch, prints the wall time
//! of each step of each sample to its stderr; their medians are the breakdown (the headline
//! figure comes from the first server, which prints nothing). Skip it with `--no-steps`.
//! `--malloc-conf` starts both with `_RJEM_MALLOC_CONF` set (jemalloc options on top of the
//! compiled-in ones, e.g. `narenas:1`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark binary, not a library

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{ServerProcess, of_kind, read_journal};

struct Options {
    samples: usize,
    interval_ms: u64,
    warmup: usize,
    binary: PathBuf,
    steps: bool,
    malloc_conf: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        samples: 200,
        interval_ms: 100,
        warmup: 10,
        binary: PathBuf::from(env!("CARGO_BIN_EXE_dispatch-server")),
        steps: true,
        malloc_conf: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1);
        let number = value.and_then(|v| v.parse::<u64>().ok());
        match (args[i].as_str(), number) {
            ("--samples", Some(v)) => o.samples = v as usize,
            ("--interval-ms", Some(v)) => o.interval_ms = v,
            ("--warmup", Some(v)) => o.warmup = v as usize,
            ("--binary", _) if value.is_some() => o.binary = PathBuf::from(value.unwrap()),
            ("--malloc-conf", _) if value.is_some() => o.malloc_conf = value.cloned(),
            ("--no-steps", _) => {
                o.steps = false;
                i += 1;
                continue;
            }
            _ => {
                i += 1; // `--bench` and other cargo flags
                continue;
            }
        }
        i += 2;
    }
    o
}

/// Runs one idle server until it journaled `samples + warmup` samples; returns the counted
/// `cost_us` values and the server's stderr.
fn run(o: &Options, extra: &[&str]) -> (Vec<u64>, String) {
    let var = tempfile::tempdir().unwrap();
    let interval = o.interval_ms.to_string();
    let mut args = vec!["--sample-interval-ms", interval.as_str()];
    args.extend_from_slice(extra);
    // jemalloc reads `_RJEM_MALLOC_CONF` (the prefixed `MALLOC_CONF`) after the compiled-in
    // options, so it overrides them: the experiments of docs/BENCHMARKS.md.
    let envs: Vec<(&str, &str)> =
        o.malloc_conf.iter().map(|c| ("_RJEM_MALLOC_CONF", c.as_str())).collect();
    let server = ServerProcess::start_binary(&o.binary, var.path(), &args, &envs);
    let boot = {
        let records = read_journal(&server.journal_dir());
        of_kind(&records, "process.start")
            .into_iter()
            .find(|r| r["pid"] == server.pid())
            .and_then(|r| r["boot"].as_str().map(str::to_owned))
            .expect("the server's process.start")
    };
    let wanted = o.samples + o.warmup;
    // Enough time for every sample at the interval, plus generous slack for a busy machine.
    let deadline = Instant::now()
        + Duration::from_millis(o.interval_ms * wanted as u64)
        + Duration::from_secs(60);
    let costs: Vec<u64> = loop {
        let records = read_journal(&server.journal_dir());
        let costs: Vec<u64> = of_kind(&records, "memory.sample")
            .into_iter()
            .filter(|r| r["boot"] == boot.as_str())
            .filter_map(|r| r["cost_us"].as_u64())
            .collect();
        if costs.len() >= wanted {
            break costs;
        }
        assert!(
            Instant::now() < deadline,
            "only {} samples with cost_us after the deadline",
            costs.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    drop(server);
    let stderr = std::fs::read_to_string(var.path().join("server.stderr")).unwrap_or_default();
    (costs[o.warmup..wanted].to_vec(), stderr)
}

fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let o = options();
    let (mut counted, _) = run(&o, &[]);
    counted.sort_unstable();
    println!(
        "in-server memory.sample cost_us over {} samples ({} ms interval, idle, after {} \
         warm-up samples), binary {}{}",
        counted.len(),
        o.interval_ms,
        o.warmup,
        o.binary.display(),
        o.malloc_conf.as_ref().map(|c| format!(", _RJEM_MALLOC_CONF={c}")).unwrap_or_default()
    );
    println!(
        "median_us={} p90_us={} min_us={} max_us={}",
        percentile(&counted, 0.5),
        percentile(&counted, 0.9),
        counted[0],
        counted[counted.len() - 1]
    );
    if !o.steps {
        return;
    }
    // The breakdown: `name=12.3` pairs of the sampler's step lines, skipping the warm-up.
    let (_, stderr) = run(&o, &["--bench-sample-steps"]);
    let lines: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("dispatch-telemetry: sample steps (us): "))
        .skip(o.warmup)
        .take(o.samples)
        .collect();
    assert!(
        !lines.is_empty(),
        "the server printed no step lines: is --bench-sample-steps in this binary?"
    );
    let mut names: Vec<String> = Vec::new();
    let mut values: Vec<Vec<f64>> = Vec::new();
    for line in &lines {
        for pair in line.split_whitespace() {
            let Some((name, value)) = pair.split_once('=') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let at = names.iter().position(|n| n == name).unwrap_or_else(|| {
                names.push(name.to_owned());
                values.push(Vec::new());
                names.len() - 1
            });
            values[at].push(value);
        }
    }
    println!(
        "per step, median over {} samples of a second server (--bench-sample-steps):",
        lines.len()
    );
    for (name, mut v) in names.into_iter().zip(values) {
        v.sort_by(f64::total_cmp);
        println!(
            "  {name:<15} median_us={:.1} p90_us={:.1} min_us={:.1}",
            percentile(&v, 0.5),
            percentile(&v, 0.9),
            v[0]
        );
    }
}
