//! The inference thread: `parallel` slots, each with its own KV cache,
//! share one model; requests wait in a bounded queue for a free slot.
//!
//! One thread runs the slots in steps, so concurrent requests progress
//! together and the async runtime never waits on a forward pass. Each step
//! is one decode batch and a round of prompt chunks: every slot past its
//! prompt samples its next token (its own sampler, penalties, grammar) and
//! those tokens are evaluated together by [`crate::model::Model::decode_batch`]
//! (continuous batching: one pass over the weights for all of them, slots
//! joining and leaving between steps); then slots still reading a prompt
//! evaluate chunks of it in turn, one batch size of tokens per step, so a
//! long prompt delays the streams by one chunk at most. A request's events
//! go back on a channel; when the client goes away the channel closes and
//! the slot is freed at the next step.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::error::ApiError;
use super::grammar::JsonConstraint;
use super::metrics::Metrics;
use crate::model::{DecodeBatch, LogitsMode, State, StateOptions};
use crate::sampler::{Sampler, SamplerParams};
use crate::session::{Detokenize, Llm, StopMatcher, Utf8Stream};

/// How one request generates.
#[derive(Clone, Debug)]
pub struct GenParams {
    pub sampler: SamplerParams,
    /// Tokens to generate at most (at least 1).
    pub max_tokens: usize,
    /// Text that ends the reply (not sent).
    pub stop: Vec<String>,
    /// Added to the logits of these tokens before sampling.
    pub logit_bias: Vec<(u32, f32)>,
    /// OpenAI's penalties on tokens already generated.
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Reuse the longest prefix of the prompt found in a slot's cache.
    pub cache_prompt: bool,
    /// Constrain the output to JSON (`response_format`).
    pub json: Option<JsonConstraint>,
}

/// A request for the engine.
pub struct Job {
    pub prompt: Vec<u32>,
    pub params: GenParams,
    pub events: UnboundedSender<Event>,
}

/// What the engine tells a request's handler.
#[derive(Debug)]
pub enum Event {
    /// More text of the reply.
    Text(String),
    /// The reply is complete.
    Done(Finish),
    /// Generation failed or was stopped (shutdown); the text sent so far
    /// stands.
    Failed(ApiError),
}

/// Why a reply ended, OpenAI's way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// End of turn or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// The end of a reply with its token counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finish {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens found in the slot's cache (not evaluated again).
    pub cached_tokens: usize,
    pub completion_tokens: usize,
}

/// Sizes of the engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Requests generated at once.
    pub parallel: usize,
    /// Requests that may wait for a slot; more are refused with 503.
    pub queue: usize,
    /// Context (and cache types) of each slot.
    pub state: StateOptions,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Set by [`Engine::shutdown`]: when running generations are cancelled.
    stop_at: Option<Instant>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic elsewhere must not take the queue down with it.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle to the inference thread.
pub struct Engine {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    n_ctx: usize,
    parallel: usize,
}

impl Engine {
    /// Allocates the slots' caches and starts the thread.
    pub fn start(
        llm: Arc<Llm>,
        opts: &EngineOptions,
        metrics: Arc<Metrics>,
    ) -> crate::Result<Engine> {
        let parallel = opts.parallel.max(1);
        let mut slots = Vec::with_capacity(parallel);
        for _ in 0..parallel {
            slots.push(Slot {
                state: llm.model().new_state(&opts.state)?,
                n_batch: opts.state.n_batch.max(1),
                cached: Vec::new(),
                logits: Vec::new(),
                run: None,
            });
        }
        let n_ctx = slots[0].state.n_ctx();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                stop_at: None,
            }),
            wake: Condvar::new(),
            capacity: opts.queue,
            metrics,
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("rkinfer-engine".into())
            .spawn(move || run(&llm, slots, &thread_shared))
            .map_err(|e| {
                crate::Error::InvalidArgument(format!("cannot start the inference thread: {e}"))
            })?;
        Ok(Engine {
            shared,
            thread: Mutex::new(Some(thread)),
            n_ctx,
            parallel,
        })
    }

    /// Each slot's context size.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Number of slots.
    pub fn parallel(&self) -> usize {
        self.parallel
    }

    /// Queues a job; 503 when the queue is full or the server stops.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        let mut q = self.shared.lock();
        if q.stop_at.is_some() {
            return Err(ApiError::unavailable("the server is shutting down", None));
        }
        if q.jobs.len() >= self.shared.capacity {
            Metrics::add(&self.shared.metrics.requests_rejected_busy, 1);
            return Err(ApiError::unavailable(
                format!(
                    "all {} slots are busy and {} requests are waiting; retry later",
                    self.parallel,
                    q.jobs.len()
                ),
                Some(1),
            ));
        }
        q.jobs.push_back(job);
        self.shared
            .metrics
            .queue_depth
            .store(q.jobs.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Stops taking jobs, fails the queued ones, and cancels running
    /// generations that have not finished within `grace`.
    pub fn shutdown(&self, grace: Duration) {
        let mut q = self.shared.lock();
        let at = Instant::now() + grace;
        q.stop_at = Some(q.stop_at.map_or(at, |t| t.min(at)));
        self.shared.wake.notify_one();
    }

    /// Waits for the thread to end (after [`shutdown`](Self::shutdown)).
    pub fn join(&self) {
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            // A panic in the thread has already been reported by the hook.
            let _ = h.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
        self.join();
    }
}

