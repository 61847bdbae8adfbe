//! Debian's real `debuginfod` for tests, kept to loopback: elfutils' server has no option to
//! bind one address (it listens on every interface), so it runs only inside a private network
//! namespace whose one interface is `lo`. The test re-runs itself there (`unshare --net`) as an
//! `#[ignore]`d inner test, which starts the server, polls until it has indexed the files
//! (bounded), does its checks, and kills the server (a `Drop`, so a failed check kills it too).
//! The namespace dies with the inner test: nothing is left listening.
//!
//! Used by `cli/tests/symbols_debuginfod.rs` and `server/tests/symbols.rs` (`#[path]`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Set in the inner test's environment: it runs inside the private namespace.
pub const INNER: &str = "DISPATCH_TEST_NETNS_INNER";
/// The `debuginfod` and `ip` paths, resolved outside (where apt can install them).
pub const DEBUGINFOD_BIN: &str = "DISPATCH_TEST_DEBUGINFOD";
/// The `ip` binary.
pub const IP_BIN: &str = "DISPATCH_TEST_IP";
/// The port inside the namespace: every port is free in a fresh one.
pub const PORT: u16 = 8002;
/// Bound on waiting for debuginfod to index (it scans asynchronously).
pub const INDEX_DEADLINE: Duration = Duration::from_secs(120);

/// `scripts/test-tools NAME...` (installs what is missing), one path per tool; fails naming
/// the tool when it cannot be had.
pub fn tools(names: &[&str]) -> Vec<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-tools");
    let out =
        Command::new("bash").arg(&script).args(names).output().expect("running scripts/test-tools");
    assert!(
        out.status.success(),
        "scripts/test-tools {names:?} could not provide the tools (Debian packages debuginfod, \
         iproute2): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().lines().map(PathBuf::from).collect()
}

/// Runs the `#[ignore]`d test `inner` of this test binary inside a private network namespace,
/// with `envs`; returns its output (the caller asserts success).
pub fn run_inner(inner: &str, envs: &[(&str, String)]) -> Output {
    let tools = tools(&["debuginfod", "ip"]);
    let unshare = Command::new("unshare").arg("--help").output();
    assert!(unshare.is_ok(), "unshare (util-linux) is needed to keep debuginfod on loopback");
    let mut cmd = Command::new("unshare");
    cmd.arg("--net")
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args([inner, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .env(DEBUGINFOD_BIN, &tools[0])
        .env(IP_BIN, &tools[1]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("running unshare --net")
}

/// True in the inner run; the inner test panics otherwise (it must not run by itself).
pub fn assert_inner() {
    assert!(
        std::env::var_os(INNER).is_some(),
        "run by its outer test inside a private network namespace, not directly"
    );
}

/// A running `debuginfod -F` over a directory; killed on drop.
pub struct Debuginfod {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    log: PathBuf,
}

impl Debuginfod {
    /// Brings up loopback, then starts debuginfod over `dir` (ELF files) with its database in
    /// `work`.
    pub fn start(dir: &Path, work: &Path) -> Debuginfod {
        assert_inner();
        let ip = std::env::var_os(IP_BIN).expect("ip path from the outer test");
        let up = Command::new(ip).args(["link", "set", "lo", "up"]).status().unwrap();
        assert!(up.success(), "ip link set lo up");
        let log = work.join("debuginfod.log");
        let child = Command::new(std::env::var_os(DEBUGINFOD_BIN).expect("debuginfod path"))
            .arg("-F")
            .args(["-p", &PORT.to_string()])
            .arg("-d")
            .arg(work.join("debuginfod.sqlite"))
            // Not `-t 0`: that disables the first scan too.
            .args(["-g", "0", "-c", "1", "-v"])
            .arg(dir)
            // debuginfod forwards what it lacks to the servers of its own DEBUGINFOD_URLS:
            // the test's points at this server, which would ask itself until a timeout.
            .env_remove("DEBUGINFOD_URLS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting debuginfod");
        Debuginfod { child, url: format!("http://127.0.0.1:{PORT}"), log }
    }

    /// Polls until `GET /buildid/<id>/executable` answers 200 (indexing is asynchronous);
    /// panics after [`INDEX_DEADLINE`] with the server's log.
    pub fn wait_indexed(&mut self, build_id: &str) {
        let end = Instant::now() + INDEX_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("debuginfod exited with {status}: {}", self.log_text());
            }
            if http_status(&format!("/buildid/{build_id}/executable")) == Some(200) {
                return;
            }
            assert!(
                Instant::now() < end,
                "debuginfod did not index {build_id}: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Debuginfod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of `GET <path>` on the namespace's debuginfod (HTTP/1.0, no client library).
pub fn http_status(path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", PORT)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
