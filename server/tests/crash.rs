//! Acceptance: the real binary under its real crash monitor. `POST /admin/fault/segfault`
//! during a streaming turn: the started process (the monitor) dies of SIGSEGV like its child,
//! the crash directory holds a minidump the `minidump` crate parses (SIGSEGV, modules, the
//! crashing thread), and the journal has `crash` then `exit` under the child's boot, naming
//! the conversation whose turn was in flight. A restart on the same var directory seals that
//! turn.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;

use common::{ServerProcess, of_kind, read_journal, wait_for};

const TOKEN: &str = "drill-token-0123456789";

/// The finished minidumps (`*.dmp`) in `<var>/crashes`.
fn dumps_in(var: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(var.join("crashes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dmp"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segfault_leaves_a_minidump_crash_and_exit_records_and_a_sealed_turn() {
    let var = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(var.path(), &["--admin-token", TOKEN]);
    let http = server.client();
    let (status, health) = http.json("GET", "/health", None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["telemetry"]["crash_monitor"], "attached", "{health}");
    let boot = health["boot"].as_str().unwrap().to_owned();

    // A slow streaming turn, in flight when the server crashes.
    let conversation = http.create_conversation().await;
    let (h, c) = (http.clone(), conversation.clone());
    let client =
        tokio::spawn(async move { h.stream_turn(&c, "rate:10 size:100000", |_| {}).await });
    let journal = server.journal_dir();
    let turn = wait_for("the turn's turn.start on disk", || {
        let r = read_journal(&journal);
        of_kind(&r, "turn.start")
            .into_iter()
            .find(|t| t["conversation"] == conversation.as_str())
            .and_then(|t| t["turn"].as_str().map(str::to_owned))
    });

    let auth = format!("Bearer {TOKEN}");
    let (status, body) =
        http.raw("POST", "/admin/fault/segfault", &[("authorization", &auth)], Vec::new()).await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let status = server.child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "the monitor dies the way its child did");
    let _ = client.await;

    // The minidump: 0600, parses, SIGSEGV, a module list, the crashing thread in it.
    let dumps = dumps_in(var.path());
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dumps[0]).unwrap().permissions().mode() & 0o777, 0o600);
    let md = minidump::Minidump::read_path(&dumps[0]).unwrap();
    let exc: minidump::MinidumpException<'_> = md.get_stream().unwrap();
    assert_eq!(exc.raw.exception_record.exception_code as i32, libc::SIGSEGV);
    let modules: minidump::MinidumpModuleList = md.get_stream().unwrap();
    assert!(
        modules.iter().any(|m| m.name.ends_with("dispatch-server")),
        "the server binary is among the modules"
    );
    let threads: minidump::MinidumpThreadList<'_> = md.get_stream().unwrap();
    let tid = exc.get_crashing_thread_id();
    assert!(threads.get_thread(tid).is_some(), "the crashing thread's stack is in the dump");
    assert!(
        inject_segfault_is_on_the_crashing_stack(&md, &exc, &threads, &modules),
        "inject_segfault is the crashing frame or a return address on the crashing stack"
    );

    // `crash` then `exit`, last, under the child's boot.
    let records = read_journal(&journal);
    let ours: Vec<_> = records.iter().filter(|r| r["boot"] == boot.as_str()).collect();
    let n = ours.len();
    let (crash, exit) = (ours[n - 2], ours[n - 1]);
    assert_eq!(crash["kind"], "crash", "{crash}");
    assert_eq!(exit["kind"], "exit", "{exit}");
    assert_eq!(crash["signal"], "SIGSEGV");
    assert_eq!(crash["thread"], u64::from(tid));
    assert_eq!(crash["thread_name"], "dispatch-fault", "{crash}");
    assert_eq!(crash["fault_address"], "0x0000000000000000", "a write through a null pointer");
    assert_eq!(crash["minidump"], dumps[0].to_str().unwrap());
    let active: Vec<&str> = crash["active_conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(active.contains(&conversation.as_str()), "{crash}");
    assert!(crash["last_sample"]["rss"].as_u64().is_some(), "{crash}");
    assert_eq!(exit["signal"], "SIGSEGV");
    assert!(exit["status"].is_null());
    assert_eq!(exit["seq"].as_u64().unwrap(), crash["seq"].as_u64().unwrap() + 1);
    drop(server);

    // The next start seals the cut-off turn.
    let server = ServerProcess::start(var.path(), &[]);
    let (_, conv) =
        server.client().json("GET", &format!("/v1/conversations/{conversation}"), None).await;
    assert_eq!(conv["status"], "idle", "{conv}");
    assert_eq!(conv["turns_list"][0]["status"], "sealed", "{conv}");
    let records = read_journal(&server.journal_dir());
    let sealed = of_kind(&records, "turn.end")
        .into_iter()
        .find(|e| e["turn"] == turn.as_str() && e["outcome"] == "sealed");
    assert!(sealed.is_some_and(|e| e["boot"] != boot.as_str()), "sealed by the next boot");
}

/// Whether the crashing instruction, or a return address on the crashing thread's stack, lies
/// in `inject_segfault` (its range read from the binary's symbol table with `nm`, relocated by
/// the module's load address in the dump). A stack scan, as a stack walker's last resort: in a
/// debug build the faulting store is in `core::ptr::write_volatile`, called by
/// `inject_segfault`; in a release build it is inlined into it.
fn inject_segfault_is_on_the_crashing_stack<T: std::ops::Deref<Target = [u8]>>(
    md: &minidump::Minidump<'_, T>,
    exc: &minidump::MinidumpException<'_>,
    threads: &minidump::MinidumpThreadList<'_>,
    modules: &minidump::MinidumpModuleList,
) -> bool {
    use minidump::Module as _;
    let exe = env!("CARGO_BIN_EXE_dispatch-server");
    let nm = std::process::Command::new("nm")
        .args(["-S", "--defined-only", exe])
        .output()
        .expect("this test reads the symbol table with nm (binutils)");
    let symbols = String::from_utf8_lossy(&nm.stdout);
    let (start, size) = symbols
        .lines()
        .find(|l| l.contains("inject_segfault"))
        .and_then(|l| {
            let mut f = l.split_whitespace();
            let start = u64::from_str_radix(f.next()?, 16).ok()?;
            let size = u64::from_str_radix(f.next()?, 16).ok()?;
            Some((start, size))
        })
        .expect("inject_segfault in the symbol table");
    let base = modules.iter().find(|m| m.name.ends_with("dispatch-server")).unwrap().base_address();
    let range = base + start..base + start + size;
    let sys: minidump::MinidumpSystemInfo = md.get_stream().unwrap();
    let misc: Option<minidump::MinidumpMiscInfo> = md.get_stream().ok();
    let ctx = exc.context(&sys, misc.as_ref()).expect("the exception's CPU context");
    if range.contains(&ctx.get_instruction_pointer()) {
        return true;
    }
    let sp = ctx.get_stack_pointer();
    let memory = md.get_memory().unwrap_or_default();
    let thread = threads.get_thread(exc.get_crashing_thread_id()).unwrap();
    let stack = thread.stack_memory(&memory).expect("the crashing thread's stack memory");
    let bytes = stack.bytes();
    let from = usize::try_from(sp.saturating_sub(stack.base_address())).unwrap();
    bytes[from.min(bytes.len())..]
        .chunks_exact(8)
        .take(4096)
        .any(|w| range.contains(&u64::from_le_bytes(w.try_into().unwrap())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_whether_the_crash_monitor_is_attached() {
    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(var.path(), &[]);
    let (status, health) = server.client().json("GET", "/health", None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["telemetry"]["crash_monitor"], "attached", "{health}");
    assert_ne!(server.pid(), server.child.id() as i32, "the server runs as the monitor's child");
    let records = read_journal(&server.journal_dir());
    assert_eq!(of_kind(&records, "process.start")[0]["config"]["crash_monitor"], "attached");
    drop(server);

    let var = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(var.path(), &["--no-crash-monitor"]);
    let (status, health) = server.client().json("GET", "/health", None).await;
    assert_eq!(status, 200, "a detached monitor is reported, not fatal: {health}");
    assert_eq!(health["telemetry"]["crash_monitor"], "detached", "{health}");
    let note = health["telemetry"]["crash_monitor_note"].as_str().unwrap();
    assert!(note.contains("disabled"), "{note}");
    assert_eq!(server.pid(), server.child.id() as i32, "no monitor process");
    let records = read_journal(&server.journal_dir());
    let start = of_kind(&records, "process.start")[0].clone();
    assert_eq!(start["config"]["crash_monitor"], "detached", "{start}");
}

/// Every crashing fault through the real monitor: the started process dies of the fault's
/// signal, and the minidump says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_crashing_fault_leaves_a_dump_with_its_signal() {
    for (fault, signo, name) in [
        ("abort", libc::SIGABRT, "SIGABRT"),
        ("stack-overflow", libc::SIGSEGV, "SIGSEGV"),
        ("sigbus", libc::SIGBUS, "SIGBUS"),
        ("sigill", libc::SIGILL, "SIGILL"),
    ] {
        let var = tempfile::tempdir().unwrap();
        let mut server = ServerProcess::start(var.path(), &["--admin-token", TOKEN]);
        let (_, health) = server.client().json("GET", "/health", None).await;
        let boot = health["boot"].as_str().unwrap().to_owned();
        let auth = format!("Bearer {TOKEN}");
        let path = format!("/admin/fault/{fault}");
        let (status, _) =
            server.client().raw("POST", &path, &[("authorization", &auth)], Vec::new()).await;
        assert_eq!(status, 202, "{fault}");
        let status = server.child.wait().unwrap();
        assert_eq!(status.signal(), Some(signo), "{fault}: {status:?}");
        let dumps = dumps_in(var.path());
        assert_eq!(dumps.len(), 1, "{fault}: {dumps:?}");
        let md = minidump::Minidump::read_path(&dumps[0]).unwrap();
        let exc: minidump::MinidumpException<'_> = md.get_stream().unwrap();
        assert_eq!(exc.raw.exception_record.exception_code as i32, signo, "{fault}");
        let records = read_journal(&server.journal_dir());
        let ours: Vec<_> = records.iter().filter(|r| r["boot"] == boot.as_str()).collect();
        let (crash, exit) = (ours[ours.len() - 2], ours[ours.len() - 1]);
        assert_eq!((&crash["kind"], &crash["signal"]), (&"crash".into(), &name.into()), "{crash}");
        assert_eq!(crash["thread_name"], "dispatch-fault", "{fault}: {crash}");
        assert_eq!((&exit["kind"], &exit["signal"]), (&"exit".into(), &name.into()), "{exit}");
    }
}

/// A monitor killed on its own (no service manager to clean up) does not leave the server
/// running unsupervised: the server gets SIGTERM (PR_SET_PDEATHSIG) and stops gracefully.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stops_when_its_monitor_is_killed() {
    let var = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(var.path(), &[]);
    let (_, health) = server.client().json("GET", "/health", None).await;
    let boot = health["boot"].as_str().unwrap().to_owned();
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let stop = wait_for("the orphaned server's process.stop", || {
        let r = read_journal(&server.journal_dir());
        of_kind(&r, "process.stop").into_iter().find(|s| s["boot"] == boot.as_str()).cloned()
    });
    assert_eq!(stop["reason"], "signal:SIGTERM", "{stop}");
}

/// The acceptance drill of the security issue: a server started with a database URL holding a
/// password in its environment and the provider key on its command line segfaults; the
/// minidump the monitor keeps holds neither secret anywhere in its raw bytes (the `environ`
/// and `cmdline` streams, the stacks, the heap pages included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_the_server_holds_no_secret_from_its_environment_or_command_line() {
    const PASSWORD: &str = "hunter2-correct-horse";
    const KEY: &str = "sk-abcdef0123456789abcdef0123456789";
    let var = tempfile::tempdir().unwrap();
    let url = format!("postgres://u:{PASSWORD}@db/x");
    let mut server = ServerProcess::start_with_env(
        var.path(),
        &["--admin-token", TOKEN, "--openai-api-key", KEY],
        &[("DATABASE_URL", url.as_str())],
    );
    let http = server.client();
    // A turn first, so the server's heap has been busy before the dump.
    let conversation = http.create_conversation().await;
    let _ = http.stream_turn(&conversation, "size:2000", |_| {}).await;
    let auth = format!("Bearer {TOKEN}");
    let (status, _) =
        http.raw("POST", "/admin/fault/segfault", &[("authorization", &auth)], Vec::new()).await;
    assert_eq!(status, 202);
    let status = server.child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSEGV));
    let dumps = dumps_in(var.path());
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let bytes = std::fs::read(&dumps[0]).unwrap();
    let has = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(bytes.len() > 10_000, "a real dump: {} bytes", bytes.len());
    assert!(!has(PASSWORD), "the database password is in the dump");
    assert!(!has(KEY), "the provider key is in the dump");
    assert!(!has(TOKEN), "the admin token is in the dump");
    // The dump still names what it scrubbed around: the variable's name survives.
    assert!(has("DATABASE_URL"), "the environ stream is in the dump");
}
