//! One `data:` payload of the answer stream read as typed parts (text,
//! reasoning, tool-call fragments, usage), and the tool calls assembled
//! from their fragments across chunks. Both providers write the same chunk
//! shape: OpenAI's, which vLLM, DeepSeek, Ollama and OpenRouter extend with
//! `reasoning_content` or `reasoning`.

use std::collections::VecDeque;

use serde::Deserialize;

use crate::application::ports::AiError;
use crate::domain::answer::{
    AnswerDelta, TokenUsage, ToolActivity, ToolCallId, ToolName, ToolState, MAX_TOOL_ARGUMENT_BYTES,
};

/// Upstream error texts can be long; logs only need the gist.
pub(super) const MAX_UPSTREAM_ERROR_CHARS: usize = 200;

/// Most tool calls one answer may open; further ones are not reported (an
/// answer with more is broken or hostile, and each open call holds memory).
const MAX_TOOL_CALLS: usize = 64;

/// What one `data:` payload means.
#[derive(Debug, PartialEq)]
pub(super) enum Parsed {
    Chunk(Parts),
    /// A payload carrying nothing: a role announcement, a keep-alive.
    Skip,
    Done,
}

/// The parts of one chunk, in the order they are handed on.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Parts {
    pub reasoning: Option<String>,
    pub text: Option<String>,
    pub tool_calls: Vec<ToolFragment>,
    /// A finish reason came: every open tool call is complete.
    pub finished: bool,
    pub usage: Option<TokenUsage>,
}

/// One piece of one tool call, as a chunk carries it.
#[derive(Debug, PartialEq)]
pub(super) struct ToolFragment {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: Option<String>,
}

pub(super) fn parse_data(data: &str) -> Result<Parsed, AiError> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(Parsed::Done);
    }
    if data.is_empty() {
        return Ok(Parsed::Skip);
    }
    let chunk: Chunk = serde_json::from_str(data).map_err(|e| chunk_error(&e))?;
    if let Some(error) = chunk.error {
        return Err(AiError::Unavailable(format!(
            "AI service reported an error: {}",
            upstream_error_text(&error)
        )));
    }
    let mut parts = Parts {
        usage: chunk.usage.map(Usage::into_domain),
        ..Parts::default()
    };
    if let Some(choice) = chunk.choice {
        parts.finished = choice.finish_reason.is_some();
        if let Some(delta) = choice.delta {
            let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
            parts.text = non_empty(delta.content);
            parts.reasoning = non_empty(delta.reasoning_content.or(delta.reasoning));
            parts.tool_calls = delta
                .tool_calls
                .into_iter()
                .map(|call| ToolFragment {
                    index: call.index,
                    id: call.id,
                    name: call.function.as_ref().and_then(|f| f.name.clone()),
                    arguments: call.function.and_then(|f| f.arguments),
                })
                .collect();
        }
    }
    if parts == Parts::default() {
        Ok(Parsed::Skip)
    } else {
        Ok(Parsed::Chunk(parts))
    }
}

/// Tool calls being assembled from their fragments, keyed by `index`.
#[derive(Debug, Default)]
pub(super) struct ToolCalls {
    open: Vec<OpenCall>,
}

#[derive(Debug)]
struct OpenCall {
    index: u32,
    id: Option<ToolCallId>,
    name: Option<ToolName>,
    arguments: String,
    /// Whether its `started` was handed on (once its name is known).
    announced: bool,
}

impl OpenCall {
    fn activity(&self, state: ToolState) -> ToolActivity {
        ToolActivity {
            call_id: self.id.clone().unwrap_or_else(|| fallback_id(self.index)),
            name: self
                .name
                .clone()
                .unwrap_or_else(|| ToolName::parse("unknown").expect("a valid name")),
            state,
            arguments: (state == ToolState::Finished).then(|| self.arguments.clone()),
        }
    }
}

/// The id of a call whose upstream gave none (or an unusable one).
fn fallback_id(index: u32) -> ToolCallId {
    ToolCallId::parse(&format!("call_{index}")).expect("a valid id")
}

impl ToolCalls {
    /// Takes in one fragment; a call whose name just became known is
    /// announced as `started` into `out`.
    pub(super) fn fragment(&mut self, fragment: ToolFragment, out: &mut VecDeque<AnswerDelta>) {
        let position = match self.open.iter().position(|c| c.index == fragment.index) {
            Some(p) => p,
            None if self.open.len() < MAX_TOOL_CALLS => {
                self.open.push(OpenCall {
                    index: fragment.index,
                    id: None,
                    name: None,
                    arguments: String::new(),
                    announced: false,
                });
                self.open.len() - 1
            }
            None => return,
        };
        let call = &mut self.open[position];
        if call.id.is_none() {
            call.id = fragment.id.and_then(|id| ToolCallId::parse(&id).ok());
        }
        if call.name.is_none() {
            call.name = fragment.name.and_then(|n| ToolName::parse(&n).ok());
        }
        if let Some(more) = fragment.arguments {
            push_capped(&mut call.arguments, &more);
        }
        if !call.announced && call.name.is_some() {
            call.announced = true;
            out.push_back(AnswerDelta::Tool(call.activity(ToolState::Started)));
        }
    }

