//! Property-based differential tests of every dispatched kernel of the
//! `kernels` crate: the top-level (dispatched) function and every kernel
//! table this CPU can run (`kernels::available()`: scalar, AVX2, NEON,
//! NEON dot-product) against the scalar reference `kernels::scalar::*`.
//!
//! The seeded tests inside `kernels/src/tests.rs` run dependency-free under
//! qemu in CI; these add proptest's case generation and shrinking on top:
//! block counts (1 block, odd counts, realistic rows), f16 scales (zero,
//! negative zero, negative, subnormal, the largest finite value), outlier
//! patterns (one huge element per block, all-zero blocks, exact rounding
//! ties) and arbitrary bit patterns for the conversions.
//!
//! Tolerances are the ones stated and justified in `kernels/src/tests.rs`,
//! with the same formulas:
//! - dequantize_row_*, quantize_row_q8_*, f16/bf16 rows, axpy, scale, mul,
//!   add, rms_norm, rope_*: bit-identical.
//! - Integer dot products with unit scales (d = 1, min = 1, small
//!   activations so every partial sum is an integer below 2^24): exact.
//! - Quantized dot products with real scales: |a - b| <= (2 nb + 24) eps M,
//!   M = sum_k (|w_k| + 2 |min_k|) |a_k| (+ 2 |m| |s| per block for the
//!   Q8_1 pairings). Where the reference is infinite or NaN (a Q8_1 block's
//!   f16 d*sum overflowed), the same value in any summation order.
//! - vec_dot_f32/f16/bf16: (n/32 + 16) eps sum|x y| + 1e-37.
//! - softmax: relative (n/8 + 32) eps per element + 1e-37.
//! - silu / gelu: 16 eps |x| + 1e-37; swiglu / geglu: that times |up|
//!   + 1e-37.
//!
//! `gelu_ggml` / `geglu_ggml` are scalar on every ISA (not dispatched), so
//! they have nothing to differ from here.

use kernels::scalar;
use kernels::*;
use proptest::prelude::*;
use proptest::test_runner::Config;

const EPS: f64 = f32::EPSILON as f64;
const F16_ONE: u16 = 0x3c00;

/// Every table to check: each detected ISA (scalar first) and, through the
/// top-level functions, the dispatched one.
fn tables() -> Vec<&'static Kernels> {
    kernels::available()
}

fn cfg(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------
// Strategies

/// A finite f16 scale with the edge cases: +-0, subnormals, the largest
/// finite value, any finite value, and typical small weights scales.
fn f16_scale() -> impl Strategy<Value = u16> {
    let mag = prop_oneof![
        1 => Just(0u16),
        1 => Just(0x7bffu16),
        2 => 1u16..0x400,
        2 => 0u16..0x7c00,
        6 => 0x1400u16..0x2c00,
    ];
    (any::<bool>(), mag).prop_map(|(neg, m)| if neg { m | 0x8000 } else { m })
}

/// Block counts: one block, odd counts, and a realistic row.
fn block_count(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => Just(1usize),
        4 => (1usize..=(max.min(9))).prop_map(|n| n | 1),
        3 => 1usize..=max,
        1 => Just(max),
    ]
}

fn byte_array<const N: usize>() -> impl Strategy<Value = [u8; N]> {
    proptest::collection::vec(any::<u8>(), N).prop_map(|v| {
        let mut a = [0u8; N];
        a.copy_from_slice(&v);
        a
    })
}

fn i8_array<const N: usize>(lo: i8, hi: i8) -> impl Strategy<Value = [i8; N]> {
    proptest::collection::vec(lo..=hi, N).prop_map(|v| {
        let mut a = [0i8; N];
        a.copy_from_slice(&v);
        a
    })
}

/// One float of a row at magnitude `s`: mostly normal values, with
/// outliers, signed zeros and exact .5 ties.
fn element(s: f32) -> impl Strategy<Value = f32> {
    prop_oneof![
        30 => (-1.0f32..1.0).prop_map(move |v| v * s),
        1 => (10.0f32..1000.0, any::<bool>()).prop_map(move |(v, n)| if n { -v * s } else { v * s }),
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => (-20i32..20).prop_map(move |k| (k as f32 + 0.5) * s),
    ]
}

/// How a row is laid out, block by block.
#[derive(Clone, Copy, Debug)]
enum Pattern {
    /// Independent elements.
    Plain,
    /// One huge element per block (sets the block's scale).
    OutlierPerBlock,
    /// Every other block all zeros.
    ZeroBlocks,
    /// Values k/2 with one +-127 per block: d = 1, every .5 is a rounding tie.
    Ties,
}

fn pattern() -> impl Strategy<Value = Pattern> {
    prop_oneof![
        3 => Just(Pattern::Plain),
        1 => Just(Pattern::OutlierPerBlock),
        1 => Just(Pattern::ZeroBlocks),
        1 => Just(Pattern::Ties),
    ]
}

/// A row of `nb * block` floats for the quantizers, whose outputs are
/// compared bit for bit: magnitudes from 1e-30 to 1e33 (scales that
/// underflow or overflow f16 included).
fn row(nb: usize, block: usize) -> impl Strategy<Value = Vec<f32>> {
    let scale = prop_oneof![
        Just(1e-30f32),
        Just(1e-3f32),
        Just(0.1f32),
        Just(1.0f32),
        Just(30.0f32),
        Just(1e30f32),
    ];
    row_at(nb, block, scale)
}

/// A row of activations for the dot products: magnitudes that keep every
/// product and sum finite (the tolerance bound assumes no overflow; the
/// quantizers are checked on the extreme magnitudes separately).
fn act_row(nb: usize, block: usize) -> impl Strategy<Value = Vec<f32>> {
    let scale = prop_oneof![
        Just(1e-30f32),
        Just(1e-3f32),
        Just(0.1f32),
        Just(1.0f32),
        Just(30.0f32),
    ];
    // Clamped so the quantized f16 scale (amax / 127) stays finite: an
    // infinite scale yields 0 * inf terms whose NaN or inf depends on the
    // order of evaluation, which no two implementations need to share.
    row_at(nb, block, scale).prop_map(|mut v| {
        v.iter_mut().for_each(|x| *x = x.clamp(-1e6, 1e6));
        v
    })
}

fn row_at(
    nb: usize,
    block: usize,
    scale: impl Strategy<Value = f32>,
) -> impl Strategy<Value = Vec<f32>> {
    (scale, pattern(), any::<u64>()).prop_flat_map(move |(s, p, salt)| {
        proptest::collection::vec(element(s), nb * block).prop_map(move |mut v| {
            for (b, chunk) in v.chunks_mut(block).enumerate() {
                let at = (salt as usize).wrapping_add(b * 7) % block;
                match p {
                    Pattern::Plain => {}
                    Pattern::OutlierPerBlock => chunk[at] = -chunk[at].abs().max(s) * 1e3,
                    Pattern::ZeroBlocks => {
                        if b % 2 == 0 {
                            chunk.iter_mut().for_each(|x| *x = 0.0);
                        }
                    }
                    Pattern::Ties => {
                        for (i, x) in chunk.iter_mut().enumerate() {
                            *x = ((i as i32 + b as i32) % 200 - 100) as f32 * 0.5;
                        }
                        chunk[at] = if salt & 1 == 0 { 127.0 } else { -127.0 };
                    }
                }
            }
            v
        })
    })
}

