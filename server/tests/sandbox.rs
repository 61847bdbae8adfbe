//! The tool sandbox on the real binary: `tool:sh` calls through the sim provider, the same path
//! a real model's tool calls take. A confined tool cannot read the server's environment, list
//! the var directory, signal the server or the crash monitor, reach the monitor's abstract
//! socket or write outside its work directory, while ordinary commands work; its environment
//! holds no server secret; a `yes` stops at the offload file cap; a double-forked `sleep`
//! dies with its call. Each of these fails with `--tool-sandbox=false` (or, for the
//! environment and the cap, without the allowlist and the cap).

mod common;

use std::path::{Path, PathBuf};

use common::{Http, ServerProcess, end, of_kind, read_journal, wait_for};
use serde_json::Value;

const ADMIN_TOKEN: &str = "admin-token-4b1d0c9e-must-stay-in-the-server";
const OPENAI_KEY: &str = "sk-test-9f8e7d6c-must-stay-in-the-server";

/// Runs `command` as one `tool:sh` call in `conversation`; returns the tool result
/// (`content`, `is_error`, ...) and the `end` event.
async fn sh(http: &Http, conversation: &str, command: &str) -> (Value, Value) {
    sh_watching(http, conversation, command, |_| {}).await
}

async fn sh_watching(
    http: &Http,
    conversation: &str,
    command: &str,
    on_event: impl FnMut(&common::SseEvent),
) -> (Value, Value) {
    let events = http.stream_turn(conversation, &format!("tool:sh {command}"), on_event).await;
    let result = events
        .iter()
        .find(|e| e.event == "tool_result")
        .unwrap_or_else(|| panic!("no tool_result for {command:?}: {events:?}"))
        .data
        .clone();
    (result, end(&events).clone())
}

fn content(result: &Value) -> &str {
    result["content"].as_str().unwrap_or_default()
}

/// The started server's own pid (the crash monitor, the worker's parent).
fn monitor_pid(server: &ServerProcess) -> u32 {
    server.child.id()
}

/// The crash monitor's abstract socket name, from the worker's environment (the test is not
/// confined).
fn monitor_socket(worker: i32) -> String {
    let environ =
        std::fs::read(format!("/proc/{worker}/environ")).expect("reading the worker's environ");
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"DISPATCH_CRASH_SOCKET="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("the worker runs under the crash monitor (DISPATCH_CRASH_SOCKET)")
}

