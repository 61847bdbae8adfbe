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
    // In-flight turns get the grace period to finish, then are sealed.
    let deadline = Instant::now() + state.settings.shutdown_grace;
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
    Ok(StopReport { reason, turns_sealed })
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
