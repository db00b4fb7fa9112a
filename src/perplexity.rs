//! Perplexity and KL divergence, computed as llama.cpp's `llama-perplexity`.
//!
//! The text is split into `floor(n_tokens / n_ctx)` chunks. Each chunk is
//! evaluated from an empty cache at positions `0..n_ctx`, its first token
//! replaced by BOS when the model adds BOS, and only the second half is
//! scored: the logits at positions `n_ctx/2 ..= n_ctx-2` predicting the next
//! token. The log-softmax takes the maximum in f32, sums `exp` in f64, and the
//! final estimate's uncertainty uses llama.cpp's formula
//! `ppl * sqrt((mean(nll²) - mean(nll)²) / (count - 1))`.
//!
//! # Saved-logits file (`--kl-divergence-base`)
//! All integers and floats little-endian:
//! ```text
//! magic     8 bytes  "RKLOGP02"
//! n_ctx     u32      chunk length
//! n_vocab   u32
//! n_chunks  u32
//! first     u32      first scored position (n_ctx/2)
//! tokens    u32 x n_chunks*n_ctx   the evaluated tokens (before BOS replacement)
//! crc       u32      CRC-32 (IEEE) of everything above
//! then, per chunk:
//!   per scored position (n_ctx-1-first of them):
//!     scale         f32
//!     min_log_prob  f32
//!     q             u16 x n_vocab   log p[i] = scale*q[i] + min_log_prob
//!   crc           u32   CRC-32 of this chunk's rows
//! ```
//! Each chunk is checked as it is read, before its rows are used, so a
//! corrupted file is an error rather than a silently different result. The
//! first format, "RKLOGP01", is the same without the CRCs; it is still read,
//! unchecked ([`LogitsReader::checked`] is false).
//! As in llama.cpp, log-probabilities more than 16 below the best token's are
//! clamped to `min_log_prob` (q = 0), and the rest is quantized linearly to 16
//! bits, so a 262k-token vocabulary costs 512 KiB per scored token.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::output_file::OutputFile;
use crate::session::LogitsSource;
use crate::{Error, Result};

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct PerplexityOptions {
    /// Chunk length (llama.cpp's -c). Default 512.
    pub n_ctx: usize,
    /// Evaluate at most this many chunks (`None`: all).
    pub max_chunks: Option<usize>,
    /// Replace each chunk's first token by this (the BOS id when the model
    /// adds BOS).
    pub bos: Option<u32>,
    /// Scored rows evaluated per forward pass (bounds the memory held for
    /// logits: rows x n_vocab x 4 bytes). Does not change the result.
    pub score_batch: usize,
}

impl Default for PerplexityOptions {
    fn default() -> Self {
        PerplexityOptions {
            n_ctx: 512,
            max_chunks: None,
            bos: None,
            score_batch: 64,
        }
    }
}

/// Reported after each chunk.
#[derive(Clone, Debug)]
pub struct ChunkProgress {
    /// Chunks done (1-based).
    pub done: usize,
    /// Chunks in total.
    pub total: usize,
    /// Running perplexity.
    pub ppl: f64,
    /// Time since the start.
    pub elapsed: Duration,
    /// Running KL divergence statistics when comparing with a base.
    pub kld: Option<KldSummary>,
}

/// KL-divergence statistics as llama.cpp prints them.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KldSummary {
    /// Mean KL divergence (base ‖ this run) per token and its uncertainty.
    pub mean: f64,
    /// Uncertainty of `mean`.
    pub mean_unc: f64,
    /// Percentiles of the per-token KL divergence.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest per-token KL divergence.
    pub max: f64,
    /// Smallest per-token KL divergence.
    pub min: f64,
    /// Fraction of tokens where both runs rank the same token first.
    pub same_top: f64,
    /// Uncertainty of `same_top`.
    pub same_top_unc: f64,
    /// Perplexity of this run and of the base (from the saved log-probs).
    pub ppl: f64,
    /// Uncertainty of `ppl`.
    pub ppl_unc: f64,
    /// Perplexity of the base run.
    pub ppl_base: f64,
    /// Uncertainty of `ppl_base`.
    pub ppl_base_unc: f64,
    /// ln(PPL / PPL_base) and its uncertainty.
    pub ln_ppl_ratio: f64,
    /// Uncertainty of `ln_ppl_ratio`.
    pub ln_ppl_ratio_unc: f64,
    /// RMS of the difference of the correct token's probability.
    pub rms_dp: f64,
    /// Uncertainty of `rms_dp`.
    pub rms_dp_unc: f64,
    /// Scored tokens.
    pub count: usize,
}

/// The outcome of a run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PerplexityReport {
    /// Tokens in the text.
    pub n_tokens: usize,
    /// Chunk length.
    pub n_ctx: usize,
    /// Chunks evaluated.
    pub n_chunks: usize,
    /// Scored tokens.
    pub count: usize,
    /// Final estimate and its uncertainty.
    pub ppl: f64,
    /// Uncertainty of `ppl`.
    pub ppl_unc: f64,
    /// Running perplexity after each chunk.
    pub running_ppl: Vec<f64>,
    /// KL divergence statistics when compared with a base.
    pub kld: Option<KldSummary>,
    /// Seconds spent.
    pub seconds: f64,
}

