//! The SQLite conversation store (WAL, file mode 0600) and repair-and-seal.
//!
//! All calls from async code go through [`Store::call`], which runs the closure on tokio's
//! blocking pool. [`Store::repair_and_seal`] runs once at start, before the server takes
//! requests: `active` conversations become `idle`, turns left `running` by a crash are sealed
//! (orphaned tool calls get an error result, partial assistant output is kept and marked,
//! empty partial messages are dropped). Sealing a turn that ended by error, panic or cancel
//! uses the same reconciliation, so the history is consistent however a turn ends.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

use crate::message::{HistoryMessage, Role, ToolCall};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite returned an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database file or its directory could not be created.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A stored row does not have the shape this build writes.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The blocking task running the call failed.
    #[error("store task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "store_sqlite",
            Self::Io { .. } => "store_io",
            Self::Corrupt(_) => "store_corrupt",
            Self::Task(_) => "store_task_failed",
        }
    }
}

/// Final or running state of a turn as stored.
pub mod turn_status {
    /// Still running (or queued); a crash leaves it so.
    pub const RUNNING: &str = "running";
    /// Ended normally.
    pub const OK: &str = "ok";
    /// Ended by an error or a panic.
    pub const ERROR: &str = "error";
    /// Cancelled by a request.
    pub const CANCELLED: &str = "cancelled";
    /// Cut off (crash, or shutdown grace period over) and sealed.
    pub const SEALED: &str = "sealed";
}

/// A conversation without its messages.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConversationSummary {
    /// Conversation id.
    pub id: String,
    /// Optional title given at creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `idle` or `active`.
    pub status: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// Last change, ms since the Unix epoch.
    pub updated_ms: i64,
    /// Turns so far.
    pub turns: u64,
}

/// A stored message as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MessageView {
    /// Row id, increasing in conversation order.
    pub id: i64,
    /// Turn the message belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn: Option<String>,
    /// `user`, `assistant` or `tool`.
    pub role: Role,
    /// Text.
    pub content: String,
    /// Tool calls of an assistant message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool result: the call it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a tool result: the tool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    /// The tool failed or could not run.
    pub is_error: bool,
    /// The tool output was cut to the history bound (see `output_file`).
    pub truncated: bool,
    /// File holding the full tool output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_file: Option<String>,
    /// Assistant output cut off before the step finished (kept by repair-and-seal).
    pub partial: bool,
    /// ms since the Unix epoch.
    pub created_ms: i64,
}

/// A stored turn.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TurnView {
    /// Turn id.
    pub id: String,
    /// `running`, `ok`, `error`, `cancelled` or `sealed`.
    pub status: String,
    /// Start, ms since the Unix epoch.
    pub started_ms: i64,
    /// End, ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    /// Error message when the turn failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A conversation with messages and turns.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConversationDetail {
    /// The summary fields.
    #[serde(flatten)]
    pub summary: ConversationSummary,
    /// Messages in order.
    pub messages: Vec<MessageView>,
    /// Turns in order.
    pub turns_list: Vec<TurnView>,
}

/// One repair made while sealing a turn or resetting a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// Conversation id.
    pub conversation: String,
    /// `status_reset`, `orphaned_tool_call`, `partial_output_kept`, `empty_message_dropped`, `turn_sealed`.
    pub action: &'static str,
    /// Turn touched, if any.
    pub turn: Option<String>,
    /// For people.
    pub detail: String,
}

/// What repair-and-seal did at start.
#[derive(Debug, Clone, Default)]
pub struct RepairReport {
    /// Every repair, in order.
    pub repairs: Vec<Repair>,
    /// `(conversation, turn)` of each turn sealed.
    pub sealed_turns: Vec<(String, String)>,
}

/// Result of asking to start a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnStart {
    /// Recorded; the conversation is now `active`. `turns` counts this one.
    Started {
        /// Turns of the conversation including the new one.
        turns: u64,
    },
    /// No such conversation.
    NotFound,
    /// A turn is already running in the conversation.
    Busy,
    /// The conversation's history is at its byte limit.
    HistoryFull {
        /// Stored history, bytes.
        bytes: u64,
    },
}

/// Result of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delete {
    /// Deleted with its messages and turns.
    Deleted,
    /// No such conversation.
    NotFound,
    /// A turn is running; cancel it first.
    Busy,
}

