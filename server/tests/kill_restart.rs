//! Acceptance: the server is SIGKILLed during four streaming turns and restarted. All four
//! conversations come back `idle`, their turns `sealed` with the partial output kept (marked),
//! one journal record per repair, and every conversation reads back without error.

mod common;

use std::sync::{Arc, Mutex};

use common::{ServerProcess, of_kind, read_journal, wait_for_async};
use dispatch_server::provider::sim::filler;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_repairs_and_seals_every_turn() {
    let var = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(var.path(), &[]);
    let http = server.client();
    let mut conversations = Vec::new();
    for _ in 0..4 {
        conversations.push(http.create_conversation().await);
    }
    // Slow turns (20 tokens/s, 200 KB to go) that cannot finish before the kill. Every turn
    // has a tool call first, so the sealed history has a tool result before the partial text.
    let streamed: Vec<Arc<Mutex<String>>> = (0..4).map(|_| Arc::default()).collect();
    let turn_ids: Vec<Arc<Mutex<String>>> = (0..4).map(|_| Arc::default()).collect();
    for i in 0..4 {
        let (http, c) = (http.clone(), conversations[i].clone());
        let (text, id) = (streamed[i].clone(), turn_ids[i].clone());
        tokio::spawn(async move {
            http.stream_turn(&c, "rate:20 size:200000 steps:2", |e| match e.event.as_str() {
                "turn" => *id.lock().unwrap() = e.data["id"].as_str().unwrap().to_owned(),
                "token" => text.lock().unwrap().push_str(e.data["text"].as_str().unwrap()),
                _ => {}
            })
            .await
        });
    }
    // Wait until each turn's final step has partial output on disk (read through SQLite,
    // independently of the server), then kill.
    let db = var.path().join("dispatch.db");
    wait_for_async("partial output of all four turns in the database", || {
        let db = db.clone();
        async move {
            let conn = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .ok()?;
            let n: i64 = conn
                .query_row(
                    // Streamed text sits in message_chunks until the step ends.
                    "SELECT count(DISTINCT conversation) FROM messages WHERE role = 'assistant' \
                     AND partial = 1 AND length(content) + coalesce((SELECT sum(length(k.text)) \
                     FROM message_chunks k WHERE k.message = messages.id), 0) >= 20",
                    [],
                    |r| r.get(0),
                )
                .ok()?;
            (n == 4).then_some(())
        }
    })
    .await;
    // SIGKILL the server proper (as the OOM killer would); the monitor exits the same way.
    let status = server.signal_worker_and_wait(libc::SIGKILL);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    let first_boot: Vec<String> = {
        let r = read_journal(&server.journal_dir());
        of_kind(&r, "process.start")
            .iter()
            .map(|p| p["boot"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(first_boot.len(), 1);
    // An uncatchable death is still recorded, from the wait status: `exit` with the signal,
    // and no `crash` (there is no dump to take of a SIGKILL).
    let r = read_journal(&server.journal_dir());
    let exit =
        of_kind(&r, "exit").into_iter().find(|e| e["boot"] == first_boot[0].as_str()).cloned();
    let exit = exit.expect("an exit record under the killed boot");
    assert_eq!(exit["signal"], "SIGKILL", "{exit}");
    assert_eq!(exit["signo"], 9);
    assert!(
        exit.get("status").is_none_or(|s| s.is_null()),
        "a death by signal has no status: {exit}"
    );
    assert!(of_kind(&r, "crash").is_empty());
    drop(server);

    let server = ServerProcess::start(var.path(), &[]);
    let http = server.client();
    let records = read_journal(&server.journal_dir());
    let boot2 = of_kind(&records, "process.start")
        .iter()
        .map(|p| p["boot"].as_str().unwrap().to_owned())
        .find(|b| *b != first_boot[0])
        .expect("a second boot");
    let repairs: Vec<_> = of_kind(&records, "conversation.repair")
        .into_iter()
        .filter(|r| r["boot"] == boot2.as_str())
        .collect();
    let sealed_ends: Vec<_> = of_kind(&records, "turn.end")
        .into_iter()
        .filter(|r| r["boot"] == boot2.as_str() && r["outcome"] == "sealed")
        .collect();

    for (i, c) in conversations.iter().enumerate() {
        let (status, conv) = http.json("GET", &format!("/v1/conversations/{c}"), None).await;
        assert_eq!(status, 200, "{conv}");
        assert_eq!(conv["status"], "idle", "{conv}");
        let turns = conv["turns_list"].as_array().unwrap();
        assert_eq!(turns.len(), 1);
        assert_eq!(turns[0]["status"], "sealed", "{conv}");
        let turn = turns[0]["id"].as_str().unwrap();
        assert_eq!(turn, turn_ids[i].lock().unwrap().as_str(), "the turn the client streamed");
        // Partial output kept and marked: a prefix of what the sim would have said, and of
        // what the client saw (the store may lag the stream by one flush, never lead it).
        let messages = conv["messages"].as_array().unwrap();
        let partial: Vec<_> = messages.iter().filter(|m| m["partial"] == true).collect();
        assert_eq!(partial.len(), 1, "{conv}");
        let kept = partial[0]["content"].as_str().unwrap();
        assert!(kept.len() >= 20);
        assert!(filler(200_000).starts_with(kept), "kept text is the start of the answer");
        let client_text = streamed[i].lock().unwrap().clone();
        let client_answer = client_text.split_once("sh. ").map(|(_, a)| a).unwrap_or("");
        assert!(
            client_answer.starts_with(kept) || kept.starts_with(client_answer),
            "kept vs streamed"
        );
        // History is consistent: the step-1 tool call has its result.
        let calls: usize =
            messages.iter().map(|m| m["tool_calls"].as_array().map_or(0, Vec::len)).sum();
        let results = messages.iter().filter(|m| m["role"] == "tool").count();
        assert_eq!(calls, results, "{conv}");

        // One journal record per repair, for exactly the repairs made.
        let mine: Vec<_> = repairs.iter().filter(|r| r["conversation"] == c.as_str()).collect();
        let count = |action: &str| mine.iter().filter(|r| r["action"] == action).count();
        assert_eq!(count("status_reset"), 1, "{mine:?}");
        assert_eq!(count("turn_sealed"), 1, "{mine:?}");
        assert_eq!(count("partial_output_kept"), 1, "{mine:?}");
        assert_eq!(mine.len(), 3, "no other repairs: {mine:?}");
        assert!(mine.iter().filter(|r| r["action"] != "status_reset").all(|r| r["turn"] == turn));
        assert_eq!(sealed_ends.iter().filter(|e| e["turn"] == turn).count(), 1);
    }
    assert_eq!(repairs.len(), 12);
    assert_eq!(sealed_ends.len(), 4);

    // The list reads back too, and a new turn works on a repaired conversation.
    let (status, list) = http.json("GET", "/v1/conversations", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["conversations"].as_array().unwrap().len(), 4);
    let after = http.stream_turn(&conversations[0], "hello", |_| {}).await;
    assert_eq!(common::end(&after)["outcome"], "ok");

    // A third start finds nothing to repair.
    drop(server);
    let server = ServerProcess::start(var.path(), &[]);
    let records = read_journal(&server.journal_dir());
    let boots: Vec<&str> =
        of_kind(&records, "process.start").iter().map(|p| p["boot"].as_str().unwrap()).collect();
    assert_eq!(boots.len(), 3);
    assert!(of_kind(&records, "conversation.repair").iter().all(|r| r["boot"] != boots[2]));
}
