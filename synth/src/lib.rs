//! Synthetic journals, written as real segments (format v1) with `dispatch_journal::encode`
//! only, so they go through the same collector and queries as a server's:
//!
//! - [`scenario`]: one journal per `dispatchctl mem` verdict, with a known answer
//!   (`dispatchctl journal synth`, the verdict tests).
//! - [`mix`]: the realistic kind mix of a busy server, for the collector's exactly-once tests
//!   and its ingest benchmark.
//!
//! Both draw from one deterministic generator ([`Rng`]): the same seed writes the same bytes.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let (lines, files) = dispatch_synth::mix::write_journal(dir.path(), 1, 1, 100, 1 << 20);
//! assert_eq!((lines, files.len()), (100, 1));
//! ```

pub mod mix;
pub mod scenario;

use dispatch_journal::{Envelope, Record, Timestamp, encode};

/// SplitMix64: small, deterministic, good enough for load noise and kind mixes.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [-1, 1).
    pub fn sym(&mut self) -> f64 {
        self.f() * 2.0 - 1.0
    }

    /// Uniform in [0, n) (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A boot id in UUID v4 form, derived from `n` (the same `n`, the same id).
pub fn boot_id(n: u64) -> String {
    uuid_v4(&mut Rng(n ^ 0xb007))
}

/// The next id in UUID v4 form from `r` (version and variant bits set, the rest random).
pub fn uuid_v4(r: &mut Rng) -> String {
    let (a, b) = (r.next_u64(), r.next_u64());
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x4000;
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// Encodes the lines of one boot: the envelope with a gapless `seq`.
#[derive(Debug, Clone)]
pub struct LineEncoder {
    /// The boot id on every line.
    pub boot: String,
    /// The service name on every line.
    pub service: String,
    /// The next line's `seq`.
    pub seq: u64,
}

impl LineEncoder {
    /// Lines of `boot` for `service`, from seq 0.
    pub fn new(boot: impl Into<String>, service: impl Into<String>) -> LineEncoder {
        LineEncoder { boot: boot.into(), service: service.into(), seq: 0 }
    }

    /// `record` at `ts_ms` as the next line (with its `\n`).
    ///
    /// # Errors
    /// The record does not fit a journal line.
    pub fn line(
        &mut self,
        ts_ms: i64,
        record: &Record,
    ) -> Result<Vec<u8>, dispatch_journal::EncodeError> {
        let env = Envelope {
            v: 1,
            ts: Timestamp::from_unix_millis(ts_ms),
            boot: self.boot.clone(),
            seq: self.seq,
            service: self.service.clone(),
            truncated: false,
        };
        let line = encode(&env, record)?;
        self.seq += 1;
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_ids_are_uuid_v4_and_stable() {
        let id = boot_id(7);
        assert_eq!(id, boot_id(7));
        assert_ne!(id, boot_id(8));
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
    }

    #[test]
    fn below_stays_below() {
        let mut r = Rng(1);
        assert!((0..1000).all(|_| r.below(7) < 7));
    }
}
