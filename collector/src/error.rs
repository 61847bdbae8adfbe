//! The collector's one error enum, with stable codes.

use std::path::PathBuf;

/// Why the collector could not run or had to stop. Bad journal lines are not errors: they are
/// quarantined in `ingest_errors` and counted (see [`crate::Summary`]).
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// A file or directory could not be read, created or locked.
    #[error("{}: {what}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused an operation.
    #[error("{}: {what}", path.display())]
    Db {
        /// The database path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// Another collector holds the database's lock file.
    #[error(
        "{}: another dispatch-collector is already draining into this database ({holder}); \
         only one collector may write a traces database",
        lock.display()
    )]
    Locked {
        /// The lock file.
        lock: PathBuf,
        /// Who holds it, as written in the lock file (`pid 1234`), or `unknown`.
        holder: String,
    },
    /// The database was written by a newer collector.
    #[error("{}: schema version {found} is newer than this build knows ({max})", path.display())]
    SchemaTooNew {
        /// The database path.
        path: PathBuf,
        /// `PRAGMA user_version` found.
        found: i64,
        /// The newest version this build migrates to.
        max: i64,
    },
    /// The journal directory does not exist.
    #[error("{}: journal directory does not exist", path.display())]
    JournalMissing {
        /// The directory.
        path: PathBuf,
    },
    /// The journal directory is not safe to read: a symlink, another user's, or writable by
    /// others (who could plant segments).
    #[error("{}: unsafe journal directory: {reason}", path.display())]
    JournalDirUnsafe {
        /// The directory.
        path: PathBuf,
        /// What is wrong, and the fix.
        reason: String,
    },
    /// A collector thread stopped unexpectedly (a bug: the other thread's error is reported).
    #[error("collector {thread} thread stopped unexpectedly")]
    ThreadLost {
        /// `reader` or `writer`.
        thread: &'static str,
    },
}

impl CollectorError {
    /// Stable snake_case code for logs, `--json` output and runbooks.
    pub fn code(&self) -> &'static str {
        match self {
            CollectorError::Io { .. } => "collector_io",
            CollectorError::Db { .. } => "collector_db",
            CollectorError::Locked { .. } => "collector_locked",
            CollectorError::SchemaTooNew { .. } => "collector_schema_too_new",
            CollectorError::JournalMissing { .. } => "collector_journal_missing",
            CollectorError::JournalDirUnsafe { .. } => "collector_journal_dir_unsafe",
            CollectorError::ThreadLost { .. } => "collector_thread_lost",
        }
    }

    pub(crate) fn io(
        path: impl Into<PathBuf>,
        what: &'static str,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| CollectorError::Io { path, what, source }
    }

    pub(crate) fn db(
        path: impl Into<PathBuf>,
        what: &'static str,
    ) -> impl FnOnce(rusqlite::Error) -> Self {
        let path = path.into();
        move |source| CollectorError::Db { path, what, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_snake_case() {
        let e = CollectorError::Locked { lock: "/tmp/t.db.lock".into(), holder: "pid 7".into() };
        assert_eq!(e.code(), "collector_locked");
        assert!(e.to_string().contains("another dispatch-collector"), "{e}");
        let e = CollectorError::SchemaTooNew { path: "t.db".into(), found: 9, max: 1 };
        assert_eq!(e.code(), "collector_schema_too_new");
        assert_eq!(e.to_string(), "t.db: schema version 9 is newer than this build knows (1)");
    }
}
