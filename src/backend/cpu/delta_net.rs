//! The gated delta rule (linear attention of qwen35's recurrent layers),
//! rounded as ggml-cpu's `ggml_compute_forward_gated_delta_net_f32`, which
//! llama.cpp's CPU backend runs for prompt batches and single tokens alike
//! (its fused GDN op is always supported there, so the chunked graph of
//! `delta-net-base.cpp` never runs on the CPU).
//!
//! Per value head, the state is a `head_dim x head_dim` matrix kept
//! transposed as ggml keeps it: row `j` holds column `j` of the state
//! (`m[j * d + i] = S[i][j]`). For each token, in order:
//! `S *= exp(g)`; `delta[j] = (v[j] - S[:, j] . k) * beta`;
//! `S[i][j] += k[i] * delta[j]`; `out[j] = (S[:, j] . q) / sqrt(d)`.

use rayon::prelude::*;

use crate::graph::DeltaNetParams;

/// Runs the batch's `n_tokens` rows through the delta rule, updating
/// `state` (`n_v_heads` matrices) in place.
///
/// `qkv` rows hold q (`n_k_heads x d`), k (same) and v (`n_v_heads x d`);
/// `gb` rows the `n_v_heads` log-decays g, then the `n_v_heads` betas;
/// `out` gets rows of `n_v_heads x d`. Value head `h` reads key and query
/// head `h % n_k_heads`, as ggml broadcasts them.
pub fn gated_delta_net(
    qkv: &[f32],
    gb: &[f32],
    n_tokens: usize,
    p: &DeltaNetParams,
    state: &mut [f32],
    out: &mut [f32],
) -> Result<(), String> {
    let d = p.head_dim;
    let (hk, hv) = (p.n_k_heads, p.n_v_heads);
    let key_dim = hk * d;
    let row = 2 * key_dim + hv * d;
    if d == 0 || hk == 0 || hv == 0 || !hv.is_multiple_of(hk) {
        return Err(format!(
            "{hv} value heads, {hk} key heads of {d}: value heads must be a multiple of key heads"
        ));
    }
    if qkv.len() != n_tokens * row
        || gb.len() != n_tokens * 2 * hv
        || out.len() != n_tokens * hv * d
        || state.len() != hv * d * d
    {
        return Err(format!(
            "{n_tokens} tokens: q/k/v {} (want {}), g/beta {} (want {}), output {} (want {}), state {} (want {})",
            qkv.len(),
            n_tokens * row,
            gb.len(),
            n_tokens * 2 * hv,
            out.len(),
            n_tokens * hv * d,
            state.len(),
            hv * d * d
        ));
    }
    let scale = 1.0 / (d as f32).sqrt();
    // Heads are independent: each runs its tokens in order on its own
    // matrix, its outputs gathered per head then interleaved by token.
    let per_head: Vec<Vec<f32>> = state
        .par_chunks_mut(d * d)
        .enumerate()
        .map(|(h, m)| {
            let kh = h % hk;
            let mut o = vec![0f32; n_tokens * d];
            let mut delta = vec![0f32; d];
            for (t, ot) in o.chunks_exact_mut(d).enumerate() {
                let r = &qkv[t * row..(t + 1) * row];
                let q = &r[kh * d..(kh + 1) * d];
                let k = &r[key_dim + kh * d..key_dim + (kh + 1) * d];
                let v = &r[2 * key_dim + h * d..2 * key_dim + (h + 1) * d];
                let g = gb[t * 2 * hv + h];
                let beta = gb[t * 2 * hv + hv + h];
                decay_update_read(m, q, k, v, g, beta, scale, &mut delta, ot);
            }
            o
        })
        .collect();
    for (h, o) in per_head.iter().enumerate() {
        for (t, ot) in o.chunks_exact(d).enumerate() {
            out[t * hv * d + h * d..t * hv * d + (h + 1) * d].copy_from_slice(ot);
        }
    }
    Ok(())
}

