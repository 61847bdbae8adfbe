//! Every abnormal end across boots, from the traces database's `boots`, `exits`, `crashes`
//! and `panics` rows: what ended each boot, with its signature, grouped by signature, and
//! the crash loops among them.
//!
//! The pure part ([`assemble`], [`groups`], [`crash_loops`]) takes rows and gives the
//! history; [`load`] reads the rows from SQLite.

use std::collections::BTreeMap;

use dispatch_collector::query::{self, TimeRange};
use rusqlite::Connection;
use serde::Serialize;

use crate::report::ReportError;

/// Exit statuses that are a clean end. Status 0 is the only one. Statuses the workspace
/// documents as failures: 2, the server stopped on an error it printed (`dispatch-server:
/// error: ...`); 71, the crash monitor could not start or wait for its child; 75, the server's
/// memory-pressure recycle (hard limit reached: an abnormal end on purpose, so a pressure
/// loop shows as a crash loop).
pub const CLEAN_STATUSES: &[i64] = &[0];

/// A crash loop: at least this many abnormal ends in a row...
pub const LOOP_MIN_EXITS: usize = 3;
/// ... within this window (first to last end) ...
pub const LOOP_WINDOW_MS: i64 = 10 * 60_000;
/// ... each run no longer than the one before it, beyond this tolerance: a run may be up to
/// 10% (or 1 s) longer than the previous one and still count as shrinking, so a loop that dies
/// after about a second each time is a loop.
pub const LOOP_UPTIME_SLACK_PERCENT: i64 = 10;
/// The absolute part of the tolerance, milliseconds.
pub const LOOP_UPTIME_SLACK_MS: i64 = 1000;

/// A fatal panic record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Panic {
    /// Time of the record.
    #[serde(skip)]
    pub ts_ms: i64,
    /// Boot that panicked.
    #[serde(skip)]
    pub boot: String,
    /// The panic payload.
    pub message: Option<String>,
    /// `file:line:column`.
    pub location: Option<String>,
    /// Thread name.
    pub thread: Option<String>,
}

/// What the database holds about boots and how they ended.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Every boot, oldest first.
    pub boots: Vec<query::Boot>,
    /// Every `exit` record.
    pub exits: Vec<query::Exit>,
    /// Every `crash` record.
    pub crashes: Vec<query::Crash>,
    /// Every fatal `panic` record.
    pub panics: Vec<Panic>,
}

/// Reads the rows [`assemble`] needs.
///
/// # Errors
/// [`ReportError::Query`] when a query fails.
pub fn load(conn: &Connection) -> Result<Rows, ReportError> {
    let failed = |what| move |source| ReportError::Query { what, source: Box::new(source) };
    Ok(Rows {
        boots: query::boots(conn).map_err(failed("reading boots"))?,
        exits: query::exits(conn, TimeRange::ALL).map_err(failed("reading exits"))?,
        crashes: query::crashes(conn, TimeRange::ALL).map_err(failed("reading crashes"))?,
        panics: fatal_panics(conn).map_err(|source| ReportError::Query {
            what: "reading panics",
            source: Box::new(query::QueryError { what: "panics", source }),
        })?,
    })
}

