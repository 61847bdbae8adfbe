//! The report: the dump half and the journal half side by side, the figures that contradict
//! each other, and — when there is no dump — why not.

use serde::Serialize;
use serde_json::{Value, json};

use super::journal::{JournalSection, seconds};
use super::model::DumpAnalysis;
use crate::output::bytes;

/// Schema version of `dispatchctl postmortem --format json`.
pub const JSON_VERSION: u32 = 1;
/// A memory figure above this is impossible on any host we run on (16 TiB): the reading is
/// corrupt (the incident's crash handler printed `RSS: 0.02ZB`).
pub const IMPOSSIBLE_BYTES: i64 = 1 << 44;

/// Two readings that cannot both be right, and which to believe.
#[derive(Debug, Clone, Serialize)]
pub struct Contradiction {
    /// What disagrees.
    pub what: String,
    /// The readings, each with its source.
    pub readings: Vec<String>,
    /// Which to trust, and why.
    pub trust: String,
}

/// A whole post-mortem.
#[derive(Debug, Clone)]
pub struct Report {
    /// The dump, walked.
    pub dump: Option<DumpAnalysis>,
    /// Why there is no dump.
    pub dump_absent: Option<String>,
    /// The journal of the boot.
    pub journal: Option<JournalSection>,
    /// Why there is no journal part.
    pub journal_absent: Option<String>,
    /// Figures that contradict each other.
    pub contradictions: Vec<Contradiction>,
}

impl Report {
    /// Joins the halves and looks for contradictions.
    pub fn new(
        dump: Option<DumpAnalysis>,
        dump_absent: Option<String>,
        journal: Option<JournalSection>,
        journal_absent: Option<String>,
    ) -> Report {
        let contradictions = contradictions(dump.as_ref(), journal.as_ref());
        Report { dump, dump_absent, journal, journal_absent, contradictions }
    }

    /// One line: what happened to the boot.
    pub fn headline(&self) -> String {
        let j = self.journal.as_ref();
        let uptime = j
            .and_then(|j| j.crash.as_ref().and_then(|c| c.uptime_ms).or(j.exit.as_ref()?.uptime_ms))
            .map(|u| format!(" after {}", seconds(u)))
            .unwrap_or_default();
        if let Some(d) = &self.dump {
            let reason = d.crash_info.kind.clone().unwrap_or_else(|| "no exception".into());
            let addr =
                d.crash_info.address.map(|a| format!(" at {:#x}", a.value)).unwrap_or_default();
            let top = d
                .crashing_frames()
                .into_iter()
                .next()
                .map(|f| match (&f.function, &f.module, f.module_offset) {
                    (Some(func), _, _) => format!(" in {func}"),
                    (None, Some(m), Some(off)) => format!(" in {m}+{off:#x}"),
                    _ => String::new(),
                })
                .unwrap_or_default();
            if reason == "DUMP_REQUESTED" {
                // A dump asked of a live process (the stall watchdog's): it kept running.
                return format!(
                    "a live dump of the running process (DUMP_REQUESTED: not a crash, the \
                     process went on), taken{top}: every thread's stack at that moment"
                );
            }
            return format!("crashed with {reason}{addr}{top}{uptime}");
        }
        if let Some(j) = j {
            if let Some(c) = &j.crash {
                return format!(
                    "crashed with {}{uptime}; no dump",
                    c.signal.as_deref().unwrap_or("a signal")
                );
            }
            if let Some(e) = &j.exit {
                return format!("{}{uptime}; no dump", e.describe());
            }
            if let Some(p) = j.last_panic.as_ref().filter(|p| p.fatal == Some(true)) {
                return format!("fatal panic: {}", p.message);
            }
            return "no crash or exit recorded for this boot".into();
        }
        "nothing known".into()
    }

