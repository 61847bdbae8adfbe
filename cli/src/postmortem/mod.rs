//! `dispatchctl postmortem`: one report of why a boot died, for the ticket.
//!
//! The dump half ([`analyze_dump`]) walks every thread of the boot's minidump with
//! rust-minidump's unwinder and names frames only from symbols whose id matches the module
//! ([`symbols`]). The journal half joins what the boot wrote before it died.

pub mod dump;
pub mod error;
pub mod model;
pub mod symbols;

pub use dump::analyze_dump;
pub use error::PostmortemError;
pub use model::{DumpAnalysis, FlatFrame, Trust};
pub use symbols::{BreakpadStores, Located, ModuleIds, SymbolSource};
