//! The board cost model: its estimates against the published RK3588
//! figures (deterministic arithmetic, no timing), and its task stream.

use rkinfer::npu::cost::published::{
    deviation, fit, fit_error, markdown_table, Storage, PUBLISHED,
};
use rkinfer::npu::cost::{BoardModel, Policy};
use rkinfer::npu::ops::matmul::{plan, MatmulOptions};
use rkinfer::npu::MatmulType;

#[test]
fn estimates_reproduce_the_published_table() {
    let board = BoardModel::with_cores(3);
    for p in PUBLISHED {
        let e = p.estimate(&board);
        let (dpp, dtg) = (deviation(e.pp_ts, p.pp_ts), deviation(e.tg_ts, p.tg_ts));
        let within = dpp.abs() <= 0.25 && dtg.abs() <= 0.25;
        assert!(
            within || p.caveat.is_some(),
            "{} {}: pp {:.1} vs {:.1}, tg {:.1} vs {:.1}",
            p.model.name,
            p.backend(),
            e.pp_ts,
            p.pp_ts,
            e.tg_ts,
            p.tg_ts
        );
    }
    // docs/benchmarks.md shows exactly what the estimator computes.
    let docs = include_str!("../docs/benchmarks.md");
    let table = markdown_table(&board);
    assert!(docs.contains(&table), "docs/benchmarks.md lacks:\n{table}");
}

#[test]
fn the_fitted_constants_are_a_fit() {
    let board = BoardModel::with_cores(3);
    let refined = fit(&board, 1);
    assert!(fit_error(&refined) > 0.8 * fit_error(&board));
}

#[test]
fn costs_come_from_the_planned_tasks() {
    let board = BoardModel::with_cores(3);
    let w8: quant::npu::Scheme = "w8a8".parse().unwrap();
    let (k, n) = (2048, 6144);
    for cores in 1..=3 {
        let opts = MatmulOptions {
            cores: (0..cores as u32).collect(),
            ..MatmulOptions::default()
        };
        let p = plan(MatmulType::Int8, 512, k, n, &opts).unwrap();
        let c = rkinfer::npu::cost::NpuCostParams::default()
            .matmul(&w8, 512, k, n, cores)
            .unwrap();
        assert_eq!(c.tasks, p.tasks());
        assert_eq!(c.macs, 512 * k as u64 * n as u64);
    }
    let one = board.npu.matmul(&w8, 512, k, n, 1).unwrap();
    let three = board.npu.matmul(&w8, 512, k, n, 3).unwrap();
    assert!(three.npu_us < one.npu_us / 2.0, "{three:?} vs {one:?}");
    // A scale per 32 of K: one device matmul per segment.
    let seg32: quant::npu::Scheme = "w4a8.r8.zp.seg32".parse().unwrap();
    let s = board.npu.matmul(&seg32, 512, k, n, 3).unwrap();
    assert!(s.tasks >= k / 32 * 3 && s.submits >= k / 32, "{s:?}");
    assert!(s.total_us() > 3.0 * three.total_us(), "{s:?} vs {three:?}");
    // Two-digit activations double the rows the NPU multiplies.
    let hilo: quant::npu::Scheme = "w8a8.had.hilo".parse().unwrap();
    let h = board.npu.matmul(&hilo, 512, k, n, 3).unwrap();
    assert_eq!(h.macs, 2 * 512 * k as u64 * n as u64);
}

#[test]
fn prefill_goes_to_the_npu_and_decode_to_the_cpu() {
    let board = BoardModel::with_cores(3);
    // rkinfer's default scheme for each published model and storage.
    for p in PUBLISHED {
        let ty = match p.storage {
            Storage::F16 => gguf::GgmlType::F16,
            Storage::Q8_0 => gguf::GgmlType::Q8_0,
            Storage::Q4_0 => gguf::GgmlType::Q4_0,
        };
        let scheme = quant::npu::default_scheme_for(ty);
        for w in p
            .model
            .matmuls(p.storage, scheme)
            .iter()
            .filter(|w| !w.head)
        {
            let pre = board.place(w, 512, Policy::Fastest);
            let dec = board.place(w, 1, Policy::Fastest);
            assert!(pre.on_npu, "{} {}: {pre:?}", p.model.name, w.name);
            assert!(!dec.on_npu, "{} {}: {dec:?}", p.model.name, w.name);
        }
    }
}

/// What a scale per 32 of K costs on the board (docs/quantization.md
/// quotes these numbers): Gemma3 1B Q4_0, pp512 / tg128, three cores,
/// every matmul on the NPU.
#[test]
fn per_32_k_segments_cost_the_board_most_of_its_speed() {
    use rkinfer::npu::cost::published::GEMMA3_1B;
    let board = BoardModel::with_cores(3);
    let rate = |scheme: &str| {
        let w = GEMMA3_1B.matmuls(Storage::Q4_0, scheme.parse().unwrap());
        board.rates(&w, GEMMA3_1B.layers(), 512, 128, Policy::AllNpu)
    };
    let seg32 = rate("w4a8.r8.zp.seg32");
    let had = rate("w8a8.had");
    eprintln!("w4a8.r8.zp.seg32 {seg32:?}\nw8a8.had {had:?}");
    assert!(seg32.pp_ts < 0.6 * had.pp_ts, "{seg32:?} vs {had:?}");
    assert!(seg32.tg_ts < 0.3 * had.tg_ts, "{seg32:?} vs {had:?}");
}
