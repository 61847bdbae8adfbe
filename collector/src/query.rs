//! The read side of the traces database, for `dispatchctl`: boots, memory samples over a time
//! range (raw rows or hourly rollups, picked by span), turns, conversation memory, crashes and
//! exits. Every function takes a plain [`Connection`] (see
//! [`crate::schema::open_read_only`]); times are Unix milliseconds, ranges half-open.
//!
//! Rows of a boot are stored in `seq` order, which is time order, so a time range within a
//! boot is found by a binary search over the row keys instead of a `ts` index (an index would
//! slow every insert).

use rusqlite::{Connection, Row, params};

use crate::hours::HourSet;
use crate::schema::SEQ_BITS;

/// A failed query.
#[derive(Debug, thiserror::Error)]
#[error("traces database query failed: {what}")]
pub struct QueryError {
    /// What was being read.
    pub what: &'static str,
    /// SQLite's error.
    #[source]
    pub source: rusqlite::Error,
}

impl QueryError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        "traces_query_failed"
    }
}

fn q(what: &'static str) -> impl FnOnce(rusqlite::Error) -> QueryError {
    move |source| QueryError { what, source }
}

/// `[from_ms, to_ms)`, Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// First millisecond included.
    pub from_ms: i64,
    /// First millisecond excluded.
    pub to_ms: i64,
}

impl TimeRange {
    /// Everything.
    pub const ALL: TimeRange = TimeRange { from_ms: i64::MIN, to_ms: i64::MAX };

    /// Length in milliseconds.
    pub fn span_ms(&self) -> i64 {
        self.to_ms.saturating_sub(self.from_ms)
    }
}

/// One boot (process start) of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// Boot id (UUID text).
    pub boot: String,
    /// The database's number for it (the high bits of its row keys).
    pub boot_no: i64,
    /// Service name.
    pub service: Option<String>,
    /// Time of its first and last record stored.
    pub first_ts_ms: Option<i64>,
    /// Time of its last record stored.
    pub last_ts_ms: Option<i64>,
    /// Records stored at ingest (segment headers and unknown kinds included; retention does
    /// not lower it).
    pub records: i64,
    /// Highest `seq` stored.
    pub last_seq: Option<i64>,
    /// From `process.start`.
    pub pid: Option<i64>,
    /// From `process.start`.
    pub version: Option<String>,
    /// From `process.start`.
    pub build_id: Option<String>,
    /// From `process.start`.
    pub host: Option<String>,
    /// `process.start` time.
    pub started_ts_ms: Option<i64>,
    /// `process.stop` time (a clean stop).
    pub stopped_ts_ms: Option<i64>,
    /// `process.stop` reason.
    pub stop_reason: Option<String>,
}

/// Every boot, oldest first.
///
/// # Errors
/// SQLite errors.
pub fn boots(conn: &Connection) -> Result<Vec<Boot>, QueryError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT boot, boot_no, service, first_ts_ms, last_ts_ms, records, last_seq, pid,
                    version, build_id, host, started_ts_ms, stopped_ts_ms, stop_reason
             FROM boots ORDER BY coalesce(first_ts_ms, 0), boot_no",
        )
        .map_err(q("boots"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Boot {
                boot: r.get(0)?,
                boot_no: r.get(1)?,
                service: r.get(2)?,
                first_ts_ms: r.get(3)?,
                last_ts_ms: r.get(4)?,
                records: r.get(5)?,
                last_seq: r.get(6)?,
                pid: r.get(7)?,
                version: r.get(8)?,
                build_id: r.get(9)?,
                host: r.get(10)?,
                started_ts_ms: r.get(11)?,
                stopped_ts_ms: r.get(12)?,
                stop_reason: r.get(13)?,
            })
        })
        .map_err(q("boots"))?;
    rows.collect::<Result<_, _>>().map_err(q("boots"))
}

