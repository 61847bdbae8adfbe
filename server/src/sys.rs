//! The server's system calls that std has no safe wrapper for: killing a tool's process
//! group, confining a tool's child (Landlock, a PID namespace, between fork and exec), and
//! jemalloc's heap-profiling mallctls. Each is a small safe function; the unsafe
//! blocks of the server's library live here and in [`crate::faults`]'s drills
//! (docs/ARCHITECTURE.md, "Where unsafe code lives, and why").

use std::ffi::CStr;

/// Sends SIGKILL to every process of the group `pgid` (a tool child spawned with
/// `process_group(0)` leads it). Ids 0 and 1 are refused: they name our own group and init.
#[allow(unsafe_code)]
pub fn kill_process_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else { return };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; the negative pid names the process
    // group the child leads. The group id cannot be reused while any member lives, and once
    // it is empty the call fails with ESRCH.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Sets jemalloc's `prof.active`.
///
/// # Errors
/// jemalloc refused (profiling not compiled in or not enabled at start).
#[allow(unsafe_code)]
pub fn set_heap_profiling(active: bool) -> Result<(), String> {
    // SAFETY: `prof.active` is a `bool` mallctl (jemalloc's docs: rw, bool); the name is
    // NUL-terminated.
    unsafe { tikv_jemalloc_ctl::raw::write(b"prof.active\0", active) }
        .map_err(|e| format!("prof.active: {e} (heap profiling needs prof:true at start)"))
}

/// Asks jemalloc to write a heap profile to `path` (`prof.dump`).
///
/// # Errors
/// jemalloc refused (profiling not compiled in or not enabled at start, or the file could not
/// be written).
#[allow(unsafe_code)]
pub fn dump_heap_profile(path: &CStr) -> Result<(), String> {
    // SAFETY: `prof.dump` takes a `const char *` file name (jemalloc's docs: -w, const char *);
    // `path` is NUL-terminated and outlives the call, which only reads it.
    unsafe { tikv_jemalloc_ctl::raw::write(b"prof.dump\0", path.as_ptr()) }
        .map_err(|e| format!("prof.dump: {e} (heap profiling needs prof:true at start)"))
}

/// The Landlock ABI version of the running kernel (`landlock_create_ruleset` with
/// `LANDLOCK_CREATE_RULESET_VERSION`).
///
/// # Errors
/// `ENOSYS`: the kernel was built without Landlock; `EOPNOTSUPP`: it is built in but not
/// enabled at boot (`lsm=`).
#[allow(unsafe_code)]
pub fn landlock_abi() -> std::io::Result<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the syscall reads no
    // memory and only returns the ABI number (or -1 with errno), per landlock(7).
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        return Err(std::io::Error::last_os_error());
    }
    i32::try_from(v).map_err(|_| std::io::Error::from_raw_os_error(libc::ERANGE))
}

/// What a tool's child does between `fork` and `exec` ([`confine_child`]).
#[derive(Debug)]
pub struct Confinement {
    /// A Landlock ruleset built (and its paths opened) in the parent; the child only calls
    /// `restrict_self` (`prctl(PR_SET_NO_NEW_PRIVS)` and `landlock_restrict_self`, two
    /// syscalls, no allocation).
    pub ruleset: Option<landlock::RulesetCreated>,
    /// Run the command as init (pid 1) of a new PID namespace, under a waiting parent: when
    /// it exits, or is killed, the kernel kills every process left in the namespace, however
    /// it detached itself (`setsid`, double fork). It also gets a mount namespace with its
    /// own `/proc`, which shows the namespace's processes only (not the server's).
    pub pid_namespace: bool,
    /// With `pid_namespace`: a rule for the private `/proc`, added to the ruleset in the
    /// child once `/proc` is mounted (a rule made in the parent would name the server's
    /// `/proc`, which the new mount hides).
    pub proc_rule: Option<ProcRule>,
    /// With `pid_namespace`, for a server without `CAP_SYS_ADMIN`: create a user namespace
    /// too (which owns the others), mapping the server's uid and gid to themselves.
    pub user_maps: Option<UserMaps>,
}

/// The contents written to `/proc/self/uid_map` and `gid_map` (made in the parent).
#[derive(Debug, Clone)]
pub struct UserMaps {
    /// `<uid> <uid> 1`.
    pub uid_map: Vec<u8>,
    /// `<gid> <gid> 1`.
    pub gid_map: Vec<u8>,
}

