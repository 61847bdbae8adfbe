//! The monitor's dump server: an abstract `SOCK_SEQPACKET` socket that serves the monitor's
//! own child and nobody else.
//!
//! minidumper's `Server` is not used: it accepts any local peer, allocates whatever a header
//! claims, and its `run` returns (ending the dump thread for the rest of the run) on the first
//! malformed crash request. This server speaks the same wire format, so the child keeps using
//! minidumper's `Client` (8-byte header `{kind: u32, size: u32}`, then the payload), but:
//!
//! - a connection is kept only if `SO_PEERCRED` says its peer is the child's process (pid ==
//!   the child's pid, which the kernel reports for any of its threads) with our effective uid;
//!   any other peer is closed at once, before a byte is read;
//! - each packet is received into one fixed buffer of [`MAX_MESSAGE_BYTES`]; a longer packet,
//!   a header whose size disagrees with the packet, or an unknown kind closes that connection,
//!   and nothing is ever allocated from a header;
//! - a crash request is served only for the child's pid and one of its threads;
//! - a live-dump request (a stall: the child is alive and stays alive) gets a dump of the
//!   running child, scrubbed like a crash dump, whose path (or why not) is the answer;
//! - no error on one connection ends the loop, and a panic inside it (minidump-writer on a
//!   strange process) is caught and the loop goes on, keeping its connections.

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use minidump_writer::crash_context::CrashContext;
use uds::{UnixSeqpacketConn, UnixSeqpacketListener, UnixSocketAddr};

use super::dump;

/// Largest packet the server reads. A crash request is a few KiB (registers, FP state,
/// siginfo); anything longer is refused without allocating.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Connections from the child kept at once (it makes two: crash handler and status probe).
pub const MAX_CONNECTIONS: usize = 8;

pub(crate) const HEADER_BYTES: usize = 8;
pub(crate) const KIND_CRASH: u32 = 0;
pub(crate) const KIND_CRASH_ACK: u32 = 1;
pub(crate) const KIND_PING: u32 = 2;
pub(crate) const KIND_PONG: u32 = 3;
/// A dump of the running child, which goes on running (a stall); no payload.
pub(crate) const KIND_LIVE_DUMP: u32 = 4;
/// The answer: the scrubbed dump's path, or `error: <why>`, as UTF-8.
pub(crate) const KIND_LIVE_DUMP_DONE: u32 = 5;
/// Longest a live dump may take, from the child's request to the answer.
pub const LIVE_DUMP_TIMEOUT: Duration = Duration::from_secs(10);
/// Refusals logged on stderr one by one; after that only counted.
const LOGGED_REFUSALS: u64 = 20;

pub(crate) fn header(kind: u32, size: u32) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..4].copy_from_slice(&kind.to_ne_bytes());
    h[4..].copy_from_slice(&size.to_ne_bytes());
    h
}

/// What the dump thread learned, for the monitor's `crash` record.
#[derive(Default)]
pub(crate) struct Outcome {
    /// The (unscrubbed) dump written, or why not.
    pub(crate) dump: Option<Result<PathBuf, String>>,
    /// From the request to the dump being on disk.
    pub(crate) written_after: Option<Duration>,
}

/// Counters shared with the monitor.
#[derive(Default)]
pub(crate) struct Stats {
    /// Connections closed at accept (wrong peer, or too many).
    pub(crate) refused_peers: AtomicU64,
    /// Packets refused (too long, malformed, wrong pid or thread, unknown kind).
    pub(crate) refused_messages: AtomicU64,
}

/// Where the dumps go: the directory, the boot they are named after, and the secrets masked
/// in them.
pub(crate) struct DumpPlace {
    pub(crate) dir: PathBuf,
    pub(crate) boot: String,
    pub(crate) secrets: Arc<Vec<Vec<u8>>>,
}

/// The bound listener, before the child exists.
pub(crate) struct DumpServer {
    listener: UnixSeqpacketListener,
}

impl DumpServer {
    /// Binds the abstract socket `@name`. Bind before starting the child: its connections
    /// wait in the backlog until [`DumpServer::spawn`] knows its pid.
    pub(crate) fn bind(name: &str) -> io::Result<DumpServer> {
        let addr = UnixSocketAddr::from_abstract(name)?;
        let listener = UnixSeqpacketListener::bind_unix_addr(&addr)?;
        listener.set_nonblocking(true)?;
        Ok(DumpServer { listener })
    }

