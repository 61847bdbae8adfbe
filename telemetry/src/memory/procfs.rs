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

    pub(super) fn read_into(&mut self, s: &mut MemorySample) {
        // statm: size resident shared text lib data dt, in pages. pread at offset 0 makes
        // procfs regenerate the file, so one descriptor serves every sample.
        if let Some(n) = read_at0(&self.statm, &mut self.buf) {
            s.rss = parse_statm_resident(&self.buf[..n]).map(|p| p * self.page_size);
        }
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

/// `VmHWM`, `RssAnon`, `RssFile` (kB) and `Threads` from status.
pub(super) fn parse_status(b: &[u8], s: &mut MemorySample) {
    let Ok(text) = std::str::from_utf8(b) else { return };
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else { continue };
        let slot = match key {
            "VmHWM" => &mut s.hwm,
            "RssAnon" => &mut s.rss_anon,
            "RssFile" => &mut s.rss_file,
            "Threads" => &mut s.threads,
            _ => continue,
        };
        let mut parts = rest.split_ascii_whitespace();
        let Some(v) = parts.next().and_then(|v| v.parse::<u64>().ok()) else { continue };
        *slot = Some(match parts.next() {
            Some("kB") => v * 1024,
            _ => v,
        });
    }
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
}
