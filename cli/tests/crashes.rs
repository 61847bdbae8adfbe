//! `dispatchctl crashes` on journals written with the real journal types and drained by the
//! real collector (`--journal DIR`): the crash-loop banner, no banner for exits far apart, an
//! empty history, the dump-versus-exit mismatch, unknown ends, groups, one boot in full.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;
#[path = "common/journal.rs"]
mod journal;

use std::path::Path;
use std::process::Output;

use journal::{Boot, End, T0_MS};

const MIN: i64 = 60_000;

fn dispatchctl(var: &Path, args: &[&str]) -> Output {
    let mut cmd = common::dispatchctl_command();
    cmd.env("NO_COLOR", "1")
        .args(["--var-dir", var.to_str().unwrap(), "--journal"])
        .arg(var.join("journal"))
        .args(args);
    cmd.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(var: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&dispatchctl(var, &["crashes", "--json"]))).unwrap()
}

/// The predecessor's loop: exits at 02:44 (after 1h 22m), 02:51 (after 7m) and 02:51:58
/// (after 58 s): three abnormal exits in 8 minutes with shrinking uptime; a fourth boot runs.
fn crash_loop(var: &Path) -> Vec<Boot> {
    let first = Boot::new(1, T0_MS - 38 * MIN, 82 * MIN, End::Status(1));
    let second = Boot::new(2, first.end_ms() + 1000, 7 * MIN - 1000, End::Status(1));
    let third = Boot::new(
        3,
        second.end_ms() + 1000,
        58_000,
        End::Crash { dump_signal: "SIGSEGV", exit_signal: "SIGILL", minidump: None },
    );
    let running = Boot::new(4, third.end_ms() + 1000, 5 * MIN, End::Nothing);
    let boots = vec![first, second, third, running];
    journal::write(&var.join("journal"), &boots);
    boots
}

#[test]
fn three_abnormal_exits_in_eight_minutes_with_shrinking_uptime_is_a_crash_loop() {
    let d = tempfile::tempdir().unwrap();
    let boots = crash_loop(d.path());
    let text = ok(&dispatchctl(d.path(), &["crashes"]));
    let first_line = text.lines().next().unwrap();
    assert!(
        first_line.starts_with("CRASH LOOP: 3 abnormal exits in 7m 59s"),
        "banner first:\n{text}"
    );
    assert!(first_line.contains("(1h 22m -> 6m 59s -> 58s)"), "{text}");
    assert!(first_line.contains("3 restarts"), "{text}");
    let short: Vec<String> = boots[..3].iter().map(|b| b.id()[..8].to_owned()).collect();
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .contains(&format!("boots {}, {}, {}", short[0], short[1], short[2])),
        "{text}"
    );
    assert!(text.contains("note: the newest boot"), "the running boot is not an end: {text}");

    let v = json(d.path());
    assert_eq!(v["kind"], "crashes");
    assert_eq!(v["crash_loop"], true);
    let l = &v["crash_loops"][0];
    let ids: Vec<String> = boots[..3].iter().map(Boot::id).collect();
    assert_eq!(l["boots"], serde_json::json!(ids));
    assert_eq!(l["exits"], 3);
    assert_eq!(l["restarts"], 3);
    assert_eq!(l["uptimes_ms"], serde_json::json!([82 * MIN, 7 * MIN - 1000, 58_000]));
    let exits = v["exits"].as_array().unwrap();
    assert_eq!(exits.len(), 3, "{v:#}");
    assert_eq!(exits[0]["boot"], ids[0]);
    assert_eq!(exits[0]["status"], 1);
    assert_eq!(exits[0]["signal"], serde_json::Value::Null);
    assert_eq!(exits[0]["uptime_ms"], 82 * MIN);
    assert_eq!(exits[0]["signature"], "exit status 1");
    assert_eq!(exits[2]["signal"], "SIGILL");
    assert_eq!(exits[2]["dump_signal"], "SIGSEGV");
    assert_eq!(exits[2]["signature"], "SIGSEGV | <unknown>");
    assert_eq!(exits[2]["signature_source"], "signal");
    assert_eq!(v["open_boot"], boots[3].id());
    assert_eq!(v["groups"][0]["signature"], "exit status 1");
    assert_eq!(v["groups"][0]["count"], 2);
}

#[test]
fn two_exits_thirty_minutes_apart_are_no_crash_loop() {
    let d = tempfile::tempdir().unwrap();
    let a = Boot::new(1, T0_MS, 40 * MIN, End::Status(1));
    let b = Boot::new(2, a.end_ms() + 1000, 30 * MIN, End::Status(1));
    let c = Boot::new(3, b.end_ms() + 1000, MIN, End::Nothing);
    journal::write(&d.path().join("journal"), &[a, b, c]);
    let text = ok(&dispatchctl(d.path(), &["crashes"]));
    assert!(!text.contains("CRASH LOOP"), "{text}");
    assert!(text.contains("3 boots: 2 abnormal ends, 0 clean"), "{text}");
    let v = json(d.path());
    assert_eq!(v["crash_loop"], false);
    assert_eq!(v["crash_loops"], serde_json::json!([]));
    assert_eq!(v["exits"].as_array().unwrap().len(), 2);
}

