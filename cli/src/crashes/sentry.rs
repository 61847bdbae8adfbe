//! `dispatchctl crashes send [BOOT|--all] --sentry-dsn DSN`: uploads dumps to Sentry's
//! minidump endpoint and remembers what was sent, so a second run (or a run after a restart)
//! uploads nothing twice.
//!
//! - The DSN `{proto}://{key}@{host}{path}/{project_id}` gives the endpoint
//!   `{proto}://{host}{path}/api/{project_id}/minidump/?sentry_key={key}` ([`Dsn`]). The key is
//!   never printed: not in errors, not in `Debug`, not in the record of what was sent.
//! - The request is `multipart/form-data` ([`multipart`]): the dump in `upload_file_minidump`
//!   (with its file name), `sentry[release]` (`<service>@<version>`), and the tags
//!   `sentry[tags][build_id]`, `sentry[tags][boot]`, `sentry[tags][signature]`,
//!   `sentry[tags][signature_source]`. Nothing else is sent: dumps were scrubbed of secrets by
//!   the crash monitor, and nothing from this process's environment is added.
//! - What was sent is `<crash dir>/sent.json` (0600, written to a temporary file and renamed),
//!   keyed by the dump's file name, size and SHA-256 ([`Ledger`]). A failed upload is not
//!   recorded; each success is recorded at once, so a later failure loses nothing.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Paths, Report, ends_with};
use crate::args::SendArgs;
use crate::output::bytes;

/// Why `crashes send` (or `crashes`) failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Reading the traces database or rendering failed.
    #[error(transparent)]
    Traces(#[from] crate::Error),
    /// The DSN does not parse. The message names the part that is wrong, never the key.
    #[error("--sentry-dsn (SENTRY_DSN): {reason}")]
    DsnInvalid {
        /// What is wrong.
        reason: String,
    },
    /// The boot asked for has no dump to send.
    #[error("boot {boot}: {why}")]
    NoDump {
        /// The boot id.
        boot: String,
        /// Why there is nothing to send.
        why: String,
    },
    /// A dump could not be read.
    #[error("reading the dump {}", path.display())]
    DumpRead {
        /// The dump.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The record of sent dumps could not be read or written.
    #[error("{what} {}", path.display())]
    Ledger {
        /// `sent.json`.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The record of sent dumps is not what this build writes.
    #[error("{}: {reason} (move it aside to start a new record)", path.display())]
    LedgerInvalid {
        /// `sent.json`.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The upload did not complete (no connection, TLS, timeout, not HTTP).
    #[error("POST {url}: {reason}")]
    Upload {
        /// The endpoint, without the key.
        url: String,
        /// What failed (the key removed).
        reason: String,
    },
    /// Sentry answered with a status other than 2xx.
    #[error("POST {url}: HTTP {status}: {message}")]
    UploadStatus {
        /// The endpoint, without the key.
        url: String,
        /// The status.
        status: u16,
        /// The start of the answer.
        message: String,
    },
    /// Some uploads failed (each is reported on stderr); the others were sent and recorded.
    #[error("{failed} of {total} uploads failed; they were not recorded as sent")]
    Incomplete {
        /// Uploads that failed.
        failed: usize,
        /// Uploads tried.
        total: usize,
    },
}

impl SendError {
    /// Stable code. Never renamed or reused.
    pub fn code(&self) -> &'static str {
        match self {
            SendError::Traces(e) => e.code(),
            SendError::DsnInvalid { .. } => "sentry_dsn_invalid",
            SendError::NoDump { .. } => "crashes_no_dump",
            SendError::DumpRead { .. } => "crashes_dump_unreadable",
            SendError::Ledger { .. } => "crashes_sent_record_io",
            SendError::LedgerInvalid { .. } => "crashes_sent_record_invalid",
            SendError::Upload { .. } => "sentry_upload_failed",
            SendError::UploadStatus { .. } => "sentry_upload_refused",
            SendError::Incomplete { .. } => "sentry_send_incomplete",
        }
    }
}

/// A parsed Sentry DSN. `Debug` and every message leave the key out.
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn {
    /// `http` or `https`.
    pub scheme: String,
    /// `host` or `host:port`.
    pub host: String,
    /// The path before the project id (`""` or `/sentry`), without a trailing `/`.
    pub path: String,
    /// The project id (digits).
    pub project_id: String,
    key: String,
}

impl std::fmt::Debug for Dsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dsn({})", self.endpoint())
    }
}