/// A float row of any length (not block bound) for the vector ops.
fn free_row() -> impl Strategy<Value = Vec<f32>> {
    let len = prop_oneof![
        1 => Just(0usize),
        2 => 1usize..=9,
        2 => 10usize..=80,
        1 => Just(576usize),
        1 => 1000usize..=2100,
    ];
    let scale = prop_oneof![Just(1e-3f32), Just(0.1f32), Just(1.0f32), Just(30.0f32)];
    (len, scale).prop_flat_map(|(n, s)| proptest::collection::vec(element(s), n))
}

// ---------------------------------------------------------------------------
// Random blocks

fn q4_0() -> impl Strategy<Value = BlockQ4_0> {
    (f16_scale(), byte_array::<16>()).prop_map(|(d, qs)| BlockQ4_0 { d, qs })
}
fn q4_1() -> impl Strategy<Value = BlockQ4_1> {
    (f16_scale(), f16_scale(), byte_array::<16>()).prop_map(|(d, m, qs)| BlockQ4_1 { d, m, qs })
}
fn q5_0() -> impl Strategy<Value = BlockQ5_0> {
    (f16_scale(), byte_array::<4>(), byte_array::<16>()).prop_map(|(d, qh, qs)| BlockQ5_0 {
        d,
        qh,
        qs,
    })
}
fn q5_1() -> impl Strategy<Value = BlockQ5_1> {
    (
        f16_scale(),
        f16_scale(),
        byte_array::<4>(),
        byte_array::<16>(),
    )
        .prop_map(|(d, m, qh, qs)| BlockQ5_1 { d, m, qh, qs })
}
/// Q8_0 as a weight: the full i8 range, -128 included.
fn q8_0_w() -> impl Strategy<Value = BlockQ8_0> {
    (f16_scale(), i8_array::<32>(-128, 127)).prop_map(|(d, qs)| BlockQ8_0 { d, qs })
}
fn q2_k() -> impl Strategy<Value = BlockQ2K> {
    (
        byte_array::<16>(),
        byte_array::<64>(),
        f16_scale(),
        f16_scale(),
    )
        .prop_map(|(scales, qs, d, dmin)| BlockQ2K {
            scales,
            qs,
            d,
            dmin,
        })
}
fn q3_k() -> impl Strategy<Value = BlockQ3K> {
    (
        byte_array::<32>(),
        byte_array::<64>(),
        byte_array::<12>(),
        f16_scale(),
    )
        .prop_map(|(hmask, qs, scales, d)| BlockQ3K {
            hmask,
            qs,
            scales,
            d,
        })
}
fn q4_k() -> impl Strategy<Value = BlockQ4K> {
    (
        f16_scale(),
        f16_scale(),
        byte_array::<12>(),
        byte_array::<128>(),
    )
        .prop_map(|(d, dmin, scales, qs)| BlockQ4K {
            d,
            dmin,
            scales,
            qs,
        })
}
fn q5_k() -> impl Strategy<Value = BlockQ5K> {
    (
        f16_scale(),
        f16_scale(),
        byte_array::<12>(),
        byte_array::<32>(),
        byte_array::<128>(),
    )
        .prop_map(|(d, dmin, scales, qh, qs)| BlockQ5K {
            d,
            dmin,
            scales,
            qh,
            qs,
        })
}
fn q6_k() -> impl Strategy<Value = BlockQ6K> {
    (
        byte_array::<128>(),
        byte_array::<64>(),
        i8_array::<16>(-128, 127),
        f16_scale(),
    )
        .prop_map(|(ql, qh, scales, d)| BlockQ6K { ql, qh, scales, d })
}

/// Q8_0 activations: either quantized from a row, or raw (-127..=127 as
/// ggml's quantizer produces) with edge-case scales.
fn q8_0_acts(nb: usize) -> impl Strategy<Value = Vec<BlockQ8_0>> {
    let raw = proptest::collection::vec(
        (f16_scale(), i8_array::<32>(-127, 127)).prop_map(|(d, qs)| BlockQ8_0 { d, qs }),
        nb,
    );
    let quantized = act_row(nb, QK8_0).prop_map(move |x| {
        let mut y = vec![BlockQ8_0 { d: 0, qs: [0; 32] }; nb];
        scalar::quantize_row_q8_0(&x, &mut y);
        y
    });
    prop_oneof![raw, quantized]
}

fn q8_1_acts(nb: usize) -> impl Strategy<Value = Vec<BlockQ8_1>> {
    let raw =
        proptest::collection::vec(
            (f16_scale(), f16_scale(), i8_array::<32>(-127, 127))
                .prop_map(|(d, s, qs)| BlockQ8_1 { d, s, qs }),
            nb,
        );
    let quantized = act_row(nb, QK8_1).prop_map(move |x| {
        let mut y = vec![
            BlockQ8_1 {
                d: 0,
                s: 0,
                qs: [0; 32]
            };
            nb
        ];
        scalar::quantize_row_q8_1(&x, &mut y);
        y
    });
    prop_oneof![raw, quantized]
}

/// Q8_K activations only come from the quantizer (d is f32 and the
/// bsums must match the quants).
fn q8_k_acts(nb: usize) -> impl Strategy<Value = Vec<BlockQ8K>> {
    act_row(nb, QK_K).prop_map(move |x| {
        let mut y = vec![empty_q8k(); nb];
        scalar::quantize_row_q8_k(&x, &mut y);
        y
    })
}

fn empty_q8k() -> BlockQ8K {
    BlockQ8K {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; 16],
    }
}

// ---------------------------------------------------------------------------
// Dot-product checking

fn f16v(h: u16) -> f64 {
    scalar::f16_to_f32(h) as f64
}

/// What the tolerance needs from a weight block: its largest possible
/// offset ("min") magnitude; 0 for symmetric formats.
trait WeightBlock: Copy + std::fmt::Debug {
    const PER_BLOCK: usize;
    fn min_bound(&self) -> f64 {
        0.0
    }
    fn dequant(x: &[Self], y: &mut [f32]);
}
macro_rules! weight_block {
    ($t:ty, $per:expr, $deq:ident, |$b:ident| $min:expr) => {
        impl WeightBlock for $t {
            const PER_BLOCK: usize = $per;
            fn min_bound(&self) -> f64 {
                let $b = self;
                $min
            }
            fn dequant(x: &[Self], y: &mut [f32]) {
                scalar::$deq(x, y)
            }
        }
    };
}
weight_block!(BlockQ4_0, 32, dequantize_row_q4_0, |_b| 0.0);
weight_block!(BlockQ4_1, 32, dequantize_row_q4_1, |b| f16v(b.m).abs());
weight_block!(BlockQ5_0, 32, dequantize_row_q5_0, |_b| 0.0);
weight_block!(BlockQ5_1, 32, dequantize_row_q5_1, |b| f16v(b.m).abs());
weight_block!(BlockQ8_0, 32, dequantize_row_q8_0, |_b| 0.0);
weight_block!(BlockQ2K, QK_K, dequantize_row_q2_k, |b| f16v(b.dmin).abs()
    * 15.0);