/// The smallest key in `[lo, hi)` of `table` whose row (or any later row) has `ts_ms >= ts`,
/// assuming `ts_ms` never decreases with the key within a boot; `hi` when there is none.
pub(crate) fn first_key_at(
    conn: &Connection,
    table: &str,
    lo: i64,
    hi: i64,
    ts: i64,
) -> rusqlite::Result<i64> {
    let sql =
        format!("SELECT id, ts_ms FROM {table} WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT 1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut first_at = |k: i64| -> rusqlite::Result<Option<(i64, i64)>> {
        let mut rows = stmt.query(params![k, hi])?;
        match rows.next()? {
            Some(r) => Ok(Some((r.get(0)?, r.get(1)?))),
            None => Ok(None),
        }
    };
    // Invariant: rows before `a` have ts < `ts`; the answer is in [a, b].
    let (mut a, mut b) = (lo, hi);
    while a < b {
        let mid = a + (b - a) / 2;
        match first_at(mid)? {
            None => b = mid,
            Some((id, t)) if t >= ts => b = mid.min(id),
            Some((id, _)) => a = id + 1,
        }
    }
    Ok(a)
}

/// Key ranges `[lo, hi)` of `table` holding rows with `ts_ms` in `range`, one per boot that
/// overlaps it, in time order.
fn key_ranges(
    conn: &Connection,
    table: &str,
    range: TimeRange,
    boot: Option<&str>,
) -> rusqlite::Result<Vec<(i64, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT boot_no FROM boots
         WHERE (?1 IS NULL OR boot = ?1)
           AND coalesce(last_ts_ms, 0) >= ?2 AND coalesce(first_ts_ms, 0) < ?3
         ORDER BY first_ts_ms, boot_no",
    )?;
    let boots: Vec<i64> = stmt
        .query_map(params![boot, range.from_ms, range.to_ms], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(boots.len());
    for b in boots {
        let (blo, bhi) = (b << SEQ_BITS, (b + 1) << SEQ_BITS);
        let lo = if range.from_ms == i64::MIN {
            blo
        } else {
            first_key_at(conn, table, blo, bhi, range.from_ms)?
        };
        let hi = if range.to_ms == i64::MAX {
            bhi
        } else {
            first_key_at(conn, table, lo, bhi, range.to_ms)?
        };
        if lo < hi {
            out.push((lo, hi));
        }
    }
    Ok(out)
}

/// One memory sample: the figures `dispatchctl mem` reads, each from its own source (`None`
/// when the sampler could not read it; never 0 in its place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Sample time.
    pub ts_ms: i64,
    /// Boot id.
    pub boot: String,
    /// RSS from `/proc/self/statm`, bytes.
    pub rss: Option<i64>,
    /// Peak RSS, bytes.
    pub hwm: Option<i64>,
    /// jemalloc `stats.allocated`, bytes.
    pub allocated: Option<i64>,
    /// jemalloc `stats.active`, bytes.
    pub active: Option<i64>,
    /// jemalloc `stats.resident`, bytes.
    pub resident: Option<i64>,
    /// jemalloc `stats.retained`, bytes.
    pub retained: Option<i64>,
    /// cgroup `memory.current`, bytes.
    pub cgroup_current: Option<i64>,
    /// Load: turns holding a provider slot.
    pub turns_in_flight: Option<i64>,
    /// Load: conversations with a turn running or queued.
    pub conversations_active: Option<i64>,
    /// Load: conversations held in memory.
    pub conversations_loaded: Option<i64>,
    /// Load: bytes of application state.
    pub state_bytes: Option<i64>,
    /// Load: turns waiting for a slot.
    pub queue_depth: Option<i64>,
}

