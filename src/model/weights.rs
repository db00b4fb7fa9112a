//! Binding GGUF tensors to the weights of each layer, checking names,
//! shapes and types.

use gguf::{GgmlType, GgufFile};

use super::hparams::{Arch, DeltaNetHParams, HParams, MoeParams};
use super::{ModelError, Result};
use crate::backend::cpu::MATMUL_TYPES;
use crate::backend::{Weight, WeightData};
use crate::graph::WeightId;

/// The query, key and value projections of a block.
#[derive(Debug, Clone)]
pub(super) enum Qkv {
    Split {
        wq: WeightId,
        wk: WeightId,
        wv: WeightId,
    },
    /// One matrix whose output rows are q, then k, then v (phi3).
    Fused(WeightId),
    /// No value projection: the keys' projection is also the values'
    /// (gemma4 without `attn_v`).
    KeyAsValue { wq: WeightId, wk: WeightId },
    /// Queries only: the layer attends over an earlier layer's cache
    /// (gemma4's shared-KV layers).
    QueryOnly { wq: WeightId },
}

/// The gate and up projections of a gated feed-forward block.
#[derive(Debug, Clone)]
pub(super) enum GateUp {
    Split {
        gate: WeightId,
        up: WeightId,
    },
    /// One matrix of 2 * n_ff rows: gate, then up (phi3).
    Fused(WeightId),
}

/// The feed-forward block of a layer.
#[derive(Debug, Clone)]
pub(super) enum Ffn {
    Dense {
        gate_up: GateUp,
        down: WeightId,
    },
    /// Experts: a router and, per expert, gate, up and down matrices
    /// (consecutive weight ids from each first one).
    Moe {
        params: MoeParams,
        gate_inp: WeightId,
        gate_exps: WeightId,
        up_exps: WeightId,
        down_exps: WeightId,
        /// Added to the probabilities to choose the experts (lfm2moe).
        exp_probs_b: Option<WeightId>,
    },
}

/// The self-attention of a block: projections, optional biases, q/k norms
/// and the norm after the output projection (gemma3).
#[derive(Debug, Clone)]
pub(super) struct Attention {
    pub(super) attn_norm: WeightId,
    pub(super) qkv: Qkv,
    pub(super) wo: WeightId,
    pub(super) bq: Option<WeightId>,
    pub(super) bk: Option<WeightId>,
    pub(super) bv: Option<WeightId>,
    pub(super) q_norm: Option<WeightId>,
    pub(super) k_norm: Option<WeightId>,
    pub(super) attn_post_norm: Option<WeightId>,
    /// The query projection also yields an output gate (qwen35): per head,
    /// `head_dim` query values then `head_dim` gate values; the attention
    /// output is multiplied by sigmoid(gate).
    pub(super) q_gate: bool,
}

/// The feed-forward half of a block with its norms.
#[derive(Debug, Clone)]
pub(super) struct FfnBlock {
    pub(super) ffn_norm: WeightId,
    pub(super) ffn: Ffn,
    pub(super) ffn_post_norm: Option<WeightId>,
}

/// A gated delta-net (linear attention) block of qwen35: q, k, v through
/// a short causal convolution, the gated delta rule, a norm gated by z.
#[derive(Debug, Clone)]
pub(super) struct DeltaNet {
    pub(super) shape: DeltaNetHParams,
    pub(super) attn_norm: WeightId,
    /// q, k and v, before the convolution.
    pub(super) wqkv: WeightId,
    /// z, the output gate.
    pub(super) wgate: WeightId,
    /// Convolution taps, f32: one row of `d_conv` per channel.
    pub(super) conv: WeightId,
    /// Added to alpha before the softplus (`ssm_dt.bias`).
    pub(super) dt_bias: WeightId,
    /// -exp(A_log): multiplies softplus(alpha + dt_bias) into g.
    pub(super) ssm_a: WeightId,
    pub(super) w_beta: WeightId,
    pub(super) w_alpha: WeightId,
    /// RMS norm of each value head's output.
    pub(super) ssm_norm: WeightId,
    pub(super) ssm_out: WeightId,
}

