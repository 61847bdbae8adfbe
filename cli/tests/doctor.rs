//! `dispatchctl doctor` against the real server: a healthy install (memory limits from a real
//! cgroup, no core dumps, the server's own symbols in the store) passes every check and exits
//! 0; an install with a 0644 dump and a stopped sampler fails, naming both with their fixes.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::server::{Server, journal, of_kind, server_binary, wait_for};
use serde_json::Value;

/// A memory cgroup with a 1 GiB limit (v1 `memory.limit_in_bytes` or v2 `memory.max`),
/// removed when dropped. The test runs as root (as CI does); without a writable cgroup
/// filesystem it cannot build a healthy install and fails saying so.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new() -> Cgroup {
        let name = format!("dispatch-doctor-test-{}", std::process::id());
        for (root, limit) in
            [("/sys/fs/cgroup/memory", "memory.limit_in_bytes"), ("/sys/fs/cgroup", "memory.max")]
        {
            let dir = Path::new(root).join(&name);
            if std::fs::create_dir(&dir).is_ok() {
                if std::fs::write(dir.join(limit), "1073741824").is_ok() {
                    return Cgroup(dir);
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
        panic!("no writable memory cgroup (v1 or v2) to give the test server a memory limit");
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A start script: joins `cgroup`, sets no core dumps and `env`, then execs the server (the
/// way a unit's `MemoryMax=`, `LimitCORE=0` and `Environment=` would).
fn launcher(dir: &Path, cgroup: Option<&Cgroup>, env: &[(&str, String)]) -> PathBuf {
    let mut script = String::from("#!/bin/sh\nset -e\nulimit -c 0\n");
    if let Some(c) = cgroup {
        script.push_str(&format!("echo $$ > {}/cgroup.procs\n", c.0.display()));
    }
    for (k, v) in env {
        script.push_str(&format!("export {k}='{v}'\n"));
    }
    script.push_str(&format!("exec {} \"$@\"\n", server_binary().display()));
    let path = dir.join("start-server");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    path
}

fn doctor(var: &Path, server: &Server) -> (i32, Value, String) {
    let addr = server.base.trim_start_matches("http://");
    let json = common::dispatchctl_command()
        .args(["--var-dir", var.to_str().unwrap(), "--json", "doctor", "--addr", addr])
        .output()
        .unwrap();
    let text = common::dispatchctl_command()
        .args(["--var-dir", var.to_str().unwrap(), "doctor", "--addr", addr])
        .output()
        .unwrap();
    (
        json.status.code().unwrap(),
        serde_json::from_slice(&json.stdout).unwrap(),
        String::from_utf8_lossy(&text.stdout).into_owned(),
    )
}

fn level<'a>(doc: &'a Value, name: &str) -> &'a Value {
    &doc["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap()["level"]
}

#[test]
fn a_healthy_install_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let var = dir.path().join("var");
    std::fs::create_dir(&var).unwrap();
    let cgroup = Cgroup::new();
    let store = var.join("symbols");
    let start = launcher(
        dir.path(),
        Some(&cgroup),
        &[("DISPATCH_SYMBOL_STORE", store.display().to_string())],
    );
    let server = Server::start_binary(&start, &var, &[]);
    wait_for("the server's copy of itself in the store", || {
        of_kind(&journal(&var), "symbols.stored").first().map(|_| ())
    });
    wait_for("the collector to catch up and samples to flow", || {
        std::fs::metadata(var.join("traces.db")).ok().map(|_| ())
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (code, doc, text) = doctor(&var, &server);
    assert_eq!(code, 0, "{text}");
    assert_eq!(doc["worst"], "pass", "{text}");
    for c in doc["checks"].as_array().unwrap() {
        assert_eq!(c["level"], "pass", "{c}");
        assert!(c.get("fix").is_none(), "a pass has no fix: {c}");
    }
    assert!(
        text.contains("memory.limit_in_bytes 1.0 GiB") || text.contains("memory.max 1.0 GiB"),
        "{text}"
    );
    assert!(text.contains("checks:") && text.contains("0 warnings, 0 failures"), "{text}");
}

#[test]
fn a_0644_dump_and_a_stopped_sampler_are_named_with_their_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let var = dir.path().join("var");
    std::fs::create_dir(&var).unwrap();
    let start = launcher(dir.path(), None, &[("DISPATCH_BENCH_SAMPLER_OFF", "true".into())]);
    let server = Server::start_binary(&start, &var, &[]);
    // A dump someone copied with the default umask.
    let crashes = var.join("crashes");
    std::fs::create_dir_all(&crashes).unwrap();
    let dump = crashes.join("copied.dmp");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/minidumps/dumps/linux-mini.dmp"
        ),
        &dump,
    )
    .unwrap();
    std::fs::set_permissions(&dump, std::fs::Permissions::from_mode(0o644)).unwrap();

    let (code, doc, text) = doctor(&var, &server);
    assert_eq!(code, 2, "{text}");
    assert_eq!(doc["worst"], "fail");
    assert_eq!(*level(&doc, "sampler"), "fail", "{text}");
    assert_eq!(*level(&doc, "file_modes"), "fail", "{text}");
    assert_eq!(*level(&doc, "journal_fresh"), "fail", "no samples reach the journal: {text}");
    let modes =
        doc["checks"].as_array().unwrap().iter().find(|c| c["name"] == "file_modes").unwrap();
    let detail = modes["detail"].as_str().unwrap();
    assert!(detail.contains("copied.dmp is 0644") && detail.contains("chmod 600"), "{detail}");
    let sampler =
        doc["checks"].as_array().unwrap().iter().find(|c| c["name"] == "sampler").unwrap();
    assert!(sampler["fix"].as_str().unwrap().contains("restart"), "{sampler}");
    // The text names both, each with its fix line.
    assert!(text.contains("FAIL  sampler") && text.contains("FAIL  file_modes"), "{text}");
    assert!(text.matches("fix: ").count() >= 3, "{text}");
}
