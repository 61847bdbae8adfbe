//! The HTTP error type: every failure a handler can return, with a stable `code()` and status.
//!
//! The body is always `{"error":{"code":"...","message":"..."}}`; codes are never renamed or
//! reused once shipped.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

/// An API error, rendered as `{"error":{"code":..,"message":..}}` with a matching status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON, or not the expected shape.
    #[error("request body is not valid JSON for this endpoint: {0}")]
    BadJson(String),
    /// The body is not UTF-8.
    #[error("request body is not valid UTF-8 (invalid byte at offset {offset})")]
    InvalidUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// The body exceeds the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body could not be read.
    #[error("request body could not be read: {0}")]
    BodyUnreadable(String),
    /// The content type is not `application/json`.
    #[error("content type must be application/json, got {got:?}")]
    UnsupportedMediaType {
        /// The content type sent, or `""` when missing.
        got: String,
    },
    /// A field is present and well-formed JSON but not acceptable.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The `Host` header names another server (DNS rebinding).
    #[error("host {0:?} is not this server; add it to DISPATCH_ALLOWED_HOSTS if it is")]
    HostNotAllowed(String),
    /// A browser's cross-site request.
    #[error("cross-origin request refused ({0})")]
    CrossOrigin(String),
    /// The store holds as many conversations as it may.
    #[error("the server holds its limit of {limit} conversations; delete some first")]
    ConversationLimit {
        /// The limit.
        limit: u64,
    },
    /// The conversation's stored history is at its limit.
    #[error(
        "conversation {conversation:?} holds {bytes} bytes of history, the limit is {limit}; start a new conversation"
    )]
    HistoryLimit {
        /// Conversation id.
        conversation: String,
        /// Its history, bytes.
        bytes: u64,
        /// The limit, bytes.
        limit: u64,
    },
    /// The title is too long.
    #[error("title has {bytes} bytes; at most {limit} are allowed")]
    TitleTooLong {
        /// Its length.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// No conversation has this id.
    #[error("no conversation with id {0:?}")]
    ConversationNotFound(String),
    /// No turn has this id in the conversation.
    #[error("no turn with id {turn:?} in conversation {conversation:?}")]
    TurnNotFound {
        /// Conversation id.
        conversation: String,
        /// Turn id.
        turn: String,
    },
    /// The conversation already has a turn running.
    #[error("conversation {0:?} already has a turn running; wait for it or cancel it")]
    TurnInProgress(String),
    /// The turn exists but is not running.
    #[error("turn {0:?} is not running")]
    TurnNotRunning(String),
    /// The queue of turns waiting for a provider slot is full.
    #[error("too many turns waiting for a provider slot (limit {limit}); retry later")]
    QueueFull {
        /// Queue bound.
        limit: usize,
    },
    /// The server is shutting down and takes no new turns.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The memory-pressure breaker refuses new turns (see [`crate::pressure`]).
    #[error(
        "memory pressure: {figure_mib} MiB in use, at or above the soft limit of {limit_mib} MiB; \
         in-flight turns go on, new ones are refused until memory falls (retry later)"
    )]
    MemoryPressure {
        /// The measured figure, MiB.
        figure_mib: u64,
        /// The soft limit, MiB.
        limit_mib: u64,
    },
    /// No route for this path.
    #[error("no such endpoint: {0}")]
    NoRoute(String),
    /// The route exists but not for this method.
    #[error("method {0} is not allowed on this endpoint")]
    MethodNotAllowed(String),
    /// An admin route without the admin token (missing or wrong `Authorization: Bearer`).
    #[error("this endpoint needs the admin token (Authorization: Bearer <token>)")]
    Unauthorized,
    /// No fault has this name.
    #[error(
        "no fault named {0:?} (segfault, abort, stack-overflow, sigbus, sigill, panic-turn, panic-thread, leak, alloc, stall)"
    )]
    FaultNotFound(String),
    /// jemalloc heap profiling failed.
    #[error("heap profiling: {0}")]
    HeapProfile(String),
    /// The conversation store failed.
    #[error("conversation store failed: {0}")]
    Store(#[from] StoreError),
    /// A background task failed unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Stable snake_case code, the same in HTTP bodies, logs and runbooks.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadJson(_) => "bad_json",
            Self::InvalidUtf8 { .. } => "invalid_utf8",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyUnreadable(_) => "body_unreadable",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::InvalidRequest(_) => "invalid_request",
            Self::ConversationNotFound(_) => "conversation_not_found",
            Self::TurnNotFound { .. } => "turn_not_found",
            Self::TurnInProgress(_) => "turn_in_progress",
            Self::TurnNotRunning(_) => "turn_not_running",
            Self::QueueFull { .. } => "queue_full",
            Self::MemoryPressure { .. } => "memory_pressure",
            Self::ShuttingDown => "shutting_down",
            Self::NoRoute(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Unauthorized => "unauthorized",
            Self::ConversationLimit { .. } => "conversation_limit",
            Self::HistoryLimit { .. } => "history_limit",
            Self::TitleTooLong { .. } => "title_too_long",
            Self::HostNotAllowed(_) => "host_not_allowed",
            Self::CrossOrigin(_) => "cross_origin_refused",
            Self::FaultNotFound(_) => "fault_not_found",
            Self::HeapProfile(_) => "heap_profile_failed",
            Self::Store(e) => e.code(),
            Self::Internal(_) => "internal",
        }
    }

    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadJson(_) | Self::InvalidUtf8 { .. } | Self::InvalidRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::BodyUnreadable(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ConversationNotFound(_)
            | Self::TurnNotFound { .. }
            | Self::NoRoute(_)
            | Self::FaultNotFound(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::ConversationLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::HistoryLimit { .. } => StatusCode::CONFLICT,
            Self::TitleTooLong { .. } => StatusCode::BAD_REQUEST,
            Self::HostNotAllowed(_) | Self::CrossOrigin(_) => StatusCode::FORBIDDEN,
            Self::HeapProfile(_) => StatusCode::CONFLICT,
            Self::TurnInProgress(_) | Self::TurnNotRunning(_) => StatusCode::CONFLICT,
            Self::QueueFull { .. } | Self::ShuttingDown | Self::MemoryPressure { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Store(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The details of an internal error, kept out of the body and attached to the response for
/// the router's journaling layer (`api::journal_internal_errors`), which writes them as an
/// `error.unhandled` record (source `api`) under the id the client was given.
#[derive(Debug, Clone)]
pub struct InternalErrorDetail {
    /// The id in the client's body.
    pub error_id: String,
    /// Stable code.
    pub code: &'static str,
    /// The full message (SQL errors, paths).
    pub message: String,
}

impl ApiError {
    /// Whether the message holds details the client must not see (the server's own failures:
    /// SQL errors, file paths, heap-profile errors).
    fn is_internal(&self) -> bool {
        matches!(self, Self::Store(_) | Self::Internal(_) | Self::HeapProfile(_))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut detail = None;
        let message = if self.is_internal() {
            let error_id = uuid::Uuid::new_v4().to_string();
            let body = serde_json::json!({
                "error": {
                    "code": self.code(),
                    "message": format!(
                        "the server failed to handle this request; the details are in its journal \
                         under error id {error_id}"
                    ),
                    "error_id": error_id,
                }
            });
            detail = Some(InternalErrorDetail {
                error_id,
                code: self.code(),
                message: self.to_string(),
            });
            body
        } else {
            serde_json::json!({ "error": { "code": self.code(), "message": self.to_string() } })
        };
        let body = message;
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(d) = detail {
            response.extensions_mut().insert(d);
        }
        if matches!(self, Self::MemoryPressure { .. }) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(crate::pressure::RETRY_AFTER_S),
            );
        }
        if matches!(self, Self::Unauthorized) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
