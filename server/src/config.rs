//! Settings: every one a `DEFAULT_*` constant, a flag and a `DISPATCH_*` environment variable
//! (clap's `env =`), resolved once into [`Settings`].
//!
//! Precedence is flag, then environment variable, then default. Paths left unset derive from
//! the var directory (`DISPATCH_VAR_DIR`), so moving it moves everything the server keeps.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser};

/// Address the HTTP API listens on. Env: `DISPATCH_ADDR`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:24991";
/// Root of everything the server keeps on disk. Env: `DISPATCH_VAR_DIR`.
pub const DEFAULT_VAR_DIR: &str = dispatch_journal::paths::DEFAULT_VAR_DIR;
/// Service name written in journal envelopes and segment names. Env: `DISPATCH_SERVICE`.
pub const DEFAULT_SERVICE: &str = "dispatch";
/// Turns holding a provider slot at once. Env: `DISPATCH_MAX_TURNS_IN_FLIGHT`.
pub const DEFAULT_MAX_TURNS_IN_FLIGHT: usize = 4;
/// Turns waiting for a slot before new ones are refused with 503. Env: `DISPATCH_MAX_QUEUE_DEPTH`.
pub const DEFAULT_MAX_QUEUE_DEPTH: usize = 256;
/// Largest accepted request body, bytes (1 MiB). Env: `DISPATCH_MAX_BODY_BYTES`.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Provider round trips per turn before the turn ends with an error. Env: `DISPATCH_MAX_STEPS`.
pub const DEFAULT_MAX_STEPS: u32 = 25;
/// Conversations the store keeps before new ones are refused. Env: `DISPATCH_MAX_CONVERSATIONS`.
pub const DEFAULT_MAX_CONVERSATIONS: u64 = 100_000;
/// Stored history of one conversation, bytes (64 MiB), before new turns are refused. Env: `DISPATCH_MAX_HISTORY_BYTES`.
pub const DEFAULT_MAX_HISTORY_BYTES: u64 = 64 * 1024 * 1024;
/// Byte budget of the heap profiles in `<var dir>/heap/` (256 MiB); the oldest go first. Env: `DISPATCH_HEAP_PROFILE_BUDGET_BYTES`.
pub const DEFAULT_HEAP_PROFILE_BUDGET_BYTES: u64 = 256 * 1024 * 1024;
/// Longest conversation title, bytes. Env: `DISPATCH_MAX_TITLE_BYTES`.
pub const DEFAULT_MAX_TITLE_BYTES: usize = 512;
/// Model output of one step, bytes (4 MiB); beyond it the turn ends with `output_limit`. Env: `DISPATCH_MAX_STEP_OUTPUT_BYTES`.
pub const DEFAULT_MAX_STEP_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
/// Model output of one turn over all its steps, bytes (16 MiB). Env: `DISPATCH_MAX_TURN_OUTPUT_BYTES`.
pub const DEFAULT_MAX_TURN_OUTPUT_BYTES: usize = 16 * 1024 * 1024;
/// Wall time a tool call may take, milliseconds. Env: `DISPATCH_TOOL_TIMEOUT_MS`.
pub const DEFAULT_TOOL_TIMEOUT_MS: u64 = 30_000;
/// Tool output kept in history, bytes (50 KB); the rest goes to a file. Env: `DISPATCH_TOOL_OUTPUT_MAX_BYTES`.
pub const DEFAULT_TOOL_OUTPUT_MAX_BYTES: usize = 50 * 1024;
/// Tool output kept in history, lines. Env: `DISPATCH_TOOL_OUTPUT_MAX_LINES`.
pub const DEFAULT_TOOL_OUTPUT_MAX_LINES: usize = 2000;
/// Byte budget of the tool-output directory (1 GiB); oldest offload files are deleted first. Env: `DISPATCH_TOOL_OUTPUT_BUDGET_BYTES`.
pub const DEFAULT_TOOL_OUTPUT_BUDGET_BYTES: u64 = 1024 * 1024 * 1024;
/// Largest offload file of one tool call, bytes (16 MiB); the call is killed when its output reaches it. Env: `DISPATCH_TOOL_OUTPUT_FILE_MAX_BYTES`.
pub const DEFAULT_TOOL_OUTPUT_FILE_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Parent of the per-conversation tool work directories (each `<this>/<conversation>`, 0700), outside the var directory. Env: `DISPATCH_TOOL_WORKDIR`.
pub const DEFAULT_TOOL_WORKDIR: &str = "/tmp/dispatch-tools";
/// `ssh -o ConnectTimeout=`, seconds. Env: `DISPATCH_SSH_CONNECT_TIMEOUT_S`.
pub const DEFAULT_SSH_CONNECT_TIMEOUT_S: u64 = 10;
/// Tokens per second the `sim` provider streams (0: as fast as it can). Env: `DISPATCH_SIM_TOKENS_PER_SEC`.
pub const DEFAULT_SIM_TOKENS_PER_SEC: u32 = 200;
/// Base URL of the OpenAI-compatible API (`https://` or `http://`). Env: `DISPATCH_OPENAI_BASE_URL`.
pub const DEFAULT_OPENAI_BASE_URL: &str = "http://127.0.0.1:11434/v1";
/// Model asked of the `openai` provider. Env: `DISPATCH_MODEL`.
pub const DEFAULT_OPENAI_MODEL: &str = "gpt-4o-mini";
/// Model name the `sim` provider reports.
pub const SIM_MODEL: &str = "sim-1";
/// Idle time allowed between two chunks of a provider stream, milliseconds. Env: `DISPATCH_PROVIDER_IDLE_TIMEOUT_MS`.
pub const DEFAULT_PROVIDER_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Time in-flight turns get to finish after SIGTERM before they are sealed, milliseconds. Env: `DISPATCH_SHUTDOWN_GRACE_MS`.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// Longest wait at start for the previous server's start lock on the store (`<store>.lock`),
/// milliseconds; then the start fails naming the holder. Env: `DISPATCH_START_LOCK_WAIT_MS`.
pub const DEFAULT_START_LOCK_WAIT_MS: u64 = 10_000;
/// Runtime-stall threshold, milliseconds (0: off). Env: `DISPATCH_STALL_THRESHOLD_MS`.
pub const DEFAULT_STALL_THRESHOLD_MS: u64 = 10_000;

