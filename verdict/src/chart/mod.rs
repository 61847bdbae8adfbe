//! Pictures for `dispatchctl mem`, `dispatchctl postmortem` and `/ui`: memory against load as
//! a terminal chart and as a standalone SVG (the HTML page around it is [`crate::page`]).
//!
//! The module owns rendering only. It does no I/O and makes no verdicts: the analysis hands it a
//! [`ChartData`] and gets a `String` back.
//!
//! All renderers take whatever the analysis produces without panicking: no points, one point,
//! constant series, `NaN` and infinities (skipped, and a skipped run breaks the line), and
//! millions of samples. Long series are downsampled per output column keeping the first, lowest,
//! highest and last sample of each column, so a one-sample spike survives. Output is
//! deterministic for the same input, so it can be snapshotted. Times are UTC, split into calendar
//! fields by the journal crate ([`dispatch_journal::time::Civil`], the workspace's one civil-date
//! implementation); byte figures are [`crate::output::bytes`], as in the text output.
//!
//! This module holds the data and what every renderer shares (time span, downsampling, scales,
//! label formats); each renderer is a file of its own: [`terminal()`] (`terminal.rs`) and
//! [`svg()`] (`svg.rs`).
//!
//! ```
//! # use dispatch_verdict::chart::{ChartData, Point, terminal};
//! let data = ChartData {
//!     title: "dispatch boot 6f1c2d9e: WORKING-SET".into(),
//!     memory_label: "jemalloc allocated".into(),
//!     points: (0..600)
//!         .map(|i| Point {
//!             ts_ms: 1_782_605_522_000 + i * 1000,
//!             memory_bytes: 64.0 * 1024.0 * 1024.0 + f64::from((i % 60) as i32) * 1e6,
//!             turns_in_flight: f64::from((i % 60 / 15) as i32),
//!         })
//!         .collect(),
//!     floors: vec![(1_782_605_522_000, 64.0 * 1024.0 * 1024.0)],
//!     peak: None,
//!     verdict: "WORKING-SET".into(),
//! };
//! let chart = terminal(&data, 60, 12, false);
//! assert_eq!(chart.lines().count(), 12);
//! ```

use dispatch_journal::time::Civil;

use crate::output::{self, UNITS};

#[cfg(test)]
mod fixtures;
mod svg;
mod terminal;

pub use svg::svg;
pub use svg::{escape_xml, truncate};
pub use terminal::terminal;

/// One point of the memory-vs-load series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Sample time in milliseconds since the Unix epoch (UTC).
    pub ts_ms: i64,
    /// The memory figure named by [`ChartData::memory_label`], in bytes. Non-finite values are
    /// not drawn and break the memory line.
    pub memory_bytes: f64,
    /// Turns in flight at `ts_ms`. `NaN` when the gauge was absent: such points are not drawn
    /// and break the turns line; if no point has a finite value the series is left out.
    pub turns_in_flight: f64,
}

/// What to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartData {
    /// Chart title, e.g. `"dispatch boot 6f1c2d9e: LEAK"`. Any text; it is escaped or sanitized
    /// for each output.
    pub title: String,
    /// Names the memory figure, e.g. `"jemalloc allocated"` (a figure is labelled by its source).
    pub memory_label: String,
    /// The series in time order. Any length: renderers downsample to their own resolution.
    pub points: Vec<Point>,
    /// `(bucket start ts_ms, load-adjusted floor bytes)`: the idle floor, drawn as a step line
    /// where each bucket lasts until the next one starts (the last until the end of the data).
    pub floors: Vec<(i64, f64)>,
    /// `(ts_ms, bytes)` to mark as the peak, if any.
    pub peak: Option<(i64, f64)>,
    /// The verdict, e.g. `"LEAK"` or `"WORKING-SET"`.
    pub verdict: String,
}

// ---------------------------------------------------------------------------------------------
// Time: label formats over the journal crate's calendar split.

const MS_PER_SECOND: i64 = 1000;
const MS_PER_MINUTE: i64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

/// How much of a timestamp a label shows; picked from the span and tick step of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeFormat {
    /// `HH:MM:SS`
    Hms,
    /// `HH:MM`
    Hm,
    /// `MM-DD HH:MM`
    DayHm,
    /// `YYYY-MM-DD`
    Date,
    /// `YYYY-MM-DD HH:MM:SS`
    Full,
}

