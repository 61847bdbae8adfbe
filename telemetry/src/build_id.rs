//! The GNU build-id of an ELF file (`.note.gnu.build-id`), which names the symbols that match
//! a binary: a rebuilt binary never yields silently wrong names.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const PT_NOTE: u32 = 4;
const NT_GNU_BUILD_ID: u32 = 3;

/// The running executable's build-id, lowercase hex.
pub fn current_build_id() -> Option<String> {
    build_id(Path::new("/proc/self/exe"))
}

/// The build-id of a 64-bit little-endian ELF file, lowercase hex; `None` when the file is
/// not such an ELF file or has no build-id note.
pub fn build_id(path: &Path) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let mut eh = [0u8; 64];
    f.read_exact(&mut eh).ok()?;
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let phoff = u64_at(&eh, 0x20);
    let phentsize = usize::from(u16_at(&eh, 0x36));
    let phnum = usize::from(u16_at(&eh, 0x38));
    if phentsize < 56 || phnum > 4096 {
        return None;
    }
    let mut ph = vec![0u8; phentsize * phnum];
    f.seek(SeekFrom::Start(phoff)).ok()?;
    f.read_exact(&mut ph).ok()?;
    for p in ph.chunks_exact(phentsize) {
        if u32_at(p, 0) != PT_NOTE {
            continue;
        }
        let (offset, size) = (u64_at(p, 8), u64_at(p, 32));
        if size > 1 << 20 {
            continue;
        }
        let mut notes = vec![0u8; size as usize];
        f.seek(SeekFrom::Start(offset)).ok()?;
        f.read_exact(&mut notes).ok()?;
        let mut i = 0usize;
        while i + 12 <= notes.len() {
            let namesz = u32_at(&notes, i) as usize;
            let descsz = u32_at(&notes, i + 4) as usize;
            let kind = u32_at(&notes, i + 8);
            let name_start = i + 12;
            let desc_start = name_start + namesz.div_ceil(4) * 4;
            let next = desc_start + descsz.div_ceil(4) * 4;
            if desc_start + descsz > notes.len() {
                break;
            }
            if kind == NT_GNU_BUILD_ID && notes[name_start..name_start + namesz].starts_with(b"GNU")
            {
                return Some(
                    notes[desc_start..desc_start + descsz]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                );
            }
            i = next;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_test_binarys_build_id_like_readelf() {
        let ours = current_build_id().expect("the linker writes a GNU build-id");
        assert!(ours.len() >= 16 && ours.chars().all(|c| c.is_ascii_hexdigit()), "{ours}");
        // Cross-check with binutils when it is installed.
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        if let Ok(out) = std::process::Command::new("readelf").arg("-n").arg(&exe).output() {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(line) = text.lines().find(|l| l.contains("Build ID:")) {
                assert_eq!(line.split_whitespace().last().unwrap(), ours);
            }
        }
    }

    #[test]
    fn not_elf_is_none() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        std::fs::write(&p, b"#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(build_id(&p), None);
        assert_eq!(build_id(&d.path().join("missing")), None);
    }
}
