//! `rkinfer quantize` against llama-quantize: the six derived files of
//! model-files.json tensor for tensor (and byte for byte), the type
//! mixtures, and bad input. The block-level bit-exactness and the
//! test-quantize-fns error bounds are unit tests of the `quant` crate
//! (quant/src/ggml/tests_ggml.rs).

mod common;

use std::path::Path;
use std::process::Command;

use rkinfer::gguf::{GgmlType, GgufFile, Value};
use rkinfer::quant;
use rkinfer::quantize::{quantize_model, FileType, QuantizeOptions};
use sha2::{Digest, Sha256};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn opts(file_type: FileType) -> QuantizeOptions {
    let mut o = QuantizeOptions::new(file_type);
    o.allow_requantize = true;
    o.progress = false;
    o
}

/// Compares a written file with its model-files.json entry: tensor order,
/// names, types, shapes, data hashes and the whole-file hash.
fn assert_matches_reference(path: &Path, key: &str) {
    let reference = common::reference("model-files");
    let expected = &reference[key];
    let tensors = expected["tensors"]
        .as_object()
        .unwrap_or_else(|| panic!("model-files.json has no {key}"));
    let f = GgufFile::open(path).unwrap();
    let mut mismatches = Vec::new();
    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    let expected_names: Vec<&str> = tensors.keys().map(|k| k.as_str()).collect();
    assert_eq!(names.len(), expected_names.len(), "{key}: tensor count");
    for t in f.tensors() {
        let e = &tensors[&t.name];
        let shape: Vec<u64> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let hash = &sha256_hex(f.tensor_data(t))[..16];
        if e["type"] != t.ggml_type.name() || shape != t.dims || e["sha256"] != hash {
            mismatches.push(format!(
                "{}: got {} {:?} {hash}, llama-quantize {} {:?} {}",
                t.name, t.ggml_type, t.dims, e["type"], shape, e["sha256"]
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{key}: {} of {} tensors differ:\n{}",
        mismatches.len(),
        names.len(),
        mismatches.join("\n")
    );
    // serde_json keeps keys sorted unless preserve_order is on, so the
    // order is checked through the whole-file hash, which also covers the
    // metadata llama-quantize writes and the alignment padding.
    let file_hash = sha256_hex(&std::fs::read(path).unwrap());
    assert_eq!(
        expected["file_sha256"], file_hash,
        "{key}: whole-file sha256 (metadata, order or padding differ)"
    );
}

fn derive_and_compare(source: &str, targets: &[(FileType, &str)]) {
    let input = common::model_path(source);
    for &(file_type, key) in targets {
        let out = common::temp_path(key);
        let report = quantize_model(&input, &out, &opts(file_type)).unwrap();
        assert!(report.bytes_out > 0);
        assert_matches_reference(&out, key);
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn smollm2_q4_1_requantized_matches_llama_quantize() {
    derive_and_compare(
        "smollm2-q4_1",
        &[
            (FileType::Q4_0, "SmolLM2-135M-Instruct.Q4_0.gguf"),
            (FileType::Q8_0, "SmolLM2-135M-Instruct.Q8_0.gguf"),
            (FileType::F16, "SmolLM2-135M-Instruct.F16.gguf"),
        ],
    );
}

#[test]
fn gemma3_q4_k_m_requantized_matches_llama_quantize() {
    derive_and_compare(
        "gemma3-q4_k_m",
        &[
            (FileType::Q4_0, "gemma-3-270m.Q4_0.gguf"),
            (FileType::Q8_0, "gemma-3-270m.Q8_0.gguf"),
            (FileType::F16, "gemma-3-270m.F16.gguf"),
        ],
    );
}

#[test]
fn derived_model_helper_produces_the_llama_quantize_file() {
    let path = common::model_path("smollm2-q8_0");
    assert_matches_reference(&path, common::model_file_name("smollm2-q8_0"));
}

#[test]
fn q4_k_m_mixture_picks_the_types_of_the_original_gemma_file() {
    // The fetched Gemma file was made by llama-quantize Q4_K_M: requantizing
    // it with the same mixture must choose the same type for every tensor
    // (use_more_bits layers, tied-embedding rule, Q4_K->Q5_0 and Q6_K->Q8_0
    // fallbacks for 640-wide rows).
    let input = common::model_path("gemma3-q4_k_m");
    let f = GgufFile::open(&input).unwrap();
    let plan = rkinfer::quantize::plan(&f, &opts(FileType::Q4_K_M)).unwrap();
    let reference = common::reference("model-files");
    let tensors = &reference["gemma-3-270m-q4_k_m.gguf"]["tensors"];
    for p in &plan {
        assert_eq!(tensors[&p.name]["type"], p.to.name(), "{}", p.name);
    }
    assert!(plan.iter().any(|p| p.fallback));
}

#[test]
fn every_cli_type_writes_a_model_with_the_expected_types_and_metadata() {
    let input = common::model_path("smollm2-q4_1");
    let src = GgufFile::open(&input).unwrap();
    for name in [
        "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K",
        "Q4_K_S", "Q5_K_S", "Q3_K_M", "Q2_K",
    ] {
        let ft = FileType::from_name(name).unwrap();
        let out = common::temp_path(&format!("every-{name}.gguf"));
        quantize_model(&input, &out, &opts(ft)).unwrap();
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(f.get_u32("general.file_type").unwrap(), ft.id(), "{name}");
        assert_eq!(f.get_u32("general.quantization_version").unwrap(), 2);
        assert_eq!(f.tensors().len(), src.tensors().len());
        for t in f.tensors() {
            let s = src.tensor(&t.name).unwrap();
            assert_eq!(s.dims, t.dims, "{name} {}", t.name);
            if t.dims.len() == 1 {
                assert_eq!(
                    t.ggml_type,
                    GgmlType::F32,
                    "{name}: 1-D {} stays F32",
                    t.name
                );
            } else if ft.default_type().is_quantized() && t.name != "token_embd.weight" {
                let row = t.dims[0];
                assert!(row.is_multiple_of(t.ggml_type.block_size() as u64));
            } else if !ft.default_type().is_quantized() {
                assert_eq!(t.ggml_type, ft.default_type(), "{name} {}", t.name);
            }
        }
        // The weights survive: dequantized rows stay close to the source's.
        let t = f.tensor("blk.3.ffn_down.weight").unwrap();
        let s = src.tensor("blk.3.ffn_down.weight").unwrap();
        let n = t.dims[0] as usize;
        let mut a = vec![0f32; n];
        let mut b = vec![0f32; n];
        let row_bytes = |ty: GgmlType| quant::row_size(ty, n).unwrap();
        quant::dequantize_row(
            s.ggml_type,
            &src.tensor_data(s)[..row_bytes(s.ggml_type)],
            &mut a,
        )
        .unwrap();
        quant::dequantize_row(
            t.ggml_type,
            &f.tensor_data(t)[..row_bytes(t.ggml_type)],
            &mut b,
        )
        .unwrap();
        let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        let diff: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        let rel = rms(&diff) / rms(&a);
        let bound = if ft == FileType::Q2_K { 0.6 } else { 0.25 };
        assert!(
            rel < bound,
            "{name}: relative error {rel} of a requantized row"
        );
        std::fs::remove_file(&out).unwrap();
    }
}

// ---------------------------------------------------------------------------
// Bad input through the CLI: clear errors, nothing written.

fn rkinfer(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rkinfer"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_nothing_written(out: &Path) {
    assert!(!out.exists(), "{} was written", out.display());
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    assert!(!Path::new(&tmp).exists(), "temporary file left behind");
}

#[test]
fn unknown_type_lists_the_valid_ones() {
    let input = common::model_path("smollm2-q4_1");
    let out = common::temp_path("unknown.gguf");
    let (ok, err) = rkinfer(&[
        "quantize",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "Q7_0",
    ]);
    assert!(!ok);
    assert!(err.contains("Q7_0") && err.contains("valid types"), "{err}");
    assert!(err.contains("Q4_K_M") && err.contains("BF16"), "{err}");
    assert_nothing_written(&out);
}

#[test]
fn requantizing_needs_allow_requantize() {
    let input = common::model_path("smollm2-q4_1");
    let out = common::temp_path("requant.gguf");
    let (ok, err) = rkinfer(&[
        "quantize",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "Q4_0",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--allow-requantize") && err.contains("Q4_1"),
        "{err}"
    );
    assert_nothing_written(&out);
}

#[test]
fn existing_output_needs_force() {
    let input = common::model_path("smollm2-q4_1");
    let out = common::temp_path("exists.gguf");
    std::fs::write(&out, b"keep me").unwrap();
    let args = [
        "quantize",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "Q8_0",
    ];
    let (ok, err) = rkinfer(&[&args[..], &["--allow-requantize"]].concat());
    assert!(!ok);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");

    let (ok, err) = rkinfer(&[&args[..], &["--allow-requantize", "--force", "-q"]].concat());
    assert!(ok, "{err}");
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.get_u32("general.file_type").unwrap(), 7);
    std::fs::remove_file(&out).unwrap();
}

#[test]
fn rows_that_do_not_divide_into_blocks_are_an_error() {
    // A forced type bypasses llama-quantize's fallback: 576-wide rows cannot
    // be Q4_K (blocks of 256).
    let input = common::model_path("smollm2-q4_1");
    let out = common::temp_path("rows.gguf");
    let (ok, err) = rkinfer(&[
        "quantize",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "Q8_0",
        "--allow-requantize",
        "--token-embedding-type",
        "Q4_K",
    ]);
    assert!(!ok);
    assert!(
        err.contains("token_embd.weight") && err.contains("576") && err.contains("256"),
        "{err}"
    );
    assert_nothing_written(&out);
}

#[test]
fn quantize_metadata_keys_come_last_as_llama_quantize_writes_them() {
    let path = common::model_path("smollm2-q8_0");
    let f = GgufFile::open(&path).unwrap();
    let md = f.metadata();
    let n = md.len();
    assert_eq!(md[n - 2].0, "general.quantization_version");
    assert_eq!(md[n - 2].1, Value::U32(2));
    assert_eq!(md[n - 1].0, "general.file_type");
    assert_eq!(md[n - 1].1, Value::U32(7));
}
