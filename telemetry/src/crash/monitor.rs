//! The monitor process: runs the service as its child, writes the child's minidump from
//! outside when it crashes, journals `crash` and `exit`, and exits the way the child did.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dispatch_journal::Record;
use dispatch_journal::record::{Crash, Exit, HexU64};
use minidumper::{LoopAction, MinidumpBinary, Server, ServerHandler, SocketName};

use super::append::BootJournal;
use super::signals::{CRASH_SIGNALS, FORWARDED_SIGNALS, signal_name};
use super::{CrashBuilder, ENV_BOOT, ENV_MONITOR_PID, ENV_SOCKET, dump};
use crate::journal::new_boot_id;

/// What the dump server thread learned.
#[derive(Default)]
struct Outcome {
    dump: Option<Result<PathBuf, String>>,
    written_after: Option<Duration>,
}

struct Handler {
    dir: PathBuf,
    boot: String,
    outcome: Arc<Mutex<Outcome>>,
    requested: Arc<Mutex<Option<Instant>>>,
}

impl ServerHandler for Handler {
    fn create_minidump_file(&self) -> Result<(std::fs::File, PathBuf), std::io::Error> {
        if let Ok(mut r) = self.requested.lock() {
            *r = Some(Instant::now());
        }
        let created = dump::create_dump_file(&self.dir, &self.boot);
        if let (Err(e), Ok(mut o)) = (&created, self.outcome.lock()) {
            // minidumper drops this error after logging it; keep it for the crash record.
            o.dump = Some(Err(format!("creating a dump file in {}: {e}", self.dir.display())));
        }
        created
    }

    fn on_minidump_created(&self, result: Result<MinidumpBinary, minidumper::Error>) -> LoopAction {
        let started = self.requested.lock().ok().and_then(|r| *r);
        if let Ok(mut o) = self.outcome.lock() {
            o.written_after = started.map(|t| t.elapsed());
            o.dump = Some(match result {
                Ok(mut bin) => {
                    use std::io::Write;
                    let _ = bin.file.flush();
                    let _ = bin.file.sync_all();
                    Ok(bin.path)
                }
                Err(e) => Err(format!("writing the minidump failed: {e}")),
            });
        }
        LoopAction::Continue
    }

    fn on_message(&self, _kind: u32, _buffer: Vec<u8>) {}
}

static CHILD_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = CHILD_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe; the pid is our child's.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

