//! The traces database: file permissions, the one-writer lock, pragmas and versioned
//! migrations (`PRAGMA user_version`).
//!
//! Every table is `STRICT`; timestamps are integer Unix milliseconds (`*_ts_ms`, `ts_ms`).
//! Rows of a record kind are keyed by `id = (boot_no << 40) | seq` (see [`record_key`]), an
//! `INTEGER PRIMARY KEY`, which is both the exactly-once backstop (a replayed line hits the
//! same key) and time order within a boot, so the hot tables need no secondary index.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::CollectorError;

/// Bits of a record key that hold `seq`: `id = (boot_no << SEQ_BITS) | seq`.
pub const SEQ_BITS: u32 = 40;
/// The largest `seq` a record key can hold (2^40 - 1, about 35,000 years at 1,000 lines/s).
pub const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;

/// The key of line `seq` of boot number `boot_no`: `(boot_no << 40) | seq`. `None` when `seq`
/// is over [`MAX_SEQ`].
pub fn record_key(boot_no: i64, seq: u64) -> Option<i64> {
    if seq <= MAX_SEQ { Some((boot_no << SEQ_BITS) | seq as i64) } else { None }
}

/// The `(boot_no, seq)` of a record key.
pub fn split_key(id: i64) -> (i64, u64) {
    (id >> SEQ_BITS, (id & MAX_SEQ as i64) as u64)
}

/// Mode of the database, its `-wal`/`-shm` files and the lock file: owner read/write only,
/// whatever the umask. Traces hold conversation ids, error messages and backtraces.
pub const DB_FILE_MODE: u32 = 0o600;

/// SQLite page size for a new database. Measured on the 2-core bench machine with single-row
/// inserts (docs/BENCHMARKS.md, "Collector"): 4 KiB pages cost the writer thread less CPU than
/// 8 or 16 KiB (less to copy per cell insert, fewer WAL bytes per commit), and close faster.
pub const DEFAULT_PAGE_SIZE_BYTES: u32 = 4096;

/// Schema migrations; entry `i` moves `user_version` from `i` to `i + 1`. Never edit a shipped
/// entry: add one.
const MIGRATIONS: &[&str] = &[MIGRATION_1, MIGRATION_2, MIGRATION_3, MIGRATION_4];

/// The schema version this build migrates to.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The `turns` view's columns from a start `s` and its end `e` (both versions of the view).
macro_rules! turns_view_start_columns {
    () => {
        r#"    SELECT s.conversation, s.turn, s.id >> 40 AS boot_no, s.ts_ms AS start_ts_ms,
           e.ts_ms AS end_ts_ms, s.provider, s.model, e.outcome, e.duration_ms, e.steps,
           e.tool_calls, e.output_bytes, e.tool_output_truncated, e.alloc_bytes,
           e.freed_bytes, e.error
"#
    };
}

/// The `turns` view's columns from an end `e` without a start (both versions of the view).
macro_rules! turns_view_end_columns {
    () => {
        r#"    SELECT e.conversation, e.turn, e.id >> 40, NULL, e.ts_ms, NULL, NULL, e.outcome,
           e.duration_ms, e.steps, e.tool_calls, e.output_bytes, e.tool_output_truncated,
           e.alloc_bytes, e.freed_bytes, e.error
"#
    };
}

/// Migration 1's `turns` view (joined by `(conversation, turn)`), which
/// [`UNPAIR_TURNS_SQL`] puts back.
macro_rules! turns_view_by_ids {
    () => {
        concat!(
        r#"-- One row per turn: its start joined with its end by (conversation, turn id). A turn sealed
-- by the next boot has its end under that boot. Ends without a start (the start was never
-- drained, or retention removed it) are listed with a NULL start.
CREATE VIEW turns AS
"#,
        turns_view_start_columns!(),
        r#"    FROM turn_starts s
    LEFT JOIN turn_ends e ON e.conversation = s.conversation AND e.turn = s.turn
    UNION ALL
"#,
        turns_view_end_columns!(),
        r#"    FROM turn_ends e
    WHERE NOT EXISTS (SELECT 1 FROM turn_starts s
                      WHERE s.conversation = e.conversation AND s.turn = e.turn);

"#
        )
    };
}