weight_block!(BlockQ3K, QK_K, dequantize_row_q3_k, |_b| 0.0);
weight_block!(BlockQ4K, QK_K, dequantize_row_q4_k, |b| f16v(b.dmin).abs()
    * 63.0);
weight_block!(BlockQ5K, QK_K, dequantize_row_q5_k, |b| f16v(b.dmin).abs()
    * 63.0);
weight_block!(BlockQ6K, QK_K, dequantize_row_q6_k, |_b| 0.0);

/// Activation values and |s| (the stored d*sum of Q8_1 blocks).
trait ActBlock: Copy {
    fn values(y: &[Self]) -> Vec<f64>;
    fn s_abs(&self) -> f64 {
        0.0
    }
}
impl ActBlock for BlockQ8_0 {
    fn values(y: &[Self]) -> Vec<f64> {
        y.iter()
            .flat_map(|b| b.qs.iter().map(move |&q| q as f64 * f16v(b.d)))
            .collect()
    }
}
impl ActBlock for BlockQ8_1 {
    fn values(y: &[Self]) -> Vec<f64> {
        y.iter()
            .flat_map(|b| b.qs.iter().map(move |&q| q as f64 * f16v(b.d)))
            .collect()
    }
    fn s_abs(&self) -> f64 {
        f16v(self.s).abs()
    }
}
impl ActBlock for BlockQ8K {
    fn values(y: &[Self]) -> Vec<f64> {
        y.iter()
            .flat_map(|b| b.qs.iter().map(move |&q| q as f64 * b.d as f64))
            .collect()
    }
}

/// M of the tolerance formula: bounds every partial sum of either side.
fn dot_magnitude<B: WeightBlock, A: ActBlock>(x: &[B], y: &[A]) -> f64 {
    let mut w = vec![0.0f32; x.len() * B::PER_BLOCK];
    B::dequant(x, &mut w);
    let a = A::values(y);
    let mut m = 0.0f64;
    for (k, (&wk, &ak)) in w.iter().zip(&a).enumerate() {
        m += ((wk as f64).abs() + 2.0 * x[k / B::PER_BLOCK].min_bound()) * ak.abs();
    }
    for (xb, yb) in x.iter().zip(y) {
        m += 2.0 * xb.min_bound() * yb.s_abs();
    }
    m
}

type Dot<B, A> = fn(&[B], &[A]) -> f32;

/// Every table and the dispatched function against the scalar reference,
/// within (2 nb + 24) eps M.
fn check_dot<B: WeightBlock, A: ActBlock>(
    name: &str,
    x: &[B],
    y: &[A],
    dispatched: Dot<B, A>,
    reference: Dot<B, A>,
    get: fn(&Kernels) -> Dot<B, A>,
) -> Result<(), TestCaseError> {
    let want = reference(x, y);
    let mag = dot_magnitude(x, y);
    let tol = (2 * x.len() + 24) as f64 * EPS * mag + f32::MIN_POSITIVE as f64;
    let mut impls: Vec<(&str, Dot<B, A>)> = vec![("dispatched", dispatched)];
    for k in tables() {
        impls.push((k.name, get(k)));
    }
    for (label, f) in impls {
        let got = f(x, y);
        if !want.is_finite() {
            // An infinite term (e.g. a Q8_1 block whose f16 d*sum
            // overflowed) decides the result in any summation order.
            prop_assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{} [{}] nb={}: got {} want {}",
                name,
                label,
                x.len(),
                got,
                want
            );
            continue;
        }
        let diff = (got as f64 - want as f64).abs();
        prop_assert!(
            diff <= tol,
            "{} [{}] nb={}: got {} want {} (diff {:e} > tol {:e})",
            name,
            label,
            x.len(),
            got,
            want,
            diff,
            tol
        );
    }
    Ok(())
}

/// With unit scales every partial sum in every order is an integer; when
/// M < 2^24 they are all exact in f32, so every implementation must return
/// exactly the reference's value.
fn check_dot_exact<B: WeightBlock, A: ActBlock>(
    name: &str,
    x: &[B],
    y: &[A],
    dispatched: Dot<B, A>,
    reference: Dot<B, A>,
    get: fn(&Kernels) -> Dot<B, A>,
) -> Result<(), TestCaseError> {
    let mag = dot_magnitude(x, y);
    // The strategies keep activations small enough for this to hold.
    assert!(
        mag < (1u32 << 24) as f64,
        "{name}: test case too large for exactness ({mag})"
    );
    let want = reference(x, y);
    prop_assert_eq!(want.fract(), 0.0, "{}: reference not integral", name);
    let mut impls: Vec<(&str, Dot<B, A>)> = vec![("dispatched", dispatched)];
    for k in tables() {
        impls.push((k.name, get(k)));
    }
    for (label, f) in impls {
        let got = f(x, y);
        prop_assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{} [{}]: {} vs {}",
            name,
            label,
            got,
            want
        );
    }
    Ok(())
}

// Weight and activation strategies of one pairing with the same block count.
fn simple_pair<B: std::fmt::Debug + 'static, A: std::fmt::Debug>(
    w: BoxedStrategy<B>,
    acts: fn(usize) -> BoxedStrategy<Vec<A>>,
) -> impl Strategy<Value = (Vec<B>, Vec<A>)> {
    block_count(64).prop_flat_map(move |nb| (proptest::collection::vec(w.clone(), nb), acts(nb)))
}

fn boxed_q8_0(nb: usize) -> BoxedStrategy<Vec<BlockQ8_0>> {
    q8_0_acts(nb).boxed()
}
fn boxed_q8_1(nb: usize) -> BoxedStrategy<Vec<BlockQ8_1>> {
    q8_1_acts(nb).boxed()
}

fn k_pair<B: std::fmt::Debug + 'static>(
    w: BoxedStrategy<B>,
) -> impl Strategy<Value = (Vec<B>, Vec<BlockQ8K>)> {
    block_count(8)
        .prop_flat_map(move |nb| (proptest::collection::vec(w.clone(), nb), q8_k_acts(nb)))
}

