//! Decoded journal lines -> table rows.

use dispatch_journal::Record;
use dispatch_journal::record::{MemorySample, SegmentHeader};
use rusqlite::types::Value;

/// Index of a keyed table in [`crate::schema::KEYED_TABLES`].
pub(crate) type TableIdx = usize;

pub(crate) const T_SAMPLES: TableIdx = 0;
pub(crate) const T_CONVERSATION_MEMORY: TableIdx = 1;
pub(crate) const T_TURN_STARTS: TableIdx = 2;
pub(crate) const T_TURN_ENDS: TableIdx = 3;
pub(crate) const T_CRASHES: TableIdx = 4;
pub(crate) const T_EXITS: TableIdx = 5;
pub(crate) const T_PANICS: TableIdx = 6;
pub(crate) const T_ERRORS: TableIdx = 7;
pub(crate) const T_EVENTS: TableIdx = 8;
/// Number of keyed tables.
pub(crate) const N_TABLES: usize = 9;

/// Column lists after `id, ts_ms`, in [`crate::schema::KEYED_TABLES`] order.
pub(crate) const COLUMNS: [&[&str]; N_TABLES] = [
    &[
        "rss",
        "hwm",
        "rss_anon",
        "rss_file",
        "threads",
        "je_allocated",
        "je_active",
        "je_resident",
        "je_mapped",
        "je_retained",
        "je_metadata",
        "cg_current",
        "cg_peak",
        "cg_high",
        "cg_max",
        "cg_events_high",
        "cg_events_max",
        "cg_events_oom",
        "cg_events_oom_kill",
        "conversations_active",
        "turns_in_flight",
        "queue_depth",
        "conversations_loaded",
        "state_bytes",
        "uptime_ms",
        "cost_us",
        "dropped",
    ],
    &["conversation", "turns", "history_bytes", "live_bytes", "alloc_bytes", "freed_bytes"],
    &["conversation", "turn", "provider", "model"],
    &[
        "conversation",
        "turn",
        "outcome",
        "duration_ms",
        "steps",
        "tool_calls",
        "output_bytes",
        "tool_output_truncated",
        "alloc_bytes",
        "freed_bytes",
        "error",
    ],
    &[
        "signal",
        "signo",
        "code",
        "fault_address",
        "thread",
        "thread_name",
        "minidump",
        "minidump_bytes",
        "dump_error",
        "build_id",
        "uptime_ms",
        "last_sample",
        "active_conversations",
    ],
    &["status", "signal", "signo", "core_dumped", "oom_killed", "uptime_ms", "pid", "exited_boot"],
    &["message", "location", "thread", "backtrace", "conversation", "turn", "fatal"],
    &[
        "message",
        "code",
        "source",
        "conversation",
        "turn",
        "backtrace",
        "active_conversations",
        "memory",
    ],
    &["kind", "body"],
];

/// Number of typed sample columns.
pub(crate) const SAMPLE_COLS: usize = 27;
/// Positions in [`SampleVals`] the rollup reads.
pub(crate) const S_RSS: usize = 0;
pub(crate) const S_ALLOCATED: usize = 5;
pub(crate) const S_RESIDENT: usize = 7;
pub(crate) const S_TURNS_IN_FLIGHT: usize = 20;

/// The typed columns of one sample, in [`COLUMNS`] order; [`NULL`] for an absent figure.
/// (A plain `i64` array is half the size of `[Option<i64>; 27]`, and samples are most rows.)
pub(crate) type SampleVals = [i64; SAMPLE_COLS];

/// An absent sample figure (stored as SQL NULL). Never a real value: figures are `u64`s
/// clamped to `i64::MAX`.
pub(crate) const NULL: i64 = i64::MIN;

/// A sample figure as an `Option`.
pub(crate) fn opt(v: i64) -> Option<i64> {
    (v != NULL).then_some(v)
}

/// A row of a keyed table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KeyedRow {
    /// `(boot_no << 40) | seq`.
    pub id: i64,
    /// Envelope time, Unix ms.
    pub ts_ms: i64,
    /// The other columns.
    pub vals: RowVals,
}

/// The columns after `id, ts_ms`.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // see `Sample`
pub(crate) enum RowVals {
    /// `samples`: plain integers, inline (no allocation per sample, the most common row).
    Sample(SampleVals),
    /// Any other table, in [`COLUMNS`] order.
    Other(Vec<Value>),
}

