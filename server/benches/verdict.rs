//! `dispatchctl mem` on the real server: a load run of N minutes without a leak must not be
//! called LEAK, and the same run with the `leak` fault on must be.
//!
//! ```sh
//! cargo bench -p dispatch-server --bench verdict -- --minutes 10 --leak-mb 0
//! cargo bench -p dispatch-server --bench verdict -- --minutes 10 --leak-mb 1
//! cargo bench -p dispatch-server --bench verdict -- --minutes 10 --leak-mb 1 --leak-conversation 5
//! ```
//!
//! The release server runs with its embedded collector and the default 1 s sampler; the load
//! comes in waves (1, 3, 6, 8, 6, 3 conversations for 20 s each, over and over) of streamed
//! sim turns (`size:3000 steps:2`). With `--leak-mb N` the admin fault `leak` first makes
//! every turn retain N MiB; with `--leak-conversation K` as well, only the turns of worker K's
//! conversation (0-7) do, and the run prints where that conversation ranks. After the run the load stops for 60 s (an idle tail), the server
//! is stopped with SIGTERM, and its `traces.db` is analysed with the library behind
//! `dispatchctl mem --since all`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark binary, not a library

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ServerProcess, bench_arg};
use serde_json::json;

fn main() {
    let minutes = bench_arg("--minutes", 10);
    let leak_mb = bench_arg("--leak-mb", 0);
    let leak_conversation = std::env::args()
        .any(|a| a == "--leak-conversation")
        .then(|| bench_arg("--leak-conversation", 0) as usize);
    let dir = tempfile::tempdir().expect("temp dir");
    let token = "verdict-bench-token";
    let mut server =
        ServerProcess::start_with_env(dir.path(), &[], &[("DISPATCH_ADMIN_TOKEN", token)]);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let http = server.client();
    let auth = format!("Bearer {token}");
    let conversations: Vec<String> = rt.block_on(create_conversations(&http, 8));
    if leak_mb > 0 {
        let mut fault = json!({ "mb_per_turn": leak_mb });
        if let Some(k) = leak_conversation {
            fault["conversation"] = json!(conversations[k % 8]);
        }
        let (status, body) = rt.block_on(http.raw(
            "POST",
            "/admin/fault/leak",
            &[("authorization", &auth), ("content-type", "application/json")],
            serde_json::to_vec(&fault).unwrap(),
        ));
        assert!(
            (200..300).contains(&status),
            "leak fault: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let turns = Arc::new(AtomicU64::new(0));
    let waves = [1usize, 3, 6, 8, 6, 3];
    let started = Instant::now();
    let run_for = Duration::from_secs(minutes * 60);
    rt.block_on(async {
        let mut workers = Vec::new();
        for (w, conv) in conversations.iter().cloned().enumerate() {
            let http = server.client();
            let stop = stop.clone();
            let turns = turns.clone();
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let wave = waves[(started.elapsed().as_secs() / 20) as usize % waves.len()];
                    if w >= wave {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    let (status, _) = http
                        .json(
                            "POST",
                            &format!("/v1/conversations/{conv}/turns"),
                            Some(json!({ "message": "size:3000 steps:2" })),
                        )
                        .await;
                    if status == 200 {
                        turns.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }));
        }
        while started.elapsed() < run_for {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let _ = w.await;
        }
    });
    let load_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(60));
    let status = server.signal_and_wait(libc::SIGTERM);
    let db = dir.path().join("traces.db");
    // Kept for a second look: `dispatchctl --db /tmp/dispatch-verdict-<leak>.db mem --since all`.
    let kept = std::env::temp_dir().join(format!("dispatch-verdict-{leak_mb}.db"));
    let _ = std::fs::copy(&db, &kept);
    let conn = dispatch_collector::schema::open_read_only(&db).expect("traces.db");
    let reports = dispatch_cli::mem::reports(&conn, "latest", dispatch_cli::args::Since::All)
        .expect("analysis");
    let r = &reports[0].analysis;
    println!(
        "run: {minutes} min of load + 60 s idle, leak {leak_mb} MiB/turn, {} turns ({:.1}/s), server exit {status}",
        turns.load(Ordering::Relaxed),
        turns.load(Ordering::Relaxed) as f64 / load_secs
    );
    println!("verdict: {} ({} samples, {} buckets)", r.verdict.name(), r.samples, r.buckets.len());
    println!("summary: {}", r.summary);
    if let Some(g) = &r.growth {
        println!(
            "floor growth: {:.1} MiB/h, z = {:.2}; per turn in flight {:.1} MiB, r = {:.2}; naive RSS slope {:.1} MiB/h",
            g.bytes_per_hour / 1048576.0,
            g.mann_kendall_z,
            r.bytes_per_turn_in_flight.unwrap_or(0.0) / 1048576.0,
            r.load_correlation.unwrap_or(0.0),
            r.naive_rss_bytes_per_hour.unwrap_or(0.0) / 1048576.0
        );
    }
    println!("traces database kept at {}", kept.display());
    if let Some(k) = leak_conversation {
        let leaking = &conversations[k % 8];
        let rank = r.conversations.iter().find(|c| &c.id == leaking);
        println!(
            "leaking conversation {leaking} (worker {}): {}",
            k % 8,
            rank.map_or("not ranked".to_owned(), |c| format!(
                "rank {} of {}, retained {:.1} MiB over {} turns",
                c.rank,
                r.conversations.len(),
                c.retained_bytes as f64 / 1048576.0,
                c.turns
            ))
        );
    }
    if let Some(c) = r.conversations.first() {
        println!(
            "top conversation: {} retained {:.1} MiB over {} turns",
            c.id,
            c.retained_bytes as f64 / 1048576.0,
            c.turns
        );
    }
}

/// `n` conversations, created one after the other.
async fn create_conversations(http: &common::Http, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(http.create_conversation().await);
    }
    out
}
