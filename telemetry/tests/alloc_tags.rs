//! The tagged allocator as this test binary's global allocator (over jemalloc): live bytes
//! per tag, frees charged to the owner whatever tag is current, realloc keeps the owner.

#![cfg(feature = "alloc-tags")]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use dispatch_telemetry::memory::tags::{self, TaggedAlloc, enter, tag_for};

#[global_allocator]
static GLOBAL: TaggedAlloc<tikv_jemallocator::Jemalloc> = TaggedAlloc(tikv_jemallocator::Jemalloc);

const MIB: i64 = 1024 * 1024;

#[test]
fn live_bytes_follow_the_owner() {
    let a = tag_for("conv-a");
    let b = tag_for("conv-b");
    assert_eq!(tag_for("conv-a"), a, "stable");
    let (a0, b0) = (a.live_bytes(), b.live_bytes());
    let held_a = {
        let _g = enter(a);
        vec![7u8; MIB as usize]
    };
    let mut held_b = {
        let _g = enter(b);
        vec![1u8; 2 * MIB as usize]
    };
    assert!(a.live_bytes() - a0 >= MIB && a.live_bytes() - a0 < MIB + 4096);
    assert!(b.live_bytes() - b0 >= 2 * MIB);
    // Freed while b is current: still charged to a, its owner.
    {
        let _g = enter(b);
        drop(held_a);
    }
    assert!(a.live_bytes() - a0 < 4096, "a's megabyte is gone from a");
    assert!(b.live_bytes() - b0 >= 2 * MIB, "and b was not charged");
    // Realloc (growth) keeps the owner.
    held_b.reserve_exact(6 * MIB as usize);
    assert!(b.live_bytes() - b0 >= 8 * MIB);
    // Aligned allocations work.
    let layout = std::alloc::Layout::from_size_align(4096, 4096).unwrap();
    let p = {
        let _g = enter(a);
        // SAFETY: non-zero size; freed below with the same layout.
        #[allow(unsafe_code)]
        unsafe {
            std::alloc::alloc(layout)
        }
    };
    assert!(!p.is_null() && (p as usize) % 4096 == 0);
    assert!(a.live_bytes() - a0 >= 4096);
    // SAFETY: p came from alloc with this layout.
    #[allow(unsafe_code)]
    unsafe {
        std::alloc::dealloc(p, layout)
    };
    drop(held_b);
    assert!(b.live_bytes() - b0 < 4096);
    let snap = tags::snapshot(10);
    assert!(snap.iter().any(|(n, _)| n == "conv-a"));
}
