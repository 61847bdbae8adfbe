//! The runtime-stall watchdog: a heartbeat task on the tokio runtime, checked from the
//! sampler's OS thread (which runs when every worker is blocked). No beat for the threshold
//! (default 10 s) writes one `stall` record (`begin`: how long, turns in flight, the last
//! sample's RSS) and asks the crash monitor for a minidump of the running process, whose
//! threads' stacks show what blocks the workers; the first beat after it writes `stall`
//! `end` with the whole duration. Once per stall, however long it lasts.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dispatch_journal::Record;
use dispatch_journal::record::{MemorySample, Stall};
use dispatch_telemetry::journal::Journal;

/// How often the heartbeat task beats.
pub const BEAT_EVERY: Duration = Duration::from_millis(250);

/// Asks for a live minidump: the dump's path, or why not.
pub type LiveDump = Box<dyn Fn() -> Result<PathBuf, String> + Send + Sync>;

/// The watchdog. Shared by the heartbeat task and the sampler's observer.
pub struct Watchdog {
    threshold: Duration,
    origin: Instant,
    /// Milliseconds since `origin` of the last beat; 0 before the first (not armed yet).
    last_beat_ms: AtomicU64,
    in_stall: AtomicBool,
    /// The last beat before the current stall.
    stall_from_ms: AtomicU64,
    stalls: AtomicU64,
    journal: Journal,
    dump: Option<LiveDump>,
    turns_in_flight: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl Watchdog {
    /// A watchdog for `threshold`; `dump` is the monitor's live dump (none: unsupervised),
    /// `turns_in_flight` a cheap gauge.
    pub fn new(
        threshold: Duration,
        journal: Journal,
        dump: Option<LiveDump>,
        turns_in_flight: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Arc<Watchdog> {
        Arc::new(Watchdog {
            threshold,
            origin: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            in_stall: AtomicBool::new(false),
            stall_from_ms: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            journal,
            dump,
            turns_in_flight,
        })
    }

    /// Stalls seen so far.
    pub fn stalls(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
    }

    /// Whether the runtime is stalled now.
    pub fn stalled(&self) -> bool {
        self.in_stall.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        // At least 1, so a beat is never mistaken for "no beat yet".
        (self.origin.elapsed().as_millis() as u64).max(1)
    }

    /// The heartbeat: beats every [`BEAT_EVERY`] for as long as the runtime runs it.
    pub async fn heartbeat(self: Arc<Self>) {
        loop {
            self.last_beat_ms.store(self.now_ms(), Ordering::Relaxed);
            tokio::time::sleep(BEAT_EVERY).await;
        }
    }

    /// The sampler's observer: a stall begins when the last beat is older than the threshold,
    /// and ends at the first beat after it.
    pub fn check(&self, sample: &MemorySample) {
        let last = self.last_beat_ms.load(Ordering::Relaxed);
        if last == 0 {
            return;
        }
        let since = self.now_ms().saturating_sub(last);
        let in_stall = self.in_stall.load(Ordering::Relaxed);
        let threshold_ms = self.threshold.as_millis() as u64;
        if !in_stall && since >= threshold_ms {
            self.in_stall.store(true, Ordering::Relaxed);
            self.stall_from_ms.store(last, Ordering::Relaxed);
            self.stalls.fetch_add(1, Ordering::Relaxed);
            let turns = (self.turns_in_flight)();
            eprintln!(
                "dispatch-server: STALL: the async runtime has not run its heartbeat for {:.1} s \
                 ({turns} turns in flight); asking the crash monitor for a live minidump",
                since as f64 / 1000.0
            );
            let (minidump, dump_error) = match &self.dump {
                Some(dump) => match dump() {
                    Ok(path) => (Some(path.display().to_string()), None),
                    Err(e) => (None, Some(e)),
                },
                None => (None, Some("no crash monitor: the server runs unsupervised".to_owned())),
            };
            match (&minidump, &dump_error) {
                (Some(p), _) => eprintln!("dispatch-server: STALL: live minidump {p}"),
                (_, Some(e)) => eprintln!("dispatch-server: STALL: no live minidump: {e}"),
                _ => {}
            }
            self.journal.emit(Record::Stall(Stall {
                phase: Some("begin".into()),
                stalled_ms: Some(since),
                threshold_ms: Some(threshold_ms),
                turns_in_flight: Some(turns),
                rss: sample.rss,
                minidump,
                dump_error,
            }));
        } else if in_stall && since < threshold_ms {
            // Beats again: the stall lasted from the last beat before it to this one.
            self.in_stall.store(false, Ordering::Relaxed);
            let lasted = last.saturating_sub(self.stall_from_ms.load(Ordering::Relaxed));
            eprintln!(
                "dispatch-server: STALL over after {:.1} s: the runtime beats again",
                lasted as f64 / 1000.0
            );
            self.journal.emit(Record::Stall(Stall {
                phase: Some("end".into()),
                stalled_ms: Some(lasted),
                threshold_ms: Some(threshold_ms),
                turns_in_flight: Some((self.turns_in_flight)()),
                rss: sample.rss,
                ..Stall::default()
            }));
        }
    }
}
