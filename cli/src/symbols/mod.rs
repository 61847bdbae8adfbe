//! The build-id symbol store: what a post-mortem needs to name the frames of a crashed
//! build, keyed by the module's debug id so that a rebuilt binary never lends its names to
//! another build's dump.
//!
//! # Layout
//!
//! Breakpad's, so `minidump-stackwalk --symbols-path <store>` reads the same store (the paths
//! and the id rule live in [`dispatch_journal::symbols`], shared with the server):
//!
//! ```text
//! <store>/dispatch-server/E960DCB78815A5D84C4C44205E3E8F5A0/dispatch-server.sym       symbols
//! <store>/dispatch-server/E960DCB78815A5D84C4C44205E3E8F5A0/dispatch-server.sym.json  what `list` shows
//! <store>/dispatch-server/E960DCB78815A5D84C4C44205E3E8F5A0/dispatch-server           a cached ELF
//! <store>/dispatch-server/E960DCB78815A5D84C4C44205E3E8F5A0/dispatch-server.debug     a cached debug file
//! ```
//!
//! The debug id of an ELF module is its GNU build-id's first 16 bytes as a little-endian GUID
//! (uppercase hex) plus the age `0`, as rust-minidump's `Module::debug_identifier` computes it
//! from a dump and `dump_syms` writes it on the `MODULE` line. The `.sym` text comes from
//! Mozilla's `dump_syms` crate: `MODULE`, `INFO CODE_ID`, `FILE`, `INLINE_ORIGIN`, `FUNC` and
//! line records, `INLINE`, `PUBLIC`, `STACK CFI`. The cached ELF files are the server's copy
//! of itself (`DISPATCH_SYMBOL_STORE`) and debuginfod downloads; they are converted on first
//! use. Directories are 0700, files 0600, and every file is written under a temporary name
//! and renamed, so no reader ever sees half a `.sym`.
//!
//! # For the post-mortem
//!
//! ```no_run
//! use dispatch_cli::symbols::{Debuginfod, Lookup, ModuleIds, Store};
//! # fn main() -> Result<(), dispatch_cli::symbols::SymbolsError> {
//! let store = Store::open(Store::default_dir("./var".as_ref()))?;
//! let remote = Debuginfod::from_env()?; // DEBUGINFOD_URLS; Debuginfod::none() for the store alone
//! let ids = ModuleIds {
//!     code_file: "dispatch-server".into(),
//!     debug_id: "E960DCB78815A5D84C4C44205E3E8F5A0".into(),
//!     code_id: Some("b7dc60e91588d8a54c4c44205e3e8f5a0c2a1e9d".into()),
//! };
//! match store.lookup(&ids, &remote)? {
//!     Lookup::Found(sym) => println!("symbols: {}", sym.display()),
//!     // Show the module as `dispatch-server+0x1234` and say why: never another build's names.
//!     Lookup::Missing { why } => println!("{why}"),
//! }
//! # Ok(()) }
//! ```

mod breakpad;
pub mod command;
mod debuginfod;
mod elf;
mod error;
mod store;

use std::path::PathBuf;

pub use breakpad::SymStats;
pub use debuginfod::{Artifact, DEBUGINFOD_URLS, Debuginfod, Downloaded};
pub use elf::{ElfFacts, inspect};
pub use error::SymbolsError;
pub use store::{Added, Entry, Listing, META_SUFFIX, RawFile, Store};

/// The ids of one module as a minidump records it (`minidump::Module`'s `code_file`,
/// `debug_identifier` and `code_identifier`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleIds {
    /// The module's file name (a full path is cut to its last component).
    pub code_file: String,
    /// The Breakpad debug id (`debug_identifier().breakpad()`), e.g.
    /// `E960DCB78815A5D84C4C44205E3E8F5A0`.
    pub debug_id: String,
    /// The GNU build-id, hex (`code_identifier()`); needed to ask debuginfod, and checked
    /// against `debug_id` (two ids that disagree match nothing).
    pub code_id: Option<String>,
}

/// The answer of [`Store::lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The `.sym` of exactly this build.
    Found(PathBuf),
    /// No symbols for this build; `why` is for people: `no symbols for <debug id>`, then what
    /// was tried or refused, e.g. `no symbols for E960...0 (build-id b7dc...: not found on
    /// http://127.0.0.1:8002)`.
    Missing {
        /// The reason, one line.
        why: String,
    },
}
