//! The library session API: feed a prompt, generate tokens with a chosen
//! [`Sampler`], stop at end-of-generation tokens or stop strings, and keep the
//! KV cache between turns.
//!
//! A [`Session`] works on anything that turns tokens into logits (the
//! [`LogitsSource`] trait): the real model through [`ModelContext`], or a
//! small fake in tests.
//!
//! ```no_run
//! use rkinfer::session::{Llm, GenerateOptions};
//! use rkinfer::sampler::{Sampler, SamplerParams};
//! # fn main() -> rkinfer::Result<()> {
//! let llm = Llm::load("model.gguf".as_ref(), &Default::default())?;
//! let mut session = llm.session(&Default::default())?;
//! session.feed_text(llm.tokenizer(), "The capital of France is", true)?;
//! let mut sampler = Sampler::new(SamplerParams::greedy())?;
//! let opts = GenerateOptions { max_tokens: 16, ..Default::default() };
//! for piece in session.generate_text(llm.tokenizer(), &mut sampler, &opts) {
//!     print!("{}", piece?);
//! }
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use crate::sampler::Sampler;
use crate::{Error, Result};

mod model_binding;
pub use model_binding::{load_model, Llm, LlmOptions, LoadOptions, ModelContext};

/// Something that evaluates tokens into next-token logits while keeping a
/// growing context (a model plus its KV cache).
pub trait LogitsSource {
    /// Number of logits per position.
    fn n_vocab(&self) -> usize;
    /// Maximum number of positions the context holds.
    fn n_ctx(&self) -> usize;
    /// Number of positions evaluated so far.
    fn n_past(&self) -> usize;
    /// Evaluates `tokens` at positions `n_past..n_past+len` and returns the
    /// logits of the last position (`all == false`, one row) or of every
    /// position (`all == true`, `len` rows, row-major).
    fn eval(&mut self, tokens: &[u32], all: bool) -> Result<&[f32]>;
    /// Forgets every position from `n` on. A source that cannot rewind
    /// (recurrent layers) forgets more, down to 0: `n_past` then says what
    /// it kept, and the session evaluates the rest of its tokens again.
    fn truncate(&mut self, n: usize);
}

/// Options of a [`Session`].
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Maximum number of prompt tokens per forward pass (llama.cpp's n_batch).
    pub n_batch: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { n_batch: 2048 }
    }
}

/// Time spent and work done, llama.cpp style.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timings {
    /// Tokens evaluated as prompt (batched).
    pub prompt_tokens: usize,
    /// Time spent on them.
    pub prompt_time: Duration,
    /// Single-token decode passes.
    pub eval_runs: usize,
    /// Time spent on them (sampling included).
    pub eval_time: Duration,
    /// Tokens sampled.
    pub sampled: usize,
    /// Time spent sampling.
    pub sample_time: Duration,
}

impl Timings {
    fn rate(n: usize, t: Duration) -> f64 {
        let s = t.as_secs_f64();
        if s > 0.0 {
            n as f64 / s
        } else {
            0.0
        }
    }
    /// Prompt tokens per second.
    pub fn prompt_tokens_per_s(&self) -> f64 {
        Self::rate(self.prompt_tokens, self.prompt_time)
    }
    /// Decode passes per second.
    pub fn eval_tokens_per_s(&self) -> f64 {
        Self::rate(self.eval_runs, self.eval_time)
    }
}

/// Why a generation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The sampler picked an end-of-generation token (not emitted).
    EndOfGeneration(u32),
    /// The requested number of tokens was generated.
    MaxTokens,
    /// A stop string appeared in the text (not emitted).
    StopString(String),
    /// The context is full.
    ContextFull,
    /// Evaluating or sampling failed; the stream yielded the error itself.
    Error(String),
}

/// Options of one generation.
#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    /// Maximum tokens to generate; 0 means until end of generation or a full
    /// context.
    pub max_tokens: usize,
    /// Generation stops before any of these strings would be printed.
    pub stop: Vec<String>,
}