/// What mixes information across positions in a block. Hybrid
/// architectures have other kinds of layers beside attention.
#[derive(Debug, Clone)]
pub(super) enum Mixer {
    Attention(Attention),
    DeltaNet(DeltaNet),
    ShortConv(ShortConv),
}

/// lfm2's gated short convolution: `in_proj` makes gates b and c and the
/// input x; `out_proj(c * conv(b * x))`.
#[derive(Debug, Clone)]
pub(super) struct ShortConv {
    pub(super) norm: WeightId,
    pub(super) in_proj: WeightId,
    /// f32, `n_embd` rows of `shortconv_l_cache` taps.
    pub(super) conv: WeightId,
    pub(super) out_proj: WeightId,
}

/// Weights of one block: a mixer, then a feed-forward.
#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub(super) mixer: Mixer,
    pub(super) ffn: FfnBlock,
}

#[derive(Debug, Clone)]
pub(super) struct ModelWeights {
    pub(super) tok_embd: WeightId,
    pub(super) output_norm: WeightId,
    pub(super) output: WeightId,
    pub(super) rope_freqs: Option<WeightId>,
    pub(super) layers: Vec<Layer>,
    /// gemma4's per-layer token embeddings.
    pub(super) per_layer_inputs: Option<PerLayerInputs>,
    /// Per layer: a constant multiplying the layer's output (gemma4's
    /// `layer_output_scale`); empty when no layer has one.
    pub(super) layer_out_scale: Vec<Option<f32>>,
}

/// gemma4's per-layer inputs: a second embedding table giving each token
/// a slice per layer, mixed with a projection of the scaled embeddings,
/// and each layer's gate, projection and norm that add its slice to the
/// layer's output.
#[derive(Debug, Clone)]
pub(super) struct PerLayerInputs {
    /// `n_layer * n_embd_per_layer` columns per token.
    pub(super) tok_embd: WeightId,
    pub(super) model_proj: WeightId,
    pub(super) proj_norm: WeightId,
    pub(super) layers: Vec<PerLayerInput>,
}

/// One layer's part of [`PerLayerInputs`].
#[derive(Debug, Clone)]
pub(super) struct PerLayerInput {
    pub(super) inp_gate: WeightId,
    pub(super) proj: WeightId,
    pub(super) post_norm: WeightId,
}

/// Binds GGUF tensors to weight ids, checking names, shapes and types.
pub(super) struct Binder<'a> {
    pub(super) file: &'a GgufFile,
    pub(super) list: Vec<Weight>,
}

