//! The record kinds of journal format v1 and their kind-specific fields.
//!
//! Every field except the few marked required is optional: a writer leaves out what it could
//! not read (an unreadable value is absent, never 0), and a reader accepts whatever is missing.
//! Kind structs never reuse an envelope name (`v`, `ts`, `kind`, `boot`, `seq`, `service`,
//! `truncated`), so fields sit flat beside the envelope on one JSON object.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time::Timestamp;

/// A 64-bit address or id written as a `0x`-prefixed hex string, because JSON readers often hold
/// numbers as doubles (rust-minidump's schema makes the same choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct HexU64(pub u64);

impl Serialize for HexU64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:#018x}", self.0))
    }
}

impl<'de> Deserialize<'de> for HexU64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HexU64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hex string such as \"0x0000000000000000\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HexU64, E> {
                let digits = v
                    .strip_prefix("0x")
                    .or_else(|| v.strip_prefix("0X"))
                    .ok_or_else(|| E::custom(format_args!("{v:?} does not start with 0x")))?;
                u64::from_str_radix(digits, 16)
                    .map(HexU64)
                    .map_err(|_| E::custom(format_args!("{v:?} is not a 64-bit hex number")))
            }
        }
        d.deserialize_str(V)
    }
}

macro_rules! opt {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        $vis struct $name {
            $(
                $(#[$fm])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $f: Option<$t>,
            )*
        }
    };
}

/// `journal.segment`: the first line of every segment file. `(boot, segment)` is the segment's
/// identity, whatever the file is called.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SegmentHeader {
    /// Segment number, also in the file name. Required.
    pub segment: u64,
    /// When the segment was opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Timestamp>,
    /// Process id of the writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Writer name and version, e.g. `dispatch-telemetry 0.1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
}

opt! {
    /// Memory limits that applied to the process (cgroup v2 `memory.high` / `memory.max`).
    /// Absent when unlimited or unreadable.
    pub struct Limits {
        /// Soft limit in bytes.
        memory_high: u64,
        /// Hard limit in bytes.
        memory_max: u64,
    }
}

opt! {
    /// `process.start`: one per boot, right after the first segment header.
    pub struct ProcessStart {
        /// Process id.
        pid: u32,
        /// Parent process id (the crash monitor when it runs).
        ppid: u32,
        /// Package version of the service.
        version: String,
        /// GNU build-id of the executable, lowercase hex.
        build_id: String,
        /// Git commit the binary was built from.
        git_sha: String,
        /// Allocator name and version, e.g. `jemalloc 5.3.0`.
        allocator: String,
        /// Host name.
        host: String,
        /// Kernel release.
        kernel: String,
        /// Memory limits in force at start.
        limits: Limits,
        /// Non-secret configuration summary.
        config: serde_json::Map<String, serde_json::Value>,
    }
}

opt! {
    /// `process.stop`: a clean stop.
    pub struct ProcessStop {
        /// `shutdown`, `signal:SIGTERM`, `pressure`.
        reason: String,
        /// Milliseconds since start.
        uptime_ms: u64,
        /// Turns sealed because the grace period ran out.
        turns_sealed: u64,
    }
}

opt! {
    /// jemalloc statistics, bytes, read after one `epoch` advance.
    pub struct JemallocStats {
        /// `stats.allocated`: bytes in live allocations.
        allocated: u64,
        /// `stats.active`: bytes in active pages.
        active: u64,
        /// `stats.resident`: bytes in resident pages mapped by the allocator (may overstate).
        resident: u64,
        /// `stats.mapped`: bytes in active extents mapped by the allocator.
        mapped: u64,
        /// `stats.retained`: bytes in virtual memory retained for reuse (not resident).
        retained: u64,
        /// `stats.metadata`: bytes of allocator metadata.
        metadata: u64,
    }
}

opt! {
    /// cgroup v2 `memory.events` counters.
    pub struct CgroupEvents {
        /// Times usage went over `memory.high`.
        high: u64,
        /// Times usage hit `memory.max`.
        max: u64,
        /// Times the OOM killer was invoked in the cgroup.
        oom: u64,
        /// Processes of the cgroup the OOM killer killed.
        oom_kill: u64,
    }
}

opt! {
    /// cgroup v2 memory figures of the process's own cgroup, bytes.
    pub struct CgroupMemory {
        /// `memory.current`.
        current: u64,
        /// `memory.peak`.
        peak: u64,
        /// `memory.high` (absent when `max`, i.e. unlimited).
        high: u64,
        /// `memory.max` (absent when `max`, i.e. unlimited).
        max: u64,
        /// `memory.events`.
        events: CgroupEvents,
    }
}

