//! The memory-pressure circuit breaker: the server reacting to its own memory before the
//! kernel does (the predecessor's incidents ran into `MemoryMax` and crash-looped on SIGKILL).
//!
//! It reads the sampler's figures (no second epoch advance), on the sampler's OS thread, so it
//! still acts when the async runtime is stuck:
//! - **normal → high** at the soft limit: new turns are refused (503, `Retry-After`, code
//!   `memory_pressure`) while in-flight turns go on; a `pressure` record (`high`, `shed`).
//!   Back to normal below [`RESUME_FRACTION`] of the soft limit (hysteresis: a figure
//!   hovering at the limit does not flap), with a `pressure` record (`normal`, `resume`).
//! - **critical** at the hard limit: a `pressure` record (`critical`, `recycle`), a heap
//!   profile when jemalloc profiling is compiled in, then the server stops at once (in-flight
//!   turns sealed, `process.stop` with reason `pressure`) and exits with [`EXIT_PRESSURE`] for
//!   its supervisor to restart it with an empty heap. One way: it never goes back.
//!
//! The figure is the process's RSS, also when the limits come from the cgroup: the cgroup's
//! `memory.current` counts page cache (the journal's own writes fill it), which the kernel
//! reclaims at `memory.high`; a breaker on it would shed load for memory that is not held.
//! From the cgroup, the soft limit is `memory.high` (where the kernel starts throttling) and the
//! hard limit [`HARD_FRACTION_OF_MAX`] of `memory.max`: at `memory.max` itself the kernel's OOM
//! killer acts first (SIGKILL: no seal, no record but the monitor's `exit`), so the breaker
//! must stop below it, with room for the seal and the heap profile.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dispatch_journal::Record;
use dispatch_journal::record::{MemorySample, Pressure as PressureRecord};
use dispatch_telemetry::journal::Journal;

/// Exit status after a pressure stop (`EX_TEMPFAIL`: try again). Not 0, so systemd's
/// `Restart=on-failure` restarts the service; the monitor exits with it too.
pub const EXIT_PRESSURE: i32 = 75;
/// `process.stop` reason (and the stop future's value) of a pressure stop.
pub const STOP_REASON: &str = "pressure";
/// The hard limit taken from a cgroup, as a fraction of its `memory.max`.
pub const HARD_FRACTION_OF_MAX: f64 = 0.95;
/// Below this fraction of the soft limit, a high level returns to normal.
pub const RESUME_FRACTION: f64 = 0.9;
/// `Retry-After` on a refused turn, seconds.
pub const RETRY_AFTER_S: u64 = 5;
/// At most one `refuse` record per this many milliseconds (each refusal is still counted).
const REFUSE_RECORD_EVERY_MS: u128 = 1000;

/// A pressure level, as `/health`, `/metrics` (`dispatch_memory_pressure_level`) and the
/// `pressure` records name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Below the limits.
    Normal = 0,
    /// At or above the soft limit: new turns refused.
    High = 1,
    /// At or above the hard limit: stopping.
    Critical = 2,
}

impl Level {
    /// `normal`, `high`, `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }

    fn from_u8(v: u8) -> Level {
        match v {
            0 => Level::Normal,
            1 => Level::High,
            _ => Level::Critical,
        }
    }
}

/// The limits in force and where they came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Soft limit, bytes.
    pub soft: Option<u64>,
    /// Hard limit, bytes.
    pub hard: Option<u64>,
    /// A limit came from the cgroup (`memory.high`, `memory.max`).
    pub cgroup: bool,
}

