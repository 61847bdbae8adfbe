//! Exit codes, colour, and the human formatting helpers shared by commands (the formatting
//! itself lives in [`dispatch_verdict::output`], which the server's `/ui` shares).

use std::io::IsTerminal;

use crate::args::ColorChoice;

pub use dispatch_verdict::output::{UNITS, bytes, duration_ms, mib, number, time, turns};

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Clean,
    /// Done, but bad input was skipped (each skip reported on stderr).
    SkippedInput,
    /// `mem --check` found a LEAK (a CI soak gate fails on it).
    LeakFound,
    /// `doctor` found warnings (1) or failures (2): the report says which, with fixes.
    Checks(u8),
}

impl Outcome {
    /// 0, 1, 3, or doctor's worst level (2 is otherwise a failed command, see [`crate::error`]).
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Clean => 0,
            Outcome::SkippedInput => 1,
            Outcome::LeakFound => 3,
            Outcome::Checks(worst) => worst,
        }
    }
}

/// Whether to colour stdout.
pub fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stdout().is_terminal()
        }
    }
}

/// Wraps `s` in an ANSI style when `on`.
pub fn paint(s: &str, code: &str, on: bool) -> String {
    if on { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::paint;

    #[test]
    fn paint_wraps_only_when_on() {
        assert_eq!(paint("x", "1", false), "x");
        assert_eq!(paint("x", "1", true), "\x1b[1mx\x1b[0m");
    }
}
