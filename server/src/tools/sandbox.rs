//! The tool sandbox: what a tool's child may touch, and whether this kernel can enforce it.
//!
//! Each call's child runs confined ([`crate::sys::confine_child`], between fork and exec):
//!
//! - **Landlock** (ABI 6 rights, best effort on older kernels): read and execute under the
//!   system directories ([`READ_ONLY_PATHS`]), read and write on a few device files
//!   ([`DEVICE_FILES`]), everything in the call's work directory, nothing else (the var
//!   directory, `/tmp`, `/home`, `/root`). With ABI >= 6 it is also *scoped*: no signal to a
//!   process outside the sandbox (the server, the crash monitor) and no connection to an
//!   abstract Unix socket created outside it (the crash monitor's).
//! - **A PID and mount namespace per call**: the command runs as pid 1 of a new PID
//!   namespace under a small waiting parent. When it exits (or the call is killed) the
//!   kernel kills everything left in the namespace, including processes that left the
//!   process group with `setsid` after a double fork. Chosen over a child subreaper (which
//!   would have to find and kill the orphans itself, racing their forks) and over cgroups
//!   (v1 on the target machines, no delegation). It needs `CAP_SYS_ADMIN` (a server running
//!   as root); without it the namespaces are created inside a new user namespace that maps
//!   the server's uid and gid to themselves (where the kernel allows unprivileged user
//!   namespaces; both ways are probed at start). The namespace gets its own `/proc`
//!   (readable, so `ps` and `/proc/self` work), where the server's processes do not exist.
//! - **No capabilities**: the child empties its bounding set before `exec`, so a tool of a
//!   root server runs as root without any capability (and Landlock forbids `mount`).
//!
//! `/proc` is read-only *only* with that private `/proc`. Landlock's ptrace rule was
//! expected to keep a confined tool from opening `/proc/<server>/environ`, but on the
//! development kernel (6.18, ABI 7) it did not: a confined `cat /proc/<pid>/environ` of the
//! (unconfined, same-uid) server printed its secrets. Without the namespaces `/proc` is
//! therefore not granted at all.
//!
//! [`SandboxStatus`] says what this kernel enforces; it is probed once per process
//! ([`kernel_support`]) and reported at start, in `/health` (`tool_sandbox`) and in
//! `process.start` (`config.tool_sandbox`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use landlock::{
    ABI, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope,
    path_beneath_rules,
};

use crate::sys::{Confinement, ProcRule, UserMaps};

/// Directories a tool may read and execute from (those that exist); `/proc` too when the
/// call has its own (see the module docs).
pub const READ_ONLY_PATHS: &[&str] =
    &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"];

/// Device files a tool may read and write (those that exist).
pub const DEVICE_FILES: &[&str] =
    &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"];

/// The Landlock ABI whose rights the ruleset asks for: 6 adds signal and abstract-socket
/// scoping to the filesystem rights of 1-5 (7 only adds audit-log flags). Fixed, not the
/// kernel's, so a newer kernel never adds restrictions nobody tested; older kernels get the
/// subset they know (best effort), reported as partial.
const RULES_ABI: ABI = ABI::V6;

/// What the running kernel supports, probed once.
#[derive(Debug, Clone)]
pub struct KernelSupport {
    /// The Landlock ABI, or why there is none.
    pub landlock: Result<i32, String>,
    /// Whether a tool can run in its own PID namespace (`Some` id maps: inside a user
    /// namespace of its own, for a server without `CAP_SYS_ADMIN`), or why not.
    pub pid_namespace: Result<Option<UserMaps>, String>,
}

/// What the kernel supports (probed at the first call, then cached for the process).
pub fn kernel_support() -> &'static KernelSupport {
    static SUPPORT: OnceLock<KernelSupport> = OnceLock::new();
    SUPPORT.get_or_init(|| KernelSupport {
        landlock: crate::sys::landlock_abi().map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSYS) => "kernel built without Landlock (ENOSYS)".to_owned(),
            Some(libc::EOPNOTSUPP) => {
                "Landlock not enabled at boot (EOPNOTSUPP; add it to lsm=)".to_owned()
            }
            _ => format!("landlock_create_ruleset: {e}"),
        }),
        pid_namespace: probe_pid_namespace(),
    })
}

