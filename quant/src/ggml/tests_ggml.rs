//! Bit-exactness against ggml and quantization error bounds.
//!
//! Known answers: ggml's own `quantize_row_*_ref` / `dequantize_row_*`
//! (llama.cpp 0c1e57098, compiled with gcc -O3 for baseline x86-64, as
//! ggml-base is) were run on the deterministic input of [`test_input`]; the
//! FNV-1a 64 hashes of the bytes they wrote and of the floats they decoded
//! are in [`GGML_ANSWERS`]. The generator uses only exact integer-to-float
//! conversions and IEEE adds/multiplies, so it is the same on every target.

use super::*;
use gguf::GgmlType::{self, *};

const ROWS: usize = 24;
const COLS: usize = 512;

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 * (1.0 / 16_777_216.0)
    }
    fn normalish(&mut self) -> f32 {
        let mut a = self.uniform();
        a += self.uniform();
        a += self.uniform();
        a += self.uniform();
        a - 2.0
    }
}

/// 24 rows of 512: zeros, a constant, one-signed rows, outliers, values
/// small enough for f16-subnormal scales, large values, all-zero
/// sub-blocks, and scaled/offset noise.
pub(crate) fn test_input() -> Vec<f32> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut x = vec![0f32; ROWS * COLS];
    for r in 0..ROWS {
        for i in 0..COLS {
            let v = rng.normalish();
            x[r * COLS + i] = match r {
                0 => 0.0,
                1 => 0.5,
                2 => -v.abs() - 0.001,
                3 => v.abs() + 0.25,
                4 => {
                    if i == 77 || i == 300 {
                        1000.0
                    } else {
                        v * 0.01
                    }
                }
                5 => v * 1e-6,
                6 => v * 1e4,
                7 => {
                    if i % 64 < 32 {
                        0.0
                    } else {
                        v
                    }
                }
                8 => {
                    if i % 16 == 3 {
                        -v * 50.0
                    } else {
                        v
                    }
                }
                _ => {
                    let sc = (1u32 << (r % 7)) as f32 / 8.0 * (1.0 + r as f32 / 10.0);
                    v * sc + if r % 3 == 0 { 0.3 * sc } else { 0.0 }
                }
            };
        }
    }
    x
}

fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn f32_bytes(x: &[f32]) -> impl Iterator<Item = u8> + '_ {
    x.iter().flat_map(|v| v.to_le_bytes())
}

/// (type, hash of ggml's quantized bytes, hash of ggml's dequantization).
const GGML_ANSWERS: &[(GgmlType, u64, Option<u64>)] = &[
    (F16, 0xe92ac40a04f78334, Some(0x7f1079e365d7fc22)),
    (BF16, 0x38218e26f00e331c, Some(0xa77da34bf58e2394)),
    (Q4_0, 0x7fa88562fe5f07e5, Some(0xb862c9ca1447c56e)),
    (Q4_1, 0x5774bfe5320c7ac9, Some(0xb17e92365b31b737)),
    (Q5_0, 0x67f289045f2b8ee9, Some(0xe27f6f118498d914)),
    (Q5_1, 0xb249c71e39b095b4, Some(0xba26bd91e485377a)),
    (Q8_0, 0x706c799cd11250f7, Some(0x7ee65a06a7d02e40)),
    (Q8_1, 0x9c79f826a8d30834, None),
    (Q2_K, 0x5232bf75fab1b5ee, Some(0x23bca1f7463787cf)),
    (Q3_K, 0x9a1b0d26640bf85b, Some(0x485d8ce2e6c9f215)),
    (Q4_K, 0xb730fceffd8cbea8, Some(0x57358c87783c5475)),
    (Q5_K, 0x64b0da06ee63ae24, Some(0xdb9b4fd601c39fd6)),
    (Q6_K, 0xca381181425bcb03, Some(0x8db287f3247a27a2)),
    (Q8_K, 0x846ad28a8440903a, Some(0xd36eeaf059e9052a)),
];

#[test]
fn input_generator_matches_the_oracles() {
    assert_eq!(fnv1a(f32_bytes(&test_input())), 0xc325ed30a7622414);
}