/// `ts_ms` in UTC, laid out as `format` says. Any `i64`: years outside 0000-9999 print as they
/// are (signed, wider), never clamped.
fn format_utc(ts_ms: i64, format: TimeFormat) -> String {
    let t = Civil::from_unix_millis(ts_ms);
    match format {
        TimeFormat::Hms => format!("{:02}:{:02}:{:02}", t.hour, t.minute, t.second),
        TimeFormat::Hm => format!("{:02}:{:02}", t.hour, t.minute),
        TimeFormat::DayHm => format!("{:02}-{:02} {:02}:{:02}", t.month, t.day, t.hour, t.minute),
        TimeFormat::Date => format!("{:04}-{:02}-{:02}", t.year, t.month, t.day),
        TimeFormat::Full => t.to_string(),
    }
}

/// `"4h 33m"`, `"2d 3h"`, `"12m 5s"`, `"45s"`, `"250 ms"`.
fn human_duration(ms: i128) -> String {
    if ms < i128::from(MS_PER_SECOND) {
        return format!("{ms} ms");
    }
    let secs = ms / 1000;
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds}s")
    } else {
        format!("{seconds}s")
    }
}

// ---------------------------------------------------------------------------------------------
// Data: the time span, downsampling and value scales shared by all renderers.

/// The time range covered by points, floors and the peak.
#[derive(Debug, Clone, Copy)]
struct TimeSpan {
    first_ms: i64,
    last_ms: i64,
}

impl TimeSpan {
    fn of(data: &ChartData) -> Option<Self> {
        let times = data
            .points
            .iter()
            .map(|p| p.ts_ms)
            .chain(data.floors.iter().filter(|f| f.1.is_finite()).map(|f| f.0))
            .chain(data.peak.filter(|p| p.1.is_finite()).map(|p| p.0));
        times.fold(None, |span: Option<TimeSpan>, ts| {
            Some(match span {
                None => TimeSpan { first_ms: ts, last_ms: ts },
                Some(s) => TimeSpan { first_ms: s.first_ms.min(ts), last_ms: s.last_ms.max(ts) },
            })
        })
    }

    /// Length in ms; i128 because `i64::MAX - i64::MIN` does not fit an i64.
    fn len_ms(&self) -> i128 {
        i128::from(self.last_ms) - i128::from(self.first_ms)
    }

    fn offset_ms(&self, ts_ms: i64) -> i128 {
        (i128::from(ts_ms) - i128::from(self.first_ms)).clamp(0, self.len_ms())
    }

    /// Position of `ts_ms` in `[0, 1]`; a span of one instant puts everything in the middle.
    fn fraction(&self, ts_ms: i64) -> f64 {
        let len = self.len_ms();
        if len <= 0 { 0.5 } else { self.offset_ms(ts_ms) as f64 / len as f64 }
    }

    /// Which of `n` equal columns `ts_ms` falls in (`n > 0`); the last instant is in the last.
    fn column(&self, ts_ms: i64, n: usize) -> usize {
        let len = self.len_ms();
        if n == 0 {
            return 0;
        }
        if len <= 0 {
            return n / 2;
        }
        let n_wide = n as i128;
        ((self.offset_ms(ts_ms) * n_wide / len).min(n_wide - 1)) as usize
    }

    fn crosses_day(&self) -> bool {
        Civil::from_unix_millis(self.first_ms).date()
            != Civil::from_unix_millis(self.last_ms).date()
    }

    /// Format for the first and last timestamps of the data.
    fn edge_format(&self) -> TimeFormat {
        if self.len_ms() < 2 * i128::from(MS_PER_MINUTE) {
            TimeFormat::Hms
        } else if self.crosses_day() {
            TimeFormat::DayHm
        } else {
            TimeFormat::Hm
        }
    }

