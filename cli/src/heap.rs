//! `dispatchctl heap`: jemalloc heap profiles from a running server, and the diff of two.
//!
//! The server has jemalloc profiling compiled in and inactive (`prof:true,prof_active:false`).
//! `heap start` activates sampling through the admin API, `heap dump` fetches a profile
//! (`GET /debug/pprof/heap`, jemalloc's `heap_v2` text format with the process's mappings),
//! and `heap diff A B` ranks the allocation sites whose live bytes grew between two dumps,
//! symbolized with `addr2line` against the binaries named in the profiles' mappings.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// One allocation site: a stack, and the live objects and bytes sampled there (scaled to an
/// estimate of the true figures, as jeprof does).
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Return addresses, innermost first.
    pub frames: Vec<u64>,
    /// Estimated live objects.
    pub objects: f64,
    /// Estimated live bytes.
    pub bytes: f64,
}

/// A parsed `heap_v2` profile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// Sampling period in bytes (`heap_v2/<period>`).
    pub sample_period: u64,
    /// Sites.
    pub sites: Vec<Site>,
    /// Executable mappings: (start, end, file offset, path).
    pub mappings: Vec<(u64, u64, u64, String)>,
}

/// A profile that does not parse, with the line that broke it.
#[derive(Debug)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ParseError {}

/// Parses jemalloc's `heap_v2` text format.
///
/// # Errors
/// A header that is not `heap_v2/<period>`, a stack line with a bad address, a count line
/// that does not parse; the error names the line.
pub fn parse(text: &str) -> Result<Profile, ParseError> {
    let err = |line: usize, reason: String| ParseError { line, reason };
    let mut lines = text.lines().enumerate();
    let (_, first) = lines.next().ok_or_else(|| err(1, "empty profile".into()))?;
    let period =
        first.trim().strip_prefix("heap_v2/").and_then(|p| p.parse::<u64>().ok()).ok_or_else(
            || err(1, format!("expected heap_v2/<sample period>, found {:?}", first.trim())),
        )?;
    let mut profile = Profile { sample_period: period.max(1), ..Default::default() };
    let mut stack: Option<Vec<u64>> = None;
    let mut in_maps = false;
    for (i, raw) in lines {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if line == "MAPPED_LIBRARIES:" {
            in_maps = true;
            continue;
        }
        if in_maps {
            if let Some(m) = parse_mapping(line) {
                profile.mappings.push(m);
            }
            continue;
        }
        if let Some(addrs) = line.strip_prefix('@') {
            let frames = addrs
                .split_whitespace()
                .map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| err(n, format!("bad address in stack {line:?}")))?;
            stack = Some(frames);
            continue;
        }
        if let Some(rest) = line.strip_prefix("t*:") {
            // `t*: <objects>: <bytes> [<cum objects>: <cum bytes>]`: the site's totals.
            let mut it = rest
                .split(|c: char| c == ':' || c == '[' || c.is_whitespace())
                .filter(|s| !s.is_empty());
            let objects: f64 = it
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| err(n, format!("bad counts {line:?}")))?;
            let bytes: f64 = it
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| err(n, format!("bad counts {line:?}")))?;
            if let Some(frames) = stack.take() {
                let (objects, bytes) = unsample(objects, bytes, profile.sample_period as f64);
                profile.sites.push(Site { frames, objects, bytes });
            }
            continue;
        }
        // Per-thread lines (`t0: ...`) and anything newer: not needed.
    }
    Ok(profile)
}

/// jeprof's correction for sampling: a site with `objects` samples averaging `bytes/objects`
/// bytes stands for `1 / (1 - exp(-avg / period))` times as many.
fn unsample(objects: f64, bytes: f64, period: f64) -> (f64, f64) {
    if objects <= 0.0 || bytes <= 0.0 {
        return (0.0, 0.0);
    }
    let avg = bytes / objects;
    let scale = 1.0 / (1.0 - (-avg / period).exp());
    (objects * scale, bytes * scale)
}

/// `start-end perms offset dev inode path` (/proc/pid/maps), executable mappings with a path.
fn parse_mapping(line: &str) -> Option<(u64, u64, u64, String)> {
    let mut it = line.split_whitespace();
    let range = it.next()?;
    let perms = it.next()?;
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let _dev = it.next()?;
    let _inode = it.next()?;
    let path = it.collect::<Vec<_>>().join(" ");
    if !perms.contains('x') || !path.starts_with('/') {
        return None;
    }
    let (s, e) = range.split_once('-')?;
    Some((u64::from_str_radix(s, 16).ok()?, u64::from_str_radix(e, 16).ok()?, offset, path))
}

/// One line of a diff: a site and how much it grew.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Growth {
    /// The first frame outside the allocator, symbolized when possible.
    pub site: String,
    /// A few frames further out, for context.
    pub stack: Vec<String>,
    /// Live bytes in the first profile.
    pub before_bytes: f64,
    /// Live bytes in the second.
    pub after_bytes: f64,
    /// Growth.
    pub delta_bytes: f64,
}

