//! `dispatchctl doctor`: checks a running install and prints pass / warn / fail, each with
//! the fix. It asks the server (`/health`, no token needed) and reads the files it keeps: the
//! journal, the crash directory, the databases, the symbol store, and the kernel settings that
//! decide whether a crash leaves a dump.
//!
//! Every check says what it saw, so a "pass" can be checked too. Exit 0 when all pass, 1 with
//! warnings, 2 with a failure.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::Error;
use crate::heap::Admin;

/// A check's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// As it should be.
    Pass,
    /// Works, but is not as it should be.
    Warn,
    /// Broken: crashes, leaks or telemetry would go unseen.
    Fail,
}

impl Level {
    fn tag(self) -> &'static str {
        match self {
            Level::Pass => "pass",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable name (`journal_fresh`, `file_modes`, ...).
    pub name: &'static str,
    /// Result.
    pub level: Level,
    /// What was seen.
    pub detail: String,
    /// What to do, when not a pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(
    name: &'static str,
    level: Level,
    detail: impl Into<String>,
    fix: Option<String>,
) -> Check {
    Check { name, level, detail: detail.into(), fix: if level == Level::Pass { None } else { fix } }
}

/// Samples may be this many intervals late before the journal counts as stale (plus
/// [`STALE_SLACK`]): the writer batches and a loaded host delays the sampler thread.
const STALE_INTERVALS: u64 = 5;
/// Fixed slack on top of that.
const STALE_SLACK: Duration = Duration::from_secs(10);
/// How much of the newest segment's end is read for the newest sample.
const TAIL_BYTES: u64 = 256 * 1024;

/// What `/health` told, as far as doctor uses it.
#[derive(Debug, Default)]
struct Health {
    reachable: bool,
    error: Option<String>,
    body: serde_json::Value,
}

fn health(addr: &str) -> Health {
    let admin = Admin { addr: addr.to_owned(), token: String::new() };
    match admin.request("GET", "/health") {
        Ok((_, body)) => match serde_json::from_slice(&body) {
            Ok(body) => Health { reachable: true, error: None, body },
            Err(e) => Health {
                reachable: false,
                error: Some(format!("/health is not JSON: {e}")),
                ..Health::default()
            },
        },
        Err(e) => Health {
            reachable: false,
            error: Some(format!("{:#}", anyhow::Error::from(e))),
            ..Health::default()
        },
    }
}

/// Runs every check against the server at `addr` whose files are under `var_dir`.
pub fn checks(addr: &str, var_dir: &Path) -> Vec<Check> {
    let h = health(addr);
    let mut out = Vec::new();
    let b = &h.body;
    let path_of =
        |v: &serde_json::Value, default: PathBuf| v.as_str().map(PathBuf::from).unwrap_or(default);
    let journal_dir = path_of(&b["journal"]["dir"], var_dir.join("journal"));
    let traces_db = path_of(&b["traces_db"], var_dir.join("traces.db"));
    let crash_dir = path_of(&b["crash_dir"], var_dir.join("crashes"));

    // The server.
    if h.reachable {
        out.push(check(
            "server",
            Level::Pass,
            format!("{addr} answers /health (boot {})", b["boot"].as_str().unwrap_or("?")),
            None,
        ));
    } else {
        out.push(check(
            "server",
            Level::Fail,
            format!("no answer from {addr}: {}", h.error.as_deref().unwrap_or("?")),
            Some("start it (`systemctl start dispatch`), or point --addr at it; the checks below read its files only".into()),
        ));
    }

    // Telemetry the server reports on itself.
    if h.reachable {
        let monitor = b["telemetry"]["crash_monitor"].as_str().unwrap_or("?");
        out.push(if monitor == "attached" {
            check("crash_monitor", Level::Pass, "attached: a crash leaves a minidump", None)
        } else {
            check(
                "crash_monitor",
                Level::Fail,
                format!("{monitor}: {}", b["telemetry"]["crash_monitor_note"].as_str().unwrap_or("no reason given")),
                Some("a crash now leaves no minidump: unset DISPATCH_CRASH_MONITOR=off and restart, and read the server's stderr for why the child could not reach the monitor".into()),
            )
        });
        let sampler = b["telemetry"]["sampler"].as_str().unwrap_or("?");
        let samples = b["sampler"]["samples"].as_u64().unwrap_or(0);
        out.push(if sampler == "alive" {
            check("sampler", Level::Pass, format!("alive, {samples} samples this boot"), None)
        } else {
            check(
                "sampler",
                Level::Fail,
                format!("{sampler} ({samples} samples this boot): memory is not being measured"),
                Some("restart the service; a build or start command without the sampler (DISPATCH_BENCH_SAMPLER_OFF) must not run in production".into()),
            )
        });
    }

    // The journal on disk: fresh, and sampled at the expected rate.
    let interval_ms = b["sampler"]["interval_ms"].as_u64().unwrap_or(1000).max(1);
    out.push(journal_fresh(&journal_dir, b["boot"].as_str(), interval_ms, b["uptime_ms"].as_u64()));

    // Kernel and limits: can the monitor dump a crash, and would a core dump leak secrets?
    out.push(ptrace_scope());
    let pid = b["pid"].as_u64();
    out.push(core_limit(pid));
    out.push(memory_limits(pid));

    // Files: modes.
    out.push(file_modes(var_dir, &journal_dir, &crash_dir, &traces_db));

    // Disk headroom for the journal.
    out.push(disk_headroom(&journal_dir));

    // The traces database: lag, and boots that lost their telemetry.
    out.extend(database_checks(&traces_db, &journal_dir));

    // The symbol store: the running build's symbols, for tomorrow's post-mortem.
    out.push(symbols(var_dir, b["build_id"].as_str()));
    out
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The newest `memory.sample` of `boot` in the newest segment's tail: fresh within
/// [`STALE_INTERVALS`] intervals plus [`STALE_SLACK`].
fn journal_fresh(
    dir: &Path,
    boot: Option<&str>,
    interval_ms: u64,
    uptime_ms: Option<u64>,
) -> Check {
    let name = "journal_fresh";
    let fix = Some(format!(
        "the sampler or the journal writer stopped: check `/health`, free disk space and the permissions of {}, then restart; `dispatchctl journal audit {}` shows what reached the files",
        dir.display(),
        dir.display()
    ));
    let newest = std::fs::read_dir(dir).ok().and_then(|d| {
        d.filter_map(Result::ok)
            .filter_map(|e| {
                let n = dispatch_journal::SegmentName::parse(e.file_name().to_str()?)?;
                Some((n.segment, e.path()))
            })
            .max_by_key(|(n, _)| *n)
    });
    let Some((_, seg)) = newest else {
        return check(name, Level::Fail, format!("no journal segment in {}", dir.display()), fix);
    };
    let tail = read_tail(&seg, TAIL_BYTES).unwrap_or_default();
    let mut newest_ts = None;
    let mut in_last_minute = 0u64;
    let now = now_ms();
    for line in tail.split(|b| *b == b'\n') {
        if !line.windows(22).any(|w| w == br#""kind":"memory.sample""#) {
            continue;
        }
        let Ok(dispatch_journal::codec::Decoded::Record(l)) =
            dispatch_journal::codec::decode_line(0, line)
        else {
            continue;
        };
        if boot.is_some_and(|b| b != l.envelope.boot) {
            continue;
        }
        let ts = l.envelope.ts.unix_millis();
        newest_ts = Some(newest_ts.map_or(ts, |n: i64| n.max(ts)));
        if now - ts <= 60_000 {
            in_last_minute += 1;
        }
    }
    let limit = (interval_ms * STALE_INTERVALS) as i64 + STALE_SLACK.as_millis() as i64;
    match newest_ts {
        None => check(
            name,
            Level::Fail,
            format!("no memory sample of this boot in the end of {}", seg.display()),
            fix,
        ),
        Some(ts) if now - ts > limit => check(
            name,
            Level::Fail,
            format!(
                "the newest memory sample in {} is {} s old (expected one every {} ms)",
                seg.display(),
                (now - ts) / 1000,
                interval_ms
            ),
            fix,
        ),
        Some(ts) => {
            // Samples expected in the last minute, or since start when the boot is younger.
            let window_ms = uptime_ms.unwrap_or(60_000).min(60_000);
            let expected = window_ms / interval_ms;
            let detail = format!(
                "newest sample {} ms old; {in_last_minute} in the last {} s at one per {interval_ms} ms",
                now - ts,
                window_ms / 1000
            );
            if in_last_minute * 2 < expected {
                check(name, Level::Warn, detail, Some("samples arrive at under half the configured rate: the host is overloaded or the writer drops lines (`journal.dropped`)".into()))
            } else {
                check(name, Level::Pass, detail, None)
            }
        }
    }
}

fn read_tail(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Yama's ptrace scope: the monitor reads the crashed child with ptrace.
fn ptrace_scope() -> Check {
    let name = "ptrace";
    match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").map(|s| s.trim().to_owned()) {
        Err(_) => check(name, Level::Pass, "no Yama LSM: ptrace of the child by its monitor is allowed", None),
        Ok(s) if s == "0" || s == "1" => check(name, Level::Pass, format!("kernel.yama.ptrace_scope = {s}: the monitor (the child's parent) may read it"), None),
        Ok(s) if s == "2" => check(
            name,
            Level::Warn,
            "kernel.yama.ptrace_scope = 2: only a process with CAP_SYS_PTRACE may ptrace",
            Some("give the unit AmbientCapabilities=CAP_SYS_PTRACE, or set kernel.yama.ptrace_scope=1; otherwise crashes leave no minidump".into()),
        ),
        Ok(s) => check(
            name,
            Level::Fail,
            format!("kernel.yama.ptrace_scope = {s}: ptrace is off until reboot; no crash can be dumped"),
            Some("boot with kernel.yama.ptrace_scope=1 (scope 3 cannot be lowered at run time)".into()),
        ),
    }
}

/// A soft limit from `/proc/<pid>/limits`.
fn limit(pid: u64, which: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with(which))?;
    line[which.len()..].split_whitespace().next().map(str::to_owned)
}

/// The server's `RLIMIT_CORE`: minidumps do not need cores, and a core holds every secret in
/// the process's memory.
fn core_limit(pid: Option<u64>) -> Check {
    let name = "core_dumps";
    let Some(pid) = pid else {
        return check(
            name,
            Level::Warn,
            "the server's pid is unknown (no /health): its core limit was not read",
            Some("run doctor while the server is up".into()),
        );
    };
    match limit(pid, "Max core file size") {
        Some(v) if v == "0" => check(
            name,
            Level::Pass,
            "RLIMIT_CORE 0: no core dumps; the minidump is the record of a crash",
            None,
        ),
        Some(v) => check(
            name,
            Level::Warn,
            format!(
                "RLIMIT_CORE {v}: a crash may also write a core dump, which holds every secret in memory (minidumps are scrubbed)"
            ),
            Some(
                "set LimitCORE=0 in the unit (the minidump and the journal are the crash record)"
                    .into(),
            ),
        ),
        None => check(
            name,
            Level::Warn,
            format!("cannot read /proc/{pid}/limits"),
            Some("run doctor as the service user or root".into()),
        ),
    }
}

/// The cgroup memory limits around the server (v2 `memory.max`/`memory.high`, v1
/// `memory.limit_in_bytes`): a leak should meet a limit before it meets the OOM killer.
fn memory_limits(pid: Option<u64>) -> Check {
    let name = "memory_limits";
    let Some(pid) = pid else {
        return check(
            name,
            Level::Warn,
            "the server's pid is unknown: its cgroup limits were not read",
            Some("run doctor while the server is up".into()),
        );
    };
    let Ok(cgroup) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return check(name, Level::Warn, format!("cannot read /proc/{pid}/cgroup"), None);
    };
    let mut found = Vec::new();
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) =
            (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let candidates: Vec<(PathBuf, &str)> = if controllers.is_empty() {
            let base = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
            vec![(base.join("memory.max"), "memory.max"), (base.join("memory.high"), "memory.high")]
        } else if controllers.split(',').any(|c| c == "memory") {
            let base = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
            vec![(base.join("memory.limit_in_bytes"), "memory.limit_in_bytes")]
        } else {
            Vec::new()
        };
        for (file, label) in candidates {
            if let Ok(v) = std::fs::read_to_string(&file) {
                let v = v.trim();
                // v1 "no limit" is a huge page-aligned number; v2 says "max".
                let unlimited = v == "max" || v.parse::<u64>().is_ok_and(|n| n >= 1 << 62);
                if !unlimited {
                    let shown = v.parse::<f64>().map_or(v.to_owned(), crate::output::bytes);
                    found.push(format!("{label} {shown}"));
                }
            }
        }
    }
    if found.is_empty() {
        check(
            name,
            Level::Warn,
            "no cgroup memory limit around the server: a leak grows until the kernel's OOM killer picks a process",
            Some(
                "set MemoryHigh= and MemoryMax= in the unit (server/dispatch.service has both)"
                    .into(),
            ),
        )
    } else {
        check(name, Level::Pass, found.join(", "), None)
    }
}

