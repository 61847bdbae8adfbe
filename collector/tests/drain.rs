//! Exactly-once draining against real journal directories and real SQLite files: torn lines,
//! garbage, renamed copies, truncation, the drained markers, and the binary's lock, modes and
//! output.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use dispatch_synth::mix as synth;

use std::path::{Path, PathBuf};
use std::process::Command;

use dispatch_collector::{Collector, Summary, schema, status};
use rusqlite::Connection;

fn drain(dir: &Path, db: &Path) -> Summary {
    Collector::builder(dir, db).retention(None).open().unwrap().drain_once().unwrap()
}

fn total_records(db: &Path) -> i64 {
    let conn = schema::open_read_only(db).unwrap();
    status::status(&conn).unwrap().total_records()
}

fn lines_in(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "ndjson") {
            n += std::fs::read(&p).unwrap().iter().filter(|&&b| b == b'\n').count() as u64;
        }
    }
    n
}

fn seg(n: u64) -> String {
    dispatch_journal::SegmentName::new("dispatch", n).file_name()
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn ingest_errors(db: &Path) -> Vec<(String, i64, i64, String)> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT file_name, offset_bytes, length_bytes, code FROM ingest_errors ORDER BY error_id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_second_drain_stores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let j = dir.path().join("journal");
    std::fs::create_dir(&j).unwrap();
    let (n, names) = synth::write_journal(&j, 1, 1, 5_000, 256 << 10);
    assert!(names.len() > 2, "several segments");
    let s = drain(&j, &db);
    assert_eq!((s.lines, s.records + s.unknown_kinds, s.quarantined, s.duplicates), (n, n, 0, 0));
    assert_eq!(total_records(&db), n as i64);
    let again = drain(&j, &db);
    assert_eq!((again.lines, again.records), (0, 0));
    assert_eq!(total_records(&db), n as i64);
    let conn = schema::open_read_only(&db).unwrap();
    let st = status::status(&conn).unwrap();
    assert_eq!(st.boots.len(), 1);
    assert_eq!(st.boots[0].1, n as i64);
    assert_eq!(st.boots[0].2, Some(n as i64 - 1));
}

#[test]
fn a_torn_last_line_completed_later_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let mut g = synth::Gen::new(7);
    let path = dir.path().join(seg(1));
    let mut bytes = g.header(1);
    for _ in 0..10 {
        let r = g.sample();
        bytes.extend(g.line(&r));
    }
    let r = g.sample();
    let last = g.line(&r);
    let cut = last.len() / 2;
    bytes.extend_from_slice(&last[..cut]);
    std::fs::write(&path, &bytes).unwrap();

    let s = drain(dir.path(), &db);
    assert_eq!((s.lines, s.quarantined), (11, 0), "the partial line is not consumed");
    assert_eq!(total_records(&db), 11);

    append(&path, &last[cut..]);
    let s = drain(dir.path(), &db);
    assert_eq!((s.lines, s.records, s.duplicates, s.quarantined), (1, 1, 0, 0));
    assert_eq!(total_records(&db), 12);
    assert!(ingest_errors(&db).is_empty());
}

#[test]
fn a_torn_tail_of_a_closed_segment_is_quarantined_as_torn() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let mut g = synth::Gen::new(8);
    let mut one = g.header(1);
    let r = g.sample();
    one.extend(g.line(&r));
    let r = g.sample();
    let torn = g.line(&r);
    one.extend_from_slice(&torn[..40]);
    let torn_at = one.len() - 40;
    std::fs::write(dir.path().join(seg(1)), &one).unwrap();
    let s = drain(dir.path(), &db);
    assert_eq!((s.lines, s.quarantined), (2, 0), "no successor yet: wait for the rest");

    let mut two = g.header(2);
    let r = g.sample();
    two.extend(g.line(&r));
    std::fs::write(dir.path().join(seg(2)), &two).unwrap();
    let s = drain(dir.path(), &db);
    assert_eq!((s.quarantined, s.records), (1, 2));
    let errs = ingest_errors(&db);
    assert_eq!(errs, vec![(seg(1), torn_at as i64, 40, "journal_line_torn".to_string())]);
    assert!(dir.path().join(format!("{}.drained", seg(1))).exists());
    // A late completion of the torn line can never land: the segment is closed.
    append(&dir.path().join(seg(1)), &torn[40..]);
    let s = drain(dir.path(), &db);
    assert_eq!(s.records, 0);
}

