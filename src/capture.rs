//! The real activations each weight sees on a text, for accuracy studies
//! (`rkinfer quant-eval`): a model loaded with the backend layer's
//! [`ActivationCapture`] tap evaluates the text once.

use std::path::Path;

use crate::backend::capture::{ActivationCapture, CapturedMatmul};
use crate::model::{LogitsMode, Model, ModelOptions, StateOptions};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The result of [`capture_from_text`].
#[derive(Clone, Debug)]
pub struct TextCapture {
    /// The tokens evaluated (BOS first when the model adds one).
    pub tokens: Vec<u32>,
    pub matmuls: Vec<CapturedMatmul>,
}

/// Loads `model` for the CPU with the tap, tokenizes `text`, evaluates its
/// first `n_tokens` tokens in one batch (logits of every token, so the
/// output head sees every row too) and returns the input of every matmul.
pub fn capture_from_text(
    model: &Path,
    text: &str,
    n_tokens: usize,
    n_threads: usize,
) -> Result<TextCapture> {
    if n_tokens == 0 {
        return Err(Error::InvalidArgument(
            "activation capture: zero tokens requested".into(),
        ));
    }
    let capture = ActivationCapture::new();
    let opts = ModelOptions {
        n_threads,
        ..Default::default()
    };
    let m = Model::load_with_backends(model, &opts, vec![capture.backend()])?;
    let tok = Tokenizer::from_gguf(m.gguf())?;
    let mut tokens = tok.encode(text, true, false)?;
    if tokens.len() < n_tokens {
        return Err(Error::InvalidArgument(format!(
            "activation capture: the text has {} tokens, {n_tokens} requested",
            tokens.len()
        )));
    }
    tokens.truncate(n_tokens);
    let mut state = m.new_state(&StateOptions {
        n_ctx: n_tokens,
        n_batch: n_tokens,
        ..Default::default()
    })?;
    m.forward(&mut state, &tokens, LogitsMode::All)?;
    Ok(TextCapture {
        tokens,
        matmuls: capture.take(),
    })
}
