//! The `sim` provider: a deterministic scripted model driven by the user message, so the
//! whole server (streaming, tools, limits, crashes) can be exercised without a network.
//!
//! Directives, anywhere before a `tool:` directive, separated by whitespace:
//!
//! | directive | effect |
//! |---|---|
//! | `size:<N>` | the final answer is exactly N bytes of filler text |
//! | `steps:<N>` | N provider round trips; steps before the last call a tool |
//! | `rate:<N>` | stream N tokens per second for this turn (0: unthrottled) |
//! | `fail:provider` | the provider fails at the first step (source `provider`) |
//! | `tool:sh <command...>` | the first step calls `sh` with the rest of the message |
//! | `tool:ssh <[user@]host[:port]> <command...>` | the first step calls `ssh` |
//! | `tool:panic` | the first step calls the `panic` fault tool (needs `--fault-tools`) |
//!
//! Without a tool or `steps:`, a turn is one step that answers `You said: <message>`.
//! Intermediate steps without a user tool call `sh` with `echo step <k>`.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::{ProviderError, StepRequest, StepSink};
use crate::message::{Role, ToolCall};

/// Most steps a script may ask for (the server's `--max-steps` applies too).
pub const MAX_SCRIPTED_STEPS: u32 = 1000;
/// Largest `size:` honoured, bytes (64 MiB).
pub const MAX_SCRIPTED_SIZE: usize = 64 * 1024 * 1024;

const FILLER: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
];

/// The deterministic scripted provider.
#[derive(Debug, Clone)]
pub struct SimProvider {
    tokens_per_sec: u32,
    model: String,
}

/// A tool call a script asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptTool {
    /// `tool:sh <command>`.
    Sh(String),
    /// `tool:ssh <host> <command>`.
    Ssh(String, String),
    /// `tool:panic`.
    Panic,
}

/// The directives parsed from a user message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Script {
    /// `size:`.
    pub size: Option<usize>,
    /// `steps:`.
    pub steps: Option<u32>,
    /// `rate:`.
    pub rate: Option<u32>,
    /// `fail:provider`.
    pub fail: bool,
    /// `tool:`.
    pub tool: Option<ScriptTool>,
}

impl Script {
    /// Parses directives; unknown words are ordinary text.
    pub fn parse(message: &str) -> Script {
        let mut script = Script::default();
        let mut rest = message.trim_start();
        while !rest.is_empty() {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let (word, after) = rest.split_at(end);
            let after = after.trim_start();
            match word {
                "tool:sh" => {
                    script.tool = Some(ScriptTool::Sh(after.trim_end().to_owned()));
                    break;
                }
                "tool:ssh" => {
                    let end = after.find(char::is_whitespace).unwrap_or(after.len());
                    let (host, cmd) = after.split_at(end);
                    script.tool = Some(ScriptTool::Ssh(host.to_owned(), cmd.trim().to_owned()));
                    break;
                }
                "tool:panic" => script.tool = Some(ScriptTool::Panic),
                "fail:provider" => script.fail = true,
                _ => {
                    if let Some(n) = word.strip_prefix("size:").and_then(|n| n.parse().ok()) {
                        script.size = Some(usize::min(n, MAX_SCRIPTED_SIZE));
                    } else if let Some(n) = word.strip_prefix("steps:").and_then(|n| n.parse().ok())
                    {
                        script.steps = Some(u32::clamp(n, 1, MAX_SCRIPTED_STEPS));
                    } else if let Some(n) = word.strip_prefix("rate:").and_then(|n| n.parse().ok())
                    {
                        script.rate = Some(n);
                    }
                }
            }
            rest = after;
        }
        script
    }

    /// Provider round trips the script takes.
    pub fn total_steps(&self) -> u32 {
        self.steps.unwrap_or(if self.tool.is_some() { 2 } else { 1 })
    }
}

/// Exactly `n` bytes of deterministic filler text.
pub fn filler(n: usize) -> String {
    let mut s = String::with_capacity(n + 16);
    let mut i = 0;
    while s.len() < n {
        s.push_str(FILLER[i % FILLER.len()]);
        s.push(' ');
        i += 1;
    }
    s.truncate(n);
    s
}

