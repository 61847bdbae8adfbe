//! `dispatchctl crashes` output: a coredumpctl-like table for people (the crash-loop banner
//! first), and one JSON document (schema: docs/CLI.md, "dispatchctl crashes").

use std::io::{self, Write};
use std::path::Path;

use serde_json::{Value, json};

use super::history::{CrashLoop, End};
use super::{JSON_VERSION, Report, dump, ends_with};
use crate::output::{bytes, paint};

/// `2026-06-28T00:12:02Z`: RFC 3339, UTC, to the second.
pub fn rfc3339(ms: i64) -> String {
    let c = dispatch_journal::time::Civil::from_unix_millis(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// A duration for people: `850 ms`, `58s`, `7m 0s`, `1h 22m`, `2d 3h`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms} ms"),
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The sentence that says which reading to trust when the dump and the exit disagree.
pub fn mismatch_sentence(dump: &str, exit: &str) -> String {
    format!(
        "the dump says {dump}, the exit record {exit}: trust the dump for what the code did \
         (it read the signal at the faulting instruction), and the exit for how the process \
         ended (what the service manager saw)"
    )
}

fn uptime_text(e: &End) -> String {
    match e.uptime_ms {
        Some(u) if e.uptime_is_lower_bound => format!(">{}", duration(u)),
        Some(u) => duration(u),
        None => "?".into(),
    }
}

fn loop_banner(l: &CrashLoop) -> String {
    let uptimes: Vec<String> = l.uptimes_ms.iter().map(|&u| duration(u)).collect();
    let boots: Vec<&str> = l.boots.iter().map(|b| short(b)).collect();
    format!(
        "CRASH LOOP: {} abnormal exits in {} with shrinking uptime ({}), {} restart{}\n  boots {} ({} .. {})",
        l.exits,
        duration(l.span_ms),
        uptimes.join(" -> "),
        l.restarts,
        if l.restarts == 1 { "" } else { "s" },
        boots.join(", "),
        rfc3339(l.first_ts_ms),
        rfc3339(l.last_ts_ms),
    )
}

/// Writes the report for people.
///
/// # Errors
/// Writing `out` failed.
pub fn text(report: &Report, db: &Path, out: &mut dyn Write, color: bool) -> io::Result<()> {
    for l in &report.loops {
        writeln!(out, "{}", paint(&loop_banner(l), "1;31", color))?;
        writeln!(out)?;
    }
    let h = &report.history;
    if h.ends.is_empty() {
        match &report.selected {
            Some(b) if h.open_boot.as_ref() == Some(b) => writeln!(
                out,
                "boot {b}: no end recorded yet (the newest boot: still running, or it ended without a record)"
            )?,
            Some(b) => writeln!(out, "boot {b} ended cleanly")?,
            None => writeln!(
                out,
                "no abnormal ends in {} boot{} ({})",
                h.boots,
                if h.boots == 1 { "" } else { "s" },
                db.display()
            )?,
        }
    } else if report.selected.is_some() {
        for (e, d, sig) in ends_with(report) {
            info(e, d, sig, out)?;
        }
    } else {
        table(report, out)?;
        writeln!(out)?;
        writeln!(out, "signatures")?;
        writeln!(
            out,
            "  {:>5}  {:<20}  {:<20}  signature (from)",
            "count", "first seen", "last seen"
        )?;
        for g in &report.groups {
            writeln!(
                out,
                "  {:>5}  {:<20}  {:<20}  {} ({})",
                g.count,
                rfc3339(g.first_ts_ms),
                rfc3339(g.last_ts_ms),
                g.signature,
                g.source
            )?;
        }
    }
    if report.selected.is_none() && (!h.ends.is_empty() || h.open_boot.is_some()) {
        writeln!(out)?;
        writeln!(
            out,
            "{} boot{}: {} abnormal end{}, {} clean",
            h.boots,
            if h.boots == 1 { "" } else { "s" },
            h.ends.len(),
            if h.ends.len() == 1 { "" } else { "s" },
            h.clean_ends_ms.len()
        )?;
        if let Some(b) = &h.open_boot {
            writeln!(
                out,
                "note: the newest boot {} has no end record: still running, or it ended without one \
                 (the crash monitor appends `crash` and `exit` to the journal after the server is \
                 gone, so they reach the traces database at the next start: read the journal \
                 with --journal to see them now)",
                short(b)
            )?;
        }
    }
    for n in notes(report) {
        writeln!(out, "note: {n}")?;
    }
    Ok(())
}

fn dump_column(d: Option<&dump::DumpFile>, e: &End) -> &'static str {
    match d {
        Some(d) if d.is_on_disk() => "on disk",
        Some(_) => "gone",
        None if e.crash.as_ref().is_some_and(|c| c.dump_error.is_some()) => "failed",
        None => "-",
    }
}

fn table(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{:<20}  {:<8}  {:>8}  {:<10}  {:<3}  {:<7}  signature",
        "time", "boot", "uptime", "end", "oom", "dump"
    )?;
    for (e, d, (sig, _)) in ends_with(report) {
        let oom = match e.oom_killed {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        writeln!(
            out,
            "{:<20}  {:<8}  {:>8}  {:<10}  {:<3}  {:<7}  {sig}",
            rfc3339(e.ts_ms),
            short(&e.boot),
            uptime_text(e),
            e.short(),
            oom,
            dump_column(d, e)
        )?;
    }
    // What does not fit a column, under the table, per boot.
    for (e, d, _) in ends_with(report) {
        for line in details(e, d) {
            writeln!(out, "  {}  {line}", short(&e.boot))?;
        }
    }
    Ok(())
}

/// The lines about an end that a table row cannot hold: mismatch, panic, dump.
fn details(e: &End, d: Option<&dump::DumpFile>) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some((dump, exit)) = e.mismatch() {
        lines.push(format!("signal mismatch: {}", mismatch_sentence(&dump, &exit)));
    }
    if let Some(p) = &e.panic {
        lines.push(format!(
            "fatal panic{}: {}{}",
            p.thread.as_ref().map_or(String::new(), |t| format!(" in thread {t}")),
            p.message.as_deref().unwrap_or("(no message)"),
            p.location.as_ref().map_or(String::new(), |l| format!(" at {l}"))
        ));
    }
    match d {
        Some(d) if !d.is_on_disk() => {
            lines.push(format!("dump {} is no longer on disk", d.recorded));
        }
        _ => {}
    }
    if let Some(err) = e.crash.as_ref().and_then(|c| c.dump_error.as_ref()) {
        lines.push(format!("no dump: {err}"));
    }
    lines
}

