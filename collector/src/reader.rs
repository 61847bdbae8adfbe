//! The reader side: finds segments by their header, reads complete lines from each segment's
//! checkpoint, decodes them and hands [`Batch`]es to the writer.
//!
//! The reader's view of every segment (offset, line, last seq) runs ahead of what is
//! committed; it is loaded from the database at start, so after a crash reading resumes at the
//! last committed checkpoint and nothing is read twice or skipped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};

use dispatch_journal::segment::DRAINED_MARKER_SUFFIX;
use dispatch_journal::{Decoded, MAX_LINE_BYTES, Record, SegmentName, decode_line};
use rusqlite::Connection;

use crate::CollectorError;
use crate::rows::{self, HeaderInfo};
use crate::schema::{SEQ_BITS, record_key};
use crate::store::{Batch, Checkpoint, IngestError, NewSegment, SegmentState};

/// Bytes read from a segment at a time.
const READ_CHUNK_BYTES: usize = 4 << 20;

/// How the reader runs.
#[derive(Debug, Clone)]
pub(crate) struct ReaderConfig {
    pub dir: PathBuf,
    pub batch_lines: usize,
    pub batch_interval: Duration,
    pub poll_interval: Duration,
    pub follow: bool,
}

#[derive(Debug, Clone)]
struct SegState {
    segment_id: i64,
    boot_no: i64,
    segment: u64,
    offset: u64,
    line_no: u64,
    last_seq: Option<u64>,
    state: SegmentState,
    file_name: String,
    size_bytes: u64,
    drained: bool,
}

/// What the reader knows; loaded from the database at start.
pub(crate) struct ReaderState {
    boots: HashMap<String, i64>,
    next_boot_no: i64,
    segments: HashMap<(i64, u64), SegState>,
    next_segment_id: i64,
    /// (dev, ino, name) -> identity (boot text, segment number, header seq, header).
    headers: HashMap<(u64, u64, String), Identity>,
    headerless_reported: HashSet<String>,
}

#[derive(Debug, Clone)]
struct Identity {
    boot: String,
    service: String,
    segment: u64,
    header_seq: u64,
    header: HeaderInfo,
}

impl ReaderState {
    /// Loads boots and segment checkpoints.
    pub(crate) fn load(conn: &Connection) -> rusqlite::Result<ReaderState> {
        let mut boots = HashMap::new();
        let mut next_boot_no = 1;
        {
            let mut stmt = conn.prepare("SELECT boot_no, boot FROM boots")?;
            let mut q = stmt.query([])?;
            while let Some(r) = q.next()? {
                let no: i64 = r.get(0)?;
                next_boot_no = next_boot_no.max(no + 1);
                boots.insert(r.get::<_, String>(1)?, no);
            }
        }
        let mut segments = HashMap::new();
        let mut next_segment_id = 1;
        {
            let mut stmt = conn.prepare(
                "SELECT segment_id, boot_no, segment, offset_bytes, line_no, last_seq, state,
                        file_name, coalesce(size_bytes, 0), drained_ts_ms IS NOT NULL
                 FROM segments",
            )?;
            let mut q = stmt.query([])?;
            while let Some(r) = q.next()? {
                let s = SegState {
                    segment_id: r.get(0)?,
                    boot_no: r.get(1)?,
                    segment: r.get::<_, i64>(2)? as u64,
                    offset: r.get::<_, i64>(3)? as u64,
                    line_no: r.get::<_, i64>(4)? as u64,
                    last_seq: r.get::<_, Option<i64>>(5)?.map(|s| s as u64),
                    state: SegmentState::parse(&r.get::<_, String>(6)?),
                    file_name: r.get(7)?,
                    size_bytes: r.get::<_, i64>(8)? as u64,
                    drained: r.get(9)?,
                };
                next_segment_id = next_segment_id.max(s.segment_id + 1);
                segments.insert((s.boot_no, s.segment), s);
            }
        }
        // Files already reported as having no header are not reported again.
        let mut headerless_reported = HashSet::new();
        {
            let mut stmt = conn.prepare(
                "SELECT DISTINCT file_name FROM ingest_errors WHERE code = 'segment_header_missing'",
            )?;
            let mut q = stmt.query([])?;
            while let Some(r) = q.next()? {
                headerless_reported.insert(r.get::<_, String>(0)?);
            }
        }
        Ok(ReaderState {
            boots,
            next_boot_no,
            segments,
            next_segment_id,
            headers: HashMap::new(),
            headerless_reported,
        })
    }
}

