//! One boot's verdict from the traces database: the window, the samples (raw, or hourly rollups
//! past [`RAW_WINDOW_MS`]), the turns and conversation memory, run through
//! [`analysis::analyze`]. `dispatchctl mem`, `dispatchctl postmortem` and the server's `/ui`
//! all read a boot through [`reports`], so the three cannot disagree about a verdict.

use dispatch_collector::query::{self, QueryError, Samples, TimeRange};
use rusqlite::Connection;
use serde_json::json;

use crate::analysis::{
    self, Analysis, Attribution, ConversationActivity, ConversationPoint, Options, SamplePoint,
    TurnPoint, TurnRank,
};
use crate::chart::{ChartData, Point};
use crate::output::bytes;
use crate::stats;

/// Windows up to this long are analysed from raw samples; longer ones from hourly rollups.
pub const RAW_WINDOW_MS: i64 = 48 * 3_600_000;

/// A window length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This many milliseconds back from the newest sample.
    Millis(i64),
    /// Everything.
    All,
}

/// Why a boot's report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A query on the traces database failed.
    #[error("{what}")]
    Query {
        /// What was being read, e.g. `reading samples`.
        what: &'static str,
        /// The collector's query error.
        #[source]
        source: Box<QueryError>,
    },
    /// `--boot` matches no boot.
    #[error("--boot {prefix}: no such boot")]
    UnknownBoot {
        /// The prefix given.
        prefix: String,
    },
    /// `--boot` matches several boots.
    #[error("--boot {prefix}: {count} boots start with it; give more of the id")]
    AmbiguousBoot {
        /// The prefix given.
        prefix: String,
        /// How many boots it matches.
        count: usize,
    },
}

/// Analyses the boots `boot` selects (`latest`, `all`, or an id prefix) over the window
/// `since` ending at each boot's newest record.
///
/// # Errors
/// [`ReportError::Query`]: the database cannot be read; [`ReportError::UnknownBoot`],
/// [`ReportError::AmbiguousBoot`].
pub fn reports(conn: &Connection, boot: &str, since: Since) -> Result<Vec<Report>, ReportError> {
    let boots = query::boots(conn).map_err(query_failed("reading boots"))?;
    let selected: Vec<&query::Boot> = match boot {
        "all" => boots.iter().collect(),
        "latest" => boots.iter().max_by_key(|b| (b.last_ts_ms, b.boot_no)).into_iter().collect(),
        prefix => {
            let m: Vec<_> = boots.iter().filter(|b| b.boot.starts_with(prefix)).collect();
            match m.len() {
                0 => return Err(ReportError::UnknownBoot { prefix: prefix.to_owned() }),
                1 => m,
                count => {
                    return Err(ReportError::AmbiguousBoot { prefix: prefix.to_owned(), count });
                }
            }
        }
    };
    selected.into_iter().map(|b| analyze_boot(conn, b, since)).collect()
}

/// One boot's analysis with what it was computed from.
pub struct Report {
    /// The boot.
    pub boot: query::Boot,
    /// `raw` or `hourly`.
    pub source: &'static str,
    /// What conversations and turns were ranked from: `turns` (every turn of the window),
    /// `rollups` (the collector's per-conversation rollups: whole-boot windows over 48 h), or
    /// `none` (not ranked: [`recent_view`]).
    pub attribution: &'static str,
    /// The window asked for.
    pub range: TimeRange,
    /// The verdict and evidence.
    pub analysis: Analysis,
    /// The series, for charts.
    pub points: Vec<Point>,
    /// With the default window (the whole boot), the last [`RECENT_WINDOW_MS`]' analysis when
    /// the boot is longer.
    pub recent: Option<Box<Report>>,
}

/// The recent view shown beside the whole boot: 6 hours.
pub const RECENT_WINDOW_MS: i64 = 6 * 3_600_000;

impl Report {
    /// The JSON document (see docs/CLI.md).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.analysis).unwrap_or_else(|_| json!({}));
        v["boot"] = json!({
            "id": self.boot.boot,
            "pid": self.boot.pid,
            "version": self.boot.version,
            "build_id": self.boot.build_id,
            "started_ts_ms": self.boot.started_ts_ms,
            "stopped_ts_ms": self.boot.stopped_ts_ms,
        });
        v["source"] = json!(self.source);
        v["attribution"] = json!(self.attribution);
        if let Some(r) = &self.recent {
            let a = &r.analysis;
            v["recent"] = json!({
                "window_ms": RECENT_WINDOW_MS,
                "from_ms": a.from_ms,
                "to_ms": a.to_ms,
                "verdict": a.verdict,
                "summary": a.summary,
                "growth": a.growth,
                "detection_limit_bytes_per_hour": a.detection_limit_bytes_per_hour,
                "source": r.source,
            });
        }
        v
    }
}