impl Binder<'_> {
    fn find(&self, name: &str, shape: &[usize]) -> Result<Option<usize>> {
        let Some(idx) = self.file.tensors().iter().position(|t| t.name == name) else {
            return Ok(None);
        };
        let t = &self.file.tensors()[idx];
        // Trailing dimensions of 1 are insignificant.
        let mut dims: Vec<u64> = t.dims.clone();
        while dims.len() > shape.len() && dims.last() == Some(&1) {
            dims.pop();
        }
        let want: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        if dims != want {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.dims.clone(),
            });
        }
        Ok(Some(idx))
    }

    /// A matrix used by matmul / get_rows, kept in the mmap.
    pub(super) fn matrix(&mut self, name: &str, cols: usize, rows: usize) -> Result<WeightId> {
        self.opt_matrix(name, cols, rows)?
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
            })
    }

    pub(super) fn opt_matrix(
        &mut self,
        name: &str,
        cols: usize,
        rows: usize,
    ) -> Result<Option<WeightId>> {
        let Some(idx) = self.find(name, &[cols, rows])? else {
            return Ok(None);
        };
        let ty = self.file.tensors()[idx].ggml_type;
        if !MATMUL_TYPES.contains(&ty) {
            return Err(ModelError::UnsupportedType {
                tensor: name.to_string(),
                ty: ty.name().to_string(),
            });
        }
        if !cols.is_multiple_of(ty.block_size()) {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: vec![cols, rows],
                found: self.file.tensors()[idx].dims.clone(),
            });
        }
        let len = self.file.tensor_data(&self.file.tensors()[idx]).len();
        Ok(Some(self.push(
            name,
            ty,
            cols,
            rows,
            WeightData::Mapped {
                tensor: idx,
                range: 0..len,
            },
        )))
    }

    /// A 3-D tensor of `n_expert` matrices of `rows` rows of `cols`, bound
    /// as one weight per expert (consecutive ids; the first is returned) so
    /// each is a matrix like any other to the backends.
    pub(super) fn experts(
        &mut self,
        name: &str,
        cols: usize,
        rows: usize,
        n_expert: usize,
    ) -> Result<WeightId> {
        let idx =
            self.find(name, &[cols, rows, n_expert])?
                .ok_or_else(|| ModelError::MissingTensor {
                    name: name.to_string(),
                })?;
        let t = &self.file.tensors()[idx];
        let ty = t.ggml_type;
        if !MATMUL_TYPES.contains(&ty) {
            return Err(ModelError::UnsupportedType {
                tensor: name.to_string(),
                ty: ty.name().to_string(),
            });
        }
        let row_bytes = ty.row_bytes(cols as u64).unwrap_or(0) as usize;
        if !cols.is_multiple_of(ty.block_size()) || row_bytes == 0 {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: vec![cols, rows, n_expert],
                found: t.dims.clone(),
            });
        }
        let matrix_bytes = row_bytes * rows;
        let first = WeightId(self.list.len() as u32);
        for e in 0..n_expert {
            self.push(
                &format!("{name}[{e}]"),
                ty,
                cols,
                rows,
                WeightData::Mapped {
                    tensor: idx,
                    range: e * matrix_bytes..(e + 1) * matrix_bytes,
                },
            );
        }
        Ok(first)
    }

    /// A small f32 matrix kept converted (convolution taps): `rows` rows of
    /// `cols`, read by the CPU alone.
    pub(super) fn f32_matrix(&mut self, name: &str, cols: usize, rows: usize) -> Result<WeightId> {
        let idx = self
            .find(name, &[cols, rows])?
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
            })?;
        let t = &self.file.tensors()[idx];
        if t.ggml_type != GgmlType::F32 {
            // ggml_ssm_conv reads f32 taps only.
            return Err(ModelError::UnsupportedType {
                tensor: name.to_string(),
                ty: t.ggml_type.name().to_string(),
            });
        }
        let v: Vec<f32> = self
            .file
            .tensor_data(t)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(self.push(name, GgmlType::F32, cols, rows, WeightData::F32(v)))
    }

    /// A vector (norm weight, bias) converted to f32.
    pub(super) fn vector(&mut self, name: &str, len: usize) -> Result<WeightId> {
        self.opt_vector(name, len)?
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
            })
    }

    pub(super) fn opt_vector(&mut self, name: &str, len: usize) -> Result<Option<WeightId>> {
        let Some(idx) = self.find(name, &[len])? else {
            return Ok(None);
        };
        let t = &self.file.tensors()[idx];
        let bytes = self.file.tensor_data(t);
        let mut v = vec![0f32; len];
        match t.ggml_type {
            GgmlType::F32 => {
                for (o, c) in v.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            GgmlType::F16 => {
                for (o, c) in v.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = kernels::f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
                }
            }
            other => {
                return Err(ModelError::UnsupportedType {
                    tensor: name.to_string(),
                    ty: other.name().to_string(),
                })
            }
        }
        let ty = t.ggml_type;
        Ok(Some(self.push(name, ty, len, 1, WeightData::F32(v))))
    }

    /// A one-element tensor read as a constant (gemma4's
    /// `layer_output_scale`).
    pub(super) fn opt_scalar(&mut self, name: &str) -> Result<Option<f32>> {
        let Some(id) = self.opt_vector(name, 1)? else {
            return Ok(None);
        };
        match &self.list[id.0 as usize].data {
            WeightData::F32(v) if v.len() == 1 => Ok(Some(v[0])),
            _ => Err(ModelError::MissingTensor {
                name: name.to_string(),
            }),
        }
    }

    fn push(
        &mut self,
        name: &str,
        ty: GgmlType,
        cols: usize,
        rows: usize,
        data: WeightData,
    ) -> WeightId {
        let id = WeightId(self.list.len() as u32);
        self.list.push(Weight {
            name: name.to_string(),
            ty,
            cols,
            rows,
            data,
            backend: usize::MAX,
        });
        id
    }
}