/// A streamed turn whose client reads nothing for this long is detached from its stream: the
/// turn goes on and is stored, so a client that never reads cannot hold a provider slot. 2 s:
/// with 10 s, 20 silent clients held the 4 slots for 50 s and a well-behaved client's first
/// token waited 52 s at p99 (docs/BENCHMARKS.md, "Overload"); a reader slower than that gets
/// the stored turn from `GET /v1/conversations/{id}`.
pub const DEFAULT_STREAM_STALL_MS: u64 = 2_000;
/// Period of `conversation.memory` records, milliseconds (0: off). Env: `DISPATCH_CONVERSATION_MEMORY_INTERVAL_MS`.
pub const DEFAULT_CONVERSATION_MEMORY_INTERVAL_MS: u64 = 10_000;
/// Conversations per `conversation.memory` round (largest histories first). Env: `DISPATCH_CONVERSATION_MEMORY_TOP`.
pub const DEFAULT_CONVERSATION_MEMORY_TOP: usize = 5;
/// Memory sampler period, milliseconds. Env: `DISPATCH_SAMPLE_INTERVAL_MS`.
pub const DEFAULT_SAMPLE_INTERVAL_MS: u64 = 1000;
/// Byte budget of the crash dump directory (1 GiB); the oldest dumps go first. Env: `DISPATCH_CRASH_BUDGET_BYTES`.
pub const DEFAULT_CRASH_BUDGET_BYTES: u64 =
    dispatch_telemetry::crash::CrashBuilder::DEFAULT_DUMP_BUDGET_BYTES;
/// Conversations listed by `GET /v1/conversations` when `limit` is not given.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Largest `limit` `GET /v1/conversations` accepts.
pub const MAX_LIST_LIMIT: usize = 1000;

/// Which model provider drives the turn loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderKind {
    /// Deterministic scripted model driven by the user message; needs no network.
    Sim,
    /// OpenAI-compatible `/v1/chat/completions` streaming client.
    Openai,
}

impl ProviderKind {
    /// The name written in `turn.start`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::Openai => "openai",
        }
    }
}