impl Dsn {
    /// Parses `{proto}://{key}[:{secret}]@{host}{path}/{project_id}` (a trailing `/` is
    /// allowed; the legacy secret is ignored and never sent).
    ///
    /// # Errors
    /// [`SendError::DsnInvalid`] naming what is wrong.
    pub fn parse(dsn: &str) -> Result<Dsn, SendError> {
        let bad = |reason: &str| SendError::DsnInvalid { reason: reason.to_owned() };
        let dsn = dsn.trim();
        if dsn.is_empty() {
            return Err(bad("empty; expected https://KEY@HOST/PROJECT_ID"));
        }
        let (scheme, rest) = dsn
            .split_once("://")
            .ok_or_else(|| bad("no scheme; expected https://KEY@HOST/PROJECT_ID"))?;
        if scheme != "https" && scheme != "http" {
            return Err(bad("the scheme must be https:// or http://"));
        }
        if rest.contains(['?', '#']) {
            return Err(bad("a DSN has no query or fragment"));
        }
        let (userinfo, location) = rest
            .split_once('@')
            .ok_or_else(|| bad("no public key (expected KEY@ before the host)"))?;
        let key = userinfo.split(':').next().unwrap_or_default();
        if key.is_empty() {
            return Err(bad("the public key before '@' is empty"));
        }
        if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(bad("the public key has characters other than letters, digits, '-', '_'"));
        }
        let location = location.trim_end_matches('/');
        let (host, path) = match location.find('/') {
            Some(i) => (&location[..i], &location[i..]),
            None => (location, ""),
        };
        if host.is_empty() || host.contains('@') {
            return Err(bad("no host after '@'"));
        }
        let (path, project_id) = path
            .rsplit_once('/')
            .ok_or_else(|| bad("no project id (expected /PROJECT_ID after the host)"))?;
        if project_id.is_empty() {
            return Err(bad("the project id after the last '/' is empty"));
        }
        if !project_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SendError::DsnInvalid {
                reason: format!("the project id {project_id:?} is not a number"),
            });
        }
        Ok(Dsn {
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            path: path.to_owned(),
            project_id: project_id.to_owned(),
            key: key.to_owned(),
        })
    }

    /// The minidump endpoint without the key, for messages and the record.
    pub fn endpoint(&self) -> String {
        format!("{}://{}{}/api/{}/minidump/", self.scheme, self.host, self.path, self.project_id)
    }

    /// The URL to POST to, with the key. Never print it.
    fn url_with_key(&self) -> String {
        format!("{}?sentry_key={}", self.endpoint(), self.key)
    }

    /// `s` with the key replaced by `<key>`: for messages of libraries that may echo the URL.
    fn redact(&self, s: &str) -> String {
        s.replace(&self.key, "<key>")
    }
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// The form field name.
    pub name: &'a str,
    /// The file name, for a file part.
    pub filename: Option<&'a str>,
    /// The content.
    pub data: &'a [u8],
}

/// Quotes a name for a `Content-Disposition` parameter as browsers do: `"`, CR and LF
/// percent-encoded, so no value can end the header.
fn quoted(s: &str) -> String {
    s.replace('"', "%22").replace('\r', "%0D").replace('\n', "%0A")
}

/// The `multipart/form-data` body of `parts` and its boundary (for the `Content-Type`).
///
/// The boundary is `dispatchctl-` and the first bytes of the parts' SHA-256, lengthened if it
/// ever occurs in a part.
pub fn multipart(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p.name.as_bytes());
        ctx.update(p.data);
    }
    let digest = hex(ctx.finish().as_ref());
    let boundary = boundary_for(&digest[..24], parts);
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match p.filename {
            Some(f) => format!(
                "Content-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n",
                quoted(p.name),
                quoted(f)
            ),
            None => format!("Content-Disposition: form-data; name=\"{}\"\r\n", quoted(p.name)),
        };
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(p.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (boundary, body)
}

