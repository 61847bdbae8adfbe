//! The admin API, for drills and tests: fault injection and jemalloc heap profiles. Off unless
//! a token is configured (`DISPATCH_ADMIN_TOKEN`); then every route needs
//! `Authorization: Bearer <token>`.
//!
//! - `POST /admin/fault/{name}`: `segfault`, `abort`, `stack-overflow`, `sigbus`, `sigill`
//!   answer 202 and crash the process [`CRASH_DELAY`] later (so the client gets its answer);
//!   the crash monitor writes the minidump and the `crash`/`exit` records. `panic-turn` makes
//!   the next turn's task panic (that turn fails, the process stays up). `panic-thread` panics a
//!   background thread (journaled, the process stays up). `leak` `{"mb_per_turn": N}` makes
//!   every later turn retain N MiB for good (0 stops it); `alloc` `{"mb": N}` allocates and
//!   touches N MiB now and keeps it.
//! - `POST /admin/heap/{start|stop}`: switch jemalloc heap profiling (`prof.active`; compiled in
//!   and started inactive through `malloc_conf`).
//! - `GET /debug/pprof/heap`: dump a heap profile (`prof.dump`, jemalloc's text format, for
//!   `jeprof`) into `<var dir>/heap/`, journal a `heap.profile` record and return the file.
//!
//! Answers: admin off: 404 `not_found` (as for any unknown path); missing or wrong token: 401
//! `unauthorized`; unknown fault: 404 `fault_not_found`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use dispatch_journal::Record;
use dispatch_journal::record::HeapProfile;
use serde::Deserialize;
use serde_json::json;

use crate::api::parse_body;
use crate::error::ApiError;
use crate::state::AppState;

/// Time between the 202 answer and the crash, so the client reads its answer first.
pub const CRASH_DELAY: Duration = Duration::from_millis(50);
/// Largest `mb_per_turn` / `mb` accepted (64 GiB): beyond it the request is a typo.
pub const MAX_FAULT_MB: u64 = 64 * 1024;

const MIB: usize = 1024 * 1024;

/// Fault injection state shared by the admin handlers and the turns.
#[derive(Debug, Default)]
pub struct Faults {
    leak_mb_per_turn: AtomicU64,
    panic_next_turn: AtomicBool,
    retained: Mutex<Vec<Vec<u8>>>,
    retained_bytes: AtomicU64,
}

impl Faults {
    /// Called at the start of every turn, inside the turn task's poll: panics when
    /// `panic-turn` is armed (once), and retains `mb_per_turn` MiB when `leak` is on.
    ///
    /// # Panics
    /// On purpose, when `panic-turn` was armed.
    pub fn on_turn_start(&self, turn: &str) {
        if self.panic_next_turn.swap(false, Ordering::SeqCst) {
            panic!("fault injected: panic-turn (turn {turn})");
        }
        let mb = self.leak_mb_per_turn.load(Ordering::Relaxed);
        if mb > 0 {
            self.retain(mb);
        }
    }

