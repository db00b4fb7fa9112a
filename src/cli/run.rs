//! `rkinfer run -m MODEL.gguf -p PROMPT`: text generation, streamed to
//! stdout, with llama.cpp's flags and timings; `-cnv` for a chat loop.

use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gguf::GgmlType;

use super::console::{Color, Interrupts};
use super::options::{model_path, LoadArgs};
use crate::chat::{Chat, ChatError, ChatOptions, ChatTemplate, Message, Reply};
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
    /// Say on stderr where each matmul of the prompt batch and of decode
    /// runs, and why (the NPU's board cost estimates).
    #[arg(long = "verbose")]
    pub verbose: bool,
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
    /// Stop when this text appears, and show it (repeatable); with -i or
    /// -cnv, your turn comes next.
    #[arg(short = 'r', long = "reverse-prompt", value_name = "TEXT")]
    pub reverse_prompt: Vec<String>,
    /// Interactive, without a chat template: after each reply (at -n
    /// tokens, an end of generation or a reverse prompt) your line is
    /// appended to the text as it is, and generation goes on.
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,
    /// Colors, as llama.cpp: the prompt yellow, your input green. on, off,
    /// or auto (on when stdout is a terminal); `--color` alone is on.
    #[arg(
        long = "color",
        value_name = "on|off|auto",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "on",
        default_value = "off"
    )]
    pub color: String,
    /// Tokens kept from the start when the context fills (llama.cpp's
    /// context shift): with -i, the first N tokens of the text (-1: the
    /// whole prompt) stay and half the rest is dropped; in a chat, the
    /// turns within the first N tokens stay with the system prompt while
    /// the oldest others are dropped.
    #[arg(long = "keep", default_value_t = 0, allow_negative_numbers = true)]
    pub keep: i64,
}

/// `--verbose`: where the matmuls of a `batch`-token prompt forward and of
/// a decode step run, and why.
fn print_placement(model: &crate::model::Model, batch: usize) {
    let mut steps = vec![batch];
    if batch > 1 {
        steps.push(1);
    }
    for n in steps {
        let report = model.placement_report(n);
        if report.is_empty() {
            eprintln!("placement: every matmul on the CPU ({n}-token forward)");
        } else {
            eprintln!("placement of a {n}-token forward:");
            eprint!("{report}");
        }
    }
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
    if prompt.is_none() && !args.conversation && !args.dump_graph && !args.interactive {
        return Err(Error::InvalidArgument(
            "no prompt: give -p TEXT or -f FILE (or -cnv for a chat, -i to type it)".into(),
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

    let color = Color::parse(&args.color)?;
    if args.keep < -1 {
        return Err(Error::InvalidArgument(format!(
            "--keep {}: give a token count, or -1 for the whole prompt",
            args.keep
        )));
    }
    if args.conversation {
        return chat(&llm, session, sampler, &args, color, load_time);
    }
    let prompt = match prompt {
        Some(p) => p,
        // -i without a prompt: the first line is the prompt.
        None => match read_user_line(&mut std::io::stdin().lock(), "> ", color)? {
            UserLine::Text(line) => line,
            UserLine::End => return Ok(()),
        },
    };
    let mut ids = llm.tokenizer().encode(&prompt, true, true)?;
    if ids.is_empty() {
        return Err(Error::InvalidArgument("the prompt is empty".into()));
    }
    if args.verbose {
        print_placement(llm.model(), ids.len().min(n_batch).max(1));
    }
    let mut echo = prompt;
    if ids.len() >= n_ctx {
        if !args.truncate {
            return Err(Error::InvalidArgument(format!(
                "the prompt is {} tokens but the context holds {n_ctx} (with room to generate, at most {}): raise -c or use --truncate",
                ids.len(),
                n_ctx - 1
            )));
        }
        let keep = n_ctx / 2;
        if keep == 0 {
            return Err(Error::InvalidArgument(format!(
                "-c {n_ctx} is too small to keep any of the prompt and generate: raise -c"
            )));
        }
        eprintln!(
            "warning: prompt of {} tokens truncated to its last {keep} (context {n_ctx})",
            ids.len()
        );
        ids.drain(..ids.len() - keep);
        // Echo what the model sees, not what was given.
        echo = llm.tokenizer().detokenize(&ids, false, false);
    }
    let space = n_ctx - ids.len();
    let max_tokens = match max_tokens_of(args.n_predict) {
        Some(n) if n > space && !args.interactive => {
            return Err(Error::InvalidArgument(format!(
                "-n {n} does not fit: the context holds {n_ctx} tokens, the prompt takes {}, {space} are left",
                ids.len()
            )));
        }
        Some(0) if !args.interactive => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"prompt_ids": ids, "generated_ids": [], "text": ""})
                );
            }
            return Ok(());
        }
        Some(n) => n,
        None => 0,
    };
    if !args.json {
        // Echo the prompt as llama.cpp does.
        print!("{}", color.prompt(&echo));
        std::io::stdout().flush().ok();
    }
    session.feed_tokens(&ids)?;
    if args.interactive {
        return interactive(
            llm.tokenizer(),
            session,
            sampler,
            &args,
            color,
            ids.len(),
            load_time,
        );
    }
    let mut stop = args.stop.clone();
    stop.extend(args.reverse_prompt.iter().cloned());
    let opts = GenerateOptions { max_tokens, stop };
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
        if let Some(StopReason::StopString(s)) = &reason {
            // A reverse prompt is shown, as llama.cpp does; --stop text is not.
            if args.reverse_prompt.contains(s) {
                out.write_all(s.as_bytes()).ok();
            }
        }
        writeln!(out).ok();
        if reason == Some(StopReason::ContextFull) {
            eprintln!("(context full: {n_ctx} tokens)");
        }
        print_timings(load_time, &timings);
    }
    Ok(())
}