/// A tool result to append to history.
#[derive(Debug, Clone)]
pub struct ToolResultRow {
    /// The call answered.
    pub call_id: String,
    /// Tool name.
    pub tool_name: String,
    /// Bounded text kept in history.
    pub content: String,
    /// Failed or could not run.
    pub is_error: bool,
    /// Cut to the bound.
    pub truncated: bool,
    /// Full output file, when truncated.
    pub output_file: Option<String>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT,
    status TEXT NOT NULL CHECK (status IN ('idle', 'active')),
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS turns (
    id TEXT PRIMARY KEY,
    conversation TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    error TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS turns_by_conversation ON turns(conversation);
CREATE INDEX IF NOT EXISTS turns_by_status ON turns(status);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    conversation TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    turn TEXT,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
    content TEXT NOT NULL,
    tool_calls TEXT,
    tool_call_id TEXT,
    tool_name TEXT,
    is_error INTEGER NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0,
    output_file TEXT,
    partial INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation, id);
-- Streamed text of a message still being written, one row per flush: appending never
-- rewrites what is stored, so a long answer costs writes linear in its size. Folded into
-- messages.content when the step finishes or the turn is sealed.
CREATE TABLE IF NOT EXISTS message_chunks (
    message INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (message, seq)
) STRICT;
CREATE INDEX IF NOT EXISTS messages_by_turn ON messages(turn);
";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The conversation store: one SQLite connection behind a mutex, used from the blocking pool.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating when missing, mode 0600) the database at `path` in WAL mode.
    ///
    /// # Errors
    /// The directory or file cannot be created, or SQLite fails.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        }
        // Create the file ourselves so it is 0600 from the first byte; SQLite gives the -wal
        // and -shm files the permissions of the database file.
        // Never through a symlink: O_NOFOLLOW here, SQLITE_OPEN_NOFOLLOW for SQLite's own open.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|source| StoreError::Io { path: path.to_path_buf(), source })?;
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The WAL is truncated back to 64 MiB after a checkpoint instead of keeping its peak.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn: Arc::new(Mutex::new(conn)), path: path.to_path_buf() })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic never happens while the lock is held (no code here panics on input), but a
        // poisoned lock still guards a valid connection: SQLite rolled back any open statement.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` with the connection on the blocking pool (SQLite never blocks the runtime).
    ///
    /// # Errors
    /// What `f` returns, or [`StoreError::Task`] when the blocking task fails.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = store.lock();
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs `f` with the connection on the current thread (start-up and shutdown only).
    ///
    /// # Errors
    /// What `f` returns.
    pub fn call_sync<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        f(&mut conn)
    }

    /// Repair-and-seal, run once at start before requests are served.
    ///
    /// # Errors
    /// SQLite fails; nothing is half-applied (one transaction).
    pub fn repair_and_seal(&self) -> Result<RepairReport, StoreError> {
        self.call_sync(|conn| {
            let tx = conn.transaction()?;
            let mut report = RepairReport::default();
            let running: Vec<(String, String)> = {
                let mut stmt = tx.prepare(
                    "SELECT conversation, id FROM turns WHERE status = 'running' ORDER BY started_ms, id",
                )?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            for (conversation, turn) in running {
                let repairs = seal_turn_tx(
                    &tx,
                    &conversation,
                    &turn,
                    turn_status::SEALED,
                    None,
                    "the server stopped before the tool call finished",
                )?;
                report.repairs.extend(repairs);
                report.repairs.push(Repair {
                    conversation: conversation.clone(),
                    action: "turn_sealed",
                    turn: Some(turn.clone()),
                    detail: "turn cut off by a server stop; sealed, the user re-sends".into(),
                });
                report.sealed_turns.push((conversation, turn));
            }
            let active: Vec<String> = {
                let mut stmt = tx
                    .prepare("SELECT id FROM conversations WHERE status = 'active' ORDER BY id")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let now = now_ms();
            for id in active {
                tx.execute(
                    "UPDATE conversations SET status = 'idle', updated_ms = ?2 WHERE id = ?1",
                    params![id, now],
                )?;
                report.repairs.push(Repair {
                    conversation: id,
                    action: "status_reset",
                    turn: None,
                    detail: "active -> idle".into(),
                });
            }
            tx.commit()?;
            Ok(report)
        })
    }
}

/// Creates a conversation.
///
/// # Errors
/// SQLite fails.
pub fn create_conversation(
    conn: &mut Connection,
    id: &str,
    title: Option<&str>,
) -> Result<ConversationSummary, StoreError> {
    let now = now_ms();
    conn.execute(
        "INSERT INTO conversations (id, title, status, created_ms, updated_ms) VALUES (?1, ?2, 'idle', ?3, ?3)",
        params![id, title, now],
    )?;
    Ok(ConversationSummary {
        id: id.to_owned(),
        title: title.map(str::to_owned),
        status: "idle".into(),
        created_ms: now,
        updated_ms: now,
        turns: 0,
    })
}

const SUMMARY_COLUMNS: &str = "c.id, c.title, c.status, c.created_ms, c.updated_ms, \
    (SELECT count(*) FROM turns t WHERE t.conversation = c.id)";

fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConversationSummary> {
    Ok(ConversationSummary {
        id: r.get(0)?,
        title: r.get(1)?,
        status: r.get(2)?,
        created_ms: r.get(3)?,
        updated_ms: r.get(4)?,
        turns: r.get::<_, i64>(5)?.max(0) as u64,
    })
}

/// How many conversations the store holds.
///
/// # Errors
/// SQLite fails.
pub fn count_conversations(conn: &mut Connection) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row("SELECT count(*) FROM conversations", [], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// Lists conversations, most recently changed first.
///
/// # Errors
/// SQLite fails.
pub fn list_conversations(
    conn: &mut Connection,
    limit: usize,
) -> Result<Vec<ConversationSummary>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM conversations c ORDER BY c.updated_ms DESC, c.id LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit as i64], summary_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One conversation with its messages and turns, or `None`.
///
/// # Errors
/// SQLite fails or a row is corrupt.
pub fn get_conversation(
    conn: &mut Connection,
    id: &str,
) -> Result<Option<ConversationDetail>, StoreError> {
    let summary = conn
        .query_row(
            &format!("SELECT {SUMMARY_COLUMNS} FROM conversations c WHERE c.id = ?1"),
            [id],
            summary_row,
        )
        .optional()?;
    let Some(summary) = summary else { return Ok(None) };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, turn, role, {MESSAGE_TEXT}, tool_calls, tool_call_id, tool_name, is_error, \
             truncated, output_file, partial, created_ms FROM messages WHERE conversation = ?1 \
             ORDER BY id"
    ))?;
    let mut messages = Vec::new();
    let mut rows = stmt.query([id])?;
    while let Some(r) = rows.next()? {
        let role: String = r.get(2)?;
        let role = Role::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("message role {role:?}")))?;
        let calls: Option<String> = r.get(4)?;
        messages.push(MessageView {
            id: r.get(0)?,
            turn: r.get(1)?,
            role,
            content: r.get(3)?,
            tool_calls: parse_calls(calls.as_deref())?,
            tool_call_id: r.get(5)?,
            tool_name: r.get(6)?,
            is_error: r.get::<_, i64>(7)? != 0,
            truncated: r.get::<_, i64>(8)? != 0,
            output_file: r.get(9)?,
            partial: r.get::<_, i64>(10)? != 0,
            created_ms: r.get(11)?,
        });
    }
    drop(rows);
    let mut stmt = conn.prepare_cached(
        "SELECT id, status, started_ms, ended_ms, error FROM turns WHERE conversation = ?1 \
         ORDER BY started_ms, rowid",
    )?;
    let turns = stmt
        .query_map([id], |r| {
            Ok(TurnView {
                id: r.get(0)?,
                status: r.get(1)?,
                started_ms: r.get(2)?,
                ended_ms: r.get(3)?,
                error: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(ConversationDetail { summary, messages, turns_list: turns }))
}

fn parse_calls(json: Option<&str>) -> Result<Vec<ToolCall>, StoreError> {
    match json {
        None => Ok(Vec::new()),
        Some(s) => {
            serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("tool_calls: {e}")))
        }
    }
}

