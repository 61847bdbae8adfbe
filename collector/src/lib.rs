//! `dispatch-collector` drains the Dispatch journal into the SQLite traces database, exactly
//! once, through `kill -9`, rotation, torn lines and renamed files; and answers the queries
//! `dispatchctl` asks of that database.
//!
//! It owns the traces database: its schema and migrations ([`schema`]), ingestion
//! ([`Collector`]), retention ([`retention`]) and the read side ([`query`]). It does not own the
//! journal format (that is `dispatch-journal`) and never links the writer or jemalloc.
//!
//! # Exactly once
//!
//! - A segment's identity is its `journal.segment` header (`boot`, `segment`), not its file
//!   name: a renamed file or a copy under another name is the same segment and is read once.
//! - Reading resumes at a checkpoint per segment (byte offset, line, last `seq`) that is
//!   committed in the same SQLite transaction as the rows it covers.
//! - Rows are keyed `(boot_no << 40) | seq` (an `INTEGER PRIMARY KEY`); a line stored already
//!   is counted as a duplicate, never stored twice.
//! - A final line without `\n` is never consumed; once a later segment exists it is quarantined
//!   as `journal_line_torn`. Lines that do not decode go to `ingest_errors` with their segment,
//!   offset and bytes, in the same transaction. A file shorter than its checkpoint is reported
//!   (`segment_truncated`) and not re-read.
//! - One collector per database: `<db>.lock` is locked for the collector's lifetime.
//! - A closed segment (a later one exists) whose every byte is committed gets its
//!   `<segment file>.drained` marker, which the writer's retention waits for.
//!
//! # Threads
//!
//! A drain runs three threads: a reader (`dispatch-collector-reader`: lists the directory,
//! reads each segment from its checkpoint, decodes lines and builds rows), the writer (the
//! calling thread: one SQLite transaction per batch of at most
//! [`Collector::DEFAULT_BATCH_LINES`] lines or [`Collector::DEFAULT_BATCH_INTERVAL`]), and a
//! checkpoint thread with its own connection, so the writer never stops for a WAL checkpoint.
//! The reader hands batches over a bounded channel ([`Collector::DEFAULT_CHANNEL_BATCHES`]);
//! committed batches go back to it to be freed and reused. docs/BENCHMARKS.md ("Collector")
//! has the measurements behind these choices.
//!
//! # Example
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use dispatch_collector::{Collector, query};
//! use dispatch_journal::record::{MemorySample, SegmentHeader};
//! use dispatch_journal::{Envelope, Record, Timestamp, encode};
//!
//! let dir = tempfile::tempdir()?;
//! let mut env = Envelope {
//!     v: 1,
//!     ts: Timestamp::parse_rfc3339("2026-06-28T00:12:02.123Z")?,
//!     boot: "6f1c2d9e-8a41-4b7e-9a55-0c1e2f3a4b5c".into(),
//!     seq: 0,
//!     service: "dispatch".into(),
//!     truncated: false,
//! };
//! let mut bytes = encode(&env, &Record::SegmentHeader(SegmentHeader { segment: 1, ..Default::default() }))?;
//! env.seq = 1;
//! bytes.extend(encode(&env, &Record::MemorySample(MemorySample { rss: Some(88_080_384), ..Default::default() }))?);
//! std::fs::write(dir.path().join("dispatch.000001.ndjson"), bytes)?;
//!
//! let db = dir.path().join("traces.db");
//! let summary = Collector::builder(dir.path(), &db).open()?.drain_once()?;
//! assert_eq!((summary.lines, summary.records, summary.quarantined), (2, 2, 0));
//!
//! // A second drain finds nothing new.
//! assert_eq!(Collector::builder(dir.path(), &db).open()?.drain_once()?.lines, 0);
//!
//! let conn = dispatch_collector::schema::open_read_only(&db)?;
//! let boots = query::boots(&conn)?;
//! assert_eq!((boots[0].records, boots[0].last_seq), (2, Some(1)));
//! # Ok(()) }
//! ```

mod error;
mod fastline;
pub mod hours;
pub mod query;
mod reader;
pub mod retention;
mod rows;
pub mod schema;
pub mod status;
mod store;
pub mod sys;

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};
use std::time::{Duration, Instant};

use dispatch_journal::Timestamp;
use rusqlite::Connection;

pub use error::CollectorError;
pub use reader::Progress;

