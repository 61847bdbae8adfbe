//! The terminal chart: memory as braille dots, the floor and peak marked, turns in flight as a
//! strip of block levels, axes and a legend, in exactly the cells asked for.

use super::{
    ChartData, Scale, TimeFormat, TimeSpan, downsample, floor_steps, format_utc, memory_range,
    segments, turns_range,
};
use crate::output;

/// Lines of a terminal chart besides the plot rows: title, turns strip, axis, times, legend.
const TERMINAL_FIXED_LINES: usize = 5;
const TERMINAL_MIN_PLOT_ROWS: usize = 3;
const TERMINAL_MIN_PLOT_COLUMNS: usize = 8;
/// Bounds the work and memory of one render; bigger requests get the one-line note.
const TERMINAL_MAX_WIDTH: usize = 2000;
const TERMINAL_MAX_HEIGHT: usize = 500;
const TURNS_STRIP_LABEL: &str = "turns";
/// Turns strip levels, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
const FLOOR_GLYPH: char = '╌';
const PEAK_GLYPH: char = '◆';
/// Bit of each braille dot, by `[dot column][dot row]` within a 2x4 cell.
const BRAILLE_BITS: [[u8; 4]; 2] = [[0x01, 0x02, 0x04, 0x40], [0x08, 0x10, 0x20, 0x80]];

/// What a cell shows; with colour each ink gets its own SGR code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ink {
    Title,
    Memory,
    Floor,
    Peak,
    Turns,
    Axis,
}

