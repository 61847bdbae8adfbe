//! Why a post-mortem could not be made. Each variant names the file and what is wrong with it;
//! [`PostmortemError::code`] is the stable string for logs and runbooks. `dispatchctl` exits 2.

use std::path::PathBuf;

/// A post-mortem failure.
#[derive(Debug, thiserror::Error)]
pub enum PostmortemError {
    /// The dump file could not be read at all.
    #[error("reading minidump {}", path.display())]
    DumpUnreadable {
        /// The dump.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The dump ends before the data its own directory points at: the writer was cut off, or
    /// the file was copied short.
    #[error(
        "minidump {} is truncated: {what} ends at byte {needed}, but the file has {file_bytes} bytes",
        path.display()
    )]
    DumpTruncated {
        /// The dump.
        path: PathBuf,
        /// Its size.
        file_bytes: u64,
        /// Where the missing data ends.
        needed: u64,
        /// What is cut off (`the header`, `the stream directory`, `stream 4 (module list)`).
        what: String,
    },
    /// The file is not a minidump, or a part needed to walk it is malformed.
    #[error("minidump {} is malformed: {reason}", path.display())]
    DumpMalformed {
        /// The dump.
        path: PathBuf,
        /// What is wrong, in the reader's words and ours.
        reason: String,
    },
    /// The journal half failed (no database, an unknown boot, a query).
    #[error("reading the journal for the post-mortem")]
    Journal(#[source] Box<crate::Error>),
    /// `latest` found no boot that ended abnormally.
    #[error(
        "no boot in {} ended abnormally (no crash, panic or abnormal exit recorded); name a boot id",
        db.display()
    )]
    NoAbnormalBoot {
        /// The traces database.
        db: PathBuf,
    },
    /// The symbol store or a debuginfod URL is unusable (a store path that is a file, a URL
    /// that is not http(s)).
    #[error("the symbol sources")]
    Symbols(#[source] Box<crate::symbols::SymbolsError>),
    /// Writing the report (`-o FILE`) failed.
    #[error("writing {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl PostmortemError {
    /// Stable snake_case code. Never renamed or reused.
    pub fn code(&self) -> &'static str {
        match self {
            PostmortemError::DumpUnreadable { .. } => "postmortem_dump_unreadable",
            PostmortemError::DumpTruncated { .. } => "postmortem_dump_truncated",
            PostmortemError::DumpMalformed { .. } => "postmortem_dump_malformed",
            PostmortemError::Journal(e) => e.code(),
            PostmortemError::NoAbnormalBoot { .. } => "postmortem_no_abnormal_boot",
            PostmortemError::Write { .. } => "postmortem_write_failed",
            PostmortemError::Symbols(e) => e.code(),
        }
    }
}

impl From<crate::Error> for PostmortemError {
    fn from(e: crate::Error) -> Self {
        PostmortemError::Journal(Box::new(e))
    }
}
