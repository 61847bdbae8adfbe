//! How the server feeds the telemetry library: load gauges for the sampler, per-turn
//! allocation counters and the current turn around each poll, the chained panic hooks, the
//! crash monitor's status, the `process.start` facts (version, git sha, GNU build-id) and the
//! periodic `conversation.memory` records.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, TryLockError};
use std::task::{Context, Poll};
use std::time::Instant;

use dispatch_journal::record::{ConversationMemory, Limits, Load, ProcessStart};
use dispatch_telemetry::crash::{PanicContext, TurnContext, set_current_turn};
use dispatch_telemetry::journal::Journal;
use dispatch_telemetry::memory::LoadSource;
use tokio::sync::watch;

use crate::config::Settings;
use crate::limiter::Limiter;

/// Why a running turn is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `POST .../cancel`: outcome `cancelled`.
    Cancel,
    /// Shutdown grace period over: outcome `sealed`.
    Seal,
}

/// Bytes a turn's task allocated and freed (jemalloc thread counters around each poll), and
/// the history it holds.
#[derive(Debug, Default)]
pub struct TurnCounters {
    /// Allocated while polling the turn.
    pub alloc_bytes: AtomicU64,
    /// Freed while polling the turn.
    pub freed_bytes: AtomicU64,
    /// History bytes held by the turn.
    pub history_bytes: AtomicU64,
    /// `alloc_bytes` at the last `conversation.memory` record.
    pub reported_alloc: AtomicU64,
    /// `freed_bytes` at the last `conversation.memory` record.
    pub reported_freed: AtomicU64,
    /// Bytes of model output streamed so far.
    pub output_bytes: AtomicU64,
    /// Tokens of model output streamed so far.
    pub tokens: AtomicU64,
    /// This thread's allocated counter when the current poll began ([`Measured`]).
    pub poll_alloc_start: AtomicU64,
    /// This thread's deallocated counter when the current poll began.
    pub poll_freed_start: AtomicU64,
}

impl TurnCounters {
    /// (allocated, freed) by the turn so far, the poll in progress included: call it from
    /// inside the turn's task (on the polling thread). The sums in `alloc_bytes`/`freed_bytes`
    /// only cover finished polls, and a short turn can run whole in its last poll. `None`
    /// without jemalloc's thread counters.
    pub fn totals_now(&self) -> Option<(u64, u64)> {
        let (a, f) = dispatch_telemetry::memory::thread_allocated_bytes()?;
        let running_alloc = a.saturating_sub(self.poll_alloc_start.load(Ordering::Relaxed));
        let running_freed = f.saturating_sub(self.poll_freed_start.load(Ordering::Relaxed));
        Some((
            self.alloc_bytes.load(Ordering::Relaxed) + running_alloc,
            self.freed_bytes.load(Ordering::Relaxed) + running_freed,
        ))
    }
}

/// A turn running or queued.
#[derive(Debug)]
pub struct RunningTurn {
    /// Its conversation.
    pub conversation: String,
    /// Turns of the conversation including this one.
    pub turns: u64,
    /// Ask it to stop.
    pub stop: watch::Sender<Option<StopReason>>,
    /// Its counters.
    pub counters: Arc<TurnCounters>,
}

/// Outcomes counted since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct OutcomeCounts {
    /// `ok`.
    pub ok: AtomicU64,
    /// `error`.
    pub error: AtomicU64,
    /// `cancelled`.
    pub cancelled: AtomicU64,
    /// `sealed`.
    pub sealed: AtomicU64,
    /// Tokens streamed.
    pub tokens: AtomicU64,
}

/// Live activity: the limiter, the running turns and counters. The sampler reads it as the
/// server's load.
#[derive(Debug)]
pub struct Activity {
    /// The provider concurrency limiter.
    pub limiter: Limiter,
    turns: Mutex<HashMap<String, RunningTurn>>,
    shutting_down: AtomicBool,
    /// Outcome counters.
    pub outcomes: OutcomeCounts,
}

