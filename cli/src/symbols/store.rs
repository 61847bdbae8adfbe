//! The store on disk: adding binaries, listing what is there, looking a module up by its ids
//! (converting a cached ELF or fetching one from debuginfod on the way), always checking that
//! a file's build-id is the one it is used for.
//!
//! Every directory the store creates is 0700 and every file 0600; every file is written to a
//! temporary name in its final directory, synced, then renamed, so a reader (this tool,
//! `minidump-stackwalk`) never sees half a `.sym`.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use dispatch_journal::Timestamp;
use dispatch_journal::symbols as layout;
use serde::{Deserialize, Serialize};

use super::breakpad::{SymStats, write_sym};
use super::debuginfod::{Artifact, Debuginfod, Downloaded};
use super::elf::{ElfFacts, inspect};
use super::error::SymbolsError;
use super::{Lookup, ModuleIds};

/// Suffix of the metadata written beside each `.sym` (what `symbols list` shows without
/// re-reading the symbols).
pub const META_SUFFIX: &str = ".sym.json";
/// Directory below the store where downloads land before their name is known.
const INCOMING_DIR: &str = ".incoming";

/// A Breakpad symbol store: `<dir>/<code file>/<DEBUG ID>/<code file>.sym`, plus cached
/// binaries and debug files beside them. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// One build of one module in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Code file name (the directory name).
    pub name: String,
    /// Breakpad debug id (the directory below it).
    pub debug_id: String,
    /// GNU build-id, lowercase hex, when known.
    pub build_id: Option<String>,
    /// The `.sym` file, once converted.
    pub sym: Option<PathBuf>,
    /// What the `.sym` holds (absent until converted).
    pub records: Option<SymStats>,
    /// Cached ELF files (the binary, a separate debug file) not yet converted, or kept.
    pub raw: Vec<RawFile>,
    /// When the `.sym` (or, before it, the newest raw file) was written.
    pub added: Option<Timestamp>,
    /// Where the symbols came from (a path, or debuginfod URLs).
    pub source: Option<String>,
}

/// A cached ELF file in a module's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RawFile {
    /// Its path.
    pub path: PathBuf,
    /// Its size, bytes.
    pub bytes: u64,
}

impl Entry {
    /// Bytes of the `.sym` file.
    pub fn sym_bytes(&self) -> Option<u64> {
        self.records.as_ref().map(|r| r.bytes)
    }
}

/// What `add` and `fetch` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The entry as it now is.
    pub entry: Entry,
    /// True when this build was already stored: nothing was written.
    pub already_stored: bool,
    /// What people should know: no debug info (PUBLIC and CFI records only), no CFI, a file
    /// refused on the way.
    pub notes: Vec<String>,
}

/// What `list` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Every build, by name then debug id.
    pub entries: Vec<Entry>,
    /// Directories or files that could not be read (listed, not fatal).
    pub problems: Vec<String>,
}

/// The metadata file beside a `.sym`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    v: u32,
    name: String,
    debug_id: String,
    build_id: String,
    added: Timestamp,
    source: String,
    records: SymStats,
}

/// An ELF file read into memory, with its facts.
struct Raw {
    path: PathBuf,
    data: Vec<u8>,
    facts: ElfFacts,
}

impl Store {
    /// `<var dir>/symbols`, the default store (`DISPATCH_SYMBOL_STORE`, `--store`).
    pub fn default_dir(var_dir: &Path) -> PathBuf {
        dispatch_journal::paths::VarDir::new(var_dir).symbol_store()
    }

