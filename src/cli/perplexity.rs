//! `rkinfer perplexity -m MODEL.gguf -f TEXT`: llama-perplexity's numbers,
//! plus KL divergence against a saved base run.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use super::options::{model_path, LoadArgs};
use super::run::{parse_cache_type, read_text_file};
use crate::model::StateOptions;
use crate::perplexity::{
    chunk_count, evaluate, ChunkProgress, KlMode, KldSummary, LogitsReader, LogitsWriter,
    PerplexityOptions, PerplexityReport,
};
use crate::session::{Llm, ModelContext};
use crate::{Error, Result};

/// Command-line flags (llama.cpp's names).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The GGUF model file (or give it as the first positional argument).
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// The model file, positionally.
    #[arg(value_name = "MODEL")]
    pub model_pos: Option<PathBuf>,
    /// The text to evaluate (one trailing newline is dropped).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Chunk length.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx_size: usize,
    /// Evaluate at most this many chunks (-1: all).
    #[arg(long = "chunks", default_value_t = -1, allow_negative_numbers = true)]
    pub chunks: i64,
    /// Tokens per forward pass (capped by the chunk length).
    #[arg(short = 'b', long = "batch-size", default_value_t = 2048)]
    pub batch_size: usize,
    #[command(flatten)]
    pub load: LoadArgs,
    /// KV cache type of keys (also -ctk).
    #[arg(long = "cache-type-k", default_value = "f16")]
    pub cache_type_k: String,
    /// KV cache type of values (also -ctv).
    #[arg(long = "cache-type-v", default_value = "f16")]
    pub cache_type_v: String,
    /// Save this run's log-probabilities to FILE (the base of a KL divergence).
    #[arg(long = "kl-divergence-base", value_name = "FILE")]
    pub kl_divergence_base: Option<PathBuf>,
    /// Compare with the log-probabilities saved in --kl-divergence-base.
    #[arg(long = "kl-divergence")]
    pub kl_divergence: bool,
    /// Print a JSON summary on stdout instead of the text report.
    #[arg(long = "json")]
    pub json: bool,
}

/// Progress on stderr: a bar on a terminal, plain lines (about every 10%)
/// otherwise so that logs stay readable.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: usize,
}

