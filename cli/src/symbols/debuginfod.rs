//! A debuginfod client: debug files by GNU build-id from a symbol server
//! (`GET <url>/buildid/<hex>/debuginfo`, then `/executable`), the fleet-scale source of
//! symbols for builds nobody ran `symbols add` on.
//!
//! Plain HTTP or HTTPS (rustls on ring with the Mozilla roots, through [`ureq`]); never
//! through a proxy from the environment; bounded by a connect timeout, a read timeout and a
//! size cap. A 404 means "not there"; any other failure is an error naming the URL. What is
//! downloaded is never trusted: the store checks its build-id before it keeps it.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use super::error::SymbolsError;

/// Environment variable with the servers to ask, space-separated (elfutils' name, shared with
/// gdb, perf and every other debuginfod client).
pub const DEBUGINFOD_URLS: &str = "DEBUGINFOD_URLS";

/// The debuginfod servers to ask, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debuginfod {
    urls: Vec<String>,
    connect_timeout: Duration,
    read_timeout: Duration,
    max_bytes: u64,
}

/// What a server has for a build-id: the two artifacts of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    /// `/debuginfo`: the DWARF (a separate debug file, or the unstripped binary).
    Debuginfo,
    /// `/executable`: the binary as it ran (symbol table, unwind tables).
    Executable,
}

impl Artifact {
    /// The URL path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Artifact::Debuginfo => "debuginfo",
            Artifact::Executable => "executable",
        }
    }
}

/// A file a server had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The URL it came from.
    pub url: String,
    /// The server's path of the file (`X-DEBUGINFOD-FILE`), when it says.
    pub server_file: Option<String>,
    /// Bytes written.
    pub bytes: u64,
}

impl Default for Debuginfod {
    fn default() -> Debuginfod {
        Debuginfod::none()
    }
}

