//! The `openai` provider: a streaming client for OpenAI-compatible `/v1/chat/completions`
//! (`stream: true`, tool calls), on hyper-util's pooled client.
//!
//! Plain `http://` only: this build links no TLS stack. Point `DISPATCH_OPENAI_BASE_URL` at a
//! local OpenAI-compatible server (llama.cpp, vLLM, Ollama) or a TLS-terminating proxy.

use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::{ProviderError, StepRequest, StepSink};
use crate::message::{HistoryMessage, Role, ToolCall};

/// Connect timeout for the provider's HTTP connections.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest server-sent line accepted, bytes; a longer one is a protocol error.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// OpenAI-compatible streaming chat-completions client.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    api_key: Option<String>,
    model: String,
    idle_timeout: Duration,
}

impl OpenAiProvider {
    /// A client for `base_url` (up to and including `/v1`).
    ///
    /// # Errors
    /// The URL is not a valid `http://` URL.
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        model: impl Into<String>,
        idle_timeout: Duration,
    ) -> Result<OpenAiProvider, ProviderError> {
        let base = base_url.trim_end_matches('/');
        if base.starts_with("https://") {
            return Err(ProviderError::Config(format!(
                "{base_url}: https is not supported by this build (no TLS); use an http:// endpoint or a local proxy"
            )));
        }
        let url: Uri = format!("{base}/chat/completions")
            .parse()
            .map_err(|e| ProviderError::Config(format!("{base_url}: not a URL: {e}")))?;
        if url.scheme_str() != Some("http") || url.host().is_none() {
            return Err(ProviderError::Config(format!(
                "{base_url}: expected http://host[:port]/path"
            )));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(DEFAULT_CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(OpenAiProvider { client, url, api_key, model: model.into(), idle_timeout })
    }

    /// Model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The request body for a step.
    pub fn request_body(&self, req: &StepRequest<'_>) -> Value {
        let messages: Vec<Value> = req.history.iter().map(wire_message).collect();
        let mut body = json!({ "model": self.model, "stream": true, "messages": messages });
        if !req.tools.is_empty() {
            body["tools"] = req
                .tools
                .iter()
                .map(|t| {
                    json!({ "type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters
                    }})
                })
                .collect();
        }
        body
    }

    /// One streamed step.
    ///
    /// # Errors
    /// See [`ProviderError`].
    pub async fn step(
        &self,
        req: StepRequest<'_>,
        sink: &mut impl StepSink,
    ) -> Result<Vec<ToolCall>, ProviderError> {
        let url = self.url.to_string();
        let body = serde_json::to_vec(&self.request_body(&req))
            .map_err(|e| ProviderError::Protocol(format!("encoding the request: {e}")))?;
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "text/event-stream");
        if let Some(key) = &self.api_key {
            builder = builder.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ProviderError::Http { url: url.clone(), message: e.to_string() })?;
        let response = tokio::time::timeout(self.idle_timeout, self.client.request(request))
            .await
            .map_err(|_| ProviderError::Timeout(self.idle_timeout.as_millis()))?
            .map_err(|e| ProviderError::Http { url: url.clone(), message: error_chain(&e) })?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let mut text = Vec::new();
            while text.len() < 2048 {
                match tokio::time::timeout(self.idle_timeout, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            text.extend_from_slice(d);
                        }
                    }
                    _ => break,
                }
            }
            text.truncate(2048);
            return Err(ProviderError::Status {
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&text).into_owned(),
            });
        }
        let mut parser = StreamParser::default();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let frame = tokio::time::timeout(self.idle_timeout, body.frame())
                .await
                .map_err(|_| ProviderError::Timeout(self.idle_timeout.as_millis()))?;
            let Some(frame) = frame else { break };
            let frame = frame
                .map_err(|e| ProviderError::Http { url: url.clone(), message: error_chain(&e) })?;
            let Some(data) = frame.data_ref() else { continue };
            buf.extend_from_slice(data);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                for token in parser.line(&line)? {
                    sink.token(&token).await;
                }
                if parser.done {
                    return parser.finish();
                }
            }
            if buf.len() > MAX_LINE_BYTES {
                return Err(ProviderError::Protocol(format!(
                    "a stream line exceeds {MAX_LINE_BYTES} bytes"
                )));
            }
        }
        if !buf.is_empty() {
            for token in parser.line(&buf)? {
                sink.token(&token).await;
            }
        }
        if !parser.done && !parser.finished {
            return Err(ProviderError::Protocol(
                "stream ended without [DONE] or a finish_reason".into(),
            ));
        }
        parser.finish()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn wire_message(m: &HistoryMessage) -> Value {
    match m.role {
        Role::User => json!({ "role": "user", "content": m.content }),
        Role::Assistant => {
            let mut v = json!({ "role": "assistant", "content": m.content });
            if !m.tool_calls.is_empty() {
                v["tool_calls"] = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        json!({ "id": c.id, "type": "function", "function": {
                            "name": c.name, "arguments": c.arguments.to_string()
                        }})
                    })
                    .collect();
            }
            v
        }
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": m.tool_call_id.clone().unwrap_or_default(),
            "content": m.content
        }),
    }
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Parses `data:` lines of a chat-completions stream.
#[derive(Debug, Default)]
struct StreamParser {
    calls: Vec<PartialCall>,
    done: bool,
    finished: bool,
}

