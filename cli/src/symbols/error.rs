//! Why a symbol-store operation failed, with a stable code per variant (the style of
//! [`crate::error::Error`]). Messages name the file or URL; the cause is the
//! [`source`](std::error::Error::source), printed after a colon by `{:#}`.

use std::path::{Path, PathBuf};

/// Why a symbol-store operation could not be done.
#[derive(Debug, thiserror::Error)]
pub enum SymbolsError {
    /// A file or directory of the store (or a binary given to `add`) could not be read,
    /// created or written.
    #[error("{what} {}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done, e.g. `reading`.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The store path exists and is not a directory.
    #[error("symbol store {}: not a directory", path.display())]
    StoreNotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The file is not an ELF object (nor anything else this store takes).
    #[error("{}: not an ELF file", path.display())]
    NotElf {
        /// The file.
        path: PathBuf,
    },
    /// The ELF file does not parse.
    #[error("{}: not a readable ELF file: {reason}", path.display())]
    BadElf {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The ELF file has no GNU build-id note, so no crash dump can be matched to it.
    #[error(
        "{}: no GNU build-id note (link with -Wl,--build-id; rustc and gcc on Linux do by default): \
         a dump could never be matched to it by id",
        path.display()
    )]
    NoBuildId {
        /// The file.
        path: PathBuf,
    },
    /// A file's build-id is not the one it was asked for or stored under: it is refused.
    #[error("{}: build-id {found}, but {expected} was asked for: refused", path.display())]
    WrongBuildId {
        /// The file.
        path: PathBuf,
        /// The build-id (or debug id) wanted.
        expected: String,
        /// The file's.
        found: String,
    },
    /// `dump_syms` could not produce symbols from the file.
    #[error("{}: converting to Breakpad symbols: {reason}", path.display())]
    Convert {
        /// The file.
        path: PathBuf,
        /// `dump_syms`'s error chain (or its panic message).
        reason: String,
    },
    /// The name a file would be stored under cannot be a directory name.
    #[error("{name:?}: not usable as a module name in the store (give --name)")]
    BadName {
        /// The name.
        name: String,
    },
    /// A build-id given on the command line is not hex.
    #[error("{given:?}: not a build-id (an even number of hex digits)")]
    BadBuildId {
        /// What was given.
        given: String,
    },
    /// A debuginfod URL is not an `http://` or `https://` URL.
    #[error("debuginfod URL {url:?}: {reason}")]
    DebuginfodUrl {
        /// What was given (credentials replaced by `<credentials>`).
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No debuginfod server is configured.
    #[error("no debuginfod server: pass --debuginfod URL or set DEBUGINFOD_URLS")]
    NoDebuginfod,
    /// A request to a debuginfod server did not complete (connection, TLS, timeout, a body
    /// over the size cap).
    #[error("GET {url}: request failed")]
    DebuginfodRequest {
        /// The URL asked for.
        url: String,
        /// What failed.
        #[source]
        source: Box<ureq::Error>,
    },
    /// A debuginfod server answered with a status other than 200 or 404.
    #[error("GET {url}: HTTP {status}")]
    DebuginfodStatus {
        /// The URL asked for.
        url: String,
        /// The status.
        status: u16,
    },
    /// No configured debuginfod server has the build-id.
    #[error("build-id {build_id}: not found on {}", urls.join(", "))]
    NotFound {
        /// The build-id asked for.
        build_id: String,
        /// The servers asked.
        urls: Vec<String>,
    },
    /// `--name` with several inputs.
    #[error("--name applies to one input; {count} were given")]
    NameForOne {
        /// Inputs given.
        count: usize,
    },
    /// Every input of `add` or `fetch` failed (each is reported on stderr).
    #[error("none of the {failed} inputs could be stored (each is listed above)")]
    NothingStored {
        /// How many failed.
        failed: usize,
    },
    /// Writing the command's output (stdout) failed.
    #[error("writing the output")]
    Output(#[source] std::io::Error),
    /// The downloaded file has no name to store it under.
    #[error(
        "build-id {build_id}: the server did not say the file's name and it has no soname: \
         give --name"
    )]
    NoName {
        /// The build-id.
        build_id: String,
    },
}

impl SymbolsError {
    /// Stable snake_case code for `--json` output, logs and runbooks. Never renamed or reused.
    pub fn code(&self) -> &'static str {
        match self {
            SymbolsError::Io { .. } => "symbols_io",
            SymbolsError::StoreNotADirectory { .. } => "symbols_store_not_a_directory",
            SymbolsError::NotElf { .. } => "symbols_not_elf",
            SymbolsError::BadElf { .. } => "symbols_elf_invalid",
            SymbolsError::NoBuildId { .. } => "symbols_no_build_id",
            SymbolsError::WrongBuildId { .. } => "symbols_wrong_build_id",
            SymbolsError::Convert { .. } => "symbols_convert_failed",
            SymbolsError::BadName { .. } => "symbols_name_invalid",
            SymbolsError::BadBuildId { .. } => "symbols_build_id_invalid",
            SymbolsError::DebuginfodUrl { .. } => "debuginfod_url_invalid",
            SymbolsError::NoDebuginfod => "debuginfod_not_configured",
            SymbolsError::DebuginfodRequest { .. } => "debuginfod_request_failed",
            SymbolsError::DebuginfodStatus { .. } => "debuginfod_status",
            SymbolsError::NotFound { .. } => "debuginfod_not_found",
            SymbolsError::NoName { .. } => "debuginfod_no_name",
            SymbolsError::NameForOne { .. } => "symbols_name_for_one",
            SymbolsError::NothingStored { .. } => "symbols_nothing_stored",
            SymbolsError::Output(_) => "cli_output",
        }
    }

    /// A `map_err` adapter for [`SymbolsError::Io`].
    pub(crate) fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| SymbolsError::Io { path, what, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_and_codes_are_stable() {
        let e = SymbolsError::NoBuildId { path: "/tmp/a.out".into() };
        assert_eq!(e.code(), "symbols_no_build_id");
        assert!(e.to_string().starts_with("/tmp/a.out: no GNU build-id note"), "{e}");
        let e = SymbolsError::NotFound {
            build_id: "abcd".into(),
            urls: vec!["http://127.0.0.1:1".into(), "https://d.example".into()],
        };
        assert_eq!(
            e.to_string(),
            "build-id abcd: not found on http://127.0.0.1:1, https://d.example"
        );
        let e = SymbolsError::io(Path::new("/s/x"), "writing")(std::io::ErrorKind::Other.into());
        assert_eq!((e.code(), e.to_string().as_str()), ("symbols_io", "writing /s/x"));
    }
}