/// Command-line flags of `dispatch-server`; each mirrors a `DISPATCH_*` environment variable.
#[derive(Debug, Clone, Parser)]
#[command(name = "dispatch-server", version, about = "The Dispatch agent server")]
#[deny(missing_docs)]
// The field docs are clap's `--help` text, where `<var dir>` reads as a placeholder, not HTML.
#[allow(rustdoc::invalid_html_tags)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port; see --addr-file).
    #[arg(long, env = "DISPATCH_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// File to write the bound address to once listening (for supervisors and tests).
    #[arg(long, env = "DISPATCH_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,
    /// Root of everything the server keeps on disk.
    #[arg(long, env = "DISPATCH_VAR_DIR", default_value = DEFAULT_VAR_DIR)]
    pub var_dir: PathBuf,
    /// Conversation database [default: <var dir>/dispatch.db]. (`--db` is the old spelling.)
    #[arg(long = "conversation-db", visible_alias = "db", env = "DISPATCH_DB")]
    pub db: Option<PathBuf>,
    /// Journal directory [default: <var dir>/journal].
    #[arg(long, env = "DISPATCH_JOURNAL_DIR")]
    pub journal_dir: Option<PathBuf>,
    /// Service name in every journal line and segment file name.
    #[arg(long, env = "DISPATCH_SERVICE", default_value = DEFAULT_SERVICE)]
    pub service: String,
    /// Journal segment size that triggers rotation, bytes [default: 64 MiB].
    #[arg(long, env = "DISPATCH_JOURNAL_SEGMENT_BYTES")]
    pub journal_segment_bytes: Option<u64>,
    /// Byte budget of all journal segments [default: 2 GiB].
    #[arg(long, env = "DISPATCH_JOURNAL_BUDGET_BYTES")]
    pub journal_budget_bytes: Option<u64>,
    /// Memory-pressure soft limit, bytes: at or above it new turns are refused (503, `Retry-After`) while
    /// in-flight turns go on [default: the cgroup's memory.high; neither: off].
    #[arg(long, env = "DISPATCH_MEMORY_SOFT_BYTES")]
    pub memory_soft_bytes: Option<u64>,
    /// Memory-pressure hard limit, bytes: at or above it in-flight turns are sealed and the process exits
    /// with status 75 for its supervisor to restart [default: the cgroup's memory.max; neither: off].
    #[arg(long, env = "DISPATCH_MEMORY_HARD_BYTES")]
    pub memory_hard_bytes: Option<u64>,
    /// Runtime-stall watchdog: no heartbeat from the async runtime for this long writes a `stall` record
    /// and a live minidump, once per stall (0: off).
    #[arg(long, env = "DISPATCH_STALL_THRESHOLD_MS", default_value_t = DEFAULT_STALL_THRESHOLD_MS)]
    pub stall_threshold_ms: u64,
    /// A streamed turn whose client reads nothing for this long is detached from its stream; the turn
    /// goes on and is stored (0: wait for the client forever).
    #[arg(long, env = "DISPATCH_STREAM_STALL_MS", default_value_t = DEFAULT_STREAM_STALL_MS)]
    pub stream_stall_ms: u64,
    /// Journal lines queued while the segment is busy before lines are dropped (and counted) [default: 4096].
    #[arg(long, env = "DISPATCH_JOURNAL_QUEUE_LINES")]
    pub journal_queue_lines: Option<usize>,
    /// Traces database the embedded collector drains the journal into [default: <var dir>/traces.db].
    #[arg(long, env = "DISPATCH_TRACES_DB")]
    pub traces_db: Option<PathBuf>,
    /// Do not run the embedded collector thread (run the standalone `dispatch-collector` instead).
    #[arg(long, env = "DISPATCH_NO_COLLECTOR", default_value_t = false, action = ArgAction::Set,
          value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub no_collector: bool,
    /// Directory for minidumps written by the crash monitor [default: <var dir>/crashes].
    #[arg(long, env = "DISPATCH_CRASH_DIR")]
    pub crash_dir: Option<PathBuf>,
    /// Symbol store (Breakpad layout): at start the server copies its own executable to
    /// `<store>/<name>/<DEBUG ID>/<name>` (0600) on a background thread, for post-mortems
    /// (`dispatchctl symbols`). Unset: off.
    #[arg(long, env = "DISPATCH_SYMBOL_STORE")]
    pub symbol_store: Option<PathBuf>,
    /// Byte budget of the crash dump directory; the oldest dumps are deleted first.
    #[arg(long, env = "DISPATCH_CRASH_BUDGET_BYTES", default_value_t = DEFAULT_CRASH_BUDGET_BYTES)]
    pub crash_budget_bytes: u64,
    /// Run under the out-of-process crash monitor (minidumps, true exit status); `off` disables.
    #[arg(long, env = "DISPATCH_CRASH_MONITOR", default_value_t = true, action = ArgAction::Set,
          value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub crash_monitor: bool,
    /// Same as `--crash-monitor=off`.
    #[arg(long, default_value_t = false)]
    pub no_crash_monitor: bool,
    /// Enables the admin API (`/admin/fault/*`, heap profiles) for callers that send
    /// `Authorization: Bearer <token>`. Off when unset. Never logged or journaled. Prefer the
    /// environment variable: a flag is visible to every user in `ps`.
    #[arg(long, env = "DISPATCH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The token every `/v1` request must carry (`Authorization: Bearer <token>`), at least 32
    /// bytes [default: the contents of <var dir>/api-token, created 0600 at the first start].
    /// Never logged or journaled; prefer the environment variable to the flag.
    #[arg(long, env = "DISPATCH_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Host names (with or without a port) accepted in the `Host` header besides the loopback
    /// names and the bound address, comma-separated (DNS-rebinding protection).
    #[arg(long, env = "DISPATCH_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Also listen on this Unix socket (created 0660), for peers of the allowed uids only.
    #[arg(long, env = "DISPATCH_LISTEN_UNIX")]
    pub listen_unix: Option<PathBuf>,
    /// Uids allowed to connect to the Unix socket, comma-separated [default: the server's own].
    #[arg(long, env = "DISPATCH_LISTEN_UNIX_UIDS", value_delimiter = ',')]
    pub listen_unix_uids: Vec<u32>,
    /// Directory for full tool output beyond the history bound [default: <var dir>/tool-output].
    #[arg(long, env = "DISPATCH_TOOL_OUTPUT_DIR")]
    pub tool_output_dir: Option<PathBuf>,
    /// Model provider.
    #[arg(long, env = "DISPATCH_PROVIDER", value_enum, default_value = "sim")]
    pub provider: ProviderKind,
    /// Model name [default: sim-1 for sim, gpt-4o-mini for openai].
    #[arg(long, env = "DISPATCH_MODEL")]
    pub model: Option<String>,
    /// Tokens per second the sim provider streams (0: unthrottled).
    #[arg(long, env = "DISPATCH_SIM_TOKENS_PER_SEC", default_value_t = DEFAULT_SIM_TOKENS_PER_SEC)]
    pub sim_tokens_per_sec: u32,
    /// Base URL of the OpenAI-compatible API, up to and including `/v1` (https or http).
    #[arg(long, env = "DISPATCH_OPENAI_BASE_URL", default_value = DEFAULT_OPENAI_BASE_URL)]
    pub openai_base_url: String,
    /// PEM file of CA certificates trusted for https, besides the built-in (webpki) roots.
    #[arg(long, env = "DISPATCH_OPENAI_CA_FILE")]
    pub openai_ca_file: Option<PathBuf>,
    /// API key sent as a bearer token to the openai provider (never logged or journaled).
    #[arg(long, env = "DISPATCH_OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    /// Idle time allowed between two chunks of a provider stream, milliseconds.
    #[arg(long, env = "DISPATCH_PROVIDER_IDLE_TIMEOUT_MS", default_value_t = DEFAULT_PROVIDER_IDLE_TIMEOUT_MS)]
    pub provider_idle_timeout_ms: u64,
    /// Turns holding a provider slot at once; more wait in a FIFO queue.
    #[arg(long, env = "DISPATCH_MAX_TURNS_IN_FLIGHT", default_value_t = DEFAULT_MAX_TURNS_IN_FLIGHT)]
    pub max_turns_in_flight: usize,
    /// Turns allowed to wait for a slot; beyond it new turns get 503.
    #[arg(long, env = "DISPATCH_MAX_QUEUE_DEPTH", default_value_t = DEFAULT_MAX_QUEUE_DEPTH)]
    pub max_queue_depth: usize,
    /// Largest accepted request body, bytes.
    #[arg(long, env = "DISPATCH_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Provider round trips per turn.
    #[arg(long, env = "DISPATCH_MAX_STEPS", default_value_t = DEFAULT_MAX_STEPS)]
    pub max_steps: u32,
    /// Conversations kept before new ones are refused (429 `conversation_limit`).
    #[arg(long, env = "DISPATCH_MAX_CONVERSATIONS", default_value_t = DEFAULT_MAX_CONVERSATIONS)]
    pub max_conversations: u64,
    /// Stored history bytes of one conversation before new turns are refused (409 `history_limit`).
    #[arg(long, env = "DISPATCH_MAX_HISTORY_BYTES", default_value_t = DEFAULT_MAX_HISTORY_BYTES)]
    pub max_history_bytes: u64,
    /// Byte budget of the heap profiles dumped through the admin API; the oldest are deleted.
    #[arg(long, env = "DISPATCH_HEAP_PROFILE_BUDGET_BYTES", default_value_t = DEFAULT_HEAP_PROFILE_BUDGET_BYTES)]
    pub heap_profile_budget_bytes: u64,
    /// Longest conversation title, bytes (400 `title_too_long`).
    #[arg(long, env = "DISPATCH_MAX_TITLE_BYTES", default_value_t = DEFAULT_MAX_TITLE_BYTES)]
    pub max_title_bytes: usize,
    /// Model output of one step, bytes; beyond it the turn ends with error `output_limit`.
    #[arg(long, env = "DISPATCH_MAX_STEP_OUTPUT_BYTES", default_value_t = DEFAULT_MAX_STEP_OUTPUT_BYTES)]
    pub max_step_output_bytes: usize,
    /// Model output of one turn over all its steps, bytes; beyond it the turn ends with `output_limit`.
    #[arg(long, env = "DISPATCH_MAX_TURN_OUTPUT_BYTES", default_value_t = DEFAULT_MAX_TURN_OUTPUT_BYTES)]
    pub max_turn_output_bytes: usize,
    /// Parent of the per-conversation tool work directories (`<dir>/<conversation>`, 0700,
    /// the only place a sandboxed tool may write; keep it outside the var directory).
    #[arg(long, env = "DISPATCH_TOOL_WORKDIR", default_value = DEFAULT_TOOL_WORKDIR)]
    pub tool_workdir: PathBuf,
    /// Confine tool calls (Landlock, a PID namespace per call); `false` runs them unconfined.
    #[arg(long, env = "DISPATCH_TOOL_SANDBOX", default_value_t = true, action = ArgAction::Set,
          value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub tool_sandbox: bool,
    /// Refuse to run tools (the call ends with an error) unless the sandbox is fully enforced.
    #[arg(long, env = "DISPATCH_TOOLS_REQUIRE_SANDBOX", default_value_t = false, action = ArgAction::Set,
          value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub tools_require_sandbox: bool,
    /// Environment variables passed to tools besides PATH, HOME, TMPDIR, LANG and TERM
    /// (comma-separated names; the server's secrets are never passed).
    #[arg(long, env = "DISPATCH_TOOL_ENV_ALLOW", value_delimiter = ',', value_parser = parse_env_name)]
    pub tool_env_allow: Vec<String>,
    /// Wall time a tool call may take, milliseconds.
    #[arg(long, env = "DISPATCH_TOOL_TIMEOUT_MS", default_value_t = DEFAULT_TOOL_TIMEOUT_MS)]
    pub tool_timeout_ms: u64,
    /// Tool output kept in history, bytes; the full output is offloaded to a file.
    #[arg(long, env = "DISPATCH_TOOL_OUTPUT_MAX_BYTES", default_value_t = DEFAULT_TOOL_OUTPUT_MAX_BYTES)]
    pub tool_output_max_bytes: usize,
    /// Tool output kept in history, lines.
    #[arg(long, env = "DISPATCH_TOOL_OUTPUT_MAX_LINES", default_value_t = DEFAULT_TOOL_OUTPUT_MAX_LINES)]
    pub tool_output_max_lines: usize,
    /// Byte budget of the tool-output directory; the oldest offload files are deleted first.
    #[arg(long, env = "DISPATCH_TOOL_OUTPUT_BUDGET_BYTES", default_value_t = DEFAULT_TOOL_OUTPUT_BUDGET_BYTES)]
    pub tool_output_budget_bytes: u64,
    /// Largest offload file of one tool call, bytes; the call is killed when it is reached.
    #[arg(long, env = "DISPATCH_TOOL_OUTPUT_FILE_MAX_BYTES", default_value_t = DEFAULT_TOOL_OUTPUT_FILE_MAX_BYTES)]
    pub tool_output_file_max_bytes: u64,
    /// ssh ConnectTimeout, seconds.
    #[arg(long, env = "DISPATCH_SSH_CONNECT_TIMEOUT_S", default_value_t = DEFAULT_SSH_CONNECT_TIMEOUT_S)]
    pub ssh_connect_timeout_s: u64,
    /// Resolve a backtrace into `panic` records. The first resolution loads the binary's
    /// debug info and keeps it (measured: about +55 MB anonymous memory once, not growing).
    #[arg(long, env = "DISPATCH_PANIC_BACKTRACE", default_value_t = true, action = ArgAction::Set,
          value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub panic_backtrace: bool,
    /// Register fault tools (`panic`) for drills and tests. Off by default.
    #[arg(long, env = "DISPATCH_FAULT_TOOLS", default_value_t = false, action = ArgAction::Set,
          value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub fault_tools: bool,
    /// Time in-flight turns get to finish after SIGTERM before they are sealed, milliseconds.
    #[arg(long, env = "DISPATCH_SHUTDOWN_GRACE_MS", default_value_t = DEFAULT_SHUTDOWN_GRACE_MS)]
    pub shutdown_grace_ms: u64,
    /// Longest wait at start for the previous server to release the store's start lock
    /// (`<store>.lock`), milliseconds; past it the start fails naming the holder's pid.
    #[arg(long, env = "DISPATCH_START_LOCK_WAIT_MS", default_value_t = DEFAULT_START_LOCK_WAIT_MS)]
    pub start_lock_wait_ms: u64,
    /// Period of conversation.memory records, milliseconds (0: off).
    #[arg(long, env = "DISPATCH_CONVERSATION_MEMORY_INTERVAL_MS", default_value_t = DEFAULT_CONVERSATION_MEMORY_INTERVAL_MS)]
    pub conversation_memory_interval_ms: u64,
    /// Conversations per conversation.memory round, largest histories first.
    #[arg(long, env = "DISPATCH_CONVERSATION_MEMORY_TOP", default_value_t = DEFAULT_CONVERSATION_MEMORY_TOP)]
    pub conversation_memory_top: usize,
    /// Memory sampler period, milliseconds.
    #[arg(long, env = "DISPATCH_SAMPLE_INTERVAL_MS", default_value_t = DEFAULT_SAMPLE_INTERVAL_MS)]
    pub sample_interval_ms: u64,
    /// Benchmarks only: run without the memory sampler. /health then reports 503.
    #[arg(long, env = "DISPATCH_BENCH_SAMPLER_OFF", default_value_t = false, hide = true, action = ArgAction::Set,
          value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub bench_sampler_off: bool,
    /// Benchmarks only: after each memory sample, print the wall time of each of its steps to
    /// stderr (`benches/sample_cost.rs` reads them).
    #[arg(long, env = "DISPATCH_BENCH_SAMPLE_STEPS", default_value_t = false, hide = true, action = ArgAction::Set,
          value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub bench_sample_steps: bool,
    /// Print the man page (roff) to stdout and exit; for packagers.
    #[arg(long, hide = true)]
    pub print_man: bool,
}

