//! `dispatchctl crashes send` against a Sentry stand-in on 127.0.0.1: a receiver that parses
//! the HTTP request and its multipart body and checks the URL, every field and the dump's
//! bytes; a second send uploads nothing; a receiver answering 500 leaves the dump unsent and
//! the exit status non-zero. The dump is the real Linux fixture, used in place.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;
#[path = "common/journal.rs"]
mod journal;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use journal::{Boot, End, T0_MS};

const KEY: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const DUMP: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/minidumps/dumps/linux-mini.dmp");

/// One request as the receiver read it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    target: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// A receiver on 127.0.0.1 that answers every request with `status` (and an event id when
/// 200), recording each request before it answers.
fn receiver(status: u16) -> (String, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let conn = conn.unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.trim_end().splitn(3, ' ');
            let (method, target) =
                (parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned());
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h == "\r\n" || h.is_empty() {
                    break;
                }
                let (k, v) = h.trim_end().split_once(':').unwrap();
                headers.insert(k.to_ascii_lowercase(), v.trim().to_owned());
            }
            let mut body = Vec::new();
            if let Some(n) = headers.get("content-length") {
                body.resize(n.parse().unwrap(), 0);
                reader.read_exact(&mut body).unwrap();
            } else if headers.get("transfer-encoding").is_some_and(|t| t == "chunked") {
                loop {
                    let mut size = String::new();
                    reader.read_line(&mut size).unwrap();
                    let n = usize::from_str_radix(size.trim(), 16).unwrap();
                    let mut chunk = vec![0; n + 2];
                    reader.read_exact(&mut chunk).unwrap();
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
            }
            log.lock().unwrap().push(Request { method, target, headers, body });
            let answer = if status == 200 {
                "{\"id\":\"fc6d8c0c43fc4630ad850ee518f1b9d0\"}".to_owned()
            } else {
                "{\"detail\":\"internal error\"}".to_owned()
            };
            let mut conn = conn;
            write!(
                conn,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            )
            .unwrap();
        }
    });
    (addr, seen)
}

