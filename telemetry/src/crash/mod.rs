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
//!   the dump directory (0700, files 0600, secrets scrubbed, byte budget; see below). When
//!   the child is gone it appends `crash` (signal, code, fault address and
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
//!
//! # Who may talk to the monitor
//!
//! The dump socket is an abstract Unix socket (`@dispatch-crash-<monitor pid>-<boot>`), which
//! any local process can connect to, so the monitor runs its own small server (not
//! minidumper's) that serves its child and nobody else:
//!
//! - **Peer check at accept.** A connection is kept only if `SO_PEERCRED` names the child's
//!   process (its pid; the kernel reports the process id for any of its threads) and our
//!   effective uid. Anything else is closed before a byte is read, and counted.
//! - **Bounded messages.** Every packet is read into one fixed buffer of
//!   [`MAX_MESSAGE_BYTES`]; a longer packet, a header whose size disagrees with its packet
//!   (a "4 GiB" header), or an unknown kind closes that connection. Nothing is allocated from
//!   what a header claims.
//! - **Only the child's own crash.** A crash request is served only for the child's pid and a
//!   thread of it (`/proc/<pid>/task/<tid>`), so no request makes the monitor ptrace and dump
//!   another process, and no refused request leaves a dump file or a `crash` record.
//! - **The dump thread never stops on input.** Errors close one connection; a panic while
//!   writing a dump is caught and the loop goes on with its connections.
//! - **Its state is visible.** The child holds a second, status connection;
//!   [`MonitorProbe::check`] (or [`Supervised::dump_server_status`]) pings the dump thread and
//!   waits at most
//!   [`MonitorProbe::TIMEOUT`] for the pong, so `/health` reports a dump server that stopped.
//!   A closed connection (dump thread or monitor gone) stays failed.
//!
//! Refusals go to the monitor's stderr (the first few one by one, then a count at exit).
//!
//! # What a dump contains, and what is scrubbed
//!
//! A minidump of the child holds: every thread's registers and stack memory (the crashing
//! thread's from its stack pointer up), the memory around the instruction pointer and other
//! small regions minidump-writer chooses, the module list (paths, build ids, load addresses),
//! thread names, the open file descriptors' targets (paths, sockets), and Linux streams copied
//! from `/proc`: `maps`, `status`, `limits`, `auxv`, `cpuinfo`, `lsb-release`, the
//! **environment** (`environ`) and the **command line** (`cmdline`). Heap
//! memory is not dumped as a whole, but stacks can hold anything the code was handling (request
//! bodies, headers, keys read from the environment).
//!
//! Before a dump gets its `.dmp` name it is scrubbed ([`scrub_dump_bytes`]):
//!
//! 1. Secrets are collected from the monitor's own environment and command line (the child
//!    inherited both) and from the dump's `environ` and `cmdline` streams:
//!    - by **name** ([`is_secret_name`]): variables or `--flags` containing `TOKEN`, `SECRET`,
//!      `PASS` (`PASSWORD`, `DB_PASS`), `KEY`, `DSN`, `CREDENTIAL`, `AUTH`, `PRIVATE`,
//!      `COOKIE`, `SESSION`, `SIGNATURE`, or `DATABASE_URL`; and `*_URL`/`*_URI` variables
//!      whose value carries credentials ([`secret_env_values`]). On the command line, the
//!      value after such a flag (`--openai-api-key X`) or after its `=` (`--admin-token=X`)
//!      ([`secret_args`]);
//!    - by **shape**, whatever the name ([`secret_shapes`]): the password of
//!      `scheme://user:pass@` (the whole userinfo when it has no `:`), `Bearer`/`Basic`/`token`
//!      credentials, prefixed API keys (`sk-`, `ghp_`, `github_pat_`, `glpat-`, `xoxb-`, ...),
//!      and whole values that are long (24+), random-looking (3.5+ bits per byte) tokens.
//! 2. In the `environ` and `cmdline` streams, those values are overwritten with `*` where they
//!    stand, whatever their length.
//! 3. Every occurrence of each secret of at least [`MIN_SECRET_BYTES`] anywhere in the dump
//!    (stacks, other memory, module data) is overwritten with `*` of the same length.
//! 4. The shapes of step 1 that are safe to look for in binary data (URL credentials, auth
//!    schemes, prefixed keys) are searched for in the whole dump and masked too.
//!
//! Every offset is kept, so the dump still parses. Not scrubbed: secrets that are neither
//! named nor shaped like one (a short password in a config file the service read, a
//! customer's message on a stack), secrets shorter than [`MIN_SECRET_BYTES`] outside the two
//! streams, and secrets in encodings other than the raw bytes (base64 of a key, UTF-16).
//! Treat dumps as confidential anyway: the directory is 0700 and each file 0600.
//!
//! **Never in place, never skipped.** The monitor writes the dump as `<boot>-<ms>.dmp`
//! [`UNSCRUBBED_SUFFIX`]; once the child is gone it writes the scrubbed bytes to a new
//! `...dmp`[`SCRUBBING_SUFFIX`] file, syncs it, renames it to `<boot>-<ms>.dmp` and removes
//! the unscrubbed file. Readers only look at `*.dmp`. A monitor killed before that leaves the
//! unscrubbed file, and the next monitor scrubs it when it starts, before it starts its child
//! (and removes a half-written temporary). If scrubbing fails, the dump stays under its
//! unscrubbed name and the `crash` record says so in `dump_error`.

