//! The one way the cli's tests run the real `dispatchctl`: with every `DISPATCH_*` variable
//! of the test's own environment removed, so a developer's settings cannot change a result.

#![allow(dead_code)] // each test binary uses what it needs
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::{Command, Output};

pub mod chromium;
pub mod server;

/// `dispatchctl` with the test's `DISPATCH_*` variables removed; the caller adds the rest.
pub fn dispatchctl_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dispatchctl"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("DISPATCH_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs `cmd`, asserts it succeeded with nothing on stderr, and returns its stdout.
pub fn stdout_of(mut cmd: Command, args: &[&str]) -> String {
    let out: Output = cmd.args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A synthetic journal of `scenario` (`dispatchctl journal synth`) in `dir`.
pub fn synth(dir: &std::path::Path, scenario: &str, seed: u64) {
    stdout_of(
        dispatchctl_command(),
        &[
            "journal",
            "synth",
            "--scenario",
            scenario,
            "--seed",
            &seed.to_string(),
            "--out",
            dir.to_str().unwrap(),
        ],
    );
}