fn fatal_panics(conn: &Connection) -> rusqlite::Result<Vec<Panic>> {
    let mut stmt = conn.prepare(
        "SELECT p.ts_ms, b.boot, p.message, p.location, p.thread
         FROM panics p JOIN boots b ON b.boot_no = p.id >> 40
         WHERE p.fatal = 1 ORDER BY p.ts_ms, p.id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Panic {
            ts_ms: r.get(0)?,
            boot: r.get(1)?,
            message: r.get(2)?,
            location: r.get(3)?,
            thread: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// How a boot ended, as far as the records say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndKind {
    /// Killed by a signal.
    Signal,
    /// Exited with a status that is not clean.
    Status,
    /// The OOM killer killed it.
    Oom,
    /// A crash or fatal panic record, but no exit record.
    Crash,
    /// No exit record and no `process.stop`, and a later boot exists: the machine died or the
    /// monitor was killed.
    Unknown,
}

/// One abnormal end: a boot and everything recorded about how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    /// The boot that ended.
    pub boot: String,
    /// When it ended: the exit record's time, else the crash's or panic's, else the boot's
    /// last record.
    pub ts_ms: i64,
    /// When it started (`process.start`, else its first record).
    pub started_ts_ms: Option<i64>,
    /// How long it ran, milliseconds.
    pub uptime_ms: Option<i64>,
    /// `uptime_ms` is only its last record's time minus its start (an unknown end).
    pub uptime_is_lower_bound: bool,
    /// How it ended.
    pub kind: EndKind,
    /// The exit record's signal (else the crash record's, when there is no exit record).
    pub signal: Option<String>,
    /// The exit status.
    pub status: Option<i64>,
    /// Whether the kernel wrote a core.
    pub core_dumped: Option<bool>,
    /// Whether the OOM killer killed it.
    pub oom_killed: Option<bool>,
    /// The crash record, when there is one.
    pub crash: Option<query::Crash>,
    /// The first fatal panic, when there is one.
    pub panic: Option<Panic>,
    /// The boot's version (`process.start`).
    pub version: Option<String>,
    /// The build id: the crash record's, else `process.start`'s.
    pub build_id: Option<String>,
    /// The service name.
    pub service: Option<String>,
}

impl End {
    /// The signal the dump recorded, when it differs from how the process ended (the exit
    /// record's signal or status): `(dump, exit)`, e.g. `("SIGSEGV", "SIGILL")`.
    pub fn mismatch(&self) -> Option<(String, String)> {
        let dump = self.crash.as_ref()?.signal.clone()?;
        let exit = match (&self.signal, self.status) {
            _ if self.kind == EndKind::Crash => return None, // no exit record to compare with
            (Some(s), _) => s.clone(),
            (None, Some(st)) => format!("exit status {st}"),
            (None, None) => return None,
        };
        (dump != exit).then_some((dump, exit))
    }

    /// One line for people: `killed by SIGSEGV (core dumped)`, `exit status 2`.
    pub fn summary(&self) -> String {
        match self.kind {
            EndKind::Oom => format!(
                "killed by the OOM killer{}",
                self.signal.as_ref().map_or(String::new(), |s| format!(" ({s})"))
            ),
            EndKind::Signal => format!(
                "killed by {}{}",
                self.signal.as_deref().unwrap_or("a signal"),
                if self.core_dumped == Some(true) { " (core dumped)" } else { "" }
            ),
            EndKind::Status => match self.status {
                // The server's pressure recycle (server/src/pressure.rs, EXIT_PRESSURE).
                Some(75) => "exit status 75: memory-pressure recycle (hard limit reached; turns \
                             sealed, heap profile written)"
                    .into(),
                Some(s) => format!("exit status {s}"),
                None => "ended with neither a status nor a signal recorded".into(),
            },
            EndKind::Crash => "crashed; no exit record".into(),
            EndKind::Unknown => "unknown end: no exit record and no process.stop (the machine \
                                 died, or the monitor was killed)"
                .into(),
        }
    }

    /// The short form for a table column: `SIGSEGV`, `status 2`, `OOM`, `unknown`.
    pub fn short(&self) -> String {
        match self.kind {
            EndKind::Signal | EndKind::Oom => {
                self.signal.clone().unwrap_or_else(|| "signal".into())
            }
            EndKind::Status => self.status.map_or("no status".into(), |s| format!("status {s}")),
            EndKind::Crash => {
                self.crash.as_ref().and_then(|c| c.signal.clone()).unwrap_or_else(|| "panic".into())
            }
            EndKind::Unknown => "unknown".into(),
        }
    }
}

/// The history the rows tell.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Abnormal ends, oldest first.
    pub ends: Vec<End>,
    /// When the boots that ended cleanly ended: a clean end between two crashes breaks a
    /// crash loop.
    pub clean_ends_ms: Vec<i64>,
    /// The newest boot, when it has no end record (running, or ended without a trace).
    pub open_boot: Option<String>,
    /// Boots in the database.
    pub boots: usize,
}

