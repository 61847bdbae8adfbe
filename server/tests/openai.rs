//! The `openai` provider through the same turn loop, against a local OpenAI-compatible server
//! started in the test on 127.0.0.1 (port 0): streamed text, a tool call split across chunks,
//! the tool result sent back in the next request, and a provider error ending only its turn.

#![allow(clippy::unwrap_used)] // a test crate: helpers below are not #[test]s

mod common;

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use common::{Http, data, end, of_kind, read_journal, sse, tokens};
use dispatch_server::config::ProviderKind;
use dispatch_server::{Activity, AppState, Settings, app};
use dispatch_telemetry::journal::JournalBuilder;
use serde_json::{Value, json};

type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

async fn completions(
    axum::extract::State(seen): axum::extract::State<Seen>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
    seen.lock().unwrap().push((auth, body.clone()));
    let messages = body["messages"].as_array().unwrap();
    let first_user = messages[0]["content"].as_str().unwrap_or("");
    if first_user.contains("boom") {
        return (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response();
    }
    let tool_answer = messages.iter().find(|m| m["role"] == "tool");
    match tool_answer {
        None => sse(vec![
            data(json!({"choices":[{"index":0,"delta":{"role":"assistant","content":"Let me "}}]})),
            data(json!({"choices":[{"index":0,"delta":{"content":"look. "}}]})),
            data(
                json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_abc","type":"function","function":{"name":"sh","arguments":"{\"command\":"}}]}}]}),
            ),
            data(
                json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"echo from-openai\"}"}}]},"finish_reason":"tool_calls"}]}),
            ),
            "data: [DONE]\n\n".to_owned(),
        ]),
        Some(t) => {
            let said = t["content"].as_str().unwrap().trim().to_owned();
            sse(vec![
                data(json!({"choices":[{"index":0,"delta":{"content":"It said "}}]})),
                data(
                    json!({"choices":[{"index":0,"delta":{"content":said},"finish_reason":"stop"}]}),
                ),
                "data: [DONE]\n\n".to_owned(),
            ])
        }
    }
}

async fn start() -> (tempfile::TempDir, Http, Seen, std::path::PathBuf) {
    let seen: Seen = Arc::default();
    let fake =
        Router::new().route("/v1/chat/completions", post(completions)).with_state(seen.clone());
    let fake_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake_listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(fake_listener, fake).await });

    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_var_dir(dir.path());
    settings.provider = ProviderKind::Openai;
    settings.model = "test-model".into();
    settings.openai_base_url = format!("http://{fake_addr}/v1");
    settings.openai_api_key = Some("test-key".into());
    settings.tool_workdir = dir.path().to_path_buf();
    let journal_dir = settings.journal_dir.clone();
    let journal = JournalBuilder::new(&settings.journal_dir).open().unwrap();
    let activity = Arc::new(Activity::new(settings.max_turns_in_flight, settings.max_queue_depth));
    let (state, _) = AppState::start(settings, journal, activity, None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(state)).await });
    let token = common::api_token(dir.path());
    (dir, Http::with_token(addr, token), seen, journal_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_stream_with_a_tool_call_goes_through_the_turn_loop() {
    let (_dir, http, seen, _) = start().await;
    let c = http.create_conversation().await;
    let events = http.stream_turn(&c, "what does echo say?", |_| {}).await;
    assert_eq!(end(&events)["outcome"], "ok", "{events:?}");
    assert_eq!(tokens(&events), "Let me look. It said from-openai");
    let call = events.iter().find(|e| e.event == "tool_call").unwrap();
    assert_eq!(
        call.data,
        json!({"id":"call_abc","name":"sh","arguments":{"command":"echo from-openai"}})
    );
    let result = events.iter().find(|e| e.event == "tool_result").unwrap();
    assert_eq!(result.data["content"], "from-openai\n");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "two provider round trips");
    for (auth, body) in &seen {
        assert_eq!(auth.as_deref(), Some("Bearer test-key"));
        assert_eq!(body["model"], "test-model");
        assert_eq!(body["stream"], true);
        let tools: Vec<&str> = body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(tools, ["sh", "ssh"]);
    }
    let second = seen[1].1["messages"].as_array().unwrap();
    assert_eq!(second.len(), 3);
    assert_eq!(second[0], json!({"role":"user","content":"what does echo say?"}));
    assert_eq!(second[1]["role"], "assistant");
    assert_eq!(second[1]["content"], "Let me look. ");
    assert_eq!(second[1]["tool_calls"][0]["id"], "call_abc");
    assert_eq!(
        second[1]["tool_calls"][0]["function"]["arguments"],
        "{\"command\":\"echo from-openai\"}"
    );
    assert_eq!(
        second[2],
        json!({"role":"tool","tool_call_id":"call_abc","content":"from-openai\n"})
    );

    let (_, conv) = http.json("GET", &format!("/v1/conversations/{c}"), None).await;
    assert_eq!(conv["messages"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_error_ends_only_its_turn_and_is_journaled() {
    let (_dir, http, _seen, journal_dir) = start().await;
    let bad = http.create_conversation().await;
    let good = http.create_conversation().await;
    let (h1, h2) = (http.clone(), http.clone());
    let (b, g) = (bad.clone(), good.clone());
    let bad_turn = tokio::spawn(async move { h1.stream_turn(&b, "boom", |_| {}).await });
    let good_turn = tokio::spawn(async move { h2.stream_turn(&g, "fine", |_| {}).await });
    let bad_events = bad_turn.await.unwrap();
    let good_events = good_turn.await.unwrap();
    let e = end(&bad_events);
    assert_eq!(e["outcome"], "error");
    assert_eq!(e["code"], "provider_status");
    assert!(e["error"].as_str().unwrap().contains("500"), "{e}");
    assert_eq!(end(&good_events)["outcome"], "ok");
    let turn = e["id"].as_str().unwrap().to_owned();
    let records = common::wait_for("the provider error in the journal", || {
        let r = read_journal(&journal_dir);
        of_kind(&r, "error.unhandled").iter().any(|x| x["turn"] == turn.as_str()).then_some(r)
    });
    let rec = of_kind(&records, "error.unhandled")
        .into_iter()
        .find(|x| x["turn"] == turn.as_str())
        .unwrap();
    assert_eq!(rec["source"], "provider");
    assert_eq!(rec["code"], "provider_status");
    let start =
        of_kind(&records, "turn.start").into_iter().find(|x| x["turn"] == turn.as_str()).unwrap();
    assert_eq!(
        (start["provider"].as_str(), start["model"].as_str()),
        (Some("openai"), Some("test-model"))
    );
}
