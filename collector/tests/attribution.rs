//! The attribution rollups (`rollup_conversation`, `rollup_top_turns`, schema 3) against a real
//! drained database: they equal aggregates computed straight from the raw turn rows, however
//! the journal is cut into batches; a replayed journal adds nothing to them (exactly once);
//! and migration 3 backfills them, row for row, in a database that predates them. Turn starts
//! and ends are paired by key at ingest and by migration 4 alike.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use dispatch_collector::hours::{HOUR_MS, HourSet};
use dispatch_collector::{Collector, Summary};
use dispatch_journal::Record;
use dispatch_journal::record::{TurnEnd, TurnStart};
use dispatch_synth::mix as synth;
use dispatch_synth::scenario::{Scenario, SynthOptions, generate};
use rusqlite::Connection;

/// Boot A: 30 hours of the `leak` scenario (41 conversations, turns still open at its end).
/// Boot B, later: a few turns of its own (one without a duration, one never ended, one with
/// no conversation) and the seal of one of A's open turns.
fn journal(dir: &Path) -> PathBuf {
    let j = dir.join("journal");
    let opts = SynthOptions { hours: Some(30.0), seed: 5, ..SynthOptions::new(Scenario::Leak) };
    let summary = generate(&opts, &j).unwrap();
    assert!(summary.turns > 500, "{} turns", summary.turns);
    let db = dir.join("probe.db");
    drain(&j, &db, 10_000);
    let open: Vec<(String, String)> = {
        let conn = Connection::open(&db).unwrap();
        let mut st = conn
            .prepare(
                "SELECT s.conversation, s.turn FROM turn_starts s WHERE NOT EXISTS
                 (SELECT 1 FROM turn_ends e WHERE e.turn = s.turn) ORDER BY s.id",
            )
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    assert!(!open.is_empty(), "the scenario leaves turns open at its end");
    let mut g = synth::Gen::new(2);
    g.ts_ms = opts.start.unix_millis() + 31 * HOUR_MS;
    let mut buf = g.header(900);
    let (sealed_conv, sealed_turn) = open[0].clone();
    buf.extend(g.line(&Record::TurnEnd(TurnEnd {
        conversation: Some(sealed_conv),
        turn: Some(sealed_turn),
        outcome: Some("sealed".into()),
        ..Default::default()
    })));
    for (i, conv) in [Some("conv-b1"), Some("conv-b1"), None, Some("conv-b2")].iter().enumerate() {
        g.ts_ms += 20 * 60_000;
        let turn = format!("b-turn-{i}");
        buf.extend(g.line(&Record::TurnStart(TurnStart {
            conversation: conv.map(str::to_owned),
            turn: Some(turn.clone()),
            ..Default::default()
        })));
        if i == 3 {
            continue; // never ended
        }
        g.ts_ms += 50 * 60_000;
        buf.extend(g.line(&Record::TurnEnd(TurnEnd {
            conversation: conv.map(str::to_owned),
            turn: Some(turn),
            outcome: Some(if i == 1 { "error" } else { "ok" }.into()),
            duration_ms: (i != 1).then_some(50 * 60_000),
            alloc_bytes: Some(1_000_000 * (i as u64 + 1)),
            freed_bytes: Some(10_000),
            output_bytes: Some(77),
            ..Default::default()
        })));
    }
    std::fs::write(j.join(dispatch_journal::SegmentName::new("dispatch", 900).file_name()), buf)
        .unwrap();
    j
}

fn drain(journal: &Path, db: &Path, batch_lines: usize) -> Summary {
    Collector::builder(journal, db)
        .retention(None)
        .batch_lines(batch_lines)
        .open()
        .unwrap()
        .drain_once()
        .unwrap()
}

/// (boot_no, conversation) -> (turns, ended, kept, alloc, output, active hours).
type Rollups = BTreeMap<(i64, String), (i64, i64, i64, i64, i64, Vec<i64>)>;
/// boot_no -> [(conversation, turn, kept, alloc)], best first.
type Tops = BTreeMap<i64, Vec<(String, String, i64, i64)>>;

/// The test journal drained in batches of 10,000 lines into `dir/traces.db`, opened read-only,
/// with its boots.
fn drained_read_only(dir: &Path) -> (Connection, Vec<dispatch_collector::query::Boot>) {
    let j = journal(dir);
    let db = dir.join("traces.db");
    drain(&j, &db, 10_000);
    let conn = dispatch_collector::schema::open_read_only(&db).unwrap();
    let boots = dispatch_collector::query::boots(&conn).unwrap();
    (conn, boots)
}

fn rollups(db: &Path) -> (Rollups, Tops) {
    let conn = dispatch_collector::schema::open_read_only(db).unwrap();
    let mut st = conn
        .prepare(
            "SELECT boot_no, conversation, turns, ended, kept_bytes, alloc_bytes, output_bytes,
                    first_hour_ms, active_hours FROM rollup_conversation",
        )
        .unwrap();
    let rows = st
        .query_map([], |r| {
            let hours = HourSet::from_stored(r.get(7)?, &r.get::<_, Vec<u8>>(8)?);
            Ok((
                (r.get(0)?, r.get(1)?),
                (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, hours.iter().collect()),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut tops = Tops::new();
    let mut st = conn
        .prepare(
            "SELECT boot_no, conversation, turn, kept_bytes, alloc_bytes FROM rollup_top_turns
             ORDER BY boot_no, kept_bytes DESC, turn, conversation",
        )
        .unwrap();
    for r in
        st.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))).unwrap()
    {
        let (b, t): (i64, (String, String, i64, i64)) = r.unwrap();
        tops.entry(b).or_default().push(t);
    }
    (rows, tops)
}

/// The same aggregates computed straight from the raw rows, without the collector's code.
fn from_raw_rows(db: &Path) -> (Rollups, Tops) {
    let conn = Connection::open(db).unwrap();
    let mut out = Rollups::new();
    let mut hours: BTreeMap<(i64, String), BTreeSet<i64>> = BTreeMap::new();
    let hour = |ts: i64| ts.div_euclid(HOUR_MS) * HOUR_MS;
    let mut st = conn
        .prepare("SELECT id >> 40, coalesce(conversation, ''), ts_ms FROM turn_starts")
        .unwrap();
    for r in st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap() {
        let (b, c, ts): (i64, String, i64) = r.unwrap();
        out.entry((b, c.clone())).or_default().0 += 1;
        hours.entry((b, c)).or_default().insert(hour(ts));
    }
    let mut st = conn
        .prepare(
            "SELECT id >> 40, coalesce(conversation, ''), ts_ms, duration_ms, alloc_bytes,
                    freed_bytes, output_bytes
             FROM turn_ends WHERE coalesce(outcome, '') <> 'sealed'",
        )
        .unwrap();
    type End = (i64, String, i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>);
    let ends: Vec<End> = st
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (b, c, ts, dur, alloc, freed, output) in ends {
        let e = out.entry((b, c.clone())).or_default();
        e.1 += 1;
        if let (Some(a), Some(f)) = (alloc, freed) {
            e.2 += a - f;
        }
        e.3 += alloc.unwrap_or(0);
        e.4 += output.unwrap_or(0);
        let mut h = hour(ts - dur.unwrap_or(0));
        while h <= ts {
            hours.entry((b, c.clone())).or_default().insert(h);
            h += HOUR_MS;
        }
    }
    for (k, v) in out.iter_mut() {
        v.5 = hours.remove(k).unwrap_or_default().into_iter().collect();
    }
    let mut tops = Tops::new();
    let mut st = conn
        .prepare(
            "SELECT id >> 40, coalesce(conversation, ''), coalesce(turn, ''),
                    alloc_bytes - freed_bytes, alloc_bytes
             FROM turn_ends WHERE alloc_bytes IS NOT NULL AND freed_bytes IS NOT NULL
               AND coalesce(outcome, '') <> 'sealed'
             ORDER BY 1, 4 DESC, 3, 2",
        )
        .unwrap();
    for r in
        st.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))).unwrap()
    {
        let (b, t): (i64, (String, String, i64, i64)) = r.unwrap();
        let top = tops.entry(b).or_default();
        if top.len() < dispatch_collector::schema::TOP_TURNS_KEPT {
            top.push(t);
        }
    }
    (out, tops)
}