/// `-n` as llama.cpp: a negative count is no limit (`None`), 0 generates
/// nothing.
fn max_tokens_of(n_predict: i64) -> Option<usize> {
    usize::try_from(n_predict).ok()
}

/// One line sent to the model, after a prompt on stderr.
enum UserLine {
    Text(String),
    /// `/exit`, or the end of input (Ctrl-D).
    End,
}

/// Shows `prompt`, reads one line (skipping empty and non-UTF-8 ones, said
/// on stderr) and handles `/exit`.
fn read_user_line(input: &mut impl BufRead, prompt: &str, color: Color) -> Result<UserLine> {
    loop {
        eprint!("{prompt}{}", color.input_start());
        std::io::stderr().flush().ok();
        let line = read_line(input)?;
        eprint!("{}", color.input_end());
        match line {
            None => return Ok(UserLine::End),
            Some(Err(offset)) => eprintln!("(not valid UTF-8 at byte {offset}: line ignored)"),
            Some(Ok(line)) if line.trim() == "/exit" => return Ok(UserLine::End),
            Some(Ok(line)) if line.trim().is_empty() => {}
            Some(Ok(line)) => return Ok(UserLine::Text(line)),
        }
    }
}

/// The controls, named once at the start of an interactive mode.
fn print_banner(chat: bool) {
    let clear = if chat {
        ", /clear forgets the conversation"
    } else {
        ""
    };
    eprintln!(
        "controls: Enter sends a line; Ctrl-C stops a reply; Ctrl-C at the prompt, Ctrl-D or /exit ends{clear}"
    );
}

/// llama.cpp's context shift for `-i`: keeps the first `n_keep` tokens,
/// drops half of the rest, and re-evaluates what stays after them.
fn shift_context(session: &mut Session<ModelContext<'_>>, n_keep: usize) -> Result<usize> {
    let tokens = session.tokens().to_vec();
    let n_keep = n_keep.min(tokens.len());
    let n_discard = (tokens.len() - n_keep) / 2;
    if n_discard == 0 {
        return Err(Error::InvalidArgument(format!(
            "--keep {n_keep} leaves nothing to drop in a context of {}: lower --keep or raise -c",
            session.n_ctx()
        )));
    }
    session.truncate(n_keep);
    session.feed_tokens(&tokens[n_keep + n_discard..])?;
    Ok(n_discard)
}

