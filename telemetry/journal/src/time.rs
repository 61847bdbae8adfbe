//! RFC 3339 UTC timestamps with millisecond precision, as the envelope's `ts` carries them.
//!
//! Formatting and parsing are done here, by hand, because the journal crate takes no date
//! library: the format is fixed (`2026-06-28T00:12:02.123Z`) and the civil-date arithmetic is
//! twenty lines (Howard Hinnant's `days_from_civil` / `civil_from_days`).
//!
//! This is the workspace's one civil-date implementation: readers that show times to people
//! (`dispatchctl`'s text and charts) split Unix milliseconds with [`Civil`] and lay the fields
//! out themselves, rather than carrying a copy of the arithmetic.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, UTC, within years 0000 to 9999.
///
/// Serialized as an RFC 3339 string with exactly three fraction digits and a `Z` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// The first millisecond that can be written: `0000-01-01T00:00:00.000Z`.
pub const MIN_MILLIS: i64 = -62_167_219_200_000;
/// The last millisecond that can be written: `9999-12-31T23:59:59.999Z`.
pub const MAX_MILLIS: i64 = 253_402_300_799_999;

/// Length of a formatted timestamp, `2026-06-28T00:12:02.123Z`.
pub const FORMATTED_LEN: usize = 24;

impl Timestamp {
    /// A timestamp from Unix milliseconds, clamped into the writable range (years 0000-9999).
    pub fn from_unix_millis(ms: i64) -> Self {
        Timestamp(ms.clamp(MIN_MILLIS, MAX_MILLIS))
    }

    /// Unix milliseconds.
    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Converts a [`SystemTime`], truncating to the millisecond.
    pub fn from_system_time(t: SystemTime) -> Self {
        let ms = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        };
        Self::from_unix_millis(ms)
    }

    /// The UTC calendar date and time of day.
    pub fn civil(self) -> Civil {
        Civil::from_unix_millis(self.0)
    }

    /// Writes the RFC 3339 form into `out` (exactly [`FORMATTED_LEN`] bytes).
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        let c = self.civil();
        // In range by construction (years 0000-9999); the clamp keeps the width fixed anyway.
        let y = c.year.clamp(0, 9999) as u32;
        let mut b = [0u8; FORMATTED_LEN];
        put_digits(&mut b[0..4], y);
        b[4] = b'-';
        put_digits(&mut b[5..7], c.month);
        b[7] = b'-';
        put_digits(&mut b[8..10], c.day);
        b[10] = b'T';
        put_digits(&mut b[11..13], c.hour);
        b[13] = b':';
        put_digits(&mut b[14..16], c.minute);
        b[16] = b':';
        put_digits(&mut b[17..19], c.second);
        b[19] = b'.';
        put_digits(&mut b[20..23], c.millisecond);
        b[23] = b'Z';
        out.extend_from_slice(&b);
    }

    /// Parses RFC 3339: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`. Fraction digits beyond
    /// milliseconds are dropped; a leap second (`:60`) reads as the last millisecond of `:59`.
    pub fn parse_rfc3339(s: &str) -> Result<Self, TimestampError> {
        let b = s.as_bytes();
        if b.len() < 20 {
            return Err(TimestampError::new(s, "too short for YYYY-MM-DDTHH:MM:SSZ"));
        }
        let num = |range: std::ops::Range<usize>, what: &'static str| {
            let mut v: u32 = 0;
            for &c in &b[range] {
                if !c.is_ascii_digit() {
                    return Err(TimestampError::new(s, what));
                }
                v = v * 10 + u32::from(c - b'0');
            }
            Ok(v)
        };
        let sep = |i: usize, want: &[u8], what: &'static str| {
            if want.contains(&b[i]) { Ok(()) } else { Err(TimestampError::new(s, what)) }
        };
        let year = num(0..4, "year is not 4 digits")?;
        sep(4, b"-", "expected '-' after the year")?;
        let month = num(5..7, "month is not 2 digits")?;
        sep(7, b"-", "expected '-' after the month")?;
        let day = num(8..10, "day is not 2 digits")?;
        sep(10, b"Tt ", "expected 'T' between date and time")?;
        let hour = num(11..13, "hour is not 2 digits")?;
        sep(13, b":", "expected ':' after the hour")?;
        let minute = num(14..16, "minute is not 2 digits")?;
        sep(16, b":", "expected ':' after the minute")?;
        let mut second = num(17..19, "second is not 2 digits")?;
        if !(1..=12).contains(&month) {
            return Err(TimestampError::new(s, "month out of range"));
        }
        if day == 0 || day > days_in_month(i64::from(year), month) {
            return Err(TimestampError::new(s, "day out of range"));
        }
        if hour > 23 || minute > 59 || second > 60 {
            return Err(TimestampError::new(s, "time of day out of range"));
        }
        let mut i = 19;
        let mut millis: i64 = 0;
        if b[i] == b'.' {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 3 {
                    millis = millis * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            let digits = i - start;
            if digits == 0 {
                return Err(TimestampError::new(s, "empty fraction of a second"));
            }
            for _ in digits..3 {
                millis *= 10;
            }
        }
        if second == 60 {
            // A leap second reads as the last millisecond of :59.
            second = 59;
            millis = 999;
        }
        let offset_min: i64 = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
                let oh = num(i + 1..i + 3, "offset hour is not 2 digits")?;
                let om = num(i + 4..i + 6, "offset minute is not 2 digits")?;
                if oh > 23 || om > 59 {
                    return Err(TimestampError::new(s, "offset out of range"));
                }
                let m = i64::from(oh * 60 + om);
                if sign == b'+' { m } else { -m }
            }
            _ => {
                return Err(TimestampError::new(
                    s,
                    "expected 'Z' or an offset like +09:00 at the end",
                ));
            }
        };
        let days = days_from_civil(i64::from(year), month, day);
        let ms = days * 86_400_000
            + i64::from(hour) * 3_600_000
            + i64::from(minute) * 60_000
            + i64::from(second) * 1000
            + millis
            - offset_min * 60_000;
        if !(MIN_MILLIS..=MAX_MILLIS).contains(&ms) {
            return Err(TimestampError::new(s, "outside years 0000-9999 in UTC"));
        }
        Ok(Timestamp(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut v = Vec::with_capacity(FORMATTED_LEN);
        self.write_rfc3339(&mut v);
        // The formatter above writes ASCII only.
        f.write_str(std::str::from_utf8(&v).map_err(|_| fmt::Error)?)
    }
}