fn start(var: &Path, tools: &Path, extra: &[&str]) -> ServerProcess {
    let workdir = tools.display().to_string();
    let mut args = vec!["--sim-tokens-per-sec", "0", "--tool-workdir", workdir.as_str()];
    args.extend_from_slice(extra);
    ServerProcess::start_with_env(
        var,
        &args,
        &[("DISPATCH_ADMIN_TOKEN", ADMIN_TOKEN), ("DISPATCH_OPENAI_API_KEY", OPENAI_KEY)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_tool_cannot_reach_the_server_but_works_in_its_directory() {
    let var = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let tools = scratch.path().join("tools");
    // Required: if this kernel could not enforce all of it, every call below would be refused.
    let server = start(var.path(), tools.as_path(), &["--tools-require-sandbox"]);
    let http = server.client();
    let (status, health) = http.json("GET", "/health", None).await;
    assert_eq!(status, 200, "{health}");
    let described = health["tool_sandbox"].as_str().unwrap_or_default().to_owned();
    assert!(described.starts_with("landlock abi "), "/health tool_sandbox: {health}");
    let records = read_journal(&server.journal_dir());
    let start = of_kind(&records, "process.start");
    assert!(
        start.iter().any(|r| r["config"]["tool_sandbox"] == described.as_str()),
        "process.start config.tool_sandbox: {start:?}"
    );

    let c = http.create_conversation().await;
    let worker = server.pid();
    let monitor = monitor_pid(&server);
    let socket = monitor_socket(worker);
    let var_dir = var.path().display().to_string();
    let outside = tools.as_path().with_extension("outside");
    let mut denied = vec![
        // `$PPID` is the namespace's pid 1 (the keeper, outside the Landlock domain); the
        // server's real pids are named too.
        "cat /proc/$PPID/environ".to_owned(),
        "kill -0 $PPID".to_owned(),
        format!("cat /proc/{worker}/environ"),
        format!("cat /proc/{monitor}/environ"),
        format!("ls {var_dir}"),
        format!("cat {var_dir}/server.stderr"),
        format!("kill -0 {worker}"),
        format!("kill -0 {monitor}"),
        format!("echo x > {}", outside.display()),
        format!("echo x > {var_dir}/planted"),
        "echo x > /tmp/dispatch-sandbox-test-planted".to_owned(),
    ];
    // The monitor's dump server listens on an abstract SOCK_SEQPACKET socket (minidumper).
    if std::process::Command::new("python3").arg("--version").output().is_ok() {
        denied.push(format!(
            "python3 -c \"import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); \
             s.connect(b'\\0{socket}'); print('connected')\""
        ));
    } else {
        eprintln!("SKIPPED: no python3 on this machine: the abstract-socket check did not run");
    }
    let mut allowed = Vec::new();
    for command in &denied {
        let (result, _) = sh(&http, &c, command).await;
        let text = content(&result);
        let leaked = text.contains(ADMIN_TOKEN) || text.contains(OPENAI_KEY);
        if result["is_error"] != true || leaked || text.contains("connected") {
            allowed.push(format!("{command:?} -> {result}"));
        }
    }
    assert!(allowed.is_empty(), "confined tools did what they must not:\n{}", allowed.join("\n"));
    assert!(!outside.exists() && !var.path().join("planted").exists());
    assert!(!Path::new("/tmp/dispatch-sandbox-test-planted").exists());

    let (result, _) = sh(&http, &c, "uname -s").await;
    assert_eq!(content(&result), "Linux\n", "{result}");
    let (result, _) = sh(&http, &c, "ls /usr/bin").await;
    assert_eq!(result["is_error"], false, "{result}");
    assert!(content(&result).lines().any(|l| l == "sh"), "{result}");
    let (result, _) = sh(&http, &c, "echo kept > note && cat note && pwd").await;
    assert_eq!(result["is_error"], false, "{result}");
    let workdir: PathBuf = tools.as_path().join(&c);
    assert_eq!(content(&result), format!("kept\n{}\n", workdir.display()));
    assert_eq!(std::fs::read_to_string(workdir.join("note")).unwrap(), "kept\n");
    let mode = std::fs::metadata(&workdir).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o700);

    // The call's own /proc: its processes only (sh is pid 1), and no capabilities, even
    // though the server runs as root here.
    let (result, _) =
        sh(&http, &c, "ls /proc | grep -c '^[0-9]' ; grep CapEff /proc/self/status").await;
    assert_eq!(result["is_error"], false, "{result}");
    let text = content(&result);
    let pids: u32 = text.lines().next().and_then(|l| l.trim().parse().ok()).unwrap_or(u32::MAX);
    assert!(pids <= 4, "only the call's processes are visible: {text}");
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");

    // The environment is rebuilt from the allowlist: no secret, HOME is the work directory.
    let (result, _) = sh(&http, &c, "env").await;
    let env = content(&result);
    assert_eq!(result["is_error"], false, "{result}");
    assert!(!env.contains(ADMIN_TOKEN) && !env.contains(OPENAI_KEY), "{env}");
    assert!(!env.contains("DISPATCH_"), "{env}");
    assert!(env.lines().any(|l| l == format!("HOME={}", workdir.display())), "{env}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlisted_variables_reach_tools_and_others_do_not() {
    let var = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let tools = scratch.path().join("tools");
    let workdir = tools.display().to_string();
    let server = ServerProcess::start_with_env(
        var.path(),
        &["--sim-tokens-per-sec", "0", "--tool-workdir", &workdir],
        &[
            ("DISPATCH_TOOL_ENV_ALLOW", "SANDBOX_TEST_ALLOWED,DISPATCH_ADMIN_TOKEN"),
            ("SANDBOX_TEST_ALLOWED", "yes-allowed"),
            ("SANDBOX_TEST_OTHER", "not-allowed"),
            ("DISPATCH_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    );
    let http = server.client();
    let c = http.create_conversation().await;
    let (result, _) = sh(&http, &c, "env").await;
    let env = content(&result);
    assert!(env.lines().any(|l| l == "SANDBOX_TEST_ALLOWED=yes-allowed"), "{env}");
    assert!(!env.contains("not-allowed"), "{env}");
    assert!(!env.contains(ADMIN_TOKEN), "a secret is never passed, even when listed: {env}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yes_stops_at_the_offload_file_cap() {
    let var = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let tools = scratch.path().join("tools");
    const CAP: u64 = 2 * 1024 * 1024;
    let cap = CAP.to_string();
    // A generous timeout: without the cap the call would run (and write) until it.
    let server = start(
        var.path(),
        tools.as_path(),
        &["--tool-output-file-max-bytes", &cap, "--tool-timeout-ms", "120000"],
    );
    let http = server.client();
    let c = http.create_conversation().await;
    let (result, end) = sh(&http, &c, "yes").await;
    assert_eq!(result["is_error"], true, "{result}");
    assert_eq!(result["truncated"], true, "{result}");
    assert!(content(&result).contains("reached its cap of 2097152 bytes"), "{result}");
    assert!(!content(&result).contains("timed out"), "{result}");
    assert_eq!(end["outcome"], "ok", "the turn goes on after a cut tool: {end}");
    let file = PathBuf::from(result["output_file"].as_str().expect("an offload file"));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), CAP);
    let used: u64 = std::fs::read_dir(var.path().join("tool-output"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(used <= CAP, "the tool-output directory holds {used} bytes");
}

/// Pids of processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("listing /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| c == want) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_forked_process_dies_with_its_call() {
    let var = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let tools = scratch.path().join("tools");
    let server = start(var.path(), tools.as_path(), &["--tool-timeout-ms", "120000"]);
    let http = server.client();
    let c = http.create_conversation().await;
    // A duration no other process uses, so the scan finds only ours.
    let duration = format!("600.{}", std::process::id());
    let argv = ["sleep", duration.as_str()];
    let release = tools.as_path().join(&c).join("release");
    // The tool detaches a sleeper (new session, reparented), then waits until the test has
    // seen it running and says so by creating `release`.
    let command = format!(
        "(setsid sleep {duration} >/dev/null 2>&1 &) ; \
         while [ ! -e release ]; do sleep 0.05; done; echo ok"
    );
    let (result, _) = sh_watching(&http, &c, &command, |e| {
        if e.event == "tool_call" {
            wait_for("the detached sleeper to run", || {
                (!processes_running(&argv).is_empty()).then_some(())
            });
            std::fs::write(&release, "").unwrap();
        }
    })
    .await;
    assert_eq!(content(&result), "ok\n", "{result}");
    let left = {
        let end = std::time::Instant::now() + common::DEADLINE;
        loop {
            let left = processes_running(&argv);
            if left.is_empty() || std::time::Instant::now() > end {
                break left;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    for pid in &left {
        let _ = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
    assert!(left.is_empty(), "the detached sleeper outlived its call: pids {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_refused_when_the_sandbox_is_required_and_unavailable() {
    let var = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let tools = scratch.path().join("tools");
    let server =
        start(var.path(), tools.as_path(), &["--tool-sandbox=false", "--tools-require-sandbox"]);
    let http = server.client();
    let (_, health) = http.json("GET", "/health", None).await;
    let described = health["tool_sandbox"].as_str().unwrap_or_default();
    assert!(described.starts_with("unavailable: "), "{health}");
    assert!(
        health["telemetry"]["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("tool sandbox unavailable")))),
        "{health}"
    );
    let stderr = std::fs::read_to_string(var.path().join("server.stderr")).unwrap();
    assert!(stderr.contains("WARNING: tool sandbox unavailable"), "{stderr}");
    let c = http.create_conversation().await;
    let (result, end) = sh(&http, &c, "echo ran > ran").await;
    assert_eq!(result["is_error"], true, "{result}");
    assert!(content(&result).contains("DISPATCH_TOOLS_REQUIRE_SANDBOX"), "{result}");
    assert_eq!(end["outcome"], "error", "{end}");
    assert_eq!(end["code"], "tool_sandbox_required", "{end}");
    assert!(!tools.as_path().join(&c).join("ran").exists(), "the command did not run");
}
