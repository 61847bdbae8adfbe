//! Exit codes, colour and the human formatting helpers shared by commands.

use std::io::IsTerminal;

use crate::args::ColorChoice;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Clean,
    /// Done, but bad input was skipped (each skip reported on stderr).
    SkippedInput,
}

impl Outcome {
    /// 0 or 1.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Clean => 0,
            Outcome::SkippedInput => 1,
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

/// Bytes in KiB/MiB/GiB with one decimal (the charts' formatter, so text and pictures agree).
pub fn bytes(b: f64) -> String {
    crate::chart::human_bytes(b)
}

/// `YYYY-MM-DD HH:MM UTC`.
pub fn time(ms: i64) -> String {
    let ts = dispatch_journal::Timestamp::from_unix_millis(ms).to_string();
    format!("{} {} UTC", &ts[..10], &ts[11..16])
}

/// `1 turn in flight`, `3 turns in flight`.
pub fn turns(n: f64) -> String {
    let n = n.round();
    format!("{n:.0} turn{} in flight", if n == 1.0 { "" } else { "s" })
}

/// Wraps `s` in an ANSI style when `on`.
pub fn paint(s: &str, code: &str, on: bool) -> String {
    if on { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(8.0 * 1024.0 * 1024.0), "8.0 MiB");
        assert_eq!(bytes(-3.0 * 1024.0 * 1024.0 * 1024.0), "-3.0 GiB");
        assert_eq!(time(1_782_605_522_123), "2026-06-28 00:12 UTC");
        assert_eq!(paint("x", "1", false), "x");
        assert_eq!(turns(1.0), "1 turn in flight");
        assert_eq!(turns(0.0), "0 turns in flight");
        assert_eq!(paint("x", "1", true), "\x1b[1mx\x1b[0m");
    }
}
