//! Segment file naming and the marker files that the writer and the collector share.
//!
//! A journal directory holds `<service>.<segment:06>.ndjson` files. Segment numbers only grow
//! within a directory, across boots. Beside a segment may stand two empty marker files:
//!
//! - `<segment file>.keep`: written by whoever appends a `crash`, `panic` or `exit` record to
//!   the segment. The writer's byte budget never deletes a kept segment...
//! - `<segment file>.drained`: ...until the collector has written this one, which it does once
//!   the segment is closed (a later segment exists) and every byte of it is committed.

use std::fmt;

/// File extension of a segment.
pub const SEGMENT_EXTENSION: &str = "ndjson";
/// Suffix of the marker that keeps a segment past the byte budget.
pub const KEEP_MARKER_SUFFIX: &str = ".keep";
/// Suffix of the marker the collector writes when a closed segment is fully drained.
pub const DRAINED_MARKER_SUFFIX: &str = ".drained";

/// A segment's file name, parsed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    /// Service name, the part before the number.
    pub service: String,
    /// Segment number.
    pub segment: u64,
}

impl SegmentName {
    /// A segment name.
    pub fn new(service: impl Into<String>, segment: u64) -> Self {
        SegmentName { service: service.into(), segment }
    }

    /// Parses `<service>.<digits>.ndjson` (six or more digits). Anything else is `None`.
    pub fn parse(file_name: &str) -> Option<Self> {
        let stem = file_name.strip_suffix(SEGMENT_EXTENSION)?.strip_suffix('.')?;
        let (service, digits) = stem.rsplit_once('.')?;
        if service.is_empty() || digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(SegmentName { service: service.to_string(), segment: digits.parse().ok()? })
    }

    /// The file name, `<service>.<segment:06>.ndjson`.
    pub fn file_name(&self) -> String {
        self.to_string()
    }

    /// Name of this segment's keep marker.
    pub fn keep_marker(&self) -> String {
        format!("{self}{KEEP_MARKER_SUFFIX}")
    }

    /// Name of this segment's drained marker.
    pub fn drained_marker(&self) -> String {
        format!("{self}{DRAINED_MARKER_SUFFIX}")
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}.{SEGMENT_EXTENSION}", self.service, self.segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = SegmentName::new("dispatch", 123);
        assert_eq!(n.file_name(), "dispatch.000123.ndjson");
        assert_eq!(SegmentName::parse("dispatch.000123.ndjson"), Some(n.clone()));
        assert_eq!(n.keep_marker(), "dispatch.000123.ndjson.keep");
        assert_eq!(n.drained_marker(), "dispatch.000123.ndjson.drained");
        let big = SegmentName::new("my.svc", 12_345_678);
        assert_eq!(SegmentName::parse(&big.file_name()), Some(big));
    }

    #[test]
    fn rejects_other_files() {
        for name in [
            "dispatch.000123.ndjson.keep",
            "dispatch.123.ndjson",
            ".000123.ndjson",
            "dispatch.00012x.ndjson",
            "dispatch.000123.json",
            "traces.db",
        ] {
            assert_eq!(SegmentName::parse(name), None, "{name}");
        }
    }
}