/// Metadata a line adds to its boot's row.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct BootMeta {
    pub pid: Option<i64>,
    pub version: Option<String>,
    pub build_id: Option<String>,
    pub git_sha: Option<String>,
    pub host: Option<String>,
    pub started_ts_ms: Option<i64>,
    pub stopped_ts_ms: Option<i64>,
    pub stop_reason: Option<String>,
}

fn int(v: Option<u64>) -> Option<i64> {
    v.map(|x| i64::try_from(x).unwrap_or(i64::MAX))
}

fn vi(v: Option<u64>) -> Value {
    int(v).map_or(Value::Null, Value::Integer)
}

fn vi32(v: Option<i32>) -> Value {
    v.map_or(Value::Null, |x| Value::Integer(i64::from(x)))
}

fn vb(v: Option<bool>) -> Value {
    v.map_or(Value::Null, |b| Value::Integer(i64::from(b)))
}

fn vs(v: Option<String>) -> Value {
    v.map_or(Value::Null, Value::Text)
}

fn vjson<T: serde::Serialize>(v: Option<T>) -> Value {
    v.and_then(|x| serde_json::to_string(&x).ok()).map_or(Value::Null, Value::Text)
}

/// The typed columns of a memory sample.
pub(crate) fn sample_vals(s: MemorySample) -> SampleVals {
    let int = |v: Option<u64>| int(v).unwrap_or(NULL);
    let je = s.jemalloc.unwrap_or_default();
    let cg = s.cgroup.unwrap_or_default();
    let ev = cg.events.unwrap_or_default();
    let load = s.load.unwrap_or_default();
    [
        int(s.rss),
        int(s.hwm),
        int(s.rss_anon),
        int(s.rss_file),
        int(s.threads),
        int(je.allocated),
        int(je.active),
        int(je.resident),
        int(je.mapped),
        int(je.retained),
        int(je.metadata),
        int(cg.current),
        int(cg.peak),
        int(cg.high),
        int(cg.max),
        int(ev.high),
        int(ev.max),
        int(ev.oom),
        int(ev.oom_kill),
        int(load.conversations_active),
        int(load.turns_in_flight),
        int(load.queue_depth),
        int(load.conversations_loaded),
        int(load.state_bytes),
        int(s.uptime_ms),
        int(s.cost_us),
        int(s.dropped),
    ]
}

/// What a record becomes: its table and columns, plus boot metadata for `process.*`.
/// `raw` is the line (without its newline), stored for kinds without a typed table.
/// The segment header is not a row here (it becomes a `segments` row).
pub(crate) fn to_row(
    id: i64,
    ts_ms: i64,
    record: Record,
    raw: &[u8],
) -> (TableIdx, KeyedRow, Option<BootMeta>) {
    let raw_text = || String::from_utf8_lossy(raw).into_owned();
    let mut meta = None;
    let (table, vals) = match record {
        Record::MemorySample(s) => (T_SAMPLES, RowVals::Sample(sample_vals(s))),
        Record::ConversationMemory(c) => (
            T_CONVERSATION_MEMORY,
            RowVals::Other(vec![
                Value::Text(c.conversation),
                vi(c.turns),
                vi(c.history_bytes),
                vi(c.live_bytes),
                vi(c.alloc_bytes),
                vi(c.freed_bytes),
            ]),
        ),
        Record::TurnStart(t) => (
            T_TURN_STARTS,
            RowVals::Other(vec![vs(t.conversation), vs(t.turn), vs(t.provider), vs(t.model)]),
        ),
        Record::TurnEnd(t) => (
            T_TURN_ENDS,
            RowVals::Other(vec![
                vs(t.conversation),
                vs(t.turn),
                vs(t.outcome),
                vi(t.duration_ms),
                vi(t.steps),
                vi(t.tool_calls),
                vi(t.output_bytes),
                vb(t.tool_output_truncated),
                vi(t.alloc_bytes),
                vi(t.freed_bytes),
                vs(t.error),
            ]),
        ),
        Record::Crash(c) => (
            T_CRASHES,
            RowVals::Other(vec![
                vs(c.signal),
                vi32(c.signo),
                vi32(c.code),
                vs(c.fault_address.map(|a| format!("{:#018x}", a.0))),
                vi(c.thread),
                vs(c.thread_name),
                vs(c.minidump),
                vi(c.minidump_bytes),
                vs(c.dump_error),
                vs(c.build_id),
                vi(c.uptime_ms),
                vjson(c.last_sample),
                vjson(c.active_conversations),
            ]),
        ),
        Record::Exit(e) => (
            T_EXITS,
            RowVals::Other(vec![
                vi32(e.status),
                vs(e.signal),
                vi32(e.signo),
                vb(e.core_dumped),
                vb(e.oom_killed),
                vi(e.uptime_ms),
                vi(e.pid.map(u64::from)),
                vs(e.exited_boot),
            ]),
        ),
        Record::Panic(p) => (
            T_PANICS,
            RowVals::Other(vec![
                vs(p.message),
                vs(p.location),
                vs(p.thread),
                vs(p.backtrace),
                vs(p.conversation),
                vs(p.turn),
                vb(p.fatal),
            ]),
        ),
        Record::ErrorUnhandled(e) => (
            T_ERRORS,
            RowVals::Other(vec![
                vs(e.message),
                vs(e.code),
                vs(e.source),
                vs(e.conversation),
                vs(e.turn),
                vs(e.backtrace),
                vjson(e.active_conversations),
                vjson(e.memory),
            ]),
        ),
        other => {
            match &other {
                Record::ProcessStart(p) => {
                    meta = Some(BootMeta {
                        pid: p.pid.map(i64::from),
                        version: p.version.clone(),
                        build_id: p.build_id.clone(),
                        git_sha: p.git_sha.clone(),
                        host: p.host.clone(),
                        started_ts_ms: Some(ts_ms),
                        ..BootMeta::default()
                    })
                }
                Record::ProcessStop(p) => {
                    meta = Some(BootMeta {
                        stopped_ts_ms: Some(ts_ms),
                        stop_reason: p.reason.clone(),
                        ..BootMeta::default()
                    })
                }
                _ => {}
            }
            let kind = other.kind().to_string();
            (T_EVENTS, RowVals::Other(vec![Value::Text(kind), Value::Text(raw_text())]))
        }
    };
    (table, KeyedRow { id, ts_ms, vals }, meta)
}

