//! HTTP handlers. Every handler returns `Result<_, ApiError>`; bodies are parsed by hand so
//! that each kind of bad input gets its own code (`bad_json`, `invalid_utf8`,
//! `body_too_large`, `unsupported_media_type`) instead of a framework default.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::from_fn_with_state;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::activity::StopReason;
use crate::admin;
use crate::auth;
use crate::collector::CollectorState;
use crate::config::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
use crate::error::{ApiError, InternalErrorDetail};
use crate::extract::{parse_body, path_id};
use crate::ids;
use crate::state::AppState;
use crate::store::{self, Delete, TurnStart, turn_status};
use crate::turn::{self, TurnEvent, TurnSummary};

/// Response header carrying the id of a started turn (useful with SSE, to cancel it).
pub const TURN_ID_HEADER: &str = "dispatch-turn-id";

/// The router: the JSON API, `/health` and `/metrics`, the admin API (answers 404 unless a
/// token is configured), with the body limit applied.
pub fn app(state: AppState) -> Router {
    let limit = state.settings.max_body_bytes;
    let v1 = Router::new()
        .route("/v1/conversations", post(create_conversation).get(list_conversations))
        .route("/v1/conversations/{id}", get(get_conversation).delete(delete_conversation))
        .route("/v1/conversations/{id}/turns", post(start_turn))
        .route("/v1/conversations/{id}/turns/{turn}/cancel", post(cancel_turn))
        .route_layer(from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/ui", get(crate::ui::page))
        .route("/ui/postmortem/{boot}", get(crate::ui::postmortem))
        .merge(v1)
        .route("/admin/fault/{name}", post(admin::fault))
        .route("/admin/heap/{action}", post(admin::heap))
        .route("/debug/pprof/heap", get(admin::pprof_heap))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(from_fn_with_state(state.clone(), journal_internal_errors))
        .layer(from_fn_with_state(state.clone(), auth::check_host_and_origin))
        .with_state(state)
}

/// Journals the details of an internal error (attached by `ApiError` to its response) as an
/// `error.unhandled` record with source `api`, under the id the client got; stderr gets a line.
async fn journal_internal_errors(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    if let Some(d) = response.extensions().get::<InternalErrorDetail>() {
        eprintln!("dispatch-server: api error {} ({}): {}", d.error_id, d.code, d.message);
        state.journal.emit(dispatch_journal::Record::ErrorUnhandled(
            dispatch_journal::record::ErrorUnhandled {
                message: Some(d.message.clone()),
                code: Some(d.code.to_owned()),
                source: Some("api".to_owned()),
                error_id: Some(d.error_id.clone()),
                ..Default::default()
            },
        ));
    }
    response
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateConversation {
    title: Option<String>,
}

async fn create_conversation(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<store::ConversationSummary>), ApiError> {
    let req: CreateConversation =
        parse_body(&headers, body, state.settings.max_body_bytes, true)?.unwrap_or_default();
    let max_title = state.settings.max_title_bytes;
    if let Some(t) = req.title.as_deref().filter(|t| t.len() > max_title) {
        return Err(ApiError::TitleTooLong { bytes: t.len(), limit: max_title });
    }
    let id = ids::new_id();
    let limit = state.settings.max_conversations;
    // Counted and created under the store's one connection, so the limit holds under races.
    let summary = state
        .store
        .call(move |c| {
            if store::count_conversations(c)? >= limit {
                return Ok(None);
            }
            store::create_conversation(c, &id, req.title.as_deref()).map(Some)
        })
        .await?
        .ok_or(ApiError::ConversationLimit { limit })?;
    Ok((StatusCode::CREATED, Json(summary)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list_conversations(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if limit == 0 || limit > MAX_LIST_LIMIT {
        return Err(ApiError::InvalidRequest(format!("limit must be 1..={MAX_LIST_LIMIT}")));
    }
    let list = state.store.call(move |c| store::list_conversations(c, limit)).await?;
    Ok(Json(json!({ "conversations": list })))
}

async fn get_conversation(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<store::ConversationDetail>, ApiError> {
    let id = path_id(path)?;
    let lookup = id.clone();
    match state.store.call(move |c| store::get_conversation(c, &lookup)).await? {
        Some(detail) => Ok(Json(detail)),
        None => Err(ApiError::ConversationNotFound(id)),
    }
}

async fn delete_conversation(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = path_id(path)?;
    let lookup = id.clone();
    match state.store.call(move |c| store::delete_conversation(c, &lookup)).await? {
        Delete::Deleted => Ok(StatusCode::NO_CONTENT),
        Delete::NotFound => Err(ApiError::ConversationNotFound(id)),
        Delete::Busy => Err(ApiError::TurnInProgress(id)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartTurnRequest {
    message: String,
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.to_ascii_lowercase().contains("text/event-stream")))
}

async fn start_turn(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let conversation = path_id(path)?;
    let req: StartTurnRequest = parse_body(&headers, body, state.settings.max_body_bytes, false)?
        .ok_or_else(|| {
        ApiError::InvalidRequest("a body {\"message\": \"...\"} is required".into())
    })?;
    if req.message.trim().is_empty() {
        return Err(ApiError::InvalidRequest("message must not be empty".into()));
    }
    if state.activity.is_shutting_down() {
        return Err(ApiError::ShuttingDown);
    }
    if let Err(r) = state.pressure.admit() {
        return Err(ApiError::MemoryPressure {
            figure_mib: r.figure >> 20,
            limit_mib: r.limit >> 20,
        });
    }
    if !state.activity.limiter.admit() {
        return Err(ApiError::QueueFull { limit: state.activity.limiter.max_queue() });
    }
    let turn = ids::new_id();
    let (c, t) = (conversation.clone(), turn.clone());
    let max_history = state.settings.max_history_bytes;
    let started = state
        .store
        .call(move |db| store::start_turn(db, &c, &t, &req.message, max_history))
        .await?;
    let turns = match started {
        TurnStart::Started { turns } => turns,
        TurnStart::NotFound => return Err(ApiError::ConversationNotFound(conversation)),
        TurnStart::Busy => return Err(ApiError::TurnInProgress(conversation)),
        TurnStart::HistoryFull { bytes } => {
            return Err(ApiError::HistoryLimit { conversation, bytes, limit: max_history });
        }
    };
    let streaming = wants_stream(&headers);
    let Ok(handle) = turn::spawn_turn(&state, conversation.clone(), turn.clone(), turns, streaming)
    else {
        // Shutdown began between the check and the registration: seal what was stored.
        let (c, t) = (conversation, turn);
        state
            .store
            .call(move |db| {
                store::finish_turn(
                    db,
                    &c,
                    &t,
                    turn_status::SEALED,
                    Some("server shutting down"),
                    "",
                )
            })
            .await?;
        return Err(ApiError::ShuttingDown);
    };
    let header =
        HeaderValue::from_str(&handle.id).map_err(|e| ApiError::Internal(e.to_string()))?;
    match handle.events {
        Some(events) => {
            let first = json!({ "id": handle.id, "conversation": conversation });
            let sse =
                Sse::new(sse_stream(first, events, handle.done)).keep_alive(KeepAlive::default());
            Ok(([(TURN_ID_HEADER, header)], sse).into_response())
        }
        None => {
            let summary = handle
                .done
                .await
                .map_err(|_| ApiError::Internal("the turn task ended without a result".into()))?;
            Ok(([(TURN_ID_HEADER, header)], Json(summary)).into_response())
        }
    }
}

fn json_event(name: &str, value: &impl serde::Serialize) -> Event {
    Event::default().event(name).json_data(value).unwrap_or_else(|e| {
        Event::default().event("error").data(format!("could not encode a {name} event: {e}"))
    })
}

/// SSE events: `turn` (ids), then `token`, `tool_call`, `tool_result` as they happen, then
/// `end` with the [`TurnSummary`].
fn sse_stream(
    first: serde_json::Value,
    events: mpsc::Receiver<TurnEvent>,
    done: oneshot::Receiver<TurnSummary>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct S {
        first: Option<serde_json::Value>,
        events: mpsc::Receiver<TurnEvent>,
        done: Option<oneshot::Receiver<TurnSummary>>,
    }
    stream::unfold(S { first: Some(first), events, done: Some(done) }, |mut s| async move {
        if let Some(first) = s.first.take() {
            return Some((Ok(json_event("turn", &first)), s));
        }
        if let Some(event) = s.events.recv().await {
            let e = match event {
                TurnEvent::Token(text) => json_event("token", &json!({ "text": text })),
                TurnEvent::ToolCall(call) => json_event("tool_call", &call),
                TurnEvent::ToolResult(result) => json_event("tool_result", &result),
            };
            return Some((Ok(e), s));
        }
        let done = s.done.take()?;
        let end = match done.await {
            Ok(summary) => json_event("end", &summary),
            Err(_) => Event::default().event("error").data("the turn task ended without a result"),
        };
        Some((Ok(end), s))
    })
}

async fn cancel_turn(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Path((conversation, turn)) = path.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    if state.activity.conversation_of(&turn).as_deref() == Some(conversation.as_str()) {
        state.activity.stop(&turn, StopReason::Cancel);
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "id": turn, "conversation": conversation, "status": "cancelling" })),
        ));
    }
    let (c, t) = (conversation.clone(), turn.clone());
    match state.store.call(move |db| store::turn_status(db, &c, &t)).await? {
        None => Err(ApiError::TurnNotFound { conversation, turn }),
        Some(_) => Err(ApiError::TurnNotRunning(turn)),
    }
}

/// The executable's build-id, read once (`/health` may be polled every second).
fn own_build_id() -> Option<&'static str> {
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ID.get_or_init(dispatch_telemetry::build_id::current_build_id).as_deref()
}

async fn health(State(state): State<AppState>) -> Response {
    let journal_ok = state.journal.is_healthy();
    let (sampler_alive, samples) = match &state.sampler {
        Some(s) => (s.is_alive(), s.samples_taken()),
        None => (false, 0),
    };
    let ok = journal_ok && sampler_alive;
    let (crash_attached, crash_note) = state.crash_monitor.now();
    let collector = state.collector.state();
    // A detached crash monitor or a stopped collector is reported, not fatal: the server
    // still serves (and a restart would not attach them), so it does not fail liveness.
    let mut warnings = Vec::new();
    if !crash_attached {
        warnings.push(format!(
            "crash monitor detached: {}",
            crash_note.as_deref().unwrap_or("no reason given")
        ));
    }
    if let CollectorState::Failed(e) = &collector {
        warnings.push(format!("embedded collector stopped: {e}"));
    }
    if let CollectorState::Retrying(e) = &collector {
        warnings.push(format!("embedded collector retrying (the journal keeps every line): {e}"));
    }
    let tool_sandbox = state.tools.sandbox().describe();
    if !state.tools.sandbox().is_full() {
        warnings.push(format!("tool sandbox {tool_sandbox}"));
    }
    let body = json!({
        "ok": ok,
        "version": env!("CARGO_PKG_VERSION"),
        "boot": state.journal.boot(),
        "pid": std::process::id(),
        "uptime_ms": state.started.elapsed().as_millis() as u64,
        "journal": { "healthy": journal_ok, "dir": state.journal.dir().display().to_string() },
        "traces_db": state.settings.traces_db.display().to_string(),
        "crash_dir": state.settings.crash_dir.display().to_string(),
        "build_id": own_build_id(),
        "sampler": {
            "alive": sampler_alive,
            "enabled": state.sampler.is_some(),
            "samples": samples,
            "interval_ms": state.settings.sample_interval.as_millis() as u64,
        },
        "turns_in_flight": state.activity.limiter.in_flight(),
        "queue_depth": state.activity.limiter.queued(),
        "shutting_down": state.activity.is_shutting_down(),
        "memory_pressure": {
            "level": state.pressure.level().as_str(),
            "bytes": state.pressure.figure(),
            "soft_limit_bytes": state.pressure.limits().soft,
            "hard_limit_bytes": state.pressure.limits().hard,
            "limits_from": if state.pressure.limits().cgroup { "cgroup" } else { "flags" },
            "turns_refused": state.pressure.refused(),
        },
        "tool_sandbox": tool_sandbox,
        "telemetry": {
            "journal": if journal_ok { "ok" } else { "failing" },
            // While writes fail: why (a full or read-only disk), and the lines lost so far;
            // the server keeps serving and the journal writes again once it can.
            "journal_error": state.journal.last_write_error(),
            "journal_dropped_lines": state.journal.lines_dropped(),
            "sampler": match &state.sampler {
                Some(_) if sampler_alive => "alive",
                Some(_) => "dead",
                None => "off",
            },
            "crash_monitor": if crash_attached { "attached" } else { "detached" },
            "crash_monitor_note": crash_note,
            "collector": collector.as_str(),
            "warnings": warnings,
        },
    });
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// Prometheus text (see [`crate::metrics`]). The `/proc` and traces-database reads run on the
/// blocking pool, off the runtime's workers.
async fn metrics(State(state): State<AppState>) -> Response {
    let (db, journal) = (state.settings.traces_db.clone(), state.settings.journal_dir.clone());
    let figures = tokio::task::spawn_blocking(move || {
        (
            crate::metrics::ProcessFigures::read(),
            crate::metrics::PipelineFigures::read(&db, &journal),
        )
    })
    .await
    .unwrap_or_default();
    let out = crate::metrics::render(&state, &figures.0, &figures.1);
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}
