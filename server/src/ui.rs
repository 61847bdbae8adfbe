//! `/ui`: one page for the on-call engineer, served by the server from its own traces database.
//!
//! What it shows, top to bottom: the memory-pressure level against its limits; the `mem`
//! verdict of this boot (the same [`dispatch_verdict::report`] code `dispatchctl mem` runs, so
//! the two cannot disagree) with its one-line reason, what it could have missed and the next
//! step; the conversations holding memory; memory against turns in flight over the last hour
//! and the last day; and the recent boots, how each ended, crash loops, and a link to each
//! abnormal end's post-mortem.
//!
//! The page is plain HTML with the charts as inline SVG: no script, no external asset, no
//! form. The `Content-Security-Policy` header allows nothing but the page's own stylesheet (by
//! its SHA-256), so even an injection that escaped the escaping could neither run nor fetch.
//! It refreshes itself every 30 s with a `<meta>` refresh, which needs no JavaScript either.
//!
//! Post-mortems are written by `dispatchctl postmortem --format html --out
//! <var dir>/postmortems/<boot>.html` (the minidump reader lives in dispatchctl, not in the
//! server); `/ui/postmortem/{boot}` serves that file, or says how to write it.

use std::path::PathBuf;
use std::sync::OnceLock;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dispatch_collector::query;
use dispatch_journal::paths::VarDir;
use dispatch_verdict::chart::{escape_xml as esc, truncate};
use dispatch_verdict::history::{self, CrashLoop, End};
use dispatch_verdict::output::{bytes, duration_ms, time};
use dispatch_verdict::page::{self, verdict_class};
use dispatch_verdict::report::{self, Report, Since, short};

use crate::pressure::Level;
use crate::state::AppState;

