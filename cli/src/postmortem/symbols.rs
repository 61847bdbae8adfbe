//! Symbols for a dump's modules, found strictly by the module's ids.
//!
//! A frame named from another build's symbols is worse than no name: it sends on-call to the
//! wrong code with confidence. So a module gets symbols only through its debug id (on Linux
//! the first 16 bytes of the GNU build-id, age 0) or its code id (the full build-id), and the
//! `.sym` file found must say the same id on its `MODULE` line before it is loaded. A module
//! whose id matches nothing is shown as `module+0xoffset` with "no symbols for `<debug id>`".
//!
//! rust-minidump's native-debuginfo provider opens whatever file sits at the path recorded in
//! the dump without comparing build-ids; it is not used (the `debuginfo` feature is off).
//!
//! The seam: [`SymbolSource::locate`] maps one module's ids to a file. [`BreakpadStores`] is the
//! local implementation (Breakpad stores `<debug file>/<DEBUG ID>/<name>.sym`); the symbol store
//! with debuginfod plugs in beside it. [`IdCheckedSupplier`] turns any source into the
//! `SymbolSupplier` the stack walker asks, checks the id, and records what happened to each
//! module ([`SymbolOutcome`]) for the report.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use minidump::Module;
use minidump_unwind::{
    FileError, FileKind, LocateSymbolsResult, SymbolError, SymbolFile, SymbolSupplier,
};
use serde::Serialize;

/// The ids a module is looked up by, as the dump records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleIds {
    /// The module's path as recorded where it ran (`/usr/bin/dispatch-server`).
    pub code_file: String,
    /// The debug file's name (`dispatch-server`, `app.pdb`); the code file's on Linux.
    pub debug_file: String,
    /// Breakpad debug id: 32 hex digits (a GUID) and the age, upper case
    /// (`509C0610949836F7B70BD88BCF03E5400`). Absent when the dump has none.
    pub debug_id: Option<String>,
    /// Code id: on Linux the full GNU build-id (lower-case hex); on Windows timestamp+size.
    pub code_id: Option<String>,
}

impl ModuleIds {
    /// The ids of one module of a dump. A nil debug id (all zeros: the writer found no id)
    /// counts as none, so it can never match a store entry by accident.
    pub fn of(module: &(dyn Module + Sync)) -> Self {
        let code_file = module.code_file().into_owned();
        let debug_file = module
            .debug_file()
            .filter(|f| !f.is_empty())
            .map(|f| f.into_owned())
            .unwrap_or_else(|| code_file.clone());
        let debug_id = module
            .debug_identifier()
            .filter(|id| !id.is_nil())
            .map(|id| id.breakpad().to_string().to_uppercase());
        let code_id =
            module.code_identifier().map(|c| c.as_str().to_owned()).filter(|c| !c.is_empty());
        ModuleIds { code_file, debug_file, debug_id, code_id }
    }

    /// The last component of the code file (either path separator: dumps come from Windows too).
    pub fn name(&self) -> &str {
        leaf(&self.code_file)
    }
}

/// What a [`SymbolSource`] found for one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// A Breakpad `.sym` file stored under this module's id. It is still checked before use.
    Breakpad(PathBuf),
    /// Nothing stored under this module's ids; the places looked at, for the report.
    NotFound {
        /// Paths (or URLs) tried.
        searched: Vec<String>,
    },
}

/// The lookup seam: one module's ids to a symbol file. Implementations must look up by id only
/// (never by the module's recorded path), and may be called from any thread.
pub trait SymbolSource: Send + Sync {
    /// Where the symbols of `module` are, by its ids.
    fn locate(&self, module: &ModuleIds) -> Located;
}

/// Breakpad symbol stores on disk: `<dir>/<debug file>/<DEBUG ID>/<debug file minus .pdb>.sym`,
/// the layout `dump_syms`, `minidump-stackwalk`, Sentry and Socorro share. Searched in order.
#[derive(Debug, Clone, Default)]
pub struct BreakpadStores {
    dirs: Vec<PathBuf>,
}

impl BreakpadStores {
    /// Stores searched in this order. Missing directories are fine (they hold nothing).
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        BreakpadStores { dirs }
    }

    /// The directories, in search order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The store-relative path of a module's `.sym` file, when it has a debug id.
    pub fn relative_path(module: &ModuleIds) -> Option<PathBuf> {
        let id = module.debug_id.as_deref()?;
        let file = leaf(&module.debug_file);
        let stem = strip_suffix_ignore_case(file, ".pdb").unwrap_or(file);
        Some(Path::new(file).join(id).join(format!("{stem}.sym")))
    }
}