/// A UTC calendar date (proleptic Gregorian) and time of day, split from Unix milliseconds.
///
/// Unlike [`Timestamp`], which the journal keeps within years 0000-9999, it takes any `i64`:
/// a reader showing a bad or extreme value shows it as it is (year `-292275055`, say) rather
/// than clamped. Its [`Display`](fmt::Display) is the human form to the second,
/// `2026-06-28 00:12:02` (the year padded to four digits, signed and wider when it must be);
/// other layouts are the caller's, from the fields.
///
/// ```
/// use dispatch_journal::time::Civil;
///
/// let c = Civil::from_unix_millis(1_782_605_522_123);
/// assert_eq!((c.year, c.month, c.day, c.hour, c.minute), (2026, 6, 28, 0, 12));
/// assert_eq!(c.to_string(), "2026-06-28 00:12:02");
/// assert_eq!(format!("{} UTC", c.date_minute()), "2026-06-28 00:12 UTC");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Civil {
    /// Year; 0 is 1 BC, negative years are earlier still.
    pub year: i64,
    /// Month, 1-12.
    pub month: u32,
    /// Day of the month, 1-31.
    pub day: u32,
    /// Hour, 0-23.
    pub hour: u32,
    /// Minute, 0-59.
    pub minute: u32,
    /// Second, 0-59 (Unix time has no leap seconds).
    pub second: u32,
    /// Millisecond, 0-999.
    pub millisecond: u32,
}

impl Civil {
    /// Splits milliseconds since 1970-01-01T00:00:00Z; any `i64`, before 1970 included.
    #[inline]
    pub fn from_unix_millis(ms: i64) -> Self {
        let (year, month, day) = civil_from_days(ms.div_euclid(86_400_000));
        // In [0, 86_400_000): every part below fits a u32.
        let in_day = ms.rem_euclid(86_400_000) as u32;
        let (hour, rest) = (in_day / 3_600_000, in_day % 3_600_000);
        let (minute, rest) = (rest / 60_000, rest % 60_000);
        let (second, millisecond) = (rest / 1000, rest % 1000);
        Civil { year, month, day, hour, minute, second, millisecond }
    }

    /// `(year, month, day)`, to compare calendar days.
    pub fn date(&self) -> (i64, u32, u32) {
        (self.year, self.month, self.day)
    }

    /// Displays as `YYYY-MM-DD HH:MM`, the minute a person reads in a summary line.
    pub fn date_minute(&self) -> impl fmt::Display + '_ {
        DateMinute(self)
    }
}

impl fmt::Display for Civil {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:02}", self.date_minute(), self.second)
    }
}

struct DateMinute<'a>(&'a Civil);