/// Frames that are the allocator or the profiler, not the caller.
fn is_allocator_frame(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "je_",
        "_rjem_",
        "prof_",
        "imalloc",
        "ialloc",
        "malloc",
        "calloc",
        "realloc",
        "__rust_alloc",
        "__rust_realloc",
        "__rdl_",
        "__rg_",
        "alloc::",
        "<alloc::",
        "core::alloc",
        "std::alloc",
        "tikv_jemallocator",
        "<tikv_jemallocator",
        "dispatch_telemetry::memory::tags",
        "<dispatch_telemetry::memory::tags",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Names return addresses: the real one is [`addr2line`]; tests pass their own.
pub type Symbolizer<'a> = &'a dyn Fn(&Profile, &[u64]) -> HashMap<u64, String>;

/// Ranks sites by growth from `a` to `b`, symbolized with `symbolize`.
pub fn diff(a: &Profile, b: &Profile, top: usize, symbolize: Symbolizer<'_>) -> Vec<Growth> {
    // Group by stack.
    let mut by: BTreeMap<Vec<u64>, (f64, f64)> = BTreeMap::new();
    for s in &a.sites {
        by.entry(s.frames.clone()).or_default().0 += s.bytes;
    }
    for s in &b.sites {
        by.entry(s.frames.clone()).or_default().1 += s.bytes;
    }
    let mut rows: Vec<(Vec<u64>, f64, f64)> = by.into_iter().map(|(k, (x, y))| (k, x, y)).collect();
    rows.sort_by(|x, y| (y.2 - y.1).total_cmp(&(x.2 - x.1)));
    rows.truncate(top.saturating_mul(4).max(top));
    let addrs: Vec<u64> = rows.iter().flat_map(|r| r.0.iter().copied()).collect();
    let names = symbolize(b, &addrs);
    let name = |a: &u64| names.get(a).cloned().unwrap_or_else(|| format!("{a:#x}"));
    // Merge stacks that end at the same caller.
    let mut merged: BTreeMap<String, Growth> = BTreeMap::new();
    for (frames, before, after) in rows {
        let named: Vec<String> = frames.iter().map(name).collect();
        let first = named.iter().position(|n| !is_allocator_frame(n)).unwrap_or(0);
        let site = named.get(first).cloned().unwrap_or_else(|| "(empty stack)".into());
        let e = merged.entry(site.clone()).or_insert_with(|| Growth {
            site,
            stack: named.iter().skip(first + 1).take(4).cloned().collect(),
            before_bytes: 0.0,
            after_bytes: 0.0,
            delta_bytes: 0.0,
        });
        e.before_bytes += before;
        e.after_bytes += after;
        e.delta_bytes += after - before;
    }
    let mut out: Vec<Growth> = merged.into_values().collect();
    out.sort_by(|x, y| y.delta_bytes.total_cmp(&x.delta_bytes));
    out.truncate(top);
    out
}

/// Symbolizes return addresses with `addr2line` against the mapped binaries (one call per
/// binary); addresses it cannot name are left out (printed as hex).
pub fn addr2line(profile: &Profile, addrs: &[u64]) -> HashMap<u64, String> {
    let mut per_file: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for &a in addrs {
        // A return address points after the call: look up a - 1 for the calling line.
        let pc = a.saturating_sub(1);
        if let Some((start, _, off, path)) = profile.mappings.iter().find(|m| m.0 <= pc && pc < m.1)
        {
            per_file.entry(path.as_str()).or_default().push((a, pc - start + off));
        }
    }
    let mut names = HashMap::new();
    for (path, list) in per_file {
        // addr2line wants ELF virtual addresses: map each file offset through the PT_LOAD
        // segment that holds it (for a PIE binary, offset and vaddr differ by segment).
        let Some(loads) = load_segments(Path::new(path)) else { continue };
        let list: Vec<(u64, u64)> = list
            .into_iter()
            .filter_map(|(a, off)| {
                let seg = loads.iter().find(|(o, _, sz)| *o <= off && off < o + sz)?;
                Some((a, off - seg.0 + seg.1))
            })
            .collect();
        let out = std::process::Command::new("addr2line")
            .args(["-f", "-C", "-e", path])
            .args(list.iter().map(|(_, off)| format!("{off:#x}")))
            .output();
        let Ok(out) = out else { continue };
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        for (i, (addr, _)) in list.iter().enumerate() {
            if let Some(f) = lines.get(2 * i).filter(|f| **f != "??") {
                names.insert(*addr, f.to_string());
            }
        }
    }
    names
}

/// The PT_LOAD segments of a 64-bit little-endian ELF file: (file offset, vaddr, file size).
fn load_segments(path: &Path) -> Option<Vec<(u64, u64, u64)>> {
    let data = std::fs::read(path).ok()?;
    let eh = data.get(..64)?;
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| -> Option<u64> {
        Some(u64::from(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?)))
    };
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?))
    };
    let u64_at = |o: usize| -> Option<u64> {
        Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?))
    };
    let (phoff, phentsize, phnum) =
        (u64_at(0x20)? as usize, u16_at(0x36)? as usize, u16_at(0x38)? as usize);
    let mut out = Vec::new();
    for i in 0..phnum {
        let p = phoff + i * phentsize;
        if u32_at(p)? == 1 {
            out.push((u64_at(p + 8)?, u64_at(p + 16)?, u64_at(p + 32)?));
        }
    }
    Some(out)
}

