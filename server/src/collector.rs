//! The embedded collector: `dispatch_collector::Collector` following the server's own journal
//! into the traces database on a named std thread (`dispatch-collector`), so a single-process
//! install gets a queryable history without running `dispatch-collector` beside it.
//!
//! It is on by default (`--no-collector` / `DISPATCH_NO_COLLECTOR` turns it off, e.g. when a
//! standalone collector serves several services). If it cannot start (most often: a standalone
//! collector holds the database's lock) the server says so in one line and serves without it.
//! At shutdown it is stopped after the final journal flush and drains once more, so the
//! `process.stop` record lands in the database too.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dispatch_collector::{Collector, CollectorError};

/// SQLite page cache of the embedded collector's connection, KiB (8 MiB).
pub const EMBEDDED_CACHE_KIB: i64 = 8 * 1024;

/// What the embedded collector is doing, for `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CollectorState {
    /// Turned off by configuration (or the library is used without `main`).
    #[default]
    Off,
    /// Following the journal.
    Running,
    /// Stopped at shutdown.
    Stopped,
    /// Stopped on an error it retries (a full or failing disk under the database): nothing
    /// was committed of the failed batch, and the next try reopens the database and goes on
    /// from the last commit.
    Retrying(String),
    /// Could not start, or stopped on an error (the message).
    Failed(String),
}

impl CollectorState {
    /// `off`, `running`, `stopped`, `retrying` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Retrying(_) => "retrying",
            Self::Failed(_) => "failed",
        }
    }
}

/// Errors the embedded collector waits out and retries: I/O and SQLite errors (a full disk,
/// `SQLITE_FULL`, `SQLITE_IOERR`, a busy database). Not: another collector holding the
/// database, a schema from a newer build, an unsafe or missing journal directory, which a
/// retry would not change.
pub fn retryable(e: &CollectorError) -> bool {
    matches!(e.code(), "collector_io" | "collector_db" | "collector_thread_lost")
}

/// First wait before a retry; it doubles per failure up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between retries.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// A shared view of the embedded collector's state. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CollectorStatus(Arc<Mutex<CollectorState>>);

impl CollectorStatus {
    /// A status that starts as `state`.
    pub fn new(state: CollectorState) -> CollectorStatus {
        CollectorStatus(Arc::new(Mutex::new(state)))
    }

    /// The current state.
    pub fn state(&self) -> CollectorState {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, state: CollectorState) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }
}

/// Opens the collector for the server: its own small page cache (the standalone collector's
/// 64 MiB cache is sized for bulk drains; embedded, it would count as the server's own memory
/// in every sample, and a server writes a few lines a second).
fn open_embedded(journal_dir: &Path, db: &Path) -> Result<Collector, CollectorError> {
    let collector = Collector::builder(journal_dir, db).open()?;
    if let Err(e) = collector.connection().pragma_update(None, "cache_size", -EMBEDDED_CACHE_KIB) {
        eprintln!("dispatch-server: embedded collector: setting cache_size: {e}");
    }
    Ok(collector)
}

/// The running collector thread.
#[derive(Debug)]
pub struct EmbeddedCollector {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    status: CollectorStatus,
}

impl EmbeddedCollector {
    /// Opens the traces database at `db` (taking its lock, creating and migrating it) on the
    /// calling thread, then follows `journal_dir` on a thread named `dispatch-collector`.
    ///
    /// # Errors
    /// The database cannot be opened or is locked by another collector
    /// ([`CollectorError::Locked`]), or the thread cannot be started.
    pub fn start(journal_dir: &Path, db: &Path) -> Result<EmbeddedCollector, CollectorError> {
        let collector = open_embedded(journal_dir, db)?;
        let stop = Arc::new(AtomicBool::new(false));
        let status = CollectorStatus::new(CollectorState::Running);
        let (flag, shared) = (stop.clone(), status.clone());
        let (journal_dir, db_path) = (journal_dir.to_path_buf(), db.to_path_buf());
        let thread = std::thread::Builder::new()
            .name("dispatch-collector".into())
            .spawn(move || {
                dispatch_telemetry::crash::install_thread_altstack();
                let mut collector = Some(collector);
                let mut wait = RETRY_FIRST;
                loop {
                    // Follow until told to stop, then one last drain: whatever the server
                    // wrote before it asked us to stop (its final flush) is in the database.
                    let result = match collector.as_mut() {
                        Some(c) => c.follow(&flag).and_then(|_| c.drain_once()),
                        None => open_embedded(&journal_dir, &db_path).and_then(|mut c| {
                            // Reopened at shutdown: the last drain still happens.
                            let r = if flag.load(Ordering::Relaxed) {
                                c.drain_once()
                            } else {
                                Ok(dispatch_collector::Summary::default())
                            };
                            collector = Some(c);
                            r
                        }),
                    };
                    match result {
                        Ok(_) if collector.is_some() && flag.load(Ordering::Relaxed) => {
                            shared.set(CollectorState::Stopped);
                            return;
                        }
                        Ok(_) => {
                            // Reopened after a failure: following again.
                            eprintln!("dispatch-server: embedded collector resumed");
                            shared.set(CollectorState::Running);
                            wait = RETRY_FIRST;
                        }
                        Err(e) if retryable(&e) && !flag.load(Ordering::Relaxed) => {
                            if !matches!(shared.state(), CollectorState::Retrying(_)) {
                                eprintln!(
                                    "dispatch-server: embedded collector: {e:#} ({}); nothing of \
                                     the failed batch was committed, retrying from the last \
                                     commit (further failures are not printed)",
                                    e.code()
                                );
                            }
                            shared.set(CollectorState::Retrying(e.to_string()));
                            // Drop it (and its lock): the retry reopens from the committed
                            // checkpoints, never from a reader state that ran ahead of them.
                            collector = None;
                            let until = Instant::now() + wait;
                            while Instant::now() < until && !flag.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            wait = (wait * 2).min(RETRY_MAX);
                        }
                        Err(e) => {
                            eprintln!(
                                "dispatch-server: embedded collector stopped ({}): {e:#}",
                                e.code()
                            );
                            shared.set(CollectorState::Failed(e.to_string()));
                            return;
                        }
                    }
                }
            })
            .map_err(|source| CollectorError::Io {
                path: db.to_path_buf(),
                what: "starting the collector thread",
                source,
            })?;
        Ok(EmbeddedCollector { stop, thread, status })
    }

    /// Its state, shared with `/health`.
    pub fn status(&self) -> CollectorStatus {
        self.status.clone()
    }

    /// Asks the thread to stop (it commits and drains once more) and waits up to `wait`.
    /// Returns whether it finished in time.
    pub fn stop(self, wait: Duration) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + wait;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.thread.join();
        true
    }
}