const MIGRATION_1: &str = concat!(
    r#"
CREATE TABLE boots (
    boot_no       INTEGER PRIMARY KEY,
    boot          TEXT NOT NULL UNIQUE,
    service       TEXT,
    first_ts_ms   INTEGER,
    last_ts_ms    INTEGER,
    first_seq     INTEGER,
    last_seq      INTEGER,
    records       INTEGER NOT NULL DEFAULT 0,
    pid           INTEGER,
    version       TEXT,
    build_id      TEXT,
    git_sha       TEXT,
    host          TEXT,
    started_ts_ms INTEGER,
    stopped_ts_ms INTEGER,
    stop_reason   TEXT
) STRICT;

CREATE TABLE segments (
    segment_id    INTEGER PRIMARY KEY,
    boot_no       INTEGER NOT NULL,
    segment       INTEGER NOT NULL,
    service       TEXT NOT NULL,
    file_name     TEXT NOT NULL,
    header_seq    INTEGER NOT NULL,
    created_ts_ms INTEGER,
    pid           INTEGER,
    writer        TEXT,
    offset_bytes  INTEGER NOT NULL,
    line_no       INTEGER NOT NULL,
    last_seq      INTEGER,
    state         TEXT NOT NULL CHECK (state IN ('open', 'closed', 'truncated')),
    size_bytes    INTEGER,
    drained_ts_ms INTEGER,
    UNIQUE (boot_no, segment)
) STRICT;

CREATE TABLE samples (
    id                   INTEGER PRIMARY KEY,
    ts_ms                INTEGER NOT NULL,
    rss                  INTEGER,
    hwm                  INTEGER,
    rss_anon             INTEGER,
    rss_file             INTEGER,
    threads              INTEGER,
    je_allocated         INTEGER,
    je_active            INTEGER,
    je_resident          INTEGER,
    je_mapped            INTEGER,
    je_retained          INTEGER,
    je_metadata          INTEGER,
    cg_current           INTEGER,
    cg_peak              INTEGER,
    cg_high              INTEGER,
    cg_max               INTEGER,
    cg_events_high       INTEGER,
    cg_events_max        INTEGER,
    cg_events_oom        INTEGER,
    cg_events_oom_kill   INTEGER,
    conversations_active INTEGER,
    turns_in_flight      INTEGER,
    queue_depth          INTEGER,
    conversations_loaded INTEGER,
    state_bytes          INTEGER,
    uptime_ms            INTEGER,
    cost_us              INTEGER,
    dropped              INTEGER
) STRICT;

CREATE TABLE conversation_memory (
    id            INTEGER PRIMARY KEY,
    ts_ms         INTEGER NOT NULL,
    conversation  TEXT NOT NULL,
    turns         INTEGER,
    history_bytes INTEGER,
    live_bytes    INTEGER,
    alloc_bytes   INTEGER,
    freed_bytes   INTEGER
) STRICT;

CREATE TABLE turn_starts (
    id           INTEGER PRIMARY KEY,
    ts_ms        INTEGER NOT NULL,
    conversation TEXT,
    turn         TEXT,
    provider     TEXT,
    model        TEXT
) STRICT;
CREATE INDEX turn_starts_by_conversation ON turn_starts (conversation, turn);

CREATE TABLE turn_ends (
    id                    INTEGER PRIMARY KEY,
    ts_ms                 INTEGER NOT NULL,
    conversation          TEXT,
    turn                  TEXT,
    outcome               TEXT,
    duration_ms           INTEGER,
    steps                 INTEGER,
    tool_calls            INTEGER,
    output_bytes          INTEGER,
    tool_output_truncated INTEGER,
    alloc_bytes           INTEGER,
    freed_bytes           INTEGER,
    error                 TEXT
) STRICT;
CREATE INDEX turn_ends_by_conversation ON turn_ends (conversation, turn);

"#,
    turns_view_by_ids!(),
    r#"CREATE TABLE crashes (
    id                   INTEGER PRIMARY KEY,
    ts_ms                INTEGER NOT NULL,
    signal               TEXT,
    signo                INTEGER,
    code                 INTEGER,
    fault_address        TEXT,
    thread               INTEGER,
    thread_name          TEXT,
    minidump             TEXT,
    minidump_bytes       INTEGER,
    dump_error           TEXT,
    build_id             TEXT,
    uptime_ms            INTEGER,
    last_sample          TEXT,
    active_conversations TEXT
) STRICT;

