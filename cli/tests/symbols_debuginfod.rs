//! `dispatchctl symbols fetch` and `Store::lookup` against Debian's real `debuginfod`, on
//! loopback inside a private network namespace (see `common/debuginfod.rs`): a build-id it
//! serves is fetched, checked, cached 0600 and converted to a `.sym` that rust-minidump's
//! parser reads; a split build (stripped executable + separate debug file) is fetched as both
//! and merged; a build-id it does not have is "not found on <url>"; `DEBUGINFOD_URLS` works
//! for `fetch` and for a lookup.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/debuginfod.rs"]
mod debuginfod;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use breakpad_symbols::SymbolFile;
use dispatch_cli::symbols::{Debuginfod, Lookup, ModuleIds, Store};

const PROGRAM: &str = "#include <stdio.h>
#include <stdlib.h>
static inline __attribute__((always_inline)) long scale(long x) { return x * VARIANT + 1; }
__attribute__((noinline)) long work(long n) { return scale(n) * scale(n + 1); }
int main(int argc, char **argv) { printf(\"%ld\\n\", work(argc > 1 ? atol(argv[1]) : 2)); return 0; }
";

fn compile(dir: &Path, variant: u32) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("p.c"), PROGRAM).unwrap();
    let status = Command::new("gcc")
        .current_dir(dir)
        .args(["-O2", "-g", "-Wl,--build-id"])
        .arg(format!("-DVARIANT={variant}"))
        .args(["-o", "p", "p.c"])
        .status()
        .expect("gcc (Debian package gcc)");
    assert!(status.success());
    dir.join("p")
}

