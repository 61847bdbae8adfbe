//! Scrubbing, end to end: a child started with `DATABASE_URL=postgres://u:hunter2@db/x` in its
//! environment and `--openai-api-key sk-...`, `--admin-token=...`, `--password ...` on its
//! command line, holding copies on its stack, segfaults under the real monitor. None of the
//! secrets may be anywhere in the raw bytes of its dump; the environment and command-line
//! streams are there, masked. A dump a killed monitor left unscrubbed is scrubbed when the next
//! monitor starts.
//!
//! `harness = false`: the child must take arbitrary arguments, which libtest would reject.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use dispatch_telemetry::crash::CrashBuilder;

const CASE: &str = "DISPATCH_TEST_CRASH_CASE";
const DIR: &str = "DISPATCH_TEST_CRASH_DIR";
const DB_URL: &str = "postgres://u:hunter2@db/x";
const DB_PASSWORD: &str = "hunter2";
const OPENAI_KEY: &str = "sk-abcdef0123456789abcdef";
const ADMIN_TOKEN: &str = "adm-tok-0123456789";
/// Neither shaped nor random: only the flag before it says it is a secret.
const PASSWORD: &str = "correct-horse";

fn service(dir: &Path) -> ! {
    let supervised =
        CrashBuilder::new(dir.join("journal"), dir.join("crashes")).service("svc").start();
    if !supervised.is_monitored() {
        eprintln!("not monitored: {:?}", supervised.note());
        std::process::exit(3);
    }
    // Copies on the crashing stack, which the dump includes.
    let mut held = [0u8; 128];
    let url = std::env::var("DATABASE_URL").unwrap();
    let key = std::env::args().skip_while(|a| a != "--openai-api-key").nth(1).unwrap();
    held[..url.len()].copy_from_slice(url.as_bytes());
    held[64..64 + key.len()].copy_from_slice(key.as_bytes());
    std::hint::black_box(&held);
    segfault(&held)
}

#[allow(unsafe_code)]
#[inline(never)]
fn segfault(held: &[u8; 128]) -> ! {
    std::hint::black_box(held);
    // SAFETY: deliberately crashes the process; that is the test.
    unsafe { sadness_generator::raise_segfault() }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn main() {
    if let (Ok(_), Ok(d)) = (std::env::var(CASE), std::env::var(DIR)) {
        service(Path::new(&d));
    }
    let dir = tempfile::tempdir().unwrap();
    let crashes = dir.path().join("crashes");
    std::fs::create_dir_all(&crashes).unwrap();
    // What a monitor killed between writing and scrubbing leaves.
    let left = crashes.join("old-1.dmp.unscrubbed");
    std::fs::write(&left, format!("MDMP... {DB_URL} ... Bearer {ADMIN_TOKEN} ...")).unwrap();

    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--openai-api-key",
            OPENAI_KEY,
            &format!("--admin-token={ADMIN_TOKEN}"),
            "--password",
            PASSWORD,
        ])
        .env(CASE, "scrub")
        .env(DIR, dir.path())
        .env("DATABASE_URL", DB_URL)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{:?} {stderr}", out.status);

    let mut names: Vec<PathBuf> =
        std::fs::read_dir(&crashes).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    assert!(
        names.iter().all(|p| p.extension().is_some_and(|e| e == "dmp")),
        "every dump scrubbed and renamed, no temporary left: {names:?}"
    );
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!left.exists(), "the leftover was scrubbed at the monitor's start");
    let old = std::fs::read(crashes.join("old-1.dmp")).unwrap();
    assert!(!contains(&old, DB_PASSWORD) && !contains(&old, ADMIN_TOKEN), "leftover scrubbed");

    let new = names.iter().find(|p| !p.ends_with("old-1.dmp")).unwrap();
    let raw = std::fs::read(new).unwrap();
    for secret in [DB_URL, DB_PASSWORD, OPENAI_KEY, ADMIN_TOKEN, PASSWORD] {
        assert!(!contains(&raw, secret), "{secret} is in the raw bytes of {}", new.display());
    }
    // The streams that held them are there, masked, and the dump still parses.
    let md = minidump::Minidump::read(&raw[..]).unwrap();
    let environ = md.get_raw_stream(minidump::format::MINIDUMP_STREAM_TYPE::LinuxEnviron as u32);
    let environ = environ.unwrap();
    assert!(contains(environ, &format!("DATABASE_URL={}", "*".repeat(DB_URL.len()))));
    let cmdline = md.get_raw_stream(minidump::format::MINIDUMP_STREAM_TYPE::LinuxCmdLine as u32);
    let cmdline = cmdline.unwrap();
    assert!(contains(cmdline, &format!("--openai-api-key\0{}", "*".repeat(OPENAI_KEY.len()))));
    let exc: minidump::MinidumpException<'_> = md.get_stream().unwrap();
    assert_eq!(exc.raw.exception_record.exception_code as i32, libc::SIGSEGV);
    println!("crash_scrub: ok ({} bytes scrubbed dump)", raw.len());
}