/// A conversation with a model: the tokens so far, their KV cache, and the
/// logits for the next position.
pub struct Session<L: LogitsSource> {
    lm: L,
    opts: SessionOptions,
    /// Every token of the conversation, including a sampled one not yet
    /// evaluated (`pending`).
    tokens: Vec<u32>,
    /// A sampled token whose logits are not computed yet.
    pending: bool,
    /// Logits predicting the token after `tokens` (valid when !pending and
    /// tokens is not empty).
    logits: Vec<f32>,
    eog: Vec<u32>,
    timings: Timings,
}

impl<L: LogitsSource> Session<L> {
    /// A session over `lm`, whose context must be empty.
    pub fn new(mut lm: L, opts: SessionOptions) -> Result<Session<L>> {
        if opts.n_batch == 0 {
            return Err(Error::InvalidArgument(
                "batch size must be at least 1".to_string(),
            ));
        }
        lm.truncate(0);
        Ok(Session {
            lm,
            opts,
            tokens: Vec::new(),
            pending: false,
            logits: Vec::new(),
            eog: Vec::new(),
            timings: Timings::default(),
        })
    }

    /// Declares which tokens end a generation.
    pub fn set_eog_tokens(&mut self, eog: Vec<u32>) {
        self.eog = eog;
    }

    /// The tokens of the conversation so far (prompt and generated).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The context size.
    pub fn n_ctx(&self) -> usize {
        self.lm.n_ctx()
    }

    /// Positions still free in the context.
    pub fn space_left(&self) -> usize {
        self.lm.n_ctx().saturating_sub(self.tokens.len())
    }

    /// Accumulated timings.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// The underlying logits source.
    pub fn source(&self) -> &L {
        &self.lm
    }

    /// Logits predicting the next token, if the last fed token is evaluated.
    pub fn logits(&self) -> Option<&[f32]> {
        if self.pending || self.tokens.is_empty() {
            None
        } else {
            Some(&self.logits)
        }
    }

    /// Forgets the conversation from position `n` on (keeps the cache of the
    /// first `n` tokens, e.g. to rewind a turn).
    pub fn truncate(&mut self, n: usize) {
        if n >= self.tokens.len() {
            return;
        }
        self.tokens.truncate(n);
        // The logits of position n-1 are gone: drop it from the cache too and
        // re-evaluate it lazily.
        self.lm.truncate(n.saturating_sub(1));
        self.pending = n > 0;
    }

    /// Forgets the whole conversation.
    pub fn clear(&mut self) {
        self.tokens.clear();
        self.pending = false;
        self.lm.truncate(0);
    }

