//! `dispatchctl symbols add | list | fetch`: the clap arguments and the commands, text for
//! people and one JSON document with `--json` (schema: docs/CLI.md).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::{Added, Debuginfod, Entry, Store, SymbolsError};
use crate::output::{Outcome, bytes};
use crate::symbols::store::error_chain;

/// `dispatchctl symbols ...`.
#[derive(Debug, Subcommand)]
pub enum SymbolsCommand {
    /// Convert ELF binaries (with their DWARF) to Breakpad symbols in the store, by build-id.
    Add(AddArgs),
    /// List the builds in the store: name, debug id, build-id, what the symbols hold.
    List(StoreArgs),
    /// Fetch debug files by GNU build-id from debuginfod servers into the store.
    Fetch(FetchArgs),
}

/// Which store.
#[derive(Debug, Args)]
#[deny(missing_docs)]
// The field docs are clap's `--help` text, where `<var dir>` reads as a placeholder, not HTML.
#[allow(rustdoc::invalid_html_tags)]
pub struct StoreArgs {
    /// The symbol store [default: <var dir>/symbols].
    #[arg(long, env = "DISPATCH_SYMBOL_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
}

/// `dispatchctl symbols add`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct AddArgs {
    /// ELF executables or shared objects (with a GNU build-id).
    #[arg(required = true, value_name = "BINARY")]
    pub binaries: Vec<PathBuf>,
    /// Store under this module name instead of the file's own (one BINARY only).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Which store.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `dispatchctl symbols fetch`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct FetchArgs {
    /// GNU build-ids, hex (as `process.start` and `crash` records and `readelf -n` show them).
    #[arg(required = true, value_name = "BUILD_ID")]
    pub build_ids: Vec<String>,
    /// debuginfod server URL, repeatable; DEBUGINFOD_URLS is space-separated.
    #[arg(long = "debuginfod", env = "DEBUGINFOD_URLS", value_name = "URL")]
    pub debuginfod: Vec<String>,
    /// Module name to store under [default: the server's file name, then the soname].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Which store.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// One input of `add` or `fetch` and what became of it (`--json`).
#[derive(Debug, Serialize)]
struct Item {
    /// The binary or build-id given.
    input: String,
    /// `stored`, `already_stored` or `failed`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    module: Option<ModuleJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ItemError>,
}

/// A store entry as `--json` shows it (docs/CLI.md): flat facts first, counts below.
#[derive(Debug, Serialize)]
struct ModuleJson {
    name: String,
    debug_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    build_id: Option<String>,
    /// `symbols` (a `.sym` is stored) or `binary_only` (converted on first use).
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sym: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sym_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    has_line_info: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    has_inline_info: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    has_cfi: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    records: Option<Records>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    binaries: Vec<super::RawFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    added: Option<dispatch_journal::Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
}

#[derive(Debug, Serialize)]
struct Records {
    files: u64,
    funcs: u64,
    lines: u64,
    inlines: u64,
    publics: u64,
    cfi: u64,
}

impl From<Entry> for ModuleJson {
    fn from(e: Entry) -> ModuleJson {
        let r = e.records.as_ref();
        ModuleJson {
            state: if e.sym.is_some() { "symbols" } else { "binary_only" },
            sym_bytes: e.sym_bytes(),
            has_line_info: r.map(|r| r.has_line_info()),
            has_inline_info: r.map(|r| r.has_inline_info()),
            has_cfi: r.map(|r| r.has_cfi()),
            records: r.map(|r| Records {
                files: r.files,
                funcs: r.funcs,
                lines: r.lines,
                inlines: r.inlines,
                publics: r.publics,
                cfi: r.cfi,
            }),
            name: e.name,
            debug_id: e.debug_id,
            build_id: e.build_id,
            sym: e.sym,
            binaries: e.raw,
            added: e.added,
            source: e.source,
        }
    }
}

/// The `--json` document of every `symbols` command.
#[derive(Debug, Serialize)]
struct Doc<'a> {
    v: u32,
    kind: &'a str,
    store: &'a std::path::Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    modules: Option<Vec<ModuleJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    results: Option<Vec<Item>>,
}

#[derive(Debug, Serialize)]
struct ItemError {
    code: &'static str,
    message: String,
}

/// Runs a `symbols` command.
///
/// # Errors
/// The store cannot be opened; every input failed (a single input: its own error); `list`
/// cannot read the store's directory; writing the output.
pub fn run(
    var_dir: &std::path::Path,
    json: bool,
    cmd: &SymbolsCommand,
    out: &mut dyn Write,
) -> Result<Outcome, SymbolsError> {
    let open =
        |a: &StoreArgs| Store::open(a.store.clone().unwrap_or_else(|| Store::default_dir(var_dir)));
    match cmd {
        SymbolsCommand::Add(a) => {
            if a.name.is_some() && a.binaries.len() > 1 {
                return Err(SymbolsError::NameForOne { count: a.binaries.len() });
            }
            let store = open(&a.store)?;
            let results = a
                .binaries
                .iter()
                .map(|b| (b.display().to_string(), store.add(b, a.name.as_deref())))
                .collect();
            report(json, "symbols.add", &store, results, out)
        }
        SymbolsCommand::Fetch(a) => {
            if a.name.is_some() && a.build_ids.len() > 1 {
                return Err(SymbolsError::NameForOne { count: a.build_ids.len() });
            }
            let remote = Debuginfod::from_urls(&a.debuginfod)?;
            if !remote.is_configured() {
                return Err(SymbolsError::NoDebuginfod);
            }
            let store = open(&a.store)?;
            let results = a
                .build_ids
                .iter()
                .map(|b| (b.clone(), store.fetch(b, a.name.as_deref(), &remote)))
                .collect();
            report(json, "symbols.fetch", &store, results, out)
        }
        SymbolsCommand::List(a) => {
            let store = open(a)?;
            let listing = store.list()?;
            for problem in &listing.problems {
                eprintln!("dispatchctl: skipped {problem}");
            }
            if json {
                let doc = Doc {
                    v: 1,
                    kind: "symbols.list",
                    store: store.dir(),
                    modules: Some(listing.entries.into_iter().map(ModuleJson::from).collect()),
                    results: None,
                };
                serde_json::to_writer_pretty(&mut *out, &doc).map_err(output_error)?;
                writeln!(out).map_err(output_error)?;
            } else {
                write_list(&store, &listing.entries, out).map_err(output_error)?;
            }
            Ok(if listing.problems.is_empty() { Outcome::Clean } else { Outcome::SkippedInput })
        }
    }
}

