//! `dispatchctl journal audit`: what a journal directory holds, per boot, read from the files
//! themselves (not the traces database), and everything in it that is not as the writer
//! promises: sequence gaps, duplicated lines, torn and corrupt lines, records the writer
//! dropped, kinds this build does not know, and boots with no memory samples (telemetry lost:
//! the incident where a branch reverted the sampler went unnoticed for weeks).
//!
//! Seq numbers run from 0 per boot, +1 per line, so a gap is a line that never reached the
//! file (a kill between the write and the sync, or a deleted segment) and a repeat is a line
//! written twice. A last line with no newline is torn: the process died mid-write.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use dispatch_journal::codec::{Decoded, decode_line};
use dispatch_journal::{Record, SegmentName};
use serde::Serialize;

use crate::error::Error;
use crate::output::{self, Outcome};

/// Bad lines listed by file and line; the rest are counted.
const MAX_BAD_LINES_LISTED: usize = 50;

/// One boot as its lines describe it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BootAudit {
    /// Boot id.
    pub boot: String,
    /// Service name of its lines.
    pub service: String,
    /// First and last record time, Unix ms.
    pub first_ts_ms: i64,
    /// Last record time, Unix ms.
    pub last_ts_ms: i64,
    /// Lowest and highest seq seen.
    pub first_seq: u64,
    /// Highest seq seen.
    pub last_seq: u64,
    /// Lines of this boot that decoded (known kinds, unknown kinds and newer versions).
    pub records: u64,
    /// `memory.sample` records.
    pub samples: u64,
    /// Missing seq ranges between the first and last seq, inclusive.
    pub gaps: Vec<(u64, u64)>,
    /// Seqs missing in all.
    pub missing: u64,
    /// Lines whose seq was already seen.
    pub duplicates: u64,
    /// Lines the writer dropped (sum of its `journal.dropped` records).
    pub dropped: u64,
    /// Kinds this build does not know, with their counts.
    pub unknown_kinds: BTreeMap<String, u64>,
    /// Whether the boot wrote `process.stop` (a clean or pressure stop).
    pub stopped: bool,
    /// Whether an `exit` record was written for it (by its crash monitor).
    pub exit_recorded: bool,
    /// True when the boot has records but not one memory sample.
    pub no_samples: bool,
    #[serde(skip)]
    seqs: Vec<u64>,
}

/// A line that did not decode.
#[derive(Debug, Clone, Serialize)]
pub struct BadLine {
    /// The segment file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: u64,
    /// Stable code (`journal_line_invalid`, ..., or `journal_line_torn`).
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

/// The whole audit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    /// The directory read.
    pub dir: PathBuf,
    /// Segment files read.
    pub segments: usize,
    /// Lines read (decoded or not).
    pub lines: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Per boot, in order of first appearance.
    pub boots: Vec<BootAudit>,
    /// Torn lines (the last line of a segment without its newline).
    pub torn: u64,
    /// Lines that are not valid journal lines (torn ones excluded).
    pub corrupt: u64,
    /// Lines of a newer schema version than this build reads.
    pub too_new: u64,
    /// The first 50 bad lines (`MAX_BAD_LINES_LISTED`).
    pub bad_lines: Vec<BadLine>,
    /// Nothing found: no gaps, repeats, torn or corrupt lines, drops, and every boot sampled.
    pub ok: bool,
}