/// One sequence's cache and, while it serves a request, the request.
struct Slot {
    state: State,
    /// The state's batch size: the prompt is fed in chunks of it.
    n_batch: usize,
    /// The tokens whose keys and values `state` holds.
    cached: Vec<u32>,
    /// Logits after `cached` (valid while a request decodes).
    logits: Vec<f32>,
    run: Option<Running>,
}

/// A request in a slot.
struct Running {
    prompt: Vec<u32>,
    params: GenParams,
    events: UnboundedSender<Event>,
    /// Prompt tokens evaluated (or reused) so far.
    fed: usize,
    cached_tokens: usize,
    sampler: Sampler,
    generated: usize,
    /// Occurrences of each generated token (presence/frequency penalties).
    counts: HashMap<u32, u32>,
    utf8: Utf8Stream,
    stops: StopMatcher,
    scratch: Vec<f32>,
}

fn run(llm: &Llm, mut slots: Vec<Slot>, shared: &Shared) {
    let metrics = &shared.metrics;
    let eog: Vec<u32> = llm.tokenizer().eog_tokens().collect();
    let model = llm.model();
    if slots.len() > 1 && !model.supports_decode_batch() {
        // Worth seeing: the slots still work, but without the batch's speed.
        log::warn!(
            "this model cannot decode several sequences in one batch: \
             the {} slots decode one after the other",
            slots.len()
        );
    }
    let mut batch = DecodeBatch::new();
    // Where the next round of prompt chunks starts, so that every waiting
    // prompt gets its turn.
    let mut next_prefill = 0;
    loop {
        {
            let mut q = shared.lock();
            loop {
                if let Some(at) = q.stop_at {
                    for job in q.jobs.drain(..) {
                        let _ = job.events.send(Event::Failed(ApiError::unavailable(
                            "the server is shutting down",
                            None,
                        )));
                    }
                    if Instant::now() >= at {
                        for slot in slots.iter_mut() {
                            if let Some(r) = slot.run.take() {
                                let _ = r.events.send(Event::Failed(ApiError::unavailable(
                                    "the server is shutting down; generation stopped",
                                    None,
                                )));
                            }
                        }
                    }
                }
                let Some(free) = pick_slot(&slots, q.jobs.front()) else {
                    break;
                };
                let Some(job) = q.jobs.pop_front() else { break };
                slots[free].start(job, model.n_vocab());
            }
            let busy = slots.iter().filter(|s| s.run.is_some()).count();
            metrics
                .queue_depth
                .store(q.jobs.len() as u64, std::sync::atomic::Ordering::Relaxed);
            metrics
                .slots_busy
                .store(busy as u64, std::sync::atomic::Ordering::Relaxed);
            if busy == 0 {
                if q.stop_at.is_some() {
                    return;
                }
                // Woken by submit or shutdown.
                drop(shared.wake.wait(q));
                continue;
            }
        }
        for slot in slots.iter_mut() {
            slot.drop_if_abandoned(metrics);
        }
        decode_step(llm, &mut slots, &mut batch, &eog, metrics);
        next_prefill = prefill_round(llm, &mut slots, next_prefill, metrics);
    }
}

