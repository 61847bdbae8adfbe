//! Breakpad `.sym` text from ELF + DWARF through Mozilla's `dump_syms` (as a library), and a
//! count of what the text holds, taken while it is written (so `symbols list` never has to
//! re-read a large file).

use std::io::Write;
use std::path::Path;

use dump_syms::object_info::ObjectInfo;
use dump_syms::platform::Platform;
use serde::{Deserialize, Serialize};

use super::error::SymbolsError;

/// What a `.sym` file holds, by record type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymStats {
    /// The `MODULE` line's debug id.
    pub module_debug_id: Option<String>,
    /// The `INFO CODE_ID` line's id (the build-id, uppercase hex).
    pub code_id: Option<String>,
    /// `FILE` records.
    pub files: u64,
    /// `FUNC` records (functions with an address range, from DWARF).
    pub funcs: u64,
    /// Line records (address range -> file and line).
    pub lines: u64,
    /// `INLINE` records (an inlined call inside a function).
    pub inlines: u64,
    /// `PUBLIC` records (symbol-table names without a range).
    pub publics: u64,
    /// `STACK CFI INIT` records (one per unwind table entry).
    pub cfi: u64,
    /// Size of the text, bytes.
    pub bytes: u64,
}

impl SymStats {
    /// Whether addresses resolve to file and line.
    pub fn has_line_info(&self) -> bool {
        self.lines > 0
    }
    /// Whether inlined frames are recorded.
    pub fn has_inline_info(&self) -> bool {
        self.inlines > 0
    }
    /// Whether the unwinder has CFI for this module.
    pub fn has_cfi(&self) -> bool {
        self.cfi > 0
    }

    /// Counts the records of `.sym` text (a file written by another tool, or one whose
    /// metadata was lost).
    pub fn scan(mut text: impl std::io::Read) -> std::io::Result<SymStats> {
        let mut counter = Counter::default();
        std::io::copy(&mut text, &mut counter)?;
        counter.finish();
        Ok(counter.stats)
    }
}

/// Writes the Breakpad symbols of `inputs` (one ELF file, or an executable and its separate
/// debug file: same build-id, merged) to `out`, named `code_file` on the `MODULE` line when
/// the ELF has no soname. Returns what was written.
///
/// # Errors
/// [`SymbolsError::Convert`] when `dump_syms` fails (or panics) on a file, or the files are
/// not one build; [`SymbolsError::Io`] (naming `out_path`) when writing fails.
pub fn write_sym(
    inputs: &[(&Path, &[u8])],
    code_file: &str,
    out: &mut dyn Write,
    out_path: &Path,
) -> Result<SymStats, SymbolsError> {
    let mut merged: Option<ObjectInfo> = None;
    for (path, data) in inputs {
        let convert_err =
            |reason: String| SymbolsError::Convert { path: path.to_path_buf(), reason };
        // dump_syms has `unwrap`s on its paths; a malformed file must be an error, not a crash.
        let info = std::panic::catch_unwind(|| {
            ObjectInfo::from_elf(data, code_file, Platform::Linux, None, true)
        })
        .map_err(|panic| convert_err(panic_message(&panic)))?
        .map_err(|e| convert_err(format!("{e:#}")))?;
        merged = Some(match merged {
            None => info,
            Some(prev) => {
                ObjectInfo::merge(prev, info).map_err(|e| convert_err(format!("{e:#}")))?
            }
        });
    }
    let Some(info) = merged else {
        return Err(SymbolsError::Convert {
            path: out_path.to_path_buf(),
            reason: "no input file".to_owned(),
        });
    };
    let mut counter = Counter { inner: Some(out), ..Counter::default() };
    info.dump(&mut counter).map_err(|e| match e.downcast::<std::io::Error>() {
        Ok(io) => SymbolsError::Io { path: out_path.to_path_buf(), what: "writing", source: io },
        Err(e) => SymbolsError::Convert { path: out_path.to_path_buf(), reason: format!("{e:#}") },
    })?;
    counter.finish();
    Ok(counter.stats)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    format!("dump_syms panicked: {what}")
}

/// A `Write` that classifies each line by its record type while passing the bytes on.
#[derive(Default)]
struct Counter<'a> {
    inner: Option<&'a mut dyn Write>,
    stats: SymStats,
    /// The start of the current line (enough to classify it and keep a `MODULE` line).
    head: Vec<u8>,
}

