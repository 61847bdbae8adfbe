//! The journal half of a post-mortem: what the boot wrote before it died, from the traces
//! database (rows of a boot are keys `boot_no << 40 | seq`, see `collector/src/schema.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dispatch_collector::query::{self, TimeRange};
use dispatch_collector::schema::SEQ_BITS;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use super::PostmortemError;
use crate::error::Error;

/// Samples listed in the report's table (the chart shows them all).
pub const DEFAULT_LAST_SAMPLES: usize = 10;
/// Exits listed as crash-loop context.
pub const DEFAULT_PREVIOUS_EXITS: usize = 10;
/// A crash loop: this many exits...
pub const CRASH_LOOP_EXITS: usize = 3;
/// ...within this window, with each uptime shorter than the one before.
pub const CRASH_LOOP_WINDOW_MS: i64 = 10 * 60_000;

/// `process.start` facts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessStart {
    /// Record time.
    pub ts_ms: i64,
    /// pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
    /// Package version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// GNU build-id of the executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// Commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_sha: Option<String>,
    /// Allocator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocator: Option<String>,
    /// Host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Kernel release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// cgroup `memory.max` at start, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_max_bytes: Option<i64>,
    /// cgroup `memory.high` at start, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_high_bytes: Option<i64>,
    /// The non-secret configuration summary, flattened to `key = value` text.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// The `crash` record of the boot.
#[derive(Debug, Clone, Serialize)]
pub struct CrashRecord {
    /// Record time.
    pub ts_ms: i64,
    /// Signal the monitor saw (`SIGSEGV`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Fault address, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_address: Option<String>,
    /// Crashing thread name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_name: Option<String>,
    /// The dump's path as recorded where the server ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minidump: Option<String>,
    /// Why no dump was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dump_error: Option<String>,
    /// Build id of the crashed executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// How long the child ran, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<i64>,
    /// The in-process last sample, as the crash record carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sample: Option<Value>,
}

/// An `exit` record.
#[derive(Debug, Clone, Serialize)]
pub struct ExitRecord {
    /// Record time.
    pub ts_ms: i64,
    /// Boot that exited.
    pub boot: String,
    /// Exit code (absent for a death by signal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    /// Signal for a death by signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The kernel wrote a core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core_dumped: Option<bool>,
    /// The cgroup's oom_kill count rose while it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_killed: Option<bool>,
    /// How long it ran, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<i64>,
}

impl ExitRecord {
    /// Ended other than with status 0.
    pub fn abnormal(&self) -> bool {
        self.signal.is_some()
            || self.status.is_some_and(|s| s != 0)
            || self.oom_killed == Some(true)
    }

    /// `killed by SIGKILL (OOM killer)`, `exit status 3`.
    pub fn describe(&self) -> String {
        let mut s = match (&self.signal, self.status) {
            (Some(sig), _) => format!("killed by {sig}"),
            (None, Some(st)) => format!("exit status {st}"),
            (None, None) => "ended (status unknown)".into(),
        };
        if self.oom_killed == Some(true) {
            s.push_str(" (the OOM killer)");
        }
        if self.core_dumped == Some(true) {
            s.push_str(", core dumped");
        }
        s
    }
}

/// One memory sample, as on-call reads it.
#[derive(Debug, Clone, Serialize)]
pub struct SampleRow {
    /// Sample time.
    pub ts_ms: i64,
    /// RSS (statm), bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<i64>,
    /// Peak RSS (VmHWM), bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hwm_bytes: Option<i64>,
    /// jemalloc allocated, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_bytes: Option<i64>,
    /// cgroup memory.current, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_current_bytes: Option<i64>,
    /// cgroup memory.peak, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_peak_bytes: Option<i64>,
    /// cgroup memory.max, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_max_bytes: Option<i64>,
    /// cgroup oom_kill count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kill: Option<i64>,
    /// Turns in flight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turns_in_flight: Option<i64>,
}

