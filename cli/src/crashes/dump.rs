//! The dump behind a crash record: where it is now, the crashing thread's frames (through the
//! post-mortem engine), and the signature of the end with where it came from.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::history::{End, EndKind};
use super::signature::{self, Frame, Trust};

/// A crash record's minidump and whether it is still on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DumpFile {
    /// The path the crash monitor recorded (where the server ran).
    pub recorded: String,
    /// Where it is now: the recorded path, else the same file name in the crash directory;
    /// `None` when neither exists (deleted by the dump budget, or another machine's).
    pub path: Option<PathBuf>,
    /// Its size now.
    pub bytes: Option<u64>,
}

impl DumpFile {
    /// Whether the dump is on disk.
    pub fn is_on_disk(&self) -> bool {
        self.path.is_some()
    }
}

/// Finds the dump recorded at `recorded`: there, or as the same file name under `crash_dir`
/// (the database was copied, or the var directory moved).
pub fn locate(recorded: &str, crash_dir: &Path) -> DumpFile {
    let at = |p: PathBuf| std::fs::metadata(&p).ok().filter(|m| m.is_file()).map(|m| (p, m.len()));
    let recorded_path = PathBuf::from(recorded);
    let found = at(recorded_path.clone())
        .or_else(|| recorded_path.file_name().and_then(|name| at(crash_dir.join(name))));
    DumpFile {
        recorded: recorded.to_owned(),
        bytes: found.as_ref().map(|(_, b)| *b),
        path: found.map(|(p, _)| p),
    }
}

/// The crashing thread of `dump`, walked and symbolicated against the build-id symbol store
/// `symbols` (id-checked: `<debug file>/<DEBUG ID>/<name>.sym`), innermost frame first with
/// inlined frames expanded; `None` when the dump cannot be walked (truncated, malformed) or
/// names no crashing thread. Frames without symbols come back unnamed, and
/// [`signature::from_frames`] skips them.
///
/// The walk is the post-mortem engine's ([`crate::postmortem::analyze_dump`]), so `crashes`
/// and `postmortem` name the same frames.
pub fn crashing_thread(dump: &Path, symbols: &Path) -> Option<Vec<Frame>> {
    use crate::postmortem::{BreakpadStores, analyze_dump, model, symbol_source};
    // The same sources as `postmortem`: the build-id store converts the server's self-copy on
    // first use, and asks the servers of DEBUGINFOD_URLS for what it lacks.
    let store = symbol_source(BreakpadStores::new(Vec::new()), symbols, &[]).ok()?;
    let analysis = analyze_dump(dump, store).ok()?;
    analysis.crashing()?;
    let trust = |t: model::Trust| match t {
        model::Trust::Context => Trust::Context,
        model::Trust::Prewalked => Trust::Prewalked,
        model::Trust::Cfi => Trust::Cfi,
        model::Trust::FramePointer => Trust::FramePointer,
        model::Trust::CfiScan => Trust::CfiScan,
        model::Trust::Scan => Trust::Scan,
        model::Trust::None => Trust::None,
    };
    Some(
        analysis
            .crashing_frames()
            .into_iter()
            .map(|f| Frame {
                function: f.function,
                module: f.module,
                module_offset: f.module_offset,
                trust: trust(f.trust),
            })
            .collect(),
    )
}

/// Where a signature came from.
pub mod source {
    /// The crashing thread's frames.
    pub const STACK: &str = "stack";
    /// The fatal panic's location (or message).
    pub const PANIC: &str = "panic";
    /// The signal alone: the dump could not be symbolicated, or there is none.
    pub const SIGNAL: &str = "signal";
    /// The OOM killer.
    pub const OOM: &str = "oom";
    /// The exit status.
    pub const STATUS: &str = "status";
    /// Nothing recorded.
    pub const UNKNOWN: &str = "unknown";
}

/// Longest panic message kept in a signature, characters.
pub const PANIC_MESSAGE_CHARS: usize = 80;

