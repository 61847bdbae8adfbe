//! The writer side: one [`Batch`] of parsed lines becomes one SQLite transaction holding the
//! rows, their ingest errors, the hourly rollups, the boot statistics and the checkpoints of
//! the segments the lines came from. After a crash, either all of it is there or none is.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::hours::HourSet;
use crate::rows::{
    BootMeta, COLUMNS, HeaderInfo, KeyedRow, N_TABLES, RowVals, S_ALLOCATED, S_RESIDENT, S_RSS,
    S_TURNS_IN_FLIGHT, T_SAMPLES, T_TURN_ENDS, T_TURN_STARTS, opt,
};
use crate::schema::{KEYED_TABLES, SEQ_BITS, TOP_TURNS_KEPT, split_key};

/// Rows per `INSERT` statement. Measured (docs/BENCHMARKS.md, "Collector"): with STRICT tables
/// a multi-row `INSERT` needs a statement journal (a type error may abort it halfway), and that
/// copying cost more writer CPU than 64-row statements saved; one row per step, on a statement
/// prepared once per batch, was fastest. The multi-row path stays for other shapes.
const ROWS_PER_INSERT: usize = 1;

/// A segment seen for the first time.
#[derive(Debug, Clone)]
pub(crate) struct NewSegment {
    pub segment_id: i64,
    pub boot_no: i64,
    pub service: String,
    pub file_name: String,
    pub header_seq: u64,
    pub header: HeaderInfo,
}

/// Where reading of one segment stands; committed with the rows it covers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Checkpoint {
    pub segment_id: i64,
    pub offset_bytes: u64,
    pub line_no: u64,
    pub last_seq: Option<u64>,
    pub state: SegmentState,
    pub size_bytes: u64,
    pub file_name: String,
    pub drained: bool,
}

/// A segment's reading state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegmentState {
    /// May still grow.
    Open,
    /// A later segment exists and every byte has been read (a torn tail quarantined).
    Closed,
    /// The file became shorter than its checkpoint; reported once, never re-read.
    Truncated,
}

impl SegmentState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SegmentState::Open => "open",
            SegmentState::Closed => "closed",
            SegmentState::Truncated => "truncated",
        }
    }

    pub(crate) fn parse(s: &str) -> SegmentState {
        match s {
            "closed" => SegmentState::Closed,
            "truncated" => SegmentState::Truncated,
            _ => SegmentState::Open,
        }
    }
}

/// A line (or a whole segment) that could not be ingested.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IngestError {
    pub segment_id: Option<i64>,
    pub file_name: String,
    pub offset_bytes: u64,
    pub line_no: Option<u64>,
    pub length_bytes: u64,
    pub code: &'static str,
    pub reason: String,
    pub bytes: Vec<u8>,
}

/// Counts a batch carries for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Lines consumed (complete lines and quarantined torn tails).
    pub lines: u64,
    /// Bytes consumed.
    pub bytes: u64,
    /// Lines of a kind this build does not know.
    pub unknown_kinds: u64,
    /// Lines of a newer schema version.
    pub too_new: u64,
}

/// Everything one transaction commits.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub new_boots: Vec<(i64, String, String)>,
    pub new_segments: Vec<NewSegment>,
    /// `journal.segment` header lines: (key, ts_ms); they count as records of their boot.
    pub header_lines: Vec<(i64, i64)>,
    pub rows: [Vec<KeyedRow>; N_TABLES],
    pub boot_meta: Vec<(i64, BootMeta)>,
    pub checkpoints: Vec<Checkpoint>,
    pub errors: Vec<IngestError>,
    /// Drained markers to create once the transaction is committed.
    pub markers: Vec<PathBuf>,
    pub counts: Counts,
    /// The reader saw a `seq` that did not increase within a boot: check in-batch duplicates.
    pub maybe_duplicate_in_batch: bool,
}

impl Batch {
    /// An empty batch with room for some sample rows (the most common kind). Batches are
    /// recycled, so the other buffers grow to what the journal needs once; nothing more is
    /// reserved up front (an embedded collector at one line a second needs little).
    pub(crate) fn with_capacity(lines: usize) -> Batch {
        let mut b = Batch::default();
        b.rows[crate::rows::T_SAMPLES].reserve(lines.min(1 << 12));
        b
    }

    /// Empties the batch, keeping its buffers.
    pub(crate) fn clear(&mut self) {
        self.new_boots.clear();
        self.new_segments.clear();
        self.header_lines.clear();
        for rows in &mut self.rows {
            rows.clear();
        }
        self.boot_meta.clear();
        self.checkpoints.clear();
        self.errors.clear();
        self.markers.clear();
        self.counts = Counts::default();
        self.maybe_duplicate_in_batch = false;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.new_boots.is_empty()
            && self.new_segments.is_empty()
            && self.checkpoints.is_empty()
            && self.errors.is_empty()
            && self.markers.is_empty()
            && self.rows.iter().all(Vec::is_empty)
    }
}

