//! Minidump files: creation (0600, in a 0700 directory, under an "unscrubbed" name until
//! [`super::scrub`] has run), the byte budget, and reading a written dump back for the `crash`
//! record.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Extension of (scrubbed) dump files: only these are for readers.
pub const DUMP_EXTENSION: &str = "dmp";
/// Suffix after `.dmp` of a dump as written, before scrubbing. Never read except by the
/// scrubber; one left by a killed monitor is scrubbed at the next monitor start.
pub const UNSCRUBBED_SUFFIX: &str = ".unscrubbed";
/// Suffix after `.dmp` of the scrubber's temporary file (renamed to `.dmp` when complete).
pub const SCRUBBING_SUFFIX: &str = ".scrubbing";

/// Creates `<dir>/<boot>-<unix ms>.dmp.unscrubbed`, mode 0600, creating `dir` (0700) if
/// needed, under a name whose scrubbed `.dmp` does not exist yet either.
pub(crate) fn create_dump_file(dir: &Path, boot: &str) -> io::Result<(File, PathBuf)> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    // A dump holds process memory: the directory is private even if someone made it first.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let ms = dispatch_journal::Timestamp::now().unix_millis();
    for n in 0..100 {
        let name = if n == 0 {
            format!("{boot}-{ms}.{DUMP_EXTENSION}")
        } else {
            format!("{boot}-{ms}-{n}.{DUMP_EXTENSION}")
        };
        if dir.join(&name).exists() {
            continue;
        }
        let path = dir.join(format!("{name}{UNSCRUBBED_SUFFIX}"));
        match OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free dump file name"))
}

/// Deletes the oldest dumps in `dir` until their total is within `budget_bytes`, never
/// `keep`. Returns how many were deleted.
pub(crate) fn enforce_budget(
    dir: &Path,
    budget_bytes: u64,
    keep: Option<&Path>,
) -> io::Result<usize> {
    let mut dumps: Vec<(std::time::SystemTime, u64, PathBuf)> = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if p.extension() != Some(OsStr::new(DUMP_EXTENSION)) {
            continue;
        }
        let m = e.metadata()?;
        dumps.push((m.modified().unwrap_or(std::time::UNIX_EPOCH), m.len(), p));
    }
    dumps.sort();
    let mut total: u64 = dumps.iter().map(|d| d.1).sum();
    let mut deleted = 0;
    for (_, len, p) in &dumps {
        if total <= budget_bytes {
            break;
        }
        if Some(p.as_path()) == keep {
            continue;
        }
        fs::remove_file(p)?;
        total -= len;
        deleted += 1;
    }
    Ok(deleted)
}

/// What a written dump says about the crash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpSummary {
    /// Signal number (the exception code of a Linux dump).
    pub signo: Option<i32>,
    /// `si_code`.
    pub code: Option<i32>,
    /// The faulting address (for SIGSEGV/SIGBUS the accessed address).
    pub fault_address: Option<u64>,
    /// Crashing thread id.
    pub thread: Option<u32>,
    /// Crashing thread name, when the dump has thread names.
    pub thread_name: Option<String>,
}

/// Reads the exception stream (and thread names) of a dump.
///
/// # Errors
/// The file is not a minidump, or has no exception stream; the message says which.
pub fn summarize(path: &Path) -> Result<DumpSummary, String> {
    let dump =
        minidump::Minidump::read_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let exc: minidump::MinidumpException<'_> =
        dump.get_stream().map_err(|e| format!("{}: no exception stream: {e}", path.display()))?;
    let rec = &exc.raw.exception_record;
    let thread = exc.get_crashing_thread_id();
    let thread_name = dump
        .get_stream::<minidump::MinidumpThreadNames>()
        .ok()
        .and_then(|names| names.get_name(thread).map(|n| n.into_owned()));
    Ok(DumpSummary {
        signo: Some(rec.exception_code as i32),
        code: Some(rec.exception_flags as i32),
        fault_address: Some(rec.exception_address),
        thread: Some(thread),
        thread_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_keeps_the_newest_and_the_named_dump() {
        let d = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for i in 0..5 {
            let p = d.path().join(format!("b{i}.{DUMP_EXTENSION}"));
            fs::write(&p, vec![0u8; 1000]).unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i);
            File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
            paths.push(p);
        }
        fs::write(d.path().join("notes.txt"), vec![0u8; 100_000]).unwrap();
        assert_eq!(enforce_budget(d.path(), 2500, Some(&paths[0])).unwrap(), 3);
        assert!(paths[0].exists() && paths[4].exists());
        assert!(!paths[1].exists() && !paths[2].exists() && !paths[3].exists());
    }

    #[test]
    fn a_new_dump_is_private_and_unscrubbed_by_name() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("crashes");
        let (_, p) = create_dump_file(&dir, "boot").unwrap();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("boot-") && name.ends_with(".dmp.unscrubbed"), "{name}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let (_, q) = create_dump_file(&dir, "boot").unwrap();
        assert_ne!(p, q);
    }

    #[test]
    fn summarize_reads_a_real_linux_dump_and_rejects_junk() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/minidumps/dumps/linux-mini.dmp");
        let s = summarize(&fixture).unwrap();
        assert_eq!(s.signo, Some(libc::SIGSEGV));
        assert!(s.thread.is_some());
        let d = tempfile::tempdir().unwrap();
        let junk = d.path().join("junk.dmp");
        fs::write(&junk, b"not a minidump").unwrap();
        let e = summarize(&junk).unwrap_err();
        assert!(e.contains("junk.dmp"), "{e}");
    }
}
