//! `rkinfer run -m MODEL.gguf -p PROMPT`: text generation, streamed to
//! stdout, with llama.cpp's flags and timings; `-cnv` for a chat loop.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gguf::GgmlType;

use super::options::{model_path, LoadArgs};
use crate::model::StateOptions;
use crate::sampler::{Sampler, SamplerParams};
use crate::session::{
    GenerateOptions, Llm, ModelContext, Session, SessionOptions, StopReason, Timings,
};
use crate::{Error, Result};

/// Default context when the model's is larger (a 4 GB board must hold it).
pub const DEFAULT_MAX_CTX: usize = 4096;

/// Command-line flags (llama.cpp's names).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The GGUF model file (or give it as the first positional argument).
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// The model file, positionally.
    #[arg(value_name = "MODEL")]
    pub model_pos: Option<PathBuf>,
    /// The prompt.
    #[arg(short = 'p', long = "prompt")]
    pub prompt: Option<String>,
    /// Read the prompt from a file (one trailing newline is dropped).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Tokens to generate (-1: until end of generation or a full context).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// Context size (0: the model's, capped to 4096).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    pub ctx_size: usize,
    /// Prompt tokens per forward pass.
    #[arg(short = 'b', long = "batch-size", default_value_t = 2048)]
    pub batch_size: usize,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Random seed (default: from the clock).
    #[arg(short = 's', long = "seed")]
    pub seed: Option<u64>,
    /// Temperature (0: greedy).
    #[arg(long = "temp", default_value_t = 0.8, allow_negative_numbers = true)]
    pub temp: f32,
    /// Top-k (0: off).
    #[arg(long = "top-k", default_value_t = 40, allow_negative_numbers = true)]
    pub top_k: i32,
    /// Top-p (1: off).
    #[arg(long = "top-p", default_value_t = 0.95, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Min-p (0: off).
    #[arg(long = "min-p", default_value_t = 0.05, allow_negative_numbers = true)]
    pub min_p: f32,
    /// Repetition penalty (1: off).
    #[arg(
        long = "repeat-penalty",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub repeat_penalty: f32,
    /// Tokens the repetition penalty looks back at (0: off, -1: context).
    #[arg(
        long = "repeat-last-n",
        default_value_t = 64,
        allow_negative_numbers = true
    )]
    pub repeat_last_n: i32,
    /// Stop before this string (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// KV cache type of keys: f16, q8_0 or q4_0 (also -ctk).
    #[arg(long = "cache-type-k", default_value = "f16")]
    pub cache_type_k: String,
    /// KV cache type of values: f16, q8_0 or q4_0 (also -ctv).
    #[arg(long = "cache-type-v", default_value = "f16")]
    pub cache_type_v: String,
    /// Keep the tail of a prompt longer than the context instead of failing.
    #[arg(long = "truncate")]
    pub truncate: bool,
    /// Print one JSON object (ids, text, timings) instead of streaming.
    #[arg(long = "json")]
    pub json: bool,
    /// Print the compute graph and exit.
    #[arg(long = "dump-graph")]
    pub dump_graph: bool,
    /// Chat: apply the model's chat template in a loop over stdin (also -cnv).
    #[arg(long = "conversation")]
    pub conversation: bool,
    /// System message for the chat.
    #[arg(long = "system", alias = "sys")]
    pub system: Option<String>,
}

/// Parses a KV cache type name.
pub fn parse_cache_type(flag: &str, s: &str) -> Result<GgmlType> {
    match s.to_ascii_lowercase().as_str() {
        "f16" => Ok(GgmlType::F16),
        "q8_0" => Ok(GgmlType::Q8_0),
        "q4_0" => Ok(GgmlType::Q4_0),
        _ => Err(Error::InvalidArgument(format!(
            "{flag} {s:?}: supported cache types are f16, q8_0, q4_0"
        ))),
    }
}

/// Reads a text file that must be UTF-8; drops one trailing newline as
/// llama.cpp's `-f` does.
pub fn read_text_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut s = String::from_utf8(bytes).map_err(|e| Error::InvalidUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    if s.ends_with('\n') {
        s.pop();
    }
    Ok(s)
}

