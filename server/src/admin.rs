//! The admin API, for drills and tests: fault injection and jemalloc heap profiles. Off unless
//! a token is configured (`DISPATCH_ADMIN_TOKEN`); then every route needs
//! `Authorization: Bearer <token>`.
//!
//! - `POST /admin/fault/{name}`: `segfault`, `abort`, `stack-overflow`, `sigbus`, `sigill`
//!   answer 202 and crash the process [`CRASH_DELAY`] later (so the client gets its answer);
//!   the crash monitor writes the minidump and the `crash`/`exit` records. `panic-turn` makes
//!   the next turn's task panic (that turn fails, the process stays up). `panic-thread` panics a
//!   background thread (journaled, the process stays up). `leak` `{"mb_per_turn": N}` makes
//!   every later turn retain N MiB for good (0 stops it; `"conversation": ID` limits it to that
//!   conversation's turns); `alloc` `{"mb": N}` allocates and
//!   touches N MiB now and keeps it. `stall` `{"seconds": N}` (at most 120) answers 200, then
//!   blocks every runtime worker for N seconds (a blocking call inside async code), for the
//!   stall watchdog.
//! - `POST /admin/heap/{start|stop}`: switch jemalloc heap profiling (`prof.active`; compiled in
//!   and started inactive through `malloc_conf`).
//! - `GET /debug/pprof/heap`: dump a heap profile (`prof.dump`, jemalloc's text format, for
//!   `jeprof`) into `<var dir>/heap/`, journal a `heap.profile` record and return the file.
//!
//! Answers: admin off: 404 `not_found` (as for any unknown path); missing or wrong token: 401
//! `unauthorized`; unknown fault: 404 `fault_not_found`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use dispatch_journal::Record;
use dispatch_journal::record::HeapProfile;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::extract::parse_body;
use crate::faults::{
    CRASH_DELAY, MAX_FAULT_MB, inject_segfault, inject_sigbus, inject_sigill, inject_stack_overflow,
};
use crate::state::AppState;
use crate::sys;