impl Config {
    /// Resolves derived paths and defaults into [`Settings`].
    pub fn resolve(self) -> Settings {
        let var = dispatch_journal::paths::VarDir::new(&self.var_dir);
        let model = self.model.clone().unwrap_or_else(|| match self.provider {
            ProviderKind::Sim => SIM_MODEL.to_owned(),
            ProviderKind::Openai => DEFAULT_OPENAI_MODEL.to_owned(),
        });
        Settings {
            addr: self.addr,
            addr_file: self.addr_file,
            db: self.db.unwrap_or_else(|| var.conversation_db()),
            journal_dir: self.journal_dir.unwrap_or_else(|| var.journal_dir()),
            traces_db: self.traces_db.unwrap_or_else(|| var.traces_db()),
            collector_enabled: !self.no_collector,
            crash_dir: self.crash_dir.unwrap_or_else(|| var.crash_dir()),
            crash_budget_bytes: self.crash_budget_bytes,
            symbol_store: self.symbol_store.filter(|p| !p.as_os_str().is_empty()),
            crash_monitor: self.crash_monitor && !self.no_crash_monitor,
            admin_token: self.admin_token.filter(|t| !t.is_empty()).map(AdminToken),
            api_token: self.api_token.filter(|t| !t.is_empty()).map(Secret),
            allowed_hosts: self.allowed_hosts.into_iter().filter(|h| !h.is_empty()).collect(),
            listen_unix: self.listen_unix,
            listen_unix_uids: self.listen_unix_uids,
            service: self.service,
            journal_segment_bytes: self.journal_segment_bytes,
            journal_budget_bytes: self.journal_budget_bytes,
            journal_queue_lines: self.journal_queue_lines,
            stall_threshold: (self.stall_threshold_ms > 0)
                .then(|| Duration::from_millis(self.stall_threshold_ms)),
            stream_stall: (self.stream_stall_ms > 0)
                .then(|| Duration::from_millis(self.stream_stall_ms)),
            memory_soft_bytes: self.memory_soft_bytes,
            memory_hard_bytes: self.memory_hard_bytes,
            tool_output_dir: self.tool_output_dir.unwrap_or_else(|| var.tool_output_dir()),
            var_dir: self.var_dir,
            provider: self.provider,
            model,
            sim_tokens_per_sec: self.sim_tokens_per_sec,
            openai_base_url: self.openai_base_url,
            openai_ca_file: self.openai_ca_file,
            openai_api_key: self.openai_api_key.filter(|k| !k.is_empty()).map(Secret),
            provider_idle_timeout: Duration::from_millis(self.provider_idle_timeout_ms.max(1)),
            max_turns_in_flight: self.max_turns_in_flight.max(1),
            max_queue_depth: self.max_queue_depth,
            max_body_bytes: self.max_body_bytes,
            max_steps: self.max_steps.max(1),
            max_conversations: self.max_conversations,
            max_history_bytes: self.max_history_bytes,
            max_title_bytes: self.max_title_bytes,
            heap_profile_budget_bytes: self.heap_profile_budget_bytes,
            max_step_output_bytes: self.max_step_output_bytes.max(1),
            max_turn_output_bytes: self.max_turn_output_bytes.max(1),
            tool_workdir: self.tool_workdir,
            tool_sandbox: self.tool_sandbox,
            tools_require_sandbox: self.tools_require_sandbox,
            tool_env_allow: self.tool_env_allow,
            tool_output_file_max_bytes: self.tool_output_file_max_bytes.max(1),
            tool_timeout: Duration::from_millis(self.tool_timeout_ms.max(1)),
            tool_output_max_bytes: self.tool_output_max_bytes.max(1),
            tool_output_max_lines: self.tool_output_max_lines.max(1),
            tool_output_budget_bytes: self.tool_output_budget_bytes,
            ssh_connect_timeout_s: self.ssh_connect_timeout_s.max(1),
            fault_tools: self.fault_tools,
            panic_backtrace: self.panic_backtrace,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            start_lock_wait: Duration::from_millis(self.start_lock_wait_ms),
            conversation_memory_interval: (self.conversation_memory_interval_ms > 0)
                .then(|| Duration::from_millis(self.conversation_memory_interval_ms)),
            conversation_memory_top: self.conversation_memory_top,
            sample_interval: Duration::from_millis(self.sample_interval_ms.max(1)),
            sampler_enabled: !self.bench_sampler_off,
            sample_steps_reported: self.bench_sample_steps,
        }
    }
}

