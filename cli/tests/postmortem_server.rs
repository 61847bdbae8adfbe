//! `dispatchctl postmortem latest` on var dirs the real server left behind: a server child
//! SIGKILLed mid-turn (as the OOM killer would: no dump can exist), and a debug server that
//! segfaulted through the admin fault API (its monitor wrote the dump), with the var dir moved
//! elsewhere before the post-mortem. The server binary is built from this workspace by the test
//! (`cargo build -p dispatch-server`), then run with its real crash monitor.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::Read as _;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const ADMIN_TOKEN: &str = "drill-token-0123456789";

/// The server binary, built once per test process from this workspace.
fn server_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "dispatch-server", "--bin", "dispatch-server"])
            .args(["--manifest-path", manifest])
            .status()
            .unwrap();
        assert!(status.success(), "building dispatch-server for this test failed");
        // target/debug/deps/<this test> -> target/debug/dispatch-server
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().join("dispatch-server")
    })
}

/// Waits for `cond`; a bound so a broken server fails the test instead of hanging it.
fn wait_for<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn journal(var: &Path) -> Vec<Value> {
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

fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

struct Server {
    child: Child,
    worker: i32,
    base: String,
    token: String,
}

impl Server {
    fn start(var: &Path, args: &[&str]) -> Server {
        let addr_file = var.join("addr");
        let mut cmd = Command::new(server_binary());
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
        let mut child = cmd.spawn().unwrap();
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

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder().http_status_as_error(false).proxy(None).build().into()
    }

    fn post(&self, path: &str, bearer: &str, body: &str) -> (u16, String) {
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

    fn create_conversation(&self) -> String {
        let (status, body) = self.post("/v1/conversations", &self.token, "");
        assert_eq!(status, 201, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    /// Starts a slow streamed turn on its own thread; the stream ends when the server dies.
    fn stream_turn(&self, conversation: &str) {
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

fn postmortem(var: &Path, args: &[&str]) -> String {
    let mut cmd = common::dispatchctl_command();
    cmd.arg("--var-dir").arg(var).arg("postmortem");
    let out = cmd.args(args).output().unwrap();
    assert!(out.status.success(), "postmortem {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Two turns streaming, samples every 100 ms, then SIGKILL of the server proper.
#[test]
fn a_sigkilled_server_gets_a_report_without_a_dump_that_says_why() {
    let var = tempfile::tempdir().unwrap();
    let mut server = Server::start(var.path(), &[]);
    let conversations = [server.create_conversation(), server.create_conversation()];
    for c in &conversations {
        server.stream_turn(c);
    }
    let turns: Vec<String> = wait_for("both turns started, and samples after them", || {
        let r = journal(var.path());
        let starts = of_kind(&r, "turn.start");
        let last_start = starts.iter().filter_map(|s| s["seq"].as_i64()).max()?;
        let after = of_kind(&r, "memory.sample")
            .iter()
            .filter(|s| s["seq"].as_i64() > Some(last_start))
            .count();
        (starts.len() == 2 && after >= 5)
            .then(|| starts.iter().map(|s| s["turn"].as_str().unwrap().to_owned()).collect())
    });
    let status = Command::new("kill").args(["-9", &server.worker.to_string()]).status().unwrap();
    assert!(status.success());
    let status = server.child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc_sigkill()), "the monitor exits the way its child did");

    let doc: Value =
        serde_json::from_str(&postmortem(var.path(), &["latest", "--format", "json"])).unwrap();
    let j = &doc["journal"];
    assert_eq!(j["exit"]["signal"], "SIGKILL", "{j}");
    let absent = doc["dump"]["absent"].as_str().unwrap();
    assert!(absent.starts_with("no dump exists: the process was killed by SIGKILL"), "{absent}");
    assert!(absent.contains("SIGKILL cannot be caught"), "{absent}");
    assert!(doc.get("crash_info").is_none() && doc.get("threads").is_none(), "no dump facts");
    assert!(doc["summary"].as_str().unwrap().starts_with("killed by SIGKILL"), "{doc}");
    assert!(j["chosen"].as_str().unwrap().starts_with("latest: boot "), "{j}");
    let mut in_flight: Vec<String> = j["turns_in_flight"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["turn"].as_str().unwrap().to_owned())
        .collect();
    in_flight.sort();
    let mut want = turns.clone();
    want.sort();
    assert_eq!(in_flight, want, "the two turns cut off by the kill");
    let mut active: Vec<&str> =
        j["active_conversations"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    active.sort();
    let mut want_c: Vec<&str> = conversations.iter().map(String::as_str).collect();
    want_c.sort();
    assert_eq!(active, want_c);
    let samples = j["last_samples"].as_array().unwrap();
    assert!(
        !samples.is_empty() && samples.iter().all(|s| s["rss_bytes"].as_i64() > Some(0)),
        "{j}"
    );
    assert!(j["samples"].as_u64() >= Some(5));
    assert!(j["mem"]["verdict"].is_string(), "the mem verdict for the boot: {j}");

    // The Markdown says it plainly and lists the turns.
    let md = postmortem(var.path(), &["latest"]);
    assert!(md.contains("## No dump\n"), "{md}");
    assert!(md.contains("no dump exists: the process was killed by SIGKILL"), "{md}");
    for t in &turns {
        assert!(md.contains(&t.replace('_', "\\_")), "turn {t} in {md}");
    }
    assert!(md.contains("The last "), "{md}");
}

fn libc_sigkill() -> i32 {
    9
}

/// A debug server segfaults mid-turn through the admin fault API; the var dir is then moved,
/// so the dump is found by its file name under `<var dir>/crashes/`.
#[test]
fn a_segfaulted_server_in_a_moved_var_dir_gets_the_dump_and_the_journal_joined() {
    let parent = tempfile::tempdir().unwrap();
    let var = parent.path().join("var");
    std::fs::create_dir(&var).unwrap();
    let mut server = Server::start(&var, &["--admin-token", ADMIN_TOKEN]);
    let conversation = server.create_conversation();
    server.stream_turn(&conversation);
    let turn = wait_for("the turn's turn.start", || {
        let r = journal(&var);
        of_kind(&r, "turn.start").first().and_then(|t| t["turn"].as_str().map(str::to_owned))
    });
    let (status, body) = server.post("/admin/fault/segfault", ADMIN_TOKEN, "");
    assert_eq!(status, 202, "{body}");
    let status = server.child.wait().unwrap();
    assert_eq!(status.signal(), Some(11), "the monitor dies of SIGSEGV like its child");
    let moved = parent.path().join("copied-for-the-post-mortem");
    std::fs::rename(&var, &moved).unwrap();

    let doc: Value =
        serde_json::from_str(&postmortem(&moved, &["latest", "--format", "json"])).unwrap();
    let ci = &doc["crash_info"];
    assert!(ci["type"].as_str().unwrap().starts_with("SIGSEGV"), "{ci}");
    let dump_path = doc["dump"]["path"].as_str().unwrap();
    assert!(dump_path.starts_with(moved.join("crashes").to_str().unwrap()), "{dump_path}");
    let crashing = &doc["crashing_thread"];
    assert_eq!(crashing["threads_index"], ci["crashing_thread"]);
    let frames = crashing["frames"].as_array().unwrap();
    assert_eq!(frames[0]["trust"], "context", "{crashing}");
    assert!(doc["threads"].as_array().unwrap().len() > 1, "every thread walked");
    let j = &doc["journal"];
    assert_eq!(j["crash"]["signal"], "SIGSEGV", "{j}");
    // The server's module: its code id is the GNU build-id process.start recorded, and with an
    // empty store it has no names, only the reason.
    let build_id = j["process_start"]["build_id"].as_str().unwrap();
    let module = doc["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["filename"] == "dispatch-server")
        .unwrap_or_else(|| panic!("no dispatch-server module: {}", doc["modules"]));
    assert_eq!(module["code_id"].as_str().unwrap(), build_id, "{module}");
    assert!(frames.iter().all(|f| f.get("function").is_none()), "no symbols, no names");
    let in_flight: Vec<&str> = j["turns_in_flight"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["turn"].as_str().unwrap())
        .collect();
    assert_eq!(in_flight, [turn.as_str()]);
    assert_eq!(j["active_conversations"][0], conversation.as_str());
    assert!(
        doc["contradictions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| !c["what"].as_str().unwrap().contains("signal")),
        "the crash record, the exit record and the dump agree on SIGSEGV: {}",
        doc["contradictions"]
    );
    let md = postmortem(&moved, &["latest"]);
    assert!(md.contains("crashed with SIGSEGV"), "{md}");

    // The HTML page with the memory chart, in headless Chromium; the screenshot is kept in the
    // target dir for people to look at.
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("postmortem-html");
    std::fs::create_dir_all(&out).unwrap();
    let page = out.join("server-segv.html");
    postmortem(&moved, &["latest", "--format", "html", "-o", page.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg") && html.contains("class=\"memory-line\""), "the memory chart");
    assert_eq!(common::chromium::fetchable_urls(&html), Vec::<String>::new());
    let r = common::chromium::render(&page, &out.join("server-segv.png"), 1280, 2000);
    assert_eq!(r.console, Vec::<String>::new(), "console messages");
}
