//! The tagged allocator (feature `alloc-tags`): counts live bytes per tag (a conversation), so
//! `dispatchctl mem` can rank conversations by memory they still hold, not only by what their
//! turns allocated and freed.
//!
//! [`TaggedAlloc`] wraps the real allocator. Each allocation carries a small header holding
//! the tag that was current on the allocating thread ([`enter`]); freeing it subtracts from
//! that tag, whichever thread or tag frees it, so a buffer handed from one task to another is
//! still charged to its owner until it is freed. Realloc keeps the owner.
//!
//! Costs: one header of `max(8, align)` bytes per allocation, a thread-local read and one
//! relaxed atomic add per allocation and per free (measured in `benches/alloc_tags.rs`).
//! Tags are bounded ([`SLOTS`]); past that, conversations share the overflow slot, named
//! `(other)`, and [`overflowed`] counts how many did.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Number of tag slots, the untagged slot 0 and the overflow slot included.
pub const SLOTS: usize = 1024;
const OVERFLOW: u16 = (SLOTS - 1) as u16;

static LIVE: [AtomicI64; SLOTS] = [const { AtomicI64::new(0) }; SLOTS];
static OVERFLOWED: AtomicU64 = AtomicU64::new(0);

std::thread_local! {
    // const-initialised, no destructor: reading it never allocates, so the allocator may.
    static CURRENT: Cell<u16> = const { Cell::new(0) };
}

/// A tag: an index into the live-byte counters. `Tag::UNTAGGED` is slot 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag(u16);

impl Tag {
    /// Allocations made outside any [`enter`] scope.
    pub const UNTAGGED: Tag = Tag(0);

    /// Live bytes charged to this tag now (can dip below zero briefly when a block allocated
    /// before the tagged allocator saw it is freed under this tag: never, with a global one).
    pub fn live_bytes(self) -> i64 {
        LIVE[usize::from(self.0)].load(Ordering::Relaxed)
    }
}

struct Registry {
    by_name: HashMap<String, u16>,
    names: Vec<Option<String>>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// The tag for `name` (a conversation id), assigned on first use. Past [`SLOTS`] - 2 names,
/// new names share the overflow slot.
pub fn tag_for(name: &str) -> Tag {
    let mut g = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    let r = g.get_or_insert_with(|| Registry { by_name: HashMap::new(), names: vec![None; SLOTS] });
    if let Some(&t) = r.by_name.get(name) {
        return Tag(t);
    }
    let next = r.by_name.len() + 1;
    if next >= usize::from(OVERFLOW) {
        OVERFLOWED.fetch_add(1, Ordering::Relaxed);
        r.names[usize::from(OVERFLOW)] = Some("(other)".into());
        return Tag(OVERFLOW);
    }
    let t = next as u16;
    r.by_name.insert(name.to_string(), t);
    r.names[usize::from(t)] = Some(name.to_string());
    Tag(t)
}

/// Names that had to share the overflow slot.
pub fn overflowed() -> u64 {
    OVERFLOWED.load(Ordering::Relaxed)
}

/// Live bytes per named tag, largest first, at most `top` of them.
pub fn snapshot(top: usize) -> Vec<(String, i64)> {
    let g = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    let Some(r) = g.as_ref() else { return Vec::new() };
    let mut v: Vec<(String, i64)> = r
        .names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| Some((n.clone()?, LIVE[i].load(Ordering::Relaxed))))
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(top);
    v
}

/// Makes `tag` current on this thread until the guard drops (then the previous one is).
pub fn enter(tag: Tag) -> TagGuard {
    TagGuard { previous: CURRENT.with(|c| c.replace(tag.0)) }
}

/// Restores the previous tag when dropped.
#[derive(Debug)]
pub struct TagGuard {
    previous: u16,
}

impl Drop for TagGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// A global allocator that charges every allocation to the current tag. Wrap the real one:
/// `#[global_allocator] static A: TaggedAlloc<Jemalloc> = TaggedAlloc(Jemalloc);`
#[derive(Debug, Default)]
pub struct TaggedAlloc<A>(pub A);

