//! `dispatchctl mem --html` is a report a person reads: the verdict once, why, what the window
//! could have missed, the chart, evidence in plain words and units, the ranked conversations
//! and the next step; no JSON field names, nulls, NaNs or float noise. Rendered in headless
//! Debian Chromium: a screenshot (kept in the target dir, `mem-html/*.png`), no console
//! message, no request the page makes, no text drawn over other text.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::synth;

use std::path::Path;

use common::chromium::{overlapping_text, render_url, requests};

/// Text a reader sees: the page without tags (the SVG's labels included).
fn visible_text(html: &str) -> String {
    let body = &html[html.find("<body>").unwrap()..];
    let mut out = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// A number with four or more decimals: float noise.
fn float_noise(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut found = Vec::new();
    for i in 0..b.len() {
        if b[i] == b'.' && i > 0 && b[i - 1].is_ascii_digit() {
            let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits >= 4 {
                found.push(text[i.saturating_sub(8)..(i + 1 + digits).min(text.len())].to_owned());
            }
        }
    }
    found
}

/// A byte figure below zero (`-758.7 MiB`): a gap that has no meaning, shown anyway.
fn negative_bytes(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices('-') {
        let rest = &text[i + 1..];
        let num = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').count();
        let after = &rest[num..];
        if num > 0
            && ["B", "KiB", "MiB", "GiB", "TiB"].iter().any(|u| after.starts_with(&format!(" {u}")))
        {
            found.push(text[i..(i + 1 + num + 4).min(text.len())].to_owned());
        }
    }
    found
}

fn check_page(name: &str, scenario: &str, expected: &str, out_dir: &Path) -> String {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("journal");
    synth(&j, scenario, 1);
    let page = out_dir.join(format!("{name}.html"));
    common::stdout_of(
        common::dispatchctl_command(),
        &["--journal", j.to_str().unwrap(), "mem", "--html", page.to_str().unwrap()],
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&page).unwrap().permissions().mode() & 0o777, 0o600);
    let html = std::fs::read_to_string(&page).unwrap();
    let text = visible_text(&html);
    // The verdict once: one verdict element, and the chart does not repeat it (the last-6-hours
    // line, when there is one, is another window's verdict).
    assert_eq!(html.matches("<p class=\"verdict ").count(), 1, "{name}: one verdict");
    assert!(html.contains(&format!("\">{expected}</p>")), "{name}: the verdict is {expected}");
    let svg = &html[html.find("<svg").unwrap()..html.find("</svg>").unwrap()];
    assert!(!svg.contains(expected), "{name}: the chart repeats the verdict");
    assert!(text.contains("can hide in this window"), "{name}: the detection limit: {text}");
    assert!(text.contains("Next:"), "{name}: the next step");
    for raw in ["null", "NaN", "inf B", "_bytes", "ts_ms", "bytes_per_", "{", "}"] {
        assert!(!text.contains(raw), "{name}: {raw:?} on the page: {text}");
    }
    assert_eq!(float_noise(&text), Vec::<String>::new(), "{name}: float noise");
    assert_eq!(negative_bytes(&text), Vec::<String>::new(), "{name}: negative byte figures");
    assert!(!html.to_lowercase().contains("<script"), "{name}: no script");

    let net_log = out_dir.join(format!("{name}.netlog.json"));
    let url = format!("file://{}", page.display());
    let r = render_url(&url, &out_dir.join(format!("{name}.png")), 1280, 2400, Some(&net_log));
    assert_eq!(r.console, Vec::<String>::new(), "{name}: console messages");
    assert!(std::fs::metadata(&r.png).unwrap().len() > 20_000, "{name}: a screenshot");
    let by_page: Vec<_> =
        requests(&net_log).into_iter().filter(|r| r.initiator != "not an origin").collect();
    assert!(by_page.is_empty(), "{name}: the page made requests: {by_page:?}");
    assert_eq!(overlapping_text(&html, 1280, 2400), Vec::<String>::new(), "{name}: overlaps");
    assert_eq!(overlapping_text(&html, 700, 2400), Vec::<String>::new(), "{name}: narrow");
    text
}

#[test]
fn the_bursty_incident_reads_as_working_set_with_its_evidence() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mem-html");
    std::fs::create_dir_all(&out).unwrap();
    let text = check_page("bursty", "bursty", "WORKING-SET", &out);
    assert!(text.contains("per turn in flight") && text.contains("do not quote it"), "{text}");
}

#[test]
fn a_leak_names_its_conversation_with_what_the_columns_mean() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mem-html");
    std::fs::create_dir_all(&out).unwrap();
    let text = check_page("leak", "leak", "LEAK", &out);
    assert!(text.contains("Conversations holding memory"), "{text}");
    assert!(
        text.contains("share of the floor's rise") && text.contains("a lead, not proof"),
        "{text}"
    );
    assert!(text.contains("floor growth") && text.contains("confidence"), "{text}");
}

/// The overlap check can fail: two absolutely placed texts on one spot are found.
#[test]
fn the_overlap_check_sees_text_drawn_over_text() {
    let page = "<!DOCTYPE html><html><body><p>filler text for the count</p><p>a</p><p>b</p>\
                <p>c</p><p>d</p><p>e</p><p>f</p><p>g</p><p>h</p><p>i</p><p>j</p>\
                <svg width=\"300\" height=\"60\"><text x=\"10\" y=\"30\">WORKING-SET</text>\
                <text x=\"20\" y=\"32\">hidden behind</text></svg></body></html>";
    let found = overlapping_text(page, 800, 600);
    assert_eq!(found, vec!["WORKING-SET | hidden behind".to_owned()]);
}
