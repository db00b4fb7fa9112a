//! `rkinfer run -m MODEL.gguf -p PROMPT`: text generation, streamed to
//! stdout, with llama.cpp's flags and timings; `-cnv` for a chat loop.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gguf::GgmlType;

use super::options::{model_path, LoadArgs};
use crate::chat::{Chat, ChatError, ChatOptions, ChatTemplate};
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
    /// System message for the chat (also -sys, --system).
    #[arg(long = "system-prompt", aliases = ["system", "sys"])]
    pub system: Option<String>,
    /// Chat template: a built-in name (chatml, llama3, gemma, phi3, zephyr,
    /// plain) or a Jinja file; default: the model's.
    #[arg(long = "chat-template", value_name = "NAME|FILE")]
    pub chat_template: Option<String>,
    /// Accepted for llama.cpp compatibility: templates are always Jinja.
    #[arg(long = "jinja")]
    pub jinja: bool,
}

/// Parses a KV cache type name.
pub fn parse_cache_type(flag: &str, s: &str) -> Result<GgmlType> {
    let kv_types = crate::backend::kv::KV_TYPES;
    GgmlType::from_name(s)
        .filter(|t| kv_types.contains(t))
        .ok_or_else(|| {
            let names: Vec<String> = kv_types.iter().map(|t| t.name().to_lowercase()).collect();
            Error::InvalidArgument(format!(
                "{flag} {s:?}: supported cache types are {}",
                names.join(", ")
            ))
        })
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
        return chat(&llm, session, sampler, &args, load_time);
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
        StopReason::Error(_) => "error".into(),
    }
}

/// The `-cnv` loop: one user message per line of stdin (the first from -p).
fn chat(
    llm: &Llm,
    session: Session<ModelContext<'_>>,
    sampler: Sampler,
    args: &Args,
    load_time: Duration,
) -> Result<()> {
    let tok = llm.tokenizer();
    let template = match &args.chat_template {
        Some(arg) => ChatTemplate::from_name_or_file(arg)
            .map_err(|e| Error::InvalidArgument(format!("--chat-template: {e}")))?
            .with_tokens_of(tok),
        None => ChatTemplate::for_tokenizer(tok).map_err(ChatError::into_error)?,
    };
    eprintln!("chat: {}", template.origin());
    let max_tokens = usize::try_from(args.n_predict).unwrap_or(0);
    let mut chat = Chat::new(session, tok, template)
        .with_sampler(sampler)
        .with_options(ChatOptions {
            max_tokens,
            stop: args.stop.clone(),
            ..Default::default()
        });
    if let Some(sys) = &args.system {
        chat.set_system(sys.clone());
    }
    let mut input = std::io::stdin().lock();
    let mut first_prompt = args.prompt.clone();
    loop {
        let user = match first_prompt.take() {
            Some(p) => p,
            None => {
                eprint!("\n> ");
                std::io::stderr().flush().ok();
                match read_line(&mut input)? {
                    None => break,
                    Some(Ok(line)) => line,
                    Some(Err(offset)) => {
                        eprintln!("(not valid UTF-8 at byte {offset}: line ignored)");
                        continue;
                    }
                }
            }
        };
        if user.trim().is_empty() {
            continue;
        }
        let mut out = std::io::stdout().lock();
        let result = chat.send(&user, |piece| {
            out.write_all(piece.as_bytes()).ok();
            out.flush().ok();
        });
        writeln!(out).ok();
        match result {
            Ok(reply) => {
                if reply.dropped_messages > 0 {
                    eprintln!(
                        "(context: the {} oldest messages were dropped to make room)",
                        reply.dropped_messages
                    );
                }
                if reply.stop == Some(StopReason::ContextFull) {
                    eprintln!("(context full: the reply was cut; older turns make room next)");
                }
            }
            Err(e @ ChatError::MessageTooLong { .. }) => eprintln!("error: {e} (-c)"),
            Err(e) => return Err(e.into_error()),
        }
    }
    print_timings(load_time, chat.session().timings());
    Ok(())
}

/// One line without its line ending; `None` at the end of input,
/// `Some(Err(offset))` when it is not UTF-8.
fn read_line(input: &mut impl BufRead) -> Result<Option<std::result::Result<String, usize>>> {
    let mut line = Vec::new();
    let n = input
        .read_until(b'\n', &mut line)
        .map_err(|e| Error::InvalidArgument(format!("reading stdin: {e}")))?;
    if n == 0 {
        return Ok(None);
    }
    if line.ends_with(b"\n") {
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
    }
    Ok(Some(
        String::from_utf8(line).map_err(|e| e.utf8_error().valid_up_to()),
    ))
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
    fn llama_cpp_chat_flags_parse() {
        use clap::Parser;
        let argv = [
            "rkinfer",
            "run",
            "m.gguf",
            "-cnv",
            "-sys",
            "be brief",
            "--chat-template",
            "gemma",
            "--jinja",
        ];
        let cli = crate::cli::Cli::parse_from(crate::cli::normalize_args(argv.map(String::from)));
        let crate::cli::Command::Run(a) = cli.command else {
            panic!("not run")
        };
        assert!(a.conversation && a.jinja);
        assert_eq!(a.system.as_deref(), Some("be brief"));
        assert_eq!(a.chat_template.as_deref(), Some("gemma"));
        for flag in ["--system-prompt", "--system", "--sys"] {
            let cli = crate::cli::Cli::parse_from(["rkinfer", "run", flag, "x"]);
            let crate::cli::Command::Run(a) = cli.command else {
                panic!("not run")
            };
            assert_eq!(a.system.as_deref(), Some("x"), "{flag}");
        }
    }

    #[test]
    fn stdin_lines() {
        let mut input: &[u8] = b"hi\r\nb\xffad\nlast";
        assert_eq!(read_line(&mut input).unwrap(), Some(Ok("hi".into())));
        assert_eq!(read_line(&mut input).unwrap(), Some(Err(1)));
        assert_eq!(read_line(&mut input).unwrap(), Some(Ok("last".into())));
        assert_eq!(read_line(&mut input).unwrap(), None);
    }

    #[test]
    fn prefix_len() {
        assert_eq!(common_prefix("abcd", "abxd"), 2);
        assert_eq!(common_prefix("é1", "é2"), 2);
        assert_eq!(common_prefix("", "a"), 0);
    }
}