    /// Starts the dump thread, serving only `child_pid`, until `stop` is set.
    pub(crate) fn spawn(
        self,
        child_pid: u32,
        place: DumpPlace,
        outcome: Arc<Mutex<Outcome>>,
        stats: Arc<Stats>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<std::thread::JoinHandle<()>> {
        let DumpPlace { dir, boot, secrets } = place;
        let mut state = Serve {
            listener: self.listener,
            conns: Vec::new(),
            buf: vec![0u8; MAX_MESSAGE_BYTES],
            child_pid,
            euid: current_euid(),
            dir,
            boot,
            outcome,
            stats,
            secrets,
        };
        std::thread::Builder::new().name("dispatch-crash-dumper".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    state.serve(&stop);
                }));
                if served.is_err() {
                    eprintln!(
                        "dispatch-telemetry: crash monitor: the dump server panicked; it goes on"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    }
}

#[allow(unsafe_code)]
fn current_euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

struct Serve {
    listener: UnixSeqpacketListener,
    conns: Vec<UnixSeqpacketConn>,
    /// The one receive buffer: no packet ever makes the server allocate.
    buf: Vec<u8>,
    child_pid: u32,
    euid: u32,
    dir: PathBuf,
    boot: String,
    outcome: Arc<Mutex<Outcome>>,
    stats: Arc<Stats>,
    /// The monitor's secrets, masked in live dumps as in crash dumps.
    secrets: Arc<Vec<Vec<u8>>>,
}

enum Next {
    Keep,
    Close,
}

impl Serve {
    fn serve(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let mut fds: Vec<libc::pollfd> = std::iter::once(self.listener.as_raw_fd())
                .chain(self.conns.iter().map(|c| c.as_raw_fd()))
                .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
                .collect();
            if !poll(&mut fds, 100) {
                continue;
            }
            // Connections first (their indices are fds[1..]), then new ones.
            let mut close = Vec::new();
            for (i, p) in fds.iter().enumerate().skip(1) {
                if p.revents != 0 {
                    if let Next::Close = self.on_readable(i - 1) {
                        close.push(i - 1);
                    }
                }
            }
            for i in close.into_iter().rev() {
                self.conns.swap_remove(i);
            }
            if fds[0].revents != 0 {
                self.accept_all();
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            let conn = match self.listener.accept_unix_addr() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return, // WouldBlock: none left (other errors: retried on next poll)
            };
            let peer = conn.initial_peer_credentials();
            let why = match &peer {
                Err(e) => Some(format!("its credentials are unreadable ({e})")),
                Ok(c) if c.pid().map(|p| p.get()) != Some(self.child_pid) => Some(format!(
                    "pid {} is not the monitored child {}",
                    c.pid().map_or(0, |p| p.get()),
                    self.child_pid
                )),
                Ok(c) if c.euid() != self.euid => {
                    Some(format!("uid {} is not ours ({})", c.euid(), self.euid))
                }
                Ok(_) if self.conns.len() >= MAX_CONNECTIONS => {
                    Some(format!("the child already has {MAX_CONNECTIONS} connections"))
                }
                Ok(_) => None,
            };
            match why {
                Some(why) => {
                    let n = self.stats.refused_peers.fetch_add(1, Ordering::Relaxed) + 1;
                    if n <= LOGGED_REFUSALS {
                        eprintln!(
                            "dispatch-telemetry: crash monitor: refused a connection to the dump \
                             server: {why}"
                        );
                    }
                    drop(conn);
                }
                None => match conn.set_nonblocking(true) {
                    Ok(()) => self.conns.push(conn),
                    Err(e) => eprintln!(
                        "dispatch-telemetry: crash monitor: dropping the child's connection: {e}"
                    ),
                },
            }
        }
    }

    fn refuse(&self, why: &str) -> Next {
        let n = self.stats.refused_messages.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= LOGGED_REFUSALS {
            eprintln!("dispatch-telemetry: crash monitor: refused a dump server message: {why}");
        }
        Next::Close
    }

