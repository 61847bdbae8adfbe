//! `dispatch-server`: parses the configuration, starts crash capture (the process the service
//! manager started becomes the crash monitor and runs the server as its child), opens the
//! journal, installs the panic hooks, starts the memory sampler and the embedded collector,
//! repairs the store and serves until SIGTERM/SIGINT. Everything else is in the library.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser as _;
use dispatch_collector::CollectorError;
use dispatch_journal::Record;
use dispatch_journal::record::ProcessStop;
use dispatch_server::collector::{CollectorState, CollectorStatus, EmbeddedCollector};
use dispatch_server::config::Settings;
use dispatch_server::start_lock::StartLock;
use dispatch_server::state::Supervision;
use dispatch_server::telemetry::{CrashMonitorStatus, OnFatalPanic};
use dispatch_server::{Activity, AppState, Config, pressure, serve, stall, stop_signal, telemetry};
use dispatch_telemetry::crash::{CrashBuilder, PanicContext, Supervised};
use dispatch_telemetry::journal::JournalBuilder;
use dispatch_telemetry::memory::SamplerBuilder;

/// jemalloc is the allocator because the telemetry reads jemalloc's statistics (allocated,
/// active, resident, ... and the per-thread counters behind per-turn bytes): they mean nothing
/// unless jemalloc serves every allocation of the process.
#[cfg(not(feature = "alloc-tags"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// With `alloc-tags`, jemalloc still serves everything, wrapped to count live bytes per
/// conversation (a header per block and an atomic add per allocation and free: see the
/// tagged-allocator benchmark in docs/BENCHMARKS.md).
#[cfg(feature = "alloc-tags")]
#[global_allocator]
static GLOBAL: dispatch_telemetry::memory::tags::TaggedAlloc<tikv_jemallocator::Jemalloc> =
    dispatch_telemetry::memory::tags::TaggedAlloc(tikv_jemallocator::Jemalloc);

/// jemalloc reads its options from the `malloc_conf` symbol (prefixed `_rjem_` by
/// tikv-jemalloc-sys) at initialisation: the string is
/// `dispatch_telemetry::memory::jemalloc::MALLOC_CONF_C` (background purge threads, 1 s decay,
/// heap profiling compiled in but inactive). jemalloc declares it `const char *malloc_conf`, so
/// the symbol must be a thin pointer to the first byte of a NUL-terminated string.
#[allow(unsafe_code)]
// SAFETY: exporting a symbol is unsafe because another definition of the name would clash at
// link time; only this binary defines `_rjem_malloc_conf`. The value is a `&u8` (a thin,
// non-null pointer, the layout of `const char *`) to a 'static NUL-terminated byte string that
// jemalloc only reads.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &u8 = &dispatch_telemetry::memory::jemalloc::MALLOC_CONF_C[0];

/// Bound on the final journal flush at exit.
const EXIT_FLUSH: Duration = Duration::from_secs(5);
/// Bound on the embedded collector's last drain at exit.
const COLLECTOR_STOP_WAIT: Duration = Duration::from_secs(10);