/// Number of scored positions per chunk.
pub fn scored_per_chunk(n_ctx: usize) -> usize {
    n_ctx - 1 - n_ctx / 2
}

/// Chunks that `n_tokens` tokens give, or an error if fewer than `2*n_ctx`.
pub fn chunk_count(n_tokens: usize, opts: &PerplexityOptions) -> Result<usize> {
    if opts.n_ctx < 4 {
        return Err(Error::InvalidArgument(format!(
            "perplexity: context {} is too small (at least 4)",
            opts.n_ctx
        )));
    }
    if n_tokens < 2 * opts.n_ctx {
        return Err(Error::InvalidArgument(format!(
            "perplexity: you need at least {} tokens for a context of {}; the text has only {n_tokens}",
            2 * opts.n_ctx,
            opts.n_ctx
        )));
    }
    if opts.max_chunks == Some(0) {
        return Err(Error::InvalidArgument(
            "perplexity: a limit of 0 chunks evaluates nothing; ask for at least 1 chunk (or all)"
                .into(),
        ));
    }
    let max = n_tokens / opts.n_ctx;
    Ok(opts.max_chunks.map_or(max, |c| c.min(max)))
}

/// Adds one scored token's negative log-likelihood to the sums, refusing
/// NaN and infinity (corrupt weights give NaN logits, and one NaN would
/// silently make the whole estimate NaN).
fn accumulate(nll: f64, sums: &mut (f64, f64), chunk: usize, pos: usize) -> Result<()> {
    if !nll.is_finite() {
        return Err(Error::NonFinite(format!(
            "perplexity: the log-likelihood at chunk {}, position {pos} is {nll} (NaN or \
             infinite logits: are the model's weights corrupt?)",
            chunk + 1
        )));
    }
    sums.0 += nll;
    sums.1 += nll * nll;
    Ok(())
}

/// `-log p(tok)` as llama.cpp: max in f32, exp in f32 summed in f64.
fn nll_of(logits: &[f32], tok: usize) -> f64 {
    let max = logits.iter().copied().fold(logits[0], f32::max);
    let sum: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    -(((logits[tok] - max) as f64) - sum.ln())
}

/// One scored row quantized for the logits file; returns the nll too
/// (as llama.cpp's `log_softmax` with a log-prob output).
fn quantize_row(logits: &[f32], tok: usize, out: &mut Vec<u8>) -> f64 {
    let mut max = logits[0];
    let mut min = logits[0];
    for &l in logits {
        max = max.max(l);
        min = min.min(l);
    }
    let min = min.max(max - 16.0);
    let sum: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    let log_sum_exp = sum.ln() as f32;
    let min_log_prob = min - max - log_sum_exp;
    let scale = (max - min) / 65535.0;
    out.extend_from_slice(&scale.to_le_bytes());
    out.extend_from_slice(&min_log_prob.to_le_bytes());
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for &l in logits {
            let q = if l > min {
                (inv * (l - min)).round_ties_even_compat()
            } else {
                0
            };
            out.extend_from_slice(&q.to_le_bytes());
        }
    } else {
        out.resize(out.len() + 2 * logits.len(), 0);
    }
    (max + log_sum_exp - logits[tok]) as f64
}

trait RoundCompat {
    fn round_ties_even_compat(self) -> u16;
}
impl RoundCompat for f32 {
    /// ggml's nearest_int: round half to even, clamped to u16.
    fn round_ties_even_compat(self) -> u16 {
        let r = self.round();
        let r = if (self - self.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
            r - self.signum()
        } else {
            r
        };
        r.clamp(0.0, 65535.0) as u16
    }
}

/// Per-token KL results against one saved base row.
#[derive(Clone, Copy, Debug, Default)]
struct KldToken {
    nll: f64,
    nll_base: f64,
    kld: f64,
    same_top: bool,
    p_diff: f64,
}

/// Compares logits with one saved base row. As llama.cpp: the base's
/// log-probs decoded from 16 bits, tokens below -16 ignored, the same-top
/// test on this run's exact logits. One deliberate difference: this run's
/// log-probs go through the same 16-bit quantization before the difference
/// is taken, so that the quantization's first-order error (of order 1e-6 per
/// token, either sign) cancels: a model compared with itself gives exactly 0.
fn kld_row(logits: &[f32], base: &[u8], tok: usize, scratch: &mut Vec<u8>) -> KldToken {
    let mut max = logits[0];
    let mut imax = 0;
    for (i, &l) in logits.iter().enumerate().skip(1) {
        if l > max {
            max = l;
            imax = i;
        }
    }
    scratch.clear();
    let nll = quantize_row(logits, tok, scratch);
    let f = |b: &[u8], i: usize| f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let (scale, min_log_prob) = (f(base, 0), f(base, 4));
    let (scale_new, min_new) = (f(scratch, 0), f(scratch, 4));
    let q = |b: &[u8], i: usize| u16::from_le_bytes([b[8 + 2 * i], b[9 + 2 * i]]) as f32;
    let nll_base = -(scale * q(base, tok) + min_log_prob);
    let mut kld = 0.0f64;
    let mut imax_base = 0;
    let mut best_base = 0.0f32;
    for i in 0..logits.len() {
        let lp_base = scale * q(base, i) + min_log_prob;
        if i == 0 || lp_base > best_base {
            best_base = lp_base;
            imax_base = i;
        }
        if lp_base > -16.0 {
            let lp_new = scale_new * q(scratch, i) + min_new;
            kld += (lp_base.exp() * (lp_base - lp_new)) as f64;
        }
    }
    let p_diff = (-nll).exp() - (-nll_base as f64).exp();
    KldToken {
        nll,
        nll_base: nll_base as f64,
        kld,
        same_top: imax == imax_base,
        p_diff,
    }
}

