//! `dispatchctl mem` over 30 days of 1 Hz samples (2.6M rows): the on-call command must answer
//! in under 200 ms.
//!
//! `cargo bench -p dispatch-cli --bench mem [-- DAYS]` (default 30). Builds, once per run, a
//! synthetic 30-day journal (`working-set` scenario, 1 sample/s, with turns), drains it with
//! the real collector into a traces database, then times 7 runs of the real binary
//! `dispatchctl --db DB mem --since 30d --json` (process start included) and reports the
//! median. The anchor, in the same run: the `sqlite3` CLI computing the same hourly floors
//! straight from the raw samples (`SELECT min(je_allocated) ... GROUP BY hour`).
//!
//! `cargo bench -p dispatch-cli --bench mem -- [DAYS] --turns 10000000 --conversations 10000
//! [--raw-runs 3]`: the same samples with that many turns (uniform over that many
//! conversations, 20 s to 3 min each, a few still open at the end) in place of the scenario's
//! own, written straight into the drained database in one transaction; the attribution
//! rollups and the turn pairing are then built by the collector's own migrations 3 and 4 (the
//! database is set back to schema 2 first, so both are timed too). The database is cached in
//! `<target>/bench-cache/` and reused by later runs (a cache an older build wrote is migrated
//! first, and that is timed). Timed: 7 runs of `dispatchctl --db DB
//! mem --json` with the default window (the whole boot, plus the recent 6 h view), each under
//! `/usr/bin/time` for its peak RSS; beside them, the same report on the old path (every turn
//! of the window read and ranked: `analyze_boot_read` with the attribution rollups off, in a
//! child process of this bench, also under `/usr/bin/time`, with an 8 GiB address-space cap so
//! it cannot take the machine down), and a `sqlite3` anchor ranking conversations straight
//! from the raw `turn_ends` rows.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a bench

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use dispatch_cli::synth::{Scenario, SynthOptions, generate};

/// The value after `--name`, parsed.
fn flag<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

fn main() {
    if let Some(db) = flag::<String>("--raw-child") {
        raw_child(Path::new(&db));
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let days: f64 = args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with('-') && (*i == 0 || !args[i - 1].starts_with("--")))
        .and_then(|(_, a)| a.parse().ok())
        .unwrap_or(30.0);
    match flag::<u64>("--turns") {
        Some(turns) => many_turns(days, turns, flag("--conversations").unwrap_or(10_000)),
        None => samples_only(days),
    }
}

fn drained_samples(days: f64, dir: &Path, db: &Path) {
    let journal = dir.join("journal");
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
    let t = Instant::now();
    let s = dispatch_collector::Collector::builder(&journal, db)
        .open()
        .expect("open")
        .drain_once()
        .expect("drain");
    println!("drained {} lines in {:.1} s", s.lines, t.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&journal);
}