    /// Every open call is complete (a finish reason, or the stream's end):
    /// each is handed on as `finished` (and `started` first, if it never was).
    pub(super) fn finish(&mut self, out: &mut VecDeque<AnswerDelta>) {
        for call in self.open.drain(..) {
            if !call.announced {
                out.push_back(AnswerDelta::Tool(call.activity(ToolState::Started)));
            }
            out.push_back(AnswerDelta::Tool(call.activity(ToolState::Finished)));
        }
    }
}

/// Appends `more` while the text stays within [`MAX_TOOL_ARGUMENT_BYTES`],
/// never cutting a character.
fn push_capped(text: &mut String, more: &str) {
    let room = MAX_TOOL_ARGUMENT_BYTES.saturating_sub(text.len());
    if more.len() <= room {
        text.push_str(more);
        return;
    }
    let mut cut = room;
    while !more.is_char_boundary(cut) {
        cut -= 1;
    }
    text.push_str(&more[..cut]);
}

/// The deltas of one chunk's parts, in order: reasoning, text, tool calls,
/// completed calls, usage.
pub(super) fn deltas_of(parts: Parts, calls: &mut ToolCalls, out: &mut VecDeque<AnswerDelta>) {
    if let Some(reasoning) = parts.reasoning {
        out.push_back(AnswerDelta::Reasoning(reasoning));
    }
    if let Some(text) = parts.text {
        out.push_back(AnswerDelta::Text(text));
    }
    for fragment in parts.tool_calls {
        calls.fragment(fragment, out);
    }
    if parts.finished {
        calls.finish(out);
    }
    if let Some(usage) = parts.usage {
        out.push_back(AnswerDelta::Usage(usage));
    }
}

/// Why `data` is no chunk, by kind and position only: serde's own message
/// quotes the offending value (`invalid type: string "..."`), and the payload
/// may echo the prompt, which must never reach a log.
fn chunk_error(e: &serde_json::Error) -> AiError {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Syntax => "malformed JSON",
        Category::Eof => "truncated JSON",
        Category::Data => "JSON of an unexpected shape",
        Category::Io => "unreadable data",
    };
    AiError::Protocol(format!(
        "event data is not a valid chunk: {kind} at line {} column {}",
        e.line(),
        e.column()
    ))
}

fn upstream_error_text(error: &serde_json::Value) -> String {
    let text = match error {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(map) => match map.get("message") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => error.to_string(),
        },
        other => other.to_string(),
    };
    if text.chars().count() > MAX_UPSTREAM_ERROR_CHARS {
        let cut: String = text.chars().take(MAX_UPSTREAM_ERROR_CHARS).collect();
        format!("{cut}...")
    } else {
        text
    }
}

// ------------------------------------------------------------ wire format

#[derive(Deserialize)]
struct Chunk {
    /// The first of `choices` (the only one: no request asks for more), read
    /// without a list of them, which was an allocation per token.
    #[serde(default, rename = "choices", deserialize_with = "first_choice")]
    choice: Option<Choice>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    /// vLLM's and DeepSeek's spelling.
    #[serde(default)]
    reasoning_content: Option<String>,
    /// Ollama's and OpenRouter's.
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    tool_calls: Vec<ToolCallChunk>,
}

/// The first element of a list of choices. The others are still read as
/// choices (a misshapen one is refused as it always was), then dropped.
fn first_choice<'de, D>(d: D) -> Result<Option<Choice>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct First;

    impl<'de> serde::de::Visitor<'de> for First {
        type Value = Option<Choice>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<Choice>()?;
            while seq.next_element::<Choice>()?.is_some() {}
            Ok(first)
        }
    }

    d.deserialize_seq(First)
}

/// `"tool_calls": null` as no calls.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct ToolCallChunk {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionChunk>,
}

