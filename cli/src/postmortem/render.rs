//! Markdown (for a ticket) and a standalone HTML page, from one list of blocks so the two say
//! the same things. The HTML page loads nothing: inline CSS, the chart as inline SVG, a CSP
//! that forbids everything else, and every piece of text escaped.

use super::journal::{JournalSection, seconds};
use super::model::{DumpAnalysis, flatten};
use super::report::Report;
use crate::output::{bytes, time};

/// Frames of the crashing thread shown (inlined calls counted).
pub const DEFAULT_FRAMES_SHOWN: usize = 40;

/// A piece of the report.
enum Block {
    H2(String),
    Para(String),
    List(Vec<String>),
    Table { head: Vec<&'static str>, rows: Vec<Vec<String>> },
    Chart(crate::chart::ChartData),
}

/// `YYYY-MM-DD HH:MM:SS UTC`: samples are a second apart, so minutes are not enough.
fn time_s(ms: i64) -> String {
    let t = dispatch_journal::time::Civil::from_unix_millis(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

fn opt_bytes(v: Option<i64>) -> String {
    v.map_or_else(|| "-".into(), |v| bytes(v as f64))
}

fn blocks(r: &Report) -> Vec<Block> {
    let mut b = Vec::new();
    if !r.contradictions.is_empty() {
        b.push(Block::H2("Figures that contradict each other".into()));
        let mut items = Vec::new();
        for c in &r.contradictions {
            items.push(format!("{}: {}. Trust: {}", c.what, c.readings.join("; "), c.trust));
        }
        b.push(Block::List(items));
    }
    match (&r.dump, &r.dump_absent) {
        (Some(d), _) => dump_blocks(d, &mut b),
        (None, Some(why)) => {
            b.push(Block::H2("No dump".into()));
            b.push(Block::Para(why.clone()));
        }
        (None, None) => {}
    }
    match (&r.journal, &r.journal_absent) {
        (Some(j), _) => journal_blocks(j, &mut b),
        (None, Some(why)) => {
            b.push(Block::H2("Journal".into()));
            b.push(Block::Para(why.clone()));
        }
        (None, None) => {}
    }
    b
}

fn dump_blocks(d: &DumpAnalysis, b: &mut Vec<Block>) {
    b.push(Block::H2("Crash (from the minidump)".into()));
    let mut facts = vec![format!(
        "reason: {}",
        d.crash_info.kind.as_deref().unwrap_or("none recorded (not a crash dump?)")
    )];
    if let Some(a) = d.crash_info.address {
        facts.push(format!("address: {:#x}", a.value));
    }
    if let Some(t) = d.crashing() {
        facts.push(format!(
            "crashing thread: #{} (id {}{})",
            d.crash_info.crashing_thread.unwrap_or(0),
            t.thread_id,
            t.thread_name.as_ref().map(|n| format!(", {n}")).unwrap_or_default()
        ));
    }
    if let Some(a) = &d.crash_info.assertion {
        facts.push(format!("assertion: {a}"));
    }
    facts.push(format!(
        "system: {} {} {}, {} CPUs",
        d.system_info.os,
        d.system_info.os_ver.as_deref().unwrap_or(""),
        d.system_info.cpu_arch,
        d.system_info.cpu_count
    ));
    facts.push(format!(
        "dump: {} ({}){}",
        d.path.display(),
        bytes(d.file_bytes as f64),
        d.time.as_ref().map(|t| format!(", written {t}")).unwrap_or_default()
    ));
    b.push(Block::List(facts));

    if let Some(t) = d.crashing() {
        b.push(Block::H2("Crashing thread".into()));
        let flat = flatten(t);
        let mut rows = Vec::new();
        for (i, f) in flat.iter().take(DEFAULT_FRAMES_SHOWN).enumerate() {
            let name = match &f.function {
                Some(func) => func.clone(),
                None => {
                    let note = f
                        .module
                        .as_deref()
                        .and_then(|m| d.module(m))
                        .and_then(|m| m.symbols_note.clone())
                        .unwrap_or_else(|| "no module".into());
                    format!("({note})")
                }
            };
            let source = match (&f.file, f.line) {
                (Some(file), Some(line)) => format!("{file}:{line}"),
                (Some(file), None) => file.clone(),
                _ => String::new(),
            };
            let location = match (&f.module, f.module_offset) {
                (Some(m), Some(off)) => format!("{m}+{off:#x}"),
                _ => format!("{:#x}", f.address),
            };
            let trust =
                if f.inlined { "inlined".to_string() } else { f.trust.describe().to_string() };
            rows.push(vec![i.to_string(), name, source, location, trust]);
        }
        b.push(Block::Table {
            head: vec!["#", "function", "source", "module+offset", "found by"],
            rows,
        });
        if flat.len() > DEFAULT_FRAMES_SHOWN {
            b.push(Block::Para(format!(
                "{} more frames (--format json lists all).",
                flat.len() - DEFAULT_FRAMES_SHOWN
            )));
        }
        if flat.iter().any(|f| f.trust.is_low()) {
            b.push(Block::Para(
                "Frames found by scanning the stack are guesses (low trust): a return address \
                 that happens to be on the stack, not a proven caller."
                    .into(),
            ));
        }
    }
    let others: Vec<Vec<String>> = d
        .threads
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != d.crash_info.crashing_thread)
        .map(|(i, t)| {
            let top = t
                .frames
                .first()
                .map(|f| f.function.clone().unwrap_or_else(|| f.location()))
                .unwrap_or_else(|| "-".into());
            vec![
                i.to_string(),
                t.thread_id.to_string(),
                t.thread_name.clone().unwrap_or_default(),
                t.frame_count.to_string(),
                top,
                t.walk_note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    if !others.is_empty() {
        b.push(Block::H2(format!("Other threads ({})", others.len())));
        b.push(Block::Table {
            head: vec!["#", "id", "name", "frames", "top frame", "note"],
            rows: others,
        });
    }
    let unsymbolized: Vec<String> = d
        .modules
        .iter()
        .filter(|m| m.missing_symbols)
        .map(|m| format!("{}: {}", m.filename, m.symbols_note.as_deref().unwrap_or("no symbols")))
        .collect();
    let loaded: Vec<String> = d
        .modules
        .iter()
        .filter(|m| m.loaded_symbols)
        .map(|m| format!("{} {}: symbols loaded", m.filename, m.debug_id))
        .collect();
    if !unsymbolized.is_empty() || !loaded.is_empty() {
        b.push(Block::H2("Symbols".into()));
        b.push(Block::List(loaded.into_iter().chain(unsymbolized).collect()));
    }
    if !d.dump_warnings.is_empty() {
        b.push(Block::H2("What the dump could not say".into()));
        b.push(Block::List(d.dump_warnings.clone()));
    }
}

fn journal_blocks(j: &JournalSection, b: &mut Vec<Block>) {
    b.push(Block::H2("How the boot ended (from the journal)".into()));
    let mut facts = Vec::new();
    if let Some(c) = &j.chosen {
        facts.push(c.clone());
    }
    if let Some(c) = &j.crash {
        facts.push(format!(
            "crash record at {}: {}{}{}{}",
            time(c.ts_ms),
            c.signal.as_deref().unwrap_or("signal unknown"),
            c.fault_address.as_ref().map(|a| format!(" at {a}")).unwrap_or_default(),
            c.thread_name.as_ref().map(|t| format!(" in thread {t}")).unwrap_or_default(),
            c.uptime_ms.map(|u| format!(", after {}", seconds(u))).unwrap_or_default(),
        ));
    }
    if let Some(e) = &j.exit {
        facts.push(format!(
            "exit record at {}: {}{}",
            time(e.ts_ms),
            e.describe(),
            e.uptime_ms.map(|u| format!(", after {}", seconds(u))).unwrap_or_default()
        ));
    }
    if let Some(s) = &j.stop_reason {
        facts.push(format!("clean stop: {s}"));
    }
    if let Some((a, z)) = j.oom_kill {
        facts.push(format!("cgroup oom_kill count: {a} at the first sample, {z} at the last"));
    }
    if let Some(m) = &j.mem {
        facts.push(format!(
            "dispatchctl mem (whole boot, {} samples): {}: {}",
            m.samples, m.verdict, m.summary
        ));
    }
    if let Some(l) = &j.crash_loop {
        facts.push(l.clone());
    }
    b.push(Block::List(facts));

    b.push(Block::H2("Memory before the end".into()));
    if let Some(chart) = &j.chart {
        if !chart.points.is_empty() {
            b.push(Block::Chart(chart.clone()));
        }
    }
    if j.last_samples.is_empty() {
        b.push(Block::Para("no memory samples were recorded for this boot".into()));
    } else {
        let rows = j
            .last_samples
            .iter()
            .map(|s| {
                vec![
                    time_s(s.ts_ms),
                    opt_bytes(s.rss_bytes),
                    opt_bytes(s.allocated_bytes),
                    opt_bytes(s.cgroup_current_bytes),
                    opt_bytes(s.cgroup_peak_bytes),
                    s.oom_kill.map_or_else(|| "-".into(), |v| v.to_string()),
                    s.turns_in_flight.map_or_else(|| "-".into(), |v| v.to_string()),
                ]
            })
            .collect();
        b.push(Block::Para(format!("The last {} of {} samples:", j.last_samples.len(), j.samples)));
        b.push(Block::Table {
            head: vec![
                "time",
                "RSS",
                "jemalloc allocated",
                "cgroup current",
                "cgroup peak",
                "oom_kill",
                "turns in flight",
            ],
            rows,
        });
    }
    if !j.pressure.is_empty() {
        b.push(Block::H2("Memory pressure".into()));
        let rows = j
            .pressure
            .iter()
            .map(|p| {
                vec![
                    time(p.ts_ms),
                    p.level.clone().unwrap_or_default(),
                    opt_bytes(p.rss_bytes),
                    opt_bytes(p.limit_bytes),
                    p.action.clone().unwrap_or_default(),
                ]
            })
            .collect();
        b.push(Block::Table { head: vec!["time", "level", "RSS", "limit", "action"], rows });
    }
    b.push(Block::H2("Turns in flight at the end".into()));
    if j.turns_in_flight.is_empty() {
        b.push(Block::Para("none: no turn had started without ending".into()));
    } else {
        let end =
            j.crash.as_ref().map(|c| c.ts_ms).or(j.exit.as_ref().map(|e| e.ts_ms)).or(j.last_ts_ms);
        let rows = j
            .turns_in_flight
            .iter()
            .map(|t| {
                vec![
                    t.conversation.clone(),
                    t.turn.clone(),
                    t.started_ts_ms.map(time).unwrap_or_default(),
                    match (t.started_ts_ms, end) {
                        (Some(s), Some(e)) if e >= s => seconds(e - s),
                        _ => String::new(),
                    },
                    [t.provider.clone(), t.model.clone()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" / "),
                    if t.sealed { "sealed by the next boot".into() } else { String::new() },
                ]
            })
            .collect();
        b.push(Block::Table {
            head: vec![
                "conversation",
                "turn",
                "started",
                "running for",
                "provider / model",
                "note",
            ],
            rows,
        });
    }
    if !j.active_conversations.is_empty() {
        b.push(Block::Para(format!("Active conversations: {}", j.active_conversations.join(", "))));
    }
    let mut failures = Vec::new();
    if let Some(e) = &j.last_error {
        failures.push(format!(
            "last error.unhandled at {}: {}{}{}",
            time(e.ts_ms),
            e.message,
            e.source.as_ref().map(|s| format!(" (source {s})")).unwrap_or_default(),
            e.turn.as_ref().map(|t| format!(", turn {t}")).unwrap_or_default()
        ));
    }
    if let Some(p) = &j.last_panic {
        failures.push(format!(
            "last panic at {}: {}{}{}",
            time(p.ts_ms),
            p.message,
            p.source.as_ref().map(|s| format!(" at {s}")).unwrap_or_default(),
            if p.fatal == Some(true) { " (fatal)" } else { "" }
        ));
    }
    if !failures.is_empty() {
        b.push(Block::H2("Last errors".into()));
        b.push(Block::List(failures));
    }
    if j.previous_exits.len() > 1 {
        b.push(Block::H2("Exits up to this one".into()));
        let rows = j
            .previous_exits
            .iter()
            .map(|e| {
                vec![
                    time(e.ts_ms),
                    e.boot.get(..8).unwrap_or(&e.boot).to_owned(),
                    e.describe(),
                    e.uptime_ms.map(seconds).unwrap_or_default(),
                ]
            })
            .collect();
        b.push(Block::Table { head: vec!["time", "boot", "how", "ran for"], rows });
    }
    if let Some(p) = &j.process_start {
        b.push(Block::H2("Process start".into()));
        let mut facts: Vec<String> = [
            ("version", p.version.clone()),
            ("build-id", p.build_id.clone()),
            ("git", p.git_sha.clone()),
            ("allocator", p.allocator.clone()),
            ("host", p.host.clone()),
            ("kernel", p.kernel.clone()),
            ("pid", p.pid.map(|v| v.to_string())),
            ("cgroup memory.max", p.memory_max_bytes.map(|v| bytes(v as f64))),
            ("cgroup memory.high", p.memory_high_bytes.map(|v| bytes(v as f64))),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some(format!("{k}: {}", v?)))
        .collect();
        facts.insert(0, format!("started {}", time(p.ts_ms)));
        if let Some(c) = j.crash.as_ref().and_then(|c| c.build_id.as_ref()) {
            if p.build_id.as_ref().is_some_and(|s| s != c) {
                facts.push(format!(
                    "the crashed executable's build-id is {c}, not the one process.start recorded"
                ));
            }
        }
        for (k, v) in &p.config {
            facts.push(format!("config {k} = {v}"));
        }
        b.push(Block::List(facts));
    }
    if !j.notes.is_empty() {
        b.push(Block::H2("Notes".into()));
        b.push(Block::List(j.notes.clone()));
    }
}

fn title(r: &Report) -> String {
    let who = r
        .journal
        .as_ref()
        .map(|j| format!("{} boot {}", j.service.as_deref().unwrap_or("dispatch"), j.boot))
        .or_else(|| r.dump.as_ref().map(|d| format!("dump {}", d.path.display())))
        .unwrap_or_else(|| "post-mortem".into());
    format!("Post-mortem: {who}")
}

/// Markdown for a ticket.
pub fn markdown(r: &Report) -> String {
    let mut out = format!("# {}\n\n**{}**\n", md_escape(&title(r)), md_escape(&r.headline()));
    for block in blocks(r) {
        out.push('\n');
        match block {
            Block::H2(t) => out.push_str(&format!("## {}\n", md_escape(&t))),
            Block::Para(t) => out.push_str(&format!("{}\n", md_escape(&t))),
            Block::List(items) => {
                for i in items {
                    out.push_str(&format!("- {}\n", md_escape(&i)));
                }
            }
            Block::Table { head, rows } => {
                let head: Vec<String> = head.iter().map(|h| md_escape(h)).collect();
                out.push_str(&format!("| {} |\n", head.join(" | ")));
                out.push_str(&format!("|{}\n", "---|".repeat(head.len())));
                for row in rows {
                    let cells: Vec<String> = row.iter().map(|c| md_cell(c)).collect();
                    out.push_str(&format!("| {} |\n", cells.join(" | ")));
                }
            }
            Block::Chart(data) => {
                out.push_str("```\n");
                out.push_str(&crate::chart::terminal(&data, 72, 12, false).replace("```", "'''"));
                out.push_str("```\n");
            }
        }
    }
    out
}

/// Characters Markdown would read as markup, escaped (names like `<fn() as FnOnce>::call_once`
/// and `*mut T` must print as they are).
fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '<' | '>' | '[' | ']' | '|' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn md_cell(s: &str) -> String {
    if s.is_empty() { " ".into() } else { md_escape(&s.replace('\n', " ")) }
}

/// The Content-Security-Policy of the page: nothing loads, nothing runs.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;\
padding:0 1rem;color:#1a1a1a;background:#fff}h1{font-size:1.4rem;margin:0}\
.headline{font-size:1.3rem;font-weight:700;color:#b00020;margin:.4rem 0 1rem}\
h2{font-size:1.1rem;margin:1.5rem 0 .4rem;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;font-size:.85rem;margin:.3rem 0}\
th,td{border:1px solid #ccc;padding:.2rem .45rem;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td{font-family:ui-monospace,monospace;word-break:break-word}\
td:first-child{white-space:nowrap}\
li{margin:.15rem 0}svg{max-width:100%;height:auto}footer{margin-top:2rem;color:#777;font-size:.8rem}";

/// A standalone HTML page: no scripts, no network, everything escaped.
pub fn html(r: &Report) -> String {
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(&format!("<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"));
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str(&format!(
        "<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&title(r))
    ));
    out.push_str(&format!(
        "<h1>{}</h1>\n<p class=\"headline\">{}</p>\n",
        esc(&title(r)),
        esc(&r.headline())
    ));
    for block in blocks(r) {
        match block {
            Block::H2(t) => out.push_str(&format!("<h2>{}</h2>\n", esc(&t))),
            Block::Para(t) => out.push_str(&format!("<p>{}</p>\n", esc(&t))),
            Block::List(items) => {
                out.push_str("<ul>\n");
                for i in items {
                    out.push_str(&format!("<li>{}</li>\n", esc(&i)));
                }
                out.push_str("</ul>\n");
            }
            Block::Table { head, rows } => {
                out.push_str("<table>\n<tr>");
                for h in head {
                    out.push_str(&format!("<th>{}</th>", esc(h)));
                }
                out.push_str("</tr>\n");
                for row in rows {
                    out.push_str("<tr>");
                    for c in row {
                        out.push_str(&format!("<td>{}</td>", esc(&c)));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</table>\n");
            }
            // The chart module escapes every text it puts in the SVG.
            Block::Chart(data) => {
                out.push_str("<figure>\n");
                out.push_str(&crate::chart::svg(&data));
                out.push_str("</figure>\n");
            }
        }
    }
    out.push_str("<footer>dispatchctl postmortem</footer>\n</body>\n</html>\n");
    out
}

/// HTML text and attribute escaping: the charts' (control characters become U+FFFD).
pub fn esc(s: &str) -> String {
    crate::chart::escape_xml(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(esc("<script>a&'\"</script>"), "&lt;script&gt;a&amp;&#39;&quot;&lt;/script&gt;");
        assert_eq!(
            md_escape("<fn() as FnOnce>::call_once *x"),
            "\\<fn() as FnOnce\\>::call\\_once \\*x"
        );
    }
}
