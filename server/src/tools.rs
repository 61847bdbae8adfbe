//! Tools a turn can call: `sh` (a command in a working directory, with a timeout) and `ssh` (a
//! command on a remote host through the system `ssh` in batch mode), plus the `panic` fault
//! tool when fault tools are enabled.
//!
//! Output kept in history is bounded ([`ToolSettings::max_bytes`], [`ToolSettings::max_lines`]):
//! only the head is held in memory, and once the bound is crossed everything (head included) is
//! streamed to a file under the tool-output directory, which the bounded text refers to. One
//! pathological payload can therefore not take gigabytes.
//!
//! The offload file of one call is capped too ([`ToolSettings::output_file_max_bytes`]): at the
//! cap the call is killed and its result says so, so one `yes` cannot fill the disk.
//!
//! Each call's child runs in the conversation's own work directory
//! (`<ToolSettings::workdir>/<conversation>`, 0700), with an environment rebuilt from an
//! allowlist, confined by [`sandbox`] (Landlock, a PID namespace per call) unless the sandbox
//! is off; with [`ToolSettings::require_sandbox`] no tool runs unless it is fully enforced.
//!
//! A tool that runs and fails (non-zero exit, timeout, bad arguments, unknown tool) gives an
//! error *result* the model sees. A tool that cannot run at all (the process cannot be spawned,
//! the SSH connection or handshake fails) is a [`ToolError`]: that call gets an error result
//! and the turn ends with outcome `error`; nothing else is affected.

pub mod sandbox;

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::message::ToolCall;
use sandbox::SandboxStatus;

/// Environment variables tools never see: the server's secrets, and the crash monitor's
/// handshake with its child.
pub const ENV_WITHHELD_FROM_TOOLS: &[&str] = &[
    "DISPATCH_ADMIN_TOKEN",
    "DISPATCH_OPENAI_API_KEY",
    dispatch_telemetry::crash::ENV_SOCKET,
    dispatch_telemetry::crash::ENV_BOOT,
    dispatch_telemetry::crash::ENV_MONITOR_PID,
];

/// Environment variables every tool gets from the server's environment (when set there);
/// `HOME` and `TMPDIR` are the call's work directory. More through
/// [`ToolSettings::env_allow`].
pub const ENV_PASSED_TO_TOOLS: &[&str] = &["PATH", "LANG", "TERM"];

/// `PATH` of a tool when the server has none.
const DEFAULT_TOOL_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How tools run.
#[derive(Debug, Clone)]
pub struct ToolSettings {
    /// Parent of the per-conversation work directories (`<workdir>/<conversation>`).
    pub workdir: PathBuf,
    /// The server's var directory: a work directory that contains it is refused.
    pub var_dir: PathBuf,
    /// Whether calls are confined ([`sandbox`]).
    pub sandbox: bool,
    /// Refuse every call unless the sandbox is fully enforced.
    pub require_sandbox: bool,
    /// Extra environment variable names passed through (never [`ENV_WITHHELD_FROM_TOOLS`]).
    pub env_allow: Vec<String>,
    /// Largest offload file of one call, bytes; the call is killed at it.
    pub output_file_max_bytes: u64,
    /// Wall time per call.
    pub timeout: Duration,
    /// History bound, bytes.
    pub max_bytes: usize,
    /// History bound, lines.
    pub max_lines: usize,
    /// Where full outputs beyond the bound go.
    pub output_dir: PathBuf,
    /// `ssh -o ConnectTimeout=`, seconds.
    pub ssh_connect_timeout_s: u64,
    /// The `ssh` program.
    pub ssh_program: PathBuf,
    /// Whether the `panic` fault tool is registered.
    pub fault_tools: bool,
    /// Byte budget of the offload directory; the oldest files go first when it is exceeded.
    pub output_budget_bytes: u64,
}

