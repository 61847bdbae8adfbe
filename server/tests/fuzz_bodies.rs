//! Mutated request bodies against the real server over HTTP on 127.0.0.1: every answer is a
//! 2xx (the mutation left a valid request) or a 4xx whose JSON error names the problem; never
//! a 5xx, a dropped connection or a dead server. Bodies are valid requests mutated (bytes
//! flipped, cut, junk and deep nesting inserted, numbers and types swapped), sent with their
//! content type, a wrong one, or none. The normal suite runs 256 cases; the long run
//! (docs/BENCHMARKS.md, "Fuzzing") sets `PROPTEST_CASES`:
//!
//! ```sh
//! PROPTEST_CASES=100000 cargo test -p dispatch-server --all-features --test fuzz_bodies -- --test-threads 1 --nocapture
//! ```

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use common::{Http, ServerProcess};
use proptest::prelude::*;
use serde_json::Value;

/// The server and a runtime for the client, shared by every case.
struct Target {
    rt: tokio::runtime::Runtime,
    server: ServerProcess,
    conversation: String,
    _var: tempfile::TempDir,
    /// Its stdin is held open for the life of this process (see `target`).
    _watchdog: std::process::Child,
}

fn target() -> &'static Target {
    static T: OnceLock<Target> = OnceLock::new();
    T.get_or_init(|| {
        let var = tempfile::tempdir().unwrap();
        let server = ServerProcess::start(var.path(), &["--sample-interval-ms", "1000"]);
        // A static is never dropped, so the shared server would outlive this test binary
        // (every run of the suite left one monitor and its worker behind, found with `pgrep`
        // after a 20-run loop). A watchdog reads a pipe only this process holds open: when
        // the process ends, however it ends, the read returns and the watchdog kills both.
        let watchdog = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("read _; kill -9 {} {}", server.worker, server.child.id()))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let conversation = rt.block_on(server.client().create_conversation());
        Target { rt, server, conversation, _var: var, _watchdog: watchdog }
    })
}

/// Answers by status and error code, for the note of a long run.
static SEEN: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Valid bodies to start from, per route.
const SEEDS: &[(&str, &str)] = &[
    ("/v1/conversations", r#"{"title": "a conversation"}"#),
    ("/v1/conversations", "{}"),
    ("TURNS", r#"{"message": "hello there"}"#),
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, with: u8 },
    Cut { keep: usize },
    Insert { at: usize, text: String },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let junk = prop_oneof![
        Just("\"".to_owned()),
        Just("\\u0000".to_owned()),
        Just("\\ud800".to_owned()),
        Just("[".repeat(200)),
        Just("{\"a\":".repeat(100)),
        Just("1e999999".to_owned()),
        Just("-0".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just(", \"extra\": true".to_owned()),
        Just("\"message\": 5,".to_owned()),
        Just("null".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("\u{fffd}\u{1F600}".to_owned()),
        "[ -~]{0,16}",
    ];
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, with)| Mutation::Flip { at, with }),
        any::<usize>().prop_map(|keep| Mutation::Cut { keep }),
        (any::<usize>(), junk).prop_map(|(at, text)| Mutation::Insert { at, text }),
    ]
}

fn apply(seed: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut b = seed.as_bytes().to_vec();
    for m in mutations {
        match m {
            Mutation::Flip { at, with } if !b.is_empty() => {
                let n = b.len();
                b[at % n] ^= with;
            }
            Mutation::Cut { keep } if !b.is_empty() => b.truncate(keep % b.len()),
            Mutation::Insert { at, text } => {
                let i = at % (b.len() + 1);
                b.splice(i..i, text.bytes());
            }
            _ => {}
        }
    }
    b
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        4 => Just(Some("application/json")),
        1 => Just(Some("text/plain")),
        1 => Just(Some("application/json; charset=latin1")),
        1 => Just(None),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_body_gets_a_4xx_naming_it_or_is_served(
        seed in 0usize..SEEDS.len(),
        mutations in proptest::collection::vec(mutation(), 1..5),
        ct in content_type(),
    ) {
        let t = target();
        let (route, body) = SEEDS[seed];
        let path = if route == "TURNS" {
            format!("/v1/conversations/{}/turns", t.conversation)
        } else {
            route.to_owned()
        };
        let bytes = apply(body, &mutations);
        let http: Http = t.server.client();
        let headers: Vec<(&str, &str)> = ct.iter().map(|c| ("content-type", *c)).collect();
        let (status, answer) = t.rt.block_on(http.raw("POST", &path, &headers, bytes.clone()));
        let text = String::from_utf8_lossy(&answer).into_owned();
        prop_assert!(status < 500, "{status} for {:?}: {}", String::from_utf8_lossy(&bytes), text);
        let mut key = status.to_string();
        if status >= 400 {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let code = v["error"]["code"].as_str().or(v["code"].as_str()).unwrap_or("");
            prop_assert!(!code.is_empty(), "a 4xx has an error code: {}", text);
            key = format!("{status} {code}");
        }
        *SEEN.lock().unwrap().entry(key).or_default() += 1;
    }
}

/// The server is up and healthy: after every case with `--test-threads 1` (this test runs
/// last by name), during the run otherwise.
#[test]
fn zz_the_server_is_still_up() {
    let t = target();
    let (status, health) = t.rt.block_on(t.server.client().json("GET", "/health", None));
    assert_eq!(status, 200, "{health}");
    eprintln!("answers: {:?}", SEEN.lock().unwrap());
}