#[test]
fn rollups_equal_aggregates_of_the_raw_turns_whatever_the_batches() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let want = from_raw_rows(&{
        let db = dir.path().join("one.db");
        drain(&j, &db, 1_000_000);
        db
    });
    assert_eq!(want.0.len(), 41 + 3, "A's conversations, B's two and B's turn without one");
    assert!(want.0.values().any(|v| v.1 < v.0), "some turns are open");
    assert!(want.0.values().any(|v| v.5.len() > 24), "a conversation active most hours");
    for (what, batch_lines) in [("one batch", 1_000_000), ("batches of 97 lines", 97)] {
        let db = dir.path().join(format!("{batch_lines}.db"));
        drain(&j, &db, batch_lines);
        let got = rollups(&db);
        assert_eq!(got.0, want.0, "{what}: rollup_conversation");
        assert_eq!(got.1, want.1, "{what}: rollup_top_turns");
    }
}

#[test]
fn a_replayed_journal_adds_nothing_to_the_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let db = dir.path().join("traces.db");
    let first = drain(&j, &db, 500);
    let before = rollups(&db);
    assert!(!before.0.is_empty() && !before.1.is_empty());
    // Every checkpoint rewound: every line is read and committed again, in other batches.
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "UPDATE segments SET offset_bytes = 0, line_no = 0, last_seq = NULL, state = 'open'",
        )
        .unwrap();
    }
    let again = drain(&j, &db, 333);
    assert_eq!(again.lines, first.lines, "the whole journal was read again");
    let segments = Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM segments", [], |r| r.get::<_, i64>(0))
        .unwrap() as u64;
    assert_eq!(again.records, segments, "only the segment headers count again, as records");
    assert_eq!(again.duplicates + segments, first.records);
    assert_eq!(rollups(&db), before, "no aggregate counted twice");
}