/// Raw samples with `ts_ms` in `range` (of one boot, or all), in time order.
///
/// # Errors
/// SQLite errors.
pub fn samples_raw(
    conn: &Connection,
    range: TimeRange,
    boot: Option<&str>,
) -> Result<Vec<Sample>, QueryError> {
    let what = "samples";
    let mut out = Vec::new();
    let mut stmt = conn
        .prepare_cached(
            "SELECT s.ts_ms, b.boot, s.rss, s.hwm, s.je_allocated, s.je_active, s.je_resident,
                    s.je_retained, s.cg_current, s.turns_in_flight, s.conversations_active,
                    s.conversations_loaded, s.state_bytes, s.queue_depth
             FROM samples s JOIN boots b ON b.boot_no = s.id >> 40
             WHERE s.id >= ?1 AND s.id < ?2 AND s.ts_ms >= ?3 AND s.ts_ms < ?4
             ORDER BY s.id",
        )
        .map_err(q(what))?;
    for (lo, hi) in key_ranges(conn, "samples", range, boot).map_err(q(what))? {
        let rows = stmt
            .query_map(params![lo, hi, range.from_ms, range.to_ms], |r| {
                Ok(Sample {
                    ts_ms: r.get(0)?,
                    boot: r.get(1)?,
                    rss: r.get(2)?,
                    hwm: r.get(3)?,
                    allocated: r.get(4)?,
                    active: r.get(5)?,
                    resident: r.get(6)?,
                    retained: r.get(7)?,
                    cgroup_current: r.get(8)?,
                    turns_in_flight: r.get(9)?,
                    conversations_active: r.get(10)?,
                    conversations_loaded: r.get(11)?,
                    state_bytes: r.get(12)?,
                    queue_depth: r.get(13)?,
                })
            })
            .map_err(q(what))?;
        for r in rows {
            out.push(r.map_err(q(what))?);
        }
    }
    Ok(out)
}

/// Min, max and mean of one figure over an hour; `None` when no sample had it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// Smallest value.
    pub min: i64,
    /// Largest value.
    pub max: i64,
    /// Mean.
    pub avg: f64,
}

/// One hour of one boot, from the rollup kept at ingest.
#[derive(Debug, Clone, PartialEq)]
pub struct Hour {
    /// Start of the hour.
    pub hour_ms: i64,
    /// Boot id.
    pub boot: String,
    /// Samples in the hour.
    pub samples: i64,
    /// RSS, bytes.
    pub rss: Option<Stat>,
    /// jemalloc `allocated`, bytes.
    pub allocated: Option<Stat>,
    /// jemalloc `resident`, bytes.
    pub resident: Option<Stat>,
    /// `turn.start` records in the hour.
    pub turns_started: i64,
    /// Largest `turns_in_flight` sampled.
    pub turns_in_flight_max: Option<i64>,
}

const HOUR_MS: i64 = 3_600_000;

fn stat(r: &Row<'_>, at: usize) -> rusqlite::Result<Option<Stat>> {
    let n: i64 = r.get(at + 3)?;
    if n == 0 {
        return Ok(None);
    }
    let (min, max, sum): (Option<i64>, Option<i64>, i64) =
        (r.get(at)?, r.get(at + 1)?, r.get(at + 2)?);
    Ok(match (min, max) {
        (Some(min), Some(max)) => Some(Stat { min, max, avg: sum as f64 / n as f64 }),
        _ => None,
    })
}

/// Hourly rollups of the hours that overlap `range` (of one boot, or all), by hour then boot.
/// Answers from the rollup table only, never from raw samples.
///
/// # Errors
/// SQLite errors.
pub fn samples_hourly(
    conn: &Connection,
    range: TimeRange,
    boot: Option<&str>,
) -> Result<Vec<Hour>, QueryError> {
    let what = "hourly rollups";
    let mut stmt = conn
        .prepare_cached(
            "SELECT r.hour_ms, b.boot, r.samples,
                    r.rss_min, r.rss_max, r.rss_sum, r.rss_n,
                    r.allocated_min, r.allocated_max, r.allocated_sum, r.allocated_n,
                    r.resident_min, r.resident_max, r.resident_sum, r.resident_n,
                    r.turns_started, r.turns_in_flight_max
             FROM rollup_hourly r JOIN boots b ON b.boot_no = r.boot_no
             WHERE r.hour_ms > ?1 - 3600000 AND r.hour_ms < ?2 AND (?3 IS NULL OR b.boot = ?3)
             ORDER BY r.hour_ms, r.boot_no",
        )
        .map_err(q(what))?;
    let from = range.from_ms.max(i64::MIN + HOUR_MS);
    let rows = stmt
        .query_map(params![from, range.to_ms, boot], |r| {
            Ok(Hour {
                hour_ms: r.get(0)?,
                boot: r.get(1)?,
                samples: r.get(2)?,
                rss: stat(r, 3)?,
                allocated: stat(r, 7)?,
                resident: stat(r, 11)?,
                turns_started: r.get(15)?,
                turns_in_flight_max: r.get(16)?,
            })
        })
        .map_err(q(what))?;
    rows.collect::<Result<_, _>>().map_err(q(what))
}

