//! `dispatchctl heap` against the real server: profiling switched on through the admin API,
//! two dumps around a leak, and the diff names the leaking call site.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::ServerProcess;
use dispatch_cli::heap::{self, Admin};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heap_diff_names_the_leaking_site() {
    let dir = tempfile::tempdir().unwrap();
    let token = "heap-test-token";
    let server = ServerProcess::start_with_env(dir.path(), &[], &[("DISPATCH_ADMIN_TOKEN", token)]);
    let admin = Admin { addr: server.addr.to_string(), token: token.into() };
    let wrong = Admin { addr: server.addr.to_string(), token: "nope".into() };
    let (a, w) = tokio::task::spawn_blocking(move || {
        let w = wrong.request("POST", "/admin/heap/start").unwrap().0;
        admin.ok("POST", "/admin/heap/start").unwrap();
        (admin, w)
    })
    .await
    .unwrap();
    assert_eq!(w, 401, "the token is checked");
    let admin = a;

    let http = server.client();
    let conv = http.create_conversation().await;
    let turn = |http: &common::Http, conv: String| {
        let http = http.clone();
        async move {
            let (status, v) = http
                .json(
                    "POST",
                    &format!("/v1/conversations/{conv}/turns"),
                    Some(json!({"message": "size:100"})),
                )
                .await;
            assert_eq!(status, 200, "{v}");
        }
    };
    turn(&http, conv.clone()).await;
    let admin2 = admin.clone();
    let before =
        tokio::task::spawn_blocking(move || admin2.ok("GET", "/debug/pprof/heap").unwrap())
            .await
            .unwrap();

    let (status, v) = http
        .raw(
            "POST",
            "/admin/fault/leak",
            &[("authorization", &format!("Bearer {token}")), ("content-type", "application/json")],
            serde_json::to_vec(&json!({"mb_per_turn": 4})).unwrap(),
        )
        .await;
    assert!((200..300).contains(&status), "{}", String::from_utf8_lossy(&v));
    for _ in 0..12 {
        turn(&http, conv.clone()).await;
    }
    let after = tokio::task::spawn_blocking(move || admin.ok("GET", "/debug/pprof/heap").unwrap())
        .await
        .unwrap();

    let a = heap::parse(&String::from_utf8_lossy(&before)).unwrap();
    let b = heap::parse(&String::from_utf8_lossy(&after)).unwrap();
    assert!(!b.mappings.is_empty(), "the profile carries the process's mappings");
    let rows = heap::diff(&a, &b, 5, &heap::addr2line);
    let top = &rows[0];
    let where_ = format!("{} <- {}", top.site, top.stack.join(" <- "));
    assert!(
        where_.contains("Faults::retain") || where_.contains("Faults::on_turn_start"),
        "top growth is the leak fault: {where_} ({:.1} MiB); all: {rows:#?}",
        top.delta_bytes / 1048576.0
    );
    // 12 turns x 4 MiB, sampled: the estimate is within a factor of two.
    assert!(
        top.delta_bytes > 24.0 * 1048576.0 && top.delta_bytes < 96.0 * 1048576.0,
        "{}",
        top.delta_bytes
    );
}