/// A turn that had started and not ended when the boot died.
#[derive(Debug, Clone, Serialize)]
pub struct TurnInFlight {
    /// Conversation.
    pub conversation: String,
    /// Turn.
    pub turn: String,
    /// `turn.start` time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ts_ms: Option<i64>,
    /// Provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Sealed by the next boot (it knew the turn was cut off).
    pub sealed: bool,
}

/// An `error.unhandled` or `panic` record.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// Record time.
    pub ts_ms: i64,
    /// The message.
    pub message: String,
    /// Where: the error's source (`tool`, `provider`) or the panic's location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Conversation it belonged to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    /// Turn it belonged to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn: Option<String>,
    /// A panic that took the process down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fatal: Option<bool>,
}

/// A `pressure` record.
#[derive(Debug, Clone, Serialize)]
pub struct Pressure {
    /// Record time.
    pub ts_ms: i64,
    /// `high`, `critical`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// RSS then, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<i64>,
    /// The limit crossed, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<i64>,
    /// `shed`, `refuse`, `recycle`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// `dispatchctl mem`'s verdict for the boot (the same analysis, whole boot).
#[derive(Debug, Clone, Serialize)]
pub struct MemVerdict {
    /// `LEAK`, `WORKING-SET`, ...
    pub verdict: String,
    /// Its one sentence.
    pub summary: String,
    /// Samples it saw.
    pub samples: usize,
}

/// Everything the journal says about the boot.
#[derive(Debug, Clone, Serialize)]
pub struct JournalSection {
    /// The traces database read.
    pub db: PathBuf,
    /// What was done to bring it up to date (drained the journal, or why not).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Boot id.
    pub boot: String,
    /// Service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Why this boot (for `latest`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
    /// First and last record times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_ts_ms: Option<i64>,
    /// Last record time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ts_ms: Option<i64>,
    /// `process.start`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_start: Option<ProcessStart>,
    /// The `crash` record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crash: Option<CrashRecord>,
    /// The `exit` record of this boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitRecord>,
    /// `process.stop` reason, for a clean stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// The mem verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem: Option<MemVerdict>,
    /// Samples in the boot.
    pub samples: usize,
    /// The last samples, oldest first.
    pub last_samples: Vec<SampleRow>,
    /// `(first, last)` cgroup oom_kill counts of the boot's samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kill: Option<(i64, i64)>,
    /// `pressure` records.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pressure: Vec<Pressure>,
    /// Turns in flight when it died.
    pub turns_in_flight: Vec<TurnInFlight>,
    /// Conversations active when it died.
    pub active_conversations: Vec<String>,
    /// The last `error.unhandled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Failure>,
    /// The last `panic`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_panic: Option<Failure>,
    /// Exits up to and including this boot's, newest last.
    pub previous_exits: Vec<ExitRecord>,
    /// A crash loop, said in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crash_loop: Option<String>,
    /// The mem report's chart series (not in JSON: the samples are in the database).
    #[serde(skip)]
    pub chart: Option<crate::chart::ChartData>,
}

impl JournalSection {
    /// The dump the crash record names, where it can be found: the recorded path, or the same
    /// file name under `<var dir>/crashes/` (a var dir copied elsewhere for the post-mortem).
    pub fn dump_path(&self, var_dir: &Path) -> Option<PathBuf> {
        let recorded = PathBuf::from(self.crash.as_ref()?.minidump.as_deref()?);
        if recorded.is_file() {
            return Some(recorded);
        }
        let moved =
            dispatch_journal::paths::VarDir::new(var_dir).crash_dir().join(recorded.file_name()?);
        moved.is_file().then_some(moved)
    }
}

fn failed(what: &'static str) -> impl FnOnce(rusqlite::Error) -> PostmortemError {
    move |e| {
        PostmortemError::from(Error::Query {
            what,
            source: Box::new(query::QueryError { what, source: e }),
        })
    }
}

fn qfailed(what: &'static str) -> impl FnOnce(query::QueryError) -> PostmortemError {
    move |e| PostmortemError::from(Error::Query { what, source: Box::new(e) })
}

/// Picks the boot: `latest` (the newest that ended abnormally) or an id prefix. Returns it
/// and, for `latest`, why it was chosen.
///
/// # Errors
/// Unknown or ambiguous prefix; [`PostmortemError::NoAbnormalBoot`]; query failures.
pub fn select_boot(
    conn: &Connection,
    db: &Path,
    which: &str,
) -> Result<(query::Boot, Option<String>), PostmortemError> {
    let boots = query::boots(conn).map_err(qfailed("reading boots"))?;
    if which != "latest" {
        let m: Vec<_> = boots.iter().filter(|b| b.boot.starts_with(which)).collect();
        return match m.len() {
            0 => Err(Error::UnknownBoot { prefix: which.to_owned() }.into()),
            1 => Ok((m[0].clone(), None)),
            count => Err(Error::AmbiguousBoot { prefix: which.to_owned(), count }.into()),
        };
    }
    let crashes = query::crashes(conn, TimeRange::ALL).map_err(qfailed("reading crashes"))?;
    let exits = query::exits(conn, TimeRange::ALL).map_err(qfailed("reading exits"))?;
    let fatal: Vec<i64> = {
        let mut stmt = conn
            .prepare("SELECT DISTINCT id >> ?1 FROM panics WHERE fatal = 1")
            .map_err(failed("reading panics"))?;
        let rows = stmt.query_map([SEQ_BITS], |r| r.get(0)).map_err(failed("reading panics"))?;
        rows.collect::<Result<_, _>>().map_err(failed("reading panics"))?
    };
    let why = |b: &query::Boot| -> Option<String> {
        if let Some(c) = crashes.iter().rev().find(|c| c.boot == b.boot) {
            return Some(format!("crashed with {}", c.signal.as_deref().unwrap_or("a signal")));
        }
        if let Some(e) = exits.iter().rev().find(|e| e.exited_boot == b.boot) {
            let rec = exit_record(e);
            if rec.abnormal() {
                return Some(rec.describe());
            }
        }
        fatal.contains(&b.boot_no).then(|| "a fatal panic".into())
    };
    let abnormal: Vec<(&query::Boot, String)> =
        boots.iter().filter_map(|b| Some((b, why(b)?))).collect();
    let Some((boot, reason)) = abnormal.iter().max_by_key(|(b, _)| (b.last_ts_ms, b.boot_no))
    else {
        return Err(PostmortemError::NoAbnormalBoot { db: db.into() });
    };
    let chosen = format!(
        "latest: boot {} is the newest of {} that ended abnormally ({reason}; {} in the database)",
        boot.boot,
        plural(abnormal.len(), "boot"),
        plural(boots.len(), "boot"),
    );
    Ok(((*boot).clone(), Some(chosen)))
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

fn exit_record(e: &query::Exit) -> ExitRecord {
    ExitRecord {
        ts_ms: e.ts_ms,
        boot: e.exited_boot.clone(),
        status: e.status,
        signal: e.signal.clone(),
        core_dumped: e.core_dumped,
        oom_killed: e.oom_killed,
        uptime_ms: e.uptime_ms,
    }
}

/// Reads everything the journal says about `boot`.
///
/// # Errors
/// Query failures.
pub fn read(
    conn: &Connection,
    db: &Path,
    boot: &query::Boot,
    chosen: Option<String>,
    notes: Vec<String>,
) -> Result<JournalSection, PostmortemError> {
    let lo = boot.boot_no << SEQ_BITS;
    let hi = (boot.boot_no + 1) << SEQ_BITS;

    let process_start = last_event(conn, lo, hi, "process.start")?.map(|(ts, v)| {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let limit = |k: &str| v.get("limits").and_then(|l| l.get(k)).and_then(Value::as_i64);
        let mut config = BTreeMap::new();
        if let Some(Value::Object(m)) = v.get("config") {
            flatten_config("", m, &mut config);
        }
        ProcessStart {
            ts_ms: ts,
            pid: v.get("pid").and_then(Value::as_i64),
            version: s("version"),
            build_id: s("build_id"),
            git_sha: s("git_sha"),
            allocator: s("allocator"),
            host: s("host"),
            kernel: s("kernel"),
            memory_max_bytes: limit("memory_max"),
            memory_high_bytes: limit("memory_high"),
            config,
        }
    });

    let crash_row = query::crashes(conn, TimeRange::ALL)
        .map_err(qfailed("reading crashes"))?
        .into_iter()
        .rev()
        .find(|c| c.boot == boot.boot);
    let active_from_crash: Option<Vec<String>> = crash_row
        .as_ref()
        .and_then(|c| serde_json::from_str(c.active_conversations_json.as_deref()?).ok());
    let crash = crash_row.map(|c| CrashRecord {
        ts_ms: c.ts_ms,
        signal: c.signal,
        fault_address: c.fault_address,
        thread_name: c.thread_name,
        minidump: c.minidump,
        dump_error: c.dump_error,
        build_id: c.build_id,
        uptime_ms: c.uptime_ms,
        last_sample: c.last_sample_json.and_then(|j| serde_json::from_str(&j).ok()),
    });

    let all_exits = query::exits(conn, TimeRange::ALL).map_err(qfailed("reading exits"))?;
    let exit = all_exits.iter().rev().find(|e| e.exited_boot == boot.boot).map(exit_record);
    let until = exit.as_ref().map(|e| e.ts_ms).or(boot.last_ts_ms).unwrap_or(i64::MAX);
    let mut previous_exits: Vec<ExitRecord> =
        all_exits.iter().filter(|e| e.ts_ms <= until).map(exit_record).collect();
    let crash_loop = crash_loop(&previous_exits);
    let keep_from = previous_exits.len().saturating_sub(DEFAULT_PREVIOUS_EXITS);
    previous_exits.drain(..keep_from);

    let (samples, last_samples, oom_kill) = samples(conn, lo, hi)?;

    let pressure = events(conn, lo, hi, "pressure")?
        .into_iter()
        .map(|(ts, v)| Pressure {
            ts_ms: ts,
            level: v.get("level").and_then(Value::as_str).map(str::to_owned),
            rss_bytes: v.get("rss").and_then(Value::as_i64),
            limit_bytes: v.get("limit").and_then(Value::as_i64),
            action: v.get("action").and_then(Value::as_str).map(str::to_owned),
        })
        .collect();

    let turns_in_flight: Vec<TurnInFlight> = query::turns_started(conn, TimeRange::ALL)
        .map_err(qfailed("reading turns"))?
        .into_iter()
        .filter(|t| t.boot == boot.boot)
        .filter(|t| t.end_ts_ms.is_none() || t.outcome.as_deref() == Some("sealed"))
        .map(|t| TurnInFlight {
            sealed: t.outcome.as_deref() == Some("sealed"),
            conversation: t.conversation.unwrap_or_default(),
            turn: t.turn.unwrap_or_default(),
            started_ts_ms: t.start_ts_ms,
            provider: t.provider,
            model: t.model,
        })
        .collect();
    let active_conversations = active_from_crash.unwrap_or_else(|| {
        let mut c: Vec<String> = turns_in_flight.iter().map(|t| t.conversation.clone()).collect();
        c.sort();
        c.dedup();
        c
    });

    let last_error = conn
        .query_row(
            "SELECT ts_ms, message, source, conversation, turn FROM errors
             WHERE id >= ?1 AND id < ?2 ORDER BY id DESC LIMIT 1",
            params![lo, hi],
            |r| {
                Ok(Failure {
                    ts_ms: r.get(0)?,
                    message: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    source: r.get(2)?,
                    conversation: r.get(3)?,
                    turn: r.get(4)?,
                    fatal: None,
                })
            },
        )
        .optional()
        .map_err(failed("reading errors"))?;
    let last_panic = conn
        .query_row(
            "SELECT ts_ms, message, location, conversation, turn, fatal FROM panics
             WHERE id >= ?1 AND id < ?2 ORDER BY id DESC LIMIT 1",
            params![lo, hi],
            |r| {
                Ok(Failure {
                    ts_ms: r.get(0)?,
                    message: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    source: r.get(2)?,
                    conversation: r.get(3)?,
                    turn: r.get(4)?,
                    fatal: r.get::<_, Option<i64>>(5)?.map(|f| f != 0),
                })
            },
        )
        .optional()
        .map_err(failed("reading panics"))?;

    // The mem verdict for the whole boot: the same analysis `dispatchctl mem` runs.
    let (mem, chart) = match crate::mem::reports(conn, &boot.boot, crate::args::Since::All) {
        Ok(reports) => match reports.into_iter().next() {
            Some(r) => (
                Some(MemVerdict {
                    verdict: r.analysis.verdict.name().to_owned(),
                    summary: r.analysis.summary.clone(),
                    samples: r.analysis.samples,
                }),
                Some(crate::mem::chart_data(&r)),
            ),
            None => (None, None),
        },
        Err(e) => return Err(crate::Error::from(e).into()),
    };

    Ok(JournalSection {
        db: db.into(),
        notes,
        boot: boot.boot.clone(),
        service: boot.service.clone(),
        chosen,
        first_ts_ms: boot.first_ts_ms,
        last_ts_ms: boot.last_ts_ms,
        process_start,
        crash,
        exit,
        stop_reason: boot.stop_reason.clone(),
        mem,
        samples,
        last_samples,
        oom_kill,
        pressure,
        turns_in_flight,
        active_conversations,
        last_error,
        last_panic,
        previous_exits,
        crash_loop,
        chart,
    })
}

/// `config` objects flattened to `a.b = value` text (strings unquoted).
fn flatten_config(
    prefix: &str,
    m: &serde_json::Map<String, Value>,
    out: &mut BTreeMap<String, String>,
) {
    for (k, v) in m {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Object(inner) => flatten_config(&key, inner, out),
            Value::String(s) => {
                out.insert(key, s.clone());
            }
            Value::Null => {}
            other => {
                out.insert(key, other.to_string());
            }
        }
    }
}

fn events(
    conn: &Connection,
    lo: i64,
    hi: i64,
    kind: &str,
) -> Result<Vec<(i64, Value)>, PostmortemError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT ts_ms, body FROM events WHERE id >= ?1 AND id < ?2 AND kind = ?3 ORDER BY id",
        )
        .map_err(failed("reading events"))?;
    let rows = stmt
        .query_map(params![lo, hi, kind], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .map_err(failed("reading events"))?;
    let mut out = Vec::new();
    for row in rows {
        let (ts, body) = row.map_err(failed("reading events"))?;
        // A body that does not parse was stored as the collector received it; it is skipped
        // here, as the collector would have reported it at ingest.
        if let Ok(v) = serde_json::from_str(&body) {
            out.push((ts, v));
        }
    }
    Ok(out)
}

