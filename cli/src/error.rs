//! The crate's one error enum, with stable codes (the style of `collector/src/error.rs`).

/// Why a `dispatchctl` command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
            Error::AdminAddr { .. } => "admin_addr_invalid",
            Error::AdminRequest { .. } => "admin_request_failed",
            Error::AdminStatus { .. } => "admin_status",
        }
    }
}
