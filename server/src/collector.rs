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
    /// Could not start, or stopped on an error (the message).
    Failed(String),
}

impl CollectorState {
    /// `off`, `running`, `stopped` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Failed(_) => "failed",
        }
    }
}

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
        let mut collector = Collector::builder(journal_dir, db).open()?;
        // The standalone collector's 64 MiB page cache is sized for bulk drains; embedded, it
        // would count as the server's own memory in every sample. A server writes a few lines
        // a second: a small cache is plenty.
        if let Err(e) =
            collector.connection().pragma_update(None, "cache_size", -EMBEDDED_CACHE_KIB)
        {
            eprintln!("dispatch-server: embedded collector: setting cache_size: {e}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let status = CollectorStatus::new(CollectorState::Running);
        let (flag, shared) = (stop.clone(), status.clone());
        let thread = std::thread::Builder::new()
            .name("dispatch-collector".into())
            .spawn(move || {
                dispatch_telemetry::crash::install_thread_altstack();
                // Follow until told to stop, then one last drain: whatever the server wrote
                // before it asked us to stop (its final flush) is in the database.
                let result = collector.follow(&flag).and_then(|_| collector.drain_once());
                match result {
                    Ok(_) => shared.set(CollectorState::Stopped),
                    Err(e) => {
                        eprintln!(
                            "dispatch-server: embedded collector stopped ({}): {e:#}",
                            e.code()
                        );
                        shared.set(CollectorState::Failed(e.to_string()));
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
