//! Memory sample cost: median, p99 and max of `MemoryProbe::sample` with jemalloc as the
//! allocator (epoch advance + six stats, statm, status, cgroup files, load gauges).
//!
//! `cargo bench -p dispatch-telemetry --features jemalloc --bench sampler [-- SAMPLES]
//! [--sleep-ms N]`
//! (default 20,000 samples, after 1,000 warm-up samples). A 64 MiB heap of small objects is
//! live during the run so jemalloc's stats have real arenas to merge. It also prints the
//! median of each step (`MemoryProbe::sample_with_steps`, the code the sampler runs).
//!
//! This loop samples back to back, with caches warm: it is the floor, not what the server
//! pays. A server samples once per interval from a thread that slept in between, and every
//! step then starts cold; `server/benches/sample_cost.rs` reads the cost the real server
//! journals, which is the figure to quote.

use std::sync::Arc;
use std::time::Instant;

use dispatch_journal::record::Load;
use dispatch_telemetry::memory::{LoadSource, MemoryProbe, SampleSteps};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(unsafe_code, non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
/// The server's malloc_conf.
// SAFETY: only this binary defines the symbol; jemalloc reads it as `const char *`, so it is
// a thin pointer to the first byte of the 'static NUL-terminated string.
pub static malloc_conf: &u8 = &dispatch_telemetry::memory::jemalloc::MALLOC_CONF_C[0];

struct Gauges;
impl LoadSource for Gauges {
    fn load(&self) -> Load {
        Load {
            conversations_active: Some(4),
            turns_in_flight: Some(3),
            queue_depth: Some(1),
            conversations_loaded: Some(120),
            state_bytes: Some(12 << 20),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `--sleep-ms N`: sleep N ms before each sample, as the sampler thread does between
    // ticks, so every step starts cold (what the server pays); default 0, back to back.
    let sleep_ms: u64 = args
        .iter()
        .position(|a| a == "--sleep-ms")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let n: usize = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with('-') && (*i == 0 || args[i - 1] != "--sleep-ms"))
        .find_map(|(_, a)| a.parse().ok())
        .unwrap_or(20_000);
    let heap: Vec<Vec<u8>> = (0..65_536).map(|i| vec![(i % 255) as u8; 1024]).collect();
    std::hint::black_box(&heap);
    // Probe with load gauges, as the server runs it.
    let mut probe = MemoryProbe::new(None).expect("probe");
    probe.set_load_source(Arc::new(Gauges));
    for _ in 0..1_000 {
        std::hint::black_box(probe.sample());
    }
    let mut us: Vec<f64> = Vec::with_capacity(n);
    let mut reported: Vec<u64> = Vec::with_capacity(n);
    let mut steps: Vec<SampleSteps> = Vec::with_capacity(n);
    for _ in 0..n {
        if sleep_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(sleep_ms));
        }
        let t = Instant::now();
        let (s, st) = probe.sample_with_steps();
        us.push(t.elapsed().as_secs_f64() * 1e6);
        reported.push(s.cost_us.unwrap_or(0));
        steps.push(st);
        std::hint::black_box(s);
    }
    // Anchor: what the cheapest possible RSS reading costs, std::fs::read of statm (open,
    // read, close each time), measured in the same run.
    let mut anchor: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(std::fs::read("/proc/self/statm").ok());
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    anchor.sort_by(f64::total_cmp);
    us.sort_by(f64::total_cmp);
    reported.sort_unstable();
    let pct = |p: f64| us[((us.len() as f64 - 1.0) * p) as usize];
    println!(
        "memory sample cost over {n} samples (jemalloc, statm, status, cgroup, load), {}",
        if sleep_ms > 0 {
            format!("{sleep_ms} ms sleep before each")
        } else {
            "back to back".into()
        }
    );
    println!(
        "median_us={:.1} p99_us={:.1} max_us={:.1} (cost_us field median={} p99={})",
        pct(0.5),
        pct(0.99),
        us[us.len() - 1],
        reported[reported.len() / 2],
        reported[reported.len() * 99 / 100],
    );
    println!(
        "anchor std::fs::read(/proc/self/statm): median_us={:.1} p99_us={:.1}",
        anchor[anchor.len() / 2],
        anchor[anchor.len() * 99 / 100]
    );
    let step_median = |f: fn(&SampleSteps) -> std::time::Duration| {
        let mut v: Vec<f64> = steps.iter().map(|s| f(s).as_secs_f64() * 1e6).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "per step median_us: statm={:.1} status={:.1} epoch={:.1} jemalloc_stats={:.1} \
         cgroup={:.1} load={:.1}",
        step_median(|s| s.statm),
        step_median(|s| s.status),
        step_median(|s| s.epoch),
        step_median(|s| s.jemalloc_stats),
        step_median(|s| s.cgroup),
        step_median(|s| s.load),
    );
}
