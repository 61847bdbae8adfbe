//! The `openai` provider over HTTPS, end to end: the real server binary against a TLS
//! upstream on 127.0.0.1 whose certificate chains to a CA made here (rcgen), trusted only
//! through `--openai-ca-file`.
//!
//! - A turn streams the upstream's tokens to the client.
//! - Upstream errors that echo the request (a 401 quoting the key, a 500 dumping the
//!   `Authorization` header past the quoting limit, an error event in the stream) end their
//!   turns, and the key is in no error text, no file under the var directory (journal,
//!   databases) and not in the server's stderr.
//! - Without the CA file the turn fails at once with a certificate error (no hang).
//! - A missing or unusable CA file stops the server at start, naming the file.

#![allow(clippy::unwrap_used)] // a test crate: helpers below are not #[test]s

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use common::{DEADLINE, ServerProcess, SseEvent, data, end, of_kind, read_journal, sse, tokens};
use dispatch_server::provider::openai::MAX_ERROR_BODY_BYTES;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// The API key: long and distinctive, so finding it anywhere is no accident.
const SECRET: &str = "sk-dispatch-tls-7c1e9a42b38d5f60e1a9";

/// A CA and a `localhost` server certificate it signed; the CA's PEM is written to `ca.pem`
/// in `dir` (not the server's var directory, which the test scans for the key).
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Dispatch test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();

    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf.signed_by(&leaf_key, &ca).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    Pki { dir, ca_pem, server: Arc::new(server) }
}

/// TLS on top of a TCP listener, for `axum::serve`. A handshake the client aborts (it does not
/// trust the certificate) is counted and the next connection awaited.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    failed_handshakes: Arc<AtomicUsize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => {
                    self.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// What the upstream saw: the `Authorization` header of each request that reached it.
#[derive(Clone, Default)]
struct Upstream {
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
    failed_handshakes: Arc<AtomicUsize>,
}

async fn completions(
    axum::extract::State(up): axum::extract::State<Upstream>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> axum::response::Response {
    let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
    up.authorizations.lock().unwrap().push(auth.clone());
    let auth = auth.unwrap_or_default();
    let said = body["messages"][0]["content"].as_str().unwrap_or("").to_owned();
    match said.as_str() {
        // A 401 in OpenAI's shape whose message quotes the header it got.
        "echo-401" => (
            StatusCode::UNAUTHORIZED,
            [("content-type", "application/json")],
            json!({"error": {
                "message": format!("Incorrect API key provided: {auth}"),
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }})
            .to_string(),
        )
            .into_response(),
        // A debugging proxy's 500 that dumps the request headers, the key straddling the
        // quoting limit (the provider must read past the limit to see it whole).
        "echo-500" => {
            let pad = "y".repeat(MAX_ERROR_BODY_BYTES - 20);
            let dump = format!("{pad}authorization:{auth}\ncontent-type: application/json\n");
            (StatusCode::INTERNAL_SERVER_ERROR, dump).into_response()
        }
        // An error event in the middle of a stream, quoting the key.
        "echo-stream" => sse(vec![
            data(json!({"choices":[{"index":0,"delta":{"role":"assistant","content":"Wait"}}]})),
            data(json!({"error": {"message": format!("key {auth} was revoked mid-stream")}})),
        ]),
        _ => sse(vec![
            data(json!({"choices":[{"index":0,"delta":{"role":"assistant","content":"Hello "}}]})),
            data(json!({"choices":[{"index":0,"delta":{"content":"over "}}]})),
            data(
                json!({"choices":[{"index":0,"delta":{"content":"TLS!"},"finish_reason":"stop"}]}),
            ),
            "data: [DONE]\n\n".to_owned(),
        ]),
    }
}

/// Starts the TLS upstream on 127.0.0.1 (port 0); returns its port.
async fn upstream(pki: &Pki) -> (u16, Upstream) {
    let up = Upstream::default();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(pki.server.clone()),
        failed_handshakes: up.failed_handshakes.clone(),
    };
    let app = Router::new().route("/v1/chat/completions", post(completions)).with_state(up.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, up)
}

/// The server binary with the openai provider at `https://localhost:PORT/v1`.
fn server(var: &Path, port: u16, ca: Option<&Path>) -> ServerProcess {
    let base = format!("https://localhost:{port}/v1");
    let mut args = vec![
        "--provider",
        "openai",
        "--model",
        "tls-model",
        "--openai-base-url",
        &base,
        "--openai-api-key",
        SECRET,
        "--provider-idle-timeout-ms",
        "120000",
    ];
    if let Some(ca) = ca {
        args.extend(["--openai-ca-file", ca.to_str().unwrap()]);
    }
    ServerProcess::start(var, &args)
}

/// Every event of a turn, as the client received it, in one string.
fn wire_text(events: &[SseEvent]) -> String {
    events.iter().map(|e| format!("{} {}\n", e.event, e.data)).collect()
}