/// Where the server is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Admin {
    /// `host:port`.
    pub addr: String,
    /// Bearer token (`DISPATCH_ADMIN_TOKEN`).
    pub token: String,
}

impl Admin {
    /// Sends one HTTP/1.1 request and returns (status, body).
    ///
    /// # Errors
    /// Connection or protocol errors.
    pub fn request(&self, method: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut s = TcpStream::connect(&self.addr)
            .with_context(|| format!("connecting to {}", self.addr))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr, self.token
        )?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .with_context(|| format!("reading the answer from {}", self.addr))?;
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no HTTP header in the answer")?;
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no HTTP status in the answer")?;
        let mut body = buf[end + 4..].to_vec();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        Ok((status, body))
    }

    /// Like [`Admin::request`], failing on a non-2xx status with the server's message.
    ///
    /// # Errors
    /// As above, or the status.
    pub fn ok(&self, method: &str, path: &str) -> anyhow::Result<Vec<u8>> {
        let (status, body) = self.request(method, path)?;
        if !(200..300).contains(&status) {
            bail!("{method} {path}: HTTP {status}: {}", String::from_utf8_lossy(&body).trim());
        }
        Ok(body)
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || eol + 2 + size > b.len() {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

/// Default file name for a dump taken now.
pub fn default_dump_path() -> PathBuf {
    let ms = dispatch_journal::Timestamp::now().unix_millis();
    PathBuf::from(format!("heap-{ms}.prof"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "heap_v2/524288
  t*: 3: 3145728 [0: 0]
  t0: 3: 3145728 [0: 0]
@ 0x1010 0x2020 0x3030
  t*: 2: 2097152 [0: 0]
  t0: 2: 2097152 [0: 0]
@ 0x1010 0x4040
  t*: 1: 1048576 [0: 0]

MAPPED_LIBRARIES:
00001000-00005000 r-xp 00000000 08:01 42 /nonexistent/dispatch-server
";
    const B: &str = "heap_v2/524288
  t*: 10: 10485760 [0: 0]
@ 0x1010 0x2020 0x3030
  t*: 9: 9437184 [0: 0]
@ 0x1010 0x4040
  t*: 1: 1048576 [0: 0]
MAPPED_LIBRARIES:
00001000-00005000 r-xp 00000000 08:01 42 /nonexistent/dispatch-server
";

    #[test]
    fn parses_sites_scales_samples_and_reads_mappings() {
        let p = parse(A).unwrap();
        assert_eq!(p.sample_period, 524_288);
        assert_eq!(p.sites.len(), 2);
        assert_eq!(p.sites[0].frames, vec![0x1010, 0x2020, 0x3030]);
        // 2 samples of 1 MiB at a 512 KiB period: scale 1/(1-e^-2) = 1.1565.
        assert!((p.sites[0].bytes / 2_097_152.0 - 1.1565).abs() < 1e-3);
        assert_eq!(
            p.mappings,
            vec![(0x1000, 0x5000, 0, "/nonexistent/dispatch-server".to_string())]
        );
    }

    #[test]
    fn diff_ranks_the_site_that_grew() {
        let (a, b) = (parse(A).unwrap(), parse(B).unwrap());
        let sym = |_: &Profile, addrs: &[u64]| {
            addrs
                .iter()
                .map(|a| {
                    let n = match a {
                        0x1010 => "_rjem_malloc",
                        0x2020 => "dispatch_server::fault::leak",
                        0x3030 => "dispatch_server::turn::run",
                        _ => "dispatch_server::store::load",
                    };
                    (*a, n.to_string())
                })
                .collect()
        };
        let d = diff(&a, &b, 5, &sym);
        assert_eq!(d[0].site, "dispatch_server::fault::leak", "the allocator frame is skipped");
        assert_eq!(d[0].stack, vec!["dispatch_server::turn::run".to_string()]);
        assert!(d[0].delta_bytes > 7.0 * 1_048_576.0);
        assert!(d[1].delta_bytes.abs() < 1.0, "the other site did not grow");
    }

    #[test]
    fn bad_profiles_name_the_line() {
        assert_eq!(parse("").unwrap_err().to_string(), "line 1: empty profile");
        assert!(
            parse("heap_v3/1\n").unwrap_err().to_string().starts_with("line 1: expected heap_v2")
        );
        let e = parse("heap_v2/1\n@ 0xzz\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("heap_v2/1\n@ 0x10\n  t*: x: y\n").unwrap_err();
        assert_eq!(e.line, 3);
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
    }
}
