//! Chat templates: the Jinja template of a GGUF file (or a file, or a
//! built-in) compiled with minijinja as Hugging Face's `apply_chat_template`
//! does (trim_blocks, lstrip_blocks, Python string and dict methods,
//! `raise_exception`, `strftime_now`, Python-style `tojson`), rendered under
//! a step budget and memory bounds: a template comes from a model file and
//! must not run for minutes or fill memory. Fuel bounds the steps; the
//! guard module bounds what the steps build (a string doubled with `~` in
//! a loop is refused, not allocated).

use std::fmt;
use std::io::Write;

use super::guard::{self, RunError};
use std::path::{Path, PathBuf};

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind};
use serde::Serialize;

use super::{ChatError, Message};
use crate::tokenizer::Tokenizer;

/// Bounds on one rendering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateLimits {
    /// minijinja instructions one rendering may run. Real templates take
    /// about 60 per message (measured on Qwen3's and Llama 3.3's tool
    /// templates: 62 and 37), so the default covers tens of thousands of
    /// messages, and stops a runaway loop in about a tenth of a second.
    pub fuel: u64,
    /// Bytes the rendered text may reach; checked while it is written,
    /// captures (`set` blocks, macros) included. Also the largest string
    /// the template may build, and an eighth of what all of them together
    /// may take.
    pub max_output_bytes: usize,
}

impl Default for TemplateLimits {
    fn default() -> Self {
        TemplateLimits {
            fuel: 2_000_000,
            max_output_bytes: 32 << 20,
        }
    }
}

/// Why a built-in template stands in for the model's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultReason {
    /// The model file has no `tokenizer.chat_template`.
    NoTemplate,
    /// The model's template does not compile (the error).
    Invalid(String),
}

/// Where a [`ChatTemplate`] came from, to tell the user once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateOrigin {
    /// The model's `tokenizer.chat_template`.
    Model,
    /// A built-in asked for by name.
    Builtin(&'static str),
    /// A built-in chosen from the vocabulary because the model's template
    /// is missing or broken.
    Default {
        name: &'static str,
        reason: DefaultReason,
    },
    /// A template file.
    File(PathBuf),
    /// Template text given directly.
    Source,
}

impl fmt::Display for TemplateOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateOrigin::Model => f.write_str("the model's chat template"),
            TemplateOrigin::Builtin(name) => write!(f, "built-in template {name}"),
            TemplateOrigin::Default { name, reason } => {
                write!(f, "built-in template {name}, chosen from the vocabulary: ")?;
                match reason {
                    DefaultReason::NoTemplate => f.write_str("the model has no chat template"),
                    DefaultReason::Invalid(e) => {
                        write!(f, "the model's template is unusable ({e})")
                    }
                }
            }
            TemplateOrigin::File(path) => write!(f, "template file {}", path.display()),
            TemplateOrigin::Source => f.write_str("the given template"),
        }
    }
}

/// A built-in template: its name, Jinja source, and text that ends a reply
/// when the vocabulary lacks the turn-end token.
struct Builtin {
    name: &'static str,
    source: &'static str,
    stop: &'static str,
}

