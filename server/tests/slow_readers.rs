//! Clients that start a streamed turn and never read it cannot stop the agent. Four raw TCP
//! clients (as many as the provider has slots) ask for a large streamed turn and read
//! nothing; with `--stream-stall-ms 500` each stream is detached once its buffers are full,
//! the turns go on, are stored and end, and an ordinary fifth turn is served while the four
//! connections are still open and unread. Afterwards nothing is left in flight.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::{DEADLINE, ServerProcess, wait_for_async};
use serde_json::json;

/// A client that sends a streamed turn request and then never reads a byte.
fn silent_streamer(addr: std::net::SocketAddr, token: &str, conversation: &str) -> TcpStream {
    let body = r#"{"message": "size:50000000 rate:0"}"#;
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/conversations/{conversation}/turns HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s.flush().unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_clients_that_never_read_do_not_hold_the_provider_slots() {
    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(var.path(), &["--stream-stall-ms", "500"]);
    let http = server.client();
    let token = std::fs::read_to_string(var.path().join("api-token")).unwrap().trim().to_owned();
    let mut silent = Vec::new();
    for _ in 0..4 {
        let c = http.create_conversation().await;
        silent.push(silent_streamer(server.addr, &token, &c));
    }
    wait_for_async("the four silent turns in flight", || async {
        let h = http.json("GET", "/health", None).await.1;
        (h["turns_in_flight"].as_u64() == Some(4)).then_some(())
    })
    .await;

    // An ordinary turn, while the four connections stay open and unread.
    let c = http.create_conversation().await;
    let (status, turn) = tokio::time::timeout(
        DEADLINE,
        http.json(
            "POST",
            &format!("/v1/conversations/{c}/turns"),
            Some(json!({ "message": "size:100 rate:0" })),
        ),
    )
    .await
    .expect("the fifth turn was served while four clients read nothing");
    assert_eq!(status, 200, "{turn}");

    // The detached turns end on their own (output limit), stored; nothing is left in flight.
    wait_for_async("no turn in flight or queued", || async {
        let h = http.json("GET", "/health", None).await.1;
        (h["turns_in_flight"].as_u64() == Some(0) && h["queue_depth"].as_u64() == Some(0))
            .then_some(())
    })
    .await;
    let log = std::fs::read_to_string(var.path().join("server.stderr")).unwrap();
    assert_eq!(
        log.matches("its stream is detached").count(),
        4,
        "each silent client's stream was detached: {log}"
    );
    drop(silent);
}