#[derive(Deserialize)]
struct FunctionChunk {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl Usage {
    fn into_domain(self) -> TokenUsage {
        TokenUsage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            reasoning_tokens: self
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
            total_tokens: self
                .total_tokens
                .unwrap_or_else(|| self.prompt_tokens.saturating_add(self.completion_tokens)),
            estimated: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Parsed {
        Parsed::Chunk(Parts {
            text: Some(t.to_owned()),
            ..Parts::default()
        })
    }

    #[test]
    fn parses_deltas_done_and_skips() {
        assert_eq!(
            parse_data(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#),
            Ok(text("Hi"))
        );
        assert_eq!(
            parse_data(r#"{"choices":[{"delta":{"role":"assistant"}}]}"#),
            Ok(Parsed::Skip)
        );
        assert_eq!(
            parse_data(r#"{"choices":[{"delta":{"content":null},"finish_reason":"stop"}]}"#),
            Ok(Parsed::Chunk(Parts {
                finished: true,
                ..Parts::default()
            }))
        );
        assert_eq!(parse_data("[DONE]"), Ok(Parsed::Done));
        assert_eq!(parse_data(" [DONE] "), Ok(Parsed::Done));
    }

    #[test]
    fn only_the_first_choice_counts_and_every_choice_is_checked() {
        assert_eq!(
            parse_data(r#"{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]}"#),
            Ok(text("a"))
        );
        assert_eq!(parse_data(r#"{"choices":[]}"#), Ok(Parsed::Skip));
        for misshapen in [
            r#"{"choices":[{"delta":{"content":"a"}},{"delta":7}]}"#,
            r#"{"choices":null}"#,
            r#"{"choices":{"delta":{}}}"#,
        ] {
            let err = parse_data(misshapen).unwrap_err();
            assert!(
                matches!(&err, AiError::Protocol(t) if t.contains("unexpected shape")),
                "{misshapen}: {err:?}"
            );
        }
    }

    #[test]
    fn reasoning_is_read_in_both_spellings() {
        for field in ["reasoning_content", "reasoning"] {
            let data = format!(r#"{{"choices":[{{"delta":{{"{field}":"hmm","content":""}}}}]}}"#);
            assert_eq!(
                parse_data(&data),
                Ok(Parsed::Chunk(Parts {
                    reasoning: Some("hmm".into()),
                    ..Parts::default()
                }))
            );
        }
    }

    #[test]
    fn usage_is_read_with_its_reasoning_share() {
        let data = r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30,
            "total_tokens":42,"completion_tokens_details":{"reasoning_tokens":20}}}"#;
        let Ok(Parsed::Chunk(parts)) = parse_data(data) else {
            panic!("a chunk");
        };
        assert_eq!(
            parts.usage,
            Some(TokenUsage {
                prompt_tokens: 12,
                completion_tokens: 30,
                reasoning_tokens: 20,
                total_tokens: 42,
                estimated: false,
            })
        );
        assert_eq!(
            parse_data(r#"{"choices":[{"delta":{"content":"x"}}],"usage":null}"#),
            Ok(text("x"))
        );
    }

    #[test]
    fn tool_calls_are_assembled_from_fragments() {
        let chunks = [
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"lookup","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"x\"}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"add","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
        ];
        let mut calls = ToolCalls::default();
        let mut out = VecDeque::new();
        for data in chunks {
            let Ok(Parsed::Chunk(parts)) = parse_data(data) else {
                panic!("a chunk: {data}");
            };
            deltas_of(parts, &mut calls, &mut out);
        }
        let seen: Vec<(String, String, &str, Option<String>)> = out
            .into_iter()
            .map(|d| match d {
                AnswerDelta::Tool(a) => (
                    a.call_id.as_str().to_owned(),
                    a.name.as_str().to_owned(),
                    a.state.as_str(),
                    a.arguments,
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("call_a".into(), "lookup".into(), "started", None),
                ("call_b".into(), "add".into(), "started", None),
                (
                    "call_a".into(),
                    "lookup".into(),
                    "finished",
                    Some(r#"{"q":"x"}"#.into())
                ),
                ("call_b".into(), "add".into(), "finished", Some("{}".into())),
            ]
        );
    }

    #[test]
    fn a_nameless_call_without_id_still_starts_and_finishes() {
        let mut calls = ToolCalls::default();
        let mut out = VecDeque::new();
        calls.fragment(
            ToolFragment {
                index: 3,
                id: None,
                name: None,
                arguments: Some("é".repeat(MAX_TOOL_ARGUMENT_BYTES)),
            },
            &mut out,
        );
        assert!(out.is_empty());
        calls.finish(&mut out);
        let [AnswerDelta::Tool(started), AnswerDelta::Tool(finished)] = out.make_contiguous()
        else {
            panic!("{out:?}");
        };
        assert_eq!(started.call_id.as_str(), "call_3");
        assert_eq!(started.name.as_str(), "unknown");
        let args = finished.arguments.as_deref().unwrap();
        assert!(args.len() <= MAX_TOOL_ARGUMENT_BYTES && !args.is_empty());
    }

    #[test]
    fn a_wrongly_shaped_chunk_is_refused_without_quoting_it() {
        // serde's message for a string where a list belongs quotes the string.
        let err = parse_data(r#"{"choices":"SECRET-PROMPT of the user"}"#).unwrap_err();
        let AiError::Protocol(text) = err else {
            panic!("expected Protocol, got {err:?}");
        };
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("unexpected shape"), "{text}");
    }

    #[test]
    fn malformed_data_is_protocol_error_without_the_payload() {
        let err = parse_data(r#"{"choices": secret prompt"#).unwrap_err();
        let AiError::Protocol(text) = err else {
            panic!("expected Protocol, got {err:?}");
        };
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn upstream_error_event_is_unavailable() {
        assert_eq!(
            parse_data(r#"{"error":"model overloaded"}"#),
            Err(AiError::Unavailable(
                "AI service reported an error: model overloaded".to_owned()
            ))
        );
        assert!(matches!(
            parse_data(r#"{"error":{"message":"quota"}}"#),
            Err(AiError::Unavailable(t)) if t.ends_with("quota")
        ));
    }
}