opt! {
    /// Load gauges supplied by the host application at sample time.
    pub struct Load {
        /// Conversations with a turn running or queued.
        conversations_active: u64,
        /// Turns holding a provider slot.
        turns_in_flight: u64,
        /// Turns waiting for a provider slot.
        queue_depth: u64,
        /// Conversations held in memory.
        conversations_loaded: u64,
        /// Bytes of application state the host accounts for (histories, caches).
        state_bytes: u64,
    }
}

opt! {
    /// `memory.sample`: one periodic sample. Each figure keeps its source.
    pub struct MemorySample {
        /// Resident set size from `/proc/self/statm`, bytes.
        rss: u64,
        /// Peak RSS (`VmHWM`) from `/proc/self/status`, bytes.
        hwm: u64,
        /// `RssAnon` from `/proc/self/status`, bytes.
        rss_anon: u64,
        /// `RssFile` from `/proc/self/status`, bytes.
        rss_file: u64,
        /// `Threads` from `/proc/self/status`.
        threads: u64,
        /// jemalloc statistics (absent without the `jemalloc` feature).
        jemalloc: JemallocStats,
        /// cgroup v2 memory figures (absent outside a cgroup v2 memory controller).
        cgroup: CgroupMemory,
        /// Host load gauges.
        load: Load,
        /// Milliseconds since process start.
        uptime_ms: u64,
        /// Microseconds this sample took to take.
        cost_us: u64,
        /// Journal lines dropped (queue full) since the previous sample.
        dropped: u64,
    }
}

/// `conversation.memory`: memory held by one conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationMemory {
    /// Conversation id. Required.
    pub conversation: String,
    /// Turns so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turns: Option<u64>,
    /// Bytes of message history held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_bytes: Option<u64>,
    /// Live bytes counted by the tagged allocator, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_bytes: Option<u64>,
    /// Bytes allocated on its behalf since the previous record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloc_bytes: Option<u64>,
    /// Bytes freed on its behalf since the previous record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freed_bytes: Option<u64>,
}

opt! {
    /// `turn.start`.
    pub struct TurnStart {
        /// Conversation id.
        conversation: String,
        /// Turn id.
        turn: String,
        /// Provider name (`sim`, `openai`).
        provider: String,
        /// Model name.
        model: String,
    }
}

opt! {
    /// `turn.end`. A turn cut off by a crash gets `outcome: "sealed"` from the next boot, without
    /// durations or byte counts.
    pub struct TurnEnd {
        /// Conversation id.
        conversation: String,
        /// Turn id.
        turn: String,
        /// `ok`, `error`, `cancelled` or `sealed` (readers accept other values).
        outcome: String,
        /// Wall time of the turn.
        duration_ms: u64,
        /// Provider round trips.
        steps: u64,
        /// Tool calls made.
        tool_calls: u64,
        /// Bytes of assistant output.
        output_bytes: u64,
        /// Whether a tool's output was cut to the history bound.
        tool_output_truncated: bool,
        /// Bytes allocated by the turn's task (jemalloc thread counters around each poll).
        alloc_bytes: u64,
        /// Bytes freed by the turn's task.
        freed_bytes: u64,
        /// Error message when the outcome is `error`.
        error: String,
    }
}

opt! {
    /// `error.unhandled`: an error caught at a turn boundary.
    pub struct ErrorUnhandled {
        /// Error message (chain).
        message: String,
        /// Stable error code, when the error has one.
        code: String,
        /// `task`, `tool`, `provider`, `ssh`, `api`.
        source: String,
        /// The id the client was given for this error (`api`: the details stay here).
        error_id: String,
        /// Conversation id.
        conversation: String,
        /// Turn id.
        turn: String,
        /// Captured backtrace.
        backtrace: String,
        /// Conversations active when it happened.
        active_conversations: Vec<String>,
        /// The last memory sample, inline.
        memory: Box<MemorySample>,
    }
}

opt! {
    /// `panic`: a Rust panic, from the chained panic hook.
    pub struct Panic {
        /// Panic payload.
        message: String,
        /// `file:line:column`.
        location: String,
        /// Thread name.
        thread: String,
        /// Captured backtrace.
        backtrace: String,
        /// Conversation the panicking task served.
        conversation: String,
        /// Turn the panicking task served.
        turn: String,
        /// Whether the panic ends the process.
        fatal: bool,
        /// Conversations active when it happened (when the host supplies them).
        active_conversations: Vec<String>,
        /// The last memory sample, inline (when the host supplies it).
        memory: Box<MemorySample>,
    }
}

