//! Reads the GNU build-id note of an ELF file (`NT_GNU_BUILD_ID` in a `PT_NOTE` segment), the
//! key symbols are stored under, so a rebuilt binary never yields silently wrong names. Small
//! on purpose: ELF64 and ELF32, either byte order, only the program headers and note segments
//! are read. The server's `process.start` and the crash monitor's `crash` records use it.

use std::os::unix::fs::FileExt;
use std::path::Path;

const PT_NOTE: u32 = 4;
const NT_GNU_BUILD_ID: u32 = 3;
/// Largest note segment read, bytes; build-id notes are tiny.
const MAX_NOTE_BYTES: u64 = 64 * 1024;

/// Anything that can read at an offset (a file, or a byte slice in tests).
pub trait ReadAt {
    /// Fills `buf` from `offset`; false when it cannot.
    fn read_exact_at_offset(&self, buf: &mut [u8], offset: u64) -> bool;
}

impl ReadAt for std::fs::File {
    fn read_exact_at_offset(&self, buf: &mut [u8], offset: u64) -> bool {
        self.read_exact_at(buf, offset).is_ok()
    }
}

impl ReadAt for [u8] {
    fn read_exact_at_offset(&self, buf: &mut [u8], offset: u64) -> bool {
        let Ok(start) = usize::try_from(offset) else { return false };
        match start.checked_add(buf.len()).and_then(|end| self.get(start..end)) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

/// The running executable's build-id, lowercase hex.
pub fn current_build_id() -> Option<String> {
    build_id(Path::new("/proc/self/exe"))
}

/// The build-id of the ELF file at `path`; `None` when it cannot be read, is not ELF, or has
/// no build-id note.
pub fn build_id(path: &Path) -> Option<String> {
    gnu_build_id(&std::fs::File::open(path).ok()?)
}

/// The GNU build-id as lowercase hex, or `None` when the file is not ELF or has none.
pub fn gnu_build_id(file: &(impl ReadAt + ?Sized)) -> Option<String> {
    let mut ident = [0u8; 16];
    if !file.read_exact_at_offset(&mut ident, 0) || &ident[..4] != b"\x7fELF" {
        return None;
    }
    let is64 = match ident[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let le = match ident[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let u16_at = |b: &[u8]| {
        if le { u16::from_le_bytes([b[0], b[1]]) } else { u16::from_be_bytes([b[0], b[1]]) }
    };
    let u32_at = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) }
    };
    let u64_at = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        if le { u64::from_le_bytes(a) } else { u64::from_be_bytes(a) }
    };
    let mut header = [0u8; 64];
    let header_len = if is64 { 64 } else { 52 };
    if !file.read_exact_at_offset(&mut header[..header_len], 0) {
        return None;
    }
    let (phoff, phentsize, phnum) = if is64 {
        (u64_at(&header[32..]), u16_at(&header[54..]), u16_at(&header[56..]))
    } else {
        (u64::from(u32_at(&header[28..])), u16_at(&header[42..]), u16_at(&header[44..]))
    };
    let phentsize = usize::from(phentsize);
    if phentsize < if is64 { 56 } else { 32 } || phnum == 0 {
        return None;
    }
    let mut ph = vec![0u8; phentsize];
    for i in 0..u64::from(phnum) {
        if !file.read_exact_at_offset(&mut ph, phoff.checked_add(i * phentsize as u64)?) {
            return None;
        }
        if u32_at(&ph[0..]) != PT_NOTE {
            continue;
        }
        let (offset, size) = if is64 {
            (u64_at(&ph[8..]), u64_at(&ph[32..]))
        } else {
            (u64::from(u32_at(&ph[4..])), u64::from(u32_at(&ph[16..])))
        };
        if size > MAX_NOTE_BYTES {
            continue;
        }
        let mut notes = vec![0u8; usize::try_from(size).ok()?];
        if !file.read_exact_at_offset(&mut notes, offset) {
            continue;
        }
        let mut at = 0usize;
        while at + 12 <= notes.len() {
            let namesz = u32_at(&notes[at..]) as usize;
            let descsz = u32_at(&notes[at + 4..]) as usize;
            let kind = u32_at(&notes[at + 8..]);
            let name_start = at + 12;
            let desc_start = name_start.checked_add(namesz.checked_add(3)? & !3)?;
            let next = desc_start.checked_add(descsz.checked_add(3)? & !3)?;
            let (Some(name), Some(desc)) = (
                notes.get(name_start..name_start + namesz),
                notes.get(desc_start..desc_start + descsz),
            ) else {
                break;
            };
            if kind == NT_GNU_BUILD_ID && name == b"GNU\0" && !desc.is_empty() {
                return Some(desc.iter().map(|b| format!("{b:02x}")).collect());
            }
            at = next;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 little-endian image with one PT_NOTE segment holding a build-id note,
    /// built byte by byte here (not with the parser's code).
    fn synthetic_elf(build_id: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // ELFCLASS64
        f[5] = 1; // little-endian
        f[6] = 1;
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
        let note_off = 64 + 2 * 56;
        let mut note = Vec::new();
        // An unrelated note first (type 1, name "XYZ\0"), then the build-id.
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&1u32.to_le_bytes());
        note.extend_from_slice(b"XYZ\0abcd");
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&(build_id.len() as u32).to_le_bytes());
        note.extend_from_slice(&3u32.to_le_bytes());
        note.extend_from_slice(b"GNU\0");
        note.extend_from_slice(build_id);
        // PT_LOAD (ignored), then PT_NOTE.
        let mut load = vec![0u8; 56];
        load[..4].copy_from_slice(&1u32.to_le_bytes());
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&4u32.to_le_bytes());
        ph[8..16].copy_from_slice(&(note_off as u64).to_le_bytes());
        ph[32..40].copy_from_slice(&(note.len() as u64).to_le_bytes());
        f.extend_from_slice(&load);
        f.extend_from_slice(&ph);
        f.extend_from_slice(&note);
        f
    }

    #[test]
    fn paths_that_are_not_elf_give_none() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        std::fs::write(&p, b"#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(build_id(&p), None);
        assert_eq!(build_id(&d.path().join("missing")), None);
        assert!(current_build_id().is_some_and(|b| b.len() >= 16), "the linker writes one");
    }

    #[test]
    fn finds_the_build_id_note() {
        let elf = synthetic_elf(&[0xde, 0xad, 0xbe, 0xef, 0x01]);
        assert_eq!(gnu_build_id(elf.as_slice()).as_deref(), Some("deadbeef01"));
    }

    #[test]
    fn garbage_and_truncation_give_none_without_panicking() {
        assert_eq!(gnu_build_id(b"not an elf file".as_slice()), None);
        let elf = synthetic_elf(&[1, 2, 3, 4]);
        for cut in 0..elf.len() {
            let _ = gnu_build_id(&elf[..cut]);
        }
        let mut bad = elf.clone();
        bad[64 + 56 + 32] = 0xff; // absurd note size
        assert_eq!(gnu_build_id(bad.as_slice()), None);
    }

    #[test]
    fn this_test_binary_agrees_with_readelf_when_available() {
        let exe = std::env::current_exe().unwrap();
        let Ok(out) = std::process::Command::new("readelf").arg("-n").arg(&exe).output() else {
            return; // no binutils here: the synthetic test above still covers the parser
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let expected =
            text.lines().find_map(|l| l.trim().strip_prefix("Build ID: ")).map(str::to_owned);
        let file = std::fs::File::open(&exe).unwrap();
        assert_eq!(gnu_build_id(&file), expected);
    }
}