/// One boot's hour at one `turns_in_flight` level, from the load-aware rollup kept at ingest.
#[derive(Debug, Clone, PartialEq)]
pub struct HourLoad {
    /// Start of the hour.
    pub hour_ms: i64,
    /// The `turns_in_flight` level of these samples.
    pub turns_in_flight: i64,
    /// Samples at this level in the hour.
    pub samples: i64,
    /// Lowest and highest jemalloc `allocated` at this level.
    pub allocated_min: Option<i64>,
    /// See `allocated_min`.
    pub allocated_max: Option<i64>,
    /// Lowest jemalloc `resident` at this level.
    pub resident_min: Option<i64>,
    /// Lowest and highest RSS at this level.
    pub rss_min: Option<i64>,
    /// See `rss_min`.
    pub rss_max: Option<i64>,
}

/// Load-aware hourly rollups of one boot over the hours that overlap `range`, by hour then
/// level. A database from before schema 2 has none: the result is empty, and readers fall
/// back to [`samples_hourly`].
///
/// # Errors
/// SQLite errors.
pub fn samples_hourly_load(
    conn: &Connection,
    range: TimeRange,
    boot: &str,
) -> Result<Vec<HourLoad>, QueryError> {
    let what = "load-aware hourly rollups";
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' \
             AND name = 'rollup_hourly_load')",
            [],
            |r| r.get(0),
        )
        .map_err(q(what))?;
    if !exists {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT r.hour_ms, r.turns_in_flight, r.samples, r.allocated_min, r.allocated_max,
                    r.resident_min, r.rss_min, r.rss_max
             FROM rollup_hourly_load r JOIN boots b ON b.boot_no = r.boot_no
             WHERE b.boot = ?3 AND r.hour_ms > ?1 - 3600000 AND r.hour_ms < ?2
             ORDER BY r.hour_ms, r.turns_in_flight",
        )
        .map_err(q(what))?;
    let from = range.from_ms.max(i64::MIN + HOUR_MS);
    let rows = stmt
        .query_map(params![from, range.to_ms, boot], |r| {
            Ok(HourLoad {
                hour_ms: r.get(0)?,
                turns_in_flight: r.get(1)?,
                samples: r.get(2)?,
                allocated_min: r.get(3)?,
                allocated_max: r.get(4)?,
                resident_min: r.get(5)?,
                rss_min: r.get(6)?,
                rss_max: r.get(7)?,
            })
        })
        .map_err(q(what))?;
    rows.collect::<Result<_, _>>().map_err(q(what))
}

/// Samples over a range: raw rows when the span is at most `raw_span_ms`, hourly rollups
/// beyond (see [`DEFAULT_RAW_SPAN_MS`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Samples {
    /// Every sample.
    Raw(Vec<Sample>),
    /// One row per boot and hour.
    Hourly(Vec<Hour>),
}

/// Spans up to this are answered with raw samples (6 h: 21,600 rows at 1 Hz).
pub const DEFAULT_RAW_SPAN_MS: i64 = 6 * HOUR_MS;

/// Raw samples or hourly rollups for `range`, picked by its span.
///
/// # Errors
/// SQLite errors.
pub fn samples(
    conn: &Connection,
    range: TimeRange,
    boot: Option<&str>,
    raw_span_ms: i64,
) -> Result<Samples, QueryError> {
    if range.span_ms() <= raw_span_ms {
        samples_raw(conn, range, boot).map(Samples::Raw)
    } else {
        samples_hourly(conn, range, boot).map(Samples::Hourly)
    }
}

/// One turn: its `turn.start` joined with its `turn.end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// Conversation id.
    pub conversation: Option<String>,
    /// Turn id.
    pub turn: Option<String>,
    /// Boot that started it (or ended it, when the start is missing).
    pub boot: String,
    /// `turn.start` time; `None` when only the end is stored.
    pub start_ts_ms: Option<i64>,
    /// `turn.end` time; `None` while in flight (or cut off and never sealed).
    pub end_ts_ms: Option<i64>,
    /// `ok`, `error`, `cancelled`, `sealed`.
    pub outcome: Option<String>,
    /// Wall time, ms.
    pub duration_ms: Option<i64>,
    /// Bytes allocated by the turn's task.
    pub alloc_bytes: Option<i64>,
    /// Bytes freed by the turn's task.
    pub freed_bytes: Option<i64>,
    /// Provider.
    pub provider: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Error message for `outcome: error`.
    pub error: Option<String>,
}

