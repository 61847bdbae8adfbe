//! The post-mortem report as plain data: what `--format json` prints and what the Markdown and
//! HTML renderings read. Field names follow `minidump-stackwalk --json` (rust-minidump's
//! `json-schema.md`) where the two overlap (`crash_info`, `crashing_thread`, `threads[].frames[]`
//! with `trust` and `inlines`, `modules[]` with `debug_id`, `code_id`, `missing_symbols`), and
//! 64-bit addresses are hex strings as there. Our own sections (`journal`, `contradictions`,
//! `symbols`) sit beside them. Absent facts are omitted, never `null`. Documented in docs/CLI.md.

use std::path::PathBuf;

use serde::{Serialize, Serializer};

use super::symbols::{ModuleIds, SymbolOutcome};

/// An address or offset, printed as stackwalk prints it: `0x` and 16 hex digits (8 for a
/// 32-bit dump).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hex {
    /// The number.
    pub value: u64,
    /// Print 8 digits instead of 16.
    pub narrow: bool,
}

impl std::fmt::Display for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.narrow {
            write!(f, "{:#010x}", self.value)
        } else {
            write!(f, "{:#018x}", self.value)
        }
    }
}

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How the stack walker found a frame, stackwalk's `trust` strings. `scan` and `cfi_scan` are
/// guesses from stack contents: low trust, never signature material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// The thread's register context (the top frame).
    Context,
    /// Given by an external walker.
    Prewalked,
    /// Call frame information from the module's symbols.
    Cfi,
    /// The previous frame's frame pointer.
    FramePointer,
    /// Scanning the stack, checked against CFI.
    CfiScan,
    /// Scanning the stack for something that looks like a return address.
    Scan,
    /// Unknown.
    None,
}

impl Trust {
    /// Frames found by scanning (or by nothing known) are guesses.
    pub fn is_low(self) -> bool {
        matches!(self, Trust::Scan | Trust::CfiScan | Trust::None)
    }

    /// Plain words for people.
    pub fn describe(self) -> &'static str {
        match self {
            Trust::Context => "context",
            Trust::Prewalked => "prewalked",
            Trust::Cfi => "cfi",
            Trust::FramePointer => "frame pointer",
            Trust::CfiScan => "scan (cfi), low trust",
            Trust::Scan => "scan, low trust",
            Trust::None => "unknown, low trust",
        }
    }
}

/// `system_info`.
#[derive(Debug, Clone, Serialize)]
pub struct SystemInfo {
    /// `Linux`, `Mac OS X`, `Windows NT`.
    pub os: String,
    /// Version and build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_ver: Option<String>,
    /// `amd64`, `x86`, `arm64`.
    pub cpu_arch: String,
    /// CPU description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_info: Option<String>,
    /// CPUs.
    pub cpu_count: usize,
}

/// `crash_info`.
#[derive(Debug, Clone, Serialize)]
pub struct CrashInfo {
    /// Crash reason as stackwalk words it (`SIGSEGV /SEGV_MAPERR`, `EXCEPTION_ACCESS_VIOLATION_WRITE`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The faulting address (from the exception record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Hex>,
    /// Index into `threads` of the crashing (requesting) thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crashing_thread: Option<usize>,
    /// An assertion message the dump carries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion: Option<String>,
}

/// One inlined call inside a real frame.
#[derive(Debug, Clone, Serialize)]
pub struct Inline {
    /// Function.
    pub function: String,
    /// Source file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Source line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

/// One real frame of a thread (`threads[].frames[]`).
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    /// Index of the real frame in its thread.
    pub frame: usize,
    /// Module file name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Function, from id-matched symbols only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Source file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Source line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The instruction address.
    pub offset: Hex,
    /// Offset into the module.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_offset: Option<Hex>,
    /// Offset into the function.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_offset: Option<Hex>,
    /// Calls inlined at this address, innermost first (stackwalk's order).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inlines: Vec<Inline>,
    /// No function name for this frame.
    pub missing_symbols: bool,
    /// How the frame was found.
    pub trust: Trust,
}

impl Frame {
    /// `module+0xoffset` (or the bare address outside any module): how a frame without
    /// symbols is named.
    pub fn location(&self) -> String {
        match (&self.module, self.module_offset) {
            (Some(m), Some(off)) => format!("{m}+{:#x}", off.value),
            _ => format!("{:#x}", self.offset.value),
        }
    }
}

/// One thread (`threads[]`).
#[derive(Debug, Clone, Serialize)]
pub struct Thread {
    /// OS thread id.
    pub thread_id: u32,
    /// Thread name (Linux cuts them to 15 bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_name: Option<String>,
    /// Real frames.
    pub frame_count: usize,
    /// Why the walk stopped short (`missing stack memory`, `the dump writer's own thread`),
    /// when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub walk_note: Option<String>,
    /// The frames, innermost first.
    pub frames: Vec<Frame>,
}