fn info(
    e: &End,
    d: Option<&dump::DumpFile>,
    (sig, source): &(String, &'static str),
    out: &mut dyn Write,
) -> io::Result<()> {
    writeln!(out, "boot       {}", e.boot)?;
    if let Some(v) = &e.version {
        writeln!(out, "version    {v}")?;
    }
    if let Some(b) = &e.build_id {
        writeln!(out, "build id   {b}")?;
    }
    if let Some(s) = e.started_ts_ms {
        writeln!(out, "started    {}", rfc3339(s))?;
    }
    writeln!(out, "ended      {}, after {}: {}", rfc3339(e.ts_ms), uptime_text(e), e.summary())?;
    if let Some(o) = e.oom_killed {
        writeln!(out, "oom killed {}", if o { "yes" } else { "no" })?;
    }
    if let Some(c) = &e.crash {
        let mut line = c.signal.clone().unwrap_or_else(|| "no signal recorded".into());
        if let Some(a) = &c.fault_address {
            line.push_str(&format!(" at {a}"));
        }
        if let Some(t) = &c.thread_name {
            line.push_str(&format!(" in thread {t}"));
        }
        writeln!(out, "crash      {line} (read from the dump)")?;
    }
    match d {
        Some(d) => match &d.path {
            Some(p) => writeln!(
                out,
                "dump       {} (on disk, {})",
                p.display(),
                bytes(d.bytes.unwrap_or(0) as f64)
            )?,
            None => writeln!(out, "dump       {} (no longer on disk)", d.recorded)?,
        },
        None => writeln!(out, "dump       none recorded")?,
    }
    writeln!(out, "signature  {sig} (from the {})", source_words(source))?;
    for line in details(e, None) {
        writeln!(out, "note       {line}")?;
    }
    Ok(())
}

fn source_words(source: &str) -> &'static str {
    match source {
        dump::source::STACK => "crashing thread's stack",
        dump::source::PANIC => "fatal panic",
        dump::source::SIGNAL => "signal; no symbolicated stack",
        dump::source::OOM => "OOM kill",
        dump::source::STATUS => "exit status",
        _ => "lack of any record",
    }
}

