//! Helpers shared by the writer tests: read a journal directory back, strictly.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(dead_code)]

use std::path::Path;

use dispatch_journal::{Decoded, Line, SegmentName, decode_line};

/// Everything read back from a journal directory, in segment and file order.
pub struct ReadBack {
    /// Every complete line, decoded.
    pub lines: Vec<Line>,
    /// Bytes of a final line without '\n' (at most one, at the end of the last segment).
    pub torn_tail: Option<usize>,
    /// The segment files read, in order.
    pub segments: Vec<SegmentName>,
}

/// Reads every segment of `service` in `dir`. Panics (this is a test) on anything that is
/// not a complete, decodable line, except a partial last line of the last segment.
pub fn read_back(dir: &Path, service: &str) -> ReadBack {
    let mut names: Vec<SegmentName> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| SegmentName::parse(e.unwrap().file_name().to_str()?))
        .filter(|n| n.service == service)
        .collect();
    names.sort();
    let mut lines = Vec::new();
    let mut torn_tail = None;
    for (i, name) in names.iter().enumerate() {
        let data = std::fs::read(dir.join(name.file_name())).unwrap();
        let mut rest = &data[..];
        let mut n = 0u64;
        while !rest.is_empty() {
            n += 1;
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    match decode_line(n, &rest[..end]) {
                        Ok(Decoded::Record(l)) => lines.push(l),
                        other => panic!("{}:{n}: {other:?}", name.file_name()),
                    }
                    rest = &rest[end + 1..];
                }
                None => {
                    assert_eq!(i, names.len() - 1, "torn line in a closed segment {name}");
                    torn_tail = Some(rest.len());
                    rest = &[];
                }
            }
        }
    }
    ReadBack { lines, torn_tail, segments: names }
}