const TURN_COLUMNS: &str = "t.conversation, t.turn, b.boot, t.start_ts_ms, t.end_ts_ms, t.outcome,
    t.duration_ms, t.alloc_bytes, t.freed_bytes, t.provider, t.model, t.error";

fn turn_row(r: &Row<'_>) -> rusqlite::Result<Turn> {
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
}

/// Every turn of a conversation, by start time. Reads every stored turn: ingest keeps no
/// index by conversation (random ids made one cost a page write per turn; schema migration
/// 4), so ranking uses the attribution rollups and this is for one conversation's detail.
///
/// # Errors
/// SQLite errors.
pub fn turns_for_conversation(
    conn: &Connection,
    conversation: &str,
) -> Result<Vec<Turn>, QueryError> {
    let what = "turns of a conversation";
    let sql = format!(
        "SELECT {TURN_COLUMNS} FROM turns t JOIN boots b ON b.boot_no = t.boot_no
         WHERE t.conversation = ?1 ORDER BY coalesce(t.start_ts_ms, t.end_ts_ms)"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(q(what))?;
    let rows = stmt.query_map(params![conversation], turn_row).map_err(q(what))?;
    rows.collect::<Result<_, _>>().map_err(q(what))
}

/// Turns started in `range` (with their ends, wherever they are), by start time.
///
/// # Errors
/// SQLite errors.
pub fn turns_started(conn: &Connection, range: TimeRange) -> Result<Vec<Turn>, QueryError> {
    let what = "turns in a range";
    // Paired by key since schema 4; an older database (read-only, not migrated yet) by ids.
    let join = if crate::schema::turns_paired(conn).map_err(q(what))? {
        "e.id = s.end_id"
    } else {
        "e.conversation = s.conversation AND e.turn = s.turn"
    };
    let sql = format!(
        "SELECT s.conversation, s.turn, b.boot, s.ts_ms, e.ts_ms, e.outcome, e.duration_ms,
                e.alloc_bytes, e.freed_bytes, s.provider, s.model, e.error
         FROM turn_starts s JOIN boots b ON b.boot_no = s.id >> 40
         LEFT JOIN turn_ends e ON {join}
         WHERE s.id >= ?1 AND s.id < ?2 AND s.ts_ms >= ?3 AND s.ts_ms < ?4
         ORDER BY s.id"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(q(what))?;
    let mut out = Vec::new();
    for (lo, hi) in key_ranges(conn, "turn_starts", range, None).map_err(q(what))? {
        let rows = stmt
            .query_map(params![lo, hi, range.from_ms, range.to_ms], turn_row)
            .map_err(q(what))?;
        for r in rows {
            out.push(r.map_err(q(what))?);
        }
    }
    Ok(out)
}

/// One conversation's turns over a whole boot, from the attribution rollup kept at ingest
/// (`rollup_conversation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRollup {
    /// Conversation id (`""` for turns without one).
    pub conversation: String,
    /// `turn.start` records.
    pub turns: i64,
    /// `turn.end` records other than `sealed`.
    pub ended: i64,
    /// Sum of `alloc_bytes - freed_bytes` over ends that have both.
    pub kept_bytes: i64,
    /// Sum of `alloc_bytes`.
    pub alloc_bytes: i64,
    /// Sum of `output_bytes`.
    pub output_bytes: i64,
    /// Hours a turn of it was running in.
    pub active_hours: HourSet,
}

/// Whether the attribution rollups (schema 3) exist: a database migrated by an older
/// collector has none, and readers rank from raw turns.
fn has_attribution_rollups(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' \
         AND name = 'rollup_conversation')",
        [],
        |r| r.get(0),
    )
}

