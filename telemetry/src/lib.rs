//! Telemetry that outlives the failure it reports, for any tokio (or plain std) service.
//!
//! `dispatch-telemetry` owns the parts that run inside the observed process:
//!
//! - [`journal`]: the crash-durable journal writer. Lines reach the segment file in `seq`
//!   order with one `write(2)` each; a caller never waits longer than a bound; drops are
//!   counted and reported, never silent; segments rotate by size and are kept within a byte
//!   budget (segments with crash, panic or exit records are kept until drained).
//! - [`memory`]: the memory sampler, on its own OS thread so a stuck runtime is still
//!   sampled: `/proc/self/statm` and `status`, cgroup v2 memory files, jemalloc statistics
//!   (feature `jemalloc`) and the host's load gauges, one `memory.sample` record per tick.
//!
//! It does not own the wire format ([`dispatch_journal`]) nor reading the journal back (the
//! collector). It links no SQLite and no web framework.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use dispatch_telemetry::journal::JournalBuilder;
//! use dispatch_telemetry::memory::{LoadSource, SamplerBuilder};
//! use dispatch_journal::record::Load;
//!
//! struct Gauges;
//! impl LoadSource for Gauges {
//!     fn load(&self) -> Load {
//!         Load { turns_in_flight: Some(0), ..Load::default() }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let journal = JournalBuilder::new("./var/journal").service("my-service").with_env()?.open()?;
//! let sampler = SamplerBuilder::new().load_source(Arc::new(Gauges)).with_env()?.start(journal.clone())?;
//! // ... serve ...
//! sampler.stop();
//! journal.flush(Duration::from_secs(1));
//! # Ok(())
//! # }
//! ```

pub mod build_id;
pub mod config;
#[cfg(feature = "crash")]
pub mod crash;
pub mod journal;
pub mod memory;
pub mod sys;

pub use config::ConfigError;
