//! The OpenAI request bodies, checked and turned into [`GenParams`].

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::engine::GenParams;
use super::error::ApiError;
use crate::chat::Message;
use crate::sampler::SamplerParams;

/// Stop strings one request may give.
const MAX_STOP_STRINGS: usize = 16;

/// Parses a JSON body, naming the field at fault.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("the body is not valid JSON: {inner}"))
        } else if path == "." {
            ApiError::bad_request(format!("invalid request: {inner}"))
        } else {
            ApiError::invalid_param(&path, format!("invalid value for '{path}': {inner}"))
        }
    })
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaSpec },
}

/// `response_format.json_schema` (OpenAI's structured outputs).
#[derive(Debug, Deserialize)]
pub struct JsonSchemaSpec {
    /// Without a schema, any object.
    pub schema: Option<super::schema::Schema>,
}

/// The fields shared by chat and text completions.
#[derive(Debug, Default, Deserialize)]
pub struct Sampling {
    #[serde(default)]
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    pub logit_bias: Option<BTreeMap<String, f32>>,
    pub n: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub response_format: Option<ResponseFormat>,
    pub cache_prompt: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    #[serde(default)]
    pub chat_template_kwargs: serde_json::Map<String, serde_json::Value>,
    /// Passed to the template (which may render them); no call parsing.
    #[serde(default)]
    pub tools: Option<serde_json::Value>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `prompt`: text, a list with one text, or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
    Texts(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    #[serde(flatten)]
    pub sampling: Sampling,
}

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub content: String,
    #[serde(default)]
    pub add_special: bool,
    #[serde(default = "yes")]
    pub parse_special: bool,
    #[serde(default)]
    pub with_pieces: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub tokens: Vec<u32>,
}

fn check_range(
    name: &str,
    v: Option<f32>,
    ok: impl Fn(f32) -> bool,
    what: &str,
) -> Result<(), ApiError> {
    match v {
        Some(x) if !(x.is_finite() && ok(x)) => Err(ApiError::invalid_param(
            name,
            format!("'{name}' = {x} is out of range: {what}"),
        )),
        _ => Ok(()),
    }
}

impl Sampling {
    /// The generation settings; `max_tokens` is bounded by the room the
    /// prompt leaves in a slot's context.
    pub fn params(
        &self,
        n_vocab: usize,
        prompt_tokens: usize,
        n_ctx: usize,
    ) -> Result<GenParams, ApiError> {
        if let Some(n) = self.n {
            if n != 1 {
                return Err(ApiError::invalid_param(
                    "n",
                    format!("n = {n} is not supported: this server generates one choice per request (n = 1)"),
                ));
            }
        }
        check_range(
            "temperature",
            self.temperature,
            |x| x >= 0.0,
            "must be >= 0",
        )?;
        check_range(
            "top_p",
            self.top_p,
            |x| x > 0.0 && x <= 1.0,
            "must be in (0, 1]",
        )?;
        check_range(
            "min_p",
            self.min_p,
            |x| (0.0..=1.0).contains(&x),
            "must be in [0, 1]",
        )?;
        check_range(
            "repeat_penalty",
            self.repeat_penalty,
            |x| x > 0.0,
            "must be > 0",
        )?;
        check_range(
            "presence_penalty",
            self.presence_penalty,
            |x| (-2.0..=2.0).contains(&x),
            "must be in [-2, 2]",
        )?;
        check_range(
            "frequency_penalty",
            self.frequency_penalty,
            |x| (-2.0..=2.0).contains(&x),
            "must be in [-2, 2]",
        )?;
        if let Some(k) = self.top_k {
            if k < 0 {
                return Err(ApiError::invalid_param(
                    "top_k",
                    format!("'top_k' = {k} is out of range: must be >= 0"),
                ));
            }
        }
        if let Some(n) = self.repeat_last_n {
            if n < -1 {
                return Err(ApiError::invalid_param(
                    "repeat_last_n",
                    format!("'repeat_last_n' = {n} is out of range: must be >= -1"),
                ));
            }
        }
        let defaults = SamplerParams::default();
        let sampler = SamplerParams {
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            min_p: self.min_p.unwrap_or(defaults.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(defaults.repeat_penalty),
            repeat_last_n: self.repeat_last_n.unwrap_or(defaults.repeat_last_n),
            seed: self.seed,
        };
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > MAX_STOP_STRINGS {
            return Err(ApiError::invalid_param(
                "stop",
                format!(
                    "{} stop strings given; at most {MAX_STOP_STRINGS}",
                    stop.len()
                ),
            ));
        }
        let mut logit_bias = Vec::new();
        for (key, &bias) in self.logit_bias.iter().flatten() {
            let id = key
                .parse::<u32>()
                .ok()
                .filter(|&id| (id as usize) < n_vocab)
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "logit_bias",
                        format!("logit_bias key {key:?} is not a token id below {n_vocab}"),
                    )
                })?;
            if !(bias.is_finite() && (-100.0..=100.0).contains(&bias)) {
                return Err(ApiError::invalid_param(
                    "logit_bias",
                    format!(
                        "logit_bias for {key} = {bias} is out of range: must be in [-100, 100]"
                    ),
                ));
            }
            // OpenAI: -100 bans a token, 100 forces it.
            let bias = match bias {
                b if b <= -100.0 => f32::NEG_INFINITY,
                b => b,
            };
            logit_bias.push((id, bias));
        }
        if prompt_tokens >= n_ctx {
            return Err(context_exceeded(prompt_tokens, 1, n_ctx));
        }
        let room = n_ctx - prompt_tokens;
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            Some(0) => {
                return Err(ApiError::invalid_param(
                    "max_tokens",
                    "'max_tokens' must be at least 1",
                ))
            }
            Some(n) if n > room as u64 => return Err(context_exceeded(prompt_tokens, n, n_ctx)),
            Some(n) => n as usize,
            None => room,
        };
        Ok(GenParams {
            sampler,
            max_tokens,
            stop,
            logit_bias,
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            cache_prompt: self.cache_prompt.unwrap_or(true),
            json: None,
        })
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

fn context_exceeded(prompt: usize, max_tokens: u64, n_ctx: usize) -> ApiError {
    ApiError {
        code: Some("context_length_exceeded"),
        ..ApiError::invalid_param(
            "messages",
            format!(
                "this model's context holds {n_ctx} tokens per request; the prompt takes {prompt} and {max_tokens} more were asked to be generated: shorten the prompt or lower max_tokens"
            ),
        )
    }
}