impl StreamParser {
    /// Text tokens in one line; tool-call fragments are accumulated.
    fn line(&mut self, raw: &[u8]) -> Result<Vec<String>, ProviderError> {
        let line = std::str::from_utf8(raw)
            .map_err(|e| ProviderError::Protocol(format!("stream is not UTF-8: {e}")))?
            .trim_end_matches(['\r', '\n']);
        let Some(data) = line.strip_prefix("data:") else { return Ok(Vec::new()) };
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| ProviderError::Protocol(format!("bad chunk {data:.200}: {e}")))?;
        if let Some(err) = chunk.get("error") {
            return Err(ProviderError::Protocol(format!("provider error: {err}")));
        }
        let mut tokens = Vec::new();
        let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
            return Ok(tokens);
        };
        for choice in choices {
            if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                self.finished = true;
            }
            let Some(delta) = choice.get("delta") else { continue };
            if let Some(text) =
                delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty())
            {
                tokens.push(text.to_owned());
            }
            for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                if index > 128 {
                    return Err(ProviderError::Protocol(format!(
                        "tool call index {index} out of range"
                    )));
                }
                while self.calls.len() <= index {
                    self.calls.push(PartialCall::default());
                }
                let slot = &mut self.calls[index];
                if let Some(id) = call.get("id").and_then(Value::as_str) {
                    slot.id = id.to_owned();
                }
                if let Some(f) = call.get("function") {
                    if let Some(n) = f.get("name").and_then(Value::as_str) {
                        slot.name.push_str(n);
                    }
                    if let Some(a) = f.get("arguments").and_then(Value::as_str) {
                        slot.arguments.push_str(a);
                    }
                }
            }
        }
        Ok(tokens)
    }

    fn finish(self) -> Result<Vec<ToolCall>, ProviderError> {
        self.calls
            .into_iter()
            .filter(|c| !c.name.is_empty())
            .enumerate()
            .map(|(i, c)| {
                let arguments = if c.arguments.trim().is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(&c.arguments)
                        .unwrap_or_else(|_| json!({ "_unparsed": c.arguments }))
                };
                let id = if c.id.is_empty() { format!("call_{i}") } else { c.id };
                Ok(ToolCall { id, name: c.name, arguments })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_accumulates_text_and_tool_call_fragments() {
        let mut p = StreamParser::default();
        let lines = [
            r#"data: {"choices":[{"delta":{"role":"assistant","content":"Hel"}}]}"#,
            r#"data: {"choices":[{"delta":{"content":"lo"}}]}"#,
            r#"data: {"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"sh","arguments":"{\"comm"}}]}}]}"#,
            r#"data: {"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"and\":\"ls\"}"}}]},"finish_reason":"tool_calls"}]}"#,
            "",
            ": keep-alive",
            "data: [DONE]",
        ];
        let mut text = String::new();
        for l in lines {
            text.extend(p.line(l.as_bytes()).unwrap());
        }
        assert_eq!(text, "Hello");
        assert!(p.done && p.finished);
        let calls = p.finish().unwrap();
        assert_eq!(
            calls,
            vec![ToolCall {
                id: "c1".into(),
                name: "sh".into(),
                arguments: json!({"command": "ls"})
            }]
        );
    }

    #[test]
    fn parser_reports_errors_and_bad_chunks() {
        let mut p = StreamParser::default();
        assert!(p.line(br#"data: {"error":{"message":"overloaded"}}"#).is_err());
        assert!(p.line(b"data: {not json").is_err());
    }

    #[test]
    fn https_is_refused_with_a_clear_message() {
        let err =
            OpenAiProvider::new("https://api.openai.com/v1", None, "m", Duration::from_secs(1))
                .unwrap_err();
        assert_eq!(err.code(), "provider_config");
        assert!(err.to_string().contains("no TLS"), "{err}");
    }
}