/// Every conversation of boot `boot_no` with its whole-boot totals and active hours, by
/// conversation id; `None` when the database has no attribution rollups (before schema 3).
/// One row per conversation: memory is bounded by the boot's conversations, not its turns.
///
/// # Errors
/// SQLite errors.
pub fn conversation_rollups(
    conn: &Connection,
    boot_no: i64,
) -> Result<Option<Vec<ConversationRollup>>, QueryError> {
    let what = "conversation rollups";
    if !has_attribution_rollups(conn).map_err(q(what))? {
        return Ok(None);
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT conversation, turns, ended, kept_bytes, alloc_bytes, output_bytes,
                    first_hour_ms, active_hours
             FROM rollup_conversation WHERE boot_no = ?1 ORDER BY conversation",
        )
        .map_err(q(what))?;
    let rows = stmt
        .query_map(params![boot_no], |r| {
            let bits = r.get_ref(7)?.as_blob()?;
            Ok(ConversationRollup {
                conversation: r.get(0)?,
                turns: r.get(1)?,
                ended: r.get(2)?,
                kept_bytes: r.get(3)?,
                alloc_bytes: r.get(4)?,
                output_bytes: r.get(5)?,
                active_hours: HourSet::from_stored(r.get(6)?, bits),
            })
        })
        .map_err(q(what))?;
    rows.collect::<Result<Vec<_>, _>>().map(Some).map_err(q(what))
}

/// A turn of a boot among those that kept the most (`rollup_top_turns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopTurn {
    /// Conversation id.
    pub conversation: String,
    /// Turn id.
    pub turn: String,
    /// `alloc_bytes - freed_bytes`.
    pub kept_bytes: i64,
    /// `alloc_bytes`.
    pub alloc_bytes: i64,
}

/// Boot `boot_no`'s turns that kept the most (at most [`crate::schema::TOP_TURNS_KEPT`]), best
/// first; empty before schema 3.
///
/// # Errors
/// SQLite errors.
pub fn top_turns(conn: &Connection, boot_no: i64) -> Result<Vec<TopTurn>, QueryError> {
    let what = "top turns";
    if !has_attribution_rollups(conn).map_err(q(what))? {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT conversation, turn, kept_bytes, alloc_bytes FROM rollup_top_turns
             WHERE boot_no = ?1 ORDER BY kept_bytes DESC, turn, conversation",
        )
        .map_err(q(what))?;
    let rows = stmt
        .query_map(params![boot_no], |r| {
            Ok(TopTurn {
                conversation: r.get(0)?,
                turn: r.get(1)?,
                kept_bytes: r.get(2)?,
                alloc_bytes: r.get(3)?,
            })
        })
        .map_err(q(what))?;
    rows.collect::<Result<_, _>>().map_err(q(what))
}

/// The first tail searched for open turns by [`first_open_turns`]: 15 minutes, doubled until
/// every open turn is found.
pub const OPEN_TURN_TAIL_MS: i64 = 15 * 60_000;

