//! What an ELF file is, read with symbolic (the parser `dump_syms` converts with, so the ids
//! and facts here are the ones the `.sym` will carry): its GNU build-id, its Breakpad debug
//! id, whether it carries DWARF and unwind tables, and whether it is a separate debug file.

use std::path::Path;

use symbolic_debuginfo::{FileFormat, Object, ObjectKind};

use super::error::SymbolsError;

/// Facts about one ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfFacts {
    /// GNU build-id, lowercase hex.
    pub build_id: String,
    /// Breakpad debug id (what a dump's module and the `.sym`'s `MODULE` line say).
    pub debug_id: String,
    /// `DT_SONAME` of a shared object.
    pub soname: Option<String>,
    /// Has a `.debug_info` section (DWARF: functions, files, lines, inlines).
    pub has_debug_info: bool,
    /// Has `.eh_frame` or `.debug_frame` (unwind tables: `STACK CFI` records).
    pub has_unwind_info: bool,
    /// A separate debug file (`objcopy --only-keep-debug`, debuginfod's `/debuginfo`): its
    /// code sections are empty.
    pub is_debug_file: bool,
    /// CPU architecture, as Breakpad names it (`x86_64`).
    pub arch: String,
}

/// Reads the facts of the ELF image `data` (read from `path`, which errors name).
///
/// # Errors
/// [`SymbolsError::NotElf`], [`SymbolsError::BadElf`], [`SymbolsError::NoBuildId`].
pub fn inspect(path: &Path, data: &[u8]) -> Result<ElfFacts, SymbolsError> {
    if Object::peek(data) != FileFormat::Elf {
        return Err(SymbolsError::NotElf { path: path.to_path_buf() });
    }
    // goblin has panicked on hostile ELF headers before; a bad file is an error, not a crash.
    let parsed = std::panic::catch_unwind(|| match Object::parse(data) {
        Ok(Object::Elf(elf)) => Ok(ElfFacts {
            build_id: elf.code_id().map(|c| c.as_str().to_ascii_lowercase()).unwrap_or_default(),
            debug_id: elf.debug_id().breakpad().to_string(),
            soname: elf.name().map(str::to_owned),
            has_debug_info: elf.has_debug_info(),
            has_unwind_info: elf.has_unwind_info(),
            is_debug_file: elf.kind() == ObjectKind::Debug,
            arch: elf.arch().name().to_owned(),
        }),
        Ok(_) => Err("not an ELF object".to_owned()),
        Err(e) => Err(e.to_string()),
    });
    let facts = match parsed {
        Ok(Ok(facts)) => facts,
        Ok(Err(reason)) => return Err(SymbolsError::BadElf { path: path.to_path_buf(), reason }),
        Err(_) => {
            return Err(SymbolsError::BadElf {
                path: path.to_path_buf(),
                reason: "the ELF parser gave up on it (panicked)".to_owned(),
            });
        }
    };
    if facts.build_id.is_empty() {
        return Err(SymbolsError::NoBuildId { path: path.to_path_buf() });
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_has_a_build_id_and_its_debug_id_follows_from_it() {
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(&exe).unwrap();
        let facts = inspect(&exe, &data).unwrap();
        assert_eq!(facts.build_id.len(), 40, "rustc links a 20-byte sha1 build-id: {facts:?}");
        assert_eq!(
            Some(facts.debug_id.clone()),
            dispatch_journal::symbols::debug_id_from_build_id(&facts.build_id),
            "symbolic's id and the store's rule agree"
        );
        assert!(facts.has_debug_info && facts.has_unwind_info && !facts.is_debug_file);
    }

    #[test]
    fn not_elf_and_truncated_files_are_errors_naming_the_file() {
        let p = Path::new("/x/notes.txt");
        let e = inspect(p, b"#!/bin/sh\n").unwrap_err();
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            ("symbols_not_elf", "/x/notes.txt: not an ELF file")
        );
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // Cut anywhere: an error naming the file (or, once the build-id note is in, facts),
        // never a panic.
        for cut in [5, 64, 200, 4096, 65536] {
            if let Err(e) = inspect(p, &exe[..cut]) {
                assert!(e.to_string().starts_with("/x/notes.txt: "), "{e}");
            }
        }
    }
}
