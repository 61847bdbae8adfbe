//! The JSON API through `app(state)`: bad input gets a 4xx with a clear
//! `{"error":{"code","message"}}` and the server carries on; conversations round-trip; turns
//! answer without SSE; cancel works. Served on a real 127.0.0.1 listener (port 0) with real
//! SQLite files, plus a few `oneshot` calls.

#![allow(clippy::unwrap_used)] // a test crate: the fixture helper below is not a #[test]

mod common;

use std::sync::Arc;

use axum::body::Body;
use common::Http;
use dispatch_server::{Activity, AppState, Settings, app};
use dispatch_telemetry::journal::JournalBuilder;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    state: AppState,
    http: Http,
}

async fn fixture(tweak: impl FnOnce(&mut Settings)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_var_dir(dir.path());
    settings.tool_workdir = dir.path().to_path_buf();
    tweak(&mut settings);
    let journal = JournalBuilder::new(&settings.journal_dir).open().unwrap();
    let activity = Arc::new(Activity::new(settings.max_turns_in_flight, settings.max_queue_depth));
    let (state, _) = AppState::start(settings, journal, activity, None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let token = common::api_token(dir.path());
    Fixture { _dir: dir, state, http: Http::with_token(addr, token) }
}

fn assert_error(status: u16, body: &[u8], want_status: u16, want_code: &str) {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!("error body is not JSON ({e}): {}", String::from_utf8_lossy(body))
    });
    assert_eq!(status, want_status, "{v}");
    assert_eq!(v["error"]["code"], want_code, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.len() > 10), "a clear message: {v}");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_the_server_carries_on() {
    let f = fixture(|_| {}).await;
    let c = f.http.create_conversation().await;
    let turns = format!("/v1/conversations/{c}/turns");
    let json_ct = [("content-type", "application/json")];

    let (s, b) = f.http.raw("POST", &turns, &json_ct, b"{\"message\": ".to_vec()).await;
    assert_error(s, &b, 400, "bad_json");
    let (s, b) = f.http.raw("POST", &turns, &json_ct, b"{\"msg\": \"x\"}".to_vec()).await;
    assert_error(s, &b, 400, "bad_json");
    let (s, b) = f.http.raw("POST", &turns, &json_ct, b"{\"message\": \"caf\xe9\"}".to_vec()).await;
    assert_error(s, &b, 400, "invalid_utf8");
    let (s, b) = f
        .http
        .raw("POST", &turns, &[("content-type", "text/plain")], b"{\"message\":\"x\"}".to_vec())
        .await;
    assert_error(s, &b, 415, "unsupported_media_type");
    let (s, b) = f.http.raw("POST", &turns, &[], b"{\"message\":\"x\"}".to_vec()).await;
    assert_error(s, &b, 415, "unsupported_media_type");
    let big = serde_json::to_vec(&json!({ "message": "x".repeat(1024 * 1024 + 1) })).unwrap();
    let (s, b) = f.http.raw("POST", &turns, &json_ct, big).await;
    assert_error(s, &b, 413, "body_too_large");
    let (s, b) = f.http.raw("POST", &turns, &json_ct, b"{\"message\": \"  \"}".to_vec()).await;
    assert_error(s, &b, 400, "invalid_request");

    let unknown = "00000000-0000-4000-8000-000000000000";
    for (method, path) in [
        ("GET", format!("/v1/conversations/{unknown}")),
        ("DELETE", format!("/v1/conversations/{unknown}")),
        ("GET", "/v1/conversations/not-an-id".to_owned()),
    ] {
        let (s, b) = f.http.raw(method, &path, &[], Vec::new()).await;
        assert_error(s, &b, 404, "conversation_not_found");
    }
    let (s, b) = f
        .http
        .raw(
            "POST",
            &format!("/v1/conversations/{unknown}/turns"),
            &json_ct,
            b"{\"message\":\"hi\"}".to_vec(),
        )
        .await;
    assert_error(s, &b, 404, "conversation_not_found");
    let (s, b) = f.http.raw("POST", &format!("{turns}/{unknown}/cancel"), &[], Vec::new()).await;
    assert_error(s, &b, 404, "turn_not_found");
    let (s, b) = f.http.raw("GET", "/v2/nothing", &[], Vec::new()).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = f.http.raw("PUT", "/v1/conversations", &[], Vec::new()).await;
    assert_error(s, &b, 405, "method_not_allowed");
    let (s, b) = f.http.raw("GET", "/v1/conversations?limit=0", &[], Vec::new()).await;
    assert_error(s, &b, 400, "invalid_request");
    let (s, b) = f.http.raw("GET", "/v1/conversations?limit=abc", &[], Vec::new()).await;
    assert_error(s, &b, 400, "invalid_request");

    // The server carries on: a good turn on the same conversation works.
    let (s, v) = f.http.json("POST", &turns, Some(json!({ "message": "still fine" }))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["outcome"], "ok");
    assert_eq!(v["output"], "You said: still fine");
    let (s, health) = f.http.json("GET", "/health", None).await;
    assert_eq!(s, 503, "no sampler in this fixture, so telemetry is reported unhealthy: {health}");
    assert_eq!(health["journal"]["healthy"], true);
}

