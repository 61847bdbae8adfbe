//! The sampler against the real process: jemalloc is this test binary's allocator, configured
//! with the same `malloc_conf` the server exports.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![cfg(feature = "jemalloc")]

#[path = "support/common.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dispatch_journal::Record;
use dispatch_journal::record::Load;
use dispatch_telemetry::journal::JournalBuilder;
use dispatch_telemetry::memory::{LoadSource, MemoryProbe, SamplerBuilder, thread_allocated_bytes};
use parking_lot::Mutex;

#[path = "support/jemalloc.rs"]
mod jemalloc;
use jemalloc::*;

/// Allocation figures are process-wide: tests that measure them take turns.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn rss_agrees_with_statm() {
    let _g = SERIAL.lock();
    let mut probe = MemoryProbe::new(None).unwrap();
    for _ in 0..5 {
        let before = statm_rss();
        let s = probe.sample();
        let after = statm_rss();
        let rss = s.rss.expect("rss read");
        let (lo, hi) = (before.min(after), before.max(after));
        assert!(rss + MIB >= lo && rss <= hi + MIB, "sample rss {rss} vs statm {before}..{after}");
        assert!(s.hwm.unwrap() >= rss.min(s.hwm.unwrap()));
        assert!(s.threads.unwrap() >= 1);
        assert!(s.rss_anon.is_some() && s.rss_file.is_some());
        assert!(s.cost_us.is_some());
    }
}

#[test]
fn thread_counters_attribute_allocations() {
    let _g = SERIAL.lock();
    let (a0, d0) = thread_allocated_bytes().unwrap();
    let v = vec![1u8; 8 * MIB as usize];
    std::hint::black_box(&v);
    let (a1, _) = thread_allocated_bytes().unwrap();
    drop(v);
    let (_, d2) = thread_allocated_bytes().unwrap();
    assert!(a1 - a0 >= 8 * MIB);
    assert!(d2 - d0 >= 8 * MIB);
}

struct Gauges(AtomicU64);
impl LoadSource for Gauges {
    fn load(&self) -> Load {
        Load { turns_in_flight: Some(self.0.fetch_add(1, Ordering::Relaxed)), ..Load::default() }
    }
}

#[test]
fn sampler_thread_journals_samples_with_load() {
    let _g = SERIAL.lock();
    let dir = tempfile::tempdir().unwrap();
    let journal = JournalBuilder::new(dir.path()).service("s").open().unwrap();
    let sampler = SamplerBuilder::new()
        .interval(Duration::from_millis(20))
        .load_source(Arc::new(Gauges(AtomicU64::new(0))))
        .start(journal.clone())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sampler.samples_taken() < 5 {
        assert!(Instant::now() < deadline, "sampler took no samples");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(sampler.is_alive());
    // The sampler runs on its own named OS thread.
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .collect();
    assert!(names.iter().any(|n| n.trim() == "dispatch-mem-sa"), "threads: {names:?}");
    let last = sampler.last().unwrap();
    sampler.stop();
    assert!(journal.flush(Duration::from_secs(10)));
    let back = common::read_back(dir.path(), "s");
    let samples: Vec<_> = back
        .lines
        .iter()
        .filter_map(|l| match &l.record {
            Record::MemorySample(s) => Some(s),
            _ => None,
        })
        .collect();
    assert!(samples.len() >= 5);
    for s in &samples {
        assert!(s.rss.unwrap() > 0);
        assert!(s.jemalloc.as_ref().unwrap().allocated.unwrap() > 0);
        assert!(s.cost_us.is_some() && s.uptime_ms.is_some());
    }
    let loads: Vec<u64> =
        samples.iter().map(|s| s.load.as_ref().unwrap().turns_in_flight.unwrap()).collect();
    assert!(
        loads.windows(2).all(|w| w[1] == w[0] + 1),
        "load gauges read at each sample: {loads:?}"
    );
    assert_eq!(Some(&last), samples.last().copied());
}

#[test]
fn malloc_conf_is_applied_background_threads_and_decay() {
    use tikv_jemalloc_ctl::{Access, AsName};
    assert!(tikv_jemalloc_ctl::opt::background_thread::read().unwrap(), "opt.background_thread");
    assert!(tikv_jemalloc_ctl::background_thread::read().unwrap(), "background threads running");
    let dirty: isize = b"opt.dirty_decay_ms\0".name().read().unwrap();
    assert_eq!(dirty, 1000);
    let prof: bool = b"opt.prof\0".name().read().unwrap();
    assert!(prof, "heap profiling compiled in and enabled at start (inactive)");
}