/// A tool that could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// `ssh` could not connect or complete the handshake (exit status 255).
    #[error("ssh to {host} failed to connect: {message}")]
    SshConnect {
        /// Destination as given.
        host: String,
        /// What ssh printed.
        message: String,
    },
    /// The process could not be started.
    #[error("could not start {program}: {source}")]
    Spawn {
        /// Program name.
        program: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// `DISPATCH_TOOLS_REQUIRE_SANDBOX` is set and the sandbox is not fully enforced.
    #[error(
        "tools are refused: DISPATCH_TOOLS_REQUIRE_SANDBOX is set and the tool sandbox is \
         {status}"
    )]
    SandboxRequired {
        /// [`SandboxStatus::describe`].
        status: String,
    },
    /// The call's work directory or confinement could not be set up.
    #[error("tool sandbox setup for {path} failed: {message}")]
    Setup {
        /// The work directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Reading the output or writing the offload file failed.
    #[error("tool output i/o failed: {0}")]
    Io(#[from] std::io::Error),
}

impl ToolError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::SshConnect { .. } => "ssh_connect_failed",
            Self::Spawn { .. } => "tool_spawn_failed",
            Self::SandboxRequired { .. } => "tool_sandbox_required",
            Self::Setup { .. } => "tool_sandbox_setup",
            Self::Io(_) => "tool_io",
        }
    }

    /// `source` of the `error.unhandled` record: `ssh` or `tool`.
    pub fn source_kind(&self) -> &'static str {
        match self {
            Self::SshConnect { .. } => "ssh",
            Self::Spawn { .. }
            | Self::SandboxRequired { .. }
            | Self::Setup { .. }
            | Self::Io(_) => "tool",
        }
    }
}

/// What a tool call produced, bounded for history.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// Text kept in history (at most the bound plus a one-line note).
    pub content: String,
    /// The tool failed (non-zero exit, timeout, bad arguments).
    pub is_error: bool,
    /// The output was cut to the bound.
    pub truncated: bool,
    /// The file with the full output, when truncated.
    pub output_file: Option<PathBuf>,
    /// Bytes the tool wrote in total.
    pub total_bytes: u64,
}

impl ToolOutput {
    fn failed(message: impl Into<String>) -> ToolOutput {
        ToolOutput {
            content: message.into(),
            is_error: true,
            truncated: false,
            output_file: None,
            total_bytes: 0,
        }
    }
}

/// A tool's name, description and JSON-schema parameters (for providers that take tool specs).
#[derive(Debug, Clone)]
pub struct ToolSpec {
    /// Name.
    pub name: &'static str,
    /// What it does, for the model.
    pub description: &'static str,
    /// JSON schema of the arguments.
    pub parameters: Value,
}

/// The tool set of a server.
#[derive(Debug, Clone)]
pub struct Tools {
    settings: ToolSettings,
    pruned: Arc<AtomicU64>,
    sandbox: SandboxStatus,
    /// The environment every call starts from (besides `HOME` and `TMPDIR`).
    env: Vec<(OsString, OsString)>,
    /// The server user's `~/.ssh`, readable by the `ssh` tool inside the sandbox.
    ssh_dir: Option<PathBuf>,
}