// Written with whitespace control on every tag so that only the quoted
// strings produce output.
const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "chatml",
        source: "{%- for m in messages -%}\
                 {{- '<|im_start|>' ~ m.role ~ '\\n' ~ m.content ~ '<|im_end|>\\n' -}}\
                 {%- endfor -%}\
                 {%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}",
        stop: "<|im_end|>",
    },
    Builtin {
        name: "llama3",
        source: "{{- bos_token -}}\
                 {%- for m in messages -%}\
                 {{- '<|start_header_id|>' ~ m.role ~ '<|end_header_id|>\\n\\n' ~ (m.content | trim) ~ '<|eot_id|>' -}}\
                 {%- endfor -%}\
                 {%- if add_generation_prompt -%}\
                 {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\
                 {%- endif -%}",
        stop: "<|eot_id|>",
    },
    // Gemma has no system role: the system text opens the first user turn.
    Builtin {
        name: "gemma",
        source: "{{- bos_token -}}\
                 {%- if messages and messages[0].role == 'system' -%}\
                 {%- set preamble = (messages[0].content | trim) ~ '\\n\\n' -%}\
                 {%- set turns = messages[1:] -%}\
                 {%- else -%}\
                 {%- set preamble = '' -%}\
                 {%- set turns = messages -%}\
                 {%- endif -%}\
                 {%- for m in turns -%}\
                 {{- '<start_of_turn>' ~ ('model' if m.role == 'assistant' else m.role) ~ '\\n' -}}\
                 {{- (preamble if loop.first else '') ~ (m.content | trim) ~ '<end_of_turn>\\n' -}}\
                 {%- endfor -%}\
                 {%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}",
        stop: "<end_of_turn>",
    },
    Builtin {
        name: "phi3",
        source: "{%- for m in messages -%}\
                 {{- '<|' ~ m.role ~ '|>\\n' ~ m.content ~ '<|end|>\\n' -}}\
                 {%- endfor -%}\
                 {%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}",
        stop: "<|end|>",
    },
    Builtin {
        name: "zephyr",
        source: "{%- for m in messages -%}\
                 {{- '<|' ~ m.role ~ '|>\\n' ~ m.content ~ eos_token ~ '\\n' -}}\
                 {%- endfor -%}\
                 {%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}",
        stop: "\n<|user|>",
    },
    // For vocabularies without turn markers.
    Builtin {
        name: "plain",
        source: "{%- for m in messages -%}\
                 {{- {'system': 'System', 'user': 'User', 'tool': 'Tool'}.get(m.role, 'Assistant') ~ ': ' ~ m.content ~ '\\n' -}}\
                 {%- endfor -%}\
                 {%- if add_generation_prompt -%}{{- 'Assistant:' -}}{%- endif -%}",
        stop: "\nUser:",
    },
];

/// Names of the built-in templates.
pub const BUILTIN_NAMES: &[&str] = &["chatml", "llama3", "gemma", "phi3", "zephyr", "plain"];

/// The built-in whose turn markers the vocabulary has (for a model without
/// a usable template); `plain` when it has none.
pub fn default_builtin_for(tokenizer: &Tokenizer) -> &'static str {
    let has = |text: &str| tokenizer.token_id(text.as_bytes()).is_some();
    if has("<start_of_turn>") && has("<end_of_turn>") {
        "gemma"
    } else if has("<|start_header_id|>") && has("<|eot_id|>") {
        "llama3"
    } else if has("<|im_start|>") && has("<|im_end|>") {
        "chatml"
    } else if has("<|assistant|>") && has("<|end|>") {
        "phi3"
    } else {
        "plain"
    }
}

/// Marks an error raised by the template's `raise_exception`.
#[derive(Debug)]
struct RaisedByTemplate(String);

impl fmt::Display for RaisedByTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedByTemplate {}

/// A compiled chat template, ready to render conversations.
pub struct ChatTemplate {
    /// Functions, filters and the guards; the template itself is not in
    /// it (see the guard module).
    env: Environment<'static>,
    /// The template's name, shown in error locations.
    name: String,
    source: String,
    origin: TemplateOrigin,
    bos_token: String,
    eos_token: String,
    stop: Vec<String>,
    limits: TemplateLimits,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    fn compile(name: &str, source: &str, origin: TemplateOrigin) -> Result<Self, ChatError> {
        guard::compile(name, source).map_err(|e| ChatError::Syntax {
            template: name.to_string(),
            detail: e.to_string(),
        })?;
        let mut env = Environment::new();
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        guard::install(&mut env);
        let limits = TemplateLimits::default();
        env.set_fuel(Some(limits.fuel));
        Ok(ChatTemplate {
            env,
            name: name.to_string(),
            source: source.to_string(),
            origin,
            bos_token: String::new(),
            eos_token: String::new(),
            stop: Vec::new(),
            limits,
        })
    }

    /// Compiles Jinja template text.
    pub fn from_source(source: &str) -> Result<Self, ChatError> {
        Self::compile("<template>", source, TemplateOrigin::Source)
    }

    /// A built-in template by name (see [`BUILTIN_NAMES`]).
    pub fn builtin(name: &str) -> Result<Self, ChatError> {
        let b = BUILTINS
            .iter()
            .find(|b| b.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| ChatError::UnknownTemplate {
                name: name.to_string(),
            })?;
        let mut t = Self::compile(b.name, b.source, TemplateOrigin::Builtin(b.name))?;
        t.stop = vec![b.stop.to_string()];
        Ok(t)
    }

