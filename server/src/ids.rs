//! Ids for conversations, turns and tool calls: UUID v4 strings from the OS's randomness.

/// A new UUID v4 string, from the OS's randomness.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
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