fn readelf_build_id(path: &Path) -> String {
    let out = Command::new("readelf").arg("-n").arg(path).output().expect("readelf (binutils)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_owned))
        .unwrap()
}

fn debug_id_by_hand(build_id: &str) -> String {
    let b = |i: usize| build_id[2 * i..2 * i + 2].to_uppercase();
    [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15].iter().map(|&i| b(i)).collect::<String>()
        + "0"
}

fn nm_address(path: &Path, symbol: &str) -> u64 {
    let out = Command::new("nm").arg(path).output().expect("nm (binutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| l.split_whitespace().nth(2) == Some(symbol)).unwrap();
    u64::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn dispatchctl(args: &[&str]) -> Output {
    common::dispatchctl_command().env_remove("DEBUGINFOD_URLS").args(args).output().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn fetch_and_lookup_from_debian_debuginfod_on_loopback() {
    let url = format!("http://127.0.0.1:{}", debuginfod::PORT);
    let out =
        debuginfod::run_inner("inner_fetch_and_lookup", &[("DEBUGINFOD_URLS", format!("{url} "))]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "inner test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("test inner_fetch_and_lookup ... ok"), "the inner test ran: {stdout}");
}

#[test]
#[ignore = "run by fetch_and_lookup_from_debian_debuginfod_on_loopback in a private network namespace"]
fn inner_fetch_and_lookup() {
    debuginfod::assert_inner();
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    // A: one unstripped binary.
    let a = compile(&tmp.path().join("a"), 3);
    std::fs::copy(&a, served.join("prog-a")).unwrap();
    // B: a stripped executable and its separate debug file, as distributions ship them.
    let b = compile(&tmp.path().join("b"), 5);
    let objcopy = |args: &[&str]| {
        let ok = Command::new("objcopy").args(args).status().expect("objcopy (binutils)");
        assert!(ok.success(), "objcopy {args:?}");
    };
    let (b_exe, b_debug) = (served.join("prog-b"), served.join("prog-b.debug"));
    objcopy(&["--only-keep-debug", b.to_str().unwrap(), b_debug.to_str().unwrap()]);
    objcopy(&["--strip-debug", b.to_str().unwrap(), b_exe.to_str().unwrap()]);
    let (id_a, id_b) = (readelf_build_id(&a), readelf_build_id(&b));

    let mut server = debuginfod::Debuginfod::start(&served, tmp.path());
    server.wait_indexed(&id_a);
    server.wait_indexed(&id_b);
    let url = server.url.clone();

    // `symbols fetch --debuginfod URL`: cached (0600), converted, named after the server's file.
    let store = tmp.path().join("store");
    let s = store.to_str().unwrap();
    let out = dispatchctl(&["symbols", "fetch", &id_a, "--debuginfod", &url, "--store", s]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let debug_a = debug_id_by_hand(&id_a);
    assert!(
        text(&out.stdout).starts_with(&format!("stored prog-a {debug_a} (build-id {id_a})")),
        "{}",
        text(&out.stdout)
    );
    let dir_a = store.join("prog-a").join(&debug_a);
    let cached = dir_a.join("prog-a");
    assert_eq!(std::fs::read(&cached).unwrap(), std::fs::read(&a).unwrap(), "the served file");
    assert_eq!(mode(&cached), 0o600);
    assert_eq!(mode(&dir_a), 0o700);
    assert!(!store.join(".incoming").read_dir().unwrap().any(|_| true), "no download left over");
    let sym = SymbolFile::from_file(&dir_a.join("prog-a.sym")).unwrap();
    assert_eq!(sym.module_id, debug_a);
    assert_eq!(sym.functions.get(nm_address(&a, "work")).unwrap().name, "work");

    // B: /debuginfo is a debug file without unwind tables, so /executable is fetched too and
    // the two merge: lines from the debug file, CFI from the executable.
    let out =
        dispatchctl(&["--json", "symbols", "fetch", &id_b, "--debuginfod", &url, "--store", s]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &doc["results"][0]["module"];
    assert_eq!(m["name"], "prog-b", "{doc}");
    assert_eq!(
        (m["has_line_info"].as_bool(), m["has_cfi"].as_bool()),
        (Some(true), Some(true)),
        "{m}"
    );
    let binaries: Vec<&str> =
        m["binaries"].as_array().unwrap().iter().map(|b| b["path"].as_str().unwrap()).collect();
    let dir_b = store.join("prog-b").join(debug_id_by_hand(&id_b));
    assert_eq!(
        binaries,
        [dir_b.join("prog-b").to_str().unwrap(), dir_b.join("prog-b.debug").to_str().unwrap()]
    );
    assert!(m["source"].as_str().unwrap().contains(&format!("{url}/buildid/{id_b}/executable")));

    // A build-id the server does not have: said plainly, exit 2, nothing stored.
    let unknown = "00112233445566778899aabbccddeeff00112233";
    let out = dispatchctl(&["symbols", "fetch", unknown, "--debuginfod", &url, "--store", s]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!("dispatchctl: error: build-id {unknown}: not found on {url}\n")
    );

    // DEBUGINFOD_URLS (set by the outer test, with a trailing space) for `fetch`...
    let store2 = tmp.path().join("store2");
    let out = common::dispatchctl_command()
        .args(["symbols", "fetch", &id_a, "--store", store2.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(store2.join("prog-a").join(&debug_a).join("prog-a.sym").is_file());

    // ...and for a post-mortem's lookup: the store alone has nothing, debuginfod has it.
    let store3 = Store::open(tmp.path().join("store3")).unwrap();
    let ids = ModuleIds {
        code_file: "/usr/local/bin/prog-a".into(),
        debug_id: debug_a.clone(),
        code_id: Some(id_a.clone()),
    };
    match store3.lookup(&ids, &Debuginfod::none()).unwrap() {
        Lookup::Missing { why } => assert_eq!(why, format!("no symbols for {debug_a}")),
        found => panic!("{found:?}"),
    }
    let remote = Debuginfod::from_env().unwrap();
    assert_eq!(remote.urls(), [url.as_str()]);
    let sym_path = match store3.lookup(&ids, &remote).unwrap() {
        Lookup::Found(p) => p,
        missing => panic!("{missing:?}"),
    };
    assert_eq!(sym_path, store3.dir().join("prog-a").join(&debug_a).join("prog-a.sym"));
    assert!(store3.dir().join("prog-a").join(&debug_a).join("prog-a").is_file(), "cached");
    let unknown_ids = ModuleIds {
        code_file: "prog-a".into(),
        debug_id: debug_id_by_hand(unknown),
        code_id: Some(unknown.into()),
    };
    match store3.lookup(&unknown_ids, &remote).unwrap() {
        Lookup::Missing { why } => assert_eq!(
            why,
            format!(
                "no symbols for {} (build-id {unknown}: not found on {url})",
                debug_id_by_hand(unknown)
            )
        ),
        found => panic!("{found:?}"),
    }
    drop(server);
    // The server is gone: the next ask is a clear transport error naming the URL.
    match store3.lookup(&unknown_ids, &remote).unwrap() {
        Lookup::Missing { why } => assert!(
            why.contains(&format!("GET {url}/buildid/{unknown}/debuginfo: request failed")),
            "{why}"
        ),
        found => panic!("{found:?}"),
    }
}
