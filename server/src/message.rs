//! Messages of a conversation's history as the turn loop and providers see them.

use serde::{Deserialize, Serialize};

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Call id, unique in the conversation; tool results refer to it.
    pub id: String,
    /// Tool name (`sh`, `ssh`, ...).
    pub name: String,
    /// Arguments as a JSON object.
    pub arguments: serde_json::Value,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

impl Role {
    /// Name stored in the database and sent to providers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }

    /// Parses a stored role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Self::User),
            "assistant" => Some(Self::Assistant),
            "tool" => Some(Self::Tool),
            _ => None,
        }
    }
}

/// One message of history as sent to a provider.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryMessage {
    /// Author.
    pub role: Role,
    /// Text (bounded for tool results).
    pub content: String,
    /// Tool calls of an assistant message.
    pub tool_calls: Vec<ToolCall>,
    /// For a tool result: the call it answers.
    pub tool_call_id: Option<String>,
    /// For a tool result: the tool's name.
    pub tool_name: Option<String>,
}

impl HistoryMessage {
    /// Bytes of history this message accounts for (content plus tool-call arguments).
    pub fn size_bytes(&self) -> u64 {
        let calls: usize = self
            .tool_calls
            .iter()
            .map(|c| c.id.len() + c.name.len() + c.arguments.to_string().len())
            .sum();
        (self.content.len() + calls) as u64
    }
}
