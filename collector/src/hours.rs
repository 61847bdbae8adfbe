//! Sets of hours as bitmaps: which hours of a boot a conversation had a turn running in, kept
//! in `rollup_conversation.active_hours` so a whole boot's attribution tests a bit per floor
//! rise instead of reading every turn's span.
//!
//! The stored form is `first_hour_ms` (a column) plus a blob: bit `i` (byte `i / 8`, bit
//! `i % 8`, least significant first) says the hour starting at `first_hour_ms + i * 3600000`
//! is in the set. 30 days take 90 bytes.

/// One hour, ms.
pub const HOUR_MS: i64 = 3_600_000;

/// The most hours a set spans from its first hour, 2^16 (about 7.5 years, an 8 KiB blob).
/// Hours later than that are not recorded: a line dated far in the future (a bad clock)
/// cannot make one row grow without bound.
pub const MAX_HOURS: usize = 1 << 16;

/// The name of the SQL function the collector registers on its writing connection to merge
/// two stored sets in an upsert: `dispatch_hours_or(first_a, bits_a, first_b, bits_b)` returns
/// the union's blob, based at `min(first_a, first_b)`.
pub const SQL_UNION_FN: &str = "dispatch_hours_or";

/// A set of hours (each named by its start, Unix ms, a multiple of [`HOUR_MS`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourSet {
    /// Start of the hour of bit 0 (meaningless while `bits` is empty).
    first_hour_ms: i64,
    bits: Vec<u8>,
}

/// The start of the hour `ts_ms` falls in.
pub fn hour_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(HOUR_MS).saturating_mul(HOUR_MS)
}

impl HourSet {
    /// The empty set.
    pub fn new() -> HourSet {
        HourSet::default()
    }

    /// A set read back from its stored form. Bits past [`MAX_HOURS`] are ignored.
    pub fn from_stored(first_hour_ms: i64, bits: &[u8]) -> HourSet {
        let mut bits = bits[..bits.len().min(MAX_HOURS / 8)].to_vec();
        while bits.last() == Some(&0) {
            bits.pop();
        }
        HourSet { first_hour_ms: hour_of(first_hour_ms), bits }
    }

    /// The stored form's `first_hour_ms` (0 for the empty set).
    pub fn first_hour_ms(&self) -> i64 {
        if self.bits.is_empty() { 0 } else { self.first_hour_ms }
    }

    /// The stored form's blob.
    pub fn bits(&self) -> &[u8] {
        &self.bits
    }

    /// Whether no hour is in the set.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&b| b == 0)
    }

    /// How many hours are in the set.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// Adds every hour that `[from_ms, to_ms]` (both ends included) touches. A range whose end
    /// is before its start adds the start's hour alone.
    pub fn insert_span(&mut self, from_ms: i64, to_ms: i64) {
        let lo = hour_of(from_ms);
        let hi = hour_of(to_ms.max(from_ms));
        if self.bits.is_empty() {
            self.first_hour_ms = lo;
        } else if lo < self.first_hour_ms {
            self.rebase(lo);
        }
        let first = self.first_hour_ms;
        let index =
            |h: i64| usize::try_from(h.saturating_sub(first) / HOUR_MS).unwrap_or(usize::MAX);
        let (a, b) = (index(lo), index(hi).min(MAX_HOURS - 1));
        if a > b {
            return;
        }
        if self.bits.len() <= b / 8 {
            self.bits.resize(b / 8 + 1, 0);
        }
        for i in a..=b {
            self.bits[i / 8] |= 1 << (i % 8);
        }
    }

    /// Adds every hour of `other`.
    pub fn union(&mut self, other: &HourSet) {
        if other.bits.is_empty() {
            return;
        }
        if self.bits.is_empty() {
            self.first_hour_ms = other.first_hour_ms;
        } else if other.first_hour_ms < self.first_hour_ms {
            self.rebase(other.first_hour_ms);
        }
        let shift = other.first_hour_ms.saturating_sub(self.first_hour_ms) / HOUR_MS;
        self.or_at(shift, &other.bits);
    }

    /// ORs `bits` into the set, bit 0 of `bits` at bit `shift` of the set; bits that would
    /// fall past [`MAX_HOURS`] are dropped.
    fn or_at(&mut self, shift: i64, bits: &[u8]) {
        let Ok(shift) = usize::try_from(shift) else { return };
        for (j, &byte) in bits.iter().enumerate() {
            for k in 0..8 {
                if byte & (1 << k) == 0 {
                    continue;
                }
                let i = shift.saturating_add(j * 8 + k);
                if i >= MAX_HOURS {
                    return;
                }
                if self.bits.len() <= i / 8 {
                    self.bits.resize(i / 8 + 1, 0);
                }
                self.bits[i / 8] |= 1 << (i % 8);
            }
        }
    }

    /// Whether the set holds an hour that overlaps `[from_ms, to_ms)`.
    pub fn any_in(&self, from_ms: i64, to_ms: i64) -> bool {
        if self.bits.is_empty() || to_ms <= from_ms {
            return false;
        }
        let first = self.first_hour_ms;
        let lo = (hour_of(from_ms).saturating_sub(first) / HOUR_MS).max(0);
        let hi = hour_of(to_ms - 1).saturating_sub(first) / HOUR_MS;
        let last = (self.bits.len() * 8) as i64 - 1;
        (lo..=hi.min(last)).any(|i| self.bits[(i / 8) as usize] & (1 << (i % 8)) != 0)
    }

    /// Whether the hour starting at `hour_ms`, a multiple of [`HOUR_MS`], is in the set: one
    /// bit test (what [`HourSet::any_in`] answers for `[hour_ms, hour_ms + HOUR_MS)`).
    pub fn has_hour(&self, hour_ms: i64) -> bool {
        let Ok(i) = usize::try_from(hour_ms.saturating_sub(self.first_hour_ms) / HOUR_MS) else {
            return false;
        };
        self.bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// Whether the hour starting at `hour_ms` (or containing it) is in the set.
    pub fn contains(&self, hour_ms: i64) -> bool {
        self.any_in(hour_of(hour_ms), hour_of(hour_ms) + HOUR_MS)
    }

    /// The hours in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        let first = self.first_hour_ms;
        (0..self.bits.len() * 8)
            .filter(|&i| self.bits[i / 8] & (1 << (i % 8)) != 0)
            .map(move |i| first.saturating_add(i as i64 * HOUR_MS))
    }

    /// Moves bit 0 back to `first` (earlier than the current first hour), dropping hours that
    /// would fall past [`MAX_HOURS`].
    fn rebase(&mut self, first: i64) {
        let old = std::mem::take(&mut self.bits);
        let shift = self.first_hour_ms.saturating_sub(first) / HOUR_MS;
        self.first_hour_ms = first;
        self.or_at(shift, &old);
    }
}

