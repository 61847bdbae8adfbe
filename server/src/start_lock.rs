//! The start lock: one server per conversation store, and a bounded wait for the previous one.
//!
//! A server takes `<store>.lock` (an exclusive `flock`, the file 0600 and holding `pid N`)
//! before it opens the journal, the store or the embedded collector, and keeps it until the
//! process ends (the kernel drops the lock then, however the process ends). A start that finds
//! it held is almost always a replacement started while the previous server is still stopping
//! (its crash monitor was killed, a service manager restarted it at once): it waits for the
//! holder, up to the start-lock wait, instead of failing on SQLite's `database is locked` or on
//! the embedded collector's lock, and tells stderr whom it waits for. A holder that outlives the
//! wait is another server using the same store: the start fails naming the file and the pid.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a waiting start tries the lock again.
const RETRY: Duration = Duration::from_millis(25);

/// The held start lock. Released when dropped, or when the process ends.
#[derive(Debug)]
pub struct StartLock {
    _file: File,
    path: PathBuf,
}

/// How the lock was taken.
#[derive(Debug)]
pub struct Acquired {
    /// The lock, to keep for the life of the server.
    pub lock: StartLock,
    /// Whom the start waited for, and how long, when it had to wait.
    pub waited: Option<(String, Duration)>,
}

/// Why the start lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum StartLockError {
    /// The lock file cannot be created, opened, locked or written.
    #[error("{path}: {what}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another process still held it when the wait ran out.
    #[error(
        "the conversation store {store} is still in use by {holder} after waiting {waited_ms} \
         ms for it (lock file {path}): another dispatch-server runs on this store; stop it, give \
         this one its own --var-dir, or wait longer with --start-lock-wait-ms"
    )]
    Held {
        /// The conversation store.
        store: PathBuf,
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as written in the lock file (`pid 1234`), or `an unknown process`.
        holder: String,
        /// How long the start waited.
        waited_ms: u64,
    },
}

impl StartLockError {
    /// Stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            StartLockError::Io { .. } => "start_lock_io",
            StartLockError::Held { .. } => "start_lock_held",
        }
    }
}

/// `<store>.lock`.
pub fn lock_path(store: &Path) -> PathBuf {
    let mut s = store.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

impl StartLock {
    /// Takes the start lock of the conversation store at `store`, waiting up to `wait` for
    /// its holder. `on_wait` is called once, with the holder (`pid 1234`), when the lock is
    /// held at the first try and the start begins to wait.
    ///
    /// # Errors
    /// [`StartLockError::Held`] when it is still held after `wait`;
    /// [`StartLockError::Io`] when the file cannot be created, locked or written.
    pub fn acquire(
        store: &Path,
        wait: Duration,
        on_wait: impl FnOnce(&str),
    ) -> Result<Acquired, StartLockError> {
        let path = lock_path(store);
        let io = |what: &'static str| {
            let path = path.clone();
            move |source| StartLockError::Io { path, what, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("creating the lock file's directory"))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io("opening the lock file"))?;
        // A file created by an older build, or under another umask, is 0600 too.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(io("setting the lock file's mode"))?;
        let started = Instant::now();
        let mut on_wait = Some(on_wait);
        let mut holder = String::new();
        loop {
            // File::try_lock is stable since 1.89, above the workspace's rust-version; this
            // crate links dispatch-collector, which needs 1.89 for the same call, so no older
            // toolchain builds it anyway.
            #[allow(clippy::incompatible_msrv)]
            let tried = file.try_lock();
            match tried {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    holder = read_holder(&mut file);
                    if let Some(f) = on_wait.take() {
                        f(&holder);
                    }
                    if started.elapsed() >= wait {
                        return Err(StartLockError::Held {
                            store: store.to_path_buf(),
                            path,
                            holder,
                            waited_ms: started.elapsed().as_millis() as u64,
                        });
                    }
                    std::thread::sleep(RETRY.min(wait.saturating_sub(started.elapsed())));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(io("locking the lock file")(e));
                }
            }
        }
        let note = format!("pid {}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(note.as_bytes()))
            .map_err(io("writing the lock file"))?;
        let waited = on_wait.is_none().then(|| (holder, started.elapsed()));
        Ok(Acquired { lock: StartLock { _file: file, path }, waited })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The holder as its lock file names it. The holder writes its pid right after locking, so
/// a file read in between is empty: `an unknown process` then.
fn read_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
    let text = text.trim();
    if text.is_empty() { "an unknown process".to_owned() } else { text.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_waits_then_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("dispatch.db");
        let first =
            StartLock::acquire(&store, Duration::ZERO, |_| panic!("nobody holds it")).unwrap();
        assert!(first.waited.is_none());
        let text = std::fs::read_to_string(first.lock.path()).unwrap();
        assert_eq!(text, format!("pid {}\n", std::process::id()));
        let mode = std::fs::metadata(first.lock.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // A second open file description of the same file: flock conflicts, as between two
        // processes.
        let mut told = None;
        let err =
            StartLock::acquire(&store, Duration::from_millis(60), |h| told = Some(h.to_owned()))
                .unwrap_err();
        let me = format!("pid {}", std::process::id());
        assert_eq!(told.as_deref(), Some(me.as_str()));
        assert_eq!(err.code(), "start_lock_held");
        let message = err.to_string();
        assert!(message.contains(&me), "{message}");
        assert!(message.contains("dispatch.db.lock"), "{message}");

        // Released: the next taker gets it without waiting.
        drop(first);
        let again = StartLock::acquire(&store, Duration::ZERO, |_| panic!("released")).unwrap();
        assert!(again.waited.is_none());
    }

    #[test]
    fn a_waiting_taker_proceeds_once_the_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("dispatch.db");
        let first = StartLock::acquire(&store, Duration::ZERO, |_| {}).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(first);
        });
        let second = StartLock::acquire(&store, Duration::from_secs(60), |_| {}).unwrap();
        release.join().unwrap();
        let (holder, _) = second.waited.expect("it had to wait");
        assert_eq!(holder, format!("pid {}", std::process::id()));
    }

    #[test]
    fn a_lock_file_through_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("dispatch.db");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), lock_path(&store)).unwrap();
        let err = StartLock::acquire(&store, Duration::ZERO, |_| {}).unwrap_err();
        assert_eq!(err.code(), "start_lock_io", "{err}");
    }
}
