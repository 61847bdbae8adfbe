//! The `openai` provider: a streaming client for OpenAI-compatible `/v1/chat/completions`
//! (`stream: true`, tool calls), on hyper-util's pooled client.
//!
//! `https://` goes through rustls (ring crypto, TLS 1.2 and 1.3), verifying the server against
//! the Mozilla roots compiled in (webpki-roots) plus the CA certificates of
//! `DISPATCH_OPENAI_CA_FILE`, if set (a private gateway, or a test's own CA). `http://` is
//! plain HTTP, for a local server (llama.cpp, vLLM, Ollama).
//!
//! The API key goes only into the `Authorization` header (marked sensitive). Every error this
//! module returns is scrubbed of it, and what it quotes from the upstream (an error body, a bad
//! chunk) is cut short: an upstream that echoes the request cannot put the key into the
//! journal or the client's error text.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};

use super::{ProviderError, StepRequest, StepSink};
use crate::message::{HistoryMessage, Role, ToolCall};

/// Connect timeout for the provider's HTTP connections.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest server-sent line accepted, bytes; a longer one is a protocol error.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;
/// Most of an upstream error body quoted in an error, bytes.
pub const MAX_ERROR_BODY_BYTES: usize = 512;
/// What stands in an error where the API key was.
pub const REDACTED: &str = "<redacted>";

/// OpenAI-compatible streaming chat-completions client.
#[derive(Clone)]
pub struct OpenAiProvider {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    /// `Bearer <key>`, marked sensitive.
    authorization: Option<HeaderValue>,
    /// The key itself, only to scrub it from errors.
    api_key: Option<Arc<str>>,
    model: String,
    idle_timeout: Duration,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| REDACTED))
            .field("model", &self.model)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    /// A client for `base_url` (up to and including `/v1`, `https://` or `http://`).
    /// `https://` servers are verified against the webpki roots plus the PEM certificates in
    /// `ca_file`, which is read here (also for an `http://` URL, so a bad file fails at start).
    ///
    /// # Errors
    /// [`ProviderError::Config`]: the URL is not an `http(s)://host[:port]/path` URL, the key is
    /// not a valid header value, or `ca_file` cannot be read or holds no usable certificate.
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        ca_file: Option<&Path>,
        model: impl Into<String>,
        idle_timeout: Duration,
    ) -> Result<OpenAiProvider, ProviderError> {
        let base = base_url.trim_end_matches('/');
        let url: Uri = format!("{base}/chat/completions")
            .parse()
            .map_err(|e| ProviderError::Config(format!("{base_url}: not a URL: {e}")))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
            return Err(ProviderError::Config(format!(
                "{base_url}: expected https://host[:port]/path or http://host[:port]/path"
            )));
        }
        if url.authority().is_some_and(|a| a.as_str().contains('@')) {
            // Not echoed: the part before the `@` may be a password.
            return Err(ProviderError::Config(
                "DISPATCH_OPENAI_BASE_URL must not carry credentials (user:password@); \
                 set DISPATCH_OPENAI_API_KEY"
                    .into(),
            ));
        }
        let api_key = api_key.filter(|k| !k.is_empty());
        let authorization = match &api_key {
            Some(key) => {
                let mut v = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
                    ProviderError::Config(
                        "DISPATCH_OPENAI_API_KEY is not a valid header value (control characters or non-ASCII?)"
                            .into(),
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(DEFAULT_CONNECT_TIMEOUT));
        http.set_nodelay(true);
        // The TLS layer picks the scheme; the TCP connector must let `https` through.
        http.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(ca_file)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(OpenAiProvider {
            client,
            url,
            authorization,
            api_key: api_key.map(Arc::from),
            model: model.into(),
            idle_timeout,
        })
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
    /// See [`ProviderError`]. None of them contains the API key.
    pub async fn step(
        &self,
        req: StepRequest<'_>,
        sink: &mut impl StepSink,
    ) -> Result<Vec<ToolCall>, ProviderError> {
        self.stream_step(req, sink).await.map_err(|e| self.scrubbed(e))
    }

    async fn stream_step(
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
        if let Some(auth) = &self.authorization {
            builder = builder.header(AUTHORIZATION, auth.clone());
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
            // Enough past the quoted part that a key straddling the cut is still whole here.
            let limit = MAX_ERROR_BODY_BYTES + self.api_key.as_ref().map_or(0, |k| k.len());
            let mut text = Vec::new();
            while text.len() < limit {
                match tokio::time::timeout(self.idle_timeout, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            text.extend_from_slice(d);
                        }
                    }
                    _ => break,
                }
            }
            return Err(ProviderError::Status {
                url,
                status: status.as_u16(),
                body: self.quote(&error_text(&text), MAX_ERROR_BODY_BYTES),
            });
        }
        let mut parser = StreamParser { secret: self.api_key.clone(), ..StreamParser::default() };
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
                if sink.is_full() {
                    // The turn ends with `output_limit`; the rest of the stream is not read.
                    return Ok(Vec::new());
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

impl OpenAiProvider {
    /// `text` from the upstream, fit to quote in an error: see [`scrub`].
    fn quote(&self, text: &str, max: usize) -> String {
        scrub(text, self.api_key.as_deref(), max)
    }

    /// `e` with every occurrence of the API key replaced by [`REDACTED`] (the last line of
    /// defence: the upstream's words are already scrubbed where they are quoted).
    fn scrubbed(&self, e: ProviderError) -> ProviderError {
        let Some(key) = self.api_key.as_deref() else { return e };
        let r = |s: String| if s.contains(key) { s.replace(key, REDACTED) } else { s };
        match e {
            ProviderError::Config(m) => ProviderError::Config(r(m)),
            ProviderError::Http { url, message } => {
                ProviderError::Http { url: r(url), message: r(message) }
            }
            ProviderError::Status { url, status, body } => {
                ProviderError::Status { url: r(url), status, body: r(body) }
            }
            ProviderError::Protocol(m) => ProviderError::Protocol(r(m)),
            e @ (ProviderError::Timeout(_) | ProviderError::Scripted) => e,
        }
    }
}

/// The rustls client configuration: ring, TLS 1.2 and 1.3, the webpki roots plus `ca_file`'s.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ProviderError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let bad = |what: String| {
            ProviderError::Config(format!("DISPATCH_OPENAI_CA_FILE {}: {what}", path.display()))
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(pem_error(e)))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(pem_error(e)))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into()));
        }
        for (i, cert) in certs.into_iter().enumerate() {
            roots.add(cert).map_err(|e| bad(format!("certificate {}: {e}", i + 1)))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProviderError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => format!("cannot read it: {e}"),
        e => format!("not a PEM file: {e}"),
    }
}

