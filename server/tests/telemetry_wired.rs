//! Telemetry must not be silently removable: the real binary, started with no configuration
//! beyond a scratch var directory, writes `process.start` and `memory.sample` records with
//! jemalloc figures, runs with the configured `malloc_conf`, reports telemetry in `/health`
//! and `/metrics`, and on SIGTERM drains, seals and writes `process.stop`.

mod common;

use std::sync::{Arc, Mutex};

use common::{ServerProcess, of_kind, read_journal, wait_for, wait_for_async};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_binary_journals_memory_samples() {
    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(var.path(), &[]);
    // Poll (generous deadline) for a memory sample in the journal directory.
    let sample = wait_for("a memory.sample record in the journal", || {
        let records = read_journal(&server.journal_dir());
        of_kind(&records, "memory.sample").first().map(|s| (*s).clone())
    });
    assert!(sample["rss"].as_u64().unwrap() > 0, "{sample}");
    assert!(
        sample["jemalloc"]["allocated"].as_u64().is_some(),
        "jemalloc is the allocator: {sample}"
    );
    assert!(
        sample["load"]["turns_in_flight"].as_u64().is_some(),
        "the server's load source: {sample}"
    );

    let records = read_journal(&server.journal_dir());
    let start = of_kind(&records, "process.start")[0].clone();
    assert_eq!(start["version"], env!("CARGO_PKG_VERSION"));
    assert!(start["allocator"].as_str().unwrap().starts_with("jemalloc 5."), "{start}");
    assert!(!start["allocator"].as_str().unwrap().contains('\0'));
    let build_id = start["build_id"].as_str().expect("a GNU build-id");
    assert!(build_id.len() >= 16 && build_id.bytes().all(|b| b.is_ascii_hexdigit()), "{build_id}");
    assert_eq!(start["config"]["provider"], "sim");
    // `malloc_conf`'s one arena (plus jemalloc's huge-allocation arena), which keeps the
    // sampler's epoch cheap (docs/BENCHMARKS.md, "Sample cost in the server").
    assert_eq!(start["config"]["jemalloc_arenas"], 2, "narenas:1 is in force: {start}");

    // `malloc_conf` was applied: background purge threads exist only with background_thread:true.
    let threads = wait_for("jemalloc's background thread", || {
        let names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", server.pid()))
            .ok()?
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|s| s.trim().to_owned())
            .collect();
        names.iter().any(|n| n.starts_with("jemalloc_bg_thd")).then_some(names)
    });
    assert!(threads.iter().any(|n| n.starts_with("dispatch-mem")), "sampler thread: {threads:?}");

    let http = server.client();
    let (status, health) = http.json("GET", "/health", None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["journal"]["healthy"], true);
    assert_eq!(health["sampler"]["alive"], true);
    let (status, metrics) = http.raw("GET", "/metrics", &[], Vec::new()).await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    for name in [
        "process_resident_memory_bytes ",
        "dispatch_jemalloc_allocated_bytes ",
        "dispatch_jemalloc_active_bytes ",
        "dispatch_jemalloc_resident_bytes ",
        "dispatch_jemalloc_retained_bytes ",
        "dispatch_jemalloc_mapped_bytes ",
        "dispatch_jemalloc_metadata_bytes ",
        "dispatch_turns_in_flight ",
        "dispatch_turn_queue_depth ",
    ] {
        assert!(metrics.lines().any(|l| l.starts_with(name)), "{name} missing:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_sampler_health_fails() {
    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(var.path(), &["--bench-sampler-off"]);
    let (status, health) = server.client().json("GET", "/health", None).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["sampler"]["enabled"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_short_turns_finish_seals_long_ones_and_writes_process_stop() {
    let var = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(var.path(), &["--shutdown-grace-ms", "1500"]);
    let http = server.client();
    let short = http.create_conversation().await;
    let long = http.create_conversation().await;
    let started = Arc::new(Mutex::new(0));
    let mut tasks = Vec::new();
    for (c, m) in [(short.clone(), "rate:100 size:300"), (long.clone(), "rate:10 size:100000")] {
        let (http, started) = (http.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            http.stream_turn(&c, m, |e| {
                if e.event == "token" && e.data["text"] == "lorem " {
                    *started.lock().unwrap() += 1;
                }
            })
            .await
        }));
    }
    wait_for_async("both turns streaming", || {
        let n = *started.lock().unwrap();
        async move { (n == 2).then_some(()) }
    })
    .await;
    let status = server.signal_and_wait(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "clean exit");
    let short_events = tasks.remove(0).await.unwrap();
    let long_events = tasks.remove(0).await.unwrap();
    assert_eq!(common::end(&short_events)["outcome"], "ok");
    assert_eq!(common::end(&long_events)["outcome"], "sealed");
    let records = read_journal(&server.journal_dir());
    let stop = of_kind(&records, "process.stop");
    assert_eq!(stop.len(), 1);
    assert_eq!(stop[0]["reason"], "signal:SIGTERM");
    assert_eq!(stop[0]["turns_sealed"], 1);
    drop(server);
    // The sealed turn kept its partial output, and nothing needs repair at the next start.
    let server = ServerProcess::start(var.path(), &[]);
    let (_, conv) = server.client().json("GET", &format!("/v1/conversations/{long}"), None).await;
    assert_eq!(conv["status"], "idle");
    assert_eq!(conv["turns_list"][0]["status"], "sealed");
    assert!(conv["messages"].as_array().unwrap().iter().any(|m| m["partial"] == true));
    let records = read_journal(&server.journal_dir());
    assert!(of_kind(&records, "conversation.repair").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_carry_allocation_counts_and_busy_conversations_get_memory_records() {
    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(var.path(), &["--conversation-memory-interval-ms", "200"]);
    let http = server.client();
    let quick = http.create_conversation().await;
    let events = http.stream_turn(&quick, "size:5000 rate:0", |_| {}).await;
    let turn = common::end(&events)["id"].as_str().unwrap().to_owned();
    let end = wait_for("the quick turn's turn.end", || {
        let r = read_journal(&server.journal_dir());
        of_kind(&r, "turn.end").into_iter().find(|e| e["turn"] == turn.as_str()).cloned()
    });
    assert_eq!(end["output_bytes"], 5000);
    let alloc = end["alloc_bytes"].as_u64().expect("alloc_bytes from jemalloc's thread counters");
    let freed = end["freed_bytes"].as_u64().expect("freed_bytes");
    assert!(alloc >= 5000 && freed > 0, "{end}");

    // A long turn is among the top conversations while it runs.
    let slow = http.create_conversation().await;
    let h = http.clone();
    let s = slow.clone();
    let task = tokio::spawn(async move { h.stream_turn(&s, "rate:20 size:100000", |_| {}).await });
    let record = wait_for("a conversation.memory record for the running conversation", || {
        let r = read_journal(&server.journal_dir());
        of_kind(&r, "conversation.memory")
            .into_iter()
            .find(|m| m["conversation"] == slow.as_str())
            .cloned()
    });
    assert!(record["history_bytes"].as_u64().unwrap() > 0, "{record}");
    assert_eq!(record["turns"], 1);
    assert!(record["alloc_bytes"].as_u64().is_some());
    let (_, conv) = http.json("GET", &format!("/v1/conversations/{slow}"), None).await;
    let turn = conv["turns_list"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) =
        http.json("POST", &format!("/v1/conversations/{slow}/turns/{turn}/cancel"), None).await;
    assert_eq!(status, 202);
    assert_eq!(common::end(&task.await.unwrap())["outcome"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_seals_turns_whose_clients_are_gone() {
    let var = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(var.path(), &["--shutdown-grace-ms", "300"]);
    let http = server.client();
    let c = http.create_conversation().await;
    let h = http.clone();
    let c2 = c.clone();
    let client =
        tokio::spawn(async move { h.stream_turn(&c2, "rate:10 size:100000", |_| {}).await });
    let turn = wait_for_async("the turn to run", || {
        let (http, c) = (http.clone(), c.clone());
        async move {
            let (_, conv) = http.json("GET", &format!("/v1/conversations/{c}"), None).await;
            let t = conv["turns_list"].get(0)?.clone();
            (t["status"] == "running").then(|| t["id"].as_str().unwrap().to_owned())
        }
    })
    .await;
    // The client goes away: no connection is left open, the turn keeps running.
    client.abort();
    let _ = client.await;
    drop(http);
    let status = server.signal_and_wait(libc::SIGTERM);
    assert_eq!(status.code(), Some(0));
    let records = read_journal(&server.journal_dir());
    let stop = of_kind(&records, "process.stop");
    assert_eq!(stop[0]["reason"], "signal:SIGTERM", "{stop:?}");
    assert_eq!(stop[0]["turns_sealed"], 1, "{stop:?}");
    let end =
        of_kind(&records, "turn.end").into_iter().find(|e| e["turn"] == turn.as_str()).cloned();
    assert_eq!(end.expect("turn.end for the sealed turn")["outcome"], "sealed");
}

/// With the tagged allocator (`--features alloc-tags`), a conversation whose turns keep memory
/// shows it as live bytes in its `conversation.memory` records.
#[cfg(feature = "alloc-tags")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagged_allocator_charges_live_bytes_to_the_conversation() {
    let var = tempfile::tempdir().unwrap();
    let token = "tags-test-token";
    let server = ServerProcess::start_with_env(
        var.path(),
        &["--conversation-memory-interval-ms", "100"],
        &[("DISPATCH_ADMIN_TOKEN", token)],
    );
    let http = server.client();
    let (status, _) = http
        .raw(
            "POST",
            "/admin/fault/leak",
            &[("authorization", &format!("Bearer {token}")), ("content-type", "application/json")],
            serde_json::to_vec(&serde_json::json!({"mb_per_turn": 8})).unwrap(),
        )
        .await;
    assert_eq!(status, 200, "the leak fault is switched on");
    let leaky = http.create_conversation().await;
    let h = http.clone();
    let c = leaky.clone();
    let task = tokio::spawn(async move { h.stream_turn(&c, "rate:20 size:2000", |_| {}).await });
    let record = wait_for("live bytes for the leaking conversation", || {
        let r = read_journal(&server.journal_dir());
        of_kind(&r, "conversation.memory")
            .into_iter()
            .find(|m| {
                m["conversation"] == leaky.as_str() && m["live_bytes"].as_u64() >= Some(8 << 20)
            })
            .cloned()
    });
    assert!(record["live_bytes"].as_u64().unwrap() < 64 << 20, "{record}");
    task.await.unwrap();
}