    /// Round UTC tick times (multiples of a 1-2-5-ish step) and the format that suits them.
    fn ticks(&self, max_ticks: usize) -> (Vec<i64>, TimeFormat) {
        const STEPS_MS: [i64; 21] = [
            MS_PER_SECOND,
            2 * MS_PER_SECOND,
            5 * MS_PER_SECOND,
            10 * MS_PER_SECOND,
            15 * MS_PER_SECOND,
            30 * MS_PER_SECOND,
            MS_PER_MINUTE,
            2 * MS_PER_MINUTE,
            5 * MS_PER_MINUTE,
            10 * MS_PER_MINUTE,
            15 * MS_PER_MINUTE,
            30 * MS_PER_MINUTE,
            MS_PER_HOUR,
            2 * MS_PER_HOUR,
            3 * MS_PER_HOUR,
            6 * MS_PER_HOUR,
            12 * MS_PER_HOUR,
            MS_PER_DAY,
            2 * MS_PER_DAY,
            7 * MS_PER_DAY,
            14 * MS_PER_DAY,
        ];
        let len = self.len_ms();
        let max_ticks = max_ticks.max(1) as i128;
        if len <= 0 {
            return (vec![self.first_ms], self.edge_format());
        }
        let step = STEPS_MS.iter().map(|&s| i128::from(s)).find(|&s| len / s < max_ticks);
        let step = step.unwrap_or_else(|| {
            let days =
                nice_step(len as f64 / max_ticks as f64 / MS_PER_DAY as f64, &COUNT_STEPS).max(1.0);
            // Saturating cast: a step beyond i128 just yields the fallback ticks below.
            (days * MS_PER_DAY as f64).ceil() as i128
        });
        let format = if step < i128::from(MS_PER_MINUTE) {
            TimeFormat::Hms
        } else if step >= i128::from(MS_PER_DAY) {
            TimeFormat::Date
        } else if self.crosses_day() {
            TimeFormat::DayHm
        } else {
            TimeFormat::Hm
        };
        let first = i128::from(self.first_ms);
        let mut tick = (first + step - 1).div_euclid(step) * step;
        let mut ticks = Vec::new();
        while tick <= i128::from(self.last_ms) && ticks.len() < 2 * max_ticks as usize {
            ticks.extend(i64::try_from(tick).ok());
            tick += step;
        }
        if ticks.is_empty() {
            ticks = vec![self.first_ms, self.last_ms];
        }
        (ticks, format)
    }
}

/// One sample of one series.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    ts_ms: i64,
    value: f64,
}

/// The samples of one series that fell into one output column.
#[derive(Debug, Clone, Copy)]
struct Column {
    first: Sample,
    min: Sample,
    max: Sample,
    last: Sample,
    /// A non-finite value came between this column and the previous sample: break the line.
    is_after_gap: bool,
}

impl Column {
    fn new(sample: Sample, is_after_gap: bool) -> Self {
        Column { first: sample, min: sample, max: sample, last: sample, is_after_gap }
    }

    fn add(&mut self, sample: Sample) {
        if sample.value < self.min.value {
            self.min = sample;
        }
        if sample.value > self.max.value {
            self.max = sample;
        }
        self.last = sample;
    }

    /// First, lowest, highest and last sample in time order, without repeats (the M4
    /// reduction): a line through these looks like a line through every sample of the column.
    fn path_samples(&self) -> Vec<Sample> {
        let mut samples = vec![self.first, self.min, self.max, self.last];
        samples.sort_by_key(|s| s.ts_ms);
        samples.dedup_by(|a, b| a.ts_ms == b.ts_ms && a.value.to_bits() == b.value.to_bits());
        samples
    }
}

/// Reduces a series to `n` columns over `span`. Non-finite values are skipped and mark a gap.
fn downsample(
    points: &[Point],
    value: impl Fn(&Point) -> f64,
    span: &TimeSpan,
    n: usize,
) -> Vec<Option<Column>> {
    let mut columns: Vec<Option<Column>> = vec![None; n];
    let mut has_seen_value = false;
    let mut is_gap_pending = false;
    for point in points {
        let sample = Sample { ts_ms: point.ts_ms, value: value(point) };
        if !sample.value.is_finite() {
            is_gap_pending |= has_seen_value;
            continue;
        }
        if let Some(slot) = columns.get_mut(span.column(point.ts_ms, n)) {
            match slot {
                Some(column) => column.add(sample),
                None => *slot = Some(Column::new(sample, is_gap_pending)),
            }
        }
        has_seen_value = true;
        is_gap_pending = false;
    }
    columns
}