/// Resolved settings the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub addr: SocketAddr,
    /// Where to write the bound address, if anywhere.
    pub addr_file: Option<PathBuf>,
    /// Var directory.
    pub var_dir: PathBuf,
    /// Conversation database.
    pub db: PathBuf,
    /// Journal directory.
    pub journal_dir: PathBuf,
    /// Traces database of the embedded collector.
    pub traces_db: PathBuf,
    /// Whether the embedded collector thread runs.
    pub collector_enabled: bool,
    /// Minidump directory.
    pub crash_dir: PathBuf,
    /// Byte budget of the minidump directory.
    pub crash_budget_bytes: u64,
    /// The symbol store the server copies its executable into at start; `None`: off.
    pub symbol_store: Option<PathBuf>,
    /// Whether to run under the crash monitor.
    pub crash_monitor: bool,
    /// Admin API token; `None`: the admin API is off (its routes answer 404).
    pub admin_token: Option<AdminToken>,
    /// The configured API token (`None`: the var directory's token file is used).
    pub api_token: Option<Secret>,
    /// Extra names accepted in the `Host` header.
    pub allowed_hosts: Vec<String>,
    /// The optional Unix socket listener.
    pub listen_unix: Option<PathBuf>,
    /// Uids allowed on the Unix socket (empty: the server's own).
    pub listen_unix_uids: Vec<u32>,
    /// Journal service name.
    pub service: String,
    /// Journal rotation size, when set (else the writer's default).
    pub journal_segment_bytes: Option<u64>,
    /// Journal byte budget, when set.
    pub journal_budget_bytes: Option<u64>,
    /// Journal queue bound, when set.
    pub journal_queue_lines: Option<usize>,
    /// Runtime-stall threshold, if the watchdog is on.
    pub stall_threshold: Option<Duration>,
    /// How long a streamed turn waits for its client to read, when bounded.
    pub stream_stall: Option<Duration>,
    /// Memory-pressure soft limit set by flag or env (else the cgroup's `memory.high`).
    pub memory_soft_bytes: Option<u64>,
    /// Memory-pressure hard limit set by flag or env (else the cgroup's `memory.max`).
    pub memory_hard_bytes: Option<u64>,
    /// Where full tool outputs are offloaded.
    pub tool_output_dir: PathBuf,
    /// Provider.
    pub provider: ProviderKind,
    /// Model name.
    pub model: String,
    /// Sim streaming rate, tokens per second (0: unthrottled).
    pub sim_tokens_per_sec: u32,
    /// OpenAI-compatible base URL.
    pub openai_base_url: String,
    /// Extra CA certificates (PEM) for the provider's https connections.
    pub openai_ca_file: Option<PathBuf>,
    /// OpenAI API key (secret).
    pub openai_api_key: Option<Secret>,
    /// Idle time allowed between provider chunks.
    pub provider_idle_timeout: Duration,
    /// Concurrency limit.
    pub max_turns_in_flight: usize,
    /// Queue bound.
    pub max_queue_depth: usize,
    /// Request body bound, bytes.
    pub max_body_bytes: usize,
    /// Step bound per turn.
    pub max_steps: u32,
    /// Conversations kept before new ones are refused.
    pub max_conversations: u64,
    /// Stored history bytes of one conversation before new turns are refused.
    pub max_history_bytes: u64,
    /// Longest title, bytes.
    pub max_title_bytes: usize,
    /// Byte budget of the heap profiles.
    pub heap_profile_budget_bytes: u64,
    /// Model output of one step, bytes.
    pub max_step_output_bytes: usize,
    /// Model output of one turn, bytes.
    pub max_turn_output_bytes: usize,
    /// Parent of the per-conversation tool work directories.
    pub tool_workdir: PathBuf,
    /// Whether tool calls are confined.
    pub tool_sandbox: bool,
    /// Whether tools are refused unless the sandbox is fully enforced.
    pub tools_require_sandbox: bool,
    /// Extra environment variable names passed to tools.
    pub tool_env_allow: Vec<String>,
    /// Largest offload file of one tool call, bytes.
    pub tool_output_file_max_bytes: u64,
    /// Tool timeout.
    pub tool_timeout: Duration,
    /// History bound for tool output, bytes.
    pub tool_output_max_bytes: usize,
    /// History bound for tool output, lines.
    pub tool_output_max_lines: usize,
    /// Byte budget of the tool-output directory.
    pub tool_output_budget_bytes: u64,
    /// ssh ConnectTimeout, seconds.
    pub ssh_connect_timeout_s: u64,
    /// Whether fault tools are registered.
    pub fault_tools: bool,
    /// Whether `panic` records carry a resolved backtrace.
    pub panic_backtrace: bool,
    /// SIGTERM grace period.
    pub shutdown_grace: Duration,
    /// Longest wait at start for the store's start lock.
    pub start_lock_wait: Duration,
    /// Period of `conversation.memory` records, if on.
    pub conversation_memory_interval: Option<Duration>,
    /// Conversations per `conversation.memory` round.
    pub conversation_memory_top: usize,
    /// Sampler period.
    pub sample_interval: Duration,
    /// Whether the sampler runs (off only for benchmarks).
    pub sampler_enabled: bool,
    /// Whether the sampler prints each sample's step timings to stderr (benchmarks only).
    pub sample_steps_reported: bool,
}

