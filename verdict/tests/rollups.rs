//! Windows over 48 h are answered from the collector's hourly rollups; with the load-aware
//! rollup (per `turns_in_flight` level) their verdict is the raw path's on the same data.
//! Synthetic 72-hour journals (a leak under noisy diurnal load, and its working-set twin)
//! are drained into a real traces database by the real collector, then analysed both ways.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use dispatch_synth::scenario::{Scenario, SynthOptions, generate};
use dispatch_verdict::report::{
    ReadOptions, Since, analyze_boot_read, analyze_boot_with, recent_view,
};

const HOUR_MS: i64 = 3_600_000;

fn drained(dir: &Path, scenario: Scenario, seed: u64) -> PathBuf {
    let journal = dir.join("journal");
    let opts = SynthOptions { hours: Some(72.0), seed, ..SynthOptions::new(scenario) };
    generate(&opts, &journal).unwrap();
    let db = dir.join("traces.db");
    dispatch_collector::Collector::builder(&journal, &db).open().unwrap().drain_once().unwrap();
    db
}

#[test]
fn rollup_windows_reach_the_raw_verdict() {
    for (scenario, expected) in [(Scenario::Leak, "LEAK"), (Scenario::WorkingSet, "WORKING-SET")] {
        for seed in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let db = drained(dir.path(), scenario, seed);
            let conn = dispatch_collector::schema::open_read_only(&db).unwrap();
            let boot = dispatch_collector::query::boots(&conn).unwrap().remove(0);
            let raw = analyze_boot_with(&conn, &boot, Since::All, i64::MAX).unwrap();
            let hourly = analyze_boot_with(&conn, &boot, Since::All, 48 * HOUR_MS).unwrap();
            let what = format!("{scenario:?} seed {seed}");
            assert_eq!((raw.source, hourly.source), ("raw", "hourly"), "{what}");
            let (r, h) = (&raw.analysis, &hourly.analysis);
            assert_eq!(r.verdict.name(), expected, "{what} raw: {}", r.summary);
            assert_eq!(h.verdict.name(), expected, "{what} hourly: {}", h.summary);
            assert!(
                h.notes.iter().any(|n| n.contains("floors are load-adjusted")),
                "{what}: {:?}",
                h.notes
            );
            assert_eq!(h.samples, r.samples, "{what}: the same samples behind both");
            if expected == "LEAK" {
                let mib = |t: &Option<dispatch_verdict::analysis::Trend>| {
                    t.as_ref().unwrap().bytes_per_hour / 1_048_576.0
                };
                assert!(
                    (mib(&r.growth) - mib(&h.growth)).abs() < 1.0,
                    "{what}: raw {:.2} MiB/h, hourly {:.2} MiB/h",
                    mib(&r.growth),
                    mib(&h.growth)
                );
                assert_eq!(
                    r.conversations[0].id, h.conversations[0].id,
                    "{what}: the same conversation ranked first"
                );
            }
        }
    }
}

