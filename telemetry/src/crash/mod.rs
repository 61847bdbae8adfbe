//! Crash capture: an out-of-process minidump monitor, the chained panic hook, and the true
//! exit status (feature `crash`).
//!
//! A crashed process cannot be trusted to read its own state (the predecessor reported
//! `RSS: 0.02ZB` for itself, and a SIGSEGV that the service manager saw as SIGILL). So the
//! service's `main` calls [`CrashBuilder::start`] before anything else:
//!
//! - In the process the service manager started, `start` never returns: that process becomes
//!   the **monitor**. It picks the boot id, starts a dump server on an abstract Unix socket,
//!   re-executes the same binary with the same arguments as its **child**, forwards SIGTERM,
//!   SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to it, and waits. When the child's handler
//!   asks for a dump, the monitor writes it with minidump-writer (ptrace from outside) into
//!   the dump directory (0700, files 0600, secret-looking environment values scrubbed, byte
//!   budget). When the child is gone it appends `crash` (signal, code, fault address and
//!   thread read back from the dump, dump path and size, build-id, the last memory sample
//!   and the conversations active, from the child's journal) and `exit` (the real wait
//!   status, core dump flag, OOM kill from the cgroup's `memory.events`) to the child's
//!   journal under the child's boot, then exits with the child's code, or dies of the
//!   child's signal.
//! - In the child, `start` installs the signal handler (SIGSEGV, SIGBUS, SIGILL, SIGFPE,
//!   SIGABRT, SIGTRAP, on an alternate stack so stack overflows are caught), lets the monitor
//!   ptrace it (Yama), asks the kernel for SIGTERM when the monitor dies (a monitor killed on
//!   its own must not leave the service running unsupervised), and returns a [`Supervised`]
//!   with the boot id the journal must use.

mod append;
mod child;
mod dump;
mod monitor;
mod panic_hook;
mod signals;

use std::path::PathBuf;

pub use child::{ALTSTACK_BYTES, ChildGuard, install_thread_altstack};
pub use dump::{DUMP_EXTENSION, DumpSummary, is_secret_name, scrub, summarize};
pub use panic_hook::{
    PANIC_FLUSH_WAIT, PanicContext, TurnContext, current_turn, install_panic_hook, panic_message,
    set_current_turn, set_panic_backtraces, set_panic_context,
};
pub use signals::{CRASH_SIGNALS, signal_name};

use crate::config::{ConfigError, env_parse, env_string};

/// Set by the monitor for its child: the dump server's abstract socket name.
pub const ENV_SOCKET: &str = "DISPATCH_CRASH_SOCKET";
/// Set by the monitor for its child: the boot id the child's journal uses.
pub const ENV_BOOT: &str = "DISPATCH_CRASH_BOOT";
/// Set by the monitor for its child: the monitor's pid (the one process allowed to ptrace).
pub const ENV_MONITOR_PID: &str = "DISPATCH_CRASH_MONITOR_PID";
/// `off` runs the service without the monitor (and without minidumps).
pub const ENV_MONITOR: &str = "DISPATCH_CRASH_MONITOR";
/// Where dumps go (`<var dir>/crashes`).
pub const ENV_DIR: &str = "DISPATCH_CRASH_DIR";
/// Byte budget of the dump directory.
pub const ENV_BUDGET_BYTES: &str = "DISPATCH_CRASH_BUDGET_BYTES";

/// Settings for crash capture.
#[derive(Debug, Clone)]
pub struct CrashBuilder {
    journal_dir: PathBuf,
    service: String,
    dump_dir: PathBuf,
    dump_budget_bytes: u64,
    enabled: bool,
}

impl CrashBuilder {
    /// Byte budget for the dump directory; the oldest dumps go first. Env:
    /// `DISPATCH_CRASH_BUDGET_BYTES`.
    pub const DEFAULT_DUMP_BUDGET_BYTES: u64 = 1024 * 1024 * 1024;

    /// Crash capture whose records go to `journal_dir` and dumps to `dump_dir`.
    pub fn new(journal_dir: impl Into<PathBuf>, dump_dir: impl Into<PathBuf>) -> Self {
        CrashBuilder {
            journal_dir: journal_dir.into(),
            service: crate::journal::Journal::DEFAULT_SERVICE.into(),
            dump_dir: dump_dir.into(),
            dump_budget_bytes: Self::DEFAULT_DUMP_BUDGET_BYTES,
            enabled: true,
        }
    }