CREATE TABLE exits (
    id          INTEGER PRIMARY KEY,
    ts_ms       INTEGER NOT NULL,
    status      INTEGER,
    signal      TEXT,
    signo       INTEGER,
    core_dumped INTEGER,
    oom_killed  INTEGER,
    uptime_ms   INTEGER,
    pid         INTEGER,
    exited_boot TEXT
) STRICT;

CREATE TABLE panics (
    id           INTEGER PRIMARY KEY,
    ts_ms        INTEGER NOT NULL,
    message      TEXT,
    location     TEXT,
    thread       TEXT,
    backtrace    TEXT,
    conversation TEXT,
    turn         TEXT,
    fatal        INTEGER
) STRICT;

CREATE TABLE errors (
    id                   INTEGER PRIMARY KEY,
    ts_ms                INTEGER NOT NULL,
    message              TEXT,
    code                 TEXT,
    source               TEXT,
    conversation         TEXT,
    turn                 TEXT,
    backtrace            TEXT,
    active_conversations TEXT,
    memory               TEXT
) STRICT;

-- Every other kind, known or not, as the raw line (process.start, process.stop, pressure,
-- heap.profile, conversation.repair, journal.dropped, and kinds newer than this build).
CREATE TABLE events (
    id    INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    kind  TEXT NOT NULL,
    body  TEXT NOT NULL
) STRICT;

CREATE TABLE ingest_errors (
    error_id       INTEGER PRIMARY KEY,
    segment_id     INTEGER,
    file_name      TEXT NOT NULL,
    offset_bytes   INTEGER NOT NULL,
    line_no        INTEGER,
    length_bytes   INTEGER NOT NULL,
    code           TEXT NOT NULL,
    reason         TEXT NOT NULL,
    bytes          BLOB,
    noticed_ts_ms  INTEGER NOT NULL
) STRICT;

CREATE TABLE rollup_hourly (
    boot_no             INTEGER NOT NULL,
    hour_ms             INTEGER NOT NULL,
    samples             INTEGER NOT NULL,
    rss_min             INTEGER,
    rss_max             INTEGER,
    rss_sum             INTEGER NOT NULL,
    rss_n               INTEGER NOT NULL,
    allocated_min       INTEGER,
    allocated_max       INTEGER,
    allocated_sum       INTEGER NOT NULL,
    allocated_n         INTEGER NOT NULL,
    resident_min        INTEGER,
    resident_max        INTEGER,
    resident_sum        INTEGER NOT NULL,
    resident_n          INTEGER NOT NULL,
    turns_started       INTEGER NOT NULL,
    turns_in_flight_max INTEGER,
    PRIMARY KEY (boot_no, hour_ms)
) STRICT, WITHOUT ROWID;
CREATE INDEX rollup_hourly_by_hour ON rollup_hourly (hour_ms);
"#
);

