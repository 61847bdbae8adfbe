//! The crate's one error enum, with stable codes (the style of `collector/src/error.rs`).
//!
//! Messages name what was being done and to what (a path, a URL, a boot prefix); the cause
//! is the [`source`](std::error::Error::source), which `dispatchctl` prints after a colon
//! (`{:#}`), so no message repeats it. `dispatchctl` exits 2 on any of these.

use std::path::{Path, PathBuf};

use dispatch_collector::CollectorError;
use dispatch_collector::query::QueryError;

/// Why a `dispatchctl` command could not do its work.
///
/// The collector's and ureq's errors are boxed: they are large, and every `Result` of the
/// crate carries this type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read, created or written.
    #[error("{what} {}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done, e.g. `writing`.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the command's output (stdout) failed. `dispatchctl` treats a closed pipe
    /// (`dispatchctl mem | head`) as success.
    #[error("writing the output")]
    Output(#[source] std::io::Error),
    /// `--journal` names something that is not a directory.
    #[error("--journal {}: not a directory", path.display())]
    JournalNotADirectory {
        /// What was given.
        path: PathBuf,
    },
    /// The cached database beside a `--journal` directory could not be opened.
    #[error("opening the cache {} for {}", db.display(), journal.display())]
    CacheOpen {
        /// `<DIR>.dispatchctl.db`.
        db: PathBuf,
        /// The journal directory.
        journal: PathBuf,
        /// The collector's error.
        #[source]
        source: Box<CollectorError>,
    },
    /// Draining a `--journal` directory into its cache failed.
    #[error("draining {}", journal.display())]
    Drain {
        /// The journal directory.
        journal: PathBuf,
        /// The collector's error.
        #[source]
        source: Box<CollectorError>,
    },
    /// No traces database where one was expected (`--traces-db`, or `<var dir>/traces.db`).
    #[error(
        "no traces database at {} (pass --traces-db PATH, --journal DIR, or run the server, whose embedded collector writes it)",
        path.display()
    )]
    NoDatabase {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The traces database exists but could not be opened.
    #[error("opening {}", path.display())]
    DatabaseOpen {
        /// The database.
        path: PathBuf,
        /// The collector's error.
        #[source]
        source: Box<CollectorError>,
    },
    /// Analysing the traces database failed; the source says why ([`Error::Query`],
    /// [`Error::UnknownBoot`], [`Error::AmbiguousBoot`]).
    #[error("analysing {}", path.display())]
    Analysing {
        /// The database.
        path: PathBuf,
        /// What failed.
        #[source]
        source: Box<Error>,
    },
    /// A query of the traces database failed.
    #[error("{what}")]
    Query {
        /// What was being read, e.g. `reading samples`.
        what: &'static str,
        /// The collector's query error.
        #[source]
        source: Box<QueryError>,
    },
    /// `--boot` matches no boot in the database.
    #[error("--boot {prefix}: no such boot")]
    UnknownBoot {
        /// The prefix given.
        prefix: String,
    },
    /// `--boot` matches several boots.
    #[error("--boot {prefix}: {count} boots start with it; give more of the id")]
    AmbiguousBoot {
        /// The prefix given.
        prefix: String,
        /// How many boots it matches.
        count: usize,
    },
    /// A heap profile that is not jemalloc's `heap_v2` text format.
    #[error("line {line}: {reason}")]
    ProfileInvalid {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// `--addr` is not a server address this client can use.
    #[error("--addr {addr:?}: {reason}")]
    AdminAddr {
        /// What was given (credentials in it replaced by `<credentials>`).
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A request to the admin API did not complete: no connection, TLS, a timeout, or an
    /// answer that is not valid HTTP.
    #[error("{method} {url}: request failed")]
    AdminRequest {
        /// `GET`, `POST`.
        method: String,
        /// The URL asked for (the token is never part of it).
        url: String,
        /// What failed.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The admin API answered with a status other than 2xx.
    #[error("{method} {url}: HTTP {status}: {message}")]
    AdminStatus {
        /// `GET`, `POST`.
        method: String,
        /// The URL asked for.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the server's answer (its `{"code", "message"}` body).
        message: String,
    },
}

impl From<dispatch_verdict::report::ReportError> for Error {
    fn from(e: dispatch_verdict::report::ReportError) -> Self {
        use dispatch_verdict::report::ReportError as R;
        match e {
            R::Query { what, source } => Error::Query { what, source },
            R::UnknownBoot { prefix } => Error::UnknownBoot { prefix },
            R::AmbiguousBoot { prefix, count } => Error::AmbiguousBoot { prefix, count },
        }
    }
}

impl Error {
    /// Stable snake_case code for `--json` output, logs and runbooks. Never renamed or reused.
    ///
    /// [`Error::Analysing`] only adds the database's path: its code is its cause's.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Io { .. } => "cli_io",
            Error::Output(_) => "cli_output",
            Error::JournalNotADirectory { .. } => "mem_journal_not_a_directory",
            Error::CacheOpen { .. } => "mem_cache_open_failed",
            Error::Drain { .. } => "mem_drain_failed",
            Error::NoDatabase { .. } => "mem_no_database",
            Error::DatabaseOpen { .. } => "mem_database_open_failed",
            Error::Analysing { source, .. } => source.code(),
            Error::Query { .. } => "mem_query_failed",
            Error::UnknownBoot { .. } => "mem_boot_unknown",
            Error::AmbiguousBoot { .. } => "mem_boot_ambiguous",
            Error::ProfileInvalid { .. } => "heap_profile_invalid",
            Error::AdminAddr { .. } => "admin_addr_invalid",
            Error::AdminRequest { .. } => "admin_request_failed",
            Error::AdminStatus { .. } => "admin_status",
        }
    }

    /// A `map_err` adapter for [`Error::Io`].
    pub(crate) fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Error::Io { path, what, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_messages_name_what_was_wrong() {
        let e = Error::UnknownBoot { prefix: "ffff".into() };
        assert_eq!(
            (e.code(), e.to_string().as_str()),
            ("mem_boot_unknown", "--boot ffff: no such boot")
        );
        let wrapped = Error::Analysing { path: "t.db".into(), source: Box::new(e) };
        assert_eq!(wrapped.code(), "mem_boot_unknown", "the wrapper keeps its cause's code");
        assert_eq!(wrapped.to_string(), "analysing t.db");
        let e = Error::AmbiguousBoot { prefix: "6f".into(), count: 2 };
        assert_eq!(e.to_string(), "--boot 6f: 2 boots start with it; give more of the id");
        let e =
            Error::io(Path::new("/x/chart.svg"), "writing")(std::io::ErrorKind::NotFound.into());
        assert_eq!((e.code(), e.to_string().as_str()), ("cli_io", "writing /x/chart.svg"));
        let e = Error::NoDatabase { path: "var/traces.db".into() };
        assert!(
            e.to_string().starts_with("no traces database at var/traces.db (pass --traces-db"),
            "{e}"
        );
    }
}
