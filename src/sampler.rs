//! Token sampling: greedy, temperature, top-k, top-p, min-p and a repetition
//! penalty over a window of recent tokens, seeded for reproducibility.
//!
//! The chain and its defaults follow llama.cpp's common sampler:
//! repetition penalty → top-k → top-p → min-p → temperature → random draw.
//! Note that top-p and min-p see the probabilities *before* temperature, as in
//! llama.cpp. A temperature of zero (or below) picks the most likely token
//! (after the penalty), which is greedy decoding.

use std::collections::VecDeque;

use std::fmt;

/// Result of the sampler.
pub type Result<T, E = SamplerError> = std::result::Result<T, E>;

/// What the sampler refuses.
#[derive(Debug, Clone, PartialEq)]
pub enum SamplerError {
    /// A parameter is out of its range.
    OutOfRange { what: &'static str, value: String },
    /// The logits row is empty.
    EmptyLogits,
    /// The logits row is longer than a token id can index.
    TooManyLogits(usize),
    /// Every candidate was filtered out (all logits NaN?).
    NoCandidate,
}

impl fmt::Display for SamplerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SamplerError::OutOfRange { what, value } => {
                write!(f, "sampler: {what} = {value} is out of range")
            }
            SamplerError::EmptyLogits => write!(f, "sampler: empty logits row"),
            SamplerError::TooManyLogits(n) => {
                write!(f, "sampler: {n} logits is more than a token id can index")
            }
            SamplerError::NoCandidate => {
                write!(f, "sampler: no candidate left (all logits NaN?)")
            }
        }
    }
}

impl std::error::Error for SamplerError {}

/// Sampling settings. `Default` gives llama.cpp's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerParams {
    /// Softmax temperature; `<= 0` means greedy (argmax). Default 0.8.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; `<= 0` disables. Default 40.
    pub top_k: i32,
    /// Keep the smallest set of tokens whose probability sums to `top_p`;
    /// `>= 1` disables. Default 0.95.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one;
    /// `<= 0` disables. Default 0.05.
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens by
    /// this; `1.0` disables. Default 1.0.
    pub repeat_penalty: f32,
    /// How many recent tokens the repetition penalty looks at; 0 disables,
    /// -1 means the whole context. Default 64.
    pub repeat_last_n: i32,
    /// Seed of the random generator; `None` picks one from the clock.
    pub seed: Option<u64>,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: None,
        }
    }
}

impl SamplerParams {
    /// Greedy decoding: always the most likely token, no penalty.
    pub fn greedy() -> Self {
        SamplerParams {
            temperature: 0.0,
            ..SamplerParams::default()
        }
    }

    /// Checks that every value is in range, naming the first one that is not.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &'static str, value: String| Err(SamplerError::OutOfRange { what, value });
        if !self.temperature.is_finite() {
            return bad("temperature", self.temperature.to_string());
        }
        if !(self.top_p.is_finite() && self.top_p >= 0.0) {
            return bad("top-p (must be >= 0)", self.top_p.to_string());
        }
        if !(self.min_p.is_finite() && self.min_p <= 1.0) {
            return bad("min-p (must be <= 1)", self.min_p.to_string());
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(
                "repeat-penalty (must be > 0)",
                self.repeat_penalty.to_string(),
            );
        }
        if self.repeat_last_n < -1 {
            return bad(
                "repeat-last-n (must be >= -1)",
                self.repeat_last_n.to_string(),
            );
        }
        Ok(())
    }
}

/// A small, fast, seedable generator (xoshiro256** seeded by splitmix64).
/// Reproducible across platforms; not cryptographic.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform number in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// One candidate token during sampling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// Token id.
    pub id: u32,
    /// Its (possibly modified) logit.
    pub logit: f32,
    /// Its probability, valid after a softmax step.
    pub p: f32,
}

/// A stateful sampler: the settings, the random generator and the window of
/// recent tokens for the repetition penalty.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplerParams,
    seed: u64,
    rng: Rng,
    recent: VecDeque<u32>,
    candidates: Vec<Candidate>,
}

