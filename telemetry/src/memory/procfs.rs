//! `/proc/self/statm` and `/proc/self/status`, read through descriptors kept open.

use std::fs::File;
use std::os::unix::fs::FileExt;

use dispatch_journal::record::MemorySample;

use super::SamplerError;

pub(super) struct ProcSelf {
    statm: File,
    status: Option<File>,
    page_size: u64,
    buf: Vec<u8>,
}

impl ProcSelf {
    pub(super) fn open() -> Result<Self, SamplerError> {
        let statm = File::open("/proc/self/statm")
            .map_err(|source| SamplerError::Proc { path: "/proc/self/statm", source })?;
        Ok(ProcSelf {
            statm,
            status: File::open("/proc/self/status").ok(),
            page_size: crate::sys::page_size(),
            buf: vec![0; 4096],
        })
    }

    /// `rss` from statm: size resident shared text lib data dt, in pages. pread at offset 0
    /// makes procfs regenerate the file, so one descriptor serves every sample.
    pub(super) fn read_statm(&mut self, s: &mut MemorySample) {
        if let Some(n) = read_at0(&self.statm, &mut self.buf) {
            s.rss = parse_statm_resident(&self.buf[..n]).map(|p| p * self.page_size);
        }
    }

    /// `hwm`, `rss_anon`, `rss_file` and `threads` from status.
    pub(super) fn read_status(&mut self, s: &mut MemorySample) {
        if let Some(f) = &self.status
            && let Some(n) = read_at0(f, &mut self.buf)
        {
            parse_status(&self.buf[..n], s);
        }
    }
}

fn read_at0(f: &File, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        let n = f.read_at(buf, 0).ok()?;
        if n < buf.len() {
            return Some(n);
        }
        // Filled the buffer: the file may be longer; grow and read again.
        let len = buf.len() * 2;
        buf.resize(len, 0);
    }
}

/// Second field of statm.
pub(super) fn parse_statm_resident(b: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(b).ok()?;
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// `VmHWM`, `RssAnon`, `RssFile` (kB) and `Threads` from status. On bytes, without UTF-8
/// validation or per-line string splitting: the file is ~1.4 KB of ~55 lines and only four
/// matter, so each line costs a first-byte test and, rarely, a prefix compare.
pub(super) fn parse_status(b: &[u8], s: &mut MemorySample) {
    for line in b.split(|&c| c == b'\n') {
        let (slot, rest) = match line.first() {
            Some(b'V') if line.starts_with(b"VmHWM:") => (&mut s.hwm, &line[6..]),
            Some(b'R') if line.starts_with(b"RssAnon:") => (&mut s.rss_anon, &line[8..]),
            Some(b'R') if line.starts_with(b"RssFile:") => (&mut s.rss_file, &line[8..]),
            Some(b'T') if line.starts_with(b"Threads:") => (&mut s.threads, &line[8..]),
            _ => continue,
        };
        let mut parts = rest.split(u8::is_ascii_whitespace).filter(|p| !p.is_empty());
        let Some(v) = parts.next().and_then(parse_u64) else { continue };
        *slot = Some(match parts.next() {
            Some(b"kB") => v.saturating_mul(1024),
            _ => v,
        });
    }
}

/// A decimal `u64`; `None` for anything else (empty, a sign, other bytes, overflow).
fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    b.iter().try_fold(0u64, |acc, &c| {
        let d = c.checked_sub(b'0').filter(|d| *d < 10)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_statm_and_status() {
        assert_eq!(parse_statm_resident(b"12345 678 90 1 0 2 0\n"), Some(678));
        assert_eq!(parse_statm_resident(b"12345\n"), None);
        let mut s = MemorySample::default();
        parse_status(
            b"Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\nRssAnon:\t 512 kB\nRssFile:\t  256 kB\nThreads:\t7\n",
            &mut s,
        );
        assert_eq!(s.hwm, Some(2048 * 1024));
        assert_eq!(s.rss_anon, Some(512 * 1024));
        assert_eq!(s.rss_file, Some(256 * 1024));
        assert_eq!(s.threads, Some(7));
        assert_eq!(s.rss, None, "rss comes from statm, never from status");
    }

    #[test]
    fn a_status_value_that_is_not_a_number_is_absent() {
        let mut s = MemorySample::default();
        parse_status(b"VmHWM:\t -5 kB\nRssAnon:\t\nRssFile:\t 99999999999999999999999 kB\nThreads:\t3x\nVmHWMx: 1\n", &mut s);
        assert_eq!((s.hwm, s.rss_anon, s.rss_file, s.threads), (None, None, None, None));
        parse_status(b"Threads:\t12", &mut s);
        assert_eq!(s.threads, Some(12), "the last line needs no newline");
    }
}
