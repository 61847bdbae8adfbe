//! The crash-durable journal writer.
//!
//! # How a line reaches the disk
//!
//! [`Journal::emit`] encodes the record on the calling thread (everything but `seq`), then
//! waits at most [`JournalBuilder::lock_wait`] for the segment lock. Holding it, it assigns
//! the next `seq` and writes the line with one `write(2)` on an `O_APPEND` descriptor, so a
//! line is on disk (in the page cache, which survives the process) when `emit` returns, and
//! lines are in the file in `seq` order. If the lock stays busy longer than the wait (the disk
//! stalls), the line goes to a bounded queue that the next lock holder, or the background
//! thread, writes first. When the queue is full the line is dropped and counted: the count
//! goes into the next `memory.sample` (`dropped`) and into a `journal.dropped` record.
//!
//! A background thread (`dispatch-journal-io`) runs `fdatasync` every second, immediately
//! after critical records, and on rotation, syncs the directory after a rotation, and
//! enforces the byte budget.
//!
//! A SIGKILL therefore loses at most the line whose `write(2)` was in flight (plus whatever a
//! stalled disk had parked in the queue); a power loss loses at most the last second, and
//! nothing before a critical record's sync.

mod retention;

/// Segment names of `service` in `dir`, oldest first (for the crash monitor).
#[cfg(feature = "crash")]
pub(crate) fn list_segment_names(dir: &Path, service: &str) -> io::Result<Vec<SegmentName>> {
    Ok(retention::list_segments(dir, service)?.into_iter().map(|f| f.name).collect())
}

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dispatch_journal::record::{JournalDropped, SegmentHeader};
use dispatch_journal::{PendingLine, Record, SegmentName, Timestamp, env};
use parking_lot::{Condvar, Mutex};

use crate::config::{ConfigError, env_parse, env_string};

/// Where the journal goes, and how it is bounded. Build with [`JournalBuilder::new`].
#[derive(Debug, Clone)]
pub struct JournalBuilder {
    dir: PathBuf,
    service: String,
    max_segment_bytes: u64,
    budget_bytes: u64,
    queue_lines: usize,
    lock_wait: Duration,
    sync_interval: Duration,
    boot: Option<String>,
}

/// The writer's defaults.
impl Journal {
    /// Service name. Env: `DISPATCH_SERVICE`.
    pub const DEFAULT_SERVICE: &'static str = "dispatch";
    /// Segment size that triggers rotation. Env: `DISPATCH_JOURNAL_SEGMENT_BYTES`.
    pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
    /// Byte budget for the directory's segments. Env: `DISPATCH_JOURNAL_BUDGET_BYTES`.
    pub const DEFAULT_BUDGET_BYTES: u64 = 2 * 1024 * 1024 * 1024;
    /// Lines queued while the segment lock is busy. Env: `DISPATCH_JOURNAL_QUEUE_LINES`.
    pub const DEFAULT_QUEUE_LINES: usize = 4096;
    /// Longest wait for the segment lock before a line is queued instead.
    pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_millis(2);
    /// Background `fdatasync` period.
    pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);
}

