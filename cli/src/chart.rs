//! Pictures for `dispatchctl mem`: memory against load as a terminal chart, a standalone SVG
//! and a standalone HTML incident page.
//!
//! The module owns rendering only. It does no I/O and makes no verdicts: the analysis hands it a
//! [`ChartData`] (and, for HTML, its JSON report) and gets a `String` back.
//!
//! All renderers take whatever the analysis produces without panicking: no points, one point,
//! constant series, `NaN` and infinities (skipped, and a skipped run breaks the line), and
//! millions of samples. Long series are downsampled per output column keeping the first, lowest,
//! highest and last sample of each column, so a one-sample spike survives. Output is
//! deterministic for the same input, so it can be snapshotted. Times are UTC, computed here with
//! days-from-civil arithmetic rather than a date crate.
//!
//! ```
//! # use dispatch_cli::chart::{ChartData, Point, human_bytes, terminal};
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
//! assert_eq!(human_bytes(1536.0), "1.5 KiB");
//! ```

use serde_json::Value;

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

/// Binary units, so the figures match jemalloc's and the kernel's.
const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];

/// Human byte units: 0 -> "0 B", 1536 -> "1.5 KiB", 67108864 -> "64.0 MiB", negative values keep their sign.
///
/// Below 1 KiB the value is rounded to whole bytes; above, one decimal in the largest binary
/// unit that keeps the number below 1024 after rounding. `NaN` gives `"NaN B"`, infinities
/// `"inf B"` and `"-inf B"`.
pub fn human_bytes(bytes: f64) -> String {
    if bytes.is_nan() {
        return "NaN B".to_owned();
    }
    let sign = if bytes < 0.0 { "-" } else { "" };
    if bytes.is_infinite() {
        return format!("{sign}inf B");
    }
    let abs = bytes.abs();
    if abs < 1023.5 {
        let whole = abs.round();
        return if whole == 0.0 { "0 B".to_owned() } else { format!("{sign}{whole:.0} B") };
    }
    let mut value = abs / 1024.0;
    let mut unit = 1;
    // 1023.95 would print as "1024.0", so it moves up a unit.
    while value >= 1023.95 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{sign}{} {}", fixed_or_exponent(value, 1), UNITS[unit])
}

/// `value` with `decimals` decimals, or in exponent notation when it is so large (beyond
/// the largest unit) that fixed notation would run to hundreds of digits.
fn fixed_or_exponent(value: f64, decimals: usize) -> String {
    if value.abs() >= 1e6 { format!("{value:.1e}") } else { format!("{value:.*}", decimals) }
}

// ---------------------------------------------------------------------------------------------
// Time: UTC formatting without a date crate.

const MS_PER_SECOND: i64 = 1000;
const MS_PER_MINUTE: i64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

/// A UTC calendar time, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Utc {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
}

impl Utc {
    /// Splits milliseconds since the epoch; works for any `i64`, including before 1970.
    fn from_ms(ts_ms: i64) -> Self {
        let secs = ts_ms.div_euclid(MS_PER_SECOND);
        let second_of_day = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        Utc {
            year,
            month,
            day,
            hour: second_of_day / 3600,
            minute: second_of_day % 3600 / 60,
            second: second_of_day % 60,
        }
    }

    fn date(self) -> (i64, i64, i64) {
        (self.year, self.month, self.day)
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day), proleptic
/// Gregorian. No overflow for any day count derived from an `i64` of milliseconds.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // March-based month, [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

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

fn format_utc(ts_ms: i64, format: TimeFormat) -> String {
    let t = Utc::from_ms(ts_ms);
    match format {
        TimeFormat::Hms => format!("{:02}:{:02}:{:02}", t.hour, t.minute, t.second),
        TimeFormat::Hm => format!("{:02}:{:02}", t.hour, t.minute),
        TimeFormat::DayHm => format!("{:02}-{:02} {:02}:{:02}", t.month, t.day, t.hour, t.minute),
        TimeFormat::Date => format!("{:04}-{:02}-{:02}", t.year, t.month, t.day),
        TimeFormat::Full => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year, t.month, t.day, t.hour, t.minute, t.second
        ),
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
        Utc::from_ms(self.first_ms).date() != Utc::from_ms(self.last_ms).date()
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
        let number = fixed_or_exponent(scaled, self.decimals);
        if self.is_bytes { format!("{number} {}", UNITS[self.unit]) } else { number }
    }
}

// ---------------------------------------------------------------------------------------------
// Terminal.

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
            item(&glyph, Ink::Peak, &format!("peak {} at {when}", human_bytes(bytes))),
            item(&glyph, Ink::Peak, &format!("peak {}", human_bytes(bytes))),
            item(&glyph, Ink::Peak, &human_bytes(bytes)),
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

