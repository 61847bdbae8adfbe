//! The admin API on the real binary: off without a token (404), 401 without the right bearer
//! token, 404 for an unknown fault; `panic-thread` and `panic-turn` are journaled once each
//! and leave the process up; `leak` shows in the turns' own allocation counts; `alloc` keeps
//! what it allocates; heap profiles are switched on and dumped.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Http, ServerProcess, of_kind, read_journal, wait_for};
use serde_json::{Value, json};

const TOKEN: &str = "admin-test-token-42";
const MIB: i64 = 1024 * 1024;

async fn admin(
    http: &Http,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default();
    let (status, out) = http.raw(method, path, &headers, bytes).await;
    (status, serde_json::from_slice(&out).unwrap_or(Value::Null))
}

/// Runs a short non-streaming turn; returns its summary.
async fn turn(http: &Http, conversation: &str, message: &str) -> Value {
    let (status, summary) = http
        .json(
            "POST",
            &format!("/v1/conversations/{conversation}/turns"),
            Some(json!({ "message": message })),
        )
        .await;
    assert_eq!(status, 200, "{summary}");
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_configured_the_admin_api_does_not_exist() {
    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(var.path(), &[]);
    let http = server.client();
    for (method, path) in [
        ("POST", "/admin/fault/segfault"),
        ("POST", "/admin/fault/nope"),
        ("POST", "/admin/heap/start"),
        ("GET", "/debug/pprof/heap"),
    ] {
        let (status, body) = admin(&http, method, path, Some("anything"), None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
    let (status, health) = http.json("GET", "/health", None).await;
    assert_eq!(status, 200, "still up: {health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_required_and_unknown_faults_are_404() {
    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(var.path(), &["--admin-token", TOKEN]);
    let http = server.client();
    for token in [None, Some("wrong"), Some(""), Some("admin-test-token-4")] {
        let (status, body) = admin(&http, "POST", "/admin/fault/segfault", token, None).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // Not a bearer token.
    let (status, _) =
        http.raw("POST", "/admin/fault/segfault", &[("authorization", TOKEN)], Vec::new()).await;
    assert_eq!(status, 401);
    let (status, body) = admin(&http, "POST", "/admin/fault/nope", None, None).await;
    assert_eq!(status, 401, "no token, no fault names: {body}");
    let (status, body) = admin(&http, "POST", "/admin/fault/nope", Some(TOKEN), None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "fault_not_found");
    let (status, health) = http.json("GET", "/health", None).await;
    assert_eq!(status, 200, "nothing crashed: {health}");
    // The token never reaches the journal or the logs.
    let journal = std::fs::read_dir(server.journal_dir())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    assert!(!journal.contains(TOKEN));
    assert!(journal.contains("\"admin\":true"), "the summary says the admin API is on");
    let stderr = std::fs::read_to_string(var.path().join("server.stderr")).unwrap();
    assert!(!stderr.contains(TOKEN), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_in_a_thread_and_in_a_turn_are_journaled_once_and_the_process_stays_up() {
    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(var.path(), &["--admin-token", TOKEN]);
    let http = server.client();

    let (status, body) = admin(&http, "POST", "/admin/fault/panic-thread", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["panicked"], true);
    let panics = wait_for("the background thread's panic record", || {
        let r = read_journal(&server.journal_dir());
        let p: Vec<Value> = of_kind(&r, "panic").into_iter().cloned().collect();
        (!p.is_empty()).then_some(p)
    });
    assert_eq!(panics.len(), 1, "exactly one panic record: {panics:?}");
    assert_eq!(panics[0]["thread"], "dispatch-fault-panic");
    assert_eq!(panics[0]["fatal"], false);
    assert_eq!(panics[0]["message"], "fault injected: panic-thread");
    assert!(panics[0]["conversation"].is_null(), "not a turn's panic");
    let (status, _) = http.json("GET", "/health", None).await;
    assert_eq!(status, 200, "the process is up");

    // panic-turn: the next turn panics, only that one.
    let (status, body) = admin(&http, "POST", "/admin/fault/panic-turn", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    let c = http.create_conversation().await;
    let failed = turn(&http, &c, "size:100 rate:0").await;
    assert_eq!(failed["outcome"], "error", "{failed}");
    assert_eq!(failed["code"], "panic", "{failed}");
    let id = failed["id"].as_str().unwrap().to_owned();
    let records = wait_for("the turn's panic and error.unhandled records", || {
        let r = read_journal(&server.journal_dir());
        let done = of_kind(&r, "error.unhandled").iter().any(|e| e["turn"] == id.as_str());
        done.then_some(r)
    });
    let panics: Vec<_> =
        of_kind(&records, "panic").into_iter().filter(|p| p["turn"] == id.as_str()).collect();
    assert_eq!(panics.len(), 1, "exactly one panic record for the turn: {panics:?}");
    assert_eq!(panics[0]["conversation"], c.as_str());
    assert_eq!(panics[0]["fatal"], false);
    assert!(panics[0]["backtrace"].as_str().is_some_and(|b| !b.is_empty()));
    assert_eq!(of_kind(&records, "panic").len(), 2, "no other panic was recorded");
    let unhandled =
        of_kind(&records, "error.unhandled").into_iter().find(|e| e["turn"] == id.as_str());
    let unhandled = unhandled.unwrap();
    assert_eq!(unhandled["code"], "panic");
    assert!(unhandled["active_conversations"].as_array().unwrap().contains(&json!(c)));
    // Armed once: the next turn is fine.
    assert_eq!(turn(&http, &c, "size:100 rate:0").await["outcome"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_shows_in_each_turns_allocation_counts_and_alloc_keeps_memory() {
    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(var.path(), &["--admin-token", TOKEN]);
    let http = server.client();
    let c = http.create_conversation().await;
    let body = json!({ "mb_per_turn": 8 });
    let (status, out) = admin(&http, "POST", "/admin/fault/leak", Some(TOKEN), Some(body)).await;
    assert_eq!(status, 200, "{out}");
    let mut leaky = Vec::new();
    for _ in 0..2 {
        leaky.push(turn(&http, &c, "size:200 rate:0").await["id"].as_str().unwrap().to_owned());
    }
    let body = json!({ "mb_per_turn": 0 });
    let (status, _) = admin(&http, "POST", "/admin/fault/leak", Some(TOKEN), Some(body)).await;
    assert_eq!(status, 200);
    let clean = turn(&http, &c, "size:200 rate:0").await["id"].as_str().unwrap().to_owned();
    let retained = |id: &str| {
        wait_for("the turn's turn.end", || {
            let r = read_journal(&server.journal_dir());
            let end = of_kind(&r, "turn.end").into_iter().find(|e| e["turn"] == id)?.clone();
            Some(end["alloc_bytes"].as_i64().unwrap() - end["freed_bytes"].as_i64().unwrap())
        })
    };
    for id in &leaky {
        assert!(retained(id) >= 8 * MIB, "turn {id} retained {} bytes", retained(id));
    }
    assert!(retained(&clean) < 8 * MIB, "the leak is off: {}", retained(&clean));

    let (status, out) =
        admin(&http, "POST", "/admin/fault/alloc", Some(TOKEN), Some(json!({ "mb": 16 }))).await;
    assert_eq!(status, 200, "{out}");
    assert!(out["retained_bytes"].as_i64().unwrap() >= (16 + 16) * MIB, "{out}");
    let (status, out) =
        admin(&http, "POST", "/admin/fault/leak", Some(TOKEN), Some(json!({ "mb": 1 }))).await;
    assert_eq!(status, 400, "leak takes mb_per_turn: {out}");

    // Limited to one conversation: only its turns retain memory.
    let other = http.create_conversation().await;
    let body = json!({ "mb_per_turn": 8, "conversation": c });
    let (status, out) = admin(&http, "POST", "/admin/fault/leak", Some(TOKEN), Some(body)).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["conversation"], c.as_str());
    let spared = turn(&http, &other, "size:200 rate:0").await["id"].as_str().unwrap().to_owned();
    let hit = turn(&http, &c, "size:200 rate:0").await["id"].as_str().unwrap().to_owned();
    assert!(retained(&spared) < 8 * MIB, "another conversation's turn: {}", retained(&spared));
    assert!(retained(&hit) >= 8 * MIB, "the leaking conversation's turn: {}", retained(&hit));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heap_profiles_are_switched_on_dumped_and_journaled() {
    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(var.path(), &["--admin-token", TOKEN]);
    let http = server.client();
    let (status, _) = admin(&http, "GET", "/debug/pprof/heap", None, None).await;
    assert_eq!(status, 401);
    let (status, out) = admin(&http, "POST", "/admin/heap/start", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["prof_active"], true);
    let c = http.create_conversation().await;
    turn(&http, &c, "size:20000 rate:0").await;
    let auth = format!("Bearer {TOKEN}");
    let (status, profile) =
        http.raw("GET", "/debug/pprof/heap", &[("authorization", &auth)], Vec::new()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&profile));
    assert!(profile.starts_with(b"heap_v2/"), "jemalloc's heap profile format");
    let record = wait_for("the heap.profile record", || {
        let r = read_journal(&server.journal_dir());
        of_kind(&r, "heap.profile").first().map(|v| (*v).clone())
    });
    assert_eq!(record["trigger"], "manual");
    assert_eq!(record["bytes"], profile.len() as u64);
    let path = std::path::PathBuf::from(record["path"].as_str().unwrap());
    assert!(path.starts_with(var.path().join("heap")), "{path:?}");
    assert_eq!(std::fs::read(&path).unwrap(), profile);
    let (status, out) = admin(&http, "POST", "/admin/heap/stop", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["prof_active"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_from_the_environment_works_and_tools_never_see_it() {
    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(var.path(), &[], &[("DISPATCH_ADMIN_TOKEN", TOKEN)]);
    let http = server.client();
    let (status, body) = admin(&http, "POST", "/admin/fault/nope", Some(TOKEN), None).await;
    assert_eq!(status, 404, "the admin API is on: {body}");
    assert_eq!(body["error"]["code"], "fault_not_found");
    // A tool's output lands in history: it must not carry the token or the monitor's handshake.
    let c = http.create_conversation().await;
    let summary = turn(&http, &c, "tool:sh env").await;
    assert_eq!(summary["outcome"], "ok", "{summary}");
    let (_, conv) = http.json("GET", &format!("/v1/conversations/{c}"), None).await;
    let tool = conv["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").unwrap();
    let env = tool["content"].as_str().unwrap();
    assert!(env.contains("PATH="), "the tool ran env: {env}");
    for withheld in [TOKEN, "DISPATCH_ADMIN_TOKEN", "DISPATCH_CRASH_BOOT", "DISPATCH_CRASH_SOCKET"]
    {
        assert!(!env.contains(withheld), "{withheld} leaked to a tool: {env}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_backtraces_a_panic_is_still_journaled_once() {
    let var = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start(var.path(), &["--admin-token", TOKEN, "--panic-backtrace=false"]);
    let http = server.client();
    let (status, body) = admin(&http, "POST", "/admin/fault/panic-thread", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    let panics = wait_for("the panic record", || {
        let r = read_journal(&server.journal_dir());
        let p: Vec<Value> = of_kind(&r, "panic").into_iter().cloned().collect();
        (!p.is_empty()).then_some(p)
    });
    assert_eq!(panics.len(), 1, "{panics:?}");
    assert_eq!(panics[0]["thread"], "dispatch-fault-panic");
    assert!(panics[0]["backtrace"].is_null(), "{}", panics[0]);
    assert!(panics[0]["location"].as_str().unwrap().contains("admin.rs"), "{}", panics[0]);
    assert!(panics[0]["active_conversations"].is_array(), "{}", panics[0]);
}
