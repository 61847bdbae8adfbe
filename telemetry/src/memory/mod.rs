//! The memory sampler: one `memory.sample` per tick, from its own OS thread.
//!
//! Each figure keeps its source: RSS from `/proc/self/statm` (read through a kept-open
//! descriptor), peak, anonymous and file RSS and the thread count from `/proc/self/status`,
//! cgroup v2 `memory.*` files when the process is in a cgroup v2 memory controller, jemalloc
//! statistics after one `epoch` advance (feature `jemalloc`), and the host's load gauges from
//! a [`LoadSource`]. An unreadable figure is absent, never 0 and never taken from another
//! source. The sampler is the only code that advances the jemalloc epoch: `/metrics` and
//! error records reuse [`Sampler::last`].

pub(crate) mod cgroup;

pub use cgroup::memory_limits;
#[cfg(feature = "jemalloc")]
pub mod jemalloc;
mod procfs;
#[cfg(feature = "alloc-tags")]
pub mod tags;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dispatch_journal::Record;
use dispatch_journal::env;
use dispatch_journal::record::{Load, MemorySample};
use parking_lot::{Condvar, Mutex};

use crate::config::{ConfigError, env_millis};
use crate::journal::Journal;

/// Load gauges the host application supplies at each sample.
pub trait LoadSource: Send + Sync + 'static {
    /// The gauges now. Called on the sampler thread; keep it cheap (atomics, no locks held
    /// across awaits, no I/O).
    fn load(&self) -> Load;
}

/// Settings for [`Sampler`].
#[derive(Clone)]
pub struct SamplerBuilder {
    interval: Duration,
    load: Option<Arc<dyn LoadSource>>,
    report_steps: bool,
    observer: Option<SampleObserver>,
}

/// Called on the sampler thread with each sample, after it is journaled (see
/// [`SamplerBuilder::on_sample`]).
pub type SampleObserver = Arc<dyn Fn(&MemorySample) + Send + Sync>;

impl Default for SamplerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    /// Sampling period. Env: `DISPATCH_SAMPLE_INTERVAL_MS`.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
}

impl SamplerBuilder {
    /// Every default, no load gauges.
    pub fn new() -> Self {
        SamplerBuilder {
            interval: Sampler::DEFAULT_INTERVAL,
            load: None,
            report_steps: false,
            observer: None,
        }
    }

    /// Sample every `every` (at least 10 ms). Default: [`Sampler::DEFAULT_INTERVAL`]. Env:
    /// `DISPATCH_SAMPLE_INTERVAL_MS`.
    pub fn interval(self, every: Duration) -> Self {
        SamplerBuilder { interval: every.max(Duration::from_millis(10)), ..self }
    }

    /// Where the `load` gauges come from. Default: none (the field is absent).
    pub fn load_source(self, source: Arc<dyn LoadSource>) -> Self {
        SamplerBuilder { load: Some(source), ..self }
    }

    /// Benchmarks only: after each sample, print the wall time of its steps
    /// ([`SampleSteps::describe`]) and of its encode-and-write into the journal to stderr, one
    /// line per sample. Default: off.
    pub fn report_steps(self, on: bool) -> Self {
        SamplerBuilder { report_steps: on, ..self }
    }

    /// Hands each sample to `observer`, on the sampler thread, after it is journaled: how a
    /// host reacts to its own memory (the server's pressure breaker) on the sampler's figures,
    /// without a second epoch advance, and still when its async runtime is stuck. Keep it
    /// cheap: the next sample waits for it.
    pub fn on_sample(self, observer: SampleObserver) -> Self {
        SamplerBuilder { observer: Some(observer), ..self }
    }

    /// Applies `DISPATCH_SAMPLE_INTERVAL_MS`.
    pub fn with_env(self) -> Result<Self, ConfigError> {
        Ok(match env_millis(env::SAMPLE_INTERVAL_MS)? {
            Some(d) => self.interval(d),
            None => self,
        })
    }