    /// Bytes retained by `leak` and `alloc` so far.
    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes.load(Ordering::Relaxed)
    }

    /// Allocates `mb` MiB, writes one byte per page so the pages are resident, and keeps them.
    fn retain(&self, mb: u64) {
        let len = usize::try_from(mb).unwrap_or(usize::MAX / MIB).saturating_mul(MIB);
        let mut block = vec![0u8; len];
        for i in (0..len).step_by(4096) {
            block[i] = 1;
        }
        let block = std::hint::black_box(block);
        self.retained.lock().unwrap_or_else(|p| p.into_inner()).push(block);
        self.retained_bytes.fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// The admin API is on and the request carries its token; otherwise the error to answer.
fn authorize(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<(), ApiError> {
    let Some(token) = &state.settings.admin_token else {
        return Err(ApiError::NoRoute(uri.path().to_owned()));
    };
    let presented = headers.get(AUTHORIZATION).map(|v| v.as_bytes()).and_then(|v| {
        let (scheme, rest) = v.split_at_checked(7)?;
        scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
    });
    match presented {
        Some(p) if token.matches(p) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeakRequest {
    mb_per_turn: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocRequest {
    mb: u64,
}

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
            state.faults.panic_next_turn.store(true, Ordering::SeqCst);
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
            state.faults.leak_mb_per_turn.store(mb, Ordering::Relaxed);
            eprintln!("dispatch-server: admin: fault leak: {mb} MiB retained per turn");
            return Ok(answer(StatusCode::OK, json!({ "fault": name, "mb_per_turn": mb })));
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

/// Writes through a null pointer: SIGSEGV, with this function on the crashing thread's stack
/// in the minidump.
#[inline(never)]
#[allow(unsafe_code)]
pub fn inject_segfault() -> ! {
    // `black_box` hides that the pointer is null from the optimiser and from lints, so the
    // store is emitted as written.
    let target = std::hint::black_box(std::ptr::null_mut::<u64>());
    // SAFETY: not safe, on purpose: this is the `segfault` drill. The write to address 0
    // faults (the zero page is never mapped on Linux) and the crash handler takes over; the
    // process never continues past it.
    unsafe { target.write_volatile(0x5e6f_a017) };
    unreachable!("a write to the null page returned")
}

/// Unbounded recursion on this thread (a normal thread stack, with an alternate signal stack
/// so the handler can run): SIGSEGV on the guard page.
#[allow(unsafe_code)]
fn inject_stack_overflow() -> ! {
    // SAFETY: not safe, on purpose: overflows this thread's stack (the drill).
    unsafe { sadness_generator::raise_stack_overflow() }
}

/// A read past the end of a file mapping: SIGBUS. (sadness-generator creates its scratch file
/// in the working directory.)
#[allow(unsafe_code)]
fn inject_sigbus() -> ! {
    // SAFETY: not safe, on purpose: touches a mapped page beyond the end of its file (the drill).
    unsafe { sadness_generator::raise_bus() }
}

/// An undefined instruction (`ud2`): SIGILL.
#[allow(unsafe_code)]
fn inject_sigill() -> ! {
    // SAFETY: not safe, on purpose: executes an undefined instruction (the drill).
    unsafe { sadness_generator::raise_illegal_instruction() }
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
    heap_profile::set_active(active).map_err(ApiError::HeapProfile)?;
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
    let dir = state.settings.var_dir.join("heap");
    let boot = state.journal.boot().to_owned();
    let (path, bytes) = tokio::task::spawn_blocking(move || heap_profile::dump(&dir, &boot))
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

/// jemalloc heap profiling through `mallctl`.
pub mod heap_profile {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt as _;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Sets `prof.active`.
    ///
    /// # Errors
    /// jemalloc refused (profiling not compiled in or not enabled at start).
    #[allow(unsafe_code)]
    pub fn set_active(active: bool) -> Result<(), String> {
        // SAFETY: `prof.active` is a `bool` mallctl (jemalloc's docs: rw, bool); the name is
        // NUL-terminated.
        unsafe { tikv_jemalloc_ctl::raw::write(b"prof.active\0", active) }
            .map_err(|e| format!("prof.active: {e} (heap profiling needs prof:true at start)"))
    }

    /// Dumps a profile into `dir` (created 0700) as `heap.<boot>.<n>.prof`; returns its path
    /// and contents.
    ///
    /// # Errors
    /// The directory cannot be created, jemalloc refused, or the file cannot be read back.
    #[allow(unsafe_code)]
    pub fn dump(dir: &Path, boot: &str) -> Result<(PathBuf, Vec<u8>), String> {
        static N: AtomicU64 = AtomicU64::new(0);
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = dir.join(format!("heap.{boot}.{}.prof", N.fetch_add(1, Ordering::Relaxed)));
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| format!("{} contains a NUL byte", path.display()))?;
        // SAFETY: `prof.dump` takes a `const char *` file name (jemalloc's docs: -w, const
        // char *); `c_path` is NUL-terminated and outlives the call, which only reads it.
        unsafe { tikv_jemalloc_ctl::raw::write(b"prof.dump\0", c_path.as_ptr()) }
            .map_err(|e| format!("prof.dump: {e} (heap profiling needs prof:true at start)"))?;
        let bytes =
            std::fs::read(&path).map_err(|e| format!("reading back {}: {e}", path.display()))?;
        Ok((path, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaking_turn_retains_its_megabytes() {
        let faults = Faults::default();
        faults.on_turn_start("t1");
        assert_eq!(faults.retained_bytes(), 0);
        faults.leak_mb_per_turn.store(2, Ordering::Relaxed);
        faults.on_turn_start("t2");
        faults.on_turn_start("t3");
        assert_eq!(faults.retained_bytes(), 4 * MIB as u64);
    }

    #[test]
    #[should_panic(expected = "fault injected: panic-turn (turn t9)")]
    fn an_armed_panic_turn_panics_once() {
        let faults = Faults::default();
        faults.panic_next_turn.store(true, Ordering::SeqCst);
        faults.on_turn_start("t9");
    }
}