#[test]
fn migration_3_backfills_a_schema_2_database() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let db = dir.path().join("traces.db");
    drain(&j, &db, 1_000);
    let built = rollups(&db);
    {
        let conn = Connection::open(&db).unwrap();
        unpair_turns(&conn);
        conn.execute_batch(
            "DROP TABLE rollup_conversation; DROP TABLE rollup_top_turns; PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    // Read by this build before a collector migrates it: no rollups, and readers are told so.
    {
        let conn = dispatch_collector::schema::open_read_only(&db).unwrap();
        assert_eq!(dispatch_collector::query::conversation_rollups(&conn, 1).unwrap(), None);
        assert!(dispatch_collector::query::top_turns(&conn, 1).unwrap().is_empty());
    }
    Collector::builder(&j, &db).retention(None).open().unwrap();
    let conn = dispatch_collector::schema::open_read_only(&db).unwrap();
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, dispatch_collector::schema::SCHEMA_VERSION);
    assert_eq!(rollups(&db), built);
}

/// The open turns found in the boots' tails are those a scan of every turn finds: the same
/// conversations, with the same earliest open start.
#[test]
fn open_turns_are_found_from_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (conn, boots) = drained_read_only(dir.path());
    for b in &boots {
        let rows =
            dispatch_collector::query::conversation_rollups(&conn, b.boot_no).unwrap().unwrap();
        let open: std::collections::HashMap<&str, i64> =
            rows.iter().map(|r| (r.conversation.as_str(), r.turns - r.ended)).collect();
        let got = dispatch_collector::query::first_open_turns(
            &conn,
            b.boot_no,
            b.last_ts_ms.unwrap(),
            &open,
        )
        .unwrap();
        let mut st = conn
            .prepare(
                "SELECT coalesce(s.conversation, ''), min(s.ts_ms) FROM turn_starts s
                 WHERE s.id >> 40 = ?1 AND NOT EXISTS (SELECT 1 FROM turn_ends e
                     WHERE e.turn = s.turn AND e.id >> 40 = ?1 AND e.outcome <> 'sealed')
                 GROUP BY 1",
            )
            .unwrap();
        let want: std::collections::HashMap<String, i64> = st
            .query_map([b.boot_no], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(!want.is_empty(), "boot {} has open turns", b.boot);
        assert_eq!(got, want, "boot {}", b.boot);
        for r in &rows {
            assert_eq!(want.contains_key(&r.conversation), r.ended < r.turns, "{}", r.conversation);
        }
    }
}