impl Tools {
    /// Tools running with `settings`. Probes the sandbox (once per process) and takes the
    /// allowed variables from the server's environment as it is now.
    pub fn new(settings: ToolSettings) -> Tools {
        let sandbox = SandboxStatus::probe(settings.sandbox);
        let mut env: Vec<(OsString, OsString)> = Vec::new();
        let names = ENV_PASSED_TO_TOOLS
            .iter()
            .copied()
            .chain(settings.env_allow.iter().map(String::as_str));
        for name in names {
            if ENV_WITHHELD_FROM_TOOLS.contains(&name)
                || name == "HOME"
                || name == "TMPDIR"
                || env.iter().any(|(k, _)| k == name)
            {
                continue;
            }
            if let Some(value) = std::env::var_os(name) {
                env.push((name.into(), value));
            }
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), DEFAULT_TOOL_PATH.into()));
        }
        let ssh_dir = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh"));
        Tools { settings, pruned: Arc::new(AtomicU64::new(0)), sandbox, env, ssh_dir }
    }

    /// How calls are confined here.
    pub fn sandbox(&self) -> &SandboxStatus {
        &self.sandbox
    }

    /// The work directory of `conversation`, created (0700, the parent too) when missing.
    ///
    /// # Errors
    /// It cannot be created, the parent is not ours or is writable by others, the
    /// conversation's directory is not ours and 0700 (or is a symlink), or it contains the var
    /// directory.
    pub fn workdir(&self, conversation: &str) -> Result<PathBuf, ToolError> {
        let base = &self.settings.workdir;
        let dir = base.join(clean_name(conversation));
        let setup = |message: String| ToolError::Setup { path: dir.clone(), message };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| setup(format!("creating it: {e}")))?;
        // The parent may be shared with nobody who could swap the conversation's directory (no
        // group or other write); the conversation's own is private (0700).
        for (d, forbidden, wanted) in
            [(base, 0o022, "no group or other write"), (&dir, 0o077, "0700")]
        {
            let meta = std::fs::symlink_metadata(d)
                .map_err(|e| setup(format!("reading {}: {e}", d.display())))?;
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
            let owner = std::os::unix::fs::MetadataExt::uid(&meta);
            let uid = crate::sys::effective_uid();
            if !meta.is_dir() || owner != uid || mode & forbidden != 0 {
                let kind = if meta.is_symlink() {
                    "a symlink"
                } else if meta.is_dir() {
                    "a directory"
                } else {
                    "not a directory"
                };
                return Err(setup(format!(
                    "{} must be a directory of uid {uid} with mode {wanted} (it is {kind}, uid \
                     {owner}, mode {:o}); set DISPATCH_TOOL_WORKDIR elsewhere or fix it",
                    d.display(),
                    mode & 0o7777
                )));
            }
        }
        let canonical = dir.canonicalize().map_err(|e| setup(format!("resolving it: {e}")))?;
        if let Ok(var) = self.settings.var_dir.canonicalize() {
            if var.starts_with(&canonical) {
                return Err(setup(format!(
                    "it contains the var directory {}: tools must not reach it (set \
                     DISPATCH_TOOL_WORKDIR outside it)",
                    var.display()
                )));
            }
        }
        Ok(dir)
    }

    /// Offload files deleted to keep the directory within its byte budget, since start.
    pub fn offloads_pruned(&self) -> u64 {
        self.pruned.load(Ordering::Relaxed)
    }

    /// The settings.
    pub fn settings(&self) -> &ToolSettings {
        &self.settings
    }

    /// Registered tools.
    pub fn specs(&self) -> Vec<ToolSpec> {
        let mut specs = vec![
            ToolSpec {
                name: "sh",
                description: "Run a shell command (sh -c) in the server's tool working directory.",
                parameters: json!({
                    "type": "object",
                    "properties": { "command": { "type": "string" } },
                    "required": ["command"]
                }),
            },
            ToolSpec {
                name: "ssh",
                description: "Run a command on a remote host over SSH (batch mode, key auth only).",
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "host": { "type": "string", "description": "[user@]host[:port]" },
                        "command": { "type": "string" }
                    },
                    "required": ["host", "command"]
                }),
            },
        ];
        if self.settings.fault_tools {
            specs.push(ToolSpec {
                name: "panic",
                description: "Fault injection: panics inside the turn (drills and tests only).",
                parameters: json!({ "type": "object", "properties": {} }),
            });
        }
        specs
    }

    /// Runs one call of `conversation`'s turn `turn` (which names the offload file).
    ///
    /// # Errors
    /// The tool could not run at all (see [`ToolError`]).
    pub async fn run(
        &self,
        call: &ToolCall,
        conversation: &str,
        turn: &str,
    ) -> Result<ToolOutput, ToolError> {
        let arg = |name: &str| call.arguments.get(name).and_then(Value::as_str);
        match call.name.as_str() {
            "sh" => {
                let Some(command) = arg("command") else {
                    return Ok(ToolOutput::failed("error: sh needs a string argument \"command\""));
                };
                let mut cmd = tokio::process::Command::new("sh");
                cmd.arg("-c").arg(command);
                self.run_process(cmd, "sh", call, conversation, turn).await.map(|(out, _)| out)
            }
            "ssh" => {
                let (Some(host), Some(command)) = (arg("host"), arg("command")) else {
                    return Ok(ToolOutput::failed(
                        "error: ssh needs string arguments \"host\" and \"command\"",
                    ));
                };
                let Some((dest, port)) = parse_destination(host) else {
                    return Ok(ToolOutput::failed(format!(
                        "error: {host:?} is not a destination of the form [user@]host[:port]"
                    )));
                };
                let mut cmd = tokio::process::Command::new(&self.settings.ssh_program);
                cmd.args(["-o", "BatchMode=yes"])
                    .arg("-o")
                    .arg(format!("ConnectTimeout={}", self.settings.ssh_connect_timeout_s))
                    .args(["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=2"]);
                if let Some(port) = port {
                    cmd.arg("-p").arg(port.to_string());
                }
                cmd.arg("--").arg(dest).arg(command);
                let (out, status) = self.run_process(cmd, "ssh", call, conversation, turn).await?;
                // ssh exits 255 when it fails itself (connect, handshake, auth); the remote
                // command's own status otherwise.
                if status == Some(255) {
                    let message = out
                        .content
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty() && !l.starts_with('['))
                        .unwrap_or("exit status 255")
                        .to_owned();
                    return Err(ToolError::SshConnect { host: host.to_owned(), message });
                }
                Ok(out)
            }
            "panic" if self.settings.fault_tools => {
                panic!("fault tool `panic` called in turn {turn} (fault tools are enabled)")
            }
            other => Ok(ToolOutput::failed(format!("error: no tool named {other:?}"))),
        }
    }

    /// Runs a child with stdout and stderr merged into one pipe, bounded, with a timeout, in
    /// the conversation's work directory, confined. Returns the output and the exit code
    /// (`None` when killed or timed out).
    async fn run_process(
        &self,
        mut cmd: tokio::process::Command,
        program: &str,
        call: &ToolCall,
        conversation: &str,
        turn: &str,
    ) -> Result<(ToolOutput, Option<i32>), ToolError> {
        if self.settings.require_sandbox && !self.sandbox.is_full() {
            return Err(ToolError::SandboxRequired { status: self.sandbox.describe() });
        }
        let workdir = self.workdir(conversation)?;
        // The environment is rebuilt, not inherited: secrets and the crash monitor's handshake
        // stay with the server (a tool's output ends up in history, and a nested
        // dispatch-server must not think it is our monitor's child).
        cmd.env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("HOME", &workdir)
            .env("TMPDIR", &workdir)
            .current_dir(&workdir);
        if self.settings.sandbox {
            let extra: Vec<PathBuf> =
                if program == "ssh" { self.ssh_dir.iter().cloned().collect() } else { Vec::new() };
            let confinement = self
                .sandbox
                .confinement(&workdir, &extra)
                .map_err(|message| ToolError::Setup { path: workdir.clone(), message })?;
            crate::sys::confine_child(cmd.as_std_mut(), confinement);
        }
        let spawn_err = |source| ToolError::Spawn { program: program.to_owned(), source };
        // One pipe for stdout and stderr, so the output keeps the order the tool wrote it in.
        let (writer, mut rx) = tokio::net::unix::pipe::pipe().map_err(spawn_err)?;
        let writer: OwnedFd = writer.into_blocking_fd().map_err(spawn_err)?;
        let writer2 = writer.try_clone().map_err(spawn_err)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer2))
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(spawn_err)?;
        // Close our copies of the write end, or the read below never sees end-of-file.
        drop(cmd);
        let mut group = child.id().map(ProcessGroup);
        let mut sink = OutputSink::new(
            self.settings.output_dir.join(offload_name(turn, &call.id)),
            self.settings.max_bytes,
            self.settings.max_lines,
        )
        .file_max_bytes(self.settings.output_file_max_bytes);
        let timeout = self.settings.timeout;
        let work = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = rx.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                sink.write(&buf[..n]).await?;
                if sink.is_file_full() {
                    return Ok(None);
                }
            }
            child.wait().await.map(Some)
        };
        let (status, note) = match tokio::time::timeout(timeout, work).await {
            Ok(Ok(Some(status))) => (
                status.code(),
                status.code().filter(|c| *c != 0).map(|c| format!("[exit status {c}]")),
            ),
            Ok(Ok(None)) => {
                drop(group.take());
                let _ = child.wait().await;
                (
                    None,
                    Some(format!(
                        "[output cut: the offload file reached its cap of {} bytes \
                         (DISPATCH_TOOL_OUTPUT_FILE_MAX_BYTES); process group killed]",
                        self.settings.output_file_max_bytes
                    )),
                )
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => (
                None,
                Some(format!("[timed out after {} ms; process group killed]", timeout.as_millis())),
            ),
        };
        drop(group);
        let mut out = sink.finish().await?;
        if let Some(kept) = out.output_file.clone() {
            let (dir, budget) =
                (self.settings.output_dir.clone(), self.settings.output_budget_bytes);
            let pruned = tokio::task::spawn_blocking(move || prune_offloads(&dir, budget, &kept))
                .await
                .unwrap_or(0);
            self.pruned.fetch_add(pruned, Ordering::Relaxed);
        }
        if let Some(note) = note {
            out.is_error = true;
            if !out.content.is_empty() && !out.content.ends_with('\n') {
                out.content.push('\n');
            }
            out.content.push_str(&note);
        }
        Ok((out, status))
    }
}