#[test]
fn reference_quantizers_and_dequantizers_are_bit_exact_with_ggml() {
    let x = test_input();
    let mut failures = Vec::new();
    for &(ty, q_hash, dq_hash) in GGML_ANSWERS {
        let mut q = vec![0u8; row_size(ty, x.len()).unwrap()];
        quantize_row_ref(ty, &x, &mut q).unwrap();
        let got = fnv1a(q.iter().copied());
        if got != q_hash {
            failures.push(format!("{ty} quantize: {got:#018x} != {q_hash:#018x}"));
        }
        if let Some(dq_hash) = dq_hash {
            let mut y = vec![0f32; x.len()];
            dequantize_row(ty, &q, &mut y).unwrap();
            let got = fnv1a(f32_bytes(&y));
            if got != dq_hash {
                failures.push(format!("{ty} dequantize: {got:#018x} != {dq_hash:#018x}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn f32_round_trips_exactly() {
    let x = test_input();
    let mut q = vec![0u8; x.len() * 4];
    quantize_row_ref(F32, &x, &mut q).unwrap();
    let mut y = vec![0f32; x.len()];
    dequantize_row(F32, &q, &mut y).unwrap();
    assert_eq!(x, y);
}

// ---------------------------------------------------------------------------
// ggml test-quantize-fns: same data, same metrics, same bounds.

fn generate_data(offset: f32, n: usize, amplitude: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (0.1 + amplitude as f64 * ((i as f32 + offset).cos()) as f64) as f32)
        .collect()
}

fn array_rmse(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = (x - y) as f64;
            d * d
        })
        .sum();
    (sum.sqrt() as f32) / a.len() as f32
}

fn max_total_error(ty: GgmlType) -> f32 {
    match ty {
        Q2_K => 0.0075,
        Q3_K => 0.0040,
        _ => 0.002,
    }
}

fn max_dot_error(ty: GgmlType) -> f32 {
    match ty {
        Q2_K => 0.04,
        _ => 0.02,
    }
}

fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; row_size(ty, x.len()).unwrap()];
    quantize_row_ref(ty, x, &mut q).unwrap();
    q
}

/// Copies bytes into a buffer aligned for any block struct.
fn aligned<B: kernels::blocks::Block>(bytes: &[u8]) -> Vec<B> {
    let size = std::mem::size_of::<B>();
    assert_eq!(bytes.len() % size, 0);
    let mut out: Vec<B> = Vec::with_capacity(bytes.len() / size);
    // SAFETY: `Block` types accept any bit pattern; the capacity holds
    // exactly bytes.len() bytes and the length is set after the copy.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr() as *mut u8, bytes.len());
        out.set_len(bytes.len() / size);
    }
    out
}