    /// The JSON document (docs/CLI.md, `postmortem`): stackwalk's field names at the top level
    /// where they overlap, our sections beside them.
    pub fn to_json(&self) -> Value {
        let mut doc = json!({
            "v": JSON_VERSION,
            "kind": "postmortem",
            "summary": self.headline(),
        });
        if let Some(d) = &self.dump {
            if let Ok(Value::Object(m)) = serde_json::to_value(d) {
                let mut dump_meta = serde_json::Map::new();
                for (k, v) in m {
                    match k.as_str() {
                        "system_info" | "crash_info" | "crashing_thread" | "threads"
                        | "modules" | "pid" => {
                            doc[k.as_str()] = v;
                        }
                        _ => {
                            dump_meta.insert(k, v);
                        }
                    }
                }
                doc["thread_count"] = json!(d.threads.len());
                doc["main_module"] = json!(0);
                doc["dump"] = Value::Object(dump_meta);
            }
        } else if let Some(why) = &self.dump_absent {
            doc["dump"] = json!({ "absent": why });
        }
        match (&self.journal, &self.journal_absent) {
            (Some(j), _) => doc["journal"] = serde_json::to_value(j).unwrap_or(Value::Null),
            (None, Some(why)) => doc["journal"] = json!({ "absent": why }),
            (None, None) => {}
        }
        doc["contradictions"] = serde_json::to_value(&self.contradictions).unwrap_or(json!([]));
        doc
    }
}

/// Why a boot has no dump, in words, from what the journal recorded.
pub fn why_no_dump(j: &JournalSection, looked: Option<&str>) -> String {
    if let Some(c) = &j.crash {
        if let Some(err) = &c.dump_error {
            return format!("no dump exists: the crash monitor could not write one ({err})");
        }
        if let Some(path) = &c.minidump {
            return format!(
                "the crash record names the dump {path}, which is not there{}",
                looked.map(|l| format!(" (nor at {l})")).unwrap_or_default()
            );
        }
        return "no dump exists: the crash record names none".into();
    }
    let oom = j.oom_kill.filter(|(a, b)| b > a);
    if let Some(e) = &j.exit {
        let killed = e.signal.as_deref() == Some("SIGKILL");
        if killed || e.oom_killed == Some(true) {
            let by = match (e.oom_killed == Some(true) || oom.is_some(), oom) {
                (true, Some((a, b))) => {
                    format!(" by the OOM killer (the cgroup's oom_kill count went from {a} to {b})")
                }
                (true, None) => " by the OOM killer".into(),
                (false, _) => String::new(),
            };
            return format!(
                "no dump exists: the process was killed by {}{by}. SIGKILL cannot be caught, so no \
                 crash handler ran and nothing could write a dump. This report is built from the \
                 last memory samples, the cgroup figures, the pressure records and the turns in \
                 flight.",
                e.signal.as_deref().unwrap_or("SIGKILL")
            );
        }
        if e.signal.is_none() {
            return format!(
                "no dump: the process exited ({}), it did not crash on a signal",
                e.describe()
            );
        }
        return format!(
            "no dump: the process was {} and no crash record was written",
            e.describe()
        );
    }
    "no dump: the journal records no crash and no exit for this boot (it may still be running, \
     or its monitor died with it)"
        .into()
}

fn hex_value(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim().trim_start_matches("0x").trim_start_matches("0X"), 16).ok()
}