/// Kills a tool's whole process group when dropped (timeout, cancellation, or done), so
/// grandchildren do not outlive the call holding the output pipe.
struct ProcessGroup(u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        crate::sys::kill_process_group(self.0);
    }
}

/// Deletes the oldest `*.log` files of `dir` until the rest fit in `budget` bytes, never
/// `keep` (the file just written). Returns how many were deleted. Errors (a file vanished, a
/// directory unreadable) skip the file: pruning is best effort and never fails a tool call.
pub fn prune_offloads(dir: &Path, budget: u64, keep: &Path) -> u64 {
    prune_oldest(dir, budget, keep, |p| p.extension().is_some_and(|x| x == "log"))
}

/// Deletes the oldest regular files of `dir` that `counts` selects until the selected ones
/// fit in `budget` bytes, never `keep`; other files are neither counted nor touched. Returns
/// how many were deleted; a file that vanished or cannot be read is skipped (best effort).
/// The tool-output offloads and the admin API's heap profiles keep their budgets with it.
pub fn prune_oldest(dir: &Path, budget: u64, keep: &Path, counts: impl Fn(&Path) -> bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let path = e.path();
            if !counts(&path) {
                return None;
            }
            let meta = e.metadata().ok().filter(std::fs::Metadata::is_file)?;
            Some((meta.modified().ok()?, meta.len(), path))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    let mut deleted = 0;
    for (_, len, path) in files {
        if total <= budget {
            break;
        }
        if path == keep {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            total = total.saturating_sub(len);
            deleted += 1;
        }
    }
    deleted
}