#[tokio::test]
async fn conversations_round_trip_and_delete() {
    let f = fixture(|_| {}).await;
    let (s, created) =
        f.http.json("POST", "/v1/conversations", Some(json!({ "title": "t1" }))).await;
    assert_eq!(s, 201);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "idle");
    let (s, v) = f
        .http
        .json(
            "POST",
            &format!("/v1/conversations/{id}/turns"),
            Some(json!({ "message": "tool:sh echo hi" })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["outcome"].as_str(), v["steps"].as_u64(), v["tool_calls"].as_u64()),
        (Some("ok"), Some(2), Some(1))
    );
    let (s, conv) = f.http.json("GET", &format!("/v1/conversations/{id}"), None).await;
    assert_eq!(s, 200);
    let roles: Vec<&str> =
        conv["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert_eq!(conv["messages"][2]["content"], "hi\n");
    assert_eq!(conv["title"], "t1");
    let (s, list) = f.http.json("GET", "/v1/conversations", None).await;
    assert_eq!(s, 200);
    assert_eq!(list["conversations"][0]["id"], id.as_str());
    assert_eq!(list["conversations"][0]["turns"], 1);
    let (s, _) = f.http.json("DELETE", &format!("/v1/conversations/{id}"), None).await;
    assert_eq!(s, 204);
    let (s, _) = f.http.json("GET", &format!("/v1/conversations/{id}"), None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_running_turn_blocks_a_second_one_and_can_be_cancelled() {
    let f = fixture(|_| {}).await;
    let c = f.http.create_conversation().await;
    let http = f.http.clone();
    let c2 = c.clone();
    let first = tokio::spawn(async move {
        http.json(
            "POST",
            &format!("/v1/conversations/{c2}/turns"),
            Some(json!({ "message": "rate:5 size:100000" })),
        )
        .await
    });
    // Find the running turn through the store's view of the conversation.
    let turn = common::wait_for_async("the turn to be running", || {
        let http = f.http.clone();
        let c = c.clone();
        async move {
            let (_, conv) = http.json("GET", &format!("/v1/conversations/{c}"), None).await;
            let t = conv["turns_list"].as_array()?.first()?.clone();
            (t["status"] == "running").then(|| t["id"].as_str().unwrap().to_owned())
        }
    })
    .await;
    let (s, v) = f
        .http
        .json("POST", &format!("/v1/conversations/{c}/turns"), Some(json!({ "message": "again" })))
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "turn_in_progress");
    let (s, v) = f.http.json("DELETE", &format!("/v1/conversations/{c}"), None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("turn_in_progress")));
    let (s, v) =
        f.http.json("POST", &format!("/v1/conversations/{c}/turns/{turn}/cancel"), None).await;
    assert_eq!(s, 202, "{v}");
    let (s, v) = first.await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(v["outcome"], "cancelled", "{v}");
    let (s, v) =
        f.http.json("POST", &format!("/v1/conversations/{c}/turns/{turn}/cancel"), None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("turn_not_running")));
    let (_, conv) = f.http.json("GET", &format!("/v1/conversations/{c}"), None).await;
    assert_eq!(conv["status"], "idle");
    assert_eq!(conv["turns_list"][0]["status"], "cancelled");
}

#[tokio::test]
async fn the_queue_is_bounded_and_its_depth_is_exposed() {
    let f = fixture(|s| {
        s.max_turns_in_flight = 1;
        s.max_queue_depth = 1;
    })
    .await;
    let mut convs = Vec::new();
    for _ in 0..3 {
        convs.push(f.http.create_conversation().await);
    }
    let slow = |c: String| {
        let http = f.http.clone();
        tokio::spawn(async move {
            http.json(
                "POST",
                &format!("/v1/conversations/{c}/turns"),
                Some(json!({ "message": "rate:5 size:100000" })),
            )
            .await
        })
    };
    let _a = slow(convs[0].clone());
    common::wait_for_async("one turn in flight", || {
        let n = f.state.activity.limiter.in_flight();
        async move { (n == 1).then_some(()) }
    })
    .await;
    let _b = slow(convs[1].clone());
    common::wait_for_async("one turn queued", || {
        let n = f.state.activity.limiter.queued();
        async move { (n == 1).then_some(()) }
    })
    .await;
    let (s, v) = f
        .http
        .json(
            "POST",
            &format!("/v1/conversations/{}/turns", convs[2]),
            Some(json!({ "message": "x" })),
        )
        .await;
    assert_eq!((s, v["error"]["code"].as_str()), (503, Some("queue_full")), "{v}");
    let (_, metrics) = f.http.raw("GET", "/metrics", &[], Vec::new()).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("\ndispatch_turn_queue_depth 1\n"), "{metrics}");
    assert!(metrics.contains("\ndispatch_turns_in_flight 1\n"), "{metrics}");
    assert!(!metrics.contains(&convs[0]), "no per-conversation labels");
    f.state.activity.seal_all();
}

