//! Overload and hostile clients against the release server, loopback only, bounded in time:
//!
//! ```sh
//! cargo bench -p dispatch-server --bench overload -- [--seconds 60] [--clients 200] [--stream-stall-ms N]
//! ```
//!
//! For `--seconds`, at once:
//! - `--clients` well-behaved clients, each with its own conversation, streaming sim turns
//!   (`size:2000 rate:0`) one after the other and reading every event; a refused turn (503,
//!   queue full) waits 100 ms and tries again;
//! - 20 silent clients that start a large streamed turn and never read a byte;
//! - 20 clients that start a streamed turn, read a little and hang up, over and over;
//! - bodies at the 1 MiB limit and one byte over it;
//! - 10,000 bogus requests: unknown paths, wrong methods, a foreign `Host`, bad tokens,
//!   malformed JSON.
//!
//! Then the load stops, the silent clients hang up, and the bench waits until nothing is in
//! flight and the server has idled 30 s. It prints turns/s, first-token latency (p50, p99),
//! the statuses seen, the server's RSS before, at peak (from its own samples) and after, and
//! the `dispatchctl mem` verdict of the run's journal. It fails (exit 1) when a well-behaved
//! client saw a 5xx other than 503, a bogus request got a 5xx, something is left in flight,
//! or the verdict is LEAK.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark binary, not a library

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Http, ServerProcess, bench_arg, of_kind, read_journal};

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// A raw streamed-turn request on a new connection.
fn raw_turn(addr: SocketAddr, token: &str, conversation: &str, message: &str) -> Option<TcpStream> {
    let body = format!(r#"{{"message": "{message}"}}"#);
    let mut s = TcpStream::connect(addr).ok()?;
    write!(
        s,
        "POST /v1/conversations/{conversation}/turns HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    Some(s)
}

/// A bogus request: method, path, headers, body.
type Bogus = (&'static str, &'static str, &'static [(&'static str, &'static str)], &'static [u8]);

#[derive(Default)]
struct Tally {
    statuses: Mutex<BTreeMap<String, u64>>,
    first_token_ms: Mutex<Vec<f64>>,
    turns_ok: AtomicU64,
    bad: AtomicU64,
}

impl Tally {
    fn saw(&self, what: &str, status: u16) {
        *self.statuses.lock().unwrap().entry(format!("{what} {status}")).or_default() += 1;
    }
}

fn main() {
    let seconds = bench_arg("--seconds", 60);
    let clients = bench_arg("--clients", 200) as usize;
    let dir = tempfile::tempdir().expect("temp dir");
    // `--stream-stall-ms N`: the server's DISPATCH_STREAM_STALL_MS (default: the server's own).
    let stall = std::env::args()
        .any(|a| a == "--stream-stall-ms")
        .then(|| bench_arg("--stream-stall-ms", 10_000).to_string());
    let server_args: Vec<&str> = match &stall {
        Some(ms) => vec!["--stream-stall-ms", ms],
        None => Vec::new(),
    };
    let mut server = ServerProcess::start(dir.path(), &server_args);
    let addr = server.addr;
    let token = std::fs::read_to_string(dir.path().join("api-token")).unwrap().trim().to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let http = server.client();
    let health = |http: &Http| rt.block_on(http.json("GET", "/health", None)).1;
    std::thread::sleep(Duration::from_secs(5));
    let rss_before = health(&http)["memory_pressure"]["bytes"].as_u64().unwrap_or(0);
    let allocated_before = of_kind(&read_journal(&server.journal_dir()), "memory.sample")
        .last()
        .and_then(|s| s["jemalloc"]["allocated"].as_u64())
        .unwrap_or(0);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let convs: Vec<String> = rt.block_on(async { create_conversations(&http, clients + 40).await });

    // Well-behaved streaming clients.
    let mut tasks = Vec::new();
    for c in convs.iter().take(clients) {
        let c = c.clone();
        let (http, stop, tally) = (server.client(), stop.clone(), tally.clone());
        tasks.push(rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let mut first: Option<f64> = None;
                let r = http
                    .try_stream_turn(&c, "size:2000 rate:0", |e| {
                        if e.event == "token" && first.is_none() {
                            first = Some(t0.elapsed().as_secs_f64() * 1000.0);
                        }
                    })
                    .await;
                match r {
                    Ok(events) => {
                        let outcome = events
                            .iter()
                            .rev()
                            .find(|e| e.event == "end")
                            .map_or("none".to_owned(), |e| e.data["outcome"].to_string());
                        tally.saw(&format!("turn outcome {outcome}"), 200);
                        tally.turns_ok.fetch_add(1, Ordering::Relaxed);
                        if let Some(f) = first {
                            tally.first_token_ms.lock().unwrap().push(f);
                        }
                    }
                    Err(status) => {
                        tally.saw("turn refused", status);
                        if status >= 500 && status != 503 {
                            tally.bad.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    // Silent clients: start a big streamed turn and never read.
    let silent: Vec<TcpStream> = convs[clients..clients + 20]
        .iter()
        .filter_map(|c| raw_turn(addr, &token, c, "size:50000000 rate:0"))
        .collect();
    // Clients that hang up mid-stream, over and over.
    let mut threads = Vec::new();
    for c in &convs[clients + 20..clients + 40] {
        let c = c.clone();
        let (stop, token, tally) = (stop.clone(), token.clone(), tally.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(mut s) = raw_turn(addr, &token, &c, "size:200000 rate:0") {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = [0u8; 256];
                    let _ = s.read(&mut buf);
                    tally.saw("hang-up after reading", 0);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }
    // Bodies at and over the limit, and bogus requests, from one task each.
    {
        let (http, stop, tally) = (server.client(), stop.clone(), tally.clone());
        let conv = convs[0].clone();
        tasks.push(rt.spawn(async move {
            let at_limit = {
                let pad = 1024 * 1024 - r#"{"message": ""}"#.len();
                format!(r#"{{"message": "{}"}}"#, "x".repeat(pad)).into_bytes()
            };
            let mut over = at_limit.clone();
            over.insert(14, b'y');
            while !stop.load(Ordering::Relaxed) {
                for (what, body) in [("body at limit", &at_limit), ("body over limit", &over)] {
                    let (status, _) = http
                        .raw(
                            "POST",
                            &format!("/v1/conversations/{conv}/turns"),
                            &[("content-type", "application/json")],
                            body.clone(),
                        )
                        .await;
                    tally.saw(what, status);
                    if status >= 500 && status != 503 {
                        tally.bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    {
        let (http, tally) = (server.client(), tally.clone());
        tasks.push(rt.spawn(async move {
            let requests: [Bogus; 6] = [
                ("GET", "/nope", &[], b""),
                ("DELETE", "/v1/conversations", &[], b""),
                ("GET", "/health", &[("host", "evil.example")], b""),
                ("GET", "/v1/conversations", &[("authorization", "Bearer wrong")], b""),
                (
                    "POST",
                    "/v1/conversations",
                    &[("content-type", "application/json")],
                    b"{\"title\": ",
                ),
                ("POST", "/admin/fault/segfault", &[], b""),
            ];
            for i in 0..10_000usize {
                let (m, p, h, b) = requests[i % requests.len()];
                let status = http.try_raw(m, p, h, b.to_vec()).await.unwrap_or(0);
                tally.saw(&format!("bogus {m} {p}"), status);
                if status >= 500 || status == 0 {
                    tally.bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let load_secs = started.elapsed().as_secs_f64();
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    for t in threads {
        let _ = t.join();
    }
    drop(silent);

    // Nothing left in flight, then 30 s idle.
    let drained = Instant::now();
    let mut in_flight = u64::MAX;
    while drained.elapsed() < Duration::from_secs(120) {
        let h = health(&http);
        in_flight =
            h["turns_in_flight"].as_u64().unwrap_or(0) + h["queue_depth"].as_u64().unwrap_or(0);
        if in_flight == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let drain_secs = drained.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(30));
    let rss_after = health(&http)["memory_pressure"]["bytes"].as_u64().unwrap_or(0);
    let records = read_journal(&server.journal_dir());
    let rss_peak = of_kind(&records, "memory.sample")
        .iter()
        .filter_map(|s| s["rss"].as_u64())
        .max()
        .unwrap_or(0);
    let last = of_kind(&records, "memory.sample").last().map(|s| (*s).clone()).unwrap_or_default();
    // Where RSS is after idle: the largest resident mappings of the server proper.
    if let Ok(smaps) = std::fs::read_to_string(format!("/proc/{}/smaps", server.worker)) {
        let mut maps: Vec<(u64, String)> = Vec::new();
        let mut name = String::new();
        for line in smaps.lines() {
            if let Some(kb) = line.strip_prefix("Rss:") {
                let kb: u64 = kb.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
                maps.push((kb, name.clone()));
            } else if line.split_whitespace().next().is_some_and(|f| f.contains('-') && f.len() > 8)
            {
                let parts: Vec<&str> = line.split_whitespace().collect();
                name = format!("{} {}", parts[0], parts.get(5).copied().unwrap_or("[anon]"));
            }
        }
        maps.sort_by_key(|m| std::cmp::Reverse(m.0));
        for (kb, name) in maps.iter().take(8) {
            println!("  rss {:.1} MiB  {name}", *kb as f64 / 1024.0);
        }
    }
    let status = server.signal_and_wait(libc::SIGTERM);
    let conn = dispatch_collector::schema::open_read_only(&dir.path().join("traces.db")).unwrap();
    let reports =
        dispatch_cli::mem::reports(&conn, "latest", dispatch_cli::args::Since::All).unwrap();
    let verdict = reports[0].analysis.verdict.name();

    let turns = tally.turns_ok.load(Ordering::Relaxed);
    let mut ft = tally.first_token_ms.lock().unwrap().clone();
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "load: {seconds} s, {clients} streaming clients + 20 silent + 20 hanging up + bodies + 10k bogus; server exit {status}"
    );
    println!("turns: {turns} ok ({:.1}/s)", turns as f64 / load_secs);
    println!(
        "first token: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} turns)",
        percentile(&mut ft, 0.5),
        percentile(&mut ft, 0.99),
        percentile(&mut ft, 1.0),
        ft.len()
    );
    for (what, n) in tally.statuses.lock().unwrap().iter() {
        println!("  {what}: {n}");
    }
    println!(
        "rss: before {:.1} MiB, peak {:.1} MiB (server samples), after 30 s idle {:.1} MiB",
        mib(rss_before),
        mib(rss_peak),
        mib(rss_after)
    );
    let je = |k: &str| {
        last["jemalloc"][k].as_u64().map_or("-".to_owned(), |b| format!("{:.1} MiB", mib(b)))
    };
    println!(
        "after idle, jemalloc: allocated {} (before the load {:.1} MiB), resident {}, retained {}; conversations loaded {}, state {}",
        je("allocated"),
        mib(allocated_before),
        je("resident"),
        je("retained"),
        last["conversations_loaded"],
        last["state_bytes"].as_u64().map_or("-".to_owned(), |b| format!("{:.1} MiB", mib(b)))
    );
    println!("drained to 0 in flight in {drain_secs:.1} s; left in flight: {in_flight}");
    println!("dispatchctl mem on the run: {verdict}: {}", reports[0].analysis.summary);
    let bad = tally.bad.load(Ordering::Relaxed);
    println!("unexpected 5xx or dropped answers: {bad}");
    let failed = bad > 0 || in_flight != 0 || verdict == "LEAK";
    if failed {
        println!("FAILED");
        std::process::exit(1);
    }
}

/// `n` conversations, one after the other.
async fn create_conversations(http: &Http, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(http.create_conversation().await);
    }
    out
}
