//! `dispatchctl postmortem`: one report of why a boot died, for the ticket.
//!
//! The dump half ([`analyze_dump`]) walks every thread of the boot's minidump with
//! rust-minidump's unwinder and names frames only from symbols whose id matches the module
//! ([`symbols`]). The journal half ([`journal`]) joins what the boot wrote before it died:
//! the crash and exit records, the last samples and the `mem` verdict, pressure, turns in
//! flight, the last errors, earlier exits and `process.start`. [`report`] flags figures that
//! contradict each other; [`render`] writes Markdown and HTML, [`report::Report::to_json`] JSON.

pub mod dump;
pub mod error;
pub mod journal;
pub mod model;
pub mod render;
pub mod report;
pub mod symbols;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use dump::analyze_dump;
pub use error::PostmortemError;
pub use model::{DumpAnalysis, FlatFrame, Trust};
pub use symbols::{BreakpadStores, Located, ModuleIds, SymbolSource};

use crate::args::{Cli, PostmortemArgs, PostmortemFormat};
use crate::output::Outcome;
use report::Report;

/// The Breakpad stores a run searches first: each `--symbols DIR`, in order.
pub fn stores(args: &PostmortemArgs) -> BreakpadStores {
    BreakpadStores::new(args.symbols.clone())
}

/// Where a run's symbols come from: the `--symbols` stores, then the build-id symbol store
/// (`--symbol-store`, default `<var dir>/symbols`), which converts a cached binary of the
/// module's build and asks debuginfod (`--debuginfod`, `DEBUGINFOD_URLS`) for what it lacks.
/// Every path checks the module's id.
///
/// # Errors
/// A debuginfod URL that is not `http(s)://host...`; a symbol store path that is a file.
pub fn symbol_source(
    extra: BreakpadStores,
    store: &Path,
    debuginfod: &[String],
) -> Result<Arc<dyn SymbolSource>, crate::symbols::SymbolsError> {
    let mut urls: Vec<String> = debuginfod.to_vec();
    if let Ok(env) = std::env::var(crate::symbols::DEBUGINFOD_URLS) {
        urls.push(env);
    }
    Ok(Arc::new(StoreSource {
        extra,
        store: crate::symbols::Store::open(store)?,
        remote: crate::symbols::Debuginfod::from_urls(urls)?,
    }))
}

/// [`symbol_source`]'s source.
struct StoreSource {
    extra: BreakpadStores,
    store: crate::symbols::Store,
    remote: crate::symbols::Debuginfod,
}

impl SymbolSource for StoreSource {
    fn locate(&self, module: &ModuleIds) -> Located {
        let mut searched = match self.extra.locate(module) {
            found @ Located::Breakpad(_) => return found,
            Located::NotFound { searched } => searched,
        };
        let Some(debug_id) = module.debug_id.clone() else {
            return Located::NotFound { searched };
        };
        // The build-id store keys ELF builds: a code id that is a GNU build-id giving this
        // debug id is passed on (it can ask debuginfod); any other (a Mach-O UUID, a PE
        // timestamp) is left out, so the store is searched by the debug id alone, still
        // checked against the `.sym`'s MODULE line.
        let code_id = module.code_id.clone().filter(|c| {
            dispatch_journal::symbols::normalize_build_id(c)
                .and_then(|b| dispatch_journal::symbols::debug_id_from_build_id(&b))
                .is_some_and(|d| d.eq_ignore_ascii_case(&debug_id))
        });
        let ids =
            crate::symbols::ModuleIds { code_file: module.name().to_owned(), debug_id, code_id };
        match self.store.lookup(&ids, &self.remote) {
            Ok(crate::symbols::Lookup::Found(path)) => Located::Breakpad(path),
            Ok(crate::symbols::Lookup::Missing { why }) => {
                searched.push(format!("{}: {why}", self.store.dir().display()));
                Located::NotFound { searched }
            }
            Err(e) => {
                searched.push(format!("{}: {e}", self.store.dir().display()));
                Located::NotFound { searched }
            }
        }
    }
}

/// The traces database, brought up to date first: lines in `<var dir>/journal` that the
/// server's embedded collector never drained (it died with the server) are drained now, unless
/// a live collector holds the database (then it is read as is, and the report says so).
/// Returns the database (when there is one), notes for the report, and whether input was
/// skipped.
fn database(cli: &Cli) -> Result<(Option<PathBuf>, Vec<String>, bool), PostmortemError> {
    if cli.journal.is_some() {
        let s = crate::mem::Settings::resolve(cli)?;
        return Ok((Some(s.db), Vec::new(), s.skipped_input));
    }
    let var = dispatch_journal::paths::VarDir::new(&cli.var_dir);
    let db = cli.db.clone().unwrap_or_else(|| var.traces_db());
    let journal = var.journal_dir();
    let mut notes = Vec::new();
    let mut skipped = false;
    // Only the var dir's own database is drained into: an explicit --traces-db may belong to
    // another journal.
    if cli.db.is_none() && journal.is_dir() {
        match dispatch_collector::Collector::builder(&journal, &db).open() {
            Ok(mut c) => match c.drain_once() {
                Ok(summary) => {
                    if summary.lines > 0 {
                        notes.push(format!(
                            "drained {} journal lines from {} into {} first (the server's collector had not)",
                            summary.lines,
                            journal.display(),
                            db.display()
                        ));
                    }
                    for issue in &summary.issues {
                        eprintln!("dispatchctl: skipped {issue}");
                    }
                    skipped = summary.skipped_input();
                }
                Err(e) => notes.push(format!("could not drain {}: {e}; read as is", journal.display())),
            },
            Err(dispatch_collector::CollectorError::Locked { holder, .. }) => notes.push(format!(
                "a live collector ({holder}) holds {}: read as is; journal lines it has not drained yet are not in this report",
                db.display()
            )),
            Err(e) => notes.push(format!("could not open {} to drain {}: {e}; read as is", db.display(), journal.display())),
        }
    }
    Ok((db.exists().then_some(db), notes, skipped))
}