impl JournalBuilder {
    /// A journal in `dir` with every default.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalBuilder {
            dir: dir.into(),
            service: Journal::DEFAULT_SERVICE.to_string(),
            max_segment_bytes: Journal::DEFAULT_MAX_SEGMENT_BYTES,
            budget_bytes: Journal::DEFAULT_BUDGET_BYTES,
            queue_lines: Journal::DEFAULT_QUEUE_LINES,
            lock_wait: Journal::DEFAULT_LOCK_WAIT,
            sync_interval: Journal::DEFAULT_SYNC_INTERVAL,
            boot: None,
        }
    }

    /// Use this boot id instead of a fresh random one. The crash monitor picks its child's
    /// boot id, so that it can append `crash` and `exit` records under it.
    pub fn boot_id(self, boot: impl Into<String>) -> Self {
        JournalBuilder { boot: Some(boot.into()), ..self }
    }

    /// Service name in envelopes and segment file names. Default:
    /// [`Journal::DEFAULT_SERVICE`]. Env: `DISPATCH_SERVICE`.
    pub fn service(self, name: impl Into<String>) -> Self {
        JournalBuilder { service: name.into(), ..self }
    }

    /// Rotate once a segment would exceed `bytes`. Default:
    /// [`Journal::DEFAULT_MAX_SEGMENT_BYTES`]. Env: `DISPATCH_JOURNAL_SEGMENT_BYTES`.
    pub fn max_segment_bytes(self, bytes: u64) -> Self {
        JournalBuilder { max_segment_bytes: bytes.max(4096), ..self }
    }

    /// Delete the oldest segments once the directory holds more than `bytes`. Default:
    /// [`Journal::DEFAULT_BUDGET_BYTES`]. Env: `DISPATCH_JOURNAL_BUDGET_BYTES`.
    pub fn budget_bytes(self, bytes: u64) -> Self {
        JournalBuilder { budget_bytes: bytes, ..self }
    }

    /// Lines held while the segment lock is busy. Default: [`Journal::DEFAULT_QUEUE_LINES`].
    /// Env: `DISPATCH_JOURNAL_QUEUE_LINES`.
    pub fn queue_lines(self, lines: usize) -> Self {
        JournalBuilder { queue_lines: lines.max(1), ..self }
    }

    /// Longest time [`Journal::emit`] waits for the segment lock. Default:
    /// [`Journal::DEFAULT_LOCK_WAIT`].
    pub fn lock_wait(self, wait: Duration) -> Self {
        JournalBuilder { lock_wait: wait, ..self }
    }

    /// Background `fdatasync` period. Default: [`Journal::DEFAULT_SYNC_INTERVAL`].
    pub fn sync_interval(self, every: Duration) -> Self {
        JournalBuilder { sync_interval: every.max(Duration::from_millis(10)), ..self }
    }

    /// Applies `DISPATCH_SERVICE` and `DISPATCH_JOURNAL_*` over what was set. A malformed
    /// value is an error naming the variable.
    pub fn with_env(mut self) -> Result<Self, ConfigError> {
        if let Some(s) = env_string(env::SERVICE)? {
            self.service = s;
        }
        if let Some(b) = env_parse(env::JOURNAL_SEGMENT_BYTES, "a byte count")? {
            self = self.max_segment_bytes(b);
        }
        if let Some(b) = env_parse(env::JOURNAL_BUDGET_BYTES, "a byte count")? {
            self = self.budget_bytes(b);
        }
        if let Some(n) = env_parse(env::JOURNAL_QUEUE_LINES, "a number of lines")? {
            self = self.queue_lines(n);
        }
        Ok(self)
    }

    /// Opens a new segment for a new boot (creating the directory, 0700) and starts the
    /// background thread. The journal keeps writing until the last [`Journal`] clone drops.
    ///
    /// # Errors
    /// The directory cannot be created or listed, or the first segment cannot be created.
    pub fn open(self) -> Result<Journal, JournalError> {
        if self.service.is_empty() || self.service.contains(['/', '\0']) {
            return Err(JournalError::BadService { service: self.service });
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| JournalError::Dir { path: self.dir.clone(), source })?;
        let last = retention::list_segments(&self.dir, &self.service)
            .map_err(|source| JournalError::Dir { path: self.dir.clone(), source })?
            .last()
            .map(|s| s.name.segment);
        let boot = match self.boot.clone() {
            Some(b) if !b.is_empty() => b,
            _ => new_boot_id(),
        };
        let next_segment = last.map_or(0, |n| n + 1);
        let shared = Arc::new(Shared {
            boot,
            started: Instant::now(),
            state: Mutex::new(None),
            queue: Mutex::new(VecDeque::new()),
            written: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
            dropped_unreported: AtomicU64::new(0),
            dropped_unsampled: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
            warned: AtomicBool::new(false),
            io: Mutex::new(IoState::default()),
            io_wake: Condvar::new(),
            synced_wake: Condvar::new(),
            cfg: self,
        });
        {
            let mut st = shared.state.lock();
            let seg = shared
                .open_segment(next_segment, 0)
                .map_err(|(path, source)| JournalError::Segment { path, source })?;
            *st = Some(seg);
            let header = shared.header_line(next_segment);
            if let Some(seg) = st.as_mut() {
                shared.append(seg, &header, true);
            }
        }
        let weak = Arc::downgrade(&shared);
        // Detached: the thread holds only a Weak, so once the last Journal (the last strong
        // Arc<Shared>) is gone it makes a final sync and exits within one interval; dropping a
        // Journal never waits for it.
        std::thread::Builder::new()
            .name("dispatch-journal-io".into())
            .spawn(move || io_thread(weak))
            .map_err(JournalError::Thread)?;
        Ok(Journal { shared })
    }
}

