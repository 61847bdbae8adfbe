//! `dispatchctl mem`: loads one boot's window from the traces database, runs the
//! analysis (`crate::analysis`), and prints the verdict with its evidence.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use dispatch_verdict::report::short;
pub use dispatch_verdict::report::{
    RAW_WINDOW_MS, RECENT_WINDOW_MS, Report, analyze_boot, chart_data, recent_view, reports,
};

use crate::analysis;
use crate::args::{Cli, MemArgs, Since};
use crate::chart;
use crate::error::Error;
use crate::output::{Outcome, bytes, paint, time};

/// Where the traces come from, resolved from the arguments.
#[derive(Debug)]
pub struct Settings {
    /// The database to read.
    pub db: PathBuf,
    /// Whether draining the journal skipped bad input.
    pub skipped_input: bool,
}

impl Settings {
    /// Resolves the database: `--db`, or `--journal DIR` drained into `<DIR>.dispatchctl.db`
    /// first, or `<var dir>/traces.db`.
    ///
    /// # Errors
    /// [`Error::JournalNotADirectory`], [`Error::CacheOpen`] or [`Error::Drain`]: the journal
    /// cannot be drained; [`Error::NoDatabase`]: the database does not exist.
    pub fn resolve(cli: &Cli) -> Result<Settings, Error> {
        if let Some(dir) = &cli.journal {
            if !dir.is_dir() {
                return Err(Error::JournalNotADirectory { path: dir.clone() });
            }
            let db = cached_db_for(dir);
            let summary = dispatch_collector::Collector::builder(dir, &db)
                .open()
                .map_err(|source| Error::CacheOpen {
                    db: db.clone(),
                    journal: dir.clone(),
                    source: Box::new(source),
                })?
                .drain_once()
                .map_err(|source| Error::Drain {
                    journal: dir.clone(),
                    source: Box::new(source),
                })?;
            for issue in &summary.issues {
                eprintln!("dispatchctl: skipped {issue}");
            }
            return Ok(Settings { db, skipped_input: summary.skipped_input() });
        }
        let db = cli
            .db
            .clone()
            .unwrap_or_else(|| dispatch_journal::paths::VarDir::new(&cli.var_dir).traces_db());
        if !db.exists() {
            return Err(Error::NoDatabase { path: db });
        }
        Ok(Settings { db, skipped_input: false })
    }
}

/// `<DIR>.dispatchctl.db` beside the journal directory.
pub fn cached_db_for(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "journal".into());
    dir.with_file_name(format!("{name}.dispatchctl.db"))
}

/// Schema version of `dispatchctl mem --json`.
pub const JSON_VERSION: u32 = 1;

/// Runs `dispatchctl mem`.
///
/// # Errors
/// As [`Settings::resolve`]; [`Error::DatabaseOpen`]; [`Error::Analysing`] when the database
/// cannot be read or the boot is unknown; [`Error::Io`] for an SVG or HTML file that cannot be
/// written; [`Error::Output`].
pub fn run(cli: &Cli, args: &MemArgs, out: &mut dyn Write, color: bool) -> Result<Outcome, Error> {
    let settings = Settings::resolve(cli)?;
    let conn = dispatch_collector::schema::open_read_only(&settings.db).map_err(|source| {
        Error::DatabaseOpen { path: settings.db.clone(), source: Box::new(source) }
    })?;
    let analysing =
        |source| Error::Analysing { path: settings.db.clone(), source: Box::new(source) };
    let mut reports = reports(&conn, &args.boot, args.since.unwrap_or(Since::All))
        .map_err(|e| analysing(e.into()))?;
    if args.since.is_none() {
        // The whole boot is the default; a long boot also gets the last hours' verdict, so a
        // recent change shows beside the long view.
        for r in &mut reports {
            if r.analysis.to_ms - r.analysis.from_ms > RECENT_WINDOW_MS {
                let recent = recent_view(&conn, &r.boot).map_err(|e| analysing(e.into()))?;
                r.recent = Some(Box::new(recent));
            }
        }
    }
    print(cli, args, &settings, &reports, out, color).map_err(Error::Output)?;
    if let Some(r) = reports.first() {
        let data = chart_data(r);
        if let Some(p) = &args.svg {
            std::fs::write(p, chart::svg(&data)).map_err(Error::io(p, "writing"))?;
        }
        if let Some(p) = &args.html {
            // Conversation ids and paths: for the owner only, as post-mortems.
            crate::postmortem::write_private(p, dispatch_verdict::page::report_page(r).as_bytes())
                .map_err(Error::io(p, "writing"))?;
        }
    }
    let leak = reports.iter().any(|r| r.analysis.verdict == analysis::Verdict::Leak);
    Ok(if args.check && leak {
        Outcome::LeakFound
    } else if settings.skipped_input {
        Outcome::SkippedInput
    } else {
        Outcome::Clean
    })
}