mod append;
mod child;
mod dump;
mod monitor;
mod panic_hook;
mod scrub;
mod server;
mod signals;

use std::path::PathBuf;

pub use child::{ALTSTACK_BYTES, ChildGuard, install_thread_altstack};
pub use dump::{DUMP_EXTENSION, DumpSummary, SCRUBBING_SUFFIX, UNSCRUBBED_SUFFIX, summarize};
pub use panic_hook::{
    PANIC_FLUSH_WAIT, PanicContext, TurnContext, current_turn, install_panic_hook, panic_message,
    set_current_turn, set_panic_backtraces, set_panic_context,
};
pub use scrub::{
    MIN_SECRET_BYTES, is_secret_name, scrub, scrub_dump_bytes, secret_args, secret_env_values,
    secret_shapes,
};
pub use server::{LIVE_DUMP_TIMEOUT, MAX_CONNECTIONS, MAX_MESSAGE_BYTES, MonitorProbe};
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
                    Ok(guard) => Supervised { boot, guard: Some(guard), note: None, monitor_pid },
                    Err(e) => {
                        eprintln!("dispatch-telemetry: crash capture: {e}; no minidumps this run");
                        Supervised { boot, guard: None, note: Some(e.to_string()), monitor_pid }
                    }
                },
                _ => Supervised {
                    boot,
                    guard: None,
                    note: Some("the monitor has no dump server; no minidumps this run".into()),
                    monitor_pid,
                },
            };
        }
        if !self.enabled {
            return Supervised {
                boot: crate::journal::new_boot_id(),
                guard: None,
                note: Some(format!("crash monitor disabled ({ENV_MONITOR}=off)")),
                monitor_pid: None,
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
    monitor_pid: Option<u32>,
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

    /// The monitor's pid, when this process is a monitor's child.
    pub fn monitor_pid(&self) -> Option<u32> {
        self.monitor_pid
    }

    /// Whether this process was started by a monitor that is gone (its parent is no longer
    /// the monitor: it was re-parented when the monitor died). The kernel also sends SIGTERM
    /// then (`PR_SET_PDEATHSIG`); this tells that SIGTERM from one the service manager sent.
    pub fn is_monitor_gone(&self) -> bool {
        monitor_gone(self.monitor_pid)
    }

    /// The crash handler, for [`ChildGuard::dump_now`].
    pub fn guard(&self) -> Option<&ChildGuard> {
        self.guard.as_ref()
    }

    /// The status probe of the monitor's dump server, when monitored: a clone can be kept
    /// (by `/health`) and [`MonitorProbe::check`]ed at any time.
    pub fn probe(&self) -> Option<&MonitorProbe> {
        self.guard.as_ref().map(ChildGuard::probe)
    }

    /// Whether a crash now would get a minidump: monitored, and the monitor's dump thread
    /// answers ([`MonitorProbe::check`]). The error says why not.
    ///
    /// # Errors
    /// Not monitored (the [`Supervised::note`]), or the dump server does not answer.
    pub fn dump_server_status(&self) -> Result<(), String> {
        match &self.guard {
            Some(g) => g.probe().check(),
            None => Err(self.note.clone().unwrap_or_else(|| "not monitored".into())),
        }
    }
}

/// Whether a process started by the monitor `monitor_pid` has lost it: its parent is no longer
/// that pid, or that process has ended (gone, or a zombie). `false` for a process not started
/// by a monitor (`None`).
///
/// Both, because the kernel's death signal comes when the thread that started the child
/// exits, and while other threads of the monitor are still being killed the child is
/// re-parented to one of them: `getppid` still names the monitor then, but the monitor's
/// main thread is already a zombie.
pub fn monitor_gone(monitor_pid: Option<u32>) -> bool {
    let Some(monitor) = monitor_pid else { return false };
    if std::os::unix::process::parent_id() != monitor {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{monitor}/stat")) {
        Err(_) => true,
        // The state is the field after the parenthesised command name.
        Ok(stat) => matches!(
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()),
            Some("Z" | "X") | None
        ),
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