/// Runs `sh -c 'exit 7'` in a PID and mount namespace under the keeper (first as we are,
/// then in a user namespace) and checks the status comes back: proves unshare, the private
/// `/proc`, the fork and the status relay work here.
fn probe_pid_namespace() -> Result<Option<UserMaps>, String> {
    let privileged = probe_with(None);
    if privileged.is_ok() {
        return Ok(None);
    }
    let maps = UserMaps::identity();
    match probe_with(Some(maps.clone())) {
        Ok(()) => Ok(Some(maps)),
        Err(user) => {
            Err(format!("{}; with a user namespace: {user}", privileged.err().unwrap_or_default()))
        }
    }
}

fn probe_with(user_maps: Option<UserMaps>) -> Result<(), String> {
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "exit 7"])
        .env_clear()
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let probe = Confinement { ruleset: None, pid_namespace: true, proc_rule: None, user_maps };
    crate::sys::confine_child(&mut cmd, probe);
    match cmd.status() {
        Ok(s) if s.code() == Some(7) => Ok(()),
        Ok(s) => Err(format!("probe child ended with {s}, not exit status 7")),
        Err(e) => Err(format!("unshare(CLONE_NEWPID|CLONE_NEWNS), mounting /proc: {e}")),
    }
}

/// How tools are confined in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxStatus {
    /// Landlock ABI >= 6 and a PID namespace per call: everything above is enforced.
    Full {
        /// The kernel's Landlock ABI.
        abi: i32,
    },
    /// Some of it is enforced; `what` says what is missing.
    Partial {
        /// The kernel's Landlock ABI (0: none).
        abi: i32,
        /// What is not enforced, and why.
        what: String,
    },
    /// Nothing is enforced: no Landlock, or the sandbox is switched off.
    Unavailable {
        /// Why.
        why: String,
    },
}

impl SandboxStatus {
    /// The status for this kernel; `enabled` is `DISPATCH_TOOL_SANDBOX`.
    pub fn probe(enabled: bool) -> SandboxStatus {
        if !enabled {
            return SandboxStatus::Unavailable {
                why: "switched off (DISPATCH_TOOL_SANDBOX=false)".to_owned(),
            };
        }
        let k = kernel_support();
        let abi = match &k.landlock {
            Ok(abi) => *abi,
            Err(why) => return SandboxStatus::Unavailable { why: why.clone() },
        };
        let mut missing = Vec::new();
        if abi < 6 {
            missing.push(format!(
                "Landlock ABI {abi} < 6: no signal or abstract-socket scoping (a tool can \
                 signal the server and reach the crash monitor's socket)"
            ));
        }
        if let Err(why) = &k.pid_namespace {
            missing.push(format!(
                "no PID namespace per call ({why}): a detached process can outlive its call, \
                 and /proc is not readable"
            ));
        }
        if missing.is_empty() {
            SandboxStatus::Full { abi }
        } else {
            SandboxStatus::Partial { abi, what: missing.join("; ") }
        }
    }

    /// Whether everything is enforced.
    pub fn is_full(&self) -> bool {
        matches!(self, SandboxStatus::Full { .. })
    }

    /// One line for stderr, `/health` and `process.start`: `landlock abi 7, pid and mount
    /// namespace per call (private /proc)`, `partial: ...` or `unavailable: ...`.
    pub fn describe(&self) -> String {
        match self {
            SandboxStatus::Full { abi } => format!(
                "landlock abi {abi}, pid and mount namespace per call (private /proc{})",
                if matches!(kernel_support().pid_namespace, Ok(Some(_))) {
                    ", in a user namespace"
                } else {
                    ""
                }
            ),
            SandboxStatus::Partial { abi, what } => {
                format!("partial: landlock abi {abi}; {what}")
            }
            SandboxStatus::Unavailable { why } => format!("unavailable: {why}"),
        }
    }

    fn landlock(&self) -> bool {
        !matches!(self, SandboxStatus::Unavailable { .. })
    }

    fn pid_namespace(&self) -> bool {
        self.landlock() && kernel_support().pid_namespace.is_ok()
    }

