//! `dispatchctl heap`: jemalloc heap profiles from a running server, and the diff of two.
//!
//! The server has jemalloc profiling compiled in and inactive (`prof:true,prof_active:false`).
//! `heap start` activates sampling through the admin API, `heap dump` fetches a profile
//! (`GET /debug/pprof/heap`, jemalloc's `heap_v2` text format with the process's mappings),
//! and `heap diff A B` ranks the allocation sites whose live bytes grew between two dumps,
//! symbolized with `addr2line` against the binaries named in the profiles' mappings.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use object::read::elf::{FileHeader, ProgramHeader};
use object::{FileKind, ReadCache, elf};

use crate::error::Error;

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

/// Parses jemalloc's `heap_v2` text format.
///
/// # Errors
/// [`Error::ProfileInvalid`] naming the line: a header that is not `heap_v2/<period>`, a stack
/// line with a bad address, a count line that does not parse.
pub fn parse(text: &str) -> Result<Profile, Error> {
    let err = |line: usize, reason: String| Error::ProfileInvalid { line, reason };
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
        let list: Vec<(u64, u64)> =
            list.into_iter().filter_map(|(a, off)| Some((a, vaddr_of(&loads, off)?))).collect();
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

/// The `PT_LOAD` segments of an ELF file, 32- or 64-bit, either byte order:
/// `(file offset, vaddr, file size)`. `None` for a file that is not ELF or does not parse.
///
/// Read through [`object`] from the file (the headers only, not the whole binary).
fn load_segments(path: &Path) -> Option<Vec<(u64, u64, u64)>> {
    let file = std::fs::File::open(path).ok()?;
    let data = &ReadCache::new(file);
    match FileKind::parse(data).ok()? {
        FileKind::Elf32 => load_segments_of::<elf::FileHeader32<object::Endianness>>(data),
        FileKind::Elf64 => load_segments_of::<elf::FileHeader64<object::Endianness>>(data),
        _ => None,
    }
}

fn load_segments_of<H: FileHeader<Endian = object::Endianness>>(
    data: &ReadCache<std::fs::File>,
) -> Option<Vec<(u64, u64, u64)>> {
    let header = H::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let segments = header.program_headers(endian, data).ok()?;
    Some(
        segments
            .iter()
            .filter(|p| p.p_type(endian) == elf::PT_LOAD)
            .map(|p| {
                (p.p_offset(endian).into(), p.p_vaddr(endian).into(), p.p_filesz(endian).into())
            })
            .collect(),
    )
}

/// File offset -> ELF virtual address, through the `PT_LOAD` segment that holds `offset`
/// (for a PIE binary they differ by segment). `None` when no segment holds it.
fn vaddr_of(loads: &[(u64, u64, u64)], offset: u64) -> Option<u64> {
    let &(seg_offset, seg_vaddr, _) =
        loads.iter().find(|&&(o, _, size)| o <= offset && offset - o < size)?;
    seg_vaddr.checked_add(offset - seg_offset)
}

/// Where the server is and how to authenticate.
///
/// Requests go through [`ureq`] (HTTP/1.1, chunked bodies, TLS through rustls on ring with the
/// Mozilla roots), never through a proxy from the environment (the bearer token is for the
/// server alone) and never following a redirect.
#[derive(Clone)]
pub struct Admin {
    /// `host:port` (plain HTTP), or an `http://` or `https://` URL, optionally with a path
    /// prefix.
    pub addr: String,
    /// Bearer token (`DISPATCH_ADMIN_TOKEN`). Sent in the `Authorization` header only: it is
    /// in no error message and not in `Debug`.
    pub token: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("addr", &self.addr).field("token", &"<redacted>").finish()
    }
}

impl Admin {
    /// Time to establish the connection (TCP and TLS).
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Time for the whole request, body included: a heap dump of a large process takes a while.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
    /// Largest body read; a longer answer is an error, not a cut profile.
    pub const MAX_BODY_BYTES: u64 = 256 * 1024 * 1024;

