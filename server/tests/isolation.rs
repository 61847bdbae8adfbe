//! Acceptance: four concurrent streaming turns on the real binary, one whose tool panics and
//! one whose SSH target refuses the connection. The other two complete normally, the process
//! stays up, and both failures are journaled.

mod common;

use common::{ServerProcess, closed_port, end, of_kind, read_journal, tokens, wait_for};
use dispatch_server::provider::sim::filler;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_tool_and_a_refused_ssh_fail_only_their_turns() {
    let var = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start(var.path(), &["--fault-tools", "--sim-tokens-per-sec", "400"]);
    let http = server.client();
    let port = closed_port();
    let messages = [
        "tool:panic".to_owned(),
        format!("tool:ssh 127.0.0.1:{port} uname -a"),
        "size:3000 tool:sh echo still-here".to_owned(),
        "size:3000".to_owned(),
    ];
    let mut conversations = Vec::new();
    for _ in &messages {
        conversations.push(http.create_conversation().await);
    }
    let mut tasks = Vec::new();
    for (c, m) in conversations.iter().zip(&messages) {
        let (http, c, m) = (http.clone(), c.clone(), m.clone());
        tasks.push(tokio::spawn(async move { http.stream_turn(&c, &m, |_| {}).await }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }

    // The panicking turn and the SSH turn end with outcome `error`, each with its own code.
    let panicked = end(&results[0]);
    assert_eq!(panicked["outcome"], "error", "{panicked}");
    assert_eq!(panicked["code"], "panic", "{panicked}");
    let ssh = end(&results[1]);
    assert_eq!(ssh["outcome"], "error", "{ssh}");
    assert_eq!(ssh["code"], "ssh_connect_failed", "{ssh}");
    let ssh_result = results[1].iter().find(|e| e.event == "tool_result").expect("a tool_result");
    assert_eq!(ssh_result.data["is_error"], true);

    // The other two complete normally, with every byte of their output streamed.
    for r in &results[2..] {
        assert_eq!(end(r)["outcome"], "ok", "{}", end(r));
        assert!(tokens(r).ends_with(&filler(3000)), "the full answer was streamed");
    }
    let sh_result = results[2].iter().find(|e| e.event == "tool_result").unwrap();
    assert_eq!(sh_result.data["content"], "still-here\n");

    // The process is still up and serves new turns.
    let (status, health) = http.json("GET", "/health", None).await;
    assert_eq!(status, 200, "{health}");
    let c = http.create_conversation().await;
    let after = http.stream_turn(&c, "hello again", |_| {}).await;
    assert_eq!(end(&after)["outcome"], "ok");
    assert_eq!(tokens(&after), "You said: hello again");

    // Both failures are journaled, each against its own turn, with the active conversations
    // and a memory snapshot.
    let panic_turn = panicked["id"].as_str().unwrap();
    let ssh_turn = ssh["id"].as_str().unwrap();
    let records = wait_for("the failure records in the journal", || {
        let r = read_journal(&server.journal_dir());
        let have_panic = of_kind(&r, "panic").iter().any(|p| p["turn"] == panic_turn);
        let have_ssh = of_kind(&r, "error.unhandled").iter().any(|e| e["turn"] == ssh_turn);
        (have_panic && have_ssh).then_some(r)
    });
    let panics = of_kind(&records, "panic");
    assert_eq!(panics.len(), 1, "one panic, one record: {panics:?}");
    let panic = panics[0];
    assert_eq!(panic["turn"], panic_turn);
    assert_eq!(panic["fatal"], false);
    assert!(panic["backtrace"].as_str().is_some_and(|b| !b.is_empty()), "{panic}");
    assert!(panic["location"].as_str().unwrap().contains("tools.rs"), "{panic}");
    assert_eq!(panic["conversation"], conversations[0].as_str());
    let ssh_err =
        of_kind(&records, "error.unhandled").into_iter().find(|e| e["turn"] == ssh_turn).unwrap();
    assert_eq!(ssh_err["source"], "ssh", "{ssh_err}");
    assert_eq!(ssh_err["code"], "ssh_connect_failed");
    assert!(ssh_err["message"].as_str().unwrap().contains("refused"), "{ssh_err}");
    assert!(
        ssh_err["active_conversations"].as_array().unwrap().iter().any(|c| c == &conversations[1])
    );
    for e in of_kind(&records, "error.unhandled") {
        if e["turn"] == panic_turn || e["turn"] == ssh_turn {
            assert!(e["memory"]["rss"].as_u64().is_some(), "memory snapshot inline: {e}");
        }
    }
    // turn.end says the same.
    let ends = of_kind(&records, "turn.end");
    let outcome =
        |turn: &str| ends.iter().find(|e| e["turn"] == turn).map(|e| e["outcome"].clone());
    assert_eq!(outcome(panic_turn).unwrap(), "error");
    assert_eq!(outcome(ssh_turn).unwrap(), "error");
    for r in &results[2..] {
        assert_eq!(outcome(end(r)["id"].as_str().unwrap()).unwrap(), "ok");
    }

    // The failed conversations read back consistent: the panicked call got an error result.
    let (status, conv) =
        http.json("GET", &format!("/v1/conversations/{}", conversations[0]), None).await;
    assert_eq!(status, 200);
    assert_eq!(conv["status"], "idle");
    let tool_msgs: Vec<_> =
        conv["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(tool_msgs.len(), 1, "{conv}");
    assert_eq!(tool_msgs[0]["is_error"], true);
}
