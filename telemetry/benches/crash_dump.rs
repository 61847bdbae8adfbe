//! Time from the signal to a complete minidump, and the dump's size, for a process with 100
//! threads, through the real monitor.
//!
//! `cargo bench -p dispatch-telemetry --features crash --bench crash_dump [-- RUNS]`
//! (default 10 runs). Each run starts this binary as a supervised service (monitor + child);
//! the child starts 99 more threads (each with its alternate signal stack, parked), writes the
//! wall-clock time just before it dereferences null, and crashes. The dump is complete when
//! the monitor has written and fsynced it; its modification time is that moment. Latency =
//! dump mtime - time of the signal, both CLOCK_REALTIME.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dispatch_telemetry::crash::{CrashBuilder, install_thread_altstack};

const DIR: &str = "DISPATCH_BENCH_CRASH_DIR";
const IDLE: &str = "DISPATCH_BENCH_IDLE_DIR";
const THREADS: usize = 100;

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn start_threads() {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
    for i in 1..THREADS {
        let b = barrier.clone();
        std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                install_thread_altstack();
                let scratch = [i as u8; 4096];
                std::hint::black_box(&scratch);
                b.wait();
                std::thread::sleep(Duration::from_secs(3600));
            })
            .expect("spawn");
    }
    barrier.wait();
}

/// The anchor's subject: the same 100 threads, idle, for `gcore` to dump.
fn idle(dir: &Path) -> ! {
    start_threads();
    std::fs::write(dir.join("ready"), b"").expect("ready");
    std::thread::sleep(Duration::from_secs(3600));
    std::process::exit(0)
}

/// The anchor: gdb's `gcore` writing a core file of the same 100-thread process.
fn gcore_anchor() -> Option<(f64, u64)> {
    let dir = tempfile::tempdir().ok()?;
    let mut child = std::process::Command::new(std::env::current_exe().ok()?)
        .env(IDLE, dir.path())
        .spawn()
        .ok()?;
    while !dir.path().join("ready").exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = dir.path().join("core");
    let t = std::time::Instant::now();
    let ok = std::process::Command::new("gcore")
        .arg("-o")
        .arg(&out)
        .arg(child.id().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let _ = child.kill();
    let _ = child.wait();
    let core = std::fs::read_dir(dir.path())
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("core"))?;
    ok.then(|| (ms, core.metadata().map(|m| m.len()).unwrap_or(0)))
}

#[allow(unsafe_code)]
fn service(dir: &Path) -> ! {
    let supervised =
        CrashBuilder::new(dir.join("journal"), dir.join("crashes")).service("bench").start();
    assert!(supervised.is_monitored(), "not monitored: {:?}", supervised.note());
    start_threads();
    std::fs::write(dir.join("t0"), nanos(SystemTime::now()).to_string()).expect("t0");
    // SAFETY: deliberately crashes the process; that is the benchmark.
    unsafe { sadness_generator::raise_segfault() }
}

fn main() {
    if let Ok(d) = std::env::var(DIR) {
        service(Path::new(&d));
    }
    if let Ok(d) = std::env::var(IDLE) {
        idle(Path::new(&d));
    }
    let runs: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let mut lat_ms = Vec::new();
    let mut sizes = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env(DIR, dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}");
        let t0: u128 =
            std::fs::read_to_string(dir.path().join("t0")).expect("t0").parse().expect("t0");
        let dump: PathBuf = std::fs::read_dir(dir.path().join("crashes"))
            .expect("crashes")
            .map(|e| e.expect("entry").path())
            .find(|p| p.extension().is_some_and(|e| e == "dmp"))
            .expect("a dump");
        let meta = std::fs::metadata(&dump).expect("meta");
        let done = nanos(meta.modified().expect("mtime"));
        lat_ms.push((done.saturating_sub(t0)) as f64 / 1e6);
        sizes.push(meta.len());
    }
    lat_ms.sort_by(f64::total_cmp);
    sizes.sort_unstable();
    println!("minidump of a {THREADS}-thread process, {runs} runs");
    println!(
        "signal->dump complete: median_ms={:.1} max_ms={:.1}; dump bytes: median={} max={}",
        lat_ms[lat_ms.len() / 2],
        lat_ms[lat_ms.len() - 1],
        sizes[sizes.len() / 2],
        sizes[sizes.len() - 1]
    );
    match gcore_anchor() {
        Some((ms, bytes)) => println!(
            "anchor gcore of the same 100-thread process (idle): ms={ms:.1} core bytes={bytes}"
        ),
        None => println!("anchor gcore: not available (install gdb)"),
    }
}
