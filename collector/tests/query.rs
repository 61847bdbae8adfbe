//! The read side against a real drained database: raw samples by time range (the key binary
//! search), hourly rollups (checked against aggregates computed from the raw rows), the span
//! switch, turns, and retention by age in chunks.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use dispatch_synth::mix as synth;

use std::path::Path;
use std::time::Duration;

use dispatch_collector::Collector;
use dispatch_collector::query::{self, Samples, TimeRange};
use dispatch_journal::Record;
use dispatch_journal::record::{TurnEnd, TurnStart};
use rusqlite::Connection;

const HOUR: i64 = 3_600_000;

/// Boot 1: 1 Hz samples for 8 h from T0, a turn every 10 min. Boot 2: 2 h of samples from
/// T0 + 9 h. Returns the journal directory's segment count.
fn write(dir: &Path) {
    let mut seg = 1;
    for (boot, start, hours) in [(1u64, synth::T0_MS, 8i64), (2, synth::T0_MS + 9 * HOUR, 2)] {
        let mut g = synth::Gen::new(boot);
        g.ts_ms = start;
        let mut buf = g.header(seg);
        for s in 0..hours * 3600 {
            g.ts_ms = start + s * 1000;
            let r = g.sample();
            buf.extend(g.line(&r));
            if s % 600 == 0 {
                let turn = format!("t-{boot}-{s}");
                buf.extend(g.line(&Record::TurnStart(TurnStart {
                    conversation: Some(format!("c-{}", s % 3)),
                    turn: Some(turn.clone()),
                    ..Default::default()
                })));
                buf.extend(g.line(&Record::TurnEnd(TurnEnd {
                    conversation: Some(format!("c-{}", s % 3)),
                    turn: Some(turn),
                    outcome: Some("ok".into()),
                    alloc_bytes: Some(s as u64),
                    ..Default::default()
                })));
            }
            if buf.len() > 1 << 20 {
                std::fs::write(
                    dir.join(dispatch_journal::SegmentName::new("dispatch", seg).file_name()),
                    &buf,
                )
                .unwrap();
                seg += 1;
                buf = g.header(seg);
            }
        }
        std::fs::write(
            dir.join(dispatch_journal::SegmentName::new("dispatch", seg).file_name()),
            &buf,
        )
        .unwrap();
        seg += 1;
    }
}

fn drained() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("journal");
    std::fs::create_dir(&j).unwrap();
    write(&j);
    let db = dir.path().join("traces.db");
    let s = Collector::builder(&j, &db).retention(None).open().unwrap().drain_once().unwrap();
    assert_eq!(s.quarantined, 0);
    (dir, db)
}

fn count(conn: &Connection, sql: &str, a: i64, b: i64) -> i64 {
    conn.query_row(sql, [a, b], |r| r.get(0)).unwrap()
}

#[test]
fn raw_samples_by_range_match_a_plain_scan() {
    let (_dir, db) = drained();
    let conn = dispatch_collector::schema::open_read_only(&db).unwrap();
    let t0 = synth::T0_MS;
    for (from, to) in [
        (t0 + HOUR, t0 + HOUR + 600_000),
        (t0 - HOUR, t0 + 5_500),
        (t0 + 7 * HOUR + 1_234, t0 + 10 * HOUR), // spans the gap between the boots
        (t0 + 8 * HOUR + 1, t0 + 9 * HOUR - 1),  // in the gap: nothing
        (t0 + 11 * HOUR, t0 + 12 * HOUR),        // after everything
    ] {
        let rows = query::samples_raw(&conn, TimeRange { from_ms: from, to_ms: to }, None).unwrap();
        let want =
            count(&conn, "SELECT count(*) FROM samples WHERE ts_ms >= ?1 AND ts_ms < ?2", from, to);
        assert_eq!(rows.len() as i64, want, "[{from}, {to})");
        assert!(rows.iter().all(|s| s.ts_ms >= from && s.ts_ms < to));
        assert!(rows.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms), "time order");
        assert!(rows.iter().all(|s| s.rss.is_some() && s.allocated.is_some() && s.hwm.is_none()));
    }
    let one_boot = query::samples_raw(&conn, TimeRange::ALL, Some(&synth::boot_id(2))).unwrap();
    assert_eq!(one_boot.len(), 2 * 3600);
}