/// Deletes a conversation unless a turn is running in it.
///
/// # Errors
/// SQLite fails.
pub fn delete_conversation(conn: &mut Connection, id: &str) -> Result<Delete, StoreError> {
    let tx = conn.transaction()?;
    let status: Option<String> = tx
        .query_row("SELECT status FROM conversations WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    let result = match status.as_deref() {
        None => Delete::NotFound,
        Some("active") => Delete::Busy,
        Some(_) => {
            tx.execute("DELETE FROM messages WHERE conversation = ?1", [id])?;
            tx.execute("DELETE FROM turns WHERE conversation = ?1", [id])?;
            tx.execute("DELETE FROM conversations WHERE id = ?1", [id])?;
            Delete::Deleted
        }
    };
    tx.commit()?;
    Ok(result)
}

/// Starts a turn: the conversation goes `active`, the turn is `running`, the user message is
/// stored. Refused when the conversation is missing or busy.
///
/// # Errors
/// SQLite fails.
pub fn start_turn(
    conn: &mut Connection,
    conversation: &str,
    turn: &str,
    message: &str,
    max_history_bytes: u64,
) -> Result<TurnStart, StoreError> {
    let tx = conn.transaction()?;
    let status: Option<String> = tx
        .query_row("SELECT status FROM conversations WHERE id = ?1", [conversation], |r| r.get(0))
        .optional()?;
    match status.as_deref() {
        None => return Ok(TurnStart::NotFound),
        Some("active") => return Ok(TurnStart::Busy),
        Some(_) => {}
    }
    let history: i64 = tx.query_row(
        "SELECT coalesce(sum(length(CAST(content AS BLOB))), 0) FROM messages WHERE conversation = ?1",
        [conversation],
        |r| r.get(0),
    )?;
    let bytes = history.max(0) as u64 + message.len() as u64;
    if bytes > max_history_bytes {
        return Ok(TurnStart::HistoryFull { bytes: history.max(0) as u64 });
    }
    let now = now_ms();
    tx.execute(
        "UPDATE conversations SET status = 'active', updated_ms = ?2 WHERE id = ?1",
        params![conversation, now],
    )?;
    tx.execute(
        "INSERT INTO turns (id, conversation, status, started_ms) VALUES (?1, ?2, 'running', ?3)",
        params![turn, conversation, now],
    )?;
    tx.execute(
        "INSERT INTO messages (conversation, turn, role, content, created_ms) VALUES (?1, ?2, 'user', ?3, ?4)",
        params![conversation, turn, message, now],
    )?;
    let turns: i64 =
        tx.query_row("SELECT count(*) FROM turns WHERE conversation = ?1", [conversation], |r| {
            r.get(0)
        })?;
    tx.commit()?;
    Ok(TurnStart::Started { turns: turns.max(0) as u64 })
}