/// The start of the earliest open turn of each conversation of boot `boot_no`: a turn with no
/// end in that boot other than a seal (still running at the boot's last record, or cut off by
/// a crash). `open` says how many open turns each conversation has (`turns - ended` of its
/// rollup). Reads the boot's last [`OPEN_TURN_TAIL_MS`] of turn starts, then twice that, and
/// so on, until every conversation's open turns are all found, so the cost follows how old the
/// oldest open turn is, not how many turns the boot had (at worst, the whole boot).
///
/// # Errors
/// SQLite errors.
pub fn first_open_turns(
    conn: &Connection,
    boot_no: i64,
    last_ts_ms: i64,
    open: &std::collections::HashMap<&str, i64>,
) -> Result<std::collections::HashMap<String, i64>, QueryError> {
    use std::collections::HashMap;
    let what = "open turns";
    let mut out: HashMap<String, i64> = HashMap::new();
    if open.values().all(|&n| n <= 0) {
        return Ok(out);
    }
    let (blo, bhi) = (boot_no << SEQ_BITS, (boot_no + 1) << SEQ_BITS);
    // Open: no end in this boot other than a seal. Since schema 4 a start's paired end is its
    // first (a seal comes from the next boot, after any real end); before, any end by ids.
    let sql = if crate::schema::turns_paired(conn).map_err(q(what))? {
        "SELECT coalesce(s.conversation, ''), s.ts_ms FROM turn_starts s
         LEFT JOIN turn_ends e ON e.id = s.end_id
         WHERE s.id >= ?1 AND s.id < ?2
           AND (e.id IS NULL OR e.id < ?3 OR e.id >= ?4 OR coalesce(e.outcome, '') = 'sealed')"
    } else {
        "SELECT coalesce(s.conversation, ''), s.ts_ms FROM turn_starts s
         WHERE s.id >= ?1 AND s.id < ?2
           AND NOT EXISTS (SELECT 1 FROM turn_ends e
                           WHERE e.conversation IS s.conversation AND e.turn = s.turn
                             AND e.id >= ?3 AND e.id < ?4
                             AND coalesce(e.outcome, '') <> 'sealed')"
    };
    let mut stmt = conn.prepare_cached(sql).map_err(q(what))?;
    let mut tail = OPEN_TURN_TAIL_MS;
    let mut hi = bhi;
    let mut found: HashMap<String, i64> = HashMap::new();
    loop {
        let from = last_ts_ms.saturating_sub(tail);
        let lo = if tail == i64::MAX {
            blo
        } else {
            first_key_at(conn, "turn_starts", blo, hi, from).map_err(q(what))?
        };
        let mut rows = stmt.query(params![lo, hi, blo, bhi]).map_err(q(what))?;
        while let Some(r) = rows.next().map_err(q(what))? {
            let c: String = r.get(0).map_err(q(what))?;
            let ts: i64 = r.get(1).map_err(q(what))?;
            *found.entry(c.clone()).or_default() += 1;
            let e = out.entry(c).or_insert(ts);
            *e = (*e).min(ts);
        }
        let complete =
            open.iter().all(|(c, &n)| n <= 0 || found.get(*c).copied().unwrap_or(0) >= n);
        if complete || lo <= blo {
            return Ok(out);
        }
        // The next round reads only the keys before this one's.
        hi = lo;
        tail = if tail > i64::MAX / 2 { i64::MAX } else { tail * 2 };
    }
}

/// One `conversation.memory` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationMemory {
    /// Record time.
    pub ts_ms: i64,
    /// Boot id.
    pub boot: String,
    /// Conversation id.
    pub conversation: String,
    /// Turns so far.
    pub turns: Option<i64>,
    /// Bytes of history held.
    pub history_bytes: Option<i64>,
    /// Live bytes (tagged allocator).
    pub live_bytes: Option<i64>,
    /// Bytes allocated since the previous record.
    pub alloc_bytes: Option<i64>,
    /// Bytes freed since the previous record.
    pub freed_bytes: Option<i64>,
}

/// `conversation.memory` records in `range`, in time order.
///
/// # Errors
/// SQLite errors.
pub fn conversation_memory(
    conn: &Connection,
    range: TimeRange,
) -> Result<Vec<ConversationMemory>, QueryError> {
    let what = "conversation memory";
    let mut stmt = conn
        .prepare_cached(
            "SELECT c.ts_ms, b.boot, c.conversation, c.turns, c.history_bytes, c.live_bytes,
                    c.alloc_bytes, c.freed_bytes
             FROM conversation_memory c JOIN boots b ON b.boot_no = c.id >> 40
             WHERE c.id >= ?1 AND c.id < ?2 AND c.ts_ms >= ?3 AND c.ts_ms < ?4 ORDER BY c.id",
        )
        .map_err(q(what))?;
    let mut out = Vec::new();
    for (lo, hi) in key_ranges(conn, "conversation_memory", range, None).map_err(q(what))? {
        let rows = stmt
            .query_map(params![lo, hi, range.from_ms, range.to_ms], |r| {
                Ok(ConversationMemory {
                    ts_ms: r.get(0)?,
                    boot: r.get(1)?,
                    conversation: r.get(2)?,
                    turns: r.get(3)?,
                    history_bytes: r.get(4)?,
                    live_bytes: r.get(5)?,
                    alloc_bytes: r.get(6)?,
                    freed_bytes: r.get(7)?,
                })
            })
            .map_err(q(what))?;
        for r in rows {
            out.push(r.map_err(q(what))?);
        }
    }
    Ok(out)
}