#[test]
fn garbage_lines_are_quarantined_with_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let mut g = synth::Gen::new(9);
    let mut bytes = g.header(1);
    let mut expect = Vec::new();
    let garbage: [&[u8]; 4] =
        [b"{\"v\":1,\"ts\":", b"[1,2,3]", b"\x00\xff\xfe binary \x01", b"{\"v\":1}"];
    let codes = [
        "journal_line_invalid",
        "journal_line_not_object",
        "journal_line_not_utf8",
        "journal_field_missing",
    ];
    for (bad, code) in garbage.iter().zip(codes) {
        let r = g.sample();
        bytes.extend(g.line(&r));
        expect.push((seg(1), bytes.len() as i64, bad.len() as i64 + 1, code.to_string()));
        bytes.extend_from_slice(bad);
        bytes.push(b'\n');
    }
    let r = g.sample();
    bytes.extend(g.line(&r));
    std::fs::write(dir.path().join(seg(1)), &bytes).unwrap();

    let s = drain(dir.path(), &db);
    assert_eq!((s.lines, s.records, s.quarantined), (10, 6, 4));
    assert_eq!(ingest_errors(&db), expect);
    assert_eq!(s.issues.len(), 4);
    assert_eq!(s.issues[0].line_no, Some(3));
    let conn = Connection::open(&db).unwrap();
    let blob: Vec<u8> = conn
        .query_row(
            "SELECT bytes FROM ingest_errors WHERE code = 'journal_line_not_utf8'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(blob, b"\x00\xff\xfe binary \x01\n");
    let samples: i64 = conn.query_row("SELECT count(*) FROM samples", [], |r| r.get(0)).unwrap();
    assert_eq!(samples, 5);
}

#[test]
fn a_copy_of_a_segment_under_another_name_is_not_ingested_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let (n, names) = synth::write_journal(dir.path(), 3, 1, 3_000, 200 << 10);
    let s = drain(dir.path(), &db);
    assert_eq!(s.lines, n);
    // Restored from a backup under a later number, and renamed: same headers, same segments.
    std::fs::copy(dir.path().join(&names[0]), dir.path().join(seg(90))).unwrap();
    std::fs::rename(dir.path().join(&names[1]), dir.path().join(seg(91))).unwrap();
    let s = drain(dir.path(), &db);
    assert_eq!((s.lines, s.records, s.duplicates), (0, 0, 0));
    assert_eq!(total_records(&db), n as i64);

    // Both present before the first drain, in a fresh database: still once.
    let db2 = dir.path().join("fresh.db");
    let s = drain(dir.path(), &db2);
    assert_eq!((s.lines, s.records + s.unknown_kinds, s.duplicates), (n, n, 0));
    assert_eq!(total_records(&db2), n as i64);
}

#[test]
fn a_file_truncated_below_its_checkpoint_is_reported_not_reread() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let (n, names) = synth::write_journal(dir.path(), 4, 1, 400, 1 << 20);
    assert_eq!(names.len(), 1);
    let path = dir.path().join(&names[0]);
    let s = drain(dir.path(), &db);
    assert_eq!(s.lines, n);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let s = drain(dir.path(), &db);
    assert_eq!((s.lines, s.records, s.truncated_segments), (0, 0, 1));
    assert_eq!(s.issues[0].code, "segment_truncated");
    let errs = ingest_errors(&db);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].3, "segment_truncated");
    assert_eq!(errs[0].1, (len / 2) as i64);
    // Reported once, and never re-read even when it grows again.
    append(&path, b"{}\n");
    let s = drain(dir.path(), &db);
    assert_eq!((s.lines, s.truncated_segments), (0, 0));
    assert_eq!(total_records(&db), n as i64);
}