    /// The store at `dir`. Nothing is created until something is written (a store that does
    /// not exist lists as empty).
    ///
    /// # Errors
    /// [`SymbolsError::StoreNotADirectory`] when `dir` exists and is not a directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, SymbolsError> {
        let dir = dir.into();
        match std::fs::metadata(&dir) {
            Ok(m) if !m.is_dir() => Err(SymbolsError::StoreNotADirectory { path: dir }),
            Ok(_) => Ok(Store { dir }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Store { dir }),
            Err(e) => Err(SymbolsError::Io { path: dir, what: "reading", source: e }),
        }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Converts the ELF `binary` to Breakpad symbols and stores them under its build's debug
    /// id, named `name` (default: the file name of the resolved path, which is what the
    /// kernel maps and a dump records). Adding a build that is already stored writes nothing.
    ///
    /// A binary without DWARF is stored with what it has (PUBLIC names from the symbol table,
    /// STACK CFI from `.eh_frame`), and a note says so.
    ///
    /// # Errors
    /// The file is unreadable ([`SymbolsError::Io`]), not ELF, has no build-id, or does not
    /// convert; the store cannot be written.
    pub fn add(&self, binary: &Path, name: Option<&str>) -> Result<Added, SymbolsError> {
        let data = std::fs::read(binary).map_err(SymbolsError::io(binary, "reading"))?;
        let facts = inspect(binary, &data)?;
        let resolved = std::fs::canonicalize(binary).unwrap_or_else(|_| binary.to_path_buf());
        let name = match name {
            Some(n) => n.to_owned(),
            None => {
                resolved.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
            }
        };
        check_name(&name)?;
        let mut notes = Vec::new();
        let sym = layout::sym_path(&self.dir, &name, &facts.debug_id);
        match module_line_id(&sym) {
            Some(id) if id == facts.debug_id => {
                let entry = self.entry(&name, &facts.debug_id)?;
                return Ok(Added { entry, already_stored: true, notes });
            }
            Some(other) => notes.push(format!(
                "replaced {}: its MODULE line named {other}, not {}",
                sym.display(),
                facts.debug_id
            )),
            None => {}
        }
        let raw = Raw { path: binary.to_path_buf(), data, facts };
        let mut added = self.convert(&name, &[raw], resolved.display().to_string())?;
        notes.append(&mut added.notes);
        added.notes = notes;
        Ok(added)
    }