fn main() -> std::process::ExitCode {
    // Before any thread: SQLite's C allocations go to glibc malloc, whose per-thread arenas
    // keep freed memory as RSS that jemalloc's figures do not show.
    dispatch_server::sys::cap_c_malloc_arenas();
    // Flags and environment first: clap starts no thread, and the crash monitor needs the
    // journal and dump directories. (The monitor's child parses them again, identically: it
    // runs with the same arguments and environment.)
    let config = Config::parse();
    if config.print_man {
        use clap::CommandFactory as _;
        return match clap_mangen::Man::new(Config::command()).render(&mut std::io::stdout()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("dispatch-server: error: writing the man page: {err}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let settings = config.resolve();
    // Crash capture before anything else, while this is the only thread. In the process the
    // service manager started, `start` never returns: it becomes the crash monitor, runs this
    // binary again as its child, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to it,
    // writes a minidump if it crashes, appends `crash` and `exit` to its journal and exits the
    // way it did. In that child (or with the monitor off) it returns how we are supervised.
    // The clap-resolved values are passed explicitly instead of `CrashBuilder::with_env`, so
    // a flag wins over its environment variable as everywhere else.
    let supervised = CrashBuilder::new(&settings.journal_dir, &settings.crash_dir)
        .service(settings.service.clone())
        .dump_budget_bytes(settings.crash_budget_bytes)
        .enabled(settings.crash_monitor)
        .start();
    match run(settings, supervised) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("dispatch-server: error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The store's start lock, waiting up to `--start-lock-wait-ms` for a previous server, and
/// saying so on stderr with the holder's pid.
fn take_start_lock(settings: &Settings) -> anyhow::Result<StartLock> {
    let wait = settings.start_lock_wait;
    let acquired = StartLock::acquire(&settings.db, wait, |holder| {
        eprintln!(
            "dispatch-server: the conversation store {} is in use by {holder} (lock file \
             {}.lock), most likely the previous server still stopping; waiting up to {} ms for \
             it (--start-lock-wait-ms)",
            settings.db.display(),
            settings.db.display(),
            wait.as_millis()
        );
    })
    .map_err(|e| anyhow::anyhow!("{e} ({})", e.code()))?;
    if let Some((holder, waited)) = &acquired.waited {
        eprintln!(
            "dispatch-server: {holder} released {} after {} ms; starting",
            acquired.lock.path().display(),
            waited.as_millis()
        );
    }
    Ok(acquired.lock)
}

/// Starts the embedded collector. Its database lock held by a `dispatch-server` (one on
/// another store, sharing the traces database, still stopping) is waited for until
/// `deadline`; held by anything else (a standalone `dispatch-collector`, which does not go
/// away), the error comes back at once and the server serves without it, as before.
fn start_collector(
    settings: &Settings,
    deadline: Instant,
) -> Result<EmbeddedCollector, CollectorError> {
    let mut told = false;
    loop {
        match EmbeddedCollector::start(&settings.journal_dir, &settings.traces_db) {
            Err(CollectorError::Locked { lock, holder })
                if Instant::now() < deadline && held_by_a_server(&holder) =>
            {
                if !told {
                    eprintln!(
                        "dispatch-server: the traces database lock {} is held by {holder}, a \
                         dispatch-server still stopping; waiting up to {} ms for it",
                        lock.display(),
                        deadline.saturating_duration_since(Instant::now()).as_millis()
                    );
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            other => return other,
        }
    }
}

/// Whether a lock file's `pid N` names a live `dispatch-server` process.
fn held_by_a_server(holder: &str) -> bool {
    let Some(pid) = holder.strip_prefix("pid ").and_then(|p| p.trim().parse::<u32>().ok()) else {
        return false;
    };
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end().starts_with("dispatch-server"))
}

/// Serves until stopped; the exit status is 0, or [`pressure::EXIT_PRESSURE`] after a
/// pressure stop.
fn run(settings: Settings, supervised: Supervised) -> anyhow::Result<std::process::ExitCode> {
    let crash_monitor = CrashMonitorStatus::of(&supervised);
    // Under the monitor, `CrashBuilder::start` already asked for SIGTERM when it goes.
    if !supervised.is_monitored() {
        eprintln!(
            "dispatch-server: WARNING: crash monitor detached ({}): a crash leaves no minidump",
            crash_monitor.note.as_deref().unwrap_or("no reason given")
        );
    }
    std::fs::create_dir_all(&settings.var_dir)
        .with_context(|| format!("creating the var directory {}", settings.var_dir.display()))?;
    // Before the journal, the store and the collector: a replacement started while the
    // previous server is still stopping waits for it here (bounded) instead of failing on
    // SQLite's `database is locked` or the collector's lock. Held until the process ends.
    let start_deadline = Instant::now() + settings.start_lock_wait;
    let _start_lock = take_start_lock(&settings)?;
    // Flags and their environment variables were read once, by clap: the builders get the
    // resolved values and do not read the environment again.
    let mut builder = JournalBuilder::new(&settings.journal_dir).service(settings.service.clone());
    if let Some(bytes) = settings.journal_segment_bytes {
        builder = builder.max_segment_bytes(bytes);
    }
    if let Some(bytes) = settings.journal_budget_bytes {
        builder = builder.budget_bytes(bytes);
    }
    if let Some(lines) = settings.journal_queue_lines {
        builder = builder.queue_lines(lines);
    }
    // The journal continues the boot the monitor chose, so the monitor's `crash` and `exit`
    // records land under this process's boot.
    let journal = builder
        .boot_id(supervised.boot_id())
        .open()
        .with_context(|| format!("opening the journal in {}", settings.journal_dir.display()))?;
    journal.emit(Record::ProcessStart(telemetry::process_start(&settings, &crash_monitor)));
    // This build's executable into the symbol store, off the start path: a background copy
    // whose outcome is a `symbols.stored` record (and a warning when it fails).
    if let Some(store) = &settings.symbol_store {
        dispatch_server::symbols::start(store.clone(), journal.clone());
    }
    // A fatal panic (on the main thread) also gets a minidump: the hook asks the monitor.
    // The hook keeps `supervised` (and with it the crash handler) for the process's life.
    let supervised = Arc::new(supervised);
    let on_fatal: OnFatalPanic = {
        let supervised = supervised.clone();
        Box::new(move || {
            if let Some(guard) = supervised.guard() {
                guard.dump_now();
            }
        })
    };
    telemetry::install_panic_hooks(journal.clone(), settings.panic_backtrace, Some(on_fatal));
    let (collector, collector_status) = if settings.collector_enabled {
        match start_collector(&settings, start_deadline) {
            Ok(c) => {
                let status = c.status();
                (Some(c), status)
            }
            Err(e) => {
                eprintln!(
                    "dispatch-server: embedded collector not started ({}): {e:#}; serving \
                     without it (--no-collector turns it off)",
                    e.code()
                );
                (None, CollectorStatus::new(CollectorState::Failed(e.to_string())))
            }
        }
    } else {
        (None, CollectorStatus::new(CollectorState::Off))
    };
    let activity = Arc::new(Activity::new(settings.max_turns_in_flight, settings.max_queue_depth));
    let limits = pressure::Limits::resolve(
        settings.memory_soft_bytes,
        settings.memory_hard_bytes,
        dispatch_telemetry::memory::memory_limits(),
    );
    let breaker = pressure::Breaker::new(limits, journal.clone());
    if limits.any() {
        eprintln!("dispatch-server: memory pressure breaker: {}", limits.describe());
        if !settings.sampler_enabled {
            eprintln!(
                "dispatch-server: WARNING: the memory pressure breaker reads the sampler's \
                 figures; with the sampler off it never acts"
            );
        }
    }
    // The stall watchdog's live dump goes through the monitor's status connection.
    let watchdog = settings.stall_threshold.map(|threshold| {
        let probe = supervised.probe().cloned();
        let dump: Option<stall::LiveDump> =
            probe.map(|p| Box::new(move || p.live_dump()) as stall::LiveDump);
        let gauge = activity.clone();
        stall::Watchdog::new(
            threshold,
            journal.clone(),
            dump,
            Box::new(move || gauge.limiter.in_flight()),
        )
    });
    let sampler = if settings.sampler_enabled {
        let observer = breaker.clone();
        let stall_check = watchdog.clone();
        let sampler = SamplerBuilder::new()
            .interval(settings.sample_interval)
            .load_source(activity.clone())
            .on_sample(Arc::new(move |sample| {
                observer.observe(sample);
                if let Some(w) = &stall_check {
                    w.check(sample);
                }
            }))
            .report_steps(settings.sample_steps_reported)
            .start(journal.clone())
            .context("starting the memory sampler")?;
        Some(sampler)
    } else {
        eprintln!(
            "dispatch-server: WARNING: memory sampler off (benchmark switch); /health reports 503"
        );
        None
    };
    let addr = settings.addr;
    let addr_file = settings.addr_file.clone();
    let supervision =
        Supervision { crash_monitor, collector: collector_status, pressure: Some(breaker.clone()) };
    let (state, report) =
        AppState::start_supervised(settings, journal.clone(), activity, sampler, supervision)
            .context("starting the server")?;
    // Every `panic` record gets the conversations active and the sampler's last sample. The
    // turns map is only tried, never waited for, inside the hook.
    let context = state.clone();
    dispatch_telemetry::crash::set_panic_context(move || PanicContext {
        active_conversations: context.activity.try_active_conversations().unwrap_or_default(),
        memory: context.sampler.as_ref().and_then(|s| s.last()),
    });
    if state.api_token_created {
        eprintln!(
            "dispatch-server: created the API token in {} (0600): /v1 requests need \
             'Authorization: Bearer <its contents>'",
            state.api_token.source
        );
    } else {
        eprintln!("dispatch-server: API token from {}", state.api_token.source);
    }
    let sandbox = state.tools.sandbox();
    if sandbox.is_full() {
        eprintln!("dispatch-server: tool sandbox: {}", sandbox.describe());
    } else {
        eprintln!(
            "dispatch-server: WARNING: tool sandbox {}{}",
            sandbox.describe(),
            if state.settings.tools_require_sandbox {
                " (DISPATCH_TOOLS_REQUIRE_SANDBOX: tool calls are refused)"
            } else {
                ""
            }
        );
    }
    if !report.repairs.is_empty() {
        eprintln!(
            "dispatch-server: repair-and-seal: {} repairs, {} turns sealed",
            report.repairs.len(),
            report.sealed_turns.len()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("dispatch-worker")
        // Every worker and blocking thread gets an alternate signal stack, so a stack
        // overflow there still reaches the crash handler.
        .on_thread_start(|| {
            dispatch_telemetry::crash::install_thread_altstack();
        })
        .build()
        .context("building the tokio runtime")?;
    let started = std::time::Instant::now();
    let state_for_serve = state.clone();
    let stop = runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let bound = listener.local_addr().context("reading the bound address")?;
        if let Some(path) = &addr_file {
            // Write then rename, so a reader never sees a half-written address.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, format!("{bound}\n"))
                .and_then(|()| std::fs::rename(&tmp, path))
                .with_context(|| format!("writing the address file {}", path.display()))?;
        }
        eprintln!("dispatch-server: listening on http://{bound}");
        if let Some(w) = watchdog {
            tokio::spawn(w.heartbeat());
        }
        let stop = async move {
            tokio::select! {
                reason = stop_signal() => reason,
                () = breaker.critical() => pressure::STOP_REASON.to_owned(),
            }
        };
        serve(state_for_serve, listener, stop).await.context("serving")
    })?;
    let pressure_stop = stop.reason == pressure::STOP_REASON;
    if pressure_stop {
        // What held the memory, for the post-mortem (jemalloc's samples since profiling was
        // switched on; the file is there either way).
        match dispatch_server::admin::dump_heap_profile_for(&state, "pressure") {
            Ok(path) => {
                eprintln!("dispatch-server: heap profile at the pressure stop: {}", path.display())
            }
            Err(e) => eprintln!("dispatch-server: no heap profile at the pressure stop: {e}"),
        }
    }
    journal.emit(Record::ProcessStop(ProcessStop {
        reason: Some(stop.reason.clone()),
        uptime_ms: Some(telemetry::uptime_ms(started)),
        turns_sealed: Some(stop.turns_sealed),
    }));
    if !journal.flush(EXIT_FLUSH) {
        eprintln!("dispatch-server: the journal did not flush within {EXIT_FLUSH:?}");
    }
    // After the final flush, so `process.stop` reaches the traces database too.
    if let Some(collector) = collector {
        if !collector.stop(COLLECTOR_STOP_WAIT) {
            eprintln!(
                "dispatch-server: the embedded collector did not finish within \
                 {COLLECTOR_STOP_WAIT:?}; the next start drains the rest"
            );
        }
    }
    eprintln!("dispatch-server: stopped ({}, {} turns sealed)", stop.reason, stop.turns_sealed);
    if pressure_stop {
        eprintln!(
            "dispatch-server: exiting with status {} (memory pressure) for the supervisor to \
             restart with an empty heap",
            pressure::EXIT_PRESSURE
        );
        return Ok(std::process::ExitCode::from(pressure::EXIT_PRESSURE as u8));
    }
    Ok(std::process::ExitCode::SUCCESS)
}
