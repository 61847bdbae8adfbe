//! Signatures of real dumps walked by the reference tool: rust-minidump's
//! `minidump-stackwalk --json --symbols-path` (installed by `scripts/test-tools`) over the
//! shared fixtures, its crashing thread read with `frames_from_stackwalk_json` and signed by
//! `signature::from_frames`. Fails, naming the tool, when it cannot be installed.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

use dispatch_cli::crashes::signature::{self, Trust};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/minidumps");

fn stackwalk() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(root.join("scripts/test-tools"))
        .arg("minidump-stackwalk")
        .output()
        .expect("running scripts/test-tools minidump-stackwalk");
    assert!(
        out.status.success(),
        "minidump-stackwalk (rust-minidump's reference tool) could not be installed by scripts/test-tools: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn walk(dump: &str) -> serde_json::Value {
    let out = Command::new(stackwalk())
        .args(["--json", "--symbols-path", &format!("{FIXTURES}/symbols")])
        .arg(format!("{FIXTURES}/dumps/{dump}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "minidump-stackwalk {dump}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_rust_dump_with_inlines_is_signed_by_the_faulting_function() {
    let frames =
        signature::frames_from_stackwalk_json(&walk("pipeline-inlines-macos-segv.dmp")).unwrap();
    // The walker's view: the inlined write_volatile first, then the function it is in.
    assert_eq!(frames[0].function.as_deref(), Some("core::ptr::write_volatile::<u8>"));
    assert_eq!(frames[1].function.as_deref(), Some("sadness_generator::raise_segfault"));
    assert_eq!(frames[0].trust, Trust::Context);
    assert!(frames.iter().any(|f| f.trust.is_scanned()), "the fixture has scanned frames");
    assert_eq!(signature::from_frames(&frames).unwrap(), "sadness_generator::raise_segfault");
}

#[test]
fn the_windows_dump_is_signed_by_its_crash_function() {
    let frames = signature::frames_from_stackwalk_json(&walk("test.dmp")).unwrap();
    assert_eq!(signature::from_frames(&frames).unwrap(), "(anonymous namespace)::CrashFunction");
}

#[test]
fn a_dump_without_symbols_has_no_stack_signature() {
    // The Linux fixture has no symbol file: a context frame without a name, then scanning.
    let frames = signature::frames_from_stackwalk_json(&walk("linux-mini.dmp")).unwrap();
    assert!(frames.iter().all(|f| f.function.is_none()), "{frames:?}");
    assert_eq!(signature::from_frames(&frames), None);
}