fn last_event(
    conn: &Connection,
    lo: i64,
    hi: i64,
    kind: &str,
) -> Result<Option<(i64, Value)>, PostmortemError> {
    Ok(events(conn, lo, hi, kind)?.pop())
}

type SampleFacts = (usize, Vec<SampleRow>, Option<(i64, i64)>);

fn samples(conn: &Connection, lo: i64, hi: i64) -> Result<SampleFacts, PostmortemError> {
    let what = "reading samples";
    let count: usize = conn
        .query_row(
            "SELECT count(*) FROM samples WHERE id >= ?1 AND id < ?2",
            params![lo, hi],
            |r| r.get::<_, i64>(0),
        )
        .map_err(failed(what))?
        .try_into()
        .unwrap_or(0);
    let mut stmt = conn
        .prepare(
            "SELECT ts_ms, rss, hwm, je_allocated, cg_current, cg_peak, cg_max, cg_events_oom_kill,
                    turns_in_flight
             FROM samples WHERE id >= ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
        )
        .map_err(failed(what))?;
    let rows = stmt
        .query_map(params![lo, hi, DEFAULT_LAST_SAMPLES as i64], |r| {
            Ok(SampleRow {
                ts_ms: r.get(0)?,
                rss_bytes: r.get(1)?,
                hwm_bytes: r.get(2)?,
                allocated_bytes: r.get(3)?,
                cgroup_current_bytes: r.get(4)?,
                cgroup_peak_bytes: r.get(5)?,
                cgroup_max_bytes: r.get(6)?,
                oom_kill: r.get(7)?,
                turns_in_flight: r.get(8)?,
            })
        })
        .map_err(failed(what))?;
    let mut last: Vec<SampleRow> = rows.collect::<Result<_, _>>().map_err(failed(what))?;
    last.reverse();
    let oom: Option<(Option<i64>, Option<i64>)> = conn
        .query_row(
            "SELECT (SELECT cg_events_oom_kill FROM samples WHERE id >= ?1 AND id < ?2
                       AND cg_events_oom_kill IS NOT NULL ORDER BY id LIMIT 1),
                    (SELECT cg_events_oom_kill FROM samples WHERE id >= ?1 AND id < ?2
                       AND cg_events_oom_kill IS NOT NULL ORDER BY id DESC LIMIT 1)",
            params![lo, hi],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(failed(what))?;
    let oom_kill = oom.and_then(|(a, b)| Some((a?, b?)));
    Ok((count, last, oom_kill))
}

