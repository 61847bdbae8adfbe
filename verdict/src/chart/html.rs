//! The standalone HTML incident page: the verdict, the SVG inline, and the JSON report rendered
//! generically as definition lists and tables.

use serde_json::Value;

use super::svg::{escape_xml, svg};
use super::{ChartData, TimeFormat, format_utc};
use crate::output;

/// Rows shown per table and items per list; the rest are counted, not shown.
const HTML_MAX_ROWS: usize = 1000;
/// Nesting rendered as HTML; deeper values are shown as compact JSON.
const HTML_MAX_DEPTH: usize = 8;

const HTML_STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;\
max-width:1000px;padding:0 1rem;color:#1a1a1a;background:#fff}\
h1{font-size:1.4rem;margin:0 0 .25rem}\
h2{font-size:1.15rem;margin:1.5rem 0 .5rem}\
.verdict{font-size:3rem;font-weight:800;letter-spacing:.02em;margin:.2rem 0 1rem}\
.verdict-leak,.verdict-state-growth,.verdict-non-heap{color:#b00020}\
.verdict-allocator-retention{color:#b35c00}\
.verdict-working-set,.verdict-flat{color:#1b7f3b}\
.verdict-insufficient-data{color:#555}\
figure{margin:0 0 1rem}svg{max-width:100%;height:auto}\
figcaption{color:#555;font-size:.9rem}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}\
dt{font-weight:600;color:#333}dd{margin:0}\
table{border-collapse:collapse;margin:.25rem 0;font-size:.9rem}\
th,td{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}\
caption{text-align:left;color:#555;font-size:.85rem}\
.null,.empty,.more{color:#888}\
code{font-family:ui-monospace,monospace;font-size:.85rem;word-break:break-all}\
footer{margin-top:2rem;color:#777;font-size:.8rem}";

/// `WORKING-SET` -> `working-set`, for a CSS class.
fn css_slug(text: &str) -> String {
    let slug: String = text
        .chars()
        .take(40)
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    if slug.is_empty() { "none".to_owned() } else { slug }
}

/// Numbers under `*_bytes` keys read as KiB/MiB/GiB and `*ts_ms` keys as UTC times, with the
/// raw value kept in a tooltip.
fn render_number(out: &mut String, key: Option<&str>, number: &serde_json::Number) {
    let raw = number.to_string();
    let key = key.unwrap_or("");
    if key == "bytes" || key.ends_with("_bytes") {
        if let Some(bytes) = number.as_f64() {
            out.push_str(&format!("<span title=\"{raw}\">{}</span>", output::bytes(bytes)));
            return;
        }
    }
    if key.ends_with("ts_ms") {
        if let Some(ms) = number.as_i64() {
            let when = format_utc(ms, TimeFormat::Full);
            out.push_str(&format!("<time title=\"{raw}\">{when} UTC</time>"));
            return;
        }
    }
    out.push_str(&escape_xml(&raw));
}

/// Renders any JSON value: objects as `<dl>`, arrays of objects as tables, other arrays as
/// lists, scalars as text. `key` is the field the value sits under, for unit formatting.
fn render_json(out: &mut String, key: Option<&str>, value: &Value, depth: usize) {
    if depth > HTML_MAX_DEPTH {
        out.push_str(&format!("<code>{}</code>", escape_xml(&value.to_string())));
        return;
    }
    match value {
        Value::Null => out.push_str("<span class=\"null\">null</span>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(number) => render_number(out, key, number),
        Value::String(text) => out.push_str(&escape_xml(text)),
        Value::Array(items) if items.is_empty() => {
            out.push_str("<span class=\"empty\">(none)</span>");
        }
        Value::Array(items) if items.iter().all(Value::is_object) => {
            render_table(out, items, depth);
        }
        Value::Array(items) => {
            out.push_str("<ol>\n");
            for item in items.iter().take(HTML_MAX_ROWS) {
                out.push_str("<li>");
                render_json(out, key, item, depth + 1);
                out.push_str("</li>\n");
            }
            out.push_str("</ol>\n");
            render_more(out, items.len());
        }
        Value::Object(map) if map.is_empty() => {
            out.push_str("<span class=\"empty\">(empty)</span>")
        }
        Value::Object(map) => {
            out.push_str("<dl>\n");
            for (field, value) in map {
                out.push_str(&format!("<dt>{}</dt>\n<dd>", escape_xml(field)));
                render_json(out, Some(field), value, depth + 1);
                out.push_str("</dd>\n");
            }
            out.push_str("</dl>\n");
        }
    }
}

fn render_more(out: &mut String, total: usize) {
    if total > HTML_MAX_ROWS {
        out.push_str(&format!(
            "<p class=\"more\">{} more not shown (first {HTML_MAX_ROWS} of {total}).</p>\n",
            total - HTML_MAX_ROWS
        ));
    }
}

/// An array of objects as a table whose columns are the union of their fields, in first-seen
/// order.
fn render_table(out: &mut String, rows: &[Value], depth: usize) {
    let shown = &rows[..rows.len().min(HTML_MAX_ROWS)];
    let mut columns: Vec<&str> = Vec::new();
    for field in shown.iter().filter_map(Value::as_object).flat_map(|row| row.keys()) {
        if !columns.contains(&field.as_str()) {
            columns.push(field);
        }
    }
    out.push_str("<table>\n");
    let noun = if rows.len() == 1 { "row" } else { "rows" };
    out.push_str(&format!("<caption>{} {noun}</caption>\n<thead><tr>", rows.len()));
    for column in &columns {
        out.push_str(&format!("<th>{}</th>", escape_xml(column)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in shown.iter().filter_map(Value::as_object) {
        out.push_str("<tr>");
        for column in &columns {
            match row.get(*column) {
                Some(value) => {
                    out.push_str(if value.is_number() { "<td class=\"num\">" } else { "<td>" });
                    render_json(out, Some(column), value, depth + 1);
                    out.push_str("</td>");
                }
                None => out.push_str("<td></td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    render_more(out, rows.len());
}

/// A standalone HTML page an engineer can attach to an incident: title, the verdict in large
/// type, the SVG inline, and the evidence rendered from `report` (a JSON object; render its
/// top-level fields generically as a definition list / tables, including arrays of objects as
/// tables, e.g. the `conversations` array with fields such as `id`, `retained_bytes`, `turns`).
/// No external resources, no JavaScript, escape everything for HTML. Deterministic.
///
/// Numbers under keys ending in `_bytes` are shown in binary units and those ending in `ts_ms`
/// as UTC times, each with the raw value as a tooltip. Tables and lists show the first 1000
/// entries and say how many were left out; nesting deeper than 8 levels is shown as compact
/// JSON. A report that is not an object is rendered as a single value. The page carries a
/// Content-Security-Policy that forbids scripts and any fetch, as a second line of defence.
pub fn html(data: &ChartData, report: &Value) -> String {
    let title = escape_xml(&data.title);
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" \
         content=\"default-src 'none'; style-src 'unsafe-inline'\">\n",
    );
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str(&format!(
        "<title>{title}</title>\n<style>{HTML_STYLE}</style>\n</head>\n<body>\n"
    ));
    out.push_str(&format!(
        "<header>\n<h1>{title}</h1>\n<p class=\"verdict verdict-{}\">{}</p>\n</header>\n",
        css_slug(&data.verdict),
        escape_xml(&data.verdict)
    ));
    out.push_str("<figure>\n");
    out.push_str(&svg(data));
    out.push_str(&format!(
        "<figcaption>{} against turns in flight; dashed: load-adjusted idle floor. Times are UTC.</figcaption>\n",
        escape_xml(&data.memory_label)
    ));
    out.push_str("</figure>\n<section class=\"evidence\">\n<h2>Evidence</h2>\n");
    render_json(&mut out, None, report, 0);
    out.push_str("</section>\n<footer>Generated by dispatchctl mem.</footer>\n</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::fixtures::*;

    #[test]
    fn html_renders_verdict_svg_and_evidence_escaped() {
        let mut data = bursty();
        data.verdict = "LEAK".into();
        data.title = "boot <b>6f1c</b>".into();
        let report = serde_json::json!({
            "verdict": "LEAK",
            "growth_bytes": 67_108_864,
            "first_ts_ms": T0,
            "note": "<script>alert(1)</script>",
            "<script>key": true,
            "conversations": [
                { "id": "c-1", "retained_bytes": 1536, "turns": 12 },
                { "id": "<script>alert('x')</script>", "turns": 3, "extra": null },
            ],
            "tags": ["a", "b&c"],
            "nested": { "deeper": { "empty": {} }, "none": [] },
        });
        let page = html(&data, &report);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<p class=\"verdict verdict-leak\">LEAK</p>"));
        assert!(!page.to_lowercase().contains("<script"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(page.contains("<dt>&lt;script&gt;key</dt>"));
        assert!(page.contains("boot &lt;b&gt;6f1c&lt;/b&gt;") && !page.contains("<b>6f1c"));
        assert!(page.contains("<svg") && page.contains("class=\"floor\""));
        assert!(page.contains("<th>id</th><th>retained_bytes</th><th>turns</th><th>extra</th>"));
        assert!(page.contains("<td class=\"num\"><span title=\"1536\">1.5 KiB</span></td>"));
        assert!(page.contains("<span title=\"67108864\">64.0 MiB</span>"));
        assert!(page.contains("<time title=\"1782605522000\">2026-06-28 00:12:02 UTC</time>"));
        assert!(page.contains("<li>b&amp;c</li>"));
        assert!(!page.contains("http://") || !page.replace(SVG_NS, "").contains("http://"));
        assert!(!page.contains("src=") && !page.contains("href="));
        assert_eq!(page, html(&data, &report), "deterministic");
    }

    const SVG_NS: &str = "http://www.w3.org/2000/svg";

    #[test]
    fn html_bounds_tables_and_depth() {
        let rows: Vec<Value> = (0..1500).map(|i| serde_json::json!({ "id": i })).collect();
        let mut deep = serde_json::json!("bottom");
        for _ in 0..20 {
            deep = serde_json::json!({ "d": deep });
        }
        let page = html(&bursty(), &serde_json::json!({ "conversations": rows, "deep": deep }));
        assert_eq!(page.matches("<tr>").count(), 1 + HTML_MAX_ROWS);
        assert!(page.contains("500 more not shown (first 1000 of 1500)."));
        assert!(page.contains("<code>{&quot;d&quot;:"), "deep values fall back to JSON");
    }
}
