//! Hostile journals and directories: a far-future line cannot move retention's cutoff, a
//! symlinked segment is never read, an unsafe journal directory is refused, and the WAL is
//! truncated when a drain ends.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use dispatch_collector::{Collector, CollectorError, schema, status};
use dispatch_synth::mix::Gen;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn total_records(db: &Path) -> i64 {
    let conn = schema::open_read_only(db).unwrap();
    status::status(&conn).unwrap().total_records()
}

/// A segment of `n` records of boot `boot_no`, the first line at `t0_ms`, 40 ms apart.
fn segment(dir: &Path, boot_no: u64, seg: u64, t0_ms: i64, n: u64) -> Vec<u8> {
    let mut g = Gen::new(boot_no);
    g.ts_ms = t0_ms;
    let mut bytes = g.header(seg);
    for _ in 0..n {
        let r = g.next_record();
        bytes.extend(g.line(&r));
    }
    let name = dispatch_journal::SegmentName::new("dispatch", seg).file_name();
    std::fs::write(dir.join(name), &bytes).unwrap();
    bytes
}

#[test]
fn a_line_dated_9999_does_not_delete_the_real_rows() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("journal");
    std::fs::create_dir(&j).unwrap();
    let db = dir.path().join("traces.db");
    // Real records from the last ten minutes, and one boot whose only line is dated 9999.
    segment(&j, 1, 1, now_ms() - 600_000, 500);
    let far = dispatch_journal::Timestamp::parse_rfc3339("9999-01-01T00:00:00.000Z")
        .unwrap()
        .unix_millis();
    segment(&j, 2, 2, far, 1);
    let mut c = Collector::builder(&j, &db)
        .retention(Some(Duration::from_secs(30 * 86_400)))
        .open()
        .unwrap();
    c.drain_once().unwrap();
    let stored = total_records(&db);
    assert!(stored >= 500, "{stored}");
    // Two more passes, each applying retention.
    c.drain_once().unwrap();
    c.drain_once().unwrap();
    assert_eq!(total_records(&db), stored, "retention deleted real rows");
}

#[test]
fn retention_still_removes_what_is_old_against_now() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("journal");
    std::fs::create_dir(&j).unwrap();
    let db = dir.path().join("traces.db");
    // 40 days old, and recent.
    segment(&j, 1, 1, now_ms() - 40 * 86_400_000, 200);
    segment(&j, 2, 2, now_ms() - 60_000, 200);
    let mut c = Collector::builder(&j, &db)
        .retention(Some(Duration::from_secs(30 * 86_400)))
        .open()
        .unwrap();
    c.drain_once().unwrap();
    c.drain_once().unwrap();
    let left = total_records(&db);
    assert!((200..=202).contains(&left), "only the recent boot's rows are left: {left}");
}

#[test]
fn a_symlinked_segment_is_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("journal");
    std::fs::create_dir(&j).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    segment(&elsewhere, 5, 1, now_ms(), 100);
    let name = dispatch_journal::SegmentName::new("dispatch", 1).file_name();
    std::os::unix::fs::symlink(elsewhere.join(&name), j.join(&name)).unwrap();
    segment(&j, 6, 2, now_ms(), 10);
    let db = dir.path().join("traces.db");
    let mut c = Collector::builder(&j, &db).retention(None).open().unwrap();
    c.drain_once().unwrap();
    assert_eq!(total_records(&db), 11, "the real segment's 11 lines, none through the symlink");
}

#[test]
fn an_unsafe_journal_directory_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("journal");
    std::fs::create_dir(&j).unwrap();
    segment(&j, 1, 1, now_ms(), 10);
    std::fs::set_permissions(&j, std::fs::Permissions::from_mode(0o777)).unwrap();
    let db = dir.path().join("traces.db");
    let mut c = Collector::builder(&j, &db).retention(None).open().unwrap();
    let e = c.drain_once().unwrap_err();
    drop(c);
    assert!(matches!(e, CollectorError::JournalDirUnsafe { .. }), "{e}");
    assert_eq!(e.code(), "collector_journal_dir_unsafe");
    assert!(e.to_string().contains("chmod 700"), "{e}");
    // A symlink to a good directory is refused too.
    std::fs::set_permissions(&j, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = dir.path().join("journal-link");
    std::os::unix::fs::symlink(&j, &link).unwrap();
    let mut c = Collector::builder(&link, &db).retention(None).open().unwrap();
    let e = c.drain_once().unwrap_err();
    drop(c);
    assert!(e.to_string().contains("symlink"), "{e}");
    // Fixed, it drains.
    let mut c = Collector::builder(&j, &db).retention(None).open().unwrap();
    assert_eq!(c.drain_once().unwrap().issues.len(), 0);
}

#[test]
fn the_wal_is_truncated_when_a_drain_ends() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("journal");
    std::fs::create_dir(&j).unwrap();
    segment(&j, 1, 1, now_ms(), 20_000);
    let db = dir.path().join("traces.db");
    let mut c = Collector::builder(&j, &db).retention(None).open().unwrap();
    let s = c.drain_once().unwrap();
    assert!(s.issues.iter().all(|i| i.code != "wal_checkpoint_failed"), "{:?}", s.issues);
    let wal = dir.path().join("traces.db-wal");
    let wal_bytes = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_bytes, 0, "the final checkpoint truncates the WAL");
}