proptest! {
    #![proptest_config(cfg(96))]

    #[test]
    fn vec_dot_q4_0_q8_0_matches_scalar((x, y) in simple_pair(q4_0().boxed(), boxed_q8_0)) {
        check_dot("vec_dot_q4_0_q8_0", &x, &y, kernels::vec_dot_q4_0_q8_0,
            scalar::vec_dot_q4_0_q8_0, |k| k.vec_dot_q4_0_q8_0)?;
    }

    #[test]
    fn vec_dot_q4_1_q8_1_matches_scalar((x, y) in simple_pair(q4_1().boxed(), boxed_q8_1)) {
        check_dot("vec_dot_q4_1_q8_1", &x, &y, kernels::vec_dot_q4_1_q8_1,
            scalar::vec_dot_q4_1_q8_1, |k| k.vec_dot_q4_1_q8_1)?;
    }

    #[test]
    fn vec_dot_q5_0_q8_0_matches_scalar((x, y) in simple_pair(q5_0().boxed(), boxed_q8_0)) {
        check_dot("vec_dot_q5_0_q8_0", &x, &y, kernels::vec_dot_q5_0_q8_0,
            scalar::vec_dot_q5_0_q8_0, |k| k.vec_dot_q5_0_q8_0)?;
    }

    #[test]
    fn vec_dot_q5_1_q8_1_matches_scalar((x, y) in simple_pair(q5_1().boxed(), boxed_q8_1)) {
        check_dot("vec_dot_q5_1_q8_1", &x, &y, kernels::vec_dot_q5_1_q8_1,
            scalar::vec_dot_q5_1_q8_1, |k| k.vec_dot_q5_1_q8_1)?;
    }

    #[test]
    fn vec_dot_q8_0_q8_0_matches_scalar((x, y) in simple_pair(q8_0_w().boxed(), boxed_q8_0)) {
        check_dot("vec_dot_q8_0_q8_0", &x, &y, kernels::vec_dot_q8_0_q8_0,
            scalar::vec_dot_q8_0_q8_0, |k| k.vec_dot_q8_0_q8_0)?;
    }

    #[test]
    fn vec_dot_q2_k_q8_k_matches_scalar((x, y) in k_pair(q2_k().boxed())) {
        check_dot("vec_dot_q2_k_q8_k", &x, &y, kernels::vec_dot_q2_k_q8_k,
            scalar::vec_dot_q2_k_q8_k, |k| k.vec_dot_q2_k_q8_k)?;
    }

    #[test]
    fn vec_dot_q3_k_q8_k_matches_scalar((x, y) in k_pair(q3_k().boxed())) {
        check_dot("vec_dot_q3_k_q8_k", &x, &y, kernels::vec_dot_q3_k_q8_k,
            scalar::vec_dot_q3_k_q8_k, |k| k.vec_dot_q3_k_q8_k)?;
    }

    #[test]
    fn vec_dot_q4_k_q8_k_matches_scalar((x, y) in k_pair(q4_k().boxed())) {
        check_dot("vec_dot_q4_k_q8_k", &x, &y, kernels::vec_dot_q4_k_q8_k,
            scalar::vec_dot_q4_k_q8_k, |k| k.vec_dot_q4_k_q8_k)?;
    }

    #[test]
    fn vec_dot_q5_k_q8_k_matches_scalar((x, y) in k_pair(q5_k().boxed())) {
        check_dot("vec_dot_q5_k_q8_k", &x, &y, kernels::vec_dot_q5_k_q8_k,
            scalar::vec_dot_q5_k_q8_k, |k| k.vec_dot_q5_k_q8_k)?;
    }

    #[test]
    fn vec_dot_q6_k_q8_k_matches_scalar((x, y) in k_pair(q6_k().boxed())) {
        check_dot("vec_dot_q6_k_q8_k", &x, &y, kernels::vec_dot_q6_k_q8_k,
            scalar::vec_dot_q6_k_q8_k, |k| k.vec_dot_q6_k_q8_k)?;
    }
}

// ---------------------------------------------------------------------------
// Integer dot products with unit scales: exact

/// Unit-scale activations with quants in -lim..=lim.
fn unit_q8_0(nb: usize, lim: i8) -> impl Strategy<Value = Vec<BlockQ8_0>> {
    proptest::collection::vec(
        i8_array::<32>(-lim, lim).prop_map(|qs| BlockQ8_0 { d: F16_ONE, qs }),
        nb,
    )
}
fn unit_q8_1(nb: usize, lim: i8) -> impl Strategy<Value = Vec<BlockQ8_1>> {
    proptest::collection::vec(
        i8_array::<32>(-lim, lim).prop_map(|qs| BlockQ8_1 {
            d: F16_ONE,
            s: scalar::f32_to_f16(qs.iter().map(|&q| q as f32).sum()),
            qs,
        }),
        nb,
    )
}
fn unit_q8_k(nb: usize, lim: i8) -> impl Strategy<Value = Vec<BlockQ8K>> {
    proptest::collection::vec(
        i8_array::<QK_K>(-lim, lim).prop_map(|qs| {
            let mut bsums = [0i16; 16];
            for (j, s) in bsums.iter_mut().enumerate() {
                *s = qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
            }
            BlockQ8K { d: 1.0, qs, bsums }
        }),
        nb,
    )
}

/// Unit-scale weights and activations of one simple pairing, up to 16
/// blocks with |a| <= 16: M <= 128 * 16 * 32 * 16 < 2^24.
fn unit_simple<B: std::fmt::Debug + 'static, A: std::fmt::Debug + 'static>(
    w: BoxedStrategy<B>,
    fix: fn(&mut B),
    acts: fn(usize, i8) -> BoxedStrategy<Vec<A>>,
) -> impl Strategy<Value = (Vec<B>, Vec<A>)> {
    (
        block_count(16),
        prop_oneof![Just(1i8), Just(8i8), Just(16i8)],
    )
        .prop_flat_map(move |(nb, lim)| {
            (
                proptest::collection::vec(w.clone(), nb).prop_map(move |mut v| {
                    v.iter_mut().for_each(fix);
                    v
                }),
                acts(nb, lim),
            )
        })
}

fn boxed_unit_q8_0(nb: usize, lim: i8) -> BoxedStrategy<Vec<BlockQ8_0>> {
    unit_q8_0(nb, lim).boxed()
}
fn boxed_unit_q8_1(nb: usize, lim: i8) -> BoxedStrategy<Vec<BlockQ8_1>> {
    unit_q8_1(nb, lim).boxed()
}