/// Reads every segment of `dir`, in segment order.
///
/// # Errors
/// [`Error::Io`] when the directory or a segment cannot be read.
pub fn audit(dir: &Path) -> Result<Audit, Error> {
    let mut names: Vec<(SegmentName, PathBuf)> = std::fs::read_dir(dir)
        .map_err(Error::io(dir, "reading the journal directory"))?
        .filter_map(|e| {
            let e = e.ok()?;
            let name = SegmentName::parse(e.file_name().to_str()?)?;
            Some((name, e.path()))
        })
        .collect();
    names.sort_by(|a, b| a.0.segment.cmp(&b.0.segment).then(a.0.service.cmp(&b.0.service)));
    let mut audit = Audit { dir: dir.to_path_buf(), segments: names.len(), ..Audit::default() };
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for (_, path) in &names {
        let bytes = std::fs::read(path).map_err(Error::io(path, "reading the segment"))?;
        audit.bytes += bytes.len() as u64;
        let mut line_no = 0u64;
        let mut rest: &[u8] = &bytes;
        while !rest.is_empty() {
            line_no += 1;
            let (line, complete, next) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], true, &rest[i + 1..]),
                None => (rest, false, &rest[rest.len()..]),
            };
            rest = next;
            audit.lines += 1;
            let decoded = decode_line(line_no, line);
            let bad = |audit: &mut Audit, code: &'static str, message: String| {
                if audit.bad_lines.len() < MAX_BAD_LINES_LISTED {
                    audit.bad_lines.push(BadLine {
                        file: path.clone(),
                        line: line_no,
                        code,
                        message,
                    });
                }
            };
            let (envelope, record, unknown) = match decoded {
                Ok(Decoded::Record(l)) => (l.envelope, Some(l.record), None),
                Ok(Decoded::UnknownKind { envelope, kind }) => (envelope, None, Some(kind)),
                Ok(Decoded::TooNew { v }) => {
                    audit.too_new += 1;
                    bad(
                        &mut audit,
                        "journal_line_too_new",
                        format!("schema version {v}, newer than this build reads"),
                    );
                    continue;
                }
                Err(e) if !complete => {
                    audit.torn += 1;
                    bad(
                        &mut audit,
                        "journal_line_torn",
                        format!(
                            "the last line has no newline ({}): cut by a kill mid-write",
                            e.reason
                        ),
                    );
                    continue;
                }
                Err(e) => {
                    audit.corrupt += 1;
                    bad(&mut audit, e.code(), e.reason.to_string());
                    continue;
                }
            };
            let i = *index.entry(envelope.boot.clone()).or_insert_with(|| {
                audit.boots.push(BootAudit {
                    boot: envelope.boot.clone(),
                    service: envelope.service.clone(),
                    first_ts_ms: i64::MAX,
                    last_ts_ms: i64::MIN,
                    ..BootAudit::default()
                });
                audit.boots.len() - 1
            });
            let b = &mut audit.boots[i];
            b.records += 1;
            let ts = envelope.ts.unix_millis();
            b.first_ts_ms = b.first_ts_ms.min(ts);
            b.last_ts_ms = b.last_ts_ms.max(ts);
            b.seqs.push(envelope.seq);
            if let Some(kind) = unknown {
                *b.unknown_kinds.entry(kind).or_default() += 1;
            }
            match record {
                Some(Record::MemorySample(_)) => b.samples += 1,
                Some(Record::JournalDropped(d)) => b.dropped += d.count,
                Some(Record::ProcessStop(_)) => b.stopped = true,
                Some(Record::Exit(_)) => b.exit_recorded = true,
                _ => {}
            }
        }
    }
    for b in &mut audit.boots {
        let mut seqs = std::mem::take(&mut b.seqs);
        seqs.sort_unstable();
        b.first_seq = seqs.first().copied().unwrap_or(0);
        b.last_seq = seqs.last().copied().unwrap_or(0);
        for w in seqs.windows(2) {
            if w[1] == w[0] {
                b.duplicates += 1;
            } else if w[1] > w[0] + 1 {
                b.gaps.push((w[0] + 1, w[1] - 1));
                b.missing += w[1] - w[0] - 1;
            }
        }
        // A boot's seq starts at 0: lines before the first one seen are missing too (a deleted
        // or lost first segment).
        if b.first_seq > 0 {
            b.gaps.insert(0, (0, b.first_seq - 1));
            b.missing += b.first_seq;
        }
        b.no_samples = b.samples == 0;
    }
    audit.ok = audit.torn == 0
        && audit.corrupt == 0
        && audit
            .boots
            .iter()
            .all(|b| b.missing == 0 && b.duplicates == 0 && b.dropped == 0 && !b.no_samples);
    Ok(audit)
}

