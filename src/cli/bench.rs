//! `rkinfer bench -m MODEL [-m ...] [-p 512] [-n 128] [-t N] [-r 5]
//! [-o md|json] [--device cpu|npu|npu-sim]`: prompt-processing and
//! text-generation speed in llama-bench's form. Several models, prompt
//! sizes, generation lengths or thread counts (repeated flags or
//! comma-separated values) make a sweep.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::options::{DeviceArgs, PlacementArgs};
use crate::backend::{Device, DeviceOptions, MatmulWork, NpuPlacement};
use crate::bench::{run_test_with_work, Samples, Test};
use crate::model::{Model, ModelOptions};
use crate::npu::cost::{BoardModel, CpuWeight, LayerShape, MatmulWeight, Policy};
use crate::session::{load_model, LoadOptions};
use crate::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model(s) to measure (repeat or separate with commas).
    #[arg(short = 'm', long = "model", value_delimiter = ',', required = true)]
    pub model: Vec<PathBuf>,
    /// Prompt sizes: one forward of this many tokens (0: no prompt test).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    pub n_prompt: Vec<usize>,
    /// Generation lengths: this many single-token forwards (0: no generation test).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    pub n_gen: Vec<usize>,
    /// Thread counts (default: all cores).
    #[arg(short = 't', long = "threads", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Repetitions of each test (after one warm-up run).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub repetitions: usize,
    /// Output format: md (markdown table) or json.
    #[arg(short = 'o', long = "output", default_value = "md")]
    pub output: String,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub placement: PlacementArgs,
}

/// One row of the result table.
struct Row {
    model: PathBuf,
    model_type: String,
    model_size: u64,
    n_params: u64,
    /// Where the matmuls ran: "CPU" on the CPU; on an NPU device the share
    /// of matmul MACs each backend computed ("npu-sim 97%, CPU 3%").
    backend: String,
    /// Matmul MACs by backend, as measured.
    work: MatmulWork,
    threads: usize,
    samples: Samples,
    /// The cost model's board rate for this test (NPU devices only).
    estimate: Option<BoardEstimate>,
}

/// The board cost model's rate for a test.
struct BoardEstimate {
    ts: f64,
    /// Fraction of matmul MACs it places on the NPU.
    npu_share: f64,
    cores: usize,
}

