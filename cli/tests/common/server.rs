//! The real server, for the cli's tests: built from this workspace by a nested `cargo build`
//! (debug, or release for the tests of what users run), started with its crash monitor in a
//! temp var dir, and driven over HTTP on 127.0.0.1.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ADMIN_TOKEN: &str = "drill-token-0123456789";

#[path = "../../../server/tests/common/nested_cargo.rs"]
mod nested_cargo;

/// The debug server binary, built once per test process from this workspace with the README
/// test command's flags, so that after `cargo test --workspace --all-features` it is a no-op
/// and the uplifted `target/debug/dispatch-server` the server's own tests run stays theirs.
pub fn server_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = nested_cargo::build(
            &workspace(),
            &nested_cargo::target_of_this_test(),
            nested_cargo::DEBUG_BINS,
        );
        target.join("debug/dispatch-server")
    })
}

/// The release `dispatch-server` and `dispatchctl`, built once per test process (profile
/// `release`, `debug = "line-tables-only"`: what users run, with the symbols post-mortems need)
/// by `.ci/run`'s own release command, so after it this is a no-op.
pub fn release_binaries() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        let target = nested_cargo::build(
            &workspace(),
            &nested_cargo::target_of_this_test(),
            nested_cargo::RELEASE_BINS,
        );
        (target.join("release/dispatch-server"), target.join("release/dispatchctl"))
    })
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Waits for `cond`; a bound so a broken server fails the test instead of hanging it.
pub fn wait_for<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn journal(var: &Path) -> Vec<Value> {
    let Ok(dir) = std::fs::read_dir(var.join("journal")) else { return Vec::new() };
    let mut files: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<Value>>()
        })
        .collect()
}

pub fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

/// A running server (its crash monitor, and the server proper under it).
pub struct Server {
    /// The monitor: the process started.
    pub child: Child,
    /// The server proper (the monitor's child).
    pub worker: i32,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The API token it wrote.
    pub token: String,
}

impl Server {
    /// The debug server in `var` with `args`, 100 ms samples.
    pub fn start(var: &Path, args: &[&str]) -> Server {
        Server::start_binary(server_binary(), var, args)
    }

    /// `binary` in `var` with `args`, 100 ms samples, `DISPATCH_*` cleared.
    pub fn start_binary(binary: &Path, var: &Path, args: &[&str]) -> Server {
        let addr_file = var.join("addr");
        // A restart in the same var dir: the previous boot's address is not this one's.
        let _ = std::fs::remove_file(&addr_file);
        let mut cmd = Command::new(binary);
        for (k, _) in std::env::vars() {
            if k.starts_with("DISPATCH_") {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(var)
            .args(["--addr", "127.0.0.1:0", "--sample-interval-ms", "100", "--addr-file"])
            .arg(&addr_file)
            .arg("--var-dir")
            .arg(var)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(var.join("server.stderr")).unwrap());
        // ETXTBSY: a launcher script another test thread has just written can still be open
        // for writing in a child that thread forked and has not exec'd yet; it passes.
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                spawned => break spawned.unwrap(),
            }
        };
        let addr: String = wait_for("the server's address file", || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(var.join("server.stderr")).unwrap_or_default();
                panic!("dispatch-server exited early with {status}: {log}");
            }
            let a = std::fs::read_to_string(&addr_file).ok()?;
            (!a.trim().is_empty()).then(|| a.trim().to_owned())
        });
        let top = i64::from(child.id());
        let worker = wait_for("the server's process.start", || {
            let r = journal(var);
            of_kind(&r, "process.start")
                .into_iter()
                .find(|p| p["pid"] == top || p["ppid"] == top)
                .and_then(|p| p["pid"].as_i64())
        });
        let token = std::fs::read_to_string(var.join("api-token")).unwrap().trim().to_owned();
        Server { child, worker: worker as i32, base: format!("http://{addr}"), token }
    }

    /// The HTTP client: statuses as values, no proxy.
    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder().http_status_as_error(false).proxy(None).build().into()
    }

    /// POST `body` to `path` with `bearer`.
    pub fn post(&self, path: &str, bearer: &str, body: &str) -> (u16, String) {
        let req = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {bearer}"))
            .header("content-type", "application/json")
            .body(body.as_bytes())
            .unwrap();
        let resp = Self::agent().run(req).unwrap();
        let status = resp.status().as_u16();
        (status, resp.into_body().read_to_string().unwrap_or_default())
    }

    /// A new conversation's id.
    pub fn create_conversation(&self) -> String {
        let (status, body) = self.post("/v1/conversations", &self.token, "");
        assert_eq!(status, 201, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    /// Starts a slow streamed turn on its own thread; the stream ends when the server dies.
    pub fn stream_turn(&self, conversation: &str) {
        let url = format!("{}/v1/conversations/{conversation}/turns", self.base);
        let token = self.token.clone();
        std::thread::spawn(move || {
            let req = ureq::http::Request::builder()
                .method("POST")
                .uri(url)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .header("accept", "text/event-stream")
                .body(&br#"{"message": "rate:10 size:100000"}"#[..])
                .unwrap();
            if let Ok(resp) = Self::agent().run(req) {
                let mut sink = Vec::new();
                let _ = resp.into_body().into_reader().read_to_end(&mut sink);
            }
        });
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill").arg("-9").arg(self.worker.to_string()).status();
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// An install that crashed and came back: a debug server in `var` with `args` (which must
/// turn the admin API on with [`ADMIN_TOKEN`]) segfaults through the admin fault with a turn
/// in flight (a real minidump, `crash` and `exit` records), then a second boot starts and
/// finishes one turn. Returns the serving server and the crashed boot's id.
pub fn crashed_and_restarted(var: &Path, args: &[&str]) -> (Server, String) {
    use std::os::unix::process::ExitStatusExt as _;
    let mut first = Server::start(var, args);
    let conversation = first.create_conversation();
    first.stream_turn(&conversation);
    wait_for("the turn's turn.start", || {
        (!of_kind(&journal(var), "turn.start").is_empty()).then_some(())
    });
    let (status, body) = first.post("/admin/fault/segfault", ADMIN_TOKEN, "");
    assert_eq!(status, 202, "{body}");
    let died = first.child.wait().unwrap();
    assert_eq!(died.signal(), Some(11), "the first boot dies of SIGSEGV");
    let crashed = wait_for("the crash record", || {
        let r = journal(var);
        of_kind(&r, "crash").first().and_then(|c| c["boot"].as_str().map(str::to_owned))
    });
    drop(first);
    let second = Server::start(var, args);
    let c = second.create_conversation();
    let (status, body) = second.post(
        &format!("/v1/conversations/{c}/turns"),
        &second.token,
        r#"{"message": "size:100 rate:0"}"#,
    );
    assert_eq!(status, 200, "{body}");
    (second, crashed)
}