/// `map_err` adapter: a failed query, with what was being read.
fn query_failed(what: &'static str) -> impl FnOnce(QueryError) -> ReportError {
    move |source| ReportError::Query { what, source: Box::new(source) }
}

/// The last [`RECENT_WINDOW_MS`] of a boot, as shown beside the whole boot (`recent`): its
/// verdict and summary, without ranking conversations and turns (the view shows neither, and
/// they never change the verdict), so a busy boot's recent hours cost their samples, not their
/// turns. `attribution` is `none`.
///
/// # Errors
/// [`ReportError::Query`]: the database cannot be read.
pub fn recent_view(conn: &Connection, boot: &query::Boot) -> Result<Report, ReportError> {
    let read = ReadOptions { rank: false, ..ReadOptions::default() };
    analyze_boot_read(conn, boot, Since::Millis(RECENT_WINDOW_MS), &read)
}

/// One boot's analysis over the window `since` ending at its newest record.
///
/// # Errors
/// [`ReportError::Query`]: the database cannot be read.
pub fn analyze_boot(
    conn: &Connection,
    boot: &query::Boot,
    since: Since,
) -> Result<Report, ReportError> {
    analyze_boot_with(conn, boot, since, RAW_WINDOW_MS)
}

/// [`analyze_boot`] with windows up to `raw_window_ms` read from raw samples (tests compare
/// the rollup path with the raw one on the same data).
///
/// # Errors
/// [`ReportError::Query`]: the database cannot be read.
pub fn analyze_boot_with(
    conn: &Connection,
    boot: &query::Boot,
    since: Since,
    raw_window_ms: i64,
) -> Result<Report, ReportError> {
    analyze_boot_read(conn, boot, since, &ReadOptions { raw_window_ms, ..ReadOptions::default() })
}

/// Where [`analyze_boot_read`] reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Windows up to this long are read from raw samples ([`RAW_WINDOW_MS`]).
    pub raw_window_ms: i64,
    /// Whether a whole-boot window read from hourly rollups ranks conversations and turns from
    /// the attribution rollups (default) instead of every turn: off only to compare the two.
    pub attribution_rollups: bool,
    /// Whether conversations and turns are ranked at all (default). Off for a view that shows
    /// only its verdict and summary ([`recent_view`]), which the ranking never changes.
    pub rank: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions { raw_window_ms: RAW_WINDOW_MS, attribution_rollups: true, rank: true }
    }
}