/// Writes the saved-logits file (see the module docs), through a temporary
/// file that [`LogitsWriter::finish`] renames into place: a run that fails
/// leaves no partial base behind.
pub struct LogitsWriter {
    path: PathBuf,
    out: BufWriter<File>,
    file: OutputFile,
}

/// The current format, with CRCs.
const MAGIC: &[u8; 8] = b"RKLOGP02";
/// The first format, without CRCs (still read).
const MAGIC_V1: &[u8; 8] = b"RKLOGP01";

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl LogitsWriter {
    /// Creates the file and writes the header.
    pub fn create(
        path: &Path,
        n_ctx: usize,
        n_vocab: usize,
        n_chunks: usize,
        tokens: &[u32],
    ) -> Result<LogitsWriter> {
        let Some(tokens) = tokens.get(..n_chunks * n_ctx) else {
            return Err(Error::InvalidArgument(format!(
                "perplexity: {} tokens cannot fill {n_chunks} chunks of {n_ctx}",
                tokens.len()
            )));
        };
        let mut file = OutputFile::create(path)?;
        let handle = file.file().try_clone().map_err(io_err(path))?;
        let mut out = BufWriter::with_capacity(1 << 20, handle);
        let mut head = Vec::with_capacity(28 + 4 * tokens.len());
        head.extend_from_slice(MAGIC);
        for v in [n_ctx, n_vocab, n_chunks, n_ctx / 2] {
            head.extend_from_slice(&(v as u32).to_le_bytes());
        }
        for &t in tokens {
            head.extend_from_slice(&t.to_le_bytes());
        }
        head.extend_from_slice(&crc32fast::hash(&head).to_le_bytes());
        out.write_all(&head).map_err(io_err(path))?;
        Ok(LogitsWriter {
            path: path.to_path_buf(),
            out,
            file,
        })
    }

    /// Writes one chunk's rows and their CRC.
    fn write_chunk(&mut self, rows: &[u8]) -> Result<()> {
        let crc = crc32fast::hash(rows);
        self.out
            .write_all(rows)
            .and_then(|_| self.out.write_all(&crc.to_le_bytes()))
            .map_err(io_err(&self.path))
    }

    /// Flushes and syncs the file and renames it into place.
    pub fn finish(mut self) -> Result<()> {
        self.out.flush().map_err(io_err(&self.path))?;
        drop(self.out);
        self.file.commit(true)
    }
}

/// Reads a saved-logits file (see the module docs).
pub struct LogitsReader {
    path: PathBuf,
    input: BufReader<File>,
    /// Chunks read so far (for messages).
    chunks_read: usize,
    /// The file has CRCs (format 2) and every part read so far matched.
    pub checked: bool,
    /// Chunk length the base was computed with.
    pub n_ctx: usize,
    /// Vocabulary size of the base model.
    pub n_vocab: usize,
    /// Chunks saved.
    pub n_chunks: usize,
    /// The evaluated tokens, `n_chunks * n_ctx` of them.
    pub tokens: Vec<u32>,
}

