//! The verdict as people read it in a browser: `dispatchctl mem --html` writes
//! [`report_page`], and the server's `/ui` shows the same [`evidence`] and
//! [`conversations_table`].
//!
//! What a reader gets, in order: the verdict once, one sentence of why, what the window could
//! have missed (the detection limit), the next step, the chart (memory, the idle floor, turns
//! in flight, the peak), an evidence table in plain words with units, and the ranked
//! conversations with what each column means. No field names, no nulls, no float noise: a
//! figure that is absent or that has no meaning (a negative gap) is left out, not printed as
//! `-758.7 MiB`. `--json` stays the machine interface.
//!
//! The page is standalone: no script, no external asset, everything escaped, a
//! Content-Security-Policy that lets nothing load or run.

use crate::analysis::{Analysis, Verdict};
use crate::chart::{self, escape_xml as esc};
use crate::output::{bytes, duration_ms, time, turns};
use crate::report::{RECENT_WINDOW_MS, Report};

/// The page's Content-Security-Policy: its own inline style, nothing that loads or runs.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";

/// Rows in the conversations table of the standalone page.
pub const MAX_CONVERSATIONS: usize = 20;

/// The stylesheet of [`report_page`]; the server's `/ui` has its own and reuses the class
/// names (`num`, `muted`, `explain`).
pub const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:1.5rem auto;\
max-width:1000px;padding:0 1rem;color:#1a1a1a;background:#fff}\
h1{font-size:1.3rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}\
.sub{color:#555;margin:0 0 .8rem}\
.verdict{font-size:2.4rem;font-weight:800;letter-spacing:.02em;margin:.2rem 0 .3rem}\
.bad{color:#b00020}.warn{color:#b35c00}.good{color:#1b7f3b}.none{color:#555}\
.why{font-size:1.1rem;margin:.2rem 0 .6rem}\
.limit{border-left:4px solid #999;padding:.3rem .7rem;background:#f6f6f6;margin:.4rem 0}\
.next{border-left:4px solid #1f5fbf;padding:.3rem .7rem;background:#f2f6fd;margin:.4rem 0}\
figure{margin:0 0 1rem}svg{max-width:100%;height:auto}\
figcaption{color:#555;font-size:.85rem}\
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.3rem 0}\
th,td{border-bottom:1px solid #e3e3e3;padding:.3rem .5rem;text-align:left;vertical-align:top}\
th{background:#f5f5f5}th.num,td.num{text-align:right;font-variant-numeric:tabular-nums;\
white-space:nowrap}\
td.explain{color:#555}.muted{color:#666;font-size:.9rem}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;font-size:.9rem}\
dt{font-weight:600}dd{margin:0;color:#444}\
code{font-family:ui-monospace,monospace;font-size:.85rem;overflow-wrap:anywhere}\
footer{margin-top:2rem;color:#777;font-size:.8rem}";

/// The CSS class of a verdict's colour: `bad`, `warn`, `good`, `none`.
pub fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Leak | Verdict::StateGrowth | Verdict::NonHeap => "bad",
        Verdict::AllocatorRetention => "warn",
        Verdict::WorkingSet | Verdict::Flat => "good",
        Verdict::InsufficientData => "none",
    }
}

/// One line of the evidence table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// What it is, in plain words.
    pub name: &'static str,
    /// The figure, with its unit.
    pub value: String,
    /// What it means for the verdict.
    pub meaning: String,
}

/// What the window could have missed, as one sentence: the slowest leak the trend test would
/// have found here, and how long a window a leak of the target rate needs.
pub fn detection_limit(a: &Analysis) -> String {
    match (a.detection_limit_bytes_per_hour, a.detection_window_needed_ms) {
        (Some(limit), Some(need)) => format!(
            "A leak slower than {}/h can hide in this window; one of {}/h needs about {} of \
             samples to show.",
            bytes(limit),
            bytes(a.detection_target_bytes_per_hour.unwrap_or(0.0)),
            duration_ms(need)
        ),
        (Some(limit), None) => {
            format!("A leak slower than {}/h can hide in this window.", bytes(limit))
        }
        _ => "Too few idle floors to test a trend: a leak of any size can hide in this window."
            .to_owned(),
    }
}

/// The evidence behind a verdict, in plain words and units; absent and meaningless figures are
/// left out.
pub fn evidence(a: &Analysis) -> Vec<Evidence> {
    let mut rows = Vec::new();
    rows.push(Evidence {
        name: "window",
        value: format!(
            "{} ({} to {})",
            duration_ms(a.to_ms - a.from_ms),
            time(a.from_ms),
            time(a.to_ms)
        ),
        meaning: format!("{} samples of {}", a.samples, a.metric),
    });
    if let (Some(start), Some(end)) = (a.floor_start_bytes, a.floor_end_bytes) {
        rows.push(Evidence {
            name: "idle floor",
            value: format!("{} to {}", bytes(start), bytes(end)),
            meaning: match a.floor_load {
                Some(l) if l > 0.0 => format!(
                    "the lowest memory at comparable load ({}), first to last bucket",
                    turns(l)
                ),
                Some(_) => "the lowest memory with no turn running, first to last bucket".into(),
                None => {
                    "the lowest memory, adjusted for turns in flight, first to last bucket".into()
                }
            },
        });
    }
    if let Some(g) = &a.growth {
        rows.push(Evidence {
            name: "floor growth",
            value: format!("{}/h", bytes(g.bytes_per_hour)),
            meaning: format!(
                "{} over the window; the trend is real with {:.0}% confidence ({} buckets of {})",
                bytes(g.growth_bytes),
                (100.0 * g.confidence).clamp(0.0, 100.0).floor(),
                a.buckets.len(),
                duration_ms(a.bucket_ms)
            ),
        });
    }
    if let Some(limit) = a.detection_limit_bytes_per_hour {
        rows.push(Evidence {
            name: "detection limit",
            value: format!("{}/h", bytes(limit)),
            meaning: "the slowest leak this window would have shown".into(),
        });
    }
    if let Some(w) = a.bytes_per_turn_in_flight.filter(|w| *w > 0.0) {
        rows.push(Evidence {
            name: "per turn in flight",
            value: bytes(w),
            meaning: match a.load_correlation {
                Some(r) => format!(
                    "memory one running turn holds; memory follows turns in flight with r = {r:.2}"
                ),
                None => "memory one running turn holds".into(),
            },
        });
    }
    if let (Some(p), Some(t)) = (a.peak_bytes, a.peak_ts_ms) {
        rows.push(Evidence {
            name: "peak",
            value: bytes(p),
            meaning: format!(
                "at {}{}",
                time(t),
                a.peak_turns_in_flight.map_or(String::new(), |l| format!(", with {}", turns(l)))
            ),
        });
    }
    if let Some(gap) = a.resident_minus_allocated_bytes.filter(|g| *g >= 0.0) {
        rows.push(Evidence {
            name: "allocator retention",
            value: bytes(gap),
            meaning: "memory jemalloc keeps resident beyond what is allocated, at idle".into(),
        });
    }
    if let Some(gap) = a.rss_minus_resident_bytes.filter(|g| *g >= 0.0) {
        rows.push(Evidence {
            name: "outside jemalloc",
            value: bytes(gap),
            meaning: "RSS beyond jemalloc's resident memory at idle (stacks, mapped files, \
                      other allocators)"
                .into(),
        });
    }
    if let Some(n) = a.naive_rss_bytes_per_hour {
        rows.push(Evidence {
            name: "first-to-last RSS slope",
            value: format!("{}/h", bytes(n)),
            meaning: "first sample against last, not load-adjusted: what a naive alert reads; \
                      do not quote it"
                .into(),
        });
    }
    rows
}

/// The evidence as an HTML table.
pub fn evidence_table(a: &Analysis) -> String {
    let mut out = String::from(
        "<table class=\"evidence\">\n<thead><tr><th>evidence</th><th>figure</th><th>what it \
         means</th></tr></thead>\n<tbody>\n",
    );
    for e in evidence(a) {
        out.push_str(&format!(
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"explain\">{}</td></tr>\n",
            esc(e.name),
            esc(&e.value),
            esc(&e.meaning)
        ));
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

/// The ranked conversations (at most `max`) as an HTML table with what each column means, or
/// an empty string when none is ranked.
pub fn conversations_table(a: &Analysis, max: usize) -> String {
    let ranks = &a.conversations;
    let Some(first) = ranks.first() else {
        return String::new();
    };
    let live = first.kind == "live";
    let leaky = matches!(a.verdict, Verdict::Leak | Verdict::StateGrowth);
    let shown = &ranks[..ranks.len().min(max)];
    let history = shown.iter().any(|c| c.history_bytes.is_some());
    let mut out = String::from(
        "<table class=\"conversations\">\n<thead><tr><th class=\"num\">#</th><th>conversation</th>",
    );
    out.push_str(if live {
        "<th class=\"num\">live now</th>"
    } else {
        "<th class=\"num\">kept</th>"
    });
    out.push_str("<th class=\"num\">allocated</th><th class=\"num\">turns</th>");
    if history {
        out.push_str("<th class=\"num\">history</th>");
    }
    if leaky {
        out.push_str("<th class=\"num\">share of the floor's rise</th>");
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for c in shown {
        out.push_str(&format!(
            "<tr><td class=\"num\">{}</td><td><code>{}</code></td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td>",
            c.rank,
            esc(&c.id),
            bytes(c.retained_bytes as f64),
            bytes(c.allocated_bytes as f64),
            c.turns,
        ));
        if history {
            out.push_str(&format!(
                "<td class=\"num\">{}</td>",
                c.history_bytes.map_or(String::new(), |h| bytes(h as f64))
            ));
        }
        if leaky {
            out.push_str(&format!(
                "<td class=\"num\">{}</td>",
                if c.active_while_floor_rose {
                    format!("{:.0}%", (100.0 * c.floor_rise_share).clamp(0.0, 100.0))
                } else {
                    "not active".to_owned()
                }
            ));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n<dl class=\"legend\">\n");
    if live {
        out.push_str(
            "<dt>live now</dt><dd>bytes its turns allocated that are still allocated (the \
             tagged allocator counts them exactly)</dd>\n",
        );
    } else {
        out.push_str(
            "<dt>kept</dt><dd>allocated minus freed by its turns' tasks in the window: a buffer \
             another task freed counts here too, so it is a lead, not proof</dd>\n",
        );
    }
    out.push_str("<dt>allocated</dt><dd>everything its turns allocated in the window</dd>\n");
    if history {
        out.push_str("<dt>history</dt><dd>the size of its stored messages, when recorded</dd>\n");
    }
    if leaky {
        out.push_str(
            "<dt>share of the floor's rise</dt><dd>how much of the idle floor's rise happened \
             in buckets where it had a turn running</dd>\n",
        );
    }
    out.push_str("</dl>\n");
    if ranks.len() > max {
        out.push_str(&format!(
            "<p class=\"muted\">{} more conversations: <code>dispatchctl mem --json</code> \
             lists them all.</p>\n",
            ranks.len() - max
        ));
    }
    out
}

/// `text` escaped for HTML, with each `` `span` `` of the analysis' sentences (commands, in
/// the next step) set as `<code>`.
pub fn prose(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for (i, part) in esc(text).split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str(&format!("<code>{part}</code>"));
        } else {
            out.push_str(part);
        }
    }
    out
}

/// The chart of a report without the verdict in its header (the page says it once, above).
pub fn chart_svg(r: &Report, title: &str) -> String {
    let mut data = crate::report::chart_data(r);
    data.title = title.to_owned();
    data.verdict = String::new();
    chart::svg(&data)
}

/// `dispatchctl mem --html`: one boot's verdict as a standalone page.
pub fn report_page(r: &Report) -> String {
    let a = &r.analysis;
    let b = &r.boot;
    let service = b.service.as_deref().unwrap_or("dispatch");
    let title = format!("{service} boot {}: {}", crate::report::short(&b.boot), a.verdict.name());
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(&format!("<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"));
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str(&format!(
        "<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&title)
    ));
    out.push_str(&format!(
        "<header>\n<h1>Memory of {} boot <code>{}</code></h1>\n<p class=\"sub\">{}{}; {} from \
         {} to {} ({}). Times are UTC.</p>\n",
        esc(service),
        esc(crate::report::short(&b.boot)),
        b.version.as_deref().map_or(String::new(), |v| format!("version {}, ", esc(v))),
        b.pid.map_or("pid unknown".to_owned(), |p| format!("pid {p}")),
        if r.source == "hourly" { "hourly rollups" } else { "raw samples" },
        time(a.from_ms),
        time(a.to_ms),
        duration_ms(a.to_ms - a.from_ms),
    ));
    out.push_str(&format!(
        "<p class=\"verdict {}\">{}</p>\n<p class=\"why\">{}</p>\n</header>\n",
        verdict_class(a.verdict),
        esc(a.verdict.name()),
        prose(&a.summary)
    ));
    out.push_str(&format!("<p class=\"limit\">{}</p>\n", esc(&detection_limit(a))));
    if let Some(recent) = &r.recent {
        out.push_str(&format!(
            "<p class=\"limit\">The last {}: <strong class=\"{}\">{}</strong>, {}</p>\n",
            duration_ms(RECENT_WINDOW_MS),
            verdict_class(recent.analysis.verdict),
            esc(recent.analysis.verdict.name()),
            esc(&recent.analysis.summary)
        ));
    }
    if !a.next_step.is_empty() {
        out.push_str(&format!("<p class=\"next\">Next: {}</p>\n", prose(&a.next_step)));
    }
    if !r.points.is_empty() {
        out.push_str("<figure>\n");
        out.push_str(&chart_svg(r, &format!("{} and turns in flight", a.metric)));
        out.push_str(&format!(
            "<figcaption>{} (left axis) against turns in flight (right axis); dashed: the idle \
             floor per bucket; the peak is marked.</figcaption>\n</figure>\n",
            esc(a.metric)
        ));
    }
    out.push_str("<h2>Evidence</h2>\n");
    out.push_str(&evidence_table(a));
    let conversations = conversations_table(a, MAX_CONVERSATIONS);
    if !conversations.is_empty() {
        out.push_str("<h2>Conversations holding memory</h2>\n");
        out.push_str(&conversations);
    }
    if !a.notes.is_empty() {
        out.push_str("<h2>Notes</h2>\n<ul>\n");
        for n in &a.notes {
            out.push_str(&format!("<li>{}</li>\n", esc(n)));
        }
        out.push_str("</ul>\n");
    }
    out.push_str(
        "<footer>Written by dispatchctl mem; <code>dispatchctl mem --json</code> has every \
         figure for machines.</footer>\n</body>\n</html>\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_sets_backtick_spans_as_code_and_escapes_the_rest() {
        assert_eq!(
            prose("run `dispatchctl heap diff <a> <b>` & wait"),
            "run <code>dispatchctl heap diff &lt;a&gt; &lt;b&gt;</code> &amp; wait"
        );
        assert_eq!(prose("an open `span"), "an open <code>span</code>");
        assert_eq!(prose("none"), "none");
    }

    #[test]
    fn evidence_leaves_out_what_has_no_meaning() {
        let a = Analysis {
            resident_minus_allocated_bytes: Some(-795_557_888.0),
            rss_minus_resident_bytes: None,
            bytes_per_turn_in_flight: Some(-5.0),
            ..crate::analysis::analyze(&[], &[], &[], &Default::default())
        };
        let rows = evidence(&a);
        let names: Vec<&str> = rows.iter().map(|r| r.name).collect();
        assert_eq!(names, ["window"], "{rows:?}");
        assert!(!evidence_table(&a).contains("-758"), "no negative gap shown");
        assert_eq!(
            detection_limit(&a),
            "Too few idle floors to test a trend: a leak of any size can hide in this window."
        );
    }
}