#[tokio::test]
async fn oneshot_routes_answer_json_errors() {
    let f = fixture(|_| {}).await;
    let router = app(f.state.clone());
    let bearer = format!("Bearer {}", common::api_token(f._dir.path()));
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/conversations")
        .header("content-type", "application/json")
        .header("authorization", &bearer)
        .body(Body::from("[1,2"))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "bad_json");
    let req = axum::http::Request::builder()
        .uri("/v1/conversations")
        .header("authorization", &bearer)
        .body(Body::empty())
        .unwrap();
    let resp = router.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn pathological_tool_output_is_bounded_in_history_and_offloaded() {
    let f = fixture(|_| {}).await;
    let c = f.http.create_conversation().await;
    let (s, v) = f
        .http
        .json(
            "POST",
            &format!("/v1/conversations/{c}/turns"),
            Some(json!({ "message": "tool:sh seq 1 300000" })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["outcome"], "ok");
    assert_eq!(v["tool_output_truncated"], true);
    let (_, conv) = f.http.json("GET", &format!("/v1/conversations/{c}"), None).await;
    let tool =
        conv["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").unwrap().clone();
    assert_eq!(tool["truncated"], true);
    let content = tool["content"].as_str().unwrap();
    assert!(content.len() <= 50 * 1024 + 300, "bounded: {} bytes", content.len());
    assert!(content.lines().count() <= 2001);
    let file = tool["output_file"].as_str().unwrap();
    assert!(content.contains(file), "the message refers to the file");
    let full = std::fs::read_to_string(file).unwrap();
    assert_eq!(full.lines().count(), 300_000);
    assert!(full.ends_with("300000\n"));
}

#[tokio::test]
async fn internal_errors_give_the_client_an_id_and_keep_the_details_in_the_journal() {
    let f = fixture(|_| {}).await;
    // Break the store from outside: every query on conversations now fails in SQLite.
    let conn = rusqlite::Connection::open(&f.state.settings.db).unwrap();
    conn.execute_batch("DROP TABLE messages; DROP TABLE turns; DROP TABLE conversations;").unwrap();
    drop(conn);
    let (status, v) = f.http.json("GET", "/v1/conversations", None).await;
    assert_eq!(status, 500, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    let error_id = v["error"]["error_id"].as_str().unwrap().to_owned();
    assert!(message.contains(&error_id), "{message}");
    let db = f.state.settings.db.display().to_string();
    assert!(
        !message.contains("no such table") && !message.contains(&db),
        "details leaked: {message}"
    );
    let records = common::read_journal(&f.state.settings.journal_dir);
    let logged = common::of_kind(&records, "error.unhandled")
        .into_iter()
        .find(|r| r["error_id"] == error_id.as_str())
        .unwrap_or_else(|| panic!("no error.unhandled with id {error_id}"));
    assert_eq!(logged["source"], "api");
    assert!(logged["message"].as_str().unwrap().contains("no such table"), "{logged}");
}

#[tokio::test]
async fn caps_refuse_with_clear_4xx_and_cut_long_output() {
    let f = fixture(|s| {
        s.max_title_bytes = 10;
        s.max_conversations = 2;
        s.max_step_output_bytes = 1000;
        s.max_history_bytes = 2500;
        s.sim_tokens_per_sec = 0;
    })
    .await;
    let (status, v) =
        f.http.json("POST", "/v1/conversations", Some(json!({ "title": "eleven byte" }))).await;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("title_too_long")), "{v}");
    let a = f.http.create_conversation().await;
    let _b = f.http.create_conversation().await;
    let (status, v) = f.http.json("POST", "/v1/conversations", None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (429, Some("conversation_limit")), "{v}");

    // One step asked for 50,000 bytes: cut at 1,000, the turn ends with output_limit.
    let events = f.http.stream_turn(&a, "size:50000", |_| {}).await;
    let end = common::end(&events);
    assert_eq!(end["outcome"], "error", "{end}");
    assert!(end["error"].as_str().unwrap().contains("1000 bytes per step"), "{end}");
    let streamed = common::tokens(&events).len();
    assert!((1..=1000).contains(&streamed), "{streamed} bytes streamed");
    let (_, detail) = f.http.json("GET", &format!("/v1/conversations/{a}"), None).await;
    let stored: usize = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| m["content"].as_str().unwrap().len())
        .sum();
    assert_eq!(stored, streamed, "what was streamed is what was kept");

    // Two more turns of ~900 bytes (history ~2,800 bytes) pass the 2,500-byte limit: the next
    // turn is refused.
    for _ in 0..2 {
        let _ = f.http.stream_turn(&a, "size:900", |_| {}).await;
    }
    let (status, v) = f
        .http
        .json(
            "POST",
            &format!("/v1/conversations/{a}/turns"),
            Some(json!({ "message": "size:10" })),
        )
        .await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("history_limit")), "{v}");
}