    /// Every build in the store, converted or not.
    ///
    /// # Errors
    /// Only when the store directory itself cannot be read; anything below it that cannot
    /// be read is a [`Listing::problems`] line.
    pub fn list(&self) -> Result<Listing, SymbolsError> {
        let mut listing = Listing::default();
        let names = match read_dir_sorted(&self.dir) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(listing),
            Err(e) => {
                return Err(SymbolsError::Io {
                    path: self.dir.clone(),
                    what: "reading",
                    source: e,
                });
            }
        };
        for name in names {
            if name.starts_with('.') || !layout::is_file_name(&name) {
                continue;
            }
            let name_dir = self.dir.join(&name);
            if !name_dir.is_dir() {
                continue;
            }
            let ids = match read_dir_sorted(&name_dir) {
                Ok(ids) => ids,
                Err(e) => {
                    listing.problems.push(format!("reading {}: {e}", name_dir.display()));
                    continue;
                }
            };
            for id in ids.into_iter().filter(|id| layout::is_debug_id(id)) {
                match self.entry(&name, &id) {
                    Ok(e) if e.sym.is_some() || !e.raw.is_empty() => listing.entries.push(e),
                    Ok(_) => {}
                    Err(e) => listing.problems.push(error_chain(&e)),
                }
            }
        }
        Ok(listing)
    }

    /// The `.sym` for the module `ids` names, by its debug id only: a stored `.sym` whose
    /// `MODULE` line carries that id; else a cached binary or debug file in that id's
    /// directory whose build-id matches, converted now; else, when `remote` has servers and
    /// `ids.code_id` is known, the file fetched from debuginfod by build-id, checked, cached
    /// and converted. Anything else is [`Lookup::Missing`] saying why (`no symbols for
    /// <debug id>`, what was refused, what the servers said): never another build's file.
    ///
    /// # Errors
    /// Only failures of the store itself: a file that cannot be read or written. A server
    /// that cannot be reached is part of the `Missing` reason.
    pub fn lookup(&self, ids: &ModuleIds, remote: &Debuginfod) -> Result<Lookup, SymbolsError> {
        let missing = |detail: String| {
            let why = if detail.is_empty() {
                format!("no symbols for {}", ids.debug_id)
            } else {
                format!("no symbols for {} ({detail})", ids.debug_id)
            };
            Ok(Lookup::Missing { why })
        };
        let name = layout::code_file_name(&ids.code_file);
        if !layout::is_file_name(name) {
            return missing(format!("module name {:?} cannot be a store path", ids.code_file));
        }
        let Some(debug_id) = normalize_debug_id(&ids.debug_id) else {
            return missing(format!("{:?} is not a Breakpad debug id", ids.debug_id));
        };
        let build_id = match &ids.code_id {
            None => None,
            Some(code) => match layout::normalize_build_id(code) {
                Some(b) if layout::debug_id_from_build_id(&b).as_deref() == Some(&debug_id) => {
                    Some(b)
                }
                // A module whose two ids disagree is not one build: match nothing.
                _ => {
                    return missing(format!(
                        "its code id {code} does not give debug id {debug_id}"
                    ));
                }
            },
        };
        let sym = layout::sym_path(&self.dir, name, &debug_id);
        let mut refused = Vec::new();
        match module_line_id(&sym) {
            Some(id) if id == debug_id => return Ok(Lookup::Found(sym)),
            Some(other) => {
                refused.push(format!("refused {}: its MODULE line names {other}", sym.display()))
            }
            None => {}
        }
        let raws = self.cached_raws(name, &debug_id, build_id.as_deref(), &mut refused)?;
        if !raws.is_empty() {
            let source = raws[0].path.display().to_string();
            return self.convert(name, &raws, source).map(|a| Lookup::Found(path_of(&a)));
        }
        if remote.is_configured() {
            match &build_id {
                None => refused.push("the module has no build-id to ask debuginfod for".into()),
                Some(b) => match self.fetch(b, Some(name), remote) {
                    Ok(a) if a.entry.debug_id == debug_id => return Ok(Lookup::Found(path_of(&a))),
                    Ok(a) => refused.push(format!(
                        "debuginfod's file for {b} has debug id {}",
                        a.entry.debug_id
                    )),
                    Err(e @ SymbolsError::Io { .. }) => return Err(e),
                    Err(e) => refused.push(error_chain(&e)),
                },
            }
        }
        missing(refused.join("; "))
    }

    /// Fetches the debug file of `build_id` from `remote` (`/debuginfo`, then `/executable`
    /// when that gave no file with unwind tables), checks its build-id, caches it as
    /// `<name>/<DEBUG ID>/<name>` (or `<name>.debug` for a separate debug file) and converts
    /// it. `name` defaults to the server's file name (`X-DEBUGINFOD-FILE`), then the soname.
    /// A build whose `.sym` is stored already is not fetched again when `name` is given.
    ///
    /// # Errors
    /// [`SymbolsError::BadBuildId`], [`SymbolsError::NoDebuginfod`],
    /// [`SymbolsError::NotFound`] (every server answered 404), the first transport or status
    /// error when no server had it, [`SymbolsError::WrongBuildId`] (the server sent another
    /// build: nothing kept), [`SymbolsError::NoName`], store I/O, conversion.
    pub fn fetch(
        &self,
        build_id: &str,
        name: Option<&str>,
        remote: &Debuginfod,
    ) -> Result<Added, SymbolsError> {
        let build_id = layout::normalize_build_id(build_id)
            .ok_or_else(|| SymbolsError::BadBuildId { given: build_id.to_owned() })?;
        if let Some(name) = name {
            check_name(name)?;
            if let Some(id) = layout::debug_id_from_build_id(&build_id) {
                let sym = layout::sym_path(&self.dir, name, &id);
                if module_line_id(&sym).as_deref() == Some(id.as_str()) {
                    let entry = self.entry(name, &id)?;
                    return Ok(Added { entry, already_stored: true, notes: Vec::new() });
                }
                // A cached file of this build (the server's self-copy) needs no download.
                let mut refused = Vec::new();
                let raws = self.cached_raws(name, &id, Some(&build_id), &mut refused)?;
                if !raws.is_empty() {
                    let source = raws[0].path.display().to_string();
                    return self.convert(name, &raws, source);
                }
            }
        }
        if !remote.is_configured() {
            return Err(SymbolsError::NoDebuginfod);
        }
        let incoming = self.dir.join(INCOMING_DIR);
        make_dirs(&incoming)?;
        let mut errors = Vec::new();
        let debuginfo = self.download(remote, &build_id, Artifact::Debuginfo, &mut errors)?;
        let needs_executable = debuginfo
            .as_ref()
            .is_none_or(|(raw, _, _)| raw.facts.is_debug_file || !raw.facts.has_unwind_info);
        let executable = if needs_executable {
            self.download(remote, &build_id, Artifact::Executable, &mut errors)?
        } else {
            None
        };
        if debuginfo.is_none() && executable.is_none() {
            return Err(match errors.into_iter().next() {
                Some(e) => e,
                None => SymbolsError::NotFound { build_id, urls: remote.urls().to_vec() },
            });
        }
        let server_name = |d: &Option<(Raw, TempFile, Downloaded)>| {
            d.as_ref().and_then(|(_, _, dl)| dl.server_file.as_deref()).map(|f| {
                let leaf = layout::code_file_name(f);
                leaf.strip_suffix(layout::DEBUG_SUFFIX).unwrap_or(leaf).to_owned()
            })
        };
        let soname = |d: &Option<(Raw, TempFile, Downloaded)>| {
            d.as_ref().and_then(|(raw, _, _)| raw.facts.soname.clone())
        };
        let name = name
            .map(str::to_owned)
            .or_else(|| server_name(&executable))
            .or_else(|| server_name(&debuginfo))
            .or_else(|| soname(&executable))
            .or_else(|| soname(&debuginfo))
            .ok_or_else(|| SymbolsError::NoName { build_id: build_id.clone() })?;
        check_name(&name)?;
        let mut raws = Vec::new();
        let mut sources = Vec::new();
        let both = executable.is_some() && debuginfo.is_some();
        for (downloaded, artifact) in
            [(executable, Artifact::Executable), (debuginfo, Artifact::Debuginfo)]
        {
            let Some((mut raw, temp, dl)) = downloaded else { continue };
            let module_dir = layout::module_dir(&self.dir, &name, &raw.facts.debug_id);
            make_dirs(&module_dir)?;
            // An unstripped binary from /debuginfo alone is the binary; a separate debug file
            // (or /debuginfo beside /executable) keeps its own name, so both can sit side by
            // side and merge.
            let is_debug = artifact == Artifact::Debuginfo
                && (both || raw.facts.is_debug_file || !raw.facts.has_unwind_info);
            let dest = if is_debug {
                layout::debug_file_path(&self.dir, &name, &raw.facts.debug_id)
            } else {
                layout::binary_path(&self.dir, &name, &raw.facts.debug_id)
            };
            temp.persist(&dest)?;
            raw.path = dest;
            sources.push(dl.url);
            raws.push(raw);
        }
        self.convert(&name, &raws, sources.join(" "))
    }

    /// The entry for `<name>/<debug id>` as it is on disk.
    fn entry(&self, name: &str, debug_id: &str) -> Result<Entry, SymbolsError> {
        let sym = layout::sym_path(&self.dir, name, debug_id);
        let mut entry = Entry {
            name: name.to_owned(),
            debug_id: debug_id.to_owned(),
            build_id: None,
            sym: None,
            records: None,
            raw: Vec::new(),
            added: None,
            source: None,
        };
        for path in [
            layout::binary_path(&self.dir, name, debug_id),
            layout::debug_file_path(&self.dir, name, debug_id),
        ] {
            if let Ok(m) = std::fs::metadata(&path) {
                if m.is_file() {
                    entry.added =
                        entry.added.max(m.modified().ok().map(Timestamp::from_system_time));
                    entry.raw.push(RawFile { path, bytes: m.len() });
                }
            }
        }
        let sym_meta = match std::fs::metadata(&sym) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(raw) = entry.raw.first() {
                    entry.build_id = raw_build_id(&raw.path);
                }
                return Ok(entry);
            }
            Err(e) => return Err(SymbolsError::Io { path: sym, what: "reading", source: e }),
        };
        let meta_path = meta_path(&sym);
        let meta = std::fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
            .filter(|m| m.debug_id == debug_id && m.records.bytes == sym_meta.len());
        match meta {
            Some(m) => {
                entry.build_id = Some(m.build_id);
                entry.added = Some(m.added);
                entry.source = Some(m.source);
                entry.records = Some(m.records);
            }
            None => {
                // Written by another tool, or the metadata is gone: read the symbols once.
                let file = File::open(&sym).map_err(SymbolsError::io(&sym, "reading"))?;
                let stats = SymStats::scan(std::io::BufReader::new(file))
                    .map_err(SymbolsError::io(&sym, "reading"))?;
                entry.build_id = stats.code_id.as_deref().and_then(layout::normalize_build_id);
                entry.added = sym_meta.modified().ok().map(Timestamp::from_system_time);
                entry.records = Some(stats);
            }
        }
        entry.sym = Some(sym);
        Ok(entry)
    }

    /// The cached ELF files of `<name>/<debug id>` whose ids match; the others are refused
    /// (listed in `refused`) and never used.
    fn cached_raws(
        &self,
        name: &str,
        debug_id: &str,
        build_id: Option<&str>,
        refused: &mut Vec<String>,
    ) -> Result<Vec<Raw>, SymbolsError> {
        let mut raws = Vec::new();
        for path in [
            layout::binary_path(&self.dir, name, debug_id),
            layout::debug_file_path(&self.dir, name, debug_id),
        ] {
            let data = match std::fs::read(&path) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(SymbolsError::Io { path, what: "reading", source: e }),
            };
            let facts = match inspect(&path, &data) {
                Ok(f) => f,
                Err(e) => {
                    refused.push(format!("refused {}", error_chain(&e)));
                    continue;
                }
            };
            let matches =
                facts.debug_id == debug_id && build_id.is_none_or(|b| b == facts.build_id);
            if !matches {
                refused.push(
                    SymbolsError::WrongBuildId {
                        path: path.clone(),
                        expected: build_id.unwrap_or(debug_id).to_owned(),
                        found: facts.build_id.clone(),
                    }
                    .to_string(),
                );
                continue;
            }
            raws.push(Raw { path, data, facts });
        }
        Ok(raws)
    }

    /// `artifact` of `build_id` from the first server that has it, checked; transport and
    /// status errors are collected in `errors` and the next server is asked.
    fn download(
        &self,
        remote: &Debuginfod,
        build_id: &str,
        artifact: Artifact,
        errors: &mut Vec<SymbolsError>,
    ) -> Result<Option<(Raw, TempFile, Downloaded)>, SymbolsError> {
        let incoming = self.dir.join(INCOMING_DIR);
        for base in remote.urls() {
            let mut temp =
                TempFile::create(&incoming, &format!("{build_id}.{}", artifact.as_str()))?;
            let got = remote.download(base, build_id, artifact, &mut temp.file, &temp.path);
            let downloaded = match got {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                Err(e @ SymbolsError::Io { .. }) => return Err(e),
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            temp.file.sync_all().map_err(SymbolsError::io(&temp.path, "syncing"))?;
            let data =
                std::fs::read(&temp.path).map_err(SymbolsError::io(&temp.path, "reading"))?;
            let label = PathBuf::from(&downloaded.url);
            let facts = inspect(&label, &data)?;
            if facts.build_id != build_id {
                return Err(SymbolsError::WrongBuildId {
                    path: label,
                    expected: build_id.to_owned(),
                    found: facts.build_id,
                });
            }
            return Ok(Some((Raw { path: temp.path.clone(), data, facts }, temp, downloaded)));
        }
        Ok(None)
    }

    /// Writes `<name>.sym` (and its metadata) for `raws`, one build, atomically.
    fn convert(&self, name: &str, raws: &[Raw], source: String) -> Result<Added, SymbolsError> {
        let facts = &raws[0].facts;
        let debug_id = facts.debug_id.clone();
        let module_dir = layout::module_dir(&self.dir, name, &debug_id);
        make_dirs(&module_dir)?;
        let sym = layout::sym_path(&self.dir, name, &debug_id);
        let inputs: Vec<(&Path, &[u8])> =
            raws.iter().map(|r| (r.path.as_path(), r.data.as_slice())).collect();
        let mut temp = TempFile::create(&module_dir, &format!("{name}{}", layout::SYM_SUFFIX))?;
        let stats = {
            let mut out = BufWriter::new(&mut temp.file);
            let stats = write_sym(&inputs, name, &mut out, &sym)?;
            out.flush().map_err(SymbolsError::io(&sym, "writing"))?;
            stats
        };
        // The text must name the id it is stored under; anything else is never kept.
        if stats.module_debug_id.as_deref() != Some(debug_id.as_str()) {
            return Err(SymbolsError::Convert {
                path: raws[0].path.clone(),
                reason: format!(
                    "dump_syms wrote MODULE id {}, the file's debug id is {debug_id}",
                    stats.module_debug_id.as_deref().unwrap_or("(none)")
                ),
            });
        }
        temp.file.sync_all().map_err(SymbolsError::io(&temp.path, "syncing"))?;
        temp.persist(&sym)?;
        let meta = Meta {
            v: 1,
            name: name.to_owned(),
            debug_id: debug_id.clone(),
            build_id: facts.build_id.clone(),
            added: Timestamp::now(),
            source,
            records: stats.clone(),
        };
        let mut temp = TempFile::create(&module_dir, &format!("{name}{META_SUFFIX}"))?;
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| SymbolsError::Convert { path: sym.clone(), reason: e.to_string() })?;
        temp.file.write_all(&json).map_err(SymbolsError::io(&temp.path, "writing"))?;
        temp.file.sync_all().map_err(SymbolsError::io(&temp.path, "syncing"))?;
        temp.persist(&meta_path(&sym))?;
        sync_dir(&module_dir);
        let mut notes = Vec::new();
        if !raws.iter().any(|r| r.facts.has_debug_info) {
            notes.push(format!(
                "{}: no debug info (.debug_info): stored what is there, PUBLIC names and STACK \
                 CFI only (no files, lines or inlined frames)",
                raws[0].path.display()
            ));
        } else if !stats.has_line_info() {
            notes.push(format!("{}: its debug info has no line records", raws[0].path.display()));
        }
        if !stats.has_cfi() {
            notes.push(format!(
                "{}: no unwind tables (STACK CFI): stacks through it rely on frame pointers or \
                 stack scanning",
                raws[0].path.display()
            ));
        }
        let entry = self.entry(name, &debug_id)?;
        Ok(Added { entry, already_stored: false, notes })
    }
}