pub(super) fn bind_weights(file: &GgufFile, hp: &HParams) -> Result<(ModelWeights, Vec<Weight>)> {
    let mut b = Binder {
        file,
        list: Vec::new(),
    };
    let e = hp.n_embd;
    let tok_embd = b.matrix("token_embd.weight", e, hp.n_vocab)?;
    // lfm2's final norm carries another name in llama.cpp's converter.
    let output_norm = match hp.arch {
        Arch::Lfm2 | Arch::Lfm2Moe => b.vector("token_embd_norm.weight", e)?,
        _ => b.vector("output_norm.weight", e)?,
    };
    // Tied embeddings: no output.weight means the embedding table.
    let output = b
        .opt_matrix("output.weight", e, hp.n_vocab)?
        .unwrap_or(tok_embd);
    let rope_freqs = b.opt_vector("rope_freqs.weight", hp.n_rot / 2)?;
    // Phi-3's LongRoPE factors (the 128k models) need yarn-style scaling
    // that is not built yet: refuse rather than run them wrong.
    for name in ["rope_factors_long.weight", "rope_factors_short.weight"] {
        if file.tensor(name).is_some() {
            return Err(ModelError::InvalidHParam {
                key: name.to_string(),
                reason: "LongRoPE factors are not supported yet".to_string(),
            });
        }
    }
    let mut layers = Vec::with_capacity(hp.n_layer);
    for il in 0..hp.n_layer {
        let mixer = match hp.delta_net {
            Some(dn) if hp.recurrent_layers[il] => {
                Mixer::DeltaNet(bind_delta_net(&mut b, hp, dn, il)?)
            }
            _ if hp.shortconv_layers[il] => {
                Mixer::ShortConv(super::lfm2::bind_shortconv(&mut b, hp, il)?)
            }
            _ => Mixer::Attention(bind_attention(&mut b, hp, il)?),
        };
        let ffn = bind_ffn(&mut b, hp, il)?;
        layers.push(Layer { mixer, ffn });
    }
    let per_layer_inputs = bind_per_layer_inputs(&mut b, hp)?;
    let mut layer_out_scale = Vec::new();
    if hp.arch == Arch::Gemma4 {
        for il in 0..hp.n_layer {
            layer_out_scale.push(b.opt_scalar(&format!("blk.{il}.layer_output_scale.weight"))?);
        }
    }
    Ok((
        ModelWeights {
            tok_embd,
            output_norm,
            output,
            rope_freqs,
            layers,
            per_layer_inputs,
            layer_out_scale,
        },
        b.list,
    ))
}

/// gemma4's per-layer token embeddings and each layer's weights for them
/// (none when `n_embd_per_layer` is 0).
fn bind_per_layer_inputs(b: &mut Binder<'_>, hp: &HParams) -> Result<Option<PerLayerInputs>> {
    let (e, ple) = (hp.n_embd, hp.n_embd_per_layer);
    if ple == 0 {
        return Ok(None);
    }
    let width = ple * hp.n_layer;
    let tok_embd = b.matrix("per_layer_token_embd.weight", width, hp.n_vocab)?;
    let model_proj = b.matrix("per_layer_model_proj.weight", e, width)?;
    let proj_norm = b.vector("per_layer_proj_norm.weight", ple)?;
    let mut layers = Vec::with_capacity(hp.n_layer);
    for il in 0..hp.n_layer {
        let n = |s: &str| format!("blk.{il}.{s}");
        layers.push(PerLayerInput {
            inp_gate: b.matrix(&n("inp_gate.weight"), e, ple)?,
            proj: b.matrix(&n("proj.weight"), ple, e)?,
            post_norm: b.vector(&n("post_norm.weight"), e)?,
        });
    }
    Ok(Some(PerLayerInputs {
        tok_embd,
        model_proj,
        proj_norm,
        layers,
    }))
}