use reader::{Reader, ReaderConfig, ReaderFailure, ReaderState};
use schema::DbLock;
use store::Batch;

/// Drains a journal directory into a traces database. Holds the database's lock while it
/// lives.
#[derive(Debug)]
pub struct Collector {
    journal_dir: PathBuf,
    db_path: PathBuf,
    conn: Connection,
    _lock: DbLock,
    cfg: CollectorBuilder,
    progress: Arc<Progress>,
}

/// Settings of a [`Collector`]. Every field has a `DEFAULT_*` on [`Collector`].
#[derive(Debug, Clone)]
pub struct CollectorBuilder {
    journal_dir: PathBuf,
    db_path: PathBuf,
    batch_lines: usize,
    batch_interval: Duration,
    poll_interval: Duration,
    channel_batches: usize,
    retention: Option<Duration>,
    retention_chunk_rows: usize,
    max_reported_issues: usize,
}

impl Collector {
    /// Lines per transaction, at most (10k lines or 250 ms, whichever first: docs/ARCHITECTURE.md, "The journal contract").
    pub const DEFAULT_BATCH_LINES: usize = 10_000;
    /// Longest a line waits for its transaction.
    pub const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_millis(250);
    /// How often `--follow` looks for new lines and segments.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
    /// Parsed batches queued between the reader and the writer thread.
    pub const DEFAULT_CHANNEL_BATCHES: usize = 4;
    /// Rows older than this, measured back from the newest record stored, are deleted.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
    /// Rows deleted per retention transaction.
    pub const DEFAULT_RETENTION_CHUNK_ROWS: usize = 10_000;
    /// Quarantined lines listed one by one in a [`Summary`] (the rest are counted).
    pub const DEFAULT_MAX_REPORTED_ISSUES: usize = 100;
    /// How often `--follow` applies retention.
    pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

    /// Settings for draining `journal_dir` into the database at `db`.
    pub fn builder(journal_dir: impl AsRef<Path>, db: impl AsRef<Path>) -> CollectorBuilder {
        CollectorBuilder {
            journal_dir: journal_dir.as_ref().to_path_buf(),
            db_path: db.as_ref().to_path_buf(),
            batch_lines: Self::DEFAULT_BATCH_LINES,
            batch_interval: Self::DEFAULT_BATCH_INTERVAL,
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
            channel_batches: Self::DEFAULT_CHANNEL_BATCHES,
            retention: Some(Self::DEFAULT_RETENTION),
            retention_chunk_rows: Self::DEFAULT_RETENTION_CHUNK_ROWS,
            max_reported_issues: Self::DEFAULT_MAX_REPORTED_ISSUES,
        }
    }

    /// Byte progress of the running drain, for a progress bar drawn by another thread.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    /// The database connection (for status and queries after a drain).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Reads every complete line that is in the journal now, commits it and returns.
    ///
    /// # Errors
    /// I/O errors on the journal directory and SQLite errors. Bad lines are not errors: they
    /// are quarantined and counted in the [`Summary`].
    pub fn drain_once(&mut self) -> Result<Summary, CollectorError> {
        let stop = AtomicBool::new(false);
        let s = self.run(false, &stop)?;
        self.apply_retention()?;
        Ok(s)
    }

    /// Tails the journal (new lines, new segments) until `stop` is set, then commits what was
    /// read and returns. Polls every [`Collector::DEFAULT_POLL_INTERVAL`].
    ///
    /// # Errors
    /// As [`Collector::drain_once`].
    pub fn follow(&mut self, stop: &AtomicBool) -> Result<Summary, CollectorError> {
        let mut total = Summary::default();
        let started = Instant::now();
        // Retention runs between follow rounds, on this thread, so it never races the writer.
        while !stop.load(Ordering::Relaxed) {
            let round_stop =
                RoundStop { outer: stop, until: Instant::now() + Self::RETENTION_INTERVAL };
            let s = self.run_until(&round_stop)?;
            total.merge(s, self.cfg.max_reported_issues);
            self.apply_retention()?;
        }
        total.elapsed = started.elapsed();
        Ok(total)
    }

    fn apply_retention(&mut self) -> Result<(), CollectorError> {
        if let Some(age) = self.cfg.retention {
            retention::apply(&mut self.conn, age, self.cfg.retention_chunk_rows)
                .map_err(CollectorError::db(&self.db_path, "applying retention"))?;
        }
        Ok(())
    }

