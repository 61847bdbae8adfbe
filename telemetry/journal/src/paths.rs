//! Where things live on disk, for every binary: the var directory and the names below it.
//! The server, the collector and `dispatchctl` derive their default paths here, so moving the
//! var directory (`DISPATCH_VAR_DIR`, `--var-dir`) moves everything, the same way for all
//! three. The environment is read by each binary's argument parser, once; nothing here reads
//! it.

use std::path::{Path, PathBuf};

/// Default var directory, relative to the working directory.
pub const DEFAULT_VAR_DIR: &str = "./var";
/// Journal segments, below the var directory.
pub const JOURNAL_DIR_NAME: &str = "journal";
/// The traces database the collector writes and `dispatchctl` reads.
pub const TRACES_DB_NAME: &str = "traces.db";
/// Minidumps written by the crash monitor.
pub const CRASH_DIR_NAME: &str = "crashes";
/// Symbol files stored by build-id / debug id.
pub const SYMBOL_STORE_NAME: &str = "symbols";
/// The server's conversation database.
pub const CONVERSATION_DB_NAME: &str = "dispatch.db";
/// Full tool outputs offloaded from history.
pub const TOOL_OUTPUT_DIR_NAME: &str = "tool-output";
/// Heap profiles dumped through the admin API.
pub const HEAP_DIR_NAME: &str = "heap";

/// Name of the post-mortem page directory under the var directory.
pub const POSTMORTEM_DIR_NAME: &str = "postmortems";

/// A var directory and the paths below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarDir(PathBuf);

impl VarDir {
    /// The var directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> VarDir {
        VarDir(root.into())
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.0
    }

    /// `<var dir>/journal`.
    pub fn journal_dir(&self) -> PathBuf {
        self.0.join(JOURNAL_DIR_NAME)
    }

    /// `<var dir>/traces.db`.
    pub fn traces_db(&self) -> PathBuf {
        self.0.join(TRACES_DB_NAME)
    }

    /// `<var dir>/crashes`.
    pub fn crash_dir(&self) -> PathBuf {
        self.0.join(CRASH_DIR_NAME)
    }

    /// `<var dir>/symbols`.
    pub fn symbol_store(&self) -> PathBuf {
        self.0.join(SYMBOL_STORE_NAME)
    }

    /// `<var dir>/dispatch.db`.
    pub fn conversation_db(&self) -> PathBuf {
        self.0.join(CONVERSATION_DB_NAME)
    }

    /// `<var dir>/tool-output`.
    pub fn tool_output_dir(&self) -> PathBuf {
        self.0.join(TOOL_OUTPUT_DIR_NAME)
    }

    /// `<var dir>/heap`.
    pub fn heap_dir(&self) -> PathBuf {
        self.0.join(HEAP_DIR_NAME)
    }

    /// `<var dir>/postmortems`: `dispatchctl postmortem --format html --out` writes
    /// `<boot>.html` here, and the server's `/ui` links each abnormal end to its page.
    pub fn postmortem_dir(&self) -> PathBuf {
        self.0.join(POSTMORTEM_DIR_NAME)
    }

    /// `<var dir>/postmortems/<boot>.html`.
    pub fn postmortem_page(&self, boot: &str) -> PathBuf {
        self.postmortem_dir().join(format!("{boot}.html"))
    }
}

impl Default for VarDir {
    fn default() -> VarDir {
        VarDir::new(DEFAULT_VAR_DIR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_below_the_var_dir() {
        let v = VarDir::new("/srv/d");
        assert_eq!(v.journal_dir(), Path::new("/srv/d/journal"));
        assert_eq!(v.traces_db(), Path::new("/srv/d/traces.db"));
        assert_eq!(v.crash_dir(), Path::new("/srv/d/crashes"));
        assert_eq!(v.symbol_store(), Path::new("/srv/d/symbols"));
        assert_eq!(v.conversation_db(), Path::new("/srv/d/dispatch.db"));
        assert_eq!(v.tool_output_dir(), Path::new("/srv/d/tool-output"));
        assert_eq!(v.heap_dir(), Path::new("/srv/d/heap"));
        assert_eq!(VarDir::default().traces_db(), Path::new("./var/traces.db"));
    }
}
