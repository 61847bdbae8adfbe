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

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(dir: &Path, n: u64, bytes: usize) {
        fs::write(dir.join(SegmentName::new("s", n).file_name()), vec![b'x'; bytes]).unwrap();
    }
    fn present(dir: &Path) -> Vec<u64> {
        list_segments(dir, "s").unwrap().iter().map(|f| f.name.segment).collect()
    }

    #[test]
    fn deletes_oldest_first_but_keeps_undrained_crash_segments() {
        let d = tempfile::tempdir().unwrap();
        for n in 0..10 {
            seg(d.path(), n, 1000);
        }
        fs::write(d.path().join("other.000000.ndjson"), vec![b'x'; 50_000]).unwrap();
        fs::write(d.path().join(SegmentName::new("s", 2).keep_marker()), b"").unwrap();
        let deleted = enforce_budget(d.path(), "s", 3000, Some(9)).unwrap();
        assert_eq!(deleted, 7);
        assert_eq!(present(d.path()), vec![2, 8, 9], "kept segment 2 survives the budget");
        assert!(
            d.path().join("other.000000.ndjson").exists(),
            "another service's files are not ours"
        );
        // Once the collector marks it drained, the budget may take it, with its markers.
        let s2 = SegmentName::new("s", 2);
        fs::write(d.path().join(s2.drained_marker()), b"").unwrap();
        enforce_budget(d.path(), "s", 2000, Some(9)).unwrap();
        assert_eq!(present(d.path()), vec![8, 9]);
        assert!(!d.path().join(s2.keep_marker()).exists());
        assert!(!d.path().join(s2.drained_marker()).exists());
    }

    #[test]
    fn never_deletes_the_current_segment() {
        let d = tempfile::tempdir().unwrap();
        seg(d.path(), 0, 10_000);
        assert_eq!(enforce_budget(d.path(), "s", 100, Some(0)).unwrap(), 0);
        assert_eq!(present(d.path()), vec![0]);
    }
}