impl SymbolSource for BreakpadStores {
    fn locate(&self, module: &ModuleIds) -> Located {
        let Some(rel) = Self::relative_path(module) else {
            return Located::NotFound { searched: Vec::new() };
        };
        let mut searched = Vec::new();
        for dir in &self.dirs {
            let path = dir.join(&rel);
            if path.is_file() {
                return Located::Breakpad(path);
            }
            searched.push(path.display().to_string());
        }
        Located::NotFound { searched }
    }
}

/// What happened when the walker asked for one module's symbols.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SymbolOutcome {
    /// Loaded from this file, whose `MODULE` id equals the module's debug id.
    Loaded {
        /// The `.sym` file.
        path: PathBuf,
    },
    /// No file under the module's ids.
    Missing {
        /// Where it was looked for.
        searched: Vec<String>,
    },
    /// The module has no debug id: nothing can be matched to it safely.
    NoId,
    /// A file was stored under the id but its `MODULE` line names another build: refused.
    Refused {
        /// The file.
        path: PathBuf,
        /// The id its `MODULE` line carries (or what was wrong with that line).
        found: String,
    },
    /// The file could not be read or parsed.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl SymbolOutcome {
    /// One line for people: `"no symbols for <debug id>"`, `"refused <file>: ..."`.
    pub fn describe(&self, ids: &ModuleIds) -> String {
        let id = ids.debug_id.as_deref().unwrap_or("(no debug id)");
        match self {
            SymbolOutcome::Loaded { path } => format!("symbols from {}", path.display()),
            SymbolOutcome::Missing { .. } => format!("no symbols for {id}"),
            SymbolOutcome::NoId => "no symbols: the dump records no debug id".into(),
            SymbolOutcome::Refused { path, found } => format!(
                "no symbols for {id}: refused {} (its MODULE line says {found})",
                path.display()
            ),
            SymbolOutcome::Unreadable { path, reason } => {
                format!("no symbols for {id}: {} unreadable: {reason}", path.display())
            }
        }
    }

    /// Whether the module's symbols were loaded.
    pub fn loaded(&self) -> bool {
        matches!(self, SymbolOutcome::Loaded { .. })
    }
}

/// Outcomes per module, keyed by the module's code file.
pub type Outcomes = Arc<Mutex<BTreeMap<String, SymbolOutcome>>>;

/// The `SymbolSupplier` the stack walker asks: locates through a [`SymbolSource`], refuses a
/// file whose `MODULE` id is not the module's, and records each module's [`SymbolOutcome`].
pub struct IdCheckedSupplier {
    source: Arc<dyn SymbolSource>,
    outcomes: Outcomes,
}

impl IdCheckedSupplier {
    /// A supplier over `source`, recording into `outcomes`.
    pub fn new(source: Arc<dyn SymbolSource>, outcomes: Outcomes) -> Self {
        IdCheckedSupplier { source, outcomes }
    }

    fn record(&self, ids: &ModuleIds, outcome: SymbolOutcome) {
        // A poisoned lock only means another lookup panicked mid-insert; the map is still a map.
        let mut map = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(ids.code_file.clone(), outcome);
    }

    fn load(&self, ids: &ModuleIds) -> Result<(SymbolFile, PathBuf), SymbolOutcome> {
        let Some(want) = ids.debug_id.as_deref() else {
            return Err(SymbolOutcome::NoId);
        };
        let path = match self.source.locate(ids) {
            Located::Breakpad(path) => path,
            Located::NotFound { searched } => return Err(SymbolOutcome::Missing { searched }),
        };
        let unreadable = |reason: String| SymbolOutcome::Unreadable { path: path.clone(), reason };
        let file = std::fs::File::open(&path).map_err(|e| unreadable(e.to_string()))?;
        let mut reader = BufReader::new(file);
        let mut first = String::new();
        reader.read_line(&mut first).map_err(|e| unreadable(e.to_string()))?;
        match module_line_id(&first) {
            Some(found) if found.eq_ignore_ascii_case(want) => {}
            Some(found) => {
                return Err(SymbolOutcome::Refused { path, found: found.to_owned() });
            }
            None => {
                return Err(SymbolOutcome::Refused {
                    path,
                    found: "no MODULE line (not a Breakpad symbol file)".into(),
                });
            }
        }
        let symbols =
            SymbolFile::parse(std::io::Cursor::new(first.into_bytes()).chain(reader), |_| ())
                .map_err(|e| unreadable(e.to_string()))?;
        Ok((symbols, path))
    }
}