    /// Starts the `dispatch-mem-sampler` thread, which takes a first sample at once and then
    /// one per interval, emitting each to `journal`.
    ///
    /// # Errors
    /// `/proc/self/statm` cannot be opened, or the thread cannot be spawned.
    pub fn start(self, journal: Journal) -> Result<Sampler, SamplerError> {
        let mut probe = MemoryProbe::new(Some(journal.uptime_origin()))?;
        probe.load = self.load.clone();
        probe.journal = Some(journal.clone());
        let shared = Arc::new(SamplerShared {
            last: Mutex::new(None),
            alive: AtomicBool::new(true),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            samples: AtomicU64::new(0),
        });
        let thread_shared = shared.clone();
        let interval = self.interval;
        let report_steps = self.report_steps;
        let observer = self.observer;
        let thread = std::thread::Builder::new()
            .name("dispatch-mem-sampler".into())
            .spawn(move || {
                let s = thread_shared;
                let mut next = Instant::now();
                loop {
                    let (sample, steps) = probe.sample_with_steps();
                    let cost_us = sample.cost_us;
                    let record = Record::MemorySample(sample);
                    let written = Instant::now();
                    journal.emit_at(dispatch_journal::Timestamp::now(), &record);
                    let written = written.elapsed();
                    if report_steps {
                        eprintln!(
                            "dispatch-telemetry: sample steps (us): {} encode_write={:.1} cost_us={}",
                            steps.describe(),
                            written.as_nanos() as f64 / 1000.0,
                            cost_us.unwrap_or(0)
                        );
                    }
                    if let Record::MemorySample(sample) = record {
                        if let Some(observe) = &observer {
                            observe(&sample);
                        }
                        *s.last.lock() = Some(sample);
                    }
                    s.samples.fetch_add(1, Ordering::Relaxed);
                    next += interval;
                    let now = Instant::now();
                    if next < now {
                        // Fell behind (suspended, overloaded): skip missed ticks.
                        next = now + interval;
                    }
                    let mut stop = s.stop.lock();
                    while !*stop {
                        if s.wake.wait_until(&mut stop, next).timed_out() {
                            break;
                        }
                    }
                    if *stop {
                        break;
                    }
                }
                s.alive.store(false, Ordering::Relaxed);
            })
            .map_err(SamplerError::Thread)?;
        Ok(Sampler { shared, thread: Some(thread) })
    }
}

/// Why the sampler could not start.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    /// A `/proc` file every Linux process has could not be opened.
    #[error("opening {path}")]
    Proc {
        /// The file.
        path: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The thread could not be spawned.
    #[error("starting the sampler thread")]
    Thread(#[source] std::io::Error),
}

impl SamplerError {
    /// Stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            SamplerError::Proc { .. } => "sampler_proc_unreadable",
            SamplerError::Thread(_) => "sampler_thread_failed",
        }
    }
}

struct SamplerShared {
    last: Mutex<Option<MemorySample>>,
    alive: AtomicBool,
    stop: Mutex<bool>,
    wake: Condvar,
    samples: AtomicU64,
}

/// A running sampler. Stops when dropped or [`Sampler::stop`]ped.
pub struct Sampler {
    shared: Arc<SamplerShared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").field("samples", &self.samples_taken()).finish()
    }
}

impl Sampler {
    /// The most recent sample (no new epoch advance).
    pub fn last(&self) -> Option<MemorySample> {
        self.shared.last.lock().clone()
    }

    /// Whether the sampler thread is running.
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Relaxed)
            && self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Samples taken so far.
    pub fn samples_taken(&self) -> u64 {
        self.shared.samples.load(Ordering::Relaxed)
    }

    /// Stops the thread and waits for it (at most one sample's time).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Takes samples. The sampler thread owns one; benchmarks and tests can make their own.
pub struct MemoryProbe {
    proc: procfs::ProcSelf,
    cgroup: Option<cgroup::CgroupFiles>,
    #[cfg(feature = "jemalloc")]
    jemalloc: Option<jemalloc::Stats>,
    load: Option<Arc<dyn LoadSource>>,
    journal: Option<Journal>,
    origin: Instant,
}