impl Progress {
    fn new(total: usize) -> Progress {
        let bar = if std::io::stderr().is_terminal() {
            let b = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} chunks  {msg}  ETA {eta}",
            ) {
                b.set_style(style);
            }
            Some(b)
        } else {
            None
        };
        Progress { bar, last_line: 0 }
    }

    fn update(&mut self, p: &ChunkProgress) {
        let per = p.elapsed.as_secs_f64() / p.done as f64;
        let eta = Duration::from_secs_f64(per * (p.total - p.done) as f64);
        match &self.bar {
            Some(b) => {
                b.set_position(p.done as u64);
                b.set_message(format!("PPL {:.4}", p.ppl));
            }
            None => {
                let step = (p.total / 10).max(1);
                if p.done == 1 || p.done == p.total || p.done >= self.last_line + step {
                    self.last_line = p.done;
                    eprintln!(
                        "perplexity: chunk {}/{}  PPL {:.4}  {:.2} s/chunk  ETA {:.0} s",
                        p.done,
                        p.total,
                        p.ppl,
                        per,
                        eta.as_secs_f64()
                    );
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn print_kld(k: &KldSummary) {
    println!("====== Perplexity statistics ======");
    println!(
        "Mean PPL(Q)                   : {:10.6} ± {:10.6}",
        k.ppl, k.ppl_unc
    );
    println!(
        "Mean PPL(base)                : {:10.6} ± {:10.6}",
        k.ppl_base, k.ppl_base_unc
    );
    println!(
        "Mean ln(PPL(Q)/PPL(base))     : {:10.6} ± {:10.6}",
        k.ln_ppl_ratio, k.ln_ppl_ratio_unc
    );
    println!();
    println!("====== KL divergence statistics ======");
    println!("Mean    KLD: {:10.6} ± {:10.6}", k.mean, k.mean_unc);
    println!("Maximum KLD: {:10.6}", k.max);
    println!("99.0%   KLD: {:10.6}", k.p99);
    println!("95.0%   KLD: {:10.6}", k.p95);
    println!("90.0%   KLD: {:10.6}", k.p90);
    println!("Median  KLD: {:10.6}", k.median);
    println!("Minimum KLD: {:10.6}", k.min);
    println!();
    println!("====== Token probability statistics ======");
    println!(
        "RMS Δp    : {:6.3} ± {:5.3} %",
        100.0 * k.rms_dp,
        100.0 * k.rms_dp_unc
    );
    println!(
        "Same top p: {:6.3} ± {:5.3} %",
        100.0 * k.same_top,
        100.0 * k.same_top_unc
    );
}

/// Runs `rkinfer perplexity`: the report on stdout, progress on stderr.
pub fn run(args: Args) -> Result<()> {
    let path = model_path(&args.model, &args.model_pos)?;
    let load_opts = args.load.to_options()?;
    let type_k = parse_cache_type("-ctk", &args.cache_type_k)?;
    let type_v = parse_cache_type("-ctv", &args.cache_type_v)?;
    if args.batch_size == 0 {
        return Err(Error::InvalidArgument("-b must be at least 1".into()));
    }
    // A base to compare with is checked before loading the model, so a bad
    // file fails fast.
    let mut reader = match (&args.kl_divergence_base, args.kl_divergence) {
        (Some(p), true) => Some(LogitsReader::open(p)?),
        (None, true) => {
            return Err(Error::InvalidArgument(
                "--kl-divergence needs --kl-divergence-base FILE (the saved base run)".into(),
            ))
        }
        _ => None,
    };
    let text = match &args.file {
        Some(f) => Some(read_text_file(f)?),
        None if reader.is_some() => None,
        None => return Err(Error::InvalidArgument("no text: give -f FILE".into())),
    };

    let llm = Llm::load(&path, &load_opts)?;
    let tok = llm.tokenizer();
    let tokens = match (&text, &reader) {
        (Some(t), _) => tok.encode(t, true, false)?,
        // Without -f the saved run's tokens are the input, as llama.cpp does.
        (None, Some(r)) => r.tokens.clone(),
        (None, None) => return Err(Error::InvalidArgument("no text: give -f FILE".into())),
    };
    let n_ctx = match &reader {
        Some(r) if args.ctx_size == 512 => r.n_ctx,
        _ => args.ctx_size,
    };
    let opts = PerplexityOptions {
        n_ctx,
        max_chunks: if args.chunks < 0 {
            None
        } else {
            Some(args.chunks as usize)
        },
        bos: if tok.add_bos() { tok.bos() } else { None },
        score_batch: 64,
    };
    let n_chunks = chunk_count(tokens.len(), &opts)?;
    eprintln!(
        "perplexity: {} tokens, {n_chunks} chunks of {n_ctx}, {} scored per chunk",
        tokens.len(),
        crate::perplexity::scored_per_chunk(n_ctx)
    );
    let n_batch = args.batch_size.min(n_ctx).min(512);
    let mut ctx = ModelContext::new(
        llm.model(),
        &StateOptions {
            n_ctx,
            type_k,
            type_v,
            n_batch,
        },
    )?;
    let mut writer = match (&args.kl_divergence_base, args.kl_divergence) {
        (Some(p), false) => Some(LogitsWriter::create(
            p,
            n_ctx,
            llm.model().n_vocab(),
            n_chunks,
            &tokens,
        )?),
        _ => None,
    };
    let mode = match (&mut writer, &mut reader) {
        (Some(w), _) => KlMode::Save(w),
        (None, Some(r)) => KlMode::Compare(r),
        (None, None) => KlMode::None,
    };
    let mut progress = Progress::new(n_chunks);
    let json = args.json;
    let mut line = String::new();
    let report: PerplexityReport = evaluate(&mut ctx, &tokens, &opts, mode, |p| {
        progress.update(p);
        if !json {
            line.push_str(&format!("[{}]{:.4},", p.done, p.ppl));
        }
    })?;
    progress.finish();
    if let Some(w) = writer {
        w.finish()?;
    }
    if json {
        let v = serde_json::json!({
            "model": path.display().to_string(),
            "report": report,
        });
        println!("{v}");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").ok();
    writeln!(
        out,
        "Final estimate: PPL = {:.4} +/- {:.5}",
        report.ppl, report.ppl_unc
    )
    .ok();
    drop(out);
    if let Some(k) = &report.kld {
        println!();
        print_kld(k);
    }
    eprintln!(
        "perplexity: {:.1} s ({:.2} s per chunk)",
        report.seconds,
        report.seconds / report.n_chunks.max(1) as f64
    );
    Ok(())
}