#[test]
fn drained_markers_appear_only_for_closed_fully_drained_segments() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let (_, names) = synth::write_journal(dir.path(), 5, 1, 3_000, 300 << 10);
    assert!(names.len() >= 3);
    let last = names.last().unwrap();
    // The last segment gets a torn tail: it is open, so not drained.
    append(&dir.path().join(last), b"{\"v\":1,\"ts\":\"2026");
    drain(dir.path(), &db);
    for name in &names {
        let marker = dir.path().join(format!("{name}.drained"));
        assert_eq!(marker.exists(), name != last, "{name}");
    }
    // A successor closes the last one; its torn tail is quarantined, then it is drained.
    let mut g = synth::Gen::new(6);
    let next = seg(50);
    std::fs::write(dir.path().join(&next), g.header(50)).unwrap();
    let s = drain(dir.path(), &db);
    assert_eq!(s.quarantined, 1);
    assert!(dir.path().join(format!("{last}.drained")).exists());
    assert!(!dir.path().join(format!("{next}.drained")).exists());
    // Private like the segments they mark (the drill's doctor found them 0644).
    use std::os::unix::fs::PermissionsExt as _;
    for name in &names {
        let mode = std::fs::metadata(dir.path().join(format!("{name}.drained")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}.drained");
    }
}

#[test]
fn every_kind_lands_in_its_table() {
    use dispatch_journal::Record;
    use dispatch_journal::record::*;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let mut g = synth::Gen::new(11);
    let mut bytes = g.header(1);
    let recs = vec![
        Record::ProcessStart(ProcessStart {
            pid: Some(77),
            version: Some("0.1.0".into()),
            ..Default::default()
        }),
        Record::TurnStart(TurnStart {
            conversation: Some("c1".into()),
            turn: Some("t1".into()),
            ..Default::default()
        }),
        Record::TurnEnd(TurnEnd {
            conversation: Some("c1".into()),
            turn: Some("t1".into()),
            outcome: Some("ok".into()),
            alloc_bytes: Some(10),
            freed_bytes: Some(4),
            ..Default::default()
        }),
        Record::Panic(Panic {
            message: Some("boom".into()),
            fatal: Some(false),
            ..Default::default()
        }),
        Record::Crash(Crash {
            signal: Some("SIGSEGV".into()),
            fault_address: Some(HexU64(0x10)),
            ..Default::default()
        }),
        Record::Exit(Exit { signal: Some("SIGSEGV".into()), ..Default::default() }),
        Record::ErrorUnhandled(ErrorUnhandled { message: Some("e".into()), ..Default::default() }),
        Record::ConversationMemory(ConversationMemory {
            conversation: "c1".into(),
            ..Default::default()
        }),
        Record::JournalDropped(JournalDropped { count: 3 }),
    ];
    for r in &recs {
        bytes.extend(g.line(r));
    }
    let unknown = format!(
        "{{\"v\":1,\"ts\":\"2026-06-28T00:00:01.000Z\",\"kind\":\"future.kind\",\"boot\":\"{}\",\"seq\":{},\"service\":\"dispatch\",\"x\":1}}\n",
        g.lines.boot, g.lines.seq
    );
    bytes.extend(unknown.as_bytes());
    bytes.extend(b"{\"v\":2,\"whatever\":true}\n");
    std::fs::write(dir.path().join(seg(1)), &bytes).unwrap();
    let s = drain(dir.path(), &db);
    assert_eq!((s.records, s.unknown_kinds, s.too_new, s.quarantined), (10, 2, 1, 0));
    let conn = schema::open_read_only(&db).unwrap();
    let st = status::status(&conn).unwrap();
    for kind in [
        "journal.segment",
        "process.start",
        "turn.start",
        "turn.end",
        "panic",
        "crash",
        "exit",
        "error.unhandled",
        "conversation.memory",
        "journal.dropped",
        "future.kind",
    ] {
        assert_eq!(st.kinds.get(kind), Some(&1), "{kind}: {:?}", st.kinds);
    }
    let turns = dispatch_collector::query::turns_for_conversation(&conn, "c1").unwrap();
    assert_eq!(turns.len(), 1);
    assert_eq!(
        (turns[0].outcome.as_deref(), turns[0].alloc_bytes, turns[0].freed_bytes),
        (Some("ok"), Some(10), Some(4))
    );
    assert!(turns[0].start_ts_ms.is_some() && turns[0].end_ts_ms.is_some());
    let boots = dispatch_collector::query::boots(&conn).unwrap();
    assert_eq!((boots[0].pid, boots[0].version.as_deref()), (Some(77), Some("0.1.0")));
    let crashes =
        dispatch_collector::query::crashes(&conn, dispatch_collector::query::TimeRange::ALL)
            .unwrap();
    assert_eq!(crashes[0].fault_address.as_deref(), Some("0x0000000000000010"));
    let exits =
        dispatch_collector::query::exits(&conn, dispatch_collector::query::TimeRange::ALL).unwrap();
    assert_eq!((exits[0].signal.as_deref(), exits[0].status), (Some("SIGSEGV"), None));
}

