//! Retention by age, in bounded chunks.
//!
//! Age is measured back from the newest record stored, not from the wall clock, so draining an
//! old journal never deletes what it has just stored; but never from later than now, so one
//! line dated in the far future (a bad clock, a forged line) cannot move the cutoff past every
//! real row. Each chunk is its own transaction of at
//! most `chunk_rows` rows, so the writer is never held up for long.

use rusqlite::{Connection, params};

use crate::query::first_key_at;
use crate::schema::{KEYED_TABLES, SEQ_BITS};

/// Deletes rows of every keyed table, hourly rollups and `ingest_errors` older than `age`
/// (and the attribution rollups of boots whose last record is older)
/// before the newest record, or before now when the newest record is dated later (boots and
/// segments are kept: they are small and explain gaps). Returns rows deleted.
///
/// # Errors
/// SQLite errors.
pub fn apply(
    conn: &mut Connection,
    age: std::time::Duration,
    chunk_rows: usize,
) -> rusqlite::Result<u64> {
    let newest: Option<i64> =
        conn.query_row("SELECT max(last_ts_ms) FROM boots", [], |r| r.get(0))?;
    let Some(newest) = newest else { return Ok(0) };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(i64::MAX, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let newest = newest.min(now_ms);
    let cutoff = newest.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
    let boots: Vec<(i64, i64)> = {
        let mut stmt = conn.prepare(
            "SELECT boot_no, coalesce(last_ts_ms, 0) FROM boots WHERE coalesce(first_ts_ms, 0) < ?1",
        )?;
        stmt.query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    let chunk = i64::try_from(chunk_rows).unwrap_or(i64::MAX);
    let mut deleted = 0u64;
    for (boot_no, last_ts) in boots {
        let (blo, bhi) = (boot_no << SEQ_BITS, (boot_no + 1) << SEQ_BITS);
        for (table, _) in KEYED_TABLES {
            let hi =
                if last_ts < cutoff { bhi } else { first_key_at(conn, table, blo, bhi, cutoff)? };
            let sql = format!(
                "DELETE FROM {table} WHERE id IN
                    (SELECT id FROM {table} WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3)"
            );
            loop {
                let tx = conn.transaction()?;
                let n = tx.execute(&sql, params![blo, hi, chunk])?;
                tx.commit()?;
                deleted += n as u64;
                if (n as i64) < chunk {
                    break;
                }
            }
        }
    }
    deleted += delete_in_chunks(
        conn,
        "DELETE FROM rollup_hourly WHERE (boot_no, hour_ms) IN
            (SELECT boot_no, hour_ms FROM rollup_hourly WHERE hour_ms + 3600000 <= ?1 LIMIT ?2)",
        cutoff,
        chunk,
    )?;
    deleted += delete_in_chunks(
        conn,
        "DELETE FROM rollup_hourly_load WHERE (boot_no, hour_ms, turns_in_flight) IN
            (SELECT boot_no, hour_ms, turns_in_flight FROM rollup_hourly_load
             WHERE hour_ms + 3600000 <= ?1 LIMIT ?2)",
        cutoff,
        chunk,
    )?;
    // Attribution rollups cover a whole boot: they go with the boot's last record.
    for (table, key) in [
        ("rollup_conversation", ["boot_no", "conversation"].as_slice()),
        ("rollup_top_turns", ["boot_no", "conversation", "turn"].as_slice()),
    ] {
        let columns = key.join(", ");
        let of_r = key.iter().map(|k| format!("r.{k}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "DELETE FROM {table} WHERE ({columns}) IN
                (SELECT {of_r} FROM {table} r JOIN boots b ON b.boot_no = r.boot_no
                 WHERE coalesce(b.last_ts_ms, 0) < ?1 LIMIT ?2)"
        );
        deleted += delete_in_chunks(conn, &sql, cutoff, chunk)?;
    }
    deleted += delete_in_chunks(
        conn,
        "DELETE FROM ingest_errors WHERE error_id IN
            (SELECT error_id FROM ingest_errors WHERE noticed_ts_ms < ?1 LIMIT ?2)",
        cutoff,
        chunk,
    )?;
    Ok(deleted)
}

/// Runs `sql` (a `DELETE ... LIMIT ?2` of rows older than `?1`) in transactions of at most
/// `chunk` rows until a round deletes fewer. Returns rows deleted.
fn delete_in_chunks(
    conn: &mut Connection,
    sql: &str,
    cutoff: i64,
    chunk: i64,
) -> rusqlite::Result<u64> {
    let mut deleted = 0u64;
    loop {
        let tx = conn.transaction()?;
        let n = tx.execute(sql, params![cutoff, chunk])?;
        tx.commit()?;
        deleted += n as u64;
        if (n as i64) < chunk {
            return Ok(deleted);
        }
    }
}