/// The crashing thread, repeated at the top level as stackwalk does, with its index.
#[derive(Debug, Clone, Serialize)]
pub struct CrashingThread {
    /// Index into `threads`.
    pub threads_index: usize,
    /// The thread.
    #[serde(flatten)]
    pub thread: Thread,
}

/// One loaded module (`modules[]`).
#[derive(Debug, Clone, Serialize)]
pub struct ModuleRow {
    /// Load address.
    pub base_addr: Hex,
    /// End address (exclusive).
    pub end_addr: Hex,
    /// File name.
    pub filename: String,
    /// The full path recorded where it ran.
    pub code_file: String,
    /// Debug file name.
    pub debug_file: String,
    /// Breakpad debug id (33 hex digits), empty when the dump has none (as stackwalk).
    pub debug_id: String,
    /// Code id (Linux: the GNU build-id), empty when none.
    pub code_id: String,
    /// Version string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Symbols were looked for and not loaded.
    pub missing_symbols: bool,
    /// Symbols were loaded.
    pub loaded_symbols: bool,
    /// What the symbol lookup did (absent when no frame needed this module).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbols: Option<SymbolOutcome>,
    /// The same for people: "no symbols for `<debug id>`", "refused ...".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbols_note: Option<String>,
}

/// A frame of the crashing thread with inlined calls expanded: what a crash signature is
/// computed from. Innermost first, as minidump-stackwalk lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlatFrame {
    /// Function (inlined or real), absent without symbols.
    pub function: Option<String>,
    /// Module file name.
    pub module: Option<String>,
    /// Offset into the module.
    pub module_offset: Option<u64>,
    /// The instruction address.
    pub address: u64,
    /// Source file.
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
    /// The real frame's trust (inlined calls share their frame's).
    pub trust: Trust,
    /// An inlined call, not a real frame.
    pub inlined: bool,
}

/// Everything the dump says: the dump half of a post-mortem, and what
/// [`super::analyze_dump`] returns.
#[derive(Debug, Clone, Serialize)]
pub struct DumpAnalysis {
    /// The dump file.
    pub path: PathBuf,
    /// Its size, bytes.
    pub file_bytes: u64,
    /// When the dump was written, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The crashed process's pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// OS and CPU.
    pub system_info: SystemInfo,
    /// Crash reason, address, crashing thread.
    pub crash_info: CrashInfo,
    /// The crashing thread again (stackwalk's top-level field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crashing_thread: Option<CrashingThread>,
    /// Every thread, walked.
    pub threads: Vec<Thread>,
    /// Loaded modules; the first is the main one.
    pub modules: Vec<ModuleRow>,
    /// Problems the processor worked around (a stream it could not read): the facts that
    /// survived are still reported.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dump_warnings: Vec<String>,
}

impl DumpAnalysis {
    /// The crashing thread, when the dump names one.
    pub fn crashing(&self) -> Option<&Thread> {
        self.threads.get(self.crash_info.crashing_thread?)
    }

    /// The crashing thread's frames with inlined calls expanded (innermost first).
    pub fn crashing_frames(&self) -> Vec<FlatFrame> {
        self.crashing().map(flatten).unwrap_or_default()
    }

    /// The module a frame is in, by file name.
    pub fn module(&self, filename: &str) -> Option<&ModuleRow> {
        self.modules.iter().find(|m| m.filename == filename)
    }
}

/// A thread's frames with inlines expanded, innermost first.
pub fn flatten(thread: &Thread) -> Vec<FlatFrame> {
    let mut out = Vec::new();
    for f in &thread.frames {
        for i in &f.inlines {
            out.push(FlatFrame {
                function: Some(i.function.clone()),
                module: f.module.clone(),
                module_offset: f.module_offset.map(|h| h.value),
                address: f.offset.value,
                file: i.file.clone(),
                line: i.line,
                trust: f.trust,
                inlined: true,
            });
        }
        out.push(FlatFrame {
            function: f.function.clone(),
            module: f.module.clone(),
            module_offset: f.module_offset.map(|h| h.value),
            address: f.offset.value,
            file: f.file.clone(),
            line: f.line,
            trust: f.trust,
            inlined: false,
        });
    }
    out
}

/// The ids of a module row, for the symbol seam.
impl From<&ModuleRow> for ModuleIds {
    fn from(m: &ModuleRow) -> Self {
        ModuleIds {
            code_file: m.code_file.clone(),
            debug_file: m.debug_file.clone(),
            debug_id: (!m.debug_id.is_empty()).then(|| m.debug_id.clone()),
            code_id: (!m.code_id.is_empty()).then(|| m.code_id.clone()),
        }
    }
}