/// One token on one head's transposed state `m` (`d` rows of `d`), with
/// ggml's vector ops: `ggml_vec_scale_f32` (exact products),
/// `ggml_vec_dot_f32` (its AVX-512 summation order) and
/// `ggml_vec_mad_f32` (fused multiply-adds).
#[allow(clippy::too_many_arguments)]
fn decay_update_read(
    m: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: f32,
    beta: f32,
    scale: f32,
    delta: &mut [f32],
    out: &mut [f32],
) {
    let d = k.len();
    kernels::scale(m, g.exp());
    for ((mj, dj), &vj) in m.chunks_exact(d).zip(delta.iter_mut()).zip(v) {
        *dj = (vj - kernels::vec_dot_f32(mj, k)) * beta;
    }
    for (mj, &dj) in m.chunks_exact_mut(d).zip(delta.iter()) {
        kernels::fma_rows(&[dj], k, mj);
    }
    for (mj, oj) in m.chunks_exact(d).zip(out.iter_mut()) {
        *oj = kernels::vec_dot_f32(mj, q) * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The delta rule from its definition, in f64, state not transposed.
    fn reference(
        qkv: &[f32],
        gb: &[f32],
        n: usize,
        p: &DeltaNetParams,
        state: &mut [f64],
    ) -> Vec<f64> {
        let (d, hk, hv) = (p.head_dim, p.n_k_heads, p.n_v_heads);
        let row = 2 * hk * d + hv * d;
        let mut out = vec![0f64; n * hv * d];
        for t in 0..n {
            for h in 0..hv {
                let kh = h % hk;
                let r = &qkv[t * row..];
                let q = |i: usize| r[kh * d + i] as f64;
                let k = |i: usize| r[hk * d + kh * d + i] as f64;
                let v = |j: usize| r[2 * hk * d + h * d + j] as f64;
                let g = gb[t * 2 * hv + h] as f64;
                let beta = gb[t * 2 * hv + hv + h] as f64;
                let s = &mut state[h * d * d..(h + 1) * d * d];
                s.iter_mut().for_each(|x| *x *= g.exp());
                for j in 0..d {
                    let sk: f64 = (0..d).map(|i| s[i * d + j] * k(i)).sum();
                    let dj = (v(j) - sk) * beta;
                    for i in 0..d {
                        s[i * d + j] += k(i) * dj;
                    }
                }
                for j in 0..d {
                    let o: f64 = (0..d).map(|i| s[i * d + j] * q(i)).sum();
                    out[t * hv * d + h * d + j] = o / (d as f64).sqrt();
                }
            }
        }
        out
    }

    fn inputs(n: usize, p: &DeltaNetParams, seed: u32) -> (Vec<f32>, Vec<f32>) {
        let (d, hk, hv) = (p.head_dim, p.n_k_heads, p.n_v_heads);
        let row = 2 * hk * d + hv * d;
        let wave = |i: usize, f: f32| (i as f32 * f + seed as f32).sin() * 0.5;
        let qkv: Vec<f32> = (0..n * row).map(|i| wave(i, 0.37)).collect();
        let gb: Vec<f32> = (0..n * 2 * hv)
            .map(|i| {
                if i % (2 * hv) < hv {
                    -0.1 - 0.5 * wave(i, 0.71).abs() // log-decays are negative
                } else {
                    0.5 + wave(i, 0.53) // betas in (0, 1)
                }
            })
            .collect();
        (qkv, gb)
    }

    #[test]
    fn matches_the_definition_with_broadcast_key_heads() {
        let p = DeltaNetParams {
            layer: 0,
            n_k_heads: 2,
            n_v_heads: 4,
            head_dim: 64,
        };
        let n = 5;
        let (qkv, gb) = inputs(n, &p, 1);
        let mut state = vec![0f32; 4 * 64 * 64];
        let mut out = vec![0f32; n * 4 * 64];
        gated_delta_net(&qkv, &gb, n, &p, &mut state, &mut out).unwrap();
        let mut s64 = vec![0f64; state.len()];
        let want = reference(&qkv, &gb, n, &p, &mut s64);
        for (i, (&g, &w)) in out.iter().zip(&want).enumerate() {
            assert!((g as f64 - w).abs() < 1e-5, "output {i}: {g} vs {w}");
        }
        // The kept state is the transpose of the definition's.
        let d = 64;
        for h in 0..4 {
            for i in 0..d {
                for j in 0..d {
                    let got = state[h * d * d + j * d + i] as f64;
                    let want = s64[h * d * d + i * d + j];
                    assert!((got - want).abs() < 1e-5, "state {h} {i} {j}");
                }
            }
        }
    }

    #[test]
    fn token_by_token_equals_one_batch_bit_for_bit() {
        let p = DeltaNetParams {
            layer: 0,
            n_k_heads: 1,
            n_v_heads: 2,
            head_dim: 128,
        };
        let n = 6;
        let (qkv, gb) = inputs(n, &p, 7);
        let (row, hv, d) = (2 * 128 + 2 * 128, 2, 128);
        let mut state = vec![0f32; hv * d * d];
        let mut batch = vec![0f32; n * hv * d];
        gated_delta_net(&qkv, &gb, n, &p, &mut state, &mut batch).unwrap();
        let mut state1 = vec![0f32; hv * d * d];
        let mut one = vec![0f32; n * hv * d];
        for t in 0..n {
            gated_delta_net(
                &qkv[t * row..(t + 1) * row],
                &gb[t * 2 * hv..(t + 1) * 2 * hv],
                1,
                &p,
                &mut state1,
                &mut one[t * hv * d..(t + 1) * hv * d],
            )
            .unwrap();
        }
        assert_eq!(batch, one);
        assert_eq!(state, state1);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let p = DeltaNetParams {
            layer: 0,
            n_k_heads: 3,
            n_v_heads: 4,
            head_dim: 8,
        };
        let mut s = vec![0f32; 4 * 64];
        let mut o = vec![0f32; 32];
        assert!(gated_delta_net(&[0.0; 80], &[0.0; 8], 1, &p, &mut s, &mut o).is_err());
        let p = DeltaNetParams { n_k_heads: 2, ..p };
        assert!(gated_delta_net(&[0.0; 63], &[0.0; 8], 1, &p, &mut s, &mut o).is_err());
    }
}