/// Runs `dispatchctl journal audit`: exit 0 when nothing was found, 1 when something was.
///
/// # Errors
/// As [`audit`]; [`Error::Output`].
pub fn run(dir: &Path, json: bool, out: &mut dyn Write) -> Result<Outcome, Error> {
    let a = audit(dir)?;
    if json {
        let mut v = serde_json::to_value(&a).unwrap_or_default();
        v["v"] = serde_json::json!(1);
        v["kind"] = serde_json::json!("journal.audit");
        serde_json::to_writer_pretty(&mut *out, &v).map_err(|e| Error::Output(e.into()))?;
        writeln!(out).map_err(Error::Output)?;
    } else {
        render(&a, out).map_err(Error::Output)?;
    }
    Ok(if a.ok { Outcome::Clean } else { Outcome::SkippedInput })
}

fn render(a: &Audit, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "journal {}: {} segment{}, {} lines, {}",
        a.dir.display(),
        a.segments,
        if a.segments == 1 { "" } else { "s" },
        a.lines,
        output::bytes(a.bytes as f64)
    )?;
    for b in &a.boots {
        writeln!(out)?;
        writeln!(
            out,
            "boot {}  {} .. {}  seq {}..{}  {} records, {} memory samples{}",
            b.boot.get(..8).unwrap_or(&b.boot),
            output::time(b.first_ts_ms),
            output::time(b.last_ts_ms),
            b.first_seq,
            b.last_seq,
            b.records,
            b.samples,
            match (b.stopped, b.exit_recorded) {
                (true, _) => ", stopped cleanly",
                (false, true) => ", ended abnormally (exit record)",
                (false, false) => "",
            }
        )?;
        if b.no_samples {
            writeln!(
                out,
                "  NO MEMORY SAMPLES: this boot's sampler never wrote (telemetry lost; was it built without it, or disabled?)"
            )?;
        }
        if b.missing > 0 {
            let shown: Vec<String> = b
                .gaps
                .iter()
                .take(5)
                .map(|(f, t)| if f == t { f.to_string() } else { format!("{f}..{t}") })
                .collect();
            writeln!(
                out,
                "  gaps: {} line{} missing (seq {}{})",
                b.missing,
                if b.missing == 1 { "" } else { "s" },
                shown.join(", "),
                if b.gaps.len() > 5 {
                    format!(" and {} more ranges", b.gaps.len() - 5)
                } else {
                    String::new()
                }
            )?;
        }
        if b.duplicates > 0 {
            writeln!(
                out,
                "  duplicates: {} line{} repeat a seq already seen",
                b.duplicates,
                if b.duplicates == 1 { "" } else { "s" }
            )?;
        }
        if b.dropped > 0 {
            writeln!(
                out,
                "  dropped: {} lines the writer could not queue (journal.dropped)",
                b.dropped
            )?;
        }
        for (kind, n) in &b.unknown_kinds {
            writeln!(out, "  unknown kind {kind}: {n} lines (kept, not understood by this build)")?;
        }
    }
    if a.torn + a.corrupt + a.too_new > 0 {
        writeln!(out)?;
        writeln!(
            out,
            "bad lines: {} torn, {} corrupt, {} from a newer schema",
            a.torn, a.corrupt, a.too_new
        )?;
        for l in &a.bad_lines {
            writeln!(out, "  {}:{}: {}: {}", l.file.display(), l.line, l.code, l.message)?;
        }
        let listed = a.bad_lines.len() as u64;
        if a.torn + a.corrupt + a.too_new > listed {
            writeln!(
                out,
                "  ... {} more (--json lists the first {MAX_BAD_LINES_LISTED})",
                a.torn + a.corrupt + a.too_new - listed
            )?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "{}",
        if a.ok {
            "ok: no gaps, repeats, torn or corrupt lines, drops, and every boot has memory samples"
        } else {
            "problems found (exit 1): see above; runbooks/telemetry.md says what each means"
        }
    )
}