    /// Reads and compiles a template file.
    pub fn from_file(path: &Path) -> Result<Self, ChatError> {
        let source = std::fs::read_to_string(path).map_err(|source| ChatError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::compile(
            &path.display().to_string(),
            &source,
            TemplateOrigin::File(path.to_path_buf()),
        )
    }

    /// A built-in name, else a file path, else (when it contains Jinja
    /// tags, as llama.cpp's `--chat-template` accepts) template text.
    pub fn from_name_or_file(arg: &str) -> Result<Self, ChatError> {
        if let Ok(t) = Self::builtin(arg) {
            return Ok(t);
        }
        let path = Path::new(arg);
        if path.is_file() {
            return Self::from_file(path);
        }
        if arg.contains("{{") || arg.contains("{%") {
            return Self::from_source(arg);
        }
        Err(ChatError::UnknownTemplate {
            name: arg.to_string(),
        })
    }

    /// The model's template, or the built-in its vocabulary suggests when it
    /// has none or it does not compile; with the model's BOS/EOS texts.
    pub fn for_tokenizer(tokenizer: &Tokenizer) -> Result<Self, ChatError> {
        let reason = match tokenizer.chat_template() {
            Some(src) => match Self::compile("tokenizer.chat_template", src, TemplateOrigin::Model)
            {
                Ok(t) => return Ok(t.with_tokens_of(tokenizer)),
                Err(e) => DefaultReason::Invalid(e.to_string()),
            },
            None => DefaultReason::NoTemplate,
        };
        let name = default_builtin_for(tokenizer);
        let mut t = Self::builtin(name)?;
        t.origin = TemplateOrigin::Default { name, reason };
        Ok(t.with_tokens_of(tokenizer))
    }

    /// Sets `bos_token` and `eos_token` to the texts of the model's tokens.
    pub fn with_tokens_of(self, tokenizer: &Tokenizer) -> Self {
        let text = |id: Option<u32>| {
            id.map(|i| String::from_utf8_lossy(tokenizer.token_to_piece(i)).into_owned())
                .unwrap_or_default()
        };
        self.with_special_tokens(text(tokenizer.bos()), text(tokenizer.eos()))
    }

    /// Sets the texts the template sees as `bos_token` and `eos_token`.
    pub fn with_special_tokens(mut self, bos: String, eos: String) -> Self {
        self.bos_token = bos;
        self.eos_token = eos;
        self
    }

    /// Replaces the execution limits.
    pub fn with_limits(mut self, limits: TemplateLimits) -> Self {
        self.env.set_fuel(Some(limits.fuel));
        self.limits = limits;
        self
    }

    /// Where the template came from.
    pub fn origin(&self) -> &TemplateOrigin {
        &self.origin
    }

    /// The text `bos_token` stands for.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// Text that ends a reply besides the model's end-of-generation tokens
    /// (built-ins only: their turn end, for vocabularies that lack it).
    pub fn stop_strings(&self) -> &[String] {
        &self.stop
    }

    /// Renders the conversation; `add_generation_prompt` opens the
    /// assistant's turn.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        self.render_with(messages, add_generation_prompt, &serde_json::Map::new())
    }

    /// Like [`render`](Self::render) with extra template variables, e.g.
    /// `enable_thinking` or `tools` (the named ones above take precedence).
    pub fn render_with(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, ChatError> {
        let ctx = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            ..Value::from_serialize(extra)
        };
        guard::render(&self.env, &self.name, &self.source, ctx, &self.limits).map_err(|e| match e {
            RunError::TooLarge(limit) => ChatError::OutputTooLarge {
                template: self.name.clone(),
                limit,
            },
            RunError::Template(e) => self.error(e),
        })
    }

    fn error(&self, e: minijinja::Error) -> ChatError {
        let template = self.name.clone();
        if e.kind() == ErrorKind::OutOfFuel {
            return ChatError::TooManySteps {
                template,
                fuel: self.limits.fuel,
            };
        }
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            if let Some(r) = s.downcast_ref::<RaisedByTemplate>() {
                let message = match e.line() {
                    Some(line) => format!("{} (line {line})", r.0),
                    None => r.0.clone(),
                };
                return ChatError::Raised { template, message };
            }
            source = s.source();
        }
        ChatError::Render {
            template,
            detail: e.to_string(),
        }
    }
}

fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(
        minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
            .with_source(RaisedByTemplate(message)),
    )
}