/// [`analyze_boot`] reading as `read` says.
///
/// # Errors
/// [`ReportError::Query`]: the database cannot be read.
pub fn analyze_boot_read(
    conn: &Connection,
    boot: &query::Boot,
    since: Since,
    read: &ReadOptions,
) -> Result<Report, ReportError> {
    let raw_window_ms = read.raw_window_ms;
    // Anchored at the boot's newest record, not the wall clock: post-mortems run days later.
    let newest = boot.last_ts_ms.unwrap_or(0);
    let range = match since {
        Since::All => {
            TimeRange { from_ms: boot.first_ts_ms.unwrap_or(i64::MIN), to_ms: newest + 1 }
        }
        Since::Millis(ms) => TimeRange { from_ms: newest - ms, to_ms: newest + 1 },
    };
    let mut opts = Options::default();
    let mut hourly_peaks: Vec<(f64, f64)> = Vec::new();
    // Hours answered from the load-aware rollup, and all hours, for the note.
    let mut load_aware = (0usize, 0usize);
    let mut hourly_samples = 0usize;
    let (samples, source) = match query::samples(conn, range, Some(&boot.boot), raw_window_ms)
        .map_err(query_failed("reading samples"))?
    {
        Samples::Raw(rows) => (rows.iter().map(to_point).collect::<Vec<_>>(), "raw"),
        Samples::Hourly(hours) => {
            hourly_peaks = hours
                .iter()
                .filter_map(|h| Some((h.turns_in_flight_max? as f64, h.allocated?.max as f64)))
                .collect();
            opts.bucket_ms = Some(HOUR_MS);
            hourly_samples = hours.iter().map(|h| usize::try_from(h.samples).unwrap_or(0)).sum();
            let levels = query::samples_hourly_load(conn, range, &boot.boot)
                .map_err(query_failed("reading load-aware hourly rollups"))?;
            (hourly_points(&hours, &levels, &mut load_aware), "hourly")
        }
    };
    // A whole boot read from hourly rollups ranks from the attribution rollups: one row per
    // conversation, so memory and time follow the conversations, not the turns. Shorter
    // windows (and databases from before schema 3) read their turns.
    let whole_boot = boot.first_ts_ms.is_some_and(|first| range.from_ms <= first);
    let totals = if source == "hourly" && whole_boot && read.attribution_rollups {
        query::conversation_rollups(conn, boot.boot_no)
            .map_err(query_failed("reading conversation rollups"))?
    } else {
        None
    };
    if source == "hourly" {
        // An hourly point stands for the rest of its hour: turns up to the window's end count.
        opts.turns_until_ms = Some(range.to_ms);
    }
    let mut turns: Vec<TurnPoint> = Vec::new();
    let mut activity: Vec<ConversationActivity> = Vec::new();
    let mut top_turns: Vec<TurnRank> = Vec::new();
    let attribution = if !read.rank {
        "none"
    } else if let Some(rows) = totals {
        // Turns still open at the boot's end run to the window's end, as in the raw ranking:
        // found in the boot's tail, which is read only as far back as the oldest of them.
        let open: std::collections::HashMap<&str, i64> =
            rows.iter().map(|r| (r.conversation.as_str(), r.turns - r.ended)).collect();
        let open_since = query::first_open_turns(conn, boot.boot_no, newest, &open)
            .map_err(query_failed("reading open turns"))?;
        activity.reserve_exact(rows.len());
        for r in rows {
            let mut active_hours = r.active_hours;
            if let Some(&start) = open_since.get(&r.conversation) {
                active_hours.insert_span(start, range.to_ms);
            }
            activity.push(ConversationActivity {
                turns: usize::try_from(r.turns).unwrap_or(0),
                retained_bytes: r.kept_bytes,
                allocated_bytes: r.alloc_bytes,
                active_hours,
                conversation: r.conversation,
            });
        }
        top_turns = query::top_turns(conn, boot.boot_no)
            .map_err(query_failed("reading top turns"))?
            .into_iter()
            .map(|t| TurnRank {
                conversation: t.conversation,
                turn: t.turn,
                retained_bytes: t.kept_bytes,
                allocated_bytes: t.alloc_bytes,
            })
            .collect();
        "rollups"
    } else {
        turns = query::turns_started(conn, range)
            .map_err(query_failed("reading turns"))?
            .into_iter()
            .filter(|t| t.boot == boot.boot)
            .map(|t| TurnPoint {
                conversation: t.conversation.unwrap_or_default(),
                turn: t.turn.unwrap_or_default(),
                start_ts_ms: t.start_ts_ms,
                end_ts_ms: t.end_ts_ms,
                alloc_bytes: t.alloc_bytes,
                freed_bytes: t.freed_bytes,
            })
            .collect();
        "turns"
    };
    let memory = if read.rank {
        query::conversation_memory(conn, range)
            .map_err(query_failed("reading conversation memory"))?
    } else {
        Vec::new()
    };
    let convs: Vec<ConversationPoint> = memory
        .into_iter()
        .filter(|c| c.boot == boot.boot)
        .map(|c| ConversationPoint {
            ts_ms: c.ts_ms,
            conversation: c.conversation,
            history_bytes: c.history_bytes,
            live_bytes: c.live_bytes,
        })
        .collect();
    let how = match attribution {
        "rollups" => Attribution::Totals { conversations: &activity, top_turns: &top_turns },
        _ => Attribution::Turns(&turns),
    };
    let mut analysis = analysis::analyze_attributed(&samples, how, &convs, &opts);
    if source == "hourly" {
        // The analysis saw points (two per level and hour); people want the samples behind them.
        analysis.samples = hourly_samples;
        let (aware, all) = load_aware;
        if aware < all {
            // Hours without load levels (rolled up before schema 2, their raw samples gone)
            // keep each hour's lowest and highest heap and its highest load: memory that peaks
            // when turns peak, over a flat floor, is the working set.
            let r = stats::pearson(&hourly_peaks);
            analysis.load_correlation = analysis.load_correlation.or(r);
            if analysis.verdict == analysis::Verdict::Flat
                && r.is_some_and(|r| r >= Options::default().working_set_r)
            {
                analysis.verdict = analysis::Verdict::WorkingSet;
                analysis.summary = format!(
                    "no leak: hourly peaks follow turns in flight (r = {:.2}) over a flat floor of {}; {}",
                    r.unwrap_or(0.0),
                    bytes(analysis.floor_end_bytes.unwrap_or(0.0)),
                    analysis::hidden(&analysis)
                );
                analysis.next_step = analysis::next_step(&analysis);
            }
        }
        analysis.notes.push(if aware == all {
            "window longer than 48 h: hourly rollups are analysed, the lowest and highest memory \
             at each turns-in-flight level of each hour, so floors are load-adjusted as in raw \
             windows"
                .to_owned()
        } else {
            format!(
                "window longer than 48 h: hourly rollups are analysed; {} of {all} hours have \
                 per-load figures, the rest only each hour's minimum (not load-adjusted)",
                aware
            )
        });
    }
    if attribution == "rollups" {
        analysis.notes.push(
            "conversations and turns ranked from the collector's per-conversation rollups \
             (whole-boot totals and the hours each had a turn running)"
                .to_owned(),
        );
    }
    if samples.is_empty() {
        analysis
            .notes
            .push(format!("boot {} has no memory samples: was its sampler running?", boot.boot));
    }
    let points = samples
        .iter()
        .map(|s| Point {
            ts_ms: s.ts_ms,
            memory_bytes: s.allocated.or(s.rss).unwrap_or(f64::NAN),
            turns_in_flight: s.turns_in_flight.unwrap_or(f64::NAN),
        })
        .collect();
    Ok(Report { boot: boot.clone(), source, attribution, range, analysis, points, recent: None })
}