/// Bytes of a line kept to classify it; a `MODULE` or `INFO CODE_ID` line fits.
const HEAD_BYTES: usize = 512;

impl Counter<'_> {
    fn line_done(&mut self) {
        let line = String::from_utf8_lossy(&self.head);
        let s = &mut self.stats;
        let mut words = line.split_ascii_whitespace();
        match words.next() {
            Some("MODULE") => s.module_debug_id = words.nth(2).map(str::to_owned),
            Some("INFO") if words.next() == Some("CODE_ID") => {
                s.code_id = words.next().map(str::to_owned)
            }
            Some("FILE") => s.files += 1,
            Some("FUNC") => s.funcs += 1,
            Some("INLINE") => s.inlines += 1,
            Some("PUBLIC") => s.publics += 1,
            Some("STACK") if words.next() == Some("CFI") && words.next() == Some("INIT") => {
                s.cfi += 1
            }
            Some(first) if first.bytes().all(|c| c.is_ascii_hexdigit()) => s.lines += 1,
            _ => {}
        }
        self.head.clear();
    }

    fn finish(&mut self) {
        if !self.head.is_empty() {
            self.line_done();
        }
    }
}

impl Write for Counter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = match self.inner.as_mut() {
            Some(inner) => inner.write(buf)?,
            None => buf.len(),
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                self.line_done();
            } else if self.head.len() < HEAD_BYTES {
                self.head.push(b);
            }
        }
        self.stats.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.inner.as_mut() {
            Some(inner) => inner.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_counts_each_record_type() {
        let text = "MODULE Linux x86_64 E960DCB78815A5D84C4C44205E3E8F5A0 a.out\n\
                    INFO CODE_ID B7DC60E91588D8A54C4C44205E3E8F5A0C2A1E9D\n\
                    FILE 0 /src/a.c\nFILE 1 /src/b.h\n\
                    INLINE_ORIGIN 0 helper\n\
                    FUNC 1000 20 0 main\n\
                    INLINE 0 12 0 0 1004 8\n\
                    1000 4 10 0\n1004 8 3 1\n\
                    PUBLIC 2000 0 _start\n\
                    STACK CFI INIT 1000 20 .cfa: $rsp 8 + .ra: .cfa -8 + ^\n\
                    STACK CFI 1001 .cfa: $rsp 16 +";
        let s = SymStats::scan(text.as_bytes()).unwrap();
        assert_eq!(s.module_debug_id.as_deref(), Some("E960DCB78815A5D84C4C44205E3E8F5A0"));
        assert_eq!(s.code_id.as_deref(), Some("B7DC60E91588D8A54C4C44205E3E8F5A0C2A1E9D"));
        assert_eq!((s.files, s.funcs, s.inlines, s.lines, s.publics, s.cfi), (2, 1, 1, 2, 1, 1));
        assert_eq!(s.bytes, text.len() as u64);
        assert!(s.has_line_info() && s.has_inline_info() && s.has_cfi());
        assert!(!SymStats::scan(&b"PUBLIC 1 0 x\n"[..]).unwrap().has_line_info());
    }

    #[test]
    fn this_test_binary_converts_with_lines_and_cfi() {
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(&exe).unwrap();
        let facts = super::super::elf::inspect(&exe, &data).unwrap();
        let mut out = Vec::new();
        let stats = write_sym(&[(&exe, &data)], "t", &mut out, Path::new("t.sym")).unwrap();
        assert_eq!(stats.module_debug_id.as_deref(), Some(facts.debug_id.as_str()));
        assert_eq!(stats.code_id, Some(facts.build_id.to_ascii_uppercase()));
        assert!(stats.funcs > 100 && stats.has_line_info() && stats.has_cfi(), "{stats:?}");
        assert_eq!(stats, SymStats::scan(&out[..]).unwrap(), "counted while written = re-read");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        let e = write_sym(
            &[(Path::new("/j"), b"\x7fELF\x02\x01\x01junk")],
            "j",
            &mut out,
            Path::new("j.sym"),
        )
        .unwrap_err();
        assert_eq!(e.code(), "symbols_convert_failed", "{e}");
        assert!(e.to_string().starts_with("/j: converting"), "{e}");
    }
}
