//! Minidump files: creation (0600, in a 0700 directory), secret scrubbing, the byte budget,
//! and reading a written dump back for the `crash` record.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Extension of dump files.
pub const DUMP_EXTENSION: &str = "dmp";

/// Creates `<dir>/<boot>-<unix ms>.dmp`, mode 0600, creating `dir` (0700) if needed.
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
        let path = dir.join(name);
        match OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free dump file name"))
}

/// Whether an environment variable's name looks like it holds a secret.
pub fn is_secret_name(name: &OsStr) -> bool {
    let upper = name.to_string_lossy().to_ascii_uppercase();
    [
        "KEY",
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "CREDENTIAL",
        "AUTH",
        "PRIVATE",
        "COOKIE",
        "SESSION",
    ]
    .iter()
    .any(|w| upper.contains(w))
}

/// Values of this process's secret-looking environment variables (4 bytes or longer). The
/// child inherits the monitor's environment, so these are the child's secrets too.
pub(crate) fn secret_env_values() -> Vec<Vec<u8>> {
    std::env::vars_os()
        .filter(|(k, v)| is_secret_name(k) && v.len() >= 4)
        .map(|(_, v)| v.as_bytes().to_vec())
        .collect()
}

/// Overwrites every occurrence of each secret in `bytes` with `*`, keeping every offset (the
/// dump's layout stays valid). Returns the number of occurrences scrubbed.
pub fn scrub(bytes: &mut [u8], secrets: &[Vec<u8>]) -> usize {
    let mut n = 0;
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        let mut i = 0;
        while i + s.len() <= bytes.len() {
            if bytes[i..i + s.len()] == s[..] {
                bytes[i..i + s.len()].fill(b'*');
                n += 1;
                i += s.len();
            } else {
                i += 1;
            }
        }
    }
    n
}

/// Scrubs a dump file in place.
pub(crate) fn scrub_file(path: &Path, secrets: &[Vec<u8>]) -> io::Result<usize> {
    if secrets.is_empty() {
        return Ok(0);
    }
    let mut bytes = fs::read(path)?;
    let n = scrub(&mut bytes, secrets);
    if n > 0 {
        fs::write(path, &bytes)?;
    }
    Ok(n)
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
    fn scrubs_every_occurrence_keeping_length() {
        let mut b = b"xxOPENAI=sk-123456 and sk-123456 again".to_vec();
        let len = b.len();
        assert_eq!(scrub(&mut b, &[b"sk-123456".to_vec()]), 2);
        assert_eq!(b.len(), len);
        assert_eq!(&b[..], b"xxOPENAI=********* and ********* again");
    }

    #[test]
    fn secret_names() {
        for n in ["OPENAI_API_KEY", "DISPATCH_ADMIN_TOKEN", "db_password", "AWS_SECRET_ACCESS_KEY"]
        {
            assert!(is_secret_name(OsStr::new(n)), "{n}");
        }
        for n in ["PATH", "HOME", "DISPATCH_VAR_DIR", "RUST_LOG"] {
            assert!(!is_secret_name(OsStr::new(n)), "{n}");
        }
    }

    #[test]
    fn budget_keeps_the_newest_and_the_named_dump() {
        let d = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for i in 0..5 {
            let (_, p) = create_dump_file(d.path(), &format!("b{i}")).unwrap();
            fs::write(&p, vec![0u8; 1000]).unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i);
            File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
            paths.push(p);
        }
        fs::write(d.path().join("notes.txt"), vec![0u8; 100_000]).unwrap();
        assert_eq!(enforce_budget(d.path(), 2500, Some(&paths[0])).unwrap(), 3);
        assert!(paths[0].exists() && paths[4].exists());
        assert!(!paths[1].exists() && !paths[2].exists() && !paths[3].exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&paths[0]).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(d.path()).unwrap().permissions().mode() & 0o777, 0o700);
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