/// The local date and time in a C `strftime` format (Llama 3.1 and others
/// print today's date in the system prompt).
fn strftime_now(format: String) -> Result<String, minijinja::Error> {
    let mut out = String::new();
    write_fmt(&mut out, chrono::Local::now().format(&format)).map_err(|_| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format {format:?}"),
        )
    })?;
    Ok(out)
}

/// `write!` into a String: an invalid strftime format is an error here
/// where `to_string` would panic.
fn write_fmt(out: &mut String, value: impl fmt::Display) -> fmt::Result {
    use fmt::Write as _;
    write!(out, "{value}")
}

/// Python's `json.dumps` separators without indent: `", "` and `": "`.
struct PythonCompact;

impl serde_json::ser::Formatter for PythonCompact {
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// `tojson` as transformers defines it for chat templates: Python's
/// `json.dumps(value, ensure_ascii=False, indent=indent)` (minijinja's own
/// is compact and HTML-escapes, which changes tool prompts).
fn tojson(value: &Value, indent: Option<usize>, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent = match kwargs.get::<Option<usize>>("indent")? {
        Some(n) => Some(n),
        None => indent,
    };
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let result = match indent {
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonCompact,
        )),
        Some(n) => {
            let spaces = vec![b' '; n.min(64)];
            value.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(&spaces),
            ))
        }
    };
    result
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let text = String::from_utf8(out).map_err(|_| {
        minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: output is not UTF-8")
    })?;
    guard::charge_built(text.len())?;
    Ok(Value::from_safe_string(text))
}

#[cfg(test)]
mod tests {

    use super::*;

    fn conversation() -> Vec<Message> {
        vec![
            Message::system("Be brief."),
            Message::user("Hi!"),
            Message::assistant("Hello."),
            Message::user("2+2?"),
        ]
    }

    #[test]
    fn python_string_and_dict_methods() {
        let t = ChatTemplate::from_source(
            "{% for m in messages %}{{ m.content.strip() }}|{{ m.content.startswith(' a') }}|\
             {{ m.content.split(',') | length }}|{{ m.content.upper().lstrip() }}|\
             {% for k, v in m.items() %}{{ k }}={{ v.rstrip() }};{% endfor %}|\
             {{ m.get('name', 'nobody') }}{% endfor %}",
        )
        .unwrap();
        let out = t.render(&[Message::user(" a,b ")], false).unwrap();
        assert_eq!(out, "a,b|True|2|A,B |role=user;content= a,b;|nobody");
    }

