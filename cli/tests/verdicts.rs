//! Every verdict reached on its synthetic scenario, through the real binary: `dispatchctl
//! journal synth` writes a journal, `dispatchctl --journal DIR mem --json` drains it into a
//! cached database and answers.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::synth;

use std::path::Path;
use std::process::Output;

fn dispatchctl(args: &[&str]) -> Output {
    common::dispatchctl_command().env_remove("NO_COLOR").args(args).output().unwrap()
}

fn mem_json(dir: &Path, since: &str) -> serde_json::Value {
    let out = dispatchctl(&["--journal", dir.to_str().unwrap(), "mem", "--since", since, "--json"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn verdict_of(scenario: &str, seed: u64) -> serde_json::Value {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("journal");
    synth(&j, scenario, seed);
    mem_json(&j, "all")
}

#[test]
fn each_scenario_reaches_its_verdict() {
    for (scenario, expected) in [
        ("leak", "LEAK"),
        ("bursty", "WORKING-SET"),
        ("working-set", "WORKING-SET"),
        ("state-growth", "STATE-GROWTH"),
        ("allocator-retention", "ALLOCATOR-RETENTION"),
        ("non-heap", "NON-HEAP"),
        ("flat", "FLAT"),
        ("insufficient", "INSUFFICIENT-DATA"),
    ] {
        let v = verdict_of(scenario, 1);
        assert_eq!(v["verdict"], expected, "{scenario}: {}", v["summary"]);
        assert_eq!(v["v"], 1);
        assert_eq!(v["kind"], "mem");
    }
}

#[test]
fn the_incidents_bursty_working_set_is_never_a_leak() {
    for seed in 1..=5 {
        let v = verdict_of("bursty", seed);
        assert_eq!(v["verdict"], "WORKING-SET", "seed {seed}: {}", v["summary"]);
        // The trap is real: a first-vs-last RSS slope reads as gigabytes an hour.
        let naive = v["naive_rss_bytes_per_hour"].as_f64().unwrap();
        assert!(naive > 1.0e9, "seed {seed}: naive slope {naive}");
    }
}

#[test]
fn an_8_mib_per_hour_leak_under_diurnal_load_is_found_and_attributed() {
    for seed in 1..=3 {
        let v = verdict_of("leak", seed);
        assert_eq!(v["verdict"], "LEAK", "seed {seed}: {}", v["summary"]);
        let rate = v["growth"]["bytes_per_hour"].as_f64().unwrap() / (1024.0 * 1024.0);
        assert!((6.0..10.0).contains(&rate), "seed {seed}: {rate} MiB/h");
        let first = &v["conversations"][0];
        assert_eq!(
            first["id"], "conv-leaky-7",
            "seed {seed}: the retaining conversation ranks first"
        );
        assert_eq!(first["rank"], 1);
        assert_eq!(first["kind"], "allocation-churn");
        assert_eq!(first["active_while_floor_rose"], true);
        assert!(v["growth"]["mann_kendall_z"].as_f64().unwrap() > 2.58);
    }
}

#[test]
fn windows_are_anchored_at_the_newest_sample_not_the_clock() {
    // The synthetic journal is from June 2026; "the last 6 h" means its last 6 h.
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("journal");
    synth(&j, "leak", 1);
    let v = mem_json(&j, "6h");
    let span = v["to_ms"].as_i64().unwrap() - v["from_ms"].as_i64().unwrap();
    assert!((6 * 3_600_000 - 2000..=6 * 3_600_000).contains(&span), "span {span}");
    assert!(v["samples"].as_u64().unwrap() > 21_000);
}

#[test]
fn bad_input_is_reported_and_the_good_input_kept() {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("journal");
    synth(&j, "flat", 1);
    // Corrupt one line in the middle: it is skipped (exit 1, named on stderr), the rest counts.
    let seg = j.join("dispatch.000000.ndjson");
    let mut text = std::fs::read_to_string(&seg).unwrap();
    let at = text.len() / 2;
    let at = at + text[at..].find('\n').unwrap() + 1;
    text.insert_str(at, "{\"v\":1,\"ts\":\"not a time\"}\n");
    std::fs::write(&seg, text).unwrap();
    let out = dispatchctl(&["--journal", j.to_str().unwrap(), "mem", "--since", "all", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dispatch.000000.ndjson:") && err.contains("journal_"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "FLAT");
}

#[test]
fn errors_name_what_was_wrong_and_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nope.db");
    let out = dispatchctl(&["--db", missing.to_str().unwrap(), "mem"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no traces database at"));

    let out = dispatchctl(&["mem", "--since", "6y"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown unit"));

    let j = d.path().join("journal");
    synth(&j, "flat", 1);
    let out = dispatchctl(&["--journal", j.to_str().unwrap(), "mem", "--boot", "ffff"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--boot ffff: no such boot"));
}

#[test]
fn colour_only_when_asked_or_on_a_terminal() {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("journal");
    synth(&j, "flat", 1);
    let plain = dispatchctl(&["--journal", j.to_str().unwrap(), "mem", "--since", "all"]);
    assert!(!plain.stdout.contains(&0x1b), "piped output has no escapes");
    let always = dispatchctl(&[
        "--journal",
        j.to_str().unwrap(),
        "--color",
        "always",
        "mem",
        "--since",
        "all",
    ]);
    assert!(always.stdout.contains(&0x1b));
}

#[test]
fn html_and_svg_reports_are_written() {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("journal");
    synth(&j, "leak", 1);
    let html = d.path().join("r.html");
    let svg = d.path().join("r.svg");
    let out = dispatchctl(&[
        "--journal",
        j.to_str().unwrap(),
        "mem",
        "--since",
        "24h",
        "--html",
        html.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    let html = std::fs::read_to_string(html).unwrap();
    assert!(html.contains("LEAK") && html.contains("<svg"));
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("journal");
    synth(&j, "flat", 1);
    let mut child = common::dispatchctl_command()
        .args(["--journal", j.to_str().unwrap(), "mem", "--since", "all", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // like `| head -0`
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn boot_selection_latest_all_and_by_prefix() {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("journal");
    let other = d.path().join("other");
    synth(&j, "flat", 1);
    synth(&other, "leak", 2);
    // Two boots in one directory: the second journal's segment beside the first.
    std::fs::copy(other.join("dispatch.000000.ndjson"), j.join("dispatch.000001.ndjson")).unwrap();
    let dir = j.to_str().unwrap();
    let all: serde_json::Value = {
        let out =
            dispatchctl(&["--journal", dir, "mem", "--boot", "all", "--since", "all", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let boots = all["boots"].as_array().unwrap();
    assert_eq!(boots.len(), 2);
    let verdicts: Vec<&str> = boots.iter().map(|b| b["verdict"].as_str().unwrap()).collect();
    assert!(verdicts.contains(&"FLAT") && verdicts.contains(&"LEAK"), "{verdicts:?}");
    // By prefix: the synthetic boot ids end in the seed.
    let leak_boot =
        boots.iter().find(|b| b["verdict"] == "LEAK").unwrap()["boot"]["id"].as_str().unwrap();
    let out =
        dispatchctl(&["--journal", dir, "mem", "--boot", leak_boot, "--since", "all", "--json"]);
    let one: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(one["verdict"], "LEAK");
    // An ambiguous prefix is an error that says so.
    let out = dispatchctl(&["--journal", dir, "mem", "--boot", "0000", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 boots start with it"));
}

#[test]
fn twenty_minutes_of_rising_load_cannot_rule_out_a_leak() {
    // The working set ramps with load; 20 minutes is too short to say "nothing leaks".
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("journal");
    let out = dispatchctl(&[
        "journal",
        "synth",
        "--scenario",
        "working-set",
        "--hours",
        "0.3334",
        "--out",
        j.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = mem_json(&j, "all");
    assert_eq!(v["verdict"], "INSUFFICIENT-DATA", "{}", v["summary"]);
    let limit = v["detection_limit_bytes_per_hour"].as_f64().unwrap() / (1024.0 * 1024.0);
    // 32 MiB over a third of an hour is the least growth it would call a leak: 96 MiB/h.
    assert!(limit >= 90.0, "{limit} MiB/h");
    let summary = v["summary"].as_str().unwrap();
    assert!(summary.contains("20 min cannot rule out a leak below"), "{summary}");
    assert!(summary.contains("memory follows turns in flight"), "{summary}");
    assert!(v["notes"].to_string().contains("would be WORKING-SET"), "{}", v["notes"]);
}

#[test]
fn every_no_leak_verdict_says_what_it_could_have_missed() {
    for scenario in ["bursty", "working-set", "flat"] {
        let v = verdict_of(scenario, 2);
        let verdict = v["verdict"].as_str().unwrap();
        assert!(verdict == "WORKING-SET" || verdict == "FLAT", "{scenario}: {verdict}");
        let limit = v["detection_limit_bytes_per_hour"].as_f64().unwrap();
        let useful = v["useful_limit_bytes_per_hour"].as_f64().unwrap();
        assert!(limit > 0.0 && limit <= useful, "{scenario}: limit {limit}, useful {useful}");
        let summary = v["summary"].as_str().unwrap();
        assert!(summary.contains("no leak faster than ~"), "{scenario}: {summary}");
        assert!(v["detection_window_needed_ms"].as_i64().unwrap() > 0, "{scenario}");
    }
}

#[test]
fn mem_check_exits_3_on_a_leak_and_0_otherwise() {
    for (scenario, code) in [("leak", 3), ("bursty", 0)] {
        let d = tempfile::tempdir().unwrap();
        let j = d.path().join("journal");
        synth(&j, scenario, 1);
        let out =
            dispatchctl(&["--journal", j.to_str().unwrap(), "mem", "--since", "all", "--check"]);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{scenario}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("verdict:"),
            "{scenario}: the report is still printed"
        );
    }
}

/// `dispatchctl --journal DIR mem --json` with the default window (the whole boot).
fn mem_default(dir: &Path) -> serde_json::Value {
    let out = dispatchctl(&["--journal", dir.to_str().unwrap(), "mem", "--json"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_default_window_finds_a_slow_leak_and_clears_its_twin() {
    for seed in 1..=5 {
        let d = tempfile::tempdir().unwrap();
        let (leaky, twin) = (d.path().join("leaky"), d.path().join("twin"));
        synth(&leaky, "leak", seed);
        let out = dispatchctl(&[
            "journal",
            "synth",
            "--scenario",
            "leak",
            "--leak-mib-per-hour",
            "0",
            "--seed",
            &seed.to_string(),
            "--out",
            twin.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v = mem_default(&leaky);
        assert_eq!(v["verdict"], "LEAK", "seed {seed}: {}", v["summary"]);
        // The whole 24 h boot, with the last 6 hours beside it.
        assert!(v["to_ms"].as_i64().unwrap() - v["from_ms"].as_i64().unwrap() > 23 * 3_600_000);
        assert_eq!(v["recent"]["window_ms"], 6 * 3_600_000, "seed {seed}");
        assert!(v["recent"]["verdict"].is_string(), "seed {seed}");
        let w = mem_default(&twin);
        let verdict = w["verdict"].as_str().unwrap();
        assert!(verdict == "WORKING-SET" || verdict == "FLAT", "seed {seed}: {}", w["summary"]);
        let limit = w["detection_limit_bytes_per_hour"].as_f64().unwrap() / (1024.0 * 1024.0);
        assert!(limit <= 8.0, "seed {seed}: an 8 MiB/h leak would hide below {limit} MiB/h");
    }
}