pub fn run(args: Args) -> crate::Result<()> {
    let format = match args.output.as_str() {
        "md" => Format::Markdown,
        "json" => Format::Json,
        other => {
            return Err(Error::InvalidArgument(format!(
                "-o {other:?}: expected md or json"
            )))
        }
    };
    let device = args.device.to_options()?;
    let npu_layers = args.device.offloaded_layers();
    let placement = args.placement.to_placement()?;
    let on_npu = device.device != Device::Cpu;
    if args.repetitions == 0 {
        return Err(Error::InvalidArgument(
            "-r 0: at least one repetition is needed".into(),
        ));
    }
    let mut tests: Vec<Test> = Vec::new();
    tests.extend(
        args.n_prompt
            .iter()
            .filter(|&&p| p > 0)
            .map(|&p| Test::Prompt(p)),
    );
    tests.extend(args.n_gen.iter().filter(|&&n| n > 0).map(|&n| Test::Gen(n)));
    if tests.is_empty() {
        return Err(Error::InvalidArgument(
            "nothing to measure: -p and -n are all 0".into(),
        ));
    }
    let threads = if args.threads.is_empty() {
        vec![std::thread::available_parallelism().map_or(1, |n| n.get())]
    } else {
        args.threads.clone()
    };
    if threads.contains(&0) {
        return Err(Error::InvalidArgument(
            "-t 0: give a thread count of at least 1".into(),
        ));
    }

    let mut rows: Vec<Row> = Vec::new();
    let mut out = std::io::stdout().lock();
    if format == Format::Markdown {
        write_out(&mut out, &markdown_header(on_npu))?;
    }
    for path in &args.model {
        for &t in &threads {
            eprintln!("bench: loading {} (threads {t})", path.display());
            let model = load_model(
                path,
                &LoadOptions {
                    model: ModelOptions {
                        n_threads: t,
                        ..ModelOptions::default()
                    },
                    device: device.clone(),
                    npu_layers,
                    npu_placement: placement,
                },
            )?;
            let (model_type, model_size, n_params) = describe(&model, path);
            for &test in &tests {
                let name = test.name();
                let (samples, work) =
                    run_test_with_work(&model, test, args.repetitions, |done, of| {
                        eprintln!("bench: {} {name} t={t}: run {done}/{of}", short_name(path));
                    })?;
                let backend = if on_npu {
                    work.describe().replace("NPU", device.device.name())
                } else {
                    model.backend_names()
                };
                let estimate = on_npu.then(|| board_estimate(&model, &device, placement, test));
                let row = Row {
                    model: path.clone(),
                    model_type: model_type.clone(),
                    model_size,
                    n_params,
                    backend,
                    work,
                    threads: t,
                    samples,
                    estimate,
                };
                if format == Format::Markdown {
                    write_out(&mut out, &markdown_row(&row))?;
                }
                rows.push(row);
            }
        }
    }
    if format == Format::Json {
        let list: Vec<serde_json::Value> = rows.iter().map(json_row).collect();
        let text = serde_json::to_string_pretty(&list)
            .map_err(|e| Error::InvalidArgument(format!("JSON output: {e}")))?;
        write_out(&mut out, &format!("{text}\n"))?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Markdown,
    Json,
}

fn write_out(out: &mut impl Write, s: &str) -> crate::Result<()> {
    out.write_all(s.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|source| Error::Io {
            path: PathBuf::from("<stdout>"),
            source,
        })
}

fn short_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// llama-bench's model column ("llama 134.52M Q4_1"), the bytes of all
/// tensors and the parameter count.
fn describe(model: &Model, path: &Path) -> (String, u64, u64) {
    let f = model.gguf();
    let arch = f.architecture().unwrap_or("?");
    let n_params = f.n_params();
    let size = f.tensors().iter().map(|t| t.size).sum::<u64>();
    let ftype = f
        .get_u32("general.file_type")
        .ok()
        .and_then(ftype_name)
        .map(str::to_string)
        .unwrap_or_else(|| short_name(path));
    (
        format!("{arch} {} {ftype}", human_params(n_params).replace(' ', "")),
        size,
        n_params,
    )
}

/// llama.cpp's short `llama_ftype` names as llama-bench prints them.
fn ftype_name(ft: u32) -> Option<&'static str> {
    Some(match ft {
        0 => "all F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K - Medium",
        11 => "Q3_K - Small",
        12 => "Q3_K - Medium",
        13 => "Q3_K - Large",
        14 => "Q4_K - Small",
        15 => "Q4_K - Medium",
        16 => "Q5_K - Small",
        17 => "Q5_K - Medium",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

/// 134515008 -> "134.52 M".
fn human_params(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.2} K", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2} M", n as f64 / 1e6),
        _ => format!("{:.2} B", n as f64 / 1e9),
    }
}

/// As llama-bench: MiB below 1 GiB, GiB above.
fn human_size(n: u64) -> String {
    let mib = n as f64 / (1024.0 * 1024.0);
    if mib < 1024.0 {
        format!("{mib:.2} MiB")
    } else {
        format!("{:.2} GiB", mib / 1024.0)
    }
}