    /// The URL `path` (starting with `/`) resolves to on this server.
    ///
    /// # Errors
    /// [`Error::AdminAddr`]: `addr` is empty, has another scheme, or carries credentials.
    pub fn url(&self, path: &str) -> Result<String, Error> {
        let bad = |reason| Error::AdminAddr { addr: self.addr.clone(), reason };
        let addr = self.addr.trim();
        let base = match addr.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => {
                let authority = rest.split('/').next().unwrap_or_default();
                if let Some((_, host)) = authority.rsplit_once('@') {
                    // Not echoed: the part before '@' is a secret.
                    return Err(Error::AdminAddr {
                        addr: format!("{scheme}://<credentials>@{host}"),
                        reason: "credentials go in --token, not the address",
                    });
                }
                if authority.is_empty() {
                    return Err(bad("no host"));
                }
                addr.trim_end_matches('/').to_owned()
            }
            Some(_) => return Err(bad("the scheme must be http:// or https://")),
            None if addr.is_empty() => return Err(bad("no host")),
            None if addr.contains(['/', '@']) => {
                return Err(bad("expected host:port or an http(s):// URL"));
            }
            None => format!("http://{addr}"),
        };
        Ok(format!("{base}{path}"))
    }

    /// Sends one request (no body) and returns the status and the whole body, whatever the
    /// status.
    ///
    /// # Errors
    /// [`Error::AdminAddr`] for a bad address; [`Error::AdminRequest`] when the request did not
    /// complete: no connection, TLS, a timeout, or an answer that is not valid HTTP (a chunked
    /// body with a bad chunk size is an error, never a short body), or a body over
    /// [`Admin::MAX_BODY_BYTES`].
    pub fn request(&self, method: &str, path: &str) -> Result<(u16, Vec<u8>), Error> {
        let url = self.url(path)?;
        let failed = |source| Error::AdminRequest {
            method: method.to_owned(),
            url: url.clone(),
            source: Box::new(source),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .timeout_connect(Some(Self::CONNECT_TIMEOUT))
            .timeout_global(Some(Self::REQUEST_TIMEOUT))
            .build()
            .into();
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.token));
        let response = match method {
            // No body, and none announced.
            "GET" | "HEAD" => request.body(()).map(|r| agent.run(r)),
            // An empty body with `Content-Length: 0`, as servers expect of a POST.
            _ => request.body(&[][..]).map(|r| agent.run(r)),
        }
        .map_err(|e| failed(ureq::Error::Http(e)))?
        .map_err(failed)?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .with_config()
            .limit(Self::MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(failed)?;
        Ok((status, body))
    }

    /// Like [`Admin::request`], failing on a non-2xx status with the server's message.
    ///
    /// # Errors
    /// As [`Admin::request`], or [`Error::AdminStatus`] with the status and the start of the
    /// server's answer.
    pub fn ok(&self, method: &str, path: &str) -> Result<Vec<u8>, Error> {
        let (status, body) = self.request(method, path)?;
        if !(200..300).contains(&status) {
            let message: String = String::from_utf8_lossy(&body).trim().chars().take(500).collect();
            return Err(Error::AdminStatus {
                method: method.to_owned(),
                url: self.url(path)?,
                status,
                message,
            });
        }
        Ok(body)
    }
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
        assert!(matches!(e, Error::ProfileInvalid { line: 2, .. }), "{e:?}");
        assert_eq!(e.code(), "heap_profile_invalid");
        let e = parse("heap_v2/1\n@ 0x10\n  t*: x: y\n").unwrap_err();
        assert!(matches!(e, Error::ProfileInvalid { line: 3, .. }), "{e:?}");
    }

    /// A one-connection HTTP server on 127.0.0.1 that reads the request head, answers with
    /// `response` verbatim and closes. Returns its address and the request head it read.
    fn serve_once(response: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            conn.write_all(response).unwrap();
            String::from_utf8(head).unwrap()
        });
        (addr, server)
    }

    #[test]
    fn a_good_chunked_body_is_read_whole() {
        let (addr, server) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
              3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        );
        let admin = Admin { addr, token: "s3cret".into() };
        assert_eq!(admin.ok("GET", "/debug/pprof/heap").unwrap(), b"abcde");
        let head = server.join().unwrap();
        assert!(head.starts_with("GET /debug/pprof/heap HTTP/1.1\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("authorization: bearer s3cret\r\n"), "{head}");
    }

    #[test]
    fn a_bad_chunk_size_is_an_error_not_a_short_body() {
        // The first chunk is fine; the second's size is not hex. The old hand-written client
        // returned "abc" here.
        let (addr, server) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
              3\r\nabc\r\nzz\r\nde\r\n0\r\n\r\n",
        );
        let admin = Admin { addr, token: "s3cret".into() };
        let err = admin.ok("GET", "/debug/pprof/heap").unwrap_err();
        server.join().unwrap();
        assert_eq!(err.code(), "admin_request_failed", "{err:?}");
        let chain = error_chain(&err);
        assert!(chain.contains("/debug/pprof/heap"), "names the URL: {chain}");
        assert!(!chain.contains("s3cret"), "no token in the message: {chain}");
    }

    #[test]
    fn a_refusal_names_the_url_and_status_but_not_the_token() {
        let (addr, server) = serve_once(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 46\r\nConnection: close\r\n\r\n\
              {\"code\":\"unauthorized\",\"message\":\"bad token\"}\n",
        );
        let admin = Admin { addr: format!("http://{addr}/"), token: "s3cret".into() };
        let err = admin.ok("POST", "/admin/heap/start").unwrap_err();
        let head = server.join().unwrap();
        assert!(head.starts_with("POST /admin/heap/start HTTP/1.1\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-length: 0\r\n"), "{head}");
        assert_eq!(err.code(), "admin_status", "{err:?}");
        let chain = error_chain(&err);
        assert!(
            chain.starts_with(&format!("POST http://{addr}/admin/heap/start: HTTP 401")),
            "{chain}"
        );
        assert!(chain.contains("bad token"), "{chain}");
        assert!(!chain.contains("s3cret") && !format!("{admin:?}").contains("s3cret"), "{chain}");
    }

    #[test]
    fn no_server_is_an_error_naming_the_url() {
        // Bind and drop: nothing listens on the port any more.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let admin = Admin { addr: addr.to_string(), token: "s3cret".into() };
        let err = admin.request("GET", "/debug/pprof/heap").unwrap_err();
        assert_eq!(err.code(), "admin_request_failed");
        let chain = error_chain(&err);
        assert!(chain.starts_with(&format!("GET http://{addr}/debug/pprof/heap: ")), "{chain}");
        assert!(!chain.contains("s3cret"), "{chain}");
    }

    #[test]
    fn addresses_are_host_port_or_http_urls() {
        let url = |addr: &str| Admin { addr: addr.into(), token: String::new() }.url("/x");
        assert_eq!(url("127.0.0.1:24991").unwrap(), "http://127.0.0.1:24991/x");
        assert_eq!(
            url("https://dispatch.example:8443").unwrap(),
            "https://dispatch.example:8443/x"
        );
        assert_eq!(url("http://h:1/prefix/").unwrap(), "http://h:1/prefix/x");
        for bad in ["", "ftp://h:1", "https://user:pw@h:1", "https:///x", "h:1/x"] {
            let err = url(bad).unwrap_err();
            assert_eq!(err.code(), "admin_addr_invalid", "{bad:?}");
            assert!(!err.to_string().contains("pw"), "{err}");
        }
    }

    /// The message as `dispatchctl` prints it (`{:#}` walks the same chain).
    fn error_chain(err: &Error) -> String {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    }

    /// A minimal ELF image built by hand (not with `object`): header, a `PT_NOTE` and a
    /// `PT_LOAD` at file offset 0x1000, vaddr 0x401000, 0x2000 bytes.
    fn elf_image(is_64: bool, is_big_endian: bool) -> Vec<u8> {
        let (ehsize, phentsize): (usize, usize) = if is_64 { (64, 56) } else { (52, 32) };
        let mut b = vec![0u8; ehsize + 2 * phentsize];
        let put = |b: &mut Vec<u8>, at: usize, v: u64, width: usize| {
            let bytes = v.to_be_bytes();
            let mut field = bytes[8 - width..].to_vec();
            if !is_big_endian {
                field.reverse();
            }
            b[at..at + width].copy_from_slice(&field);
        };
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = if is_64 { 2 } else { 1 };
        b[5] = if is_big_endian { 2 } else { 1 };
        b[6] = 1; // EI_VERSION
        put(&mut b, 16, 3, 2); // e_type: ET_DYN (a PIE)
        put(&mut b, 18, if is_64 { 62 } else { 3 }, 2); // e_machine
        put(&mut b, 20, 1, 4); // e_version
        let word = if is_64 { 8 } else { 4 };
        let phoff_at = 24 + word; // after e_entry
        put(&mut b, phoff_at, ehsize as u64, word); // e_phoff
        let flags_at = 24 + 3 * word;
        put(&mut b, flags_at + 4, ehsize as u64, 2); // e_ehsize
        put(&mut b, flags_at + 6, phentsize as u64, 2); // e_phentsize
        put(&mut b, flags_at + 8, 2, 2); // e_phnum
        for (i, p_type) in [4u64, 1].into_iter().enumerate() {
            let p = ehsize + i * phentsize;
            put(&mut b, p, p_type, 4);
            let (offset, vaddr, filesz) =
                if p_type == 1 { (0x1000, 0x40_1000, 0x2000) } else { (0, 0, 0) };
            if is_64 {
                put(&mut b, p + 8, offset, 8);
                put(&mut b, p + 16, vaddr, 8);
                put(&mut b, p + 32, filesz, 8);
            } else {
                put(&mut b, p + 4, offset, 4);
                put(&mut b, p + 8, vaddr, 4);
                put(&mut b, p + 16, filesz, 4);
            }
        }
        b
    }

    #[test]
    fn load_segments_of_both_widths_and_byte_orders() {
        let dir = tempfile::tempdir().unwrap();
        for is_64 in [false, true] {
            for is_big_endian in [false, true] {
                let path = dir.path().join(format!("elf-{is_64}-{is_big_endian}"));
                std::fs::write(&path, elf_image(is_64, is_big_endian)).unwrap();
                let loads = load_segments(&path);
                assert_eq!(
                    loads,
                    Some(vec![(0x1000, 0x40_1000, 0x2000)]),
                    "64-bit {is_64}, BE {is_big_endian}"
                );
                let loads = loads.unwrap_or_default();
                assert_eq!(vaddr_of(&loads, 0x1234), Some(0x40_1234));
                assert_eq!(vaddr_of(&loads, 0x3000), None, "past the segment");
            }
        }
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"\x7fELF\x02\x01\x01 but cut short").unwrap();
        assert_eq!(load_segments(&junk), None);
        assert_eq!(load_segments(&dir.path().join("missing")), None);
    }

    #[test]
    fn load_segments_of_this_test_binary() {
        // A real linker's output: the segment holding this function maps its own address.
        let exe = std::env::current_exe().unwrap();
        let loads = load_segments(&exe).unwrap();
        assert!(loads.iter().any(|&(_, _, size)| size > 0), "{loads:?}");
    }
}