    fn run_until(&mut self, stop: &RoundStop<'_>) -> Result<Summary, CollectorError> {
        let flag = AtomicBool::new(false);
        std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                while !flag.load(Ordering::Relaxed) {
                    if stop.outer.load(Ordering::Relaxed) || Instant::now() >= stop.until {
                        flag.store(true, Ordering::Relaxed);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            let r = self.run(true, &flag);
            flag.store(true, Ordering::Relaxed);
            let _ = watcher.join();
            r
        })
    }

    fn run(&mut self, follow: bool, stop: &AtomicBool) -> Result<Summary, CollectorError> {
        let started = Instant::now();
        if !self.journal_dir.is_dir() {
            return Err(CollectorError::JournalMissing { path: self.journal_dir.clone() });
        }
        check_journal_dir(&self.journal_dir)?;
        let state = ReaderState::load(&self.conn)
            .map_err(CollectorError::db(&self.db_path, "loading checkpoints"))?;
        let cfg = ReaderConfig {
            dir: self.journal_dir.clone(),
            batch_lines: self.cfg.batch_lines,
            batch_interval: self.cfg.batch_interval,
            poll_interval: self.cfg.poll_interval,
            follow,
        };
        let (tx, rx) = sync_channel::<Batch>(self.cfg.channel_batches);
        // Committed batches go back to the reader, which frees their rows and reuses their
        // buffers: freeing is work the writer thread (the bottleneck) need not do.
        let (used_tx, used_rx) = channel::<Batch>();
        let progress = Arc::clone(&self.progress);
        progress.done_bytes.store(0, Ordering::Relaxed);
        let mut summary = Summary::default();
        let max_issues = self.cfg.max_reported_issues;
        let db_path = self.db_path.clone();
        let conn = &mut self.conn;
        let checkpoint_stop = AtomicBool::new(false);
        let (written, read) = std::thread::scope(|s| {
            let reader = std::thread::Builder::new()
                .name("dispatch-collector-reader".into())
                .spawn_scoped(s, || Reader::new(cfg, state, tx, used_rx, stop, &progress).run());
            let reader = match reader {
                Ok(r) => r,
                Err(e) => {
                    return (
                        Err(CollectorError::io(&db_path, "starting the reader thread")(e)),
                        Ok(()),
                    );
                }
            };
            let checkpointer = std::thread::Builder::new()
                .name("dispatch-collector-checkpoint".into())
                .spawn_scoped(s, || schema::checkpoint_loop(&db_path, &checkpoint_stop));
            let written =
                write_loop(conn, &db_path, rx, used_tx, &progress, &mut summary, max_issues);
            checkpoint_stop.store(true, Ordering::Relaxed);
            if let Ok(c) = checkpointer {
                let checkpointed =
                    c.join().unwrap_or_else(|_| Err("the checkpoint thread panicked".into()));
                if let Err(reason) = checkpointed
                    && summary.issues.len() < max_issues
                {
                    summary.issues.push(Issue {
                        file_name: db_path.display().to_string(),
                        line_no: None,
                        offset_bytes: 0,
                        code: "wal_checkpoint_failed",
                        reason,
                    });
                }
            }
            let read = match reader.join() {
                Ok((r, cpu)) => {
                    summary.reader_cpu += cpu;
                    r
                }
                Err(_) => {
                    Err(ReaderFailure::Error(CollectorError::ThreadLost { thread: "reader" }))
                }
            };
            (written, read)
        });
        written?;
        match read {
            Ok(()) | Err(ReaderFailure::WriterGone) => {}
            Err(ReaderFailure::Error(e)) => return Err(e),
        }
        schema::restrict_db_files(&self.db_path)?;
        summary.elapsed = started.elapsed();
        Ok(summary)
    }
}

/// The journal directory must be a real directory (not a symlink), owned by this user or
/// root, and writable by nobody else: whoever can write there can make the collector store
/// forged records.
fn check_journal_dir(dir: &Path) -> Result<(), CollectorError> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let unsafe_dir = |reason: String| CollectorError::JournalDirUnsafe { path: dir.into(), reason };
    let meta = std::fs::symlink_metadata(dir)
        .map_err(CollectorError::io(dir, "reading the journal directory's metadata"))?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir(
            "it is a symlink; point DISPATCH_JOURNAL_DIR at the real directory".into(),
        ));
    }
    // /proc/self belongs to this process's effective uid.
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if me.is_some_and(|me| meta.uid() != me && meta.uid() != 0) {
        return Err(unsafe_dir(format!("owned by uid {}, not by this user nor root", meta.uid())));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "mode {:o} lets other users write to it; chmod 700 it",
            mode & 0o777
        )));
    }
    Ok(())
}

