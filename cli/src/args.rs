//! What was typed: the clap structures, validated without I/O. [`crate::mem::Settings`] turns
//! them into paths and opened files.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Tells on-call whether memory growth is a leak or the working set, and which conversations
/// hold it, from the Dispatch traces database.
///
/// Exit status: 0 done; 1 done, but bad input was skipped (listed on stderr); 2 failed;
/// 3 `mem --check` found a LEAK.
#[derive(Debug, Parser)]
#[command(name = "dispatchctl", version, about, long_about = None)]
#[deny(missing_docs)]
pub struct Cli {
    /// Traces database to read (`--db` is the old spelling).
    #[arg(
        long = "traces-db",
        visible_alias = "db",
        global = true,
        env = "DISPATCH_TRACES_DB",
        value_name = "PATH"
    )]
    pub db: Option<PathBuf>,
    /// Read this journal directory instead: it is first drained into a cached database beside
    /// it (`<DIR>.dispatchctl.db`).
    #[arg(
        long,
        global = true,
        env = "DISPATCH_JOURNAL_DIR",
        value_name = "DIR",
        conflicts_with = "db"
    )]
    pub journal: Option<PathBuf>,
    /// Where the server keeps its files; the database defaults to `<var dir>/traces.db`.
    #[arg(
        long,
        global = true,
        env = "DISPATCH_VAR_DIR",
        value_name = "DIR",
        default_value = dispatch_journal::paths::DEFAULT_VAR_DIR
    )]
    pub var_dir: PathBuf,
    /// Print one JSON document (schema: docs/CLI.md) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Colour: auto (only on a terminal, never with NO_COLOR), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// When to colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Is memory growth a leak or the working set? One verdict with its evidence.
    Mem(MemArgs),
    /// Every abnormal end across boots, grouped by signature; crash loops; `send` to Sentry.
    ///
    /// Each end: time, boot, uptime, signal or exit status, OOM, signature, whether the dump
    /// is still on disk, the fatal panic. A banner comes first when the service is
    /// crash-looping (3 or more abnormal exits within 10 minutes with shrinking uptime).
    Crashes(CrashesArgs),
    /// Journal tools.
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Why a boot died: its minidump walked and symbolicated, joined with its journal.
    Postmortem(PostmortemArgs),
    /// jemalloc heap profiles of a running server: start, dump, diff.
    #[command(subcommand)]
    Heap(HeapCommand),
    /// Check a running install: telemetry, crash capture, limits, file modes, disk, collector
    /// lag, symbols. pass/warn/fail, each with its fix; exit 0 all pass, 1 warnings, 2 failures.
    Doctor {
        /// The server's address (its `/health` needs no token).
        #[arg(long, env = "DISPATCH_ADDR", default_value = "127.0.0.1:24991")]
        addr: String,
    },
    /// The build-id symbol store: add binaries, list builds, fetch from debuginfod.
    #[command(subcommand)]
    Symbols(crate::symbols::command::SymbolsCommand),
    /// Print a shell completion script to stdout (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, or write one page per command into a directory.
    Man {
        /// Write dispatchctl.1 and a page per subcommand (dispatchctl-mem.1, ...) into DIR.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// Where the server's admin API is.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct AdminArgs {
    /// The server's address: host:port (plain HTTP), or an http:// or https:// URL.
    #[arg(long, env = "DISPATCH_ADDR", default_value = "127.0.0.1:24991")]
    pub addr: String,
    /// The admin token the server was started with.
    #[arg(long, env = "DISPATCH_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// `dispatchctl heap ...`.
#[derive(Debug, Subcommand)]
pub enum HeapCommand {
    /// Switch heap-profile sampling on (jemalloc `prof.active`).
    Start(AdminArgs),
    /// Switch it off.
    Stop(AdminArgs),
    /// Fetch a heap profile (jemalloc heap_v2 text with the process's mappings) into a file.
    Dump {
        /// Admin API.
        #[command(flatten)]
        admin: AdminArgs,
        /// File to write (default `heap-<unix ms>.prof`).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Rank the allocation sites whose live bytes grew from the first dump to the second.
    Diff {
        /// The earlier dump.
        before: PathBuf,
        /// The later dump.
        after: PathBuf,
        /// Sites to show.
        #[arg(long, default_value_t = 15)]
        top: usize,
    },
}

/// `dispatchctl mem`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct MemArgs {
    /// Which boot: `latest`, `all`, or a boot id (a unique prefix is enough).
    #[arg(long, default_value = "latest")]
    pub boot: String,
    /// Window ending at the newest sample (not the wall clock): 90s, 30m, 6h, 2d, or `all`.
    /// Default: the whole boot, with the last 6 hours' verdict beside it when the boot is
    /// longer.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Since>,
    /// Also write an HTML report with charts to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Also write an SVG chart to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Width of the terminal chart, characters (0: no chart).
    #[arg(long, default_value_t = 72)]
    pub chart_width: usize,
    /// Exit 3 when a boot's verdict is LEAK (a gate for CI soak runs); the report is printed
    /// as usual.
    #[arg(long)]
    pub check: bool,
}

/// `dispatchctl postmortem`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
// The field docs are clap's `--help` text, where `<var dir>` reads as a placeholder, not HTML.
#[allow(rustdoc::invalid_html_tags)]
pub struct PostmortemArgs {
    /// Which boot: `latest` (the newest boot that ended abnormally) or a boot id (a unique
    /// prefix is enough). Default: latest; with --dump, the boot whose crash record names that
    /// dump, if the database has one.
    #[arg(value_name = "BOOT")]
    pub boot: Option<String>,
    /// The minidump to walk (default: the one the boot's crash record names, or the same file
    /// name under <var dir>/crashes/).
    #[arg(long, value_name = "FILE")]
    pub dump: Option<PathBuf>,
    /// A Breakpad symbol store (`<debug file>/<debug id>/<name>.sym`); repeatable, searched in
    /// order before <var dir>/symbols. Symbols are used only when their id matches the module's.
    #[arg(long = "symbols", value_name = "DIR")]
    pub symbols: Vec<PathBuf>,
    /// The build-id symbol store, searched after the --symbols stores: it converts a cached
    /// binary of the module's build on first use and keeps what debuginfod sends.
    #[arg(long, env = "DISPATCH_SYMBOL_STORE", value_name = "DIR")]
    pub symbol_store: Option<PathBuf>,
    /// A debuginfod server asked by build-id for modules no store has (repeatable; also
    /// `DEBUGINFOD_URLS`, space-separated).
    #[arg(long, value_name = "URL")]
    pub debuginfod: Vec<String>,
    /// Report format: md (Markdown, for a ticket), html (a standalone page), json.
    #[arg(long, value_enum, default_value_t = PostmortemFormat::Md)]
    pub format: PostmortemFormat,
    /// Write the report to FILE (mode 0600; a missing directory is made, 0700) instead of
    /// stdout. The server's /ui links a boot to <var dir>/postmortems/BOOT.html.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `dispatchctl postmortem --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PostmortemFormat {
    /// Markdown.
    Md,
    /// Standalone HTML.
    Html,
    /// JSON (docs/CLI.md).
    Json,
}

/// `dispatchctl crashes`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CrashesArgs {
    /// Show one boot in full (a boot id; a unique prefix is enough).
    #[arg(long, value_name = "ID")]
    pub boot: Option<String>,
    /// Where the crash monitor writes dumps; a dump not at its recorded path is looked for
    /// here by file name (default: `<var dir>/crashes`).
    #[arg(long, global = true, env = "DISPATCH_CRASH_DIR", value_name = "DIR")]
    pub crash_dir: Option<PathBuf>,
    /// `send`.
    #[command(subcommand)]
    pub command: Option<CrashesCommand>,
}

