//! Counters for `GET /metrics`, in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Server-wide counters, updated by the handlers and the engine thread.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub requests_failed: AtomicU64,
    pub requests_rejected_busy: AtomicU64,
    pub requests_cancelled: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub prompt_tokens_cached: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub prompt_micros: AtomicU64,
    pub generation_micros: AtomicU64,
    pub queue_depth: AtomicU64,
    pub slots_busy: AtomicU64,
    /// Decode steps run (each one batch of every generating slot).
    pub decode_batches: AtomicU64,
    /// Sequences in the last decode step, and the most in one.
    pub batch_size: AtomicU64,
    pub batch_size_max: AtomicU64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a decode step of `rows` sequences.
    pub fn record_decode_batch(&self, rows: u64) {
        Metrics::add(&self.decode_batches, 1);
        self.batch_size.store(rows, Ordering::Relaxed);
        self.batch_size_max.fetch_max(rows, Ordering::Relaxed);
    }

    /// The exposition text; `slots` is the number of slots.
    pub fn render(&self, slots: usize) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let rate = |n: u64, micros: u64| {
            if micros == 0 {
                0.0
            } else {
                n as f64 / (micros as f64 * 1e-6)
            }
        };
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "# HELP rkinfer_{name} {help}\n# TYPE rkinfer_{name} {kind}\nrkinfer_{name} {value}\n"
            );
        };
        let counters = [
            (
                "requests_total",
                "Generation requests received.",
                &self.requests,
            ),
            (
                "requests_failed_total",
                "Generation requests answered with an error.",
                &self.requests_failed,
            ),
            (
                "requests_rejected_busy_total",
                "Requests refused because the queue was full.",
                &self.requests_rejected_busy,
            ),
            (
                "requests_cancelled_total",
                "Generations stopped because the client went away.",
                &self.requests_cancelled,
            ),
            (
                "prompt_tokens_total",
                "Prompt tokens evaluated.",
                &self.prompt_tokens,
            ),
            (
                "prompt_tokens_cached_total",
                "Prompt tokens reused from a slot's cache.",
                &self.prompt_tokens_cached,
            ),
            (
                "tokens_predicted_total",
                "Tokens generated.",
                &self.generated_tokens,
            ),
            (
                "decode_batches_total",
                "Decode steps, each one batch of every generating slot.",
                &self.decode_batches,
            ),
        ];
        for (name, help, c) in counters {
            metric(name, "counter", help, get(c).to_string());
        }
        metric(
            "prompt_seconds_total",
            "counter",
            "Time spent evaluating prompts.",
            format!("{}", get(&self.prompt_micros) as f64 * 1e-6),
        );
        metric(
            "tokens_predicted_seconds_total",
            "counter",
            "Time spent generating.",
            format!("{}", get(&self.generation_micros) as f64 * 1e-6),
        );
        metric(
            "prompt_tokens_per_second",
            "gauge",
            "Average prompt throughput.",
            format!(
                "{:.3}",
                rate(get(&self.prompt_tokens), get(&self.prompt_micros))
            ),
        );
        metric(
            "predicted_tokens_per_second",
            "gauge",
            "Average generation throughput.",
            format!(
                "{:.3}",
                rate(get(&self.generated_tokens), get(&self.generation_micros))
            ),
        );
        metric(
            "queue_depth",
            "gauge",
            "Requests waiting for a slot.",
            get(&self.queue_depth).to_string(),
        );
        metric(
            "slots_busy",
            "gauge",
            "Slots generating.",
            get(&self.slots_busy).to_string(),
        );
        metric("slots_total", "gauge", "Slots.", slots.to_string());
        metric(
            "batch_size",
            "gauge",
            "Sequences decoded in the last decode step.",
            get(&self.batch_size).to_string(),
        );
        metric(
            "batch_size_max",
            "gauge",
            "Most sequences decoded in one step.",
            get(&self.batch_size_max).to_string(),
        );
        out
    }
}