/// Splits downsampled columns into continuous runs of path samples.
fn segments(columns: &[Option<Column>]) -> Vec<Vec<Sample>> {
    let mut runs = Vec::new();
    let mut run: Vec<Sample> = Vec::new();
    for column in columns.iter().flatten() {
        if column.is_after_gap && !run.is_empty() {
            runs.push(std::mem::take(&mut run));
        }
        run.extend(column.path_samples());
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.filter(|v| v.is_finite()).fold(None, |range, v| match range {
        None => Some((v, v)),
        Some((lo, hi)) => Some((v.min(lo), v.max(hi))),
    })
}

/// Range of everything drawn against the memory axis: samples, floors and the peak.
fn memory_range(data: &ChartData) -> Option<(f64, f64)> {
    finite_range(
        data.points
            .iter()
            .map(|p| p.memory_bytes)
            .chain(data.floors.iter().map(|f| f.1))
            .chain(data.peak.map(|p| p.1)),
    )
}

fn turns_range(data: &ChartData) -> Option<(f64, f64)> {
    finite_range(data.points.iter().map(|p| p.turns_in_flight))
}

/// Floors sorted by time as `(start, end, bytes)` steps; the last one ends at `end_ms`.
fn floor_steps(floors: &[(i64, f64)], end_ms: i64) -> Vec<(i64, i64, f64)> {
    let mut sorted: Vec<(i64, f64)> = floors.iter().copied().filter(|f| f.1.is_finite()).collect();
    sorted.sort_by_key(|f| f.0);
    let ends = sorted.iter().skip(1).map(|f| f.0).chain(std::iter::once(end_ms));
    sorted.iter().zip(ends).map(|(&(start, bytes), end)| (start, end.max(start), bytes)).collect()
}

/// Step multipliers for byte axes: 25 MiB steps read well in binary units.
const BYTE_STEPS: [f64; 5] = [1.0, 2.0, 2.5, 5.0, 10.0];
/// Step multipliers for counts and days, where a quarter makes no sense.
const COUNT_STEPS: [f64; 4] = [1.0, 2.0, 5.0, 10.0];

/// The smallest of `multipliers` times a power of ten that is at least `raw`; 1 for nonsense
/// input.
fn nice_step(raw: f64, multipliers: &[f64]) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let base = 10f64.powf(raw.log10().floor());
    let mantissa = raw / base;
    let nice = multipliers.iter().copied().find(|&m| mantissa <= m).unwrap_or(10.0);
    let step = nice * base;
    if step.is_finite() && step > 0.0 { step } else { 1.0 }
}

/// Decimals needed to print multiples of `step` exactly (0.25 needs 2), at most 6.
fn decimals_for(step: f64) -> usize {
    (0..6)
        .find(|&d| {
            let scaled = step * 10f64.powi(d as i32);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.abs().max(1.0)
        })
        .unwrap_or(6)
}

/// A value axis: `[lo, hi]` with ticks every `step`, labelled in `UNITS[unit]` (bytes) or as
/// plain counts.
#[derive(Debug, Clone, Copy)]
struct Scale {
    lo: f64,
    hi: f64,
    step: f64,
    unit: usize,
    decimals: usize,
    is_bytes: bool,
}

impl Scale {
    /// A byte axis covering `[min, max]` with about `target_ticks` intervals.
    fn bytes(min: f64, max: f64, target_ticks: f64) -> Self {
        let (mut a, mut b) = (min, max);
        if b <= a {
            // Constant data: give it some room so the line sits in the middle.
            let pad = (a.abs() * 0.05).max(1.0);
            (a, b) = (a - pad, b + pad);
        }
        if min >= 0.0 && a < 0.0 {
            a = 0.0;
        }
        let mut unit = 0;
        let mut magnitude = a.abs().max(b.abs());
        while magnitude >= 1024.0 && unit < UNITS.len() - 1 {
            magnitude /= 1024.0;
            unit += 1;
        }
        let unit_bytes = 1024f64.powi(unit as i32);
        let step_in_unit = nice_step((b / unit_bytes - a / unit_bytes) / target_ticks, &BYTE_STEPS);
        let scale = Scale::rounded(a, b, step_in_unit * unit_bytes, unit, step_in_unit, true);
        scale.unwrap_or(Scale { lo: a, hi: b, step: 0.0, unit, decimals: 1, is_bytes: true })
    }

    /// A count axis (turns in flight) from 0 (or below, for negative data) with whole steps.
    fn count(min: f64, max: f64, target_ticks: f64) -> Self {
        let a = min.min(0.0);
        let b = max.max(a + 1.0);
        let step = nice_step((b - a) / target_ticks, &COUNT_STEPS).max(1.0);
        let scale = Scale::rounded(a, b, step, 0, step, false);
        scale.unwrap_or(Scale { lo: a, hi: b, step: 0.0, unit: 0, decimals: 0, is_bytes: false })
    }

    /// `[a, b]` widened to multiples of `step`, unless the arithmetic ran out of range.
    fn rounded(
        a: f64,
        b: f64,
        step: f64,
        unit: usize,
        step_in_unit: f64,
        is_bytes: bool,
    ) -> Option<Self> {
        let lo = (a / step).floor() * step;
        let hi = (b / step).ceil() * step;
        let decimals = decimals_for(step_in_unit);
        let is_sane = lo.is_finite() && hi.is_finite() && hi > lo && step.is_finite() && step > 0.0;
        is_sane.then_some(Scale { lo, hi, step, unit, decimals, is_bytes })
    }

