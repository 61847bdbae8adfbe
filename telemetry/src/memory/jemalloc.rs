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
///
/// Export it under the prefixed symbol the tikv-jemalloc-sys build uses. jemalloc declares
/// `const char *malloc_conf`, so the symbol must be a thin pointer to the first byte:
///
/// ```ignore
/// #[allow(unsafe_code, non_upper_case_globals)]
/// #[unsafe(export_name = "_rjem_malloc_conf")]
/// pub static malloc_conf: &u8 = &dispatch_telemetry::memory::jemalloc::MALLOC_CONF_C[0];
/// ```
pub const MALLOC_CONF: &str = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000,prof:true,prof_active:false,lg_prof_sample:19";

/// [`MALLOC_CONF`] with its terminating NUL, ready for the `malloc_conf` symbol.
pub const MALLOC_CONF_C: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000,prof:true,prof_active:false,lg_prof_sample:19\0";

/// The jemalloc version string, e.g. `5.3.0-0-g...`.
pub fn version() -> Option<&'static str> {
    // mallctl hands back the C string with its terminating NUL.
    tikv_jemalloc_ctl::version::read().ok().map(|v| v.trim_end_matches('\0'))
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

    /// Advances the epoch once, then reads the figures.
    pub(crate) fn read(&self) -> Option<JemallocStats> {
        self.epoch.advance().ok()?;
        Some(JemallocStats {
            allocated: self.allocated.read().ok().map(|v| v as u64),
            active: self.active.read().ok().map(|v| v as u64),
            resident: self.resident.read().ok().map(|v| v as u64),
            mapped: self.mapped.read().ok().map(|v| v as u64),
            retained: self.retained.read().ok().map(|v| v as u64),
            metadata: self.metadata.read().ok().map(|v| v as u64),
        })
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