impl UserMaps {
    /// Maps this process's effective uid and gid to themselves.
    #[allow(unsafe_code)]
    pub fn identity() -> UserMaps {
        // SAFETY: geteuid(2) and getegid(2) cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        UserMaps {
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
        }
    }
}

/// Writes `data` to the file `path` in one write(2). Child side of [`confine_child`].
#[allow(unsafe_code)]
fn write_proc_file(path: &std::ffi::CStr, data: &[u8]) -> std::io::Result<()> {
    // SAFETY: open(2) of a NUL-terminated path that outlives the call.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: write(2) reads `data.len()` bytes of the live slice `data`.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the descriptor opened above, used by nothing else.
    unsafe {
        libc::close(fd);
    }
    if usize::try_from(n).ok() == Some(data.len()) { Ok(()) } else { Err(err) }
}

/// Drops every capability from the bounding set, so that the program executed next (root
/// included) starts with none. Errors (no `CAP_SETPCAP`: an unprivileged server without
/// namespaces, whose tools have no capabilities anyway) are ignored.
#[allow(unsafe_code)]
fn drop_bounding_capabilities() {
    for cap in 0..64 {
        // SAFETY: prctl(PR_CAPBSET_DROP) takes integers only; an unknown cap is EINVAL.
        unsafe {
            libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong);
        }
    }
}

/// A Landlock path-beneath rule for `/proc`, added by the child ([`Confinement::proc_rule`]).
#[derive(Debug)]
pub struct ProcRule {
    /// The ruleset (a duplicate of [`Confinement::ruleset`]'s descriptor).
    pub ruleset: std::os::fd::OwnedFd,
    /// `LANDLOCK_ACCESS_FS_*` bits allowed beneath `/proc`.
    pub access: u64,
}

/// `struct landlock_path_beneath_attr` (packed, as in `<linux/landlock.h>`).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Adds `rule` for the `/proc` this process sees now. Child side of [`confine_child`].
#[allow(unsafe_code)]
fn add_proc_rule(rule: &ProcRule) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;
    // SAFETY: open(2) of a NUL-terminated 'static path; O_PATH opens no file content.
    let fd = unsafe { libc::open(c"/proc".as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let attr = PathBeneathAttr { allowed_access: rule.access, parent_fd: fd };
    // SAFETY: landlock_add_rule(2) reads `attr` (the packed layout the kernel expects, alive
    // for the call) and the two descriptors we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            rule.ruleset.as_raw_fd(),
            LANDLOCK_RULE_PATH_BENEATH,
            &raw const attr,
            0u32,
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the descriptor opened above, used by nothing else.
    unsafe {
        libc::close(fd);
    }
    if r != 0 { Err(err) } else { Ok(()) }
}

/// Makes `cmd`'s child enter `confinement` before it executes the program.
///
/// With `pid_namespace`, the child the server sees (the *keeper*) calls
/// `unshare(CLONE_NEWPID | CLONE_NEWNS)` (with `CLONE_NEWUSER` and its id maps when
/// `user_maps` is set) and forks: the grandchild is pid 1 of the new namespace, gets
/// `PR_SET_PDEATHSIG(SIGKILL)` (so it dies with the keeper), makes its mounts private, mounts
/// a fresh `/proc` over the server's and forks the tool as pid 2, which it waits for,
/// unconfined (so the tool cannot signal its parent). The tool drops every capability from
/// its bounding set, applies the ruleset and goes on to `exec`. Each keeper closes every
/// descriptor it holds (the output pipe, std's exec-error pipe), waits for its child and exits
/// with its status (128 + signal when it was killed). All stay in the process group the
/// server kills on timeout.
#[allow(unsafe_code)]
pub fn confine_child(cmd: &mut std::process::Command, confinement: Confinement) {
    use std::os::unix::process::CommandExt as _;
    let mut confinement = confinement;
    let hook = move || enter_confinement(&mut confinement);
    // SAFETY: `pre_exec` runs the closure in the forked child of a multi-threaded process,
    // where only async-signal-safe work is sound. `enter_confinement` makes raw syscalls
    // only (unshare, fork, prctl, mount, open, write, close, close_range, waitpid, _exit,
    // landlock_add_rule, landlock_restrict_self) on memory prepared in the parent: it
    // allocates nothing, takes no lock and touches no state shared with other threads (the
    // ruleset was built in the parent; `restrict_self` reads its fd and flags).
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// The child side of [`confine_child`]; runs between `fork` and `exec`. Errors are the
/// failing call's errno (std reports it to the parent as the spawn error).
#[allow(unsafe_code)]
fn enter_confinement(c: &mut Confinement) -> std::io::Result<()> {
    if c.pid_namespace {
        let user = if c.user_maps.is_some() { libc::CLONE_NEWUSER } else { 0 };
        // SAFETY: unshare(2) takes a flag word and touches no memory of ours.
        if unsafe { libc::unshare(user | libc::CLONE_NEWPID | libc::CLONE_NEWNS) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some(maps) = &c.user_maps {
            // An unprivileged process may map its own ids once setgroups(2) is denied.
            write_proc_file(c"/proc/self/setgroups", b"deny")?;
            write_proc_file(c"/proc/self/uid_map", &maps.uid_map)?;
            write_proc_file(c"/proc/self/gid_map", &maps.gid_map)?;
        }
        // SAFETY: fork(2) in a child that is single-threaded (it was just forked itself);
        // both sides go on with async-signal-safe calls only.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid > 0 {
            keep(pid);
        }
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: mount(2) with NUL-terminated 'static strings and null data. The first call
        // only changes propagation inside our new mount namespace (so the next mount does not
        // reach the server's); the second mounts a procfs of our new PID namespace.
        let mounted = unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
                && libc::mount(
                    c"proc".as_ptr(),
                    c"/proc".as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ) == 0
        };
        if !mounted {
            return Err(std::io::Error::last_os_error());
        }
        // Pid 1 of the namespace stays outside the Landlock domain and only waits: the tool
        // is its child (pid 2), so the tool's `$PPID` names a process Landlock's signal scope
        // forbids it to signal (`kill -0 $PPID` fails), and when the tool ends pid 1 exits
        // and the kernel kills whatever is left in the namespace.
        // SAFETY: fork(2) in a single-threaded process (pid 1 of the new namespace); both
        // sides go on with async-signal-safe calls only.
        let tool = unsafe { libc::fork() };
        if tool < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if tool > 0 {
            keep(tool);
        }
        if let Some(rule) = &c.proc_rule {
            add_proc_rule(rule)?;
        }
    }
    drop_bounding_capabilities();
    if let Some(ruleset) = c.ruleset.take() {
        if ruleset.restrict_self().is_err() {
            let err = std::io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(0) {
                std::io::Error::from_raw_os_error(libc::EPERM)
            } else {
                err
            });
        }
    }
    Ok(())
}