/// The signature of an end and where it came from: the crashing thread's frames when they
/// give one ([`signature::from_frames`]), else the fatal panic's location (its message when
/// there is no location), else the signal (`SIGSEGV | <unknown>`), else the OOM kill, the exit
/// status, or `unknown end`.
pub fn sign(end: &End, frames: Option<&[Frame]>) -> (String, &'static str) {
    if let Some(sig) = frames.and_then(signature::from_frames) {
        return (sig, source::STACK);
    }
    if let Some(p) = &end.panic {
        // The column moves with any edit of the line; the line is what identifies the site.
        let location = p.location.as_deref().map(|l| match l.rsplit_once(':') {
            Some((file_line, col)) if col.bytes().all(|b| b.is_ascii_digit()) => file_line,
            _ => l,
        });
        let what = match (location, p.message.as_deref()) {
            (Some(l), _) => l.to_owned(),
            (None, Some(m)) => {
                let first = m.lines().next().unwrap_or_default();
                let cut: String = first.chars().take(PANIC_MESSAGE_CHARS).collect();
                if cut.len() < first.len() { format!("{cut}...") } else { cut }
            }
            (None, None) => "<no message>".into(),
        };
        return (format!("panic | {what}"), source::PANIC);
    }
    let dump_signal = end.crash.as_ref().and_then(|c| c.signal.clone());
    if end.kind == EndKind::Oom {
        return ("OOM | killed".into(), source::OOM);
    }
    if let Some(sig) = dump_signal.or_else(|| end.signal.clone()) {
        return (format!("{sig} | <unknown>"), source::SIGNAL);
    }
    match (end.kind, end.status) {
        (EndKind::Unknown, _) => ("unknown end".into(), source::UNKNOWN),
        (_, Some(s)) => (format!("exit status {s}"), source::STATUS),
        _ => ("unknown end".into(), source::UNKNOWN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crashes::history::Panic;

    fn end(kind: EndKind) -> End {
        End {
            boot: "b".into(),
            ts_ms: 0,
            started_ts_ms: None,
            uptime_ms: None,
            uptime_is_lower_bound: false,
            kind,
            signal: None,
            status: None,
            core_dumped: None,
            oom_killed: None,
            crash: None,
            panic: None,
            version: None,
            build_id: None,
            service: None,
        }
    }

    #[test]
    fn the_signature_falls_back_and_says_from_what() {
        let mut e = end(EndKind::Signal);
        e.signal = Some("SIGILL".into());
        e.crash = Some(dispatch_collector::query::Crash {
            ts_ms: 0,
            boot: "b".into(),
            signal: Some("SIGSEGV".into()),
            signo: Some(11),
            fault_address: None,
            thread_name: None,
            minidump: None,
            dump_error: None,
            build_id: None,
            uptime_ms: None,
            last_sample_json: None,
            active_conversations_json: None,
        });
        // No frames: the dump's signal, not the exit's.
        assert_eq!(sign(&e, None), ("SIGSEGV | <unknown>".into(), source::SIGNAL));
        // Frames with no name: still the signal.
        let unnamed =
            [Frame { function: None, module: None, module_offset: Some(1), trust: Trust::Context }];
        assert_eq!(sign(&e, Some(&unnamed)).1, source::SIGNAL);
        let named = [Frame::named(
            "dispatch_server::faults::null_write::h0123456789abcdef",
            Trust::Context,
        )];
        assert_eq!(
            sign(&e, Some(&named)),
            ("dispatch_server::faults::null_write".into(), source::STACK)
        );
        e.panic = Some(Panic {
            ts_ms: 0,
            boot: "b".into(),
            message: Some("index out of bounds: the len is 3 but the index is 7".into()),
            location: Some("server/src/turn.rs:88:17".into()),
            thread: None,
        });
        assert_eq!(sign(&e, None), ("panic | server/src/turn.rs:88".into(), source::PANIC));
        e.panic.as_mut().unwrap().location = None;
        assert_eq!(
            sign(&e, None).0,
            "panic | index out of bounds: the len is 3 but the index is 7"
        );
        let mut s = end(EndKind::Status);
        s.status = Some(2);
        assert_eq!(sign(&s, None), ("exit status 2".into(), source::STATUS));
        assert_eq!(sign(&end(EndKind::Unknown), None), ("unknown end".into(), source::UNKNOWN));
        let mut o = end(EndKind::Oom);
        o.signal = Some("SIGKILL".into());
        assert_eq!(sign(&o, None), ("OOM | killed".into(), source::OOM));
    }

    #[test]
    fn a_dump_is_found_where_recorded_or_by_name_in_the_crash_dir() {
        let d = tempfile::tempdir().unwrap();
        let crash_dir = d.path().join("crashes");
        std::fs::create_dir(&crash_dir).unwrap();
        std::fs::write(crash_dir.join("x.dmp"), b"MDMP").unwrap();
        let moved = locate("/var/lib/dispatch/crashes/x.dmp", &crash_dir);
        assert_eq!(moved.path, Some(crash_dir.join("x.dmp")));
        assert_eq!(moved.bytes, Some(4));
        let here = locate(crash_dir.join("x.dmp").to_str().unwrap(), Path::new("/nonexistent"));
        assert!(here.is_on_disk());
        let gone = locate("/var/lib/dispatch/crashes/gone.dmp", &crash_dir);
        assert!(!gone.is_on_disk());
        assert_eq!(gone.recorded, "/var/lib/dispatch/crashes/gone.dmp");
    }
}
