#![doc = include_str!("../../../docs/JOURNAL.md")]
//!
//! # This crate
//!
//! `dispatch-journal` owns the journal's wire format and nothing else: record types,
//! [`SCHEMA_VERSION`], [`encode`]/[`decode_line`], segment naming ([`segment`]) and the
//! `DISPATCH_*` variable names writers and readers share ([`env`](mod@env)), and the symbol
//! store's layout and debug ids ([`symbols`]), which the server writes and `dispatchctl`
//! reads. It does no I/O beyond
//! `Read`/`Write`, has no async code and links no native library, so readers (the collector,
//! `dispatchctl`) never link the writer.
//!
//! ```
//! use dispatch_journal::{decode_line, encode, Decoded, Envelope, Record, Timestamp};
//! use dispatch_journal::record::MemorySample;
//!
//! let envelope = Envelope {
//!     v: 1,
//!     ts: Timestamp::parse_rfc3339("2026-06-28T00:12:02.123Z").unwrap(),
//!     boot: "6f1c2d9e-8a41-4b7e-9a55-0c1e2f3a4b5c".into(),
//!     seq: 42,
//!     service: "dispatch".into(),
//!     truncated: false,
//! };
//! let sample = Record::MemorySample(MemorySample { rss: Some(88_080_384), ..Default::default() });
//! let line = encode(&envelope, &sample).unwrap();
//! assert_eq!(
//!     std::str::from_utf8(&line).unwrap(),
//!     "{\"v\":1,\"ts\":\"2026-06-28T00:12:02.123Z\",\"kind\":\"memory.sample\",\
//!      \"boot\":\"6f1c2d9e-8a41-4b7e-9a55-0c1e2f3a4b5c\",\"seq\":42,\"service\":\"dispatch\",\
//!      \"rss\":88080384}\n"
//! );
//! match decode_line(1, &line).unwrap() {
//!     Decoded::Record(l) => assert_eq!(l.record, sample),
//!     other => panic!("expected a record, got {other:?}"),
//! }
//! ```

pub mod codec;
pub mod env;
pub mod paths;
pub mod record;
pub mod segment;
pub mod symbols;
pub mod time;

pub use codec::{
    DecodeError, Decoded, EncodeError, Envelope, Line, MAX_LINE_BYTES, PendingLine, Reason,
    SCHEMA_VERSION, decode_line, encode,
};
pub use record::{KINDS, Record};
pub use segment::SegmentName;
pub use time::Timestamp;

#[cfg(test)]
mod tests;
