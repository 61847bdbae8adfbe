//! jemalloc statistics and configuration (feature `jemalloc`).
//!
//! Statistics are cached by jemalloc until the `epoch` advances; the sampler advances it once
//! per sample through a MIB looked up once, then reads the six figures through their MIBs.

use dispatch_journal::record::JemallocStats;
use tikv_jemalloc_ctl::{epoch, epoch_mib, stats, thread};

/// The `malloc_conf` for a binary that makes jemalloc its global allocator:
///
/// - `background_thread:true`: purging runs on jemalloc's own threads, so memory freed by
///   a burst goes back to the OS while the server is idle, not at its next allocation.
/// - `dirty_decay_ms:1000`, `muzzy_decay_ms:1000`: freed pages are returned within about a
///   second (jemalloc's default is 10 s dirty); RSS then tracks the working set.
/// - `prof:true,prof_active:false,lg_prof_sample:19`: heap profiling compiled in and off,
///   switchable at run time (`prof.active`) without a restart; sampling every 512 KiB.
/// - `narenas:1`: one arena instead of jemalloc's four per CPU. The sampler's `epoch` advance
///   clears and merges the statistics of every arena, and on an idle server that merge was
///   most of a sample's cost: 325 us of 410 with the default 8 arenas of a 2-core machine,
///   74 us with one (docs/BENCHMARKS.md, "Sample cost in the server"); with the default it
///   also grows with the host's CPU count. Thread caches serve most small allocations
///   without the arena's lock; an operator who sees allocator contention on a many-core host
///   can override it at start, `_RJEM_MALLOC_CONF=narenas:N` (jemalloc reads it after this).
///
/// Export it under the prefixed symbol the tikv-jemalloc-sys build uses. jemalloc declares
/// `const char *malloc_conf`, so the symbol must be a thin pointer to the first byte:
///
/// ```ignore
/// #[allow(unsafe_code, non_upper_case_globals)]
/// #[unsafe(export_name = "_rjem_malloc_conf")]
/// pub static malloc_conf: &u8 = &dispatch_telemetry::memory::jemalloc::MALLOC_CONF_C[0];
/// ```
pub const MALLOC_CONF: &str = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000,prof:true,prof_active:false,lg_prof_sample:19,narenas:1";

/// [`MALLOC_CONF`] with its terminating NUL, ready for the `malloc_conf` symbol.
pub const MALLOC_CONF_C: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000,prof:true,prof_active:false,lg_prof_sample:19,narenas:1\0";

/// The jemalloc version string, e.g. `5.3.0-0-g...`.
pub fn version() -> Option<&'static str> {
    // mallctl hands back the C string with its terminating NUL.
    tikv_jemalloc_ctl::version::read().ok().map(|v| v.trim_end_matches('\0'))
}

/// jemalloc's arena count (`arenas.narenas`): the automatic arenas threads are spread over
/// (`narenas`) plus the one it reserves for huge allocations (above `oversize_threshold`):
/// 2 under [`MALLOC_CONF`], 9 with jemalloc's default on a 2-CPU host.
pub fn arenas() -> Option<u32> {
    tikv_jemalloc_ctl::arenas::narenas::read().ok()
}

/// MIBs for the statistics, looked up once.
pub(crate) struct Stats {
    epoch: epoch_mib,
    allocated: stats::allocated_mib,
    active: stats::active_mib,
    resident: stats::resident_mib,
    mapped: stats::mapped_mib,
    retained: stats::retained_mib,
    metadata: stats::metadata_mib,
}

impl Stats {
    /// `None` when jemalloc's statistics are unavailable.
    pub(crate) fn new() -> Option<Self> {
        Some(Stats {
            epoch: epoch::mib().ok()?,
            allocated: stats::allocated::mib().ok()?,
            active: stats::active::mib().ok()?,
            resident: stats::resident::mib().ok()?,
            mapped: stats::mapped::mib().ok()?,
            retained: stats::retained::mib().ok()?,
            metadata: stats::metadata::mib().ok()?,
        })
    }

    /// Advances the epoch once (jemalloc refreshes its merged statistics). Whether it did.
    pub(crate) fn advance_epoch(&self) -> bool {
        self.epoch.advance().is_ok()
    }

    /// Reads the six figures as of the last [`Stats::advance_epoch`].
    pub(crate) fn read_stats(&self) -> JemallocStats {
        JemallocStats {
            allocated: self.allocated.read().ok().map(|v| v as u64),
            active: self.active.read().ok().map(|v| v as u64),
            resident: self.resident.read().ok().map(|v| v as u64),
            mapped: self.mapped.read().ok().map(|v| v as u64),
            retained: self.retained.read().ok().map(|v| v as u64),
            metadata: self.metadata.read().ok().map(|v| v as u64),
        }
    }
}

std::thread_local! {
    static COUNTERS: Option<(thread::ThreadLocal<u64>, thread::ThreadLocal<u64>)> =
        thread::allocatedp::read().ok().zip(thread::deallocatedp::read().ok());
}

/// This thread's cumulative allocated and deallocated bytes.
pub(crate) fn thread_counters() -> Option<(u64, u64)> {
    COUNTERS.with(|c| c.as_ref().map(|(a, d)| (a.get(), d.get())))
}