    fn on_readable(&mut self, i: usize) -> Next {
        let got = self.conns[i].recv_vectored(&mut [IoSliceMut::new(&mut self.buf)]);
        let (len, truncated) = match got {
            Ok((0, _)) => return Next::Close,
            Ok(r) => r,
            Err(e)
                if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) =>
            {
                return Next::Keep;
            }
            Err(_) => return Next::Close,
        };
        if truncated {
            return self.refuse(&format!("a packet longer than {MAX_MESSAGE_BYTES} bytes"));
        }
        if len < HEADER_BYTES {
            return self.refuse(&format!("a {len}-byte packet, shorter than the header"));
        }
        let kind = u32::from_ne_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let size = u32::from_ne_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]);
        if size as usize != len - HEADER_BYTES {
            return self.refuse(&format!(
                "a header claiming {size} bytes on a packet carrying {}",
                len - HEADER_BYTES
            ));
        }
        match kind {
            KIND_PING if size == 0 => self.reply(i, KIND_PONG),
            KIND_CRASH => {
                let Some(ctx) = CrashContext::from_bytes(&self.buf[HEADER_BYTES..len]) else {
                    return self.refuse(&format!(
                        "a crash request of {size} bytes (a crash context is {})",
                        std::mem::size_of::<CrashContext>()
                    ));
                };
                if ctx.pid < 0 || ctx.pid as u32 != self.child_pid {
                    return self.refuse(&format!(
                        "a crash request for pid {}, not the monitored child {}",
                        ctx.pid, self.child_pid
                    ));
                }
                if ctx.tid <= 0
                    || !std::path::Path::new(&format!("/proc/{}/task/{}", ctx.pid, ctx.tid))
                        .exists()
                {
                    return self.refuse(&format!(
                        "a crash request for thread {}, not a thread of the child {}",
                        ctx.tid, self.child_pid
                    ));
                }
                self.write_dump(ctx);
                self.reply(i, KIND_CRASH_ACK)
            }
            KIND_LIVE_DUMP if size == 0 => {
                let answer = match self.write_live_dump() {
                    Ok(path) => path.display().to_string(),
                    Err(e) => format!("error: {e}"),
                };
                let mut packet = header(KIND_LIVE_DUMP_DONE, answer.len() as u32).to_vec();
                packet.extend_from_slice(answer.as_bytes());
                match self.conns[i].send(&packet) {
                    Ok(_) => Next::Keep,
                    Err(_) => Next::Close,
                }
            }
            other => self.refuse(&format!("a message of unknown kind {other} ({size} bytes)")),
        }
    }

    /// A dump of the running child (blamed on its main thread; no crash context), scrubbed and
    /// published as `<boot>-<ms>.dmp`. The child is stopped by ptrace while its threads are
    /// read, then resumed.
    fn write_live_dump(&self) -> Result<PathBuf, String> {
        let pid = self.child_pid as i32;
        let cfg = minidump_writer::minidump_writer::MinidumpWriterConfig::new(pid, pid);
        let unscrubbed = self.write_unscrubbed_dump(cfg)?;
        let (path, _masked) = super::scrub::scrub_file(&unscrubbed, &self.secrets)
            .map_err(|e| format!("scrubbing the live minidump: {e}"))?;
        Ok(path)
    }

    /// Writes and syncs a dump with `cfg` into a new `*.dmp.unscrubbed` file of the dump
    /// directory; on failure the file is removed. A panic inside minidump-writer is an error.
    fn write_unscrubbed_dump(
        &self,
        cfg: minidump_writer::minidump_writer::MinidumpWriterConfig,
    ) -> Result<PathBuf, String> {
        let (mut file, path) = dump::create_dump_file(&self.dir, &self.boot)
            .map_err(|e| format!("creating a dump file in {}: {e}", self.dir.display()))?;
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cfg.write(&mut file).map(|_| ()).map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|_| Err("minidump-writer panicked".into()))
        .and_then(|()| file.sync_all().map_err(|e| format!("syncing the dump: {e}")));
        drop(file);
        written.map(|()| path.clone()).map_err(|e| {
            let _ = std::fs::remove_file(&path);
            format!("writing the minidump failed: {e}")
        })
    }

    fn reply(&self, i: usize, kind: u32) -> Next {
        match self.conns[i].send(&header(kind, 0)) {
            Ok(_) => Next::Keep,
            Err(_) => Next::Close,
        }
    }

    fn write_dump(&self, ctx: CrashContext) {
        let requested = Instant::now();
        let mut cfg = minidump_writer::minidump_writer::MinidumpWriterConfig::new(ctx.pid, ctx.tid);
        cfg.set_crash_context(minidump_writer::CrashContextExt { inner: ctx });
        let result = self.write_unscrubbed_dump(cfg);
        if let Ok(mut o) = self.outcome.lock() {
            o.dump = Some(result);
            o.written_after = Some(requested.elapsed());
        }
    }
}

/// poll(2) on `fds` for up to `ms`; false on timeout, EINTR or an error (the caller loops).
#[allow(unsafe_code)]
fn poll(fds: &mut [libc::pollfd], ms: libc::c_int) -> bool {
    // SAFETY: `fds` is a live, exclusively borrowed slice of pollfd and its length is passed
    // with it; poll only writes the `revents` fields.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if r < 0 {
        // EINTR, or ENOMEM: back off a little and go round again.
        std::thread::sleep(Duration::from_millis(10));
    }
    r > 0
}

