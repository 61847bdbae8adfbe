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
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("file://{}", html.canonicalize().unwrap().display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed on {}: {stderr}", html.display());
    assert!(png.is_file(), "chromium wrote no screenshot of {}: {stderr}", html.display());
    let console = stderr.lines().filter(|l| l.contains(":CONSOLE")).map(str::to_owned).collect();
    Rendered { png: png.to_path_buf(), console }
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