// ---- The binary ------------------------------------------------------------------------------

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dispatch-collector"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DISPATCH_") {
            c.env_remove(k);
        }
    }
    c
}

fn journal_with(lines: u64) -> (tempfile::TempDir, PathBuf, PathBuf, u64) {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("journal");
    std::fs::create_dir(&j).unwrap();
    let (n, _) = synth::write_journal(&j, 21, 1, lines, 256 << 10);
    let db = dir.path().join("traces.db");
    (dir, j, db, n)
}

#[test]
fn the_binary_drains_and_reports_json() {
    let (_dir, j, db, n) = journal_with(2_000);
    let out = bin().arg("--journal").arg(&j).arg("--db").arg(&db).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["lines"], n);
    assert_eq!(v["quarantined"], 0);
    assert_eq!(v["duplicates"], 0);
    assert_eq!(v["records"].as_u64().unwrap() + v["unknown_kinds"].as_u64().unwrap(), n);
    let out = bin().arg("--db").arg(&db).arg("--status").arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["records"], n);
    assert_eq!(st["boots"][0]["records"], n);
    assert_eq!(st["boots"][0]["last_seq"], n - 1);
    assert!(st["kinds"]["memory.sample"].as_u64().unwrap() > 0);
    assert_eq!(lines_in(&j), n);
}

#[test]
fn the_binary_exits_1_and_lists_skipped_lines() {
    let (_dir, j, db, _) = journal_with(100);
    append(&j.join(seg(1)), b"not json\n");
    let out = bin().arg("--journal").arg(&j).arg("--db").arg(&db).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}/{}:101: journal_line_not_object", j.display(), seg(1))),
        "{err}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("101 lines, 100 records, 1 quarantined"), "{text}");
}

#[test]
fn database_files_are_0600_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, j, db, _) = journal_with(500);
    let script = format!(
        "umask 000; exec '{}' --journal '{}' --db '{}'",
        env!("CARGO_BIN_EXE_dispatch-collector"),
        j.display(),
        db.display()
    );
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut checked = 0;
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        if let Ok(m) = std::fs::metadata(&p) {
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{}", p.display());
            checked += 1;
        }
    }
    assert!(checked >= 2, "the database and its lock exist");
    // While a connection is open the WAL files exist: check them too.
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS probe (x INTEGER); INSERT INTO probe VALUES (1);",
    )
    .unwrap();
    for suffix in ["-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            p.display()
        );
    }
}

#[test]
fn a_second_collector_is_refused_with_a_clear_message() {
    let (_dir, j, db, _) = journal_with(100);
    let _held = Collector::builder(&j, &db).open().unwrap();
    let out = bin().arg("--journal").arg(&j).arg("--db").arg(&db).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another dispatch-collector is already draining into this database"),
        "{err}"
    );
    assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
}

