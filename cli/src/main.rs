//! `dispatchctl`: parse, run, map the outcome to an exit status. Everything else is in the
//! library.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use dispatch_cli::args::{Cli, Command, HeapCommand, JournalCommand};
use dispatch_cli::output::bytes;
use dispatch_cli::output::{Outcome, use_color};
use dispatch_cli::{crashes, heap, manual, mem, synth};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run(&cli, &mut out).and_then(|o| out.flush().map(|_| o).map_err(Into::into)) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS, // `dispatchctl mem | head`
        Err(err) => {
            eprintln!("dispatchctl: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let color = use_color(cli.color);
    match &cli.command {
        Command::Mem(args) => Ok(mem::run(cli, args, out, color)?),
        Command::Crashes(args) => Ok(crashes::run(cli, args, out, color)?),
        Command::Heap(cmd) => run_heap(cli, cmd, out),
        Command::Doctor { addr } => {
            let worst = dispatch_cli::doctor::run(addr, &cli.var_dir, cli.json, out)?;
            Ok(if worst == 0 { Outcome::Clean } else { Outcome::Checks(worst) })
        }
        Command::Postmortem(args) => Ok(dispatch_cli::postmortem::run(cli, args, out)?),
        Command::Completions { shell } => {
            manual::completions(*shell, out)?;
            Ok(Outcome::Clean)
        }
        Command::Man { out: None } => {
            manual::man_page(out)?;
            Ok(Outcome::Clean)
        }
        Command::Man { out: Some(dir) } => {
            for page in manual::man_pages(dir)? {
                writeln!(out, "{}", page.display())?;
            }
            Ok(Outcome::Clean)
        }
        Command::Journal(JournalCommand::Audit { dir }) => {
            let dir = dir
                .clone()
                .or_else(|| cli.journal.clone())
                .unwrap_or_else(|| cli.var_dir.join("journal"));
            Ok(dispatch_cli::audit::run(&dir, cli.json, out)?)
        }
        Command::Journal(JournalCommand::Synth(args)) => {
            let mut opts = synth::SynthOptions::new(args.scenario);
            opts.hours = args.hours;
            opts.seed = args.seed;
            opts.leak_bytes_per_hour = args.leak_mib_per_hour * 1024.0 * 1024.0;
            let summary = synth::generate(&opts, &args.out)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", args.out.display()))?;
            if cli.json {
                serde_json::to_writer_pretty(&mut *out, &summary)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "wrote {} lines ({} samples, {} turns) to {}: scenario {} (expect {})",
                    summary.lines,
                    summary.samples,
                    summary.turns,
                    summary.path.display(),
                    summary.scenario,
                    summary.expected
                )?;
            }
            Ok(Outcome::Clean)
        }
    }
}

fn run_heap(cli: &Cli, cmd: &HeapCommand, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let admin = |a: &dispatch_cli::args::AdminArgs| heap::Admin {
        addr: a.addr.clone(),
        token: a.token.clone(),
    };
    match cmd {
        HeapCommand::Start(a) | HeapCommand::Stop(a) => {
            let what = if matches!(cmd, HeapCommand::Start(_)) { "start" } else { "stop" };
            admin(a).ok("POST", &format!("/admin/heap/{what}"))?;
            writeln!(out, "heap profiling {}", if what == "start" { "on" } else { "off" })?;
        }
        HeapCommand::Dump { admin: a, out: file } => {
            let body = admin(a).ok("GET", "/debug/pprof/heap")?;
            heap::parse(&String::from_utf8_lossy(&body))
                .context("the server's profile does not parse")?;
            let path = file.clone().unwrap_or_else(heap::default_dump_path);
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(&body))
                .with_context(|| format!("writing {}", path.display()))?;
            writeln!(out, "{} ({} bytes)", path.display(), body.len())?;
        }
        HeapCommand::Diff { before, after, top } => {
            let read = |p: &std::path::Path| -> anyhow::Result<heap::Profile> {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                heap::parse(&text).with_context(|| format!("{}", p.display()))
            };
            let (a, b) = (read(before)?, read(after)?);
            let rows = heap::diff(&a, &b, *top, &heap::addr2line);
            if cli.json {
                serde_json::to_writer_pretty(
                    &mut *out,
                    &serde_json::json!({"v": 1, "kind": "heap.diff", "sites": rows}),
                )?;
                writeln!(out)?;
            } else {
                writeln!(out, "{:>12} {:>12} {:>12}  site (callers)", "growth", "before", "after")?;
                for r in rows {
                    writeln!(
                        out,
                        "{:>12} {:>12} {:>12}  {}{}",
                        bytes(r.delta_bytes),
                        bytes(r.before_bytes),
                        bytes(r.after_bytes),
                        r.site,
                        if r.stack.is_empty() {
                            String::new()
                        } else {
                            format!("  <- {}", r.stack.join(" <- "))
                        }
                    )?;
                }
            }
        }
    }
    Ok(Outcome::Clean)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .map(|io| io.kind())
            // serde_json wraps the writer's error in its own.
            .or_else(|| c.downcast_ref::<serde_json::Error>().and_then(|e| e.io_error_kind()))
            == Some(std::io::ErrorKind::BrokenPipe)
    })
}
