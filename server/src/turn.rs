//! The turn loop. Every turn runs in its own task, behind the limiter, measured per poll, with
//! panics caught at its boundary: an error or a panic ends that turn only (outcome `error`,
//! journaled), and every other turn keeps streaming.
//!
//! A step streams provider text into a [`TurnSink`] (the provider's [`StepSink`]) that forwards tokens to the client and
//! appends them to the stored assistant message every [`FLUSH_BYTES`] or [`FLUSH_INTERVAL`],
//! so a crash mid-step leaves the partial output on disk for repair-and-seal to keep.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dispatch_journal::Record;
use dispatch_journal::record::{ErrorUnhandled, TurnEnd, TurnStart};
use dispatch_telemetry::crash::TurnContext;
use futures_util::FutureExt;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::activity::{Measured, RunningTurn, StopReason, TurnCounters};
use crate::message::{HistoryMessage, Role, ToolCall};
use crate::provider::{ProviderError, StepRequest, StepSink};
use crate::state::AppState;
use crate::store::{self, Store, StoreError, ToolResultRow, turn_status};
use crate::telemetry::take_captured_panic;
use crate::tools::ToolError;

/// New streamed text is appended to the stored message once this many bytes are pending.
pub const FLUSH_BYTES: usize = 4096;
/// ... or once this long has passed since the last append.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Events buffered per streaming client before the turn waits for it.
pub const EVENT_BUFFER: usize = 256;

/// Something that happened in a turn, streamed to an SSE client.
#[derive(Debug, Clone)]
pub enum TurnEvent {
    /// Text from the model.
    Token(String),
    /// The model called a tool.
    ToolCall(ToolCall),
    /// A tool answered.
    ToolResult(ToolResultEvent),
}

/// A tool result as streamed.
#[derive(Debug, Clone, Serialize)]
pub struct ToolResultEvent {
    /// The call answered.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Bounded output.
    pub content: String,
    /// Failed or could not run.
    pub is_error: bool,
    /// Cut to the history bound.
    pub truncated: bool,
    /// Full output file, when cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_file: Option<String>,
}

/// How a turn ended: the body of a non-streaming answer and of the SSE `end` event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TurnSummary {
    /// Turn id.
    pub id: String,
    /// Conversation id.
    pub conversation: String,
    /// `ok`, `error`, `cancelled` or `sealed`.
    pub outcome: String,
    /// Error message when not `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Stable code of the error, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Provider round trips.
    pub steps: u64,
    /// Tool calls made.
    pub tool_calls: u64,
    /// Bytes of assistant output.
    pub output_bytes: u64,
    /// A tool output was cut to the history bound.
    pub tool_output_truncated: bool,
    /// Wall time including the wait for a slot.
    pub duration_ms: u64,
    /// The assistant's text (non-streaming answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// A failure that ends a turn with outcome `error`.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A tool could not run.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The step limit was reached with the model still calling tools.
    #[error("the turn reached the step limit ({0}) with the model still calling tools")]
    StepLimit(u32),
    /// The model's output reached its byte limit (per step or per turn); what came before
    /// it is kept.
    #[error("the model's output reached its limit of {limit} bytes {per}; the rest was dropped")]
    OutputLimit {
        /// The limit, bytes.
        limit: usize,
        /// `per step` or `per turn`.
        per: &'static str,
    },
}

impl TurnError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Store(e) => e.code(),
            Self::Provider(e) => e.code(),
            Self::Tool(e) => e.code(),
            Self::StepLimit(_) => "step_limit",
            Self::OutputLimit { .. } => "output_limit",
        }
    }

    /// `source` of the `error.unhandled` record.
    pub fn source_kind(&self) -> &'static str {
        match self {
            Self::Store(_) | Self::StepLimit(_) | Self::OutputLimit { .. } => "task",
            Self::Provider(_) => "provider",
            Self::Tool(e) => e.source_kind(),
        }
    }
}

/// Shutdown has begun: no new turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShuttingDown;