fn samples_only(days: f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("traces.db");
    drained_samples(days, dir.path(), &db);

    let since = format!("{}d", days as i64);
    let mut ms = Vec::new();
    let mut verdict = String::new();
    for _ in 0..7 {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_dispatchctl"))
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
    match Command::new("sqlite3").arg(&db).arg(sql).output() {
        Ok(o) if o.status.success() => println!(
            "anchor sqlite3 hourly floors from raw samples: ms={:.1} ({} hours)",
            t.elapsed().as_secs_f64() * 1e3,
            String::from_utf8_lossy(&o.stdout).trim()
        ),
        Ok(o) => println!("anchor sqlite3: failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => println!("anchor sqlite3: not available ({e})"),
    }
}

/// `<target>/bench-cache/`, beside the profile directory of the dispatchctl being timed.
fn cache_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_dispatchctl"));
    let target = bin.parent().and_then(Path::parent).expect("target dir");
    let dir = target.join("bench-cache");
    std::fs::create_dir_all(&dir).expect("bench-cache dir");
    dir
}

/// A turn's end not written yet: (end ts, turn no, conversation no, duration, alloc, kept);
/// a min-heap of them gives the ends in time order.
type PendingEnd = (i64, u64, u64, i64, i64, i64);

/// Replaces the drained database's turns by `turns` turns over `convs` conversations, in
/// time order with keys after the boot's last `seq`, as a journal would have them.
fn write_turns(db: &Path, turns: u64, convs: u64) {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;").unwrap();
    let (boot_no, first, last, last_seq): (i64, i64, i64, i64) = conn
        .query_row("SELECT boot_no, first_ts_ms, last_ts_ms, last_seq FROM boots", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    // Back to schema 3 first (turns unpaired, migration 1's indexes), so that the next
    // collector open times migration 4's pairing over these rows too.
    conn.execute_batch(dispatch_collector::schema::UNPAIR_TURNS_SQL).unwrap();
    let t = Instant::now();
    let tx = conn.transaction().unwrap();
    tx.execute_batch(
        "DELETE FROM turn_starts; DELETE FROM turn_ends;
         DROP INDEX turn_starts_by_conversation; DROP INDEX turn_ends_by_conversation;",
    )
    .unwrap();
    let mut seq = last_seq + 1;
    let mut ends = 0u64;
    {
        let mut start = tx
            .prepare(
                "INSERT INTO turn_starts (id, ts_ms, conversation, turn, provider, model)
                 VALUES (?1, ?2, ?3, ?4, 'sim', 'sim-1')",
            )
            .unwrap();
        let mut end = tx
            .prepare(
                "INSERT INTO turn_ends (id, ts_ms, conversation, turn, outcome, duration_ms, steps,
                     tool_calls, output_bytes, tool_output_truncated, alloc_bytes, freed_bytes)
                 VALUES (?1, ?2, ?3, ?4, 'ok', ?5, 2, 1, ?6, 0, ?7, ?8)",
            )
            .unwrap();
        let mut rng = dispatch_synth::Rng(0x5eed_0010);
        let mut open: BinaryHeap<Reverse<PendingEnd>> = BinaryHeap::new();
        let step = (last - first) as f64 / turns as f64;
        let mut put_end = |seq: &mut i64, e: PendingEnd| {
            let (ts, n, c, dur, alloc, kept) = e;
            end.execute(rusqlite::params![
                (boot_no << 40) | *seq,
                ts,
                format!("conv-{c:05}"),
                format!("turn-{n:08}"),
                dur,
                4096 + (n % 8192) as i64,
                alloc,
                alloc - kept,
            ])
            .unwrap();
            *seq += 1;
        };
        for n in 0..turns {
            let ts = first + (n as f64 * step) as i64;
            while open.peek().is_some_and(|Reverse(e)| e.0 <= ts) {
                let Reverse(e) = open.pop().unwrap();
                put_end(&mut seq, e);
                ends += 1;
            }
            let c = rng.below(convs);
            start
                .execute(rusqlite::params![
                    (boot_no << 40) | seq,
                    ts,
                    format!("conv-{c:05}"),
                    format!("turn-{n:08}")
                ])
                .unwrap();
            seq += 1;
            let dur = 20_000 + rng.below(160_000) as i64;
            let alloc = ((8 + rng.below(40)) as i64) << 20;
            // Most turns give back all but a little; conversation 7 keeps 64 KiB a turn.
            let kept = if c == 7 { 64 << 10 } else { rng.below(4096) as i64 };
            open.push(Reverse((ts + dur, n, c, dur, alloc, kept)));
        }
        // Turns ending after the boot's last record stay open, as in-flight turns do.
        while open.peek().is_some_and(|Reverse(e)| e.0 <= last) {
            let Reverse(e) = open.pop().unwrap();
            put_end(&mut seq, e);
            ends += 1;
        }
        println!("  {} turns still open at the end", open.len());
    }
    tx.execute(
        "UPDATE boots SET last_seq = ?1, records = records + ?2 WHERE boot_no = ?3",
        rusqlite::params![seq - 1, (turns + ends) as i64, boot_no],
    )
    .unwrap();
    tx.commit().unwrap();
    println!("  {turns} turn.start and {ends} turn.end rows in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    conn.execute_batch(
        "CREATE INDEX turn_starts_by_conversation ON turn_starts (conversation, turn);
         CREATE INDEX turn_ends_by_conversation ON turn_ends (conversation, turn);",
    )
    .unwrap();
    println!("  indexes in {:.1} s", t.elapsed().as_secs_f64());
    // Back to schema 2: the next collector open runs migration 3's backfill over these rows.
    conn.execute_batch(
        "DROP TABLE rollup_conversation; DROP TABLE rollup_top_turns; PRAGMA user_version = 2;",
    )
    .unwrap();
}

fn build_many_turns(days: f64, turns: u64, convs: u64, db: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let tmp = db.with_extension("building");
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
    }
    drained_samples(days, dir.path(), &tmp);
    write_turns(&tmp, turns, convs);
    let t = Instant::now();
    let empty = dir.path().join("empty-journal");
    std::fs::create_dir_all(&empty).unwrap();
    drop(
        dispatch_collector::Collector::builder(&empty, &tmp).retention(None).open().expect("open"),
    );
    println!(
        "  migrations 3 and 4 (attribution backfill, turn pairing) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let conn = rusqlite::Connection::open(&tmp).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;").unwrap();
    drop(conn);
    std::fs::rename(&tmp, db).unwrap();
    let _ = std::fs::remove_file(format!("{}.lock", tmp.display()));
}