    /// Appends tokens to the conversation and evaluates them in batches of
    /// `n_batch`. Errors if they do not fit in the context.
    pub fn feed_tokens(&mut self, new: &[u32]) -> Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        let needed = self.tokens.len() + new.len();
        if needed > self.lm.n_ctx() {
            return Err(Error::ContextFull {
                needed,
                n_ctx: self.lm.n_ctx(),
            });
        }
        if let Some(&bad) = new.iter().find(|&&t| t as usize >= self.lm.n_vocab()) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.lm.n_vocab()
            )));
        }
        // Tokens not evaluated yet: a pending sampled one, or a rewind.
        let first = self.lm.n_past();
        self.tokens.extend_from_slice(new);
        self.pending = false;
        let start = Instant::now();
        let mut pos = first;
        while pos < self.tokens.len() {
            let end = (pos + self.opts.n_batch).min(self.tokens.len());
            let batch = &self.tokens[pos..end];
            match self.lm.eval(batch, false) {
                Ok(l) => {
                    self.logits.clear();
                    self.logits.extend_from_slice(l);
                }
                Err(e) => {
                    // Keep tokens and cache consistent.
                    self.tokens.truncate(pos);
                    self.lm.truncate(pos.saturating_sub(1));
                    self.pending = pos > 0;
                    return Err(e);
                }
            }
            pos = end;
        }
        self.timings.prompt_tokens += self.tokens.len() - first;
        self.timings.prompt_time += start.elapsed();
        Ok(())
    }

    /// Evaluates the last token if its logits are missing.
    fn ensure_logits(&mut self) -> Result<()> {
        if !self.pending {
            return Ok(());
        }
        let n_past = self.lm.n_past();
        let start = Instant::now();
        let todo = &self.tokens[n_past..];
        let n_todo = todo.len();
        let l = self.lm.eval(todo, false)?;
        self.logits.clear();
        self.logits.extend_from_slice(l);
        self.pending = false;
        if n_todo == 1 {
            self.timings.eval_runs += 1;
            self.timings.eval_time += start.elapsed();
        } else {
            self.timings.prompt_tokens += n_todo;
            self.timings.prompt_time += start.elapsed();
        }
        Ok(())
    }

    /// Generates one token: evaluates the previous one if needed, samples,
    /// and appends the result (unless it ends generation). `Ok(Err(reason))`
    /// means generation stops.
    pub fn step(&mut self, sampler: &mut Sampler) -> Result<std::result::Result<u32, StopReason>> {
        if self.tokens.is_empty() {
            return Err(Error::InvalidArgument(
                "nothing to continue: feed a prompt first".to_string(),
            ));
        }
        if self.tokens.len() >= self.lm.n_ctx() {
            return Ok(Err(StopReason::ContextFull));
        }
        self.ensure_logits()?;
        let start = Instant::now();
        let token = sampler.sample(&self.logits)?;
        self.timings.sampled += 1;
        self.timings.sample_time += start.elapsed();
        if self.eog.contains(&token) {
            return Ok(Err(StopReason::EndOfGeneration(token)));
        }
        sampler.accept(token);
        self.tokens.push(token);
        self.pending = true;
        Ok(Ok(token))
    }

    /// Iterates generated token ids (end-of-generation tokens are not
    /// yielded). The sampler's repetition window starts from the
    /// conversation so far.
    pub fn generate<'a>(
        &'a mut self,
        sampler: &'a mut Sampler,
        max_tokens: usize,
    ) -> TokenStream<'a, L> {
        sampler.set_history(&self.tokens);
        TokenStream {
            session: self,
            sampler,
            max_tokens,
            produced: 0,
            stop: None,
        }
    }
}

/// Iterator over generated token ids; see [`Session::generate`].
pub struct TokenStream<'a, L: LogitsSource> {
    session: &'a mut Session<L>,
    sampler: &'a mut Sampler,
    max_tokens: usize,
    produced: usize,
    stop: Option<StopReason>,
}

impl<'a, L: LogitsSource> TokenStream<'a, L> {
    /// Why the stream ended (`None` while it runs).
    pub fn stop_reason(&self) -> Option<&StopReason> {
        self.stop.as_ref()
    }

    /// The session being extended.
    pub fn session(&self) -> &Session<L> {
        self.session
    }
}

impl<'a, L: LogitsSource> Iterator for TokenStream<'a, L> {
    type Item = Result<u32>;

    fn next(&mut self) -> Option<Result<u32>> {
        if self.stop.is_some() {
            return None;
        }
        if self.max_tokens > 0 && self.produced >= self.max_tokens {
            self.stop = Some(StopReason::MaxTokens);
            return None;
        }
        match self.session.step(self.sampler) {
            Ok(Ok(t)) => {
                self.produced += 1;
                Some(Ok(t))
            }
            Ok(Err(reason)) => {
                self.stop = Some(reason);
                None
            }
            Err(e) => {
                self.stop = Some(StopReason::Error(e.to_string()));
                Some(Err(e))
            }
        }
    }
}

