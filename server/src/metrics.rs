//! `/metrics` in the Prometheus text format (version 0.0.4): the standard process collector
//! set every Prometheus user expects (the names and meanings of client_golang's and
//! prometheus/client_python's process collectors, read from `/proc/self`), the sampler's
//! memory figures, the turn counters, and the telemetry pipeline's own health: lines the
//! journal dropped, bytes the collector has not yet drained, crashes and panics of earlier
//! boots (from the traces database), and what the last sample cost.
//!
//! No per-conversation labels: a label per conversation is a time series per conversation,
//! which is how a scrape target takes its Prometheus down. Which conversation holds memory is
//! `dispatchctl mem`'s job.
//!
//! A figure that cannot be read is left out, never written as 0 (a 0 is a reading).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::state::AppState;

/// One metric family: `# HELP`, `# TYPE`, and its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn one(&mut self, name: &str, help: &str, kind: &str, value: Option<f64>) {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            let _ =
                writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", Num(v));
        }
    }
}

/// A sample value: integers without a fraction, others as Rust prints them (Prometheus
/// parses both; `1e+06`-style noise never appears).
struct Num(f64);

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.fract() == 0.0 && self.0.abs() < 9.0e15 {
            write!(f, "{}", self.0 as i64)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// What `/proc/self` says about this process, for the process collector set.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessFigures {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Start time since the Unix epoch, seconds.
    pub start_time_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<f64>,
    /// The soft `RLIMIT_NOFILE`.
    pub max_fds: Option<f64>,
    /// Virtual memory size, bytes.
    pub virtual_memory_bytes: Option<f64>,
    /// Resident set size, bytes.
    pub resident_memory_bytes: Option<f64>,
    /// Threads.
    pub threads: Option<f64>,
}

impl ProcessFigures {
    /// Reads `/proc/self/stat`, `/proc/stat` (boot time), `/proc/self/fd` and
    /// `/proc/self/limits`.
    pub fn read() -> ProcessFigures {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let btime = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
        });
        let mut figures = stat
            .as_deref()
            .map(|s| {
                parse_stat(
                    s,
                    btime,
                    dispatch_telemetry::sys::clock_ticks_per_second() as f64,
                    dispatch_telemetry::sys::page_size() as f64,
                )
            })
            .unwrap_or_default();
        figures.open_fds =
            std::fs::read_dir("/proc/self/fd").ok().map(|d| d.filter(|e| e.is_ok()).count() as f64);
        figures.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| parse_max_open_files(&s));
        figures
    }
}

/// The fields of `/proc/self/stat` after the command name (which may hold spaces and
/// parentheses, so the split is at the last `)`): utime 14, stime 15, num_threads 20,
/// starttime 22, vsize 23, rss 24 (1-based, as proc(5) numbers them).
pub fn parse_stat(stat: &str, btime: Option<f64>, ticks: f64, page: f64) -> ProcessFigures {
    let Some((_, rest)) = stat.rsplit_once(')') else { return ProcessFigures::default() };
    // rest starts at field 3 (state).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    ProcessFigures {
        cpu_seconds: field(14).zip(field(15)).map(|(u, s)| (u + s) / ticks),
        start_time_seconds: field(22).zip(btime).map(|(st, b)| b + st / ticks),
        virtual_memory_bytes: field(23),
        resident_memory_bytes: field(24).map(|p| p * page),
        threads: field(20),
        open_fds: None,
        max_fds: None,
    }
}

/// The soft limit of `Max open files` in `/proc/self/limits` (`unlimited` gives none).
pub fn parse_max_open_files(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// What the traces database says of earlier boots, and how far the collector is behind.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PipelineFigures {
    /// `crash` records in the traces database (every boot it holds).
    pub crashes: Option<f64>,
    /// `panic` records in it.
    pub panics: Option<f64>,
    /// Journal bytes on disk not yet committed to the database.
    pub collector_lag_bytes: Option<f64>,
}