/// Group- or world-accessible files that hold dumps, records, conversations or tokens.
fn file_modes(var_dir: &Path, journal: &Path, crashes: &Path, traces_db: &Path) -> Check {
    let name = "file_modes";
    let mut bad = Vec::new();
    let mut seen = 0usize;
    let mut look = |path: &Path, want: u32| {
        if let Ok(md) = std::fs::symlink_metadata(path) {
            seen += 1;
            let mode = md.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bad.push(format!(
                    "{} is {:04o} (want {:04o}): chmod {:o} {}",
                    path.display(),
                    mode,
                    want,
                    want,
                    path.display()
                ));
            }
        }
    };
    for dir in [journal, crashes] {
        look(dir, 0o700);
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.filter_map(Result::ok) {
                let p = e.path();
                if p.is_file() {
                    look(&p, 0o600);
                }
            }
        }
    }
    for f in [traces_db.to_path_buf(), var_dir.join("dispatch.db"), var_dir.join("api-token")] {
        look(&f, 0o600);
    }
    if bad.is_empty() {
        check(
            name,
            Level::Pass,
            format!("{seen} dumps, journal files, databases and tokens are private to their owner"),
            None,
        )
    } else {
        let n = bad.len();
        check(
            name,
            Level::Fail,
            format!("{n} file{} readable by others: {}", if n == 1 { "" } else { "s" }, bad.join("; ")),
            Some("chmod as listed; dumps and journals hold conversation text, the token file grants the API".into()),
        )
    }
}

