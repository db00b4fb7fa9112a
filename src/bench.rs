//! Throughput measurement as llama-bench does it: prompt processing (one
//! forward of P tokens from an empty cache) and text generation (N
//! single-token forwards from an empty cache), each repeated after a
//! warm-up, reported as mean and standard deviation of tokens per second.
//! Tokens are synthetic (no tokenizer) and no sampling happens, so only the
//! model's forward passes are timed.

use std::time::{Duration, Instant};

use crate::backend::MatmulWork;
use crate::model::{LogitsMode, Model, StateOptions};
use crate::Error;

/// One benchmark test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Test {
    /// Prompt processing: one batch of this many tokens.
    Prompt(usize),
    /// Text generation: this many single-token steps.
    Gen(usize),
}

impl Test {
    /// llama-bench's name: "pp512", "tg128".
    pub fn name(self) -> String {
        match self {
            Test::Prompt(n) => format!("pp{n}"),
            Test::Gen(n) => format!("tg{n}"),
        }
    }
    /// Tokens evaluated by one run.
    pub fn n_tokens(self) -> usize {
        match self {
            Test::Prompt(n) | Test::Gen(n) => n,
        }
    }
}

/// Timings of the repetitions of one test.
#[derive(Clone, Debug)]
pub struct Samples {
    pub test: Test,
    /// Wall time of each repetition (warm-up excluded).
    pub times: Vec<Duration>,
}

impl Samples {
    pub fn samples_ns(&self) -> Vec<u64> {
        self.times
            .iter()
            .map(|t| t.as_nanos().min(u64::MAX as u128) as u64)
            .collect()
    }
    /// Tokens per second of each repetition.
    pub fn samples_ts(&self) -> Vec<f64> {
        let n = self.test.n_tokens() as f64;
        self.times
            .iter()
            .map(|t| n / t.as_secs_f64().max(1e-12))
            .collect()
    }
    /// Mean and sample standard deviation (n - 1) of tokens per second, as
    /// llama-bench computes them over the per-run rates.
    pub fn ts_stats(&self) -> (f64, f64) {
        mean_stddev(&self.samples_ts())
    }
    /// Mean and sample standard deviation of the run times in nanoseconds.
    pub fn ns_stats(&self) -> (f64, f64) {
        let ns: Vec<f64> = self.samples_ns().iter().map(|&v| v as f64).collect();
        mean_stddev(&ns)
    }
}

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_stddev(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Deterministic pseudo-random token ids in `0..n_vocab` (llama-bench
/// feeds random tokens too: the content does not change the work done).
fn synthetic_tokens(n: usize, n_vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed ^ 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 33) % n_vocab.max(1) as u64) as u32
        })
        .collect()
}

/// Runs `test` `reps` times after one warm-up run (llama-bench warms up
/// with a prompt run for pp and a single token for tg) and returns the
/// timings. `progress` is told each finished repetition.
pub fn run_test(
    model: &Model,
    test: Test,
    reps: usize,
    progress: impl FnMut(usize, usize),
) -> crate::Result<Samples> {
    run_test_with_work(model, test, reps, progress).map(|(s, _)| s)
}

/// [`run_test`], also returning the matmul work of the timed repetitions
/// by the backend that did it (what ran where, failures included).
pub fn run_test_with_work(
    model: &Model,
    test: Test,
    reps: usize,
    mut progress: impl FnMut(usize, usize),
) -> crate::Result<(Samples, MatmulWork)> {
    let n = test.n_tokens();
    if n == 0 {
        return Err(Error::InvalidArgument(format!(
            "{}: a test needs at least one token",
            test.name()
        )));
    }
    if reps == 0 {
        return Err(Error::InvalidArgument(
            "0 repetitions: at least one is needed".into(),
        ));
    }
    let state_opts = StateOptions {
        n_ctx: n,
        ..StateOptions::default()
    };
    let mut state = model.new_state(&state_opts)?;
    let tokens = synthetic_tokens(n, model.n_vocab(), n as u64);
    let run_once = |state: &mut crate::model::State, count: usize| -> crate::Result<Duration> {
        state.clear();
        let start = Instant::now();
        match test {
            Test::Prompt(_) => {
                model.forward(state, &tokens[..count], LogitsMode::Last)?;
            }
            Test::Gen(_) => {
                for t in &tokens[..count] {
                    model.forward(state, std::slice::from_ref(t), LogitsMode::Last)?;
                }
            }
        }
        Ok(start.elapsed())
    };
    let warm = match test {
        Test::Prompt(_) => n,
        Test::Gen(_) => 1,
    };
    run_once(&mut state, warm)?;
    let before = state.matmul_work().clone();
    let mut times = Vec::with_capacity(reps);
    for r in 0..reps {
        times.push(run_once(&mut state, n)?);
        progress(r + 1, reps);
    }
    let work = state.matmul_work().since(&before);
    Ok((Samples { test, times }, work))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_follow_llama_bench() {
        let (m, s) = mean_stddev(&[2.0, 4.0, 6.0]);
        assert_eq!(m, 4.0);
        assert_eq!(s, 2.0);
        assert_eq!(mean_stddev(&[5.0]), (5.0, 0.0));
        assert_eq!(mean_stddev(&[]), (0.0, 0.0));
    }

    #[test]
    fn samples_convert_to_rates() {
        let s = Samples {
            test: Test::Gen(10),
            times: vec![Duration::from_millis(100), Duration::from_millis(200)],
        };
        let ts = s.samples_ts();
        assert!((ts[0] - 100.0).abs() < 1e-9 && (ts[1] - 50.0).abs() < 1e-9);
        assert_eq!(s.samples_ns(), vec![100_000_000, 200_000_000]);
        assert_eq!(Test::Prompt(512).name(), "pp512");
        assert_eq!(Test::Gen(128).name(), "tg128");
    }

    #[test]
    fn synthetic_tokens_stay_in_vocab() {
        let t = synthetic_tokens(1000, 49152, 7);
        assert_eq!(t.len(), 1000);
        assert!(t.iter().all(|&x| (x as usize) < 49152));
        assert!(t.iter().any(|&x| x != t[0]));
    }
}
