//! After freeing 256 MiB, `resident` falls back: jemalloc's background threads return memory while idle.
//! Alone in its test binary, so no other test thread allocates or exits meanwhile.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![cfg(feature = "jemalloc")]

#[path = "support/jemalloc.rs"]
mod jemalloc;
use jemalloc::*;

use dispatch_telemetry::memory::MemoryProbe;
use std::time::{Duration, Instant};

#[test]
fn resident_falls_back_after_freeing_256_mib() {
    let mut probe = MemoryProbe::new(None).unwrap();
    let held = allocate_touched(256);
    let peak = probe.sample().jemalloc.unwrap().resident.unwrap();
    assert!(peak >= 256 * MIB, "resident {peak} while holding 256 MiB");
    drop(held);
    // jemalloc's background threads purge the freed pages with no further allocation from
    // us: poll (this thread only sleeps) until resident has given back most of the 256 MiB.
    // The deadline is the acceptance bound; with 1 s decay it takes about two seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        last = probe.sample().jemalloc.unwrap().resident.unwrap();
        if last + 192 * MIB <= peak || Instant::now() > deadline {
            break;
        }
    }
    assert!(last + 192 * MIB <= peak, "resident {peak} -> {last}: freed memory was not returned");
}
