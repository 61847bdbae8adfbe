//! Headless Debian Chromium for the HTML pages our commands write (`postmortem --format html`,
//! `mem --html`, the server's `/ui`): a screenshot to look at, the console messages (script
//! errors and Content-Security-Policy violations print there), and the URLs a page could fetch.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What Chromium made of a page.
pub struct Rendered {
    /// The screenshot.
    pub png: PathBuf,
    /// Console messages, CSP violations included.
    pub console: Vec<String>,
}

/// Debian's chromium, installed by `scripts/test-tools` when missing. Fails (never skips) when
/// it cannot be had.
pub fn chromium() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/test-tools");
    let out = Command::new(script)
        .arg("chromium")
        .output()
        .unwrap_or_else(|e| panic!("chromium is needed by this test: {script} failed: {e}"));
    assert!(
        out.status.success(),
        "chromium is needed by this test and could not be installed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Loads `html` (a file) headless, without network services, and screenshots it into `png`.
pub fn render(html: &Path, png: &Path, width: u32, height: u32) -> Rendered {
    let url = format!("file://{}", html.canonicalize().unwrap().display());
    render_url(&url, png, width, height, None)
}

/// Loads `url` headless, screenshots it into `png`, and, with `net_log`, records every request
/// Chromium made into that file (its NetLog JSON, read by [`requested_urls`]). (Chromium's
/// `--blink-settings=scriptEnabled=false` makes headless write no screenshot at all; a page
/// whose CSP has no script source runs none anyway.)
pub fn render_url(
    url: &str,
    png: &Path,
    width: u32,
    height: u32,
    net_log: Option<&Path>,
) -> Rendered {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-proxy-server",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--screenshot={}", png.display()))
    .arg(format!("--window-size={width},{height}"));
    if let Some(log) = net_log {
        cmd.arg(format!("--log-net-log={}", log.display()));
    }
    let out = cmd.arg(url).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed on {url}: {stderr}");
    assert!(png.is_file(), "chromium wrote no screenshot of {url}: {stderr}");
    let console = stderr.lines().filter(|l| l.contains(":CONSOLE")).map(str::to_owned).collect();
    Rendered { png: png.to_path_buf(), console }
}

/// One request in a Chromium NetLog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What was asked for.
    pub url: String,
    /// The origin of the document that asked, e.g. `http://127.0.0.1:4000`; `not an origin`
    /// for the browser's own requests (the navigation itself, update and time checks).
    pub initiator: String,
}

/// Every request Chromium started (`URL_REQUEST_START_JOB` events of its NetLog JSON).
pub fn requests(net_log: &Path) -> Vec<Request> {
    let text = std::fs::read_to_string(net_log).unwrap();
    let log: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not NetLog JSON: {e}", net_log.display()));
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_i64()
        .unwrap_or_else(|| panic!("{}: no URL_REQUEST_START_JOB type", net_log.display()));
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"].as_i64() == Some(start_job))
        .filter_map(|e| {
            Some(Request {
                url: e["params"]["url"].as_str()?.to_owned(),
                initiator: e["params"]["initiator"].as_str().unwrap_or("").to_owned(),
            })
        })
        .collect()
}

/// URLs in a page that a browser could fetch: `http:`, `https:`, protocol-relative `//host`,
/// `ftp:`, `ws:`. The SVG namespace (`xmlns="http://www.w3.org/2000/svg"`) names, it does not
/// fetch, and is left out.
pub fn fetchable_urls(page: &str) -> Vec<String> {
    let cleaned = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    let mut out = Vec::new();
    for scheme in ["http://", "https://", "ftp://", "ws://", "wss://", "=\"//", "url(", "@import"] {
        let mut rest = cleaned.as_str();
        while let Some(at) = rest.find(scheme) {
            let tail = &rest[at..];
            out.push(tail.chars().take(60).collect());
            rest = &tail[scheme.len()..];
        }
    }
    out
}
