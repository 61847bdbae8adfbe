//! The byte budget: delete the oldest segments, except kept ones not yet drained.

use std::fs;
use std::io;
use std::path::Path;

use dispatch_journal::SegmentName;

/// A segment file found in the directory.
pub(crate) struct Found {
    pub(crate) name: SegmentName,
    pub(crate) bytes: u64,
}

/// Segment files of `service` in `dir`, oldest (lowest number) first.
pub(crate) fn list_segments(dir: &Path, service: &str) -> io::Result<Vec<Found>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().and_then(SegmentName::parse) else { continue };
        if name.service != service {
            continue;
        }
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.push(Found { name, bytes });
    }
    out.sort_by_key(|f| f.name.segment);
    Ok(out)
}

/// Deletes the oldest segments until the total is within `budget_bytes`. Never deletes the
/// `current` segment, nor a segment with a `.keep` marker and no `.drained` marker.
pub(crate) fn enforce_budget(
    dir: &Path,
    service: &str,
    budget_bytes: u64,
    current: Option<u64>,
) -> io::Result<u64> {
    let segments = list_segments(dir, service)?;
    let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
    let mut deleted = 0;
    for seg in &segments {
        if total <= budget_bytes {
            break;
        }
        if Some(seg.name.segment) == current {
            continue;
        }
        let kept = dir.join(seg.name.keep_marker()).exists();
        let drained = dir.join(seg.name.drained_marker()).exists();
        if kept && !drained {
            continue;
        }
        match fs::remove_file(dir.join(seg.name.file_name())) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let _ = fs::remove_file(dir.join(seg.name.keep_marker()));
        let _ = fs::remove_file(dir.join(seg.name.drained_marker()));
        total = total.saturating_sub(seg.bytes);
        deleted += 1;
    }
    Ok(deleted)
}
