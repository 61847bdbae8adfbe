//! jemalloc as this test binary's allocator, with the server's `malloc_conf`, and helpers.

#![allow(dead_code)]

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(unsafe_code, non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
/// The server's malloc_conf (background threads, 1 s decay).
// SAFETY: only this binary defines the symbol; jemalloc reads it as `const char *`, so it is
// a thin pointer to the first byte of the 'static NUL-terminated string.
pub static malloc_conf: &u8 = &dispatch_telemetry::memory::jemalloc::MALLOC_CONF_C[0];

pub const MIB: u64 = 1024 * 1024;

pub fn statm_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Allocates `mib` MiB in 64 KiB chunks and touches every page.
pub fn allocate_touched(mib: u64) -> Vec<Vec<u8>> {
    (0..mib * 16)
        .map(|i| {
            let mut v = vec![0u8; 64 * 1024];
            for p in (0..v.len()).step_by(4096) {
                v[p] = (i % 251) as u8 + 1;
            }
            std::hint::black_box(&mut v);
            v
        })
        .collect()
}

/// Empties this thread's jemalloc cache. jemalloc counts cached objects as `allocated`, so a
/// precise before/after comparison starts with an empty cache (otherwise the first chunk may
/// be served from the cache and the rise reads one chunk short).
pub fn flush_thread_cache() {
    use tikv_jemalloc_ctl::{Access, AsName};
    let name = b"thread.tcache.enabled\0".name();
    name.write(false).expect("thread.tcache.enabled is writable");
    name.write(true).expect("thread.tcache.enabled is writable");
}