/// Why the journal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal directory could not be created or read.
    #[error("journal directory {}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A segment file could not be created.
    #[error("creating journal segment {}", path.display())]
    Segment {
        /// The segment file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The service name cannot be a file name prefix.
    #[error("service name {service:?} cannot name a segment file")]
    BadService {
        /// The name.
        service: String,
    },
    /// The background thread could not be started.
    #[error("starting the journal thread")]
    Thread(#[source] io::Error),
}

impl JournalError {
    /// Stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            JournalError::Dir { .. } => "journal_dir_unusable",
            JournalError::Segment { .. } => "journal_segment_create_failed",
            JournalError::BadService { .. } => "journal_service_invalid",
            JournalError::Thread(_) => "journal_thread_failed",
        }
    }
}

/// A handle on an open journal. Cheap to clone; the writer stops (after a last sync) when the
/// final clone drops.
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.shared.cfg.dir)
            .field("service", &self.shared.cfg.service)
            .field("boot", &self.shared.boot)
            .finish()
    }
}

/// Counters of a journal, for `/health`, `/metrics` and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalStats {
    /// Lines written to segment files (headers included).
    pub lines_written: u64,
    /// Lines dropped because the queue was full or a write failed.
    pub lines_dropped: u64,
    /// Lines waiting in the queue.
    pub lines_queued: u64,
    /// The `seq` the next line will get; every line with a lower `seq` has been written (or
    /// lost to a failed write, which is counted as dropped).
    pub next_seq: u64,
    /// `seq` below which every line is also `fdatasync`ed.
    pub synced_seq: u64,
    /// Number of the current segment.
    pub segment: u64,
}

impl Journal {
    /// Appends a record. Returns `false` when the line was dropped (queue full, the record
    /// cannot be encoded, or the write failed), which is counted. Never blocks for longer
    /// than the lock wait plus one write.
    pub fn emit(&self, record: Record) -> bool {
        self.emit_at(Timestamp::now(), &record)
    }

    /// Like [`Journal::emit`], with an explicit timestamp and a borrowed record.
    pub fn emit_at(&self, ts: Timestamp, record: &Record) -> bool {
        let s = &self.shared;
        let line = match PendingLine::encode(ts, &s.boot, &s.cfg.service, record) {
            Ok(l) => l,
            Err(e) => {
                s.warn_once(&format!("dropping a record: {e} ({})", e.code()));
                s.count_drop(1);
                return false;
            }
        };
        let critical = line.is_critical();
        let ok = match s.state.try_lock_for(s.cfg.lock_wait) {
            Some(mut guard) => {
                let ok = match guard.as_mut() {
                    Some(seg) => {
                        s.drain_queue_locked(seg);
                        s.append(seg, &line, true)
                    }
                    None => false,
                };
                drop(guard);
                s.drain_after_release();
                ok
            }
            None => s.enqueue(line),
        };
        if critical {
            s.request_sync();
        }
        ok
    }

    /// Waits up to `timeout` until every line emitted before this call is written and
    /// `fdatasync`ed. Returns whether that happened in time.
    pub fn flush(&self, timeout: Duration) -> bool {
        let s = &self.shared;
        let deadline = Instant::now() + timeout;
        let target = {
            let Some(mut guard) = s.state.try_lock_for(timeout) else { return false };
            let Some(seg) = guard.as_mut() else { return false };
            s.drain_queue_locked(seg);
            seg.next_seq
        };
        let mut io = s.io.lock();
        io.sync_requested = true;
        s.io_wake.notify_all();
        while io.synced_seq < target {
            if s.synced_wake.wait_until(&mut io, deadline).timed_out() {
                return io.synced_seq >= target;
            }
        }
        true
    }

    /// This process start's boot id (UUID v4).
    pub fn boot(&self) -> &str {
        &self.shared.boot
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.shared.cfg.service
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.shared.cfg.dir
    }

    /// Milliseconds since the journal was opened (process start, for a server).
    pub fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// Whether the last write succeeded.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// While writes fail: the last write's error, naming the segment (`No space left on
    /// device`, `Read-only file system`); `None` once a write succeeds again.
    pub fn last_write_error(&self) -> Option<String> {
        self.shared.last_error.lock().clone()
    }

    /// Lines dropped since the previous call (the sampler reports them as `dropped`).
    pub fn take_dropped(&self) -> u64 {
        self.shared.dropped_unsampled.swap(0, Ordering::Relaxed)
    }