/// `dispatchctl crashes ...`.
#[derive(Debug, Subcommand)]
pub enum CrashesCommand {
    /// Upload dumps to Sentry's minidump endpoint; a dump already sent is not sent again.
    Send(SendArgs),
}

/// `dispatchctl crashes send`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct SendArgs {
    /// The boot whose dump to send (a unique id prefix).
    #[arg(required_unless_present = "all", conflicts_with = "all", value_name = "BOOT")]
    pub boot: Option<String>,
    /// Send every dump on disk that was not sent yet.
    #[arg(long)]
    pub all: bool,
    /// Sentry DSN: `https://KEY@HOST/PROJECT_ID` (the key is never printed).
    #[arg(long, env = "SENTRY_DSN", hide_env_values = true, value_name = "DSN")]
    pub sentry_dsn: String,
}

/// A window length (`--since`).
pub use dispatch_verdict::report::Since;

/// Parses `90s`, `30m`, `6h`, `2d`, `1w` or `all`.
pub fn parse_since(s: &str) -> Result<Since, String> {
    if s == "all" {
        return Ok(Since::All);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 =
        num.parse().map_err(|_| format!("{s:?}: expected a number and a unit, like 6h"))?;
    let ms = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "" => return Err(format!("{s:?}: missing unit (s, m, h, d, w)")),
        other => return Err(format!("{s:?}: unknown unit {other:?} (s, m, h, d, w)")),
    };
    if n <= 0 {
        return Err(format!("{s:?}: must be positive"));
    }
    Ok(Since::Millis(n.saturating_mul(ms)))
}

/// `dispatchctl journal ...`.
#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Write a synthetic journal with a known verdict (one scenario per verdict).
    Synth(SynthArgs),
    /// Check a journal directory's files per boot: seq gaps, duplicates, torn and corrupt
    /// lines, dropped records, unknown kinds, boots with no memory samples. Exit 1 when
    /// anything was found.
    Audit {
        /// The journal directory (default: `--journal`, else `<var dir>/journal`).
        dir: Option<PathBuf>,
    },
}

/// `dispatchctl journal synth`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct SynthArgs {
    /// Scenario.
    #[arg(long, value_enum)]
    pub scenario: crate::synth::Scenario,
    /// Directory to write the segment into (created).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Length in hours (default: the scenario's).
    #[arg(long)]
    pub hours: Option<f64>,
    /// PRNG seed: the same seed writes the same journal.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Leak rate of the `leak` scenario, MiB per hour.
    #[arg(long, default_value_t = 8.0)]
    pub leak_mib_per_hour: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_units() {
        assert_eq!(parse_since("6h"), Ok(Since::Millis(6 * 3_600_000)));
        assert_eq!(parse_since("90s"), Ok(Since::Millis(90_000)));
        assert_eq!(parse_since("all"), Ok(Since::All));
        assert!(parse_since("6").unwrap_err().contains("missing unit"));
        assert!(parse_since("6y").unwrap_err().contains("unknown unit"));
        assert!(parse_since("h").unwrap_err().contains("expected a number"));
        assert!(parse_since("0h").unwrap_err().contains("positive"));
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
