//! Names of the `DISPATCH_*` environment variables that writers and readers share, so that a
//! reader never links the writer to learn them. The README's "Configuration" table lists every
//! variable with its flag and default.

/// Root of everything the server keeps on disk (`./var`).
pub const VAR_DIR: &str = "DISPATCH_VAR_DIR";
/// Journal directory (`<var dir>/journal`).
pub const JOURNAL_DIR: &str = "DISPATCH_JOURNAL_DIR";
/// Segment size that triggers rotation, bytes.
pub const JOURNAL_SEGMENT_BYTES: &str = "DISPATCH_JOURNAL_SEGMENT_BYTES";
/// Byte budget for all segments of the directory.
pub const JOURNAL_BUDGET_BYTES: &str = "DISPATCH_JOURNAL_BUDGET_BYTES";
/// Lines the writer queues while its segment lock is busy.
pub const JOURNAL_QUEUE_LINES: &str = "DISPATCH_JOURNAL_QUEUE_LINES";
/// Memory sampler interval, milliseconds.
pub const SAMPLE_INTERVAL_MS: &str = "DISPATCH_SAMPLE_INTERVAL_MS";
/// Service name written in every envelope and segment name.
pub const SERVICE: &str = "DISPATCH_SERVICE";
/// Traces database path (`<var dir>/traces.db`).
pub const TRACES_DB: &str = "DISPATCH_TRACES_DB";

/// The symbol store (`<store>/<name>/<DEBUG ID>/...`, Breakpad's layout): the server copies its
/// own executable there at start when it is set (unset: off); `dispatchctl symbols` defaults to
/// `<var dir>/symbols`.
pub const SYMBOL_STORE: &str = "DISPATCH_SYMBOL_STORE";

/// Every variable above, for the documentation test.
pub const ALL: &[&str] = &[
    VAR_DIR,
    JOURNAL_DIR,
    JOURNAL_SEGMENT_BYTES,
    JOURNAL_BUDGET_BYTES,
    JOURNAL_QUEUE_LINES,
    SAMPLE_INTERVAL_MS,
    SERVICE,
    TRACES_DB,
    SYMBOL_STORE,
];