#[test]
fn follow_picks_up_new_segments_and_commits_on_sigterm() {
    let (_dir, j, db, n) = journal_with(1_000);
    let mut child = bin()
        .arg("--journal")
        .arg(&j)
        .arg("--db")
        .arg(&db)
        .arg("--follow")
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Whatever happens below, the follower does not outlive the test.
    struct Reap(Option<std::process::Child>);
    impl Drop for Reap {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let mut reap = Reap(Some(child));
    let wait_for = |want: i64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let got = schema::open_read_only(&db)
                .ok()
                .and_then(|c| status::status(&c).ok())
                .map(|s| s.total_records());
            if got == Some(want) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "waited for {want} records, have {got:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    wait_for(n as i64);
    let (m, _) = synth::write_journal(&j, 22, 100, 700, 256 << 10);
    wait_for((n + m) as i64);
    // kill(1) sends SIGTERM without unsafe code in the test.
    let st = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
    assert!(st.success());
    let status = reap.0.take().unwrap().wait().unwrap();
    assert!(status.success(), "exit {status:?}");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut { stdout }, &mut text).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["lines"], n + m);
    assert_eq!(total_records(&db), (n + m) as i64);
}

#[test]
fn a_file_without_a_header_is_reported_once_and_closes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("traces.db");
    let mut g = synth::Gen::new(12);
    let mut one = g.header(1);
    let r = g.sample();
    one.extend(g.line(&r));
    one.extend_from_slice(b"{\"v\":1,\"ts\":\"2026-06-28T00:"); // the writer is mid-line
    std::fs::write(dir.path().join(seg(1)), &one).unwrap();
    std::fs::write(dir.path().join(seg(9)), b"PK\x03\x04 not a journal\n").unwrap();
    for _ in 0..2 {
        let s = drain(dir.path(), &db);
        assert_eq!(s.records, if s.lines > 0 { 2 } else { 0 });
    }
    let errs = ingest_errors(&db);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        (errs[0].0.as_str(), errs[0].3.as_str()),
        (seg(9).as_str(), "segment_header_missing")
    );
    assert!(!dir.path().join(format!("{}.drained", seg(1))).exists(), "segment 1 is still open");
    assert_eq!(total_records(&db), 2);
}

#[test]
fn var_dir_gives_the_default_journal_and_database_and_help_names_the_variables() {
    let dir = tempfile::tempdir().unwrap();
    let var = dir.path().join("var");
    std::fs::create_dir_all(var.join("journal")).unwrap();
    let (n, _) = synth::write_journal(&var.join("journal"), 31, 1, 300, 1 << 20);
    let out = bin().env("DISPATCH_VAR_DIR", &var).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(total_records(&var.join("traces.db")), n as i64);
    let out = bin().arg("--var-dir").arg(&var).arg("--status").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{n} records")));
    let help = String::from_utf8(bin().arg("--help").output().unwrap().stdout).unwrap();
    for name in [
        "DISPATCH_VAR_DIR",
        "DISPATCH_JOURNAL_DIR",
        "DISPATCH_TRACES_DB",
        "--journal-dir",
        "--traces-db",
    ] {
        assert!(help.contains(name), "--help names {name}:\n{help}");
    }
}

#[test]
fn print_man_writes_a_roff_page_naming_the_flags() {
    let out = bin().arg("--print-man").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = String::from_utf8(out.stdout).unwrap();
    let title = page.lines().find(|l| !l.starts_with(".ie") && !l.starts_with(".el")).unwrap();
    assert!(title.starts_with(".TH dispatch-collector 1"), "{page}");
    for name in ["\\-\\-follow", "\\-\\-retention\\-days", "DISPATCH_TRACES_DB"] {
        assert!(page.contains(name), "the page names {name}:\n{page}");
    }
    assert!(!page.contains("print\\-man"), "the flag itself is hidden");
}