struct RoundStop<'a> {
    outer: &'a AtomicBool,
    until: Instant,
}

fn write_loop(
    conn: &mut Connection,
    db_path: &Path,
    rx: Receiver<Batch>,
    used: Sender<Batch>,
    progress: &Progress,
    summary: &mut Summary,
    max_issues: usize,
) -> Result<(), CollectorError> {
    let mut busy = Duration::ZERO;
    let cpu0 = thread_cpu_ns();
    for mut batch in rx {
        let now = Timestamp::now().unix_millis();
        let tb = Instant::now();
        let done = store::commit(conn, &mut batch, now)
            .map_err(CollectorError::db(db_path, "committing a batch"))?;
        busy += tb.elapsed();
        progress.done_bytes.fetch_add(batch.counts.bytes, Ordering::Relaxed);
        summary.lines += batch.counts.lines;
        summary.bytes += batch.counts.bytes;
        summary.unknown_kinds += batch.counts.unknown_kinds + batch.counts.too_new;
        summary.too_new += batch.counts.too_new;
        summary.records += done.records.saturating_sub(batch.counts.unknown_kinds);
        summary.duplicates += done.duplicates;
        for e in batch.errors.drain(..) {
            if e.code == "segment_truncated" {
                summary.truncated_segments += 1;
            } else {
                summary.quarantined += 1;
            }
            if summary.issues.len() < max_issues {
                summary.issues.push(Issue {
                    file_name: e.file_name,
                    line_no: e.line_no,
                    offset_bytes: e.offset_bytes,
                    code: e.code,
                    reason: e.reason,
                });
            }
        }
        // Only now, with every byte committed, may the writer's retention see the marker.
        for marker in batch.markers.drain(..) {
            let segment = marker.with_extension("");
            if segment.exists() {
                // 0600 like every file of the journal (`dispatchctl doctor` checks them all).
                let made = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&marker);
                match made {
                    Ok(_) => summary.drained_segments += 1,
                    // Not fatal: without its marker the segment is only kept longer. Reported,
                    // and tried again on the next pass.
                    Err(e) if summary.issues.len() < max_issues => summary.issues.push(Issue {
                        file_name: marker
                            .file_name()
                            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                        line_no: None,
                        offset_bytes: 0,
                        code: "drained_marker_failed",
                        reason: format!("cannot create the drained marker: {e}"),
                    }),
                    Err(_) => {}
                }
            }
        }
        // The reader may be gone (it finished); then the batch is freed here.
        let _ = used.send(batch);
    }
    summary.writer_busy += busy;
    summary.writer_cpu += Duration::from_nanos(thread_cpu_ns().saturating_sub(cpu0));
    Ok(())
}

/// CPU time of the calling thread, ns (from /proc; 0 when unreadable), for [`Summary`].
pub(crate) fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

impl CollectorBuilder {
    /// Commit after this many lines at most. Default: [`Collector::DEFAULT_BATCH_LINES`].
    pub fn batch_lines(self, lines: usize) -> Self {
        CollectorBuilder { batch_lines: lines.max(1), ..self }
    }

    /// Commit a line within this time at most. Default: [`Collector::DEFAULT_BATCH_INTERVAL`].
    pub fn batch_interval(self, interval: Duration) -> Self {
        CollectorBuilder { batch_interval: interval, ..self }
    }

    /// How often `follow` polls. Default: [`Collector::DEFAULT_POLL_INTERVAL`].
    pub fn poll_interval(self, interval: Duration) -> Self {
        CollectorBuilder { poll_interval: interval, ..self }
    }

    /// Batches queued between reader and writer. Default:
    /// [`Collector::DEFAULT_CHANNEL_BATCHES`].
    pub fn channel_batches(self, batches: usize) -> Self {
        CollectorBuilder { channel_batches: batches.max(1), ..self }
    }

    /// Delete rows older than `age` (from the newest stored record); `None` keeps everything.
    /// Default: [`Collector::DEFAULT_RETENTION`].
    pub fn retention(self, age: Option<Duration>) -> Self {
        CollectorBuilder { retention: age, ..self }
    }