/// `dispatchctl-<seed>`, with `-1`, `-2`, ... appended while it occurs in a part.
fn boundary_for(seed: &str, parts: &[Part<'_>]) -> String {
    let mut boundary = format!("dispatchctl-{seed}");
    let mut n = 0;
    while parts.iter().any(|p| contains(p.data, boundary.as_bytes())) {
        n += 1;
        boundary = format!("dispatchctl-{seed}-{n}");
    }
    boundary
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One dump that was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The dump's file name.
    pub file: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// The boot it came from.
    pub boot: String,
    /// The event id Sentry answered with, when it gave one.
    pub event_id: Option<String>,
    /// When it was sent, Unix ms.
    pub sent_ts_ms: i64,
    /// The endpoint (without the key).
    pub endpoint: String,
}

/// The record of sent dumps: `<crash dir>/sent.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Format version, 1.
    pub v: u32,
    /// Every dump sent, oldest first.
    pub sent: Vec<Sent>,
}

/// File name of the record in the crash directory.
pub const LEDGER_NAME: &str = "sent.json";

impl Ledger {
    /// Reads `path`; a missing file is an empty record.
    ///
    /// # Errors
    /// [`SendError::Ledger`] when it cannot be read, [`SendError::LedgerInvalid`] when it is
    /// not a record this build wrote.
    pub fn load(path: &Path) -> Result<Ledger, SendError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Ledger { v: 1, sent: vec![] });
            }
            Err(source) => {
                return Err(SendError::Ledger { path: path.into(), what: "reading", source });
            }
        };
        let ledger: Ledger =
            serde_json::from_slice(&text).map_err(|e| SendError::LedgerInvalid {
                path: path.into(),
                reason: format!("not a record of sent dumps: {e}"),
            })?;
        if ledger.v != 1 {
            return Err(SendError::LedgerInvalid {
                path: path.into(),
                reason: format!("version {} is not the one this build writes (1)", ledger.v),
            });
        }
        Ok(ledger)
    }

    /// The entry for a dump with this name, size and hash.
    pub fn find(&self, file: &str, bytes: u64, sha256: &str) -> Option<&Sent> {
        self.sent.iter().find(|s| s.file == file && s.bytes == bytes && s.sha256 == sha256)
    }

    /// Writes the record to `path` atomically: a 0600 temporary file beside it, synced, then
    /// renamed over it, then the directory synced.
    ///
    /// # Errors
    /// [`SendError::Ledger`].
    pub fn save(&self, path: &Path) -> Result<(), SendError> {
        let io_err = |what| move |source| SendError::Ledger { path: path.into(), what, source };
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).map_err(|e| io_err("encoding")(e.into()))?;
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io_err("creating a temporary file for"))?;
        f.write_all(&text).and_then(|()| f.sync_all()).map_err(io_err("writing"))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io_err("renaming the temporary file onto"))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("syncing the directory of"))?;
        }
        Ok(())
    }
}

/// Time to connect to Sentry (TCP and TLS).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for one upload, body included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest tag value Sentry keeps, characters.
pub const SENTRY_TAG_MAX_CHARS: usize = 200;

/// Uploads one dump; returns Sentry's event id when the answer has one.
fn upload(dsn: &Dsn, parts: &[Part<'_>]) -> Result<Option<String>, SendError> {
    let url = dsn.endpoint();
    let (boundary, body) = multipart(parts);
    let failed =
        |e: ureq::Error| SendError::Upload { url: url.clone(), reason: dsn.redact(&e.to_string()) };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .timeout_connect(Some(DEFAULT_CONNECT_TIMEOUT))
        .timeout_global(Some(DEFAULT_REQUEST_TIMEOUT))
        .build()
        .into();
    let request = ureq::http::Request::builder()
        .method("POST")
        .uri(dsn.url_with_key())
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .map_err(|e| failed(ureq::Error::Http(e)))?;
    let response = agent.run(request).map_err(failed)?;
    let status = response.status().as_u16();
    let answer = response.into_body().with_config().limit(1 << 20).read_to_vec().map_err(failed)?;
    if !(200..300).contains(&status) {
        let message: String =
            dsn.redact(String::from_utf8_lossy(&answer).trim()).chars().take(300).collect();
        return Err(SendError::UploadStatus { url, status, message });
    }
    Ok(serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v.get("id")?.as_str().map(str::to_owned)))
}