/// Builds the report the arguments ask for.
///
/// # Errors
/// A dump that cannot be walked (truncated, malformed, unreadable); an unknown boot; no
/// database when no `--dump` is given; query failures.
pub fn build(cli: &Cli, args: &PostmortemArgs) -> Result<(Report, bool), PostmortemError> {
    let store = args
        .symbol_store
        .clone()
        .unwrap_or_else(|| crate::symbols::Store::default_dir(&cli.var_dir));
    let sources = symbol_source(stores(args), &store, &args.debuginfod)
        .map_err(|e| PostmortemError::Symbols(Box::new(e)))?;
    let (db, notes, skipped) = database(cli)?;

    let mut journal = None;
    let mut journal_absent = None;
    match &db {
        None if args.dump.is_some() => {
            journal_absent = Some(format!(
                "the journal part is absent: no traces database at {} (pass --traces-db, --journal or --var-dir to join it)",
                cli.db
                    .clone()
                    .unwrap_or_else(
                        || dispatch_journal::paths::VarDir::new(&cli.var_dir).traces_db()
                    )
                    .display()
            ));
        }
        None => {
            return Err(crate::Error::NoDatabase {
                path: cli.db.clone().unwrap_or_else(|| {
                    dispatch_journal::paths::VarDir::new(&cli.var_dir).traces_db()
                }),
            }
            .into());
        }
        Some(db) => {
            let conn = dispatch_collector::schema::open_read_only(db).map_err(|source| {
                crate::Error::DatabaseOpen { path: db.clone(), source: Box::new(source) }
            })?;
            let which = match (&args.boot, &args.dump) {
                (Some(b), _) => Some(b.clone()),
                (None, None) => Some("latest".to_owned()),
                (None, Some(dump)) => boot_of_dump(&conn, dump)?,
            };
            match which {
                Some(which) => {
                    let (boot, chosen) = journal::select_boot(&conn, db, &which)?;
                    journal = Some(journal::read(&conn, db, &boot, chosen, notes)?);
                }
                None => {
                    journal_absent = Some(format!(
                        "no crash record in {} names this dump; name a BOOT to join its journal",
                        db.display()
                    ));
                }
            }
        }
    }

    let (dump_path, looked) = match (&args.dump, &journal) {
        (Some(p), _) => (Some(p.clone()), None),
        (None, Some(j)) => {
            let found = j.dump_path(&cli.var_dir);
            let looked = j
                .crash
                .as_ref()
                .and_then(|c| c.minidump.as_deref())
                .and_then(|p| Path::new(p).file_name())
                .map(|n| {
                    dispatch_journal::paths::VarDir::new(&cli.var_dir)
                        .crash_dir()
                        .join(n)
                        .display()
                        .to_string()
                });
            (found, looked)
        }
        (None, None) => (None, None),
    };
    let dump = dump_path.map(|p| analyze_dump(&p, sources)).transpose()?;
    let dump_absent = match (&dump, &journal) {
        (None, Some(j)) => Some(report::why_no_dump(j, looked.as_deref())),
        _ => None,
    };
    Ok((Report::new(dump, dump_absent, journal, journal_absent), skipped))
}

/// The boot whose crash record names a dump with this file name.
fn boot_of_dump(
    conn: &rusqlite::Connection,
    dump: &Path,
) -> Result<Option<String>, PostmortemError> {
    let name = dump.file_name();
    let crashes =
        dispatch_collector::query::crashes(conn, dispatch_collector::query::TimeRange::ALL)
            .map_err(|e| crate::Error::Query { what: "reading crashes", source: Box::new(e) })?;
    Ok(crashes
        .into_iter()
        .rev()
        .find(|c| c.minidump.as_deref().map(|m| Path::new(m).file_name()) == Some(name))
        .map(|c| c.boot))
}

/// Runs `dispatchctl postmortem`.
///
/// # Errors
/// As [`build`]; [`PostmortemError::Write`] for `-o FILE`.
pub fn run(
    cli: &Cli,
    args: &PostmortemArgs,
    out: &mut dyn Write,
) -> Result<Outcome, PostmortemError> {
    let (report, skipped) = build(cli, args)?;
    let text = match args.format {
        PostmortemFormat::Md => render::markdown(&report),
        PostmortemFormat::Html => render::html(&report),
        PostmortemFormat::Json => {
            let mut s = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
            s.push('\n');
            s
        }
    };
    match &args.out {
        Some(path) => {
            write_private(path, text.as_bytes())
                .map_err(|source| PostmortemError::Write { path: path.clone(), source })?;
            writeln!(out, "{}", path.display())
                .map_err(|source| PostmortemError::Write { path: "stdout".into(), source })?;
        }
        None => out
            .write_all(text.as_bytes())
            .map_err(|source| PostmortemError::Write { path: "stdout".into(), source })?,
    }
    Ok(if skipped { Outcome::SkippedInput } else { Outcome::Clean })
}

/// Writes a file only its owner can read: a report quotes conversation ids and paths. A
/// missing parent directory is made, 0700 (`<var dir>/postmortems/`, where `/ui` looks).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode through open(2): narrow it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)
}
