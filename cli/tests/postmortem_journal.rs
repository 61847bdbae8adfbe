//! The incident the post-mortem exists for, replayed as a journal: a crash record that says
//! SIGSEGV, an exit status that says SIGILL, an in-process last sample with `RSS: 0.02ZB` and a
//! peak far below the cgroup's, no dump, after three quick exits before it (a crash loop). The
//! journal is written as NDJSON per docs/JOURNAL.md into `<var dir>/journal`, and
//! `dispatchctl postmortem latest` drains it with the real collector before reading.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::Write as _;
use std::path::Path;

use serde_json::{Value, json};

const T0: i64 = 1_782_605_522_000; // 2026-06-28T00:12:02Z

fn ts(ms: i64) -> String {
    let mut out = Vec::new();
    dispatch_journal::time::Timestamp::from_unix_millis(ms).write_rfc3339(&mut out);
    String::from_utf8(out).unwrap()
}

/// One boot's segment file, one record per line, `seq` from 0.
struct Segment {
    file: std::fs::File,
    boot: String,
    seq: i64,
}

impl Segment {
    fn new(dir: &Path, number: u32, boot: &str, at: i64) -> Segment {
        let path = dir.join(format!("dispatch.{number:06}.ndjson"));
        let file = std::fs::File::create(path).unwrap();
        let mut s = Segment { file, boot: boot.into(), seq: 0 };
        s.put(at, "journal.segment", json!({"segment": number, "pid": 4000 + number}));
        s
    }

    fn put(&mut self, at: i64, kind: &str, fields: Value) {
        let mut line = json!({"v": 1, "ts": ts(at), "kind": kind, "boot": self.boot, "seq": self.seq, "service": "dispatch"});
        for (k, v) in fields.as_object().unwrap() {
            line[k] = v.clone();
        }
        self.seq += 1;
        writeln!(self.file, "{line}").unwrap();
    }
}

fn boot_id(n: u8) -> String {
    format!("{n:08x}-27f3-46c1-ab6e-8a4047eadb8b")
}