fn contradictions(dump: Option<&DumpAnalysis>, j: Option<&JournalSection>) -> Vec<Contradiction> {
    let mut out = Vec::new();
    let crash = j.and_then(|j| j.crash.as_ref());
    let exit = j.and_then(|j| j.exit.as_ref());

    // The monitor's reading of the crash against the exit status.
    if let (Some(c), Some(e)) = (crash, exit) {
        if let (Some(seen), Some(died)) = (&c.signal, &e.signal) {
            if seen != died {
                out.push(Contradiction {
                    what: "the crash signal and the exit status disagree".into(),
                    readings: vec![
                        format!("crash record (the monitor, from the fault's siginfo): {seen}"),
                        format!("exit record (the child's wait status): {died}"),
                    ],
                    trust: format!(
                        "{seen} for what faulted: it is the signal the fault raised, read by the \
                         monitor from outside. The exit status says how the process finally died \
                         ({died}): a process already corrupt can die of a second signal while \
                         handling the first."
                    ),
                });
            }
        }
        if c.signal.is_some() && e.signal.is_none() && e.status.is_some() {
            out.push(Contradiction {
                what: "a crash was recorded but the process exited normally".into(),
                readings: vec![
                    format!("crash record: {}", c.signal.as_deref().unwrap_or("?")),
                    format!("exit record: {}", e.describe()),
                ],
                trust: "the crash record: a handler that catches the signal can exit with a \
                        status of its own afterwards."
                    .into(),
            });
        }
    }

    // The dump against the crash record.
    if let (Some(d), Some(c)) = (dump, crash) {
        if let (Some(kind), Some(sig)) = (&d.crash_info.kind, &c.signal) {
            let dump_sig = kind.split_whitespace().next().unwrap_or("");
            if dump_sig.starts_with("SIG") && dump_sig != sig {
                out.push(Contradiction {
                    what: "the dump and the crash record name different signals".into(),
                    readings: vec![
                        format!("minidump exception stream: {kind}"),
                        format!("crash record: {sig}"),
                    ],
                    trust: "the minidump: its exception record is the one the kernel delivered \
                            to the crashing thread, copied by the monitor from outside."
                        .into(),
                });
            }
        }
        if let (Some(addr), Some(rec)) = (d.crash_info.address, c.fault_address.as_deref()) {
            if let Some(rec_v) = hex_value(rec) {
                if rec_v != addr.value {
                    out.push(Contradiction {
                        what: "the dump and the crash record give different fault addresses".into(),
                        readings: vec![
                            format!("minidump: {:#x}", addr.value),
                            format!("crash record: {rec_v:#x}"),
                        ],
                        trust: "the minidump's exception address.".into(),
                    });
                }
            }
        }
    }

    // In-process figures against the cgroup's, and impossible values.
    if let Some(j) = j {
        let max = j.process_start.as_ref().and_then(|p| p.memory_max_bytes);
        let last = crash.and_then(|c| c.last_sample.as_ref());
        if let Some(ls) = last {
            let mut bad = Vec::new();
            impossible("last_sample", ls, max, &mut bad);
            for (field, raw, negative) in bad {
                out.push(Contradiction {
                    what: format!("an impossible value in the crash record's {field}"),
                    readings: vec![format!("{field} = {raw} bytes")],
                    trust: format!(
                        "neither: {field} is {}. The reading was taken inside a process that was \
                         already failing; use the samples before the crash and the cgroup's \
                         figures (kept by the kernel).",
                        if negative {
                            "negative".to_string()
                        } else {
                            let approx = raw.parse::<f64>().map(bytes).unwrap_or_default();
                            format!("beyond any memory this host can have ({approx})")
                        }
                    ),
                });
            }
            let rss = ls.get("rss").and_then(Value::as_i64);
            let hwm = ls.get("hwm").and_then(Value::as_i64);
            let cg = ls.get("cgroup");
            let cg_current = cg
                .and_then(|c| c.get("current"))
                .and_then(Value::as_i64)
                .or_else(|| j.last_samples.iter().rev().find_map(|s| s.cgroup_current_bytes));
            let cg_peak = j
                .last_samples
                .iter()
                .filter_map(|s| s.cgroup_peak_bytes)
                .chain(cg.and_then(|c| c.get("peak")).and_then(Value::as_i64))
                .max();
            if let (Some(rss), Some(cur)) = (rss, cg_current) {
                if (0..IMPOSSIBLE_BYTES).contains(&rss) && rss > cur + cur / 10 + (16 << 20) {
                    out.push(Contradiction {
                        what: "the process's RSS exceeds its cgroup's usage".into(),
                        readings: vec![
                            format!("last_sample.rss (in-process, statm): {}", bytes(rss as f64)),
                            format!("cgroup memory.current: {}", bytes(cur as f64)),
                        ],
                        trust: "the cgroup: every resident page of the process is charged to it, \
                                so the process cannot hold more than the cgroup uses; the kernel \
                                keeps that count even when the process is corrupt."
                            .into(),
                    });
                }
            }
            if let (Some(hwm), Some(peak)) = (hwm, cg_peak) {
                if hwm >= 0 && peak > 2 * hwm && peak - hwm > (512 << 20) {
                    out.push(Contradiction {
                        what: "the in-process peak is far below the cgroup's peak".into(),
                        readings: vec![
                            format!("last_sample.hwm (VmHWM): {}", bytes(hwm as f64)),
                            format!("cgroup memory.peak: {}", bytes(peak as f64)),
                        ],
                        trust: "the cgroup's peak for memory pressure: it counts everything the \
                                service's cgroup held (tool processes and page cache too), which \
                                is what limits and the OOM killer act on."
                            .into(),
                    });
                }
            }
        }
        for s in &j.last_samples {
            for (name, v) in [("rss", s.rss_bytes), ("allocated", s.allocated_bytes)] {
                if let Some(v) = v.filter(|v| *v < 0 || *v >= IMPOSSIBLE_BYTES) {
                    out.push(Contradiction {
                        what: format!(
                            "an impossible {name} in the sample at {}",
                            crate::output::time(s.ts_ms)
                        ),
                        readings: vec![format!("{name} = {v} bytes")],
                        trust: "the neighbouring samples and the cgroup figures.".into(),
                    });
                }
            }
        }
    }
    out
}