/// Sends the dumps of `report` (one boot, or all with `--all`) that are on disk and not sent
/// yet, saying on `out` what was sent and what was not, and why.
///
/// # Errors
/// [`SendError::DsnInvalid`]; [`SendError::NoDump`] when the boot asked for has no dump on
/// disk; [`SendError::Ledger`]/[`SendError::LedgerInvalid`]; [`SendError::Incomplete`]
/// (after trying every dump) when an upload failed.
pub fn send(
    report: &Report,
    paths: &Paths,
    args: &SendArgs,
    out: &mut dyn Write,
) -> Result<(), SendError> {
    let dsn = Dsn::parse(&args.sentry_dsn)?;
    let output = |e: io::Error| SendError::Traces(crate::Error::Output(e));
    if let Some(boot) = &report.selected {
        let why = match ends_with(report).next() {
            None => Some("it ended cleanly or has no end record yet: no crash dump".to_owned()),
            Some((_, None, _)) => Some("its crash left no dump".to_owned()),
            Some((_, Some(d), _)) if !d.is_on_disk() => {
                Some(format!("its dump {} is no longer on disk", d.recorded))
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            return Err(SendError::NoDump { boot: boot.clone(), why });
        }
    }
    let ledger_path = paths.crash_dir.join(LEDGER_NAME);
    let mut ledger = Ledger::load(&ledger_path)?;
    let (mut sent, mut already, mut failed, mut missing) = (0, 0, 0, 0);
    for (end, dump, (signature, source)) in ends_with(report) {
        let Some(path) = dump.and_then(|d| d.path.as_ref()) else {
            missing += usize::from(dump.is_some());
            continue;
        };
        let data = std::fs::read(path)
            .map_err(|source| SendError::DumpRead { path: path.clone(), source })?;
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let sha256 = hex(ring::digest::digest(&ring::digest::SHA256, &data).as_ref());
        if let Some(s) = ledger.find(&file, data.len() as u64, &sha256) {
            already += 1;
            writeln!(
                out,
                "already sent {file} (boot {}){}: not sent again",
                short(&end.boot),
                s.event_id.as_ref().map_or(String::new(), |id| format!(" as event {id}"))
            )
            .map_err(output)?;
            continue;
        }
        let service = end.service.as_deref().unwrap_or("dispatch");
        let release = end.version.as_ref().map(|v| format!("{service}@{v}"));
        let tag: String = signature.chars().take(SENTRY_TAG_MAX_CHARS).collect();
        let mut parts =
            vec![Part { name: "upload_file_minidump", filename: Some(&file), data: &data }];
        if let Some(r) = &release {
            parts.push(Part { name: "sentry[release]", filename: None, data: r.as_bytes() });
        }
        if let Some(b) = &end.build_id {
            parts.push(Part { name: "sentry[tags][build_id]", filename: None, data: b.as_bytes() });
        }
        parts.push(Part { name: "sentry[tags][boot]", filename: None, data: end.boot.as_bytes() });
        parts.push(Part { name: "sentry[tags][signature]", filename: None, data: tag.as_bytes() });
        parts.push(Part {
            name: "sentry[tags][signature_source]",
            filename: None,
            data: source.as_bytes(),
        });
        match upload(&dsn, &parts) {
            Ok(event_id) => {
                ledger.sent.push(Sent {
                    file: file.clone(),
                    bytes: data.len() as u64,
                    sha256,
                    boot: end.boot.clone(),
                    event_id: event_id.clone(),
                    sent_ts_ms: dispatch_journal::Timestamp::now().unix_millis(),
                    endpoint: dsn.endpoint(),
                });
                ledger.save(&ledger_path)?;
                sent += 1;
                writeln!(
                    out,
                    "sent {file} ({}, boot {}) to {}{}",
                    bytes(data.len() as f64),
                    short(&end.boot),
                    dsn.endpoint(),
                    event_id.map_or(String::new(), |id| format!(": event {id}"))
                )
                .map_err(output)?;
            }
            Err(e) => {
                failed += 1;
                eprintln!("dispatchctl: error: sending {file} (boot {}): {e}", short(&end.boot));
            }
        }
    }
    if sent + failed == 0 {
        let also = if missing > 0 {
            format!(
                "; {missing} dump{} no longer on disk",
                if missing == 1 { " is" } else { "s are" }
            )
        } else {
            String::new()
        };
        writeln!(
            out,
            "nothing to send: {already} dump{} already sent{also}",
            if already == 1 { " was" } else { "s were" }
        )
        .map_err(output)?;
    }
    if failed > 0 {
        return Err(SendError::Incomplete { failed, total: sent + failed });
    }
    Ok(())
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dsn_gives_the_minidump_endpoint() {
        let d = Dsn::parse("https://abc123@o42.ingest.sentry.io/4501").unwrap();
        assert_eq!(d.endpoint(), "https://o42.ingest.sentry.io/api/4501/minidump/");
        assert_eq!(
            d.url_with_key(),
            "https://o42.ingest.sentry.io/api/4501/minidump/?sentry_key=abc123"
        );
        let d = Dsn::parse("http://k:legacysecret@127.0.0.1:9000/sentry/7/").unwrap();
        assert_eq!(d.url_with_key(), "http://127.0.0.1:9000/sentry/api/7/minidump/?sentry_key=k");
        assert!(!format!("{d:?}").contains("legacysecret") && !format!("{d:?}").contains("=k"));
    }

    #[test]
    fn a_bad_dsn_names_what_is_wrong_and_never_the_key() {
        for (dsn, want) in [
            ("", "empty"),
            ("o42.ingest.sentry.io/1", "no scheme"),
            ("ftp://k@h/1", "scheme must be https:// or http://"),
            ("https://h/1", "no public key"),
            ("https://@h/1", "public key before '@' is empty"),
            ("https://topsecret@/1", "no host"),
            ("https://topsecret@h", "no project id"),
            ("https://topsecret@h/", "no project id"),
            ("https://topsecret@h/abc", "project id \"abc\" is not a number"),
            ("https://topsecret@h/1?x=y", "no query"),
            ("https://top secret@h/1", "characters other than"),
        ] {
            let e = Dsn::parse(dsn).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(want), "{dsn:?}: {msg}");
            assert!(!msg.contains("topsecret"), "{dsn:?}: the key is in {msg}");
            assert_eq!(e.code(), "sentry_dsn_invalid");
        }
    }

    #[test]
    fn the_multipart_body_is_well_formed() {
        let dump = b"MDMP\x93\xa7\r\n--not-the-boundary\r\n\0\xff";
        let (boundary, body) = multipart(&[
            Part { name: "upload_file_minidump", filename: Some("a\"b.dmp"), data: dump },
            Part { name: "sentry[release]", filename: None, data: b"dispatch@0.1.0" },
        ]);
        let mut want = Vec::new();
        want.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"upload_file_minidump\"; filename=\"a%22b.dmp\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        want.extend_from_slice(dump);
        want.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"sentry[release]\"\r\n\r\ndispatch@0.1.0\r\n--{boundary}--\r\n").as_bytes());
        assert_eq!(body, want);
        assert!(boundary.starts_with("dispatchctl-") && boundary.len() == 36, "{boundary}");
    }

    #[test]
    fn the_boundary_never_occurs_in_a_part() {
        let plain = [Part { name: "x", filename: None, data: b"abc" }];
        assert_eq!(boundary_for("00ff", &plain), "dispatchctl-00ff");
        let hit =
            [Part { name: "x", filename: None, data: b"..dispatchctl-00ff..dispatchctl-00ff-1" }];
        assert_eq!(boundary_for("00ff", &hit), "dispatchctl-00ff-2");
    }

    #[test]
    fn the_ledger_round_trips_and_refuses_what_it_did_not_write() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(LEDGER_NAME);
        let mut l = Ledger::load(&p).unwrap();
        assert!(l.sent.is_empty());
        l.sent.push(Sent {
            file: "x.dmp".into(),
            bytes: 4,
            sha256: "ab".into(),
            boot: "b".into(),
            event_id: Some("e".into()),
            sent_ts_ms: 1,
            endpoint: "http://h/api/1/minidump/".into(),
        });
        l.save(&p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let back = Ledger::load(&p).unwrap();
        assert_eq!(back, l);
        assert!(back.find("x.dmp", 4, "ab").is_some());
        assert!(back.find("x.dmp", 5, "ab").is_none(), "another size is another dump");
        std::fs::write(&p, b"{\"v\":2,\"sent\":[]}").unwrap();
        assert_eq!(Ledger::load(&p).unwrap_err().code(), "crashes_sent_record_invalid");
        std::fs::write(&p, b"not json").unwrap();
        let e = Ledger::load(&p).unwrap_err();
        assert!(e.to_string().contains("sent.json: not a record of sent dumps"), "{e}");
    }
}
