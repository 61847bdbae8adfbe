//! What the database holds: records per kind, and per boot the record count and highest `seq`
//! (`dispatch-collector --status`).

use std::collections::BTreeMap;

use rusqlite::Connection;

use crate::query::{self, QueryError};
use crate::schema::KEYED_TABLES;

/// Contents of a traces database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Records stored per kind (`journal.segment` counts segment headers).
    pub kinds: BTreeMap<String, i64>,
    /// Per boot: boot id, records stored, highest `seq`.
    pub boots: Vec<(String, i64, Option<i64>)>,
    /// Segments known.
    pub segments: i64,
    /// Rows in `ingest_errors`.
    pub ingest_errors: i64,
}

impl Status {
    /// All records, every kind.
    pub fn total_records(&self) -> i64 {
        self.kinds.values().sum()
    }

    /// As one JSON object: `{"kinds": {...}, "boots": [{"boot", "records", "last_seq"}],
    /// "records", "segments", "ingest_errors"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "records": self.total_records(),
            "kinds": self.kinds,
            "boots": self.boots.iter().map(|(b, n, s)| serde_json::json!({
                "boot": b, "records": n, "last_seq": s,
            })).collect::<Vec<_>>(),
            "segments": self.segments,
            "ingest_errors": self.ingest_errors,
        })
    }
}

/// Reads the [`Status`] of a database.
///
/// # Errors
/// SQLite errors.
pub fn status(conn: &Connection) -> Result<Status, QueryError> {
    let e = |source| QueryError { what: "status", source };
    let mut kinds = BTreeMap::new();
    for (table, kind) in KEYED_TABLES {
        match kind {
            Some(kind) => {
                let n: i64 = conn
                    .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                    .map_err(e)?;
                if n > 0 {
                    kinds.insert((*kind).to_string(), n);
                }
            }
            None => {
                let mut stmt = conn
                    .prepare(&format!("SELECT kind, count(*) FROM {table} GROUP BY kind"))
                    .map_err(e)?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                    .map_err(e)?;
                for r in rows {
                    let (k, n) = r.map_err(e)?;
                    *kinds.entry(k).or_insert(0) += n;
                }
            }
        }
    }
    let segments: i64 =
        conn.query_row("SELECT count(*) FROM segments", [], |r| r.get(0)).map_err(e)?;
    if segments > 0 {
        kinds.insert("journal.segment".into(), segments);
    }
    let ingest_errors: i64 =
        conn.query_row("SELECT count(*) FROM ingest_errors", [], |r| r.get(0)).map_err(e)?;
    let boots = query::boots(conn)?.into_iter().map(|b| (b.boot, b.records, b.last_seq)).collect();
    Ok(Status { kinds, boots, segments, ingest_errors })
}

/// Journal bytes on disk that the database has not committed: per segment file in
/// `journal_dir`, its size minus the offset the database has reached in it (a file the
/// database does not know counts whole). `/metrics` (`dispatch_collector_lag_bytes`) and
/// `dispatchctl doctor` report it. `None` when the directory cannot be read.
///
/// # Errors
/// SQLite errors reading the `segments` table.
pub fn lag_bytes(
    conn: &Connection,
    journal_dir: &std::path::Path,
) -> Result<Option<u64>, QueryError> {
    let e = |source| QueryError { what: "collector lag", source };
    let mut st = conn
        .prepare("SELECT file_name, max(offset_bytes) FROM segments GROUP BY file_name")
        .map_err(e)?;
    let committed: std::collections::HashMap<String, i64> = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(e)?
        .collect::<Result<_, _>>()
        .map_err(e)?;
    let Ok(dir) = std::fs::read_dir(journal_dir) else { return Ok(None) };
    Ok(Some(
        dir.filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                dispatch_journal::SegmentName::parse(&name)?;
                let size = i64::try_from(entry.metadata().ok()?.len()).ok()?;
                u64::try_from(size - committed.get(&name).copied().unwrap_or(0)).ok()
            })
            .sum(),
    ))
}