/// One token for every slot past its prompt: each samples its next token
/// from its own logits, then the tokens that continue a reply are
/// evaluated together, one batch of all those slots.
fn decode_step(
    llm: &Llm,
    slots: &mut [Slot],
    batch: &mut DecodeBatch,
    eog: &[u32],
    metrics: &Metrics,
) {
    let start = Instant::now();
    let mut rows: Vec<(usize, u32)> = Vec::new();
    for (i, slot) in slots.iter_mut().enumerate() {
        if !slot.is_decoding() {
            continue;
        }
        match slot.sample(llm, eog, metrics) {
            Ok(Ok(token)) => rows.push((i, token)),
            Ok(Err(reason)) => slot.end(Ok(reason), metrics),
            Err(e) => slot.end(Err(e), metrics),
        }
    }
    if rows.is_empty() {
        return;
    }
    let tokens: Vec<u32> = rows.iter().map(|&(_, t)| t).collect();
    let mut states: Vec<&mut State> = slots
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| rows.iter().any(|(r, _)| r == i))
        .map(|(_, s)| &mut s.state)
        .collect();
    let n_vocab = llm.model().n_vocab();
    match llm.model().decode_batch(batch, &mut states, &tokens) {
        Ok(logits) => {
            for (&(i, token), row) in rows.iter().zip(logits.chunks_exact(n_vocab)) {
                slots[i].evaluated(token, row);
            }
        }
        Err(e) => {
            let e = ApiError::internal(format!("evaluating a generated token failed: {e}"));
            for &(i, _) in &rows {
                slots[i].end(Err(e.clone()), metrics);
            }
        }
    }
    let n = rows.len() as u64;
    metrics.record_decode_batch(n);
    Metrics::add(
        &metrics.generation_micros,
        start.elapsed().as_micros() as u64,
    );
}

/// Prompt chunks of slots still reading their prompt, in turn from slot
/// `first`, until one batch size of tokens is evaluated (so that a long
/// prompt delays the streams by one chunk per step at most). Returns where
/// the next round starts.
fn prefill_round(llm: &Llm, slots: &mut [Slot], first: usize, metrics: &Metrics) -> usize {
    let n = slots.len();
    let mut budget = slots.first().map_or(0, |s| s.n_batch);
    let mut next = first;
    for k in 0..n {
        let i = (first + k) % n;
        if budget == 0 {
            break;
        }
        if !slots[i].is_prefilling() {
            continue;
        }
        match slots[i].prefill(llm, metrics) {
            Ok(tokens) => budget = budget.saturating_sub(tokens),
            Err(e) => slots[i].end(Err(e), metrics),
        }
        next = (i + 1) % n;
    }
    next
}