fn path_of(added: &Added) -> PathBuf {
    added.entry.sym.clone().unwrap_or_default()
}

fn check_name(name: &str) -> Result<(), SymbolsError> {
    if layout::is_file_name(name) && !name.starts_with('.') {
        Ok(())
    } else {
        Err(SymbolsError::BadName { name: name.to_owned() })
    }
}

/// `ABC...0` with the GUID uppercase and the age lowercase, as Breakpad prints it.
fn normalize_debug_id(id: &str) -> Option<String> {
    if !id.is_ascii() || id.len() < 33 {
        return None;
    }
    let normal = format!("{}{}", id[..32].to_ascii_uppercase(), id[32..].to_ascii_lowercase());
    layout::is_debug_id(&normal).then_some(normal)
}

/// The debug id on the first line of a `.sym` (`MODULE Linux x86_64 <id> <name>`); `None`
/// when there is no readable file.
fn module_line_id(sym: &Path) -> Option<String> {
    let mut head = [0u8; 512];
    let mut file = File::open(sym).ok()?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let text = String::from_utf8_lossy(&head[..n]);
    let line = text.lines().next()?;
    let mut words = line.split_ascii_whitespace();
    (words.next()? == "MODULE").then_some(())?;
    // An unreadable first line still says "this is not the id you want".
    Some(words.nth(2).unwrap_or("(no id)").to_owned())
}