    /// The journal's service name (segment file prefix). Default: `dispatch`.
    pub fn service(self, name: impl Into<String>) -> Self {
        CrashBuilder { service: name.into(), ..self }
    }

    /// Where dumps go. Env: `DISPATCH_CRASH_DIR`.
    pub fn dump_dir(self, dir: impl Into<PathBuf>) -> Self {
        CrashBuilder { dump_dir: dir.into(), ..self }
    }

    /// Byte budget of the dump directory. Default: [`Self::DEFAULT_DUMP_BUDGET_BYTES`].
    pub fn dump_budget_bytes(self, bytes: u64) -> Self {
        CrashBuilder { dump_budget_bytes: bytes, ..self }
    }

    /// Whether to run the monitor at all. Default: true. Env: `DISPATCH_CRASH_MONITOR=off`.
    pub fn enabled(self, on: bool) -> Self {
        CrashBuilder { enabled: on, ..self }
    }

    /// Applies `DISPATCH_CRASH_DIR`, `DISPATCH_CRASH_BUDGET_BYTES`, `DISPATCH_CRASH_MONITOR`.
    pub fn with_env(mut self) -> Result<Self, ConfigError> {
        if let Some(d) = env_string(ENV_DIR)? {
            self.dump_dir = d.into();
        }
        if let Some(b) = env_parse(ENV_BUDGET_BYTES, "a byte count")? {
            self.dump_budget_bytes = b;
        }
        match env_string(ENV_MONITOR)?.as_deref() {
            None | Some("on" | "1" | "true") => {}
            Some("off" | "0" | "false") => self.enabled = false,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    var: ENV_MONITOR,
                    value: other.into(),
                    expected: "on or off",
                });
            }
        }
        Ok(self)
    }

    /// Becomes the monitor (never returns) or, in the monitor's child or with the monitor
    /// disabled, returns how this process is supervised. Call it first thing in `main`,
    /// before any thread is started.
    pub fn start(self) -> Supervised {
        if let Ok(boot) = std::env::var(ENV_BOOT) {
            let monitor_pid = std::env::var(ENV_MONITOR_PID).ok().and_then(|p| p.parse().ok());
            child::die_with_monitor(monitor_pid);
            return match (std::env::var(ENV_SOCKET), monitor_pid) {
                (Ok(socket), Some(pid)) => match child::attach(&socket, pid) {
                    Ok(guard) => Supervised { boot, guard: Some(guard), note: None },
                    Err(e) => {
                        eprintln!("dispatch-telemetry: crash capture: {e}; no minidumps this run");
                        Supervised { boot, guard: None, note: Some(e.to_string()) }
                    }
                },
                _ => Supervised {
                    boot,
                    guard: None,
                    note: Some("the monitor has no dump server; no minidumps this run".into()),
                },
            };
        }
        if !self.enabled {
            return Supervised {
                boot: crate::journal::new_boot_id(),
                guard: None,
                note: Some(format!("crash monitor disabled ({ENV_MONITOR}=off)")),
            };
        }
        monitor::run(&self)
    }
}

/// How the running process is supervised.
#[derive(Debug)]
pub struct Supervised {
    boot: String,
    guard: Option<ChildGuard>,
    note: Option<String>,
}

impl Supervised {
    /// The boot id this process's journal must use ([`crate::journal::JournalBuilder::boot_id`]).
    pub fn boot_id(&self) -> &str {
        &self.boot
    }

    /// Whether a monitor will write a minidump if this process crashes.
    pub fn is_monitored(&self) -> bool {
        self.guard.is_some()
    }

    /// Why the process is not monitored, when it is not.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// The crash handler, for [`ChildGuard::dump_now`].
    pub fn guard(&self) -> Option<&ChildGuard> {
        self.guard.as_ref()
    }
}

/// Why crash capture could not be set up in the child.
#[derive(Debug, thiserror::Error)]
pub enum CrashError {
    /// The monitor's dump server did not answer.
    #[error("connecting to the crash monitor at @{socket}: {message}")]
    Connect {
        /// Abstract socket name.
        socket: String,
        /// The error.
        message: String,
    },
    /// The signal handler could not be installed.
    #[error("installing the crash handler: {message}")]
    Attach {
        /// The error.
        message: String,
    },
}

impl CrashError {
    /// Stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            CrashError::Connect { .. } => "crash_monitor_unreachable",
            CrashError::Attach { .. } => "crash_handler_install_failed",
        }
    }
}
