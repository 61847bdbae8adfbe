//! Journals of boots and how they ended, written with the real journal types
//! (`dispatch_journal` records, `dispatch_synth::LineEncoder`): one segment per boot, as the
//! server and its crash monitor write them (`process.start`, samples, then `panic`, `crash`
//! and `exit`, or `process.stop` and a clean `exit`).

#![allow(dead_code)] // each test binary uses what it needs
#![allow(clippy::unwrap_used)] // test and bench code: a failed unwrap is a failed run

use std::path::Path;

use dispatch_journal::record::{
    Crash, Exit, MemorySample, Panic, ProcessStart, ProcessStop, SegmentHeader,
};
use dispatch_journal::{Record, SegmentName, Timestamp};
use dispatch_synth::{LineEncoder, boot_id};

/// 2026-06-27T02:00:00Z, the morning of the predecessor's crash loop.
pub const T0_MS: i64 = 1_782_525_600_000;

/// How a boot ends.
#[derive(Debug, Clone)]
pub enum End {
    /// `process.stop` (shutdown), then `exit` status 0.
    Clean,
    /// `exit` with this status.
    Status(i32),
    /// `crash` (the dump's signal and dump path), then `exit` killed by `exit_signal`.
    Crash { dump_signal: &'static str, exit_signal: &'static str, minidump: Option<String> },
    /// A fatal `panic`, then `exit` killed by SIGABRT.
    Panic { message: &'static str, location: &'static str },
    /// Killed by SIGKILL with `oom_killed`.
    Oom,
    /// Nothing: the machine died (or the boot is still running).
    Nothing,
}

/// One boot: its number (the id is `dispatch_synth::boot_id(n)`), start, uptime and end.
#[derive(Debug, Clone)]
pub struct Boot {
    /// Boot number.
    pub n: u64,
    /// Start, Unix ms.
    pub start_ms: i64,
    /// How long it ran, ms.
    pub uptime_ms: i64,
    /// How it ended.
    pub end: End,
    /// `process.start` version.
    pub version: &'static str,
    /// `process.start` and `crash` build id.
    pub build_id: &'static str,
}

impl Boot {
    /// A boot of version 0.1.0, build `b1d0...`.
    pub fn new(n: u64, start_ms: i64, uptime_ms: i64, end: End) -> Boot {
        Boot {
            n,
            start_ms,
            uptime_ms,
            end,
            version: "0.1.0",
            build_id: "b1d0000000000000000000000000000000000001",
        }
    }

    /// Its boot id.
    pub fn id(&self) -> String {
        boot_id(self.n)
    }

    /// When it ended.
    pub fn end_ms(&self) -> i64 {
        self.start_ms + self.uptime_ms
    }
}

fn signo(name: &str) -> i32 {
    match name {
        "SIGILL" => 4,
        "SIGABRT" => 6,
        "SIGBUS" => 7,
        "SIGKILL" => 9,
        "SIGSEGV" => 11,
        _ => 0,
    }
}

/// Writes one segment per boot into `dir` (created).
pub fn write(dir: &Path, boots: &[Boot]) {
    std::fs::create_dir_all(dir).unwrap();
    for b in boots {
        let mut enc = LineEncoder::new(b.id(), "dispatch");
        let mut out = Vec::new();
        let mut line = |ts: i64, r: Record| out.extend(enc.line(ts, &r).unwrap());
        line(
            b.start_ms,
            Record::SegmentHeader(SegmentHeader {
                segment: b.n,
                created: Some(Timestamp::from_unix_millis(b.start_ms)),
                pid: Some(4000 + b.n as u32),
                writer: Some("test".into()),
            }),
        );
        line(
            b.start_ms,
            Record::ProcessStart(ProcessStart {
                pid: Some(4000 + b.n as u32),
                version: Some(b.version.into()),
                build_id: Some(b.build_id.into()),
                ..Default::default()
            }),
        );
        line(
            b.start_ms + b.uptime_ms / 2,
            Record::MemorySample(MemorySample { rss: Some(90_000_000), ..Default::default() }),
        );
        let end = b.end_ms();
        let uptime = Some(b.uptime_ms as u64);
        let exit = |status: Option<i32>, signal: Option<&str>, oom: bool| {
            Record::Exit(Exit {
                status,
                signal: signal.map(str::to_owned),
                signo: signal.map(signo),
                core_dumped: Some(signal.is_some_and(|s| s != "SIGKILL")),
                oom_killed: Some(oom),
                uptime_ms: uptime,
                pid: Some(4000 + b.n as u32),
                exited_boot: None,
            })
        };
        match &b.end {
            End::Clean => {
                line(
                    end,
                    Record::ProcessStop(ProcessStop {
                        reason: Some("shutdown".into()),
                        uptime_ms: uptime,
                        turns_sealed: Some(0),
                    }),
                );
                line(end + 5, exit(Some(0), None, false));
            }
            End::Status(s) => line(end, exit(Some(*s), None, false)),
            End::Crash { dump_signal, exit_signal, minidump } => {
                line(
                    end,
                    Record::Crash(Crash {
                        signal: Some((*dump_signal).into()),
                        signo: Some(signo(dump_signal)),
                        thread_name: Some("tokio-runtime-w".into()),
                        minidump: minidump.clone(),
                        minidump_bytes: minidump
                            .as_ref()
                            .and_then(|m| std::fs::metadata(m).ok())
                            .map(|m| m.len()),
                        build_id: Some(b.build_id.into()),
                        uptime_ms: uptime,
                        ..Default::default()
                    }),
                );
                line(end + 3, exit(None, Some(exit_signal), false));
            }
            End::Panic { message, location } => {
                line(
                    end - 2,
                    Record::Panic(Panic {
                        message: Some((*message).into()),
                        location: Some((*location).into()),
                        thread: Some("main".into()),
                        fatal: Some(true),
                        ..Default::default()
                    }),
                );
                line(end, exit(None, Some("SIGABRT"), false));
            }
            End::Oom => line(end, exit(None, Some("SIGKILL"), true)),
            End::Nothing => {}
        }
        let name = SegmentName::new("dispatch", b.n).file_name();
        std::fs::write(dir.join(name), out).unwrap();
    }
}