/// A whole boot over 48 h ranks conversations and turns from the attribution rollups (one row
/// per conversation), and the ranking is the one every raw turn gives on the same hourly
/// floors: the same conversations in the same order with the same kept and allocated bytes,
/// turn counts, active-while-the-floor-rose flags and shares, and the same top turns. Windows
/// shorter than the boot still read their turns.
#[test]
fn rollup_attribution_ranks_as_the_raw_turns_do() {
    for (scenario, seed) in [(Scenario::Leak, 1), (Scenario::Leak, 2), (Scenario::WorkingSet, 1)] {
        let what = format!("{scenario:?} seed {seed}");
        let dir = tempfile::tempdir().unwrap();
        let db = drained(dir.path(), scenario, seed);
        let conn = dispatch_collector::schema::open_read_only(&db).unwrap();
        let boot = dispatch_collector::query::boots(&conn).unwrap().remove(0);
        let read = |since: Since, attribution_rollups: bool| {
            let opts = ReadOptions { attribution_rollups, ..ReadOptions::default() };
            analyze_boot_read(&conn, &boot, since, &opts).unwrap()
        };
        let (rolled, raw) = (read(Since::All, true), read(Since::All, false));
        assert_eq!((rolled.source, rolled.attribution), ("hourly", "rollups"), "{what}");
        assert_eq!((raw.source, raw.attribution), ("hourly", "turns"), "{what}");
        let (r, t) = (&rolled.analysis, &raw.analysis);
        assert_eq!(r.verdict, t.verdict, "{what}");
        assert!(r.conversations.len() > 40, "{what}: {}", r.conversations.len());
        assert_eq!(
            serde_json::to_value(&r.conversations).unwrap(),
            serde_json::to_value(&t.conversations).unwrap(),
            "{what}: conversations"
        );
        assert_eq!(
            serde_json::to_value(&r.turns).unwrap(),
            serde_json::to_value(&t.turns).unwrap(),
            "{what}: turns"
        );
        // And straight from the raw rows: the first conversation's kept bytes and turns.
        let first = &r.conversations[0];
        let (kept, turns): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT sum(alloc_bytes - freed_bytes) FROM turn_ends
                         WHERE conversation = ?1),
                        (SELECT count(*) FROM turn_starts WHERE conversation = ?1)",
                [&first.id],
                |q| Ok((q.get(0)?, q.get(1)?)),
            )
            .unwrap();
        assert_eq!((first.retained_bytes, first.turns as i64), (kept, turns), "{what}");
        if scenario == Scenario::Leak {
            assert_eq!(r.verdict.name(), "LEAK", "{what}: {}", r.summary);
            assert_eq!(first.id, dispatch_synth::scenario::LEAKY_CONVERSATION, "{what}");
            assert!(first.active_while_floor_rose && first.floor_rise_share > 0.5, "{what}");
            // A turn every 5 minutes: active in every hour the floor rose, the most of any.
            let most = r.conversations.iter().map(|c| c.floor_rise_share).fold(0.0, f64::max);
            assert_eq!(first.floor_rise_share, most, "{what}");
            assert!(r.conversations.iter().any(|c| c.floor_rise_share < most), "{what}");
        }
        // Shorter windows read their turns: 6 h (raw samples) and 60 of the 72 h (hourly).
        for ms in [6 * HOUR_MS, 60 * HOUR_MS] {
            let part = read(Since::Millis(ms), true);
            assert_eq!(part.attribution, "turns", "{what}: {ms} ms");
        }
        // The recent view beside the whole boot ranks nothing, and says what `--since 6h` says.
        let recent = recent_view(&conn, &boot).unwrap();
        let six = read(Since::Millis(6 * HOUR_MS), true);
        assert_eq!(recent.attribution, "none", "{what}");
        assert!(recent.analysis.conversations.is_empty() && recent.analysis.turns.is_empty());
        assert!(!six.analysis.conversations.is_empty(), "{what}");
        assert_eq!(
            (recent.analysis.verdict, &recent.analysis.summary),
            (six.analysis.verdict, &six.analysis.summary),
            "{what}"
        );
    }
}

/// The migration's backfill gives the rows ingest builds: a database whose load rollup is
/// dropped and whose schema is set back to 1 is migrated by the next open, and the table
/// comes back row for row.
#[test]
fn the_migration_backfills_the_load_rollup_from_raw_samples() {
    type Row = (i64, i64, i64, i64, Option<i64>, Option<i64>);
    let dir = tempfile::tempdir().unwrap();
    let db = drained(dir.path(), Scenario::WorkingSet, 3);
    let rows = |db: &Path| -> Vec<Row> {
        let conn = dispatch_collector::schema::open_read_only(db).unwrap();
        let mut st = conn
            .prepare(
                "SELECT boot_no, hour_ms, turns_in_flight, samples, allocated_min, rss_max \
                 FROM rollup_hourly_load ORDER BY 1, 2, 3",
            )
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let built = rows(&db);
    assert!(built.len() > 72, "a row per hour and level: {}", built.len());
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(dispatch_collector::schema::UNPAIR_TURNS_SQL).unwrap();
        conn.execute_batch(
            "DROP TABLE rollup_hourly_load; DROP TABLE rollup_conversation; \
             DROP TABLE rollup_top_turns; PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    // An old database read by this build before a collector migrated it: no load rows; the
    // hourly path still answers and says what it rests on.
    {
        let conn = dispatch_collector::schema::open_read_only(&db).unwrap();
        let boot = dispatch_collector::query::boots(&conn).unwrap().remove(0);
        let old = analyze_boot_with(&conn, &boot, Since::All, 48 * HOUR_MS).unwrap();
        assert!(
            old.analysis
                .notes
                .iter()
                .any(|n| n.contains("0 of ") && n.contains("not load-adjusted")),
            "{:?}",
            old.analysis.notes
        );
    }
    dispatch_collector::Collector::builder(dir.path().join("journal"), &db).open().unwrap();
    assert_eq!(rows(&db), built);
}
