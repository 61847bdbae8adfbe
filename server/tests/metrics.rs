//! `/metrics` checked by the tools Prometheus users check it with: `promtool check metrics` on
//! a live scrape, and a real Prometheus (Debian's) that scrapes the server on 127.0.0.1 and is
//! asked, through its HTTP API, for every metric the Grafana dashboards use. A dashboard can
//! then never reference a metric the server does not export.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{ServerProcess, wait_for};

/// The path of a reference tool, installed by `scripts/test-tools` when missing.
fn tool(name: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-tools");
    let out = Command::new(&script).arg(name).output().expect("running scripts/test-tools");
    assert!(
        out.status.success(),
        "scripts/test-tools could not install {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A plain HTTP/1.0 GET on 127.0.0.1, the body as text.
fn get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// Every metric name the dashboards' queries use.
fn dashboard_metrics() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut names = BTreeSet::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut exprs = Vec::new();
        collect_exprs(&doc, &mut exprs);
        for expr in exprs {
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("dispatch_") || word.starts_with("process_") {
                    names.insert(word.to_owned());
                }
            }
        }
    }
    assert!(!names.is_empty(), "no metric found in {}", dir.display());
    // The alert rules too (comments aside: they name an alert that is deliberately absent).
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    for line in rules.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("dispatch_") || word.starts_with("process_") {
                names.insert(word.to_owned());
            }
        }
    }
    assert!(names.contains("dispatch_memory_pressure_level"), "the alert rules page on pressure");
    names
}

/// `promtool check rules` accepts the alert rules and `promtool test rules` passes their unit
/// tests: a crash loop and shedding page, the working set's RSS climb does not.
#[test]
fn promtool_checks_the_alert_rules_and_runs_their_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    for args in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]] {
        let out = Command::new(tool("promtool")).args(args).current_dir(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let exprs: Vec<&str> = rules.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    assert!(
        !exprs.iter().any(|l| l.contains("predict_linear") || l.contains("deriv(")),
        "no alert on a raw RSS slope (the predecessor's misread working set)"
    );
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn promtool_accepts_a_live_scrape_and_it_has_the_process_collector_set() {
    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(var.path(), &["--sample-interval-ms", "100"]);
    wait_for("a memory sample", || {
        get(server.addr, "/metrics").contains("dispatch_sample_cost_seconds ").then_some(())
    });
    let body = get(server.addr, "/metrics");
    for name in [
        "process_cpu_seconds_total",
        "process_start_time_seconds",
        "process_open_fds",
        "process_max_fds",
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "process_threads",
        "dispatch_journal_dropped_records_total",
        "dispatch_collector_lag_bytes",
        "dispatch_crashes_total",
        "dispatch_panics_total",
        "dispatch_sample_cost_seconds",
    ] {
        assert!(body.contains(&format!("\n{name} ")), "{name} missing from:\n{body}");
    }
    assert!(!body.contains("conversation="), "no per-conversation labels");
    // The start time is this process's (within a day of now), not a boot-relative count.
    let start: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("process_start_time_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    assert!((now.as_secs_f64() - start).abs() < 86_400.0, "start {start}");

    let mut promtool = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills the Prometheus child when the test ends, passed or failed.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_every_metric_the_dashboards_use() {
    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(var.path(), &["--sample-interval-ms", "100"]);
    let prom_dir = tempfile::tempdir().unwrap();
    let config = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: dispatch\n    static_configs:\n      - targets: ['{}']\n",
            server.addr
        ),
    )
    .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(prom_dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Child(
        Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", prom_dir.path().join("data").display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let prom: std::net::SocketAddr = listen.parse().unwrap();
    // Up, and at least two scrapes in (rate() needs two points).
    wait_for("Prometheus to scrape the server twice", || {
        let body = std::panic::catch_unwind(|| {
            get(prom, "/api/v1/query?query=count_over_time(up%7Bjob%3D%22dispatch%22%7D%5B1m%5D)")
        })
        .ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let n: f64 = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
        (n >= 2.0).then_some(())
    });
    let up = get(prom, "/api/v1/query?query=up");
    assert!(up.contains(r#""value":["#) && up.contains(r#","1"]"#), "the target is up: {up}");
    for name in dashboard_metrics() {
        let body = get(prom, &format!("/api/v1/query?query={name}"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{name}: {body}");
        let results = v["data"]["result"].as_array().unwrap();
        assert!(!results.is_empty(), "Prometheus has no value for {name}, which a dashboard uses");
    }
}