/// Load-aware hourly rollups: per boot, hour and `turns_in_flight` level, the lowest and
/// highest memory sampled at that level. A floor at comparable load (usually idle) survives
/// the hour's bursts, so windows answered from rollups (over 48 h) are load-adjusted as raw
/// windows are. Existing databases are backfilled from the raw samples they still hold
/// (hours whose raw samples retention already removed keep only `rollup_hourly`).
const MIGRATION_2: &str = r#"
CREATE TABLE rollup_hourly_load (
    boot_no         INTEGER NOT NULL,
    hour_ms         INTEGER NOT NULL,
    turns_in_flight INTEGER NOT NULL,
    samples         INTEGER NOT NULL,
    allocated_min   INTEGER,
    allocated_max   INTEGER,
    resident_min    INTEGER,
    rss_min         INTEGER,
    rss_max         INTEGER,
    PRIMARY KEY (boot_no, hour_ms, turns_in_flight)
) STRICT, WITHOUT ROWID;
INSERT INTO rollup_hourly_load (boot_no, hour_ms, turns_in_flight, samples, allocated_min,
        allocated_max, resident_min, rss_min, rss_max)
    SELECT id >> 40, (ts_ms / 3600000) * 3600000, turns_in_flight, count(*), min(je_allocated),
           max(je_allocated), min(je_resident), min(rss), max(rss)
    FROM samples WHERE turns_in_flight IS NOT NULL AND ts_ms >= 0
    GROUP BY 1, 2, 3;
"#;

/// Turns kept per boot in `rollup_top_turns`: the best by kept bytes (`alloc - freed`), enough
/// for the verdict's top-turn list.
pub const TOP_TURNS_KEPT: usize = 10;

/// Per-conversation attribution rollups, so a whole boot's conversation and turn ranking reads
/// one row per conversation instead of every turn. `rollup_conversation`: per boot and
/// conversation, `turn.start` records (`turns`), `turn.end` records other than `sealed`
/// (`ended`; fewer than `turns` means turns still open at the end of the boot), the sums of
/// kept (`alloc - freed`, over ends with both), allocated and output bytes, and the hours a
/// turn was running in as a bitmap (`active_hours`, bit `i` = hour `first_hour_ms + i h`, see
/// [`crate::hours`]; a turn's span is `ts - duration_ms` to its end). `rollup_top_turns`: per
/// boot, the [`TOP_TURNS_KEPT`] turns that kept the most. Both are upserted in the ingest
/// transaction; the migration backfills them from the raw turns existing databases hold
/// ([`backfill_attribution`]).
const MIGRATION_3: &str = r#"
CREATE TABLE rollup_conversation (
    boot_no       INTEGER NOT NULL,
    conversation  TEXT NOT NULL,
    turns         INTEGER NOT NULL,
    ended         INTEGER NOT NULL,
    kept_bytes    INTEGER NOT NULL,
    alloc_bytes   INTEGER NOT NULL,
    output_bytes  INTEGER NOT NULL,
    first_hour_ms INTEGER NOT NULL,
    active_hours  BLOB NOT NULL,
    PRIMARY KEY (boot_no, conversation)
) STRICT, WITHOUT ROWID;
CREATE TABLE rollup_top_turns (
    boot_no      INTEGER NOT NULL,
    conversation TEXT NOT NULL,
    turn         TEXT NOT NULL,
    kept_bytes   INTEGER NOT NULL,
    alloc_bytes  INTEGER NOT NULL,
    PRIMARY KEY (boot_no, conversation, turn)
) STRICT, WITHOUT ROWID;
"#;