impl Activity {
    /// Activity with a limiter of `slots` and `max_queue`.
    pub fn new(slots: usize, max_queue: usize) -> Activity {
        Activity {
            limiter: Limiter::new(slots, max_queue),
            turns: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            outcomes: OutcomeCounts::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, RunningTurn>> {
        // Nothing panics while holding this lock; a poisoned map is still a valid map.
        self.turns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a turn; refused (returns it back) once shutdown has begun.
    pub fn register(&self, turn: String, running: RunningTurn) -> Result<(), RunningTurn> {
        let mut map = self.lock();
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(running);
        }
        map.insert(turn, running);
        Ok(())
    }

    /// Removes a finished turn.
    pub fn unregister(&self, turn: &str) {
        self.lock().remove(turn);
    }

    /// Asks a turn to stop. `None` when it is not running; otherwise its conversation.
    pub fn stop(&self, turn: &str, reason: StopReason) -> Option<String> {
        let map = self.lock();
        let t = map.get(turn)?;
        t.stop.send_replace(Some(reason));
        Some(t.conversation.clone())
    }

    /// The conversation of a running turn.
    pub fn conversation_of(&self, turn: &str) -> Option<String> {
        self.lock().get(turn).map(|t| t.conversation.clone())
    }

    /// Stops taking turns (registration refused from now on).
    pub fn begin_shutdown(&self) {
        let _map = self.lock();
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Asks every running turn to seal; returns how many were asked.
    pub fn seal_all(&self) -> u64 {
        let map = self.lock();
        for t in map.values() {
            t.stop.send_replace(Some(StopReason::Seal));
        }
        map.len() as u64
    }

    /// Turns running or queued.
    pub fn running(&self) -> usize {
        self.lock().len()
    }

    /// Conversations with a turn running or queued, sorted.
    pub fn active_conversations(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().values().map(|t| t.conversation.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// [`Activity::active_conversations`] without waiting: `None` when the map is busy (for
    /// the panic hook, which must not block on a lock the panicking thread might hold).
    pub fn try_active_conversations(&self) -> Option<Vec<String>> {
        let map = match self.turns.try_lock() {
            Ok(m) => m,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let mut v: Vec<String> = map.values().map(|t| t.conversation.clone()).collect();
        v.sort();
        v.dedup();
        Some(v)
    }

    /// `conversation.memory` records for the `top` conversations by history held, with the
    /// bytes allocated and freed since their previous record.
    pub fn conversation_memory(&self, top: usize) -> Vec<ConversationMemory> {
        let map = self.lock();
        let mut turns: Vec<&RunningTurn> = map.values().collect();
        turns.sort_by_key(|t| std::cmp::Reverse(t.counters.history_bytes.load(Ordering::Relaxed)));
        turns
            .into_iter()
            .take(top)
            .map(|t| {
                let c = &t.counters;
                let alloc = c.alloc_bytes.load(Ordering::Relaxed);
                let freed = c.freed_bytes.load(Ordering::Relaxed);
                let prev_alloc = c.reported_alloc.swap(alloc, Ordering::Relaxed);
                let prev_freed = c.reported_freed.swap(freed, Ordering::Relaxed);
                ConversationMemory {
                    conversation: t.conversation.clone(),
                    turns: Some(t.turns),
                    history_bytes: Some(c.history_bytes.load(Ordering::Relaxed)),
                    live_bytes: live_bytes(&t.conversation),
                    alloc_bytes: Some(alloc.saturating_sub(prev_alloc)),
                    freed_bytes: Some(freed.saturating_sub(prev_freed)),
                }
            })
            .collect()
    }
}

impl LoadSource for Activity {
    fn load(&self) -> Load {
        let (running, state_bytes) = {
            let map = self.lock();
            let bytes: u64 =
                map.values().map(|t| t.counters.history_bytes.load(Ordering::Relaxed)).sum();
            (map.len() as u64, bytes)
        };
        Load {
            conversations_active: Some(running),
            turns_in_flight: Some(self.limiter.in_flight()),
            queue_depth: Some(self.limiter.queued()),
            // Histories are held in memory only by running turns; idle ones live in SQLite.
            conversations_loaded: Some(running),
            state_bytes: Some(state_bytes),
        }
    }
}

/// Live bytes charged to a conversation by the tagged allocator (feature `alloc-tags`).
fn live_bytes(conversation: &str) -> Option<u64> {
    #[cfg(feature = "alloc-tags")]
    {
        Some(dispatch_telemetry::memory::tags::tag_for(conversation).live_bytes().max(0) as u64)
    }
    #[cfg(not(feature = "alloc-tags"))]
    {
        let _ = conversation;
        None
    }
}

/// Wraps a turn's future: around each poll it adds the calling thread's jemalloc
/// allocated/freed deltas to `counters` (what the turn's task allocated and freed, wherever it
/// was polled) and names the turn as the thread's current one
/// (`dispatch_telemetry::crash::set_current_turn`), so a panic meanwhile is journaled with its
/// conversation and turn.
pub struct Measured<F> {
    inner: Pin<Box<F>>,
    counters: Arc<TurnCounters>,
    turn: Option<TurnContext>,
    /// With `alloc-tags`: the conversation's tag, entered around each poll.
    #[cfg(feature = "alloc-tags")]
    tag: Option<dispatch_telemetry::memory::tags::Tag>,
}

impl<F> Measured<F> {
    /// Measures `inner` into `counters`; `turn` is what a panic during a poll is filed under.
    pub fn new(inner: F, counters: Arc<TurnCounters>, turn: Option<TurnContext>) -> Measured<F> {
        Measured {
            #[cfg(feature = "alloc-tags")]
            tag: turn.as_ref().map(|t| dispatch_telemetry::memory::tags::tag_for(&t.conversation)),
            inner: Box::pin(inner),
            counters,
            turn,
        }
    }
}

impl<F: Future> Future for Measured<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Restores the previous value even if the poll unwinds (a panic outside the turn's own
        // catch_unwind), so a worker never keeps a stale turn.
        struct Restore(Option<TurnContext>);
        impl Drop for Restore {
            fn drop(&mut self) {
                set_current_turn(self.0.take());
            }
        }
        let _restore = Restore(set_current_turn(this.turn.clone()));
        #[cfg(feature = "alloc-tags")]
        let _tag = this.tag.map(dispatch_telemetry::memory::tags::enter);
        let before = dispatch_telemetry::memory::thread_allocated_bytes();
        if let Some((a0, f0)) = before {
            this.counters.poll_alloc_start.store(a0, Ordering::Relaxed);
            this.counters.poll_freed_start.store(f0, Ordering::Relaxed);
        }
        let out = this.inner.as_mut().poll(cx);
        if let (Some((a0, f0)), Some((a1, f1))) =
            (before, dispatch_telemetry::memory::thread_allocated_bytes())
        {
            this.counters.alloc_bytes.fetch_add(a1.saturating_sub(a0), Ordering::Relaxed);
            this.counters.freed_bytes.fetch_add(f1.saturating_sub(f0), Ordering::Relaxed);
        }
        out
    }
}

/// What the panic hook saw, for the turn boundary that catches the unwind (the `panic`
/// record itself is written by the journaling hook; this is for the turn's error message).
#[derive(Debug, Clone, Default)]
pub struct CapturedPanic {
    /// `file:line:column`.
    pub location: Option<String>,
    /// Thread name.
    pub thread: Option<String>,
}

thread_local! {
    static LAST_PANIC: RefCell<Option<CapturedPanic>> = const { RefCell::new(None) };
}

/// Something to run when a panic is fatal (on the `main` thread): the server asks the crash
/// monitor for a minidump there.
pub type OnFatalPanic = Box<dyn Fn() + Send + Sync>;

/// Installs (once) the panic hooks, chained: first the journaling hook writes exactly one
/// `panic` record per panic (message, location, thread, the conversation and turn set by
/// [`Measured`] around each poll, `fatal` for the `main` thread, then `on_fatal`), then a small
/// hook remembers the location and thread for the turn boundary that catches the unwind, then
/// the previous hook prints the message to stderr.
///
/// The journaling hook is `dispatch_telemetry::crash::install_panic_hook`. `backtrace`
/// switches its backtraces: resolving one makes std load and keep the binary's debug info
/// (measured on the release build: RSS went from 9.5 MB to 91 MB, +55 MB anonymous, at the
/// first panic and stayed there, not growing with later panics), so
/// `DISPATCH_PANIC_BACKTRACE=false` keeps the records and drops the backtraces.
pub fn install_panic_hooks(journal: Journal, backtrace: bool, on_fatal: Option<OnFatalPanic>) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = CapturedPanic {
                location: info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())),
                thread: std::thread::current().name().map(str::to_owned),
            };
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(captured));
            previous(info);
        }));
        dispatch_telemetry::crash::set_panic_backtraces(backtrace);
        dispatch_telemetry::crash::install_panic_hook(journal, on_fatal);
    });
}

