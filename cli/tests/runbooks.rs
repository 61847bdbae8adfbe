//! The runbooks cannot drift from the CLI: every `dispatchctl` and `dispatch-collector` line in
//! the shell blocks of `runbooks/*.md` runs, as on-call would type it, against a real install:
//! a debug server whose first boot segfaulted (a real minidump, `crash` and `exit` records) and
//! whose second boot is serving, with its symbol store and admin API on.
//!
//! A line passes when it exits 0, or, for the few lines listed in [`EXPECTED_FAILURES`] (they
//! name what this install does not have), exits non-zero with a message; never a usage error,
//! a panic, a hang or a signal. What each command prints is tested by its own tests.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{ADMIN_TOKEN, journal, of_kind, server_binary, wait_for};

/// Lines that cannot succeed on the test install, each with why; any other non-zero exit fails.
const EXPECTED_FAILURES: &[(&str, &str)] = &[
    ("dispatchctl doctor", "the test install has no memory limit (a failure doctor names)"),
    ("dispatchctl crashes send", "no Sentry listens at the test's DSN"),
    ("heap.BOOT.0.prof", "no pressure stop wrote a profile in this install"),
    ("BOOT-1700000000000.dmp", "a placeholder for the live dump a stall writes"),
    ("dispatch-collector", "the running server's embedded collector holds the database"),
];

/// A command line found in a runbook.
struct Line {
    file: String,
    number: usize,
    text: String,
}

/// Every `dispatchctl` / `dispatch-collector` command in the ```sh blocks of `runbooks/*.md`,
/// without a `sudo -u dispatch` prefix, a pipe into another program, or a trailing comment.
fn runbook_commands(dir: &Path) -> Vec<Line> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut in_sh = false;
        for (i, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            if let Some(lang) = trimmed.strip_prefix("```") {
                in_sh = !in_sh && (lang == "sh" || lang == "bash" || lang == "console");
                continue;
            }
            if !in_sh {
                continue;
            }
            let mut line = trimmed.strip_prefix("sudo -u dispatch ").unwrap_or(trimmed);
            if !(line.starts_with("dispatchctl") || line.starts_with("dispatch-collector")) {
                continue;
            }
            if let Some((cmd, _)) = line.split_once(" | ") {
                line = cmd;
            }
            if let Some((cmd, _)) = line.split_once(" # ") {
                line = cmd;
            }
            out.push(Line {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                number: i + 1,
                text: line.trim().to_owned(),
            });
        }
    }
    out
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn every_command_in_the_runbooks_runs_against_a_real_install() {
    let root = tempfile::tempdir().unwrap();
    let var = root.path().join("var");
    let scratch = root.path().join("tmp");
    std::fs::create_dir_all(&var).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    let store = var.join("symbols");
    let store_arg = store.display().to_string();
    let args = ["--admin-token", ADMIN_TOKEN, "--symbol-store", &store_arg];

    // Boot 1: a turn in flight, then a segfault: dump, crash and exit records. Boot 2:
    // serving, with a finished turn and its symbols stored.
    let (second, crashed_boot) = common::server::crashed_and_restarted(&var, &args);
    wait_for("the symbols.stored record", || {
        (!of_kind(&journal(&var), "symbols.stored").is_empty()).then_some(())
    });

    let bins = server_binary().parent().unwrap().to_path_buf();
    assert!(bins.join("dispatch-collector").is_file(), "the nested build made dispatch-collector");
    let path = format!("{}:{}", bins.display(), std::env::var("PATH").unwrap_or_default());
    let addr = second.base.trim_start_matches("http://").to_owned();
    let lines = runbook_commands(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../runbooks"));
    assert!(lines.len() >= 20, "only {} command lines found in runbooks/", lines.len());
    for file in
        ["memory.md", "pressure.md", "oom.md", "crash.md", "stall.md", "telemetry.md", "README.md"]
    {
        assert!(lines.iter().any(|l| l.file == file), "no command found in runbooks/{file}");
    }

    let mut failures = Vec::new();
    for line in &lines {
        let command = line
            .text
            .replace("/tmp/", &format!("{}/", scratch.display()))
            .replace("/var/lib/dispatch", &var.display().to_string())
            .replace("6f1c", &crashed_boot[..8])
            .replace("BOOT", &crashed_boot);
        let mut cmd = Command::new("sh");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("DISPATCH_") || k == "SENTRY_DSN" {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .arg("-c")
            .arg(&command)
            .current_dir(root.path())
            .env("PATH", &path)
            .env("NO_COLOR", "1")
            .env("DISPATCH_VAR_DIR", &var)
            .env("DISPATCH_ADDR", &addr)
            .env("DISPATCH_ADMIN_TOKEN", ADMIN_TOKEN)
            // A Sentry that is not there: the upload fails, but the line must parse.
            .env("SENTRY_DSN", format!("http://0123456789abcdef@127.0.0.1:{}/1", closed_port()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let at = format!("runbooks/{}:{}: `{}`", line.file, line.number, line.text);
        let writes_a_file = ["> ", " -o ", "--out ", "--html "].iter().any(|w| command.contains(w));
        let problem = if let Some(sig) = out.status.signal() {
            Some(format!("killed by signal {sig} (a hang past 120 s is killed)"))
        } else if stderr.contains("panicked at") {
            Some("panicked".to_owned())
        } else if out.status.code() == Some(2) && stderr.contains("Usage:") {
            Some("the CLI rejected the line (usage error)".to_owned())
        } else if stderr.starts_with("sh:") {
            Some("the shell could not run it".to_owned())
        } else if !out.status.success() && stderr.trim().is_empty() && stdout.trim().is_empty() {
            Some(format!("exit {:?} without a message", out.status.code()))
        } else if !out.status.success()
            && !EXPECTED_FAILURES.iter().any(|(m, _)| {
                if *m == "dispatch-collector" { line.text == *m } else { line.text.contains(m) }
            })
        {
            Some(format!("exit {:?}, and it is not an expected failure", out.status.code()))
        } else if out.status.success() && stdout.trim().is_empty() && !writes_a_file {
            Some("printed nothing".to_owned())
        } else {
            None
        };
        let said = stderr.lines().chain(stdout.lines()).find(|l| !l.trim().is_empty());
        eprintln!("{at}: exit {:?}: {}", out.status.code(), said.unwrap_or(""));
        if let Some(p) = problem {
            failures.push(format!(
                "{at}: {p}\n  stdout: {}\n  stderr: {}",
                stdout.trim(),
                stderr.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{} runbook lines fail:\n{}", failures.len(), failures.join("\n"));
    drop(second);
}