/// The client side of a spawned turn.
#[derive(Debug)]
pub struct TurnHandle {
    /// Turn id.
    pub id: String,
    /// Streamed events (streaming requests only); closes when the turn ends.
    pub events: Option<mpsc::Receiver<TurnEvent>>,
    /// The summary, sent when the turn ends.
    pub done: oneshot::Receiver<TurnSummary>,
}

/// Sends events to a streaming client; stops trying once the client is gone (the turn goes on).
#[derive(Debug)]
pub struct EventTx {
    tx: Option<mpsc::Sender<TurnEvent>>,
    /// How long one event may wait for the client to read (`DISPATCH_STREAM_STALL_MS`).
    stall: Option<std::time::Duration>,
    /// The turn, for the line on stderr when its stream is detached.
    turn: String,
}

impl EventTx {
    /// Sends one event to the client's stream. A client that has gone away, or that has read
    /// nothing for `stall` while the buffer is full, is detached: the turn goes on without
    /// its stream (its output is stored), so it finishes and frees its provider slot.
    async fn send(&mut self, event: TurnEvent) {
        let Some(tx) = &self.tx else { return };
        let sent = match self.stall {
            Some(limit) => match tokio::time::timeout(limit, tx.send(event)).await {
                Ok(sent) => sent.is_ok(),
                Err(_) => {
                    eprintln!(
                        "dispatch-server: turn {}: the client read nothing for {} ms; its stream \
                         is detached, the turn goes on and is stored",
                        self.turn,
                        limit.as_millis()
                    );
                    false
                }
            },
            None => tx.send(event).await.is_ok(),
        };
        if !sent {
            self.tx = None;
        }
    }

    fn is_open(&self) -> bool {
        self.tx.is_some()
    }
}

/// Receives one step's streamed text: forwards each token, appends to the stored message.
pub struct TurnSink<'a> {
    store: &'a Store,
    message: i64,
    events: &'a mut EventTx,
    text: String,
    flushed: usize,
    last_flush: Instant,
    counters: &'a TurnCounters,
    error: Option<StoreError>,
    /// Bytes this step may stream (the step's and the turn's limits, whichever is nearer).
    limit: usize,
    /// Output beyond `limit` arrived and was dropped.
    cut: bool,
}

impl StepSink for TurnSink<'_> {
    fn is_full(&self) -> bool {
        self.cut
    }

    async fn token(&mut self, token: &str) {
        if token.is_empty() || self.cut {
            return;
        }
        if self.text.len() + token.len() > self.limit {
            self.cut = true;
            return;
        }
        self.text.push_str(token);
        self.counters.tokens.fetch_add(1, Ordering::Relaxed);
        self.counters.output_bytes.fetch_add(token.len() as u64, Ordering::Relaxed);
        if self.events.is_open() {
            self.events.send(TurnEvent::Token(token.to_owned())).await;
        }
        if self.text.len() - self.flushed >= FLUSH_BYTES
            || self.last_flush.elapsed() >= FLUSH_INTERVAL
        {
            self.flush().await;
        }
    }
}

impl TurnSink<'_> {
    async fn flush(&mut self) {
        if self.error.is_some() || self.flushed == self.text.len() {
            return;
        }
        let delta = self.text[self.flushed..].to_owned();
        let id = self.message;
        match self.store.call(move |c| store::append_assistant(c, id, &delta)).await {
            Ok(()) => {
                self.flushed = self.text.len();
                self.last_flush = Instant::now();
            }
            Err(e) => self.error = Some(e),
        }
    }
}

/// Counts kept while a turn runs.
#[derive(Debug, Default)]
struct Progress {
    steps: u64,
    tool_calls: u64,
    truncated: bool,
    output: Option<String>,
}

/// Who, what and where of a turn.
#[derive(Debug, Clone)]
struct TurnInfo {
    conversation: String,
    turn: String,
}