/// Header bytes in front of a block of this alignment: room for the tag, and the user
/// pointer keeps its alignment.
fn header(align: usize) -> usize {
    align.max(8)
}

/// The inner layout for a block of `layout`, and its header size.
fn outer(layout: Layout) -> Option<(Layout, usize)> {
    let h = header(layout.align());
    Some((Layout::from_size_align(layout.size().checked_add(h)?, layout.align()).ok()?, h))
}

/// Writes the current tag into a fresh inner block (null passes through), charges `size`
/// bytes to it, and returns the user pointer `h` bytes in.
///
/// # Safety
/// `base` is null or the start of a block of at least `h + size` bytes, aligned to at least 8,
/// with `h` a multiple of 8 and at least 8.
#[allow(unsafe_code)]
unsafe fn tag_block(base: *mut u8, h: usize, size: usize) -> *mut u8 {
    if base.is_null() {
        return base;
    }
    let tag = current();
    // SAFETY: per the contract, base + h - 8 is inside the block and 8-aligned, and h is
    // within it.
    unsafe {
        base.add(h - 8).cast::<u64>().write(u64::from(tag));
        LIVE[usize::from(tag)].fetch_add(size as i64, Ordering::Relaxed);
        base.add(h)
    }
}

fn current() -> u16 {
    // `try_with`: during thread teardown the slot may be gone; charge untagged then.
    CURRENT.try_with(|c| c.get()).unwrap_or(0)
}

#[allow(unsafe_code)]
// Every block we hand out is `header(align)` bytes past the start
// of a block the inner allocator gave us for a layout `header` bytes larger with the same
// alignment; the tag sits in the 8 bytes just before the user pointer, which are inside our
// header, aligned to 8 (the header is a multiple of 8 and the block is at least 8-aligned).
// dealloc/realloc recompute the same header from the layout the caller must pass unchanged
// (GlobalAlloc's contract), so they find the original block and its tag.
// SAFETY: the invariants above hold for every method below; each call into the inner
// allocator passes it a layout and pointer it issued.
unsafe impl<A: GlobalAlloc> GlobalAlloc for TaggedAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((outer, h)) = outer(layout) else { return std::ptr::null_mut() };
        // SAFETY: outer has a non-zero size (h >= 8); tag_block gets what the inner returned.
        unsafe { tag_block(self.0.alloc(outer), h, layout.size()) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some((outer, h)) = outer(layout) else { return std::ptr::null_mut() };
        // SAFETY: as in alloc.
        unsafe { tag_block(self.0.alloc_zeroed(outer), h, layout.size()) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let h = header(layout.align());
        // SAFETY: ptr came from alloc with this layout: the block starts h bytes before it and
        // its tag is in the 8 bytes before ptr.
        let (base, tag) = unsafe { (ptr.sub(h), ptr.sub(8).cast::<u64>().read()) };
        LIVE[(tag as usize).min(SLOTS - 1)].fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: base and the outer layout are what the inner allocator returned and took.
        unsafe {
            self.0
                .dealloc(base, Layout::from_size_align_unchecked(layout.size() + h, layout.align()))
        };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let h = header(layout.align());
        // SAFETY: as in dealloc.
        let (base, tag) = unsafe { (ptr.sub(h), ptr.sub(8).cast::<u64>().read()) };
        let Some(new_outer) = new_size.checked_add(h) else { return std::ptr::null_mut() };
        // SAFETY: the outer layout is the one the block was allocated with; the new outer size
        // is non-zero and did not overflow.
        let nb = unsafe {
            self.0.realloc(
                base,
                Layout::from_size_align_unchecked(layout.size() + h, layout.align()),
                new_outer,
            )
        };
        if nb.is_null() {
            return nb;
        }
        // The block keeps its owner (the header moved with it).
        LIVE[(tag as usize).min(SLOTS - 1)]
            .fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: h < new_outer.
        unsafe { nb.add(h) }
    }
}