/// `-i`: generation and the user's lines take turns on one text, without
/// a chat template.
fn interactive(
    tok: &crate::tokenizer::Tokenizer,
    mut session: Session<ModelContext<'_>>,
    mut sampler: Sampler,
    args: &Args,
    color: Color,
    prompt_tokens: usize,
    load_time: Duration,
) -> Result<()> {
    let interrupts = Interrupts::install(load_time)?;
    print_banner(false);
    let n_keep = match args.keep {
        -1 => prompt_tokens,
        // BOS is kept besides the N tokens, as llama.cpp does.
        n => usize::try_from(n).unwrap_or(0) + usize::from(tok.add_bos()),
    };
    let mut stop = args.stop.clone();
    stop.extend(args.reverse_prompt.iter().cloned());
    let max_tokens = max_tokens_of(args.n_predict);
    let mut input = std::io::stdin().lock();
    loop {
        if max_tokens != Some(0) {
            interrupts.begin_reply();
            let mut generated = 0;
            loop {
                // -n counts the whole reply, across context shifts.
                let opts = GenerateOptions {
                    max_tokens: max_tokens.map_or(0, |n| n - generated),
                    stop: stop.clone(),
                };
                let mut out = std::io::stdout().lock();
                let mut stream = session.generate_text(tok, &mut sampler, &opts);
                for piece in stream.by_ref() {
                    out.write_all(piece?.as_bytes()).ok();
                    out.flush().ok();
                    if interrupts.stop_requested() {
                        break;
                    }
                }
                let reason = stream.stop_reason().cloned();
                generated += stream.generated().len();
                drop(stream);
                match reason {
                    Some(StopReason::StopString(s)) if args.reverse_prompt.contains(&s) => {
                        out.write_all(s.as_bytes()).ok();
                    }
                    Some(StopReason::ContextFull) if !interrupts.stop_requested() => {
                        drop(out);
                        let dropped = shift_context(&mut session, n_keep)?;
                        log::info!("context shift: {dropped} tokens dropped");
                        continue;
                    }
                    _ => {}
                }
                break;
            }
            if interrupts.end_reply(session.timings()) {
                eprintln!("\n(interrupted)");
            }
        }
        let line = match read_user_line(&mut input, "\n> ", color)? {
            UserLine::End => break,
            UserLine::Text(line) => line,
        };
        let ids = tok.encode(&format!("{line}\n"), false, true)?;
        if session.space_left() <= ids.len() {
            shift_context(&mut session, n_keep)?;
        }
        if let Err(e) = session.feed_tokens(&ids) {
            eprintln!("error: {e} (-c)");
        }
    }
    print_timings(load_time, session.timings());
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
    color: Color,
    load_time: Duration,
) -> Result<()> {
    let tok = llm.tokenizer();
    let template = match &args.chat_template {
        Some(arg) => ChatTemplate::from_name_or_file(arg)
            .map_err(|e| Error::InvalidArgument(format!("--chat-template: {e}")))?
            .with_tokens_of(tok),
        None => ChatTemplate::for_tokenizer(tok).map_err(ChatError::into_error)?,
    };
    let keep_tokens = match args.keep {
        -1 => {
            return Err(Error::InvalidArgument(
                "--keep -1 (the whole prompt) is for -i; in a chat give a token count".into(),
            ))
        }
        n => usize::try_from(n).unwrap_or(0),
    };
    eprintln!("chat: {}", template.origin());
    let max_tokens = max_tokens_of(args.n_predict);
    let mut stop = args.stop.clone();
    stop.extend(args.reverse_prompt.iter().cloned());
    let mut chat = Chat::new(session, tok, template)
        .with_sampler(sampler)
        .with_options(ChatOptions {
            max_tokens: max_tokens.unwrap_or(0),
            stop,
            keep_tokens,
            ..Default::default()
        });
    if let Some(sys) = &args.system {
        chat.set_system(sys.clone());
    }
    let interrupts = Interrupts::install(load_time)?;
    print_banner(true);
    let mut input = std::io::stdin().lock();
    let mut first_prompt = args.prompt.clone();
    loop {
        let user = match first_prompt.take() {
            Some(p) => p,
            None => match read_user_line(&mut input, "\n> ", color)? {
                UserLine::End => break,
                UserLine::Text(line) if line.trim() == "/clear" => {
                    chat.clear();
                    eprintln!("(conversation cleared)");
                    continue;
                }
                UserLine::Text(line) => line,
            },
        };
        if user.trim().is_empty() {
            continue;
        }
        if max_tokens == Some(0) {
            // -n 0: nothing is generated; the message stays in the
            // conversation.
            chat.push(Message::user(user));
            continue;
        }
        let mut out = std::io::stdout().lock();
        interrupts.begin_reply();
        let result = chat.send_with(&user, |piece| {
            out.write_all(piece.as_bytes()).ok();
            out.flush().ok();
            if interrupts.stop_requested() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if let Ok(Reply {
            stop: Some(StopReason::StopString(s)),
            ..
        }) = &result
        {
            if args.reverse_prompt.contains(s) {
                out.write_all(s.as_bytes()).ok();
            }
        }
        writeln!(out).ok();
        if interrupts.end_reply(chat.session().timings()) {
            eprintln!("(interrupted: the partial reply stays in the conversation)");
        }
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