/// Chooses the context size: the flag, else the model's capped to
/// [`DEFAULT_MAX_CTX`] (said on stderr).
pub fn choose_ctx(flag: usize, n_ctx_train: usize, quiet: bool) -> usize {
    if flag > 0 {
        return flag;
    }
    let train = if n_ctx_train == 0 {
        DEFAULT_MAX_CTX
    } else {
        n_ctx_train
    };
    if train > DEFAULT_MAX_CTX {
        if !quiet {
            eprintln!(
                "context: {DEFAULT_MAX_CTX} tokens (the model allows {train}; raise with -c, at the cost of memory)"
            );
        }
        DEFAULT_MAX_CTX
    } else {
        train
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Prints timings as llama.cpp's `llama_perf_context_print`.
pub fn print_timings(load: Duration, t: &Timings) {
    let per = |d: Duration, n: usize| if n > 0 { ms(d) / n as f64 } else { 0.0 };
    let rate = |d: Duration, n: usize| {
        if d.as_secs_f64() > 0.0 {
            n as f64 / d.as_secs_f64()
        } else {
            0.0
        }
    };
    eprintln!();
    eprintln!("rkinfer_perf:        load time = {:10.2} ms", ms(load));
    eprintln!(
        "rkinfer_perf: prompt eval time = {:10.2} ms / {:5} tokens ({:8.2} ms per token, {:8.2} tokens per second)",
        ms(t.prompt_time),
        t.prompt_tokens,
        per(t.prompt_time, t.prompt_tokens),
        rate(t.prompt_time, t.prompt_tokens)
    );
    eprintln!(
        "rkinfer_perf:        eval time = {:10.2} ms / {:5} runs   ({:8.2} ms per token, {:8.2} tokens per second)",
        ms(t.eval_time),
        t.eval_runs,
        per(t.eval_time, t.eval_runs),
        rate(t.eval_time, t.eval_runs)
    );
    eprintln!(
        "rkinfer_perf:      sample time = {:10.2} ms / {:5} tokens",
        ms(t.sample_time),
        t.sampled
    );
    eprintln!(
        "rkinfer_perf:       total time = {:10.2} ms / {:5} tokens",
        ms(load + t.prompt_time + t.eval_time),
        t.prompt_tokens + t.eval_runs
    );
}

fn timings_json(load: Duration, t: &Timings) -> serde_json::Value {
    serde_json::json!({
        "load_ms": ms(load),
        "prompt_eval_ms": ms(t.prompt_time),
        "prompt_tokens": t.prompt_tokens,
        "prompt_tokens_per_s": t.prompt_tokens_per_s(),
        "eval_ms": ms(t.eval_time),
        "eval_runs": t.eval_runs,
        "eval_tokens_per_s": t.eval_tokens_per_s(),
        "sample_ms": ms(t.sample_time),
    })
}

/// Runs `rkinfer run`: generation from a prompt, or the chat loop.
pub fn run(args: Args) -> Result<()> {
    let path = model_path(&args.model, &args.model_pos)?;
    let load_opts = args.load.to_options()?;
    let type_k = parse_cache_type("-ctk", &args.cache_type_k)?;
    let type_v = parse_cache_type("-ctv", &args.cache_type_v)?;
    if args.batch_size == 0 {
        return Err(Error::InvalidArgument("-b must be at least 1".into()));
    }
    let params = SamplerParams {
        temperature: args.temp,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        repeat_last_n: args.repeat_last_n,
        seed: args.seed,
    };
    let mut sampler = Sampler::new(params)?;
    let prompt = match (&args.prompt, &args.file) {
        (Some(_), Some(_)) => {
            return Err(Error::InvalidArgument("give -p or -f, not both".into()));
        }
        (Some(p), None) => Some(p.clone()),
        (None, Some(f)) => Some(read_text_file(f)?),
        (None, None) => None,
    };
    if prompt.is_none() && !args.conversation && !args.dump_graph {
        return Err(Error::InvalidArgument(
            "no prompt: give -p TEXT or -f FILE (or -cnv for a chat)".into(),
        ));
    }

    let t_load = Instant::now();
    let llm = Llm::load(&path, &load_opts)?;
    if args.dump_graph {
        let n = prompt
            .as_deref()
            .map(|p| llm.tokenizer().encode(p, true, true).map(|v| v.len()))
            .transpose()?
            .unwrap_or(1);
        print!("{}", llm.model().describe_graph(n.max(1)));
        return Ok(());
    }
    let n_ctx = choose_ctx(args.ctx_size, llm.model().n_ctx_train(), args.json);
    let n_batch = args.batch_size.min(n_ctx);
    let state_opts = StateOptions {
        n_ctx,
        type_k,
        type_v,
        n_batch: n_batch.min(512),
    };
    let mut session = llm.session_with(&state_opts, SessionOptions { n_batch })?;
    let load_time = t_load.elapsed();

    if args.conversation {
        return chat(&llm, &mut session, &mut sampler, &args, load_time);
    }
    let prompt = prompt.unwrap_or_default();
    let mut ids = llm.tokenizer().encode(&prompt, true, true)?;
    if ids.is_empty() {
        return Err(Error::InvalidArgument("the prompt is empty".into()));
    }
    if ids.len() >= n_ctx {
        if args.truncate {
            let keep = n_ctx / 2;
            eprintln!(
                "warning: prompt of {} tokens truncated to its last {keep} (context {n_ctx})",
                ids.len()
            );
            ids.drain(..ids.len() - keep);
        } else {
            return Err(Error::InvalidArgument(format!(
                "the prompt is {} tokens but the context holds {n_ctx} (with room to generate, at most {}): raise -c or use --truncate",
                ids.len(),
                n_ctx - 1
            )));
        }
    }
    let space = n_ctx - ids.len();
    let max_tokens = if args.n_predict < 0 {
        0
    } else {
        let n = args.n_predict as usize;
        if n > space {
            return Err(Error::InvalidArgument(format!(
                "-n {n} does not fit: the context holds {n_ctx} tokens, the prompt takes {}, {space} are left",
                ids.len()
            )));
        }
        if n == 0 {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"prompt_ids": ids, "generated_ids": [], "text": ""})
                );
            }
            return Ok(());
        }
        n
    };
    if !args.json {
        // Echo the prompt as llama.cpp does.
        print!("{prompt}");
        std::io::stdout().flush().ok();
    }
    session.feed_tokens(&ids)?;
    let opts = GenerateOptions {
        max_tokens,
        stop: args.stop.clone(),
    };
    let mut out = std::io::stdout().lock();
    let mut stream = session.generate_text(llm.tokenizer(), &mut sampler, &opts);
    for piece in stream.by_ref() {
        let piece = piece?;
        if !args.json {
            out.write_all(piece.as_bytes()).ok();
            out.flush().ok();
        }
    }
    let generated = stream.generated().to_vec();
    let text = stream.text().to_string();
    let reason = stream.stop_reason().cloned();
    drop(stream);
    let timings = session.timings().clone();
    if args.json {
        let v = serde_json::json!({
            "prompt_ids": ids,
            "generated_ids": generated,
            "text": text,
            "stop": reason.as_ref().map(stop_name),
            "seed": sampler.seed(),
            "n_ctx": n_ctx,
            "timings": timings_json(load_time, &timings),
        });
        writeln!(out, "{v}").ok();
    } else {
        writeln!(out).ok();
        if reason == Some(StopReason::ContextFull) {
            eprintln!("(context full: {n_ctx} tokens)");
        }
        print_timings(load_time, &timings);
    }
    Ok(())
}