/// Free space where the journal lives (from `df`, which every host has).
fn disk_headroom(journal: &Path) -> Check {
    let name = "disk_headroom";
    let out = std::process::Command::new("df").args(["-P", "-B1"]).arg(journal).output();
    let free = out.ok().filter(|o| o.status.success()).and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let f: Vec<&str> = text.lines().nth(1)?.split_whitespace().collect();
        Some((f.get(1)?.parse::<u64>().ok()?, f.get(3)?.parse::<u64>().ok()?))
    });
    let used: u64 = std::fs::read_dir(journal)
        .map(|d| d.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0);
    match free {
        None => {
            check(name, Level::Warn, format!("`df {}` did not answer", journal.display()), None)
        }
        Some((size, avail)) => {
            let detail = format!(
                "{} free of {} on the journal's filesystem; the journal uses {}",
                crate::output::bytes(avail as f64),
                crate::output::bytes(size as f64),
                crate::output::bytes(used as f64)
            );
            // The journal's default budget is 2 GiB: less free than that is a disk-full waiting.
            if avail < 256 * 1024 * 1024 {
                check(
                    name,
                    Level::Fail,
                    detail,
                    Some(
                        "free disk space: at 0 the journal drops lines and dumps cannot be written"
                            .into(),
                    ),
                )
            } else if avail < 2 * 1024 * 1024 * 1024 {
                check(name, Level::Warn, detail, Some("under the journal's default 2 GiB budget free: lower DISPATCH_JOURNAL_BUDGET_BYTES or free space".into()))
            } else {
                check(name, Level::Pass, detail, None)
            }
        }
    }
}