impl MemoryProbe {
    /// Opens `/proc/self/statm` and `/proc/self/status` (kept open), finds the cgroup v2
    /// memory files and looks up the jemalloc MIBs once. `origin` is the process start for
    /// `uptime_ms` (default: now).
    ///
    /// # Errors
    /// A `/proc/self` file cannot be opened.
    pub fn new(origin: Option<Instant>) -> Result<Self, SamplerError> {
        Ok(MemoryProbe {
            proc: procfs::ProcSelf::open()?,
            cgroup: cgroup::CgroupFiles::discover(),
            #[cfg(feature = "jemalloc")]
            jemalloc: jemalloc::Stats::new(),
            load: None,
            journal: None,
            origin: origin.unwrap_or_else(Instant::now),
        })
    }

    /// Sets where the `load` gauges come from.
    pub fn set_load_source(&mut self, source: Arc<dyn LoadSource>) {
        self.load = Some(source);
    }

    /// Takes one sample now. With the `jemalloc` feature this advances the jemalloc epoch.
    pub fn sample(&mut self) -> MemorySample {
        self.sample_with_steps().0
    }

    /// [`MemoryProbe::sample`], with the wall time of each step: the same code, so a
    /// benchmark's breakdown is of what the sampler does. `cost_us` is the whole sample.
    pub fn sample_with_steps(&mut self) -> (MemorySample, SampleSteps) {
        let t0 = Instant::now();
        let mut steps = SampleSteps::default();
        let mut s = MemorySample::default();
        let mut lap = t0;
        let mut split = |slot: &mut Duration| {
            let now = Instant::now();
            *slot = now - lap;
            lap = now;
        };
        self.proc.read_statm(&mut s);
        split(&mut steps.statm);
        self.proc.read_status(&mut s);
        split(&mut steps.status);
        #[cfg(feature = "jemalloc")]
        {
            s.jemalloc = self.jemalloc.as_ref().and_then(|j| {
                let advanced = j.advance_epoch();
                split(&mut steps.epoch);
                let read = advanced.then(|| j.read_stats());
                split(&mut steps.jemalloc_stats);
                read
            });
        }
        s.cgroup = self.cgroup.as_mut().and_then(|c| c.read());
        split(&mut steps.cgroup);
        s.load = self.load.as_ref().map(|l| l.load());
        split(&mut steps.load);
        s.uptime_ms = Some(self.origin.elapsed().as_millis() as u64);
        if let Some(j) = &self.journal {
            let d = j.take_dropped();
            s.dropped = (d > 0).then_some(d);
        }
        s.cost_us = Some(t0.elapsed().as_micros() as u64);
        (s, steps)
    }
}

/// Wall time of each step of one sample ([`MemoryProbe::sample_with_steps`]), in the order
/// they run. A step that does not apply (no cgroup, no jemalloc) is near zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SampleSteps {
    /// `pread` of `/proc/self/statm` and its parse.
    pub statm: Duration,
    /// `pread` of `/proc/self/status` and its parse.
    pub status: Duration,
    /// jemalloc `epoch` advance (jemalloc merges every arena's statistics here).
    pub epoch: Duration,
    /// The six jemalloc statistics through their MIBs.
    pub jemalloc_stats: Duration,
    /// The cgroup v2 `memory.*` files.
    pub cgroup: Duration,
    /// The host's load gauges ([`LoadSource::load`]).
    pub load: Duration,
}

impl SampleSteps {
    /// One line for people: each step in microseconds, with one decimal.
    pub fn describe(&self) -> String {
        let us = |d: Duration| d.as_nanos() as f64 / 1000.0;
        format!(
            "statm={:.1} status={:.1} epoch={:.1} jemalloc_stats={:.1} cgroup={:.1} load={:.1}",
            us(self.statm),
            us(self.status),
            us(self.epoch),
            us(self.jemalloc_stats),
            us(self.cgroup),
            us(self.load)
        )
    }
}

impl Journal {
    /// The instant the journal was opened, the sampler's uptime origin.
    pub(crate) fn uptime_origin(&self) -> Instant {
        Instant::now() - self.uptime()
    }
}

/// This thread's cumulative (allocated, deallocated) bytes from jemalloc's per-thread
/// counters, or `None` without the `jemalloc` feature. Cheap (two loads through cached
/// pointers): wrap each poll of a task to attribute its allocations.
pub fn thread_allocated_bytes() -> Option<(u64, u64)> {
    #[cfg(feature = "jemalloc")]
    {
        jemalloc::thread_counters()
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        None
    }
}