/// The union of two stored sets, as stored: `(first_hour_ms, blob)`, based at
/// `min(first_a, first_b)` (what the upsert stores in `first_hour_ms`). What [`SQL_UNION_FN`]
/// computes.
pub fn union_stored(first_a: i64, bits_a: &[u8], first_b: i64, bits_b: &[u8]) -> (i64, Vec<u8>) {
    let (a, b) = (HourSet::from_stored(first_a, bits_a), HourSet::from_stored(first_b, bits_b));
    let mut out = HourSet { first_hour_ms: a.first_hour_ms.min(b.first_hour_ms), bits: Vec::new() };
    for s in [&a, &b] {
        out.or_at(s.first_hour_ms.saturating_sub(out.first_hour_ms) / HOUR_MS, &s.bits);
    }
    (out.first_hour_ms, out.bits)
}

/// Registers [`SQL_UNION_FN`] on `conn` (the collector's writing connection).
///
/// # Errors
/// SQLite errors.
pub(crate) fn register(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        SQL_UNION_FN,
        4,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let first_a: Option<i64> = ctx.get(0)?;
            let bits_a: Option<Vec<u8>> = ctx.get(1)?;
            let first_b: Option<i64> = ctx.get(2)?;
            let bits_b: Option<Vec<u8>> = ctx.get(3)?;
            let (_, bits) = union_stored(
                first_a.unwrap_or(0),
                bits_a.as_deref().unwrap_or(&[]),
                first_b.unwrap_or(0),
                bits_b.as_deref().unwrap_or(&[]),
            );
            Ok(bits)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_782_604_800_000; // an hour boundary

    #[test]
    fn spans_set_every_hour_they_touch() {
        let mut s = HourSet::new();
        s.insert_span(T0 + 10, T0 + 2 * HOUR_MS); // ends exactly at hour 2: it counts
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![T0, T0 + HOUR_MS, T0 + 2 * HOUR_MS]);
        s.insert_span(T0 - 5 * HOUR_MS + 1, T0 - 5 * HOUR_MS + 2); // earlier: rebased
        assert_eq!(s.len(), 4);
        assert_eq!(s.first_hour_ms(), T0 - 5 * HOUR_MS);
        assert!(s.contains(T0 - 5 * HOUR_MS + 99));
        assert!(!s.contains(T0 - 4 * HOUR_MS));
        for h in (-8..8).map(|i| T0 + i * HOUR_MS) {
            assert_eq!(s.has_hour(h), s.any_in(h, h + HOUR_MS), "{h}");
        }
        assert!(s.any_in(T0 - 4 * HOUR_MS, T0 + 1));
        assert!(!s.any_in(T0 - 4 * HOUR_MS, T0));
        assert!(!s.any_in(T0 + 3 * HOUR_MS, T0 + 30 * HOUR_MS));
    }

    #[test]
    fn stored_unions_agree_with_in_memory_unions() {
        let mut a = HourSet::new();
        a.insert_span(T0 + 40 * HOUR_MS, T0 + 41 * HOUR_MS);
        let mut b = HourSet::new();
        b.insert_span(T0, T0 + 1);
        b.insert_span(T0 + 100 * HOUR_MS, T0 + 100 * HOUR_MS);
        let (first, bits) = union_stored(a.first_hour_ms(), a.bits(), b.first_hour_ms(), b.bits());
        let mut want = a.clone();
        want.union(&b);
        assert_eq!(HourSet::from_stored(first, &bits), want);
        assert_eq!(want.len(), 4);
        assert_eq!(union_stored(first, &[], first, &bits), (first, bits.clone()));
    }

    #[test]
    fn a_far_future_hour_is_not_recorded() {
        let mut s = HourSet::new();
        s.insert_span(T0, T0);
        s.insert_span(T0 + 100 * 365 * 24 * HOUR_MS, T0 + 100 * 365 * 24 * HOUR_MS);
        assert_eq!(s.len(), 1);
        assert!(s.bits().len() <= MAX_HOURS / 8);
    }
}