/// The verdicts on `out`: one JSON document, or each report as text.
fn print(
    cli: &Cli,
    args: &MemArgs,
    settings: &Settings,
    reports: &[Report],
    out: &mut dyn Write,
    color: bool,
) -> std::io::Result<()> {
    if cli.json {
        let doc = match (args.boot.as_str(), reports) {
            ("all", _) => {
                json!({ "v": JSON_VERSION, "kind": "mem", "boots": reports.iter().map(|r| r.to_json()).collect::<Vec<_>>() })
            }
            (_, [r]) => {
                let mut v = r.to_json();
                v["v"] = json!(JSON_VERSION);
                v["kind"] = json!("mem");
                v
            }
            _ => {
                json!({ "v": JSON_VERSION, "kind": "mem", "verdict": "INSUFFICIENT-DATA", "summary": "the database holds no boots" })
            }
        };
        // One write: stdout is line-buffered, and a busy boot's document has ~150,000 lines.
        let mut text = serde_json::to_vec_pretty(&doc)?;
        text.push(b'\n');
        out.write_all(&text)?;
    } else if reports.is_empty() {
        writeln!(
            out,
            "verdict: INSUFFICIENT-DATA\n  the database {} holds no boots yet",
            settings.db.display()
        )?;
    } else {
        for r in reports {
            render(r, args, out, color)?;
        }
    }
    Ok(())
}