#[test]
fn the_incident_replayed_flags_every_contradiction_and_says_there_is_no_dump() {
    let var = tempfile::tempdir().unwrap();
    let journal = var.path().join("journal");
    std::fs::create_dir(&journal).unwrap();
    let gib = 1i64 << 30;
    let minute = 60_000;

    // Three boots that died quickly, one after the other (exit status 1).
    for (i, uptime) in [(1u8, 82 * minute), (2, 7 * minute), (3, 58_000)] {
        let at = T0 - (10 - i64::from(i)) * minute;
        let mut s = Segment::new(&journal, u32::from(i), &boot_id(i), at - uptime);
        s.put(at - uptime, "process.start", json!({"pid": 100 + i, "version": "0.1.0"}));
        s.put(at, "exit", json!({"status": 1, "uptime_ms": uptime, "pid": 100 + i}));
    }

    // The boot that crashed.
    let boot = boot_id(9);
    let start = T0 - 30_000;
    let mut s = Segment::new(&journal, 9, &boot, start);
    s.put(start, "process.start", json!({
        "pid": 931590, "ppid": 931589, "version": "0.1.0", "build_id": "9c19197ed07568ffefa453eecbd285731badaf0f",
        "git_sha": "f9d1ca5", "allocator": "jemalloc 5.3.0", "host": "dispatch-1", "kernel": "6.6.87",
        "limits": {"memory_max": 16 * gib}, "config": {"provider": "sim", "max_turns_in_flight": 4},
    }));
    for k in 0..25 {
        let at = start + 1000 * k;
        s.put(at, "memory.sample", json!({
            "rss": 290 << 20, "hwm": 311_427_072, "jemalloc": {"allocated": (200 << 20) + k * (1 << 20), "resident": 250 << 20},
            "cgroup": {"current": 6 * gib, "peak": 6_657_200_128i64, "events": {"oom_kill": 0}},
            "load": {"turns_in_flight": 2, "conversations_active": 2}, "uptime_ms": 1000 * k,
        }));
        if k == 3 {
            s.put(at, "turn.start", json!({"conversation": "conv-a", "turn": "turn-a1", "provider": "sim", "model": "sim-1"}));
            s.put(at, "turn.start", json!({"conversation": "conv-b", "turn": "turn-b1", "provider": "sim", "model": "sim-1"}));
            s.put(at, "turn.start", json!({"conversation": "conv-a", "turn": "turn-a0", "provider": "sim", "model": "sim-1"}));
        }
        if k == 5 {
            s.put(at, "turn.end", json!({"conversation": "conv-a", "turn": "turn-a0", "outcome": "ok", "duration_ms": 2000}));
        }
        if k == 20 {
            s.put(at, "error.unhandled", json!({"message": "ssh: channel closed by peer", "source": "ssh", "conversation": "conv-b", "turn": "turn-b1"}));
        }
    }
    // The monitor's records after the child is gone: the in-process sample is corrupt (the
    // incident printed RSS 0.02 ZB; here a wrapped counter near 2^64, 16 EiB: the journal
    // types `rss` as u64, and the collector rejects a record whose rss is not one), and the
    // exit status names another signal.
    s.put(T0, "crash", json!({
        "signal": "SIGSEGV", "signo": 11, "fault_address": "0x0", "thread_name": "main",
        "minidump": "/var/lib/dispatch/crashes/gone.dmp", "build_id": "9c19197ed07568ffefa453eecbd285731badaf0f",
        "uptime_ms": 30_000, "active_conversations": ["conv-a", "conv-b"],
        "last_sample": {"rss": 18_446_744_073_709_547_520u64, "hwm": 311_427_072, "cgroup": {"current": 6 * gib, "peak": 6_657_200_128i64}},
    }));
    s.put(T0 + 3000, "exit", json!({"signal": "SIGILL", "signo": 4, "core_dumped": true, "uptime_ms": 30_000, "pid": 931590}));
    drop(s);

    let out = common::stdout_of(
        common::dispatchctl_command(),
        &["--var-dir", var.path().to_str().unwrap(), "postmortem", "latest", "--format", "json"],
    );
    let doc: Value = serde_json::from_str(&out).unwrap();
    let j = &doc["journal"];
    assert_eq!(j["boot"], boot.as_str());
    assert!(
        j["chosen"].as_str().unwrap().contains("newest of 4 boots that ended abnormally"),
        "{j}"
    );
    assert!(
        j["notes"][0].as_str().unwrap().starts_with("drained "),
        "the journal was drained first: {j}"
    );

    let what: Vec<&str> = doc["contradictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["what"].as_str().unwrap())
        .collect();
    assert!(what.contains(&"the crash signal and the exit status disagree"), "{what:?}");
    assert!(
        what.contains(&"an impossible value in the crash record's last_sample.rss"),
        "{what:?}"
    );
    assert!(what.contains(&"the in-process peak is far below the cgroup's peak"), "{what:?}");
    let signals = doc["contradictions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["what"] == "the crash signal and the exit status disagree")
        .unwrap();
    assert!(
        signals["trust"].as_str().unwrap().starts_with("SIGSEGV for what faulted"),
        "{signals}"
    );
    let rss = doc["contradictions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["what"].as_str().unwrap().contains("last_sample.rss"))
        .unwrap();
    assert!(
        rss["trust"].as_str().unwrap().contains("beyond any memory this host can have (16.0 EiB)"),
        "{rss}"
    );

    let absent = doc["dump"]["absent"].as_str().unwrap();
    assert!(absent.starts_with("the crash record names the dump /var/lib/dispatch/crashes/gone.dmp, which is not there (nor at "), "{absent}");
    assert!(
        j["crash_loop"].as_str().unwrap().starts_with("crash loop: 4 abnormal exits within 10 min"),
        "{j}"
    );
    let turns: Vec<&str> = j["turns_in_flight"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["turn"].as_str().unwrap())
        .collect();
    assert_eq!(turns, ["turn-a1", "turn-b1"], "turn-a0 ended before the crash");
    assert_eq!(j["last_error"]["message"], "ssh: channel closed by peer");
    assert_eq!(j["process_start"]["build_id"], "9c19197ed07568ffefa453eecbd285731badaf0f");
    assert_eq!(j["process_start"]["config"]["max_turns_in_flight"], "4");
    assert_eq!(j["samples"], 25);
    assert_eq!(j["last_samples"].as_array().unwrap().len(), 10);

    // For people: no raw JSON, no nulls, units.
    let md = common::stdout_of(
        common::dispatchctl_command(),
        &["--var-dir", var.path().to_str().unwrap(), "postmortem", "latest"],
    );
    // Kept for people to read.
    std::fs::write(Path::new(env!("CARGO_TARGET_TMPDIR")).join("postmortem-incident.md"), &md)
        .unwrap();
    assert!(md.contains("**crashed with SIGSEGV after 30 s; no dump**"), "{md}");
    assert!(md.contains("## Figures that contradict each other"), "{md}");
    assert!(md.contains("cgroup memory.peak: 6.2 GiB"), "{md}");
    assert!(md.contains("290.0 MiB"), "{md}");
    assert!(!md.contains("null") && !md.contains("{\""), "{md}");
}

/// An OOM kill: pressure records, the cgroup's oom_kill count rising, an exit by SIGKILL with
/// `oom_killed`, no crash record. The report says plainly that no dump exists and why.
#[test]
fn an_oom_kill_is_reported_from_samples_pressure_and_the_oom_kill_count() {
    let var = tempfile::tempdir().unwrap();
    let journal = var.path().join("journal");
    std::fs::create_dir(&journal).unwrap();
    let gib = 1i64 << 30;
    let boot = boot_id(7);
    let start = T0 - 20_000;
    let mut s = Segment::new(&journal, 1, &boot, start);
    s.put(start, "process.start", json!({"pid": 77, "version": "0.1.0", "limits": {"memory_high": 3 * gib, "memory_max": 4 * gib}}));
    s.put(start + 500, "turn.start", json!({"conversation": "conv-big", "turn": "turn-big", "provider": "sim", "model": "sim-1"}));
    for k in 0..20i64 {
        let at = start + 1000 * k;
        let rss = (2 * gib) + k * (100 << 20);
        s.put(at, "memory.sample", json!({
            "rss": rss, "hwm": rss, "jemalloc": {"allocated": rss - (100 << 20)},
            "cgroup": {"current": rss + (50 << 20), "peak": rss + (50 << 20), "max": 4 * gib, "events": {"oom_kill": i64::from(k >= 19)}},
            "load": {"turns_in_flight": 1},
        }));
        if k == 10 {
            s.put(
                at,
                "pressure",
                json!({"level": "high", "rss": rss, "limit": 3 * gib, "action": "shed"}),
            );
        }
    }
    s.put(T0, "exit", json!({"signal": "SIGKILL", "signo": 9, "oom_killed": true, "uptime_ms": 20_000, "pid": 77}));
    drop(s);

    let run = |format: &str| {
        common::stdout_of(
            common::dispatchctl_command(),
            &["--var-dir", var.path().to_str().unwrap(), "postmortem", "--format", format],
        )
    };
    let doc: Value = serde_json::from_str(&run("json")).unwrap();
    let absent = doc["dump"]["absent"].as_str().unwrap();
    assert!(
        absent.starts_with("no dump exists: the process was killed by SIGKILL by the OOM killer (the cgroup's oom_kill count went from 0 to 1)"),
        "{absent}"
    );
    let j = &doc["journal"];
    assert_eq!(j["oom_kill"], json!([0, 1]));
    assert_eq!(j["pressure"][0]["action"], "shed");
    assert_eq!(j["pressure"][0]["limit_bytes"], 3 * gib);
    assert_eq!(j["turns_in_flight"][0]["turn"], "turn-big");
    assert_eq!(j["last_samples"].as_array().unwrap().last().unwrap()["oom_kill"], 1);
    assert_eq!(doc["summary"], "killed by SIGKILL (the OOM killer) after 20 s; no dump");
    let md = run("md");
    assert!(md.contains("## Memory pressure"), "{md}");
    assert!(md.contains("| high | 3.0 GiB | 3.0 GiB | shed |"), "{md}");
    assert!(md.contains("cgroup oom\\_kill count: 0 at the first sample, 1 at the last"), "{md}");
}