/// Turns token ids into text pieces.
pub trait Detokenize {
    /// The raw bytes of a token (may be part of a UTF-8 character).
    fn piece(&self, id: u32) -> Vec<u8>;
}

/// Joins token bytes into valid UTF-8, holding back an incomplete character
/// until the next bytes complete it; invalid bytes become U+FFFD.
#[derive(Clone, Debug, Default)]
pub struct Utf8Stream {
    held: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes; returns the text that is complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.held.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.held) {
                Ok(s) => {
                    out.push_str(s);
                    self.held.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.held[..valid]));
                    match e.error_len() {
                        // Incomplete trailing character: wait for more bytes.
                        None => {
                            self.held.drain(..valid);
                            return out;
                        }
                        Some(n) => {
                            out.push('\u{FFFD}');
                            self.held.drain(..valid + n);
                        }
                    }
                }
            }
        }
    }

    /// Flushes what is held (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.held).into_owned();
        self.held.clear();
        s
    }
}

/// Holds back text that could be the start of a stop string, and detects a
/// complete stop string.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    /// A matcher for these stop strings (empty ones are ignored).
    pub fn new(stops: &[String]) -> StopMatcher {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds text. Returns the text safe to print and, if a stop string is now
    /// complete, that string (text from it on is dropped).
    pub fn push(&mut self, text: &str) -> (String, Option<String>) {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return (std::mem::take(&mut self.held), None);
        }
        // Earliest complete stop string wins.
        let mut hit: Option<(usize, &String)> = None;
        for s in &self.stops {
            if let Some(i) = self.held.find(s.as_str()) {
                if hit.is_none_or(|(j, _)| i < j) {
                    hit = Some((i, s));
                }
            }
        }
        if let Some((i, s)) = hit {
            let out = self.held[..i].to_string();
            let s = s.clone();
            self.held.clear();
            return (out, Some(s));
        }
        // Keep the longest suffix that is a prefix of some stop string.
        let mut keep_from = self.held.len();
        for (i, _) in self.held.char_indices() {
            let tail = &self.held[i..];
            if self.stops.iter().any(|s| s.starts_with(tail)) {
                keep_from = i;
                break;
            }
        }
        let out = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        (out, None)
    }

    /// Releases text held back (generation ended without a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

impl<L: LogitsSource> Session<L> {
    /// Generates text pieces: valid UTF-8, stopping at end-of-generation
    /// tokens, `max_tokens`, a full context, or a stop string.
    pub fn generate_text<'a, D: Detokenize>(
        &'a mut self,
        detok: &'a D,
        sampler: &'a mut Sampler,
        opts: &GenerateOptions,
    ) -> TextStream<'a, L, D> {
        let stops = StopMatcher::new(&opts.stop);
        TextStream {
            tokens: self.generate(sampler, opts.max_tokens),
            detok,
            utf8: Utf8Stream::default(),
            stops,
            generated: Vec::new(),
            text: String::new(),
            stop: None,
            done: false,
        }
    }
}

/// Iterator over generated text pieces; see [`Session::generate_text`].
pub struct TextStream<'a, L: LogitsSource, D: Detokenize> {
    tokens: TokenStream<'a, L>,
    detok: &'a D,
    utf8: Utf8Stream,
    stops: StopMatcher,
    generated: Vec<u32>,
    text: String,
    stop: Option<StopReason>,
    done: bool,
}

impl<'a, L: LogitsSource, D: Detokenize> TextStream<'a, L, D> {
    /// Ids generated so far.
    pub fn generated(&self) -> &[u32] {
        &self.generated
    }
    /// Text yielded so far.
    pub fn text(&self) -> &str {
        &self.text
    }
    /// Why generation ended (`None` while it runs).
    pub fn stop_reason(&self) -> Option<&StopReason> {
        self.stop.as_ref()
    }
}