impl Ink {
    fn sgr(self) -> &'static str {
        match self {
            Ink::Title => "\x1b[1m",
            Ink::Memory => "\x1b[36m",
            Ink::Floor => "\x1b[33m",
            Ink::Peak => "\x1b[1;31m",
            Ink::Turns => "\x1b[35m",
            Ink::Axis => "\x1b[2m",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cell {
    ch: char,
    ink: Option<Ink>,
}

const BLANK: Cell = Cell { ch: ' ', ink: None };

fn push_text(line: &mut Vec<Cell>, text: &str, ink: Option<Ink>) {
    line.extend(sanitize_terminal(text).chars().map(|ch| Cell { ch, ink }));
}

/// Control characters (escapes, newlines) in data would break the layout or smuggle escape
/// codes into a colourless chart.
fn sanitize_terminal(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}

/// Writes `line` cut to `width` cells (an ellipsis marks the cut), without trailing blanks,
/// followed by a newline.
fn render_line(out: &mut String, line: &[Cell], width: usize, color: bool) {
    let mut cells: Vec<Cell> = line.iter().copied().take(width).collect();
    if line.len() > width {
        if let Some(last) = cells.last_mut() {
            last.ch = '…';
        }
    }
    while cells.last().is_some_and(|c| c.ch == ' ') {
        cells.pop();
    }
    let mut current = None;
    for cell in cells {
        let ink = if cell.ch == ' ' { current } else { cell.ink };
        if color && ink != current {
            if current.is_some() {
                out.push_str("\x1b[0m");
            }
            if let Some(ink) = ink {
                out.push_str(ink.sgr());
            }
            current = ink;
        }
        out.push(cell.ch);
    }
    if color && current.is_some() {
        out.push_str("\x1b[0m");
    }
    out.push('\n');
}

/// Places `text` into `line` starting at `at`, growing the line as needed.
fn place(line: &mut Vec<Cell>, at: usize, text: &str, ink: Option<Ink>) {
    for (i, ch) in sanitize_terminal(text).chars().enumerate() {
        if line.len() <= at + i {
            line.resize(at + i + 1, BLANK);
        }
        line[at + i] = Cell { ch, ink };
    }
}

/// Braille dots for the memory line: `2 * columns` by `4 * rows` dots.
struct Canvas {
    columns: usize,
    rows: usize,
    bits: Vec<u8>,
}

impl Canvas {
    fn new(columns: usize, rows: usize) -> Self {
        Canvas { columns, rows, bits: vec![0; columns * rows] }
    }

    fn dot(&mut self, x: i64, y: i64) {
        if x < 0 || y < 0 {
            return;
        }
        let (x, y) = (x as usize, y as usize);
        let (column, row) = (x / 2, y / 4);
        if column < self.columns && row < self.rows {
            self.bits[row * self.columns + column] |= BRAILLE_BITS[x % 2][y % 4];
        }
    }

    /// Bresenham's line between two dots, both ends included.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64)) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.dot(x, y);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn cell(&self, column: usize, row: usize) -> u8 {
        self.bits.get(row * self.columns + column).copied().unwrap_or(0)
    }
}

fn terminal_note(text: &str) -> String {
    format!("({})\n", sanitize_terminal(text))
}

/// A terminal chart `width` x `height` character cells: memory as a line/area of braille or block
/// characters, turns in flight as a second series on its own right-hand axis (or a strip under
/// the chart), floor marked, axis labels in human units (KiB/MiB/GiB, times as HH:MM UTC relative
/// to the data, e.g. first and last timestamp), legend. `color` adds ANSI colours; without it the
/// output must be plain ASCII/Unicode with no escape codes. Never panics on empty data, one
/// point, constant values, NaN/inf, or width/height too small (then it returns a one-line note).
///
/// The result is exactly `height` lines, each ending in `\n` and at most `width` characters
/// (not counting colour codes), trailing blanks trimmed:
///
/// 1. the title (with the verdict appended when the title does not contain it);
/// 2. `height - 5` plot rows: a gutter with memory labels (top, bottom and, from 5 rows, the
///    middle), then the memory line in braille (each column's low-to-high range, so bursts
///    show as bars), the floor as `╌` where the line is not, and the peak as `◆`;
/// 3. the turns strip under the plot: one row of `▁`..`█` levels from 0 to the highest turn
///    count (each column shows its highest value), or a note when there is no turns data;
/// 4. the time axis;
/// 5. the first and last timestamps in UTC (`HH:MM`, `MM-DD HH:MM` across midnight, `HH:MM:SS`
///    under two minutes), and the middle one when there is room;
/// 6. the legend.
///
/// Sizes below 8 lines or too narrow for the gutter plus 8 columns, or above 2000x500, give a
/// one-line note in parentheses instead. Control characters in the title and labels are shown
/// as `\u{fffd}`.
pub fn terminal(data: &ChartData, width: usize, height: usize, color: bool) -> String {
    let min_height = TERMINAL_FIXED_LINES + TERMINAL_MIN_PLOT_ROWS;
    if width > TERMINAL_MAX_WIDTH || height > TERMINAL_MAX_HEIGHT {
        return terminal_note(&format!(
            "chart too large: {width}x{height} cells, at most {TERMINAL_MAX_WIDTH}x{TERMINAL_MAX_HEIGHT}"
        ));
    }
    if height < min_height {
        return terminal_note(&format!(
            "chart needs at least {min_height} lines, got {height}; {}",
            data.verdict
        ));
    }
    let rows = height - TERMINAL_FIXED_LINES;
    let span = TimeSpan::of(data);
    let scale = memory_range(data).map(|(lo, hi)| Scale::bytes(lo, hi, 10.0));

    // Gutter labels: top, bottom and middle rows.
    let row_labels: Vec<String> = (0..rows)
        .map(|row| match scale {
            Some(s) if row == 0 => s.label(s.hi),
            Some(s) if row == rows - 1 => s.label(s.lo),
            Some(s) if rows >= 5 && row == rows / 2 => {
                s.label(s.hi - (row as f64 + 0.5) / rows as f64 * (s.hi - s.lo))
            }
            _ => String::new(),
        })
        .collect();
    let gutter = row_labels
        .iter()
        .map(|l| l.chars().count())
        .chain(std::iter::once(TURNS_STRIP_LABEL.len()))
        .max()
        .unwrap_or(0);
    if width < gutter + 1 + TERMINAL_MIN_PLOT_COLUMNS {
        return terminal_note(&format!(
            "chart needs at least {} columns, got {width}; {}",
            gutter + 1 + TERMINAL_MIN_PLOT_COLUMNS,
            data.verdict
        ));
    }
    let columns = width - gutter - 1;

    // The plot: braille memory line, then floor and peak where they belong.
    let mut canvas = Canvas::new(columns, rows);
    let mut marks: Vec<Option<Cell>> = vec![None; columns * rows];
    if let (Some(span), Some(scale)) = (span, scale) {
        let (dot_columns, dot_rows) = (columns * 2, rows * 4);
        let dot_y = |value: f64| ((1.0 - scale.fraction(value)) * (dot_rows - 1) as f64).round();
        let memory = downsample(&data.points, |p| p.memory_bytes, &span, dot_columns);
        for run in segments(&memory) {
            let dots: Vec<(i64, i64)> = run
                .iter()
                .map(|s| (span.column(s.ts_ms, dot_columns) as i64, dot_y(s.value) as i64))
                .collect();
            if let Some(&first) = dots.first() {
                canvas.dot(first.0, first.1);
            }
            for pair in dots.windows(2) {
                canvas.line(pair[0], pair[1]);
            }
        }
        let last_column = span.column(span.last_ms, columns);
        let steps = floor_steps(&data.floors, span.last_ms);
        for (i, &(start, end, bytes)) in steps.iter().enumerate() {
            let row = (dot_y(bytes) as usize / 4).min(rows - 1);
            let from = span.column(start, columns);
            let to = if i + 1 == steps.len() {
                last_column.max(from)
            } else {
                span.column(end, columns).saturating_sub(1).max(from)
            };
            for column in from..=to.min(columns - 1) {
                if canvas.cell(column, row) == 0 {
                    marks[row * columns + column] =
                        Some(Cell { ch: FLOOR_GLYPH, ink: Some(Ink::Floor) });
                }
            }
        }
        if let Some((ts, bytes)) = data.peak.filter(|p| p.1.is_finite()) {
            let row = (dot_y(bytes) as usize / 4).min(rows - 1);
            marks[row * columns + span.column(ts, columns)] =
                Some(Cell { ch: PEAK_GLYPH, ink: Some(Ink::Peak) });
        }
    }

    let mut out = String::new();
    let mut title = Vec::new();
    push_text(&mut title, &data.title, Some(Ink::Title));
    if !data.verdict.is_empty() && !data.title.contains(&data.verdict) {
        push_text(&mut title, &format!(" — {}", data.verdict), Some(Ink::Title));
    }
    render_line(&mut out, &title, width, color);

    for (row, label) in row_labels.iter().enumerate() {
        let mut line = Vec::with_capacity(width);
        let pad = gutter - label.chars().count();
        line.resize(pad, BLANK);
        push_text(&mut line, label, Some(Ink::Axis));
        line.push(Cell { ch: if label.is_empty() { '│' } else { '┤' }, ink: Some(Ink::Axis) });
        for column in 0..columns {
            line.push(match marks[row * columns + column] {
                Some(mark) => mark,
                None => match canvas.cell(column, row) {
                    0 => BLANK,
                    bits => Cell {
                        ch: char::from_u32(0x2800 + u32::from(bits)).unwrap_or('⣿'),
                        ink: Some(Ink::Memory),
                    },
                },
            });
        }
        if scale.is_none() && row == rows / 2 {
            place(
                &mut line,
                gutter + 1 + columns.saturating_sub(18) / 2,
                "no memory samples",
                None,
            );
        }
        render_line(&mut out, &line, width, color);
    }

    // Turns strip.
    let turns_max = turns_range(data).map(|(lo, hi)| (lo.min(0.0), hi));
    let mut strip = vec![BLANK; gutter - TURNS_STRIP_LABEL.len()];
    push_text(&mut strip, TURNS_STRIP_LABEL, Some(Ink::Axis));
    strip.push(Cell { ch: '┤', ink: Some(Ink::Axis) });
    match (span, turns_max) {
        (Some(span), Some((lo, hi))) => {
            let turns = downsample(&data.points, |p| p.turns_in_flight, &span, columns);
            let level = |v: f64| {
                let f = if hi > lo { ((v - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.0 };
                BARS[(f * (BARS.len() - 1) as f64).round() as usize]
            };
            let mut cells = vec![BLANK; columns];
            let mut held: Option<(usize, f64)> = None;
            for (i, column) in turns.iter().enumerate() {
                let Some(column) = column else { continue };
                // A gauge holds its value until the next sample, unless the gauge went absent.
                if let Some((from, value)) = held.filter(|_| !column.is_after_gap) {
                    for cell in cells.iter_mut().take(i).skip(from + 1) {
                        *cell = Cell { ch: level(value), ink: Some(Ink::Turns) };
                    }
                }
                cells[i] = Cell { ch: level(column.max.value), ink: Some(Ink::Turns) };
                held = Some((i, column.last.value));
            }
            strip.extend(cells);
        }
        _ => push_text(&mut strip, " no turns_in_flight samples", Some(Ink::Axis)),
    }
    render_line(&mut out, &strip, width, color);

    // Time axis and labels.
    let mut axis = vec![BLANK; gutter];
    axis.push(Cell { ch: '└', ink: Some(Ink::Axis) });
    axis.extend(std::iter::repeat_n(Cell { ch: '─', ink: Some(Ink::Axis) }, columns));
    render_line(&mut out, &axis, width, color);

    let mut times = vec![BLANK; gutter + 1];
    match span {
        Some(span) if span.len_ms() > 0 => {
            let format = span.edge_format();
            let first = format_utc(span.first_ms, format);
            let last = format!("{} UTC", format_utc(span.last_ms, format));
            let middle_ms = span.first_ms + ((span.len_ms() / 2) as i64);
            let middle = format_utc(middle_ms, format);
            let (first_len, last_len, middle_len) =
                (first.chars().count(), last.chars().count(), middle.chars().count());
            place(&mut times, gutter + 1, &first, Some(Ink::Axis));
            if columns > first_len + last_len {
                place(&mut times, gutter + 1 + columns - last_len, &last, Some(Ink::Axis));
            }
            if columns >= first_len + middle_len + last_len + 6 {
                let at = gutter + 1 + (columns - middle_len) / 2;
                place(&mut times, at, &middle, Some(Ink::Axis));
            }
        }
        Some(span) => {
            let label = format!("{} UTC", format_utc(span.first_ms, TimeFormat::Hms));
            let at = gutter + 1 + columns.saturating_sub(label.len()) / 2;
            place(&mut times, at, &label, Some(Ink::Axis));
        }
        None => place(&mut times, gutter + 1, "no samples", Some(Ink::Axis)),
    }
    render_line(&mut out, &times, width, color);

    // Legend: items in order of importance, each in the longest form that still fits.
    let mut items: Vec<Vec<Vec<Cell>>> = Vec::new();
    let item = |glyph: &str, ink: Ink, text: &str| {
        let mut cells = Vec::new();
        if !glyph.is_empty() {
            push_text(&mut cells, &format!("{glyph} "), Some(ink));
        }
        push_text(&mut cells, text, None);
        cells
    };
    items.push(vec![item("⣿", Ink::Memory, &data.memory_label)]);
    items.push(match turns_max {
        Some((_, hi)) => {
            let max = Scale::count(0.0, hi, 1.0).label(hi);
            vec![item("▁█", Ink::Turns, &format!("turns 0..{max}"))]
        }
        None => vec![item("", Ink::Turns, "turns: no data")],
    });
    if !data.floors.is_empty() {
        items.push(vec![item(&FLOOR_GLYPH.to_string(), Ink::Floor, "floor")]);
    }
    if let Some((ts, bytes)) = data.peak.filter(|p| p.1.is_finite()) {
        let when = format_utc(ts, span.map_or(TimeFormat::Hm, |s| s.edge_format()));
        let glyph = PEAK_GLYPH.to_string();
        items.push(vec![
            item(&glyph, Ink::Peak, &format!("peak {} at {when}", output::bytes(bytes))),
            item(&glyph, Ink::Peak, &format!("peak {}", output::bytes(bytes))),
            item(&glyph, Ink::Peak, &output::bytes(bytes)),
        ]);
    }
    let mut legend: Vec<Cell> = Vec::new();
    for forms in items {
        let separator = if legend.is_empty() { 0 } else { 2 };
        let fitting = forms.into_iter().find(|f| legend.len() + separator + f.len() <= width);
        if let Some(form) = fitting {
            legend.resize(legend.len() + separator, BLANK);
            legend.extend(form);
        }
    }
    render_line(&mut out, &legend, width, color);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::fixtures::*;

    #[test]
    fn terminal_has_exactly_height_lines_within_width() {
        let data = bursty();
        for (width, height) in [(60, 12), (80, 24), (40, 8), (200, 50)] {
            let out = terminal(&data, width, height, false);
            assert_eq!(out.lines().count(), height, "{width}x{height}:\n{out}");
            for line in out.lines() {
                assert!(line.chars().count() <= width, "{width}x{height}: {line:?}");
            }
        }
    }

    #[test]
    fn terminal_colour_is_opt_in() {
        let data = bursty();
        let plain = terminal(&data, 60, 12, false);
        let colored = terminal(&data, 60, 12, true);
        assert!(!plain.contains('\x1b'));
        assert!(colored.contains("\x1b[36m"), "memory in cyan:\n{colored}");
        assert!(colored.contains("\x1b[0m"));
        assert_eq!(colored.lines().count(), 12);
        assert_eq!(strip_ansi(&colored), plain);
    }

    fn strip_ansi(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn terminal_draws_memory_floor_peak_turns_and_labels() {
        let out = terminal(&bursty(), 60, 12, false);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("dispatch boot 6f1c2d9e: WORKING-SET"));
        let plot = &lines[1..8];
        assert!(plot.iter().any(|l| l.chars().any(|c| ('\u{2801}'..='\u{28ff}').contains(&c))));
        assert!(plot.iter().any(|l| l.contains(FLOOR_GLYPH)), "floor:\n{out}");
        assert!(plot.iter().any(|l| l.contains(PEAK_GLYPH)), "peak:\n{out}");
        // The peak marker sits on the top row: it is the highest value on the scale.
        assert!(plot[0].contains(PEAK_GLYPH) || plot[1].contains(PEAK_GLYPH), "{out}");
        assert!(plot[0].contains("MiB┤"), "top label:\n{out}");
        assert!(plot[6].contains("MiB┤"), "bottom label:\n{out}");
        assert!(lines[8].starts_with("turns┤") || lines[8].trim_start().starts_with("turns┤"));
        assert!(lines[8].contains('█') && lines[8].contains('▁'), "turns strip:\n{out}");
        assert!(lines[10].contains("00:12") && lines[10].ends_with("02:12 UTC"), "{out}");
        assert!(lines[11].contains("jemalloc allocated") && lines[11].contains("turns 0..5"));
    }

    #[test]
    fn terminal_bursts_reach_the_top_and_idle_stays_low() {
        let out = terminal(&bursty(), 60, 12, false);
        let lines: Vec<&str> = out.lines().collect();
        let gutter = lines[1].find('┤').map(|i| lines[1][..i].chars().count()).unwrap_or(0);
        let dots_in_column = |column: usize| {
            lines[1..8]
                .iter()
                .filter(|l| {
                    l.chars().nth(gutter + 1 + column).is_some_and(|c| c != ' ' && c != FLOOR_GLYPH)
                })
                .count()
        };
        // A burst starts every 20 of 120 minutes: the first column is mid-burst, and the
        // column at 10 minutes (idle) only touches the bottom rows.
        let columns = 60 - gutter - 1;
        let idle_column = columns * 10 / 120;
        assert!(dots_in_column(1) >= 3, "burst column:\n{out}");
        assert!(dots_in_column(idle_column) <= 2, "idle column {idle_column}:\n{out}");
    }

    #[test]
    fn terminal_without_turns_says_so() {
        let mut data = bursty();
        for p in &mut data.points {
            p.turns_in_flight = f64::NAN;
        }
        let out = terminal(&data, 60, 12, false);
        assert!(out.contains("no turns_in_flight samples"), "{out}");
        assert!(out.contains("turns: no data"));
        assert!(!out.contains('█'), "{out}");
    }

    #[test]
    fn terminal_too_small_or_too_large_is_one_line() {
        let data = bursty();
        for (width, height) in [(0, 0), (1, 1), (60, 7), (10, 12), (3000, 12), (60, 10_000)] {
            let out = terminal(&data, width, height, true);
            assert_eq!(out.lines().count(), 1, "{width}x{height}: {out}");
            assert!(out.starts_with('(') && !out.contains('\x1b'), "{out}");
        }
        assert_eq!(terminal(&data, 60, 8, false).lines().count(), 8);
    }

    #[test]
    fn terminal_sanitizes_control_characters() {
        let data = ChartData {
            title: "evil\x1b[31m\ntitle".into(),
            memory_label: "a\rb".into(),
            ..bursty()
        };
        let out = terminal(&data, 60, 12, false);
        assert!(!out.contains('\x1b') && !out.contains('\r'));
        assert_eq!(out.lines().count(), 12);
        assert!(out.starts_with("evil\u{fffd}[31m\u{fffd}title"));
    }
}