/// Runs `cmd` under `/usr/bin/time`: (wall ms, peak RSS MiB, stdout).
fn timed(cmd: &[&str]) -> (f64, f64, Vec<u8>) {
    let rss_file = tempfile::NamedTempFile::new().unwrap();
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o", rss_file.path().to_str().unwrap()])
        .args(cmd)
        .output()
        .expect("/usr/bin/time");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    let kib: f64 = std::fs::read_to_string(rss_file.path())
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("a max RSS figure");
    (ms, kib / 1024.0, out.stdout)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn many_turns(days: f64, turns: u64, convs: u64) {
    let db = cache_dir().join(format!("mem-{}d-{turns}t-{convs}c.db", days as i64));
    if db.exists() {
        println!("reusing {}", db.display());
        let v: i64 = rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        if v < dispatch_collector::schema::SCHEMA_VERSION {
            // A cache an older build wrote: the collector's own migrations bring it up to date.
            let empty = tempfile::tempdir().expect("temp dir");
            let t = Instant::now();
            drop(
                dispatch_collector::Collector::builder(empty.path(), &db)
                    .retention(None)
                    .open()
                    .expect("open"),
            );
            println!(
                "  migrated the cached database from schema {v} in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
    } else {
        println!("building {} (once)", db.display());
        let t = Instant::now();
        build_many_turns(days, turns, convs, &db);
        println!("built in {:.1} s", t.elapsed().as_secs_f64());
    }
    let db_s = db.to_str().expect("utf-8 path");
    {
        let conn = dispatch_collector::schema::open_read_only(&db).unwrap();
        let n = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        println!(
            "database: {} samples, {} turn starts, {} turn ends, {} conversation rollup rows, {:.0} MiB",
            n("SELECT count(*) FROM samples"),
            n("SELECT count(*) FROM turn_starts"),
            n("SELECT count(*) FROM turn_ends"),
            n("SELECT count(*) FROM rollup_conversation"),
            std::fs::metadata(&db).unwrap().len() as f64 / 1_048_576.0
        );
    }
    // Warm the page cache once, as on a server that has been running.
    let _ = timed(&[env!("CARGO_BIN_EXE_dispatchctl"), "--db", db_s, "mem", "--json"]);
    let (mut ms, mut rss) = (Vec::new(), Vec::new());
    let mut verdict = String::new();
    for _ in 0..7 {
        let (t, r, out) =
            timed(&[env!("CARGO_BIN_EXE_dispatchctl"), "--db", db_s, "mem", "--json"]);
        ms.push(t);
        rss.push(r);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        verdict = format!(
            "{}, recent {} from {}",
            describe(&v),
            v["recent"]["verdict"],
            v["recent"]["source"]
        );
    }
    let max_rss = rss.iter().copied().fold(0.0, f64::max);
    println!(
        "dispatchctl mem (default window): median_ms={:.1} min_ms={:.1} max_ms={:.1} \
         median_peak_rss_mib={:.1} max_peak_rss_mib={max_rss:.1}; {verdict}",
        median(&mut ms),
        ms[0],
        ms[6],
        median(&mut rss)
    );

    let runs: usize = flag("--raw-runs").unwrap_or(3);
    let me = std::env::current_exe().unwrap();
    let me = me.to_str().unwrap();
    let (mut ms, mut rss) = (Vec::new(), Vec::new());
    let mut verdict = String::new();
    for _ in 0..runs {
        let (t, r, out) = timed(&["prlimit", "--as=8589934592", "--", me, "--raw-child", db_s]);
        ms.push(t);
        rss.push(r);
        verdict = String::from_utf8_lossy(&out).trim().to_owned();
    }
    if runs > 0 {
        println!(
            "old path (every turn read and ranked), same report: median_ms={:.1} min_ms={:.1} \
             median_peak_rss_mib={:.1}; {verdict}",
            median(&mut ms),
            ms[0],
            median(&mut rss)
        );
    }

    let sql = "SELECT count(*), max(kept) FROM (SELECT conversation, \
               sum(alloc_bytes - freed_bytes) AS kept, count(*) FROM turn_ends \
               GROUP BY conversation ORDER BY kept DESC);";
    let (t, r, out) = timed(&["sqlite3", db_s, sql]);
    println!(
        "anchor sqlite3 conversation ranking from raw turn_ends: ms={t:.1} peak_rss_mib={r:.1} ({})",
        String::from_utf8_lossy(&out).trim()
    );
}

/// The old path, in its own process: `dispatchctl mem`'s default report (the whole boot and
/// the recent 6 h) with conversations ranked from every turn.
fn raw_child(db: &Path) {
    use dispatch_verdict::report::{
        RECENT_WINDOW_MS, ReadOptions, Since, analyze_boot, analyze_boot_read,
    };
    let conn = dispatch_collector::schema::open_read_only(db).unwrap();
    let boot = dispatch_collector::query::boots(&conn).unwrap().pop().unwrap();
    let opts = ReadOptions { attribution_rollups: false, ..ReadOptions::default() };
    let mut r = analyze_boot_read(&conn, &boot, Since::All, &opts).unwrap();
    r.recent = Some(Box::new(analyze_boot(&conn, &boot, Since::Millis(RECENT_WINDOW_MS)).unwrap()));
    let v = r.to_json();
    let json = serde_json::to_string(&v).unwrap();
    println!("{}, {} bytes of JSON", describe(&v), json.len());
}

/// A report's verdict, source and top conversation in one line, for comparing two paths.
fn describe(v: &serde_json::Value) -> String {
    format!(
        "{} from {}, attribution {}, {} conversations, first {} ({} B kept)",
        v["verdict"],
        v["source"],
        v["attribution"],
        v["conversations"].as_array().map_or(0, Vec::len),
        v["conversations"][0]["id"],
        v["conversations"][0]["retained_bytes"],
    )
}