fn render(r: &Report, args: &MemArgs, out: &mut dyn Write, color: bool) -> std::io::Result<()> {
    let a = &r.analysis;
    let b = &r.boot;
    writeln!(
        out,
        "{} boot {} (pid {}, {} .. {}, {} samples, {})",
        b.service.as_deref().unwrap_or("dispatch"),
        short(&b.boot),
        b.pid.map_or("?".into(), |p| p.to_string()),
        time(a.from_ms),
        time(a.to_ms),
        a.samples,
        r.source
    )?;
    let code = match a.verdict {
        analysis::Verdict::Leak | analysis::Verdict::StateGrowth | analysis::Verdict::NonHeap => {
            "1;31"
        }
        analysis::Verdict::AllocatorRetention => "1;33",
        _ => "1;32",
    };
    writeln!(out, "verdict: {}", paint(a.verdict.name(), code, color))?;
    writeln!(out, "  {}", a.summary)?;
    if let Some(recent) = &r.recent {
        writeln!(
            out,
            "  last {}: {}: {}",
            crate::output::duration_ms(RECENT_WINDOW_MS),
            recent.analysis.verdict.name(),
            recent.analysis.summary
        )?;
    }
    writeln!(out)?;
    writeln!(out, "evidence")?;
    let opt = |v: Option<f64>| v.map_or("-".to_string(), bytes);
    writeln!(
        out,
        "  idle floor           start {}  end {}",
        opt(a.floor_start_bytes),
        opt(a.floor_end_bytes)
    )?;
    if let Some(g) = &a.growth {
        writeln!(
            out,
            "  floor growth         {}/h  ({} over the window; Mann-Kendall z = {:.2}, confidence {:.1}%; {} buckets of {} s; floors {})",
            bytes(g.bytes_per_hour),
            bytes(g.growth_bytes),
            g.mann_kendall_z,
            100.0 * g.confidence,
            a.buckets.len(),
            a.bucket_ms / 1000,
            match a.floor_load {
                Some(l) => format!("at {}", crate::output::turns(l)),
                None => "load-adjusted".into(),
            }
        )?;
    }
    match (a.detection_limit_bytes_per_hour, a.detection_window_needed_ms) {
        (Some(limit), Some(need)) => writeln!(
            out,
            "  detection limit      {}/h  (a slower leak can hide in this window; {}/h needs about {} of samples)",
            bytes(limit),
            bytes(a.detection_target_bytes_per_hour.unwrap_or(0.0)),
            crate::output::duration_ms(need)
        )?,
        _ => writeln!(
            out,
            "  detection limit      none  (too few floors to test a trend: a leak of any size can hide)"
        )?,
    }
    if let Some(w) = a.bytes_per_turn_in_flight {
        writeln!(
            out,
            "  per turn in flight   {}  (correlation with turns in flight r = {:.2})",
            bytes(w),
            a.load_correlation.unwrap_or(0.0)
        )?;
    }
    if let Some(n) = a.naive_rss_bytes_per_hour {
        writeln!(
            out,
            "  naive RSS slope      {}/h  (first vs last sample, not load-adjusted: do not quote it)",
            bytes(n)
        )?;
    }
    if let (Some(p), Some(t)) = (a.peak_bytes, a.peak_ts_ms) {
        let load = a
            .peak_turns_in_flight
            .map_or(String::new(), |l| format!(" with {}", crate::output::turns(l)));
        writeln!(out, "  peak                 {} at {}{load}", bytes(p), time(t))?;
    }
    writeln!(out, "  resident - allocated {}  (idle)", opt(a.resident_minus_allocated_bytes))?;
    writeln!(
        out,
        "  RSS - resident       {}  (idle; memory outside jemalloc)",
        opt(a.rss_minus_resident_bytes)
    )?;
    if !a.conversations.is_empty() {
        writeln!(out)?;
        let kind = a.conversations[0].kind;
        writeln!(
            out,
            "conversations ({})",
            if kind == "live" {
                "live bytes, tagged allocator"
            } else {
                "allocation churn: allocated minus freed by their turns' tasks"
            }
        )?;
        let leaky = matches!(a.verdict, analysis::Verdict::Leak | analysis::Verdict::StateGrowth);
        writeln!(
            out,
            "  {:>3}  {:<24} {:>12} {:>12} {:>6}{}",
            "#",
            "conversation",
            "retained",
            "allocated",
            "turns",
            if leaky { "  active while the floor rose" } else { "" }
        )?;
        for c in a.conversations.iter().take(10) {
            let rose = match (leaky, c.active_while_floor_rose) {
                (false, _) => String::new(),
                (true, true) => format!("  yes ({:.0}% of the rise)", 100.0 * c.floor_rise_share),
                (true, false) => "  no".into(),
            };
            writeln!(
                out,
                "  {:>3}  {:<24} {:>12} {:>12} {:>6}{rose}",
                c.rank,
                c.id,
                bytes(c.retained_bytes as f64),
                bytes(c.allocated_bytes as f64),
                c.turns,
            )?;
        }
        if a.conversations.len() > 10 {
            writeln!(out, "  ... {} more (--json lists all)", a.conversations.len() - 10)?;
        }
    }
    if args.chart_width > 0 && !r.points.is_empty() {
        writeln!(out)?;
        write!(out, "{}", chart::terminal(&chart_data(r), args.chart_width, 16, color))?;
    }
    writeln!(out)?;
    writeln!(out, "next step")?;
    writeln!(out, "  {}", a.next_step)?;
    for n in &a.notes {
        writeln!(out, "note: {n}")?;
    }
    Ok(())
}
