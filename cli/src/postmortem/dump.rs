//! Walking a minidump: every thread, with rust-minidump's unwinder (CFI from id-checked symbols,
//! then frame pointers, then stack scanning, each frame labelled with how it was found), and
//! inlined frames kept.
//!
//! The file is read into memory (not mapped: a dump truncated or rewritten while mapped would
//! fault the reader) and checked against its own directory first, so a cut-off dump is named
//! `truncated` with the byte where the missing data ends, instead of surfacing as a vague
//! stream error later.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use minidump::system_info::PointerWidth;
use minidump::{Minidump, Module};
use minidump_processor::ProcessState;
use minidump_unwind::{CallStack, CallStackInfo, FrameTrust, StackFrame, Symbolizer};

use super::PostmortemError;
use super::model::{
    CrashInfo, CrashingThread, DumpAnalysis, Frame, Hex, Inline, ModuleRow, SystemInfo, Thread,
    Trust,
};
use super::symbols::{IdCheckedSupplier, ModuleIds, Outcomes, SymbolSource};

/// `MDMP`, little-endian.
const SIGNATURE: u32 = 0x504d_444d;
const HEADER_BYTES: u64 = 32;
const DIRECTORY_ENTRY_BYTES: u64 = 12;
const MEMORY_LIST_STREAM: u32 = 5;
const MEMORY_DESCRIPTOR_BYTES: u64 = 16;

/// Walks every thread of the dump at `path`, symbolicating through `symbols` only.
///
/// Errors: [`PostmortemError::DumpUnreadable`] (cannot read the file),
/// [`PostmortemError::DumpTruncated`] (the file ends before data its directory points at),
/// [`PostmortemError::DumpMalformed`] (not a minidump, or no thread list / system info to walk).
/// Junk inside a stack is not an error: the walk stops or scans there, and the rest is reported.
pub fn analyze_dump(
    path: &Path,
    symbols: Arc<dyn SymbolSource>,
) -> Result<DumpAnalysis, PostmortemError> {
    let bytes = std::fs::read(path)
        .map_err(|source| PostmortemError::DumpUnreadable { path: path.into(), source })?;
    let mut warnings = check_layout(path, &bytes)?;
    let file_bytes = bytes.len() as u64;
    let malformed = |reason: String| PostmortemError::DumpMalformed { path: path.into(), reason };
    let dump = Minidump::read(bytes).map_err(|e| malformed(reader_error(&e)))?;
    warnings.extend(stream_warnings(&dump));

    let outcomes = Outcomes::default();
    let symbolizer = Symbolizer::new(IdCheckedSupplier::new(symbols, outcomes.clone()));
    // The processor should return errors for bad input; this is the backstop that keeps a bug
    // in it from taking `dispatchctl` down with a panic instead of naming the file.
    let walked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        block_on(minidump_processor::process_minidump(&dump, &symbolizer))
    }));
    let state = match walked {
        Ok(Ok(state)) => state,
        Ok(Err(e)) => return Err(malformed(process_error(&dump, &e))),
        Err(_) => return Err(malformed("the stack walker failed on this dump".into())),
    };
    if let Some(soft) = state.soft_errors.as_ref().filter(|v| !is_empty(v)) {
        warnings.push(soft_errors(soft));
    }
    let outcomes = outcomes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(convert(path, file_bytes, &state, &outcomes, warnings))
}

