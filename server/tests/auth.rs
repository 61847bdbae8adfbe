//! Who reaches the agent, on the real server binary: `/v1` needs the API token (401 and
//! nothing runs without it), a `Host` that names another server or a cross-site browser
//! request is refused, a short token is refused at start, the Unix socket serves only allowed
//! uids, and the README's try-it commands work as written with the generated token.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::process::Command;

use common::{Http, ServerProcess, api_token, tokens};

#[tokio::test]
async fn v1_without_the_token_gets_401_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Tools may write only in their conversation's work directory (the sandbox).
    let work = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start(dir.path(), &["--tool-workdir", work.path().to_str().unwrap()]);
    let token = api_token(dir.path());
    assert_eq!(token.len(), 64, "32 random bytes as hex");
    let meta = std::fs::metadata(dir.path().join("api-token")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600);

    let good = server.client();
    let conversation = good.create_conversation().await;
    let marker = work.path().join(&conversation).join("ran");
    let body = serde_json::to_vec(&serde_json::json!({ "message": "tool:sh touch ran" })).unwrap();
    let path = format!("/v1/conversations/{conversation}/turns");
    let anonymous = Http::new(server.addr);
    for auth in [None, Some("Bearer wrong-token-wrong-token-wrong-token-x"), Some("Basic abc")] {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let (status, resp) = anonymous.raw("POST", &path, &headers, body.clone()).await;
        assert_eq!(status, 401, "{auth:?}: {}", String::from_utf8_lossy(&resp));
        let v: serde_json::Value = serde_json::from_slice(&resp).unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
        let (status, _) = anonymous.raw("GET", "/v1/conversations", &headers, Vec::new()).await;
        assert_eq!(status, 401);
    }
    // A token with one byte changed, and the token with a byte more, are refused too.
    let mut near = token.clone().into_bytes();
    near[10] = if near[10] == b'a' { b'b' } else { b'a' };
    let near = format!("Bearer {}", String::from_utf8(near).unwrap());
    let longer = format!("Bearer {token}0");
    for auth in [near.as_str(), longer.as_str()] {
        let (status, _) =
            anonymous.raw("GET", "/v1/conversations", &[("authorization", auth)], Vec::new()).await;
        assert_eq!(status, 401, "{auth}");
    }
    assert!(!marker.exists(), "a refused request ran its tool call");
    // The right token runs it.
    let events = good
        .stream_turn(&conversation, &format!("tool:sh touch {}", marker.display()), |_| {})
        .await;
    assert_eq!(common::end(&events)["outcome"], "ok", "{}", tokens(&events));
    assert!(marker.exists(), "the authorized turn ran its tool call");
    // /health needs no token.
    let (status, _) = anonymous.json("GET", "/health", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn another_host_or_a_cross_site_origin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--allowed-hosts", "dispatch.internal"]);
    let http = server.client();
    for (name, value) in [
        ("host", "evil.example"),
        ("host", "evil.example:24991"),
        ("host", &format!("localhost:{}", server.addr.port() + 1) as &str),
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ] {
        for path in ["/health", "/v1/conversations"] {
            let (status, body) = http.raw("GET", path, &[(name, value)], Vec::new()).await;
            assert_eq!(
                status,
                403,
                "{name}: {value} on {path}: {}",
                String::from_utf8_lossy(&body)
            );
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let code = v["error"]["code"].as_str().unwrap();
            assert!(code == "host_not_allowed" || code == "cross_origin_refused", "{code}");
        }
    }
    let same_origin = format!("http://127.0.0.1:{}", server.addr.port());
    let localhost = format!("localhost:{}", server.addr.port());
    for (name, value) in [
        ("host", localhost.as_str()),
        ("host", "dispatch.internal"),
        ("origin", same_origin.as_str()),
        ("sec-fetch-site", "same-origin"),
    ] {
        let (status, body) =
            http.raw("GET", "/v1/conversations", &[(name, value)], Vec::new()).await;
        assert_eq!(status, 200, "{name}: {value}: {}", String::from_utf8_lossy(&body));
    }
}

#[test]
fn a_short_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dispatch-server"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DISPATCH_API_TOKEN", "too-short")
        .args(["--addr", "127.0.0.1:0", "--no-crash-monitor", "--var-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 32"), "{stderr}");
    assert!(!stderr.contains("too-short"), "the token itself is printed: {stderr}");
}

#[tokio::test]
async fn the_unix_socket_serves_allowed_uids_only() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let sock_arg = sock.to_str().unwrap();
    let server = ServerProcess::start(dir.path(), &["--listen-unix", sock_arg]);
    let token = api_token(dir.path());
    let curl = |sock: &str| {
        Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket", sock])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg("http://localhost/v1/conversations")
            .output()
            .unwrap()
    };
    let out = curl(sock_arg);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("200"), "{text}");
    drop(server);

    // The same socket for uid 12345 only: our connection is closed without an answer.
    let dir2 = tempfile::tempdir().unwrap();
    let sock2 = dir2.path().join("api.sock");
    let sock2_arg = sock2.to_str().unwrap();
    let _server = ServerProcess::start(
        dir2.path(),
        &["--listen-unix", sock2_arg, "--listen-unix-uids", "12345"],
    );
    let token2 = api_token(dir2.path());
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--max-time",
            "5",
            "--unix-socket",
            sock2_arg,
        ])
        .args(["-H", &format!("Authorization: Bearer {token2}")])
        .arg("http://localhost/v1/conversations")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.ends_with("200"), "a refused uid was served: {text}");
    let log = std::fs::read_to_string(dir2.path().join("server.stderr")).unwrap();
    assert!(log.contains("refused a peer with uid"), "{log}");
}

/// The first `sh` block under README's "## Try it", as written.
fn readme_try_it() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme.split("## Try it").nth(1).unwrap();
    let block = section.split("```sh\n").nth(1).unwrap();
    block.split("```").next().unwrap().to_owned()
}

#[test]
fn the_readme_try_it_works_with_the_generated_token() {
    let dir = tempfile::tempdir().unwrap();
    // The README runs in the directory where the server keeps ./var.
    let var = dir.path().join("var");
    std::fs::create_dir(&var).unwrap();
    let server = ServerProcess::start(&var, &[]);
    let script = readme_try_it().replace("127.0.0.1:24991", &server.addr.to_string());
    assert!(script.contains("var/api-token"), "the try-it reads the token file:\n{script}");
    let out = Command::new("sh").arg("-ec").arg(&script).current_dir(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("event: tool_result"), "{stdout}");
    assert!(stdout.contains("Linux"), "{stdout}");
    assert!(stdout.contains("event: end"), "{stdout}");
    assert!(!stdout.contains("unauthorized"), "{stdout}");
}
