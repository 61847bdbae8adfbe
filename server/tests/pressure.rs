//! The memory-pressure breaker on the real server (crash monitor included), driven by the
//! real allocator: the `leak` fault retains memory per turn until the soft limit sheds load,
//! the `alloc` fault then crosses the hard limit, and the process recycles itself.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Http, ServerProcess, end, of_kind, read_journal, wait_for_async};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;
const TOKEN: &str = "pressure-test-token";
/// The soft and hard limits. The debug server idles well below the soft limit (checked).
const SOFT: u64 = 192 * MIB;
const HARD: u64 = 448 * MIB;

async fn health(http: &Http) -> Value {
    http.json("GET", "/health", None).await.1
}

async fn fault(http: &Http, name: &str, body: Value) {
    let (status, answer) = http
        .raw(
            "POST",
            &format!("/admin/fault/{name}"),
            &[("authorization", &format!("Bearer {TOKEN}")), ("content-type", "application/json")],
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert!(
        status == 200 || status == 202,
        "fault {name}: {status} {}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_limit_sheds_new_turns_and_the_hard_limit_recycles_the_process() {
    let var = tempfile::tempdir().unwrap();
    let (soft, hard) = (SOFT.to_string(), HARD.to_string());
    let mut server = ServerProcess::start_with_env(
        var.path(),
        &["--sample-interval-ms", "50"],
        &[
            ("DISPATCH_ADMIN_TOKEN", TOKEN),
            ("DISPATCH_MEMORY_SOFT_BYTES", &soft),
            ("DISPATCH_MEMORY_HARD_BYTES", &hard),
        ],
    );
    let http = server.client();
    let idle = wait_for_async("a first pressure figure", || async {
        let h = health(&http).await;
        h["memory_pressure"]["bytes"].as_u64().filter(|b| *b > 0).map(|b| (b, h))
    })
    .await;
    assert_eq!(idle.1["memory_pressure"]["level"], "normal", "{}", idle.1);
    assert_eq!(idle.1["memory_pressure"]["soft_limit_bytes"], SOFT);
    assert!(
        idle.0 < SOFT / 2,
        "the idle server ({} MiB) must start well below the soft limit",
        idle.0 / MIB
    );

    // Two turns in flight before any pressure: `short` finishes while the server sheds,
    // `long` is still running at the hard limit.
    fault(&http, "leak", json!({ "mb_per_turn": 48 })).await;
    let short_c = http.create_conversation().await;
    let long_c = http.create_conversation().await;
    let (h1, c1) = (http.clone(), short_c.clone());
    let short = tokio::spawn(async move { h1.stream_turn(&c1, "size:800 rate:25", |_| {}).await });
    let (h2, c2) = (http.clone(), long_c.clone());
    let long = tokio::spawn(async move { h2.stream_turn(&c2, "size:200000 rate:5", |_| {}).await });
    wait_for_async("both turns in flight", || async {
        (health(&http).await["turns_in_flight"].as_u64() == Some(2)).then_some(())
    })
    .await;

    // Quick leaking turns until the breaker sheds: each retains 48 MiB for good.
    let leaker = http.create_conversation().await;
    let mut accepted = 0;
    let refused = loop {
        let (status, headers, body) = http
            .raw_with_headers(
                "POST",
                &format!("/v1/conversations/{leaker}/turns"),
                &[("content-type", "application/json"), ("accept", "text/event-stream")],
                serde_json::to_vec(&json!({ "message": "size:10 rate:0" })).unwrap(),
            )
            .await;
        if status == 503 {
            break (headers, serde_json::from_slice::<Value>(&body).unwrap());
        }
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        accepted += 1;
        assert!(accepted < 12, "12 turns of 48 MiB and still no pressure");
        // Let the sampler see the new figure before the next turn.
        wait_for_async("the turn's end and a sample after it", || async {
            let h = health(&http).await;
            (h["turns_in_flight"].as_u64() == Some(2)).then_some(())
        })
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    };
    let (headers, body) = refused;
    assert_eq!(body["error"]["code"], "memory_pressure", "{body}");
    assert_eq!(headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));
    let h = health(&http).await;
    assert_eq!(h["memory_pressure"]["level"], "high", "{h}");
    assert!(h["memory_pressure"]["bytes"].as_u64().unwrap() >= SOFT, "{h}");
    assert!(h["memory_pressure"]["turns_refused"].as_u64().unwrap() >= 1, "{h}");
    assert_eq!(h["turns_in_flight"], 2, "the in-flight turns go on: {h}");

    // The turn in flight when shedding began finishes normally.
    let events = short.await.unwrap();
    assert_eq!(end(&events)["outcome"], "ok", "{:?}", end(&events));

    // The hard limit: the process seals `long`, writes process.stop and exits 75 (the monitor
    // with it).
    // The process may stop before it answers: the answer is not waited for.
    let h3 = http.clone();
    tokio::spawn(async move {
        let body = serde_json::to_vec(&json!({ "mb": HARD / MIB })).unwrap();
        let auth = format!("Bearer {TOKEN}");
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        h3.try_raw("POST", "/admin/fault/alloc", &headers, body).await
    });
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().unwrap();
        (status, server)
    })
    .await
    .unwrap();
    let (status, server) = status;
    assert_eq!(status.code(), Some(75), "the monitor exits as its child did: {status:?}");
    let _ = long.await;

    let records = read_journal(&server.journal_dir());
    let pressure: Vec<(&str, &str)> = of_kind(&records, "pressure")
        .iter()
        .map(|p| (p["level"].as_str().unwrap(), p["action"].as_str().unwrap()))
        .collect();
    assert_eq!(pressure.first(), Some(&("high", "shed")), "{pressure:?}");
    assert!(pressure.contains(&("high", "refuse")), "{pressure:?}");
    assert_eq!(pressure.last(), Some(&("critical", "recycle")), "{pressure:?}");
    let shed = of_kind(&records, "pressure")[0];
    assert_eq!(shed["limit"], SOFT);
    assert!(shed["rss"].as_u64().unwrap() >= SOFT, "{shed}");
    let stop = of_kind(&records, "process.stop");
    assert_eq!(stop.len(), 1, "{stop:?}");
    assert_eq!(stop[0]["reason"], "pressure");
    assert_eq!(stop[0]["turns_sealed"], 1, "the long turn: {:?}", stop[0]);
    let sealed = of_kind(&records, "turn.end")
        .into_iter()
        .filter(|e| e["conversation"] == long_c.as_str() && e["outcome"] == "sealed")
        .count();
    assert_eq!(sealed, 1, "the long turn ends sealed");
    let exits = of_kind(&records, "exit");
    assert_eq!(exits.len(), 1, "the monitor records the child's exit: {exits:?}");
    assert_eq!(exits[0]["status"], 75, "{:?}", exits[0]);
    let profiles = of_kind(&records, "heap.profile");
    assert!(
        profiles.iter().any(|p| p["trigger"] == "pressure"),
        "a heap profile at the pressure stop: {profiles:?}"
    );

    // A restart on the same var dir serves, at normal pressure, and the conversations read
    // back consistent (none left running).
    let var_path = server.var.clone();
    drop(server);
    let server = ServerProcess::start_with_env(
        &var_path,
        &["--sample-interval-ms", "50"],
        &[("DISPATCH_MEMORY_SOFT_BYTES", &soft), ("DISPATCH_MEMORY_HARD_BYTES", &hard)],
    );
    let http = server.client();
    let h = health(&http).await;
    assert_eq!(h["memory_pressure"]["level"], "normal", "{h}");
    for c in [&short_c, &long_c, &leaker] {
        let (status, conv) = http.json("GET", &format!("/v1/conversations/{c}"), None).await;
        assert_eq!(status, 200, "{conv}");
        assert_eq!(conv["status"], "idle", "{conv}");
    }
    let events = http.stream_turn(&long_c, "size:10 rate:0", |_| {}).await;
    assert_eq!(end(&events)["outcome"], "ok", "the sealed conversation takes turns again");
}