/// Builds the history: one [`End`] per boot that did not end cleanly.
pub fn assemble(rows: &Rows) -> History {
    let mut history = History { boots: rows.boots.len(), ..Default::default() };
    let newest = rows.boots.iter().max_by_key(|b| (b.first_ts_ms, b.boot_no)).map(|b| &b.boot);
    for b in &rows.boots {
        let exit = rows.exits.iter().rfind(|e| e.exited_boot == b.boot);
        let crash = rows.crashes.iter().find(|c| c.boot == b.boot).cloned();
        let panic = rows.panics.iter().find(|p| p.boot == b.boot).cloned();
        let started = b.started_ts_ms.or(b.first_ts_ms);
        let kind = match exit {
            Some(e) if e.oom_killed == Some(true) => EndKind::Oom,
            Some(e) if e.signal.is_some() => EndKind::Signal,
            Some(e) if e.status.is_some_and(|s| !CLEAN_STATUSES.contains(&s)) => EndKind::Status,
            Some(e) if e.status.is_none() => EndKind::Status,
            // A clean status after a crash record or a fatal panic is still a crash.
            Some(_) if crash.is_some() || panic.is_some() => EndKind::Status,
            Some(e) => {
                history.clean_ends_ms.push(e.ts_ms);
                continue;
            }
            None if crash.is_some() || panic.is_some() => EndKind::Crash,
            None if b.stopped_ts_ms.is_some() => {
                history.clean_ends_ms.extend(b.stopped_ts_ms);
                continue;
            }
            None if Some(&b.boot) == newest => {
                history.open_boot = Some(b.boot.clone());
                continue;
            }
            None => EndKind::Unknown,
        };
        let ts_ms = exit
            .map(|e| e.ts_ms)
            .or(crash.as_ref().map(|c| c.ts_ms))
            .or(panic.as_ref().map(|p| p.ts_ms))
            .or(b.last_ts_ms)
            .unwrap_or(0);
        let known_uptime =
            exit.and_then(|e| e.uptime_ms).or(crash.as_ref().and_then(|c| c.uptime_ms));
        let lower_bound = match (known_uptime, b.last_ts_ms, started) {
            (None, Some(last), Some(start)) => Some(last - start),
            _ => None,
        };
        let end = End {
            boot: b.boot.clone(),
            ts_ms,
            started_ts_ms: started,
            uptime_ms: known_uptime.or(lower_bound),
            uptime_is_lower_bound: known_uptime.is_none() && lower_bound.is_some(),
            kind,
            signal: exit.and_then(|e| e.signal.clone()).or_else(|| {
                exit.is_none().then(|| crash.as_ref().and_then(|c| c.signal.clone()))?
            }),
            status: exit.and_then(|e| e.status),
            core_dumped: exit.and_then(|e| e.core_dumped),
            oom_killed: exit.and_then(|e| e.oom_killed),
            build_id: crash.as_ref().and_then(|c| c.build_id.clone()).or(b.build_id.clone()),
            crash,
            panic,
            version: b.version.clone(),
            service: b.service.clone(),
        };
        history.ends.push(end);
    }
    history.ends.sort_by_key(|e| e.ts_ms);
    history.clean_ends_ms.sort_unstable();
    history
}

/// A crash loop found in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrashLoop {
    /// The boots that ended, oldest first.
    pub boots: Vec<String>,
    /// How many abnormal ends.
    pub exits: usize,
    /// How many of them were followed by another start.
    pub restarts: usize,
    /// First end.
    pub first_ts_ms: i64,
    /// Last end.
    pub last_ts_ms: i64,
    /// Last minus first, milliseconds.
    pub span_ms: i64,
    /// Each run's uptime, milliseconds, in order.
    pub uptimes_ms: Vec<i64>,
}

/// Whether `next` counts as no longer than `prev` (see [`LOOP_UPTIME_SLACK_PERCENT`]).
fn not_longer(prev: i64, next: i64) -> bool {
    next <= prev + (prev * LOOP_UPTIME_SLACK_PERCENT / 100).max(LOOP_UPTIME_SLACK_MS)
}