fn stop_name(r: &StopReason) -> String {
    match r {
        StopReason::EndOfGeneration(t) => format!("eog:{t}"),
        StopReason::MaxTokens => "max_tokens".into(),
        StopReason::StopString(s) => format!("stop:{s}"),
        StopReason::ContextFull => "context_full".into(),
    }
}

/// A chat message for the template.
#[derive(serde::Serialize, Clone, Debug)]
struct Message {
    role: String,
    content: String,
}

/// Renders a GGUF chat template (Jinja) with minijinja.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
}

fn py_method(
    _state: &minijinja::State,
    value: &minijinja::Value,
    method: &str,
    args: &[minijinja::Value],
) -> std::result::Result<minijinja::Value, minijinja::Error> {
    use minijinja::value::Value;
    let unknown = || {
        minijinja::Error::new(
            minijinja::ErrorKind::UnknownMethod,
            format!("method {method} is not supported in chat templates"),
        )
    };
    if let Some(s) = value.as_str() {
        let arg0 = args.first().and_then(|a| a.as_str());
        return Ok(match method {
            "strip" => Value::from(match arg0 {
                Some(c) => s.trim_matches(|x| c.contains(x)),
                None => s.trim(),
            }),
            "lstrip" => Value::from(match arg0 {
                Some(c) => s.trim_start_matches(|x| c.contains(x)),
                None => s.trim_start(),
            }),
            "rstrip" => Value::from(match arg0 {
                Some(c) => s.trim_end_matches(|x| c.contains(x)),
                None => s.trim_end(),
            }),
            "startswith" => Value::from(arg0.is_some_and(|p| s.starts_with(p))),
            "endswith" => Value::from(arg0.is_some_and(|p| s.ends_with(p))),
            "upper" => Value::from(s.to_uppercase()),
            "lower" => Value::from(s.to_lowercase()),
            "title" => Value::from(s.to_string()),
            "split" => {
                let parts: Vec<Value> = match arg0 {
                    Some(sep) => s.split(sep).map(Value::from).collect(),
                    None => s.split_whitespace().map(Value::from).collect(),
                };
                Value::from(parts)
            }
            "replace" => match (arg0, args.get(1).and_then(|a| a.as_str())) {
                (Some(a), Some(b)) => Value::from(s.replace(a, b)),
                _ => return Err(unknown()),
            },
            _ => return Err(unknown()),
        });
    }
    if value.kind() == minijinja::value::ValueKind::Map {
        match method {
            "items" => {
                let mut items = Vec::new();
                if let Ok(iter) = value.try_iter() {
                    for k in iter {
                        let v = value.get_item(&k).unwrap_or_default();
                        items.push(Value::from(vec![k, v]));
                    }
                }
                return Ok(Value::from(items));
            }
            "get" => {
                let k = args.first().cloned().unwrap_or_default();
                let v = value.get_item(&k).unwrap_or_default();
                return Ok(if v.is_undefined() {
                    args.get(1).cloned().unwrap_or_default()
                } else {
                    v
                });
            }
            "keys" => {
                let keys: Vec<Value> = value.try_iter().map(|i| i.collect()).unwrap_or_default();
                return Ok(Value::from(keys));
            }
            _ => {}
        }
    }
    Err(unknown())
}