/// The child's status connection to the dump server: [`MonitorProbe::check`] asks the dump
/// thread for a pong, so `/health` can tell a dump server that stopped answering.
#[derive(Clone)]
pub struct MonitorProbe {
    conn: Arc<Mutex<Option<UnixSeqpacketConn>>>,
}

impl std::fmt::Debug for MonitorProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MonitorProbe")
    }
}

impl PartialEq for MonitorProbe {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.conn, &other.conn)
    }
}

impl Eq for MonitorProbe {}

impl MonitorProbe {
    /// How long [`MonitorProbe::check`] waits for the dump thread's answer.
    pub const TIMEOUT: Duration = Duration::from_millis(500);

    pub(crate) fn connect(socket: &str) -> io::Result<MonitorProbe> {
        let conn = UnixSeqpacketConn::connect_unix_addr(&UnixSocketAddr::from_abstract(socket)?)?;
        conn.set_read_timeout(Some(Self::TIMEOUT))?;
        conn.set_write_timeout(Some(Self::TIMEOUT))?;
        Ok(MonitorProbe { conn: Arc::new(Mutex::new(Some(conn))) })
    }

    /// Asks the monitor for a minidump of this (running) process, for a stall: the process is
    /// stopped while its threads are read, then goes on. Waits up to [`LIVE_DUMP_TIMEOUT`].
    ///
    /// # Errors
    /// The monitor is gone, did not answer in time, or could not write the dump (its reason).
    pub fn live_dump(&self) -> Result<PathBuf, String> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let Some(conn) = guard.as_ref() else {
            return Err("the crash monitor's dump server closed the connection".into());
        };
        conn.send(&header(KIND_LIVE_DUMP, 0)).map_err(|e| format!("asking the monitor: {e}"))?;
        let deadline = Instant::now() + LIVE_DUMP_TIMEOUT;
        let mut buf = vec![0u8; HEADER_BYTES + 4096];
        loop {
            match conn.recv(&mut buf) {
                Ok(0) => {
                    *guard = None;
                    return Err("the monitor closed the connection".into());
                }
                Ok(n) if n >= HEADER_BYTES && buf[..4] == KIND_LIVE_DUMP_DONE.to_ne_bytes() => {
                    let answer = String::from_utf8_lossy(&buf[HEADER_BYTES..n]).into_owned();
                    return match answer.strip_prefix("error: ") {
                        Some(e) => Err(e.to_owned()),
                        None => Ok(PathBuf::from(answer)),
                    };
                }
                // A late pong of an earlier status check.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => {
                    *guard = None;
                    return Err(format!("the monitor's connection failed: {e}"));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the monitor did not answer within {} s",
                    LIVE_DUMP_TIMEOUT.as_secs()
                ));
            }
        }
    }

    /// Whether the monitor's dump thread answers a ping now (within [`MonitorProbe::TIMEOUT`]).
    /// Once the connection is closed (the dump server or the monitor is gone) it stays failed.
    ///
    /// # Errors
    /// What went wrong, for `/health`'s note.
    pub fn check(&self) -> Result<(), String> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let Some(conn) = guard.as_ref() else {
            return Err("the crash monitor's dump server closed the connection; no minidump if \
                        this process crashes now"
                .into());
        };
        let gone = |e: String| {
            format!(
                "the crash monitor's dump server is gone ({e}); no minidump if this process crashes now"
            )
        };
        if let Err(e) = conn.send(&header(KIND_PING, 0)) {
            *guard = None;
            return Err(gone(e.to_string()));
        }
        let deadline = Instant::now() + Self::TIMEOUT;
        let mut buf = [0u8; HEADER_BYTES];
        loop {
            match conn.recv(&mut buf) {
                Ok(0) => {
                    *guard = None;
                    return Err(gone("connection closed".into()));
                }
                // A late pong of an earlier check counts too: the thread is serving.
                Ok(HEADER_BYTES) if buf == header(KIND_PONG, 0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    return Err(format!(
                        "the crash monitor's dump server did not answer within {} ms",
                        Self::TIMEOUT.as_millis()
                    ));
                }
                Err(e) => {
                    *guard = None;
                    return Err(gone(e.to_string()));
                }
            }
            if Instant::now() >= deadline {
                return Err("the crash monitor's dump server did not answer in time".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Running =
        (String, tempfile::TempDir, Arc<AtomicBool>, Arc<Stats>, Arc<Mutex<Outcome>>, Thread);
    type Thread = std::thread::JoinHandle<()>;

    /// The real server in this process, serving `child` (our own pid, or another one).
    fn start(child: u32) -> Running {
        let name = format!(
            "dispatch-crash-test-{}-{child}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let d = tempfile::tempdir().unwrap();
        let server = DumpServer::bind(&name).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let outcome = Arc::new(Mutex::new(Outcome::default()));
        let t = server
            .spawn(
                child,
                DumpPlace {
                    dir: d.path().join("crashes"),
                    boot: "boot".into(),
                    secrets: Arc::new(Vec::new()),
                },
                outcome.clone(),
                stats.clone(),
                stop.clone(),
            )
            .unwrap();
        (name, d, stop, stats, outcome, t)
    }

    fn send_raw(name: &str, packet: &[u8]) -> UnixSeqpacketConn {
        let c = UnixSeqpacketConn::connect_unix_addr(&UnixSocketAddr::from_abstract(name).unwrap())
            .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.send(packet);
        c
    }

    fn closed_by_server(c: &UnixSeqpacketConn) -> bool {
        let mut b = [0u8; 64];
        // EOF, or a reset when the server closed with our packet unread; never a timeout.
        match c.recv(&mut b) {
            Ok(n) => n == 0,
            Err(e) => {
                !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
            }
        }
    }

    #[test]
    fn bad_packets_close_their_connection_and_the_server_keeps_serving() {
        let (name, d, stop, stats, outcome, t) = start(std::process::id());
        let probe = MonitorProbe::connect(&name).unwrap();
        probe.check().unwrap();
        // A header claiming 4 GiB, a short packet, an unknown kind, a crash request of the
        // wrong size, a packet longer than the bound.
        let big = vec![0u8; MAX_MESSAGE_BYTES + 100];
        for packet in [
            &header(KIND_CRASH, u32::MAX)[..],
            &[1, 2, 3][..],
            &header(77, 0)[..],
            &[&header(KIND_CRASH, 16)[..], &[0u8; 16][..]].concat()[..],
            &big[..],
        ] {
            let c = send_raw(&name, packet);
            assert!(closed_by_server(&c), "{} bytes", packet.len());
            probe.check().unwrap();
        }
        assert_eq!(stats.refused_messages.load(Ordering::Relaxed), 5);
        assert!(outcome.lock().unwrap().dump.is_none());
        assert!(!d.path().join("crashes").exists(), "no dump file");
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        // The thread is gone: the probe says so.
        let e = probe.check().unwrap_err();
        assert!(e.contains("dump server"), "{e}");
    }

    #[test]
    fn a_crash_request_for_another_pid_is_refused() {
        let (name, d, stop, stats, outcome, t) = start(std::process::id());
        let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        // SAFETY: CrashContext is plain data (integers and raw pointers); all zeroes is valid.
        #[allow(unsafe_code)]
        let mut ctx: CrashContext = unsafe { std::mem::zeroed() };
        ctx.pid = sleeper.id() as i32;
        ctx.tid = sleeper.id() as i32;
        let packet =
            [&header(KIND_CRASH, std::mem::size_of::<CrashContext>() as u32)[..], ctx.as_bytes()]
                .concat();
        let c = send_raw(&name, &packet);
        assert!(closed_by_server(&c), "no ack");
        // Our pid with a thread that is not ours.
        ctx.pid = std::process::id() as i32;
        let packet =
            [&header(KIND_CRASH, std::mem::size_of::<CrashContext>() as u32)[..], ctx.as_bytes()]
                .concat();
        let c = send_raw(&name, &packet);
        assert!(closed_by_server(&c), "no ack");
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        assert_eq!(stats.refused_messages.load(Ordering::Relaxed), 2);
        assert!(outcome.lock().unwrap().dump.is_none());
        assert!(!d.path().join("crashes").exists(), "no dump file");
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
    }

    #[test]
    fn a_peer_that_is_not_the_child_is_refused_at_accept() {
        // Serve pid 1: this process is a foreign peer.
        let (name, _d, stop, stats, _o, t) = start(1);
        let c = send_raw(&name, &header(KIND_PING, 0));
        assert!(closed_by_server(&c), "refused");
        let probe = MonitorProbe::connect(&name).unwrap();
        assert!(probe.check().is_err());
        assert_eq!(stats.refused_peers.load(Ordering::Relaxed), 2);
        assert_eq!(stats.refused_messages.load(Ordering::Relaxed), 0, "nothing was read");
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
    }
}