/// At least [`CRASH_LOOP_EXITS`] abnormal exits within [`CRASH_LOOP_WINDOW_MS`] ending at the
/// newest, each having run for less time than the one before.
pub fn crash_loop(exits: &[ExitRecord]) -> Option<String> {
    let last = exits.last()?;
    let recent: Vec<&ExitRecord> = exits
        .iter()
        .filter(|e| e.abnormal() && last.ts_ms - e.ts_ms <= CRASH_LOOP_WINDOW_MS)
        .collect();
    if recent.len() < CRASH_LOOP_EXITS {
        return None;
    }
    let uptimes: Vec<i64> = recent.iter().filter_map(|e| e.uptime_ms).collect();
    let shrinking = uptimes.len() == recent.len() && uptimes.windows(2).all(|w| w[1] < w[0]);
    if !shrinking {
        return None;
    }
    let list: Vec<String> = uptimes.iter().map(|u| seconds(*u)).collect();
    Some(format!(
        "crash loop: {} abnormal exits within {} min, each running shorter than the last ({})",
        recent.len(),
        CRASH_LOOP_WINDOW_MS / 60_000,
        list.join(" -> ")
    ))
}

/// `"4 s"`, `"2 h 31 min"`.
pub fn seconds(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 && s % 60 == 0 => format!("{} min", s / 60),
        s if s < 7200 => format!("{} min {} s", s / 60, s % 60),
        s if (s % 3600) / 60 == 0 => format!("{} h", s / 3600),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(ts_ms: i64, uptime_ms: i64, status: Option<i64>) -> ExitRecord {
        ExitRecord {
            ts_ms,
            boot: "b".into(),
            status,
            signal: None,
            core_dumped: None,
            oom_killed: None,
            uptime_ms: Some(uptime_ms),
        }
    }

    #[test]
    fn a_crash_loop_is_three_abnormal_exits_in_ten_minutes_with_shrinking_uptime() {
        let m = 60_000;
        let looped =
            [exit(0, 82 * m, Some(1)), exit(7 * m, 7 * m, Some(1)), exit(8 * m, 58_000, Some(1))];
        let s = crash_loop(&looped).unwrap();
        assert!(s.contains("3 abnormal exits within 10 min"), "{s}");
        assert!(s.contains("82 min -> 7 min -> 58 s"), "{s}");
        assert_eq!(
            (seconds(9_115_307), seconds(125_000), seconds(7_200_000)),
            ("2 h 31 min".into(), "2 min 5 s".into(), "2 h".into())
        );
        // Growing uptime, or clean exits, are no loop.
        let growing = [exit(0, 1000, Some(1)), exit(m, 2000, Some(1)), exit(2 * m, 3000, Some(1))];
        assert_eq!(crash_loop(&growing), None);
        let clean = [exit(0, 3000, Some(0)), exit(m, 2000, Some(0)), exit(2 * m, 1000, Some(0))];
        assert_eq!(crash_loop(&clean), None);
    }
}