/// Header, stream directory and every known stream (and memory range) must lie inside the
/// file. A known stream that ends past the end of the file means the file was cut short:
/// truncated. A directory that overlaps the header, or a stream that overlaps the directory,
/// is malformed. Unknown stream types (vendors add their own) pointing outside the file are
/// ignored and said in the returned warnings.
fn check_layout(path: &Path, bytes: &[u8]) -> Result<Vec<String>, PostmortemError> {
    let len = bytes.len() as u64;
    let truncated = |what: String, needed: u64| PostmortemError::DumpTruncated {
        path: path.into(),
        file_bytes: len,
        needed,
        what,
    };
    let malformed = |reason: String| PostmortemError::DumpMalformed { path: path.into(), reason };
    if bytes.is_empty() {
        return Err(malformed("the file is empty".into()));
    }
    let u32_at = |off: u64| -> Option<u32> {
        let off = usize::try_from(off).ok()?;
        let b = bytes.get(off..off.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    match u32_at(0) {
        Some(SIGNATURE) => {}
        // Big-endian dumps exist (old PowerPC Macs): leave them to the reader.
        Some(sig) if sig.swap_bytes() == SIGNATURE => return Ok(Vec::new()),
        Some(sig) => {
            return Err(malformed(format!(
                "not a minidump: it starts with {sig:#010x}, not the signature MDMP"
            )));
        }
        None if bytes.starts_with(&b"MDMP"[..bytes.len().min(4)]) => {
            return Err(truncated("the header".into(), HEADER_BYTES));
        }
        None => return Err(malformed("not a minidump: shorter than a signature".into())),
    }
    if len < HEADER_BYTES {
        return Err(truncated("the header".into(), HEADER_BYTES));
    }
    let (count, dir_rva) = match (u32_at(8), u32_at(12)) {
        (Some(c), Some(r)) => (u64::from(c), u64::from(r)),
        _ => return Err(truncated("the header".into(), HEADER_BYTES)),
    };
    if dir_rva < HEADER_BYTES {
        return Err(malformed(format!(
            "the stream directory starts at byte {dir_rva}, inside the {HEADER_BYTES}-byte header"
        )));
    }
    let dir_end = dir_rva + count * DIRECTORY_ENTRY_BYTES;
    if dir_end > len {
        return Err(truncated(format!("the stream directory ({count} entries)"), dir_end));
    }
    let mut warnings = Vec::new();
    for i in 0..count {
        let at = dir_rva + i * DIRECTORY_ENTRY_BYTES;
        let (Some(kind), Some(size), Some(rva)) = (u32_at(at), u32_at(at + 4), u32_at(at + 8))
        else {
            continue;
        };
        if size == 0 || kind == 0 {
            continue; // an unused entry: no data to check
        }
        let end = u64::from(rva) + u64::from(size);
        let Some(name) = stream_name(kind) else {
            if end > len {
                warnings.push(format!(
                    "directory entry {i} (unknown stream type {kind:#x}) points at bytes {rva}..{end}, outside the file; ignored"
                ));
            }
            continue;
        };
        if u64::from(rva) < dir_end && end > dir_rva {
            return Err(malformed(format!(
                "stream {kind} ({name}) at byte {rva} overlaps the header or the stream directory"
            )));
        }
        if end > len {
            return Err(truncated(format!("stream {kind} ({name})"), end));
        }
        if kind == MEMORY_LIST_STREAM && size >= 4 {
            let rva = u64::from(rva);
            let n = u64::from(u32_at(rva).unwrap_or(0));
            // A descriptor count the stream cannot hold is malformed, not truncated: the
            // reader says so below.
            if 4 + n * MEMORY_DESCRIPTOR_BYTES > u64::from(size) {
                continue;
            }
            for j in 0..n {
                let d = rva + 4 + j * MEMORY_DESCRIPTOR_BYTES;
                let (Some(data_size), Some(data_rva)) = (u32_at(d + 8), u32_at(d + 12)) else {
                    continue;
                };
                let end = u64::from(data_rva) + u64::from(data_size);
                if end > len {
                    return Err(truncated(format!("memory range {j} of the memory list"), end));
                }
            }
        }
    }
    Ok(warnings)
}

/// Names of the stream types writers we know of produce (Microsoft's, Breakpad's Linux
/// streams, Mozilla's and Crashpad's); `None` for a type nobody we know writes.
fn stream_name(kind: u32) -> Option<&'static str> {
    Some(match kind {
        3 => "thread list",
        4 => "module list",
        5 => "memory list",
        6 => "exception",
        7 => "system info",
        9 => "memory64 list",
        14 => "unloaded module list",
        15 => "misc info",
        16 => "memory info list",
        24 => "thread names",
        1..=23 => "Windows stream",
        0x4767_0001..=0x4767_000f => "Linux process information",
        0x4d7a_0001..=0x4d7a_000f => "Mozilla crash information",
        0x4350_0001 => "Crashpad information",
        _ => return None,
    })
}

/// The reader's error with what it means for this file.
fn reader_error(e: &minidump::Error) -> String {
    format!("{e} ({})", e.name())
}

/// An empty soft-error stream (`[]`, `{}`, `null`): the writer had nothing to report.
fn is_empty(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Object(m) => m.is_empty(),
        serde_json::Value::Null => true,
        _ => false,
    }
}