impl ChatTemplate {
    /// Compiles a template; `bos`/`eos` are the texts of those tokens.
    pub fn new(source: &str, bos: String, eos: String) -> Result<ChatTemplate> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(py_method);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_function("strftime_now", |_fmt: String| -> String { String::new() });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::InvalidArgument(format!("chat template does not compile: {e}")))?;
        Ok(ChatTemplate { env, bos, eos })
    }

    /// Renders the conversation, optionally opening the assistant's turn.
    fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let t = self
            .env
            .get_template("chat")
            .map_err(|e| Error::InvalidArgument(format!("chat template: {e}")))?;
        t.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        })
        .map_err(|e| Error::InvalidArgument(format!("chat template: {e}")))
    }
}

/// How turns become text: the model's template, or a plain fallback.
enum Formatter {
    Template(Box<ChatTemplate>),
    Plain,
}

impl Formatter {
    fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        match self {
            Formatter::Template(t) => t.render(messages, add_generation_prompt),
            Formatter::Plain => {
                let mut s = String::new();
                for m in messages {
                    let who = match m.role.as_str() {
                        "system" => "System",
                        "user" => "User",
                        _ => "Assistant",
                    };
                    s.push_str(&format!("{who}: {}\n", m.content));
                }
                if add_generation_prompt {
                    s.push_str("Assistant:");
                }
                Ok(s)
            }
        }
    }
}