#[allow(unsafe_code)]
fn install_forwarders() {
    for &sig in FORWARDED_SIGNALS {
        // SAFETY: installs a handler that only loads an atomic and calls kill(2), both
        // async-signal-safe. SA_RESTART keeps the monitor's wait() going.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Runs the monitor. Never returns: exits with the child's status, or dies of its signal.
pub(crate) fn run(cfg: &CrashBuilder) -> ! {
    let boot = new_boot_id();
    let socket = format!("dispatch-crash-{}-{}", std::process::id(), &boot[..8]);
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let requested = Arc::new(Mutex::new(None));
    let shutdown = Arc::new(AtomicBool::new(false));
    let mut setup_error = None;
    let server_thread = match Server::with_name(SocketName::Abstract(&socket)) {
        Ok(mut server) => {
            let handler = Handler {
                dir: cfg.dump_dir.clone(),
                boot: boot.clone(),
                outcome: outcome.clone(),
                requested: requested.clone(),
            };
            let stop = shutdown.clone();
            std::thread::Builder::new()
                .name("dispatch-crash-dumper".into())
                .spawn(move || {
                    if let Err(e) = server.run(Box::new(handler), &stop, None) {
                        eprintln!("dispatch-telemetry: crash monitor: dump server stopped: {e}");
                    }
                })
                .map_err(|e| setup_error = Some(format!("starting the dump server thread: {e}")))
                .ok()
        }
        Err(e) => {
            setup_error = Some(format!("crash monitor socket {socket}: {e}"));
            None
        }
    };
    if let Some(e) = &setup_error {
        eprintln!("dispatch-telemetry: crash monitor: {e}; the service runs without minidumps");
    }
    let oom_before = crate::memory::cgroup::oom_kill_count();

    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mut cmd = Command::new(&exe);
    cmd.args(std::env::args_os().skip(1))
        .env(ENV_BOOT, &boot)
        .env(ENV_MONITOR_PID, std::process::id().to_string());
    if server_thread.is_some() {
        cmd.env(ENV_SOCKET, &socket);
    }
    install_forwarders();
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dispatch-telemetry: crash monitor: starting {}: {e}", exe.display());
            std::process::exit(71);
        }
    };
    let pid = child.id();
    CHILD_PID.store(pid as i32, Ordering::Relaxed);
    // Do not waitpid() until the child has terminated: while a dump is being written, the
    // dumper thread ptraces the child, and a waitpid() from any thread of this process would
    // swallow the ptrace stops the dumper is waiting for.
    wait_until_terminated(pid);
    let status = loop {
        match child.wait() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("dispatch-telemetry: crash monitor: waiting for child {pid}: {e}");
                std::process::exit(71);
            }
        }
    };
    let uptime_ms = started.elapsed().as_millis() as u64;
    CHILD_PID.store(0, Ordering::Relaxed);
    shutdown.store(true, Ordering::Relaxed);
    if let Some(t) = server_thread {
        let _ = t.join();
    }
    let oom_killed = match (oom_before, crate::memory::cgroup::oom_kill_count()) {
        (Some(a), Some(b)) => Some(b > a),
        _ => None,
    };

    let outcome = std::mem::take(&mut *outcome.lock().unwrap_or_else(|p| p.into_inner()));
    let mut journal = BootJournal::find(&cfg.journal_dir, &cfg.service, &boot);
    let mut records = Vec::new();
    let died_of_crash = status.signal().is_some_and(|s| CRASH_SIGNALS.contains(&s));
    let mut summary_line = String::new();
    if died_of_crash || outcome.dump.is_some() {
        let tail = journal.tail();
        let mut crash = Crash {
            build_id: crate::build_id::current_build_id(),
            uptime_ms: Some(uptime_ms),
            last_sample: tail.last_sample.map(Box::new),
            active_conversations: Some(tail.active_conversations),
            ..Default::default()
        };
        if let Some(sig) = status.signal() {
            crash.signal = Some(signal_name(sig));
            crash.signo = Some(sig);
        }
        match outcome.dump {
            Some(Ok(path)) => {
                let scrubbed = dump::scrub_file(&path, &dump::secret_env_values());
                if let Err(e) = &scrubbed {
                    eprintln!(
                        "dispatch-telemetry: crash monitor: scrubbing {}: {e}",
                        path.display()
                    );
                }
                match dump::summarize(&path) {
                    Ok(s) => {
                        if let Some(signo) = s.signo {
                            crash.signal = Some(signal_name(signo));
                            crash.signo = Some(signo);
                        }
                        crash.code = s.code;
                        crash.fault_address = s.fault_address.map(HexU64);
                        crash.thread = s.thread.map(u64::from);
                        crash.thread_name = s.thread_name;
                    }
                    Err(e) => crash.dump_error = Some(format!("the dump does not read back: {e}")),
                }
                let bytes = std::fs::metadata(&path).map(|m| m.len()).ok();
                crash.minidump_bytes = bytes;
                crash.minidump = Some(path.display().to_string());
                summary_line = format!(
                    "; minidump {} ({} bytes, written {} ms after the request)",
                    path.display(),
                    bytes.unwrap_or(0),
                    outcome.written_after.map_or(0, |d| d.as_millis())
                );
                if let Err(e) =
                    dump::enforce_budget(&cfg.dump_dir, cfg.dump_budget_bytes, Some(&path))
                {
                    eprintln!(
                        "dispatch-telemetry: crash monitor: dump budget in {}: {e}",
                        cfg.dump_dir.display()
                    );
                }
            }
            Some(Err(e)) => {
                summary_line = format!("; no minidump: {e}");
                crash.dump_error = Some(e);
            }
            None => {
                let why = setup_error.clone().unwrap_or_else(|| {
                    "the child's crash handler never reached the monitor (it died before the \
                     handler was installed, or of a signal the handler cannot catch)"
                        .into()
                });
                summary_line = format!("; no minidump: {why}");
                crash.dump_error = Some(why);
            }
        }
        records.push(Record::Crash(crash));
    }
    records.push(Record::Exit(Exit {
        status: status.code(),
        signal: status.signal().map(signal_name),
        signo: status.signal(),
        core_dumped: Some(status.core_dumped()),
        oom_killed,
        uptime_ms: Some(uptime_ms),
        pid: Some(pid),
        exited_boot: None,
    }));
    if let Err(e) = journal.append(&records) {
        eprintln!(
            "dispatch-telemetry: crash monitor: appending to the journal in {}: {e}",
            cfg.journal_dir.display()
        );
    }
    if status.signal().is_some() || outcome_nonzero(status) {
        eprintln!(
            "dispatch-telemetry: crash monitor: child {pid} (boot {boot}) {} after {:.1} s{summary_line}",
            describe(status),
            uptime_ms as f64 / 1000.0
        );
    }
    exit_like(status)
}

/// Blocks until process `pid` has terminated (is a zombie), without reaping it or consuming
/// its ptrace stops: poll(2) on a pidfd, or, on kernels before 5.3, watching its state.
#[allow(unsafe_code)]
fn wait_until_terminated(pid: u32) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor we own (closed
    // below); poll reads one pollfd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as libc::c_int;
    if fd >= 0 {
        loop {
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: as above.
            let r = unsafe { libc::poll(&mut p, 1, -1) };
            if r > 0
                || (r < 0
                    && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted)
            {
                break;
            }
        }
        // SAFETY: fd is ours and not used after this.
        unsafe { libc::close(fd) };
        return;
    }
    let stat = format!("/proc/{pid}/stat");
    loop {
        match std::fs::read_to_string(&stat) {
            // The state is the field after the parenthesised command name.
            Ok(s) => {
                match s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) {
                    Some("Z" | "X") | None => return,
                    Some(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            Err(_) => return,
        }
    }
}

fn outcome_nonzero(status: ExitStatus) -> bool {
    status.code().is_some_and(|c| c != 0)
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) if status.core_dumped() => {
            format!("was killed by {} (core dumped)", signal_name(s))
        }
        (None, Some(s)) => format!("was killed by {}", signal_name(s)),
        _ => "ended".into(),
    }
}

/// Exits with the child's code, or dies of the child's signal so the service manager sees
/// the same `code=killed status=11/SEGV` it would have seen without a monitor.
#[allow(unsafe_code)]
fn exit_like(status: ExitStatus) -> ! {
    if let Some(sig) = status.signal() {
        // SAFETY: plain syscalls on our own process: no core file for the monitor itself
        // (the child's dump is the record), default disposition and an unblocked mask for
        // `sig`, then raise it. If we survive (the signal is ignorable and ignored), fall
        // through to exit with the shell's 128+n convention.
        unsafe {
            let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &zero);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(status.code().unwrap_or(1))
}
