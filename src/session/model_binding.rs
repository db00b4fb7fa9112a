//! The session API bound to the real [`Model`] and [`Tokenizer`].

use std::path::Path;

use super::{Detokenize, LogitsSource, Session, SessionOptions};
use crate::backend::DeviceOptions;
use crate::model::{LogitsMode, Model, ModelOptions, State, StateOptions};
use crate::tokenizer::Tokenizer;
use crate::Result;

/// A model with one evaluation state (its KV cache): the [`LogitsSource`]
/// a [`Session`] drives.
pub struct ModelContext<'m> {
    model: &'m Model,
    state: State,
}

impl<'m> ModelContext<'m> {
    /// A fresh context (empty KV cache) over `model`.
    pub fn new(model: &'m Model, opts: &StateOptions) -> Result<ModelContext<'m>> {
        Ok(ModelContext {
            model,
            state: model.new_state(opts)?,
        })
    }

    /// The model.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// The evaluation state.
    pub fn state(&self) -> &State {
        &self.state
    }
}

impl LogitsSource for ModelContext<'_> {
    fn n_vocab(&self) -> usize {
        self.model.n_vocab()
    }
    fn n_ctx(&self) -> usize {
        self.state.n_ctx()
    }
    fn n_past(&self) -> usize {
        self.state.n_past()
    }
    fn eval(&mut self, tokens: &[u32], all: bool) -> Result<&[f32]> {
        let mode = if all {
            LogitsMode::All
        } else {
            LogitsMode::Last
        };
        Ok(self.model.forward(&mut self.state, tokens, mode)?)
    }
    fn truncate(&mut self, n: usize) {
        // A recurrent model may keep less (nothing): the session evaluates
        // again whatever lies between `n_past` and the tokens it keeps.
        self.state.truncate(n);
    }
}

impl Detokenize for Tokenizer {
    /// The token's bytes; control tokens render as nothing (llama.cpp's
    /// default for printed output).
    fn piece(&self, id: u32) -> Vec<u8> {
        self.token_to_piece_special(id, false).to_vec()
    }
}

/// Options of a model load: threads and where the matmuls run.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Threads and core pinning.
    pub model: ModelOptions,
    /// The device (cpu, npu, npu-sim) and its settings.
    pub device: DeviceOptions,
    /// Blocks whose matmuls go to the NPU (llama.cpp's `-ngl`; None: all).
    pub npu_layers: Option<usize>,
    /// Which matmuls go to the NPU (`--npu-min-batch`; default: the
    /// device's).
    pub npu_placement: crate::backend::NpuPlacement,
}

/// Options of [`Llm::load`].
pub type LlmOptions = LoadOptions;

/// Loads the model at `path` onto the device `opts` names: the NPU backend
/// (when asked and present) before the CPU.
pub fn load_model(path: &Path, opts: &LoadOptions) -> Result<Model> {
    let backends = crate::backend::device::backends_with_placement(
        opts.device.device,
        &opts.device.npu,
        path,
        opts.npu_layers,
        opts.npu_placement,
    )?;
    Ok(Model::load_with_backends(path, &opts.model, backends)?)
}

/// A loaded model and its tokenizer: the simplest way in.
pub struct Llm {
    model: Model,
    tokenizer: Tokenizer,
}

impl Llm {
    /// Loads a GGUF model and the tokenizer in its metadata.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Llm> {
        let model = load_model(path, opts)?;
        let tokenizer = Tokenizer::from_gguf(model.gguf())?;
        Ok(Llm { model, tokenizer })
    }

    /// Wraps an already loaded model and tokenizer.
    pub fn from_parts(model: Model, tokenizer: Tokenizer) -> Llm {
        Llm { model, tokenizer }
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// A new conversation with its own KV cache (`opts.n_ctx == 0`: the
    /// model's training context). End-of-generation tokens come from the
    /// tokenizer.
    pub fn session(&self, opts: &StateOptions) -> Result<Session<ModelContext<'_>>> {
        self.session_with(opts, SessionOptions::default())
    }

    /// Like [`Llm::session`] with explicit session options (batch size).
    pub fn session_with(
        &self,
        opts: &StateOptions,
        session_opts: SessionOptions,
    ) -> Result<Session<ModelContext<'_>>> {
        let ctx = ModelContext::new(&self.model, opts)?;
        let mut s = Session::new(ctx, session_opts)?;
        s.set_eog_tokens(self.tokenizer.eog_tokens().collect());
        Ok(s)
    }
}

impl<L: LogitsSource> Session<L> {
    /// Tokenizes `text` (special tokens such as `<|im_start|>` parsed; BOS
    /// added per the model when `add_special` and the session is empty) and
    /// feeds it. Returns the new token ids.
    pub fn feed_text(
        &mut self,
        tokenizer: &Tokenizer,
        text: &str,
        add_special: bool,
    ) -> Result<Vec<u32>> {
        let add = add_special && self.tokens().is_empty();
        let ids = tokenizer.encode(text, add, true)?;
        self.feed_tokens(&ids)?;
        Ok(ids)
    }
}