/// Registers and spawns a turn already recorded as `running` in the store.
///
/// # Errors
/// [`ShuttingDown`]: shutdown has begun; the caller seals the stored turn.
pub fn spawn_turn(
    state: &AppState,
    conversation: String,
    turn: String,
    turns: u64,
    streaming: bool,
) -> Result<TurnHandle, ShuttingDown> {
    let (stop_tx, stop_rx) = watch::channel(None);
    let counters = Arc::new(TurnCounters::default());
    let running = RunningTurn {
        conversation: conversation.clone(),
        turns,
        stop: stop_tx,
        counters: counters.clone(),
    };
    state.activity.register(turn.clone(), running).map_err(|_| ShuttingDown)?;
    let (tx, rx) = if streaming {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (done_tx, done_rx) = oneshot::channel();
    let info_conversation = conversation.clone();
    let info = TurnInfo { conversation, turn: turn.clone() };
    let task = run_turn(
        state.clone(),
        info,
        EventTx { tx, stall: state.settings.stream_stall, turn: turn.clone() },
        stop_rx,
        done_tx,
        counters.clone(),
        !streaming,
    );
    let context =
        TurnContext { conversation: info_conversation.into(), turn: turn.as_str().into() };
    tokio::spawn(Measured::new(task, counters, Some(context)));
    Ok(TurnHandle { id: turn, events: rx, done: done_rx })
}

async fn wait_stop(stop: &mut watch::Receiver<Option<StopReason>>) -> StopReason {
    loop {
        if let Some(reason) = *stop.borrow_and_update() {
            return reason;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

enum Ending {
    Finished(Result<Result<(), TurnError>, Box<dyn std::any::Any + Send>>),
    Stopped(StopReason),
}

async fn run_turn(
    state: AppState,
    t: TurnInfo,
    mut events: EventTx,
    mut stop: watch::Receiver<Option<StopReason>>,
    done: oneshot::Sender<TurnSummary>,
    counters: Arc<TurnCounters>,
    keep_output: bool,
) {
    let started = Instant::now();
    state.journal.emit(Record::TurnStart(TurnStart {
        conversation: Some(t.conversation.clone()),
        turn: Some(t.turn.clone()),
        provider: Some(state.provider.name().to_owned()),
        model: Some(state.provider.model().to_owned()),
    }));
    let mut progress = Progress { output: keep_output.then(String::new), ..Progress::default() };
    let ending = {
        let body = async {
            let _slot = state.activity.limiter.acquire().await;
            AssertUnwindSafe(turn_body(&state, &t, &mut events, &mut progress, &counters))
                .catch_unwind()
                .await
        };
        tokio::select! {
            r = body => Ending::Finished(r),
            reason = wait_stop(&mut stop) => Ending::Stopped(reason),
        }
    };
    let (outcome, error, code) = match ending {
        Ending::Finished(Ok(Ok(()))) => (turn_status::OK, None, None),
        Ending::Finished(Ok(Err(e))) => {
            state.journal.emit(Record::ErrorUnhandled(ErrorUnhandled {
                message: Some(e.to_string()),
                code: Some(e.code().to_owned()),
                source: Some(e.source_kind().to_owned()),
                conversation: Some(t.conversation.clone()),
                turn: Some(t.turn.clone()),
                backtrace: None,
                error_id: None,
                active_conversations: Some(state.activity.active_conversations()),
                memory: state.sampler.as_ref().and_then(|s| s.last()).map(Box::new),
            }));
            (turn_status::ERROR, Some(e.to_string()), Some(e.code().to_owned()))
        }
        Ending::Finished(Err(payload)) => {
            let message = dispatch_telemetry::crash::panic_message(payload.as_ref());
            let captured = take_captured_panic();
            // The panic hook already wrote the one `panic` record (with backtrace, conversation
            // and turn: `Measured` names the turn around each poll). That kind has no place for
            // the active conversations and the memory snapshot; this record carries them
            // (source `task`, code `panic`).
            state.journal.emit(Record::ErrorUnhandled(ErrorUnhandled {
                message: Some(format!("panic: {message}")),
                code: Some("panic".to_owned()),
                source: Some("task".to_owned()),
                conversation: Some(t.conversation.clone()),
                turn: Some(t.turn.clone()),
                backtrace: None,
                error_id: None,
                active_conversations: Some(state.activity.active_conversations()),
                memory: state.sampler.as_ref().and_then(|s| s.last()).map(Box::new),
            }));
            let at = captured.location.map(|l| format!(" at {l}")).unwrap_or_default();
            (turn_status::ERROR, Some(format!("panic{at}: {message}")), Some("panic".to_owned()))
        }
        Ending::Stopped(StopReason::Cancel) => {
            (turn_status::CANCELLED, Some("cancelled by request".to_owned()), None)
        }
        Ending::Stopped(StopReason::Seal) => (
            turn_status::SEALED,
            Some("sealed: the shutdown grace period ran out".to_owned()),
            None,
        ),
    };
    let orphan_reason = match outcome {
        turn_status::CANCELLED => "the turn was cancelled before the tool call finished",
        turn_status::SEALED => "the server stopped before the tool call finished",
        _ => "the turn failed before the tool call finished",
    };
    let (conv, turn, err) = (t.conversation.clone(), t.turn.clone(), error.clone());
    let sealed = state
        .store
        .call(move |c| store::finish_turn(c, &conv, &turn, outcome, err.as_deref(), orphan_reason))
        .await;
    if let Err(e) = sealed {
        eprintln!("dispatch-server: turn {}: storing its end failed: {e}", t.turn);
        state.journal.emit(Record::ErrorUnhandled(ErrorUnhandled {
            message: Some(format!("storing the end of the turn failed: {e}")),
            code: Some(e.code().to_owned()),
            source: Some("task".to_owned()),
            conversation: Some(t.conversation.clone()),
            turn: Some(t.turn.clone()),
            ..ErrorUnhandled::default()
        }));
    }
    state.activity.unregister(&t.turn);
    let counter = match outcome {
        turn_status::OK => &state.activity.outcomes.ok,
        turn_status::CANCELLED => &state.activity.outcomes.cancelled,
        turn_status::SEALED => &state.activity.outcomes.sealed,
        _ => &state.activity.outcomes.error,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let output_bytes = counters.output_bytes.load(Ordering::Relaxed);
    state
        .activity
        .outcomes
        .tokens
        .fetch_add(counters.tokens.load(Ordering::Relaxed), Ordering::Relaxed);
    let duration_ms = started.elapsed().as_millis() as u64;
    // Absent (not 0) when the build has no jemalloc thread counters.
    let allocation = counters.totals_now();
    state.journal.emit(Record::TurnEnd(TurnEnd {
        conversation: Some(t.conversation.clone()),
        turn: Some(t.turn.clone()),
        outcome: Some(outcome.to_owned()),
        duration_ms: Some(duration_ms),
        steps: Some(progress.steps),
        tool_calls: Some(progress.tool_calls),
        output_bytes: Some(output_bytes),
        tool_output_truncated: Some(progress.truncated),
        alloc_bytes: allocation.map(|(alloc, _)| alloc),
        freed_bytes: allocation.map(|(_, freed)| freed),
        error: error.clone(),
    }));
    let _ = done.send(TurnSummary {
        id: t.turn,
        conversation: t.conversation,
        outcome: outcome.to_owned(),
        error,
        code,
        steps: progress.steps,
        tool_calls: progress.tool_calls,
        output_bytes,
        tool_output_truncated: progress.truncated,
        duration_ms,
        output: progress.output,
    });
    drop(events);
}

async fn turn_body(
    state: &AppState,
    t: &TurnInfo,
    events: &mut EventTx,
    progress: &mut Progress,
    counters: &TurnCounters,
) -> Result<(), TurnError> {
    // Fault injection (admin API, off by default): here, inside the turn task's poll, so the
    // turn's `alloc_bytes` shows what it retains and the panic is the turn's own.
    state.faults.on_turn_start(&t.conversation, &t.turn);
    let conv = t.conversation.clone();
    let mut history = state.store.call(move |c| store::load_history(c, &conv)).await?;
    let mut history_bytes: u64 = history.iter().map(HistoryMessage::size_bytes).sum();
    counters.history_bytes.store(history_bytes, Ordering::Relaxed);
    let specs = state.tools.specs();
    let (step_limit, turn_limit) =
        (state.settings.max_step_output_bytes, state.settings.max_turn_output_bytes);
    let mut turn_output_bytes = 0usize;
    for step in 0..state.settings.max_steps {
        progress.steps += 1;
        let (conv, turn) = (t.conversation.clone(), t.turn.clone());
        let message = state.store.call(move |c| store::begin_assistant(c, &conv, &turn)).await?;
        let mut sink = TurnSink {
            store: &state.store,
            message,
            events: &mut *events,
            text: String::new(),
            flushed: 0,
            last_flush: Instant::now(),
            counters,
            error: None,
            limit: step_limit.min(turn_limit.saturating_sub(turn_output_bytes)),
            cut: false,
        };
        let request = StepRequest { history: &history, step, tools: &specs, turn: &t.turn };
        let calls = state.provider.step(request, &mut sink).await;
        sink.flush().await;
        if let Some(e) = sink.error.take() {
            return Err(e.into());
        }
        let text = std::mem::take(&mut sink.text);
        let cut = sink.is_full().then(|| {
            if sink.limit < step_limit {
                TurnError::OutputLimit { limit: turn_limit, per: "per turn" }
            } else {
                TurnError::OutputLimit { limit: step_limit, per: "per step" }
            }
        });
        drop(sink);
        turn_output_bytes += text.len();
        let calls = if cut.is_some() { Ok(Vec::new()) } else { calls };
        let calls = calls?;
        if let Some(out) = progress.output.as_mut() {
            out.push_str(&text);
        }
        let (stored_text, stored_calls) = (text.clone(), calls.clone());
        state
            .store
            .call(move |c| store::finish_assistant(c, message, &stored_text, &stored_calls))
            .await?;
        let assistant = HistoryMessage {
            role: Role::Assistant,
            content: text,
            tool_calls: calls.clone(),
            tool_call_id: None,
            tool_name: None,
        };
        history_bytes += assistant.size_bytes();
        history.push(assistant);
        counters.history_bytes.store(history_bytes, Ordering::Relaxed);
        if let Some(e) = cut {
            return Err(e);
        }
        if calls.is_empty() {
            return Ok(());
        }
        for call in calls {
            progress.tool_calls += 1;
            events.send(TurnEvent::ToolCall(call.clone())).await;
            let (row, failure) = match state.tools.run(&call, &t.conversation, &t.turn).await {
                Ok(out) => {
                    progress.truncated |= out.truncated;
                    let row = ToolResultRow {
                        call_id: call.id.clone(),
                        tool_name: call.name.clone(),
                        content: out.content,
                        is_error: out.is_error,
                        truncated: out.truncated,
                        output_file: out.output_file.map(|p| p.display().to_string()),
                    };
                    (row, None)
                }
                Err(e) => {
                    let row = ToolResultRow {
                        call_id: call.id.clone(),
                        tool_name: call.name.clone(),
                        content: format!("error: {e}"),
                        is_error: true,
                        truncated: false,
                        output_file: None,
                    };
                    (row, Some(e))
                }
            };
            let (conv, turn, stored) = (t.conversation.clone(), t.turn.clone(), row.clone());
            state.store.call(move |c| store::add_tool_result(c, &conv, &turn, &stored)).await?;
            events
                .send(TurnEvent::ToolResult(ToolResultEvent {
                    id: row.call_id.clone(),
                    name: row.tool_name.clone(),
                    content: row.content.clone(),
                    is_error: row.is_error,
                    truncated: row.truncated,
                    output_file: row.output_file.clone(),
                }))
                .await;
            if let Some(e) = failure {
                return Err(e.into());
            }
            let result = HistoryMessage {
                role: Role::Tool,
                content: row.content,
                tool_calls: Vec::new(),
                tool_call_id: Some(row.call_id),
                tool_name: Some(row.tool_name),
            };
            history_bytes += result.size_bytes();
            history.push(result);
            counters.history_bytes.store(history_bytes, Ordering::Relaxed);
        }
    }
    Err(TurnError::StepLimit(state.settings.max_steps))
}