const HOUR_MS: i64 = 3_600_000;

/// The points an hourly window is analysed from. An hour with load-aware rows gives two points
/// per `turns_in_flight` level: the level's lowest memory at the start of the hour (the floor
/// at that load) and its highest at the half hour (the peak); an hour without gives its
/// minimum alone, with no load. `load_aware` counts (hours with levels, all hours).
fn hourly_points(
    hours: &[query::Hour],
    levels: &[query::HourLoad],
    load_aware: &mut (usize, usize),
) -> Vec<SamplePoint> {
    let f = |v: Option<i64>| v.map(|v| v as f64);
    let mut out = Vec::with_capacity(levels.len() * 2 + hours.len());
    let mut at = 0;
    for h in hours {
        while at < levels.len() && levels[at].hour_ms < h.hour_ms {
            at += 1;
        }
        let start = at;
        while at < levels.len() && levels[at].hour_ms == h.hour_ms {
            at += 1;
        }
        load_aware.1 += 1;
        if at > start {
            load_aware.0 += 1;
            for l in &levels[start..at] {
                let load = Some(l.turns_in_flight as f64);
                out.push(SamplePoint {
                    ts_ms: h.hour_ms,
                    allocated: f(l.allocated_min),
                    resident: f(l.resident_min),
                    rss: f(l.rss_min),
                    turns_in_flight: load,
                    ..Default::default()
                });
                out.push(SamplePoint {
                    ts_ms: h.hour_ms + HOUR_MS / 2,
                    allocated: f(l.allocated_max),
                    rss: f(l.rss_max),
                    turns_in_flight: load,
                    ..Default::default()
                });
            }
        } else {
            out.push(SamplePoint {
                ts_ms: h.hour_ms,
                allocated: h.allocated.map(|s| s.min as f64),
                resident: h.resident.map(|s| s.min as f64),
                rss: h.rss.map(|s| s.min as f64),
                ..Default::default()
            });
        }
    }
    out
}

fn to_point(s: &query::Sample) -> SamplePoint {
    let f = |v: Option<i64>| v.map(|v| v as f64);
    SamplePoint {
        ts_ms: s.ts_ms,
        allocated: f(s.allocated),
        resident: f(s.resident),
        rss: f(s.rss),
        turns_in_flight: f(s.turns_in_flight),
        conversations_active: f(s.conversations_active),
        conversations_loaded: f(s.conversations_loaded),
        state_bytes: f(s.state_bytes),
    }
}

/// The chart of one report (drawn by `dispatchctl mem`, `dispatchctl postmortem` and `/ui`).
pub fn chart_data(r: &Report) -> ChartData {
    ChartData {
        title: format!(
            "{} boot {}: {}",
            r.boot.service.as_deref().unwrap_or("dispatch"),
            short(&r.boot.boot),
            r.analysis.verdict.name()
        ),
        memory_label: r.analysis.metric.to_string(),
        points: r.points.clone(),
        floors: r.analysis.buckets.iter().map(|b| (b.start_ms, b.floor_bytes)).collect(),
        peak: r.analysis.peak_ts_ms.zip(r.analysis.peak_bytes),
        verdict: r.analysis.verdict.name().to_string(),
    }
}

/// The first 8 characters of an id, as reports print boots.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