    /// Rows per retention transaction. Default: [`Collector::DEFAULT_RETENTION_CHUNK_ROWS`].
    pub fn retention_chunk_rows(self, rows: usize) -> Self {
        CollectorBuilder { retention_chunk_rows: rows.max(1), ..self }
    }

    /// Takes the database lock, opens (creating, 0600) and migrates the database.
    ///
    /// # Errors
    /// [`CollectorError::Locked`] when another collector has the database;
    /// [`CollectorError::SchemaTooNew`]; I/O and SQLite errors.
    pub fn open(self) -> Result<Collector, CollectorError> {
        let lock = DbLock::acquire(&self.db_path)?;
        let conn = schema::open_for_writing(&self.db_path)?;
        Ok(Collector {
            journal_dir: self.journal_dir.clone(),
            db_path: self.db_path.clone(),
            conn,
            _lock: lock,
            cfg: self,
            progress: Arc::new(Progress::default()),
        })
    }
}

/// What a drain did. Counts cover this run only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Lines consumed: complete lines, plus torn tails quarantined.
    pub lines: u64,
    /// Bytes consumed.
    pub bytes: u64,
    /// Records stored (segment headers included; unknown kinds not).
    pub records: u64,
    /// Lines quarantined in `ingest_errors` (undecodable, torn, over-long).
    pub quarantined: u64,
    /// Lines of an unknown kind (stored raw in `events`) or of a newer schema version (counted
    /// only).
    pub unknown_kinds: u64,
    /// Of `unknown_kinds`, lines of a newer schema version.
    pub too_new: u64,
    /// Lines whose `(boot, seq)` was stored already; not stored again.
    pub duplicates: u64,
    /// Segments found shorter than their checkpoint (reported, not re-read).
    pub truncated_segments: u64,
    /// Drained markers created.
    pub drained_segments: u64,
    /// The first quarantined lines and truncations, for stderr.
    pub issues: Vec<Issue>,
    /// Wall time of the drain.
    pub elapsed: Duration,
    /// Wall time the writer thread spent committing (the rest it waited for the reader).
    pub writer_busy: Duration,
    /// CPU time of the writer thread (0 where `/proc/thread-self/schedstat` is unreadable).
    pub writer_cpu: Duration,
    /// CPU time of the reader thread (likewise).
    pub reader_cpu: Duration,
}

impl Summary {
    fn merge(&mut self, o: Summary, max_issues: usize) {
        self.lines += o.lines;
        self.bytes += o.bytes;
        self.records += o.records;
        self.quarantined += o.quarantined;
        self.unknown_kinds += o.unknown_kinds;
        self.too_new += o.too_new;
        self.duplicates += o.duplicates;
        self.truncated_segments += o.truncated_segments;
        self.drained_segments += o.drained_segments;
        self.writer_busy += o.writer_busy;
        self.writer_cpu += o.writer_cpu;
        self.reader_cpu += o.reader_cpu;
        for i in o.issues {
            if self.issues.len() < max_issues {
                self.issues.push(i);
            }
        }
    }

    /// Whether input was skipped (quarantined lines or truncated segments).
    pub fn skipped_input(&self) -> bool {
        self.quarantined > 0 || self.truncated_segments > 0
    }

    /// The summary as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "lines": self.lines,
            "records": self.records,
            "quarantined": self.quarantined,
            "unknown_kinds": self.unknown_kinds,
            "too_new": self.too_new,
            "duplicates": self.duplicates,
            "truncated_segments": self.truncated_segments,
            "drained_segments": self.drained_segments,
            "bytes": self.bytes,
            "elapsed_ms": u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// A quarantined line or a truncated segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Segment file name.
    pub file_name: String,
    /// 1-based line number, when known.
    pub line_no: Option<u64>,
    /// Byte offset in the file.
    pub offset_bytes: u64,
    /// Stable code (`journal_line_invalid`, `journal_line_torn`, `segment_truncated`, ...).
    pub code: &'static str,
    /// What was wrong.
    pub reason: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line_no {
            Some(l) => write!(
                f,
                "{}:{l}: {}: {} (byte {})",
                self.file_name, self.code, self.reason, self.offset_bytes
            ),
            None => write!(
                f,
                "{}: {}: {} (byte {})",
                self.file_name, self.code, self.reason, self.offset_bytes
            ),
        }
    }
}