impl Sampler {
    /// A sampler with the given settings (checked).
    pub fn new(params: SamplerParams) -> Result<Sampler> {
        params.validate()?;
        let seed = params.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5eed)
        });
        Ok(Sampler {
            params,
            seed,
            rng: Rng::new(seed),
            recent: VecDeque::new(),
            candidates: Vec::new(),
        })
    }

    /// A greedy sampler (argmax).
    pub fn greedy() -> Sampler {
        Sampler {
            params: SamplerParams::greedy(),
            seed: 0,
            rng: Rng::new(0),
            recent: VecDeque::new(),
            candidates: Vec::new(),
        }
    }

    /// The settings.
    pub fn params(&self) -> &SamplerParams {
        &self.params
    }

    /// The seed in use (the chosen one when none was given).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether this sampler always picks the most likely token.
    pub fn is_greedy(&self) -> bool {
        self.params.temperature <= 0.0
    }

    /// The size of the repetition window, given the context size
    /// (`repeat_last_n == -1` means the whole context).
    fn window(&self, n_ctx: usize) -> usize {
        match self.params.repeat_last_n {
            -1 => n_ctx,
            n => n.max(0) as usize,
        }
    }

    /// Records a token as seen (prompt or generated) for the repetition penalty.
    pub fn accept(&mut self, token: u32) {
        let window = self.window(usize::MAX);
        if window == 0 {
            return;
        }
        if self.recent.len() == window {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
    }

    /// Replaces the repetition window with the tail of `history`.
    pub fn set_history(&mut self, history: &[u32]) {
        self.recent.clear();
        let window = self.window(history.len());
        let start = history.len().saturating_sub(window);
        for &t in &history[start..] {
            self.accept(t);
        }
    }

    /// Forgets the recent tokens and restarts the random sequence from the seed.
    pub fn reset(&mut self) {
        self.recent.clear();
        self.rng = Rng::new(self.seed);
    }

    /// Picks the next token from a row of logits (one per vocabulary entry).
    /// Does not record it: call [`Sampler::accept`] with the token kept.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(SamplerError::EmptyLogits);
        }
        if logits.len() > u32::MAX as usize {
            return Err(SamplerError::TooManyLogits(logits.len()));
        }
        let mut cands = std::mem::take(&mut self.candidates);
        cands.clear();
        cands.extend(logits.iter().enumerate().map(|(i, &logit)| Candidate {
            id: i as u32,
            logit,
            p: 0.0,
        }));
        self.apply_penalty(&mut cands);
        let token = if self.is_greedy() {
            argmax(&cands)
        } else {
            top_k(&mut cands, self.params.top_k);
            top_p(&mut cands, self.params.top_p);
            min_p(&mut cands, self.params.min_p);
            temperature(&mut cands, self.params.temperature);
            draw(&mut cands, &mut self.rng)
        };
        self.candidates = cands;
        token.ok_or(SamplerError::NoCandidate)
    }

    /// llama.cpp's repetition penalty: each distinct recent token once.
    fn apply_penalty(&self, cands: &mut [Candidate]) {
        let penalty = self.params.repeat_penalty;
        if penalty == 1.0 || self.recent.is_empty() {
            return;
        }
        let mut seen: Vec<u32> = self.recent.iter().copied().collect();
        seen.sort_unstable();
        seen.dedup();
        for id in seen {
            if let Some(c) = cands.get_mut(id as usize) {
                if c.logit <= 0.0 {
                    c.logit *= penalty;
                } else {
                    c.logit /= penalty;
                }
            }
        }
    }
}

/// The first candidate with the largest logit (NaN never wins).
fn argmax(cands: &[Candidate]) -> Option<u32> {
    let mut best: Option<&Candidate> = None;
    for c in cands {
        if c.logit.is_nan() {
            continue;
        }
        match best {
            Some(b) if c.logit <= b.logit => {}
            _ => best = Some(c),
        }
    }
    best.map(|c| c.id)
}

fn sort_descending(cands: &mut [Candidate]) {
    cands.sort_by(|a, b| b.logit.total_cmp(&a.logit));
}

/// Softmax over the candidates' logits into `p` (sum in f64).
fn softmax(cands: &mut [Candidate]) {
    let max = cands
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for c in cands.iter_mut() {
        c.p = (c.logit - max).exp();
        sum += c.p as f64;
    }
    for c in cands.iter_mut() {
        c.p = (c.p as f64 / sum) as f32;
    }
}