impl Debuginfod {
    /// Time to establish a connection (TCP and TLS).
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Longest silence while waiting for the answer or the next body bytes (a server that
    /// extracts from a large package archive takes a while before its first byte).
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(120);
    /// Largest file accepted (2 GiB); a larger one is an error, never a cut file.
    pub const DEFAULT_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;

    /// No server: lookups use the store alone.
    pub fn none() -> Debuginfod {
        Debuginfod {
            urls: Vec::new(),
            connect_timeout: Debuginfod::DEFAULT_CONNECT_TIMEOUT,
            read_timeout: Debuginfod::DEFAULT_READ_TIMEOUT,
            max_bytes: Debuginfod::DEFAULT_MAX_BYTES,
        }
    }

    /// The servers in `urls`, asked in order; each item may itself hold several URLs
    /// separated by whitespace (the form of `DEBUGINFOD_URLS`). Empty items are skipped.
    ///
    /// # Errors
    /// [`SymbolsError::DebuginfodUrl`] for a URL that is not `http://` or `https://`, has no
    /// host, or carries credentials.
    pub fn from_urls<S: AsRef<str>>(
        urls: impl IntoIterator<Item = S>,
    ) -> Result<Debuginfod, SymbolsError> {
        let mut out = Debuginfod::none();
        for item in urls {
            for url in item.as_ref().split_ascii_whitespace() {
                out.urls.push(check_url(url)?);
            }
        }
        Ok(out)
    }

    /// The servers of `DEBUGINFOD_URLS` (none when it is unset or empty).
    ///
    /// # Errors
    /// As [`Debuginfod::from_urls`], for a bad URL in the variable.
    pub fn from_env() -> Result<Debuginfod, SymbolsError> {
        Debuginfod::from_urls(std::env::var(DEBUGINFOD_URLS).ok())
    }

    /// With another connect timeout.
    pub fn connect_timeout(self, timeout: Duration) -> Debuginfod {
        Debuginfod { connect_timeout: timeout, ..self }
    }

    /// With another read timeout.
    pub fn read_timeout(self, timeout: Duration) -> Debuginfod {
        Debuginfod { read_timeout: timeout, ..self }
    }

    /// With another size cap, bytes.
    pub fn max_bytes(self, bytes: u64) -> Debuginfod {
        Debuginfod { max_bytes: bytes, ..self }
    }

    /// Whether any server is configured.
    pub fn is_configured(&self) -> bool {
        !self.urls.is_empty()
    }

    /// The servers, in the order they are asked (no trailing `/`).
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Downloads `artifact` of `build_id` (lowercase hex) from `base` into `dest` (created
    /// 0600 by the caller's `open`); `Ok(None)` on 404.
    ///
    /// # Errors
    /// [`SymbolsError::DebuginfodRequest`] (no connection, TLS, timeout, over the size cap),
    /// [`SymbolsError::DebuginfodStatus`] (neither 200 nor 404), [`SymbolsError::Io`]
    /// (writing `dest`).
    pub fn download(
        &self,
        base: &str,
        build_id: &str,
        artifact: Artifact,
        dest: &mut std::fs::File,
        dest_path: &Path,
    ) -> Result<Option<Downloaded>, SymbolsError> {
        let url = format!("{base}/buildid/{build_id}/{}", artifact.as_str());
        let failed = |source: ureq::Error| SymbolsError::DebuginfodRequest {
            url: url.clone(),
            source: Box::new(source),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A proxy from the environment would see which builds we run; none is used.
            .proxy(None)
            .max_redirects(5)
            .timeout_connect(Some(self.connect_timeout))
            .timeout_recv_response(Some(self.read_timeout))
            .timeout_per_read(Some(self.read_timeout))
            .user_agent(concat!("dispatchctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let response = agent.get(&url).call().map_err(failed)?;
        match response.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            status => return Err(SymbolsError::DebuginfodStatus { url, status }),
        }
        let server_file = response
            .headers()
            .get("x-debuginfod-file")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = response.into_body().into_with_config().limit(self.max_bytes).reader();
        let mut buf = vec![0u8; 256 * 1024];
        let mut bytes = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(failed(ureq::Error::from(e))),
            };
            dest.write_all(&buf[..n]).map_err(SymbolsError::io(dest_path, "writing"))?;
            bytes += n as u64;
        }
        Ok(Some(Downloaded { url, server_file, bytes }))
    }
}

/// `url` without a trailing `/`, when it is a URL we may ask.
fn check_url(url: &str) -> Result<String, SymbolsError> {
    let bad = |reason| SymbolsError::DebuginfodUrl { url: redact(url), reason };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("expected an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if url.contains(['?', '#']) {
        return Err(bad("a query or fragment cannot be part of a server URL"));
    }
    url.parse::<ureq::http::Uri>().map_err(|_| bad("not a valid URL"))?;
    Ok(url.trim_end_matches('/').to_owned())
}

/// `url` with any `user:password@` replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}<credentials>{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_checked_and_trimmed() {
        let d = Debuginfod::from_urls(["http://127.0.0.1:8002/ https://debuginfod.example/x", ""])
            .unwrap();
        assert_eq!(d.urls(), ["http://127.0.0.1:8002", "https://debuginfod.example/x"]);
        assert!(d.is_configured());
        assert!(!Debuginfod::from_urls(["  "]).unwrap().is_configured());
        assert!(!Debuginfod::none().is_configured());
        for (bad, why) in [
            ("ftp://x", "expected an http"),
            ("127.0.0.1:8002", "expected an http"),
            ("http://", "no host"),
            ("http://u:secret@h/", "credentials"),
            ("http://h/?q=1", "query"),
        ] {
            let e = Debuginfod::from_urls([bad]).unwrap_err();
            assert_eq!(e.code(), "debuginfod_url_invalid");
            assert!(e.to_string().contains(why), "{bad}: {e}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
    }

    #[test]
    fn a_closed_port_is_an_error_naming_the_url() {
        // Bind then drop: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = Debuginfod::from_urls([format!("http://127.0.0.1:{port}")]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = std::fs::File::create(&path).unwrap();
        let e = d.download(&d.urls()[0], "abcd", Artifact::Debuginfo, &mut f, &path).unwrap_err();
        assert_eq!(e.code(), "debuginfod_request_failed");
        assert_eq!(
            e.to_string(),
            format!("GET http://127.0.0.1:{port}/buildid/abcd/debuginfo: request failed")
        );
    }
}