/// The attention weights of block `il` (`blk.{il}.attn_*`).
pub(super) fn bind_attention(b: &mut Binder<'_>, hp: &HParams, il: usize) -> Result<Attention> {
    let n = |s: &str| format!("blk.{il}.{s}");
    let (e, hd) = (hp.n_embd, hp.layer_head_dim(il));
    let (q_dim, kv_dim) = (hp.n_head * hd, hp.layer_kv_dim(il));
    let qkv_bias = hp.arch == Arch::Qwen2;
    let qk_norm = matches!(
        hp.arch,
        Arch::Qwen3
            | Arch::Qwen3Moe
            | Arch::Gemma3
            | Arch::Gemma4
            | Arch::Lfm2
            | Arch::Lfm2Moe
            | Arch::Qwen35
    );
    // qwen35's query projection also yields the output gate: per head,
    // head_dim query values then head_dim gate values.
    let q_gate = hp.arch == Arch::Qwen35;
    let q_rows = if q_gate { 2 * q_dim } else { q_dim };
    let post_norm = matches!(hp.arch, Arch::Gemma3 | Arch::Gemma4);
    // gemma4: layers past n_layer_kv only query an earlier layer's cache.
    let own_kv = hp.kv_source_layer(il) == il;
    let attn_norm = b.vector(&n("attn_norm.weight"), e)?;
    let qkv = match b.opt_matrix(&n("attn_qkv.weight"), e, q_rows + 2 * kv_dim)? {
        Some(w) => Qkv::Fused(w),
        None if !own_kv => Qkv::QueryOnly {
            wq: b.matrix(&n("attn_q.weight"), e, q_rows)?,
        },
        None => {
            let wq = b.matrix(&n("attn_q.weight"), e, q_rows)?;
            let wk = b.matrix(&n("attn_k.weight"), e, kv_dim)?;
            match b.opt_matrix(&n("attn_v.weight"), e, kv_dim)? {
                Some(wv) => Qkv::Split { wq, wk, wv },
                None if hp.arch == Arch::Gemma4 => Qkv::KeyAsValue { wq, wk },
                None => {
                    return Err(ModelError::MissingTensor {
                        name: n("attn_v.weight"),
                    })
                }
            }
        }
    };
    let wo = b.matrix(&n("attn_output.weight"), q_dim, e)?;
    // Qwen2 requires the biases; other architectures take them if present.
    let mut bias = |name: &str, len: usize| -> Result<Option<WeightId>> {
        if qkv_bias {
            b.vector(&n(name), len).map(Some)
        } else {
            b.opt_vector(&n(name), len)
        }
    };
    let bq = bias("attn_q.bias", q_dim)?;
    let bk = bias("attn_k.bias", kv_dim)?;
    let bv = bias("attn_v.bias", kv_dim)?;
    let (q_norm, k_norm) = if qk_norm && !own_kv {
        (Some(b.vector(&n("attn_q_norm.weight"), hd)?), None)
    } else if qk_norm {
        (
            Some(b.vector(&n("attn_q_norm.weight"), hd)?),
            Some(b.vector(&n("attn_k_norm.weight"), hd)?),
        )
    } else {
        (None, None)
    };
    let attn_post_norm = if post_norm {
        Some(b.vector(&n("post_attention_norm.weight"), e)?)
    } else {
        None
    };
    Ok(Attention {
        attn_norm,
        qkv,
        wo,
        bq,
        bk,
        bv,
        q_norm,
        k_norm,
        attn_post_norm,
        q_gate,
    })
}