/// Crash loops: runs of at least [`LOOP_MIN_EXITS`] consecutive abnormal ends (no clean end
/// between them) within [`LOOP_WINDOW_MS`] whose uptime does not grow and ends shorter than
/// it began; overlapping runs are one loop. `boots` is every boot, oldest first, to count
/// restarts; `clean_ends_ms` are the times of clean ends, which break a run.
pub fn crash_loops(ends: &[End], boots: &[query::Boot], clean_ends_ms: &[i64]) -> Vec<CrashLoop> {
    let usable: Vec<&End> = ends.iter().collect();
    let broken = |a: i64, b: i64| clean_ends_ms.iter().any(|&t| t > a && t < b);
    let mut loops: Vec<(usize, usize)> = Vec::new(); // inclusive index ranges into `usable`
    for i in 0..usable.len() {
        let mut j = i;
        while j + 1 < usable.len() {
            let (prev, next) = (usable[j], usable[j + 1]);
            let within = next.ts_ms - usable[i].ts_ms <= LOOP_WINDOW_MS;
            let shrinking = match (prev.uptime_ms, next.uptime_ms) {
                (Some(p), Some(n)) => not_longer(p, n),
                _ => false,
            };
            if !within || !shrinking || broken(prev.ts_ms, next.ts_ms) {
                break;
            }
            j += 1;
        }
        let (first, last) = (usable[i].uptime_ms, usable[j].uptime_ms);
        let shrank = matches!((first, last), (Some(f), Some(l)) if l < f);
        if j + 1 - i >= LOOP_MIN_EXITS && (shrank || all_short(&usable[i..=j])) {
            match loops.last_mut() {
                Some((_, end)) if i <= *end => *end = (*end).max(j),
                _ => loops.push((i, j)),
            }
        }
    }
    loops
        .into_iter()
        .map(|(i, j)| {
            let run = &usable[i..=j];
            let restarts = run
                .iter()
                .filter(|e| boots.iter().any(|b| b.first_ts_ms.is_some_and(|t| t >= e.ts_ms)))
                .count();
            CrashLoop {
                boots: run.iter().map(|e| e.boot.clone()).collect(),
                exits: run.len(),
                restarts,
                first_ts_ms: run[0].ts_ms,
                last_ts_ms: run[run.len() - 1].ts_ms,
                span_ms: run[run.len() - 1].ts_ms - run[0].ts_ms,
                uptimes_ms: run.iter().filter_map(|e| e.uptime_ms).collect(),
            }
        })
        .collect()
}

/// A run whose every uptime is within the slack of nothing (about a second): it dies at start.
fn all_short(run: &[&End]) -> bool {
    run.iter().all(|e| e.uptime_ms.is_some_and(|u| u <= LOOP_UPTIME_SLACK_MS * 5))
}

/// Crashes with one signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// The signature.
    pub signature: String,
    /// Where it came from (`stack`, `panic`, `signal`, ...).
    pub source: &'static str,
    /// How many ends have it.
    pub count: usize,
    /// First end with it.
    pub first_ts_ms: i64,
    /// Last end with it.
    pub last_ts_ms: i64,
    /// Their boots, oldest first.
    pub boots: Vec<String>,
}

/// Groups ends by signature, most frequent first (ties: most recent first). `signatures[i]`
/// is `(signature, source)` of `ends[i]`.
pub fn groups(ends: &[End], signatures: &[(String, &'static str)]) -> Vec<Group> {
    let mut by: BTreeMap<&str, Group> = BTreeMap::new();
    for (e, (sig, source)) in ends.iter().zip(signatures) {
        let g = by.entry(sig.as_str()).or_insert_with(|| Group {
            signature: sig.clone(),
            source,
            count: 0,
            first_ts_ms: e.ts_ms,
            last_ts_ms: e.ts_ms,
            boots: Vec::new(),
        });
        g.count += 1;
        g.first_ts_ms = g.first_ts_ms.min(e.ts_ms);
        g.last_ts_ms = g.last_ts_ms.max(e.ts_ms);
        g.boots.push(e.boot.clone());
    }
    let mut out: Vec<Group> = by.into_values().collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_ts_ms.cmp(&a.last_ts_ms)));
    out
}
