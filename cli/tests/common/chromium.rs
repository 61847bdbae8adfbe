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

/// Text that overlaps other text on `html` as Chromium lays it out at `width` x `height`: every
/// pair of text boxes (HTML and SVG alike) whose rectangles intersect by more than a pixel each
/// way, as `"first text | second text"`. The page is copied with its CSP `<meta>` removed and a
/// measuring script added (the page itself runs none), then read back with `--dump-dom`.
pub fn overlapping_text(html: &str, width: u32, height: u32) -> Vec<String> {
    const MEASURE: &str = r#"<script>
(() => {
  const boxes = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const node = walk.currentNode;
    const text = node.textContent.trim();
    if (!text || node.parentElement.closest('script,style,title')) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const r of range.getClientRects()) {
      if (r.width > 0 && r.height > 0) boxes.push({ text: text.slice(0, 40), r });
    }
  }
  const found = [];
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i].r, b = boxes[j].r;
      const x = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const y = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (x > 1 && y > 1) found.push(boxes[i].text + ' | ' + boxes[j].text);
    }
  }
  const out = document.createElement('pre');
  out.id = 'overlaps';
  out.textContent = 'OVERLAPS' + JSON.stringify({ boxes: boxes.length, found }) + 'END';
  document.body.appendChild(out);
})();
</script>"#;
    let dir = tempfile::tempdir().unwrap();
    let without_csp: String = html
        .lines()
        .filter(|l| !l.contains("http-equiv=\"Content-Security-Policy\""))
        .collect::<Vec<_>>()
        .join("\n");
    let page = dir.path().join("measure.html");
    std::fs::write(&page, without_csp.replace("</body>", &format!("{MEASURE}</body>"))).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let (Some(a), Some(b)) = (dom.find("<pre id=\"overlaps\">OVERLAPS"), dom.rfind("END</pre>"))
    else {
        panic!("the measuring script did not run: {}", String::from_utf8_lossy(&out.stderr));
    };
    let json = dom[a + "<pre id=\"overlaps\">OVERLAPS".len()..b]
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert!(v["boxes"].as_u64() > Some(10), "the script measured the page's text: {json}");
    v["found"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}
