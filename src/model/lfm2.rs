//! LFM2 and LFM2-MoE (llama.cpp's `lfm2.cpp`, `lfm2moe.cpp`): a hybrid of
//! gated short convolutions and grouped-query attention with q/k norms. Every
//! layer normalizes its input ("operator norm"), mixes it with either kind of
//! block, then runs a dense SwiGLU feed-forward or, in lfm2moe after the
//! leading dense layers, sigmoid-routed experts. The layer loop is the
//! shared one of `transformer.rs`; this file has the convolution block.

use super::hparams::HParams;
use super::weights::{Binder, ShortConv};
use super::Result;
use crate::graph::{GraphBuilder, TensorId};

/// The short-convolution weights of block `il` (`blk.{il}.shortconv.*`).
pub(super) fn bind_shortconv(b: &mut Binder<'_>, hp: &HParams, il: usize) -> Result<ShortConv> {
    let n = |s: &str| format!("blk.{il}.{s}");
    let e = hp.n_embd;
    Ok(ShortConv {
        norm: b.vector(&n("attn_norm.weight"), e)?,
        in_proj: b.matrix(&n("shortconv.in_proj.weight"), e, 3 * e)?,
        conv: b.f32_matrix(&n("shortconv.conv.weight"), hp.shortconv_l_cache, e)?,
        out_proj: b.matrix(&n("shortconv.out_proj.weight"), e, e)?,
    })
}

/// The gated short convolution of layer `il` over `x`: its output, before
/// the residual sum. Its rolling window is the layer's recurrent state.
pub(super) fn shortconv(
    g: &mut GraphBuilder,
    hp: &HParams,
    s: &ShortConv,
    il: usize,
    x: TensorId,
) -> TensorId {
    let nm = |name: &str| format!("{name}-{il}");
    let e = hp.n_embd;
    let h = g.rms_norm(x, hp.rms_eps, &nm("norm"));
    let h = g.mul_weight(h, s.norm, &nm("operator_norm"));
    let bcx = g.mul_mat(s.in_proj, 3 * e, h, &nm("conv_in_proj"));
    let b = g.cols(bcx, 0, e, &nm("conv_b"));
    let c = g.cols(bcx, e, e, &nm("conv_c"));
    let v = g.cols(bcx, 2 * e, e, &nm("conv_x"));
    let bx = g.mul(b, v, &nm("conv_bx"));
    let conv = g.ssm_conv(bx, s.conv, il, &nm("conv_conv"));
    let y = g.mul(c, conv, &nm("conv_y"));
    g.mul_mat(s.out_proj, e, y, &nm("conv_out_proj"))
}
