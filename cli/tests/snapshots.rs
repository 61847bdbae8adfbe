//! Snapshots of the real binary's output: `--help`, and `mem` in text and JSON on synthetic
//! journals (deterministic: fixed seeds and timestamps). Review changes with
//! `cargo insta review`; CI fails on any difference.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

fn run(args: &[&str]) -> String {
    let mut cmd = common::dispatchctl_command();
    cmd.env("NO_COLOR", "1").env("COLUMNS", "100");
    common::stdout_of(cmd, args)
}

fn journal(scenario: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("journal");
    run(&["journal", "synth", "--scenario", scenario, "--out", j.to_str().unwrap()]);
    d
}

#[test]
fn help() {
    insta::assert_snapshot!("help", run(&["--help"]));
    insta::assert_snapshot!("mem_help", run(&["mem", "--help"]));
}

#[test]
fn mem_text_leak() {
    let d = journal("leak");
    let j = d.path().join("journal");
    insta::assert_snapshot!(
        "mem_text_leak",
        run(&["--journal", j.to_str().unwrap(), "mem", "--since", "24h"])
    );
}

#[test]
fn mem_text_bursty() {
    let d = journal("bursty");
    let j = d.path().join("journal");
    insta::assert_snapshot!("mem_text_bursty", run(&["--journal", j.to_str().unwrap(), "mem"]));
}

#[test]
fn mem_json_bursty() {
    let d = journal("bursty");
    let j = d.path().join("journal");
    insta::assert_snapshot!(
        "mem_json_bursty",
        run(&["--journal", j.to_str().unwrap(), "mem", "--json"])
    );
}
