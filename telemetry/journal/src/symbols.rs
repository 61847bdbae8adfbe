//! The symbol store's layout, shared by the server (which copies its own executable in at
//! start) and `dispatchctl symbols` (which converts, lists and looks up): both derive every
//! path and id here, so the two can never disagree about where a build's files live.
//!
//! The layout is Breakpad's, the one `minidump-stackwalk --symbols-path`, Sentry and Socorro
//! read:
//!
//! ```text
//! <store>/<code file name>/<DEBUG ID>/<code file name>.sym   Breakpad text symbols
//! <store>/<code file name>/<DEBUG ID>/<code file name>       the ELF itself (optional)
//! <store>/<code file name>/<DEBUG ID>/<code file name>.debug a separate debug file (optional)
//! ```
//!
//! A Linux module's debug id is derived from its GNU build-id (the rule rust-minidump's
//! `Module::debug_identifier` and symbolic's ELF reader apply, and what `dump_syms` writes on
//! the `MODULE` line): the first 16 bytes of the build-id, zero-padded when shorter, read as a
//! GUID in little-endian byte order (the first three fields byte-swapped), printed as 32
//! uppercase hex digits, followed by the age, `0`. A build-id of all zero bytes has no debug id.
//! Nothing here does I/O.
//!
//! ```
//! use dispatch_journal::symbols::{debug_id_from_build_id, sym_path};
//! use std::path::Path;
//!
//! let id = debug_id_from_build_id("b7dc60e91588d8a54c4c44205e3e8f5a0c2a1e9d").unwrap();
//! assert_eq!(id, "E960DCB78815A5D84C4C44205E3E8F5A0");
//! assert_eq!(
//!     sym_path(Path::new("/srv/symbols"), "dispatch-server", &id),
//!     Path::new("/srv/symbols/dispatch-server/E960DCB78815A5D84C4C44205E3E8F5A0/dispatch-server.sym")
//! );
//! ```

use std::path::{Path, PathBuf};

/// Suffix of the Breakpad symbol file in a module's directory.
pub const SYM_SUFFIX: &str = ".sym";
/// Suffix of a separate debug file (DWARF only, as debuginfod's `/debuginfo` may serve).
pub const DEBUG_SUFFIX: &str = ".debug";

/// The Breakpad debug id of an ELF module with GNU build-id `build_id` (hex, either case).
///
/// `None` when `build_id` is empty, not an even number of hex digits, or all zero bytes
/// (rust-minidump gives such a module no debug id either).
pub fn debug_id_from_build_id(build_id: &str) -> Option<String> {
    let bytes = hex_bytes(build_id)?;
    if bytes.iter().all(|b| *b == 0) {
        return None;
    }
    let mut guid = [0u8; 16];
    for (slot, b) in guid.iter_mut().zip(&bytes) {
        *slot = *b;
    }
    // The GUID's first three fields are little-endian integers: u32, u16, u16.
    guid[0..4].reverse();
    guid[4..6].reverse();
    guid[6..8].reverse();
    let mut id: String = guid.iter().map(|b| format!("{b:02X}")).collect();
    id.push('0'); // the age: always 0 for ELF
    Some(id)
}