opt! {
    /// `crash`: written by the crash monitor for its child, after the child is gone.
    pub struct Crash {
        /// Signal name, e.g. `SIGSEGV`.
        signal: String,
        /// Signal number.
        signo: i32,
        /// `si_code`.
        code: i32,
        /// Faulting address from the exception's memory access.
        fault_address: HexU64,
        /// Crashing thread id.
        thread: u64,
        /// Crashing thread name.
        thread_name: String,
        /// Path of the minidump.
        minidump: String,
        /// Size of the minidump.
        minidump_bytes: u64,
        /// Why no dump was written, when none was.
        dump_error: String,
        /// GNU build-id of the crashed executable.
        build_id: String,
        /// Milliseconds the child ran.
        uptime_ms: u64,
        /// The child's last memory sample.
        last_sample: Box<MemorySample>,
        /// Conversations active at the crash.
        active_conversations: Vec<String>,
    }
}

opt! {
    /// `exit`: how a process ended, from its wait status. Written by the crash monitor (under
    /// the child's boot) or by the next start (under its own boot, naming the old one in
    /// `exited_boot`).
    pub struct Exit {
        /// Exit code; absent for a death by signal.
        status: i32,
        /// Signal name for a death by signal.
        signal: String,
        /// Signal number for a death by signal.
        signo: i32,
        /// Whether the kernel wrote a core dump.
        core_dumped: bool,
        /// Whether the cgroup's `oom_kill` count rose.
        oom_killed: bool,
        /// Milliseconds the process ran.
        uptime_ms: u64,
        /// Process id that exited.
        pid: u32,
        /// Boot id of the process that exited, when it is not the envelope's.
        exited_boot: String,
    }
}

opt! {
    /// `pressure`: the memory circuit breaker acted.
    pub struct Pressure {
        /// `normal`, `high` or `critical`: the level after the action.
        level: String,
        /// The measured figure, bytes: RSS, or the cgroup's `memory.current` when the limit is
        /// the cgroup's.
        rss: u64,
        /// The limit crossed (or, for `resume`, the soft limit), bytes.
        limit: u64,
        /// `shed` (soft limit reached: new turns refused from now), `refuse` (a turn refused;
        /// at most one record a second), `resume` (back below 90% of the soft limit),
        /// `recycle` (hard limit: sealing and exiting with status 75).
        action: String,
    }
}

opt! {
    /// `stall`: the host's async runtime stopped answering its heartbeat (a blocked worker, a
    /// deadlock), seen from the sampler's OS thread. One `begin` per stall, with a live
    /// minidump of the still-running process; one `end` when the runtime beats again.
    pub struct Stall {
        /// `begin` or `end`.
        phase: String,
        /// Milliseconds since the runtime's last heartbeat (for `end`: the whole stall).
        stalled_ms: u64,
        /// The threshold that was crossed, milliseconds.
        threshold_ms: u64,
        /// Turns in flight when it was seen.
        turns_in_flight: u64,
        /// RSS at the last sample, bytes.
        rss: u64,
        /// The live minidump the crash monitor wrote (`begin`).
        minidump: String,
        /// Why there is no minidump (`begin`).
        dump_error: String,
    }
}

opt! {
    /// `heap.profile`: a jemalloc heap profile was dumped.
    pub struct HeapProfile {
        /// Path of the profile.
        path: String,
        /// `manual`, `pressure` or `interval`.
        trigger: String,
        /// Size of the profile file.
        bytes: u64,
    }
}

opt! {
    /// `symbols.stored`: what became of the server's copy of its own executable in the symbol
    /// store (`DISPATCH_SYMBOL_STORE`), written once per boot by a background thread.
    pub struct SymbolsStored {
        /// The copy: `<store>/<name>/<DEBUG ID>/<name>`.
        path: String,
        /// GNU build-id of the running executable, lowercase hex.
        build_id: String,
        /// Its Breakpad debug id ([`crate::symbols::debug_id_from_build_id`]).
        debug_id: String,
        /// `copied`, `present` (this build was already stored) or `failed`.
        outcome: String,
        /// Size of the executable.
        bytes: u64,
        /// Time the copy took, milliseconds.
        duration_ms: u64,
        /// Why it failed (`outcome: failed`).
        error: String,
    }
}

/// `journal.dropped`: lines dropped because the writer's queue was full.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JournalDropped {
    /// Lines dropped since the previous `journal.dropped`. Required.
    pub count: u64,
}