/// The history the provider sees: every message of the conversation in order.
///
/// # Errors
/// SQLite fails or a row is corrupt.
pub fn load_history(
    conn: &mut Connection,
    conversation: &str,
) -> Result<Vec<HistoryMessage>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT role, {MESSAGE_TEXT}, tool_calls, tool_call_id, tool_name FROM messages \
             WHERE conversation = ?1 ORDER BY id"
    ))?;
    let mut rows = stmt.query([conversation])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let role: String = r.get(0)?;
        let role = Role::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("message role {role:?}")))?;
        let calls: Option<String> = r.get(2)?;
        out.push(HistoryMessage {
            role,
            content: r.get(1)?,
            tool_calls: parse_calls(calls.as_deref())?,
            tool_call_id: r.get(3)?,
            tool_name: r.get(4)?,
        });
    }
    Ok(out)
}

/// Opens an assistant message for a step, marked partial until [`finish_assistant`].
///
/// # Errors
/// SQLite fails.
pub fn begin_assistant(
    conn: &mut Connection,
    conversation: &str,
    turn: &str,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO messages (conversation, turn, role, content, partial, created_ms) \
         VALUES (?1, ?2, 'assistant', '', 1, ?3)",
        params![conversation, turn, now_ms()],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Appends streamed text to an open assistant message: one new chunk row, so nothing stored
/// is rewritten (the message's text is its content plus its chunks in order).
///
/// # Errors
/// SQLite fails.
pub fn append_assistant(conn: &mut Connection, message: i64, text: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO message_chunks (message, seq, text) VALUES (?1, \
         (SELECT coalesce(max(seq), -1) + 1 FROM message_chunks WHERE message = ?1), ?2)",
        params![message, text],
    )?;
    Ok(())
}

/// A message's text as stored: its content, then its streamed chunks (for a partial one).
const MESSAGE_TEXT: &str = "CASE WHEN partial = 1 THEN content || coalesce((SELECT \
    group_concat(k.text, '' ORDER BY k.seq) FROM message_chunks k WHERE k.message = messages.id), '') \
    ELSE content END";