#[test]
fn a_clean_restart_between_crashes_breaks_the_loop() {
    let d = tempfile::tempdir().unwrap();
    let a = Boot::new(1, T0_MS, 3 * MIN, End::Status(1));
    let b = Boot::new(2, a.end_ms() + 1000, 2 * MIN, End::Clean);
    let c = Boot::new(3, b.end_ms() + 1000, MIN, End::Status(1));
    let e = Boot::new(4, c.end_ms() + 1000, 30_000, End::Status(1));
    journal::write(&d.path().join("journal"), &[a, b, c, e]);
    let v = json(d.path());
    assert_eq!(v["crash_loop"], false, "{v:#}");
    assert_eq!(v["clean_ends"], 1);
}

#[test]
fn an_empty_history_is_an_empty_list_not_an_error() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("journal")).unwrap();
    let v = json(d.path());
    assert_eq!(v["exits"], serde_json::json!([]));
    assert_eq!(v["groups"], serde_json::json!([]));
    assert_eq!(v["crash_loop"], false);
    let text = ok(&dispatchctl(d.path(), &["crashes"]));
    assert!(text.starts_with("no abnormal ends in 0 boots"), "{text}");
}

#[test]
fn the_signal_mismatch_is_shown_with_which_reading_to_trust() {
    let d = tempfile::tempdir().unwrap();
    let a = Boot::new(
        1,
        T0_MS,
        151 * MIN,
        End::Crash {
            dump_signal: "SIGSEGV",
            exit_signal: "SIGILL",
            minidump: Some("/var/lib/dispatch/crashes/gone.dmp".into()),
        },
    );
    let b = Boot::new(2, a.end_ms() + 3000, MIN, End::Nothing);
    journal::write(&d.path().join("journal"), &[a.clone(), b]);
    let text = ok(&dispatchctl(d.path(), &["crashes"]));
    let short = &a.id()[..8];
    assert!(
        text.contains(&format!("{short}  signal mismatch: the dump says SIGSEGV, the exit record SIGILL: trust the dump for what the code did")),
        "{text}"
    );
    assert!(text.contains("the exit for how the process ended"), "{text}");
    assert!(
        text.contains(&format!(
            "{short}  dump /var/lib/dispatch/crashes/gone.dmp is no longer on disk"
        )),
        "{text}"
    );
    let row = text.lines().find(|l| l.contains(short) && l.contains("SIGILL")).unwrap();
    assert!(
        row.contains("2h 31m") && row.contains("gone") && row.contains("SIGSEGV | <unknown>"),
        "{row}"
    );
    let v = json(d.path());
    let m = &v["exits"][0]["signal_mismatch"];
    assert_eq!((m["dump"].as_str(), m["exit"].as_str()), (Some("SIGSEGV"), Some("SIGILL")));
    assert_eq!(v["exits"][0]["dump"]["on_disk"], false);
}

#[test]
fn a_dump_moved_with_the_var_dir_is_found_by_name() {
    let d = tempfile::tempdir().unwrap();
    let crashes = d.path().join("crashes");
    std::fs::create_dir(&crashes).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/minidumps/dumps/invalid-range.dmp"
        ),
        crashes.join("boot-1.dmp"),
    )
    .unwrap();
    let a = Boot::new(
        1,
        T0_MS,
        MIN,
        End::Crash {
            dump_signal: "SIGSEGV",
            exit_signal: "SIGSEGV",
            minidump: Some("/srv/old/var/crashes/boot-1.dmp".into()),
        },
    );
    journal::write(
        &d.path().join("journal"),
        &[a.clone(), Boot::new(2, a.end_ms() + 10, MIN, End::Nothing)],
    );
    let v = json(d.path());
    let dump = &v["exits"][0]["dump"];
    assert_eq!(dump["on_disk"], true, "{v:#}");
    assert_eq!(dump["path"], crashes.join("boot-1.dmp").to_str().unwrap());
    assert_eq!(dump["bytes"], 276);
    assert_eq!(v["exits"][0]["signal_mismatch"], serde_json::Value::Null);
    assert!(
        v["notes"][0].as_str().unwrap().contains("1 dump on disk gave no stack signature"),
        "{v:#}"
    );
}