// ---------------------------------------------------------------------------------------------
// SVG.

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
fn escape_xml(text: &str) -> String {
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

/// Cuts `text` to `max` characters with an ellipsis.
fn truncate(text: &str, max: usize) -> String {
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
                    human_bytes(bytes),
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

// ---------------------------------------------------------------------------------------------
// HTML.

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
            out.push_str(&format!("<span title=\"{raw}\">{}</span>", human_bytes(bytes)));
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

    const MIB: f64 = 1024.0 * 1024.0;
    /// 2026-06-28 00:12:02 UTC.
    const T0: i64 = 1_782_605_522_000;

    fn chart(points: Vec<Point>) -> ChartData {
        ChartData {
            title: "dispatch boot 6f1c2d9e: WORKING-SET".into(),
            memory_label: "jemalloc allocated".into(),
            points,
            floors: Vec::new(),
            peak: None,
            verdict: "WORKING-SET".into(),
        }
    }

    /// Two hours of 1 s samples: idle at 80 MiB, bursts of turns every 20 minutes that take
    /// memory up and give it back.
    fn bursty() -> ChartData {
        let points: Vec<Point> = (0..7200)
            .map(|i: i64| {
                let phase = i % 1200;
                let turns = if phase < 300 { (phase / 60 + 1) as f64 } else { 0.0 };
                let noise = ((i * 7919) % 13) as f64 * 0.1 * MIB;
                Point {
                    ts_ms: T0 + i * 1000,
                    memory_bytes: 80.0 * MIB + turns * 24.0 * MIB + noise,
                    turns_in_flight: turns,
                }
            })
            .collect();
        let floors = (0..4).map(|b| (T0 + b * 1_800_000, 80.0 * MIB)).collect();
        let peak = points
            .iter()
            .max_by(|a, b| a.memory_bytes.total_cmp(&b.memory_bytes))
            .map(|p| (p.ts_ms, p.memory_bytes));
        ChartData { floors, peak, ..chart(points) }
    }

    fn edge_cases() -> Vec<ChartData> {
        let p =
            |i: i64, m: f64, t: f64| Point { ts_ms: T0 + i, memory_bytes: m, turns_in_flight: t };
        let weird = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, -f64::MAX, 0.0, -5.0];
        let mut cases = vec![
            chart(Vec::new()),
            chart(vec![p(0, 64.0 * MIB, 1.0)]),
            chart(vec![p(0, 64.0 * MIB, f64::NAN)]),
            chart((0..100).map(|i| p(i, 64.0 * MIB, 2.0)).collect()),
            chart((0..100).map(|i| p(i, 0.0, 0.0)).collect()),
            chart((0..100).map(|i| p(0, i as f64, f64::NAN)).collect()), // one instant
            chart((0..100).map(|i| p(i, f64::NAN, f64::NAN)).collect()),
            chart(weird.iter().enumerate().map(|(i, &v)| p(i as i64, v, v)).collect()),
            chart(vec![
                Point { ts_ms: i64::MIN, memory_bytes: 1.0, turns_in_flight: 0.0 },
                Point { ts_ms: i64::MAX, memory_bytes: 2.0, turns_in_flight: 1.0 },
            ]),
            chart((0..50).rev().map(|i| p(i * 1000, i as f64 * MIB, 1.0)).collect()), // unordered
        ];
        cases.push(ChartData {
            floors: vec![(T0, f64::NAN), (T0 + 5, 1.0), (T0 - 5, f64::INFINITY)],
            peak: Some((T0, f64::NAN)),
            ..chart(Vec::new())
        });
        cases.push(ChartData {
            floors: vec![(T0, 64.0 * MIB)],
            peak: Some((T0 + 10, 70.0 * MIB)),
            ..chart(vec![p(0, 64.0 * MIB, 1.0)])
        });
        cases
    }

    fn is_balanced(svg: &str, open: &str, close: &str) -> bool {
        svg.matches(open).count() == svg.matches(close).count()
    }

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
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0.0), "0 B");
        assert_eq!(human_bytes(1.0), "1 B");
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1023.0), "1023 B");
        assert_eq!(human_bytes(1024.0), "1.0 KiB");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(67_108_864.0), "64.0 MiB");
        assert_eq!(human_bytes(1024.0 * 1024.0 - 1.0), "1.0 MiB"); // not "1024.0 KiB"
        assert_eq!(human_bytes(3.25 * 1024.0 * MIB), "3.2 GiB");
        assert_eq!(human_bytes(-1536.0), "-1.5 KiB");
        assert_eq!(human_bytes(-67_108_864.0), "-64.0 MiB");
        assert_eq!(human_bytes(-0.2), "0 B");
        assert_eq!(human_bytes(f64::NAN), "NaN B");
        assert_eq!(human_bytes(f64::NEG_INFINITY), "-inf B");
        assert_eq!(human_bytes(f64::MAX), "1.5e284 YiB");
    }

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
            let page = html(data, &serde_json::json!({ "case": i }));
            assert!(page.contains("</html>"), "case {i}");
        }
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
