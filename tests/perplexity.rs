//! Perplexity as llama-perplexity on the reference corpus (-c 512), and KL
//! divergence. The running PPL after each of the first chunks must print as
//! llama.cpp's (perplexity.json): 4 decimals, see PRINTED.

mod common;

use rkinfer::model::StateOptions;
use rkinfer::perplexity::{
    evaluate, KlMode, LogitsReader, LogitsWriter, PerplexityOptions, PerplexityReport,
};
use rkinfer::session::{Llm, ModelContext};

/// llama.cpp prints running PPL with 4 decimals; rkinfer reproduces its
/// rounding operation by operation, so its values must print the same (the
/// issue asks 0.5% on the final value; this is the stronger check, and any
/// drift in a kernel's rounding shows here first).
const PRINTED: f64 = 0.5e-4;

fn corpus() -> String {
    let p = common::corpus_path();
    let mut s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    // llama.cpp's -f drops one trailing newline.
    if s.ends_with('\n') {
        s.pop();
    }
    s
}

/// llama.cpp's running PPL after each chunk, and its chunk count.
fn reference(name: &str) -> (Vec<f64>, usize) {
    let v = common::reference("perplexity");
    let m = &v["models"][name];
    let running = m["per_chunk_running_ppl"]
        .as_array()
        .unwrap_or_else(|| panic!("no reference for {name}"))
        .iter()
        .map(|x| x.as_f64().expect("ppl"))
        .collect();
    (running, m["chunks"].as_u64().expect("chunks") as usize)
}

fn run(llm: &Llm, tokens: &[u32], chunks: usize, kl: KlMode<'_>) -> PerplexityReport {
    let tok = llm.tokenizer();
    let opts = PerplexityOptions {
        n_ctx: 512,
        max_chunks: Some(chunks),
        bos: if tok.add_bos() { tok.bos() } else { None },
        ..Default::default()
    };
    let mut ctx = ModelContext::new(
        llm.model(),
        &StateOptions {
            n_ctx: 512,
            n_batch: 512,
            ..Default::default()
        },
    )
    .expect("state");
    evaluate(&mut ctx, tokens, &opts, kl, |p| {
        eprintln!("chunk {}/{} PPL {:.4}", p.done, p.total, p.ppl)
    })
    .expect("perplexity runs")
}

fn check_against_llama_cpp(name: &str, chunks_run: usize) {
    let llm = Llm::load(&common::model_path(name), &Default::default()).expect("model loads");
    let tokens = llm
        .tokenizer()
        .encode(&corpus(), true, false)
        .expect("tokenize");
    let (want, chunks) = reference(name);
    assert_eq!(
        tokens.len() / 512,
        chunks,
        "{name}: chunks of the corpus ({} tokens)",
        tokens.len()
    );
    let r = run(&llm, &tokens, chunks_run, KlMode::None);
    assert_eq!(r.running_ppl.len(), chunks_run);
    for (i, (&got, &w)) in r.running_ppl.iter().zip(&want).enumerate() {
        eprintln!(
            "{name} [{}] rkinfer {got:.4} llama.cpp {w:.4} ({:+.3}%)",
            i + 1,
            100.0 * (got - w) / w
        );
        assert!(
            (got - w).abs() <= PRINTED + 1e-9 * w,
            "{name}: running PPL after chunk {} is {got:.4}, llama.cpp {w:.4}",
            i + 1
        );
    }
}

#[test]
fn perplexity_smollm2_q4_1_tracks_llama_cpp() {
    check_against_llama_cpp("smollm2-q4_1", 8);
}

#[test]
fn perplexity_gemma3_q4_k_m_tracks_llama_cpp() {
    // Q4_K (repacked GEMM/GEMV), Q6_K (tiled from 8 tokens), Q5_0, Q8_0.
    check_against_llama_cpp("gemma3-q4_k_m", 8);
}

#[test]
fn perplexity_smollm2_q4_0_and_f16_track_llama_cpp() {
    // Q4_0 interleaved by 8 rows; F16 batches in tinyBLAS's 16-lane order.
    check_against_llama_cpp("smollm2-q4_0", 2);
    check_against_llama_cpp("smollm2-f16", 2);
}

fn temp_file(name: &str) -> std::path::PathBuf {
    common::temp_path(name)
}

fn save_base(llm: &Llm, tokens: &[u32], chunks: usize, path: &std::path::Path) -> PerplexityReport {
    let mut w =
        LogitsWriter::create(path, 512, llm.model().n_vocab(), chunks, tokens).expect("create");
    let r = run(llm, tokens, chunks, KlMode::Save(&mut w));
    w.finish().expect("flush");
    r
}

#[test]
fn kl_divergence_of_a_model_with_itself_is_zero() {
    let llm =
        Llm::load(&common::model_path("smollm2-q4_1"), &Default::default()).expect("model loads");
    let tokens = llm
        .tokenizer()
        .encode(&corpus(), true, false)
        .expect("tokenize");
    let path = temp_file("self.kld");
    let base = save_base(&llm, &tokens, 2, &path);
    let mut r = LogitsReader::open(&path).expect("open");
    let again = run(&llm, &tokens, 2, KlMode::Compare(&mut r));
    let k = again.kld.expect("kld");
    eprintln!("self KLD {:.8} same top {:.4}", k.mean, k.same_top);
    // 0 to printing precision (%10.6f)
    assert!(k.mean.abs() < 5e-7, "mean KLD {}", k.mean);
    assert!(k.max < 1e-4, "max KLD {}", k.max);
    assert_eq!(k.same_top, 1.0);
    assert!((again.ppl - base.ppl).abs() < 1e-9 * base.ppl);
    assert!(
        (k.ppl_base - base.ppl).abs() < 1e-3 * base.ppl,
        "{} vs {}",
        k.ppl_base,
        base.ppl
    );
    std::fs::remove_file(&path).ok();
}

#[test]
fn kl_divergence_q8_0_against_f16_is_small_and_positive() {
    let f16 =
        Llm::load(&common::model_path("smollm2-f16"), &Default::default()).expect("f16 loads");
    let tokens = f16
        .tokenizer()
        .encode(&corpus(), true, false)
        .expect("tokenize");
    let path = temp_file("f16.kld");
    save_base(&f16, &tokens, 2, &path);
    drop(f16);
    let q8 =
        Llm::load(&common::model_path("smollm2-q8_0"), &Default::default()).expect("q8_0 loads");
    let mut r = LogitsReader::open(&path).expect("open");
    let cmp = run(&q8, &tokens, 2, KlMode::Compare(&mut r));
    let k = cmp.kld.expect("kld");
    eprintln!(
        "Q8_0 vs F16: KLD {:.6} ± {:.6}, same top {:.4}, PPL {:.4} vs {:.4}",
        k.mean, k.mean_unc, k.same_top, k.ppl, k.ppl_base
    );
    assert!(k.mean > 1e-5, "KLD {} should be positive", k.mean);
    assert!(k.mean < 0.01, "KLD {} should be small for Q8_0", k.mean);
    assert!(k.same_top > 0.9, "same top {}", k.same_top);
    std::fs::remove_file(&path).ok();
}