    /// Position of `value` in `[0, 1]`. Halved operands so `hi - lo` cannot overflow.
    fn fraction(&self, value: f64) -> f64 {
        let f = (value * 0.5 - self.lo * 0.5) / (self.hi * 0.5 - self.lo * 0.5);
        if f.is_finite() { f.clamp(0.0, 1.0) } else { 0.5 }
    }

    fn ticks(&self) -> Vec<f64> {
        let intervals = ((self.hi - self.lo) / self.step).round();
        if !(intervals.is_finite() && (1.0..=50.0).contains(&intervals)) {
            return vec![self.lo, self.hi];
        }
        (0..=intervals as usize).map(|i| self.lo + self.step * i as f64).collect()
    }

    fn label(&self, value: f64) -> String {
        let unit_bytes = if self.is_bytes { 1024f64.powi(self.unit as i32) } else { 1.0 };
        let mut scaled = value / unit_bytes;
        if scaled.abs() < 0.5 * 10f64.powi(-(self.decimals as i32)) {
            scaled = 0.0; // no "-0.0"
        }
        let number = output::number(scaled, self.decimals);
        if self.is_bytes { format!("{number} {}", UNITS[self.unit]) } else { number }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::fixtures::*;

    #[test]
    fn utc_formatting_matches_the_calendar() {
        assert_eq!(format_utc(T0 + 123, TimeFormat::Full), "2026-06-28 00:12:02");
        assert_eq!(format_utc(0, TimeFormat::Full), "1970-01-01 00:00:00");
        assert_eq!(format_utc(-1, TimeFormat::Full), "1969-12-31 23:59:59");
        // 2024 is a leap year, 2100 is not.
        assert_eq!(format_utc(1_709_164_800_000, TimeFormat::Date), "2024-02-29");
        assert_eq!(format_utc(4_107_542_400_000, TimeFormat::Date), "2100-03-01");
        assert_eq!(format_utc(T0 + 3_600_000 * 25, TimeFormat::DayHm), "06-29 01:12");
        assert_eq!(format_utc(T0, TimeFormat::Hm), "00:12");
        // Extremes do not overflow.
        assert!(format_utc(i64::MIN, TimeFormat::Full).starts_with('-'));
        assert!(!format_utc(i64::MAX, TimeFormat::Full).is_empty());
    }

    #[test]
    fn byte_scales_are_round_and_cover_the_data() {
        let scale = Scale::bytes(80.0 * MIB, 264.2 * MIB, 8.0);
        assert_eq!((scale.lo, scale.hi, scale.step), (75.0 * MIB, 275.0 * MIB, 25.0 * MIB));
        assert_eq!(scale.label(scale.hi), "275 MiB");
        let small = Scale::bytes(0.0, 1024.0 * MIB, 4.0);
        assert_eq!(small.label(0.25 * 1024.0 * MIB), "0.25 GiB");
        assert_eq!(small.label(0.0), "0.00 GiB");
        let constant = Scale::bytes(64.0 * MIB, 64.0 * MIB, 8.0);
        assert!(constant.lo < 64.0 * MIB && constant.hi > 64.0 * MIB);
        assert!((constant.fraction(64.0 * MIB) - 0.5).abs() < 0.2);
        let turns = Scale::count(0.0, 7.0, 5.0);
        assert_eq!(turns.ticks(), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(turns.label(8.0), "8");
    }

    #[test]
    fn time_ticks_are_round_and_inside_the_span() {
        let span = TimeSpan { first_ms: T0, last_ms: T0 + 2 * 3_600_000 };
        let (ticks, format) = span.ticks(8);
        assert_eq!(format, TimeFormat::Hm);
        assert!(ticks.len() >= 4 && ticks.len() <= 8, "{ticks:?}");
        assert!(ticks.iter().all(|t| t % (15 * MS_PER_MINUTE) == 0), "{ticks:?}");
        assert!(ticks.iter().all(|&t| t >= span.first_ms && t <= span.last_ms));
    }

    #[test]
    fn renderers_survive_edge_cases() {
        for (i, data) in edge_cases().iter().enumerate() {
            for (width, height) in [(0, 0), (20, 5), (30, 8), (60, 12), (120, 40)] {
                for color in [false, true] {
                    let out = terminal(data, width, height, color);
                    let expected = if height >= 8 && width >= 30 { height } else { 1 };
                    assert_eq!(out.lines().count(), expected, "case {i} {width}x{height}:\n{out}");
                }
            }
            let svg = svg(data);
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "case {i}");
            assert!(is_balanced(&svg, "<g ", "</g>"), "case {i}");
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "case {i}:\n{svg}");
        }
    }
}