/// The parts of a multipart body: name -> (file name, bytes).
fn parse_multipart(content_type: &str, body: &[u8]) -> BTreeMap<String, (Option<String>, Vec<u8>)> {
    let boundary = content_type.strip_prefix("multipart/form-data; boundary=").expect(content_type);
    let delimiter = format!("--{boundary}").into_bytes();
    let mut parts = BTreeMap::new();
    let mut rest = body;
    assert!(rest.starts_with(&delimiter), "the body starts with the boundary");
    loop {
        rest = &rest[delimiter.len()..];
        if rest.starts_with(b"--\r\n") {
            assert_eq!(rest.len(), 4, "nothing after the closing boundary");
            break;
        }
        assert!(rest.starts_with(b"\r\n"));
        rest = &rest[2..];
        let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = std::str::from_utf8(&rest[..head_end]).unwrap().to_owned();
        rest = &rest[head_end + 4..];
        let next = rest
            .windows(delimiter.len() + 2)
            .position(|w| w[..2] == *b"\r\n" && w[2..] == delimiter[..])
            .unwrap();
        let content = rest[..next].to_vec();
        rest = &rest[next + 2..];
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition: form-data;"))
            .expect(&head);
        let param = |key: &str| {
            disposition
                .split("; ")
                .find_map(|p| p.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
        };
        let name = param("name").unwrap();
        assert!(parts.insert(name, (param("filename"), content)).is_none(), "each field once");
    }
    parts
}

fn dispatchctl(var: &Path, args: &[&str]) -> Output {
    let mut cmd = common::dispatchctl_command();
    cmd.env("NO_COLOR", "1").env_remove("SENTRY_DSN");
    cmd.args(["--var-dir", var.to_str().unwrap(), "--journal"]).arg(var.join("journal")).args(args);
    cmd.output().unwrap()
}

fn crashed(var: &Path) -> Boot {
    let a = Boot::new(
        1,
        T0_MS,
        9_115_307,
        End::Crash { dump_signal: "SIGSEGV", exit_signal: "SIGSEGV", minidump: Some(DUMP.into()) },
    );
    let b = Boot::new(2, a.end_ms() + 3000, 60_000, End::Nothing);
    journal::write(&var.join("journal"), &[a.clone(), b]);
    a
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ledger(var: &Path) -> PathBuf {
    var.join("crashes").join("sent.json")
}

#[test]
fn a_dump_is_uploaded_with_every_field_once_and_never_twice() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("crashes")).unwrap();
    let boot = crashed(d.path());
    let (addr, seen) = receiver(200);
    let dsn = format!("http://{KEY}@{addr}/42");
    let out = dispatchctl(d.path(), &["crashes", "send", "--all", "--sentry-dsn", &dsn]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("sent linux-mini.dmp (26.9 KiB, boot "), "{text}");
    assert!(
        text.contains(&format!(
            "to http://{addr}/api/42/minidump/: event fc6d8c0c43fc4630ad850ee518f1b9d0"
        )),
        "{text}"
    );
    assert!(!text.contains(KEY) && !stderr(&out).contains(KEY), "the key is never printed");

    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, format!("/api/42/minidump/?sentry_key={KEY}"));
    let parts = parse_multipart(&r.headers["content-type"], &r.body);
    let names: Vec<&str> = parts.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "sentry[release]",
            "sentry[tags][boot]",
            "sentry[tags][build_id]",
            "sentry[tags][signature]",
            "sentry[tags][signature_source]",
            "upload_file_minidump",
        ],
        "these fields and nothing else"
    );
    let (file, bytes) = &parts["upload_file_minidump"];
    assert_eq!(file.as_deref(), Some("linux-mini.dmp"));
    assert_eq!(bytes, &std::fs::read(DUMP).unwrap(), "the dump's bytes, exactly");
    let field = |n: &str| String::from_utf8(parts[n].1.clone()).unwrap();
    assert_eq!(parts["sentry[release]"].0, None);
    assert_eq!(field("sentry[release]"), "dispatch@0.1.0");
    assert_eq!(field("sentry[tags][build_id]"), boot.build_id);
    assert_eq!(field("sentry[tags][boot]"), boot.id());
    assert_eq!(field("sentry[tags][signature]"), "SIGSEGV | <unknown>");
    assert_eq!(field("sentry[tags][signature_source]"), "signal");

    use std::os::unix::fs::PermissionsExt;
    let record = std::fs::read_to_string(ledger(d.path())).unwrap();
    assert_eq!(std::fs::metadata(ledger(d.path())).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(
        record.contains("fc6d8c0c43fc4630ad850ee518f1b9d0") && !record.contains(KEY),
        "{record}"
    );

    // Again, by boot prefix: nothing is uploaded.
    let out = dispatchctl(d.path(), &["crashes", "send", &boot.id()[..8], "--sentry-dsn", &dsn]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("already sent linux-mini.dmp"), "{}", stdout(&out));
    assert!(stdout(&out).contains("nothing to send: 1 dump was already sent"), "{}", stdout(&out));
    assert_eq!(seen.lock().unwrap().len(), 1, "no second upload");
}

#[test]
fn a_refused_upload_is_not_recorded_and_fails_the_command() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("crashes")).unwrap();
    crashed(d.path());
    let (addr, seen) = receiver(500);
    let out = dispatchctl(
        d.path(),
        &["crashes", "send", "--all", "--sentry-dsn", &format!("http://{KEY}@{addr}/42")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("POST http://{addr}/api/42/minidump/: HTTP 500")), "{err}");
    assert!(err.contains("1 of 1 uploads failed"), "{err}");
    assert!(!err.contains(KEY), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(!ledger(d.path()).exists(), "nothing recorded as sent");

    // The next run, with Sentry back, sends it.
    let (addr, seen) = receiver(200);
    let out = dispatchctl(
        d.path(),
        &["crashes", "send", "--all", "--sentry-dsn", &format!("http://{KEY}@{addr}/42")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn bad_dsns_and_boots_without_dumps_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let boot = crashed(d.path());
    let out = dispatchctl(
        d.path(),
        &["crashes", "send", "--all", "--sentry-dsn", "https://secretkey@sentry.example/abc"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--sentry-dsn (SENTRY_DSN): the project id \"abc\" is not a number"),
        "{err}"
    );
    assert!(!err.contains("secretkey"), "{err}");

    let running = &journal::Boot::new(2, 0, 0, End::Nothing).id()[..8];
    let out = dispatchctl(
        d.path(),
        &["crashes", "send", running, "--sentry-dsn", "http://k@127.0.0.1:9/1"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no crash dump"), "{}", stderr(&out));

    let out = dispatchctl(d.path(), &["crashes", "send", "--sentry-dsn", "http://k@127.0.0.1:9/1"]);
    assert_eq!(out.status.code(), Some(2), "a boot or --all is required");
    let _ = boot;
}