/// Gives every `panic` record the active conversations and the sampler's last sample, read
/// from `state`'s activity and sampler. Set once; later calls are ignored. The turns map is
/// only tried, never waited for, inside the hook.
pub fn set_panic_context(state: crate::state::AppState) {
    dispatch_telemetry::crash::set_panic_context(move || PanicContext {
        active_conversations: state.activity.try_active_conversations().unwrap_or_default(),
        memory: state.sampler.as_ref().and_then(|s| s.last()),
    });
}

/// Takes what the hook captured on this thread (the unwind is caught on the thread that
/// panicked, within the same poll).
pub fn take_captured_panic() -> CapturedPanic {
    LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default()
}

/// Whether this process runs under the crash monitor, and why not when it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashMonitorStatus {
    /// A monitor will write a minidump if this process crashes.
    pub attached: bool,
    /// Why not, when not (`Supervised::note`).
    pub note: Option<String>,
    /// Pings the monitor's dump thread, so [`CrashMonitorStatus::as_str`] says `detached`
    /// once it stopped answering.
    pub probe: Option<dispatch_telemetry::crash::MonitorProbe>,
}

impl CrashMonitorStatus {
    /// From the crash module's answer at start.
    pub fn of(supervised: &dispatch_telemetry::crash::Supervised) -> CrashMonitorStatus {
        CrashMonitorStatus {
            attached: supervised.is_monitored(),
            note: supervised.note().map(str::to_owned),
            probe: supervised.probe().cloned(),
        }
    }

