//! `dispatchctl crashes` over a long history: how long on-call waits for the table.
//!
//! `cargo bench -p dispatch-cli --bench crashes [-- BOOTS]` (default 2000). Writes a journal
//! of BOOTS boots with the real journal types (each ending in turn with exit status 1, a crash
//! record and SIGSEGV, a fatal panic, a clean stop, an OOM kill, or nothing), drains it with
//! the real collector, then times 7 runs of the real binary
//! `dispatchctl --traces-db DB crashes --json` and of the text output (process start included),
//! and reports the medians. No dump is on disk, so no stack is walked: this measures the
//! history, not the stack walker (whose cost the signature cache saves).

#[path = "../tests/common/journal.rs"]
mod journal;

use std::time::Instant;

use journal::{Boot, End, T0_MS};

fn median(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[0], ms[ms.len() - 1])
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().expect("temp dir");
    let journal_dir = dir.path().join("journal");
    let mut boots = Vec::new();
    let mut t = T0_MS;
    for i in 0..n {
        let uptime = 30_000 + (i as i64 * 7919) % 7_200_000;
        let end = match i % 6 {
            0 => End::Status(1),
            1 => End::Crash { dump_signal: "SIGSEGV", exit_signal: "SIGSEGV", minidump: None },
            2 => End::Panic {
                message: "called `Option::unwrap()` on a `None` value",
                location: "server/src/turn.rs:88:17",
            },
            3 => End::Clean,
            4 => End::Oom,
            _ => End::Nothing,
        };
        boots.push(Boot::new(i + 1, t, uptime, end));
        t += uptime + 1000;
    }
    journal::write(&journal_dir, &boots);
    let db = dir.path().join("traces.db");
    let started = Instant::now();
    let s = dispatch_collector::Collector::builder(&journal_dir, &db)
        .open()
        .expect("open")
        .drain_once()
        .expect("drain");
    println!("{n} boots: drained {} lines in {:.2} s", s.lines, started.elapsed().as_secs_f64());
    for json in [true, false] {
        let mut ms = Vec::new();
        let mut what = String::new();
        for _ in 0..7 {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dispatchctl"));
            cmd.env("NO_COLOR", "1").args(["--traces-db", db.to_str().expect("utf-8"), "crashes"]);
            if json {
                cmd.arg("--json");
            }
            let t = Instant::now();
            let out = cmd.output().expect("dispatchctl");
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            what = if json {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
                format!(
                    "{} exits, {} groups",
                    v["exits"].as_array().map_or(0, Vec::len),
                    v["groups"].as_array().map_or(0, Vec::len)
                )
            } else {
                format!("{} lines", out.stdout.iter().filter(|&&b| b == b'\n').count())
            };
        }
        let (med, min, max) = median(ms);
        println!(
            "dispatchctl crashes{}: median_ms={med:.1} min_ms={min:.1} max_ms={max:.1}; {what}",
            if json { " --json" } else { "" }
        );
    }
}