/// What one committed batch did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Committed {
    /// Rows inserted (records and unknown kinds stored, headers included).
    pub records: u64,
    /// Rows ignored because their key was already stored.
    pub duplicates: u64,
}

#[derive(Default, Clone, Copy)]
struct MinMax {
    min: Option<i64>,
    max: Option<i64>,
    sum: i64,
    n: i64,
}

impl MinMax {
    fn merge(&mut self, o: &MinMax) {
        if o.n > 0 {
            self.min = Some(
                self.min.map_or(o.min.unwrap_or(i64::MAX), |m| m.min(o.min.unwrap_or(i64::MAX))),
            );
            self.max = Some(
                self.max.map_or(o.max.unwrap_or(i64::MIN), |m| m.max(o.max.unwrap_or(i64::MIN))),
            );
            self.sum = self.sum.saturating_add(o.sum);
            self.n += o.n;
        }
    }

    fn add(&mut self, v: Option<i64>) {
        if let Some(v) = v {
            self.min = Some(self.min.map_or(v, |m| m.min(v)));
            self.max = Some(self.max.map_or(v, |m| m.max(v)));
            self.sum = self.sum.saturating_add(v);
            self.n += 1;
        }
    }
}

#[derive(Default)]
struct Rollup {
    samples: i64,
    rss: MinMax,
    allocated: MinMax,
    resident: MinMax,
    turns_started: i64,
    turns_in_flight_max: Option<i64>,
    /// `rollup_hourly_load`: per `turns_in_flight` level, a handful per hour, found by a
    /// linear scan (no hashing per sample on the writer thread, which bounds ingest).
    levels: Vec<(i64, LoadRollup)>,
}

/// One `rollup_hourly_load` row being built: a boot's hour at one `turns_in_flight` level.
#[derive(Default, Clone, Copy)]
struct LoadRollup {
    samples: i64,
    allocated: MinMax,
    resident: MinMax,
    rss: MinMax,
}

impl LoadRollup {
    fn merge(&mut self, o: &LoadRollup) {
        self.samples += o.samples;
        self.allocated.merge(&o.allocated);
        self.resident.merge(&o.resident);
        self.rss.merge(&o.rss);
    }

    fn add(&mut self, allocated: Option<i64>, resident: Option<i64>, rss: Option<i64>) {
        self.samples += 1;
        self.allocated.add(allocated);
        self.resident.add(resident);
        self.rss.add(rss);
    }
}

#[derive(Default)]
struct BootStats {
    records: i64,
    first_seq: Option<i64>,
    last_seq: Option<i64>,
    first_ts: Option<i64>,
    last_ts: Option<i64>,
}

impl Rollup {
    fn merge(&mut self, o: &Rollup) {
        self.samples += o.samples;
        self.rss.merge(&o.rss);
        self.allocated.merge(&o.allocated);
        self.resident.merge(&o.resident);
        self.turns_started += o.turns_started;
        self.turns_in_flight_max = match (self.turns_in_flight_max, o.turns_in_flight_max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (level, l) in &o.levels {
            self.level(*level).merge(l);
        }
    }

    /// The rollup of `level`, added when new.
    fn level(&mut self, level: i64) -> &mut LoadRollup {
        let at = match self.levels.iter().position(|(l, _)| *l == level) {
            Some(at) => at,
            None => {
                self.levels.push((level, LoadRollup::default()));
                self.levels.len() - 1
            }
        };
        &mut self.levels[at].1
    }
}

impl BootStats {
    fn merge(&mut self, o: &BootStats) {
        let lo = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let hi = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.records += o.records;
        self.first_seq = lo(self.first_seq, o.first_seq);
        self.last_seq = hi(self.last_seq, o.last_seq);
        self.first_ts = lo(self.first_ts, o.first_ts);
        self.last_ts = hi(self.last_ts, o.last_ts);
    }

    fn add(&mut self, seq: i64, ts: i64) {
        self.records += 1;
        self.first_seq = Some(self.first_seq.map_or(seq, |m| m.min(seq)));
        self.last_seq = Some(self.last_seq.map_or(seq, |m| m.max(seq)));
        self.first_ts = Some(self.first_ts.map_or(ts, |m| m.min(ts)));
        self.last_ts = Some(self.last_ts.map_or(ts, |m| m.max(ts)));
    }
}

const HOUR_MS: i64 = 3_600_000;

/// One `rollup_conversation` row being built: a boot's conversation, over a batch (or, in the
/// migration's backfill, over every stored turn of the boot).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ConvAgg {
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
    /// Hours a turn was running in.
    pub hours: HourSet,
}

