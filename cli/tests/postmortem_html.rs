//! `postmortem --format html` in headless Chromium: the page renders (a screenshot, kept in
//! the target dir to look at), logs nothing to the console (script errors and CSP violations
//! print there), and references nothing it could fetch.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;

use common::chromium::{fetchable_urls, render};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/minidumps");

/// The checks below can fail: a page that loads an image and runs a script under our CSP is
/// caught by both.
#[test]
fn the_runner_sees_csp_violations_and_urls() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    let csp = dispatch_cli::postmortem::render::CSP;
    let text = format!(
        "<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\"></head>\
         <body><img src=\"http://127.0.0.1:9/x.png\"><script>console.log(1)</script></body></html>"
    );
    std::fs::write(&page, &text).unwrap();
    let r = render(&page, &dir.path().join("bad.png"), 400, 300);
    assert!(r.console.iter().any(|l| l.contains("Content Security Policy")), "{:?}", r.console);
    assert_eq!(fetchable_urls(&text).len(), 1, "{:?}", fetchable_urls(&text));
}

#[test]
fn the_report_of_a_real_dump_renders_with_no_console_messages_and_no_urls() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("postmortem-html");
    std::fs::create_dir_all(&out).unwrap();
    let var = tempfile::tempdir().unwrap();
    let page = out.join("macos-inlines.html");
    let stdout = common::stdout_of(
        common::dispatchctl_command(),
        &[
            "--var-dir",
            var.path().to_str().unwrap(),
            "postmortem",
            "--dump",
            &format!("{FIXTURES}/dumps/pipeline-inlines-macos-segv.dmp"),
            "--symbols",
            &format!("{FIXTURES}/symbols"),
            "--format",
            "html",
            "-o",
            page.to_str().unwrap(),
        ],
    );
    assert_eq!(stdout.trim(), page.to_str().unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&page).unwrap().permissions().mode() & 0o777, 0o600);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains(&format!(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"{}\">",
        dispatch_cli::postmortem::render::CSP
    )));
    assert!(!html.contains("<script"), "no scripts");
    assert_eq!(fetchable_urls(&html), Vec::<String>::new());
    // Names with markup characters are escaped, not interpreted.
    assert!(
        html.contains("&lt;fn() as core::ops::function::FnOnce&lt;()&gt;&gt;::call_once"),
        "{html}"
    );
    let r = render(&page, &out.join("macos-inlines.png"), 1280, 2000);
    assert_eq!(r.console, Vec::<String>::new(), "console messages");
    assert!(std::fs::metadata(&r.png).unwrap().len() > 10_000, "a screenshot with content");
}
