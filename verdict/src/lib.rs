//! The reader side of Dispatch's memory telemetry: from a traces database to the verdict
//! on-call acts on.
//!
//! - [`report`]: one boot's window read from the database and analysed ([`report::reports`]).
//! - [`analysis`]: leak, working set, flat or insufficient data, with the evidence and what the
//!   data could have missed.
//! - [`stats`]: the robust statistics the analysis rests on (Theil-Sen, Mann-Kendall, OLS).
//! - [`history`]: every boot's end (signal, status, OOM, unknown) and the crash loops.
//! - [`chart`]: memory against turns in flight, for a terminal and as SVG.
//! - [`page`]: the verdict as a page people read (`dispatchctl mem --html`, `/ui`).
//! - [`output`]: byte units, times and spans, as every report prints them.
//!
//! `dispatchctl mem` and `dispatchctl postmortem` print it; the server's `/ui` page shows the
//! same verdict from the same code. The crate reads only: it links neither the journal writer
//! nor jemalloc.

pub mod analysis;
pub mod chart;
pub mod history;
pub mod output;
pub mod page;
pub mod report;
pub mod stats;