fn meta_path(sym: &Path) -> PathBuf {
    let mut s = sym.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// The build-id of a cached ELF, read from its note only (for `list`, without parsing it).
fn raw_build_id(path: &Path) -> Option<String> {
    let data = std::fs::read(path).ok()?;
    inspect(path, &data).ok().map(|f| f.build_id)
}

fn read_dir_sorted(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Creates `dir` and its missing parents, 0700.
fn make_dirs(dir: &Path) -> Result<(), SymbolsError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(SymbolsError::io(dir, "creating"))
}

/// Best effort: the rename survives a power cut once its directory is synced.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// `error` and its causes, `a: b: c`.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A 0600 file under a temporary name in its final directory, removed unless persisted.
struct TempFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl TempFile {
    fn create(dir: &Path, final_name: &str) -> Result<TempFile, SymbolsError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{final_name}.tmp.{}.{n}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(SymbolsError::io(&path, "creating"))?;
        Ok(TempFile { path, file, persisted: false })
    }

    /// Renames the file to `dest` (same filesystem: the store).
    fn persist(mut self, dest: &Path) -> Result<(), SymbolsError> {
        std::fs::rename(&self.path, dest).map_err(SymbolsError::io(dest, "renaming into"))?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_ids_are_normalized_or_refused() {
        assert_eq!(
            normalize_debug_id("e960dcb78815a5d84c4c44205e3e8f5a0").as_deref(),
            Some("E960DCB78815A5D84C4C44205E3E8F5A0")
        );
        assert_eq!(normalize_debug_id("../../../../../../../../../../../x"), None);
        assert_eq!(normalize_debug_id("E960"), None);
    }

    #[test]
    fn a_store_path_that_is_a_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let e = Store::open(&f).unwrap_err();
        assert_eq!(e.code(), "symbols_store_not_a_directory");
        let missing = Store::open(d.path().join("nope")).unwrap();
        assert_eq!(missing.list().unwrap(), Listing::default(), "a store not yet made is empty");
    }

    #[test]
    fn module_line_ids() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.sym");
        std::fs::write(&p, "MODULE Linux x86_64 ABC0 a\nFILE 0 x\n").unwrap();
        assert_eq!(module_line_id(&p).as_deref(), Some("ABC0"));
        std::fs::write(&p, "junk\n").unwrap();
        assert_eq!(module_line_id(&p), None);
        assert_eq!(module_line_id(&d.path().join("none")), None);
    }
}