/// `conversation.repair`: one repair made by repair-and-seal at start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationRepair {
    /// Conversation id. Required.
    pub conversation: String,
    /// `status_reset`, `orphaned_tool_call`, `partial_output_kept`, `empty_message_dropped`,
    /// `turn_sealed` (readers accept other values). Required.
    pub action: String,
    /// Turn id the repair touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<String>,
    /// What was repaired, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

macro_rules! kinds {
    ($( $(#[$m:meta])* $variant:ident($ty:ty) = $name:literal, critical = $crit:literal; )*) => {
        /// A record of a known kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Record {
            $( $(#[$m])* $variant($ty), )*
        }

        /// Every kind name this build knows, in documentation order.
        pub const KINDS: &[&str] = &[$($name),*];

        impl Record {
            /// The `kind` string of this record.
            pub fn kind(&self) -> &'static str {
                match self { $( Record::$variant(_) => $name, )* }
            }

            /// Whether the writer syncs immediately after this record (and, for `crash`,
            /// `panic` and `exit`, keeps its segment until the collector has drained it).
            pub fn is_critical(&self) -> bool {
                match self { $( Record::$variant(_) => $crit, )* }
            }

            /// Serializes the kind-specific fields as one JSON object.
            pub(crate) fn write_fields(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
                match self { $( Record::$variant(r) => serde_json::to_writer(out, r), )* }
            }

            /// The kind-specific fields as a JSON value (the slow path that truncates).
            pub(crate) fn fields_value(&self) -> serde_json::Result<serde_json::Value> {
                match self { $( Record::$variant(r) => serde_json::to_value(r), )* }
            }

            /// Decodes the kind-specific fields of a known kind; `None` for an unknown kind.
            pub(crate) fn decode_fields(
                kind: &str,
                bytes: &[u8],
            ) -> Option<Result<Record, serde_json::Error>> {
                match kind {
                    $( $name => Some(serde_json::from_slice::<$ty>(bytes).map(Record::$variant)), )*
                    _ => None,
                }
            }

            /// Field names of a kind's struct, for the documentation test.
            #[cfg(test)]
            pub(crate) fn field_names(kind: &str) -> Option<&'static [&'static str]> {
                match kind {
                    $( $name => Some(crate::tests::field_names::<$ty>()), )*
                    _ => None,
                }
            }

            /// Like [`Record::decode_fields`], naming the field that failed.
            pub(crate) fn decode_fields_traced(
                kind: &str,
                bytes: &[u8],
            ) -> Option<Result<Record, serde_path_to_error::Error<serde_json::Error>>> {
                match kind {
                    $( $name => {
                        let mut de = serde_json::Deserializer::from_slice(bytes);
                        Some(serde_path_to_error::deserialize::<_, $ty>(&mut de).map(Record::$variant))
                    } )*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    /// `journal.segment`
    SegmentHeader(SegmentHeader) = "journal.segment", critical = false;
    /// `journal.dropped`
    JournalDropped(JournalDropped) = "journal.dropped", critical = false;
    /// `process.start`
    ProcessStart(ProcessStart) = "process.start", critical = false;
    /// `process.stop`
    ProcessStop(ProcessStop) = "process.stop", critical = true;
    /// `memory.sample`
    MemorySample(MemorySample) = "memory.sample", critical = false;
    /// `conversation.memory`
    ConversationMemory(ConversationMemory) = "conversation.memory", critical = false;
    /// `conversation.repair`
    ConversationRepair(ConversationRepair) = "conversation.repair", critical = false;
    /// `turn.start`
    TurnStart(TurnStart) = "turn.start", critical = false;
    /// `turn.end`
    TurnEnd(TurnEnd) = "turn.end", critical = false;
    /// `error.unhandled`
    ErrorUnhandled(ErrorUnhandled) = "error.unhandled", critical = true;
    /// `panic`
    Panic(Panic) = "panic", critical = true;
    /// `crash`
    Crash(Crash) = "crash", critical = true;
    /// `exit`
    Exit(Exit) = "exit", critical = true;
    /// `pressure`
    Pressure(Pressure) = "pressure", critical = true;
    /// `stall`
    Stall(Stall) = "stall", critical = true;
    /// `heap.profile`
    HeapProfile(HeapProfile) = "heap.profile", critical = false;
    /// `symbols.stored`
    SymbolsStored(SymbolsStored) = "symbols.stored", critical = false;
}

impl Record {
    /// Whether a segment holding this record is kept past the byte budget until the collector
    /// has drained it (`crash`, `panic`, `exit`).
    pub fn is_retained(&self) -> bool {
        matches!(self, Record::Crash(_) | Record::Panic(_) | Record::Exit(_))
    }
}
