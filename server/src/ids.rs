//! Ids for conversations, turns and tool calls: UUID v4 strings from the kernel's randomness.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

static FALLBACK: AtomicU64 = AtomicU64::new(0);

/// A new UUID v4 string. Reads `/dev/urandom`; if that fails, mixes time, pid and a counter
/// (unique within this process, which is what ids need).
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_ok();
    if !ok {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let n = FALLBACK.fetch_add(1, Ordering::Relaxed);
        bytes[..8].copy_from_slice(&nanos.to_le_bytes());
        bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        bytes[12..].copy_from_slice(&(n as u32).to_le_bytes());
    }
    dispatch_journal::boot_id_from_random(bytes)
}

/// Whether `s` looks like an id this server hands out (36 characters of hex and dashes).
/// Used only to answer a clear 404 early; lookups decide.
pub fn is_plausible(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_v4_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert!(is_plausible(&a), "{a}");
        assert_eq!(a.as_bytes()[14], b'4', "{a}");
        assert!(!is_plausible("../etc/passwd"));
    }
}