/// Progress of a drain, in bytes, for a progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes waiting to be read when the drain started (plus any that arrived since).
    pub total_bytes: AtomicU64,
    /// Bytes committed so far.
    pub done_bytes: AtomicU64,
}

/// A file in the journal directory that looks like a segment.
struct Entry {
    name: String,
    path: PathBuf,
    len: u64,
    /// Header identity, when the first line is complete and a header.
    identity: Option<Identity>,
    /// The number used to decide whether other segments are closed (`None`: no say).
    order: Option<u64>,
}

pub(crate) struct Reader<'a> {
    cfg: ReaderConfig,
    st: ReaderState,
    tx: SyncSender<Batch>,
    /// Committed batches coming back for reuse.
    used: Receiver<Batch>,
    stop: &'a AtomicBool,
    progress: &'a Progress,
    batch: Batch,
    batch_lines: usize,
    batch_started: Instant,
    /// Segment ids touched by the current batch.
    dirty: Vec<i64>,
    /// Per boot, the last key put in the current batch.
    last_key: Vec<(i64, i64)>,
    /// The boot of the previous line, and its number.
    last_boot: Option<(String, i64)>,
}

/// The writer is gone (it failed; its error is the one to report).
pub(crate) struct WriterGone;

impl<'a> Reader<'a> {
    pub(crate) fn new(
        cfg: ReaderConfig,
        st: ReaderState,
        tx: SyncSender<Batch>,
        used: Receiver<Batch>,
        stop: &'a AtomicBool,
        progress: &'a Progress,
    ) -> Self {
        let batch_lines = cfg.batch_lines;
        let mut r = Reader {
            cfg,
            st,
            tx,
            used,
            stop,
            progress,
            batch: Batch::default(),
            batch_lines: 0,
            batch_started: Instant::now(),
            dirty: Vec::new(),
            last_key: Vec::new(),
            last_boot: None,
        };
        r.batch = Batch::with_capacity(batch_lines);
        r
    }

    /// Runs until the journal is drained (one-shot) or `stop` is set (follow).
    /// Returns the reader thread's CPU time with its outcome.
    pub(crate) fn run(self) -> (Result<(), ReaderFailure>, Duration) {
        let cpu0 = crate::thread_cpu_ns();
        let r = self.run_inner();
        (r, Duration::from_nanos(crate::thread_cpu_ns().saturating_sub(cpu0)))
    }

