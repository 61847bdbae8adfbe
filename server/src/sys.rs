//! The server's system calls that std has no safe wrapper for: killing a tool's process
//! group, and jemalloc's heap-profiling mallctls. Each is a small safe function; the unsafe
//! blocks of the server's library live here and in [`crate::faults`]'s drills
//! (docs/ARCHITECTURE.md, "Where unsafe code lives, and why").

use std::ffi::CStr;

/// Sends SIGKILL to every process of the group `pgid` (a tool child spawned with
/// `process_group(0)` leads it). Ids 0 and 1 are refused: they name our own group and init.
#[allow(unsafe_code)]
pub fn kill_process_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else { return };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; the negative pid names the process
    // group the child leads. The group id cannot be reused while any member lives, and once
    // it is empty the call fails with ESRCH.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Sets jemalloc's `prof.active`.
///
/// # Errors
/// jemalloc refused (profiling not compiled in or not enabled at start).
#[allow(unsafe_code)]
pub fn set_heap_profiling(active: bool) -> Result<(), String> {
    // SAFETY: `prof.active` is a `bool` mallctl (jemalloc's docs: rw, bool); the name is
    // NUL-terminated.
    unsafe { tikv_jemalloc_ctl::raw::write(b"prof.active\0", active) }
        .map_err(|e| format!("prof.active: {e} (heap profiling needs prof:true at start)"))
}

/// Asks jemalloc to write a heap profile to `path` (`prof.dump`).
///
/// # Errors
/// jemalloc refused (profiling not compiled in or not enabled at start, or the file could not
/// be written).
#[allow(unsafe_code)]
pub fn dump_heap_profile(path: &CStr) -> Result<(), String> {
    // SAFETY: `prof.dump` takes a `const char *` file name (jemalloc's docs: -w, const char *);
    // `path` is NUL-terminated and outlives the call, which only reads it.
    unsafe { tikv_jemalloc_ctl::raw::write(b"prof.dump\0", path.as_ptr()) }
        .map_err(|e| format!("prof.dump: {e} (heap profiling needs prof:true at start)"))
}
