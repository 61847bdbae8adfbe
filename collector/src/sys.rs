//! The collector's system calls that std has no safe wrapper for: the SIGTERM/SIGINT handler
//! of `dispatch-collector --follow` (an atomic flag the drain loop polls). The crate's only
//! unsafe code lives here (docs/ARCHITECTURE.md, "Where unsafe code lives, and why").

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Set by SIGTERM or SIGINT.
pub fn stop_flag() -> &'static AtomicBool {
    &STOP
}

extern "C" fn on_signal(_signo: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

/// Installs the SIGTERM and SIGINT handler that sets [`stop_flag`].
#[allow(unsafe_code)] // sigaction has no safe wrapper in std; tokio is not used here.
pub fn install_stop_handler() -> std::io::Result<()> {
    for signo in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `sigaction` is zero-initialisable (a plain C struct: an all-zero value is
        // "default handler, empty mask, no flags"). The handler we install only stores to a
        // static atomic, which is async-signal-safe, and it lives for the whole program.
        let rc = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            act.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(signo, &act, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
