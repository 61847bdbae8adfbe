//! How the server feeds the telemetry library beyond the sampler: the chained panic hooks
//! (and what they captured, for the turn boundary), the crash monitor's status, and the
//! `process.start` facts (version, git sha, GNU build-id, cgroup limits). The load gauges and
//! per-turn counters are [`crate::activity`]'s.

use std::cell::RefCell;
use std::sync::Once;
use std::time::Instant;

use dispatch_journal::record::ProcessStart;
use dispatch_telemetry::journal::Journal;

use crate::config::Settings;

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
/// [`Measured`](crate::activity::Measured) around each poll, `fatal` for the `main` thread, then `on_fatal`), then a small
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
    /// The monitor's pid, when this process is a monitor's child.
    pub monitor_pid: Option<u32>,
}

impl CrashMonitorStatus {
    /// From the crash module's answer at start.
    pub fn of(supervised: &dispatch_telemetry::crash::Supervised) -> CrashMonitorStatus {
        CrashMonitorStatus {
            attached: supervised.is_monitored(),
            note: supervised.note().map(str::to_owned),
            probe: supervised.probe().cloned(),
            monitor_pid: supervised.monitor_pid(),
        }
    }

    /// Whether the monitor that started this process is gone (killed on its own: this
    /// process was re-parented, and got SIGTERM through `PR_SET_PDEATHSIG`). A server in that
    /// state runs unsupervised, and a service manager is about to start a replacement that
    /// waits for this one's start lock: it stops at once instead of giving turns the grace
    /// period.
    pub fn monitor_gone(&self) -> bool {
        dispatch_telemetry::crash::monitor_gone(self.monitor_pid)
    }

    /// Not supervised at all (the library used without the binary's `main`, as in tests).
    pub fn unsupervised() -> CrashMonitorStatus {
        CrashMonitorStatus {
            attached: false,
            note: Some("not started through dispatch-server's main (no crash monitor)".into()),
            probe: None,
            monitor_pid: None,
        }
    }

    /// Whether a crash would get its dump now, and why not: the status at start, then the
    /// monitor's dump thread pinged (a thread that stopped answering makes it `detached`).
    pub fn now(&self) -> (bool, Option<String>) {
        if !self.attached {
            return (false, self.note.clone());
        }
        match self.probe.as_ref().map(|p| p.check()) {
            Some(Err(e)) => {
                (false, Some(format!("the monitor's dump thread does not answer: {e}")))
            }
            _ => (true, None),
        }
    }

    /// `attached`, or `detached` (also when the monitor's dump thread no longer answers).
    pub fn as_str(&self) -> &'static str {
        if self.now().0 { "attached" } else { "detached" }
    }
}

/// The `process.start` record for this process; `crash` says whether the crash monitor is
/// attached (`config.crash_monitor`, with `config.crash_monitor_note` when detached).
pub fn process_start(settings: &Settings, crash: &CrashMonitorStatus) -> ProcessStart {
    let mut config = settings.summary();
    config.insert("crash_monitor".into(), crash.as_str().into());
    // How tool calls are confined on this kernel (`unavailable: <why>` when they are not).
    let sandbox = crate::tools::sandbox::SandboxStatus::probe(settings.tool_sandbox);
    config.insert("tool_sandbox".into(), sandbox.describe().into());
    if let Some(note) = &crash.note {
        config.insert("crash_monitor_note".into(), note.clone().into());
    }
    // The arenas the sampler's jemalloc epoch merges (`narenas:1` in malloc_conf plus the
    // huge-allocation arena: 2, unless an operator overrode it with `_RJEM_MALLOC_CONF`).
    if let Some(arenas) = dispatch_telemetry::memory::jemalloc::arenas() {
        config.insert("jemalloc_arenas".into(), arenas.into());
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
        limits: dispatch_telemetry::memory::memory_limits(),
        config: Some(config),
    }
}

/// Uptime helper for `process.stop`.
pub fn uptime_ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}