proptest! {
    #![proptest_config(cfg(64))]

    #[test]
    fn vec_dot_q4_0_exact_with_unit_scales((x, y) in unit_simple(q4_0().boxed(), |b| b.d = F16_ONE, boxed_unit_q8_0)) {
        check_dot_exact("vec_dot_q4_0_q8_0", &x, &y, kernels::vec_dot_q4_0_q8_0, scalar::vec_dot_q4_0_q8_0, |k| k.vec_dot_q4_0_q8_0)?;
    }

    #[test]
    fn vec_dot_q4_1_exact_with_unit_scales((x, y) in unit_simple(q4_1().boxed(), |b| { b.d = F16_ONE; b.m = F16_ONE; }, boxed_unit_q8_1)) {
        check_dot_exact("vec_dot_q4_1_q8_1", &x, &y, kernels::vec_dot_q4_1_q8_1, scalar::vec_dot_q4_1_q8_1, |k| k.vec_dot_q4_1_q8_1)?;
    }

    #[test]
    fn vec_dot_q5_0_exact_with_unit_scales((x, y) in unit_simple(q5_0().boxed(), |b| b.d = F16_ONE, boxed_unit_q8_0)) {
        check_dot_exact("vec_dot_q5_0_q8_0", &x, &y, kernels::vec_dot_q5_0_q8_0, scalar::vec_dot_q5_0_q8_0, |k| k.vec_dot_q5_0_q8_0)?;
    }

    #[test]
    fn vec_dot_q5_1_exact_with_unit_scales((x, y) in unit_simple(q5_1().boxed(), |b| { b.d = F16_ONE; b.m = F16_ONE; }, boxed_unit_q8_1)) {
        check_dot_exact("vec_dot_q5_1_q8_1", &x, &y, kernels::vec_dot_q5_1_q8_1, scalar::vec_dot_q5_1_q8_1, |k| k.vec_dot_q5_1_q8_1)?;
    }

    #[test]
    fn vec_dot_q8_0_exact_with_unit_scales((x, y) in unit_simple(q8_0_w().boxed(), |b| b.d = F16_ONE, boxed_unit_q8_0)) {
        check_dot_exact("vec_dot_q8_0_q8_0", &x, &y, kernels::vec_dot_q8_0_q8_0, scalar::vec_dot_q8_0_q8_0, |k| k.vec_dot_q8_0_q8_0)?;
    }
}

fn unit_k<B: std::fmt::Debug + 'static>(
    w: BoxedStrategy<B>,
    fix: fn(&mut B),
) -> impl Strategy<Value = (Vec<B>, Vec<BlockQ8K>)> {
    // At most 3 super-blocks with |a| <= 4 keep M below 2^24 even for Q6_K
    // (|scale * q| <= 128 * 32 per element).
    (1usize..=3, prop_oneof![Just(1i8), Just(4i8)]).prop_flat_map(move |(nb, lim)| {
        (
            proptest::collection::vec(w.clone(), nb).prop_map(move |mut v| {
                v.iter_mut().for_each(fix);
                v
            }),
            unit_q8_k(nb, lim),
        )
    })
}

proptest! {
    #![proptest_config(cfg(48))]

    #[test]
    fn vec_dot_q2_k_exact_with_unit_scales((x, y) in unit_k(q2_k().boxed(), |b| { b.d = F16_ONE; b.dmin = F16_ONE; })) {
        check_dot_exact("vec_dot_q2_k_q8_k", &x, &y, kernels::vec_dot_q2_k_q8_k, scalar::vec_dot_q2_k_q8_k, |k| k.vec_dot_q2_k_q8_k)?;
    }

    #[test]
    fn vec_dot_q3_k_exact_with_unit_scales((x, y) in unit_k(q3_k().boxed(), |b| b.d = F16_ONE)) {
        check_dot_exact("vec_dot_q3_k_q8_k", &x, &y, kernels::vec_dot_q3_k_q8_k, scalar::vec_dot_q3_k_q8_k, |k| k.vec_dot_q3_k_q8_k)?;
    }

    #[test]
    fn vec_dot_q4_k_exact_with_unit_scales((x, y) in unit_k(q4_k().boxed(), |b| { b.d = F16_ONE; b.dmin = F16_ONE; })) {
        check_dot_exact("vec_dot_q4_k_q8_k", &x, &y, kernels::vec_dot_q4_k_q8_k, scalar::vec_dot_q4_k_q8_k, |k| k.vec_dot_q4_k_q8_k)?;
    }

    #[test]
    fn vec_dot_q5_k_exact_with_unit_scales((x, y) in unit_k(q5_k().boxed(), |b| { b.d = F16_ONE; b.dmin = F16_ONE; })) {
        check_dot_exact("vec_dot_q5_k_q8_k", &x, &y, kernels::vec_dot_q5_k_q8_k, scalar::vec_dot_q5_k_q8_k, |k| k.vec_dot_q5_k_q8_k)?;
    }

    #[test]
    fn vec_dot_q6_k_exact_with_unit_scales((x, y) in unit_k(q6_k().boxed(), |b| b.d = F16_ONE)) {
        check_dot_exact("vec_dot_q6_k_q8_k", &x, &y, kernels::vec_dot_q6_k_q8_k, scalar::vec_dot_q6_k_q8_k, |k| k.vec_dot_q6_k_q8_k)?;
    }
}

// ---------------------------------------------------------------------------
// Dequantization: bit-identical

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

type Deq<B> = fn(&[B], &mut [f32]);