    /// Lines dropped since the journal opened (queue full, write failed), without the segment
    /// lock that [`Journal::stats`] waits for: `/health` and `/metrics` read it per request.
    pub fn lines_dropped(&self) -> u64 {
        self.shared.dropped_total.load(Ordering::Relaxed)
    }

    /// Current counters.
    pub fn stats(&self) -> JournalStats {
        let s = &self.shared;
        let (next_seq, segment) = s
            .state
            .try_lock_for(Duration::from_millis(50))
            .and_then(|g| g.as_ref().map(|seg| (seg.next_seq, seg.name.segment)))
            .unwrap_or((0, 0));
        JournalStats {
            lines_written: s.written.load(Ordering::Relaxed),
            lines_dropped: s.dropped_total.load(Ordering::Relaxed),
            lines_queued: s.queue.lock().len() as u64,
            next_seq,
            synced_seq: s.io.lock().synced_seq,
            segment,
        }
    }

    /// Path of the segment being written.
    pub fn current_segment_path(&self) -> Option<PathBuf> {
        let g = self.shared.state.lock();
        g.as_ref().map(|seg| self.shared.cfg.dir.join(seg.name.file_name()))
    }
}

struct Segment {
    name: SegmentName,
    file: Arc<File>,
    bytes: u64,
    next_seq: u64,
    kept: bool,
    buf: Vec<u8>,
    /// Set when a write failed in a way this descriptor never recovers from (its filesystem
    /// turned read-only or went away): from then on, a new segment opened by path is tried
    /// at most every [`REOPEN_EVERY`], which reaches a filesystem mounted there since.
    reopen_at: Option<Instant>,
}

/// How often a segment whose filesystem refuses writes for good tries a new one.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// Write errors after which the open descriptor is useless (EROFS: the kernel turned the
/// filesystem read-only on an error and will not make it writable again; EIO, ENODEV, ESTALE:
/// the device or export is gone). ENOSPC is not one: the same descriptor works once space
/// returns, and trying new files on a full disk would only litter it with empty segments.
fn descriptor_is_dead(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EROFS | libc::EIO | libc::ENODEV | libc::ESTALE))
}

#[derive(Default)]
struct IoState {
    sync_requested: bool,
    dir_sync_needed: bool,
    retention_needed: bool,
    retired: Vec<Arc<File>>,
    synced_seq: u64,
}

struct Shared {
    cfg: JournalBuilder,
    boot: String,
    started: Instant,
    state: Mutex<Option<Segment>>,
    queue: Mutex<VecDeque<PendingLine>>,
    written: AtomicU64,
    dropped_total: AtomicU64,
    dropped_unreported: AtomicU64,
    dropped_unsampled: AtomicU64,
    healthy: AtomicBool,
    /// The last write's error while writes fail (`None` once one succeeds again).
    last_error: Mutex<Option<String>>,
    warned: AtomicBool,
    io: Mutex<IoState>,
    io_wake: Condvar,
    synced_wake: Condvar,
}

impl Shared {
    fn header_line(&self, segment: u64) -> PendingLine {
        let header = Record::SegmentHeader(SegmentHeader {
            segment,
            created: Some(Timestamp::now()),
            pid: Some(std::process::id()),
            writer: Some(concat!("dispatch-telemetry ", env!("CARGO_PKG_VERSION")).into()),
        });
        // A header is a few dozen bytes: it always encodes.
        PendingLine::encode(Timestamp::now(), &self.boot, &self.cfg.service, &header)
            .expect("a segment header is far below the line limit")
    }

