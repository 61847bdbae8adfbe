//! `dispatchctl crashes`: every abnormal end across boots, from the traces database, in the
//! manner of `coredumpctl list`/`info`: when, which boot, how long it ran, the signal or exit
//! status, OOM, the signature and whether the dump is still on disk; the ends grouped by
//! signature; a banner when the service is crash-looping; the dump-versus-exit signal
//! mismatch explained. `dispatchctl crashes send` uploads dumps to Sentry ([`sentry`]).
//!
//! - [`history`]: which boots ended abnormally, grouping, crash-loop detection.
//! - [`signature`]: Socorro-style signatures of a crashing thread's frames.
//! - [`dump`]: where a dump is now, its crashing thread (walked by the post-mortem engine),
//!   the signature of an end.
//! - [`cache`]: stack signatures already computed, per dump and symbol store state.
//! - [`render`]: the table for people and the JSON document.
//! - [`sentry`]: DSN, multipart upload, and the record of what was sent.

pub mod cache;
pub mod dump;
/// Boots and how they ended: the `dispatch-verdict` crate's history (shared with `/ui`).
pub use dispatch_verdict::history;
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
    let on_disk: Vec<&Path> = dumps.iter().flatten().filter_map(|d| d.path.as_deref()).collect();
    let mut cache = cache::Cache::load(&paths.crash_dir);
    // Only stat the symbol store when there is a dump to walk.
    let stamp =
        if on_disk.is_empty() { String::new() } else { cache::symbols_stamp(&paths.symbols) };
    let signatures: Vec<(String, &'static str)> = history
        .ends
        .iter()
        .zip(&dumps)
        .map(|(e, d)| {
            let Some(path) = d.as_ref().and_then(|d| d.path.as_deref()) else {
                return dump::sign(e, None);
            };
            let key = cache::Key::of(path, &stamp);
            if let Some(sig) = key.as_ref().and_then(|k| cache.get(k)) {
                return (sig.to_owned(), dump::source::STACK);
            }
            let signed = dump::sign(e, walk(path, &paths.symbols).as_deref());
            if let (Some(k), dump::source::STACK) = (key, signed.1) {
                cache.put(k, signed.0.clone());
            }
            signed
        })
        .collect();
    let mut keep: Vec<String> = std::fs::read_dir(&paths.crash_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    keep.extend(on_disk.iter().filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned())));
    cache.save(&keep);
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
        source: Box::new(source.into()),
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
            // One write per line to a terminal or pipe costs more than building the output
            // (a 2000-boot history: docs/BENCHMARKS.md).
            let mut buffered = std::io::BufWriter::new(out);
            let written = if cli.json {
                render::json(&report, &mut buffered)
            } else {
                render::text(&report, &settings.db, &mut buffered, color)
            };
            written.and_then(|()| buffered.flush()).map_err(Error::Output)?;
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use dispatch_collector::query;

    use super::signature::Trust;
    use super::*;

    fn rows(dump: &Path) -> Rows {
        let boot = |n: i64, t: i64| query::Boot {
            boot: format!("{n:08x}-0000-4000-8000-000000000000"),
            boot_no: n,
            service: Some("dispatch".into()),
            first_ts_ms: Some(t),
            last_ts_ms: Some(t + 1000),
            records: 3,
            last_seq: Some(2),
            pid: None,
            version: Some("0.1.0".into()),
            build_id: None,
            host: None,
            started_ts_ms: Some(t),
            stopped_ts_ms: None,
            stop_reason: None,
        };
        let b1 = boot(1, 1000);
        Rows {
            exits: vec![query::Exit {
                ts_ms: 2000,
                boot: b1.boot.clone(),
                exited_boot: b1.boot.clone(),
                status: None,
                signal: Some("SIGSEGV".into()),
                core_dumped: Some(true),
                oom_killed: Some(false),
                uptime_ms: Some(1000),
                pid: None,
            }],
            crashes: vec![query::Crash {
                ts_ms: 1999,
                boot: b1.boot.clone(),
                signal: Some("SIGSEGV".into()),
                signo: Some(11),
                fault_address: None,
                thread_name: None,
                minidump: Some(dump.display().to_string()),
                dump_error: None,
                build_id: None,
                uptime_ms: Some(1000),
                last_sample_json: None,
                active_conversations_json: None,
            }],
            boots: vec![b1, boot(2, 5000)],
            panics: vec![],
        }
    }

    #[test]
    fn a_dump_is_walked_once_and_its_signature_cached() {
        let d = tempfile::tempdir().unwrap();
        let crash_dir = d.path().join("crashes");
        std::fs::create_dir(&crash_dir).unwrap();
        let dump = crash_dir.join("b.dmp");
        std::fs::write(&dump, b"MDMP").unwrap();
        let paths = Paths { crash_dir: crash_dir.clone(), symbols: d.path().join("symbols") };
        let walks = Cell::new(0);
        let walker = |_: &Path, _: &Path| {
            walks.set(walks.get() + 1);
            Some(vec![Frame::named(
                "dispatch_server::faults::null_write::h0011223344556677",
                Trust::Context,
            )])
        };
        let rows = rows(&dump);
        for _ in 0..2 {
            let r = report(&rows, &paths, None, &walker).unwrap();
            assert_eq!(
                r.signatures,
                [("dispatch_server::faults::null_write".to_string(), "stack")]
            );
        }
        assert_eq!(walks.get(), 1, "the second run used the cache");
        // A walker that finds nothing is never cached: with no cache, it is asked each time.
        std::fs::remove_file(crash_dir.join(cache::CACHE_NAME)).unwrap();
        let nothing = |_: &Path, _: &Path| {
            walks.set(walks.get() + 1);
            None
        };
        for _ in 0..2 {
            let r = report(&rows, &paths, None, &nothing).unwrap();
            assert_eq!(r.signatures[0].1, "signal");
        }
        assert_eq!(walks.get(), 3);
        assert!(!crash_dir.join(cache::CACHE_NAME).exists());
        // --boot: the boot by prefix; an unknown or ambiguous prefix is an error.
        let r = report(&rows, &paths, Some("00000001"), &nothing).unwrap();
        assert_eq!(r.history.ends.len(), 1);
        let e = report(&rows, &paths, Some("ff"), &nothing).unwrap_err();
        assert_eq!(e.code(), "mem_boot_unknown");
        let e = report(&rows, &paths, Some("0000000"), &nothing).unwrap_err();
        assert_eq!(e.code(), "mem_boot_ambiguous");
    }
}