    /// Not supervised at all (the library used without the binary's `main`, as in tests).
    pub fn unsupervised() -> CrashMonitorStatus {
        CrashMonitorStatus {
            attached: false,
            note: Some("not started through dispatch-server's main (no crash monitor)".into()),
            probe: None,
        }
    }

    /// `attached`, or `detached` (also when the monitor's dump thread no longer answers).
    pub fn as_str(&self) -> &'static str {
        let answers = self.probe.as_ref().is_none_or(|p| p.check().is_ok());
        if self.attached && answers { "attached" } else { "detached" }
    }
}

/// The `process.start` record for this process; `crash` says whether the crash monitor is
/// attached (`config.crash_monitor`, with `config.crash_monitor_note` when detached).
pub fn process_start(settings: &Settings, crash: &CrashMonitorStatus) -> ProcessStart {
    let mut config = settings.summary();
    config.insert("crash_monitor".into(), crash.as_str().into());
    if let Some(note) = &crash.note {
        config.insert("crash_monitor_note".into(), note.clone().into());
    }
    let read = |p: &str| {
        std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
    };
    ProcessStart {
        pid: Some(std::process::id()),
        ppid: Some(std::os::unix::process::parent_id()),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        build_id: dispatch_telemetry::build_id::current_build_id(),
        git_sha: option_env!("DISPATCH_GIT_SHA").map(str::to_owned),
        // The version string may carry jemalloc's C terminator; it is not part of the version.
        allocator: dispatch_telemetry::memory::jemalloc::version()
            .map(|v| format!("jemalloc {}", v.trim_end_matches('\0'))),
        host: read("/proc/sys/kernel/hostname"),
        kernel: read("/proc/sys/kernel/osrelease"),
        limits: cgroup_limits(),
        config: Some(config),
    }
}

/// cgroup v2 `memory.high` / `memory.max` of this process's cgroup; absent when unlimited or
/// unreadable.
fn cgroup_limits() -> Option<Limits> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f)).ok().and_then(|s| s.trim().parse::<u64>().ok())
    };
    let limits = Limits { memory_high: read("memory.high"), memory_max: read("memory.max") };
    (limits != Limits::default()).then_some(limits)
}

/// Uptime helper for `process.stop`.
pub fn uptime_ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}