/// The admin API is on and the request carries its token; otherwise the error to answer.
fn authorize(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<(), ApiError> {
    let Some(token) = &state.settings.admin_token else {
        return Err(ApiError::NoRoute(uri.path().to_owned()));
    };
    match crate::auth::bearer_token(headers) {
        Some(p) if token.matches(p) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeakRequest {
    mb_per_turn: u64,
    /// Only this conversation's turns leak (absent: every turn).
    #[serde(default)]
    conversation: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocRequest {
    mb: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StallRequest {
    seconds: u64,
}

/// Longest `stall` fault, seconds.
pub const MAX_STALL_SECONDS: u64 = 120;

fn check_mb(mb: u64) -> Result<u64, ApiError> {
    if mb > MAX_FAULT_MB {
        return Err(ApiError::InvalidRequest(format!("at most {MAX_FAULT_MB} MiB")));
    }
    Ok(mb)
}

/// `POST /admin/fault/{name}`.
pub async fn fault(
    State(state): State<AppState>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &uri)?;
    let limit = state.settings.max_body_bytes;
    let crash: fn() -> ! = match name.as_str() {
        "segfault" => inject_segfault,
        "abort" => std::process::abort,
        "stack-overflow" => inject_stack_overflow,
        "sigbus" => inject_sigbus,
        "sigill" => inject_sigill,
        "panic-turn" => {
            state.faults.arm_panic_turn();
            eprintln!("dispatch-server: admin: fault panic-turn armed for the next turn");
            return Ok(answer(StatusCode::OK, json!({ "fault": name, "armed": true })));
        }
        "panic-thread" => {
            eprintln!("dispatch-server: admin: fault panic-thread");
            let thread = std::thread::Builder::new()
                .name("dispatch-fault-panic".into())
                .spawn(|| panic!("fault injected: panic-thread"))
                .map_err(|e| ApiError::Internal(format!("starting the fault thread: {e}")))?;
            // Answer once the panic hook has journaled it.
            let panicked = tokio::task::spawn_blocking(move || thread.join().is_err())
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            return Ok(answer(StatusCode::OK, json!({ "fault": name, "panicked": panicked })));
        }
        "leak" => {
            let req: LeakRequest = parse_body(&headers, body, limit, false)?
                .ok_or_else(|| ApiError::InvalidRequest("a body {\"mb_per_turn\": N}".into()))?;
            let mb = check_mb(req.mb_per_turn)?;
            eprintln!(
                "dispatch-server: admin: fault leak: {mb} MiB retained per turn{}",
                req.conversation
                    .as_ref()
                    .map_or(String::new(), |c| format!(" of conversation {c}"))
            );
            let conversation = req.conversation.clone();
            state.faults.set_leak(mb, req.conversation);
            return Ok(answer(
                StatusCode::OK,
                json!({ "fault": name, "mb_per_turn": mb, "conversation": conversation }),
            ));
        }
        "alloc" => {
            let req: AllocRequest = parse_body(&headers, body, limit, false)?
                .ok_or_else(|| ApiError::InvalidRequest("a body {\"mb\": N}".into()))?;
            let mb = check_mb(req.mb)?;
            let faults = state.clone();
            tokio::task::spawn_blocking(move || faults.faults.retain(mb))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            eprintln!("dispatch-server: admin: fault alloc: {mb} MiB retained");
            let retained = state.faults.retained_bytes();
            return Ok(answer(
                StatusCode::OK,
                json!({ "fault": name, "mb": mb, "retained_bytes": retained }),
            ));
        }
        "stall" => {
            let req: StallRequest = parse_body(&headers, body, limit, false)?
                .ok_or_else(|| ApiError::InvalidRequest("a body {\"seconds\": N}".into()))?;
            if req.seconds > MAX_STALL_SECONDS {
                return Err(ApiError::InvalidRequest(format!(
                    "at most {MAX_STALL_SECONDS} seconds"
                )));
            }
            let handle = tokio::runtime::Handle::current();
            let workers = handle.metrics().num_workers();
            let hold = std::time::Duration::from_secs(req.seconds);
            eprintln!(
                "dispatch-server: admin: fault stall: blocking all {workers} runtime workers for {} s",
                req.seconds
            );
            // From another thread, after the answer has left: one blocking task per worker,
            // from the injection queue, so each worker takes one.
            std::thread::Builder::new()
                .name("dispatch-fault".into())
                .spawn(move || {
                    std::thread::sleep(CRASH_DELAY);
                    for _ in 0..workers {
                        handle.spawn(async move { std::thread::sleep(hold) });
                    }
                })
                .map_err(|e| ApiError::Internal(format!("starting the fault thread: {e}")))?;
            return Ok(answer(
                StatusCode::OK,
                json!({ "fault": name, "seconds": req.seconds, "workers": workers }),
            ));
        }
        _ => return Err(ApiError::FaultNotFound(name)),
    };
    eprintln!("dispatch-server: admin: fault {name}: crashing in {CRASH_DELAY:?}");
    std::thread::Builder::new()
        .name("dispatch-fault".into())
        .spawn(move || {
            dispatch_telemetry::crash::install_thread_altstack();
            std::thread::sleep(CRASH_DELAY);
            crash()
        })
        .map_err(|e| ApiError::Internal(format!("starting the fault thread: {e}")))?;
    Ok(answer(
        StatusCode::ACCEPTED,
        json!({ "fault": name, "crash_in_ms": CRASH_DELAY.as_millis() as u64 }),
    ))
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

/// `POST /admin/heap/{start|stop}`: switches jemalloc heap profiling on or off.
pub async fn heap(
    State(state): State<AppState>,
    Path(action): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &uri)?;
    let active = match action.as_str() {
        "start" => true,
        "stop" => false,
        _ => return Err(ApiError::NoRoute(uri.path().to_owned())),
    };
    sys::set_heap_profiling(active).map_err(ApiError::HeapProfile)?;
    eprintln!("dispatch-server: admin: heap profiling {}", if active { "on" } else { "off" });
    Ok(answer(StatusCode::OK, json!({ "prof_active": active })))
}

/// `GET /debug/pprof/heap`: dumps a heap profile, journals `heap.profile`, returns the file.
pub async fn pprof_heap(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &uri)?;
    let dir = dispatch_journal::paths::VarDir::new(&state.settings.var_dir).heap_dir();
    let boot = state.journal.boot().to_owned();
    let budget = state.settings.heap_profile_budget_bytes;
    let (path, bytes) = tokio::task::spawn_blocking(move || dump_heap_profile(&dir, &boot, budget))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::HeapProfile)?;
    state.journal.emit(Record::HeapProfile(HeapProfile {
        path: Some(path.display().to_string()),
        trigger: Some("manual".into()),
        bytes: Some(bytes.len() as u64),
    }));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok((
        [
            (CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (axum::http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        bytes,
    )
        .into_response())
}

/// Dumps a heap profile for `trigger` (`pressure`: before a pressure stop) into the var
/// dir's `heap/` and journals its `heap.profile` record; returns the profile's path. Blocking.
///
/// # Errors
/// Profiling is not compiled in, or the file cannot be written.
pub fn dump_heap_profile_for(
    state: &AppState,
    trigger: &str,
) -> Result<std::path::PathBuf, String> {
    let dir = dispatch_journal::paths::VarDir::new(&state.settings.var_dir).heap_dir();
    let (path, bytes) =
        dump_heap_profile(&dir, state.journal.boot(), state.settings.heap_profile_budget_bytes)?;
    state.journal.emit(Record::HeapProfile(HeapProfile {
        path: Some(path.display().to_string()),
        trigger: Some(trigger.to_owned()),
        bytes: Some(bytes.len() as u64),
    }));
    Ok(path)
}

/// Dumps a heap profile into `dir` (created 0700) as `heap.<boot>.<n>.prof`, then keeps the
/// directory's profiles within `budget_bytes`; returns its path and contents.
fn dump_heap_profile(
    dir: &std::path::Path,
    boot: &str,
    budget_bytes: u64,
) -> Result<(std::path::PathBuf, Vec<u8>), String> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::DirBuilderExt as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join(format!("heap.{boot}.{}.prof", N.fetch_add(1, Ordering::Relaxed)));
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", path.display()))?;
    sys::dump_heap_profile(&c_path)?;
    let bytes =
        std::fs::read(&path).map_err(|e| format!("reading back {}: {e}", path.display()))?;
    enforce_heap_budget(dir, budget_bytes, &path);
    Ok((path, bytes))
}

/// Deletes the oldest `heap.*.prof` files of `dir` until they fit in `budget_bytes`; `keep`
/// (the profile just written) is never deleted. Returns how many were deleted.
fn enforce_heap_budget(dir: &std::path::Path, budget_bytes: u64, keep: &std::path::Path) -> u64 {
    crate::tools::prune_oldest(dir, budget_bytes, keep, |p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("heap.") && n.ends_with(".prof"))
    })
}

#[cfg(test)]
mod tests {
    use super::enforce_heap_budget;

    #[test]
    fn heap_profiles_keep_within_their_budget_oldest_first() {
        let d = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for i in 0..5 {
            let p = d.path().join(format!("heap.b.{i}.prof"));
            std::fs::write(&p, vec![b'x'; 1000]).unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i);
            std::fs::File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
            paths.push(p);
        }
        std::fs::write(d.path().join("other.txt"), vec![b'y'; 5000]).unwrap();
        assert_eq!(enforce_heap_budget(d.path(), 2500, &paths[4]), 3);
        let left: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
        assert_eq!(left, [false, false, false, true, true]);
        assert!(d.path().join("other.txt").exists(), "only heap profiles are counted and deleted");
        // The one just written is kept even when it alone is over the budget.
        assert_eq!(enforce_heap_budget(d.path(), 10, &paths[4]), 1);
        assert!(paths[4].exists());
    }
}