/// Files under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                found.push(p);
            }
        }
    }
    found
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "the API key is in {what}: {text}");
    // Not even its distinctive start (a cut that kept half of it).
    assert!(!text.contains(&SECRET[..16]), "a prefix of the API key is in {what}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_streams_over_https_and_the_key_leaks_nowhere() {
    let pki = pki();
    let (port, up) = upstream(&pki).await;
    let var = tempfile::tempdir().unwrap();
    let mut srv = server(var.path(), port, Some(&pki.ca_pem));
    let http = srv.client();

    // The turn: tokens from the TLS upstream arrive at the client, in order.
    let c = http.create_conversation().await;
    let events = http.stream_turn(&c, "hello", |_| {}).await;
    assert_eq!(end(&events)["outcome"], "ok", "{events:?}");
    assert_eq!(tokens(&events), "Hello over TLS!");
    assert_no_secret("the turn's events", &wire_text(&events));
    let (_, conv) = http.json("GET", &format!("/v1/conversations/{c}"), None).await;
    assert_eq!(conv["messages"][1]["content"], "Hello over TLS!", "{conv}");

    // Upstream errors that echo the key.
    let mut failed = Vec::new();
    for (message, code, says) in [
        (
            "echo-401",
            "provider_status",
            "answered 401: Incorrect API key provided: Bearer <redacted>",
        ),
        ("echo-500", "provider_status", "answered 500: yyyy"),
        ("echo-stream", "provider_protocol", "provider error: key Bearer <redacted> was revoked"),
    ] {
        let c = http.create_conversation().await;
        let events = http.stream_turn(&c, message, |_| {}).await;
        let e = end(&events);
        assert_eq!((e["outcome"].as_str(), e["code"].as_str()), (Some("error"), Some(code)), "{e}");
        assert_no_secret(&format!("the events of {message}"), &wire_text(&events));
        let error = e["error"].as_str().unwrap();
        assert!(error.contains(says), "{message}: {error}");
        assert!(error.len() < MAX_ERROR_BODY_BYTES + 200, "{message}: the quote is bounded");
        let (_, conv) = http.json("GET", &format!("/v1/conversations/{c}"), None).await;
        assert_no_secret(&format!("the conversation of {message}"), &conv.to_string());
        failed.push(e["id"].as_str().unwrap().to_owned());
    }

    // The key did go to the upstream, in the header and nowhere else.
    let seen = up.authorizations.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|a| a.as_deref() == Some(&format!("Bearer {SECRET}")[..])));
    assert_eq!(up.failed_handshakes.load(Ordering::SeqCst), 0);

    // The errors are journaled (and drained into the traces database) before we look.
    common::wait_for("the three provider errors in the journal", || {
        let records = read_journal(&srv.journal_dir());
        let errors = of_kind(&records, "error.unhandled");
        failed.iter().all(|t| errors.iter().any(|r| r["turn"] == t.as_str())).then_some(())
    });
    let status = srv.signal_and_wait(libc::SIGTERM);
    assert!(status.success(), "{status}");

    let stderr = std::fs::read_to_string(var.path().join("server.stderr")).unwrap();
    assert_no_secret("the server's stderr", &stderr);
    let journal = read_journal(&srv.journal_dir());
    assert!(journal.len() > 10, "the journal was read: {} records", journal.len());
    for needle in [SECRET, &SECRET[..16]] {
        let leaks = files_containing(var.path(), needle.as_bytes());
        assert!(leaks.is_empty(), "{needle:?} is in {leaks:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_file_the_turn_fails_with_a_certificate_error() {
    let pki = pki();
    let (port, up) = upstream(&pki).await;
    let var = tempfile::tempdir().unwrap();
    let srv = server(var.path(), port, None);
    let http = srv.client();
    let c = http.create_conversation().await;
    let started = Instant::now();
    let events = http.stream_turn(&c, "hello", |_| {}).await;
    let took = started.elapsed();
    let e = end(&events);
    assert_eq!((e["outcome"].as_str(), e["code"].as_str()), (Some("error"), Some("provider_http")));
    let error = e["error"].as_str().unwrap();
    assert!(
        error.contains("invalid peer certificate") && error.contains("DISPATCH_OPENAI_CA_FILE"),
        "{error}"
    );
    assert!(error.contains(&format!("https://localhost:{port}/v1/chat/completions")), "{error}");
    // Refused at the handshake, long before the 120 s idle timeout (a bound, not a timing).
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(tokens(&events).is_empty());
    assert!(up.authorizations.lock().unwrap().is_empty(), "no request got through");
    assert!(up.failed_handshakes.load(Ordering::SeqCst) >= 1);
    assert_no_secret("the error", &wire_text(&events));
}

/// Runs the binary with `args` and `envs` (its own `DISPATCH_*` cleared) until it exits,
/// which it must within the deadline; its status and stderr.
fn start_fails(
    var: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (std::process::ExitStatus, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dispatch-server"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DISPATCH_") {
            cmd.env_remove(k);
        }
    }
    let stderr_path = var.join("start.stderr");
    let mut child = cmd
        .current_dir(var)
        .args(["--addr", "127.0.0.1:0", "--no-crash-monitor", "--var-dir"])
        .arg(var)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the server did not exit on a bad CA file");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&stderr_path).unwrap())
}

#[test]
fn a_bad_ca_file_stops_the_server_at_start_naming_the_file() {
    let pki = pki();
    let var = tempfile::tempdir().unwrap();
    let missing = pki.dir.path().join("no-such-ca.pem");
    let not_pem = pki.dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let openai = ["--provider", "openai", "--openai-base-url", "https://localhost:9/v1"];
    for (file, why) in [(&missing, "cannot read it"), (&not_pem, "no PEM certificate")] {
        let file = file.to_str().unwrap();
        let (status, stderr) =
            start_fails(var.path(), &[&openai[..], &["--openai-ca-file", file]].concat(), &[]);
        assert_eq!(status.code(), Some(2), "{stderr}");
        let says = format!("DISPATCH_OPENAI_CA_FILE {file}: {why}");
        assert!(stderr.contains(&says), "{file}: {stderr}");
    }
    // The environment variable is the same setting.
    let (status, stderr) =
        start_fails(var.path(), &openai, &[("DISPATCH_OPENAI_CA_FILE", missing.to_str().unwrap())]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no-such-ca.pem"), "{stderr}");
}