    fn open_segment(
        &self,
        mut number: u64,
        next_seq: u64,
    ) -> Result<Segment, (PathBuf, io::Error)> {
        // create_new: never append to another boot's segment; skip numbers taken meanwhile.
        for _ in 0..1000 {
            let name = SegmentName::new(self.cfg.service.clone(), number);
            let path = self.cfg.dir.join(name.file_name());
            match OpenOptions::new().append(true).create_new(true).mode(0o600).open(&path) {
                Ok(file) => {
                    return Ok(Segment {
                        name,
                        file: Arc::new(file),
                        bytes: 0,
                        next_seq,
                        kept: false,
                        buf: Vec::with_capacity(1024),
                        reopen_at: None,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => number += 1,
                Err(e) => return Err((path, e)),
            }
        }
        let path =
            self.cfg.dir.join(SegmentName::new(self.cfg.service.clone(), number).file_name());
        Err((path, io::Error::new(io::ErrorKind::AlreadyExists, "no free segment number")))
    }

    /// Writes one line under the segment lock, rotating first if it would overflow.
    /// `lost_if_failed`: whether a failed write counts as a dropped record (not for the
    /// `journal.dropped` report itself, whose count is kept for the next try).
    fn append(&self, seg: &mut Segment, line: &PendingLine, lost_if_failed: bool) -> bool {
        let len = line.len_with_seq(seg.next_seq) as u64;
        if seg.reopen_at.is_some_and(|at| Instant::now() >= at) {
            // The segment's filesystem refuses writes for good: only a new segment, opened by
            // path, can reach a disk mounted (or repaired and remounted) there since.
            if !self.rotate(seg) {
                seg.reopen_at = Some(Instant::now() + REOPEN_EVERY);
            }
        } else if seg.bytes > 0 && seg.bytes + len > self.cfg.max_segment_bytes {
            // If rotation fails, keep writing to the old segment rather than lose lines.
            self.rotate(seg);
        }
        self.write_line(seg, line, lost_if_failed)
    }

    fn write_line(&self, seg: &mut Segment, line: &PendingLine, lost_if_failed: bool) -> bool {
        let seq = seg.next_seq;
        seg.next_seq += 1;
        seg.buf.clear();
        line.finish_into(seq, &mut seg.buf);
        // One write(2) per line. For a regular file Linux writes it whole or fails; a short
        // write (disk full mid-line) is finished by write_all so the line is never split
        // by another of our lines (we hold the lock) nor by another process (O_APPEND).
        match (&*seg.file).write_all(&seg.buf) {
            Ok(()) => {
                seg.bytes += seg.buf.len() as u64;
                self.written.fetch_add(1, Ordering::Relaxed);
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    *self.last_error.lock() = None;
                }
                if line.is_retained() && !seg.kept {
                    seg.kept = self.mark_kept(&seg.name);
                }
                true
            }
            Err(e) => {
                // A disk that fills mid-line takes part of it (write(2) writes what fits, the
                // rest fails): cut the segment back to its last whole line, so the next line
                // written starts a line instead of completing a torn one (the collector would
                // read the two as one bad line and lose the good one). The line was not
                // written, so its seq goes to the next line: the sequence stays without gaps,
                // and the `journal.dropped` record says how many were lost.
                let _ = seg.file.set_len(seg.bytes);
                seg.next_seq = seq;
                if descriptor_is_dead(&e) && seg.reopen_at.is_none() {
                    seg.reopen_at = Some(Instant::now());
                }
                self.healthy.store(false, Ordering::Relaxed);
                let what =
                    format!("writing {}: {e}", self.cfg.dir.join(seg.name.file_name()).display());
                *self.last_error.lock() = Some(what.clone());
                self.warn_once(&what);
                if lost_if_failed {
                    self.count_drop(1);
                }
                false
            }
        }
    }

    fn mark_kept(&self, name: &SegmentName) -> bool {
        let path = self.cfg.dir.join(name.keep_marker());
        let ok = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .is_ok();
        if ok {
            self.io.lock().dir_sync_needed = true;
        }
        ok
    }

    /// Opens the next segment (header first) and hands the old one to the io thread to sync.
    /// On failure (warned once) `seg` stays the current segment and this returns false.
    fn rotate(&self, seg: &mut Segment) -> bool {
        let next = match self.open_segment(seg.name.segment + 1, seg.next_seq) {
            Ok(n) => n,
            Err((path, e)) => {
                self.warn_once(&format!("rotating to {}: {e}", path.display()));
                return false;
            }
        };
        let old = std::mem::replace(seg, next);
        let header = self.header_line(seg.name.segment);
        self.write_line(seg, &header, true);
        let mut io = self.io.lock();
        io.retired.push(old.file);
        io.dir_sync_needed = true;
        io.retention_needed = true;
        io.sync_requested = true;
        self.io_wake.notify_all();
        true
    }

    fn enqueue(&self, line: PendingLine) -> bool {
        let mut q = self.queue.lock();
        if q.len() >= self.cfg.queue_lines {
            drop(q);
            self.count_drop(1);
            return false;
        }
        q.push_back(line);
        true
    }

    fn drain_queue_locked(&self, seg: &mut Segment) {
        loop {
            let batch: Vec<PendingLine> = {
                let mut q = self.queue.lock();
                if q.is_empty() {
                    break;
                }
                q.drain(..).collect()
            };
            for line in &batch {
                self.append(seg, line, true);
            }
        }
        self.report_drops_locked(seg);
    }

    /// After releasing the segment lock: lines queued by callers that gave up waiting for it
    /// while we held it would otherwise sit until the next emit. Bounded to a few rounds; the
    /// background thread picks up whatever is left.
    fn drain_after_release(&self) {
        for _ in 0..4 {
            if self.queue.lock().is_empty() {
                return;
            }
            let Some(mut g) = self.state.try_lock() else { return };
            if let Some(seg) = g.as_mut() {
                self.drain_queue_locked(seg);
            }
        }
    }

    fn report_drops_locked(&self, seg: &mut Segment) {
        let n = self.dropped_unreported.swap(0, Ordering::Relaxed);
        if n == 0 {
            return;
        }
        let rec = Record::JournalDropped(JournalDropped { count: n });
        match PendingLine::encode(Timestamp::now(), &self.boot, &self.cfg.service, &rec) {
            Ok(line) => {
                // Still failing (the disk is still full): keep the count for the next try. The
                // report line itself is not a lost record, so its failure is not counted.
                if !self.append(seg, &line, false) {
                    self.dropped_unreported.fetch_add(n, Ordering::Relaxed);
                }
            }
            Err(_) => {
                self.dropped_unreported.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    fn count_drop(&self, n: u64) {
        self.dropped_total.fetch_add(n, Ordering::Relaxed);
        self.dropped_unreported.fetch_add(n, Ordering::Relaxed);
        self.dropped_unsampled.fetch_add(n, Ordering::Relaxed);
    }

    fn request_sync(&self) {
        let mut io = self.io.lock();
        io.sync_requested = true;
        self.io_wake.notify_all();
    }

    fn warn_once(&self, msg: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            eprintln!(
                "dispatch-telemetry: journal: {msg} (further journal errors are counted, not printed)"
            );
        }
    }

    /// One round of the background thread's work.
    fn io_round(&self) {
        // Lines parked by callers that gave up on the lock.
        if !self.queue.lock().is_empty() || self.dropped_unreported.load(Ordering::Relaxed) > 0 {
            if let Some(mut g) = self.state.try_lock_for(Duration::from_millis(100)) {
                if let Some(seg) = g.as_mut() {
                    self.drain_queue_locked(seg);
                }
            }
        }
        let (retired, dir_sync, retention) = {
            let mut io = self.io.lock();
            io.sync_requested = false;
            (
                std::mem::take(&mut io.retired),
                std::mem::take(&mut io.dir_sync_needed),
                std::mem::take(&mut io.retention_needed),
            )
        };
        // Snapshot what is written, then sync: everything below `target` is then durable.
        let (current, target) = {
            let g = self.state.lock();
            match g.as_ref() {
                Some(seg) => (Some(seg.file.clone()), seg.next_seq),
                None => (None, 0),
            }
        };
        let mut ok = true;
        for f in retired.iter().chain(current.iter()) {
            if let Err(e) = f.sync_data() {
                ok = false;
                self.warn_once(&format!("fdatasync: {e}"));
            }
        }
        if dir_sync {
            if let Err(e) = File::open(&self.cfg.dir).and_then(|d| d.sync_all()) {
                self.warn_once(&format!("syncing {}: {e}", self.cfg.dir.display()));
            }
        }
        if ok {
            let mut io = self.io.lock();
            io.synced_seq = io.synced_seq.max(target);
            self.synced_wake.notify_all();
        }
        if retention {
            let current = self.state.lock().as_ref().map(|s| s.name.segment);
            if let Err(e) = retention::enforce_budget(
                &self.cfg.dir,
                &self.cfg.service,
                self.cfg.budget_bytes,
                current,
            ) {
                self.warn_once(&format!("retention in {}: {e}", self.cfg.dir.display()));
            }
        }
    }
}

fn io_thread(weak: Weak<Shared>) {
    // Enforce the budget once at start: the previous boot may have left the directory over.
    if let Some(s) = weak.upgrade() {
        s.io.lock().retention_needed = true;
    }
    loop {
        let Some(s) = weak.upgrade() else { return };
        s.io_round();
        let mut io = s.io.lock();
        if !io.sync_requested {
            let interval = s.cfg.sync_interval;
            let _ = s.io_wake.wait_for(&mut io, interval);
        }
        drop(io);
        if Arc::strong_count(&s) == 1 {
            // Only this thread is left: final sync and exit.
            s.io_round();
            return;
        }
    }
}

/// A fresh random boot id (UUID v4, from the OS's randomness).
pub fn new_boot_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