/// Turns paired at ingest, by row key (the schema version that has it: [`turns_paired`]).
///
/// Conversation and turn ids are random UUIDs, so the `(conversation, turn)` indexes of
/// migration 1 took every turn row to a random leaf: each commit rewrote about one index page
/// per turn row, the number of leaves grew with the database, and ingest slowed as it grew
/// (76% of the WAL frames of a 1M-line busy drain; docs/BENCHMARKS.md, "Collector").
///
/// Now each `turn.end` is paired with its `turn.start` as the two are stored:
/// `turn_starts.end_id` holds the key of the turn's first end (NULL while it is open), and
/// `turn_ends.start_id` the key of its start (NULL for an end whose start is not stored).
/// Ids pair by `conversation IS` and `turn =` (a turn without an id never pairs). Only rows
/// still waiting for their partner are indexed (`turn_starts_open`, `turn_ends_unpaired`), so
/// the indexes hold the turns in flight, not the month. The `turns` view joins by key.
///
/// The backfill pairs existing rows through the old indexes before they are dropped: a start
/// takes its first end by key, an end the first start that took it.
const MIGRATION_4: &str = concat!(
    r#"
ALTER TABLE turn_starts ADD COLUMN end_id INTEGER;
ALTER TABLE turn_ends ADD COLUMN start_id INTEGER;
UPDATE turn_starts SET end_id = (
    SELECT min(e.id) FROM turn_ends e
    WHERE e.conversation IS turn_starts.conversation AND e.turn = turn_starts.turn)
WHERE turn IS NOT NULL;
UPDATE turn_ends SET start_id = (
    SELECT min(s.id) FROM turn_starts s
    WHERE s.conversation IS turn_ends.conversation AND s.turn = turn_ends.turn
      AND s.end_id = turn_ends.id)
WHERE turn IS NOT NULL;
DROP INDEX turn_starts_by_conversation;
DROP INDEX turn_ends_by_conversation;
CREATE INDEX turn_starts_open ON turn_starts (conversation, turn) WHERE end_id IS NULL;
CREATE INDEX turn_ends_unpaired ON turn_ends (conversation, turn) WHERE start_id IS NULL;
DROP VIEW turns;
-- One row per turn start, with its paired end; then the ends without a stored start (never
-- drained, retention removed it, or a second end of a turn already ended).
CREATE VIEW turns AS
"#,
    turns_view_start_columns!(),
    r#"    FROM turn_starts s
    LEFT JOIN turn_ends e ON e.id = s.end_id
    UNION ALL
"#,
    turns_view_end_columns!(),
    r#"    FROM turn_ends e
    WHERE e.start_id IS NULL
       OR NOT EXISTS (SELECT 1 FROM turn_starts s WHERE s.id = e.start_id AND s.end_id = e.id);
"#
);

/// The first schema version whose turns are paired by key (migration 4).
pub const TURNS_PAIRED_SINCE: i64 = 4;

/// Whether `conn`'s turns are paired by key ([`TURNS_PAIRED_SINCE`]); a read-only connection
/// to a database an older collector wrote is not, and is read by `(conversation, turn)`.
///
/// # Errors
/// SQLite errors reading `user_version`.
pub fn turns_paired(conn: &Connection) -> rusqlite::Result<bool> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok(v >= TURNS_PAIRED_SINCE)
}

/// Undoes migration 4's pairing on a migrated database (back to schema 3, with migration 1's
/// indexes and view), so tests and benchmarks can time and check the migration on data
/// ingested by this build.
#[doc(hidden)]
pub const UNPAIR_TURNS_SQL: &str = concat!(
    r#"
DROP VIEW turns;
DROP INDEX turn_starts_open;
DROP INDEX turn_ends_unpaired;
ALTER TABLE turn_starts DROP COLUMN end_id;
ALTER TABLE turn_ends DROP COLUMN start_id;
CREATE INDEX turn_starts_by_conversation ON turn_starts (conversation, turn);
CREATE INDEX turn_ends_by_conversation ON turn_ends (conversation, turn);
"#,
    turns_view_by_ids!(),
    "PRAGMA user_version = 3;\n"
);

