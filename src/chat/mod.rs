//! Chat: messages, the model's chat template (Jinja, rendered with
//! minijinja under execution limits) and a [`Chat`] conversation that feeds
//! a [`Session`](crate::session::Session) only the text each turn adds.
//!
//! ```no_run
//! use rkinfer::chat::Chat;
//! use rkinfer::model::StateOptions;
//! use rkinfer::session::Llm;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let llm = Llm::load("model.gguf".as_ref(), &Default::default())?;
//! let mut chat = Chat::from_llm(&llm, &StateOptions { n_ctx: 2048, ..Default::default() })?;
//! chat.set_system("You are brief.");
//! for question in ["Name a fruit.", "And a vegetable?"] {
//!     chat.send(question, |piece| print!("{piece}"))?;
//!     println!();
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

mod conversation;
mod guard;
mod template;

pub use conversation::{Chat, ChatOptions, Reply};
pub use template::{
    default_builtin_for, ChatTemplate, DefaultReason, TemplateLimits, TemplateOrigin, BUILTIN_NAMES,
};

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    /// The role's name as templates see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message of a conversation, shaped as OpenAI's chat API and Hugging
/// Face templates expect (`message.role`, `message.content`, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    /// The text. Deserializes from a string, `null`, or a list of text
    /// parts (`[{"type": "text", "text": ...}]`, joined).
    #[serde(default, deserialize_with = "content_text")]
    pub content: String,
    /// The assistant's reasoning ("thinking"), for templates that show it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Tool calls of an assistant message, as the API sent them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// The author's name (e.g. the tool's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Which tool call a tool message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A message with only a role and text.
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            reasoning_content: None,
            tool_calls: None,
            name: None,
            tool_call_id: None,
        }
    }
    /// A system message.
    pub fn system(content: impl Into<String>) -> Message {
        Message::new(Role::System, content)
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Message {
        Message::new(Role::User, content)
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new(Role::Assistant, content)
    }
}

/// OpenAI sends content as a string, `null` (assistant tool calls), or a
/// list of typed parts; templates want one string.
fn content_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Parts(Vec<Part>),
    }
    #[derive(Deserialize)]
    struct Part {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        text: Option<String>,
    }
    match Option::<Content>::deserialize(d)? {
        None => Ok(String::new()),
        Some(Content::Text(s)) => Ok(s),
        Some(Content::Parts(parts)) => {
            let mut out = String::new();
            for p in parts {
                match (p.kind.as_str(), p.text) {
                    ("text", Some(t)) => out.push_str(&t),
                    (kind, _) => {
                        return Err(serde::de::Error::custom(format!(
                            "content part of type {kind:?} is not supported (only \"text\" with a \"text\" field)"
                        )))
                    }
                }
            }
            Ok(out)
        }
    }
}

/// What went wrong in a chat: rendering the template, or the conversation.
#[derive(Debug)]
pub enum ChatError {
    /// The template does not compile.
    Syntax { template: String, detail: String },
    /// Rendering failed (unknown method, wrong type, ...); `detail` names
    /// the line.
    Render { template: String, detail: String },
    /// The template refused the conversation with `raise_exception`.
    Raised { template: String, message: String },
    /// The template ran more steps than [`TemplateLimits::fuel`].
    TooManySteps { template: String, fuel: u64 },
    /// The rendered text, or the text the template built on the way (a
    /// string doubled in a loop), passed a bound derived from
    /// [`TemplateLimits::max_output_bytes`] (`limit`).
    OutputTooLarge { template: String, limit: usize },
    /// A template name that is neither built in nor a readable file.
    UnknownTemplate { name: String },
    /// A template file could not be read.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The message does not fit in the context even with every older turn
    /// dropped (the conversation is unchanged).
    MessageTooLong { tokens: usize, n_ctx: usize },
    /// Tokenizing or evaluating failed.
    Session(Box<crate::Error>),
}

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatError::Syntax { template, detail } => {
                write!(f, "chat template {template} does not compile: {detail}")
            }
            ChatError::Render { template, detail } => {
                write!(f, "chat template {template} failed: {detail}")
            }
            ChatError::Raised { template, message } => {
                write!(f, "chat template {template} refused the conversation: {message}")
            }
            ChatError::TooManySteps { template, fuel } => write!(
                f,
                "chat template {template} stopped after {fuel} steps (a loop too long for a chat prompt)"
            ),
            ChatError::OutputTooLarge { template, limit } => write!(
                f,
                "chat template {template} stopped: its text passed {limit} bytes"
            ),
            ChatError::UnknownTemplate { name } => write!(
                f,
                "chat template {name:?} is neither a built-in ({}) nor a file",
                BUILTIN_NAMES.join(", ")
            ),
            ChatError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ChatError::MessageTooLong { tokens, n_ctx } => write!(
                f,
                "the message takes {tokens} tokens with the system prompt, more than the context of {n_ctx} can hold with room for a reply; shorten it or raise the context size"
            ),
            ChatError::Session(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ChatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ChatError::Io { source, .. } => Some(source),
            ChatError::Session(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl From<crate::Error> for ChatError {
    fn from(e: crate::Error) -> Self {
        ChatError::Session(Box::new(e))
    }
}

impl From<crate::tokenizer::TokenizerError> for ChatError {
    fn from(e: crate::tokenizer::TokenizerError) -> Self {
        ChatError::Session(Box::new(e.into()))
    }
}

impl ChatError {
    /// The crate-wide error for front ends that report one type: a session
    /// error as itself, a chat error by its message.
    pub fn into_error(self) -> crate::Error {
        match self {
            ChatError::Session(inner) => *inner,
            other => crate::Error::InvalidArgument(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_deserialize_from_openai_requests() {
        let m: Vec<Message> = serde_json::from_str(
            r#"[{"role":"system","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{}"}}]},
                {"role":"tool","content":"42","tool_call_id":"1"}]"#,
        )
        .unwrap();
        assert_eq!(m[0], Message::system("be brief"));
        assert_eq!(m[1].content, "ab");
        assert_eq!(m[2].content, "");
        assert!(m[2].tool_calls.is_some());
        assert_eq!(m[3].role, Role::Tool);
        assert_eq!(m[3].tool_call_id.as_deref(), Some("1"));
        let image = r#"{"role":"user","content":[{"type":"image_url","image_url":{}}]}"#;
        let err = serde_json::from_str::<Message>(image).unwrap_err();
        assert!(err.to_string().contains("image_url"), "{err}");
        // Optional fields stay out of what templates see.
        assert_eq!(
            serde_json::to_string(&Message::user("hi")).unwrap(),
            r#"{"role":"user","content":"hi"}"#
        );
    }
}
