//! Cost of the tagged allocator: ns per allocation+free pair of small and medium blocks,
//! jemalloc alone (the anchor) vs wrapped in `TaggedAlloc`, measured in the same run.
//!
//! `cargo bench -p dispatch-telemetry --features alloc-tags --bench alloc_tags`

use std::alloc::{GlobalAlloc, Layout};
use std::time::Instant;

use dispatch_telemetry::memory::tags::{TaggedAlloc, enter, tag_for};
use tikv_jemallocator::Jemalloc;

const N: usize = 2_000_000;

#[allow(unsafe_code)]
fn pairs<A: GlobalAlloc>(a: &A, size: usize) -> f64 {
    let layout = Layout::from_size_align(size, 8).expect("layout");
    let mut keep: Vec<*mut u8> = Vec::with_capacity(64);
    let t = Instant::now();
    for i in 0..N {
        // SAFETY: non-zero size; every pointer is freed with the same layout below.
        let p = unsafe { a.alloc(layout) };
        keep.push(p);
        if keep.len() == 64 || i == N - 1 {
            for p in keep.drain(..) {
                // SAFETY: allocated above with `layout` by the same allocator.
                unsafe { a.dealloc(p, layout) };
            }
        }
    }
    t.elapsed().as_nanos() as f64 / N as f64
}

fn main() {
    let plain = Jemalloc;
    let tagged = TaggedAlloc(Jemalloc);
    let tag = tag_for("bench-conversation");
    let _g = enter(tag);
    println!("alloc+free pairs, {N} per size, 64 live at a time");
    for size in [16usize, 64, 256, 4096] {
        let mut p: Vec<f64> = (0..3).map(|_| pairs(&plain, size)).collect();
        let mut t: Vec<f64> = (0..3).map(|_| pairs(&tagged, size)).collect();
        p.sort_by(f64::total_cmp);
        t.sort_by(f64::total_cmp);
        println!(
            "size={size:<5} anchor jemalloc ns/pair={:.1}  tagged ns/pair={:.1}  overhead={:+.1} ns ({:+.0}%)",
            p[1],
            t[1],
            t[1] - p[1],
            100.0 * (t[1] - p[1]) / p[1]
        );
    }
}
