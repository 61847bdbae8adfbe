//! `dispatchctl`: parse, run, map the outcome to an exit status. Everything else is in the
//! library.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser as _;
use dispatch_cli::args::{Cli, Command, JournalCommand};
use dispatch_cli::output::{Outcome, use_color};
use dispatch_cli::{mem, synth};

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
        Command::Mem(args) => mem::run(cli, args, out, color),
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

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .map(|io| io.kind())
            // serde_json wraps the writer's error in its own.
            .or_else(|| c.downcast_ref::<serde_json::Error>().and_then(|e| e.io_error_kind()))
            == Some(std::io::ErrorKind::BrokenPipe)
    })
}