/// Column positions in a `turn_starts` / `turn_ends` row's values (see `rows::COLUMNS`).
const TURN_CONVERSATION: usize = 0;
const TURN_ID: usize = 1;
const END_OUTCOME: usize = 2;
const END_DURATION_MS: usize = 3;
const END_OUTPUT_BYTES: usize = 6;
const END_ALLOC_BYTES: usize = 8;
const END_FREED_BYTES: usize = 9;

fn text_at(v: &[Value], i: usize) -> &str {
    match v.get(i) {
        Some(Value::Text(s)) => s,
        _ => "",
    }
}

fn int_at(v: &[Value], i: usize) -> Option<i64> {
    match v.get(i) {
        Some(Value::Integer(n)) => Some(*n),
        _ => None,
    }
}

impl ConvAgg {
    /// Adds a `turn.start` at `ts_ms`.
    pub(crate) fn add_start(&mut self, ts_ms: i64) {
        self.turns += 1;
        self.hours.insert_span(ts_ms, ts_ms);
    }

    /// Adds a `turn.end` at `ts_ms` (not `sealed`: a seal is written by the next boot and
    /// carries no figures). Its start is `ts_ms - duration_ms` (its end's hour alone without a
    /// duration; the start's own hour comes from its `turn.start`).
    pub(crate) fn add_end(
        &mut self,
        ts_ms: i64,
        duration_ms: Option<i64>,
        output_bytes: Option<i64>,
        alloc_bytes: Option<i64>,
        freed_bytes: Option<i64>,
    ) {
        self.ended += 1;
        if let (Some(a), Some(f)) = (alloc_bytes, freed_bytes) {
            self.kept_bytes = self.kept_bytes.saturating_add(a.saturating_sub(f));
        }
        self.alloc_bytes = self.alloc_bytes.saturating_add(alloc_bytes.unwrap_or(0));
        self.output_bytes = self.output_bytes.saturating_add(output_bytes.unwrap_or(0));
        let start = duration_ms.map_or(ts_ms, |d| ts_ms.saturating_sub(d.max(0)));
        self.hours.insert_span(start, ts_ms);
    }
}

/// A candidate for `rollup_top_turns`: (kept bytes, allocated bytes, conversation, turn).
pub(crate) type TopTurn<S> = (i64, i64, S, S);

/// Whether a turn that kept `kept` bytes ranks before `other`: by kept bytes, then turn id,
/// then conversation, the order `rollup_top_turns` is trimmed in.
fn ranks_before<S: AsRef<str>>(
    kept: i64,
    conversation: &str,
    turn: &str,
    other: &TopTurn<S>,
) -> bool {
    other
        .0
        .cmp(&kept)
        .then(turn.cmp(other.3.as_ref()))
        .then(conversation.cmp(other.2.as_ref()))
        .is_lt()
}

/// Whether a turn would enter `top` (the best [`TOP_TURNS_KEPT`] so far).
pub(crate) fn enters_top<S: AsRef<str>>(
    top: &[TopTurn<S>],
    kept: i64,
    conversation: &str,
    turn: &str,
) -> bool {
    top.len() < TOP_TURNS_KEPT
        || top.last().is_some_and(|l| ranks_before(kept, conversation, turn, l))
}

/// Adds `t` to `top`, which stays the best [`TOP_TURNS_KEPT`] in rank order.
pub(crate) fn keep_top<S: AsRef<str>>(top: &mut Vec<TopTurn<S>>, t: TopTurn<S>) {
    if !enters_top(top, t.0, t.2.as_ref(), t.3.as_ref()) {
        return;
    }
    let at = top
        .iter()
        .position(|x| ranks_before(t.0, t.2.as_ref(), t.3.as_ref(), x))
        .unwrap_or(top.len());
    top.insert(at, t);
    top.truncate(TOP_TURNS_KEPT);
}

/// Upserts `rollup_conversation` rows: totals add, active hours are united. Sums saturate at
/// the `i64` bounds, as in memory: SQLite turns an overflowing `+` into a REAL, which a STRICT
/// integer column refuses, and one absurd `alloc_bytes` must not stop ingest.
pub(crate) fn upsert_conversations<'a>(
    tx: &Connection,
    rows: impl Iterator<Item = ((i64, &'a str), &'a ConvAgg)>,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO rollup_conversation (boot_no, conversation, turns, ended, kept_bytes,
             alloc_bytes, output_bytes, first_hour_ms, active_hours)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (boot_no, conversation) DO UPDATE SET
             turns = max(min(turns + excluded.turns, 9223372036854775807), 0),
             ended = max(min(ended + excluded.ended, 9223372036854775807), 0),
             kept_bytes = max(min(kept_bytes + excluded.kept_bytes, 9223372036854775807),
                              -9223372036854775808),
             alloc_bytes = max(min(alloc_bytes + excluded.alloc_bytes, 9223372036854775807),
                               -9223372036854775808),
             output_bytes = max(min(output_bytes + excluded.output_bytes, 9223372036854775807),
                                -9223372036854775808),
             first_hour_ms = min(first_hour_ms, excluded.first_hour_ms),
             active_hours = dispatch_hours_or(first_hour_ms, active_hours,
                                              excluded.first_hour_ms, excluded.active_hours)",
    )?;
    for ((boot_no, conversation), a) in rows {
        stmt.execute(params![
            boot_no,
            conversation,
            a.turns,
            a.ended,
            a.kept_bytes,
            a.alloc_bytes,
            a.output_bytes,
            a.hours.first_hour_ms(),
            a.hours.bits(),
        ])?;
    }
    Ok(())
}