impl LogitsReader {
    /// Opens the file and reads its header and tokens.
    pub fn open(path: &Path) -> Result<LogitsReader> {
        let bad = |reason: String| Error::LogitsFile {
            path: path.to_path_buf(),
            reason,
        };
        let f = File::open(path).map_err(io_err(path))?;
        let file_len = f.metadata().map_err(io_err(path))?.len();
        let mut input = BufReader::with_capacity(1 << 20, f);
        let mut head = [0u8; 24];
        let mut got = 0;
        while got < head.len() {
            match input.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(source) => return Err(io_err(path)(source)),
            }
        }
        let checked = match head.get(..8) {
            Some(m) if m == MAGIC => true,
            Some(m) if m == MAGIC_V1 => false,
            _ => {
                return Err(bad(format!(
                    "not a saved-logits file (magic {:?}, expected {:?}; files from llama-perplexity are not supported)",
                    String::from_utf8_lossy(&head[..got.min(8)]),
                    std::str::from_utf8(MAGIC).unwrap_or("")
                )))
            }
        };
        if got < head.len() {
            return Err(bad("too short to be a saved-logits file".into()));
        }
        let u = |i: usize| {
            u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]) as usize
        };
        let (n_ctx, n_vocab, n_chunks, first) = (u(8), u(12), u(16), u(20));
        if n_ctx < 4 || first != n_ctx / 2 || n_vocab == 0 || n_chunks == 0 {
            return Err(bad(format!(
                "bad header: n_ctx {n_ctx}, n_vocab {n_vocab}, n_chunks {n_chunks}, first {first}"
            )));
        }
        let row = 8 + 2 * n_vocab as u64;
        let crc = if checked { 4 } else { 0 };
        let expected = 24
            + 4 * (n_chunks as u64) * (n_ctx as u64)
            + crc
            + (n_chunks as u64) * ((scored_per_chunk(n_ctx) as u64) * row + crc);
        if file_len != expected {
            return Err(bad(format!(
                "size {file_len} bytes, but the header (n_ctx {n_ctx}, n_vocab {n_vocab}, {n_chunks} chunks) implies {expected}"
            )));
        }
        let mut raw = vec![0u8; 4 * n_chunks * n_ctx];
        input.read_exact(&mut raw).map_err(io_err(path))?;
        if checked {
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&head);
            hasher.update(&raw);
            check_crc(&mut input, hasher.finalize(), path, "header and tokens")?;
        }
        let tokens = raw
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(LogitsReader {
            path: path.to_path_buf(),
            input,
            chunks_read: 0,
            checked,
            n_ctx,
            n_vocab,
            n_chunks,
            tokens,
        })
    }

    /// Bytes of one chunk's saved rows.
    fn chunk_bytes(&self) -> usize {
        scored_per_chunk(self.n_ctx) * (8 + 2 * self.n_vocab)
    }

    /// Reads the next chunk's rows, checked against their CRC.
    pub(crate) fn read_chunk(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        buf.resize(self.chunk_bytes(), 0);
        self.input.read_exact(buf).map_err(io_err(&self.path))?;
        self.chunks_read += 1;
        if self.checked {
            let what = format!("chunk {}", self.chunks_read);
            check_crc(&mut self.input, crc32fast::hash(buf), &self.path, &what)?;
        }
        Ok(())
    }
}

/// Reads a stored CRC and compares it with `computed`.
fn check_crc(input: &mut impl Read, computed: u32, path: &Path, what: &str) -> Result<()> {
    let mut stored = [0u8; 4];
    input.read_exact(&mut stored).map_err(io_err(path))?;
    let stored = u32::from_le_bytes(stored);
    if stored != computed {
        return Err(Error::LogitsFile {
            path: path.to_path_buf(),
            reason: format!(
                "{what}: checksum mismatch (stored {stored:08x}, computed {computed:08x}): \
                 the file is corrupted; save the base again"
            ),
        });
    }
    Ok(())
}

/// How the run relates to a KL-divergence base.
pub enum KlMode<'a> {
    /// Perplexity only.
    None,
    /// Save this run's log-probabilities.
    Save(&'a mut LogitsWriter),
    /// Compare with saved log-probabilities.
    Compare(&'a mut LogitsReader),
}

#[derive(Default)]
struct KldAccum {
    sum_nll: f64,
    sum_nll2: f64,
    sum_nll_base: f64,
    sum_nll_base2: f64,
    sum_nll_nll_base: f64,
    sum_kld: f64,
    sum_kld2: f64,
    sum_p_diff2: f64,
    sum_p_diff4: f64,
    n_same_top: usize,
    count: usize,
    klds: Vec<f64>,
}

fn mean_and_unc(sum: f64, sum2: f64, count: usize) -> (f64, f64) {
    if count < 1 {
        return (0.0, 0.0);
    }
    let f = sum / count as f64;
    let df = sum2 / count as f64 - f * f;
    let df = if df > 0.0 && count > 10 {
        (df / (count - 1) as f64).sqrt()
    } else {
        0.0
    };
    (f, df)
}

/// llama.cpp's percentile of sorted values (linear interpolation).
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    if fraction <= 0.0 {
        return sorted[0];
    }
    if fraction >= 1.0 {
        return sorted[sorted.len() - 1];
    }
    let p = fraction * (sorted.len() - 1) as f64;
    let ip = p as usize;
    let frac = p - ip as f64;
    (1.0 - frac) * sorted[ip] + frac * sorted[(ip + 1).min(sorted.len() - 1)]
}

impl KldAccum {
    fn add(&mut self, t: &KldToken) {
        self.sum_nll += t.nll;
        self.sum_nll2 += t.nll * t.nll;
        self.sum_nll_base += t.nll_base;
        self.sum_nll_base2 += t.nll_base * t.nll_base;
        self.sum_nll_nll_base += t.nll * t.nll_base;
        self.sum_kld += t.kld;
        self.sum_kld2 += t.kld * t.kld;
        let d2 = t.p_diff * t.p_diff;
        self.sum_p_diff2 += d2;
        self.sum_p_diff4 += d2 * d2;
        self.n_same_top += t.same_top as usize;
        self.count += 1;
        self.klds.push(t.kld);
    }

