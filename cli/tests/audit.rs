//! `dispatchctl journal audit` on real journal files: a synthetic journal written by the same
//! encoder as the server's, then damaged the ways kills and bugs damage journals.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::Output;

fn dispatchctl(args: &[&str]) -> Output {
    common::dispatchctl_command().args(args).output().unwrap()
}

/// A two-and-a-half hour journal (`bursty`), its one segment's path, and its lines.
fn journal(dir: &Path) -> (std::path::PathBuf, Vec<Vec<u8>>) {
    let out =
        dispatchctl(&["journal", "synth", "--scenario", "bursty", "--out", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seg = std::fs::read_dir(dir).unwrap().next().unwrap().unwrap().path();
    let bytes = std::fs::read(&seg).unwrap();
    let lines =
        bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
    (seg, lines)
}

fn write(path: &Path, lines: &[Vec<u8>], trailing_newline: bool) {
    let mut data = lines.join(&b'\n');
    if trailing_newline {
        data.push(b'\n');
    }
    std::fs::write(path, data).unwrap();
}

fn audit_json(dir: &Path) -> (Option<i32>, serde_json::Value) {
    let out = dispatchctl(&["--json", "journal", "audit", dir.to_str().unwrap()]);
    (out.status.code(), serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn a_clean_journal_audits_clean() {
    let d = tempfile::tempdir().unwrap();
    let (_, lines) = journal(d.path());
    let (code, v) = audit_json(d.path());
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["kind"], "journal.audit");
    assert_eq!(v["ok"], true);
    assert_eq!(v["lines"], lines.len());
    let boot = &v["boots"][0];
    assert_eq!(boot["first_seq"], 0);
    assert_eq!(boot["last_seq"], lines.len() - 1);
    assert_eq!(boot["missing"], 0);
    assert!(boot["samples"].as_u64().unwrap() > 9000, "{boot}");
}

#[test]
fn gaps_repeats_torn_and_corrupt_lines_are_each_named() {
    let d = tempfile::tempdir().unwrap();
    let (seg, mut lines) = journal(d.path());
    let n = lines.len();
    lines.drain(100..105); // seq 100..104 lost
    let again = lines[199].clone();
    lines.insert(200, again); // one line written twice
    lines[300] = br#"{"v":1,"kind":garbage"#.to_vec(); // corrupt (its seq is lost too)
    let last = lines.len() - 1;
    let half = lines[last].len() / 2;
    lines[last].truncate(half); // torn by a kill
    write(&seg, &lines, false);

    let (code, v) = audit_json(d.path());
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["torn"], 1);
    assert_eq!(v["corrupt"], 1);
    let boot = &v["boots"][0];
    assert_eq!(boot["duplicates"], 1, "{boot}");
    assert_eq!(boot["gaps"][0], serde_json::json!([100, 104]), "{boot}");
    assert_eq!(boot["missing"], 6, "five deleted and the corrupt line's: {boot}");
    assert_eq!(boot["last_seq"], n - 2, "the torn last line's seq is unknown");
    let bad = v["bad_lines"].as_array().unwrap();
    assert_eq!(bad[0]["line"], 301);
    assert_eq!(bad[0]["code"], "journal_line_invalid");
    assert_eq!(bad[1]["code"], "journal_line_torn");
    assert!(bad[1]["file"].as_str().unwrap().ends_with(".ndjson"));

    // The text says the same for people, with the file and line.
    let out = dispatchctl(&["journal", "audit", d.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("gaps: 6 lines missing (seq 100..104, "), "{text}");
    assert!(text.contains("duplicates: 1 line repeat"), "{text}");
    assert!(text.contains(".ndjson:301: journal_line_invalid"), "{text}");
    assert!(text.contains("journal_line_torn"), "{text}");
}

#[test]
fn a_boot_without_memory_samples_is_telemetry_lost() {
    let d = tempfile::tempdir().unwrap();
    let (seg, lines) = journal(d.path());
    // The server as a branch that lost the sampler would write it: everything but samples,
    // seq renumbered so no gap hides the finding.
    let kept: Vec<Vec<u8>> = lines
        .iter()
        .filter(|l| !String::from_utf8_lossy(l).contains(r#""kind":"memory.sample""#))
        .enumerate()
        .map(|(i, l)| {
            let mut v: serde_json::Value = serde_json::from_slice(l).unwrap();
            v["seq"] = serde_json::json!(i);
            serde_json::to_vec(&v).unwrap()
        })
        .collect();
    write(&seg, &kept, true);
    let (code, v) = audit_json(d.path());
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["boots"][0]["no_samples"], true, "{v}");
    assert_eq!(v["boots"][0]["missing"], 0, "{v}");
    let out = dispatchctl(&["journal", "audit", d.path().to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("NO MEMORY SAMPLES"));
}

#[test]
fn a_missing_directory_is_an_error_naming_it() {
    let out = dispatchctl(&["journal", "audit", "/nonexistent/journal"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/journal"), "{err}");
}