impl Settings {
    /// Settings for tests and embedding: every default, with the var directory at `var_dir`.
    pub fn for_var_dir(var_dir: &Path) -> Settings {
        let mut config = Config::parse_from(["dispatch-server"]);
        config.var_dir = var_dir.to_path_buf();
        config.db = None;
        config.journal_dir = None;
        config.traces_db = None;
        config.tool_output_dir = None;
        config.crash_dir = None;
        config.resolve()
    }

    /// Non-secret summary for `process.start` (the API key is left out).
    pub fn summary(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            m.insert(k.to_owned(), v);
        };
        put("addr", self.addr.to_string().into());
        put("var_dir", self.var_dir.display().to_string().into());
        put("db", self.db.display().to_string().into());
        put("journal_dir", self.journal_dir.display().to_string().into());
        put("traces_db", self.traces_db.display().to_string().into());
        put("collector", self.collector_enabled.into());
        put("crash_dir", self.crash_dir.display().to_string().into());
        put("crash_budget_bytes", self.crash_budget_bytes.into());
        // Whether the admin API is on; never the token.
        put("admin", self.admin_token.is_some().into());
        put("tool_output_dir", self.tool_output_dir.display().to_string().into());
        put("service", self.service.clone().into());
        put("provider", self.provider.as_str().into());
        put("model", self.model.clone().into());
        put("max_turns_in_flight", self.max_turns_in_flight.into());
        put("max_queue_depth", self.max_queue_depth.into());
        put("max_body_bytes", self.max_body_bytes.into());
        put("tool_output_max_bytes", self.tool_output_max_bytes.into());
        put("tool_output_max_lines", self.tool_output_max_lines.into());
        put("tool_output_file_max_bytes", self.tool_output_file_max_bytes.into());
        put("tool_workdir", self.tool_workdir.display().to_string().into());
        put("tools_require_sandbox", self.tools_require_sandbox.into());
        put("tool_env_allow", self.tool_env_allow.clone().into());
        put("fault_tools", self.fault_tools.into());
        put("panic_backtrace", self.panic_backtrace.into());
        put("sampler", self.sampler_enabled.into());
        m
    }
}

