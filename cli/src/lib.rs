//! `dispatchctl`: answers the on-call questions from the traces database.
//!
//! - `dispatchctl mem`: is memory growth a leak or the working set of active conversations,
//!   and which conversations hold it ([`analysis`]).
//! - `dispatchctl crashes [--boot ID]`, `dispatchctl crashes send`: every abnormal end across
//!   boots with its signature, crash loops, and dumps uploaded to Sentry ([`crashes`]).
//! - `dispatchctl heap start|dump|diff`: jemalloc heap profiles of a running server ([`heap`]).
//! - `dispatchctl postmortem`: why a boot died, from its minidump and its journal
//!   ([`postmortem`]).
//! - `dispatchctl symbols add|list|fetch`: the build-id symbol store post-mortems read, and
//!   debuginfod as its fleet-scale source ([`symbols`]).
//! - `dispatchctl journal synth`: synthetic journals with a known verdict ([`synth`]).
//! - `dispatchctl completions SHELL`, `dispatchctl man [--out DIR]`: shell completions and man
//!   pages from the clap definitions ([`manual`]).
//!
//! The crate links neither the journal writer nor jemalloc (CI checks it): it reads.

pub mod args;
pub mod audit;
pub mod crashes;
pub mod doctor;
pub mod error;
pub mod heap;
pub mod manual;
pub mod mem;
pub mod output;
pub mod postmortem;
pub mod symbols;
/// Synthetic journals with a known verdict (`journal synth`): the `dispatch-synth` crate's scenarios.
pub use dispatch_synth::scenario as synth;

/// The verdict, its statistics and its charts: the `dispatch-verdict` crate, which the server's
/// `/ui` shares.
pub use dispatch_verdict::{analysis, chart, stats};
pub use error::Error;