/// `text` with every occurrence of `secret` (and of its JSON-escaped form) replaced by
/// [`REDACTED`], whitespace runs folded to one space, then cut to at most `max` bytes at a
/// character boundary (marked `…`). The key is replaced before the cut, so a key straddling
/// it leaves no prefix behind; callers pass the whole text they quote from.
fn scrub(text: &str, secret: Option<&str>, max: usize) -> String {
    let mut s = text.to_owned();
    if let Some(k) = secret.filter(|s| !s.is_empty()) {
        s = s.replace(k, REDACTED);
        if let Ok(quoted) = serde_json::to_string(k) {
            let escaped = &quoted[1..quoted.len() - 1];
            if escaped != k {
                s = s.replace(escaped, REDACTED);
            }
        }
    }
    let mut s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// The rustls error `e` is or wraps. It arrives inside `io::Error`s (two: tokio-rustls',
/// then hyper-rustls'), whose `source()` skips the error they hold, so they are opened here.
fn tls_error<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        e = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

/// What an error body says: `error.message` of an OpenAI-style JSON error, else the text.
fn error_text(body: &[u8]) -> String {
    let message = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let e = v.get("error")?;
        e.get("message").and_then(Value::as_str).map(str::to_owned).or_else(|| Some(e.to_string()))
    });
    message.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// `e` and its sources, `: `-separated; a certificate of an unknown CA gets a hint.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    let mut unknown_issuer = false;
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        unknown_issuer |= matches!(
            tls_error(c),
            Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))
        );
        cur = c.source();
    }
    if unknown_issuer {
        s.push_str(
            " (TLS: no trusted root vouches for the server's certificate; for a private CA set DISPATCH_OPENAI_CA_FILE)",
        );
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

/// Parses `data:` lines of a chat-completions stream. (No `Debug`: it holds the key.)
#[derive(Default)]
struct StreamParser {
    calls: Vec<PartialCall>,
    done: bool,
    finished: bool,
    /// The API key, scrubbed from what errors quote of the stream.
    secret: Option<Arc<str>>,
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
            .map_err(|e| ProviderError::Protocol(format!("bad chunk {}: {e}", self.quote(data))))?;
        if let Some(err) = chunk.get("error") {
            let said = err.get("message").and_then(Value::as_str).map(str::to_owned);
            let said = said.unwrap_or_else(|| err.to_string());
            return Err(ProviderError::Protocol(format!("provider error: {}", self.quote(&said))));
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

    /// Stream text fit to quote in an error.
    fn quote(&self, text: &str) -> String {
        scrub(text, self.secret.as_deref(), 200)
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

    fn provider(url: &str, ca: Option<&Path>) -> Result<OpenAiProvider, ProviderError> {
        OpenAiProvider::new(url, Some("sk-k3y".into()), ca, "m", Duration::from_secs(1))
    }

    #[test]
    fn https_and_http_urls_are_accepted_others_refused() {
        provider("https://api.openai.com/v1", None).unwrap();
        provider("http://127.0.0.1:11434/v1/", None).unwrap();
        for bad in ["ftp://h/v1", "/v1", "localhost:8080/v1"] {
            let err = provider(bad, None).unwrap_err();
            assert_eq!(err.code(), "provider_config", "{bad}");
        }
        let err = provider("https://me:hunter2@gw.example/v1", None).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let p = provider("https://api.openai.com/v1", None).unwrap();
        assert!(!format!("{p:?}").contains("sk-k3y"), "Debug never prints the key");
    }

    #[test]
    fn a_bad_ca_file_is_a_config_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = provider("https://h/v1", Some(&missing)).unwrap_err();
        assert_eq!(err.code(), "provider_config");
        let text = err.to_string();
        assert!(
            text.contains(&*missing.to_string_lossy()) && text.contains("cannot read"),
            "{text}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let text = provider("http://h/v1", Some(&empty)).unwrap_err().to_string();
        assert!(text.contains("empty.pem") && text.contains("no PEM certificate"), "{text}");

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap();
        let text = provider("https://h/v1", Some(&junk)).unwrap_err().to_string();
        assert!(text.contains("junk.pem") && text.contains("certificate 1"), "{text}");
    }

    #[test]
    fn scrub_redacts_folds_and_cuts() {
        let key = "sk-abcdef123456";
        assert_eq!(
            scrub("bad key: Bearer sk-abcdef123456\n\n  (\"sk-abcdef123456\")", Some(key), 100),
            "bad key: Bearer <redacted> (\"<redacted>\")"
        );
        assert_eq!(scrub("0123456789", None, 4), "0123…");
        assert_eq!(scrub("héllo", None, 2), "h…", "cut at a character boundary");
        // A key straddling the cut is replaced first: no prefix of it is left.
        let text = format!("{}{key} tail", "x".repeat(10));
        assert_eq!(scrub(&text, Some(key), 18), format!("{}<redacte…", "x".repeat(10)));
        // A JSON-escaped key is found as well.
        let odd = "k/e\"y-0123";
        assert_eq!(scrub(r#"{"auth":"k/e\"y-0123"}"#, Some(odd), 100), r#"{"auth":"<redacted>"}"#);
    }

    #[test]
    fn errors_never_carry_the_key() {
        let p = provider("http://h/v1", None).unwrap();
        let e = p.scrubbed(ProviderError::Status {
            url: "http://h/v1/chat/completions".into(),
            status: 401,
            body: "Incorrect API key provided: sk-k3y".into(),
        });
        assert_eq!(
            e.to_string(),
            "http://h/v1/chat/completions answered 401: Incorrect API key provided: <redacted>"
        );
        let mut parser = StreamParser { secret: Some("sk-k3y".into()), ..StreamParser::default() };
        let err =
            parser.line(br#"data: {"error":{"message":"key sk-k3y is revoked"}}"#).unwrap_err();
        assert_eq!(err.to_string(), "provider stream: provider error: key <redacted> is revoked");
        let err = parser.line(b"data: {sk-k3y").unwrap_err().to_string();
        assert!(err.starts_with("provider stream: bad chunk {<redacted>: "), "{err}");
    }

    #[test]
    fn error_bodies_say_the_openai_message() {
        assert_eq!(error_text(br#"{"error":{"message":"Rate limit","type":"x"}}"#), "Rate limit");
        assert_eq!(error_text(br#"{"error":"nope"}"#), r#""nope""#);
        assert_eq!(error_text(b"upstream exploded"), "upstream exploded");
    }
}
