//! Model providers. Both go through the same turn loop: a provider takes the history and
//! streams one step (text tokens into a [`StepSink`], then the tool calls it wants).

pub mod openai;
pub mod sim;

use std::future::Future;

use crate::message::{HistoryMessage, ToolCall};
use crate::tools::ToolSpec;

pub use openai::OpenAiProvider;
pub use sim::SimProvider;

/// A provider failure: ends the turn with outcome `error` and an `error.unhandled` record
/// with source `provider`.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider is misconfigured (reported at start).
    #[error("provider configuration: {0}")]
    Config(String),
    /// The HTTP request failed before a response arrived.
    #[error("request to {url} failed: {message}")]
    Http {
        /// URL requested.
        url: String,
        /// What failed.
        message: String,
    },
    /// The provider answered with a non-success status.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// URL requested.
        url: String,
        /// HTTP status.
        status: u16,
        /// Start of the response body.
        body: String,
    },
    /// The stream did not follow the protocol (bad JSON chunk, error object, cut short).
    #[error("provider stream: {0}")]
    Protocol(String),
    /// No chunk arrived within the idle timeout.
    #[error("no data from the provider for {0} ms")]
    Timeout(u128),
    /// A scripted failure of the sim provider (`fail:provider`).
    #[error("scripted provider failure (fail:provider)")]
    Scripted,
}

impl ProviderError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Config(_) => "provider_config",
            Self::Http { .. } => "provider_http",
            Self::Status { .. } => "provider_status",
            Self::Protocol(_) => "provider_protocol",
            Self::Timeout(_) => "provider_timeout",
            Self::Scripted => "provider_scripted_failure",
        }
    }
}

/// Where a provider streams one step's text. The turn loop implements it (forwarding each
/// token to the client and appending it to the stored message); providers only call it.
pub trait StepSink: Send {
    /// Takes one token of model output (empty tokens may be passed and are ignored).
    fn token(&mut self, token: &str) -> impl Future<Output = ()> + Send;

    /// The step's output reached its byte limit: the provider stops streaming (what it sends
    /// after this is dropped).
    fn is_full(&self) -> bool {
        false
    }
}

/// What a provider gets for one step.
#[derive(Debug, Clone, Copy)]
pub struct StepRequest<'a> {
    /// Whole conversation history, the current turn's user message last among user messages.
    pub history: &'a [HistoryMessage],
    /// Step index within the turn, from 0.
    pub step: u32,
    /// Tools the model may call.
    pub tools: &'a [ToolSpec],
    /// Turn id (the sim provider derives tool call ids from it).
    pub turn: &'a str,
}

/// The configured provider.
#[derive(Debug, Clone)]
pub enum Provider {
    /// Deterministic scripted model.
    Sim(SimProvider),
    /// OpenAI-compatible streaming client (boxed: it holds a connection pool).
    OpenAi(Box<OpenAiProvider>),
}

impl Provider {
    /// `sim` or `openai`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sim(_) => "sim",
            Self::OpenAi(_) => "openai",
        }
    }

    /// Model name.
    pub fn model(&self) -> &str {
        match self {
            Self::Sim(p) => p.model(),
            Self::OpenAi(p) => p.model(),
        }
    }

    /// Streams one step: text goes to `sink` as it arrives; returns the tool calls asked for
    /// (empty: the turn is done).
    ///
    /// # Errors
    /// See [`ProviderError`].
    pub async fn step(
        &self,
        req: StepRequest<'_>,
        sink: &mut impl StepSink,
    ) -> Result<Vec<ToolCall>, ProviderError> {
        match self {
            Self::Sim(p) => p.step(req, sink).await,
            Self::OpenAi(p) => p.step(req, sink).await,
        }
    }
}