/// Keeps the `k` largest logits, sorted descending. `k <= 0` keeps all.
fn top_k(cands: &mut Vec<Candidate>, k: i32) {
    if k <= 0 {
        return;
    }
    let k = (k as usize).min(cands.len());
    if k < cands.len() {
        cands.select_nth_unstable_by(k - 1, |a, b| b.logit.total_cmp(&a.logit));
        cands.truncate(k);
    }
    sort_descending(cands);
}

/// Nucleus filter: the shortest prefix (by probability) reaching `p`.
fn top_p(cands: &mut Vec<Candidate>, p: f32) {
    if p >= 1.0 {
        return;
    }
    sort_descending(cands);
    softmax(cands);
    let mut cum = 0.0f32;
    let mut keep = cands.len();
    for (i, c) in cands.iter().enumerate() {
        cum += c.p;
        if cum >= p {
            keep = i + 1;
            break;
        }
    }
    cands.truncate(keep.max(1));
}

/// Drops candidates whose probability is below `p` times the best one's.
fn min_p(cands: &mut Vec<Candidate>, p: f32) {
    if p <= 0.0 || cands.is_empty() {
        return;
    }
    let max = cands
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max);
    let threshold = max + p.ln();
    let kept: Vec<Candidate> = cands
        .iter()
        .copied()
        .filter(|c| c.logit >= threshold)
        .collect();
    if !kept.is_empty() {
        *cands = kept;
    }
}

fn temperature(cands: &mut [Candidate], t: f32) {
    for c in cands.iter_mut() {
        c.logit /= t;
    }
}