/// The dump writer's own error stream (minidump-writer's `soft errors`), as the names of the
/// steps that failed: people read "SuspendThreadsErrors", not the JSON it came in.
fn soft_errors(v: &serde_json::Value) -> String {
    let mut steps: Vec<String> = Vec::new();
    let items: Vec<&serde_json::Value> = match v {
        serde_json::Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    for item in items {
        match item {
            serde_json::Value::Object(m) => steps.extend(m.keys().cloned()),
            serde_json::Value::String(s) => steps.push(s.clone()),
            _ => {}
        }
    }
    if steps.is_empty() {
        "the dump writer recorded errors while writing this dump".into()
    } else {
        format!(
            "the dump writer recorded errors while writing this dump (in {}): some facts may be missing",
            steps.join(", ")
        )
    }
}

/// The processor's error, with why the stream it needed is missing: absent from the
/// directory, or present and unreadable (the reader's words).
fn process_error(dump: &Minidump<'_, Vec<u8>>, e: &minidump_processor::ProcessError) -> String {
    use minidump::{MinidumpSystemInfo, MinidumpThreadList};
    use minidump_processor::ProcessError;
    let why = |r: Result<(), minidump::Error>, name: &str| match r {
        Err(minidump::Error::StreamNotFound) => format!("it has no {name} stream"),
        Err(err) => format!("its {name} stream is unreadable: {}", reader_error(&err)),
        Ok(()) => format!("its {name} stream could not be used"),
    };
    let reason = match e {
        ProcessError::MissingThreadList => {
            why(dump.get_stream::<MinidumpThreadList<'_>>().map(drop), "thread list")
        }
        ProcessError::MissingSystemInfo => {
            why(dump.get_stream::<MinidumpSystemInfo>().map(drop), "system info")
        }
        ProcessError::MinidumpReadError(err) => reader_error(err),
        other => other.to_string(),
    };
    format!("{reason}; the threads cannot be walked ({})", e.name())
}

/// Streams the walk needs that fail to parse: said in the report, the rest still reported.
fn stream_warnings(dump: &Minidump<'_, Vec<u8>>) -> Vec<String> {
    use minidump::{
        MinidumpException, MinidumpMemoryList, MinidumpModuleList, MinidumpSystemInfo,
        MinidumpThreadList,
    };
    let mut out = Vec::new();
    let mut check = |name: &str, r: Result<(), minidump::Error>| match r {
        Ok(()) | Err(minidump::Error::StreamNotFound) => {}
        Err(e) => out.push(format!("the {name} stream is unreadable: {}", reader_error(&e))),
    };
    check("thread list", dump.get_stream::<MinidumpThreadList<'_>>().map(drop));
    check("module list", dump.get_stream::<MinidumpModuleList>().map(drop));
    check("exception", dump.get_stream::<MinidumpException<'_>>().map(drop));
    check("system info", dump.get_stream::<MinidumpSystemInfo>().map(drop));
    check("memory list", dump.get_stream::<MinidumpMemoryList<'_>>().map(drop));
    out
}

fn convert(
    path: &Path,
    file_bytes: u64,
    state: &ProcessState,
    outcomes: &std::collections::BTreeMap<String, super::symbols::SymbolOutcome>,
    dump_warnings: Vec<String>,
) -> DumpAnalysis {
    let narrow = state.system_info.cpu.pointer_width() == PointerWidth::Bits32;
    let hex = |value: u64| Hex { value, narrow };
    let sys = &state.system_info;
    let system_info = SystemInfo {
        os: sys.os.long_name().to_string(),
        os_ver: sys.format_os_version().map(|v| v.into_owned()),
        cpu_arch: sys.cpu.to_string(),
        cpu_info: sys.cpu_info.clone(),
        cpu_count: sys.cpu_count,
    };
    let crash_info = CrashInfo {
        kind: state.exception_info.as_ref().map(|e| e.reason.to_string()),
        address: state.exception_info.as_ref().map(|e| hex(e.address.0)),
        crashing_thread: state.requesting_thread,
        assertion: state.assertion.clone(),
    };
    let threads: Vec<Thread> = state.threads.iter().map(|t| thread(t, &hex)).collect();
    let crashing_thread = state
        .requesting_thread
        .and_then(|i| Some(CrashingThread { threads_index: i, thread: threads.get(i)?.clone() }));
    let modules = state
        .modules
        .iter()
        .map(|m| {
            let ids = ModuleIds::of(m);
            let outcome = outcomes.get(&ids.code_file).cloned();
            ModuleRow {
                base_addr: hex(m.raw.base_of_image),
                end_addr: hex(m.raw.base_of_image.saturating_add(u64::from(m.raw.size_of_image))),
                filename: ids.name().to_owned(),
                code_file: ids.code_file.clone(),
                debug_file: ids.debug_file.clone(),
                debug_id: ids.debug_id.clone().unwrap_or_default(),
                code_id: ids.code_id.clone().unwrap_or_default(),
                version: m.version().map(|v| v.into_owned()).filter(|v| !v.is_empty()),
                missing_symbols: outcome.as_ref().is_some_and(|o| !o.loaded()),
                loaded_symbols: outcome.as_ref().is_some_and(|o| o.loaded()),
                symbols_note: outcome.as_ref().filter(|o| !o.loaded()).map(|o| o.describe(&ids)),
                symbols: outcome,
            }
        })
        .collect();
    let time = {
        let mut out = Vec::new();
        dispatch_journal::time::Timestamp::from_system_time(state.time).write_rfc3339(&mut out);
        String::from_utf8(out).ok()
    };
    DumpAnalysis {
        path: path.into(),
        file_bytes,
        time,
        pid: state.process_id,
        system_info,
        crash_info,
        crashing_thread,
        threads,
        modules,
        dump_warnings,
    }
}

fn thread(t: &CallStack, hex: &dyn Fn(u64) -> Hex) -> Thread {
    let walk_note = match t.info {
        CallStackInfo::Ok => None,
        CallStackInfo::MissingContext => Some("no register context in the dump"),
        CallStackInfo::MissingMemory => Some("no stack memory in the dump"),
        CallStackInfo::UnsupportedCpu => Some("unsupported CPU"),
        CallStackInfo::DumpThreadSkipped => Some("the dump writer's own thread (skipped)"),
    };
    Thread {
        thread_id: t.thread_id,
        thread_name: t.thread_name.clone().filter(|n| !n.is_empty()),
        frame_count: t.frames.len(),
        walk_note: walk_note.map(str::to_owned),
        frames: t.frames.iter().enumerate().map(|(i, f)| frame(i, f, hex)).collect(),
    }
}

fn frame(index: usize, f: &StackFrame, hex: &dyn Fn(u64) -> Hex) -> Frame {
    let base = f.module.as_ref().map(|m| m.raw.base_of_image);
    Frame {
        frame: index,
        module: f.module.as_ref().map(|m| ModuleIds::of(m).name().to_owned()),
        function: f.function_name.clone(),
        file: f.source_file_name.clone(),
        line: f.source_line,
        offset: hex(f.instruction),
        module_offset: base.map(|b| hex(f.instruction.wrapping_sub(b))),
        function_offset: f.function_base.map(|b| hex(f.instruction.wrapping_sub(b))),
        // Kept in minidump-unwind's order (innermost first, per its docs), which is the order
        // stackwalk prints them before the real frame: frame lists compare one to one.
        inlines: f
            .inlines
            .iter()
            .map(|i| Inline {
                function: i.function_name.clone(),
                file: i.source_file_name.clone(),
                line: i.source_line,
            })
            .collect(),
        missing_symbols: f.function_name.is_none(),
        trust: match f.trust {
            FrameTrust::Context => Trust::Context,
            FrameTrust::PreWalked => Trust::Prewalked,
            FrameTrust::CallFrameInfo => Trust::Cfi,
            FrameTrust::FramePointer => Trust::FramePointer,
            FrameTrust::CfiScan => Trust::CfiScan,
            FrameTrust::Scan => Trust::Scan,
            FrameTrust::None => Trust::None,
        },
    }
}

/// Runs a future to completion on this thread. The processor's futures do no I/O of their own
/// (symbol files are read synchronously by our supplier), so parking until woken is all the
/// executor they need; no runtime is linked for it.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(count: u32, dir_rva: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&SIGNATURE.to_le_bytes());
        b.extend_from_slice(&0xa793u32.to_le_bytes());
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(&dir_rva.to_le_bytes());
        b.extend_from_slice(&[0; 16]);
        b
    }

    #[test]
    fn layout_errors_name_what_is_cut_off() {
        let p = Path::new("x.dmp");
        let e = check_layout(p, b"MDMP\x93\xa7").unwrap_err();
        assert_eq!(e.code(), "postmortem_dump_truncated");
        assert!(e.to_string().contains("x.dmp is truncated: the header"), "{e}");
        let e = check_layout(p, b"ELF\x7f and more bytes than a header has, surely").unwrap_err();
        assert!(e.to_string().contains("not a minidump"), "{e}");
        assert_eq!(check_layout(p, b"").unwrap_err().code(), "postmortem_dump_malformed");
        // Directory past the end.
        let e = check_layout(p, &header(3, 32)).unwrap_err();
        assert!(e.to_string().contains("the stream directory (3 entries) ends at byte 68"), "{e}");
        // A stream past the end.
        let mut b = header(1, 32);
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&100u32.to_le_bytes());
        b.extend_from_slice(&44u32.to_le_bytes());
        let e = check_layout(p, &b).unwrap_err();
        assert!(e.to_string().contains("stream 4 (module list) ends at byte 144"), "{e}");
        assert!(e.to_string().contains("the file has 44 bytes"), "{e}");
        // A directory inside the header is malformed, not truncated.
        let e = check_layout(p, &header(1, 2)).unwrap_err();
        assert_eq!(e.code(), "postmortem_dump_malformed");
        assert!(e.to_string().contains("starts at byte 2, inside the 32-byte header"), "{e}");
        // An unknown vendor stream pointing outside the file is ignored, with a warning.
        let mut b = header(1, 32);
        b.extend_from_slice(&0x1234_5678u32.to_le_bytes());
        b.extend_from_slice(&100u32.to_le_bytes());
        b.extend_from_slice(&44u32.to_le_bytes());
        let w = check_layout(p, &b).unwrap();
        assert!(w[0].contains("unknown stream type 0x12345678"), "{w:?}");
    }

    #[test]
    fn block_on_runs_a_future_that_is_pending_once() {
        struct Once(bool);
        impl Future for Once {
            type Output = u8;
            fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u8> {
                if self.0 {
                    Poll::Ready(7)
                } else {
                    self.0 = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        }
        assert_eq!(block_on(Once(false)), 7);
    }
}