/// Memory fields of an inline sample that are negative or impossibly large (or, when the
/// cgroup's `memory.max` is known, above twice it: the kernel would have killed it first), as
/// `(field path, the number as written, negative)`.
fn impossible(path: &str, v: &Value, max: Option<i64>, out: &mut Vec<(String, String, bool)>) {
    const MEMORY: [&str; 12] = [
        "rss",
        "hwm",
        "rss_anon",
        "rss_file",
        "allocated",
        "active",
        "resident",
        "mapped",
        "retained",
        "metadata",
        "current",
        "peak",
    ];
    let Value::Object(m) = v else { return };
    for (k, v) in m {
        let here = format!("{path}.{k}");
        match v {
            Value::Object(_) => impossible(&here, v, max, out),
            Value::Number(n) if MEMORY.contains(&k.as_str()) => {
                let x = n.as_f64().unwrap_or(0.0);
                let limit = max.map_or(f64::INFINITY, |m| 2.0 * m as f64);
                if x < 0.0 || x >= IMPOSSIBLE_BYTES as f64 || x > limit {
                    out.push((here, n.to_string(), x < 0.0));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_values_are_found_at_any_depth() {
        // The incident: RSS 0.02 ZB (2e19 bytes: beyond u64, so JSON carries it as a float),
        // a negative allocated, a u64 beyond i64.
        let v: Value = serde_json::from_str(
            r#"{"rss": 2e19, "hwm": 18000000000000000000, "jemalloc": {"allocated": -5, "active": 10}, "uptime_ms": 5}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        impossible("last_sample", &v, None, &mut out);
        out.sort();
        let fields: Vec<(&str, bool)> = out.iter().map(|(f, _, neg)| (f.as_str(), *neg)).collect();
        assert_eq!(
            fields,
            vec![
                ("last_sample.hwm", false),
                ("last_sample.jemalloc.allocated", true),
                ("last_sample.rss", false)
            ]
        );
        let mut out = Vec::new();
        impossible("s", &json!({"rss": 300}), Some(100), &mut out);
        assert_eq!(out, vec![("s.rss".into(), "300".into(), false)]);
    }
}