/// A `crash` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crash {
    /// Record time.
    pub ts_ms: i64,
    /// Boot of the crashed process.
    pub boot: String,
    /// `SIGSEGV`, ...
    pub signal: Option<String>,
    /// Signal number.
    pub signo: Option<i64>,
    /// Fault address, hex.
    pub fault_address: Option<String>,
    /// Crashing thread name.
    pub thread_name: Option<String>,
    /// Minidump path.
    pub minidump: Option<String>,
    /// Why no dump was written.
    pub dump_error: Option<String>,
    /// Build id of the crashed executable.
    pub build_id: Option<String>,
    /// Milliseconds the process ran.
    pub uptime_ms: Option<i64>,
    /// Last memory sample, as JSON text.
    pub last_sample_json: Option<String>,
    /// Active conversations, as a JSON array.
    pub active_conversations_json: Option<String>,
}

/// Crashes in `range`, oldest first.
///
/// # Errors
/// SQLite errors.
pub fn crashes(conn: &Connection, range: TimeRange) -> Result<Vec<Crash>, QueryError> {
    let what = "crashes";
    let mut stmt = conn
        .prepare_cached(
            "SELECT c.ts_ms, b.boot, c.signal, c.signo, c.fault_address, c.thread_name,
                    c.minidump, c.dump_error, c.build_id, c.uptime_ms, c.last_sample,
                    c.active_conversations
             FROM crashes c JOIN boots b ON b.boot_no = c.id >> 40
             WHERE c.ts_ms >= ?1 AND c.ts_ms < ?2 ORDER BY c.ts_ms, c.id",
        )
        .map_err(q(what))?;
    let rows = stmt
        .query_map(params![range.from_ms, range.to_ms], |r| {
            Ok(Crash {
                ts_ms: r.get(0)?,
                boot: r.get(1)?,
                signal: r.get(2)?,
                signo: r.get(3)?,
                fault_address: r.get(4)?,
                thread_name: r.get(5)?,
                minidump: r.get(6)?,
                dump_error: r.get(7)?,
                build_id: r.get(8)?,
                uptime_ms: r.get(9)?,
                last_sample_json: r.get(10)?,
                active_conversations_json: r.get(11)?,
            })
        })
        .map_err(q(what))?;
    rows.collect::<Result<_, _>>().map_err(q(what))
}

/// An `exit` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Record time.
    pub ts_ms: i64,
    /// Boot that wrote the record.
    pub boot: String,
    /// Boot that exited (`exited_boot`, or the writer's own boot).
    pub exited_boot: String,
    /// Exit code; `None` for a death by signal.
    pub status: Option<i64>,
    /// Signal name for a death by signal.
    pub signal: Option<String>,
    /// Whether a core was dumped.
    pub core_dumped: Option<bool>,
    /// Whether the OOM killer killed it.
    pub oom_killed: Option<bool>,
    /// Milliseconds it ran.
    pub uptime_ms: Option<i64>,
    /// Its pid.
    pub pid: Option<i64>,
}

/// Exits in `range`, oldest first.
///
/// # Errors
/// SQLite errors.
pub fn exits(conn: &Connection, range: TimeRange) -> Result<Vec<Exit>, QueryError> {
    let what = "exits";
    let mut stmt = conn
        .prepare_cached(
            "SELECT e.ts_ms, b.boot, coalesce(e.exited_boot, b.boot), e.status, e.signal,
                    e.core_dumped, e.oom_killed, e.uptime_ms, e.pid
             FROM exits e JOIN boots b ON b.boot_no = e.id >> 40
             WHERE e.ts_ms >= ?1 AND e.ts_ms < ?2 ORDER BY e.ts_ms, e.id",
        )
        .map_err(q(what))?;
    let rows = stmt
        .query_map(params![range.from_ms, range.to_ms], |r| {
            Ok(Exit {
                ts_ms: r.get(0)?,
                boot: r.get(1)?,
                exited_boot: r.get(2)?,
                status: r.get(3)?,
                signal: r.get(4)?,
                core_dumped: r.get::<_, Option<i64>>(5)?.map(|v| v != 0),
                oom_killed: r.get::<_, Option<i64>>(6)?.map(|v| v != 0),
                uptime_ms: r.get(7)?,
                pid: r.get(8)?,
            })
        })
        .map_err(q(what))?;
    rows.collect::<Result<_, _>>().map_err(q(what))
}
