//! The monitored child: its signal handler asks the monitor for a dump.

use std::time::{Duration, Instant};

use crash_handler::{CrashEventResult, CrashHandler, make_crash_event};
use minidumper::{Client, SocketName};

use super::CrashError;
use super::server::MonitorProbe;

/// Keeps the child's crash handler installed. Dropping it detaches the handler.
pub struct ChildGuard {
    handler: CrashHandler,
    probe: MonitorProbe,
}

impl std::fmt::Debug for ChildGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildGuard")
    }
}

impl ChildGuard {
    /// Asks the monitor for a dump of this process now, without a signal (a fatal panic).
    pub fn dump_now(&self) -> bool {
        matches!(
            self.handler.simulate_signal(libc::SIGABRT as u32),
            CrashEventResult::Handled(true)
        )
    }

    /// Asks the monitor for a minidump of this running process (a stall), over the status
    /// connection: the process is paused while it is read and goes on. The scrubbed dump's
    /// path, or why there is none.
    ///
    /// # Errors
    /// As [`MonitorProbe::live_dump`].
    pub fn live_dump(&self) -> Result<std::path::PathBuf, String> {
        self.probe.live_dump()
    }

    /// The status connection to the monitor's dump server ([`MonitorProbe::check`]).
    pub fn probe(&self) -> &MonitorProbe {
        &self.probe
    }
}

/// Connects to the monitor's socket and installs the handler for SIGSEGV, SIGBUS, SIGILL,
/// SIGFPE, SIGABRT and SIGTRAP (on an alternate stack, so a stack overflow is caught), and
/// lets the monitor ptrace this process (Yama `ptrace_scope=1`). A second connection is the
/// status probe, so a crash request never shares its socket with a `/health` ping.
pub(crate) fn attach(socket: &str, monitor_pid: u32) -> Result<ChildGuard, CrashError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let client = loop {
        match Client::with_name(SocketName::Abstract(socket)) {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => {
                return Err(CrashError::Connect { socket: socket.into(), message: e.to_string() });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let probe = MonitorProbe::connect(socket)
        .map_err(|e| CrashError::Connect { socket: socket.into(), message: e.to_string() })?;
    let handler = attach_handler(client)?;
    handler.set_ptracer(Some(monitor_pid));
    Ok(ChildGuard { handler, probe })
}

#[allow(unsafe_code)]
fn attach_handler(client: Client) -> Result<CrashHandler, CrashError> {
    // SAFETY: make_crash_event is unsafe because the closure runs inside a signal handler in
    // a process that just faulted. The closure only calls Client::request_dump, which sends
    // the crash context (copied by crash-handler into static memory) over an already
    // connected socket with sendmsg and waits for the ack with recv: no allocation, no
    // locks that the faulting code could hold, no formatting.
    let event = unsafe {
        make_crash_event(move |ctx: &crash_handler::CrashContext| {
            // Handled(true): afterwards the default action is restored and the signal
            // re-raised, so the process dies of its real signal and the monitor sees it.
            let _ = client.request_dump(ctx);
            CrashEventResult::Handled(true)
        })
    };
    CrashHandler::attach(event).map_err(|e| CrashError::Attach { message: e.to_string() })
}

/// Asks the kernel to send this process SIGTERM when its parent, the monitor, dies; if the
/// monitor is already gone (it died before the request), stops now the same way.
#[allow(unsafe_code)]
pub(crate) fn die_with_monitor(monitor_pid: Option<u32>) {
    // SAFETY: prctl(PR_SET_PDEATHSIG, sig) only sets an attribute of this process; the
    // argument is a valid signal number.
    let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) };
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    if set != 0 {
        eprintln!(
            "dispatch-telemetry: PR_SET_PDEATHSIG failed; this process outlives a killed monitor"
        );
    } else if monitor_pid.is_some_and(|m| m as libc::pid_t != parent) {
        eprintln!("dispatch-telemetry: the crash monitor is already gone; stopping");
        // SAFETY: raise(SIGTERM) on ourselves, before the service installed any handler: the
        // default action ends the process, as the monitor's death would have.
        unsafe { libc::raise(libc::SIGTERM) };
    }
}

/// Size of the alternate signal stack [`install_thread_altstack`] gives a thread.
pub const ALTSTACK_BYTES: usize = 64 * 1024;

std::thread_local! {
    static ALTSTACK: std::cell::RefCell<Option<AltStack>> = const { std::cell::RefCell::new(None) };
}

struct AltStack {
    base: *mut libc::c_void,
    len: usize,
}

impl Drop for AltStack {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: disable this thread's alternate stack (it is ours: installed below on this
        // thread), then unmap the mapping we created; nothing else points into it.
        unsafe {
            let disable = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            libc::sigaltstack(&disable, std::ptr::null_mut());
            libc::munmap(self.base, self.len);
        }
    }
}

/// Gives the calling thread an alternate signal stack of [`ALTSTACK_BYTES`] (plus a guard
/// page) unless it has one at least that large, so a stack overflow on this thread still
/// reaches the crash handler. Call it from every thread the service starts, tokio workers
/// included (`Builder::on_thread_start`). Idempotent; freed when the thread exits.
#[allow(unsafe_code)]
pub fn install_thread_altstack() -> bool {
    ALTSTACK.with(|slot| {
        if slot.borrow().is_some() {
            return true;
        }
        // SAFETY: sigaltstack with a null new stack only reads the current setting into a
        // zeroed stack_t we own.
        let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above, a read of this thread's setting into `current`.
        if unsafe { libc::sigaltstack(std::ptr::null(), &mut current) } != 0 {
            return false;
        }
        if current.ss_flags & libc::SS_DISABLE == 0 && current.ss_size >= ALTSTACK_BYTES {
            return true;
        }
        let page = 4096usize;
        let len = ALTSTACK_BYTES + page;
        // SAFETY: an anonymous private mapping of `len` bytes; we check for MAP_FAILED, make
        // all but the lowest page (the guard) readable and writable, and hand that range to
        // sigaltstack for this thread only. AltStack unmaps it when the thread exits.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return false;
            }
            let stack = base.cast::<u8>().add(page).cast::<libc::c_void>();
            if libc::mprotect(stack, ALTSTACK_BYTES, libc::PROT_READ | libc::PROT_WRITE) != 0 {
                libc::munmap(base, len);
                return false;
            }
            let new = libc::stack_t { ss_sp: stack, ss_flags: 0, ss_size: ALTSTACK_BYTES };
            if libc::sigaltstack(&new, std::ptr::null_mut()) != 0 {
                libc::munmap(base, len);
                return false;
            }
            *slot.borrow_mut() = Some(AltStack { base, len });
        }
        true
    })
}
