//! Serving: the listener, the `conversation.memory` loop and graceful shutdown (stop
//! accepting, let in-flight turns finish within the grace period, seal the rest).

use std::future::Future;
use std::time::{Duration, Instant};

use dispatch_journal::Record;
use tokio::net::TcpListener;

use crate::api::app;
use crate::state::AppState;

/// Extra time, after sealing, for sealed turns to store their end and for connections to close.
pub const DRAIN_AFTER_SEAL: Duration = Duration::from_secs(5);
/// Longest a server whose crash monitor is gone takes to stop, from the monitor's death
/// (SIGTERM through `PR_SET_PDEATHSIG`) to its exit: past it the process exits at once. Below
/// the default start-lock wait (`DEFAULT_START_LOCK_WAIT_MS`, 10 s), so a replacement started
/// right after the monitor's death outwaits it.
pub const ORPHAN_STOP_BOUND: Duration = Duration::from_secs(8);
const POLL: Duration = Duration::from_millis(20);

/// How serving ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopReport {
    /// What triggered the stop (`signal:SIGTERM`, `signal:SIGINT`, `shutdown`).
    pub reason: String,
    /// Turns sealed because the grace period ran out.
    pub turns_sealed: u64,
}

/// Serves `app(state)` on `listener` until `shutdown` resolves (to the stop reason), then
/// shuts down gracefully.
///
/// # Errors
/// The server fails to accept connections.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = String> + Send + 'static,
) -> std::io::Result<StopReport> {
    let memory_loop = state.settings.conversation_memory_interval.map(|every| {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                for record in
                    state.activity.conversation_memory(state.settings.conversation_memory_top)
                {
                    state.journal.emit(Record::ConversationMemory(record));
                }
            }
        })
    });
    let (reason_tx, mut reason_rx) = tokio::sync::watch::channel(None::<String>);
    let signal_state = state.clone();
    let graceful = async move {
        let reason = shutdown.await;
        signal_state.activity.begin_shutdown();
        let _ = reason_tx.send(Some(reason));
    };
    if let Ok(addr) = listener.local_addr() {
        let _ = state.bound.set(addr);
    }
    let unix = match &state.settings.listen_unix {
        Some(path) => Some(unix_listener(path, &state.settings.listen_unix_uids)?),
        None => None,
    };
    let unix_task = unix.map(|listener| {
        let mut stop = reason_rx.clone();
        let router = app(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(Option::is_some).await;
                })
                .await;
        })
    });
    let server = axum::serve(listener, app(state.clone())).with_graceful_shutdown(graceful);
    let mut server = tokio::spawn(server.into_future());
    // Wait for either the server to end or the shutdown signal. With no open connection the
    // server ends as soon as the signal arrives, so the reason decides, not which came first:
    // in-flight turns still get their grace period.
    let ended = tokio::select! {
        res = &mut server => Some(res),
        _ = reason_rx.wait_for(Option::is_some) => None,
    };
    let reason = reason_rx.borrow().clone();
    let Some(reason) = reason else {
        if let Some(h) = memory_loop {
            h.abort();
        }
        return match ended {
            Some(Ok(Ok(()))) | None => {
                Ok(StopReport { reason: "shutdown".into(), turns_sealed: 0 })
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => Err(std::io::Error::other(e.to_string())),
        };
    };
    // In-flight turns get the grace period to finish, then are sealed. Not when the crash
    // monitor is gone: this server is unsupervised, and the service manager's replacement is
    // waiting for our start lock, so turns are sealed at once and the stop is bounded.
    let grace = if state.crash_monitor.monitor_gone() {
        eprintln!(
            "dispatch-server: the crash monitor (pid {}) is gone; sealing {} in-flight turns now \
             and stopping within {} s",
            state.crash_monitor.monitor_pid.unwrap_or(0),
            state.activity.running(),
            ORPHAN_STOP_BOUND.as_secs()
        );
        exit_after(ORPHAN_STOP_BOUND);
        Duration::ZERO
    } else if reason == crate::pressure::STOP_REASON {
        // At the hard limit every second of grace risks the kernel's OOM kill (no dump, no
        // records): seal now.
        Duration::ZERO
    } else {
        state.settings.shutdown_grace
    };
    let deadline = Instant::now() + grace;
    while state.activity.running() > 0 && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let turns_sealed = if state.activity.running() > 0 { state.activity.seal_all() } else { 0 };
    let deadline = Instant::now() + DRAIN_AFTER_SEAL;
    while state.activity.running() > 0 && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    if ended.is_none() && tokio::time::timeout(DRAIN_AFTER_SEAL, &mut server).await.is_err() {
        server.abort();
    }
    if let Some(h) = memory_loop {
        h.abort();
    }
    if let Some(h) = unix_task {
        h.abort();
    }
    Ok(StopReport { reason, turns_sealed })
}

/// The bound of a stop: a thread that ends the process `after` from now if it is still
/// running (a drain or a final flush that hangs). Exit status 1, said on stderr.
fn exit_after(after: Duration) {
    let spawned = std::thread::Builder::new().name("dispatch-stop-bound".into()).spawn(move || {
        std::thread::sleep(after);
        eprintln!(
            "dispatch-server: still stopping {} s after the crash monitor's death; exiting now",
            after.as_secs()
        );
        std::process::exit(1);
    });
    if let Err(e) = spawned {
        eprintln!("dispatch-server: starting the stop-bound thread: {e}");
    }
}

/// A Unix socket listener that serves only peers whose uid (SO_PEERCRED) is allowed.
pub struct PeerCheckedUnixListener {
    inner: tokio::net::UnixListener,
    uids: Vec<u32>,
}

/// Binds `path` (a stale socket file is replaced; mode 0660) for the `uids` given, or this
/// process's own uid when none are.
fn unix_listener(path: &std::path::Path, uids: &[u32]) -> std::io::Result<PeerCheckedUnixListener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            )));
        }
        std::fs::remove_file(path)?;
    }
    let inner = tokio::net::UnixListener::bind(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let uids = if uids.is_empty() {
        // The uid of the socket file we just created is ours.
        use std::os::unix::fs::MetadataExt as _;
        vec![std::fs::metadata(path)?.uid()]
    } else {
        uids.to_vec()
    };
    eprintln!("dispatch-server: also listening on unix:{} (uids {uids:?})", path.display());
    Ok(PeerCheckedUnixListener { inner, uids })
}

impl axum::serve::Listener for PeerCheckedUnixListener {
    type Io = tokio::net::UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.inner.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            match stream.peer_cred() {
                Ok(cred) if self.uids.contains(&cred.uid()) => return (stream, addr),
                Ok(cred) => {
                    eprintln!(
                        "dispatch-server: unix socket: refused a peer with uid {}",
                        cred.uid()
                    );
                }
                Err(e) => eprintln!("dispatch-server: unix socket: no peer credentials ({e})"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Resolves on SIGTERM or SIGINT with `signal:SIGTERM` / `signal:SIGINT`.
pub async fn stop_signal() -> String {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        // Without signal handlers the process still stops on a signal, just not gracefully.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "signal:SIGTERM".to_owned(),
        _ = int.recv() => "signal:SIGINT".to_owned(),
    }
}