/// Collector lag and boots with no samples, from the traces database.
fn database_checks(db: &Path, journal: &Path) -> Vec<Check> {
    let conn = match dispatch_collector::schema::open_read_only(db) {
        Ok(c) => c,
        Err(e) => {
            return vec![check(
                "collector_lag",
                Level::Warn,
                format!("cannot open the traces database {}: {e}", db.display()),
                Some(
                    "the embedded collector creates it; run `dispatch-collector` if it is off"
                        .into(),
                ),
            )];
        }
    };
    let mut out = Vec::new();
    match dispatch_collector::status::lag_bytes(&conn, journal) {
        Ok(Some(lag)) => {
            let detail = format!(
                "{} of journal not yet in {}",
                crate::output::bytes(lag as f64),
                db.display()
            );
            out.push(if lag > 64 * 1024 * 1024 {
                check("collector_lag", Level::Warn, detail, Some("the collector is behind or stopped: check `/health` `telemetry.collector`, or run `dispatch-collector --once`".into()))
            } else {
                check("collector_lag", Level::Pass, detail, None)
            });
        }
        Ok(None) => out.push(check(
            "collector_lag",
            Level::Warn,
            format!("cannot read {}", journal.display()),
            None,
        )),
        Err(e) => out.push(check(
            "collector_lag",
            Level::Warn,
            format!("reading {}: {e}", db.display()),
            None,
        )),
    }
    let unsampled: Result<Vec<String>, rusqlite::Error> = conn
        .prepare(
            "SELECT b.boot FROM boots b WHERE b.records > 0 AND NOT EXISTS \
             (SELECT 1 FROM samples s WHERE s.id >> 40 = b.boot_no) ORDER BY b.boot_no",
        )
        .and_then(|mut st| st.query_map([], |r| r.get::<_, String>(0))?.collect());
    match unsampled {
        Ok(b) if b.is_empty() => out.push(check("boots_sampled", Level::Pass, "every boot in the database has memory samples", None)),
        Ok(b) => out.push(check(
            "boots_sampled",
            Level::Fail,
            format!("{} boot{} without a single memory sample (telemetry lost): {}", b.len(), if b.len() == 1 { "" } else { "s" }, b.iter().map(|s| s.get(..8).unwrap_or(s)).collect::<Vec<_>>().join(", ")),
            Some("a build or start command ran without the sampler: find it with `dispatchctl journal audit` and the boots' `process.start` version and build-id".into()),
        )),
        Err(e) => out.push(check("boots_sampled", Level::Warn, format!("reading {}: {e}", db.display()), None)),
    }
    out
}

