//! The standalone SVG chart: memory line and area, turns in flight on a second axis, the floor
//! dashed, the peak ringed, axes in human units and UTC, title and legend.

use super::{
    ChartData, Point, Scale, TimeFormat, TimeSpan, downsample, floor_steps, format_utc,
    human_duration, memory_range, segments, turns_range,
};
use crate::output;

const SVG_WIDTH: f64 = 960.0;
const SVG_HEIGHT: f64 = 360.0;
const PLOT_LEFT: f64 = 84.0;
const PLOT_RIGHT: f64 = 896.0;
const PLOT_TOP: f64 = 48.0;
const PLOT_BOTTOM: f64 = 284.0;
/// One downsampled column per pixel of plot width; each keeps up to 4 samples.
const SVG_COLUMNS: usize = (PLOT_RIGHT - PLOT_LEFT) as usize;
const COLOR_MEMORY: &str = "#1f77b4";
const COLOR_TURNS: &str = "#ff7f0e";
const COLOR_FLOOR: &str = "#2ca02c";
const COLOR_PEAK: &str = "#d62728";
const COLOR_AXIS: &str = "#444444";
const COLOR_GRID: &str = "#e6e6e6";
/// Rough width of one 11px sans-serif character, to lay out the legend.
const CHAR_WIDTH: f64 = 5.9;