/// An environment variable name for `DISPATCH_TOOL_ENV_ALLOW`: letters, digits and `_`, not
/// starting with a digit.
fn parse_env_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not an environment variable name (letters, digits, _)"))
    }
}

/// The admin API's bearer token. Its `Debug` does not print it, and comparing takes the same
/// time wherever the first difference is.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// Whether `presented` is the token, compared in constant time (for a given length: the
    /// length itself is not secret enough to matter and is compared first).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        if expected.len() != presented.len() {
            return false;
        }
        let diff = expected.iter().zip(presented).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // `black_box` keeps the optimiser from turning the fold into an early exit.
        std::hint::black_box(diff) == 0
    }
}

/// A secret setting (the API token, the provider key): its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl Secret {
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_owned())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boolean_flags_take_a_bare_flag_or_a_boolish_value() {
        let parse = |args: &[&str]| Config::try_parse_from([&["dispatch-server"], args].concat());
        assert!(parse(&["--fault-tools"]).unwrap().fault_tools);
        assert!(!parse(&["--fault-tools", "false"]).unwrap().fault_tools);
        assert!(!parse(&["--fault-tools=0"]).unwrap().fault_tools);
        assert!(parse(&["--fault-tools=yes"]).unwrap().fault_tools);
        assert!(!parse(&["--panic-backtrace=off"]).unwrap().panic_backtrace);
        assert!(parse(&["--fault-tools=maybe"]).is_err());
    }

    #[test]
    fn paths_follow_the_var_dir_unless_set() {
        let s = Config::try_parse_from(["x", "--var-dir", "/srv/d", "--db", "/data/c.db"])
            .unwrap()
            .resolve();
        assert_eq!(s.db, PathBuf::from("/data/c.db"));
        assert_eq!(s.journal_dir, PathBuf::from("/srv/d/journal"));
        assert_eq!(s.traces_db, PathBuf::from("/srv/d/traces.db"));
        assert_eq!(s.tool_output_dir, PathBuf::from("/srv/d/tool-output"));
        assert_eq!(s.crash_dir, PathBuf::from("/srv/d/crashes"));
        assert!(!s.summary().contains_key("openai_api_key"));
    }

    #[test]
    fn tool_sandbox_settings() {
        let parse = |args: &[&str]| Config::try_parse_from([&["dispatch-server"], args].concat());
        let s = parse(&[]).unwrap().resolve();
        assert_eq!(s.tool_workdir, PathBuf::from(DEFAULT_TOOL_WORKDIR));
        assert!(s.tool_sandbox && !s.tools_require_sandbox && s.tool_env_allow.is_empty());
        assert_eq!(s.tool_output_file_max_bytes, DEFAULT_TOOL_OUTPUT_FILE_MAX_BYTES);
        let s = parse(&["--tool-env-allow", "RUST_LOG, LC_ALL", "--tools-require-sandbox"])
            .unwrap()
            .resolve();
        assert_eq!(s.tool_env_allow, ["RUST_LOG", "LC_ALL"]);
        assert!(s.tools_require_sandbox);
        let err = parse(&["--tool-env-allow", "A=B"]).unwrap_err().to_string();
        assert!(err.contains("\"A=B\" is not an environment variable name"), "{err}");
    }

    #[test]
    fn crash_monitor_collector_and_admin_switches() {
        let parse = |args: &[&str]| {
            Config::try_parse_from([&["dispatch-server"], args].concat()).unwrap().resolve()
        };
        let s = parse(&[]);
        assert!(s.crash_monitor && s.collector_enabled && s.admin_token.is_none());
        assert!(!parse(&["--no-crash-monitor"]).crash_monitor);
        assert!(!parse(&["--crash-monitor=off"]).crash_monitor);
        assert!(!parse(&["--no-collector"]).collector_enabled);
        assert!(parse(&["--admin-token", ""]).admin_token.is_none(), "an empty token is no token");
        let s = parse(&["--admin-token", "s3cret-token"]);
        let token = s.admin_token.clone().unwrap();
        assert!(token.matches(b"s3cret-token"));
        assert!(
            !token.matches(b"s3cret-tokeN") && !token.matches(b"s3cret") && !token.matches(b"")
        );
        assert!(!format!("{s:?}").contains("s3cret"), "Debug never prints the token");
        assert_eq!(s.summary()["admin"], true);
        assert!(!serde_json::Value::Object(s.summary()).to_string().contains("s3cret"));
    }
}