    fn summary(&self) -> KldSummary {
        let n = self.count;
        let (lp, lp_unc) = mean_and_unc(self.sum_nll, self.sum_nll2, n);
        let (lb, lb_unc) = mean_and_unc(self.sum_nll_base, self.sum_nll_base2, n);
        let cov = if n < 10 {
            0.0
        } else {
            let nf = n as f64;
            (self.sum_nll_nll_base / nf - (self.sum_nll / nf) * (self.sum_nll_base / nf))
                / (nf - 1.0)
        };
        let ratio_unc = (lp_unc * lp_unc + lb_unc * lb_unc - 2.0 * cov)
            .max(0.0)
            .sqrt();
        let (kl, kl_unc) = mean_and_unc(self.sum_kld, self.sum_kld2, n);
        let (mse, mse_unc) = mean_and_unc(self.sum_p_diff2, self.sum_p_diff4, n);
        let rms = mse.sqrt();
        let rms_unc = if rms > 0.0 { 0.5 / rms * mse_unc } else { 0.0 };
        let same = if n > 0 {
            self.n_same_top as f64 / n as f64
        } else {
            0.0
        };
        let same_unc = if n > 1 {
            (same * (1.0 - same) / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let mut sorted = self.klds.clone();
        sorted.sort_by(f64::total_cmp);
        let median = if sorted.is_empty() {
            0.0
        } else if sorted.len().is_multiple_of(2) {
            0.5 * (sorted[sorted.len() / 2] + sorted[sorted.len() / 2 - 1])
        } else {
            sorted[sorted.len() / 2]
        };
        KldSummary {
            mean: kl,
            mean_unc: kl_unc,
            median,
            p90: percentile(&sorted, 0.90),
            p95: percentile(&sorted, 0.95),
            p99: percentile(&sorted, 0.99),
            max: sorted.last().copied().unwrap_or(0.0),
            min: sorted.first().copied().unwrap_or(0.0),
            same_top: same,
            same_top_unc: same_unc,
            ppl: lp.exp(),
            ppl_unc: lp.exp() * lp_unc,
            ppl_base: lb.exp(),
            ppl_base_unc: lb.exp() * lb_unc,
            ln_ppl_ratio: lp - lb,
            ln_ppl_ratio_unc: ratio_unc,
            rms_dp: rms,
            rms_dp_unc: rms_unc,
            count: n,
        }
    }
}

/// Runs the perplexity computation over `tokens` (already tokenized as the
/// model says: BOS added when it adds BOS, special tokens not parsed),
/// calling `on_chunk` after every chunk.
pub fn evaluate<L: LogitsSource>(
    lm: &mut L,
    tokens: &[u32],
    opts: &PerplexityOptions,
    mut kl: KlMode<'_>,
    mut on_chunk: impl FnMut(&ChunkProgress),
) -> Result<PerplexityReport> {
    let n_ctx = opts.n_ctx;
    let n_chunks = chunk_count(tokens.len(), opts)?;
    if lm.n_ctx() < n_ctx {
        return Err(Error::ContextFull {
            needed: n_ctx,
            n_ctx: lm.n_ctx(),
        });
    }
    let n_vocab = lm.n_vocab();
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(Error::InvalidArgument(format!(
            "perplexity: token id {bad} is outside the vocabulary of {n_vocab}"
        )));
    }
    if let KlMode::Compare(r) = &kl {
        if r.n_vocab != n_vocab {
            return Err(Error::LogitsFile {
                path: r.path.clone(),
                reason: format!(
                    "saved with a vocabulary of {} tokens, this model has {n_vocab}",
                    r.n_vocab
                ),
            });
        }
        if r.n_ctx != n_ctx {
            return Err(Error::LogitsFile {
                path: r.path.clone(),
                reason: format!(
                    "saved with a context of {} tokens, this run uses {n_ctx}",
                    r.n_ctx
                ),
            });
        }
        if r.n_chunks < n_chunks {
            return Err(Error::LogitsFile {
                path: r.path.clone(),
                reason: format!("holds {} chunks, this run needs {n_chunks}", r.n_chunks),
            });
        }
        let n = n_chunks * n_ctx;
        if let Some(i) = (0..n).find(|&i| r.tokens[i] != tokens[i]) {
            return Err(Error::LogitsFile {
                path: r.path.clone(),
                reason: format!(
                    "different input: token {i} is {} in the saved file but {} here (the same text, tokenizer and context size are required)",
                    r.tokens[i], tokens[i]
                ),
            });
        }
    }
    let first = n_ctx / 2;
    let n_scored = scored_per_chunk(n_ctx);
    let row_bytes = 8 + 2 * n_vocab;
    let score_batch = opts.score_batch.max(1);
    let start_time = Instant::now();
    // Sums of the negative log-likelihood and of its square.
    let mut sums = (0.0f64, 0.0f64);
    let mut count = 0usize;
    let mut running = Vec::with_capacity(n_chunks);
    let mut kacc = KldAccum::default();
    let mut base_buf = Vec::new();
    let mut save_buf = Vec::new();
    let mut chunk_tokens = vec![0u32; n_ctx];

    for chunk in 0..n_chunks {
        if crate::output_file::interrupted() {
            return Err(Error::Interrupted(format!(
                "perplexity stopped before chunk {}",
                chunk + 1
            )));
        }
        let start = chunk * n_ctx;
        chunk_tokens.copy_from_slice(&tokens[start..start + n_ctx]);
        if let Some(bos) = opts.bos {
            chunk_tokens[0] = bos;
        }
        if let KlMode::Compare(r) = &mut kl {
            r.read_chunk(&mut base_buf)?;
        }
        lm.truncate(0);
        // The unscored first half: only the cache matters.
        lm.eval(&chunk_tokens[..first], false)?;
        // Scored rows: logits at positions first..n_ctx-2 predict first+1..n_ctx-1.
        // The last position's logits are not needed, but it is evaluated as
        // llama.cpp does (it has no effect on the scored rows).
        let mut row0 = 0;
        save_buf.clear();
        while row0 < n_ctx - first {
            let row1 = (row0 + score_batch).min(n_ctx - first);
            let logits = lm.eval(&chunk_tokens[first + row0..first + row1], true)?;
            let rows_here = (row1 - row0).min(n_scored.saturating_sub(row0));
            let target = |r: usize| tokens[start + first + row0 + r + 1] as usize;
            let pos = |r: usize| first + row0 + r;
            match &mut kl {
                KlMode::None => {
                    let v: Vec<f64> = (0..rows_here)
                        .into_par_iter()
                        .map(|r| nll_of(&logits[r * n_vocab..(r + 1) * n_vocab], target(r)))
                        .collect();
                    for (r, x) in v.into_iter().enumerate() {
                        accumulate(x, &mut sums, chunk, pos(r))?;
                    }
                }
                KlMode::Save(_) => {
                    let v: Vec<(f64, Vec<u8>)> = (0..rows_here)
                        .into_par_iter()
                        .map(|r| {
                            let mut b = Vec::with_capacity(row_bytes);
                            let x = quantize_row(
                                &logits[r * n_vocab..(r + 1) * n_vocab],
                                target(r),
                                &mut b,
                            );
                            (x, b)
                        })
                        .collect();
                    for (r, (x, b)) in v.into_iter().enumerate() {
                        accumulate(x, &mut sums, chunk, pos(r))?;
                        save_buf.extend_from_slice(&b);
                    }
                }
                KlMode::Compare(_) => {
                    let base = &base_buf;
                    let v: Vec<KldToken> = (0..rows_here)
                        .into_par_iter()
                        .map_init(Vec::new, |scratch, r| {
                            let b = &base[(row0 + r) * row_bytes..(row0 + r + 1) * row_bytes];
                            kld_row(
                                &logits[r * n_vocab..(r + 1) * n_vocab],
                                b,
                                target(r),
                                scratch,
                            )
                        })
                        .collect();
                    for (r, t) in v.into_iter().enumerate() {
                        accumulate(t.nll, &mut sums, chunk, pos(r))?;
                        kacc.add(&t);
                    }
                }
            }
            row0 = row1;
        }
        if let KlMode::Save(w) = &mut kl {
            w.write_chunk(&save_buf)?;
        }
        count += n_scored;
        let ppl = (sums.0 / count as f64).exp();
        running.push(ppl);
        on_chunk(&ChunkProgress {
            done: chunk + 1,
            total: n_chunks,
            ppl,
            elapsed: start_time.elapsed(),
            kld: match kl {
                KlMode::Compare(_) => Some(kacc.summary()),
                _ => None,
            },
        });
    }
    lm.truncate(0);
    let cf = count as f64;
    let mean = sums.0 / cf;
    let var = sums.1 / cf - mean * mean;
    let ppl = mean.exp();
    let ppl_unc = if var > 0.0 && count > 1 {
        (var / (cf - 1.0)).sqrt() * ppl
    } else {
        0.0
    };
    let kld = match kl {
        KlMode::Compare(_) => Some(kacc.summary()),
        _ => None,
    };
    Ok(PerplexityReport {
        n_tokens: tokens.len(),
        n_ctx,
        n_chunks,
        count,
        ppl,
        ppl_unc,
        running_ppl: running,
        kld,
        seconds: start_time.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake model whose logits depend on the last few tokens, so that a
    /// correct chunking and scoring gives a known answer.
    struct HashLm {
        n_vocab: usize,
        past: Vec<u32>,
        out: Vec<f32>,
        noise: f32,
        /// A position whose logits are all NaN (as corrupt weights give).
        nan_at: Option<usize>,
    }

    impl HashLm {
        fn row(&self, pos: usize) -> Vec<f32> {
            let prev = self.past[pos] as usize;
            let p2 = if pos > 0 {
                self.past[pos - 1] as usize
            } else {
                7
            };
            (0..self.n_vocab)
                .map(|i| {
                    let h = (i * 31 + prev * 17 + p2 * 5 + pos) % 23;
                    h as f32 * 0.3 + self.noise * ((i * 7 + pos) % 5) as f32
                })
                .collect()
        }
    }

    impl LogitsSource for HashLm {
        fn n_vocab(&self) -> usize {
            self.n_vocab
        }
        fn n_ctx(&self) -> usize {
            1024
        }
        fn n_past(&self) -> usize {
            self.past.len()
        }
        fn eval(&mut self, tokens: &[u32], all: bool) -> Result<&[f32]> {
            let p0 = self.past.len();
            self.past.extend_from_slice(tokens);
            self.out.clear();
            for pos in p0..self.past.len() {
                if all || pos + 1 == self.past.len() {
                    let r = self.row(pos);
                    if self.nan_at == Some(pos) {
                        self.out.extend(r.iter().map(|_| f32::NAN));
                    } else {
                        self.out.extend(r);
                    }
                }
            }
            Ok(&self.out)
        }
        fn truncate(&mut self, n: usize) {
            self.past.truncate(n);
        }
    }

    fn lm(noise: f32) -> HashLm {
        HashLm {
            n_vocab: 37,
            past: Vec::new(),
            out: Vec::new(),
            noise,
            nan_at: None,
        }
    }

    fn text(n: usize) -> Vec<u32> {
        (0..n).map(|i| ((i * 13 + i / 7) % 37) as u32).collect()
    }

    /// The algorithm written out directly, in the most obvious way.
    fn reference(tokens: &[u32], n_ctx: usize, bos: Option<u32>, chunks: usize) -> (f64, Vec<f64>) {
        let mut m = lm(0.0);
        let mut nll = 0.0;
        let mut count = 0;
        let mut running = vec![];
        for c in 0..chunks {
            let mut t = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
            if let Some(b) = bos {
                t[0] = b;
            }
            m.past = t.clone();
            for j in n_ctx / 2..n_ctx - 1 {
                let row = m.row(j);
                let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
                let p = (row[t[j + 1] as usize] as f64).exp() / z;
                nll -= p.ln();
                count += 1;
            }
            running.push((nll / count as f64).exp());
        }
        ((nll / count as f64).exp(), running)
    }

    #[test]
    fn matches_direct_computation_with_and_without_bos() {
        let toks = text(100);
        for bos in [None, Some(5)] {
            for score_batch in [1, 3, 64] {
                let opts = PerplexityOptions {
                    n_ctx: 16,
                    max_chunks: None,
                    bos,
                    score_batch,
                };
                let r = evaluate(&mut lm(0.0), &toks, &opts, KlMode::None, |_| {}).unwrap();
                let (ppl, running) = reference(&toks, 16, bos, 6);
                assert_eq!(r.n_chunks, 6);
                assert_eq!(r.count, 6 * 7);
                assert!((r.ppl - ppl).abs() < 1e-6 * ppl, "{} vs {ppl}", r.ppl);
                for (a, b) in r.running_ppl.iter().zip(&running) {
                    assert!((a - b).abs() < 1e-6 * b, "{a} vs {b}");
                }
                assert!(r.ppl_unc > 0.0);
            }
        }
    }

    #[test]
    fn chunk_limits_and_too_short_text() {
        let opts = PerplexityOptions {
            n_ctx: 16,
            max_chunks: Some(2),
            ..Default::default()
        };
        let r = evaluate(&mut lm(0.0), &text(100), &opts, KlMode::None, |_| {}).unwrap();
        assert_eq!(r.n_chunks, 2);
        let e = evaluate(&mut lm(0.0), &text(31), &opts, KlMode::None, |_| {}).unwrap_err();
        assert!(e.to_string().contains("32"), "{e}");
    }

    #[test]
    fn zero_chunks_is_an_error_not_a_nan_ppl() {
        let opts = PerplexityOptions {
            n_ctx: 16,
            max_chunks: Some(0),
            ..Default::default()
        };
        let e = evaluate(&mut lm(0.0), &text(100), &opts, KlMode::None, |_| {}).unwrap_err();
        assert!(e.to_string().contains("at least 1 chunk"), "{e}");
    }

    #[test]
    fn nan_logits_are_an_error_not_a_nan_ppl() {
        let opts = PerplexityOptions {
            n_ctx: 16,
            ..Default::default()
        };
        let toks = text(100);
        // Position 12 of a chunk is scored (8..=14); chunk 0 is hit.
        let mut bad = lm(0.0);
        bad.nan_at = Some(12);
        let e = evaluate(&mut bad, &toks, &opts, KlMode::None, |_| {}).unwrap_err();
        assert!(e.to_string().contains("NaN"), "{e}");
        assert!(e.to_string().contains("chunk 1"), "{e}");
        // Saving a base stops at the same place.
        let path = std::env::temp_dir().join(format!("rkinfer-nan-{}.kld", std::process::id()));
        let n_chunks = chunk_count(toks.len(), &opts).unwrap();
        let mut w = LogitsWriter::create(&path, 16, 37, n_chunks, &toks).unwrap();
        let mut bad = lm(0.0);
        bad.nan_at = Some(12);
        let e = evaluate(&mut bad, &toks, &opts, KlMode::Save(&mut w), |_| {}).unwrap_err();
        assert!(e.to_string().contains("NaN"), "{e}");
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn kld_of_self_is_zero_and_of_other_positive() {
        let dir = std::env::temp_dir().join(format!("rkinfer-kld-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("base.bin");
        let toks = text(200);
        let opts = PerplexityOptions {
            n_ctx: 32,
            ..Default::default()
        };
        let n_chunks = chunk_count(toks.len(), &opts).unwrap();
        let mut w = LogitsWriter::create(&path, 32, 37, n_chunks, &toks).unwrap();
        let base = evaluate(&mut lm(0.0), &toks, &opts, KlMode::Save(&mut w), |_| {}).unwrap();
        w.finish().unwrap();

        let mut r = LogitsReader::open(&path).unwrap();
        assert_eq!((r.n_ctx, r.n_vocab, r.n_chunks), (32, 37, n_chunks));
        let same = evaluate(&mut lm(0.0), &toks, &opts, KlMode::Compare(&mut r), |_| {}).unwrap();
        let k = same.kld.unwrap();
        assert_eq!(k.mean, 0.0);
        assert_eq!(k.max, 0.0);
        assert_eq!(k.same_top, 1.0);
        assert!((k.ppl_base - base.ppl).abs() < 1e-3 * base.ppl);
        assert!((same.ppl - base.ppl).abs() < 1e-12);

        let mut r = LogitsReader::open(&path).unwrap();
        let other = evaluate(&mut lm(0.4), &toks, &opts, KlMode::Compare(&mut r), |_| {}).unwrap();
        let k = other.kld.unwrap();
        assert!(k.mean > 1e-3, "{}", k.mean);
        assert!(k.max >= k.p99 && k.p99 >= k.p95 && k.p95 >= k.p90 && k.p90 >= k.median);
        assert!((k.ppl - other.ppl).abs() < 1e-6 * other.ppl);

        // a different text is a clear error
        let mut r = LogitsReader::open(&path).unwrap();
        let mut toks2 = toks.clone();
        toks2[40] = (toks2[40] + 1) % 37;
        let e = evaluate(&mut lm(0.0), &toks2, &opts, KlMode::Compare(&mut r), |_| {}).unwrap_err();
        assert!(e.to_string().contains("token 40"), "{e}");
        // a different context too
        let mut r = LogitsReader::open(&path).unwrap();
        let o2 = PerplexityOptions {
            n_ctx: 16,
            ..Default::default()
        };
        assert!(evaluate(&mut lm(0.0), &toks, &o2, KlMode::Compare(&mut r), |_| {}).is_err());
        // and a truncated or foreign file
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(LogitsReader::open(&path).is_err());
        std::fs::write(&path, b"_logits_\x00\x02\x00\x00").unwrap();
        assert!(matches!(LogitsReader::open(&path), Err(e) if e.to_string().contains("magic")));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Saves a base of `toks` with n_ctx 16 and returns its bytes.
    fn saved_base(path: &Path, toks: &[u32]) -> Vec<u8> {
        let opts = PerplexityOptions {
            n_ctx: 16,
            ..Default::default()
        };
        let n_chunks = chunk_count(toks.len(), &opts).unwrap();
        let mut w = LogitsWriter::create(path, 16, 37, n_chunks, toks).unwrap();
        evaluate(&mut lm(0.0), toks, &opts, KlMode::Save(&mut w), |_| {}).unwrap();
        w.finish().unwrap();
        std::fs::read(path).unwrap()
    }

    /// Random bytes in a base file must not change the result silently.
    #[test]
    fn a_flipped_byte_in_the_base_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("rkinfer-kldsum-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("base.kld");
        let toks = text(100);
        let good = saved_base(&path, &toks);
        let opts = PerplexityOptions {
            n_ctx: 16,
            ..Default::default()
        };
        // A saved log-probability of the last chunk, then a saved token.
        for at in [good.len() - 100, 24 + 4 * 10] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            let e = LogitsReader::open(&path).and_then(|mut r| {
                evaluate(&mut lm(0.0), &toks, &opts, KlMode::Compare(&mut r), |_| {})
            });
            let e = e
                .err()
                .unwrap_or_else(|| panic!("byte {at} flipped: no error"));
            assert!(e.to_string().contains("checksum"), "byte {at}: {e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Files of the first format (no CRCs) are still read, unchecked.
    #[test]
    fn first_format_files_are_read_unchecked() {
        let dir = std::env::temp_dir().join(format!("rkinfer-kldv1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("base.kld");
        let toks = text(100);
        let v2 = saved_base(&path, &toks);
        let (n_chunks, head, rows) = (6, 24 + 4 * 6 * 16, 7 * (8 + 2 * 37));
        let mut v1 = MAGIC_V1.to_vec();
        v1.extend_from_slice(&v2[8..head]);
        for c in 0..n_chunks {
            let start = head + 4 + c * (rows + 4);
            v1.extend_from_slice(&v2[start..start + rows]);
        }
        std::fs::write(&path, &v1).unwrap();
        let mut r = LogitsReader::open(&path).unwrap();
        assert!(!r.checked);
        let opts = PerplexityOptions {
            n_ctx: 16,
            ..Default::default()
        };
        let same = evaluate(&mut lm(0.0), &toks, &opts, KlMode::Compare(&mut r), |_| {}).unwrap();
        assert_eq!(same.kld.unwrap().mean, 0.0);
        assert!(LogitsReader::open(&dir.join("missing")).is_err());
        std::fs::write(&path, &v2).unwrap();
        assert!(LogitsReader::open(&path).unwrap().checked);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(2.5f32.round_ties_even_compat(), 2);
        assert_eq!(3.5f32.round_ties_even_compat(), 4);
        assert_eq!(3.4f32.round_ties_even_compat(), 3);
        assert_eq!(70000.0f32.round_ties_even_compat(), 65535);
    }
}
