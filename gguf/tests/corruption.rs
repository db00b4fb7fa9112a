//! Truncated and bit-flipped real model headers: always an error value (or a
//! valid file), never a panic.

mod common;

use common::{model_path, SMOLLM2};
use gguf::{validate, Array, GgufError, GgufFile, GgufWriter, Value};
use proptest::prelude::*;
use std::sync::OnceLock;

/// The whole SmolLM2 file and its data offset, read once.
fn real() -> &'static (Vec<u8>, usize) {
    static REAL: OnceLock<(Vec<u8>, usize)> = OnceLock::new();
    REAL.get_or_init(|| {
        let bytes = std::fs::read(model_path(SMOLLM2)).unwrap();
        let data_offset = GgufFile::from_bytes(bytes.clone()).unwrap().data_offset() as usize;
        (bytes, data_offset)
    })
}

/// SmolLM2's header with its long arrays cut to 64 elements: the real keys,
/// value types and all 272 real tensor infos, in 20 KB instead of 1.8 MB,
/// followed by the first 64 bytes of tensor data. Small enough to test
/// every truncation length.
fn compact() -> &'static (Vec<u8>, usize) {
    static COMPACT: OnceLock<(Vec<u8>, usize)> = OnceLock::new();
    COMPACT.get_or_init(|| {
        let src = GgufFile::open(model_path(SMOLLM2)).unwrap();
        let mut w = GgufWriter::new();
        for (k, v) in src.metadata() {
            let v = match v {
                Value::Array(Array::String(s)) => {
                    Value::Array(Array::String(s[..s.len().min(64)].to_vec()))
                }
                Value::Array(Array::I32(s)) => {
                    Value::Array(Array::I32(s[..s.len().min(64)].to_vec()))
                }
                other => other.clone(),
            };
            w.add_kv(k.clone(), v).unwrap();
        }
        for t in src.tensors() {
            w.add_tensor_info(t.name.clone(), &t.dims, t.ggml_type)
                .unwrap();
        }
        let mut s = w.stream_to(Vec::new()).unwrap();
        let data_offset = s.bytes_written() as usize;
        s.write_tensor_data(&src.tensor_data(&src.tensors()[0])[..64])
            .unwrap();
        let bytes = s.get_ref().clone();
        (bytes, data_offset)
    })
}

/// A truncated image must fail, and a Truncated error must point inside it.
fn check_truncated(bytes: &[u8], len: usize) {
    let e = validate(&bytes[..len]).expect_err("truncated file accepted");
    if let GgufError::Truncated { offset, needed, .. } = e {
        assert!(
            offset <= len as u64 && offset + needed > len as u64,
            "len {len}: {e}"
        );
    }
    assert!(!e.to_string().is_empty());
}

#[test]
fn every_truncation_of_a_compact_real_header_fails_cleanly() {
    let (bytes, data_offset) = compact();
    assert!(*data_offset > 10_000, "header is {data_offset} bytes");
    for len in 0..bytes.len() {
        check_truncated(bytes, len);
    }
}

#[test]
fn truncations_of_the_real_smollm2_header_fail_cleanly() {
    let (bytes, data_offset) = real();
    let data_offset = *data_offset;
    assert!(validate(bytes).is_ok());
    // Every length through the fixed header, the general.* and llama.* keys
    // and the start of the token list; a stride through the vocabulary and
    // merges; every length around the tensor infos' end and into the data.
    let lens = (0..8192)
        .chain((8192..data_offset).step_by(16381))
        .chain(data_offset - 160..data_offset + 64)
        .chain([bytes.len() - 1, bytes.len() - 32]);
    for len in lens {
        check_truncated(bytes, len);
    }
}

/// A mutated header either fails with an error or yields a file whose
/// tensors all lie inside it.
fn check_mutated(bytes: Vec<u8>) {
    match GgufFile::from_bytes(bytes) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(f) => {
            for t in f.tensors() {
                assert_eq!(f.tensor_data(t).len() as u64, t.size);
                assert_eq!(t.ggml_type.row_bytes(t.n_elements()), Some(t.size));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_byte_flips_in_a_compact_real_header(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4)
    ) {
        let (bytes, data_offset) = compact();
        let mut b = bytes.clone();
        for (i, x) in flips {
            b[i.index(*data_offset)] ^= x;
        }
        check_mutated(b);
    }
}

/// Flips on the complete real file (so flips that keep it valid do parse),
/// in place to avoid copying 100 MB per case.
#[test]
fn random_byte_flips_in_the_real_smollm2_header() {
    let (bytes, data_offset) = real();
    let mut b = bytes.clone();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut n_ok = 0;
    for case in 0..300 {
        // Half the cases hit the tensor infos (the last 16 KB of the header).
        let lo = if case % 2 == 0 {
            data_offset - 16384
        } else {
            0
        };
        let flips: Vec<(usize, u8)> = (0..1 + rand() % 3)
            .map(|_| {
                (
                    lo + (rand() as usize) % (data_offset - lo),
                    1 + (rand() % 255) as u8,
                )
            })
            .collect();
        for &(i, m) in &flips {
            b[i] ^= m;
        }
        match validate(&b) {
            Ok(()) => n_ok += 1,
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        for &(i, m) in flips.iter().rev() {
            b[i] ^= m;
        }
    }
    assert!(b == *bytes);
    // Flips inside strings and values keep the file valid: some must parse.
    assert!(n_ok > 0, "no mutated file was accepted");
}
