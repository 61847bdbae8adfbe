//! `dispatchctl postmortem latest` on var dirs the real server left behind: a server child
//! SIGKILLed mid-turn (as the OOM killer would: no dump can exist), and a debug server that
//! segfaulted through the admin fault API (its monitor wrote the dump), with the var dir moved
//! elsewhere before the post-mortem. The server binary is built from this workspace by the test
//! (`cargo build -p dispatch-server`), then run with its real crash monitor.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::server::{ADMIN_TOKEN, Server, journal, of_kind, wait_for};

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

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

/// A live dump (the stall watchdog's, of a running server) reads as what it is: the process
/// was alive and kept running, so the report does not call it a crash.
#[test]
fn a_stall_dump_of_a_running_server_is_not_reported_as_a_crash() {
    let var = tempfile::tempdir().unwrap();
    let mut server =
        Server::start(var.path(), &["--admin-token", ADMIN_TOKEN, "--stall-threshold-ms", "1000"]);
    std::thread::sleep(std::time::Duration::from_millis(600));
    let (status, body) = server.post("/admin/fault/stall", ADMIN_TOKEN, r#"{"seconds": 3}"#);
    assert_eq!(status, 200, "{body}");
    let dump = wait_for("the stall record with its live dump", || {
        let r = journal(var.path());
        of_kind(&r, "stall").into_iter().find_map(|s| s["minidump"].as_str().map(str::to_owned))
    });
    let md = postmortem(var.path(), &["--dump", &dump]);
    let headline = md.lines().find(|l| l.starts_with("**")).unwrap();
    assert!(headline.contains("live dump"), "{headline}");
    assert!(!headline.contains("crashed"), "{headline}");
    let doc: Value =
        serde_json::from_str(&postmortem(var.path(), &["--dump", &dump, "--format", "json"]))
            .unwrap();
    assert_eq!(doc["crash_info"]["type"], "DUMP_REQUESTED", "{}", doc["crash_info"]);
    assert!(doc["threads"].as_array().unwrap().len() > 1, "every thread walked");
    assert!(server.child.try_wait().unwrap().is_none(), "the server is still running");
}