/// The mark in front of an SVG legend entry, in the series' colour.
#[derive(Debug, Clone, Copy)]
enum Swatch {
    Line(&'static str),
    Dashed(&'static str),
    Ring(&'static str),
    Nothing,
}

/// Escapes text for XML and HTML content and attributes. Control characters other than tab
/// and newline are not allowed in XML 1.0 even escaped, so they become U+FFFD.
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Cuts `text` to `max` characters, the last an ellipsis when it was cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Red for growth verdicts, amber for retention, green for benign, grey otherwise.
fn verdict_color(verdict: &str) -> &'static str {
    match verdict {
        "LEAK" | "STATE-GROWTH" | "NON-HEAP" => "#b00020",
        "ALLOCATOR-RETENTION" => "#b35c00",
        "WORKING-SET" | "FLAT" => "#1b7f3b",
        _ => "#555555",
    }
}

/// `M x,y L x,y …` for each run, skipping points that round to the previous one.
fn path_data(runs: &[Vec<(f64, f64)>]) -> String {
    let mut d = String::new();
    for run in runs {
        let mut previous: Option<(String, String)> = None;
        for &(x, y) in run {
            let point = (format!("{x:.1}"), format!("{y:.1}"));
            if previous.as_ref() == Some(&point) {
                continue;
            }
            let command = if previous.is_none() { 'M' } else { 'L' };
            if !d.is_empty() {
                d.push(' ');
            }
            d.push_str(&format!("{command}{},{}", point.0, point.1));
            previous = Some(point);
        }
    }
    d
}

/// Downsampled runs of a series as plot coordinates.
fn svg_runs(
    data: &ChartData,
    value: impl Fn(&Point) -> f64,
    span: &TimeSpan,
    y: impl Fn(f64) -> f64,
) -> Vec<Vec<(f64, f64)>> {
    let x = |ts| PLOT_LEFT + span.fraction(ts) * (PLOT_RIGHT - PLOT_LEFT);
    segments(&downsample(&data.points, value, span, SVG_COLUMNS))
        .iter()
        .map(|run| run.iter().map(|s| (x(s.ts_ms), y(s.value))).collect())
        .collect()
}

/// A run of one point draws nothing as a path, so it gets a dot.
fn push_lone_points(out: &mut String, runs: &[Vec<(f64, f64)>], class: &str, color: &str) {
    for run in runs.iter().filter(|r| r.len() == 1) {
        out.push_str(&format!(
            "<circle class=\"{class}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{color}\"/>\n",
            run[0].0, run[0].1
        ));
    }
}

/// A standalone SVG (no external resources, no JavaScript): memory line (and light area),
/// turns-in-flight line on a second axis, the floor line dashed, the peak marked, axes with
/// tick labels in human units and UTC times, title and legend. Deterministic output for the same
/// input (tests snapshot it). Escape all text for XML. Size about 960x360.
///
/// The picture is exactly 960x360. Series are downsampled to one column per pixel of plot
/// width keeping each column's first, lowest, highest and last sample, so at most 3,248 points
/// per series are drawn and single-sample spikes survive. Elements carry classes for tests and
/// styling: `memory-area`, `memory-line`, `turns-line`, `floor` (a dashed step `<polyline>`)
/// and `peak`. Colours are presentation attributes, not a `<style>` sheet, so the SVG can be
/// inlined into a page without restyling it.
pub fn svg(data: &ChartData) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let (plot_w, plot_h) = (PLOT_RIGHT - PLOT_LEFT, PLOT_BOTTOM - PLOT_TOP);
    out.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{SVG_WIDTH}\" height=\"{SVG_HEIGHT}\" \
         viewBox=\"0 0 {SVG_WIDTH} {SVG_HEIGHT}\" font-family=\"sans-serif\" font-size=\"11\">\n"
    ));
    out.push_str(&format!("<title>{}</title>\n", escape_xml(&data.title)));
    out.push_str(&format!(
        "<rect width=\"{SVG_WIDTH}\" height=\"{SVG_HEIGHT}\" fill=\"#ffffff\"/>\n"
    ));

    // Header.
    out.push_str("<g class=\"header\">\n");
    out.push_str(&format!(
        "<text x=\"16\" y=\"26\" font-size=\"16\" font-weight=\"bold\" fill=\"#1a1a1a\">{}</text>\n",
        escape_xml(&truncate(&data.title, 90))
    ));
    out.push_str(&format!(
        "<text class=\"verdict\" x=\"{}\" y=\"26\" font-size=\"16\" font-weight=\"bold\" \
         text-anchor=\"end\" fill=\"{}\">{}</text>\n",
        SVG_WIDTH - 16.0,
        verdict_color(&data.verdict),
        escape_xml(&truncate(&data.verdict, 30))
    ));
    out.push_str("</g>\n");

    let span = TimeSpan::of(data);
    let memory_scale = memory_range(data).map(|(lo, hi)| Scale::bytes(lo, hi, 8.0));
    let turns_scale = turns_range(data).map(|(lo, hi)| Scale::count(lo, hi, 5.0));
    let y_memory = |s: Scale| move |v: f64| PLOT_BOTTOM - s.fraction(v) * plot_h;
    let x_of = |span: TimeSpan| move |ts: i64| PLOT_LEFT + span.fraction(ts) * plot_w;

    // Axes, grid and ticks.
    out.push_str("<g class=\"axes\">\n");
    if let Some(scale) = memory_scale {
        let y = y_memory(scale);
        for tick in scale.ticks() {
            out.push_str(&format!(
                "<line x1=\"{PLOT_LEFT}\" y1=\"{y:.1}\" x2=\"{PLOT_RIGHT}\" y2=\"{y:.1}\" stroke=\"{COLOR_GRID}\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{COLOR_AXIS}\">{}</text>\n",
                PLOT_LEFT - 6.0,
                y(tick) + 4.0,
                escape_xml(&scale.label(tick)),
                y = y(tick)
            ));
        }
    }
    out.push_str(&format!(
        "<text x=\"14\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{COLOR_MEMORY}\" \
         transform=\"rotate(-90 14 {:.1})\">{}</text>\n",
        PLOT_TOP + plot_h / 2.0,
        PLOT_TOP + plot_h / 2.0,
        escape_xml(&truncate(&data.memory_label, 40))
    ));
    if let Some(scale) = turns_scale {
        let y = |v: f64| PLOT_BOTTOM - scale.fraction(v) * plot_h;
        for tick in scale.ticks() {
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{COLOR_TURNS}\">{}</text>\n",
                PLOT_RIGHT + 6.0,
                y(tick) + 4.0,
                escape_xml(&scale.label(tick))
            ));
        }
        out.push_str(&format!(
            "<text x=\"{x}\" y=\"{y:.1}\" text-anchor=\"middle\" fill=\"{COLOR_TURNS}\" \
             transform=\"rotate(90 {x} {y:.1})\">turns in flight</text>\n",
            x = SVG_WIDTH - 14.0,
            y = PLOT_TOP + plot_h / 2.0
        ));
    }
    if let Some(span) = span {
        let x = x_of(span);
        let (ticks, format) = span.ticks(8);
        for tick in ticks {
            out.push_str(&format!(
                "<line x1=\"{x:.1}\" y1=\"{PLOT_BOTTOM}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{COLOR_AXIS}\"/>\n\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{COLOR_AXIS}\">{}</text>\n",
                PLOT_BOTTOM + 4.0,
                PLOT_BOTTOM + 16.0,
                format_utc(tick, format),
                x = x(tick)
            ));
        }
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{COLOR_AXIS}\">UTC, {} to {} ({})</text>\n",
            PLOT_LEFT + plot_w / 2.0,
            PLOT_BOTTOM + 33.0,
            format_utc(span.first_ms, TimeFormat::Full),
            format_utc(span.last_ms, TimeFormat::Full),
            human_duration(span.len_ms())
        ));
    }
    out.push_str(&format!(
        "<rect x=\"{PLOT_LEFT}\" y=\"{PLOT_TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" \
         fill=\"none\" stroke=\"{COLOR_AXIS}\"/>\n"
    ));
    out.push_str("</g>\n");

    // Series.
    out.push_str("<g class=\"series\">\n");
    match (span, memory_scale) {
        (Some(span), Some(scale)) => {
            let runs = svg_runs(data, |p| p.memory_bytes, &span, y_memory(scale));
            let areas: Vec<Vec<(f64, f64)>> = runs
                .iter()
                .filter(|run| run.len() > 1)
                .map(|run| {
                    let mut area = run.clone();
                    if let (Some(first), Some(last)) = (run.first(), run.last()) {
                        area.push((last.0, PLOT_BOTTOM));
                        area.push((first.0, PLOT_BOTTOM));
                    }
                    area
                })
                .collect();
            if !areas.is_empty() {
                let mut d = path_data(&areas);
                d.push_str(" Z");
                let d = d.replace(" M", " Z M");
                out.push_str(&format!(
                    "<path class=\"memory-area\" d=\"{d}\" fill=\"{COLOR_MEMORY}\" fill-opacity=\"0.12\" stroke=\"none\"/>\n"
                ));
            }
            if !runs.is_empty() {
                out.push_str(&format!(
                    "<path class=\"memory-line\" d=\"{}\" fill=\"none\" stroke=\"{COLOR_MEMORY}\" \
                     stroke-width=\"1.5\" stroke-linejoin=\"round\"/>\n",
                    path_data(&runs)
                ));
            }
            push_lone_points(&mut out, &runs, "memory-line", COLOR_MEMORY);

            if let Some(turns) = turns_scale {
                let y = move |v: f64| PLOT_BOTTOM - turns.fraction(v) * plot_h;
                let runs = svg_runs(data, |p| p.turns_in_flight, &span, y);
                out.push_str(&format!(
                    "<path class=\"turns-line\" d=\"{}\" fill=\"none\" stroke=\"{COLOR_TURNS}\" \
                     stroke-width=\"1\" stroke-linejoin=\"round\"/>\n",
                    path_data(&runs)
                ));
                push_lone_points(&mut out, &runs, "turns-line", COLOR_TURNS);
            }

            let steps = floor_steps(&data.floors, span.last_ms);
            if !steps.is_empty() {
                let (x, y) = (x_of(span), y_memory(scale));
                let points: Vec<String> = steps
                    .iter()
                    .flat_map(|&(start, end, bytes)| [(x(start), y(bytes)), (x(end), y(bytes))])
                    .map(|(x, y)| format!("{x:.1},{y:.1}"))
                    .collect();
                out.push_str(&format!(
                    "<polyline class=\"floor\" points=\"{}\" fill=\"none\" stroke=\"{COLOR_FLOOR}\" \
                     stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>\n",
                    points.join(" ")
                ));
            }

            if let Some((ts, bytes)) = data.peak.filter(|p| p.1.is_finite()) {
                let (cx, cy) = (x_of(span)(ts), y_memory(scale)(bytes));
                let label = format!(
                    "peak {} at {} UTC",
                    output::bytes(bytes),
                    format_utc(ts, span.edge_format())
                );
                let (tx, anchor) = if cx > PLOT_LEFT + plot_w / 2.0 {
                    (cx - 8.0, "end")
                } else {
                    (cx + 8.0, "start")
                };
                out.push_str(&format!(
                    "<g class=\"peak\">\n<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"4\" fill=\"none\" \
                     stroke=\"{COLOR_PEAK}\" stroke-width=\"2\"/>\n<text x=\"{tx:.1}\" y=\"{:.1}\" \
                     text-anchor=\"{anchor}\" fill=\"{COLOR_PEAK}\">{}</text>\n</g>\n",
                    (cy - 8.0).max(PLOT_TOP + 12.0),
                    escape_xml(&label)
                ));
            }
        }
        _ => out.push_str(&format!(
            "<text class=\"no-data\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
             fill=\"{COLOR_AXIS}\">no memory samples</text>\n",
            PLOT_LEFT + plot_w / 2.0,
            PLOT_TOP + plot_h / 2.0
        )),
    }
    out.push_str("</g>\n");

    // Legend.
    out.push_str("<g class=\"legend\">\n");
    let mut items = vec![(Swatch::Line(COLOR_MEMORY), truncate(&data.memory_label, 40))];
    items.push(match turns_scale {
        Some(_) => (Swatch::Line(COLOR_TURNS), "turns in flight (right axis)".to_owned()),
        None => (Swatch::Nothing, "turns in flight: no samples".to_owned()),
    });
    if !data.floors.is_empty() {
        items.push((Swatch::Dashed(COLOR_FLOOR), "idle floor (load-adjusted)".to_owned()));
    }
    if data.peak.is_some_and(|p| p.1.is_finite()) {
        items.push((Swatch::Ring(COLOR_PEAK), "peak".to_owned()));
    }
    let (mut x, y) = (PLOT_LEFT, SVG_HEIGHT - 14.0);
    for (swatch, text) in items {
        match swatch {
            Swatch::Line(color) | Swatch::Dashed(color) => out.push_str(&format!(
                "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" \
                 stroke-width=\"2\"{}/>\n",
                x + 20.0,
                if matches!(swatch, Swatch::Dashed(_)) { " stroke-dasharray=\"6 4\"" } else { "" }
            )),
            Swatch::Ring(color) => out.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"none\" stroke=\"{color}\" \
                 stroke-width=\"2\"/>\n",
                x + 10.0
            )),
            Swatch::Nothing => {}
        }
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#1a1a1a\">{}</text>\n",
            x + 26.0,
            y + 4.0,
            escape_xml(&text)
        ));
        x += 26.0 + text.chars().count() as f64 * CHAR_WIDTH + 18.0;
    }
    out.push_str("</g>\n");
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::fixtures::*;

    fn svg_element<'a>(svg: &'a str, class: &str) -> Option<&'a str> {
        let start = svg.find(&format!("class=\"{class}\""))?;
        let end = svg[start..].find("/>")?;
        Some(&svg[start..start + end])
    }

    fn attribute<'a>(element: &'a str, name: &str) -> Option<&'a str> {
        let start = element.find(&format!(" {name}=\""))? + name.len() + 3;
        let end = element[start..].find('"')?;
        Some(&element[start..start + end])
    }

    /// `(x, y)` pairs of a path's `d` or a polyline's `points`.
    fn coordinates(list: &str) -> Vec<(f64, f64)> {
        list.split([' ', 'M', 'L', 'Z'])
            .filter(|s| !s.is_empty())
            .filter_map(|pair| {
                let (x, y) = pair.split_once(',')?;
                Some((x.parse().ok()?, y.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn svg_is_well_formed_and_escapes_text() {
        let data = ChartData {
            title: "boot <6f1c> & \"friends\" 'x'".into(),
            memory_label: "a<b".into(),
            verdict: "LEAK".into(),
            ..bursty()
        };
        let out = svg(&data);
        assert!(out.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(out.trim_end().ends_with("</svg>"));
        assert!(is_balanced(&out, "<g ", "</g>") && out.contains("<g "));
        assert!(is_balanced(&out, "<text", "</text>"));
        assert!(out.contains("boot &lt;6f1c&gt; &amp; &quot;friends&quot; &#39;x&#39;"));
        assert!(!out.contains("<6f1c>") && !out.contains("a<b"));
        assert!(out.contains("a&lt;b"));
        assert!(!out.contains("<script"));
        assert_eq!(out, svg(&data), "deterministic");
    }

    #[test]
    fn svg_draws_the_floor_as_a_dashed_step_polyline() {
        let data = bursty();
        let out = svg(&data);
        let floor = svg_element(&out, "floor").unwrap_or_default();
        assert!(out.contains("<polyline class=\"floor\""), "{out}");
        assert!(floor.contains("stroke-dasharray"));
        let points = coordinates(attribute(floor, "points").unwrap_or_default());
        // Four buckets, two points each, all at the same height (80 MiB), left to right.
        assert_eq!(points.len(), 8, "{floor}");
        assert!(points.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 == w[1].1), "{floor}");
        assert_eq!(points[0].0, PLOT_LEFT);
        assert_eq!(points[7].0, PLOT_RIGHT);
    }

    #[test]
    fn svg_draws_memory_turns_peak_and_legend() {
        let out = svg(&bursty());
        for needle in [
            "class=\"memory-area\"",
            "class=\"memory-line\"",
            "class=\"turns-line\"",
            "class=\"peak\"",
            "turns in flight (right axis)",
            "idle floor (load-adjusted)",
            "jemalloc allocated",
            "UTC, 2026-06-28 00:12:02 to 2026-06-28 02:12:01 (1h 59m)",
            ">00:15</text>",
            " MiB</text>",
        ] {
            assert!(out.contains(needle), "missing {needle}:\n{out}");
        }
        let without_turns = svg(&ChartData {
            points: bursty()
                .points
                .into_iter()
                .map(|p| Point { turns_in_flight: f64::NAN, ..p })
                .collect(),
            ..bursty()
        });
        assert!(!without_turns.contains("turns-line"));
        assert!(without_turns.contains("turns in flight: no samples"));
    }

    #[test]
    fn svg_breaks_lines_where_values_are_missing() {
        let points = (0..300)
            .map(|i: i64| Point {
                ts_ms: T0 + i * 1000,
                memory_bytes: if (100..120).contains(&i) { f64::NAN } else { 64.0 * MIB },
                turns_in_flight: if (200..220).contains(&i) { f64::NAN } else { (i % 4) as f64 },
            })
            .collect();
        let out = svg(&chart(points));
        let memory = attribute(svg_element(&out, "memory-line").unwrap_or_default(), "d");
        let turns = attribute(svg_element(&out, "turns-line").unwrap_or_default(), "d");
        assert_eq!(memory.unwrap_or_default().matches('M').count(), 2, "{out}");
        assert_eq!(turns.unwrap_or_default().matches('M').count(), 2, "{out}");
    }

    #[test]
    fn svg_downsampling_keeps_a_single_spike() {
        let spike_at = 612_345;
        let points: Vec<Point> = (0..1_000_000)
            .map(|i: i64| Point {
                ts_ms: T0 + i * 1000,
                memory_bytes: if i == spike_at { 900.0 * MIB } else { 100.0 * MIB },
                turns_in_flight: 1.0,
            })
            .collect();
        let out = svg(&chart(points));
        let d = attribute(svg_element(&out, "memory-line").unwrap_or_default(), "d");
        let coords = coordinates(d.unwrap_or_default());
        assert!(!coords.is_empty() && coords.len() <= 4 * SVG_COLUMNS, "{} points", coords.len());
        let top = coords.iter().map(|c| c.1).fold(f64::INFINITY, f64::min);
        let scale = Scale::bytes(100.0 * MIB, 900.0 * MIB, 8.0);
        let y = |v: f64| PLOT_BOTTOM - scale.fraction(v) * (PLOT_BOTTOM - PLOT_TOP);
        assert!((top - y(900.0 * MIB)).abs() < 0.06, "top y {top}, spike at {}", y(900.0 * MIB));
        assert!(y(100.0 * MIB) - top > 100.0);
        // And it is at the right time.
        let x_spike = coords.iter().find(|c| c.1 == top).map(|c| c.0).unwrap_or_default();
        let expected = PLOT_LEFT + spike_at as f64 / 999_999.0 * (PLOT_RIGHT - PLOT_LEFT);
        assert!((x_spike - expected).abs() < 0.06, "{x_spike} vs {expected}");
    }
}