    fn run_inner(mut self) -> Result<(), ReaderFailure> {
        let mut first = true;
        loop {
            let entries = self.scan(first)?;
            first = false;
            self.pass(&entries)?;
            self.flush().map_err(|WriterGone| ReaderFailure::WriterGone)?;
            if !self.cfg.follow || self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let deadline = Instant::now() + self.cfg.poll_interval;
            while Instant::now() < deadline {
                if self.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(10).min(self.cfg.poll_interval));
            }
        }
    }

    /// Lists the directory and reads the header of every segment file.
    fn scan(&mut self, first: bool) -> Result<Vec<Entry>, ReaderFailure> {
        let dir = &self.cfg.dir;
        let rd = std::fs::read_dir(dir).map_err(|e| {
            ReaderFailure::Error(CollectorError::io(dir, "listing the journal directory")(e))
        })?;
        let mut entries = Vec::new();
        for de in rd {
            let Ok(de) = de else { continue };
            let Ok(name) = de.file_name().into_string() else { continue };
            let Some(parsed) = SegmentName::parse(&name) else { continue };
            let path = de.path();
            // A symlink (or anything but a regular file) is never followed: a journal directory
            // that someone else can write to must not make the collector read other files.
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if !meta.file_type().is_file() {
                continue;
            }
            let key = (meta.dev(), meta.ino(), name.clone());
            let identity = match self.st.headers.get(&key) {
                Some(id) => Some(id.clone()),
                None => match read_header(&path) {
                    HeaderRead::Header(id) => {
                        self.st.headers.insert(key, id.clone());
                        Some(id)
                    }
                    HeaderRead::NotYet => None,
                    HeaderRead::Missing { bytes, reason, code } => {
                        if self.st.headerless_reported.insert(name.clone()) {
                            self.report_headerless(&name, bytes, code, reason);
                        }
                        None
                    }
                },
            };
            // A file whose first line is not a header has no say in which segments are closed:
            // a stray file must not make the live segment's partial line look torn.
            let order = match &identity {
                Some(i) => Some(i.segment),
                None if self.st.headerless_reported.contains(&name) => None,
                None => Some(parsed.segment), // header not written yet: a new segment
            };
            entries.push(Entry { name, path, len: meta.len(), identity, order });
        }
        entries.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
        if first {
            let mut pending = 0u64;
            for e in &entries {
                if let Some(id) = &e.identity {
                    let offset = self
                        .st
                        .boots
                        .get(&id.boot)
                        .and_then(|b| self.st.segments.get(&(*b, id.segment)))
                        .map_or(0, |s| s.offset);
                    pending += e.len.saturating_sub(offset);
                }
            }
            self.progress.total_bytes.store(pending, Ordering::Relaxed);
        }
        Ok(entries)
    }

    fn report_headerless(
        &mut self,
        name: &str,
        bytes: Vec<u8>,
        code: &'static str,
        reason: String,
    ) {
        self.batch.errors.push(IngestError {
            segment_id: None,
            file_name: name.to_string(),
            offset_bytes: 0,
            line_no: Some(1),
            length_bytes: bytes.len() as u64,
            code,
            reason,
            bytes,
        });
    }

    /// One pass over the directory: every segment read to its end.
    fn pass(&mut self, entries: &[Entry]) -> Result<(), ReaderFailure> {
        // Group files by identity; a copy of a segment under another name is the same segment.
        let mut by_identity: BTreeMap<(u64, String), Vec<&Entry>> = BTreeMap::new();
        for e in entries {
            if let Some(id) = &e.identity {
                by_identity.entry((id.segment, id.boot.clone())).or_default().push(e);
            }
        }
        let max_order = entries.iter().filter_map(|e| e.order).max().unwrap_or(0);
        for ((segment, _), files) in by_identity {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let identity = files[0].identity.clone().expect("grouped entries have an identity");
            let recorded = self
                .st
                .boots
                .get(&identity.boot)
                .and_then(|b| self.st.segments.get(&(*b, segment)))
                .map(|s| s.file_name.clone());
            // The file we read: the one the checkpoint names if it is still there, else the
            // longest; the others are copies and are skipped.
            let file = files
                .iter()
                .find(|f| Some(&f.name) == recorded.as_ref())
                .or_else(|| files.iter().max_by_key(|f| f.len))
                .expect("a group has at least one file");
            let closed = max_order > segment;
            self.drain_segment(&identity, file, closed)?;
        }
        Ok(())
    }

    fn boot_no(&mut self, boot: &str, service: &str) -> i64 {
        if let Some((b, no)) = &self.last_boot
            && b == boot
        {
            return *no;
        }
        if let Some(&no) = self.st.boots.get(boot) {
            self.last_boot = Some((boot.to_string(), no));
            return no;
        }
        let no = self.st.next_boot_no;
        self.st.next_boot_no += 1;
        self.st.boots.insert(boot.to_string(), no);
        self.batch.new_boots.push((no, boot.to_string(), service.to_string()));
        no
    }

    fn drain_segment(
        &mut self,
        id: &Identity,
        file: &Entry,
        closed: bool,
    ) -> Result<(), ReaderFailure> {
        let boot_no = self.boot_no(&id.boot, &id.service);
        let key = (boot_no, id.segment);
        if !self.st.segments.contains_key(&key) {
            let segment_id = self.st.next_segment_id;
            self.st.next_segment_id += 1;
            self.batch.new_segments.push(NewSegment {
                segment_id,
                boot_no,
                service: id.service.clone(),
                file_name: file.name.clone(),
                header_seq: id.header_seq,
                header: id.header.clone(),
            });
            self.st.segments.insert(
                key,
                SegState {
                    segment_id,
                    boot_no,
                    segment: id.segment,
                    offset: 0,
                    line_no: 0,
                    last_seq: None,
                    state: SegmentState::Open,
                    file_name: file.name.clone(),
                    size_bytes: 0,
                    drained: false,
                },
            );
        }
        let mut seg = self.st.segments.get(&key).cloned().expect("inserted above");
        if seg.state == SegmentState::Truncated {
            return Ok(());
        }
        if seg.file_name != file.name {
            seg.file_name = file.name.clone();
            self.touch(&seg);
        }
        // Length now: a closed segment does not grow, so this is its end.
        let len = match std::fs::metadata(&file.path) {
            Ok(m) => m.len(),
            Err(_) => return Ok(()), // deleted since the scan: nothing to read
        };
        if len < seg.offset {
            self.batch.errors.push(IngestError {
                segment_id: Some(seg.segment_id),
                file_name: file.name.clone(),
                offset_bytes: len,
                line_no: None,
                length_bytes: seg.offset - len,
                code: "segment_truncated",
                reason: format!(
                    "file is {len} bytes, shorter than its checkpoint at byte {}: truncated or \
                     replaced after it was read; not read again",
                    seg.offset
                ),
                bytes: Vec::new(),
            });
            seg.state = SegmentState::Truncated;
            seg.size_bytes = len;
            self.touch(&seg);
            self.st.segments.insert(key, seg);
            return Ok(());
        }
        if len > seg.offset {
            self.read_lines(&mut seg, file, len, closed)?;
        }
        if closed && seg.offset == len {
            let mut changed = false;
            if seg.state != SegmentState::Closed {
                seg.state = SegmentState::Closed;
                changed = true;
            }
            let marker = marker_path(&file.path);
            if !seg.drained || !marker.exists() {
                seg.drained = true;
                self.batch.markers.push(marker);
                changed = true;
            }
            if changed {
                seg.size_bytes = len;
                self.touch(&seg);
            }
        }
        self.st.segments.insert(key, seg);
        Ok(())
    }

    /// Marks `seg` as part of the current batch's checkpoints.
    fn touch(&mut self, seg: &SegState) {
        let key = (seg.boot_no, seg.segment);
        self.st.segments.insert(key, seg.clone());
        if !self.dirty.contains(&seg.segment_id) {
            self.dirty.push(seg.segment_id);
        }
    }

    fn read_lines(
        &mut self,
        seg: &mut SegState,
        file: &Entry,
        len: u64,
        closed: bool,
    ) -> Result<(), ReaderFailure> {
        let mut f = match open_no_follow(&file.path) {
            Ok(f) => f,
            Err(_) => return Ok(()),
        };
        if f.seek(SeekFrom::Start(seg.offset)).is_err() {
            return Ok(());
        }
        let mut buf: Vec<u8> =
            Vec::with_capacity(READ_CHUNK_BYTES.min((len - seg.offset) as usize + 1));
        let mut at = seg.offset; // file offset of buf[0]
        let mut remaining = len - seg.offset;
        // Bytes of an over-long line being skipped: (start offset, length so far, first bytes).
        let mut overlong: Option<(u64, u64, Vec<u8>)> = None;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let want = (READ_CHUNK_BYTES as u64).min(remaining) as usize;
            if want == 0 {
                break;
            }
            let old = buf.len();
            buf.resize(old + want, 0);
            let n = match f.read(&mut buf[old..]) {
                Ok(n) => n,
                Err(_) => {
                    buf.truncate(old);
                    break;
                }
            };
            buf.truncate(old + n);
            if n == 0 {
                break;
            }
            remaining -= n as u64;
            let mut start = 0usize;
            while let Some(nl) = find_newline(&buf[start..]) {
                let end = start + nl + 1;
                if let Some((o, l, head)) = overlong.take() {
                    let total = l + end as u64;
                    self.quarantine_overlong(seg, &file.name, o, total, head);
                } else {
                    self.line(seg, &file.name, at + start as u64, &buf[start..end])?;
                }
                start = end;
            }
            buf.drain(..start);
            at += start as u64;
            if buf.len() > MAX_LINE_BYTES {
                // An over-long line: remember its start and first bytes, drop the rest.
                let entry = overlong.get_or_insert_with(|| (at, 0, buf[..4096].to_vec()));
                entry.1 += buf.len() as u64;
                at += buf.len() as u64;
                buf.clear();
            }
        }
        let tail = overlong.as_ref().map_or(0, |o| o.1) + buf.len() as u64;
        if closed && tail > 0 && remaining == 0 {
            // The partial last line of a segment with a successor can never complete.
            let start = overlong.as_ref().map_or(at, |o| o.0);
            let mut head = overlong.map(|o| o.2).unwrap_or_default();
            head.extend_from_slice(&buf[..buf.len().min(MAX_LINE_BYTES)]);
            seg.line_no += 1;
            self.batch.errors.push(IngestError {
                segment_id: Some(seg.segment_id),
                file_name: file.name.clone(),
                offset_bytes: start,
                line_no: Some(seg.line_no),
                length_bytes: tail,
                code: "journal_line_torn",
                reason: format!(
                    "last line has no newline ({tail} bytes) and a later segment exists: torn by \
                     a crash, its seq stays a gap"
                ),
                bytes: head,
            });
            seg.offset = start + tail;
            self.batch.counts.lines += 1;
            self.batch.counts.bytes += tail;
            self.batch_lines += 1;
            self.touch(seg);
        }
        Ok(())
    }

    fn quarantine_overlong(
        &mut self,
        seg: &mut SegState,
        name: &str,
        offset: u64,
        len: u64,
        head: Vec<u8>,
    ) {
        seg.line_no += 1;
        self.batch.errors.push(IngestError {
            segment_id: Some(seg.segment_id),
            file_name: name.to_string(),
            offset_bytes: offset,
            line_no: Some(seg.line_no),
            length_bytes: len,
            code: "journal_line_too_long",
            reason: format!("line is {len} bytes, over the {MAX_LINE_BYTES} byte limit"),
            bytes: head,
        });
        seg.offset = offset + len;
        self.batch.counts.lines += 1;
        self.batch.counts.bytes += len;
        self.batch_lines += 1;
        self.touch(seg);
    }

    /// One complete line (with its `\n`) at file offset `offset`.
    fn line(
        &mut self,
        seg: &mut SegState,
        name: &str,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), ReaderFailure> {
        seg.line_no += 1;
        let line_no = seg.line_no;
        let body = &bytes[..bytes.len() - 1];
        let fast = crate::fastline::decode(body);
        let decoded = match fast {
            Some(f) => {
                self.record(
                    seg,
                    name,
                    offset,
                    bytes,
                    line_no,
                    f.boot,
                    f.service,
                    f.seq,
                    f.ts.unix_millis(),
                    f.record,
                );
                None
            }
            None => Some(decode_line(line_no, body)),
        };
        match decoded {
            None => {}
            Some(Ok(Decoded::Record(line))) => {
                let env = line.envelope;
                self.record(
                    seg,
                    name,
                    offset,
                    bytes,
                    line_no,
                    &env.boot,
                    &env.service,
                    env.seq,
                    env.ts.unix_millis(),
                    line.record,
                );
            }
            Some(Ok(Decoded::UnknownKind { envelope, kind })) => {
                let boot_no = self.boot_no(&envelope.boot, &envelope.service);
                match record_key(boot_no, envelope.seq) {
                    Some(key) => {
                        self.note_key(boot_no, key);
                        let ts = envelope.ts.unix_millis();
                        self.batch.rows[rows::T_EVENTS]
                            .push(rows::unknown_kind_row(key, ts, kind, body));
                        self.batch.counts.unknown_kinds += 1;
                        seg.last_seq = Some(envelope.seq);
                    }
                    None => self.quarantine(
                        seg,
                        name,
                        offset,
                        bytes,
                        "journal_seq_out_of_range",
                        format!("seq {} is over the largest storable seq", envelope.seq),
                    ),
                }
            }
            Some(Ok(Decoded::TooNew { .. })) => self.batch.counts.too_new += 1,
            Some(Err(e)) => {
                self.quarantine(seg, name, offset, bytes, e.code(), e.reason.to_string())
            }
        }
        seg.offset = offset + bytes.len() as u64;
        self.batch.counts.lines += 1;
        self.batch.counts.bytes += bytes.len() as u64;
        self.batch_lines += 1;
        if !self.dirty.contains(&seg.segment_id) {
            self.dirty.push(seg.segment_id);
        }
        if self.batch_lines >= self.cfg.batch_lines
            || (self.batch_lines.is_multiple_of(256)
                && self.batch_started.elapsed() >= self.cfg.batch_interval)
        {
            self.st.segments.insert((seg.boot_no, seg.segment), seg.clone());
            self.flush().map_err(|WriterGone| ReaderFailure::WriterGone)?;
        }
        Ok(())
    }

    /// A decoded record of a known kind.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        seg: &mut SegState,
        name: &str,
        offset: u64,
        bytes: &[u8],
        line_no: u64,
        boot: &str,
        service: &str,
        seq: u64,
        ts: i64,
        record: Record,
    ) {
        let boot_no = self.boot_no(boot, service);
        let Some(key) = record_key(boot_no, seq) else {
            let reason = format!("seq {seq} is over the largest storable seq");
            self.quarantine(seg, name, offset, bytes, "journal_seq_out_of_range", reason);
            return;
        };
        self.note_key(boot_no, key);
        match record {
            Record::SegmentHeader(_) if line_no == 1 => self.batch.header_lines.push((key, ts)),
            record => {
                let body = &bytes[..bytes.len() - 1];
                let (t, row, meta) = rows::to_row(key, ts, record, body);
                self.batch.rows[t].push(row);
                if let Some(m) = meta {
                    self.batch.boot_meta.push((boot_no, m));
                }
            }
        }
        seg.last_seq = Some(seq);
    }

    fn note_key(&mut self, boot_no: i64, key: i64) {
        debug_assert_eq!(key >> SEQ_BITS, boot_no);
        match self.last_key.iter_mut().find(|(b, _)| *b == boot_no) {
            Some((_, last)) => {
                if key <= *last {
                    self.batch.maybe_duplicate_in_batch = true;
                }
                *last = key;
            }
            None => self.last_key.push((boot_no, key)),
        }
    }

    fn quarantine(
        &mut self,
        seg: &SegState,
        name: &str,
        offset: u64,
        bytes: &[u8],
        code: &'static str,
        reason: String,
    ) {
        self.batch.errors.push(IngestError {
            segment_id: Some(seg.segment_id),
            file_name: name.to_string(),
            offset_bytes: offset,
            line_no: Some(seg.line_no),
            length_bytes: bytes.len() as u64,
            code,
            reason,
            bytes: bytes[..bytes.len().min(MAX_LINE_BYTES)].to_vec(),
        });
    }

    /// Sends the current batch (with the checkpoints of the segments it touched).
    fn flush(&mut self) -> Result<(), WriterGone> {
        for id in std::mem::take(&mut self.dirty) {
            if let Some(s) = self.st.segments.values().find(|s| s.segment_id == id) {
                self.batch.checkpoints.push(Checkpoint {
                    segment_id: s.segment_id,
                    offset_bytes: s.offset,
                    line_no: s.line_no,
                    last_seq: s.last_seq,
                    state: s.state,
                    size_bytes: s.size_bytes.max(s.offset),
                    file_name: s.file_name.clone(),
                    drained: s.drained,
                });
            }
        }
        let next = match self.used.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Batch::with_capacity(self.cfg.batch_lines),
        };
        let batch = std::mem::replace(&mut self.batch, next);
        self.batch_lines = 0;
        self.batch_started = Instant::now();
        self.last_key.clear();
        if batch.is_empty() {
            return Ok(());
        }
        self.tx.send(batch).map_err(|_| WriterGone)
    }
}