fn output_error(e: impl Into<std::io::Error>) -> SymbolsError {
    SymbolsError::Output(e.into())
}

/// Prints what `add`/`fetch` did, item by item; failures go to stderr as skips.
fn report(
    json: bool,
    kind: &str,
    store: &Store,
    results: Vec<(String, Result<Added, SymbolsError>)>,
    out: &mut dyn Write,
) -> Result<Outcome, SymbolsError> {
    let total = results.len();
    let mut items = Vec::new();
    let mut failures = Vec::new();
    for (input, result) in results {
        match result {
            Ok(added) => items.push(Item {
                input,
                status: if added.already_stored { "already_stored" } else { "stored" },
                module: Some(added.entry.into()),
                notes: added.notes,
                error: None,
            }),
            Err(e) => {
                items.push(Item {
                    input,
                    status: "failed",
                    module: None,
                    notes: Vec::new(),
                    error: Some(ItemError { code: e.code(), message: error_chain(&e) }),
                });
                failures.push(e);
            }
        }
    }
    if json {
        let doc = Doc { v: 1, kind, store: store.dir(), modules: None, results: Some(items) };
        serde_json::to_writer_pretty(&mut *out, &doc).map_err(output_error)?;
        writeln!(out).map_err(output_error)?;
    } else {
        for item in &items {
            write_item(item, out).map_err(output_error)?;
        }
    }
    if failures.len() == total && total == 1 {
        return Err(failures.remove(0));
    }
    for e in &failures {
        eprintln!("dispatchctl: skipped {} ({})", error_chain(e), e.code());
    }
    if failures.len() == total {
        return Err(SymbolsError::NothingStored { failed: total });
    }
    Ok(if failures.is_empty() { Outcome::Clean } else { Outcome::SkippedInput })
}

fn write_item(item: &Item, out: &mut dyn Write) -> std::io::Result<()> {
    let Some(m) = &item.module else { return Ok(()) };
    let what = match item.status {
        "already_stored" => "already stored, nothing written:",
        _ => "stored",
    };
    writeln!(
        out,
        "{what} {} {} (build-id {})",
        m.name,
        m.debug_id,
        m.build_id.as_deref().unwrap_or("unknown")
    )?;
    if let (Some(r), Some(size)) = (&m.records, m.sym_bytes) {
        let (lines, inlines, cfi) = (r.lines > 0, r.inlines > 0, r.cfi > 0);
        writeln!(
            out,
            "  {}: {} functions, {}, {}, {}, {} public symbols",
            bytes(size as f64),
            r.funcs,
            if lines { format!("{} line records", r.lines) } else { "no line records".into() },
            if inlines {
                format!("{} inlined calls", r.inlines)
            } else {
                "no inline records".into()
            },
            if cfi { format!("{} CFI entries", r.cfi) } else { "no CFI".into() },
            r.publics,
        )?;
    }
    if let Some(sym) = &m.sym {
        writeln!(out, "  {}", sym.display())?;
    }
    for note in &item.notes {
        writeln!(out, "  note: {note}")?;
    }
    Ok(())
}

fn write_list(store: &Store, entries: &[Entry], out: &mut dyn Write) -> std::io::Result<()> {
    if entries.is_empty() {
        return writeln!(out, "no symbols in {}", store.dir().display());
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    let rows: Vec<[String; 8]> = entries
        .iter()
        .map(|e| {
            let added = e.added.map(|t| crate::output::time(t.unix_millis())).unwrap_or_default();
            match &e.records {
                Some(r) => [
                    e.name.clone(),
                    e.debug_id.clone(),
                    e.build_id.clone().unwrap_or_else(|| "-".into()),
                    yes(r.has_line_info()).into(),
                    yes(r.has_inline_info()).into(),
                    yes(r.has_cfi()).into(),
                    bytes(r.bytes as f64),
                    added,
                ],
                None => [
                    e.name.clone(),
                    e.debug_id.clone(),
                    e.build_id.clone().unwrap_or_else(|| "-".into()),
                    "?".into(),
                    "?".into(),
                    "?".into(),
                    format!("{} binary", bytes(e.raw.iter().map(|r| r.bytes).sum::<u64>() as f64)),
                    added,
                ],
            }
        })
        .collect();
    let header = ["NAME", "DEBUG ID", "BUILD-ID", "LINES", "INLINES", "CFI", "SIZE", "ADDED"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 6 {
                s.push_str(&format!("{cell:>w$}  "));
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_owned()
    };
    writeln!(out, "{}", line(&header))?;
    for row in &rows {
        writeln!(out, "{}", line(&row.iter().map(String::as_str).collect::<Vec<_>>()))?;
    }
    let raw_only = entries.iter().filter(|e| e.records.is_none()).count();
    if raw_only > 0 {
        writeln!(
            out,
            "{raw_only} build(s) stored as binaries only (`?`): converted to .sym on first lookup or `symbols fetch`"
        )?;
    }
    Ok(())
}