fn chat(
    llm: &Llm,
    session: &mut Session<ModelContext<'_>>,
    sampler: &mut Sampler,
    args: &Args,
    load_time: Duration,
) -> Result<()> {
    let tok = llm.tokenizer();
    let piece_text = |id: Option<u32>| {
        id.map(|i| String::from_utf8_lossy(tok.token_to_piece(i)).into_owned())
            .unwrap_or_default()
    };
    let bos_text = piece_text(tok.bos());
    let formatter = match tok.chat_template() {
        Some(src) => match ChatTemplate::new(src, bos_text.clone(), piece_text(tok.eos())) {
            Ok(t) => Formatter::Template(Box::new(t)),
            Err(e) => {
                eprintln!("note: {e}; using a plain User:/Assistant: format");
                Formatter::Plain
            }
        },
        None => {
            eprintln!(
                "note: the model has no chat template; using a plain User:/Assistant: format"
            );
            Formatter::Plain
        }
    };
    let mut stops = args.stop.clone();
    if matches!(formatter, Formatter::Plain) {
        stops.push("\nUser:".into());
    }
    let mut messages = Vec::new();
    if let Some(sys) = &args.system {
        messages.push(Message {
            role: "system".into(),
            content: sys.clone(),
        });
    }
    // The text already fed, as the template renders it.
    let mut fed_text = String::new();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut first_prompt = args.prompt.clone();
    loop {
        let user = match first_prompt.take() {
            Some(p) => p,
            None => {
                eprint!("\n> ");
                std::io::stderr().flush().ok();
                match lines.next() {
                    Some(Ok(l)) => l,
                    Some(Err(e)) => {
                        return Err(Error::InvalidArgument(format!("reading stdin: {e}")));
                    }
                    None => break,
                }
            }
        };
        if user.trim().is_empty() {
            continue;
        }
        messages.push(Message {
            role: "user".into(),
            content: user,
        });
        let rendered = formatter.render(&messages, true)?;
        let new_text = match rendered.strip_prefix(fed_text.as_str()) {
            Some(rest) => rest.to_string(),
            None => {
                // The template re-rendered history differently: start over.
                session.clear();
                rendered.clone()
            }
        };
        let starts_with_bos = !bos_text.is_empty() && new_text.starts_with(&bos_text);
        let add_special = session.tokens().is_empty() && !starts_with_bos;
        let ids = tok.encode(&new_text, add_special, true)?;
        let space = session.space_left();
        if ids.len() >= space {
            return Err(Error::ContextFull {
                needed: session.tokens().len() + ids.len() + 1,
                n_ctx: session.n_ctx(),
            });
        }
        session.feed_tokens(&ids)?;
        let max_tokens = if args.n_predict < 0 {
            0
        } else {
            args.n_predict as usize
        };
        let opts = GenerateOptions {
            max_tokens,
            stop: stops.clone(),
        };
        let mut out = std::io::stdout().lock();
        let mut stream = session.generate_text(tok, sampler, &opts);
        for piece in stream.by_ref() {
            let piece = piece?;
            out.write_all(piece.as_bytes()).ok();
            out.flush().ok();
        }
        let answer = stream.text().to_string();
        let reason = stream.stop_reason().cloned();
        drop(stream);
        writeln!(out).ok();
        if reason == Some(StopReason::ContextFull) {
            eprintln!("(context full: {} tokens)", session.n_ctx());
            break;
        }
        messages.push(Message {
            role: "assistant".into(),
            content: answer.clone(),
        });
        // What the cache holds now corresponds to `rendered + answer`; the
        // next turn feeds whatever the template adds after it.
        fed_text = rendered + &answer;
    }
    print_timings(load_time, session.timings());
    Ok(())
}

#[cfg(test)]
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .take_while(|((_, x), y)| x == y)
        .last()
        .map_or(0, |((i, x), _)| i + x.len_utf8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_types() {
        assert_eq!(parse_cache_type("-ctk", "q8_0").unwrap(), GgmlType::Q8_0);
        assert!(parse_cache_type("-ctk", "q5_1").is_err());
    }

    #[test]
    fn chat_template_renders_with_python_methods() {
        let src = "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content.strip() }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";
        let t = ChatTemplate::new(src, "<s>".into(), "</s>".into()).unwrap();
        let msgs = vec![Message {
            role: "user".into(),
            content: "  hi ".into(),
        }];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "<s><|user|>hi\n<|assistant|>"
        );
        let bad =
            ChatTemplate::new("{{ raise_exception('no') }}", String::new(), String::new()).unwrap();
        assert!(bad.render(&msgs, true).is_err());
    }

    #[test]
    fn prefix_len() {
        assert_eq!(common_prefix("abcd", "abxd"), 2);
        assert_eq!(common_prefix("é1", "é2"), 2);
        assert_eq!(common_prefix("", "a"), 0);
    }
}