/// The free slot for `job`: the one whose cache shares the longest prefix
/// with its prompt (the emptiest when it does not reuse caches).
fn pick_slot(slots: &[Slot], job: Option<&Job>) -> Option<usize> {
    let job = job?;
    let free = slots.iter().enumerate().filter(|(_, s)| s.run.is_none());
    if job.params.cache_prompt {
        free.max_by_key(|(_, s)| common_prefix(&s.cached, &job.prompt))
            .map(|(i, _)| i)
    } else {
        free.min_by_key(|(_, s)| s.cached.len()).map(|(i, _)| i)
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Slot {
    fn start(&mut self, job: Job, n_vocab: usize) {
        let mut reuse = if job.params.cache_prompt {
            common_prefix(&self.cached, &job.prompt)
        } else {
            0
        };
        // The last prompt token is evaluated again for its logits.
        if reuse == job.prompt.len() {
            reuse = reuse.saturating_sub(1);
        }
        // A recurrent model cannot keep a strict prefix: it starts over.
        reuse = self.state.truncate(reuse);
        self.cached.truncate(reuse);
        let mut sampler = match Sampler::new(job.params.sampler.clone()) {
            Ok(s) => s,
            Err(e) => {
                let _ = job
                    .events
                    .send(Event::Failed(ApiError::bad_request(e.to_string())));
                return;
            }
        };
        sampler.set_history(&job.prompt);
        let stops = StopMatcher::new(&job.params.stop);
        self.run = Some(Running {
            prompt: job.prompt,
            params: job.params,
            events: job.events,
            fed: reuse,
            cached_tokens: reuse,
            sampler,
            generated: 0,
            counts: HashMap::new(),
            utf8: Utf8Stream::default(),
            stops,
            scratch: Vec::with_capacity(n_vocab),
        });
    }

    /// Frees the slot if its client went away.
    fn drop_if_abandoned(&mut self, metrics: &Metrics) {
        if self.run.as_ref().is_some_and(|r| r.events.is_closed()) {
            Metrics::add(&metrics.requests_cancelled, 1);
            self.run = None;
        }
    }

    /// Whether the running request still has prompt to evaluate.
    fn is_prefilling(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.fed < r.prompt.len())
    }

    /// Whether the running request is generating.
    fn is_decoding(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.fed >= r.prompt.len())
    }

    /// Ends the running request: complete (`Ok`) or failed.
    fn end(&mut self, outcome: Result<FinishReason, ApiError>, metrics: &Metrics) {
        let Some(run) = self.run.take() else { return };
        match outcome {
            Ok(reason) => {
                let finish = Finish {
                    reason,
                    prompt_tokens: run.prompt.len(),
                    cached_tokens: run.cached_tokens,
                    completion_tokens: run.generated,
                };
                let _ = run.events.send(Event::Done(finish));
            }
            Err(e) => {
                Metrics::add(&metrics.requests_failed, 1);
                let _ = run.events.send(Event::Failed(e));
                // Whatever the failed pass wrote is not trusted.
                let kept = self.state.truncate(self.cached.len());
                self.cached.truncate(kept);
            }
        }
    }

    /// The logits after `token`, which the slot's state has just evaluated.
    fn evaluated(&mut self, token: u32, logits: &[f32]) {
        self.logits.clear();
        self.logits.extend_from_slice(logits);
        self.cached.push(token);
    }

    /// Evaluates the next chunk of the prompt (chunks of the state's batch
    /// size, as one forward call would split them: same numbers).
    /// Returns the number of tokens evaluated.
    fn prefill(&mut self, llm: &Llm, metrics: &Metrics) -> Result<usize, ApiError> {
        let Some(run) = self.run.as_mut() else {
            return Ok(0);
        };
        let start = Instant::now();
        let end = (run.fed + self.n_batch).min(run.prompt.len());
        let chunk = &run.prompt[run.fed..end];
        let logits = llm
            .model()
            .forward(&mut self.state, chunk, LogitsMode::Last)
            .map_err(|e| ApiError::internal(format!("evaluating the prompt failed: {e}")))?;
        self.logits.clear();
        self.logits.extend_from_slice(logits);
        self.cached.extend_from_slice(chunk);
        Metrics::add(&metrics.prompt_tokens, chunk.len() as u64);
        if run.fed == run.cached_tokens {
            Metrics::add(&metrics.prompt_tokens_cached, run.cached_tokens as u64);
        }
        let n = chunk.len();
        run.fed = end;
        Metrics::add(&metrics.prompt_micros, start.elapsed().as_micros() as u64);
        Ok(n)
    }

    /// Samples the next token from the slot's logits (its own sampler,
    /// penalties and grammar) and sends its text. `Ok(Ok(token))`: the
    /// reply goes on, `token` is to be evaluated; `Ok(Err(reason))`: the
    /// reply ends here.
    fn sample(
        &mut self,
        llm: &Llm,
        eog: &[u32],
        metrics: &Metrics,
    ) -> Result<Result<u32, FinishReason>, ApiError> {
        let Some(run) = self.run.as_mut() else {
            return Err(ApiError::internal("sampling a slot with no request"));
        };
        let tokenizer = llm.tokenizer();
        run.scratch.clear();
        run.scratch.extend_from_slice(&self.logits);
        let logits = &mut run.scratch;
        for &(id, bias) in &run.params.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        let p = &run.params;
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&id, &n) in &run.counts {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * n as f32;
                }
            }
        }
        if let Some(json) = run.params.json.as_mut() {
            json.mask(logits, tokenizer, eog);
        }
        let token = run
            .sampler
            .sample(logits)
            .map_err(|e| ApiError::internal(format!("sampling failed: {e}")))?;
        let mut finish = None;
        if eog.contains(&token) {
            finish = Some(FinishReason::Stop);
        } else {
            run.sampler.accept(token);
            run.generated += 1;
            *run.counts.entry(token).or_insert(0) += 1;
            Metrics::add(&metrics.generated_tokens, 1);
            let piece = tokenizer.piece(token);
            if let Some(json) = run.params.json.as_mut() {
                json.accept(&piece);
                if json.is_complete() {
                    finish = Some(FinishReason::Stop);
                }
            }
            let text = run.utf8.push(&piece);
            let (out, hit) = run.stops.push(&text);
            send_text(&run.events, out);
            if hit.is_some() {
                return Ok(Err(FinishReason::Stop));
            }
            if finish.is_none() && run.generated >= run.params.max_tokens {
                finish = Some(FinishReason::Length);
            }
            if finish.is_none() && self.cached.len() >= self.state.n_ctx() {
                finish = Some(FinishReason::Length);
            }
        }
        if let Some(reason) = finish {
            // Release text held for an incomplete character or a possible
            // stop string.
            let rest = run.utf8.finish();
            let (mut out, hit) = run.stops.push(&rest);
            if hit.is_none() {
                out.push_str(&run.stops.finish());
            }
            send_text(&run.events, out);
            return Ok(Err(reason));
        }
        Ok(Ok(token))
    }
}

fn send_text(events: &UnboundedSender<Event>, text: String) {
    if !text.is_empty() {
        // A closed channel is noticed at the next step.
        let _ = events.send(Event::Text(text));
    }
}