/// Migration 3's backfill: `rollup_conversation` and `rollup_top_turns` from the raw
/// `turn_starts` and `turn_ends` rows, one boot at a time (memory: one boot's conversations),
/// through the same aggregation and upserts as ingest.
fn backfill_attribution(conn: &Connection) -> rusqlite::Result<()> {
    use std::collections::HashMap;

    use crate::store::{
        ConvAgg, TopTurn, enters_top, keep_top, upsert_conversations, upsert_top_turns,
    };
    let boots: Vec<i64> = {
        let mut stmt = conn.prepare(
            "SELECT DISTINCT boot_no FROM (SELECT id >> 40 AS boot_no FROM turn_starts
             UNION SELECT id >> 40 FROM turn_ends) ORDER BY 1",
        )?;
        stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    let mut starts = conn.prepare(
        "SELECT coalesce(conversation, ''), ts_ms FROM turn_starts WHERE id >= ?1 AND id < ?2",
    )?;
    let mut ends = conn.prepare(
        "SELECT coalesce(conversation, ''), coalesce(turn, ''), ts_ms, duration_ms,
                output_bytes, alloc_bytes, freed_bytes
         FROM turn_ends WHERE id >= ?1 AND id < ?2 AND coalesce(outcome, '') <> 'sealed'",
    )?;
    for b in boots {
        let (lo, hi) = (b << SEQ_BITS, (b + 1) << SEQ_BITS);
        let mut by: HashMap<String, ConvAgg> = HashMap::new();
        let mut q = starts.query(rusqlite::params![lo, hi])?;
        while let Some(r) = q.next()? {
            let c = r.get_ref(0)?.as_str()?;
            let ts: i64 = r.get(1)?;
            match by.get_mut(c) {
                Some(a) => a.add_start(ts),
                None => by.entry(c.to_owned()).or_default().add_start(ts),
            }
        }
        let mut top: Vec<TopTurn<String>> = Vec::new();
        let mut q = ends.query(rusqlite::params![lo, hi])?;
        while let Some(r) = q.next()? {
            let c = r.get_ref(0)?.as_str()?;
            let (ts, dur, out, alloc, freed): (
                i64,
                Option<i64>,
                Option<i64>,
                Option<i64>,
                Option<i64>,
            ) = (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?);
            match by.get_mut(c) {
                Some(a) => a.add_end(ts, dur, out, alloc, freed),
                None => by.entry(c.to_owned()).or_default().add_end(ts, dur, out, alloc, freed),
            }
            if let (Some(a), Some(f)) = (alloc, freed) {
                let (kept, turn) = (a.saturating_sub(f), r.get_ref(1)?.as_str()?);
                if enters_top(&top, kept, c, turn) {
                    keep_top(&mut top, (kept, a, c.to_owned(), turn.to_owned()));
                }
            }
        }
        upsert_conversations(conn, by.iter().map(|(c, a)| ((b, c.as_str()), a)))?;
        upsert_top_turns(conn, b, &top)?;
    }
    Ok(())
}

/// Tables whose rows are keyed by [`record_key`], with the kind each holds (`None`: the
/// `kind` column says).
pub(crate) const KEYED_TABLES: &[(&str, Option<&str>)] = &[
    ("samples", Some("memory.sample")),
    ("conversation_memory", Some("conversation.memory")),
    ("turn_starts", Some("turn.start")),
    ("turn_ends", Some("turn.end")),
    ("crashes", Some("crash")),
    ("exits", Some("exit")),
    ("panics", Some("panic")),
    ("errors", Some("error.unhandled")),
    ("events", None),
];

/// The lock that makes one collector per database. Held until dropped.
#[derive(Debug)]
pub struct DbLock {
    _file: File,
    path: PathBuf,
}