/// Splits `[user@]host[:port]`; `None` when the host is empty or looks like an option.
pub fn parse_destination(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    let (dest, port) = match s.rsplit_once(':') {
        Some((h, p))
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') =>
        {
            (h, Some(p.parse().ok()?))
        }
        _ => (s, None),
    };
    let host = dest.rsplit('@').next().unwrap_or(dest);
    if dest.is_empty()
        || host.is_empty()
        || dest.starts_with('-')
        || dest.contains(char::is_whitespace)
    {
        return None;
    }
    Some((dest.to_owned(), port))
}

/// `s` as one safe path component: at most 64 of its characters, anything but ASCII letters,
/// digits, `-` and `_` replaced by `_` (so never empty, `.` or `..`).
fn clean_name(s: &str) -> String {
    let clean: String = s
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    if clean.is_empty() { "_".to_owned() } else { clean }
}

fn offload_name(turn: &str, call: &str) -> String {
    format!("{}.{}.log", clean_name(turn), clean_name(call))
}

/// Keeps the head of an output in memory up to the bound; beyond it, writes everything to a
/// file (0600) and remembers that the head was cut.
#[derive(Debug)]
pub struct OutputSink {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    head: Vec<u8>,
    lines: usize,
    total: u64,
    max_bytes: usize,
    max_lines: usize,
    cut: bool,
    file_bytes: u64,
    file_max_bytes: u64,
}

impl OutputSink {
    /// A sink offloading to `path` once more than `max_bytes` or `max_lines` arrive.
    pub fn new(path: PathBuf, max_bytes: usize, max_lines: usize) -> OutputSink {
        OutputSink {
            path,
            file: None,
            head: Vec::new(),
            lines: 0,
            total: 0,
            max_bytes,
            max_lines,
            cut: false,
            file_bytes: 0,
            file_max_bytes: u64::MAX,
        }
    }