/// An event row for a kind this build does not know.
pub(crate) fn unknown_kind_row(id: i64, ts_ms: i64, kind: String, raw: &[u8]) -> KeyedRow {
    let body = String::from_utf8_lossy(raw).into_owned();
    KeyedRow { id, ts_ms, vals: RowVals::Other(vec![Value::Text(kind), Value::Text(body)]) }
}

/// A segment header as the `segments` table stores it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeaderInfo {
    pub segment: u64,
    pub created_ts_ms: Option<i64>,
    pub pid: Option<i64>,
    pub writer: Option<String>,
}

impl From<SegmentHeader> for HeaderInfo {
    fn from(h: SegmentHeader) -> Self {
        HeaderInfo {
            segment: h.segment,
            created_ts_ms: h.created.map(|t| t.unix_millis()),
            pid: h.pid.map(i64::from),
            writer: h.writer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::KEYED_TABLES;

    #[test]
    fn every_table_has_its_columns() {
        assert_eq!(COLUMNS.len(), KEYED_TABLES.len());
        assert_eq!(COLUMNS[T_SAMPLES].len(), SAMPLE_COLS);
        assert_eq!(COLUMNS[T_SAMPLES][S_RSS], "rss");
        assert_eq!(COLUMNS[T_SAMPLES][S_ALLOCATED], "je_allocated");
        assert_eq!(COLUMNS[T_SAMPLES][S_RESIDENT], "je_resident");
        assert_eq!(COLUMNS[T_SAMPLES][S_TURNS_IN_FLIGHT], "turns_in_flight");
        assert_eq!(KEYED_TABLES[T_EVENTS].0, "events");
    }

    #[test]
    fn every_column_exists_in_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::schema::open_for_writing(&dir.path().join("t.db")).unwrap();
        for (i, (table, _)) in KEYED_TABLES.iter().enumerate() {
            let sql = format!("SELECT id, ts_ms, {} FROM {table} LIMIT 0", COLUMNS[i].join(", "));
            conn.prepare(&sql).unwrap_or_else(|e| panic!("{table}: {e}"));
        }
    }

    #[test]
    fn a_sample_keeps_each_source_apart() {
        let s = MemorySample {
            rss: Some(10),
            jemalloc: Some(dispatch_journal::record::JemallocStats {
                allocated: Some(7),
                resident: Some(9),
                ..Default::default()
            }),
            load: Some(dispatch_journal::record::Load {
                turns_in_flight: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = sample_vals(s);
        assert_eq!((v[S_RSS], v[S_ALLOCATED], v[S_RESIDENT]), (10, 7, 9));
        assert_eq!(v[S_TURNS_IN_FLIGHT], 3);
        assert_eq!(opt(v[1]), None, "an absent hwm stays NULL, never 0");
    }
}