impl fmt::Display for DateMinute<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        write!(f, "{:04}-{:02}-{:02} {:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute)
    }
}

/// A string that is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {input:?}: {reason}")]
pub struct TimestampError {
    /// What was read (cut to 40 characters).
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl TimestampError {
    fn new(input: &str, reason: &'static str) -> Self {
        TimestampError { input: input.chars().take(40).collect(), reason }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut v = Vec::with_capacity(FORMATTED_LEN);
        self.write_rfc3339(&mut v);
        s.serialize_str(std::str::from_utf8(&v).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 UTC timestamp string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

fn put_digits(out: &mut [u8], mut v: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(Timestamp::from_unix_millis(0).to_string(), "1970-01-01T00:00:00.000Z");
        // 2026-06-28T00:12:02.123Z, the incident's crash minute.
        let t = Timestamp::parse_rfc3339("2026-06-28T00:12:02.123Z").unwrap();
        assert_eq!(t.unix_millis(), 1_782_605_522_123);
        assert_eq!(t.to_string(), "2026-06-28T00:12:02.123Z");
        assert_eq!(Timestamp::from_unix_millis(MAX_MILLIS).to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp::from_unix_millis(MIN_MILLIS).to_string(), "0000-01-01T00:00:00.000Z");
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let z = Timestamp::parse_rfc3339("2026-06-28T09:12:02+09:00").unwrap();
        assert_eq!(z.to_string(), "2026-06-28T00:12:02.000Z");
        let f = Timestamp::parse_rfc3339("2026-06-28T00:12:02.1234567Z").unwrap();
        assert_eq!(f.to_string(), "2026-06-28T00:12:02.123Z");
        let f = Timestamp::parse_rfc3339("2026-06-28T00:12:02.5Z").unwrap();
        assert_eq!(f.to_string(), "2026-06-28T00:12:02.500Z");
        let leap = Timestamp::parse_rfc3339("2016-12-31T23:59:60Z").unwrap();
        assert_eq!(leap.to_string(), "2016-12-31T23:59:59.999Z");
    }

    #[test]
    fn rejects_bad_timestamps_with_a_reason() {
        for (s, why) in [
            ("2026-13-01T00:00:00Z", "month"),
            ("2026-02-29T00:00:00Z", "day"),
            ("2026-06-28 00:12", "short"),
            ("2026-06-28T24:00:00Z", "time of day"),
            ("2026-06-28T00:12:02+0900", "'Z'"),
            ("2026-06-28T00:12:02.Z", "fraction"),
            ("20x6-06-28T00:12:02Z", "year"),
        ] {
            let err = Timestamp::parse_rfc3339(s).unwrap_err();
            assert!(err.to_string().contains(why), "{s}: {err}");
        }
    }

    #[test]
    fn civil_splits_any_millisecond_and_formats_for_people() {
        let c = Civil::from_unix_millis(1_782_605_522_123);
        assert_eq!(
            c,
            Civil {
                year: 2026,
                month: 6,
                day: 28,
                hour: 0,
                minute: 12,
                second: 2,
                millisecond: 123
            }
        );
        assert_eq!(c.to_string(), "2026-06-28 00:12:02");
        assert_eq!(c.date_minute().to_string(), "2026-06-28 00:12");
        assert_eq!(Civil::from_unix_millis(0).to_string(), "1970-01-01 00:00:00");
        assert_eq!(Civil::from_unix_millis(-1).to_string(), "1969-12-31 23:59:59");
        assert_eq!(Civil::from_unix_millis(-1).millisecond, 999);
        // 2024 is a leap year, 2100 is not.
        assert_eq!(Civil::from_unix_millis(1_709_164_800_000).date(), (2024, 2, 29));
        assert_eq!(Civil::from_unix_millis(4_107_542_400_000).date(), (2100, 3, 1));
        // Outside the journal's 0000-9999 nothing is clamped, and nothing overflows.
        assert_eq!(Civil::from_unix_millis(MIN_MILLIS - 1).to_string(), "-001-12-31 23:59:59");
        assert_eq!(Civil::from_unix_millis(i64::MIN).to_string(), "-292275055-05-16 16:47:04");
        assert_eq!(Civil::from_unix_millis(i64::MAX).to_string(), "292278994-08-17 07:12:55");
        // The journal's own form agrees with the split, field for field.
        let t = Timestamp::from_unix_millis(1_782_605_522_123);
        assert_eq!(t.civil(), c);
    }

    #[test]
    fn civil_round_trip_over_four_centuries() {
        for days in (-800_000..800_000).step_by(37) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