/// Folds the streamed chunks of `message` into its content (once, when it stops growing).
fn fold_chunks(conn: &Connection, message: i64) -> Result<(), StoreError> {
    conn.execute(
        &format!("UPDATE messages SET content = {MESSAGE_TEXT} WHERE id = ?1 AND partial = 1"),
        [message],
    )?;
    conn.execute("DELETE FROM message_chunks WHERE message = ?1", [message])?;
    Ok(())
}

/// Completes an assistant message with its final text and tool calls.
///
/// # Errors
/// SQLite fails.
pub fn finish_assistant(
    conn: &mut Connection,
    message: i64,
    text: &str,
    calls: &[ToolCall],
) -> Result<(), StoreError> {
    let calls = if calls.is_empty() {
        None
    } else {
        Some(serde_json::to_string(calls).map_err(|e| StoreError::Corrupt(e.to_string()))?)
    };
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE messages SET content = ?2, tool_calls = ?3, partial = 0 WHERE id = ?1",
        params![message, text, calls],
    )?;
    tx.execute("DELETE FROM message_chunks WHERE message = ?1", [message])?;
    tx.commit()?;
    Ok(())
}

/// Appends a tool result.
///
/// # Errors
/// SQLite fails.
pub fn add_tool_result(
    conn: &Connection,
    conversation: &str,
    turn: &str,
    row: &ToolResultRow,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO messages (conversation, turn, role, content, tool_call_id, tool_name, is_error, \
         truncated, output_file, created_ms) VALUES (?1, ?2, 'tool', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            conversation,
            turn,
            row.content,
            row.call_id,
            row.tool_name,
            row.is_error as i64,
            row.truncated as i64,
            row.output_file,
            now_ms()
        ],
    )?;
    Ok(())
}

/// Ends a turn with `outcome`, reconciling what it left behind (see [`seal_turn_tx`]), and puts
/// the conversation back to `idle`. Returns the repairs made.
///
/// # Errors
/// SQLite fails; nothing is half-applied.
pub fn finish_turn(
    conn: &mut Connection,
    conversation: &str,
    turn: &str,
    outcome: &str,
    error: Option<&str>,
    orphan_reason: &str,
) -> Result<Vec<Repair>, StoreError> {
    let tx = conn.transaction()?;
    let repairs = seal_turn_tx(&tx, conversation, turn, outcome, error, orphan_reason)?;
    tx.execute(
        "UPDATE conversations SET status = 'idle', updated_ms = ?2 WHERE id = ?1",
        params![conversation, now_ms()],
    )?;
    tx.commit()?;
    Ok(repairs)
}

/// Reconciles a turn and sets its final status: partial assistant messages are kept and stay
/// marked `partial` (or dropped when empty), every tool call without a result gets an error
/// result saying `orphan_reason`.
///
/// # Errors
/// SQLite fails or a row is corrupt.
pub fn seal_turn_tx(
    tx: &Transaction<'_>,
    conversation: &str,
    turn: &str,
    outcome: &str,
    error: Option<&str>,
    orphan_reason: &str,
) -> Result<Vec<Repair>, StoreError> {
    let mut repairs = Vec::new();
    let repair = |action: &'static str, detail: String| Repair {
        conversation: conversation.to_owned(),
        action,
        turn: Some(turn.to_owned()),
        detail,
    };
    // Partial assistant output: keep it (marked) or drop it when there is nothing to keep.
    let ids: Vec<i64> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id FROM messages WHERE turn = ?1 AND role = 'assistant' AND partial = 1",
        )?;
        let rows = stmt.query_map([turn], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for id in ids {
        fold_chunks(tx, id)?;
    }
    let partials: Vec<(i64, i64, bool)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id, length(CAST(content AS BLOB)), tool_calls IS NOT NULL FROM messages \
             WHERE turn = ?1 AND role = 'assistant' AND partial = 1 ORDER BY id",
        )?;
        let rows = stmt.query_map([turn], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, bytes, has_calls) in partials {
        if bytes == 0 && !has_calls {
            tx.execute("DELETE FROM messages WHERE id = ?1", [id])?;
            repairs.push(repair(
                "empty_message_dropped",
                format!("message {id}: empty partial output"),
            ));
        } else {
            repairs.push(repair(
                "partial_output_kept",
                format!(
                    "message {id}: {bytes} bytes of partial assistant output kept, marked partial"
                ),
            ));
        }
    }
    // Orphaned tool calls: every call without a result gets an error result.
    let calls: Vec<String> = {
        let mut stmt = tx.prepare_cached(
            "SELECT tool_calls FROM messages WHERE turn = ?1 AND role = 'assistant' \
             AND tool_calls IS NOT NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([turn], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for json in calls {
        for call in parse_calls(Some(&json))? {
            let answered: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE conversation = ?1 AND role = 'tool' \
                 AND tool_call_id = ?2)",
                params![conversation, call.id],
                |r| r.get(0),
            )?;
            if !answered {
                add_tool_result(
                    tx,
                    conversation,
                    turn,
                    &ToolResultRow {
                        call_id: call.id.clone(),
                        tool_name: call.name.clone(),
                        content: format!("error: {orphan_reason}"),
                        is_error: true,
                        truncated: false,
                        output_file: None,
                    },
                )?;
                repairs.push(repair(
                    "orphaned_tool_call",
                    format!(
                        "tool call {} ({}) had no result; error result added",
                        call.id, call.name
                    ),
                ));
            }
        }
    }
    tx.execute(
        "UPDATE turns SET status = ?2, ended_ms = ?3, error = ?4 WHERE id = ?1",
        params![turn, outcome, now_ms(), error],
    )?;
    Ok(repairs)
}