/// The cost model's estimate of `test` on an RK3588 board, with the matmul
/// placement the loaded backend uses (npu-sim: every matmul on the NPU).
fn board_estimate(
    model: &Model,
    device: &DeviceOptions,
    placement: NpuPlacement,
    test: Test,
) -> BoardEstimate {
    let cores = device.npu.cores.len().max(1);
    let board = BoardModel::with_cores(cores);
    let policy = match placement.resolve(device.device) {
        NpuPlacement::MinBatch(1) => Policy::AllNpu,
        NpuPlacement::MinBatch(n) => Policy::MinBatch(n),
        NpuPlacement::CostModel | NpuPlacement::DeviceDefault => Policy::Fastest,
    };
    let hp = model.hparams();
    let layers = LayerShape {
        n_layer: hp.n_layer,
        n_embd: hp.n_embd,
        n_head: hp.n_head,
        head_dim: hp.head_dim,
    };
    let tokens = match test {
        Test::Prompt(n) => n,
        Test::Gen(_) => 1,
    };
    let rows = model.matmul_rows(tokens);
    let weights: Vec<MatmulWeight> = rows
        .iter()
        .map(|&(id, _)| {
            let w = model.weights().get(id);
            MatmulWeight {
                name: w.name.clone(),
                k: w.cols,
                n: w.rows,
                class: CpuWeight::of(w.ty),
                bytes: w.ty.row_bytes(w.cols as u64).unwrap_or(0) * w.rows as u64,
                scheme: device.npu.quant.scheme_for(w.ty),
                head: false,
            }
        })
        .collect();
    let matmuls: Vec<(&MatmulWeight, usize)> = weights
        .iter()
        .zip(&rows)
        .map(|(w, &(_, r))| (w, r))
        .collect();
    let (ts, npu_share) = match test {
        Test::Prompt(n) => {
            let f = board.forward_rows(&matmuls, layers, n, 0, policy);
            (n as f64 / (f.total_us() * 1e-6), f.npu_share())
        }
        Test::Gen(n) => board.decode_rate(&matmuls, layers, n, policy),
    };
    BoardEstimate {
        ts,
        npu_share,
        cores,
    }
}

fn markdown_header(estimate: bool) -> String {
    if estimate {
        "| model | size | params | backend | threads | test | t/s (this host) | RK3588 t/s (estimate) |\n\
         | ------------------------------ | ---------: | ---------: | ---------- | ------: | --------------: | -------------------: | -------------------: |\n"
            .to_string()
    } else {
        "| model | size | params | backend | threads | test | t/s |\n\
         | ------------------------------ | ---------: | ---------: | ---------- | ------: | --------------: | -------------------: |\n"
            .to_string()
    }
}

fn markdown_row(r: &Row) -> String {
    let (mean, sd) = r.samples.ts_stats();
    let estimate = r.estimate.as_ref().map_or(String::new(), |e| {
        format!(
            " {:.1} (NPU {:.0}%, {} cores) |",
            e.ts,
            100.0 * e.npu_share,
            e.cores
        )
    });
    format!(
        "| {} | {} | {} | {} | {} | {} | {:.2} ± {:.2} |{}\n",
        r.model_type,
        human_size(r.model_size),
        human_params(r.n_params),
        r.backend,
        r.threads,
        r.samples.test.name(),
        mean,
        sd,
        estimate
    )
}

fn json_row(r: &Row) -> serde_json::Value {
    let (avg_ts, stddev_ts) = r.samples.ts_stats();
    let (avg_ns, stddev_ns) = r.samples.ns_stats();
    let (n_prompt, n_gen) = match r.samples.test {
        Test::Prompt(n) => (n, 0),
        Test::Gen(n) => (0, n),
    };
    json!({
        "model_filename": r.model.display().to_string(),
        "model_type": r.model_type,
        "model_size": r.model_size,
        "model_n_params": r.n_params,
        "backends": r.backend,
        "cpu_isa": crate::kernels::isa(),
        "n_threads": r.threads,
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "test": r.samples.test.name(),
        "avg_ns": avg_ns.round() as u64,
        "stddev_ns": stddev_ns.round() as u64,
        "avg_ts": avg_ts,
        "stddev_ts": stddev_ts,
        "samples_ns": r.samples.samples_ns(),
        "samples_ts": r.samples.samples_ts(),
        "matmul_macs_by_backend": r
            .work
            .by_backend()
            .iter()
            .map(|(b, m)| (b.to_string(), json!(m)))
            .collect::<serde_json::Map<_, _>>(),
        "board_estimate": r.estimate.as_ref().map(|e| json!({
            "ts": e.ts,
            "npu_share": e.npu_share,
            "npu_cores": e.cores,
            "note": "RK3588 cost-model estimate (docs/benchmarks.md), not a measurement",
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_llama_bench() {
        assert_eq!(human_params(134_515_008), "134.52 M");
        assert_eq!(human_size(70 * 1024 * 1024), "70.00 MiB");
        assert_eq!(human_size(3 * 1024 * 1024 * 1024), "3.00 GiB");
        assert_eq!(ftype_name(15), Some("Q4_K - Medium"));
        assert_eq!(ftype_name(999), None);
    }
}