/// The gated delta-net weights of block `il` (qwen35's recurrent layers).
fn bind_delta_net(
    b: &mut Binder<'_>,
    hp: &HParams,
    dn: DeltaNetHParams,
    il: usize,
) -> Result<DeltaNet> {
    let n = |s: &str| format!("blk.{il}.{s}");
    let e = hp.n_embd;
    Ok(DeltaNet {
        shape: dn,
        attn_norm: b.vector(&n("attn_norm.weight"), e)?,
        wqkv: b.matrix(&n("attn_qkv.weight"), e, dn.conv_dim())?,
        wgate: b.matrix(&n("attn_gate.weight"), e, dn.value_dim())?,
        conv: b.f32_matrix(&n("ssm_conv1d.weight"), dn.d_conv, dn.conv_dim())?,
        dt_bias: b.vector(&n("ssm_dt.bias"), dn.n_v_heads)?,
        ssm_a: b.vector(&n("ssm_a"), dn.n_v_heads)?,
        w_beta: b.matrix(&n("ssm_beta.weight"), e, dn.n_v_heads)?,
        w_alpha: b.matrix(&n("ssm_alpha.weight"), e, dn.n_v_heads)?,
        ssm_norm: b.vector(&n("ssm_norm.weight"), dn.head_dim)?,
        ssm_out: b.matrix(&n("ssm_out.weight"), dn.value_dim(), e)?,
    })
}

/// The feed-forward weights of block `il`: dense (split or fused gate/up)
/// or experts.
pub(super) fn bind_ffn(b: &mut Binder<'_>, hp: &HParams, il: usize) -> Result<FfnBlock> {
    let n = |s: &str| format!("blk.{il}.{s}");
    let (e, n_ff) = (hp.n_embd, hp.n_ff_layers[il]);
    let post_norm = matches!(hp.arch, Arch::Gemma3 | Arch::Gemma4);
    // qwen35 names its pre-FFN norm after the attention.
    let ffn_norm = if hp.arch == Arch::Qwen35 {
        b.vector(&n("post_attention_norm.weight"), e)?
    } else {
        b.vector(&n("ffn_norm.weight"), e)?
    };
    if hp.arch == Arch::Gemma4 && b.file.tensor(&n("ffn_gate_inp.weight")).is_some() {
        return Err(ModelError::InvalidHParam {
            key: n("ffn_gate_inp.weight"),
            reason: "gemma4 experts (26B-A4B) are not supported yet".to_string(),
        });
    }
    let moe = hp.moe.filter(|_| il >= hp.n_layer_dense_lead);
    let ffn = match moe {
        Some(m) => Ffn::Moe {
            params: m,
            gate_inp: b.matrix(&n("ffn_gate_inp.weight"), e, m.n_expert)?,
            gate_exps: b.experts(&n("ffn_gate_exps.weight"), e, m.n_ff_exp, m.n_expert)?,
            up_exps: b.experts(&n("ffn_up_exps.weight"), e, m.n_ff_exp, m.n_expert)?,
            down_exps: b.experts(&n("ffn_down_exps.weight"), m.n_ff_exp, e, m.n_expert)?,
            exp_probs_b: b.opt_vector(&n("exp_probs_b.bias"), m.n_expert)?,
        },
        None => Ffn::Dense {
            // Phi-3 fuses gate and up into one matrix named ffn_up.
            gate_up: if hp.arch == Arch::Phi3 {
                GateUp::Fused(b.matrix(&n("ffn_up.weight"), e, 2 * n_ff)?)
            } else {
                GateUp::Split {
                    gate: b.matrix(&n("ffn_gate.weight"), e, n_ff)?,
                    up: b.matrix(&n("ffn_up.weight"), e, n_ff)?,
                }
            },
            down: b.matrix(&n("ffn_down.weight"), n_ff, e)?,
        },
    };
    let ffn_post_norm = if post_norm {
        Some(b.vector(&n("post_ffw_norm.weight"), e)?)
    } else {
        None
    };
    Ok(FfnBlock {
        ffn_norm,
        ffn,
        ffn_post_norm,
    })
}