#[test]
fn hourly_rollups_match_aggregates_of_the_raw_rows() {
    let (_dir, db) = drained();
    let conn = dispatch_collector::schema::open_read_only(&db).unwrap();
    let range = TimeRange { from_ms: synth::T0_MS, to_ms: synth::T0_MS + 30 * 24 * HOUR };
    let hours = query::samples_hourly(&conn, range, None).unwrap();
    assert_eq!(hours.len(), 10);
    for h in &hours {
        let (n, min, max, sum): (i64, i64, i64, i64) = conn
            .query_row(
                "SELECT count(*), min(rss), max(rss), sum(rss) FROM samples WHERE ts_ms >= ?1 AND ts_ms < ?2",
                [h.hour_ms, h.hour_ms + HOUR],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(h.samples, n);
        let rss = h.rss.unwrap();
        assert_eq!((rss.min, rss.max), (min, max));
        assert!((rss.avg - sum as f64 / n as f64).abs() < 1e-6);
        let turns = count(
            &conn,
            "SELECT count(*) FROM turn_starts WHERE ts_ms >= ?1 AND ts_ms < ?2",
            h.hour_ms,
            h.hour_ms + HOUR,
        );
        assert_eq!(h.turns_started, turns);
        let fl: i64 = conn
            .query_row(
                "SELECT max(turns_in_flight) FROM samples WHERE ts_ms >= ?1 AND ts_ms < ?2",
                [h.hour_ms, h.hour_ms + HOUR],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(h.turns_in_flight_max, Some(fl));
    }
    // The span picks the source.
    match query::samples(&conn, range, None, query::DEFAULT_RAW_SPAN_MS).unwrap() {
        Samples::Hourly(h) => assert_eq!(h.len(), 10),
        Samples::Raw(_) => panic!("30 days should come from the rollups"),
    }
    let hour = TimeRange { from_ms: synth::T0_MS, to_ms: synth::T0_MS + HOUR };
    match query::samples(&conn, hour, None, query::DEFAULT_RAW_SPAN_MS).unwrap() {
        Samples::Raw(r) => assert_eq!(r.len(), 3600),
        Samples::Hourly(_) => panic!("an hour should come raw"),
    }
}

#[test]
fn turns_join_start_and_end() {
    let (_dir, db) = drained();
    let conn = dispatch_collector::schema::open_read_only(&db).unwrap();
    let turns = query::turns_for_conversation(&conn, "c-0").unwrap();
    // Turns at s % 600 == 0 with s % 3 == 0: every one of them (600 is a multiple of 3).
    assert_eq!(turns.len(), 8 * 6 + 2 * 6);
    assert!(turns.iter().all(|t| t.outcome.as_deref() == Some("ok") && t.start_ts_ms.is_some()));
    let first_hour = TimeRange { from_ms: synth::T0_MS, to_ms: synth::T0_MS + HOUR };
    let started = query::turns_started(&conn, first_hour).unwrap();
    assert_eq!(started.len(), 6);
    assert_eq!(started[1].alloc_bytes, Some(600));
}

#[test]
fn retention_deletes_by_age_in_chunks_and_keeps_the_rest() {
    let (_dir, db) = drained();
    let mut conn = Connection::open(&db).unwrap();
    let newest: i64 =
        conn.query_row("SELECT max(last_ts_ms) FROM boots", [], |r| r.get(0)).unwrap();
    let cutoff = newest - 3 * HOUR;
    let keep_samples =
        count(&conn, "SELECT count(*) FROM samples WHERE ts_ms >= ?1 AND ?2 = ?2", cutoff, 0);
    let old_samples =
        count(&conn, "SELECT count(*) FROM samples WHERE ts_ms < ?1 AND ?2 = ?2", cutoff, 0);
    assert!(old_samples > 0 && keep_samples > 0);
    let deleted =
        dispatch_collector::retention::apply(&mut conn, Duration::from_secs(3 * 3600), 1_000)
            .unwrap();
    assert!(deleted >= old_samples as u64);
    for table in ["samples", "turn_starts", "turn_ends"] {
        let old = count(
            &conn,
            &format!("SELECT count(*) FROM {table} WHERE ts_ms < ?1 AND ?2 = ?2"),
            cutoff,
            0,
        );
        assert_eq!(old, 0, "{table}");
    }
    assert_eq!(
        count(&conn, "SELECT count(*) FROM samples WHERE ts_ms >= ?1 AND ?2 = ?2", cutoff, 0),
        keep_samples
    );
    let old_hours = count(
        &conn,
        "SELECT count(*) FROM rollup_hourly WHERE hour_ms + 3600000 <= ?1 AND ?2 = ?2",
        cutoff,
        0,
    );
    assert_eq!(old_hours, 0);
    // Attribution rollups cover a whole boot: the boot that ended before the cutoff loses its
    // rows, the boot still within it keeps them.
    let by_boot = |sql: &str| {
        count(
            &conn,
            &format!(
                "SELECT count(*) FROM {sql} r JOIN boots b ON b.boot_no = r.boot_no
                 WHERE (b.last_ts_ms < ?1) = (?2 = 1)"
            ),
            cutoff,
            1,
        )
    };
    assert_eq!(by_boot("rollup_conversation"), 0);
    assert_eq!(by_boot("rollup_top_turns"), 0);
    let kept = count(&conn, "SELECT count(*) FROM rollup_conversation WHERE ?1 = ?2", 0, 0);
    assert!(kept > 0, "the later boot keeps its rollups");
}