/// The dot product through the kernels crate's vec_dot for the pair.
fn kernel_dot(ty: GgmlType, qx: &[u8], qy: &[u8]) -> f32 {
    use kernels::*;
    let u16s = |b: &[u8]| -> Vec<u16> {
        b.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    };
    match ty {
        F32 => {
            let f = |b: &[u8]| -> Vec<f32> {
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            vec_dot_f32(&f(qx), &f(qy))
        }
        F16 => vec_dot_f16(&u16s(qx), &u16s(qy)),
        BF16 => vec_dot_bf16(&u16s(qx), &u16s(qy)),
        Q4_0 => vec_dot_q4_0_q8_0(&aligned(qx), &aligned(qy)),
        Q4_1 => vec_dot_q4_1_q8_1(&aligned(qx), &aligned(qy)),
        Q5_0 => vec_dot_q5_0_q8_0(&aligned(qx), &aligned(qy)),
        Q5_1 => vec_dot_q5_1_q8_1(&aligned(qx), &aligned(qy)),
        Q8_0 => vec_dot_q8_0_q8_0(&aligned(qx), &aligned(qy)),
        Q2_K => vec_dot_q2_k_q8_k(&aligned(qx), &aligned(qy)),
        Q3_K => vec_dot_q3_k_q8_k(&aligned(qx), &aligned(qy)),
        Q4_K => vec_dot_q4_k_q8_k(&aligned(qx), &aligned(qy)),
        Q5_K => vec_dot_q5_k_q8_k(&aligned(qx), &aligned(qy)),
        Q6_K => vec_dot_q6_k_q8_k(&aligned(qx), &aligned(qy)),
        other => panic!("no vec_dot for {other}"),
    }
}

#[test]
fn quantization_errors_are_within_ggml_test_quantize_fns_bounds() {
    let n = 32 * 128;
    let x = generate_data(0.0, n, 2.0);
    let y = generate_data(1.0, n, 2.0);
    let dot_ref: f64 = x.iter().zip(&y).map(|(&a, &b)| (a * b) as f64).sum();
    let mut report = Vec::new();
    for t in TYPE_TABLE.iter() {
        let ty = t.ty;
        if matches!(ty, Q8_1 | Q8_K) {
            continue; // activation formats: no vec_dot of their own in ggml
        }
        let q = quantize(ty, &x);
        let mut back = vec![0f32; n];
        dequantize_row(ty, &q, &mut back).unwrap();
        let total = array_rmse(&x, &back);
        assert!(
            total < max_total_error(ty),
            "{ty} total error {total} >= {}",
            max_total_error(ty)
        );

        let qy = quantize(t.vec_dot_type, &y);
        let dot = kernel_dot(ty, &q, &qy);
        let dot_err = ((dot as f64 - dot_ref).abs() / n as f64) as f32;
        assert!(
            dot_err < max_dot_error(ty),
            "{ty} dot product error {dot_err} >= {}",
            max_dot_error(ty)
        );
        report.push(format!("{ty}: rmse {total:.6} dot {dot_err:.6}"));
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn dequantizers_agree_with_the_kernels_crate() {
    // Two independent implementations of ggml's dequantize_row_*: they must
    // agree bit for bit on every quantized row of the test input.
    let x = test_input();
    for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K] {
        let q = quantize(ty, &x);
        let mut ours = vec![0f32; x.len()];
        dequantize_row(ty, &q, &mut ours).unwrap();
        let mut theirs = vec![0f32; x.len()];
        match ty {
            Q4_0 => kernels::scalar::dequantize_row_q4_0(&aligned(&q), &mut theirs),
            Q4_1 => kernels::scalar::dequantize_row_q4_1(&aligned(&q), &mut theirs),
            Q5_0 => kernels::scalar::dequantize_row_q5_0(&aligned(&q), &mut theirs),
            Q5_1 => kernels::scalar::dequantize_row_q5_1(&aligned(&q), &mut theirs),
            Q8_0 => kernels::scalar::dequantize_row_q8_0(&aligned(&q), &mut theirs),
            Q2_K => kernels::scalar::dequantize_row_q2_k(&aligned(&q), &mut theirs),
            Q3_K => kernels::scalar::dequantize_row_q3_k(&aligned(&q), &mut theirs),
            Q4_K => kernels::scalar::dequantize_row_q4_k(&aligned(&q), &mut theirs),
            Q5_K => kernels::scalar::dequantize_row_q5_k(&aligned(&q), &mut theirs),
            _ => kernels::scalar::dequantize_row_q6_k(&aligned(&q), &mut theirs),
        }
        let same = ours
            .iter()
            .zip(&theirs)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{ty}: quant and kernels dequantize differently");
    }
}

#[test]
fn activation_quantizers_agree_with_the_kernels_crate() {
    let x = test_input();
    let q = quantize(Q8_0, &x);
    let mut k = vec![kernels::blocks::BlockQ8_0 { d: 0, qs: [0; 32] }; x.len() / 32];
    kernels::scalar::quantize_row_q8_0(&x, &mut k);
    assert_eq!(kernels::blocks::block_bytes(&k), &q[..], "Q8_0");

    let q = quantize(Q8_1, &x);
    let mut k = vec![
        kernels::blocks::BlockQ8_1 {
            d: 0,
            s: 0,
            qs: [0; 32]
        };
        x.len() / 32
    ];
    kernels::scalar::quantize_row_q8_1(&x, &mut k);
    assert_eq!(kernels::blocks::block_bytes(&k), &q[..], "Q8_1");
}

#[test]
fn conversions_agree_with_half_and_kernels_on_many_values() {
    let mut rng = XorShift(12345);
    for _ in 0..200_000 {
        let x = f32::from_bits(rng.next() as u32);
        if x.is_nan() {
            continue;
        }
        assert_eq!(f32_to_f16(x), kernels::scalar::f32_to_f16(x), "{x:e}");
        assert_eq!(f32_to_bf16(x), kernels::scalar::f32_to_bf16(x), "{x:e}");
    }
}
