//! `dispatchctl postmortem --dump` on rust-minidump's real test dumps, checked against the
//! reference reader: `minidump-stackwalk` built from the same crates version (installed by
//! `scripts/test-tools`). Crash reason, address, crashing thread and every frame of the
//! crashing thread (function, file, line, inlined calls first, trust, module offset) must
//! agree, with the fixtures' symbols and with an empty store.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/minidumps");

/// The path of a reference tool; fails (never skips) when it cannot be installed.
fn tool(name: &str) -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/test-tools");
    let out = Command::new(script)
        .arg(name)
        .output()
        .unwrap_or_else(|e| panic!("{name} is needed by this test: running {script} failed: {e}"));
    assert!(
        out.status.success(),
        "{name} is needed by this test and could not be installed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(FIXTURES).join(rel)
}

fn stackwalk(dump: &Path, symbols: &Path) -> Value {
    let out = Command::new(tool("minidump-stackwalk"))
        .args(["--json", "--symbols-path"])
        .arg(symbols)
        .arg(dump)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "minidump-stackwalk {}: {}",
        dump.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Ours, in a var dir with no database: the dump part only.
fn postmortem(dump: &Path, symbols: &Path) -> Value {
    let var = tempfile::tempdir().unwrap();
    let mut cmd = common::dispatchctl_command();
    cmd.arg("--var-dir").arg(var.path()).args(["postmortem", "--format", "json", "--dump"]);
    cmd.arg(dump).arg("--symbols").arg(symbols);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "postmortem {}: {}",
        dump.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn hex(v: &Value) -> Option<u64> {
    u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok()
}

/// A thread's frames with inlined calls first, as stackwalk lists them:
/// (function, file, line, trust, module, module offset).
type Row = (Option<String>, Option<String>, Option<u64>, String, Option<String>, Option<u64>);

fn rows(thread: &Value) -> Vec<Row> {
    let s = |v: &Value| v.as_str().map(str::to_owned);
    let mut out = Vec::new();
    for f in thread["frames"].as_array().unwrap() {
        for i in f["inlines"].as_array().into_iter().flatten() {
            out.push((
                s(&i["function"]),
                s(&i["file"]),
                i["line"].as_u64(),
                "inlined".into(),
                s(&f["module"]),
                hex(&f["module_offset"]),
            ));
        }
        out.push((
            s(&f["function"]),
            s(&f["file"]),
            f["line"].as_u64(),
            s(&f["trust"]).unwrap(),
            s(&f["module"]),
            hex(&f["module_offset"]),
        ));
    }
    out
}

fn assert_same(dump: &str, symbols: &Path) -> (Value, Value) {
    let path = fixture(dump);
    let theirs = stackwalk(&path, symbols);
    let ours = postmortem(&path, symbols);
    let (t, o) = (&theirs["crash_info"], &ours["crash_info"]);
    assert_eq!(o["type"], t["type"], "{dump}: crash reason");
    assert_eq!(hex(&o["address"]), hex(&t["address"]), "{dump}: crash address");
    assert_eq!(o["crashing_thread"], t["crashing_thread"], "{dump}: crashing thread");
    assert_eq!(ours["thread_count"], theirs["thread_count"], "{dump}: threads");
    let (tr, or) = (rows(&theirs["crashing_thread"]), rows(&ours["crashing_thread"]));
    assert!(!tr.is_empty(), "{dump}: stackwalk found no frames");
    assert_eq!(or, tr, "{dump}: crashing thread frames (inlines first)");
    // Every other thread too.
    let (tt, ot) = (theirs["threads"].as_array().unwrap(), ours["threads"].as_array().unwrap());
    for (i, (a, b)) in tt.iter().zip(ot).enumerate() {
        assert_eq!(rows(b), rows(a), "{dump}: thread {i}");
    }
    // Modules: the same ids, and missing_symbols where stackwalk says so.
    let ids = |v: &Value| -> Vec<(String, String, String, bool)> {
        v["modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["filename"].as_str().unwrap().to_owned(),
                    m["debug_id"].as_str().unwrap_or("").to_owned(),
                    m["code_id"].as_str().unwrap_or("").to_owned(),
                    m["missing_symbols"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    };
    assert_eq!(ids(&ours), ids(&theirs), "{dump}: modules");
    (theirs, ours)
}

#[test]
fn linux_macos_and_windows_dumps_agree_with_minidump_stackwalk() {
    let symbols = fixture("symbols");
    let (_, mac) = assert_same("dumps/pipeline-inlines-macos-segv.dmp", &symbols);
    // The fixture is there to exercise inlines and CFI: make sure they were.
    let frames = rows(&mac["crashing_thread"]);
    assert_eq!(frames[0].0.as_deref(), Some("core::ptr::write_volatile::<u8>"));
    assert_eq!(frames[0].3, "inlined");
    assert_eq!(frames[1].0.as_deref(), Some("sadness_generator::raise_segfault"));
    assert!(frames.iter().any(|f| f.3 == "cfi"), "{frames:?}");
    let (_, win) = assert_same("dumps/test.dmp", &symbols);
    assert_eq!(
        rows(&win["crashing_thread"])[0].0.as_deref(),
        Some("`anonymous namespace'::CrashFunction")
    );
    let (_, linux) = assert_same("dumps/linux-mini.dmp", &symbols);
    assert!(rows(&linux["crashing_thread"]).iter().skip(1).all(|f| f.3 == "scan"));
    assert_same("dumps/simple-crashpad.dmp", &symbols);
}

#[test]
fn with_an_empty_store_frames_are_module_plus_offset_and_never_named() {
    let empty = tempfile::tempdir().unwrap();
    for dump in ["dumps/pipeline-inlines-macos-segv.dmp", "dumps/test.dmp", "dumps/linux-mini.dmp"]
    {
        let (_, ours) = assert_same(dump, empty.path());
        for t in ours["threads"].as_array().unwrap() {
            for f in t["frames"].as_array().unwrap() {
                assert!(f.get("function").is_none() && f.get("inlines").is_none(), "{dump}: {f}");
                assert_eq!(f["missing_symbols"], true);
            }
        }
        for m in ours["modules"].as_array().unwrap().iter().filter(|m| m["missing_symbols"] == true)
        {
            let note = m["symbols_note"].as_str().unwrap();
            assert_eq!(note, format!("no symbols for {}", m["debug_id"].as_str().unwrap()));
        }
    }
    // The Markdown names them module+offset.
    let var = tempfile::tempdir().unwrap();
    let md = common::stdout_of(
        common::dispatchctl_command(),
        &[
            "--var-dir",
            var.path().to_str().unwrap(),
            "postmortem",
            "--dump",
            fixture("dumps/test.dmp").to_str().unwrap(),
            "--symbols",
            empty.path().to_str().unwrap(),
        ],
    );
    assert!(md.contains("test\\_app.exe+0x429e"), "{md}");
    assert!(md.contains("no symbols for 5A9832E5287241C1838ED98914E9B7FF1"), "{md}");
    assert!(!md.contains("CrashFunction"), "{md}");
}

/// A `.sym` file stored under the module's id whose MODULE line names another build is
/// refused: no names from another build, and the report says why.
#[test]
fn symbols_of_another_build_under_the_right_path_are_refused() {
    let store = tempfile::tempdir().unwrap();
    let id = "5A9832E5287241C1838ED98914E9B7FF1";
    let src = fixture(&format!("symbols/test_app.pdb/{id}/test_app.sym"));
    let text = std::fs::read_to_string(src).unwrap();
    let other = "5A9832E5287241C1838ED98914E9B7FF2";
    let dir = store.path().join("test_app.pdb").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("test_app.sym"), text.replacen(id, other, 1)).unwrap();
    let ours = postmortem(&fixture("dumps/test.dmp"), store.path());
    let frames = rows(&ours["crashing_thread"]);
    assert!(frames.iter().all(|f| f.0.is_none()), "{frames:?}");
    let m = ours["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["filename"] == "test_app.exe")
        .unwrap();
    assert_eq!(m["symbols"]["status"], "refused");
    assert_eq!(m["symbols"]["found"], other);
    assert!(
        m["symbols_note"].as_str().unwrap().contains(&format!("no symbols for {id}: refused")),
        "{m}"
    );
}

#[test]
fn malformed_and_truncated_dumps_are_a_clear_error_and_exit_2() {
    for (dump, says) in [
        ("dumps/invalid-range.dmp", "is malformed: the stream directory starts at byte 2"),
        ("dumps/invalid-record-count.dmp", "is malformed: the stream directory starts at byte 30"),
        (
            "corrupt/linux-mini.truncated-30pct.dmp",
            "is truncated: stream 3 (thread list) ends at byte 26980, but the file has 8264 bytes",
        ),
    ] {
        let path = fixture(dump);
        let var = tempfile::tempdir().unwrap();
        let out = common::dispatchctl_command()
            .arg("--var-dir")
            .arg(var.path())
            .args(["postmortem", "--format", "json", "--dump"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{dump}: {stderr}");
        assert!(
            stderr.contains(&format!("minidump {} {says}", path.display())),
            "{dump}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{dump}: {stderr}");
        assert!(out.stdout.is_empty(), "{dump}: no half report on stdout");
    }
}

#[test]
fn junk_inside_a_stack_still_reports_the_intact_facts() {
    let symbols = fixture("symbols");
    let (theirs, ours) = assert_same("corrupt/linux-mini.random-4k-at-1000.dmp", &symbols);
    // The same signal, address and thread as the intact dump.
    let intact = postmortem(&fixture("dumps/linux-mini.dmp"), &symbols);
    for k in ["type", "address", "crashing_thread"] {
        assert_eq!(ours["crash_info"][k], intact["crash_info"][k], "{k}");
    }
    assert_eq!(theirs["crash_info"]["type"], "SIGSEGV");
    assert_eq!(ours["crashing_thread"]["thread_id"], intact["crashing_thread"]["thread_id"]);
    assert!(ours["journal"]["absent"].as_str().unwrap().contains("the journal part is absent"));
}
