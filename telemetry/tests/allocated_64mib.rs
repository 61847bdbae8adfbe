//! Allocating and touching 64 MiB raises jemalloc `allocated` by 64 MiB; freeing lowers it.
//! Alone in its test binary, so no other test thread allocates or exits meanwhile.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![cfg(feature = "jemalloc")]

#[path = "support/jemalloc.rs"]
mod jemalloc;
use jemalloc::*;

use dispatch_telemetry::memory::MemoryProbe;

#[test]
fn allocated_tracks_64_mib_up_and_down() {
    let mut probe = MemoryProbe::new(None).unwrap();
    flush_thread_cache();
    let base = probe.sample().jemalloc.unwrap().allocated.unwrap();
    let held = allocate_touched(64);
    let up = probe.sample().jemalloc.unwrap().allocated.unwrap();
    assert!(up >= base + 64 * MIB, "allocated {base} -> {up}: rose by less than 64 MiB");
    drop(held);
    let down = probe.sample().jemalloc.unwrap().allocated.unwrap();
    assert!(down + 60 * MIB <= up, "allocated {up} -> {down}: did not fall after free");
}
