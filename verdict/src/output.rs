//! The human formatting every reader of the traces shares: byte units, times, spans, turn
//! counts. `dispatchctl`'s text, its charts and the server's `/ui` print through these, so
//! they agree.

/// Binary units, so the figures match jemalloc's and the kernel's.
pub const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];

/// Human byte units: 0 -> "0 B", 1536 -> "1.5 KiB", 67108864 -> "64.0 MiB", negative values
/// keep their sign. Text and charts both print bytes through this, so they agree.
///
/// Below 1 KiB the value is rounded to whole bytes; above, one decimal in the largest binary
/// unit that keeps the number below 1024 after rounding. `NaN` gives `"NaN B"`, infinities
/// `"inf B"` and `"-inf B"`.
pub fn bytes(bytes: f64) -> String {
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
    format!("{sign}{} {}", number(value, 1), UNITS[unit])
}

/// Bytes in MiB with one decimal, whatever the size: verdict summaries quote rates and floors in
/// one unit so that two boots' summaries compare at a glance.
pub fn mib(bytes: f64) -> String {
    let v = bytes / (1024.0 * 1024.0);
    // -0.04 rounds to "-0.0": float noise, not a direction.
    let v = if v.abs() < 0.05 { 0.0 } else { v };
    format!("{v:.1} {}", UNITS[2])
}

/// `value` with `decimals` decimals, or in exponent notation when it is so large (beyond
/// the largest unit) that fixed notation would run to hundreds of digits.
pub fn number(value: f64, decimals: usize) -> String {
    if value.abs() >= 1e6 { format!("{value:.1e}") } else { format!("{value:.*}", decimals) }
}

/// `YYYY-MM-DD HH:MM UTC`, clamped to the journal's years 0000-9999.
pub fn time(ms: i64) -> String {
    let civil = dispatch_journal::Timestamp::from_unix_millis(ms).civil();
    format!("{} UTC", civil.date_minute())
}

/// A span for people: `45 s`, `20 min`, `2.5 h`, `36 h`, `4.5 days`, `30 days` (one decimal
/// below ten of the unit, whole numbers above; never a float's noise).
pub fn duration_ms(ms: i64) -> String {
    let s = ms.max(0) as f64 / 1000.0;
    let scaled = |v: f64, unit: &str| {
        if v < 9.95 && (v - v.round()).abs() >= 0.05 {
            format!("{} {unit}", number(v, 1))
        } else {
            format!("{v:.0} {unit}")
        }
    };
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 120.0 * 60.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 72.0 * 3600.0 {
        scaled(s / 3600.0, "h")
    } else {
        scaled(s / 86_400.0, "days")
    }
}

/// `1 turn in flight`, `3 turns in flight`.
pub fn turns(n: f64) -> String {
    let n = n.round();
    format!("{n:.0} turn{} in flight", if n == 1.0 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_people_say_them() {
        use super::duration_ms;
        assert_eq!(duration_ms(45_000), "45 s");
        assert_eq!(duration_ms(20 * 60_000), "20 min");
        assert_eq!(duration_ms(150 * 60_000), "2.5 h");
        assert_eq!(duration_ms(36 * 3_600_000), "36 h");
        assert_eq!(duration_ms(6 * 3_600_000), "6 h");
        assert_eq!(duration_ms(108 * 3_600_000), "4.5 days");
        assert_eq!(duration_ms(30 * 86_400_000), "30 days");
        assert_eq!(duration_ms(-5), "0 s");
    }

    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    #[test]
    fn bytes_uses_binary_units() {
        assert_eq!(bytes(0.0), "0 B");
        assert_eq!(bytes(1.0), "1 B");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1023.0), "1023 B");
        assert_eq!(bytes(1024.0), "1.0 KiB");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(67_108_864.0), "64.0 MiB");
        assert_eq!(bytes(1024.0 * 1024.0 - 1.0), "1.0 MiB"); // not "1024.0 KiB"
        assert_eq!(bytes(3.25 * 1024.0 * MIB), "3.2 GiB");
        assert_eq!(bytes(-1536.0), "-1.5 KiB");
        assert_eq!(bytes(-67_108_864.0), "-64.0 MiB");
        assert_eq!(bytes(-0.2), "0 B");
        assert_eq!(bytes(f64::NAN), "NaN B");
        assert_eq!(bytes(f64::NEG_INFINITY), "-inf B");
        assert_eq!(bytes(f64::MAX), "1.5e284 YiB");
        assert_eq!(mib(3.0 * 1024.0 * MIB), "3072.0 MiB");
        assert_eq!(mib(-1.5 * MIB), "-1.5 MiB");
    }

    #[test]
    fn formats() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(8.0 * 1024.0 * 1024.0), "8.0 MiB");
        assert_eq!(bytes(-3.0 * 1024.0 * 1024.0 * 1024.0), "-3.0 GiB");
        assert_eq!(time(1_782_605_522_123), "2026-06-28 00:12 UTC");
        assert_eq!(turns(1.0), "1 turn in flight");
        assert_eq!(turns(0.0), "0 turns in flight");
    }
}