/// The running build's symbols in the store (`<var dir>/symbols/<name>/<DEBUGID>/`), by its
/// build-id: whether tomorrow's post-mortem of today's crash gets function names.
fn symbols(var_dir: &Path, build_id: Option<&str>) -> Check {
    let name = "symbols";
    let store = var_dir.join("symbols");
    let Some(id) = build_id else {
        return check(name, Level::Warn, "the server's build-id is unknown (no /health)", None);
    };
    let has = std::fs::read_dir(&store).ok().is_some_and(|modules| {
        modules.filter_map(Result::ok).any(|m| {
            std::fs::read_dir(m.path()).ok().is_some_and(|ids| {
                ids.filter_map(Result::ok)
                    .any(|d| d.file_name().to_str().is_some_and(|n| debug_id_matches(n, id)))
            })
        })
    });
    if has {
        check(name, Level::Pass, format!("{} holds build {id}", store.display()), None)
    } else {
        check(
            name,
            Level::Warn,
            format!("{} has no symbols for the running build {id}: a crash now would be reported as module+offset", store.display()),
            Some("`dispatchctl symbols add /path/to/dispatch-server`, or start the server with DISPATCH_SYMBOL_STORE set".into()),
        )
    }
}

/// Whether a Breakpad debug-id directory name is the one of this GNU build-id: the first 16
/// bytes as a GUID (first three fields byte-swapped), uppercase, plus age 0.
fn debug_id_matches(dir_name: &str, build_id: &str) -> bool {
    let hex: Vec<u8> = (0..build_id.len() / 2)
        .filter_map(|i| u8::from_str_radix(build_id.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    if hex.len() < 16 {
        return false;
    }
    let mut g = [0u8; 16];
    g.copy_from_slice(&hex[..16]);
    g[..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    let want: String = g.iter().map(|b| format!("{b:02X}")).collect::<String>() + "0";
    dir_name.eq_ignore_ascii_case(&want)
}

/// Runs `dispatchctl doctor`; the exit status is the worst level (0 pass, 1 warn, 2 fail).
///
/// # Errors
/// [`Error::Output`].
pub fn run(addr: &str, var_dir: &Path, json: bool, out: &mut dyn Write) -> Result<u8, Error> {
    let checks = checks(addr, var_dir);
    let worst = checks.iter().map(|c| c.level).max().unwrap_or(Level::Pass);
    if json {
        let v = serde_json::json!({ "v": 1, "kind": "doctor", "worst": worst, "checks": checks });
        serde_json::to_writer_pretty(&mut *out, &v).map_err(|e| Error::Output(e.into()))?;
        writeln!(out).map_err(Error::Output)?;
    } else {
        for c in &checks {
            writeln!(out, "{:<4}  {:<15} {}", c.level.tag(), c.name, c.detail)
                .map_err(Error::Output)?;
            if let Some(fix) = &c.fix {
                writeln!(out, "      {:<15} fix: {fix}", "").map_err(Error::Output)?;
            }
        }
        let (w, f) = (
            checks.iter().filter(|c| c.level == Level::Warn).count(),
            checks.iter().filter(|c| c.level == Level::Fail).count(),
        );
        writeln!(
            out,
            "\n{} checks: {} passed, {w} warnings, {f} failures",
            checks.len(),
            checks.len() - w - f
        )
        .map_err(Error::Output)?;
    }
    Ok(match worst {
        Level::Pass => 0,
        Level::Warn => 1,
        Level::Fail => 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_id_of_a_build_id_swaps_the_guid_fields() {
        // Breakpad's rule for ELF: build-id 00112233 4455 6677 8899aabbccddeeff... ->
        // 33221100 5544 7766 8899AABBCCDDEEFF, age 0.
        let id = "00112233445566778899aabbccddeeff01020304";
        assert!(debug_id_matches("33221100554477668899AABBCCDDEEFF0", id));
        assert!(!debug_id_matches("00112233445566778899AABBCCDDEEFF0", id));
        assert!(!debug_id_matches("33221100554477668899AABBCCDDEEFF0", "0011"));
    }
}