fn check_deq<B: WeightBlock>(
    name: &str,
    x: &[B],
    dispatched: Deq<B>,
    get: fn(&Kernels) -> Deq<B>,
) -> Result<(), TestCaseError> {
    let n = x.len() * B::PER_BLOCK;
    let mut want = vec![0.0f32; n];
    B::dequant(x, &mut want);
    let mut impls: Vec<(&str, Deq<B>)> = vec![("dispatched", dispatched)];
    for k in tables() {
        impls.push((k.name, get(k)));
    }
    for (label, f) in impls {
        let mut got = vec![f32::NAN; n];
        f(x, &mut got);
        prop_assert!(
            same_bits(&got, &want),
            "{} [{}] nb={}",
            name,
            label,
            x.len()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(cfg(64))]

    #[test]
    fn dequantize_simple_matches_scalar_bits(
        a in proptest::collection::vec(q4_0(), 1..=17),
        b in proptest::collection::vec(q4_1(), 1..=17),
        c in proptest::collection::vec(q5_0(), 1..=17),
        d in proptest::collection::vec(q5_1(), 1..=17),
        e in proptest::collection::vec(q8_0_w(), 1..=17),
    ) {
        check_deq("dequantize_row_q4_0", &a, kernels::dequantize_row_q4_0, |k| k.dequantize_row_q4_0)?;
        check_deq("dequantize_row_q4_1", &b, kernels::dequantize_row_q4_1, |k| k.dequantize_row_q4_1)?;
        check_deq("dequantize_row_q5_0", &c, kernels::dequantize_row_q5_0, |k| k.dequantize_row_q5_0)?;
        check_deq("dequantize_row_q5_1", &d, kernels::dequantize_row_q5_1, |k| k.dequantize_row_q5_1)?;
        check_deq("dequantize_row_q8_0", &e, kernels::dequantize_row_q8_0, |k| k.dequantize_row_q8_0)?;
    }

    #[test]
    fn dequantize_k_matches_scalar_bits(
        a in proptest::collection::vec(q2_k(), 1..=3),
        b in proptest::collection::vec(q3_k(), 1..=3),
        c in proptest::collection::vec(q4_k(), 1..=3),
        d in proptest::collection::vec(q5_k(), 1..=3),
        e in proptest::collection::vec(q6_k(), 1..=3),
    ) {
        check_deq("dequantize_row_q2_k", &a, kernels::dequantize_row_q2_k, |k| k.dequantize_row_q2_k)?;
        check_deq("dequantize_row_q3_k", &b, kernels::dequantize_row_q3_k, |k| k.dequantize_row_q3_k)?;
        check_deq("dequantize_row_q4_k", &c, kernels::dequantize_row_q4_k, |k| k.dequantize_row_q4_k)?;
        check_deq("dequantize_row_q5_k", &d, kernels::dequantize_row_q5_k, |k| k.dequantize_row_q5_k)?;
        check_deq("dequantize_row_q6_k", &e, kernels::dequantize_row_q6_k, |k| k.dequantize_row_q6_k)?;
    }
}

// ---------------------------------------------------------------------------
// Activation quantizers: bit-identical

/// Signatures of the activation quantizers, one per output block type.
type Glu = fn(&mut [f32], &[f32]);
type QuantizeQ8_0 = fn(&[f32], &mut [BlockQ8_0]);
type QuantizeQ8_1 = fn(&[f32], &mut [BlockQ8_1]);
type QuantizeQ8K = fn(&[f32], &mut [BlockQ8K]);

proptest! {
    #![proptest_config(cfg(96))]

    #[test]
    fn quantize_row_q8_0_q8_1_match_scalar_bits(x in block_count(16).prop_flat_map(|nb| row(nb, 32))) {
        let nb = x.len() / 32;
        let mut want0 = vec![BlockQ8_0 { d: 0, qs: [0; 32] }; nb];
        let mut want1 = vec![BlockQ8_1 { d: 0, s: 0, qs: [0; 32] }; nb];
        scalar::quantize_row_q8_0(&x, &mut want0);
        scalar::quantize_row_q8_1(&x, &mut want1);
        let mut impls: Vec<(&str, QuantizeQ8_0, QuantizeQ8_1)> =
            vec![("dispatched", kernels::quantize_row_q8_0, kernels::quantize_row_q8_1)];
        for k in tables() {
            impls.push((k.name, k.quantize_row_q8_0, k.quantize_row_q8_1));
        }
        for (label, f0, f1) in impls {
            let mut got0 = vec![BlockQ8_0 { d: 1, qs: [1; 32] }; nb];
            let mut got1 = vec![BlockQ8_1 { d: 1, s: 1, qs: [1; 32] }; nb];
            f0(&x, &mut got0);
            f1(&x, &mut got1);
            prop_assert!(got0 == want0, "quantize_row_q8_0 [{}] nb={}", label, nb);
            prop_assert!(got1 == want1, "quantize_row_q8_1 [{}] nb={}", label, nb);
        }
    }

    #[test]
    fn quantize_row_q8_k_matches_scalar_bits(x in block_count(4).prop_flat_map(|nb| row(nb, QK_K))) {
        let nb = x.len() / QK_K;
        let mut want = vec![empty_q8k(); nb];
        scalar::quantize_row_q8_k(&x, &mut want);
        let mut impls: Vec<(&str, QuantizeQ8K)> =
            vec![("dispatched", kernels::quantize_row_q8_k)];
        for k in tables() {
            impls.push((k.name, k.quantize_row_q8_k));
        }
        for (label, f) in impls {
            let mut got = vec![BlockQ8K { d: 1.0, qs: [1; QK_K], bsums: [1; 16] }; nb];
            f(&x, &mut got);
            for (g, w) in got.iter().zip(&want) {
                prop_assert!(
                    g.d.to_bits() == w.d.to_bits() && g.qs == w.qs && g.bsums == w.bsums,
                    "quantize_row_q8_k [{}] nb={}", label, nb
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// f16 / bf16 rows: bit-identical on arbitrary bit patterns

proptest! {
    #![proptest_config(cfg(128))]

    #[test]
    fn half_rows_match_scalar_bits(
        h in proptest::collection::vec(any::<u16>(), 0..300),
        f in proptest::collection::vec(prop_oneof![
            3 => any::<u32>().prop_map(f32::from_bits),
            1 => any::<u16>().prop_map(|h| {
                // Midpoints between neighbouring f16 values: rounding ties.
                let a = scalar::f16_to_f32(h & 0x7bff) as f64;
                let b = scalar::f16_to_f32((h & 0x7bff) + 1) as f64;
                let m = ((a + b) / 2.0) as f32;
                if h & 0x8000 != 0 { -m } else { m }
            }),
            1 => -70000.0f32..70000.0,
        ], 0..300),
    ) {
        let mut w16 = vec![0.0f32; h.len()];
        let mut wbf = vec![0.0f32; h.len()];
        let mut wh = vec![0u16; f.len()];
        let mut wb = vec![0u16; f.len()];
        for (i, &v) in h.iter().enumerate() {
            w16[i] = scalar::f16_to_f32(v);
            wbf[i] = scalar::bf16_to_f32(v);
        }
        for (i, &v) in f.iter().enumerate() {
            wh[i] = scalar::f32_to_f16(v);
            wb[i] = scalar::f32_to_bf16(v);
        }
        type Rows = (
            fn(&[u16], &mut [f32]),
            fn(&[f32], &mut [u16]),
            fn(&[u16], &mut [f32]),
            fn(&[f32], &mut [u16]),
        );
        let mut impls: Vec<(&str, Rows)> = vec![(
            "dispatched",
            (kernels::f16_to_f32_row, kernels::f32_to_f16_row, kernels::bf16_to_f32_row, kernels::f32_to_bf16_row),
        )];
        for k in tables() {
            impls.push((k.name, (k.f16_to_f32_row, k.f32_to_f16_row, k.bf16_to_f32_row, k.f32_to_bf16_row)));
        }
        for (label, (h2f, f2h, b2f, f2b)) in impls {
            let mut g = vec![0.0f32; h.len()];
            h2f(&h, &mut g);
            prop_assert!(same_bits(&g, &w16), "f16_to_f32_row [{}]", label);
            b2f(&h, &mut g);
            prop_assert!(same_bits(&g, &wbf), "bf16_to_f32_row [{}]", label);
            let mut g = vec![0u16; f.len()];
            f2h(&f, &mut g);
            prop_assert_eq!(&g, &wh, "f32_to_f16_row [{}]", label);
            f2b(&f, &mut g);
            prop_assert_eq!(&g, &wb, "f32_to_bf16_row [{}]", label);
        }
    }
}

// ---------------------------------------------------------------------------
// Float vector ops

fn pair_rows() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    free_row().prop_flat_map(|x| {
        let n = x.len();
        let scale = prop_oneof![Just(1e-3f32), Just(1.0f32), Just(30.0f32)];
        (
            Just(x),
            scale.prop_flat_map(move |s| proptest::collection::vec(element(s), n)),
        )
    })
}

proptest! {
    #![proptest_config(cfg(96))]

    #[test]
    fn float_dots_match_scalar((x, y) in pair_rows()) {
        let n = x.len();
        let hx: Vec<u16> = x.iter().map(|&v| scalar::f32_to_f16(v)).collect();
        let hy: Vec<u16> = y.iter().map(|&v| scalar::f32_to_f16(v)).collect();
        let bx: Vec<u16> = x.iter().map(|&v| scalar::f32_to_bf16(v)).collect();
        let by: Vec<u16> = y.iter().map(|&v| scalar::f32_to_bf16(v)).collect();
        let tol = |m: f64| (n as f64 / 32.0 + 16.0) * EPS * m + 1e-37;
        let m32: f64 = x.iter().zip(&y).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
        let m16: f64 = hx.iter().zip(&hy).map(|(a, b)| (f16v(*a) * f16v(*b)).abs()).sum();
        let mbf: f64 = bx.iter().zip(&by)
            .map(|(a, b)| (scalar::bf16_to_f32(*a) as f64 * scalar::bf16_to_f32(*b) as f64).abs())
            .sum();
        type Dots = (fn(&[f32], &[f32]) -> f32, fn(&[u16], &[u16]) -> f32, fn(&[u16], &[u16]) -> f32);
        let mut impls: Vec<(&str, Dots)> =
            vec![("dispatched", (kernels::vec_dot_f32, kernels::vec_dot_f16, kernels::vec_dot_bf16))];
        for k in tables() {
            impls.push((k.name, (k.vec_dot_f32, k.vec_dot_f16, k.vec_dot_bf16)));
        }
        for (label, (d32, d16, dbf)) in impls {
            let cases = [
                ("vec_dot_f32", d32(&x, &y), scalar::vec_dot_f32(&x, &y), tol(m32)),
                ("vec_dot_f16", d16(&hx, &hy), scalar::vec_dot_f16(&hx, &hy), tol(m16)),
                ("vec_dot_bf16", dbf(&bx, &by), scalar::vec_dot_bf16(&bx, &by), tol(mbf)),
            ];
            for (name, got, want, t) in cases {
                prop_assert!(
                    (got as f64 - want as f64).abs() <= t,
                    "{} [{}] n={}: {} vs {}", name, label, n, got, want
                );
            }
        }
    }

    #[test]
    fn elementwise_ops_match_scalar_bits((x, y) in pair_rows(), a in -4.0f32..4.0, eps in prop_oneof![Just(1e-6f32), Just(1e-5f32)]) {
        let n = x.len();
        let half = n / 2;
        let (c, s): (Vec<f32>, Vec<f32>) = (0..half)
            .map(|i| {
                let t = (i as f32 * 0.37 + a).sin() * 3.0;
                (t.cos(), t.sin())
            })
            .unzip();
        type Ops = (
            fn(&mut [f32], f32),
            fn(&mut [f32], &[f32]),
            fn(&mut [f32], &[f32]),
            fn(&[f32], f32, &mut [f32]),
            fn(&mut [f32], &[f32], &[f32]),
            fn(&mut [f32], &[f32], &[f32]),
        );
        let mut impls: Vec<(&str, Ops)> = vec![(
            "dispatched",
            (kernels::scale, kernels::mul, kernels::add, kernels::rms_norm,
             kernels::rope_pairs, kernels::rope_neox),
        )];
        for k in tables() {
            impls.push((k.name, (k.scale, k.mul, k.add, k.rms_norm, k.rope_pairs, k.rope_neox)));
        }
        for (label, (scale, mul, add, rms_norm, rope_pairs, rope_neox)) in impls {
            let (mut g, mut w) = (x.clone(), x.clone());
            scale(&mut g, a);
            scalar::scale(&mut w, a);
            prop_assert!(same_bits(&g, &w), "scale [{}] n={}", label, n);
            let (mut g, mut w) = (x.clone(), x.clone());
            mul(&mut g, &y);
            scalar::mul(&mut w, &y);
            prop_assert!(same_bits(&g, &w), "mul [{}] n={}", label, n);
            let (mut g, mut w) = (x.clone(), x.clone());
            add(&mut g, &y);
            scalar::add(&mut w, &y);
            prop_assert!(same_bits(&g, &w), "add [{}] n={}", label, n);
            let (mut g, mut w) = (vec![0.0; n], vec![0.0; n]);
            rms_norm(&x, eps, &mut g);
            scalar::rms_norm(&x, eps, &mut w);
            prop_assert!(same_bits(&g, &w), "rms_norm [{}] n={}", label, n);
            let (mut g, mut w) = (x.clone(), x.clone());
            rope_pairs(&mut g, &c, &s);
            scalar::rope_pairs(&mut w, &c, &s);
            prop_assert!(same_bits(&g, &w), "rope_pairs [{}] n={}", label, n);
            let (mut g, mut w) = (x.clone(), x.clone());
            rope_neox(&mut g, &c, &s);
            scalar::rope_neox(&mut w, &c, &s);
            prop_assert!(same_bits(&g, &w), "rope_neox [{}] n={}", label, n);
        }
    }

    #[test]
    fn activations_match_scalar_within_tolerance(
        (mut x, u) in pair_rows(),
        extremes in any::<bool>(),
    ) {
        let n = x.len();
        if extremes && n > 3 {
            x[1] = 95.0; // exp overflow territory for silu(-x)
            x[2] = -95.0;
            x[3] = -12.0;
        }
        let mut impls: Vec<(&str, Glu)> = vec![("dispatched", kernels::swiglu)];
        for k in tables() {
            impls.push((k.name, k.swiglu));
        }
        let act = |i: usize| 16.0 * EPS * (x[i] as f64).abs() + 1e-37;
        let glu = |i: usize| act(i) * (u[i] as f64).abs() + 1e-37;
        let close = |name: &str, label: &str, got: &[f32], want: &[f32], bound: &dyn Fn(usize) -> f64|
            -> Result<(), TestCaseError> {
            for i in 0..n {
                let d = (got[i] as f64 - want[i] as f64).abs();
                prop_assert!(d <= bound(i), "{} [{}] n={} x={}: {} vs {}", name, label, n, x[i], got[i], want[i]);
            }
            Ok(())
        };
        for (label, swiglu) in impls {
            let (mut g, mut w) = (x.clone(), x.clone());
            swiglu(&mut g, &u);
            scalar::swiglu(&mut w, &u);
            close("swiglu", label, &g, &w, &glu)?;
        }
    }
}

/// The dispatched table is one of the detected ones, and the top-level
/// functions (checked above as "dispatched") go through it.
#[test]
fn dispatched_table_is_detected() {
    let all = tables();
    assert_eq!(all[0].name, "scalar");
    assert!(all.iter().any(|k| std::ptr::eq(*k, kernels::kernels())));
    assert_eq!(kernels::isa(), kernels::kernels().name);
    eprintln!(
        "kernel tables checked: {:?} (dispatched: {})",
        all.iter().map(|k| k.name).collect::<Vec<_>>(),
        kernels::isa()
    );
}

// ---------------------------------------------------------------------------
// Multi-row kernels (gemm_*): every table's result for each (weight row,
// activation row) is bit-identical to the same table's single-row vec_dot.

/// `nr` weight rows and `nt` activation rows of `nb` blocks each.
fn gemm_case<B: std::fmt::Debug + 'static, A: std::fmt::Debug + Clone + 'static>(
    w: BoxedStrategy<B>,
    acts: fn(usize) -> BoxedStrategy<Vec<A>>,
    max_nb: usize,
) -> impl Strategy<Value = (usize, Vec<B>, Vec<A>, usize)> {
    (1..=max_nb, 1usize..=9, 1usize..=9, 0usize..3).prop_flat_map(move |(nb, nr, nt, pad)| {
        let rows = proptest::collection::vec(acts(nb), nt).prop_map(|v| v.concat());
        (
            Just(nb),
            proptest::collection::vec(w.clone(), nr * nb),
            rows,
            Just(pad),
        )
    })
}

type GemmFn<B, A> = fn(&[B], &[A], usize, &mut [f32], usize);
type DotFn<B, A> = fn(&[B], &[A]) -> f32;

fn check_gemm<B, A>(
    name: &str,
    (nb, x, y, pad): &(usize, Vec<B>, Vec<A>, usize),
    pick: impl Fn(&Kernels) -> (GemmFn<B, A>, DotFn<B, A>),
) -> Result<(), TestCaseError> {
    let (nr, nt) = (x.len() / nb, y.len() / nb);
    let ldo = nt + pad;
    for k in tables() {
        let (gemm, dot) = pick(k);
        let mut out = vec![f32::NAN; nr * ldo];
        gemm(x, y, *nb, &mut out, ldo);
        for r in 0..nr {
            for t in 0..nt {
                let want = dot(&x[r * nb..(r + 1) * nb], &y[t * nb..(t + 1) * nb]);
                let got = out[r * ldo + t];
                prop_assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "{} [{}] nb={} row {} token {}: {:e} != {:e}",
                    name,
                    k.name,
                    nb,
                    r,
                    t,
                    got,
                    want
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cfg(48))]

    #[test]
    fn gemm_q4_0_matches_vec_dot(c in gemm_case(q4_0().boxed(), boxed_q8_0, 20)) {
        check_gemm("gemm_q4_0_q8_0", &c, |k| (k.gemm_q4_0_q8_0, k.vec_dot_q4_0_q8_0))?;
    }
    #[test]
    fn gemm_q4_1_matches_vec_dot(c in gemm_case(q4_1().boxed(), boxed_q8_1, 20)) {
        check_gemm("gemm_q4_1_q8_1", &c, |k| (k.gemm_q4_1_q8_1, k.vec_dot_q4_1_q8_1))?;
    }
    #[test]
    fn gemm_q5_0_matches_vec_dot(c in gemm_case(q5_0().boxed(), boxed_q8_0, 20)) {
        check_gemm("gemm_q5_0_q8_0", &c, |k| (k.gemm_q5_0_q8_0, k.vec_dot_q5_0_q8_0))?;
    }
    #[test]
    fn gemm_q5_1_matches_vec_dot(c in gemm_case(q5_1().boxed(), boxed_q8_1, 20)) {
        check_gemm("gemm_q5_1_q8_1", &c, |k| (k.gemm_q5_1_q8_1, k.vec_dot_q5_1_q8_1))?;
    }
    #[test]
    fn gemm_q8_0_matches_vec_dot(c in gemm_case(q8_0_w().boxed(), boxed_q8_0, 20)) {
        check_gemm("gemm_q8_0_q8_0", &c, |k| (k.gemm_q8_0_q8_0, k.vec_dot_q8_0_q8_0))?;
    }
    #[test]
    fn gemm_q2_k_matches_vec_dot(c in gemm_case(q2_k().boxed(), boxed_q8_k, 3)) {
        check_gemm("gemm_q2_k_q8_k", &c, |k| (k.gemm_q2_k_q8_k, k.vec_dot_q2_k_q8_k))?;
    }
    #[test]
    fn gemm_q3_k_matches_vec_dot(c in gemm_case(q3_k().boxed(), boxed_q8_k, 3)) {
        check_gemm("gemm_q3_k_q8_k", &c, |k| (k.gemm_q3_k_q8_k, k.vec_dot_q3_k_q8_k))?;
    }
    #[test]
    fn gemm_q4_k_matches_vec_dot(c in gemm_case(q4_k().boxed(), boxed_q8_k, 3)) {
        check_gemm("gemm_q4_k_q8_k", &c, |k| (k.gemm_q4_k_q8_k, k.vec_dot_q4_k_q8_k))?;
    }
    #[test]
    fn gemm_q5_k_matches_vec_dot(c in gemm_case(q5_k().boxed(), boxed_q8_k, 3)) {
        check_gemm("gemm_q5_k_q8_k", &c, |k| (k.gemm_q5_k_q8_k, k.vec_dot_q5_k_q8_k))?;
    }
    #[test]
    fn gemm_q6_k_matches_vec_dot(c in gemm_case(q6_k().boxed(), boxed_q8_k, 3)) {
        check_gemm("gemm_q6_k_q8_k", &c, |k| (k.gemm_q6_k_q8_k, k.vec_dot_q6_k_q8_k))?;
    }

    /// f16 accumulator updates (flash-attention V) and the RNE activation
    /// quantizers: bit-identical to the scalar reference on every table.
    #[test]
    fn f16_updates_and_rne_quantizers_match_scalar(
        (x, y) in (1usize..=9).prop_flat_map(|nb| (act_row(nb, 32), act_row(nb, 32))),
        v in -4.0f32..4.0,
    ) {
        // Finite halves: inf - inf NaNs carry no portable payload.
        let half = |a: f32| scalar::f32_to_f16(a.clamp(-6e4, 6e4));
        let xh: Vec<u16> = x.iter().map(|&a| half(a)).collect();
        let yh: Vec<u16> = y.iter().map(|&a| half(a)).collect();
        let nb = x.len() / 32;
        for k in tables() {
            let (mut a, mut b) = (yh.clone(), yh.clone());
            (k.vec_mad_f16)(&mut a, &xh, v);
            scalar::vec_mad_f16(&mut b, &xh, v);
            prop_assert_eq!(&a, &b, "vec_mad_f16 [{}]", k.name);
            let (mut a, mut b) = (yh.clone(), yh.clone());
            (k.vec_scale_f16)(&mut a, v);
            scalar::vec_scale_f16(&mut b, v);
            prop_assert_eq!(&a, &b, "vec_scale_f16 [{}]", k.name);
            if x.iter().all(|a| a.is_finite()) {
                let z0 = BlockQ8_0 { d: 0, qs: [0; 32] };
                let (mut a, mut b) = (vec![z0; nb], vec![z0; nb]);
                (k.quantize_row_q8_0_round_even)(&x, &mut a);
                scalar::quantize_row_q8_0_round_even(&x, &mut b);
                prop_assert_eq!(&a, &b, "quantize_row_q8_0_round_even [{}]", k.name);
                let z1 = BlockQ8_1 { d: 0, s: 0, qs: [0; 32] };
                let (mut a, mut b) = (vec![z1; nb], vec![z1; nb]);
                (k.quantize_row_q8_1_round_even)(&x, &mut a);
                scalar::quantize_row_q8_1_round_even(&x, &mut b);
                prop_assert_eq!(&a, &b, "quantize_row_q8_1_round_even [{}]", k.name);
            }
        }
    }
}

fn boxed_q8_k(nb: usize) -> BoxedStrategy<Vec<BlockQ8K>> {
    q8_k_acts(nb).boxed()
}
