//! System calls std has no safe wrapper for, outside crash capture: the page size for
//! `/proc/self/statm`. Crash capture's own calls (signal handler, alternate stacks, `prctl`)
//! stay in `crash/`, and the tagged allocator's in `memory/tags.rs` (docs/ARCHITECTURE.md,
//! "Where unsafe code lives, and why").

/// The system's page size in bytes (4096 when `sysconf` does not answer).
#[allow(unsafe_code)]
pub fn page_size() -> u64 {
    // SAFETY: sysconf takes an integer name and returns an integer; it touches no memory of
    // ours and is thread-safe.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

/// Clock ticks per second of `/proc/<pid>/stat` CPU and start times (`sysconf(_SC_CLK_TCK)`;
/// 100, Linux's USER_HZ, when it does not answer).
#[allow(unsafe_code)]
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: as for `page_size`: an integer in, an integer out, no memory of ours touched.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 { n as u64 } else { 100 }
}