/// Draws one candidate in proportion to its softmax probability.
fn draw(cands: &mut [Candidate], rng: &mut Rng) -> Option<u32> {
    if cands.is_empty() {
        return None;
    }
    softmax(cands);
    let u = rng.next_f64();
    let mut cum = 0.0f64;
    for c in cands.iter() {
        cum += c.p as f64;
        if u < cum {
            return Some(c.id);
        }
    }
    // Rounding left the sum a hair below 1: the last candidate with mass.
    cands.iter().rev().find(|c| c.p > 0.0).map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(logits: &[f32]) -> Vec<Candidate> {
        logits
            .iter()
            .enumerate()
            .map(|(i, &logit)| Candidate {
                id: i as u32,
                logit,
                p: 0.0,
            })
            .collect()
    }

    fn ids(c: &[Candidate]) -> Vec<u32> {
        c.iter().map(|c| c.id).collect()
    }

    #[test]
    fn defaults_match_llama_cpp() {
        let p = SamplerParams::default();
        assert_eq!(p.temperature, 0.8);
        assert_eq!(p.top_k, 40);
        assert_eq!(p.top_p, 0.95);
        assert_eq!(p.min_p, 0.05);
        assert_eq!(p.repeat_penalty, 1.0);
        assert_eq!(p.repeat_last_n, 64);
    }

    #[test]
    fn greedy_picks_first_maximum() {
        let mut s = Sampler::greedy();
        assert_eq!(s.sample(&[0.0, 3.0, 1.0, 3.0]).unwrap(), 1);
        assert_eq!(s.sample(&[f32::NAN, -1.0, -2.0]).unwrap(), 1);
        let mut s = Sampler::new(SamplerParams {
            temperature: 0.0,
            seed: Some(1),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.sample(&[5.0, 1.0, 7.0]).unwrap(), 2);
    }

    #[test]
    fn top_k_keeps_k_largest_sorted() {
        let mut c = cands(&[0.1, 0.5, 0.3, 0.9, 0.2]);
        top_k(&mut c, 3);
        assert_eq!(ids(&c), vec![3, 1, 2]);
        let mut c = cands(&[0.1, 0.5]);
        top_k(&mut c, 0);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn top_p_stops_at_cumulative_mass() {
        // probabilities 0.5, 0.25, 0.125, 0.125 (log-space)
        let l = [0.5f32.ln(), 0.25f32.ln(), 0.125f32.ln(), 0.125f32.ln()];
        let mut c = cands(&l);
        top_p(&mut c, 0.7);
        assert_eq!(ids(&c), vec![0, 1]);
        let mut c = cands(&l);
        top_p(&mut c, 0.5);
        assert_eq!(ids(&c), vec![0]);
        let mut c = cands(&l);
        top_p(&mut c, 1.0);
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn min_p_relative_threshold() {
        let l = [0.5f32.ln(), 0.25f32.ln(), 0.02f32.ln()];
        let mut c = cands(&l);
        min_p(&mut c, 0.1); // keep p >= 0.05
        assert_eq!(ids(&c), vec![0, 1]);
        let mut c = cands(&l);
        min_p(&mut c, 0.6); // keep p >= 0.3
        assert_eq!(ids(&c), vec![0]);
    }

    #[test]
    fn repeat_penalty_over_window() {
        let mut s = Sampler::new(SamplerParams {
            temperature: 0.0,
            repeat_penalty: 2.0,
            repeat_last_n: 2,
            seed: Some(3),
            ..Default::default()
        })
        .unwrap();
        // token 0 has the best logit; once seen it is halved below token 1.
        let logits = [4.0, 3.0, -1.0];
        assert_eq!(s.sample(&logits).unwrap(), 0);
        s.accept(0);
        assert_eq!(s.sample(&logits).unwrap(), 1);
        // window of 2: after two more tokens, 0 leaves the window
        s.accept(2);
        s.accept(2);
        assert_eq!(s.sample(&logits).unwrap(), 0);
        // a negative logit is multiplied (more negative)
        let mut c = cands(&[-1.0, 0.5]);
        s.apply_penalty(&mut c);
        assert_eq!(c[0].logit, -1.0);
        s.set_history(&[0, 1]);
        let mut c = cands(&[-1.0, 0.5]);
        s.apply_penalty(&mut c);
        assert_eq!(c[0].logit, -2.0);
        assert_eq!(c[1].logit, 0.25);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_follows_probabilities() {
        let params = SamplerParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(42),
            ..Default::default()
        };
        let logits = [0.6f32.ln(), 0.3f32.ln(), 0.1f32.ln()];
        let mut a = Sampler::new(params.clone()).unwrap();
        let mut b = Sampler::new(params).unwrap();
        let mut counts = [0usize; 3];
        for _ in 0..20000 {
            let x = a.sample(&logits).unwrap();
            assert_eq!(x, b.sample(&logits).unwrap());
            counts[x as usize] += 1;
        }
        let f: Vec<f64> = counts.iter().map(|&c| c as f64 / 20000.0).collect();
        assert!((f[0] - 0.6).abs() < 0.02, "{f:?}");
        assert!((f[1] - 0.3).abs() < 0.02, "{f:?}");
        assert!((f[2] - 0.1).abs() < 0.02, "{f:?}");
        // reset replays the same sequence
        a.reset();
        b.reset();
        let xs: Vec<u32> = (0..50).map(|_| a.sample(&logits).unwrap()).collect();
        let ys: Vec<u32> = (0..50).map(|_| b.sample(&logits).unwrap()).collect();
        assert_eq!(xs, ys);
    }

    #[test]
    fn default_chain_never_picks_filtered_tokens() {
        // token 3 is far below min-p; tokens beyond top-k 2 are cut.
        let params = SamplerParams {
            top_k: 2,
            seed: Some(7),
            ..Default::default()
        };
        let mut s = Sampler::new(params).unwrap();
        let logits = [2.0, 1.9, 1.8, -20.0];
        for _ in 0..2000 {
            let t = s.sample(&logits).unwrap();
            assert!(t == 0 || t == 1, "picked {t}");
        }
    }

    #[test]
    fn low_temperature_sharpens() {
        let mut s = Sampler::new(SamplerParams {
            temperature: 0.01,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(9),
            ..Default::default()
        })
        .unwrap();
        for _ in 0..500 {
            assert_eq!(s.sample(&[1.0, 1.5, 0.5]).unwrap(), 1);
        }
    }

    #[test]
    fn bad_params_are_errors() {
        for p in [
            SamplerParams {
                top_p: -0.1,
                ..Default::default()
            },
            SamplerParams {
                repeat_penalty: 0.0,
                ..Default::default()
            },
            SamplerParams {
                repeat_last_n: -2,
                ..Default::default()
            },
            SamplerParams {
                temperature: f32::NAN,
                ..Default::default()
            },
        ] {
            assert!(Sampler::new(p).is_err());
        }
        assert!(Sampler::greedy().sample(&[]).is_err());
    }
}