/// Adds `top` to boot `boot_no`'s `rollup_top_turns` and trims it back to the best
/// [`TOP_TURNS_KEPT`].
pub(crate) fn upsert_top_turns<S: AsRef<str>>(
    tx: &Connection,
    boot_no: i64,
    top: &[TopTurn<S>],
) -> rusqlite::Result<()> {
    if top.is_empty() {
        return Ok(());
    }
    let mut ins = tx.prepare_cached(
        "INSERT OR IGNORE INTO rollup_top_turns (boot_no, conversation, turn, kept_bytes,
             alloc_bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (kept, alloc, conversation, turn) in top {
        ins.execute(params![boot_no, conversation.as_ref(), turn.as_ref(), kept, alloc])?;
    }
    tx.prepare_cached(
        "DELETE FROM rollup_top_turns WHERE boot_no = ?1 AND (conversation, turn) NOT IN
            (SELECT conversation, turn FROM rollup_top_turns WHERE boot_no = ?1
             ORDER BY kept_bytes DESC, turn, conversation LIMIT ?2)",
    )?
    .execute(params![boot_no, TOP_TURNS_KEPT as i64])?;
    Ok(())
}

/// Commits `batch` in one transaction.
pub(crate) fn commit(
    conn: &mut Connection,
    batch: &mut Batch,
    now_ms: i64,
) -> rusqlite::Result<Committed> {
    let tx = conn.transaction()?;
    let mut done = Committed::default();
    for (boot_no, boot, service) in &batch.new_boots {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO boots (boot_no, boot, service) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![boot_no, boot, service])?;
    }
    for s in &batch.new_segments {
        tx.prepare_cached(
            "INSERT INTO segments (segment_id, boot_no, segment, service, file_name, header_seq,
                 created_ts_ms, pid, writer, offset_bytes, line_no, last_seq, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, 0, NULL, 'open')",
        )?
        .execute(params![
            s.segment_id,
            s.boot_no,
            i64::try_from(s.header.segment).unwrap_or(i64::MAX),
            s.service,
            s.file_name,
            i64::try_from(s.header_seq).unwrap_or(i64::MAX),
            s.header.created_ts_ms,
            s.header.pid,
            s.header.writer,
        ])?;
    }

    let duplicates = drop_stored_keys(&tx, batch)?;
    done.duplicates += duplicates;

    let mut rollups: HashMap<(i64, i64), Rollup> = HashMap::new();
    let mut boots: HashMap<i64, BootStats> = HashMap::new();
    let mut convs: HashMap<(i64, &str), ConvAgg> = HashMap::new();
    let mut tops: HashMap<i64, Vec<TopTurn<&str>>> = HashMap::new();
    let mut start_ids: Vec<Option<i64>> = Vec::new();
    for &(key, ts) in &batch.header_lines {
        let (boot_no, seq) = split_key(key);
        boots.entry(boot_no).or_default().add(seq as i64, ts);
        done.records += 1;
    }
    for (t, rows) in batch.rows.iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        // Ends are paired before they are stored (their `start_id` is bound at insert), starts
        // after (with the stored ends still waiting for them).
        if t == T_TURN_ENDS {
            pair_ends(&tx, rows, &mut start_ids)?;
        }
        let inserted =
            insert_rows(&tx, t, rows, (t == T_TURN_ENDS).then_some(start_ids.as_slice()))?;
        if t == T_TURN_STARTS {
            pair_starts(&tx, rows)?;
        }
        // Keys were filtered above, so every row lands; a shortfall means a key repeated in
        // a way the filter could not see, and is counted rather than hidden.
        done.duplicates += rows.len() as u64 - inserted;
        done.records += inserted;
        // Rows come in key order: aggregate runs of one boot (and hour) before touching the maps.
        let mut run: Option<(i64, BootStats)> = None;
        let mut hour_run: Option<((i64, i64), Rollup)> = None;
        for r in rows {
            let (boot_no, seq) = split_key(r.id);
            match &mut run {
                Some((b, st)) if *b == boot_no => st.add(seq as i64, r.ts_ms),
                _ => {
                    if let Some((b, st)) = run.take() {
                        boots.entry(b).or_default().merge(&st);
                    }
                    let mut st = BootStats::default();
                    st.add(seq as i64, r.ts_ms);
                    run = Some((boot_no, st));
                }
            }
            if let (T_TURN_STARTS | T_TURN_ENDS, RowVals::Other(v)) = (t, &r.vals) {
                let conversation = text_at(v, TURN_CONVERSATION);
                if t == T_TURN_STARTS {
                    convs.entry((boot_no, conversation)).or_default().add_start(r.ts_ms);
                } else if text_at(v, END_OUTCOME) != "sealed" {
                    let (alloc, freed) = (int_at(v, END_ALLOC_BYTES), int_at(v, END_FREED_BYTES));
                    convs.entry((boot_no, conversation)).or_default().add_end(
                        r.ts_ms,
                        int_at(v, END_DURATION_MS),
                        int_at(v, END_OUTPUT_BYTES),
                        alloc,
                        freed,
                    );
                    if let (Some(a), Some(f)) = (alloc, freed) {
                        let top = tops.entry(boot_no).or_default();
                        keep_top(top, (a.saturating_sub(f), a, conversation, text_at(v, TURN_ID)));
                    }
                }
            }
            if t == T_SAMPLES || t == T_TURN_STARTS {
                let hour = r.ts_ms.div_euclid(HOUR_MS) * HOUR_MS;
                if hour_run.as_ref().is_none_or(|(k, _)| *k != (boot_no, hour)) {
                    if let Some((k, agg)) = hour_run.take() {
                        rollups.entry(k).or_default().merge(&agg);
                    }
                    hour_run = Some(((boot_no, hour), Rollup::default()));
                }
                let Some((_, agg)) = hour_run.as_mut() else { continue };
                if let RowVals::Sample(v) = &r.vals {
                    agg.samples += 1;
                    agg.rss.add(opt(v[S_RSS]));
                    agg.allocated.add(opt(v[S_ALLOCATED]));
                    agg.resident.add(opt(v[S_RESIDENT]));
                    if let Some(f) = opt(v[S_TURNS_IN_FLIGHT]) {
                        agg.turns_in_flight_max =
                            Some(agg.turns_in_flight_max.map_or(f, |m| m.max(f)));
                        agg.level(f).add(opt(v[S_ALLOCATED]), opt(v[S_RESIDENT]), opt(v[S_RSS]));
                    }
                } else {
                    agg.turns_started += 1;
                }
            }
        }
        if let Some((b, st)) = run.take() {
            boots.entry(b).or_default().merge(&st);
        }
        if let Some((k, agg)) = hour_run.take() {
            rollups.entry(k).or_default().merge(&agg);
        }
    }
    for ((boot_no, hour), a) in &rollups {
        tx.prepare_cached(
            "INSERT INTO rollup_hourly (boot_no, hour_ms, samples,
                 rss_min, rss_max, rss_sum, rss_n,
                 allocated_min, allocated_max, allocated_sum, allocated_n,
                 resident_min, resident_max, resident_sum, resident_n,
                 turns_started, turns_in_flight_max)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
             ON CONFLICT (boot_no, hour_ms) DO UPDATE SET
                 samples = samples + excluded.samples,
                 rss_min = coalesce(min(rss_min, excluded.rss_min), rss_min, excluded.rss_min),
                 rss_max = coalesce(max(rss_max, excluded.rss_max), rss_max, excluded.rss_max),
                 rss_sum = rss_sum + excluded.rss_sum,
                 rss_n = rss_n + excluded.rss_n,
                 allocated_min = coalesce(min(allocated_min, excluded.allocated_min),
                                          allocated_min, excluded.allocated_min),
                 allocated_max = coalesce(max(allocated_max, excluded.allocated_max),
                                          allocated_max, excluded.allocated_max),
                 allocated_sum = allocated_sum + excluded.allocated_sum,
                 allocated_n = allocated_n + excluded.allocated_n,
                 resident_min = coalesce(min(resident_min, excluded.resident_min),
                                         resident_min, excluded.resident_min),
                 resident_max = coalesce(max(resident_max, excluded.resident_max),
                                         resident_max, excluded.resident_max),
                 resident_sum = resident_sum + excluded.resident_sum,
                 resident_n = resident_n + excluded.resident_n,
                 turns_started = turns_started + excluded.turns_started,
                 turns_in_flight_max = coalesce(max(turns_in_flight_max, excluded.turns_in_flight_max),
                                                turns_in_flight_max, excluded.turns_in_flight_max)",
        )?
        .execute(params![
            boot_no,
            hour,
            a.samples,
            a.rss.min,
            a.rss.max,
            a.rss.sum,
            a.rss.n,
            a.allocated.min,
            a.allocated.max,
            a.allocated.sum,
            a.allocated.n,
            a.resident.min,
            a.resident.max,
            a.resident.sum,
            a.resident.n,
            a.turns_started,
            a.turns_in_flight_max,
        ])?;
    }
    for ((boot_no, hour), level, a) in
        rollups.iter().flat_map(|(k, r)| r.levels.iter().map(move |(l, a)| (k, l, a)))
    {
        tx.prepare_cached(
            "INSERT INTO rollup_hourly_load (boot_no, hour_ms, turns_in_flight, samples,
                 allocated_min, allocated_max, resident_min, rss_min, rss_max)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (boot_no, hour_ms, turns_in_flight) DO UPDATE SET
                 samples = samples + excluded.samples,
                 allocated_min = coalesce(min(allocated_min, excluded.allocated_min),
                                          allocated_min, excluded.allocated_min),
                 allocated_max = coalesce(max(allocated_max, excluded.allocated_max),
                                          allocated_max, excluded.allocated_max),
                 resident_min = coalesce(min(resident_min, excluded.resident_min),
                                         resident_min, excluded.resident_min),
                 rss_min = coalesce(min(rss_min, excluded.rss_min), rss_min, excluded.rss_min),
                 rss_max = coalesce(max(rss_max, excluded.rss_max), rss_max, excluded.rss_max)",
        )?
        .execute(params![
            boot_no,
            hour,
            level,
            a.samples,
            a.allocated.min,
            a.allocated.max,
            a.resident.min,
            a.rss.min,
            a.rss.max,
        ])?;
    }
    upsert_conversations(&tx, convs.iter().map(|(k, a)| (*k, a)))?;
    for (boot_no, top) in &tops {
        upsert_top_turns(&tx, *boot_no, top)?;
    }
    for (boot_no, s) in &boots {
        tx.prepare_cached(
            "UPDATE boots SET records = records + ?2,
                 first_seq = coalesce(min(first_seq, ?3), first_seq, ?3),
                 last_seq = coalesce(max(last_seq, ?4), last_seq, ?4),
                 first_ts_ms = coalesce(min(first_ts_ms, ?5), first_ts_ms, ?5),
                 last_ts_ms = coalesce(max(last_ts_ms, ?6), last_ts_ms, ?6)
             WHERE boot_no = ?1",
        )?
        .execute(params![
            boot_no,
            s.records,
            s.first_seq,
            s.last_seq,
            s.first_ts,
            s.last_ts
        ])?;
    }
    for (boot_no, m) in &batch.boot_meta {
        tx.prepare_cached(
            "UPDATE boots SET pid = coalesce(?2, pid), version = coalesce(?3, version),
                 build_id = coalesce(?4, build_id), git_sha = coalesce(?5, git_sha),
                 host = coalesce(?6, host), started_ts_ms = coalesce(?7, started_ts_ms),
                 stopped_ts_ms = coalesce(?8, stopped_ts_ms),
                 stop_reason = coalesce(?9, stop_reason)
             WHERE boot_no = ?1",
        )?
        .execute(params![
            boot_no,
            m.pid,
            m.version,
            m.build_id,
            m.git_sha,
            m.host,
            m.started_ts_ms,
            m.stopped_ts_ms,
            m.stop_reason
        ])?;
    }
    for e in &batch.errors {
        tx.prepare_cached(
            "INSERT INTO ingest_errors (segment_id, file_name, offset_bytes, line_no,
                 length_bytes, code, reason, bytes, noticed_ts_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            e.segment_id,
            e.file_name,
            i64::try_from(e.offset_bytes).unwrap_or(i64::MAX),
            e.line_no.map(|l| i64::try_from(l).unwrap_or(i64::MAX)),
            i64::try_from(e.length_bytes).unwrap_or(i64::MAX),
            e.code,
            e.reason,
            e.bytes,
            now_ms,
        ])?;
    }
    for c in &batch.checkpoints {
        tx.prepare_cached(
            "UPDATE segments SET offset_bytes = ?2, line_no = ?3,
                 last_seq = coalesce(?4, last_seq), state = ?5, size_bytes = ?6, file_name = ?7,
                 drained_ts_ms = CASE WHEN ?8 THEN coalesce(drained_ts_ms, ?9) END
             WHERE segment_id = ?1",
        )?
        .execute(params![
            c.segment_id,
            i64::try_from(c.offset_bytes).unwrap_or(i64::MAX),
            i64::try_from(c.line_no).unwrap_or(i64::MAX),
            c.last_seq.map(|s| s as i64),
            c.state.as_str(),
            i64::try_from(c.size_bytes).unwrap_or(i64::MAX),
            c.file_name,
            c.drained,
            now_ms,
        ])?;
    }
    tx.commit()?;
    Ok(done)
}

