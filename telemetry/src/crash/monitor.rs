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

use super::append::BootJournal;
use super::server::{DumpPlace, DumpServer, Outcome, Stats};
use super::signals::{CRASH_SIGNALS, FORWARDED_SIGNALS, signal_name};
use super::{CrashBuilder, ENV_BOOT, ENV_MONITOR_PID, ENV_SOCKET, dump, scrub};
use crate::journal::new_boot_id;

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
    let stats = Arc::new(Stats::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    // Before anything (the child included) can read the dump directory: dumps a killed
    // monitor left unscrubbed are scrubbed now.
    let secrets = scrub::process_secrets();
    for (path, done) in scrub::scrub_leftovers(&cfg.dump_dir, &secrets) {
        match done {
            Ok(_) => eprintln!(
                "dispatch-telemetry: crash monitor: scrubbed {} left by an earlier monitor",
                path.display()
            ),
            Err(e) => eprintln!(
                "dispatch-telemetry: crash monitor: scrubbing {} left by an earlier monitor: {e}",
                path.display()
            ),
        }
    }
    // Bound before the child starts (its connections wait in the backlog); served once its
    // pid is known, so no other process ever gets a turn.
    let mut setup_error = None;
    let server = DumpServer::bind(&socket)
        .map_err(|e| setup_error = Some(format!("crash monitor socket @{socket}: {e}")))
        .ok();
    let oom_before = crate::memory::cgroup::oom_kill_count();

    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mut cmd = Command::new(&exe);
    cmd.args(std::env::args_os().skip(1))
        .env(ENV_BOOT, &boot)
        .env(ENV_MONITOR_PID, std::process::id().to_string());
    if server.is_some() {
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
    let server_thread = server.and_then(|server| {
        server
            .spawn(
                pid,
                DumpPlace {
                    dir: cfg.dump_dir.clone(),
                    boot: boot.clone(),
                    secrets: Arc::new(secrets.clone()),
                },
                outcome.clone(),
                stats.clone(),
                shutdown.clone(),
            )
            .map_err(|e| {
                let e = format!("starting the dump server thread: {e}");
                eprintln!(
                    "dispatch-telemetry: crash monitor: {e}; the service runs without minidumps"
                );
                setup_error = Some(e);
            })
            .ok()
    });
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
    let (refused_peers, refused_messages) = (
        stats.refused_peers.load(Ordering::Relaxed),
        stats.refused_messages.load(Ordering::Relaxed),
    );
    if refused_peers + refused_messages > 0 {
        eprintln!(
            "dispatch-telemetry: crash monitor: the dump server refused {refused_peers} \
             connection(s) from other processes and {refused_messages} bad message(s) this run"
        );
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
            Some(Ok(unscrubbed)) => match scrub::scrub_file(&unscrubbed, &secrets) {
                Err(e) => {
                    // Never published under a `.dmp` name unscrubbed; the next start retries.
                    let e = format!(
                        "scrubbing the minidump failed ({e}); left unscrubbed at {}",
                        unscrubbed.display()
                    );
                    summary_line = format!("; no minidump: {e}");
                    crash.dump_error = Some(e);
                }
                Ok((path, _masked)) => {
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
                        Err(e) => {
                            crash.dump_error = Some(format!("the dump does not read back: {e}"))
                        }
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
            },
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
