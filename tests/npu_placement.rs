//! Matmul placement by the board cost model: prompt batches on the NPU,
//! single-token decode on the CPU, `--npu-min-batch` overriding it, and the
//! graph dump saying where each matmul went and why (npu-sim, SmolLM2 F16).

mod common;

use std::process::Command;

use rkinfer::backend::device::parse_npu_cores;
use rkinfer::backend::{Device, DeviceOptions, NpuPlacement, NpuQuant, NpuSettings};
use rkinfer::model::Model;
use rkinfer::session::{load_model, LoadOptions};

fn load(placement: NpuPlacement) -> Model {
    load_model(
        &common::model_path("smollm2-f16"),
        &LoadOptions {
            device: DeviceOptions {
                device: Device::NpuSim,
                npu: NpuSettings {
                    quant: NpuQuant::parse("w16a16").expect("quant"),
                    cores: parse_npu_cores("3").expect("cores"),
                    ..NpuSettings::default()
                },
            },
            npu_placement: placement,
            ..LoadOptions::default()
        },
    )
    .expect("model loads")
}

/// The backend of each MUL_MAT line of the graph dump for `n` tokens but
/// the output head's (which sees only the last row).
fn matmul_backends(model: &Model, n: usize) -> Vec<String> {
    model
        .describe_graph(n)
        .lines()
        .filter(|l| l.contains("MUL_MAT") && !l.contains("result_output"))
        .map(|l| {
            if l.contains(" NPU ") {
                "NPU".to_string()
            } else {
                "CPU".to_string()
            }
        })
        .collect()
}

#[test]
fn cost_model_puts_prefill_on_the_npu_and_decode_on_the_cpu() {
    let model = load(NpuPlacement::CostModel);
    let decode = matmul_backends(&model, 1);
    assert!(!decode.is_empty());
    assert!(decode.iter().all(|b| b == "CPU"), "{decode:?}");
    let prefill = matmul_backends(&model, 512);
    assert!(
        prefill.iter().filter(|b| *b == "NPU").count() * 2 > prefill.len(),
        "most prompt-batch matmuls go to the NPU: {prefill:?}"
    );
    let report = model.placement_report(1);
    assert!(
        report.contains("the NPU does not win by 25%") && report.contains("board estimate"),
        "{report}"
    );
    let report = model.placement_report(512);
    assert!(report.contains("the NPU wins by more than 25%"), "{report}");
}

#[test]
fn min_batch_overrides_the_cost_model() {
    let model = load(NpuPlacement::MinBatch(2));
    assert!(matmul_backends(&model, 1).iter().all(|b| b == "CPU"));
    assert!(matmul_backends(&model, 2).iter().all(|b| b == "NPU"));
    assert!(model
        .placement_report(1)
        .contains("below --npu-min-batch 2"));
    assert!(NpuPlacement::parse("0").is_err());
    assert_eq!(
        NpuPlacement::parse("auto").unwrap(),
        NpuPlacement::CostModel
    );
    // npu-sim alone takes every matmul (it exists to run the NPU path).
    assert_eq!(
        NpuPlacement::DeviceDefault.resolve(Device::NpuSim),
        NpuPlacement::MinBatch(1)
    );
    assert_eq!(
        NpuPlacement::DeviceDefault.resolve(Device::Npu),
        NpuPlacement::CostModel
    );
}

#[test]
fn dump_graph_says_where_each_matmul_went_and_why() {
    let m = common::model_path("smollm2-f16").display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_rkinfer"))
        .args([
            "run",
            "-m",
            &m,
            "--device",
            "npu-sim",
            "--npu-quant",
            "w16a16",
            "--npu-cores",
            "3",
            "--npu-min-batch",
            "auto",
            "--dump-graph",
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("placement "))
        .collect();
    assert_eq!(
        lines.len(),
        text.lines().filter(|l| l.contains("MUL_MAT")).count(),
        "one placement line per matmul:\n{text}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.contains("M=1 ") && l.contains(": CPU (") && l.contains("us NPU vs")),
        "{lines:?}"
    );
}
