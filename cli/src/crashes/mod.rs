//! `dispatchctl crashes`: every abnormal end across boots, from the traces database, in the
//! manner of `coredumpctl list`/`info`: when, which boot, how long it ran, the signal or exit
//! status, OOM, the signature and whether the dump is still on disk; the ends grouped by
//! signature; a banner when the service is crash-looping; the dump-versus-exit signal
//! mismatch explained. `dispatchctl crashes send` uploads dumps to Sentry ([`sentry`]).
//!
//! - [`history`]: which boots ended abnormally, grouping, crash-loop detection.
//! - [`signature`]: Socorro-style signatures of a crashing thread's frames.
//! - [`dump`]: where a dump is now, the seam to the stack walker, the signature of an end.
//! - [`render`]: the table for people and the JSON document.
//! - [`sentry`]: DSN, multipart upload, and the record of what was sent.

pub mod dump;
pub mod history;
pub mod render;
pub mod sentry;
pub mod signature;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::args::{Cli, CrashesArgs, CrashesCommand};
use crate::error::Error;
use crate::mem::Settings;
use crate::output::Outcome;

use self::dump::DumpFile;
use self::history::{CrashLoop, End, Group, History, Rows};
use self::signature::Frame;

/// Schema version of `dispatchctl crashes --json`.
pub const JSON_VERSION: u32 = 1;

/// The history with what was worked out for each end.
#[derive(Debug, Clone)]
pub struct Report {
    /// The ends (all, or the one `--boot` selected) and the boot counts.
    pub history: History,
    /// Each end's dump, when its crash record names one (same order as `history.ends`).
    pub dumps: Vec<Option<DumpFile>>,
    /// Each end's `(signature, source)`.
    pub signatures: Vec<(String, &'static str)>,
    /// Ends grouped by signature.
    pub groups: Vec<Group>,
    /// Crash loops (with `--boot`: those the boot is part of).
    pub loops: Vec<CrashLoop>,
    /// The boot `--boot` selected, and whether it ended abnormally.
    pub selected: Option<String>,
}

/// Where dumps and symbols are, resolved from the arguments.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `--crash-dir`, else `<var dir>/crashes`.
    pub crash_dir: PathBuf,
    /// `<var dir>/symbols`.
    pub symbols: PathBuf,
}

impl Paths {
    /// Resolves `--crash-dir` and the symbol store under `--var-dir`.
    pub fn resolve(cli: &Cli, args: &CrashesArgs) -> Paths {
        let var = dispatch_journal::paths::VarDir::new(&cli.var_dir);
        Paths {
            crash_dir: args.crash_dir.clone().unwrap_or_else(|| var.crash_dir()),
            symbols: var.symbol_store(),
        }
    }
}

/// Builds the report from the rows: the history, each end's dump and signature (frames from
/// `walk`, given a dump on disk and the symbol store), groups and loops. With `boot` (an id
/// prefix), only that boot's end and the loops it is part of.
///
/// # Errors
/// [`Error::UnknownBoot`], [`Error::AmbiguousBoot`] for a `boot` prefix that selects no boot
/// or several.
pub fn report(
    rows: &Rows,
    paths: &Paths,
    boot: Option<&str>,
    walk: &dyn Fn(&Path, &Path) -> Option<Vec<Frame>>,
) -> Result<Report, Error> {
    let selected = boot.map(|prefix| resolve_boot(rows, prefix)).transpose()?;
    let mut history = history::assemble(rows);
    let loops_all = history::crash_loops(&history.ends, &rows.boots, &history.clean_ends_ms);
    if let Some(id) = &selected {
        history.ends.retain(|e| &e.boot == id);
    }
    let dumps: Vec<Option<DumpFile>> = history
        .ends
        .iter()
        .map(|e| {
            let recorded = e.crash.as_ref()?.minidump.as_deref()?;
            Some(dump::locate(recorded, &paths.crash_dir))
        })
        .collect();
    let signatures: Vec<(String, &'static str)> = history
        .ends
        .iter()
        .zip(&dumps)
        .map(|(e, d)| {
            let frames =
                d.as_ref().and_then(|d| d.path.as_deref()).and_then(|p| walk(p, &paths.symbols));
            dump::sign(e, frames.as_deref())
        })
        .collect();
    let groups = history::groups(&history.ends, &signatures);
    let loops = match &selected {
        Some(id) => loops_all.into_iter().filter(|l| l.boots.contains(id)).collect(),
        None => loops_all,
    };
    Ok(Report { history, dumps, signatures, groups, loops, selected })
}

/// The one boot `prefix` names.
fn resolve_boot(rows: &Rows, prefix: &str) -> Result<String, Error> {
    let m: Vec<&str> =
        rows.boots.iter().map(|b| b.boot.as_str()).filter(|b| b.starts_with(prefix)).collect();
    match m.as_slice() {
        [] => Err(Error::UnknownBoot { prefix: prefix.to_owned() }),
        [one] => Ok((*one).to_owned()),
        many => Err(Error::AmbiguousBoot { prefix: prefix.to_owned(), count: many.len() }),
    }
}

/// Reads the rows from the database `cli` names (draining `--journal` first).
///
/// # Errors
/// As [`Settings::resolve`]; [`Error::DatabaseOpen`]; [`Error::Analysing`] when a query fails.
pub fn load(cli: &Cli) -> Result<(Settings, Rows), Error> {
    let settings = Settings::resolve(cli)?;
    let conn = dispatch_collector::schema::open_read_only(&settings.db).map_err(|source| {
        Error::DatabaseOpen { path: settings.db.clone(), source: Box::new(source) }
    })?;
    let rows = history::load(&conn).map_err(|source| Error::Analysing {
        path: settings.db.clone(),
        source: Box::new(source),
    })?;
    Ok((settings, rows))
}

/// Runs `dispatchctl crashes [--boot ID]` and `dispatchctl crashes send`.
///
/// # Errors
/// As [`load`] and [`report`]; [`sentry::SendError`] for `send`.
pub fn run(
    cli: &Cli,
    args: &CrashesArgs,
    out: &mut dyn Write,
    color: bool,
) -> Result<Outcome, sentry::SendError> {
    let (settings, rows) = load(cli)?;
    let paths = Paths::resolve(cli, args);
    let skipped = if settings.skipped_input { Outcome::SkippedInput } else { Outcome::Clean };
    match &args.command {
        None => {
            let report = report(&rows, &paths, args.boot.as_deref(), &dump::crashing_thread)
                .map_err(|source| Error::Analysing {
                    path: settings.db.clone(),
                    source: Box::new(source),
                })?;
            let written = if cli.json {
                render::json(&report, out)
            } else {
                render::text(&report, &settings.db, out, color)
            };
            written.map_err(Error::Output)?;
            Ok(skipped)
        }
        Some(CrashesCommand::Send(send)) => {
            let report = report(&rows, &paths, send.boot.as_deref(), &dump::crashing_thread)
                .map_err(|source| Error::Analysing {
                    path: settings.db.clone(),
                    source: Box::new(source),
                })?;
            sentry::send(&report, &paths, send, out)?;
            Ok(skipped)
        }
    }
}

/// The ends of `report` with their dump and signature, in order.
pub(crate) fn ends_with(
    report: &Report,
) -> impl Iterator<Item = (&End, Option<&DumpFile>, &(String, &'static str))> {
    report
        .history
        .ends
        .iter()
        .zip(&report.dumps)
        .zip(&report.signatures)
        .map(|((e, d), s)| (e, d.as_ref(), s))
}