    /// Caps the offload file at `bytes`: what comes beyond is counted, not written.
    pub fn file_max_bytes(mut self, bytes: u64) -> OutputSink {
        self.file_max_bytes = bytes;
        self
    }

    /// Whether the offload file reached its cap (the caller stops the tool).
    pub fn is_file_full(&self) -> bool {
        self.file_bytes >= self.file_max_bytes
    }

    async fn write_file(&mut self, data: &[u8]) -> std::io::Result<()> {
        let room = self.file_max_bytes.saturating_sub(self.file_bytes);
        let n = usize::try_from(room).unwrap_or(usize::MAX).min(data.len());
        if let Some(file) = self.file.as_mut() {
            file.write_all(&data[..n]).await?;
            self.file_bytes += n as u64;
        }
        Ok(())
    }

    /// Takes the next chunk of output.
    ///
    /// # Errors
    /// The offload file cannot be created or written.
    pub async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.total += data.len() as u64;
        if !self.cut {
            let mut keep = 0;
            for &b in data {
                if self.head.len() + keep >= self.max_bytes || self.lines >= self.max_lines {
                    self.cut = true;
                    break;
                }
                keep += 1;
                if b == b'\n' {
                    self.lines += 1;
                }
            }
            if self.cut {
                self.file = Some(open_private(&self.path).await?);
                let head = std::mem::take(&mut self.head);
                self.write_file(&head).await?;
                self.head = head;
                self.head.extend_from_slice(&data[..keep]);
                self.write_file(data).await?;
            } else {
                self.head.extend_from_slice(data);
            }
        } else {
            self.write_file(data).await?;
        }
        Ok(())
    }

    /// The bounded output; the note names the file holding all of it when it was cut.
    ///
    /// # Errors
    /// Flushing the offload file fails.
    pub async fn finish(mut self) -> std::io::Result<ToolOutput> {
        if let Some(mut file) = self.file.take() {
            file.flush().await?;
        }
        let mut content = utf8_head(&self.head);
        if self.cut {
            if !content.ends_with('\n') {
                content.push('\n');
            }
            let whole = if self.is_file_full() {
                format!("its first {} bytes", self.file_bytes)
            } else {
                "full output".to_owned()
            };
            content.push_str(&format!(
                "[output truncated: kept {} bytes / {} lines of {} bytes; {whole} in {}]",
                self.head.len(),
                self.lines,
                self.total,
                self.path.display()
            ));
        }
        Ok(ToolOutput {
            content,
            is_error: false,
            truncated: self.cut,
            output_file: self.cut.then(|| self.path.clone()),
            total_bytes: self.total,
        })
    }
}

