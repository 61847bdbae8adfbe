//! `dispatchctl completions` and `dispatchctl man`: shell completion scripts and man pages,
//! generated from the same clap definitions as `--help` ([`crate::args::Cli`]), so they cannot
//! fall behind the flags.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory as _;

use crate::args::Cli;
use crate::error::Error;

/// The footer of every page: program and version.
const SOURCE: &str = concat!("dispatchctl ", env!("CARGO_PKG_VERSION"));

/// Writes the completion script for `shell` to `out`.
///
/// # Errors
/// [`Error::Output`]: writing to `out` failed.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> Result<(), Error> {
    // clap_complete writes through a `&mut dyn Write` that cannot fail; collect, then write.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "dispatchctl", &mut script);
    out.write_all(&script).map_err(Error::Output)
}

/// Writes the man page of `dispatchctl` (section 1, roff) to `out`.
///
/// # Errors
/// [`Error::Output`]: writing to `out` failed.
pub fn man_page(out: &mut dyn Write) -> Result<(), Error> {
    clap_mangen::Man::new(Cli::command()).source(SOURCE).render(out).map_err(Error::Output)
}

/// Writes `dispatchctl.1` and a page per subcommand (`dispatchctl-mem.1`,
/// `dispatchctl-heap-start.1`, ...) into `dir`, created if missing; returns the files written.
///
/// # Errors
/// [`Error::Io`] naming the directory or the page that could not be written.
pub fn man_pages(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir, "creating"))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build(); // names subcommands `dispatchctl-heap-start`, as the page names want
    let mut written = Vec::new();
    write_pages(cmd, dir, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<(), Error> {
    // A subcommand has no version of its own: every page names the program's.
    let man = clap_mangen::Man::new(cmd.clone()).source(SOURCE);
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page).map_err(Error::Output)?;
    std::fs::write(&path, page).map_err(Error::io(&path, "writing"))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir, written)?;
    }
    Ok(())
}
