//! Fault injection for drills and tests: the state the admin API arms (`panic-turn`, `leak`,
//! `alloc`) and every turn consults, and the native crash drills. The drills are the one place
//! in the server's library that is unsafe on purpose (docs/ARCHITECTURE.md, "Where unsafe code
//! lives").

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Time between the 202 answer and the crash, so the client reads its answer first.
pub const CRASH_DELAY: Duration = Duration::from_millis(50);
/// Largest `mb_per_turn` / `mb` accepted (64 GiB): beyond it the request is a typo.
pub const MAX_FAULT_MB: u64 = 64 * 1024;

pub(crate) const MIB: usize = 1024 * 1024;

/// Fault injection state shared by the admin handlers and the turns.
#[derive(Debug, Default)]
pub struct Faults {
    leak_mb_per_turn: AtomicU64,
    /// `leak` limited to this conversation's turns (none: every turn).
    leak_only: Mutex<Option<String>>,
    panic_next_turn: AtomicBool,
    retained: Mutex<Vec<Vec<u8>>>,
    retained_bytes: AtomicU64,
}

impl Faults {
    /// Called at the start of every turn, inside the turn task's poll: panics when
    /// `panic-turn` is armed (once), and retains `mb_per_turn` MiB when `leak` is on (for this
    /// conversation, when it was limited to one).
    ///
    /// # Panics
    /// On purpose, when `panic-turn` was armed.
    pub fn on_turn_start(&self, conversation: &str, turn: &str) {
        if self.panic_next_turn.swap(false, Ordering::SeqCst) {
            panic!("fault injected: panic-turn (turn {turn})");
        }
        let mb = self.leak_mb_per_turn.load(Ordering::Relaxed);
        if mb > 0 {
            let only = self.leak_only.lock().unwrap_or_else(|p| p.into_inner());
            if only.as_deref().is_none_or(|c| c == conversation) {
                drop(only);
                self.retain(mb);
            }
        }
    }

    /// Arms `panic-turn`: the next turn's task panics (once).
    pub fn arm_panic_turn(&self) {
        self.panic_next_turn.store(true, Ordering::SeqCst);
    }

    /// Sets `leak`: every later turn retains `mb` MiB for good (0 stops it).
    pub fn set_leak_mb_per_turn(&self, mb: u64) {
        self.set_leak(mb, None);
    }

    /// Sets `leak` for the turns of `conversation` only (none: every turn).
    pub fn set_leak(&self, mb: u64, conversation: Option<String>) {
        *self.leak_only.lock().unwrap_or_else(|p| p.into_inner()) = conversation;
        self.leak_mb_per_turn.store(mb, Ordering::Relaxed);
    }

    /// Bytes retained by `leak` and `alloc` so far.
    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes.load(Ordering::Relaxed)
    }

    /// Allocates `mb` MiB, writes one byte per page so the pages are resident, and keeps them.
    pub fn retain(&self, mb: u64) {
        let len = usize::try_from(mb).unwrap_or(usize::MAX / MIB).saturating_mul(MIB);
        let mut block = vec![0u8; len];
        for i in (0..len).step_by(4096) {
            block[i] = 1;
        }
        let block = std::hint::black_box(block);
        self.retained.lock().unwrap_or_else(|p| p.into_inner()).push(block);
        self.retained_bytes.fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// Writes through a null pointer: SIGSEGV, with this function on the crashing thread's stack
/// in the minidump.
#[inline(never)]
#[allow(unsafe_code)]
pub fn inject_segfault() -> ! {
    // `black_box` hides that the pointer is null from the optimiser and from lints, so the
    // store is emitted as written.
    let target = std::hint::black_box(std::ptr::null_mut::<u64>());
    // SAFETY: not safe, on purpose: this is the `segfault` drill. The write to address 0
    // faults (the zero page is never mapped on Linux) and the crash handler takes over; the
    // process never continues past it.
    unsafe { target.write_volatile(0x5e6f_a017) };
    unreachable!("a write to the null page returned")
}

/// Unbounded recursion on this thread (a normal thread stack, with an alternate signal stack
/// so the handler can run): SIGSEGV on the guard page.
///
/// Written so that optimisation cannot remove it: the release build turned the previous drill's
/// recursion into an endless loop (the server spun one core at 100% and never crashed).
pub fn inject_stack_overflow() -> ! {
    let depth = overflow_stack(0);
    unreachable!("the stack did not overflow after {depth} frames")
}

/// Each frame keeps a 4 KiB buffer alive across the recursive call and reads it after the call
/// returns, both through `black_box`: the call is not a tail call and no frame can be elided,
/// so every level costs real stack until the guard page faults.
#[inline(never)]
#[allow(unconditional_recursion)] // the point of the drill
fn overflow_stack(depth: u64) -> u64 {
    let mut frame = [0u8; 4096];
    frame[(depth % 4096) as usize] = depth as u8;
    let frame = std::hint::black_box(frame);
    let below = overflow_stack(std::hint::black_box(depth + 1));
    below.wrapping_add(u64::from(std::hint::black_box(&frame)[(depth % 4096) as usize]))
}

/// A read past the end of a file mapping: SIGBUS. (sadness-generator creates its scratch file
/// in the working directory.)
#[allow(unsafe_code)]
pub fn inject_sigbus() -> ! {
    // SAFETY: not safe, on purpose: touches a mapped page beyond the end of its file (the drill).
    unsafe { sadness_generator::raise_bus() }
}

/// An undefined instruction (`ud2`): SIGILL.
#[allow(unsafe_code)]
pub fn inject_sigill() -> ! {
    // SAFETY: not safe, on purpose: executes an undefined instruction (the drill).
    unsafe { sadness_generator::raise_illegal_instruction() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaking_turn_retains_its_megabytes() {
        let faults = Faults::default();
        faults.on_turn_start("c1", "t1");
        assert_eq!(faults.retained_bytes(), 0);
        faults.leak_mb_per_turn.store(2, Ordering::Relaxed);
        faults.on_turn_start("c1", "t2");
        faults.on_turn_start("c2", "t3");
        assert_eq!(faults.retained_bytes(), 4 * MIB as u64);
    }

    #[test]
    fn a_leak_limited_to_one_conversation_spares_the_others() {
        let faults = Faults::default();
        faults.set_leak(1, Some("leaky".into()));
        faults.on_turn_start("other", "t1");
        assert_eq!(faults.retained_bytes(), 0);
        faults.on_turn_start("leaky", "t2");
        assert_eq!(faults.retained_bytes(), MIB as u64);
        faults.set_leak(1, None);
        faults.on_turn_start("other", "t3");
        assert_eq!(faults.retained_bytes(), 2 * MIB as u64);
    }

    #[test]
    #[should_panic(expected = "fault injected: panic-turn (turn t9)")]
    fn an_armed_panic_turn_panics_once() {
        let faults = Faults::default();
        faults.panic_next_turn.store(true, Ordering::SeqCst);
        faults.on_turn_start("c9", "t9");
    }
}