/// `query::turns_started` (a key-range scan of the starts joined with their ends) returns what
/// the plain `LEFT JOIN` over every row returns, for windows that cut turns at either end, span
/// both boots, or hold the seal of a turn: the raw ranking the rollups are compared with.
#[test]
fn turns_started_is_the_left_join_of_starts_and_ends() {
    use dispatch_collector::query::{TimeRange, Turn, turns_started};
    let dir = tempfile::tempdir().unwrap();
    let (conn, boots) = drained_read_only(dir.path());
    let (a_first, b_last) = (boots[0].first_ts_ms.unwrap(), boots[1].last_ts_ms.unwrap());
    let mut st = conn
        .prepare(
            "SELECT s.conversation, s.turn, b.boot, s.ts_ms, e.ts_ms, e.outcome, e.duration_ms,
                    e.alloc_bytes, e.freed_bytes, s.provider, s.model, e.error
             FROM turn_starts s JOIN boots b ON b.boot_no = s.id >> 40
             LEFT JOIN turn_ends e ON e.conversation IS s.conversation AND e.turn = s.turn
             WHERE s.ts_ms >= ?1 AND s.ts_ms < ?2 ORDER BY s.id, e.id",
        )
        .unwrap();
    for (from, to) in [
        (i64::MIN, i64::MAX),
        (a_first + 3 * HOUR_MS + 17, a_first + 9 * HOUR_MS),
        (a_first + 29 * HOUR_MS, b_last - HOUR_MS),
        (b_last - 2 * HOUR_MS, b_last + 1),
    ] {
        let want: Vec<Turn> = st
            .query_map([from, to], |r| {
                Ok(Turn {
                    conversation: r.get(0)?,
                    turn: r.get(1)?,
                    boot: r.get(2)?,
                    start_ts_ms: r.get(3)?,
                    end_ts_ms: r.get(4)?,
                    outcome: r.get(5)?,
                    duration_ms: r.get(6)?,
                    alloc_bytes: r.get(7)?,
                    freed_bytes: r.get(8)?,
                    provider: r.get(9)?,
                    model: r.get(10)?,
                    error: r.get(11)?,
                })
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let got = turns_started(&conn, TimeRange { from_ms: from, to_ms: to }).unwrap();
        assert!(!want.is_empty(), "[{from}, {to})");
        assert_eq!(got, want, "[{from}, {to})");
    }
    let all = turns_started(&conn, TimeRange::ALL).unwrap();
    assert!(all.iter().any(|t| t.outcome.as_deref() == Some("sealed")), "a seal is joined");
    assert!(all.iter().any(|t| t.end_ts_ms.is_none()), "an open turn is listed");
}

/// Figures at the top of the range (a `u64` clamped to `i64::MAX`) in turns committed in
/// different batches saturate the sums instead of failing the ingest transaction.
#[test]
fn huge_figures_saturate_and_ingest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = synth::Gen::new(3);
    let mut buf = g.header(1);
    for i in 0..3 {
        let turn = format!("huge-{i}");
        g.ts_ms += 1_000;
        buf.extend(g.line(&Record::TurnStart(TurnStart {
            conversation: Some("conv-huge".into()),
            turn: Some(turn.clone()),
            ..Default::default()
        })));
        g.ts_ms += 1_000;
        buf.extend(g.line(&Record::TurnEnd(TurnEnd {
            conversation: Some("conv-huge".into()),
            turn: Some(turn),
            outcome: Some("ok".into()),
            duration_ms: Some(1_000),
            alloc_bytes: Some(u64::MAX),
            freed_bytes: Some(0),
            output_bytes: Some(u64::MAX),
            ..Default::default()
        })));
    }
    std::fs::write(
        dir.path().join(dispatch_journal::SegmentName::new("dispatch", 1).file_name()),
        buf,
    )
    .unwrap();
    let db = dir.path().join("traces.db");
    let s = drain(dir.path(), &db, 2);
    assert_eq!(s.lines, 7);
    let (rows, _) = rollups(&db);
    let r = &rows[&(1, "conv-huge".to_string())];
    assert_eq!((r.0, r.1, r.2, r.3, r.4), (3, 3, i64::MAX, i64::MAX, i64::MAX));
}

/// A row of the `turns` view: conversation, turn, start and end times.
type ViewRow = (Option<String>, Option<String>, Option<i64>, Option<i64>);

fn turns_view(conn: &Connection) -> Vec<ViewRow> {
    let mut st = conn
        .prepare("SELECT conversation, turn, start_ts_ms, end_ts_ms FROM turns ORDER BY 1, 2, 3, 4")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Takes a database this build wrote back to schema 3: turns unpaired, migration 1's indexes.
fn unpair_turns(conn: &Connection) {
    conn.execute_batch(dispatch_collector::schema::UNPAIR_TURNS_SQL).unwrap();
}

/// (start key, its `end_id`) for every start and (end key, its `start_id`) for every end, in
/// key order.
type Pairs = (Vec<(i64, Option<i64>)>, Vec<(i64, Option<i64>)>);

fn pairs(db: &Path) -> Pairs {
    let conn = Connection::open(db).unwrap();
    let read = |sql: &str| -> Vec<(i64, Option<i64>)> {
        let mut st = conn.prepare(sql).unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    (
        read("SELECT id, end_id FROM turn_starts ORDER BY id"),
        read("SELECT id, start_id FROM turn_ends ORDER BY id"),
    )
}

/// The pairing computed from the raw ids, without SQL: a start takes the first end (by key)
/// of its `(conversation, turn)`, an end the first start that took it; no turn id, no pair.
fn pairs_from_ids(db: &Path) -> Pairs {
    use std::collections::HashMap;
    let conn = Connection::open(db).unwrap();
    type Row = (i64, Option<String>, Option<String>);
    let read = |sql: &str| -> Vec<Row> {
        let mut st = conn.prepare(sql).unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let starts = read("SELECT id, conversation, turn FROM turn_starts ORDER BY id");
    let ends = read("SELECT id, conversation, turn FROM turn_ends ORDER BY id");
    let mut first_end: HashMap<(Option<String>, String), i64> = HashMap::new();
    for (id, c, t) in &ends {
        if let Some(t) = t {
            first_end.entry((c.clone(), t.clone())).or_insert(*id);
        }
    }
    let s: Vec<(i64, Option<i64>)> = starts
        .iter()
        .map(|(id, c, t)| {
            (*id, t.as_ref().and_then(|t| first_end.get(&(c.clone(), t.clone())).copied()))
        })
        .collect();
    let mut taken: HashMap<i64, i64> = HashMap::new();
    for (sid, e) in &s {
        if let Some(e) = e {
            taken.entry(*e).or_insert(*sid);
        }
    }
    let e = ends.iter().map(|(id, _, _)| (*id, taken.get(id).copied())).collect();
    (s, e)
}

/// Ingest pairs every turn's start with its end (whatever the batches, across boots for a
/// seal, and when the end is stored before its start); migration 4 pairs the same rows in a
/// database that predates it; and a read-only connection to a not yet migrated database
/// still joins turns by id.
#[test]
fn turns_are_paired_at_ingest_and_by_migration_4() {
    use dispatch_collector::query::{TimeRange, turns_started};
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let mut first: Option<Pairs> = None;
    for batch_lines in [1_000_000, 97] {
        let db = dir.path().join(format!("pairs-{batch_lines}.db"));
        drain(&j, &db, batch_lines);
        let got = pairs(&db);
        assert_eq!(got, pairs_from_ids(&db), "batches of {batch_lines} lines");
        let open = got.0.iter().filter(|(_, e)| e.is_none()).count();
        assert!(open > 0 && open < got.0.len() / 10, "{open} of {} starts open", got.0.len());
        assert!(got.1.iter().all(|(_, s)| s.is_some()), "every end has its start");
        if let Some(f) = &first {
            assert_eq!(&got, f, "batches of {batch_lines} lines");
        }
        first = Some(got);
    }

    // A boot whose later segment (with the end) is drained before the earlier one (with the
    // start): the start finds the stored end.
    let k = dir.path().join("reordered");
    std::fs::create_dir_all(&k).unwrap();
    let mut g = synth::Gen::new(77);
    let head = g.header(1);
    let start = g.line(&Record::TurnStart(TurnStart {
        conversation: Some("conv-late".into()),
        turn: Some("turn-late".into()),
        ..Default::default()
    }));
    let second = g.header(2);
    let end = g.line(&Record::TurnEnd(TurnEnd {
        conversation: Some("conv-late".into()),
        turn: Some("turn-late".into()),
        outcome: Some("ok".into()),
        ..Default::default()
    }));
    let seg = |n: u64| k.join(dispatch_journal::SegmentName::new("dispatch", n).file_name());
    std::fs::write(seg(2), [second, end].concat()).unwrap();
    let db = dir.path().join("reordered.db");
    drain(&k, &db, 10);
    assert_eq!(pairs(&db).1.len(), 1, "the end is stored");
    assert_eq!(pairs(&db).1[0].1, None, "and waits for its start");
    std::fs::write(seg(1), [head, start].concat()).unwrap();
    drain(&k, &db, 10);
    let got = pairs(&db);
    assert_eq!(got.0.len(), 1, "{got:?}");
    assert_eq!(got.0[0].1, Some(got.1[0].0), "{got:?}");
    assert_eq!(got.1[0].1, Some(got.0[0].0), "{got:?}");

    // Migration 4 over a database this build wrote, taken back to schema 3.
    let db = dir.path().join("pairs-1000000.db");
    let want = pairs(&db);
    let conn = Connection::open(&db).unwrap();
    let paired_view = turns_view(&conn);
    let ro = dispatch_collector::schema::open_read_only(&db).unwrap();
    let paired = turns_started(&ro, TimeRange::ALL).unwrap();
    drop(ro);
    unpair_turns(&conn);
    drop(conn);
    // Before a collector migrates it, this build reads it by ids (`=`: turns without a
    // conversation are not joined there, as before).
    let ro = dispatch_collector::schema::open_read_only(&db).unwrap();
    assert!(!dispatch_collector::schema::turns_paired(&ro).unwrap());
    let by_ids = turns_started(&ro, TimeRange::ALL).unwrap();
    drop(ro);
    let with_conversation = |v: &[dispatch_collector::query::Turn]| {
        v.iter().filter(|t| t.conversation.is_some()).cloned().collect::<Vec<_>>()
    };
    assert_eq!(with_conversation(&by_ids), with_conversation(&paired));
    assert!(paired.iter().any(|t| t.conversation.is_none() && t.end_ts_ms.is_some()));
    Collector::builder(&j, &db).retention(None).open().unwrap();
    assert_eq!(pairs(&db), want, "migration 4 pairs as ingest does");
    let conn = Connection::open(&db).unwrap();
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, dispatch_collector::schema::SCHEMA_VERSION);
    let view = turns_view(&conn);
    assert_eq!(view, paired_view, "the turns view after the migration");
    let indexes: Vec<String> = {
        let mut st = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name LIKE 'turn_%' ORDER BY 1")
            .unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(indexes, ["turn_ends_unpaired", "turn_starts_open"]);
}