/// The keeper: holds nothing, waits for `pid` (init of the tool's PID namespace) and exits
/// the way it did. Never returns.
#[allow(unsafe_code)]
fn keep(pid: libc::pid_t) -> ! {
    // SAFETY: close_range(2) closes our own descriptors (all of them: the keeper reads and
    // writes nothing); it takes integers only.
    unsafe {
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
    }
    let mut status: libc::c_int = 0;
    let code = loop {
        // SAFETY: waitpid(2) writes the status into a local we own.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            if libc::WIFEXITED(status) {
                break libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                break 128 + libc::WTERMSIG(status);
            }
            continue;
        }
        // SAFETY: reading errno right after the failed call.
        if r < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
            continue;
        }
        break 127;
    };
    // SAFETY: _exit(2) ends the keeper without running the parent's atexit handlers or
    // destructors, which belong to the server's process image.
    unsafe { libc::_exit(code) }
}

/// glibc malloc arenas the process may use, unless `MALLOC_ARENA_MAX` says otherwise.
///
/// Rust code allocates from jemalloc, but C code (SQLite: the conversation store, the traces
/// database) allocates from glibc malloc, which gives each thread that allocates its own
/// arena (up to 8 per core) and keeps what was freed in it. After an overload run, 7 such
/// arenas of about 8 MiB each held some 90 MiB of RSS that jemalloc's figures do not see;
/// with 2 arenas RSS went back to 26 MiB at the same throughput (docs/BENCHMARKS.md,
/// "Overload").
pub const C_MALLOC_ARENAS: i32 = 2;

/// Caps glibc malloc's arenas at [`C_MALLOC_ARENAS`] (call before any thread starts). Returns
/// whether the cap was set: not when `MALLOC_ARENA_MAX` is set (the operator's choice, which
/// glibc applies itself), nor on a C library without arenas.
#[allow(unsafe_code)]
pub fn cap_c_malloc_arenas() -> bool {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt(3) only sets one of malloc's tunables; it is called at start, before
        // the process has another thread, and M_ARENA_MAX takes any positive count.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, C_MALLOC_ARENAS) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The effective user id of this process.
#[allow(unsafe_code)]
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}
