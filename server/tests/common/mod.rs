//! Test helpers: the real server binary in a scratch var directory, a small HTTP client
//! (hyper) with an SSE reader, journal reading (plain serde_json, independent of the code
//! under test) and polling with a generous deadline. No fixed ports, nothing beyond 127.0.0.1.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub mod journal_disk;
pub mod nested_cargo;
pub mod tmpfs;

/// Generous deadline for conditions a test waits for (never a timing assertion).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `cond` every 50 ms until it holds or `DEADLINE` passes; panics naming `what`.
pub fn wait_for<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Async flavour of [`wait_for`].
pub async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut cond: impl FnMut() -> F,
) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real `dispatch-server` binary running in a var directory. `child` is the process the
/// test started: the crash monitor (unless `--no-crash-monitor`), whose child, `worker`, is
/// the server proper.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub var: PathBuf,
    pub worker: i32,
    /// `DISPATCH_API_TOKEN` as the test set it.
    pub api_token: Option<String>,
}

impl ServerProcess {
    /// Starts the binary with `--addr 127.0.0.1:0` in `var`, `DISPATCH_*` removed from its
    /// environment, plus `args`; waits for its address file.
    pub fn start(var: &Path, args: &[&str]) -> ServerProcess {
        ServerProcess::start_with_env(var, args, &[])
    }

    /// [`ServerProcess::start`] with extra environment variables.
    pub fn start_with_env(var: &Path, args: &[&str], envs: &[(&str, &str)]) -> ServerProcess {
        ServerProcess::start_binary(
            Path::new(env!("CARGO_BIN_EXE_dispatch-server")),
            var,
            args,
            envs,
        )
    }

    /// [`ServerProcess::start_with_env`] of another build of the server (the release binary
    /// of [`release_server`], a saved binary in a benchmark).
    pub fn start_binary(
        binary: &Path,
        var: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> ServerProcess {
        let addr_file = var.join("addr");
        let _ = std::fs::remove_file(&addr_file);
        let mut cmd = Command::new(binary);
        for (k, _) in std::env::vars() {
            if k.starts_with("DISPATCH_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(envs.iter().copied());
        cmd.current_dir(var)
            .arg("--addr")
            .arg("127.0.0.1:0")
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--var-dir")
            .arg(var)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(var.join("server.stderr"))
                    .expect("stderr file"),
            ));
        let mut child = cmd.spawn().expect("spawning dispatch-server");
        let addr = wait_for("the server's address file", || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(var.join("server.stderr")).unwrap_or_default();
                panic!("dispatch-server exited early with {status}: {log}");
            }
            std::fs::read_to_string(&addr_file).ok()?.trim().parse().ok()
        });
        // The server proper: the process whose `process.start` names the started process as
        // itself (no monitor) or as its parent (the monitor's child).
        let top = child.id() as u64;
        let worker = wait_for("the server's process.start", || {
            let records = read_journal(&var.join("journal"));
            of_kind(&records, "process.start")
                .into_iter()
                .rev()
                .find(|r| r["pid"] == top || r["ppid"] == top)
                .and_then(|r| r["pid"].as_i64())
        }) as i32;
        let api_token =
            envs.iter().find(|(k, _)| *k == "DISPATCH_API_TOKEN").map(|(_, v)| (*v).to_owned());
        ServerProcess { child, addr, var: var.to_path_buf(), worker, api_token }
    }

    /// The pid of the server proper (the monitor's child, or the started process itself).
    pub fn pid(&self) -> i32 {
        self.worker
    }

    /// Sends `signal` to the started process (the monitor forwards SIGTERM and SIGINT, as
    /// under systemd) and waits for it to end.
    pub fn signal_and_wait(&mut self, signal: i32) -> std::process::ExitStatus {
        send(self.child.id() as i32, signal);
        self.child.wait().expect("wait")
    }

    /// Sends `signal` (e.g. `libc::SIGKILL`) to the server proper and waits for the started
    /// process (the monitor exits the way its child did).
    pub fn signal_worker_and_wait(&mut self, signal: i32) -> std::process::ExitStatus {
        send(self.worker, signal);
        self.child.wait().expect("wait")
    }

    /// A client with the token the server uses (`DISPATCH_API_TOKEN` when the test set one,
    /// else the file the server created).
    pub fn client(&self) -> Http {
        let token = self.api_token.clone().unwrap_or_else(|| api_token(&self.var));
        Http::with_token(self.addr, token)
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.var.join("journal")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // The worker first: killing only the monitor would leave it running.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill").arg("-9").arg(self.worker.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send(pid: i32, signal: i32) {
    let status =
        Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Every journal line in `dir` (all segments, in file-name order), parsed as JSON. Lines that
/// do not parse (a torn last line) are skipped.
pub fn read_journal(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "ndjson"));
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        out.extend(text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()));
    }
    out
}

/// Records of `kind`.
pub fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

/// One SSE event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: Value,
}

/// A tiny HTTP/1 client for the API.
#[derive(Clone)]
pub struct Http {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Sent as `Authorization: Bearer` unless a request sets its own.
    token: Option<String>,
}

/// The API token the server created in `var` (`<var>/api-token`).
pub fn api_token(var: &Path) -> String {
    std::fs::read_to_string(var.join("api-token"))
        .expect("the server's api-token file")
        .trim()
        .to_owned()
}

impl Http {
    /// A client without a token (for `/health`, `/metrics`, and the refusal tests).
    pub fn new(addr: SocketAddr) -> Http {
        Http {
            addr,
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            token: None,
        }
    }

    /// A client that sends `token` with every request.
    pub fn with_token(addr: SocketAddr, token: String) -> Http {
        Http { token: Some(token), ..Http::new(addr) }
    }