/// The page refreshes itself this often, seconds.
pub const REFRESH_SECONDS: u32 = 30;
/// Boots listed, newest first.
pub const MAX_BOOTS: usize = 20;
/// Conversations listed under the verdict.
pub const MAX_CONVERSATIONS: usize = 5;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:1.5rem auto;\
max-width:1060px;padding:0 1rem;color:#1a1a1a;background:#fff}\
h1{font-size:1.35rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}\
.sub{color:#555;margin:0 0 1rem}\
.band{display:flex;gap:1rem;flex-wrap:wrap}\
.card{border:1px solid #ddd;border-radius:6px;padding:.7rem 1rem;flex:1 1 300px}\
.big{font-size:2.2rem;font-weight:800;letter-spacing:.02em;margin:.1rem 0 .4rem}\
.bad{color:#b00020}.warn{color:#b35c00}.good{color:#1b7f3b}.none{color:#555}\
.reason{font-size:1.05rem;margin:.2rem 0 .5rem}.muted{color:#666;font-size:.9rem}\
figure{margin:0 0 1rem}svg{max-width:100%;height:auto}\
figcaption{color:#555;font-size:.85rem}\
table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{border-bottom:1px solid #e3e3e3;padding:.3rem .5rem;text-align:left;vertical-align:top}\
th{background:#f5f5f5}th.num,td.num{text-align:right;font-variant-numeric:tabular-nums}\
td.explain{color:#555}dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;\
font-size:.9rem}dt{font-weight:600}dd{margin:0;color:#444}\
code{font-family:ui-monospace,monospace;font-size:.85rem;overflow-wrap:anywhere}\
.alert{border-left:4px solid #b00020;background:#fff4f4;padding:.5rem .8rem;margin:.5rem 0}\
footer{margin-top:2rem;color:#777;font-size:.8rem}";

/// The `Content-Security-Policy` of `/ui`: the page's one `<style>` element by its digest, and
/// nothing else (no script, image, font, frame, form target or connection).
pub fn csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let digest = ring::digest::digest(&ring::digest::SHA256, STYLE.as_bytes());
        format!(
            "default-src 'none'; style-src 'sha256-{}'; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
            base64(digest.as_ref())
        )
    })
}

/// The `Content-Security-Policy` of a served post-mortem page: the policy dispatchctl writes
/// into the page itself (its inline styles and `data:` images, nothing that loads or runs),
/// plus what only a header can say.
pub const POSTMORTEM_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Standard base64 with padding (RFC 4648 §4), for the CSP hash source.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One `/ui` render at a time: a page reads the whole boot, and a reload storm from several
/// tabs should queue, not multiply the work.
static RENDERING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// What the server knows that the database does not: read on the request's task.
struct Live {
    boot: String,
    version: &'static str,
    uptime_ms: i64,
    level: Level,
    figure: u64,
    soft: Option<u64>,
    hard: Option<u64>,
    limits_from_cgroup: bool,
    refused: u64,
    turns_in_flight: usize,
    var_dir: PathBuf,
    traces_db: PathBuf,
    journal_dir: PathBuf,
}

/// `GET /ui`.
pub async fn page(State(state): State<AppState>) -> Response {
    let limits = state.pressure.limits();
    let live = Live {
        boot: state.journal.boot().to_owned(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_ms: i64::try_from(state.started.elapsed().as_millis()).unwrap_or(i64::MAX),
        level: state.pressure.level(),
        figure: state.pressure.figure(),
        soft: limits.soft,
        hard: limits.hard,
        limits_from_cgroup: limits.cgroup,
        refused: state.pressure.refused(),
        turns_in_flight: state.activity.running(),
        var_dir: state.settings.var_dir.clone(),
        traces_db: state.settings.traces_db.clone(),
        journal_dir: state.settings.journal_dir.clone(),
    };
    let Ok(_permit) = RENDERING.acquire().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the page renderer is shut down").into_response();
    };
    let now_ms = dispatch_journal::Timestamp::now().unix_millis();
    let body = tokio::task::spawn_blocking(move || render(&live, &read_view(&live), now_ms))
        .await
        .unwrap_or_else(|_| error_page("rendering the page failed; the server log has the panic"));
    html_response(StatusCode::OK, csp(), body)
}

/// `GET /ui/postmortem/{boot}`: the page dispatchctl wrote for that boot, or how to write it.
pub async fn postmortem(State(state): State<AppState>, UrlPath(boot): UrlPath<String>) -> Response {
    if !is_boot_id(&boot) {
        let body = error_page(&format!(
            "{} is not a boot id (expected the hexadecimal id with dashes that /ui links to)",
            esc(&truncate(&boot, 80))
        ));
        return html_response(StatusCode::BAD_REQUEST, csp(), body);
    }
    let var = VarDir::new(&state.settings.var_dir);
    let path = var.postmortem_page(&boot);
    let read = tokio::task::spawn_blocking({
        let path = path.clone();
        move || std::fs::read_to_string(&path)
    })
    .await;
    match read {
        Ok(Ok(page)) => html_response(StatusCode::OK, POSTMORTEM_CSP, page),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            html_response(StatusCode::NOT_FOUND, csp(), no_postmortem_page(&boot, &var))
        }
        Ok(Err(e)) => html_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            csp(),
            error_page(&format!("cannot read {}: {e}", esc(&path.display().to_string()))),
        ),
        Err(_) => html_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            csp(),
            error_page("reading the post-mortem failed; the server log has the panic"),
        ),
    }
}

fn html_response(status: StatusCode, csp: &str, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Boot ids as the journal writes them: UUID text (hex digits and dashes), 8 to 64 long.
fn is_boot_id(s: &str) -> bool {
    (8..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// What the traces database says, read in one go.
#[derive(Default)]
struct View {
    /// Why the database could not be read, for the page.
    db_problem: Option<String>,
    /// This boot, once the collector has it.
    boot: Option<query::Boot>,
    /// The whole boot's verdict (what `dispatchctl mem` prints by default).
    whole: Option<Report>,
    /// The last hour and the last day, when the boot is longer than the shorter window.
    hour: Option<Report>,
    day: Option<Report>,
    /// Boots, newest first, with how each ended.
    boots: Vec<BootRow>,
    /// Crash loops across the boots.
    loops: Vec<CrashLoop>,
    /// Boots in the database.
    boots_total: usize,
    /// Journal bytes not yet in the database.
    lag_bytes: Option<u64>,
}

struct BootRow {
    boot: query::Boot,
    end: Option<End>,
    running: bool,
    postmortem_written: bool,
}

fn read_view(live: &Live) -> View {
    let mut view = View::default();
    if !live.traces_db.exists() {
        view.db_problem = Some(format!(
            "the traces database {} does not exist yet: the collector writes it on its first \
             drain",
            live.traces_db.display()
        ));
        return view;
    }
    let conn = match dispatch_collector::schema::open_read_only(&live.traces_db) {
        Ok(c) => c,
        Err(e) => {
            view.db_problem = Some(format!("cannot open {}: {e}", live.traces_db.display()));
            return view;
        }
    };
    view.lag_bytes = dispatch_collector::status::lag_bytes(&conn, &live.journal_dir).ok().flatten();
    let rows = match history::load(&conn) {
        Ok(r) => r,
        Err(e) => {
            view.db_problem = Some(format!("reading {}: {e}", live.traces_db.display()));
            return view;
        }
    };
    let h = history::assemble(&rows);
    view.loops = history::crash_loops(&h.ends, &rows.boots, &h.clean_ends_ms);
    view.boots_total = rows.boots.len();
    let var = VarDir::new(&live.var_dir);
    let mut boots = rows.boots.clone();
    boots.sort_by_key(|b| std::cmp::Reverse((b.first_ts_ms, b.boot_no)));
    view.boots = boots
        .into_iter()
        .take(MAX_BOOTS)
        .map(|b| {
            let end = h.ends.iter().find(|e| e.boot == b.boot).cloned();
            let postmortem_written = end.is_some() && var.postmortem_page(&b.boot).is_file();
            BootRow { running: b.boot == live.boot, end, postmortem_written, boot: b }
        })
        .collect();
    view.boot = rows.boots.iter().find(|b| b.boot == live.boot).cloned();
    if let Some(b) = &view.boot {
        let analyse = |since| match report::analyze_boot(&conn, b, since) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("dispatch-server: /ui: analysing boot {}: {e}", b.boot);
                None
            }
        };
        let whole = analyse(Since::All);
        let span = whole.as_ref().map_or(0, |r| r.analysis.to_ms - r.analysis.from_ms);
        if span > HOUR_MS {
            view.hour = analyse(Since::Millis(HOUR_MS));
        }
        if span > DAY_MS {
            view.day = analyse(Since::Millis(DAY_MS));
        }
        view.whole = whole;
    }
    view
}

fn head(out: &mut String, title: &str, refresh: bool) {
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    if refresh {
        out.push_str(&format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\n"));
    }
    out.push_str(&format!(
        "<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(title)
    ));
}

fn error_page(message_html: &str) -> String {
    let mut out = String::new();
    head(&mut out, "Dispatch", false);
    out.push_str(&format!(
        "<h1>Dispatch</h1>\n<p class=\"alert\">{message_html}</p>\n<p><a href=\"/ui\">Back to \
         the overview</a></p>\n</body>\n</html>\n"
    ));
    out
}

fn no_postmortem_page(boot: &str, var: &VarDir) -> String {
    let mut out = String::new();
    head(&mut out, &format!("Dispatch: no post-mortem for boot {}", short(boot)), false);
    let page = var.postmortem_page(boot);
    out.push_str(&format!(
        "<h1>No post-mortem for boot <code>{b}</code> yet</h1>\n\
         <p>Post-mortems are written by dispatchctl, which reads the minidump and the journal. \
         Write this one, then reload:</p>\n\
         <pre><code>dispatchctl --var-dir {var} postmortem {b} --format html --out {page}</code></pre>\n\
         <p class=\"muted\">The Markdown form for a ticket: <code>dispatchctl --var-dir {var} postmortem {b}</code>. \
         Runbook: <code>runbooks/crash.md</code>.</p>\n\
         <p><a href=\"/ui\">Back to the overview</a></p>\n</body>\n</html>\n",
        b = esc(boot),
        var = esc(&var.root().display().to_string()),
        page = esc(&page.display().to_string()),
    ));
    out
}

fn render(live: &Live, view: &View, now_ms: i64) -> String {
    let mut out = String::with_capacity(96 * 1024);
    head(&mut out, &format!("Dispatch boot {}", short(&live.boot)), true);
    out.push_str(&format!(
        "<h1>Dispatch boot <code>{}</code></h1>\n<p class=\"sub\">version {}, up {}, {}. Times \
         are UTC; the page reloads every {REFRESH_SECONDS} s.</p>\n",
        esc(short(&live.boot)),
        esc(live.version),
        duration_ms(live.uptime_ms),
        dispatch_verdict::output::turns(live.turns_in_flight as f64),
    ));
    out.push_str("<div class=\"band\">\n");
    render_pressure(&mut out, live);
    render_verdict(&mut out, live, view);
    out.push_str("</div>\n");
    render_charts(&mut out, view);
    if let Some(r) = &view.whole {
        render_evidence(&mut out, r);
    }
    render_boots(&mut out, live, view);
    out.push_str(&format!(
        "<footer>Rendered {} by dispatch-server from {}{}. The verdict is the one \
         <code>dispatchctl mem</code> prints for this boot.</footer>\n</body>\n</html>\n",
        time(now_ms),
        esc(&live.traces_db.display().to_string()),
        view.lag_bytes.map_or(String::new(), |l| format!(
            "; {} of journal not yet collected",
            bytes(l as f64)
        )),
    ));
    out
}

fn render_pressure(out: &mut String, live: &Live) {
    let (class, what) = match live.level {
        Level::Normal => ("good", "normal: turns are admitted"),
        Level::High => ("warn", "shedding: new turns get 503, turns in flight finish"),
        Level::Critical => ("bad", "critical: turns are sealed and the server recycles"),
    };
    out.push_str("<section class=\"card\" id=\"pressure\">\n<h2>Memory pressure</h2>\n");
    out.push_str(&format!(
        "<p class=\"big {class}\">{}</p>\n<p class=\"reason\">{what}</p>\n",
        esc(&live.level.as_str().to_uppercase())
    ));
    let limit = |v: Option<u64>, what: &str| {
        v.map_or(format!("no {what} limit"), |b| format!("a {what} limit of {}", bytes(b as f64)))
    };
    if live.soft.is_none() && live.hard.is_none() {
        out.push_str(&format!(
            "<p class=\"muted\">RSS {}. No limits: set the unit's MemoryHigh/MemoryMax (cgroup \
             v2) or DISPATCH_MEMORY_SOFT_BYTES / DISPATCH_MEMORY_HARD_BYTES \
             (runbooks/pressure.md).</p>\n",
            bytes(live.figure as f64)
        ));
    } else {
        out.push_str(&format!(
            "<p class=\"muted\">RSS {} against {} and {} (from {}); {} turn{} refused this \
             boot.</p>\n",
            bytes(live.figure as f64),
            limit(live.soft, "soft"),
            limit(live.hard, "hard"),
            if live.limits_from_cgroup { "the cgroup" } else { "flags" },
            live.refused,
            if live.refused == 1 { "" } else { "s" },
        ));
    }
    out.push_str("</section>\n");
}

fn render_verdict(out: &mut String, live: &Live, view: &View) {
    out.push_str("<section class=\"card\" id=\"verdict\">\n<h2>Memory verdict</h2>\n");
    match (&view.db_problem, &view.whole) {
        (Some(problem), _) => {
            out.push_str(&format!(
                "<p class=\"big none\">UNKNOWN</p>\n<p class=\"reason\">{}</p>\n",
                esc(problem)
            ));
        }
        (None, None) => {
            out.push_str(&format!(
                "<p class=\"big none\">INSUFFICIENT-DATA</p>\n<p class=\"reason\">boot {} is \
                 not in the traces database yet: the collector has not drained its first \
                 records.</p>\n",
                esc(short(&live.boot))
            ));
        }
        (None, Some(r)) => {
            let a = &r.analysis;
            out.push_str(&format!(
                "<p class=\"big {}\">{}</p>\n<p class=\"reason\">{}</p>\n",
                verdict_class(a.verdict),
                esc(a.verdict.name()),
                esc(&a.summary)
            ));
            out.push_str(&format!("<p class=\"muted\">{}</p>\n", esc(&page::detection_limit(a))));
            if !a.next_step.is_empty() {
                out.push_str(&format!("<p>Next: {}</p>\n", esc(&a.next_step)));
            }
            out.push_str(&format!(
                "<p class=\"muted\">{} samples of {} from {} to {} ({}, {}).</p>\n",
                a.samples,
                esc(a.metric),
                time(a.from_ms),
                time(a.to_ms),
                duration_ms(a.to_ms - a.from_ms),
                if r.source == "hourly" { "hourly rollups" } else { "raw samples" },
            ));
            for n in &a.notes {
                out.push_str(&format!("<p class=\"muted\">Note: {}</p>\n", esc(n)));
            }
        }
    }
    out.push_str("</section>\n");
}

fn render_evidence(out: &mut String, r: &Report) {
    out.push_str("<h2>Evidence</h2>\n");
    out.push_str(&page::evidence_table(&r.analysis));
    let conversations = page::conversations_table(&r.analysis, MAX_CONVERSATIONS);
    if !conversations.is_empty() {
        out.push_str("<h2>Conversations holding memory</h2>\n");
        out.push_str(&conversations);
    }
}

fn render_charts(out: &mut String, view: &View) {
    let Some(whole) = &view.whole else {
        return;
    };
    out.push_str("<h2>Memory against turns in flight</h2>\n");
    let span = whole.analysis.to_ms - whole.analysis.from_ms;
    let mut figure = |r: &Report, label: String| {
        out.push_str("<figure>\n");
        out.push_str(&page::chart_svg(
            r,
            &format!("{label}: {} and turns in flight", r.analysis.metric),
        ));
        out.push_str(&format!(
            "<figcaption>{}: {} against turns in flight; dashed: the load-adjusted idle \
             floor. Verdict over this window: {}.</figcaption>\n</figure>\n",
            esc(&label),
            esc(r.analysis.metric),
            esc(r.analysis.verdict.name()),
        ));
    };
    match &view.hour {
        Some(h) => figure(h, "The last hour".into()),
        None => figure(whole, format!("Since this boot started ({} ago)", duration_ms(span))),
    }
    match &view.day {
        Some(d) => figure(d, "The last day".into()),
        None if view.hour.is_some() => {
            figure(whole, format!("The last day: the whole boot, {}", duration_ms(span)));
        }
        None => {}
    }
}

fn render_boots(out: &mut String, live: &Live, view: &View) {
    out.push_str("<h2>Boots and crashes</h2>\n");
    for l in &view.loops {
        out.push_str(&format!(
            "<p class=\"alert\"><strong>Crash loop</strong>: {} abnormal ends in {} ({} to {}), \
             runs of {}. Runbook: <code>runbooks/crash.md</code>.</p>\n",
            l.exits,
            duration_ms(l.span_ms),
            time(l.first_ts_ms),
            time(l.last_ts_ms),
            l.uptimes_ms.iter().map(|u| duration_ms(*u)).collect::<Vec<_>>().join(", "),
        ));
    }
    if view.boots.is_empty() {
        out.push_str("<p class=\"muted\">No boots in the traces database yet.</p>\n");
        return;
    }
    out.push_str("<table>\n<thead><tr><th>boot</th><th>version</th><th>started</th>\
                  <th>ran for</th><th>how it ended</th><th>post-mortem</th></tr></thead>\n<tbody>\n");
    for row in &view.boots {
        let b = &row.boot;
        let started = b.started_ts_ms.or(b.first_ts_ms);
        let ended = b.stopped_ts_ms.or(row.end.as_ref().map(|e| e.ts_ms));
        let ran = match (row.running, started, ended, &row.end) {
            (true, _, _, _) => format!("{} (running)", duration_ms(live.uptime_ms)),
            (_, _, _, Some(e)) if e.uptime_ms.is_some() => format!(
                "{}{}",
                if e.uptime_is_lower_bound { "at least " } else { "" },
                duration_ms(e.uptime_ms.unwrap_or(0))
            ),
            (_, Some(s), Some(t), _) => duration_ms(t - s),
            _ => "-".to_owned(),
        };
        let (class, how) = match (&row.end, row.running) {
            (_, true) => ("good", "running: this process".to_owned()),
            (Some(e), _) => ("bad", e.summary()),
            (None, _) if b.stopped_ts_ms.is_some() => (
                "good",
                format!(
                    "stopped cleanly ({})",
                    b.stop_reason.as_deref().unwrap_or("no reason given")
                ),
            ),
            (None, _) => ("none", "no end recorded yet".to_owned()),
        };
        let pm = match (&row.end, row.postmortem_written) {
            (Some(_), true) => {
                format!("<a href=\"/ui/postmortem/{0}\">read the post-mortem</a>", esc(&b.boot))
            }
            (Some(_), false) => {
                format!("<a href=\"/ui/postmortem/{0}\">not written yet: how to</a>", esc(&b.boot))
            }
            (None, _) => "-".to_owned(),
        };
        out.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"{class}\">{}</td><td>{pm}</td></tr>\n",
            esc(short(&b.boot)),
            esc(b.version.as_deref().unwrap_or("-")),
            started.map_or("-".to_owned(), time),
            ran,
            esc(&how),
        ));
    }
    out.push_str("</tbody>\n</table>\n");
    if view.boots_total > view.boots.len() {
        out.push_str(&format!(
            "<p class=\"muted\">{} older boots: <code>dispatchctl crashes</code> lists every \
             one.</p>\n",
            view.boots_total - view.boots.len()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn csp_allows_only_the_pages_own_style() {
        let csp = csp();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
        assert!(!csp.contains("script") && !csp.contains("unsafe"), "{csp}");
        // A SHA-256 digest is 32 bytes: 44 base64 characters with one `=`.
        let hash = csp.split("'sha256-").nth(1).and_then(|s| s.split('\'').next()).unwrap();
        assert_eq!((hash.len(), hash.ends_with('=')), (44, true), "{hash}");
    }

    #[test]
    fn boot_ids_are_checked_before_any_path_is_built() {
        assert!(is_boot_id("6f1c2d9e-8a7b-4c3d-9e2f-0a1b2c3d4e5f"));
        for bad in ["../../etc/passwd", "6f1c2d9e/..", "abc", "6f1c2d9e.html", "", "%2e%2e"] {
            assert!(!is_boot_id(bad), "{bad}");
        }
    }
}