    #[test]
    fn raise_exception_is_a_typed_error() {
        let t = ChatTemplate::from_source(
            "{% if messages[0].role != 'system' %}\n{{ raise_exception('system first') }}{% endif %}",
        )
        .unwrap();
        match t.render(&[Message::user("x")], true) {
            Err(ChatError::Raised { message, .. }) => {
                assert_eq!(message, "system first (line 2)")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.render(&[Message::system("s")], true).unwrap(), "");
    }

    #[test]
    fn errors_say_where() {
        let e = ChatTemplate::from_source("{% for %}").unwrap_err();
        assert!(matches!(e, ChatError::Syntax { .. }), "{e:?}");
        let t = ChatTemplate::from_source("ok\n{{ messages[0].content.nosuchmethod() }}").unwrap();
        let e = t.render(&[Message::user("x")], false).unwrap_err();
        assert!(matches!(e, ChatError::Render { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("<template>:2"), "{text}");
    }

    #[test]
    fn extra_variables_reach_the_template() {
        let src = "{{ messages[-1].content }}{% if enable_thinking is defined and not enable_thinking %}\
                   <think>\n\n</think>{% endif %}{% for t in tools or [] %}{{ t | tojson }}{% endfor %}";
        let t = ChatTemplate::from_source(src).unwrap();
        let mut extra = serde_json::Map::new();
        extra.insert("enable_thinking".into(), false.into());
        extra.insert(
            "tools".into(),
            serde_json::json!([{"name": "f", "args": [1, "é<"]}]),
        );
        // `messages` given by the caller cannot override the conversation.
        extra.insert("messages".into(), serde_json::json!([]));
        let out = t.render_with(&[Message::user("q")], true, &extra).unwrap();
        assert_eq!(
            out,
            "q<think>\n\n</think>{\"args\": [1, \"é<\"], \"name\": \"f\"}"
        );
        assert_eq!(t.render(&[Message::user("q")], true).unwrap(), "q");
    }

    #[test]
    fn tojson_is_pythons_json_dumps() {
        let t = ChatTemplate::from_source(
            "{{ messages[0] | tojson }}\n{{ messages[0] | tojson(indent=2) }}",
        )
        .unwrap();
        assert_eq!(
            t.render(&[Message::user("a\"b")], false).unwrap(),
            "{\"role\": \"user\", \"content\": \"a\\\"b\"}\n{\n  \"role\": \"user\",\n  \"content\": \"a\\\"b\"\n}"
        );
    }

    #[test]
    fn strftime_now_gives_todays_date() {
        let t = ChatTemplate::from_source("{{ strftime_now('%Y-%m-%d') }}").unwrap();
        let out = t.render(&[], false).unwrap();
        assert_eq!(out, chrono::Local::now().format("%Y-%m-%d").to_string());
        let t = ChatTemplate::from_source("{{ strftime_now('%Q') }}").unwrap();
        assert!(matches!(
            t.render(&[], false),
            Err(ChatError::Render { .. })
        ));
    }

    #[test]
    fn nested_loop_bomb_is_stopped_by_the_step_limit() {
        // 10^10 iterations: only the fuel bound (a fixed number of steps,
        // well under a second of work) stops it.
        let t = ChatTemplate::from_source(
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
        )
        .unwrap();
        let e = t.render(&[], false).unwrap_err();
        let fuel = TemplateLimits::default().fuel;
        assert!(
            matches!(e, ChatError::TooManySteps { fuel: f, .. } if f == fuel),
            "{e:?}"
        );
        assert!(e.to_string().contains("steps"), "{e}");
    }

    #[test]
    fn output_and_recursion_are_bounded() {
        // Few steps, large output: the size cap stops it.
        let t =
            ChatTemplate::from_source("{% for a in range(1000) %}{{ 'x' * 1000000 }}{% endfor %}")
                .unwrap();
        let e = t.render(&[], false).unwrap_err();
        assert!(matches!(e, ChatError::OutputTooLarge { .. }), "{e:?}");
        let t = ChatTemplate::from_source("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
            .unwrap();
        assert!(t.render(&[], false).is_err());
        // Limits can be tightened.
        let t = ChatTemplate::builtin("chatml")
            .unwrap()
            .with_limits(TemplateLimits {
                fuel: 5,
                max_output_bytes: 1 << 20,
            });
        assert!(matches!(
            t.render(&conversation(), true),
            Err(ChatError::TooManySteps { fuel: 5, .. })
        ));
    }

    #[test]
    fn doubling_bombs_are_refused_before_they_allocate() {
        // Each case doubles a string 40 times in about 200 steps (well
        // within the fuel): 2^40 bytes unless each step's size is checked.
        let small = TemplateLimits {
            max_output_bytes: 1 << 20,
            ..TemplateLimits::default()
        };
        let bombs_first = "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}";
        for bomb in [
            bombs_first,
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s * 2 %}{% endfor %}",
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set s %}{{ ns.s }}{{ ns.s }}{% endset %}{% set ns.s = s %}{% endfor %}",
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s.replace('x', 'xx') %}{% endfor %}",
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s | replace('x', 'xx') %}{% endfor %}",
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = [ns.s, ns.s] | join %}{% endfor %}",
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s.join([ns.s, ns.s]) %}{% endfor %}",
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = '%s%s' | format(ns.s, ns.s) %}{% endfor %}",
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = (ns.s, ns.s) | tojson %}{% endfor %}",
            "{% set ns = namespace(l=['x']) %}{% for i in range(60) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | join }}",
            "{% set l = ['x'] * 1000000000 %}{{ l }}",
            "{% macro f(s, n) %}{% if n %}{{ f(s ~ s, n - 1) }}{% else %}{{ s | length }}{% endif %}{% endmacro %}{{ f('x', 40) }}",
            // Literal text emitted in a loop into a capture.
            "{% set s %}{% for i in range(100000) %}{% for j in range(100000) %}0123456789012345678901234567890123456789\
             0123456789012345678901234567890123456789{% endfor %}{% endfor %}{% endset %}",
        ] {
            // A smaller bound than the default keeps the test fast.
            let t = ChatTemplate::from_source(bomb).unwrap().with_limits(small);
            match t.render(&[], false) {
                Err(ChatError::OutputTooLarge { limit: l, .. }) => {
                    assert!(l <= 8 * small.max_output_bytes, "{bomb}: {l}")
                }
                other => panic!("{bomb}: {other:?}"),
            }
        }
        // The default bound stops the first one as well.
        let t = ChatTemplate::from_source(bombs_first).unwrap();
        assert!(matches!(
            t.render(&[], false),
            Err(ChatError::OutputTooLarge { .. })
        ));
        // Growth that stays small is fine.
        let t = ChatTemplate::from_source(
            "{% set ns = namespace(s='ab') %}{% for i in range(10) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}\
             {{ [1] + [2] }}{{ 2 + 3 }}{{ 'a' * 3 }}{{ 2 * 3 }}{{ 1.5 + 1 }}",
        )
        .unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "2048[1, 2]5aaa62.5");
    }

    #[test]
    fn guard_names_are_reserved() {
        let e = ChatTemplate::from_source("{% set __rk_concat = 1 %}{{ 'a' ~ 'b' }}").unwrap_err();
        assert!(matches!(e, ChatError::Syntax { .. }), "{e:?}");
        // Nothing to include: the template is not in the environment.
        let t = ChatTemplate::from_source("{% include '<template>' %}").unwrap();
        assert!(matches!(
            t.render(&[], false),
            Err(ChatError::Render { .. })
        ));
    }

    #[test]
    fn builtins_render_their_formats() {
        let render = |name: &str| {
            ChatTemplate::builtin(name)
                .unwrap()
                .with_special_tokens("<s>".into(), "</s>".into())
                .render(&conversation(), true)
                .unwrap()
        };
        assert_eq!(
            render("chatml"),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n\
             <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(
            render("llama3"),
            "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(
            render("gemma"),
            "<s><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n\
             <start_of_turn>model\nHello.<end_of_turn>\n\
             <start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n"
        );
        assert_eq!(
            render("phi3"),
            "<|system|>\nBe brief.<|end|>\n<|user|>\nHi!<|end|>\n<|assistant|>\nHello.<|end|>\n\
             <|user|>\n2+2?<|end|>\n<|assistant|>\n"
        );
        assert_eq!(
            render("zephyr"),
            "<|system|>\nBe brief.</s>\n<|user|>\nHi!</s>\n<|assistant|>\nHello.</s>\n\
             <|user|>\n2+2?</s>\n<|assistant|>\n"
        );
        assert_eq!(
            render("plain"),
            "System: Be brief.\nUser: Hi!\nAssistant: Hello.\nUser: 2+2?\nAssistant:"
        );
        // Gemma without a system message.
        let t = ChatTemplate::builtin("Gemma").unwrap();
        assert_eq!(
            t.render(&[Message::user(" hi ")], false).unwrap(),
            "<start_of_turn>user\nhi<end_of_turn>\n"
        );
        assert_eq!(BUILTIN_NAMES.len(), BUILTINS.len());
        for (name, b) in BUILTIN_NAMES.iter().zip(BUILTINS) {
            assert_eq!(*name, b.name);
        }
    }

    #[test]
    fn names_files_and_inline_text() {
        assert_eq!(
            ChatTemplate::from_name_or_file("llama3").unwrap().origin(),
            &TemplateOrigin::Builtin("llama3")
        );
        let dir = std::env::temp_dir().join(format!("rkinfer-chat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.jinja");
        std::fs::write(&path, "{{ messages[0].content }}!").unwrap();
        let t = ChatTemplate::from_name_or_file(path.to_str().unwrap()).unwrap();
        assert_eq!(t.origin(), &TemplateOrigin::File(path.clone()));
        assert_eq!(t.render(&[Message::user("x")], false).unwrap(), "x!");
        std::fs::remove_dir_all(&dir).ok();
        let t = ChatTemplate::from_name_or_file("{{ 'inline' }}").unwrap();
        assert_eq!(t.origin(), &TemplateOrigin::Source);
        let e = ChatTemplate::from_name_or_file("no-such-template").unwrap_err();
        assert!(matches!(e, ChatError::UnknownTemplate { .. }));
        assert!(e.to_string().contains("chatml, llama3, gemma"), "{e}");
        let e = ChatTemplate::from_file(Path::new("/nonexistent/t.jinja")).unwrap_err();
        assert!(matches!(e, ChatError::Io { .. }), "{e:?}");
    }
}
