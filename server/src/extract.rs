//! Request parsing shared by the public API and the admin API: JSON bodies with one error per
//! way they can be wrong, and ids from the path.

use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::ids;

/// Parses a JSON body: size, content type, UTF-8 and JSON are each checked with their own
/// error. `Ok(None)` for an empty body when `allow_empty`.
pub fn parse_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
    allow_empty: bool,
) -> Result<Option<T>, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge { limit }
        } else {
            ApiError::BodyUnreadable(rejection.body_text())
        }
    })?;
    if body.is_empty() && allow_empty {
        return Ok(None);
    }
    let content_type =
        headers.get(CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let is_json = content_type.as_deref().is_some_and(|ct| {
        let essence = ct.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("application/json")
    });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType { got: content_type.unwrap_or_default() });
    }
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::InvalidUtf8 { offset: e.valid_up_to() })?;
    serde_json::from_str(text).map(Some).map_err(|e| ApiError::BadJson(e.to_string()))
}

/// The conversation id from the path; an id that cannot be one is `conversation_not_found`.
pub fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    if !ids::is_plausible(&id) {
        return Err(ApiError::ConversationNotFound(id));
    }
    Ok(id)
}
