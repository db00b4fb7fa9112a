//! NPU requantization accuracy on real weights (SmolLM2-135M Q4_1 and
//! gemma-3-270m Q4_K_M, fetched by scripts/fetch-models.sh).

use std::path::Path;

use quant::npu::eval::{dequantize_rows, eval_matrix, matmul_weights, SyntheticActivations};
use quant::npu::{Scheme, RK_LLAMA_INT4};

fn open(model: &str) -> gguf::GgufFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(model);
    gguf::GgufFile::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-models.sh)", path.display()))
}

/// Mean relative error per scheme over the chosen tensors.
fn mean_errors(model: &str, tensors: &[&str], schemes: &[&str]) -> Vec<f64> {
    let f = open(model);
    let schemes: Vec<Scheme> = schemes.iter().map(|s| s.parse().unwrap()).collect();
    let mut sums = vec![0.0; schemes.len()];
    for name in tensors {
        let t = f
            .tensor(name)
            .unwrap_or_else(|| panic!("{model}: no tensor {name}"));
        assert!(matmul_weights(&f).iter().any(|w| w.name == *name));
        let (k, n) = (t.row_len() as usize, (t.n_rows() as usize).min(512));
        let rows: Vec<usize> = (0..n).collect();
        let w = dequantize_rows(&f, t, &rows).unwrap();
        assert!(w.iter().all(|v| v.is_finite()));
        let x = SyntheticActivations::default().generate(16, k);
        for (s, r) in sums
            .iter_mut()
            .zip(eval_matrix(&w, n, k, &x, 16, name, &schemes).unwrap())
        {
            *s += r.rel_error / tensors.len() as f64;
        }
    }
    sums
}

#[test]
fn rotated_int8_about_one_percent_on_real_weights() {
    let tensors = [
        "blk.3.ffn_down.weight",
        "blk.7.attn_output.weight",
        "blk.9.ffn_gate.weight",
    ];
    for model in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        let e = mean_errors(model, &tensors, &["w8a8", "w8a8.had", "w8a8.khad"]);
        // quant-eval's whole-model means are 0.80% (SmolLM2) and 0.90%
        // (gemma); single matrices reach 1.1-1.25% (docs/quantization.md).
        assert!(e[1] < 0.011, "{model}: w8a8.had {}", e[1]);
        assert!(e[2] < 0.012, "{model}: w8a8.khad {}", e[2]);
        assert!(
            e[1] < e[0] / 3.0,
            "{model}: rotation did not help ({} vs {})",
            e[1],
            e[0]
        );
    }
}

/// The first `count` matmul weights stored as 4-bit GGML blocks.
fn four_bit_tensors(model: &str, count: usize) -> Vec<String> {
    let f = open(model);
    let names: Vec<String> = matmul_weights(&f)
        .into_iter()
        .filter(|t| matches!(t.ggml_type.name(), "Q4_0" | "Q4_1" | "Q4_K"))
        .take(count)
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(names.len(), count, "{model}: too few 4-bit tensors");
    names
}

#[test]
fn project_int4_beats_rk_llama_per_tensor_int4_on_real_weights() {
    for model in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        let names = four_bit_tensors(model, 3);
        let tensors: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let e = mean_errors(
            model,
            &tensors,
            &[RK_LLAMA_INT4, "w4a4.had.wmse.amse.r8", "w4a8.r8.zp.seg32"],
        );
        // Per-channel MSE clips and [-8, 7] levels beat one KL-clipped tensor scale.
        assert!(
            e[1] < 0.85 * e[0],
            "{model}: w4a4 ours {} vs rk-llama.cpp {}",
            e[1],
            e[0]
        );
        // The 4-bit blocks kept exactly (levels run as int8, 32-wide K
        // segments): the goal of at least 2x.
        assert!(
            e[2] < 0.5 * e[0],
            "{model}: w4a8 ours {} vs rk-llama.cpp {}",
            e[2],
            e[0]
        );
    }
}