/// Notes that apply to the whole report.
fn notes(report: &Report) -> Vec<String> {
    let mut notes = Vec::new();
    let unwalked = ends_with(report)
        .filter(|(_, d, (_, source))| {
            d.is_some_and(|d| d.is_on_disk()) && *source != dump::source::STACK
        })
        .count();
    if unwalked > 0 {
        notes.push(format!(
            "{unwalked} dump{} on disk gave no stack signature (not walked, or no symbols for it): \
             {} from the panic or the signal instead",
            if unwalked == 1 { "" } else { "s" },
            if unwalked == 1 { "its signature comes" } else { "their signatures come" }
        ));
    }
    notes
}

/// One end as its JSON object.
fn end_json(e: &End, d: Option<&dump::DumpFile>, (sig, source): &(String, &'static str)) -> Value {
    let crash = e.crash.as_ref();
    json!({
        "boot": e.boot,
        "ts_ms": e.ts_ms,
        "time": rfc3339(e.ts_ms),
        "started_ts_ms": e.started_ts_ms,
        "uptime_ms": e.uptime_ms,
        "uptime_is_lower_bound": e.uptime_is_lower_bound,
        "end": e.kind,
        "summary": e.summary(),
        "signal": e.signal,
        "status": e.status,
        "core_dumped": e.core_dumped,
        "oom_killed": e.oom_killed,
        "dump_signal": crash.and_then(|c| c.signal.clone()),
        "fault_address": crash.and_then(|c| c.fault_address.clone()),
        "thread": crash.and_then(|c| c.thread_name.clone()),
        "signal_mismatch": e.mismatch().map(|(dump, exit)| json!({
            "dump": dump,
            "exit": exit,
            "explanation": mismatch_sentence(&dump, &exit),
        })),
        "signature": sig,
        "signature_source": source,
        "dump": d.map(|d| json!({
            "recorded": d.recorded,
            "path": d.path,
            "on_disk": d.is_on_disk(),
            "bytes": d.bytes,
        })),
        "dump_error": crash.and_then(|c| c.dump_error.clone()),
        "panic": e.panic,
        "version": e.version,
        "build_id": e.build_id,
    })
}

/// Writes the JSON document.
///
/// # Errors
/// Writing `out` failed.
pub fn json(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let exits: Vec<Value> = ends_with(report).map(|(e, d, s)| end_json(e, d, s)).collect();
    let groups: Vec<Value> = report
        .groups
        .iter()
        .map(|g| {
            json!({
                "signature": g.signature,
                "source": g.source,
                "count": g.count,
                "first_ts_ms": g.first_ts_ms,
                "first_seen": rfc3339(g.first_ts_ms),
                "last_ts_ms": g.last_ts_ms,
                "last_seen": rfc3339(g.last_ts_ms),
                "boots": g.boots,
            })
        })
        .collect();
    let doc = json!({
        "v": JSON_VERSION,
        "kind": "crashes",
        "exits": exits,
        "groups": groups,
        "crash_loop": !report.loops.is_empty(),
        "crash_loops": report.loops,
        "boots": report.history.boots,
        "clean_ends": report.history.clean_ends_ms.len(),
        "open_boot": report.history.open_boot,
        "notes": notes(report),
    });
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_read_as_people_write_them() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(58_000), "58s");
        assert_eq!(duration(7 * 60_000), "7m 0s");
        assert_eq!(duration((82 * 60 + 5) * 1000), "1h 22m");
        assert_eq!(duration((2 * 86_400 + 3 * 3600) * 1000), "2d 3h");
        assert_eq!(rfc3339(1_782_605_522_123), "2026-06-28T00:12:02Z");
    }

    #[test]
    fn the_mismatch_sentence_says_which_reading_to_trust() {
        let s = mismatch_sentence("SIGSEGV", "SIGILL");
        assert!(s.contains("the dump says SIGSEGV, the exit record SIGILL"), "{s}");
        assert!(s.contains("trust the dump for what the code did"), "{s}");
        assert!(s.contains("the exit for how the process ended"), "{s}");
    }
}