impl SimProvider {
    /// A sim provider streaming `tokens_per_sec` tokens per second (0: unthrottled).
    pub fn new(tokens_per_sec: u32, model: impl Into<String>) -> SimProvider {
        SimProvider { tokens_per_sec, model: model.into() }
    }

    /// Model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// One scripted step.
    ///
    /// # Errors
    /// Only the scripted `fail:provider`.
    pub async fn step(
        &self,
        req: StepRequest<'_>,
        sink: &mut impl StepSink,
    ) -> Result<Vec<ToolCall>, ProviderError> {
        let user_at = req.history.iter().rposition(|m| m.role == Role::User);
        let message = user_at.map(|i| req.history[i].content.as_str()).unwrap_or("");
        let script = Script::parse(message);
        if script.fail {
            return Err(ProviderError::Scripted);
        }
        let rate = script.rate.unwrap_or(self.tokens_per_sec);
        let step = req.step;
        if step + 1 < script.total_steps() {
            let call = match (&script.tool, step) {
                (Some(ScriptTool::Sh(cmd)), 0) => ("sh", json!({ "command": cmd })),
                (Some(ScriptTool::Ssh(host, cmd)), 0) => {
                    ("ssh", json!({ "host": host, "command": cmd }))
                }
                (Some(ScriptTool::Panic), 0) => ("panic", json!({})),
                _ => ("sh", json!({ "command": format!("echo step {}", step + 1) })),
            };
            let text = format!("Step {}: calling {}. ", step + 1, call.0);
            stream(&text, rate, sink).await;
            return Ok(vec![ToolCall {
                id: format!("call-{}-{}", req.turn, step),
                name: call.0.to_owned(),
                arguments: call.1,
            }]);
        }
        let text = if let Some(n) = script.size {
            filler(n)
        } else if let Some(result) =
            user_at.and_then(|i| req.history[i..].iter().rev().find(|m| m.role == Role::Tool))
        {
            let first = result.content.lines().next().unwrap_or("");
            let first: String = first.chars().take(200).collect();
            format!("Done. The last tool said: {first}")
        } else {
            format!("You said: {message}")
        };
        stream(&text, rate, sink).await;
        Ok(Vec::new())
    }
}

/// Streams `text` word by word (a word and its trailing space per token) at `rate` tokens per
/// second, paced against the start time so sleeps do not accumulate drift.
async fn stream(text: &str, rate: u32, sink: &mut impl StepSink) {
    let start = Instant::now();
    let mut rest = text;
    let mut i: u64 = 0;
    while !rest.is_empty() {
        let end = rest.find(' ').map(|p| p + 1).unwrap_or(rest.len());
        let (token, after) = rest.split_at(end);
        sink.token(token).await;
        if sink.is_full() {
            return;
        }
        rest = after;
        i += 1;
        if rate > 0 {
            let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
        } else if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_parse() {
        let s = Script::parse("size:100 rate:0 tool:sh echo a  b");
        assert_eq!(s.size, Some(100));
        assert_eq!(s.rate, Some(0));
        assert_eq!(s.tool, Some(ScriptTool::Sh("echo a  b".into())));
        assert_eq!(s.total_steps(), 2);
        let s = Script::parse("please tool:ssh me@h:22 uname -a");
        assert_eq!(s.tool, Some(ScriptTool::Ssh("me@h:22".into(), "uname -a".into())));
        let s = Script::parse("steps:3 size:x hello");
        assert_eq!((s.steps, s.size, s.tool), (Some(3), None, None));
        assert!(Script::parse("fail:provider").fail);
        assert_eq!(Script::parse("tool:panic").tool, Some(ScriptTool::Panic));
    }

    #[test]
    fn filler_has_the_exact_size() {
        for n in [0, 1, 5, 6, 1000, 4097] {
            assert_eq!(filler(n).len(), n);
        }
    }
}