    /// The confinement of one call: `workdir` read-write, `extra_read_only` (for `ssh`: the
    /// server user's `~/.ssh`) readable, the system paths as above. Opens the paths here, in
    /// the parent, so the child only has to apply it.
    ///
    /// # Errors
    /// Building the ruleset failed (a message naming the step).
    pub fn confinement(
        &self,
        workdir: &Path,
        extra_read_only: &[PathBuf],
    ) -> Result<Confinement, String> {
        let ruleset = if self.landlock() {
            let workdir_fd = PathFd::new(workdir)
                .map_err(|e| format!("opening {} for Landlock: {e}", workdir.display()))?;
            Some(
                ruleset(workdir_fd, extra_read_only)
                    .map_err(|e| format!("building the Landlock ruleset: {e}"))?,
            )
        } else {
            None
        };
        let pid_namespace = self.pid_namespace();
        // Read beneath the call's own /proc; the child adds the rule once it is mounted.
        let proc_rule = match &ruleset {
            Some(r) if pid_namespace => {
                let dup = r.try_clone().map_err(|e| format!("duplicating the ruleset: {e}"))?;
                let fd: Option<std::os::fd::OwnedFd> = dup.into();
                fd.map(|ruleset| ProcRule {
                    ruleset,
                    access: (AccessFs::ReadFile | AccessFs::ReadDir).bits(),
                })
            }
            _ => None,
        };
        let user_maps = match &kernel_support().pid_namespace {
            Ok(maps) if pid_namespace => maps.clone(),
            _ => None,
        };
        Ok(Confinement { ruleset, pid_namespace, proc_rule, user_maps })
    }
}

fn ruleset(
    workdir: PathFd,
    extra_read_only: &[PathBuf],
) -> Result<landlock::RulesetCreated, landlock::RulesetError> {
    let read = AccessFs::from_read(RULES_ABI);
    let device = AccessFs::from_file(RULES_ABI) & !AccessFs::Execute;
    Ruleset::default()
        .handle_access(AccessFs::from_all(RULES_ABI))?
        .scope(Scope::from_all(RULES_ABI))?
        .create()?
        .add_rules(path_beneath_rules(READ_ONLY_PATHS, read))?
        .add_rules(path_beneath_rules(extra_read_only, read))?
        .add_rules(path_beneath_rules(DEVICE_FILES, device))?
        .add_rule(PathBeneath::new(workdir, AccessFs::from_all(RULES_ABI)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `command` under Landlock alone (no namespaces, as on a kernel without them);
    /// returns whether it succeeded.
    fn landlocked(command: &str, confined: bool) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", command]).stdout(std::process::Stdio::null());
        if confined {
            let ruleset = ruleset(PathFd::new(dir.path()).unwrap(), &[]).unwrap();
            let c = Confinement {
                ruleset: Some(ruleset),
                pid_namespace: false,
                proc_rule: None,
                user_maps: None,
            };
            crate::sys::confine_child(&mut cmd, c);
        }
        cmd.status().unwrap().success()
    }

    #[test]
    fn landlock_alone_scopes_signals_and_keeps_proc_closed() {
        if kernel_support().landlock.as_ref().is_ok_and(|abi| *abi >= 6) {
            let me = std::process::id();
            assert!(landlocked(&format!("kill -0 {me}"), false), "the check can fail");
            assert!(!landlocked(&format!("kill -0 {me}"), true), "signal scoping");
            assert!(landlocked(&format!("head -c1 /proc/{me}/environ"), false));
            assert!(!landlocked(&format!("head -c1 /proc/{me}/environ"), true), "no /proc");
            assert!(landlocked("ls /usr/bin", true), "system paths stay readable");
        } else {
            eprintln!("SKIPPED: this kernel has no Landlock ABI >= 6: {:?}", kernel_support());
        }
    }

    #[test]
    fn off_is_unavailable_and_says_why() {
        let s = SandboxStatus::probe(false);
        assert!(!s.is_full());
        assert_eq!(s.describe(), "unavailable: switched off (DISPATCH_TOOL_SANDBOX=false)");
    }

    #[test]
    fn the_description_names_the_abi() {
        assert!(SandboxStatus::Full { abi: 7 }.describe().starts_with("landlock abi 7, pid"));
        let p = SandboxStatus::Partial { abi: 4, what: "x".into() };
        assert!(p.describe().starts_with("partial: landlock abi 4"));
    }
}