impl Limits {
    /// Flags and env first, then the cgroup's `memory.high` (soft) and
    /// [`HARD_FRACTION_OF_MAX`] of its `memory.max` (hard).
    pub fn resolve(
        soft: Option<u64>,
        hard: Option<u64>,
        cgroup: Option<dispatch_journal::record::Limits>,
    ) -> Limits {
        let cg = cgroup.unwrap_or_default();
        let soft_cg = soft.is_none() && cg.memory_high.is_some();
        let hard_cg = hard.is_none() && cg.memory_max.is_some();
        Limits {
            soft: soft.or(cg.memory_high),
            hard: hard.or(cg.memory_max.map(|m| (m as f64 * HARD_FRACTION_OF_MAX) as u64)),
            cgroup: soft_cg || hard_cg,
        }
    }

    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.soft.is_some() || self.hard.is_some()
    }

    /// One line for stderr at start.
    pub fn describe(&self) -> String {
        let mib = |b: Option<u64>| match b {
            Some(b) => format!("{:.0} MiB", b as f64 / 1048576.0),
            None => "off".to_owned(),
        };
        format!(
            "soft {} (new turns refused), hard {} (stop, exit {EXIT_PRESSURE}), on RSS; limits from {}",
            mib(self.soft),
            mib(self.hard),
            if self.cgroup {
                "the cgroup (memory.high, 95% of memory.max) and flags"
            } else {
                "flags"
            }
        )
    }
}

/// Why a turn was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The figure at the last sample, bytes.
    pub figure: u64,
    /// The soft limit, bytes.
    pub limit: u64,
}

/// The breaker. Shared by the sampler's observer, the turn handler, `/health` and `/metrics`.
pub struct Breaker {
    limits: Limits,
    level: AtomicU8,
    figure: AtomicU64,
    refused: AtomicU64,
    journal: Journal,
    last_refuse_record: Mutex<Option<Instant>>,
    critical: tokio::sync::Notify,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("limits", &self.limits)
            .field("level", &self.level())
            .field("figure", &self.figure())
            .finish()
    }
}

