//! Self-registration in the symbol store, on the real server binary: with
//! `DISPATCH_SYMBOL_STORE` set, the running executable appears at
//! `<store>/dispatch-server/<DEBUG ID>/dispatch-server` (0600 in 0700 directories), with the
//! build-id `readelf -n` reads from the binary, and a `symbols.stored` record says so; a
//! second start finds it present; unset writes nothing; a store that cannot be made is a
//! warning and a `failed` record while the server keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{ServerProcess, of_kind, read_journal, wait_for};

const SERVER: &str = env!("CARGO_BIN_EXE_dispatch-server");

/// The build-id binutils' `readelf -n` prints (independent of the code under test).
fn readelf_build_id(path: &Path) -> String {
    let out = std::process::Command::new("readelf").arg("-n").arg(path).output().expect("readelf");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_owned))
        .expect("the server binary has a build-id note")
}

/// Breakpad's debug id of a little-endian ELF, by hand: first 16 bytes as a GUID with the
/// first three fields byte-swapped, uppercase, age 0.
fn debug_id_by_hand(build_id: &str) -> String {
    let b = |i: usize| build_id[2 * i..2 * i + 2].to_uppercase();
    [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15].iter().map(|&i| b(i)).collect::<String>()
        + "0"
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn stored_record(var: &Path) -> serde_json::Value {
    wait_for("a symbols.stored record", || {
        of_kind(&read_journal(&var.join("journal")), "symbols.stored").first().map(|r| (*r).clone())
    })
}

#[test]
fn the_server_copies_its_executable_into_the_store_once() {
    let tmp = tempfile::tempdir().unwrap();
    let var = tmp.path().join("var");
    std::fs::create_dir_all(&var).unwrap();
    let store = tmp.path().join("store");
    let envs = [("DISPATCH_SYMBOL_STORE", store.to_str().unwrap())];
    let mut server = ServerProcess::start_with_env(&var, &[], &envs);
    let record = stored_record(&var);

    let build_id = readelf_build_id(Path::new(SERVER));
    let debug_id = debug_id_by_hand(&build_id);
    let copy = store.join("dispatch-server").join(&debug_id).join("dispatch-server");
    assert_eq!(record["outcome"], "copied", "{record}");
    assert_eq!(record["build_id"], build_id.as_str());
    assert_eq!(record["debug_id"], debug_id.as_str());
    assert_eq!(record["path"], copy.to_str().unwrap());
    assert!(record.get("error").is_none(), "{record}");
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(SERVER).unwrap(), "a byte copy");
    assert_eq!(record["bytes"].as_u64(), Some(std::fs::metadata(SERVER).unwrap().len()));
    assert_eq!(readelf_build_id(&copy), build_id);
    assert_eq!(mode(&copy), 0o600);
    for dir in
        [&store, &store.join("dispatch-server"), &store.join("dispatch-server").join(&debug_id)]
    {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    let names: Vec<_> = std::fs::read_dir(copy.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["dispatch-server"], "no temporary file left");
    assert!(server.signal_and_wait(libc::SIGTERM).success());

    // The next start of the same build finds it there and writes nothing.
    let var2 = tmp.path().join("var2");
    std::fs::create_dir_all(&var2).unwrap();
    let modified = std::fs::metadata(&copy).unwrap().modified().unwrap();
    let mut server = ServerProcess::start_with_env(&var2, &[], &envs);
    let record = stored_record(&var2);
    assert_eq!(record["outcome"], "present", "{record}");
    assert_eq!(std::fs::metadata(&copy).unwrap().modified().unwrap(), modified);
    assert!(server.signal_and_wait(libc::SIGTERM).success());
}

#[test]
fn unset_writes_nothing_and_a_bad_store_only_warns() {
    let tmp = tempfile::tempdir().unwrap();
    let var = tmp.path().join("var");
    std::fs::create_dir_all(&var).unwrap();
    let mut server = ServerProcess::start(&var, &[]);
    assert!(server.signal_and_wait(libc::SIGTERM).success());
    // The process is gone: whatever it would have written is written.
    let records = read_journal(&var.join("journal"));
    assert!(!of_kind(&records, "process.stop").is_empty(), "the server ran to a clean stop");
    assert!(of_kind(&records, "symbols.stored").is_empty());
    assert!(!var.join("symbols").exists());

    // A store path that is a file: a `failed` record and a warning, and the server serves.
    let var = tmp.path().join("var-bad");
    std::fs::create_dir_all(&var).unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let mut server = ServerProcess::start_with_env(
        &var,
        &[],
        &[("DISPATCH_SYMBOL_STORE", file.to_str().unwrap())],
    );
    let record = stored_record(&var);
    assert_eq!(record["outcome"], "failed", "{record}");
    assert!(
        record["error"].as_str().unwrap().starts_with(&format!("creating {}/", file.display())),
        "{record}"
    );
    let stderr = wait_for("the warning", || {
        let log = std::fs::read_to_string(var.join("server.stderr")).ok()?;
        log.contains("WARNING: symbol store").then_some(log)
    });
    assert!(stderr.contains("dispatchctl symbols add"), "{stderr}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = rt.block_on(async { server.client().json("GET", "/health", None).await.0 });
    assert_eq!(status, 200, "the server still serves");
    assert!(server.signal_and_wait(libc::SIGTERM).success());
}

#[path = "../../cli/tests/common/debuginfod.rs"]
mod debuginfod;

#[test]
fn debian_debuginfod_serves_the_server_binary_to_a_lookup() {
    // The fleet-scale path on the real server binary: debuginfod (on loopback, in a private
    // network namespace) over a directory holding it; a post-mortem's lookup by the ids a dump
    // of it would carry fetches it through DEBUGINFOD_URLS, caches it and converts it.
    let url = format!("http://127.0.0.1:{}", debuginfod::PORT);
    let out = debuginfod::run_inner("inner_lookup_of_the_server", &[("DEBUGINFOD_URLS", url)]);
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "inner test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("test inner_lookup_of_the_server ... ok"), "{stdout}");
}

#[test]
#[ignore = "run by debian_debuginfod_serves_the_server_binary_to_a_lookup in a private network namespace"]
fn inner_lookup_of_the_server() {
    use dispatch_cli::symbols::{Debuginfod, Lookup, ModuleIds, Store};
    debuginfod::assert_inner();
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::copy(SERVER, served.join("dispatch-server")).unwrap();
    let build_id = readelf_build_id(Path::new(SERVER));
    let debug_id = debug_id_by_hand(&build_id);
    let mut server = debuginfod::Debuginfod::start(&served, tmp.path());
    server.wait_indexed(&build_id);

    let store = Store::open(tmp.path().join("store")).unwrap();
    let ids = ModuleIds {
        code_file: "/opt/dispatch/bin/dispatch-server".into(),
        debug_id: debug_id.clone(),
        code_id: Some(build_id.clone()),
    };
    let remote = Debuginfod::from_env().unwrap();
    let sym = match store.lookup(&ids, &remote).unwrap() {
        Lookup::Found(p) => p,
        missing => panic!("{missing:?}"),
    };
    drop(server);
    let dir = tmp.path().join("store").join("dispatch-server").join(&debug_id);
    assert_eq!(sym, dir.join("dispatch-server.sym"));
    assert_eq!(std::fs::read(dir.join("dispatch-server")).unwrap(), std::fs::read(SERVER).unwrap());
    assert_eq!(mode(&dir.join("dispatch-server")), 0o600);
    let head = std::fs::read_to_string(&sym).unwrap();
    assert!(head.starts_with(&format!("MODULE Linux x86_64 {debug_id} dispatch-server\n")));
    assert!(head.contains("\nINLINE_ORIGIN ") && head.contains("\nSTACK CFI INIT "));
    assert!(head.contains(" dispatch_server::faults::"), "the server's own functions are named");
    // Found again without the server: the cached copy serves.
    assert_eq!(store.lookup(&ids, &Debuginfod::none()).unwrap(), Lookup::Found(sym));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minidump_stackwalk_names_a_crash_of_this_build_from_the_store() {
    // End to end with the reference reader: the server registers itself, crashes on the
    // segfault drill, its dump's module ids find the copy (converted by a lookup), and
    // rust-minidump's `minidump-stackwalk --symbols-path <store>` names the crashing frames.
    use dispatch_cli::symbols::{Debuginfod, Lookup, ModuleIds, Store};
    use minidump::Module as _;
    use std::os::unix::process::ExitStatusExt;
    const TOKEN: &str = "drill-token-0123456789";
    let stackwalk = debuginfod::tools(&["minidump-stackwalk"]).remove(0);
    let tmp = tempfile::tempdir().unwrap();
    let var = tmp.path().join("var");
    std::fs::create_dir_all(&var).unwrap();
    let store_dir = tmp.path().join("store");
    let mut server = ServerProcess::start_with_env(
        &var,
        &["--admin-token", TOKEN],
        &[("DISPATCH_SYMBOL_STORE", store_dir.to_str().unwrap())],
    );
    let record = stored_record(&var);
    assert_eq!(record["outcome"], "copied", "{record}");
    let auth = format!("Bearer {TOKEN}");
    let (status, _) = server
        .client()
        .raw("POST", "/admin/fault/segfault", &[("authorization", &auth)], Vec::new())
        .await;
    assert_eq!(status, 202);
    assert_eq!(server.child.wait().unwrap().signal(), Some(libc::SIGSEGV));
    let dump = std::fs::read_dir(var.join("crashes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "dmp"))
        .expect("the monitor wrote a minidump");

    // The dump's own ids for the executable are the ones the server stored itself under.
    let md = minidump::Minidump::read_path(&dump).unwrap();
    let modules: minidump::MinidumpModuleList = md.get_stream().unwrap();
    let main = modules
        .iter()
        .find(|m| m.code_file().ends_with("/dispatch-server"))
        .expect("the executable is a module of the dump");
    let ids = ModuleIds {
        code_file: main.code_file().into_owned(),
        debug_id: main.debug_identifier().unwrap().breakpad().to_string(),
        code_id: main.code_identifier().map(|c| c.as_str().to_owned()),
    };
    assert_eq!(record["debug_id"], ids.debug_id.as_str(), "the server's id rule = minidump's");
    assert_eq!(ids.code_id.as_deref(), record["build_id"].as_str());
    let store = Store::open(&store_dir).unwrap();
    let sym = match store.lookup(&ids, &Debuginfod::none()).unwrap() {
        Lookup::Found(p) => p,
        missing => panic!("{missing:?}"),
    };
    assert!(sym.starts_with(&store_dir));

    let out = std::process::Command::new(&stackwalk)
        .arg("--json")
        .arg("--symbols-path")
        .arg(&store_dir)
        .arg(&dump)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let module = report["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["filename"] == "dispatch-server")
        .expect("the executable in the report");
    assert_eq!(module["debug_id"], ids.debug_id.as_str(), "{module}");
    assert_eq!(module["loaded_symbols"], true, "{module}");
    assert_eq!(module["missing_symbols"], false, "{module}");
    let frames = report["crashing_thread"]["frames"].as_array().unwrap();
    let drill = frames
        .iter()
        .take(4)
        .find(|f| f["function"] == "dispatch_server::faults::inject_segfault")
        .unwrap_or_else(|| {
            panic!(
                "the drill among the first frames: {:#}",
                serde_json::json!(frames[..4.min(frames.len())])
            )
        });
    assert!(drill["file"].as_str().unwrap().ends_with("server/src/faults.rs"), "{drill}");
    // The line of the drill's body, read from the source (not a number that moves with edits).
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/faults.rs"),
    )
    .unwrap();
    let lines: Vec<&str> = source.lines().collect();
    let start = lines.iter().position(|l| l.contains("pub fn inject_segfault")).unwrap() + 1;
    let end = start + lines[start..].iter().position(|l| *l == "}").unwrap() + 1;
    let line = drill["line"].as_u64().unwrap() as usize;
    assert!(
        (start..=end).contains(&line),
        "line {line} not in inject_segfault ({start}..={end}): {drill}"
    );
}