/// A turn row's `(conversation, turn)` as bound for pairing; `None` without a turn id (such a
/// turn never pairs).
fn turn_ids(r: &KeyedRow) -> Option<(&Value, &str)> {
    let RowVals::Other(v) = &r.vals else { return None };
    match (v.get(TURN_CONVERSATION), v.get(TURN_ID)) {
        (Some(c), Some(Value::Text(t))) => Some((c, t.as_str())),
        _ => None,
    }
}

/// The most unpaired ends [`pair_starts`] reads into memory; with more, each start looks its
/// end up in the index instead.
const UNPAIRED_ENDS_IN_MEMORY: i64 = 4096;

/// Pairs the `turn.start` rows just inserted with stored ends still waiting for their start
/// (schema migration 4): each takes the earliest by key with its `conversation IS` and
/// `turn =`. Such ends are rare (an end drained before its start), so the few there are read
/// once per batch and most starts need no lookup at all.
fn pair_starts(tx: &Transaction<'_>, rows: &[KeyedRow]) -> rusqlite::Result<()> {
    let waiting: HashSet<(Option<String>, String)> = {
        let mut st = tx.prepare_cached(
            "SELECT conversation, turn FROM turn_ends WHERE start_id IS NULL AND turn IS NOT NULL
             LIMIT ?1",
        )?;
        let rows = st.query_map([UNPAIRED_ENDS_IN_MEMORY + 1], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let all_in_memory = (waiting.len() as i64) <= UNPAIRED_ENDS_IN_MEMORY;
    if all_in_memory && waiting.is_empty() {
        return Ok(());
    }
    let mut find = tx.prepare_cached(
        "SELECT id FROM turn_ends WHERE start_id IS NULL AND conversation IS ?1 AND turn = ?2
         ORDER BY id LIMIT 1",
    )?;
    for r in rows {
        let Some((conversation, turn)) = turn_ids(r) else { continue };
        if all_in_memory {
            let c = match conversation {
                Value::Text(c) => Some(c.clone()),
                _ => None,
            };
            if !waiting.contains(&(c, turn.to_owned())) {
                continue;
            }
        }
        let end: Option<i64> =
            find.query_row(params![conversation, turn], |q| q.get(0)).optional()?;
        if let Some(e) = end {
            tx.prepare_cached("UPDATE turn_starts SET end_id = ?2 WHERE id = ?1")?
                .execute(params![r.id, e])?;
            tx.prepare_cached("UPDATE turn_ends SET start_id = ?1 WHERE id = ?2")?
                .execute(params![r.id, e])?;
        }
    }
    Ok(())
}

/// Pairs the `turn.end` rows about to be inserted with their starts (schema migration 4):
/// each takes the earliest stored start still open with its `conversation IS` and `turn =`,
/// whose `end_id` is set here; `start_ids` gets each end's start, bound when the end is
/// inserted. The batch's starts are already stored, so a turn that starts and ends in one
/// batch pairs too, and a second end of one turn finds its start taken.
fn pair_ends(
    tx: &Transaction<'_>,
    rows: &[KeyedRow],
    start_ids: &mut Vec<Option<i64>>,
) -> rusqlite::Result<()> {
    start_ids.clear();
    let mut find = tx.prepare_cached(
        "SELECT id FROM turn_starts WHERE end_id IS NULL AND conversation IS ?1 AND turn = ?2
         ORDER BY id LIMIT 1",
    )?;
    for r in rows {
        let start: Option<i64> = match turn_ids(r) {
            None => None,
            Some((conversation, turn)) => {
                find.query_row(params![conversation, turn], |q| q.get(0)).optional()?
            }
        };
        if let Some(s) = start {
            tx.prepare_cached("UPDATE turn_starts SET end_id = ?2 WHERE id = ?1")?
                .execute(params![s, r.id])?;
        }
        start_ids.push(start);
    }
    Ok(())
}

/// Removes from `batch` every row whose key is already stored (in any keyed table) or repeats
/// within the batch; returns how many were removed.
fn drop_stored_keys(tx: &Transaction<'_>, batch: &mut Batch) -> rusqlite::Result<u64> {
    // Key range per boot over the whole batch.
    // Rows of a table come in key order, mostly of one boot: fold runs before the map.
    let mut ranges: HashMap<i64, (i64, i64)> = HashMap::new();
    for rows in &batch.rows {
        let mut run: Option<(i64, i64, i64)> = None; // (boot_no, lo, hi)
        for r in rows {
            let b = r.id >> SEQ_BITS;
            match &mut run {
                Some((rb, lo, hi)) if *rb == b => {
                    *lo = (*lo).min(r.id);
                    *hi = (*hi).max(r.id);
                }
                _ => {
                    if let Some((rb, lo, hi)) = run.replace((b, r.id, r.id)) {
                        let e = ranges.entry(rb).or_insert((lo, hi));
                        *e = (e.0.min(lo), e.1.max(hi));
                    }
                }
            }
        }
        if let Some((rb, lo, hi)) = run {
            let e = ranges.entry(rb).or_insert((lo, hi));
            *e = (e.0.min(lo), e.1.max(hi));
        }
    }
    let mut stored: HashSet<i64> = HashSet::new();
    for &(lo, hi) in ranges.values() {
        for (table, _) in KEYED_TABLES {
            let sql = format!("SELECT id FROM {table} WHERE id BETWEEN ?1 AND ?2");
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut q = stmt.query(params![lo, hi])?;
            while let Some(row) = q.next()? {
                stored.insert(row.get(0)?);
            }
        }
    }
    if stored.is_empty() && !batch.maybe_duplicate_in_batch {
        return Ok(0);
    }
    let mut removed = 0u64;
    for rows in &mut batch.rows {
        let before = rows.len();
        rows.retain(|r| stored.insert(r.id));
        removed += (before - rows.len()) as u64;
    }
    Ok(removed)
}

/// `INSERT OR IGNORE` of `n` rows of table `t`; `paired`: each row ends with the key of its
/// partner (`start_id`, for `turn_ends`).
fn insert_sql(t: usize, n: usize, paired: bool) -> String {
    let cols = COLUMNS[t];
    let mut sql = format!("INSERT OR IGNORE INTO {} (id, ts_ms", KEYED_TABLES[t].0);
    for c in cols {
        sql.push_str(", ");
        sql.push_str(c);
    }
    if paired {
        sql.push_str(", start_id");
    }
    sql.push_str(") VALUES ");
    let one = format!("(?{})", ", ?".repeat(cols.len() + 1 + usize::from(paired)));
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&one);
    }
    sql
}