impl DbLock {
    /// Takes `<db>.lock` (created 0600), or fails with [`CollectorError::Locked`] naming the
    /// holder's pid when another collector has it. Never waits.
    pub fn acquire(db: &Path) -> Result<DbLock, CollectorError> {
        let path = lock_path(db);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(DB_FILE_MODE)
            .open(&path)
            .map_err(CollectorError::io(&path, "opening the lock file"))?;
        set_mode(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder =
                    if holder.is_empty() { "unknown".to_string() } else { holder.to_string() };
                return Err(CollectorError::Locked { lock: path, holder });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(CollectorError::io(&path, "locking the lock file")(e));
            }
        }
        let note = format!("pid {}\n", std::process::id());
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(note.as_bytes()));
        written.map_err(CollectorError::io(&path, "writing the lock file"))?;
        Ok(DbLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `<db>.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn set_mode(path: &Path) -> Result<(), CollectorError> {
    std::fs::set_permissions(path, Permissions::from_mode(DB_FILE_MODE))
        .map_err(CollectorError::io(path, "setting permissions to 0600"))
}

/// Sets 0600 on the database and its `-wal`/`-shm` files where they exist.
pub(crate) fn restrict_db_files(db: &Path) -> Result<(), CollectorError> {
    for p in [db.to_path_buf(), sibling(db, "-wal"), sibling(db, "-shm")] {
        match std::fs::metadata(&p) {
            Ok(m) if m.permissions().mode() & 0o777 != DB_FILE_MODE => set_mode(&p)?,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CollectorError::io(&p, "reading permissions")(e)),
        }
    }
    Ok(())
}

/// Opens (creating, 0600) the traces database for writing, sets WAL, `synchronous=NORMAL` and
/// 4 KiB pages, and migrates it to [`SCHEMA_VERSION`].
///
/// Automatic WAL checkpoints are off on this connection: while a collector runs, a checkpoint
/// thread with its own connection copies the WAL into the database ,
/// so the writer thread never stops for it.
///
/// # Errors
/// [`CollectorError::SchemaTooNew`] when a newer collector wrote it; I/O and SQLite errors.
pub fn open_for_writing(db: &Path) -> Result<Connection, CollectorError> {
    // Create the files ourselves, 0600, before SQLite does: SQLite gives -wal and -shm the
    // database file's mode.
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(DB_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(db)
        .map_err(CollectorError::io(db, "creating the database (a symlink is refused)"))?;
    restrict_db_files(db)?;
    let conn = open_no_follow(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_CREATE,
    )
    .map_err(CollectorError::db(db, "opening the database"))?;
    let pragmas = format!(
        "PRAGMA page_size = {DEFAULT_PAGE_SIZE_BYTES};
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA cache_size = -{CACHE_KIB};
         PRAGMA temp_store = MEMORY;
         PRAGMA busy_timeout = 5000;
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = 67108864;"
    );
    conn.execute_batch(&pragmas).map_err(CollectorError::db(db, "setting pragmas"))?;
    conn.set_prepared_statement_cache_capacity(256);
    crate::hours::register(&conn).map_err(CollectorError::db(db, "registering SQL functions"))?;
    migrate(&conn, db)?;
    restrict_db_files(db)?;
    Ok(conn)
}

/// Opens the traces database read-only, for queries (`dispatchctl`). Does not migrate.
///
/// # Errors
/// [`CollectorError::SchemaTooNew`] for a database from a newer collector; SQLite errors,
/// including a database that does not exist.
pub fn open_read_only(db: &Path) -> Result<Connection, CollectorError> {
    use rusqlite::OpenFlags;
    let conn = open_no_follow(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(CollectorError::db(db, "opening the database read-only"))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(CollectorError::db(db, "setting the busy timeout"))?;
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(CollectorError::db(db, "reading the schema version"))?;
    if found > SCHEMA_VERSION {
        return Err(CollectorError::SchemaTooNew { path: db.into(), found, max: SCHEMA_VERSION });
    }
    Ok(conn)
}

/// How often the checkpoint thread runs a passive WAL checkpoint.
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs `PRAGMA wal_checkpoint(PASSIVE)` on its own connection every [`CHECKPOINT_INTERVAL`]
/// until `stop` is set, then once more with `TRUNCATE`, which empties the WAL file. A busy
/// database only postpones a passive round; a connection that cannot be opened, and a final
/// checkpoint that fails or cannot finish (readers holding the WAL), are returned as errors
/// to report.
pub(crate) fn checkpoint_loop(
    db: &Path,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), String> {
    use std::sync::atomic::Ordering;
    let conn = open_no_follow(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| format!("opening the checkpoint connection to {}: {e}", db.display()))?;
    let _ = conn.busy_timeout(std::time::Duration::from_millis(100));
    while !stop.load(Ordering::Relaxed) {
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        let deadline = std::time::Instant::now() + CHECKPOINT_INTERVAL;
        while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    let _ = conn.busy_timeout(std::time::Duration::from_secs(2));
    // (busy, WAL frames, frames checkpointed): busy = 1 when it could not finish.
    let (busy, _, _): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(|e| format!("the final WAL checkpoint of {}: {e}", db.display()))?;
    if busy != 0 {
        return Err(format!(
            "the final WAL checkpoint of {} could not finish (readers hold the WAL); the next run retries",
            db.display()
        ));
    }
    Ok(())
}

/// Opens `db` with SQLite's `SQLITE_OPEN_NOFOLLOW`: a symlink at the path is refused.
pub(crate) fn open_no_follow(
    db: &Path,
    flags: rusqlite::OpenFlags,
) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        db,
        flags
            | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

fn migrate(conn: &Connection, db: &Path) -> Result<(), CollectorError> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(CollectorError::db(db, "reading the schema version"))?;
    if found > SCHEMA_VERSION {
        return Err(CollectorError::SchemaTooNew { path: db.into(), found, max: SCHEMA_VERSION });
    }
    // The backfills of an existing database probe its turn indexes at random (10M turns:
    // about 800 MB of index); a larger page cache while they run saves most of the reads.
    // It grows only as pages are read, and shrinks back when the migrations are done.
    let big_cache = found > 0 && found < SCHEMA_VERSION;
    if big_cache {
        conn.execute_batch(&format!("PRAGMA cache_size = -{MIGRATION_CACHE_KIB}"))
            .map_err(CollectorError::db(db, "setting the migration's page cache"))?;
    }
    let done = run_migrations(conn, db, found);
    if big_cache {
        conn.execute_batch(&format!("PRAGMA cache_size = -{CACHE_KIB}"))
            .map_err(CollectorError::db(db, "restoring the page cache"))?;
    }
    done
}

/// The writer's page cache, KiB (`PRAGMA cache_size`).
const CACHE_KIB: i64 = 65_536;

/// The page cache while an existing database is migrated, KiB: 256 MiB at most.
const MIGRATION_CACHE_KIB: i64 = 262_144;

fn run_migrations(conn: &Connection, db: &Path, found: i64) -> Result<(), CollectorError> {
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
        let to = i + 1;
        let step = || -> rusqlite::Result<()> {
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {sql};"))?;
            if to == 3 {
                backfill_attribution(conn)?;
            }
            conn.execute_batch(&format!("PRAGMA user_version = {to}; COMMIT;"))
        };
        if let Err(e) = step() {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(CollectorError::db(db, "migrating the schema")(e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back() {
        let id = record_key(3, 12345).unwrap();
        assert_eq!(split_key(id), (3, 12345));
        assert_eq!(record_key(1, MAX_SEQ + 1), None);
        assert!(record_key(1, 0).unwrap() > record_key(0, MAX_SEQ).unwrap());
    }

    #[test]
    fn migrates_once_and_refuses_newer() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        drop(open_for_writing(&db).unwrap());
        let conn = open_for_writing(&db).unwrap();
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        assert_eq!(page, i64::from(DEFAULT_PAGE_SIZE_BYTES));
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(conn);
        let err = open_for_writing(&db).unwrap_err();
        assert_eq!(err.code(), "collector_schema_too_new");
    }

    #[test]
    fn migrating_an_existing_database_restores_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        open_for_writing(&db).unwrap().execute_batch(UNPAIR_TURNS_SQL).unwrap();
        let conn = open_for_writing(&db).unwrap();
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION, "migration 4 ran again");
        let cache: i64 = conn.query_row("PRAGMA cache_size", [], |r| r.get(0)).unwrap();
        assert_eq!(cache, -CACHE_KIB);
    }

    #[test]
    fn strict_tables_reject_text_in_integer_columns() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_for_writing(&dir.path().join("t.db")).unwrap();
        let err = conn.execute("INSERT INTO samples (id, ts_ms, rss) VALUES (1, 2, 'x')", []);
        assert!(err.is_err());
    }

    #[test]
    fn second_lock_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let first = DbLock::acquire(&db).unwrap();
        let err = DbLock::acquire(&db).unwrap_err();
        assert_eq!(err.code(), "collector_locked");
        assert!(err.to_string().contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        DbLock::acquire(&db).unwrap();
    }
}