    /// Sends a request; returns the status and the whole body.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        let (status, _, body) = self.raw_with_headers(method, path, headers, body).await;
        (status, body)
    }

    /// [`Http::raw`], with the response headers.
    pub async fn raw_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, hyper::HeaderMap, Vec<u8>) {
        let resp = self.client.request(self.request(method, path, headers, body)).await.unwrap();
        let status = resp.status().as_u16();
        let response_headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, response_headers, body)
    }

    /// [`Http::raw`] to a server that may go away before it answers: the status, if any.
    pub async fn try_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Option<u16> {
        let resp = self.client.request(self.request(method, path, headers, body)).await.ok()?;
        Some(resp.status().as_u16())
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Request<Full<Bytes>> {
        let mut req = Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(t) = &self.token {
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
                req = req.header("authorization", format!("Bearer {t}"));
            }
        }
        req.body(Full::new(Bytes::from(body))).unwrap()
    }

    /// JSON request (`Content-Type: application/json` when there is a body).
    pub async fn json(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, bytes) = match body {
            Some(b) => {
                self.raw(
                    method,
                    path,
                    &[("content-type", "application/json")],
                    serde_json::to_vec(&b).unwrap(),
                )
                .await
            }
            None => self.raw(method, path, &[], Vec::new()).await,
        };
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, value)
    }

    /// Creates a conversation; returns its id.
    pub async fn create_conversation(&self) -> String {
        let (status, v) = self.json("POST", "/v1/conversations", None).await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    /// Starts a streamed turn; `on_event` sees each event as it arrives; returns all events.
    pub async fn stream_turn(
        &self,
        conversation: &str,
        message: &str,
        on_event: impl FnMut(&SseEvent),
    ) -> Vec<SseEvent> {
        match self.try_stream_turn(conversation, message, on_event).await {
            Ok(events) => events,
            Err(status) => panic!("a streamed turn answered {status}"),
        }
    }

    /// [`Http::stream_turn`] that returns the status of a refused turn (503 when the queue is
    /// full, 0 when the connection failed) instead of failing.
    pub async fn try_stream_turn(
        &self,
        conversation: &str,
        message: &str,
        mut on_event: impl FnMut(&SseEvent),
    ) -> Result<Vec<SseEvent>, u16> {
        let body = serde_json::to_vec(&serde_json::json!({ "message": message })).unwrap();
        let mut req = Request::builder()
            .method("POST")
            .uri(format!("http://{}/v1/conversations/{conversation}/turns", self.addr))
            .header("content-type", "application/json")
            .header("accept", "text/event-stream");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body))).unwrap();
        let Ok(resp) = self.client.request(req).await else { return Err(0) };
        if resp.status() != 200 {
            return Err(resp.status().as_u16());
        }
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        let mut events = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Some(data) = frame.data_ref() else { continue };
            buf.extend_from_slice(data);
            while let Some(at) = buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = buf.drain(..at + 2).collect();
                let text = String::from_utf8(block).unwrap();
                let mut event = String::new();
                let mut data = String::new();
                for line in text.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.strip_prefix(' ').unwrap_or(d));
                    }
                }
                if event.is_empty() && data.is_empty() {
                    continue; // keep-alive comment
                }
                let e = SseEvent {
                    event,
                    data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
                };
                on_event(&e);
                events.push(e);
            }
        }
        Ok(events)
    }
}

/// The text of the `token` events.
pub fn tokens(events: &[SseEvent]) -> String {
    events.iter().filter(|e| e.event == "token").filter_map(|e| e.data["text"].as_str()).collect()
}

/// The `end` event's data.
pub fn end(events: &[SseEvent]) -> &Value {
    &events.iter().rev().find(|e| e.event == "end").expect("an end event").data
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A fake OpenAI-compatible upstream's SSE answer: each event sent in two chunks, so the
/// client must reassemble lines across reads (and TLS records).
pub fn sse(events: Vec<String>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let mut parts: Vec<Result<String, std::convert::Infallible>> = Vec::new();
    for e in events {
        let (a, b) = e.split_at(e.len() / 2);
        parts.push(Ok(a.to_owned()));
        parts.push(Ok(b.to_owned()));
    }
    (
        [("content-type", "text/event-stream")],
        axum::body::Body::from_stream(futures_util::stream::iter(parts)),
    )
        .into_response()
}

/// One SSE `data:` event carrying `v`.
pub fn data(v: Value) -> String {
    format!("data: {v}\n\n")
}

/// The release build of `dispatch-server`, for tests of behaviour the optimiser changes (the
/// fault drills: a recursion the optimiser turned into a loop never overflowed).
///
/// Runs `.ci/run`'s release build ([`nested_cargo::RELEASE_BINS`]) once per test process,
/// into the target directory this test binary was built in (so `CARGO_TARGET_DIR` is
/// respected), and returns `<target>/release/dispatch-server`. Cargo decides whether it is
/// stale: after `.ci/run`'s identical build it is a no-op (see [`nested_cargo`] for what made
/// it rebuild before). The nested cargo does not wait on the outer `cargo test`: a profile's
/// build directory lock is per profile (`target/debug` for the tests, `target/release` here).
///
/// # Panics
/// When cargo is missing, the build fails, or the binary is not where cargo puts it; the
/// message says what to run by hand.
pub fn release_server() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let target = nested_cargo::build(
                &workspace,
                &nested_cargo::target_of_this_test(),
                nested_cargo::RELEASE_BINS,
            );
            let binary = target.join("release").join("dispatch-server");
            assert!(
                binary.is_file(),
                "the release build succeeded but {} is missing",
                binary.display()
            );
            binary
        })
        .clone()
}

/// A benchmark's `--name VALUE` argument, or `default` (benches take their own flags after
/// `cargo bench ... --`).
pub fn bench_arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
