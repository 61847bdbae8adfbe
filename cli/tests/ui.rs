//! The server's `/ui` page on a real install, in headless Debian Chromium (its CSP allows no
//! script, so nothing on it can need JavaScript):
//! a debug server whose first boot segfaulted (a real minidump) and whose second boot serves
//! the page from its own traces database. The page shows the pressure level, the verdict
//! `dispatchctl mem` gives for the running boot, the crashed boot with a link to the
//! post-mortem dispatchctl wrote, and loads nothing from anywhere but the server. Screenshots
//! are kept in the target dir (`ui/*.png`) to look at.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::chromium::{fetchable_urls, overlapping_text, render_url, requests};
use common::server::{ADMIN_TOKEN, Server, journal, of_kind, wait_for};
use serde_json::Value;

/// GET `url`: status, `Content-Security-Policy`, body.
fn get(url: &str) -> (u16, String, String) {
    let resp = Server::agent().get(url).call().unwrap();
    let status = resp.status().as_u16();
    let csp = resp
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, csp, resp.into_body().read_to_string().unwrap())
}

#[test]
fn the_ui_page_shows_pressure_verdict_and_crashes_and_links_the_postmortem() {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&out).unwrap();
    let root = tempfile::tempdir().unwrap();
    let var = root.path().join("var");
    std::fs::create_dir_all(&var).unwrap();
    let args = ["--admin-token", ADMIN_TOKEN, "--memory-soft-bytes", "8589934592"];

    // Boot 1 segfaults with a turn in flight; boot 2 serves the page.
    let (second, crashed) = common::server::crashed_and_restarted(&var, &args);
    let running = wait_for("boot 2's process.start", || {
        let r = journal(&var);
        of_kind(&r, "process.start")
            .into_iter()
            .find(|p| p["pid"] == i64::from(second.worker))
            .and_then(|p| p["boot"].as_str().map(str::to_owned))
    });

    // Before dispatchctl writes the post-mortem, the link says how to.
    let link = format!("/ui/postmortem/{crashed}");
    let page = wait_for("/ui with boot 2 collected and boot 1's crash", || {
        let (status, _, body) = get(&format!("{}/ui", second.base));
        (status == 200 && body.contains("samples of") && body.contains(&link)).then_some(body)
    });
    assert!(page.contains("not written yet: how to"), "{page}");
    let (status, _, how) = get(&format!("{}{link}", second.base));
    assert_eq!(status, 404, "{how}");
    let expected_out = var.join("postmortems").join(format!("{crashed}.html"));
    assert!(
        how.contains(&format!(
            "postmortem {crashed} --format html --out {}",
            expected_out.display()
        )),
        "the page gives the command that writes the post-mortem where /ui looks: {how}"
    );

    // dispatchctl writes it, as the page says (making the directory, 0700).
    let written = common::stdout_of(
        common::dispatchctl_command(),
        &[
            "--var-dir",
            var.to_str().unwrap(),
            "postmortem",
            &crashed,
            "--format",
            "html",
            "--out",
            expected_out.to_str().unwrap(),
        ],
    );
    assert_eq!(written.trim(), expected_out.to_str().unwrap());
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&var.join("postmortems")), mode(&expected_out)), (0o700, 0o600));

    let (status, csp, page) = get(&format!("{}/ui", second.base));
    assert_eq!(status, 200);
    // The page's own stylesheet by its digest and nothing else; a wrong digest would block the
    // style, which Chromium reports on the console (checked below).
    assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
    assert!(!csp.contains("script") && !csp.contains("unsafe"), "{csp}");
    assert!(!page.to_lowercase().contains("<script"), "no script at all");
    assert_eq!(fetchable_urls(&page), Vec::<String>::new(), "nothing to fetch");
    // Pressure: the soft limit given, level normal.
    assert!(page.contains("NORMAL") && page.contains("soft limit of 8.0 GiB"), "{page}");
    // The crashed boot, how it ended, and its post-mortem link.
    assert!(page.contains(&crashed[..8]) && page.contains("killed by SIGSEGV"), "{page}");
    assert!(page.contains(&format!("<a href=\"{link}\">read the post-mortem</a>")), "{page}");
    assert!(page.contains("running: this process") && page.contains(&running[..8]), "{page}");
    // The verdict is the one dispatchctl mem gives for the running boot.
    let mem: Value = serde_json::from_str(&common::stdout_of(
        common::dispatchctl_command(),
        &["--var-dir", var.to_str().unwrap(), "mem", "--boot", &running, "--json"],
    ))
    .unwrap();
    let verdict = mem["verdict"].as_str().unwrap();
    assert!(page.contains(&format!("\">{verdict}</p>")), "verdict {verdict} on the page: {page}");
    assert!(page.contains("<svg"), "the memory chart is inline");
    assert_eq!(overlapping_text(&page, 1280, 2200), Vec::<String>::new(), "text over text");
    assert_eq!(overlapping_text(&page, 700, 2200), Vec::<String>::new(), "narrow: text over text");

    let (status, pm_csp, pm) = get(&format!("{}{link}", second.base));
    assert_eq!(status, 200, "{pm}");
    assert_eq!(pm, std::fs::read_to_string(&expected_out).unwrap(), "the file, as written");
    assert!(pm_csp.starts_with(dispatch_cli::postmortem::render::CSP), "{pm_csp}");
    for bad in ["not-a-boot", "..%2F..%2Fapi-token", "0123456789abcdef.html"] {
        let (status, _, body) = get(&format!("{}/ui/postmortem/{bad}", second.base));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("is not a boot id"), "{body}");
    }

    // Chromium: a screenshot, no console message, no request elsewhere.
    for (name, path, height) in [("ui", "/ui".to_owned(), 2200), ("postmortem", link.clone(), 2400)]
    {
        let net_log = out.join(format!("{name}.netlog.json"));
        let url = format!("{}{path}", second.base);
        let r = render_url(&url, &out.join(format!("{name}.png")), 1280, height, Some(&net_log));
        assert_eq!(r.console, Vec::<String>::new(), "{name}: console messages");
        assert!(std::fs::metadata(&r.png).unwrap().len() > 20_000, "{name}: a screenshot");
        let requests = requests(&net_log);
        assert!(
            requests.iter().any(|r| r.url == url),
            "{name}: the net log has the page itself: {requests:?}"
        );
        // What the page asked for (the browser's own update and time checks are not the
        // page's): all of it from the server.
        let by_page: Vec<&common::chromium::Request> =
            requests.iter().filter(|r| r.initiator == second.base).collect();
        let elsewhere: Vec<_> =
            by_page.iter().filter(|r| !r.url.starts_with(&format!("{}/", second.base))).collect();
        assert!(elsewhere.is_empty(), "{name}: the page fetched outside the server: {elsewhere:?}");
    }
}

/// The net-log check can fail: a page that loads an image from another host shows up as a
/// request initiated by the page.
#[test]
fn the_net_log_shows_what_a_page_fetches() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("fetches.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><img src=\"http://127.0.0.1:9/x.png\"></body></html>",
    )
    .unwrap();
    let net_log = dir.path().join("net.json");
    let url = format!("file://{}", page.display());
    render_url(&url, &dir.path().join("fetches.png"), 400, 300, Some(&net_log));
    let requests = requests(&net_log);
    let image = requests.iter().find(|r| r.url == "http://127.0.0.1:9/x.png");
    let image = image.unwrap_or_else(|| panic!("the image request is in the log: {requests:?}"));
    assert_ne!(image.initiator, "not an origin", "initiated by the page, not the browser");
}
