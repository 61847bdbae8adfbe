//! The crate's one error enum, with stable codes (the style of `collector/src/error.rs`).

use std::path::{Path, PathBuf};

/// Why a `dispatchctl` command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read, created or written.
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
    /// Writing the command's output (stdout) failed; a closed pipe is not reported as an error.
    #[error("writing the output")]
    Output(#[source] std::io::Error),
    /// `--addr` is not a server address this client can use.
    #[error("--addr {addr:?}: {reason}")]
    AdminAddr {
        /// What was given.
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

impl Error {
    /// Stable snake_case code for `--json` output, logs and runbooks. Never renamed or reused.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Io { .. } => "cli_io",
            Error::Output(_) => "cli_output",
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
