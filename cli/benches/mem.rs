//! `dispatchctl mem` over 30 days of 1 Hz samples (2.6M rows): the on-call command must answer
//! in under 200 ms.
//!
//! `cargo bench -p dispatch-cli --bench mem [-- DAYS]` (default 30). Builds, once per run, a
//! synthetic 30-day journal (`working-set` scenario, 1 sample/s, with turns), drains it with
//! the real collector into a traces database, then times 7 runs of the real binary
//! `dispatchctl --db DB mem --since 30d --json` (process start included) and reports the
//! median. The anchor, in the same run: the `sqlite3` CLI computing the same hourly floors
//! straight from the raw samples (`SELECT min(je_allocated) ... GROUP BY hour`).

use std::time::Instant;

use dispatch_cli::synth::{Scenario, SynthOptions, generate};

fn main() {
    let days: f64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(30.0);
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = dir.path().join("journal");
    let mut opts = SynthOptions::new(Scenario::WorkingSet);
    opts.hours = Some(days * 24.0);
    let t = Instant::now();
    let summary = generate(&opts, &journal).expect("synth");
    println!(
        "journal: {} lines ({} samples, {} turns) in {:.1} s",
        summary.lines,
        summary.samples,
        summary.turns,
        t.elapsed().as_secs_f64()
    );
    let db = dir.path().join("traces.db");
    let t = Instant::now();
    let s = dispatch_collector::Collector::builder(&journal, &db)
        .open()
        .expect("open")
        .drain_once()
        .expect("drain");
    println!("drained {} lines in {:.1} s", s.lines, t.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&journal);

    let since = format!("{}d", days as i64);
    let mut ms = Vec::new();
    let mut verdict = String::new();
    for _ in 0..7 {
        let t = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dispatchctl"))
            .args(["--db", db.to_str().expect("utf-8 path"), "mem", "--since", &since, "--json"])
            .output()
            .expect("dispatchctl");
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        verdict = format!("{} from {} ({} samples/rows)", v["verdict"], v["source"], v["samples"]);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "dispatchctl mem --since {since}: median_ms={:.1} min_ms={:.1} max_ms={:.1}; verdict {verdict}",
        ms[3], ms[0], ms[6]
    );

    let sql = "SELECT count(*) FROM (SELECT ts_ms / 3600000 AS h, min(je_allocated), max(je_allocated), \
               min(rss) FROM samples GROUP BY h);";
    let t = Instant::now();
    match std::process::Command::new("sqlite3").arg(&db).arg(sql).output() {
        Ok(o) if o.status.success() => println!(
            "anchor sqlite3 hourly floors from raw samples: ms={:.1} ({} hours)",
            t.elapsed().as_secs_f64() * 1e3,
            String::from_utf8_lossy(&o.stdout).trim()
        ),
        Ok(o) => println!("anchor sqlite3: failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => println!("anchor sqlite3: not available ({e})"),
    }
}