/// Whether a turn exists in a conversation, and its status.
///
/// # Errors
/// SQLite fails.
pub fn turn_status(
    conn: &mut Connection,
    conversation: &str,
    turn: &str,
) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT status FROM turns WHERE id = ?1 AND conversation = ?2",
            params![turn, conversation],
            |r| r.get(0),
        )
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "sh".into(),
            arguments: serde_json::json!({"command": "sleep 9"}),
        }
    }

    #[test]
    fn a_symlinked_database_path_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("elsewhere.db");
        std::fs::write(&real, b"").unwrap();
        let link = d.path().join("dispatch.db");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(Store::open(&link).is_err(), "the store opened a database through a symlink");
        assert!(Store::open(&d.path().join("real.db")).is_ok());
    }

    #[test]
    fn repair_answers_orphaned_calls_drops_empty_partials_and_seals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db").join("dispatch.db");
        let store = Store::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        store
            .call_sync(|c| {
                create_conversation(c, "c1", None)?;
                create_conversation(c, "c2", None)?;
                assert_eq!(
                    start_turn(c, "c1", "t1", "tool:sh sleep 9", u64::MAX)?,
                    TurnStart::Started { turns: 1 }
                );
                assert_eq!(start_turn(c, "c1", "t-busy", "x", u64::MAX)?, TurnStart::Busy);
                assert_eq!(start_turn(c, "nope", "t-x", "x", u64::MAX)?, TurnStart::NotFound);
                // Step 1 finished with two tool calls; only the first got its result.
                let m = begin_assistant(c, "c1", "t1")?;
                finish_assistant(c, m, "calling", &[call("a"), call("b")])?;
                add_tool_result(
                    c,
                    "c1",
                    "t1",
                    &ToolResultRow {
                        call_id: "a".into(),
                        tool_name: "sh".into(),
                        content: "ok".into(),
                        is_error: false,
                        truncated: false,
                        output_file: None,
                    },
                )?;
                // Step 2 opened but nothing streamed yet.
                begin_assistant(c, "c1", "t1")?;
                Ok(())
            })
            .unwrap();
        drop(store);

        let store = Store::open(&path).unwrap();
        let report = store.repair_and_seal().unwrap();
        let actions: Vec<&str> = report.repairs.iter().map(|r| r.action).collect();
        assert_eq!(
            actions,
            ["empty_message_dropped", "orphaned_tool_call", "turn_sealed", "status_reset"]
        );
        assert_eq!(report.sealed_turns, vec![("c1".to_owned(), "t1".to_owned())]);
        let detail = store.call_sync(|c| get_conversation(c, "c1")).unwrap().unwrap();
        assert_eq!(detail.summary.status, "idle");
        assert_eq!(detail.turns_list[0].status, turn_status::SEALED);
        let roles: Vec<Role> = detail.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::Tool]);
        let orphan = &detail.messages[3];
        assert_eq!(orphan.tool_call_id.as_deref(), Some("b"));
        assert!(orphan.is_error && orphan.content.contains("server stopped"), "{orphan:?}");
        // Idempotent: a second start has nothing to do.
        assert!(store.repair_and_seal().unwrap().repairs.is_empty());
        // The untouched conversation is as it was.
        assert_eq!(
            store.call_sync(|c| get_conversation(c, "c2")).unwrap().unwrap().summary.status,
            "idle"
        );
    }
}
