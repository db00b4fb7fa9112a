//! The `rkinfer` command line: one module per subcommand, each with its
//! clap `Args` and a `run` function. Flags follow llama.cpp's.

use clap::{Parser, Subcommand};

pub mod bench;
pub mod console;
pub mod info;
pub mod npu;
pub mod options;
pub mod perplexity;
pub mod quant_eval;
pub mod quantize;
pub mod run;
#[cfg(feature = "server")]
pub mod serve;
pub mod tokenize;

/// rkinfer: GGUF inference on the RK3588 NPU and the CPU.
#[derive(Parser, Debug)]
#[command(name = "rkinfer", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate text from a prompt (streamed), or chat with -cnv.
    Run(run::Args),
    /// Perplexity of a text as llama-perplexity, and KL divergence.
    Perplexity(perplexity::Args),
    /// Summarise a GGUF model: architecture, sizes, tokenizer, tensor types.
    Info(info::Args),
    /// Accuracy of the NPU quantization schemes on a model's weights.
    QuantEval(quant_eval::Args),
    /// Print the token ids of a text, like llama-tokenize.
    Tokenize(tokenize::Args),
    /// The RK3588 NPU: info, selftest, regs, top.
    Npu(npu::Args),
    /// Quantize a GGUF model, like llama-quantize.
    Quantize(quantize::Args),
    /// Prompt and generation speed, like llama-bench.
    Bench(bench::Args),
    /// An OpenAI-compatible HTTP server (chat, completions, streaming).
    #[cfg(feature = "server")]
    Serve(serve::Args),
}

/// llama.cpp's multi-letter short flags, which clap cannot express, as
/// their long forms; `--color on` and `-fa off` (optional values) as
/// `--color=on`, so that a flag given alone never takes the next argument.
pub fn normalize_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in args {
        let long = match a.as_str() {
            "-ctk" => "--cache-type-k",
            "-ctv" => "--cache-type-v",
            "-cnv" => "--conversation",
            "-sys" => "--system-prompt",
            "-np" => "--parallel",
            "-fa" => "--flash-attn",
            "-ngl" => "--n-gpu-layers",
            "-co" => "--color",
            _ => a.as_str(),
        };
        let joins = matches!(a.as_str(), "on" | "off" | "auto")
            && out
                .last()
                .is_some_and(|prev| prev == "--flash-attn" || prev == "--color");
        match out.last_mut() {
            Some(prev) if joins => {
                prev.push('=');
                prev.push_str(&a);
            }
            _ => out.push(long.to_string()),
        }
    }
    out
}

/// Where the library's log lines go: stderr, as `warning: ...` and
/// `note: ...`. `RKINFER_LOG=info|debug|trace` shows more; the op dump
/// (`RKINFER_DUMP_OPS`) is always shown as it is.
struct StderrLogger {
    level: log::LevelFilter,
}

impl StderrLogger {
    /// Targets asked for explicitly (the op dump, a command's progress):
    /// always shown, without a prefix.
    fn verbatim(target: &str) -> bool {
        target == crate::backend::DUMP_TARGET || target == crate::quantize::PROGRESS_TARGET
    }
}

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.level || Self::verbatim(m.target())
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let prefix = match record.level() {
            _ if Self::verbatim(record.target()) => "",
            log::Level::Error => "error: ",
            log::Level::Warn => "warning: ",
            log::Level::Info => "note: ",
            log::Level::Debug | log::Level::Trace => "debug: ",
        };
        eprintln!("{prefix}{}", record.args());
    }

    fn flush(&self) {}
}

/// Sends the library's log records to stderr (once per process).
pub fn init_logging() {
    let level = match std::env::var("RKINFER_LOG").as_deref() {
        Ok("error") => log::LevelFilter::Error,
        Ok("info") => log::LevelFilter::Info,
        Ok("debug") => log::LevelFilter::Debug,
        Ok("trace") => log::LevelFilter::Trace,
        Ok("off") => log::LevelFilter::Off,
        _ => log::LevelFilter::Warn,
    };
    let logger = Box::new(StderrLogger { level });
    if log::set_boxed_logger(logger).is_ok() {
        // The dump target is filtered by the logger itself.
        log::set_max_level(log::LevelFilter::Trace);
    }
}

/// Parses the process's command line (with [`normalize_args`]).
pub fn parse_args() -> Cli {
    Cli::parse_from(normalize_args(std::env::args()))
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> crate::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Perplexity(args) => perplexity::run(args),
        Command::Info(args) => info::run(args),
        Command::QuantEval(args) => quant_eval::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Npu(args) => npu::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Bench(args) => bench::run(args),
        #[cfg(feature = "server")]
        Command::Serve(args) => serve::run(args),
    }
}
