//! `rkinfer quant-eval MODEL.gguf`: the accuracy of every NPU quantization
//! scheme on the model's real weights.
//!
//! For each 2-D weight used by a matmul, `Y = X W^T` is computed through the
//! whole NPU path (rotation, quantization, native packing, the reference
//! integer matmul, dequantization) and compared with exact math on the f32
//! weights: relative error `||Y - Yref|| / ||Yref||`. X are the real inputs
//! of each matmul, captured during a CPU forward pass over the first
//! `--tokens` tokens of a text (`crate::graph::capture`), or with
//! `--synthetic` seeded activations with outlier channels (see
//! `quant::npu::eval`).

use std::collections::HashMap;
use std::path::PathBuf;

use gguf::GgufFile;
use quant::npu::eval::{
    evaluate_model, evaluate_model_with, markdown_by_type, markdown_table, summarize, EvalOptions,
};
use quant::npu::Scheme;

pub use quant::npu::eval::{dequantize_rows, matmul_weights};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF model file.
    pub model: PathBuf,
    /// Activation rows (tokens) per matrix: the first N tokens of the
    /// corpus (or N synthetic rows with --synthetic).
    #[arg(long, default_value_t = 256)]
    pub tokens: usize,
    /// Text whose tokens are evaluated to capture real activations.
    #[arg(long, default_value = "models/corpus.txt")]
    pub corpus: PathBuf,
    /// Seeded synthetic activations with outlier channels instead of real
    /// ones (no forward pass).
    #[arg(long)]
    pub synthetic: bool,
    /// Output rows evaluated per matrix; larger matrices (the vocabulary
    /// head) are subsampled evenly.
    #[arg(long, default_value_t = 256)]
    pub max_rows: usize,
    /// Comma-separated schemes (default: the built-in comparison list).
    #[arg(long)]
    pub schemes: Option<String>,
    /// Only tensors whose name contains this string (or one of these,
    /// comma-separated).
    #[arg(long)]
    pub filter: Option<String>,
    /// Seed of the synthetic activations (--synthetic).
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
    /// Threads.
    #[arg(short = 't', long, default_value_t = 2)]
    pub threads: usize,
    /// Print JSON instead of a markdown table.
    #[arg(long)]
    pub json: bool,
}

fn qerr(e: quant::npu::NpuQuantError) -> crate::Error {
    crate::Error::InvalidArgument(e.to_string())
}

pub fn run(args: Args) -> crate::Result<()> {
    let f = GgufFile::open(&args.model)?;
    let names: Vec<&str> = match &args.schemes {
        Some(list) => list.split(',').collect(),
        None => quant::npu::scheme::EVAL_SCHEMES.to_vec(),
    };
    let schemes: Vec<Scheme> = names
        .iter()
        .map(|s| s.parse().map_err(qerr))
        .collect::<crate::Result<_>>()?;
    let opts = EvalOptions {
        tokens: args.tokens,
        max_rows: args.max_rows,
        schemes: schemes.clone(),
        filter: args.filter.clone(),
        seed: args.seed,
        threads: args.threads,
    };
    let start = std::time::Instant::now();
    let mut progress = |i: usize, total: usize, t: &gguf::TensorInfo| {
        eprintln!(
            "[{}/{}] {} {} {}x{} ({:.0}s)",
            i + 1,
            total,
            t.name,
            t.ggml_type.name(),
            t.n_rows(),
            t.row_len(),
            start.elapsed().as_secs_f64()
        );
    };
    let (reports, activations) = if args.synthetic {
        let r = evaluate_model(&f, &opts, &mut progress).map_err(qerr)?;
        (r, format!("{} synthetic activation rows", args.tokens))
    } else {
        let text = std::fs::read_to_string(&args.corpus).map_err(|e| {
            crate::Error::InvalidArgument(format!("{}: {e}", args.corpus.display()))
        })?;
        eprintln!(
            "capturing matmul inputs: {} tokens of {} on the CPU",
            args.tokens,
            args.corpus.display()
        );
        let cap = crate::capture::capture_from_text(&args.model, &text, args.tokens, args.threads)?;
        eprintln!(
            "captured {} matmul inputs ({:.0}s)",
            cap.matmuls.len(),
            start.elapsed().as_secs_f64()
        );
        let mut by_name: HashMap<String, crate::backend::capture::CapturedMatmul> = cap
            .matmuls
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        let mut take = |t: &gguf::TensorInfo| Ok(by_name.remove(&t.name).map(|c| (c.x, c.rows)));
        let r = evaluate_model_with(&f, &opts, &mut take, &mut progress).map_err(qerr)?;
        (
            r,
            format!(
                "real activations: the inputs of each matmul over the first {} tokens of {}",
                args.tokens,
                args.corpus.display()
            ),
        )
    };
    let summaries = summarize(&reports, &schemes);
    if args.json {
        let schemes_json: Vec<serde_json::Value> = summaries
            .iter()
            .map(|s| {
                serde_json::json!({
                    "scheme": s.scheme.to_string(), "mean_rel_error": s.mean,
                    "worst_rel_error": s.worst, "worst_tensor": s.worst_tensor,
                    "int16_saturations": s.int16_saturations, "outputs": s.outputs,
                    "k_pad_ratio": s.k_pad_ratio,
                })
            })
            .collect();
        let matrices: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                let e: serde_json::Map<String, serde_json::Value> = r
                    .results
                    .iter()
                    .map(|x| (x.scheme.to_string(), serde_json::json!(x.rel_error)))
                    .collect();
                serde_json::json!({"name": r.name, "type": r.ggml_type, "n": r.n, "k": r.k,
                    "n_evaluated": r.n_eval, "rel_error": e})
            })
            .collect();
        let doc = serde_json::json!({
            "model": args.model.display().to_string(), "tokens": args.tokens,
            "max_rows": args.max_rows, "seed": args.seed, "activations": activations,
            "schemes": schemes_json, "matrices": matrices,
        });
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| crate::Error::InvalidArgument(format!("JSON output: {e}")))?;
        println!("{text}");
    } else {
        println!(
            "{}: {} matrices, {activations}, <= {} output rows each\n",
            args.model.display(),
            reports.len(),
            args.max_rows
        );
        print!("{}", markdown_table(&summaries));
        println!("\nMean relative error by source type (number of matrices):\n");
        print!("{}", markdown_by_type(&reports, &schemes));
    }
    eprintln!("done in {:.0}s", start.elapsed().as_secs_f64());
    Ok(())
}
