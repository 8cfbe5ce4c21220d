//! The parts of an AI answer beside its text: reasoning, tool activity and
//! what the answer cost in tokens. The AI port yields them as typed deltas,
//! whatever the upstream's wire format.

use std::fmt;

use thiserror::Error;

/// Longest tool call id or tool name kept: an upstream's are short words;
/// anything longer is cut, never refused (the answer must go on).
pub const MAX_TOOL_LABEL_CHARS: usize = 128;

/// Longest tool-call argument text assembled per call: arguments can be large
/// JSON, but a call whose arguments grow past this keeps only this much.
pub const MAX_TOOL_ARGUMENT_BYTES: usize = 64 * 1024;

/// One piece of an answer as it arrives from the AI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerDelta {
    /// Text of the answer itself.
    Text(String),
    /// The model thinking aloud before (or while) it answers.
    Reasoning(String),
    /// A tool call began or its arguments are complete.
    Tool(ToolActivity),
    /// What the upstream says the answer cost (usually its last chunk).
    Usage(TokenUsage),
}

/// Why a tool call id or name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("a tool label must be 1-128 characters without control characters")]
pub struct ToolLabelError;

fn label(raw: &str) -> Result<String, ToolLabelError> {
    let raw = raw.trim();
    if raw.is_empty()
        || raw.chars().count() > MAX_TOOL_LABEL_CHARS
        || raw.chars().any(char::is_control)
    {
        return Err(ToolLabelError);
    }
    Ok(raw.to_owned())
}

/// The id an upstream gives one tool call (`call_abc123`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ToolCallId(String);

impl ToolCallId {
    pub fn parse(raw: &str) -> Result<Self, ToolLabelError> {
        label(raw).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ToolCallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The function a tool call invokes (`get_weather`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolName(String);

impl ToolName {
    pub fn parse(raw: &str) -> Result<Self, ToolLabelError> {
        label(raw).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a tool call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolState {
    Started,
    /// Its arguments are complete.
    Finished,
}

impl ToolState {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolState::Started => "started",
            ToolState::Finished => "finished",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "started" => Some(ToolState::Started),
            "finished" => Some(ToolState::Finished),
            _ => None,
        }
    }
}

/// A tool call beginning or complete. `arguments` is the call's whole
/// argument text, only on `Finished` (and only relayed when configured:
/// arguments can hold internal data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolActivity {
    pub call_id: ToolCallId,
    pub name: ToolName,
    pub state: ToolState,
    pub arguments: Option<String>,
}

/// What an answer cost. `completion_tokens` includes `reasoning_tokens`, as
/// OpenAI counts them; `total_tokens` is what a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub total_tokens: u64,
    /// Counted here with a tokenizer because the upstream said nothing.
    pub estimated: bool,
}

impl TokenUsage {
    /// An estimate from counted tokens: completion covers the text, the
    /// reasoning and the tool arguments.
    pub fn estimate(prompt: u64, text: u64, reasoning: u64) -> Self {
        let completion = text.saturating_add(reasoning);
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            reasoning_tokens: reasoning,
            total_tokens: prompt.saturating_add(completion),
            estimated: true,
        }
    }
}

/// A phase of an answer a page may show (`stream-status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerPhase {
    /// The model reasons before it answers.
    Thinking,
}

impl AnswerPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerPhase::Thinking => "thinking",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        (raw == "thinking").then_some(AnswerPhase::Thinking)
    }
}

/// What the answer's events show of its reasoning and tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Relay {
    /// `RELAY_REASONING`: the reasoning text itself (otherwise only counted).
    pub reasoning: bool,
    /// `RELAY_TOOL_ARGUMENTS`: a finished call's arguments.
    pub tool_arguments: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_labels_are_short_printable_words() {
        assert_eq!(ToolCallId::parse(" call_1 ").unwrap().as_str(), "call_1");
        assert!(ToolCallId::parse("").is_err());
        assert!(ToolName::parse("a\nb").is_err());
        assert!(ToolName::parse(&"x".repeat(MAX_TOOL_LABEL_CHARS + 1)).is_err());
        assert!(ToolName::parse(&"é".repeat(MAX_TOOL_LABEL_CHARS)).is_ok());
    }

    #[test]
    fn an_estimate_counts_reasoning_inside_completion() {
        let u = TokenUsage::estimate(10, 5, 3);
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens),
            (10, 8, 3)
        );
        assert_eq!(u.total_tokens, 18);
        assert!(u.estimated);
    }

    #[test]
    fn states_and_phases_round_trip() {
        for s in [ToolState::Started, ToolState::Finished] {
            assert_eq!(ToolState::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            AnswerPhase::parse(AnswerPhase::Thinking.as_str()),
            Some(AnswerPhase::Thinking)
        );
        assert_eq!(ToolState::parse("x"), None);
    }
}