thread_local! {
    static SQL_CACHE: std::cell::RefCell<HashMap<(usize, usize, bool), std::rc::Rc<str>>> =
        std::cell::RefCell::new(HashMap::new());
}

fn cached_sql(t: usize, n: usize, paired: bool) -> std::rc::Rc<str> {
    SQL_CACHE.with(|c| {
        c.borrow_mut()
            .entry((t, n, paired))
            .or_insert_with(|| insert_sql(t, n, paired).into())
            .clone()
    })
}

/// Inserts rows of table `t` with multi-row `INSERT OR IGNORE`s; returns rows inserted.
/// `partners`: one per row, the partner key bound last (see [`insert_sql`]).
fn insert_rows(
    tx: &Transaction<'_>,
    t: usize,
    rows: &[KeyedRow],
    partners: Option<&[Option<i64>]>,
) -> rusqlite::Result<u64> {
    let mut inserted = 0u64;
    let full = rows.len() / ROWS_PER_INSERT * ROWS_PER_INSERT;
    let (head, rest) = rows.split_at(full);
    for (part, n, first) in [(head, ROWS_PER_INSERT, 0), (rest, rest.len(), full)] {
        if part.is_empty() {
            continue;
        }
        // One statement per chunk size, prepared once per batch and stepped per chunk.
        let sql = cached_sql(t, n, partners.is_some());
        let mut stmt = tx.prepare_cached(&sql)?;
        // Bindings persist across executions: a NULL bound for the previous row need not be
        // bound again (most sample figures are NULL or not in long runs). Bit j of
        // `null_bound` says parameter j holds NULL; nothing is known at first.
        let mut null_bound: u64 = 0;
        for (k, chunk) in part.chunks(n).enumerate() {
            let mut i = 1usize;
            for (j, r) in chunk.iter().enumerate() {
                stmt.raw_bind_parameter(i, r.id)?;
                stmt.raw_bind_parameter(i + 1, r.ts_ms)?;
                i += 2;
                match &r.vals {
                    RowVals::Sample(v) => {
                        for &x in v.iter() {
                            let bit = 1u64 << (i % 64);
                            match opt(x) {
                                Some(x) => {
                                    stmt.raw_bind_parameter(i, x)?;
                                    null_bound &= !bit;
                                }
                                None if n == 1 && null_bound & bit != 0 => {}
                                None => {
                                    stmt.raw_bind_parameter(i, rusqlite::types::Null)?;
                                    null_bound |= bit;
                                }
                            }
                            i += 1;
                        }
                    }
                    RowVals::Other(v) => {
                        for x in v {
                            match x {
                                Value::Text(s) => stmt.raw_bind_parameter(i, s.as_str())?,
                                other => stmt.raw_bind_parameter(i, other)?,
                            }
                            i += 1;
                        }
                    }
                }
                if let Some(p) = partners {
                    stmt.raw_bind_parameter(i, p.get(first + k * n + j).copied().flatten())?;
                    i += 1;
                }
            }
            inserted += stmt.raw_execute()? as u64;
        }
    }
    Ok(inserted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_sql_has_one_placeholder_per_column() {
        let sql = insert_sql(T_SAMPLES, 2, false);
        assert_eq!(sql.matches('?').count(), 2 * (COLUMNS[T_SAMPLES].len() + 2));
        assert!(sql.starts_with("INSERT OR IGNORE INTO samples (id, ts_ms, rss"));
        let sql = insert_sql(T_TURN_ENDS, 1, true);
        assert_eq!(sql.matches('?').count(), COLUMNS[T_TURN_ENDS].len() + 3);
        assert!(sql.contains(", start_id) VALUES"), "{sql}");
    }
}