impl PipelineFigures {
    /// Reads the traces database read-only (absent, or not yet created: nothing) and sizes
    /// the journal's segment files against what the database has committed of each.
    pub fn read(traces_db: &Path, journal_dir: &Path) -> PipelineFigures {
        let Ok(conn) = dispatch_collector::schema::open_read_only(traces_db) else {
            return PipelineFigures::default();
        };
        let count = |table: &str| -> Option<f64> {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get::<_, i64>(0))
                .ok()
                .map(|n| n as f64)
        };
        let lag = dispatch_collector::status::lag_bytes(&conn, journal_dir)
            .ok()
            .flatten()
            .map(|b| b as f64);
        PipelineFigures {
            crashes: count("crashes"),
            panics: count("panics"),
            collector_lag_bytes: lag,
        }
    }
}

/// The whole `/metrics` body.
pub fn render(state: &AppState, process: &ProcessFigures, pipeline: &PipelineFigures) -> String {
    let mut out = String::new();
    let mut m = Family { out: &mut out };
    let sample = state.sampler.as_ref().and_then(|s| s.last());
    let jem = sample.as_ref().and_then(|s| s.jemalloc.clone()).unwrap_or_default();
    let f = |v: Option<u64>| v.map(|v| v as f64);

    // The process collector set.
    m.one(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        "counter",
        process.cpu_seconds,
    );
    m.one(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        "gauge",
        process.start_time_seconds,
    );
    m.one("process_open_fds", "Number of open file descriptors.", "gauge", process.open_fds);
    m.one("process_max_fds", "Maximum number of open file descriptors.", "gauge", process.max_fds);
    m.one(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        "gauge",
        process.virtual_memory_bytes,
    );
    m.one(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        "gauge",
        process.resident_memory_bytes.or(f(sample.as_ref().and_then(|s| s.rss))),
    );
    m.one("process_threads", "Number of OS threads in the process.", "gauge", process.threads);

    // jemalloc, from the sampler's last sample (only the sampler advances the epoch).
    m.one(
        "dispatch_jemalloc_allocated_bytes",
        "jemalloc stats.allocated (last sample).",
        "gauge",
        f(jem.allocated),
    );
    m.one(
        "dispatch_jemalloc_active_bytes",
        "jemalloc stats.active (last sample).",
        "gauge",
        f(jem.active),
    );
    m.one(
        "dispatch_jemalloc_resident_bytes",
        "jemalloc stats.resident (last sample).",
        "gauge",
        f(jem.resident),
    );
    m.one(
        "dispatch_jemalloc_retained_bytes",
        "jemalloc stats.retained (last sample).",
        "gauge",
        f(jem.retained),
    );
    m.one(
        "dispatch_jemalloc_mapped_bytes",
        "jemalloc stats.mapped (last sample).",
        "gauge",
        f(jem.mapped),
    );
    m.one(
        "dispatch_jemalloc_metadata_bytes",
        "jemalloc stats.metadata (last sample).",
        "gauge",
        f(jem.metadata),
    );

    // Load.
    let a = &state.activity;
    m.one(
        "dispatch_turns_in_flight",
        "Turns holding a provider slot.",
        "gauge",
        Some(a.limiter.in_flight() as f64),
    );
    m.one(
        "dispatch_turn_queue_depth",
        "Turns waiting for a provider slot.",
        "gauge",
        Some(a.limiter.queued() as f64),
    );
    m.one(
        "dispatch_conversations_active",
        "Conversations with a turn running or queued.",
        "gauge",
        Some(a.running() as f64),
    );
    m.one(
        "dispatch_turns_refused_total",
        "Turns refused because the queue was full.",
        "counter",
        Some(a.limiter.refused() as f64),
    );
    m.one(
        "dispatch_tokens_streamed_total",
        "Tokens of model output in ended turns.",
        "counter",
        Some(a.outcomes.tokens.load(Ordering::Relaxed) as f64),
    );

    // The memory-pressure breaker.
    let p = &state.pressure;
    m.one(
        "dispatch_memory_pressure_level",
        "Memory-pressure breaker level: 0 normal, 1 high (new turns refused), 2 critical (stopping).",
        "gauge",
        Some(f64::from(p.level() as u8)),
    );
    m.one(
        "dispatch_memory_pressure_refused_total",
        "Turns refused by the memory-pressure breaker.",
        "counter",
        Some(p.refused() as f64),
    );
    m.one(
        "dispatch_memory_pressure_soft_limit_bytes",
        "The breaker's soft limit (absent: none).",
        "gauge",
        f(p.limits().soft),
    );
    m.one(
        "dispatch_memory_pressure_hard_limit_bytes",
        "The breaker's hard limit (absent: none).",
        "gauge",
        f(p.limits().hard),
    );

    // The telemetry pipeline.
    m.one(
        "dispatch_memory_samples_total",
        "Memory samples taken by the sampler.",
        "counter",
        f(state.sampler.as_ref().map(|s| s.samples_taken())),
    );
    m.one(
        "dispatch_sample_cost_seconds",
        "What the last memory sample cost the sampler thread, seconds (the journal's cost_us).",
        "gauge",
        sample.as_ref().and_then(|s| s.cost_us).map(|us| us as f64 / 1e6),
    );
    m.one(
        "dispatch_journal_healthy",
        "1 when the journal's last write succeeded.",
        "gauge",
        Some(f64::from(u8::from(state.journal.is_healthy()))),
    );
    m.one(
        "dispatch_journal_dropped_records_total",
        "Journal lines dropped since start (queue full, or a write failed).",
        "counter",
        Some(state.journal.lines_dropped() as f64),
    );
    m.one(
        "dispatch_collector_lag_bytes",
        "Journal bytes on disk not yet committed to the traces database.",
        "gauge",
        pipeline.collector_lag_bytes,
    );
    m.one(
        "dispatch_crashes_total",
        "Crash records of every boot in the traces database (earlier boots' crashes).",
        "counter",
        pipeline.crashes,
    );
    m.one(
        "dispatch_panics_total",
        "Panic records of every boot in the traces database.",
        "counter",
        pipeline.panics,
    );

    let _ = writeln!(
        out,
        "# HELP dispatch_turns_total Turns ended, by outcome.\n# TYPE dispatch_turns_total counter"
    );
    for (outcome, n) in [
        ("ok", &a.outcomes.ok),
        ("error", &a.outcomes.error),
        ("cancelled", &a.outcomes.cancelled),
        ("sealed", &a.outcomes.sealed),
    ] {
        let _ = writeln!(
            out,
            "dispatch_turns_total{{outcome=\"{outcome}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        // A command name with a space and a parenthesis, as a hostile process could set.
        let stat = "4242 (dis) patch) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 12345 104857600 2560 18446744073709551615";
        let p = parse_stat(stat, Some(1_700_000_000.0), 100.0, 4096.0);
        assert_eq!(p.cpu_seconds, Some(3.0));
        assert_eq!(p.threads, Some(7.0));
        assert_eq!(p.start_time_seconds, Some(1_700_000_123.45));
        assert_eq!(p.virtual_memory_bytes, Some(104_857_600.0));
        assert_eq!(p.resident_memory_bytes, Some(2560.0 * 4096.0));
        assert_eq!(parse_stat("garbage", None, 100.0, 4096.0), ProcessFigures::default());
    }

    #[test]
    fn max_open_files_is_the_soft_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024.0));
        assert_eq!(parse_max_open_files("Max open files unlimited unlimited files"), None);
    }

    #[test]
    fn values_print_without_float_noise() {
        assert_eq!(Num(3.0).to_string(), "3");
        assert_eq!(Num(0.25).to_string(), "0.25");
        assert_eq!(Num(1_700_000_123.45).to_string(), "1700000123.45");
    }
}