impl<'a, L: LogitsSource, D: Detokenize> Iterator for TextStream<'a, L, D> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        while !self.done {
            match self.tokens.next() {
                Some(Ok(t)) => {
                    self.generated.push(t);
                    let s = self.utf8.push(&self.detok.piece(t));
                    let (out, hit) = self.stops.push(&s);
                    if let Some(h) = hit {
                        self.done = true;
                        self.stop = Some(StopReason::StopString(h));
                    }
                    if !out.is_empty() {
                        self.text.push_str(&out);
                        return Some(Ok(out));
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => {
                    self.done = true;
                    self.stop = self.tokens.stop_reason().cloned();
                    let rest = self.utf8.finish();
                    let (mut out, hit) = self.stops.push(&rest);
                    if let Some(h) = hit {
                        self.stop = Some(StopReason::StopString(h));
                    } else {
                        out.push_str(&self.stops.finish());
                    }
                    if !out.is_empty() {
                        self.text.push_str(&out);
                        return Some(Ok(out));
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake model: the next token's logits peak at `(last + 1) % n_vocab`
    /// (so generation counts up), and it records every eval call.
    pub struct CountingLm {
        pub n_vocab: usize,
        pub n_ctx: usize,
        pub past: Vec<u32>,
        pub calls: Vec<usize>,
        out: Vec<f32>,
    }

    impl CountingLm {
        pub fn new(n_vocab: usize, n_ctx: usize) -> Self {
            CountingLm {
                n_vocab,
                n_ctx,
                past: Vec::new(),
                calls: Vec::new(),
                out: Vec::new(),
            }
        }
        fn row(&self, last: u32) -> Vec<f32> {
            let mut r = vec![0.0; self.n_vocab];
            r[(last as usize + 1) % self.n_vocab] = 10.0;
            r
        }
    }

    impl LogitsSource for CountingLm {
        fn n_vocab(&self) -> usize {
            self.n_vocab
        }
        fn n_ctx(&self) -> usize {
            self.n_ctx
        }
        fn n_past(&self) -> usize {
            self.past.len()
        }
        fn eval(&mut self, tokens: &[u32], all: bool) -> Result<&[f32]> {
            if self.past.len() + tokens.len() > self.n_ctx {
                return Err(Error::InvalidArgument("fake: overflow".into()));
            }
            self.calls.push(tokens.len());
            self.out.clear();
            for (i, &t) in tokens.iter().enumerate() {
                self.past.push(t);
                if all || i + 1 == tokens.len() {
                    let r = self.row(t);
                    self.out.extend(r);
                }
            }
            Ok(&self.out)
        }
        fn truncate(&mut self, n: usize) {
            self.past.truncate(n);
        }
    }

    struct Letters;
    impl Detokenize for Letters {
        fn piece(&self, id: u32) -> Vec<u8> {
            vec![b'a' + (id % 26) as u8]
        }
    }

    #[test]
    fn prompt_is_fed_in_batches() {
        let mut s = Session::new(CountingLm::new(50, 64), SessionOptions { n_batch: 4 }).unwrap();
        s.feed_tokens(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).unwrap();
        assert_eq!(s.source().calls, vec![4, 4, 2]);
        assert_eq!(s.timings().prompt_tokens, 10);
        assert_eq!(s.logits().unwrap()[11], 10.0);
    }

    #[test]
    fn greedy_generation_counts_and_reuses_cache() {
        let mut s = Session::new(CountingLm::new(50, 64), SessionOptions::default()).unwrap();
        s.feed_tokens(&[3]).unwrap();
        let mut g = Sampler::greedy();
        let out: Vec<u32> = s.generate(&mut g, 4).map(|t| t.unwrap()).collect();
        assert_eq!(out, vec![4, 5, 6, 7]);
        // the last sampled token is evaluated lazily on the next turn
        assert_eq!(s.source().past, vec![3, 4, 5, 6]);
        s.feed_tokens(&[20]).unwrap();
        assert_eq!(s.source().past, vec![3, 4, 5, 6, 7, 20]);
        let out: Vec<u32> = s.generate(&mut g, 2).map(|t| t.unwrap()).collect();
        assert_eq!(out, vec![21, 22]);
        assert_eq!(s.tokens(), &[3, 4, 5, 6, 7, 20, 21, 22]);
        // one prompt pass per turn, single-token passes in between
        assert_eq!(s.source().calls, vec![1, 1, 1, 1, 2, 1]);
    }

    #[test]
    fn stops_at_eog_and_full_context() {
        let mut s = Session::new(CountingLm::new(50, 64), SessionOptions::default()).unwrap();
        s.set_eog_tokens(vec![6]);
        s.feed_tokens(&[3]).unwrap();
        let mut g = Sampler::greedy();
        let mut it = s.generate(&mut g, 0);
        let out: Vec<u32> = it.by_ref().map(|t| t.unwrap()).collect();
        assert_eq!(out, vec![4, 5]);
        assert_eq!(it.stop_reason(), Some(&StopReason::EndOfGeneration(6)));

        let mut s = Session::new(CountingLm::new(50, 5), SessionOptions::default()).unwrap();
        s.feed_tokens(&[0, 1]).unwrap();
        let mut it = s.generate(&mut g, 0);
        let out: Vec<u32> = it.by_ref().map(|t| t.unwrap()).collect();
        assert_eq!(out, vec![2, 3, 4]);
        assert_eq!(it.stop_reason(), Some(&StopReason::ContextFull));
    }

    /// A model whose evaluations fail after `ok` successful ones.
    struct FailingLm {
        inner: CountingLm,
        ok: usize,
    }

    impl LogitsSource for FailingLm {
        fn n_vocab(&self) -> usize {
            self.inner.n_vocab()
        }
        fn n_ctx(&self) -> usize {
            self.inner.n_ctx()
        }
        fn n_past(&self) -> usize {
            self.inner.n_past()
        }
        fn eval(&mut self, tokens: &[u32], all: bool) -> Result<&[f32]> {
            if self.ok == 0 {
                return Err(Error::InvalidArgument("fake: the device is gone".into()));
            }
            self.ok -= 1;
            self.inner.eval(tokens, all)
        }
        fn truncate(&mut self, n: usize) {
            self.inner.truncate(n)
        }
    }

    #[test]
    fn a_failed_step_is_reported_as_an_error_not_a_full_context() {
        let lm = FailingLm {
            inner: CountingLm::new(50, 64),
            ok: 2,
        };
        let mut s = Session::new(lm, SessionOptions::default()).unwrap();
        s.feed_tokens(&[3]).unwrap();
        let mut g = Sampler::greedy();
        let mut it = s.generate(&mut g, 0);
        let items: Vec<Result<u32>> = it.by_ref().collect();
        assert!(items.last().is_some_and(|r| r.is_err()), "{items:?}");
        match it.stop_reason() {
            Some(StopReason::Error(msg)) => assert!(msg.contains("device is gone"), "{msg}"),
            other => panic!("stop reason {other:?}"),
        }
    }

    #[test]
    fn overlong_prompt_is_an_error() {
        let mut s = Session::new(CountingLm::new(50, 4), SessionOptions::default()).unwrap();
        let e = s.feed_tokens(&[1, 2, 3, 4, 5]).unwrap_err();
        assert!(
            e.to_string().contains('5') && e.to_string().contains('4'),
            "{e}"
        );
        assert!(s.feed_tokens(&[99]).is_err(), "id outside vocab");
        assert!(s.tokens().is_empty());
    }

    #[test]
    fn rewind_reevaluates() {
        let mut s = Session::new(CountingLm::new(50, 64), SessionOptions::default()).unwrap();
        s.feed_tokens(&[1, 2, 3, 4]).unwrap();
        s.truncate(2);
        assert!(s.logits().is_none());
        let mut g = Sampler::greedy();
        let out: Vec<u32> = s.generate(&mut g, 1).map(|t| t.unwrap()).collect();
        // after rewinding to [1, 2] the lazily recomputed logits predict 3
        assert_eq!(out, vec![3]);
    }

    /// A fake recurrent model: its state is the sum of every token seen,
    /// the logits peak at that sum, and it cannot rewind (truncating to
    /// any earlier position forgets everything).
    struct SummingLm {
        past: Vec<u32>,
        evaluated: Vec<u32>,
        out: Vec<f32>,
    }

    impl LogitsSource for SummingLm {
        fn n_vocab(&self) -> usize {
            50
        }
        fn n_ctx(&self) -> usize {
            64
        }
        fn n_past(&self) -> usize {
            self.past.len()
        }
        fn eval(&mut self, tokens: &[u32], _all: bool) -> Result<&[f32]> {
            self.past.extend_from_slice(tokens);
            self.evaluated.extend_from_slice(tokens);
            let sum: u32 = self.past.iter().sum();
            self.out = vec![0.0; 50];
            self.out[sum as usize % 50] = 10.0;
            Ok(&self.out)
        }
        fn truncate(&mut self, n: usize) {
            if n < self.past.len() {
                self.past.clear();
            }
        }
    }

    #[test]
    fn a_source_that_cannot_rewind_is_replayed_from_the_start() {
        let lm = SummingLm {
            past: Vec::new(),
            evaluated: Vec::new(),
            out: Vec::new(),
        };
        let mut s = Session::new(lm, SessionOptions::default()).unwrap();
        s.feed_tokens(&[1, 2, 3, 4]).unwrap();
        s.truncate(2);
        s.feed_tokens(&[5]).unwrap();
        // The kept tokens were evaluated again before the new one.
        assert_eq!(s.source().evaluated, vec![1, 2, 3, 4, 1, 2, 5]);
        let mut g = Sampler::greedy();
        let out: Vec<u32> = s.generate(&mut g, 1).map(|t| t.unwrap()).collect();
        assert_eq!(out, vec![8]);
        s.truncate(1);
        let out: Vec<u32> = s.generate(&mut g, 1).map(|t| t.unwrap()).collect();
        assert_eq!(out, vec![1]);
        assert_eq!(s.source().past, vec![1]);
    }

    #[test]
    fn stop_strings_cut_text() {
        let mut s = Session::new(CountingLm::new(26, 64), SessionOptions::default()).unwrap();
        s.feed_tokens(&[0]).unwrap(); // generates b c d e f ...
        let mut g = Sampler::greedy();
        let opts = GenerateOptions {
            max_tokens: 20,
            stop: vec!["def".into(), "xyz".into()],
        };
        let mut it = s.generate_text(&Letters, &mut g, &opts);
        let text: String = it.by_ref().map(|p| p.unwrap()).collect();
        assert_eq!(text, "bc");
        assert_eq!(
            it.stop_reason(),
            Some(&StopReason::StopString("def".into()))
        );
    }

    #[test]
    fn stop_matcher_holds_partial_prefix() {
        let mut m = StopMatcher::new(&["</s>".to_string()]);
        assert_eq!(m.push("hello <"), ("hello ".to_string(), None));
        assert_eq!(m.push("/"), (String::new(), None));
        assert_eq!(m.push("x"), ("</x".to_string(), None));
        assert_eq!(
            m.push("a</s>b"),
            ("a".to_string(), Some("</s>".to_string()))
        );
    }

    #[test]
    fn utf8_stream_holds_split_characters() {
        let mut u = Utf8Stream::default();
        let e = "é".as_bytes();
        assert_eq!(u.push(&e[..1]), "");
        assert_eq!(u.push(&e[1..]), "é");
        assert_eq!(u.push(&[0xff, b'a']), "\u{FFFD}a");
        assert_eq!(u.push(&[0xe2, 0x82]), "");
        assert_eq!(u.finish(), "\u{FFFD}");
    }
}