#[async_trait::async_trait]
impl SymbolSupplier for IdCheckedSupplier {
    async fn locate_symbols(
        &self,
        module: &(dyn Module + Sync),
    ) -> Result<LocateSymbolsResult, SymbolError> {
        let ids = ModuleIds::of(module);
        match self.load(&ids) {
            Ok((symbols, path)) => {
                self.record(&ids, SymbolOutcome::Loaded { path });
                Ok(LocateSymbolsResult { symbols, extra_debug_info: None })
            }
            Err(outcome) => {
                let err = match &outcome {
                    SymbolOutcome::NoId => SymbolError::MissingDebugFileOrId,
                    _ => SymbolError::NotFound,
                };
                self.record(&ids, outcome);
                Err(err)
            }
        }
    }

    async fn locate_file(
        &self,
        _module: &(dyn Module + Sync),
        _file_kind: FileKind,
    ) -> Result<PathBuf, FileError> {
        // Binaries and PDBs are never opened: only id-checked Breakpad files are used.
        Err(FileError::NotFound)
    }
}

/// The id on a Breakpad `MODULE <os> <arch> <id> <name>` line.
fn module_line_id(line: &str) -> Option<&str> {
    let mut words = line.split_ascii_whitespace();
    (words.next()? == "MODULE").then_some(())?;
    words.nth(2)
}

fn leaf(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

fn strip_suffix_ignore_case<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    (s.is_char_boundary(cut) && s[cut..].eq_ignore_ascii_case(suffix)).then(|| &s[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(debug_file: &str, id: Option<&str>) -> ModuleIds {
        ModuleIds {
            code_file: format!("/opt/{debug_file}"),
            debug_file: debug_file.into(),
            debug_id: id.map(str::to_owned),
            code_id: None,
        }
    }

    #[test]
    fn store_paths_follow_the_breakpad_layout() {
        let m = ids("test_app.pdb", Some("5A9832E5287241C1838ED98914E9B7FF1"));
        assert_eq!(
            BreakpadStores::relative_path(&m).unwrap(),
            Path::new("test_app.pdb/5A9832E5287241C1838ED98914E9B7FF1/test_app.sym")
        );
        let m = ids("crash-client", Some("509C0610949836F7B70BD88BCF03E5400"));
        assert_eq!(
            BreakpadStores::relative_path(&m).unwrap(),
            Path::new("crash-client/509C0610949836F7B70BD88BCF03E5400/crash-client.sym")
        );
        assert_eq!(BreakpadStores::relative_path(&ids("x", None)), None);
    }

    #[test]
    fn module_line() {
        assert_eq!(module_line_id("MODULE Linux x86_64 ABC0 app\n"), Some("ABC0"));
        assert_eq!(module_line_id("INFO CODE_ID x\n"), None);
        assert_eq!(module_line_id("MODULE Linux\n"), None);
        assert_eq!(leaf(r"c:\a\b.pdb"), "b.pdb");
        assert_eq!(strip_suffix_ignore_case("A.PDB", ".pdb"), Some("A"));
    }

    /// A `.sym` stored under the module's id whose MODULE line names another build is refused,
    /// and the outcome says which id the file carries.
    #[test]
    fn a_file_under_the_right_path_with_another_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let want = "0123456789ABCDEF0123456789ABCDEF0";
        let m = ids("app", Some(want));
        let path = dir.path().join(BreakpadStores::relative_path(&m).unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            "MODULE Linux x86_64 FFFF456789ABCDEF0123456789ABCDEF0 app\nFUNC 10 4 0 main\n",
        )
        .unwrap();
        let outcomes = Outcomes::default();
        let supplier = IdCheckedSupplier::new(
            Arc::new(BreakpadStores::new(vec![dir.path().into()])),
            outcomes.clone(),
        );
        match supplier.load(&m) {
            Err(SymbolOutcome::Refused { found, .. }) => {
                assert_eq!(found, "FFFF456789ABCDEF0123456789ABCDEF0")
            }
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
        // The same file with the right id loads.
        std::fs::write(&path, format!("MODULE Linux x86_64 {want} app\nFUNC 10 4 0 main\n"))
            .unwrap();
        let (sym, _) = supplier.load(&m).map_err(|o| format!("{o:?}")).unwrap();
        assert_eq!(sym.module_id, want);
        assert!(matches!(supplier.load(&ids("app", None)), Err(SymbolOutcome::NoId)));
    }
}