#[test]
fn unknown_ends_panics_and_oom_kills_are_abnormal_and_grouped() {
    let d = tempfile::tempdir().unwrap();
    let panic = End::Panic {
        message: "index out of bounds: the len is 3 but the index is 7",
        location: "server/src/turn.rs:88:17",
    };
    let a = Boot::new(1, T0_MS, 3 * 3_600_000, panic.clone());
    let b = Boot::new(2, a.end_ms() + 1000, 5 * 3_600_000, End::Nothing); // the machine died
    let c = Boot::new(3, b.end_ms() + 60_000, 2 * 3_600_000, panic);
    let e = Boot::new(4, c.end_ms() + 1000, 3_600_000, End::Oom);
    let f = Boot::new(5, e.end_ms() + 1000, 3_600_000, End::Clean);
    journal::write(&d.path().join("journal"), &[a.clone(), b.clone(), c, e, f]);
    let v = json(d.path());
    let exits = v["exits"].as_array().unwrap();
    let ends: Vec<&str> = exits.iter().map(|e| e["end"].as_str().unwrap()).collect();
    assert_eq!(ends, ["signal", "unknown", "signal", "oom"], "{v:#}");
    assert_eq!(exits[0]["signature"], "panic | server/src/turn.rs:88");
    assert_eq!(exits[0]["signature_source"], "panic");
    assert_eq!(
        exits[0]["panic"]["message"],
        "index out of bounds: the len is 3 but the index is 7"
    );
    assert_eq!(exits[1]["signature"], "unknown end");
    assert_eq!(exits[1]["uptime_is_lower_bound"], true);
    assert_eq!(exits[3]["oom_killed"], true);
    assert_eq!(exits[3]["signature"], "OOM | killed");
    assert_eq!(v["groups"][0]["signature"], "panic | server/src/turn.rs:88");
    assert_eq!(v["groups"][0]["count"], 2);
    assert_eq!(v["open_boot"], serde_json::Value::Null, "the newest boot stopped cleanly");
    let text = ok(&dispatchctl(d.path(), &["crashes"]));
    assert!(
        text.contains(&format!(
            "{}  fatal panic in thread main: index out of bounds",
            &a.id()[..8]
        )),
        "{text}"
    );
    assert!(text.contains("      2  2026-"), "group count: {text}");

    // One boot in full, by a prefix of its id.
    let info = ok(&dispatchctl(d.path(), &["crashes", "--boot", &b.id()[..6]]));
    assert!(info.contains(&format!("boot       {}", b.id())), "{info}");
    assert!(info.contains("unknown end: no exit record and no process.stop"), "{info}");
    assert!(info.contains("signature  unknown end (from the lack of any record)"), "{info}");
    let out = dispatchctl(d.path(), &["crashes", "--boot", "ffffffff-nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--boot ffffffff-nope: no such boot"));
}

#[test]
fn a_symbolicated_dump_is_signed_by_its_stack_and_the_signature_cached() {
    // The Rust fixture dump with inlined frames, its Breakpad symbols as the var dir's store
    // (a symlink to the shared fixture, not a copy).
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/minidumps");
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("crashes")).unwrap();
    std::os::unix::fs::symlink(format!("{fixtures}/symbols"), d.path().join("symbols")).unwrap();
    let dump = format!("{fixtures}/dumps/pipeline-inlines-macos-segv.dmp");
    let a = Boot::new(
        1,
        T0_MS,
        MIN,
        End::Crash { dump_signal: "SIGSEGV", exit_signal: "SIGSEGV", minidump: Some(dump) },
    );
    let b = Boot::new(
        2,
        a.end_ms() + 10,
        MIN,
        End::Crash {
            dump_signal: "SIGSEGV",
            exit_signal: "SIGSEGV",
            minidump: Some(format!("{fixtures}/dumps/linux-mini.dmp")),
        },
    );
    journal::write(
        &d.path().join("journal"),
        &[a, b.clone(), Boot::new(3, b.end_ms() + 10, MIN, End::Nothing)],
    );
    for run in 0..2 {
        let v = json(d.path());
        let e = &v["exits"][0];
        assert_eq!(e["signature"], "sadness_generator::raise_segfault", "run {run}: {v:#}");
        assert_eq!(e["signature_source"], "stack");
        // No symbols for the Linux dump: its signature is the signal's, and it is said.
        assert_eq!(v["exits"][1]["signature"], "SIGSEGV | <unknown>");
        assert_eq!(v["exits"][1]["signature_source"], "signal");
        assert!(
            v["notes"][0].as_str().unwrap().starts_with("1 dump on disk gave no stack signature")
        );
    }
    let cache = std::fs::read_to_string(d.path().join("crashes/signatures.json")).unwrap();
    assert!(cache.contains("sadness_generator::raise_segfault"), "{cache}");
    assert!(!cache.contains("linux-mini"), "a dump with no stack signature is not cached: {cache}");
}