impl Breaker {
    /// A breaker at `Normal` for `limits`, journaling into `journal`.
    pub fn new(limits: Limits, journal: Journal) -> Arc<Breaker> {
        Arc::new(Breaker {
            limits,
            level: AtomicU8::new(Level::Normal as u8),
            figure: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            journal,
            last_refuse_record: Mutex::new(None),
            critical: tokio::sync::Notify::new(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The level now.
    pub fn level(&self) -> Level {
        Level::from_u8(self.level.load(Ordering::Acquire))
    }

    /// The figure at the last sample, bytes (0 before the first).
    pub fn figure(&self) -> u64 {
        self.figure.load(Ordering::Relaxed)
    }

    /// Turns refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The sampler's observer: moves the level on `sample`'s figure and journals the change.
    pub fn observe(&self, sample: &MemorySample) {
        let Some(figure) = sample.rss else { return };
        self.figure.store(figure, Ordering::Relaxed);
        let now = self.level();
        if now == Level::Critical {
            return;
        }
        let next = match (self.limits.soft, self.limits.hard) {
            (_, Some(hard)) if figure >= hard => Level::Critical,
            (Some(soft), _) if figure >= soft => Level::High,
            (Some(soft), _)
                if now == Level::High && (figure as f64) >= soft as f64 * RESUME_FRACTION =>
            {
                Level::High
            }
            _ => Level::Normal,
        };
        if next == now {
            return;
        }
        self.level.store(next as u8, Ordering::Release);
        let (limit, action) = match next {
            Level::Critical => (self.limits.hard, "recycle"),
            Level::High => (self.limits.soft, "shed"),
            Level::Normal => (self.limits.soft, "resume"),
        };
        self.emit(next, figure, limit, action);
        eprintln!(
            "dispatch-server: memory pressure {} -> {} at {:.1} MiB (limit {:.1} MiB): {}",
            now.as_str(),
            next.as_str(),
            figure as f64 / 1048576.0,
            limit.unwrap_or(0) as f64 / 1048576.0,
            match next {
                Level::Critical => "stopping: in-flight turns are sealed, exit status 75",
                Level::High => "refusing new turns, in-flight turns go on",
                Level::Normal => "accepting turns again",
            }
        );
        if next == Level::Critical {
            // `notify_one` keeps a permit when nobody waits yet: the stop future sees it.
            self.critical.notify_one();
        }
    }

    /// Whether a new turn may start: `Err` at `High` or `Critical` (counted, and journaled
    /// at most once a second).
    pub fn admit(&self) -> Result<(), Refusal> {
        if self.level() == Level::Normal {
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        let figure = self.figure();
        let limit = self.limits.soft.or(self.limits.hard).unwrap_or(0);
        let due = {
            let mut last =
                self.last_refuse_record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = last.is_none_or(|t| t.elapsed().as_millis() >= REFUSE_RECORD_EVERY_MS);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            self.emit(self.level(), figure, Some(limit), "refuse");
        }
        Err(Refusal { figure, limit })
    }

    /// Resolves once the hard limit is reached (never without one).
    pub async fn critical(&self) {
        if self.limits.hard.is_none() {
            return std::future::pending().await;
        }
        self.critical.notified().await;
    }

    fn emit(&self, level: Level, figure: u64, limit: Option<u64>, action: &str) {
        self.journal.emit(Record::Pressure(PressureRecord {
            level: Some(level.as_str().to_owned()),
            rss: Some(figure),
            limit,
            action: Some(action.to_owned()),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dispatch_journal::record::CgroupMemory;

    fn breaker(soft: u64, hard: u64) -> (tempfile::TempDir, Arc<Breaker>) {
        let dir = tempfile::tempdir().unwrap();
        let journal = dispatch_telemetry::journal::JournalBuilder::new(dir.path()).open().unwrap();
        let limits = Limits { soft: Some(soft), hard: Some(hard), cgroup: false };
        (dir, Breaker::new(limits, journal))
    }

    fn rss(bytes: u64) -> MemorySample {
        MemorySample { rss: Some(bytes), ..MemorySample::default() }
    }

    #[test]
    fn sheds_at_the_soft_limit_and_resumes_only_below_nine_tenths_of_it() {
        let (_d, b) = breaker(1000, 2000);
        b.observe(&rss(999));
        assert_eq!(b.level(), Level::Normal);
        assert!(b.admit().is_ok());
        b.observe(&rss(1000));
        assert_eq!(b.level(), Level::High);
        assert_eq!(b.admit(), Err(Refusal { figure: 1000, limit: 1000 }));
        b.observe(&rss(950));
        assert_eq!(b.level(), Level::High, "hysteresis: 950 is above 90% of 1000");
        b.observe(&rss(899));
        assert_eq!(b.level(), Level::Normal);
        assert_eq!(b.refused(), 1);
    }

    #[test]
    fn the_hard_limit_is_one_way() {
        let (_d, b) = breaker(1000, 2000);
        b.observe(&rss(2000));
        assert_eq!(b.level(), Level::Critical);
        b.observe(&rss(10));
        assert_eq!(b.level(), Level::Critical);
        assert!(b.admit().is_err());
    }

    #[test]
    fn a_sample_without_the_figure_changes_nothing() {
        let (_d, b) = breaker(1000, 2000);
        b.observe(&rss(1500));
        b.observe(&MemorySample::default());
        assert_eq!(b.level(), Level::High);
        assert_eq!(b.figure(), 1500);
    }

    #[test]
    fn flags_win_over_the_cgroup_whose_hard_limit_stays_below_memory_max() {
        let cg =
            dispatch_journal::record::Limits { memory_high: Some(800), memory_max: Some(1000) };
        let l = Limits::resolve(Some(100), Some(200), Some(cg.clone()));
        assert_eq!(l, Limits { soft: Some(100), hard: Some(200), cgroup: false });
        let l = Limits::resolve(None, None, Some(cg));
        assert_eq!(l, Limits { soft: Some(800), hard: Some(950), cgroup: true });
        assert!(!Limits::resolve(None, None, None).any());
        let dir = tempfile::tempdir().unwrap();
        let journal = dispatch_telemetry::journal::JournalBuilder::new(dir.path()).open().unwrap();
        let b = Breaker::new(l, journal);
        let mut s = rss(10);
        s.cgroup = Some(CgroupMemory { current: Some(990), ..CgroupMemory::default() });
        b.observe(&s);
        assert_eq!(b.level(), Level::Normal, "page cache in memory.current is not held memory");
    }
}