/// The bytes as text: a UTF-8 sequence cut at the end by the bound is dropped, other invalid
/// bytes become U+FFFD.
fn utf8_head(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(e) if e.error_len().is_none() => {
            String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned()
        }
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

async fn open_private(path: &Path) -> std::io::Result<tokio::fs::File> {
    if let Some(dir) = path.parent() {
        // Tool output can hold secrets: the directory is 0700 and each file 0600.
        tokio::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).await?;
    }
    tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(dir: &Path) -> Tools {
        Tools::new(ToolSettings {
            workdir: dir.join("work"),
            var_dir: dir.join("var"),
            sandbox: true,
            require_sandbox: false,
            env_allow: Vec::new(),
            output_file_max_bytes: 1 << 30,
            timeout: Duration::from_secs(20),
            max_bytes: 1000,
            max_lines: 20,
            output_dir: dir.join("out"),
            ssh_connect_timeout_s: 5,
            ssh_program: "ssh".into(),
            fault_tools: false,
            output_budget_bytes: 1 << 30,
        })
    }

    fn call(name: &str, args: Value) -> ToolCall {
        ToolCall { id: "call-1".into(), name: name.into(), arguments: args }
    }

    #[tokio::test]
    async fn sh_runs_in_the_workdir_and_merges_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let t = tools(dir.path());
        std::fs::write(t.workdir("c1").unwrap().join("marker"), "x").unwrap();
        let out = t
            .run(&call("sh", json!({"command": "ls; echo oops >&2; exit 3"})), "c1", "t1")
            .await
            .unwrap();
        assert!(out.content.contains("marker"), "{out:?}");
        assert!(out.content.contains("oops"), "{out:?}");
        assert!(out.content.ends_with("[exit status 3]"), "{out:?}");
        assert!(out.is_error && !out.truncated);
    }

    #[tokio::test]
    async fn big_output_is_bounded_and_offloaded_whole() {
        let dir = tempfile::tempdir().unwrap();
        let out = tools(dir.path())
            .run(&call("sh", json!({"command": "seq 1 100000"})), "c1", "t1")
            .await
            .unwrap();
        assert!(out.truncated, "{out:?}");
        assert_eq!(out.content.lines().count(), 21, "20 lines + the note");
        let file = out.output_file.unwrap();
        let full = std::fs::read_to_string(&file).unwrap();
        assert_eq!(full.lines().count(), 100_000);
        assert_eq!(full.len() as u64, out.total_bytes);
        assert!(out.content.contains(&file.display().to_string()));
    }

    #[tokio::test]
    async fn byte_bound_applies_to_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let out = tools(dir.path())
            .run(&call("sh", json!({"command": "head -c 5000 /dev/zero | tr '\\0' a"})), "c1", "t2")
            .await
            .unwrap();
        assert!(out.truncated);
        assert!(out.content.starts_with(&"a".repeat(1000)));
        assert!(!out.content.contains(&"a".repeat(1001)));
    }

    #[tokio::test]
    async fn a_timeout_kills_the_group_and_is_an_error_result() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = tools(dir.path());
        t.settings.timeout = Duration::from_millis(300);
        let out = t
            .run(&call("sh", json!({"command": "echo start; sleep 30 & sleep 30"})), "c1", "t3")
            .await
            .unwrap();
        assert!(out.is_error);
        assert!(out.content.contains("start") && out.content.contains("timed out"), "{out:?}");
    }

    #[tokio::test]
    async fn ssh_to_a_closed_port_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = tools(dir.path())
            .run(
                &call("ssh", json!({"host": format!("127.0.0.1:{port}"), "command": "true"})),
                "c1",
                "t4",
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "ssh_connect_failed", "{err}");
        assert_eq!(err.source_kind(), "ssh");
    }

    #[tokio::test]
    async fn bad_arguments_and_unknown_tools_are_error_results() {
        let dir = tempfile::tempdir().unwrap();
        let t = tools(dir.path());
        assert!(t.run(&call("sh", json!({})), "c1", "t").await.unwrap().is_error);
        assert!(
            t.run(&call("ssh", json!({"host": "-oProxyCommand=x", "command": "true"})), "c1", "t")
                .await
                .unwrap()
                .is_error
        );
        // `panic` is not registered unless fault tools are on.
        let out = t.run(&call("panic", json!({})), "c1", "t").await.unwrap();
        assert!(out.is_error && out.content.contains("no tool"), "{out:?}");
    }

    #[tokio::test]
    async fn offloads_are_kept_within_their_budget_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = tools(dir.path());
        t.settings.output_budget_bytes = 25_000;
        for turn in ["t1", "t2", "t3"] {
            let out =
                t.run(&call("sh", json!({"command": "seq 1 2000"})), "c1", turn).await.unwrap();
            assert!(out.truncated);
            // Distinct modification times, so "oldest" is defined.
            std::thread::sleep(Duration::from_millis(20));
        }
        // Each file is 8,893 bytes: two fit in 25,000, the oldest went.
        let mut left: Vec<String> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["t2.call-1.log", "t3.call-1.log"]);
        assert_eq!(t.offloads_pruned(), 1);
        let mode = std::fs::metadata(dir.path().join("out")).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o700);
        let mode = std::fs::metadata(dir.path().join("out/t3.call-1.log")).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    }

    #[test]
    fn destinations_parse() {
        assert_eq!(parse_destination("a@h:2222"), Some(("a@h".into(), Some(2222))));
        assert_eq!(parse_destination("h"), Some(("h".into(), None)));
        assert_eq!(parse_destination("-oFoo"), None);
        assert_eq!(parse_destination("a@"), None);
        assert_eq!(parse_destination("h:99999"), None);
    }
}