/// The build-id as lowercase hex, the form debuginfod URLs and `process.start` use; `None`
/// when it is not an even, non-empty run of hex digits.
pub fn normalize_build_id(build_id: &str) -> Option<String> {
    hex_bytes(build_id).map(|b| b.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `id` has the shape of a Breakpad debug id: 32 hex digits of GUID and 1 to 8 of age,
/// uppercase GUID. Anything else (a path separator above all) is never used as a directory.
pub fn is_debug_id(id: &str) -> bool {
    (33..=40).contains(&id.len())
        && id.bytes().all(|c| c.is_ascii_hexdigit())
        && id.bytes().take(32).all(|c| !c.is_ascii_lowercase())
}

/// Whether `name` can be a module's directory name: not empty, not `.` or `..`, no `/` and
/// no NUL byte.
pub fn is_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// The last component of a module's path as a dump records it (`/usr/bin/dispatch-server` ->
/// `dispatch-server`); the kernel's ` (deleted)` suffix of a replaced binary is dropped.
pub fn code_file_name(path: &str) -> &str {
    let leaf = path.rsplit('/').next().unwrap_or(path);
    leaf.strip_suffix(" (deleted)").unwrap_or(leaf)
}

/// `<store>/<code file>/<debug id>`: the directory of one build of one module.
pub fn module_dir(store: &Path, code_file: &str, debug_id: &str) -> PathBuf {
    store.join(code_file).join(debug_id)
}

/// `<store>/<code file>/<debug id>/<code file>.sym`.
pub fn sym_path(store: &Path, code_file: &str, debug_id: &str) -> PathBuf {
    module_dir(store, code_file, debug_id).join(format!("{code_file}{SYM_SUFFIX}"))
}

/// `<store>/<code file>/<debug id>/<code file>`: the executable (or shared object) itself.
pub fn binary_path(store: &Path, code_file: &str, debug_id: &str) -> PathBuf {
    module_dir(store, code_file, debug_id).join(code_file)
}

/// `<store>/<code file>/<debug id>/<code file>.debug`: a separate debug file.
pub fn debug_file_path(store: &Path, code_file: &str, debug_id: &str) -> PathBuf {
    module_dir(store, code_file, debug_id).join(format!("{code_file}{DEBUG_SUFFIX}"))
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.as_bytes();
    if hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    hex.chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_id_swaps_the_first_three_fields_and_appends_age_zero() {
        // Worked by hand: 00010203 0405 0607 | 08..0f -> 03020100 0504 0706 08..0f, age 0.
        assert_eq!(
            debug_id_from_build_id("000102030405060708090a0b0c0d0e0f1011121314151617").as_deref(),
            Some("030201000504070608090A0B0C0D0E0F0")
        );
        // Uppercase input is the same id.
        assert_eq!(
            debug_id_from_build_id("000102030405060708090A0B0C0D0E0F"),
            debug_id_from_build_id("000102030405060708090a0b0c0d0e0f")
        );
        // A short build-id is zero-padded to 16 bytes.
        assert_eq!(
            debug_id_from_build_id("0001020304050607").as_deref(),
            Some("030201000504070600000000000000000")
        );
    }

    #[test]
    fn bad_build_ids_have_no_debug_id() {
        for bad in ["", "abc", "zz", "00000000", "0x12", "12 34"] {
            assert_eq!(debug_id_from_build_id(bad), None, "{bad:?}");
        }
        assert_eq!(normalize_build_id("ABcd"), Some("abcd".into()));
        assert_eq!(normalize_build_id("abc"), None);
    }

    #[test]
    fn shapes_and_names() {
        assert!(is_debug_id("030201000504070608090A0B0C0D0E0F0"));
        assert!(!is_debug_id("030201000504070608090a0b0c0d0e0f0"), "lowercase guid");
        assert!(!is_debug_id("../../etc/passwd/0000000000000000000"));
        assert!(!is_debug_id("0302010005040706"));
        assert!(is_file_name("libc.so.6"));
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(!is_file_name(bad), "{bad:?}");
        }
        assert_eq!(code_file_name("/usr/bin/dispatch-server"), "dispatch-server");
        assert_eq!(code_file_name("/opt/d/dispatch-server (deleted)"), "dispatch-server");
        assert_eq!(code_file_name("dispatch-server"), "dispatch-server");
        let s = Path::new("/s");
        assert_eq!(binary_path(s, "a", "B0"), Path::new("/s/a/B0/a"));
        assert_eq!(debug_file_path(s, "a", "B0"), Path::new("/s/a/B0/a.debug"));
    }
}
