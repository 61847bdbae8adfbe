//! `dispatch-collector`: drain the journal into the traces database (one-shot or `--follow`),
//! or print what the database holds (`--status`).
//!
//! Exit codes: 0 success (and `--follow` stopped by SIGTERM or SIGINT); 1 a one-shot drain
//! finished but skipped bad input (each skip is listed on stderr, `path:line: code: reason`);
//! 2 failure (including another collector holding the database).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use dispatch_collector::{Collector, Summary, schema, status};

/// Drains the Dispatch journal exactly once into the SQLite traces database.
#[derive(Debug, Parser)]
#[command(version, about)]
#[deny(missing_docs)]
struct Cli {
    /// Root of what the server keeps on disk; the journal and the database default to
    /// VAR_DIR/journal and VAR_DIR/traces.db.
    #[arg(long, env = "DISPATCH_VAR_DIR", default_value = dispatch_journal::paths::DEFAULT_VAR_DIR)]
    var_dir: PathBuf,
    /// Journal directory to drain (default: VAR_DIR/journal).
    #[arg(long, visible_alias = "journal-dir", env = "DISPATCH_JOURNAL_DIR")]
    journal: Option<PathBuf>,
    /// Traces database, created 0600 when missing (default: VAR_DIR/traces.db).
    #[arg(long = "traces-db", visible_alias = "db", env = "DISPATCH_TRACES_DB")]
    db: Option<PathBuf>,
    /// Keep tailing the journal (new lines, new segments) until SIGTERM or SIGINT.
    #[arg(long, conflicts_with = "status")]
    follow: bool,
    /// Print what the database holds instead of draining.
    #[arg(long)]
    status: bool,
    /// One JSON object on stdout instead of a line of text.
    #[arg(long)]
    json: bool,
    /// Delete rows older than this many days (from the newest record); 0 keeps everything.
    #[arg(long, default_value_t = 30)]
    retention_days: u64,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Print the man page (roff) to stdout and exit; for packagers.
    #[arg(long, hide = true)]
    print_man: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_man {
        use clap::CommandFactory as _;
        let page = clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout().lock());
        return match page {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("dispatch-collector: error: writing the man page: {err}");
                ExitCode::from(2)
            }
        };
    }
    match run(cli) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dispatch-collector: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let var = dispatch_journal::paths::VarDir::new(&cli.var_dir);
    let db = cli.db.clone().unwrap_or_else(|| var.traces_db());
    if cli.status {
        return print_status(&cli, &db);
    }
    let journal = cli.journal.clone().unwrap_or_else(|| var.journal_dir());
    let retention =
        (cli.retention_days > 0).then(|| Duration::from_secs(cli.retention_days * 86_400));
    let mut collector = Collector::builder(&journal, &db)
        .retention(retention)
        .open()
        .with_context(|| format!("opening {}", db.display()))?;
    let summary = if cli.follow {
        dispatch_collector::sys::install_stop_handler()
            .context("installing the SIGTERM handler")?;
        collector.follow(dispatch_collector::sys::stop_flag())
    } else {
        let bar =
            (!cli.no_progress && std::io::stderr().is_terminal()).then(|| progress_bar(&collector));
        let s = collector.drain_once();
        if let Some((done, handle)) = bar {
            done.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
        s
    }
    .with_context(|| format!("draining {} into {}", journal.display(), db.display()))?;
    report(&cli, &journal, &summary)?;
    // A follower stopped by SIGTERM did its job: skipped lines are listed, not a failure.
    Ok(if summary.skipped_input() && !cli.follow { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn report(cli: &Cli, journal: &std::path::Path, s: &Summary) -> anyhow::Result<()> {
    for issue in &s.issues {
        // `path:line: code: reason (byte offset)`, the path inside the journal directory.
        eprintln!("dispatch-collector: skipped {}/{issue}", journal.display());
    }
    let listed = s.issues.len() as u64;
    if s.quarantined + s.truncated_segments > listed {
        eprintln!(
            "dispatch-collector: ... and {} more (see the ingest_errors table)",
            s.quarantined + s.truncated_segments - listed
        );
    }
    let mut out = std::io::stdout().lock();
    if cli.json {
        writeln!(out, "{}", s.to_json())?;
    } else {
        let secs = s.elapsed.as_secs_f64();
        writeln!(
            out,
            "{} lines, {} records, {} quarantined, {} unknown kinds, {} duplicates in {:.2}s ({:.0} lines/s)",
            s.lines,
            s.records,
            s.quarantined,
            s.unknown_kinds,
            s.duplicates,
            secs,
            if secs > 0.0 { s.lines as f64 / secs } else { 0.0 }
        )?;
    }
    Ok(())
}

fn print_status(cli: &Cli, db: &std::path::Path) -> anyhow::Result<ExitCode> {
    let conn = schema::open_read_only(db).with_context(|| format!("opening {}", db.display()))?;
    let st = status::status(&conn).with_context(|| format!("reading {}", db.display()))?;
    let mut out = std::io::stdout().lock();
    if cli.json {
        writeln!(out, "{}", st.to_json())?;
    } else {
        writeln!(
            out,
            "{} records, {} segments, {} ingest errors",
            st.total_records(),
            st.segments,
            st.ingest_errors
        )?;
        for (kind, n) in &st.kinds {
            writeln!(out, "  {kind:<22} {n:>12}")?;
        }
        for (boot, n, seq) in &st.boots {
            let seq = seq.map_or_else(|| "-".to_string(), |s| s.to_string());
            writeln!(out, "  boot {boot}  {n:>12} records  last seq {seq}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Draws `[#####.....] 42% 12.3 MiB/29.0 MiB` on stderr (a terminal) until told to stop.
fn progress_bar(c: &Collector) -> (std::sync::Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let progress = c.progress();
    let stop = std::sync::Arc::clone(&done);
    let handle = std::thread::spawn(move || {
        let mut drawn = false;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            let total = progress.total_bytes.load(Ordering::Relaxed);
            let now = progress.done_bytes.load(Ordering::Relaxed);
            if total < 8 << 20 {
                continue; // small drains finish before a bar helps
            }
            let frac = (now as f64 / total as f64).min(1.0);
            let filled = (frac * 30.0) as usize;
            eprint!(
                "\r[{}{}] {:>3.0}% {:.1}/{:.1} MiB",
                "#".repeat(filled),
                ".".repeat(30 - filled),
                frac * 100.0,
                now as f64 / 1048576.0,
                total as f64 / 1048576.0
            );
            drawn = true;
        }
        if drawn {
            eprint!("\r{}\r", " ".repeat(60));
        }
    });
    (done, handle)
}