/// Why the reader stopped early.
pub(crate) enum ReaderFailure {
    /// The writer hung up (its error is the one to report).
    WriterGone,
    /// The reader itself failed.
    Error(CollectorError),
}

/// Position of the first `\n` (the reader scans every journal byte: memchr's SIMD search).
pub(crate) fn find_newline(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', b)
}

fn marker_path(segment: &Path) -> PathBuf {
    let mut s = segment.as_os_str().to_owned();
    s.push(DRAINED_MARKER_SUFFIX);
    PathBuf::from(s)
}

enum HeaderRead {
    Header(Identity),
    /// The first line is not complete yet (a writer just created the file).
    NotYet,
    Missing {
        bytes: Vec<u8>,
        code: &'static str,
        reason: String,
    },
}

/// Opens a segment for reading; a symlink at the path is refused (`O_NOFOLLOW`).
fn open_no_follow(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

fn read_header(path: &Path) -> HeaderRead {
    let Ok(f) = open_no_follow(path) else { return HeaderRead::NotYet };
    let mut buf = Vec::with_capacity(512);
    if f.take(MAX_LINE_BYTES as u64 + 1).read_to_end(&mut buf).is_err() {
        return HeaderRead::NotYet;
    }
    let Some(nl) = find_newline(&buf) else {
        if buf.len() > MAX_LINE_BYTES {
            buf.truncate(4096);
            return HeaderRead::Missing {
                bytes: buf,
                code: "segment_header_missing",
                reason: "first line is over the line limit, not a journal.segment header".into(),
            };
        }
        return HeaderRead::NotYet;
    };
    let line = &buf[..nl];
    match decode_line(1, line) {
        Ok(Decoded::Record(l)) => match l.record {
            Record::SegmentHeader(h) => HeaderRead::Header(Identity {
                boot: l.envelope.boot,
                service: l.envelope.service,
                segment: h.segment,
                header_seq: l.envelope.seq,
                header: h.into(),
            }),
            other => HeaderRead::Missing {
                bytes: line.to_vec(),
                code: "segment_header_missing",
                reason: format!(
                    "first line is a `{}` record, not a journal.segment header: the file has no \
                     identity and is not read",
                    other.kind()
                ),
            },
        },
        Ok(_) => HeaderRead::Missing {
            bytes: line.to_vec(),
            code: "segment_header_missing",
            reason: "first line is not a journal.segment header this build reads".into(),
        },
        Err(e) => HeaderRead::Missing {
            bytes: line.to_vec(),
            code: "segment_header_missing",
            reason: format!("first line does not decode ({}): {}", e.code(), e.reason),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_newline_agrees_with_a_plain_scan() {
        let mut b = vec![b'x'; 40];
        assert_eq!(find_newline(&b), None);
        for at in 0..40 {
            b[at] = b'\n';
            for start in 0..=at {
                let want = b[start..].iter().position(|&c| c == b'\n');
                assert_eq!(find_newline(&b[start..]), want, "at {at} from {start}");
            }
            b[at] = if at % 2 == 0 { 0x8a } else { 0x0b };
        }
    }
}
