//! Differential tests: every kernel table this CPU can run (scalar, each
//! detected ISA, and the dispatched one) against the scalar reference, on
//! one shared set of seeded random cases. Plain `#[test]`s with no
//! dependencies, so CI can build them with `rustc --test` for aarch64 and
//! run them under qemu.
//!
//! Tolerances (SIMD vs scalar):
//! - dequantize_row_*, quantize_row_q8_*, f16/bf16 rows, axpy, scale, mul,
//!   add, rms_norm, rope_*: bit-identical (same IEEE operations, no fusing;
//!   rms_norm keeps the scalar f64 reduction).
//! - Integer parts of every quantized dot product: exact (checked directly
//!   on the ISA's dot primitives, and through whole kernels with unit scales
//!   where every f32 partial sum is an exactly representable integer).
//! - Quantized dot products with real scales: |a - b| <= (2 nb + 24) eps M,
//!   where M = sum_k (|w_k| + 2 |min_k|) |a_k| bounds every partial sum
//!   (w = dequantized weight, min_k its block's largest possible offset,
//!   a = dequantized activation; plus 2 |m| |s| per block for the Q8_1
//!   pairings, whose s = d*sum term is stored) and nb + 12 bounds the length of the
//!   longest chain of f32 additions in either summation order (per-block
//!   terms, 8 SIMD or scalar lanes, final reduction); each side is within
//!   gamma_n M of the exact value.
//! - vec_dot_f32/f16/bf16: |a - b| <= (n/32 + 16) eps sum|x y|: the
//!   reference sums in f64, the SIMD code in 4x8 f32 lanes.
//! - softmax: relative (n/8 + 32) eps per element (8-lane f32 sum of the
//!   exps vs f64, exp within 2 ulp) + 1e-37 absolute (the SIMD exp clamps
//!   arguments below -87.3, where true results are < 1.2e-38).
//! - silu / gelu / swiglu / geglu: 16 eps relative to |x| (polynomial exp
//!   within 2 ulp, one division; gelu's 1 + tanh form cancels for x << 0,
//!   so the bound is relative to |x|, not to the tiny result) + 1e-37.

use crate::blocks::*;
use crate::dispatch::{available, kernels, Kernels, SCALAR};
use crate::scalar;

const EPS: f64 = f32::EPSILON as f64;

// ---------------------------------------------------------------------------
// Seeded generator (splitmix64)

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn u8(&mut self) -> u8 {
        self.next_u64() as u8
    }
    fn below(&mut self, n: u32) -> u32 {
        ((self.u32() as u64 * n as u64) >> 32) as u32
    }
    fn range_i(&mut self, lo: i32, hi: i32) -> i32 {
        lo + self.below((hi - lo + 1) as u32) as i32
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.u32() >> 8) as f32 / (1u32 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        // Sum of uniforms: cheap and good enough for test data.
        let mut s = 0.0;
        for _ in 0..4 {
            s += self.unit();
        }
        (s - 2.0) * 1.7
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        for b in a.iter_mut() {
            *b = self.u8();
        }
        a
    }
    /// A valid (finite) f16 scale, with edge cases: zero, the largest
    /// magnitude, subnormals, negatives, typical small values.
    fn f16_scale(&mut self) -> u16 {
        let sign = if self.below(4) == 0 { 0x8000 } else { 0 };
        let mag = match self.below(10) {
            0 => 0,
            1 => 0x7bff,                             // 65504
            2 => 1 + self.below(0x3ff) as u16,       // subnormal
            3 => self.below(0x7c00) as u16,          // any finite
            _ => 0x1400 + self.below(0x1800) as u16, // ~6e-5 .. 0.5
        };
        sign | mag
    }
    /// Row of floats: normal values with some outliers, exact zeros and
    /// ties for the rounding modes.
    fn row(&mut self, n: usize) -> Vec<f32> {
        let scale = [1e-3f32, 0.1, 1.0, 30.0][self.below(4) as usize];
        (0..n)
            .map(|_| match self.below(40) {
                0 => self.normal() * scale * 100.0,
                1 => 0.0,
                2 => -0.0,
                3 => (self.range_i(-20, 20) as f32 + 0.5) * scale,
                _ => self.normal() * scale,
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Random blocks

fn q8_0_acts(r: &mut Rng, nb: usize) -> Vec<BlockQ8_0> {
    let mut y = vec![BlockQ8_0 { d: 0, qs: [0; 32] }; nb];
    if r.below(2) == 0 {
        scalar::quantize_row_q8_0(&r.row(nb * 32), &mut y);
    } else {
        for b in y.iter_mut() {
            b.d = r.f16_scale();
            for q in b.qs.iter_mut() {
                *q = r.range_i(-127, 127) as i8;
            }
        }
    }
    y
}

fn q8_1_acts(r: &mut Rng, nb: usize) -> Vec<BlockQ8_1> {
    let mut y = vec![
        BlockQ8_1 {
            d: 0,
            s: 0,
            qs: [0; 32]
        };
        nb
    ];
    if r.below(2) == 0 {
        scalar::quantize_row_q8_1(&r.row(nb * 32), &mut y);
    } else {
        for b in y.iter_mut() {
            b.d = r.f16_scale();
            b.s = r.f16_scale();
            for q in b.qs.iter_mut() {
                *q = r.range_i(-127, 127) as i8;
            }
        }
    }
    y
}

fn q8_k_acts(r: &mut Rng, nb: usize) -> Vec<BlockQ8K> {
    let mut y = vec![
        BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; 16]
        };
        nb
    ];
    scalar::quantize_row_q8_k(&r.row(nb * QK_K), &mut y);
    y
}

trait RandomBlock: Sized + Copy {
    fn random(r: &mut Rng) -> Self;
    /// Largest magnitude of the offset ("min") any element of the block can
    /// carry; 0 for symmetric formats.
    fn min_bound(&self) -> f64 {
        0.0
    }
}

fn f16v(h: u16) -> f64 {
    scalar::f16_to_f32(h) as f64
}

impl RandomBlock for BlockQ4_0 {
    fn random(r: &mut Rng) -> Self {
        BlockQ4_0 {
            d: r.f16_scale(),
            qs: r.bytes(),
        }
    }
}
impl RandomBlock for BlockQ4_1 {
    fn random(r: &mut Rng) -> Self {
        BlockQ4_1 {
            d: r.f16_scale(),
            m: r.f16_scale(),
            qs: r.bytes(),
        }
    }
    fn min_bound(&self) -> f64 {
        f16v(self.m).abs()
    }
}
impl RandomBlock for BlockQ5_0 {
    fn random(r: &mut Rng) -> Self {
        BlockQ5_0 {
            d: r.f16_scale(),
            qh: r.bytes(),
            qs: r.bytes(),
        }
    }
}
impl RandomBlock for BlockQ5_1 {
    fn random(r: &mut Rng) -> Self {
        BlockQ5_1 {
            d: r.f16_scale(),
            m: r.f16_scale(),
            qh: r.bytes(),
            qs: r.bytes(),
        }
    }
    fn min_bound(&self) -> f64 {
        f16v(self.m).abs()
    }
}
impl RandomBlock for BlockQ8_0 {
    fn random(r: &mut Rng) -> Self {
        let mut qs = [0i8; 32];
        for q in qs.iter_mut() {
            *q = r.u8() as i8; // full range, -128 included, on the weight side
        }
        BlockQ8_0 {
            d: r.f16_scale(),
            qs,
        }
    }
}
impl RandomBlock for BlockQ2K {
    fn random(r: &mut Rng) -> Self {
        BlockQ2K {
            scales: r.bytes(),
            qs: r.bytes(),
            d: r.f16_scale(),
            dmin: r.f16_scale(),
        }
    }
    fn min_bound(&self) -> f64 {
        f16v(self.dmin).abs() * 15.0
    }
}
impl RandomBlock for BlockQ3K {
    fn random(r: &mut Rng) -> Self {
        BlockQ3K {
            hmask: r.bytes(),
            qs: r.bytes(),
            scales: r.bytes(),
            d: r.f16_scale(),
        }
    }
}
impl RandomBlock for BlockQ4K {
    fn random(r: &mut Rng) -> Self {
        BlockQ4K {
            d: r.f16_scale(),
            dmin: r.f16_scale(),
            scales: r.bytes(),
            qs: r.bytes(),
        }
    }
    fn min_bound(&self) -> f64 {
        f16v(self.dmin).abs() * 63.0
    }
}
impl RandomBlock for BlockQ5K {
    fn random(r: &mut Rng) -> Self {
        BlockQ5K {
            d: r.f16_scale(),
            dmin: r.f16_scale(),
            scales: r.bytes(),
            qh: r.bytes(),
            qs: r.bytes(),
        }
    }
    fn min_bound(&self) -> f64 {
        f16v(self.dmin).abs() * 63.0
    }
}
impl RandomBlock for BlockQ6K {
    fn random(r: &mut Rng) -> Self {
        let mut scales = [0i8; 16];
        for s in scales.iter_mut() {
            *s = r.u8() as i8;
        }
        BlockQ6K {
            ql: r.bytes(),
            qh: r.bytes(),
            scales,
            d: r.f16_scale(),
        }
    }
}

fn blocks<B: RandomBlock>(r: &mut Rng, nb: usize) -> Vec<B> {
    (0..nb).map(|_| B::random(r)).collect()
}

/// Block counts used by every case: single blocks, odd counts, and a
/// realistic row (2048 elements of Q4_0 = 64 blocks; 8 super-blocks).
const BLOCK_COUNTS: [usize; 6] = [1, 2, 3, 7, 8, 64];

fn impls() -> Vec<&'static Kernels> {
    let mut v = available();
    v.push(kernels());
    v
}

// ---------------------------------------------------------------------------
// Quantized dot products

/// |s| of a Q8_1 block (its precomputed d*sum), which the *_1 kernels
/// multiply by the weight block's min; 0 for the other activation types.
trait ActBlock {
    fn s_abs(&self) -> f64 {
        0.0
    }
}
impl ActBlock for BlockQ8_0 {}
impl ActBlock for BlockQ8K {}
impl ActBlock for BlockQ8_1 {
    fn s_abs(&self) -> f64 {
        f16v(self.s).abs()
    }
}

type DotGetter<B, A> = fn(&Kernels) -> fn(&[B], &[A]) -> f32;

fn check_dot<B, A>(
    name: &str,
    x: &[B],
    y: &[A],
    per_block: usize,
    deq_x: fn(&[B], &mut [f32]),
    deq_y: &dyn Fn(&[A]) -> Vec<f32>,
    get: DotGetter<B, A>,
) where
    B: RandomBlock,
    A: ActBlock,
{
    let want = get(&SCALAR)(x, y);
    let mut w = vec![0.0f32; x.len() * per_block];
    deq_x(x, &mut w);
    let a = deq_y(y);
    let mut mag = 0.0f64;
    for (k, (&wk, &ak)) in w.iter().zip(&a).enumerate() {
        mag += ((wk as f64).abs() + 2.0 * x[k / per_block].min_bound()) * (ak as f64).abs();
    }
    for (xb, yb) in x.iter().zip(y) {
        mag += 2.0 * xb.min_bound() * yb.s_abs();
    }
    let tol = (2 * x.len() + 24) as f64 * EPS * mag + f32::MIN_POSITIVE as f64;
    for k in impls() {
        let got = get(k)(x, y);
        let diff = (got as f64 - want as f64).abs();
        assert!(
            diff <= tol,
            "{} [{}] nb={}: got {} want {} (diff {:e} > tol {:e})",
            name,
            k.name,
            x.len(),
            got,
            want,
            diff,
            tol
        );
    }
}

fn acts_q8_0(y: &[BlockQ8_0]) -> Vec<f32> {
    let mut a = vec![0.0; y.len() * 32];
    scalar::dequantize_row_q8_0(y, &mut a);
    a
}
fn acts_q8_1(y: &[BlockQ8_1]) -> Vec<f32> {
    y.iter()
        .flat_map(|b| {
            let d = scalar::f16_to_f32(b.d);
            b.qs.iter().map(move |&q| q as f32 * d)
        })
        .collect()
}
fn acts_q8_k(y: &[BlockQ8K]) -> Vec<f32> {
    y.iter()
        .flat_map(|b| b.qs.iter().map(move |&q| q as f32 * b.d))
        .collect()
}

#[test]
fn dot_products_match_scalar() {
    let mut r = Rng::new(0x5eed_0001);
    for _round in 0..6 {
        for &nb in BLOCK_COUNTS.iter() {
            let y0 = q8_0_acts(&mut r, nb);
            let y1 = q8_1_acts(&mut r, nb);
            let nk = nb.div_ceil(4);
            let yk = q8_k_acts(&mut r, nk);
            macro_rules! run {
                ($t:ty, $y:expr, $per:expr, $deq:ident, $acts:expr, $f:ident, $nb:expr) => {{
                    let x: Vec<$t> = blocks(&mut r, $nb);
                    check_dot(stringify!($f), &x, $y, $per, scalar::$deq, &$acts, |k| k.$f);
                }};
            }
            run!(
                BlockQ4_0,
                &y0,
                32,
                dequantize_row_q4_0,
                acts_q8_0,
                vec_dot_q4_0_q8_0,
                nb
            );
            run!(
                BlockQ4_1,
                &y1,
                32,
                dequantize_row_q4_1,
                acts_q8_1,
                vec_dot_q4_1_q8_1,
                nb
            );
            run!(
                BlockQ5_0,
                &y0,
                32,
                dequantize_row_q5_0,
                acts_q8_0,
                vec_dot_q5_0_q8_0,
                nb
            );
            run!(
                BlockQ5_1,
                &y1,
                32,
                dequantize_row_q5_1,
                acts_q8_1,
                vec_dot_q5_1_q8_1,
                nb
            );
            run!(
                BlockQ8_0,
                &y0,
                32,
                dequantize_row_q8_0,
                acts_q8_0,
                vec_dot_q8_0_q8_0,
                nb
            );
            run!(
                BlockQ2K,
                &yk,
                QK_K,
                dequantize_row_q2_k,
                acts_q8_k,
                vec_dot_q2_k_q8_k,
                nk
            );
            run!(
                BlockQ3K,
                &yk,
                QK_K,
                dequantize_row_q3_k,
                acts_q8_k,
                vec_dot_q3_k_q8_k,
                nk
            );
            run!(
                BlockQ4K,
                &yk,
                QK_K,
                dequantize_row_q4_k,
                acts_q8_k,
                vec_dot_q4_k_q8_k,
                nk
            );
            run!(
                BlockQ5K,
                &yk,
                QK_K,
                dequantize_row_q5_k,
                acts_q8_k,
                vec_dot_q5_k_q8_k,
                nk
            );
            run!(
                BlockQ6K,
                &yk,
                QK_K,
                dequantize_row_q6_k,
                acts_q8_k,
                vec_dot_q6_k_q8_k,
                nk
            );
        }
    }
}

/// Unit scales and small activations: every partial sum in every
/// summation order is an integer below 2^24, so all implementations must
/// agree exactly — this checks the integer parts end to end.
#[test]
fn dot_products_exact_with_unit_scales() {
    const ONE: u16 = 0x3c00;
    let mut r = Rng::new(0x5eed_0002);
    for _ in 0..50 {
        let small = |r: &mut Rng| r.range_i(-8, 8) as i8;
        let mut y0: Vec<BlockQ8_0> = vec![
            BlockQ8_0 {
                d: ONE,
                qs: [0; 32]
            };
            2
        ];
        let mut y1: Vec<BlockQ8_1> = vec![
            BlockQ8_1 {
                d: ONE,
                s: ONE,
                qs: [0; 32]
            };
            2
        ];
        for b in y0.iter_mut() {
            for q in b.qs.iter_mut() {
                *q = small(&mut r);
            }
        }
        for b in y1.iter_mut() {
            for q in b.qs.iter_mut() {
                *q = small(&mut r);
            }
            b.s = scalar::f32_to_f16(b.qs.iter().map(|&q| q as f32).sum());
        }
        let mut yk = vec![
            BlockQ8K {
                d: 1.0,
                qs: [0; QK_K],
                bsums: [0; 16]
            };
            2
        ];
        for b in yk.iter_mut() {
            for q in b.qs.iter_mut() {
                *q = small(&mut r);
            }
            for j in 0..16 {
                b.bsums[j] = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
            }
        }
        macro_rules! exact {
            ($t:ty, $y:expr, $f:ident, $fix:expr) => {{
                let mut x: Vec<$t> = blocks(&mut r, 2);
                for b in x.iter_mut() {
                    $fix(b);
                }
                let want = scalar::$f(&x, $y);
                assert_eq!(
                    want.fract(),
                    0.0,
                    "{}: reference not integral",
                    stringify!($f)
                );
                for k in impls() {
                    let got = (k.$f)(&x, $y);
                    assert_eq!(got, want, "{} [{}]", stringify!($f), k.name);
                }
            }};
        }
        exact!(BlockQ4_0, &y0, vec_dot_q4_0_q8_0, |b: &mut BlockQ4_0| b.d =
            ONE);
        exact!(BlockQ4_1, &y1, vec_dot_q4_1_q8_1, |b: &mut BlockQ4_1| {
            b.d = ONE;
            b.m = ONE
        });
        exact!(BlockQ5_0, &y0, vec_dot_q5_0_q8_0, |b: &mut BlockQ5_0| b.d =
            ONE);
        exact!(BlockQ5_1, &y1, vec_dot_q5_1_q8_1, |b: &mut BlockQ5_1| {
            b.d = ONE;
            b.m = ONE
        });
        exact!(BlockQ8_0, &y0, vec_dot_q8_0_q8_0, |b: &mut BlockQ8_0| b.d =
            ONE);
        exact!(BlockQ2K, &yk, vec_dot_q2_k_q8_k, |b: &mut BlockQ2K| {
            b.d = ONE;
            b.dmin = ONE
        });
        exact!(BlockQ3K, &yk, vec_dot_q3_k_q8_k, |b: &mut BlockQ3K| b.d =
            ONE);
        exact!(BlockQ4K, &yk, vec_dot_q4_k_q8_k, |b: &mut BlockQ4K| {
            b.d = ONE;
            b.dmin = ONE
        });
        exact!(BlockQ5K, &yk, vec_dot_q5_k_q8_k, |b: &mut BlockQ5K| {
            b.d = ONE;
            b.dmin = ONE
        });
        exact!(BlockQ6K, &yk, vec_dot_q6_k_q8_k, |b: &mut BlockQ6K| b.d =
            ONE);
    }
}

/// The ISA integer primitives over the full input range (weights
/// -128..=127, activations -127..=127, scales -128..=127): exact.
#[test]
fn integer_dot_primitives_exact() {
    let mut r = Rng::new(0x5eed_0003);
    for _ in 0..2000 {
        let mut x = [0i8; 32];
        let mut y = [0i8; 32];
        for j in 0..32 {
            x[j] = match r.below(4) {
                0 => -128,
                1 => 127,
                _ => r.u8() as i8,
            };
            y[j] = match r.below(4) {
                0 => -127,
                1 => 127,
                _ => r.range_i(-127, 127) as i8,
            };
        }
        let (s0, s1) = (r.range_i(-128, 127), r.range_i(-128, 127));
        let lo: i32 = (0..16).map(|j| x[j] as i32 * y[j] as i32).sum();
        let hi: i32 = (16..32).map(|j| x[j] as i32 * y[j] as i32).sum();
        for (name, f) in isa_int_dots() {
            let (d, ds) = f(&x, &y, s0, s1);
            assert_eq!(d, lo + hi, "{} dot", name);
            assert_eq!(ds, s0 * lo + s1 * hi, "{} dot_scaled", name);
        }
    }
}

type IntDot = fn(&[i8; 32], &[i8; 32], i32, i32) -> (i32, i32);

#[allow(clippy::vec_init_then_push)]
fn isa_int_dots() -> Vec<(&'static str, IntDot)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, IntDot)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if crate::x86_64::avx2_detected() {
            v.push(("avx2", crate::x86_64::avx2::int_dot_check::<false>));
            if crate::x86_64::vnni_detected() {
                v.push(("avx2-vnni", crate::x86_64::avx2::int_dot_check::<true>));
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if crate::aarch64::neon_detected() {
            v.push(("neon", crate::aarch64::neon::int_dot_check));
            if crate::aarch64::dotprod_detected() {
                v.push(("neon-dotprod", crate::aarch64::neon_dotprod::int_dot_check));
            }
        }
    }
    v
}

// ---------------------------------------------------------------------------
// Dequantization and activation quantizers: bit-identical

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn dequantize_matches_scalar_exactly() {
    let mut r = Rng::new(0x5eed_0004);
    for _ in 0..4 {
        for &nb in BLOCK_COUNTS.iter() {
            macro_rules! deq {
                ($t:ty, $f:ident, $per:expr) => {{
                    let x: Vec<$t> = blocks(&mut r, nb);
                    let mut want = vec![0.0f32; nb * $per];
                    scalar::$f(&x, &mut want);
                    for k in impls() {
                        let mut got = vec![1.0f32; nb * $per];
                        (k.$f)(&x, &mut got);
                        assert!(
                            same_bits(&got, &want),
                            "{} [{}] nb={}",
                            stringify!($f),
                            k.name,
                            nb
                        );
                    }
                }};
            }
            deq!(BlockQ4_0, dequantize_row_q4_0, 32);
            deq!(BlockQ4_1, dequantize_row_q4_1, 32);
            deq!(BlockQ5_0, dequantize_row_q5_0, 32);
            deq!(BlockQ5_1, dequantize_row_q5_1, 32);
            deq!(BlockQ8_0, dequantize_row_q8_0, 32);
            deq!(BlockQ2K, dequantize_row_q2_k, QK_K);
            deq!(BlockQ3K, dequantize_row_q3_k, QK_K);
            deq!(BlockQ4K, dequantize_row_q4_k, QK_K);
            deq!(BlockQ5K, dequantize_row_q5_k, QK_K);
            deq!(BlockQ6K, dequantize_row_q6_k, QK_K);
        }
    }
}

fn special_rows() -> Vec<Vec<f32>> {
    let mut rows = Vec::new();
    rows.push(vec![0.0; QK_K]);
    // amax = 127 gives d = 1: x.5 values are exact ties for roundf (Q8_0,
    // away from zero) and for nearest_int (Q8_K, to even).
    rows.push(
        (0..QK_K)
            .map(|i| {
                if i == 5 {
                    -127.0
                } else {
                    (i as f32 - 128.0) * 0.5
                }
            })
            .collect(),
    );
    rows.push(
        (0..QK_K)
            .map(|i| if i == 0 { 127.0 } else { (i % 9) as f32 - 4.5 })
            .collect(),
    );
    // Largest magnitude present with both signs (first one wins in Q8_K).
    rows.push((0..QK_K).map(|i| [3.0, -3.0, 1.0, 0.25][i % 4]).collect());
    rows.push((0..QK_K).map(|i| [-3.0, 3.0, -1.0, 0.5][i % 4]).collect());
    rows.push((0..QK_K).map(|i| (i as f32) * 1e-30).collect());
    rows.push((0..QK_K).map(|i| (i as f32 - 100.0) * 1e30).collect());
    rows
}

#[test]
fn quantizers_match_scalar_exactly() {
    let mut r = Rng::new(0x5eed_0005);
    let mut rows = special_rows();
    for _ in 0..40 {
        let nb = [1usize, 2, 8][r.below(3) as usize];
        rows.push(r.row(nb * QK_K));
    }
    for row in &rows {
        let n = row.len();
        let mut want0 = vec![BlockQ8_0 { d: 0, qs: [0; 32] }; n / 32];
        let mut want1 = vec![
            BlockQ8_1 {
                d: 0,
                s: 0,
                qs: [0; 32]
            };
            n / 32
        ];
        let mut wantk = vec![
            BlockQ8K {
                d: 0.0,
                qs: [0; QK_K],
                bsums: [0; 16]
            };
            n / QK_K
        ];
        scalar::quantize_row_q8_0(row, &mut want0);
        scalar::quantize_row_q8_1(row, &mut want1);
        scalar::quantize_row_q8_k(row, &mut wantk);
        for k in impls() {
            let mut got0 = vec![BlockQ8_0 { d: 1, qs: [1; 32] }; n / 32];
            let mut got1 = vec![
                BlockQ8_1 {
                    d: 1,
                    s: 1,
                    qs: [1; 32]
                };
                n / 32
            ];
            let mut gotk = vec![
                BlockQ8K {
                    d: 1.0,
                    qs: [1; QK_K],
                    bsums: [1; 16]
                };
                n / QK_K
            ];
            (k.quantize_row_q8_0)(row, &mut got0);
            (k.quantize_row_q8_1)(row, &mut got1);
            (k.quantize_row_q8_k)(row, &mut gotk);
            assert!(got0 == want0, "quantize_row_q8_0 [{}]", k.name);
            assert!(got1 == want1, "quantize_row_q8_1 [{}]", k.name);
            for (g, w) in gotk.iter().zip(&wantk) {
                assert!(
                    g.d.to_bits() == w.d.to_bits() && g.qs == w.qs && g.bsums == w.bsums,
                    "quantize_row_q8_k [{}]",
                    k.name
                );
            }
        }
    }
}

#[test]
fn quantizer_rounding_modes_follow_ggml() {
    // d = 1 (amax 127): 2.5 -> 3 with roundf (Q8_0), -> 2 with nearest_int (Q8_K).
    let mut row = vec![0.0f32; QK_K];
    row[0] = 127.0;
    row[1] = 2.5;
    row[2] = -2.5;
    row[3] = 3.5;
    let mut b0 = vec![BlockQ8_0 { d: 0, qs: [0; 32] }; QK_K / 32];
    let mut bk = vec![
        BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; 16]
        };
        1
    ];
    for k in impls() {
        (k.quantize_row_q8_0)(&row, &mut b0);
        (k.quantize_row_q8_k)(&row, &mut bk);
        assert_eq!(&b0[0].qs[..4], &[127, 3, -3, 4], "[{}]", k.name);
        // Q8_K: iscale = -127/127 = -1, so values flip sign.
        assert_eq!(&bk[0].qs[..4], &[-127, -2, 2, -4], "[{}]", k.name);
        assert_eq!(bk[0].d, -1.0);
        assert_eq!(b0[0].d, 0x3c00);
    }
}

// ---------------------------------------------------------------------------
// f16 / bf16 conversions: bit-level references, exhaustive where possible

/// Independent f16 -> f32 reference through f64 arithmetic.
fn ref_f16_to_f32(h: u16) -> u32 {
    let sign = if h & 0x8000 != 0 { -1.0f64 } else { 1.0 };
    let e = ((h >> 10) & 0x1f) as i32;
    let m = (h & 0x3ff) as f64;
    if e == 0x1f {
        if h & 0x3ff == 0 {
            return (sign as f32 * f32::INFINITY).to_bits();
        }
        return ((h as u32 & 0x8000) << 16) | 0x7fc0_0000 | ((h as u32 & 0x3ff) << 13);
    }
    let v = if e == 0 {
        m * 2f64.powi(-24)
    } else {
        (1.0 + m / 1024.0) * 2f64.powi(e - 15)
    };
    ((sign * v) as f32).to_bits()
}

/// Independent f32 -> f16 reference: exact f64 arithmetic and an explicit
/// round-half-to-even.
fn ref_f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    if x.is_nan() {
        return sign | 0x7e00 | ((bits >> 13) & 0x3ff) as u16;
    }
    if x.is_infinite() {
        return sign | 0x7c00;
    }
    let a = (x as f64).abs();
    if a == 0.0 {
        return sign;
    }
    let rne = |q: f64| {
        let f = q.floor();
        let r = q - f;
        if r > 0.5 || (r == 0.5 && f % 2.0 == 1.0) {
            f + 1.0
        } else {
            f
        }
    };
    if a < 2f64.powi(-14) {
        let q = rne(a / 2f64.powi(-24)); // subnormal units; 1024 -> smallest normal
        return sign | q as u16;
    }
    let mut e = a.log2().floor() as i32;
    if 2f64.powi(e) > a {
        e -= 1;
    }
    if 2f64.powi(e + 1) <= a {
        e += 1;
    }
    let mut q = rne(a / 2f64.powi(e - 10));
    if q == 2048.0 {
        q = 1024.0;
        e += 1;
    }
    if e > 15 {
        return sign | 0x7c00;
    }
    sign | (((e + 15) as u16) << 10) | (q as u16 - 1024)
}

fn ref_f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if x.is_nan() {
        return ((u >> 16) | 0x40) as u16;
    }
    let h = u >> 16;
    let low = u & 0xffff;
    let up = low > 0x8000 || (low == 0x8000 && h & 1 == 1);
    (if up { h + 1 } else { h }) as u16
}

/// Every f16 value, every midpoint between neighbours, one ulp either side
/// of each midpoint, plus NaNs, infinities and out-of-range values.
fn f32_conversion_inputs() -> Vec<f32> {
    let mut v = Vec::new();
    for h in 0..0x7c00u16 {
        let a = scalar::f16_to_f32(h);
        let b = scalar::f16_to_f32(h + 1);
        let mid = ((a as f64 + b as f64) / 2.0) as f32; // exact in f32
        for x in [
            a,
            mid,
            f32::from_bits(mid.to_bits() - 1),
            f32::from_bits(mid.to_bits() + 1),
        ] {
            v.push(x);
            v.push(-x);
        }
    }
    let mut r = Rng::new(0x5eed_0006);
    for _ in 0..100_000 {
        v.push(f32::from_bits(r.u32()));
    }
    v.extend_from_slice(&[
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7f80_0001),
        f32::from_bits(0xffbf_ffff),
        65504.0,
        65519.996,
        65520.0,
        1e10,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-45,
    ]);
    v
}

#[test]
fn f16_to_f32_exhaustive() {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    for &h in &all {
        assert_eq!(
            scalar::f16_to_f32(h).to_bits(),
            ref_f16_to_f32(h),
            "f16 {:#06x}",
            h
        );
    }
    let want: Vec<u32> = all.iter().map(|&h| ref_f16_to_f32(h)).collect();
    for k in impls() {
        let mut out = vec![0.0f32; all.len()];
        (k.f16_to_f32_row)(&all, &mut out);
        for (i, o) in out.iter().enumerate() {
            assert_eq!(o.to_bits(), want[i], "[{}] f16 {:#06x}", k.name, i);
        }
    }
}

#[test]
fn bf16_to_f32_exhaustive() {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    for k in impls() {
        let mut out = vec![0.0f32; all.len()];
        (k.bf16_to_f32_row)(&all, &mut out);
        for (i, o) in out.iter().enumerate() {
            assert_eq!(
                o.to_bits(),
                (i as u32) << 16,
                "[{}] bf16 {:#06x}",
                k.name,
                i
            );
        }
    }
}

#[test]
fn f32_to_f16_round_trip_and_ties() {
    for h in 0..=u16::MAX {
        let e = (h >> 10) & 0x1f;
        if e == 0x1f && h & 0x3ff != 0 {
            // NaN: stays NaN, quieted, payload kept.
            assert_eq!(scalar::f32_to_f16(scalar::f16_to_f32(h)), h | 0x200);
        } else {
            assert_eq!(scalar::f32_to_f16(scalar::f16_to_f32(h)), h, "{:#06x}", h);
        }
    }
    let inputs = f32_conversion_inputs();
    let want: Vec<u16> = inputs.iter().map(|&x| ref_f32_to_f16(x)).collect();
    for (x, w) in inputs.iter().zip(&want) {
        assert_eq!(
            scalar::f32_to_f16(*x),
            *w,
            "f32 {:e} ({:#010x})",
            x,
            x.to_bits()
        );
    }
    for k in impls() {
        let mut out = vec![0u16; inputs.len()];
        (k.f32_to_f16_row)(&inputs, &mut out);
        for i in 0..inputs.len() {
            assert_eq!(
                out[i],
                want[i],
                "[{}] f32 {:#010x}",
                k.name,
                inputs[i].to_bits()
            );
        }
    }
}

#[test]
fn f32_to_bf16_matches_reference() {
    let inputs = f32_conversion_inputs();
    for k in impls() {
        let mut out = vec![0u16; inputs.len()];
        (k.f32_to_bf16_row)(&inputs, &mut out);
        for (i, &x) in inputs.iter().enumerate() {
            assert_eq!(
                scalar::f32_to_bf16(x),
                ref_f32_to_bf16(x),
                "scalar {:#010x}",
                x.to_bits()
            );
            assert_eq!(
                out[i],
                ref_f32_to_bf16(x),
                "[{}] {:#010x}",
                k.name,
                x.to_bits()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Float vector ops

const LENGTHS: [usize; 8] = [0, 1, 7, 8, 31, 64, 576, 2051];

fn halves(r: &mut Rng, n: usize, bf: bool) -> Vec<u16> {
    r.row(n)
        .iter()
        .map(|&v| {
            if bf {
                scalar::f32_to_bf16(v)
            } else {
                scalar::f32_to_f16(v)
            }
        })
        .collect()
}

#[test]
fn float_dots_match_scalar() {
    let mut r = Rng::new(0x5eed_0007);
    for _ in 0..5 {
        for &n in LENGTHS.iter() {
            let (x, y) = (r.row(n), r.row(n));
            let (hx, hy) = (halves(&mut r, n, false), halves(&mut r, n, false));
            let (bx, by) = (halves(&mut r, n, true), halves(&mut r, n, true));
            let tol = |m: f64| (n as f64 / 32.0 + 16.0) * EPS * m + 1e-37;
            let m32: f64 = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (*a as f64 * *b as f64).abs())
                .sum();
            let m16: f64 = hx
                .iter()
                .zip(&hy)
                .map(|(a, b)| (f16v(*a) * f16v(*b)).abs())
                .sum();
            let mbf: f64 = bx
                .iter()
                .zip(&by)
                .map(|(a, b)| {
                    (scalar::bf16_to_f32(*a) as f64 * scalar::bf16_to_f32(*b) as f64).abs()
                })
                .sum();
            for k in impls() {
                let cases = [
                    (
                        "vec_dot_f32",
                        (k.vec_dot_f32)(&x, &y),
                        scalar::vec_dot_f32(&x, &y),
                        tol(m32),
                    ),
                    (
                        "vec_dot_f16",
                        (k.vec_dot_f16)(&hx, &hy),
                        scalar::vec_dot_f16(&hx, &hy),
                        tol(m16),
                    ),
                    (
                        "vec_dot_bf16",
                        (k.vec_dot_bf16)(&bx, &by),
                        scalar::vec_dot_bf16(&bx, &by),
                        tol(mbf),
                    ),
                ];
                for (name, got, want, t) in cases {
                    assert!(
                        (got as f64 - want as f64).abs() <= t,
                        "{} [{}] n={}: {} vs {}",
                        name,
                        k.name,
                        n,
                        got,
                        want
                    );
                }
            }
        }
    }
}

#[test]
fn elementwise_ops_match_scalar_exactly() {
    let mut r = Rng::new(0x5eed_0008);
    for _ in 0..5 {
        for &n in LENGTHS.iter() {
            let (x, y) = (r.row(n), r.row(n));
            let a = r.normal();
            let half = n / 2;
            let (c, s): (Vec<f32>, Vec<f32>) = (0..half)
                .map(|i| {
                    let t = (i as f32 * 0.37 + a).sin() * 3.0;
                    (t.cos(), t.sin())
                })
                .unzip();
            for k in impls() {
                let check = |name: &str, got: &[f32], want: &[f32]| {
                    assert!(same_bits(got, want), "{} [{}] n={}", name, k.name, n);
                };
                for rows in [1usize, 5, 64] {
                    let (a_rows, m) = (r.row(rows), r.row(rows * n));
                    let (mut g, mut w) = (y.clone(), y.clone());
                    (k.fma_rows)(&a_rows, &m, &mut g);
                    scalar::fma_rows(&a_rows, &m, &mut w);
                    check("fma_rows", &g, &w);
                }
                let mut shifted = x.clone();
                if n > 2 {
                    shifted[1] = f32::NEG_INFINITY; // a masked attention score
                }
                let (mut g, mut w) = (shifted.clone(), shifted);
                (k.exp_shift)(&mut g, a);
                scalar::exp_shift(&mut w, a);
                check("exp_shift", &g, &w);
                let (mut g, mut w) = (x.clone(), x.clone());
                (k.scale)(&mut g, a);
                scalar::scale(&mut w, a);
                check("scale", &g, &w);
                let (mut g, mut w) = (x.clone(), x.clone());
                (k.mul)(&mut g, &y);
                scalar::mul(&mut w, &y);
                check("mul", &g, &w);
                let (mut g, mut w) = (x.clone(), x.clone());
                (k.add)(&mut g, &y);
                scalar::add(&mut w, &y);
                check("add", &g, &w);
                let (mut g, mut w) = (vec![0.0; n], vec![0.0; n]);
                (k.rms_norm)(&x, 1e-6, &mut g);
                scalar::rms_norm(&x, 1e-6, &mut w);
                check("rms_norm", &g, &w);
                let (mut g, mut w) = (x.clone(), x.clone());
                (k.rope_pairs)(&mut g, &c, &s);
                scalar::rope_pairs(&mut w, &c, &s);
                check("rope_pairs", &g, &w);
                let (mut g, mut w) = (x.clone(), x.clone());
                (k.rope_neox)(&mut g, &c, &s);
                scalar::rope_neox(&mut w, &c, &s);
                check("rope_neox", &g, &w);
            }
        }
    }
}

#[test]
fn activations_match_scalar_within_tolerance() {
    let mut r = Rng::new(0x5eed_0009);
    for _ in 0..5 {
        for &n in LENGTHS.iter() {
            let mut x = r.row(n);
            if n > 3 {
                x[1] = 95.0; // exp overflow territory for silu(-x)
                x[2] = -95.0;
                x[3] = -12.0;
            }
            let u = r.row(n);
            for k in impls() {
                let close =
                    |name: &str, got: &[f32], want: &[f32], bound: &dyn Fn(usize) -> f64| {
                        for i in 0..n {
                            let d = (got[i] as f64 - want[i] as f64).abs();
                            assert!(
                                d <= bound(i),
                                "{} [{}] n={} x={}: {} vs {}",
                                name,
                                k.name,
                                n,
                                x[i],
                                got[i],
                                want[i]
                            );
                        }
                    };
                let act = |i: usize| 16.0 * EPS * (x[i] as f64).abs() + 1e-37;
                let glu = |i: usize| act(i) * (u[i] as f64).abs() + 1e-37;
                let (mut g, mut w) = (x.clone(), x.clone());
                (k.swiglu)(&mut g, &u);
                scalar::swiglu(&mut w, &u);
                close("swiglu", &g, &w, &glu);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Dispatch

#[test]
fn dispatch_picks_a_detected_table() {
    let all = available();
    assert_eq!(all[0].name, "scalar");
    let chosen = kernels();
    assert_eq!(crate::isa(), chosen.name);
    assert!(
        all.iter().any(|k| core::ptr::eq(*k, chosen)),
        "chosen table not available"
    );
    let forced =
        std::env::var_os("RKINFER_FORCE_SCALAR").is_some_and(|v| !v.is_empty() && v != "0");
    if forced {
        assert_eq!(chosen.name, "scalar");
    } else {
        assert!(
            core::ptr::eq(chosen, all[all.len() - 1]),
            "not the fastest table"
        );
    }
    eprintln!(
        "kernels: chosen {}, available {:?}",
        chosen.name,
        all.iter().map(|k| k.name).collect::<Vec<_>>()
    );
    #[cfg(target_arch = "aarch64")]
    assert!(
        all.iter().any(|k| k.name == "neon"),
        "NEON must be available on aarch64"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if crate::x86_64::avx2_detected() {
            assert!(all.iter().any(|k| k.name == "avx2"));
        }
    }
}

#[test]
fn top_level_functions_use_the_table() {
    let mut r = Rng::new(0x5eed_000a);
    let x: Vec<BlockQ4_0> = blocks(&mut r, 4);
    let y = q8_0_acts(&mut r, 4);
    assert_eq!(
        crate::vec_dot_q4_0_q8_0(&x, &y).to_bits(),
        (kernels().vec_dot_q4_0_q8_0)(&x, &y).to_bits()
    );
    assert_eq!(crate::f32_to_f16(1.0), 0x3c00);
    assert_eq!(crate::f16_to_f32(0x3c00), 1.0);
    assert_eq!(crate::f32_to_bf16(1.0), 0x3f80);
    assert_eq!(crate::bf16_to_f32(0x3f80), 1.0);
}

#[test]
#[should_panic(expected = "length mismatch")]
fn mismatched_lengths_panic_before_touching_memory() {
    let x = vec![BlockQ4_0::default(); 3];
    let y = vec![BlockQ8_0 { d: 0, qs: [0; 32] }; 2];
    crate::vec_dot_q4_0_q8_0(&x, &y);
}

/// Inputs for the table-lookup GELU: every f16 value, its f32 neighbours,
/// the midpoints between consecutive f16 values and their neighbours
/// (every rounding decision of f32 -> f16), the +-10 cut-offs, NaNs with
/// payloads and signs, infinities, f32 subnormals, and random bit patterns.
fn gelu_inputs(r: &mut Rng) -> Vec<f32> {
    let mut x = Vec::new();
    for h in 0..=u16::MAX {
        let v = scalar::f16_to_f32(h);
        let b = v.to_bits();
        x.extend([
            v,
            f32::from_bits(b.wrapping_add(1)),
            f32::from_bits(b.wrapping_sub(1)),
        ]);
        if h & 0x7fff < 0x7c00 {
            // Halfway to the next f16 of larger magnitude (exact in f32).
            let next = scalar::f16_to_f32(h + 1);
            let mid = ((v as f64 + next as f64) / 2.0) as f32;
            let m = mid.to_bits();
            x.extend([mid, f32::from_bits(m + 1), f32::from_bits(m - 1)]);
        }
    }
    for v in [
        10.0f32,
        -10.0,
        9.999,
        -9.999,
        65504.0,
        65520.0,
        1e30,
        f32::MAX,
    ] {
        let b = v.to_bits();
        x.extend([v, -v, f32::from_bits(b + 1), f32::from_bits(b - 1)]);
    }
    for bits in [
        0x7fc0_0000u32, // quiet NaN
        0x7f80_0001,    // signalling NaN
        0x7fa0_1234,
        0x7fff_ffff,
        0xffc0_0000,
        0xff80_2001,
        0x7f80_0000, // inf
        0xff80_0000,
        0x0000_0001, // f32 subnormals
        0x8040_0000,
        0x0080_0000,
        0x3380_0000, // 2^-24: the smallest f16 subnormal
        0x3300_0000, // half of it: ties to even (0)
        0x3300_0001,
        0xb3c0_0000, // 1.5 * 2^-24: ties to even (2^-23)
    ] {
        x.push(f32::from_bits(bits));
    }
    x.extend((0..100_000).map(|_| f32::from_bits(r.u32())));
    x.extend(r.row(100_000));
    // An odd total: no split below is a whole number of vectors.
    if x.len() % 2 == 0 {
        x.push(1.0);
    }
    x
}

#[test]
fn gelu_tables_match_scalar_bit_for_bit() {
    let mut r = Rng::new(0x5eed_0019);
    let x = gelu_inputs(&mut r);
    let mut u = r.row(x.len());
    // Ups that expose a multiply where the reference stores 0 (and NaN).
    for (i, v) in u.iter_mut().enumerate().step_by(7) {
        *v = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -0.0][i / 7 % 4];
    }
    let mut want = x.clone();
    scalar::gelu_ggml(&mut want);
    let mut want_glu = x.clone();
    scalar::geglu_ggml(&mut want_glu, &u);
    // gelu's bits are the table's, NaNs included; a product of two NaNs
    // may carry either payload (Rust leaves it open), so geglu only has to
    // give a NaN there.
    let same = |name: &str, k: &Kernels, got: &[f32], want: &[f32], any_nan: bool| {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let ok = g.to_bits() == w.to_bits() || (any_nan && g.is_nan() && w.is_nan());
            assert!(
                ok,
                "{name} [{}] x={:e} ({:#x}) up={:e}: {:#x} vs {:#x}",
                k.name,
                x[i],
                x[i].to_bits(),
                u[i],
                g.to_bits(),
                w.to_bits()
            );
        }
    };
    for k in impls() {
        let (mut g, mut gg) = (x.clone(), x.clone());
        (k.gelu_ggml)(&mut g);
        (k.geglu_ggml)(&mut gg, &u);
        same("gelu_ggml", k, &g, &want, false);
        same("geglu_ggml", k, &gg, &want_glu, true);
        // In pieces of every length 1..=37: vector tails everywhere.
        let (mut g, mut gg) = (x.clone(), x.clone());
        let mut at = 0;
        for len in (1..=37).cycle().take(300) {
            (k.gelu_ggml)(&mut g[at..at + len]);
            (k.geglu_ggml)(&mut gg[at..at + len], &u[at..at + len]);
            at += len;
        }
        same("gelu_ggml pieces", k, &g[..at], &want[..at], false);
        same("geglu_ggml pieces", k, &gg[..at], &want_glu[..at], true);
    }
}

#[test]
fn gelu_ggml_follows_the_f16_table() {
    let mut x = vec![
        -20.0f32, -10.0, -9.999, -3.0, -0.5, 0.0, 0.1, 1.0, 2.5, 9.99, 10.0, 50.0,
    ];
    let mut r = Rng::new(0x5eed_000b);
    x.extend(r.row(1000));
    let mut g = x.clone();
    crate::gelu_ggml(&mut g);
    for (&xi, &gi) in x.iter().zip(&g) {
        if xi <= -10.0 {
            assert_eq!(gi, 0.0);
        } else if xi >= 10.0 {
            assert_eq!(gi, xi);
        } else {
            // Lookup of f16(x): an f16-rounded gelu of an f16-rounded input.
            let h = scalar::f16_to_f32(scalar::f32_to_f16(xi));
            assert_eq!(
                gi,
                scalar::f16_to_f32(scalar::f32_to_f16(scalar::gelu_f32_contracted(h))),
                "x={}",
                xi
            );
            assert!(
                (gi - scalar::gelu_f32(xi)).abs() <= 2e-3 * (1.0 + xi.abs()),
                "x={}",
                xi
            );
        }
    }
    let u = r.row(x.len());
    let mut gg = x.clone();
    crate::geglu_ggml(&mut gg, &u);
    for i in 0..x.len() {
        let want = if x[i] <= -10.0 {
            0.0 // ggml stores 0, not 0 * up
        } else if x[i] >= 10.0 {
            x[i] * u[i]
        } else {
            g[i] * u[i]
        };
        assert_eq!(gg[i].to_bits(), want.to_bits(), "x={}", x[i]);
    }
}

// ---------------------------------------------------------------------------
// Multi-row dot products: bit-identical to the same table's vec_dot

fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Runs `gemm` on `nr` random weight rows and `nt` activation rows of `nb`
/// blocks (out padded by `pad` columns, which must stay untouched) and
/// compares every output with `dot` on that pair, bit for bit.
#[allow(clippy::too_many_arguments)]
fn check_gemm<B: RandomBlock, A: Copy>(
    r: &mut Rng,
    name: &str,
    table: &str,
    nb: usize,
    nr: usize,
    nt: usize,
    acts: fn(&mut Rng, usize) -> Vec<A>,
    gemm: fn(&[B], &[A], usize, &mut [f32], usize),
    dot: fn(&[B], &[A]) -> f32,
) {
    let x: Vec<B> = blocks(r, nr * nb);
    let y: Vec<A> = acts(r, nt * nb);
    let pad = r.below(3) as usize;
    let ldo = nt + pad;
    let mut out = vec![-7.5f32; nr * ldo];
    gemm(&x, &y, nb, &mut out, ldo);
    for i in 0..nr {
        for t in 0..nt {
            let want = dot(&x[i * nb..(i + 1) * nb], &y[t * nb..(t + 1) * nb]);
            let got = out[i * ldo + t];
            assert!(
                same_f32(got, want),
                "{name} [{table}] nb={nb} nr={nr} nt={nt} row {i} token {t}: {got:e} != {want:e}"
            );
        }
        for p in nt..ldo {
            assert_eq!(out[i * ldo + p], -7.5, "{name} [{table}] wrote padding");
        }
    }
}

#[test]
fn gemm_matches_vec_dot_bit_for_bit() {
    let mut r = Rng::new(0x6e33);
    // Row / token counts around the tile sizes (remainder paths included).
    let shapes = [
        (1, 1),
        (4, 1),
        (5, 3),
        (8, 2),
        (3, 4),
        (9, 7),
        (12, 5),
        (8, 11),
    ];
    for k in impls() {
        let tn = k.name;
        for &nb in &[1usize, 2, 3, 7, 18] {
            for &(nr, nt) in &shapes {
                let r = &mut r;
                check_gemm(
                    r,
                    "q4_0",
                    tn,
                    nb,
                    nr,
                    nt,
                    q8_0_acts,
                    k.gemm_q4_0_q8_0,
                    k.vec_dot_q4_0_q8_0,
                );
                check_gemm(
                    r,
                    "q4_0_x8",
                    tn,
                    nb,
                    nr,
                    nt,
                    q8_0_acts,
                    k.gemm_q4_0_q8_0_block_fma,
                    scalar::vec_dot_q4_0_q8_0_block_fma,
                );
                check_gemm(
                    r,
                    "q4_1",
                    tn,
                    nb,
                    nr,
                    nt,
                    q8_1_acts,
                    k.gemm_q4_1_q8_1,
                    k.vec_dot_q4_1_q8_1,
                );
                check_gemm(
                    r,
                    "q5_0",
                    tn,
                    nb,
                    nr,
                    nt,
                    q8_0_acts,
                    k.gemm_q5_0_q8_0,
                    k.vec_dot_q5_0_q8_0,
                );
                check_gemm(
                    r,
                    "q5_1",
                    tn,
                    nb,
                    nr,
                    nt,
                    q8_1_acts,
                    k.gemm_q5_1_q8_1,
                    k.vec_dot_q5_1_q8_1,
                );
                check_gemm(
                    r,
                    "q8_0",
                    tn,
                    nb,
                    nr,
                    nt,
                    q8_0_acts,
                    k.gemm_q8_0_q8_0,
                    k.vec_dot_q8_0_q8_0,
                );
                if nb <= 3 {
                    check_gemm(
                        r,
                        "q2_k",
                        tn,
                        nb,
                        nr,
                        nt,
                        q8_k_acts,
                        k.gemm_q2_k_q8_k,
                        k.vec_dot_q2_k_q8_k,
                    );
                    check_gemm(
                        r,
                        "q3_k",
                        tn,
                        nb,
                        nr,
                        nt,
                        q8_k_acts,
                        k.gemm_q3_k_q8_k,
                        k.vec_dot_q3_k_q8_k,
                    );
                    check_gemm(
                        r,
                        "q4_k",
                        tn,
                        nb,
                        nr,
                        nt,
                        q8_k_acts,
                        k.gemm_q4_k_q8_k,
                        k.vec_dot_q4_k_q8_k,
                    );
                    check_gemm(
                        r,
                        "q4_k_g64",
                        tn,
                        nb,
                        nr,
                        nt,
                        q8_k_acts,
                        k.gemm_q4_k_q8_k_sum64,
                        k.vec_dot_q4_k_q8_k_sum64,
                    );
                    check_gemm(
                        r,
                        "q6_k_tiled",
                        tn,
                        nb,
                        nr,
                        nt,
                        q8_k_acts,
                        k.gemm_q6_k_q8_k_block_fma,
                        scalar::vec_dot_q6_k_q8_k_block_fma,
                    );
                    check_gemm(
                        r,
                        "q5_k",
                        tn,
                        nb,
                        nr,
                        nt,
                        q8_k_acts,
                        k.gemm_q5_k_q8_k,
                        k.vec_dot_q5_k_q8_k,
                    );
                    check_gemm(
                        r,
                        "q6_k",
                        tn,
                        nb,
                        nr,
                        nt,
                        q8_k_acts,
                        k.gemm_q6_k_q8_k,
                        k.vec_dot_q6_k_q8_k,
                    );
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "out holds")]
fn gemm_rejects_short_output() {
    let x = vec![BlockQ8_0 { d: 0, qs: [0; 32] }; 4];
    let y = vec![BlockQ8_0 { d: 0, qs: [0; 32] }; 2];
    let mut out = vec![0f32; 3];
    // 4 rows x 2 tokens need 4 * 2 outputs.
    (kernels().gemm_q8_0_q8_0)(&x, &y, 1, &mut out, 2);
}

// ---------------------------------------------------------------------------
// f16 accumulator updates and RNE activation quantizers: bit-identical

#[test]
fn f16_updates_match_scalar_exactly() {
    let mut r = Rng::new(0xf16a);
    for k in impls() {
        for &n in &[1usize, 7, 8, 31, 64, 256, 259] {
            let x = halves(&mut r, n, false);
            let y0 = halves(&mut r, n, false);
            let v = r.row(1)[0];
            let (mut a, mut b) = (y0.clone(), y0.clone());
            (k.vec_mad_f16)(&mut a, &x, v);
            scalar::vec_mad_f16(&mut b, &x, v);
            for i in 0..n {
                let (fa, fb) = (scalar::f16_to_f32(a[i]), scalar::f16_to_f32(b[i]));
                assert!(
                    a[i] == b[i] || (fa.is_nan() && fb.is_nan()),
                    "vec_mad_f16 [{}] n={n} i={i}",
                    k.name
                );
            }
            let (mut a, mut b) = (y0.clone(), y0);
            (k.vec_scale_f16)(&mut a, v);
            scalar::vec_scale_f16(&mut b, v);
            for i in 0..n {
                let (fa, fb) = (scalar::f16_to_f32(a[i]), scalar::f16_to_f32(b[i]));
                assert!(
                    a[i] == b[i] || (fa.is_nan() && fb.is_nan()),
                    "vec_scale_f16 [{}] n={n} i={i}",
                    k.name
                );
            }
        }
    }
}

#[test]
fn rne_quantizers_match_scalar_exactly() {
    let mut r = Rng::new(0x9e0e);
    let mut rows = special_rows();
    for nb in [1usize, 2, 5, 18] {
        for _ in 0..20 {
            rows.push(r.row(nb * 32));
        }
    }
    for k in impls() {
        for x in rows
            .iter()
            .filter(|x| x.len() % 32 == 0 && x.iter().all(|v| v.is_finite()))
        {
            let nb = x.len() / 32;
            let mut a = vec![BlockQ8_0 { d: 0, qs: [0; 32] }; nb];
            let mut b = a.clone();
            (k.quantize_row_q8_0_round_even)(x, &mut a);
            scalar::quantize_row_q8_0_round_even(x, &mut b);
            assert_eq!(a, b, "quantize_row_q8_0_round_even [{}]", k.name);
            let z = BlockQ8_1 {
                d: 0,
                s: 0,
                qs: [0; 32],
            };
            let (mut a, mut b) = (vec![z; nb], vec![z; nb]);
            (k.quantize_row_q8_1_round_even)(x, &mut a);
            scalar::quantize_row_q8_1_round_even(x, &mut b);
            assert_eq!(a, b, "quantize_row_q8_1_round_even [{}]", k.name);
        }
    }
    // Ties go to even: 0.5 * 127 / 127 steps.
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -3.5;
    x[3] = 0.5;
    let mut y = vec![BlockQ8_0 { d: 0, qs: [0; 32] }; 1];
    scalar::quantize_row_q8_0_round_even(&x, &mut y);
    assert_eq!(&y[0].qs[..4], &[127, 2, -4, 0]);
}

/// The float GEMMs against the 16-lane scalar reference, pair by pair, for
/// every table (both weight types; padding columns untouched).
#[test]
fn wide_float_gemm_matches_reference_bit_for_bit() {
    let mut r = Rng::new(0x77de);
    // Tiles of up to 4 rows x 6 tokens and their remainders; rows of 16384
    // split a matrix into several blocks of rows (the avx512 kernel's L2
    // blocking).
    let shapes = [
        (1, 1),
        (2, 2),
        (2, 3),
        (3, 5),
        (4, 4),
        (5, 2),
        (3, 7),
        (9, 13),
    ];
    for k in impls() {
        for &n in &[16usize, 48, 576, 16384] {
            for &(nr, nt) in &shapes {
                let wf = r.row(nr * n);
                let w16: Vec<u16> = wf.iter().map(|&v| scalar::f32_to_f16(v)).collect();
                let y = r.row(nt * n);
                let ldo = nt + 1;
                let (mut o16, mut o32) = (vec![-7.5f32; nr * ldo], vec![-7.5f32; nr * ldo]);
                (k.gemm_f16_lanes16)(&w16, &y, n, &mut o16, ldo);
                (k.gemm_f32_lanes16)(&wf, &y, n, &mut o32, ldo);
                for i in 0..nr {
                    let yt = |t: usize| &y[t * n..(t + 1) * n];
                    for t in 0..nt {
                        let want16 = crate::gemm::dot_lanes16_ref(&w16[i * n..(i + 1) * n], yt(t));
                        let want32 = crate::gemm::dot_lanes16_ref(&wf[i * n..(i + 1) * n], yt(t));
                        assert!(
                            same_f32(o16[i * ldo + t], want16),
                            "gemm_f16_lanes16 [{}] k={n} {nr}x{nt} ({i},{t})",
                            k.name
                        );
                        assert!(
                            same_f32(o32[i * ldo + t], want32),
                            "gemm_f32_lanes16 [{}] k={n} {nr}x{nt} ({i},{t})",
                            k.name
                        );
                    }
                    assert_eq!(o16[i * ldo + nt], -7.5, "gemm_f16_lanes16 wrote padding");
                }
            }
        }
    }
}

/// The F16 x f32 GEMM in the `vec_dot_f16` order against its scalar
/// reference, pair by pair, for every table: any k (whole 64-element steps,
/// a tail, fewer than 16), 1..=9 rows (every tile shape and remainder),
/// 1..=3 tokens, padding columns untouched. With f16-valued activations it
/// also equals the table's `vec_dot_f16` on the f16 activation.
#[test]
fn f16_f32_gemm_matches_vec_dot_order_bit_for_bit() {
    let mut r = Rng::new(0xf16d);
    for k in impls() {
        for &n in &[1usize, 7, 16, 40, 64, 100, 128, 200, 640] {
            for nr in 1..=9 {
                for nt in 1..=3 {
                    let w: Vec<u16> = r
                        .row(nr * n)
                        .iter()
                        .map(|&v| scalar::f32_to_f16(v))
                        .collect();
                    let y16: Vec<u16> = r
                        .row(nt * n)
                        .iter()
                        .map(|&v| scalar::f32_to_f16(v))
                        .collect();
                    let y: Vec<f32> = y16.iter().map(|&h| scalar::f16_to_f32(h)).collect();
                    // Odd cases: activations that are not f16 values.
                    let y = if nr % 2 == 1 { r.row(nt * n) } else { y };
                    let ldo = nt + 2;
                    let mut out = vec![-7.5f32; nr * ldo];
                    (k.gemm_f16_f32)(&w, &y, n, &mut out, ldo);
                    for i in 0..nr {
                        let wr = &w[i * n..(i + 1) * n];
                        for t in 0..nt {
                            let (yt, ht) = (&y[t * n..(t + 1) * n], &y16[t * n..(t + 1) * n]);
                            let got = out[i * ldo + t];
                            let want = scalar::vec_dot_f16_f32(wr, yt);
                            assert!(
                                same_f32(got, want),
                                "gemm_f16_f32 [{}] k={n} {nr}x{nt} ({i},{t}): {got} != {want}",
                                k.name
                            );
                            if nr % 2 == 0 {
                                let dot = (k.vec_dot_f16)(wr, ht);
                                assert!(
                                    same_f32(got, dot),
                                    "gemm_f16_f32 [{}] k={n} {nr}x{nt} ({i},{t}) vs vec_dot_f16",
                                    k.name
                                );
                            }
                        }
                        for pad in nt..ldo {
                            assert_eq!(out[i * ldo + pad], -7.5, "gemm_f16_f32 wrote padding");
                        }
                    }
                }
            }
        }
    }
}

/// The 16-lane order is not the sequential one: a case where they differ,
/// so the reference above pins the order rather than just the value.
#[test]
fn wide_order_differs_from_sequential_sum() {
    let mut w = vec![0f32; 32];
    let a = vec![1f32; 32];
    w[0] = 1.0e8;
    w[16] = -1.0e8;
    w[1] = 1.0;
    // Lane 0 sums 1e8 - 1e8 = 0 exactly; lane 1 keeps 1; sequentially the
    // 1 would be absorbed by 1e8 first.
    assert_eq!(crate::gemm::dot_lanes16_ref(&w, &a), 1.0);
    let seq: f32 = w.iter().zip(&a).fold(0.0, |s, (x, y)| x.mul_add(*y, s));
    assert_eq!(seq, 0.0);
}

/// The interleaved Q4_0 GEMM equals the x8 reference on the rows before
/// interleaving, for every table; packing round-trips.
#[test]
fn interleaved_q4_0_matches_x8_reference() {
    let mut r = Rng::new(0x0408);
    for k in impls() {
        for &nb in &[1usize, 2, 7, 18] {
            for &(groups, nt) in &[(1usize, 1usize), (1, 5), (2, 4), (3, 9)] {
                let nr = 8 * groups;
                let x: Vec<BlockQ4_0> = blocks(&mut r, nr * nb);
                let y = q8_0_acts(&mut r, nt * nb);
                let mut packed = vec![
                    BlockQ4_0x8 {
                        d: [0; 8],
                        qs: [0; 128]
                    };
                    groups * nb
                ];
                repack_q4_0x8(&x, nb, &mut packed);
                for g in 0..groups {
                    for b in 0..nb {
                        for row in 0..8 {
                            assert_eq!(packed[g * nb + b].row(row), x[(8 * g + row) * nb + b]);
                        }
                    }
                }
                let ldo = nt + 1;
                let mut out = vec![-7.5f32; nr * ldo];
                (k.gemm_q4_0x8_q8_0)(&packed, &y, nb, &mut out, ldo);
                for i in 0..nr {
                    for t in 0..nt {
                        let want = scalar::vec_dot_q4_0_q8_0_block_fma(
                            &x[i * nb..(i + 1) * nb],
                            &y[t * nb..(t + 1) * nb],
                        );
                        assert!(
                            same_f32(out[i * ldo + t], want),
                            "gemm_q4_0x8 [{}] nb={nb} row {i} token {t}",
                            k.name
                        );
                    }
                    assert_eq!(out[i * ldo + nt], -7.5, "gemm_q4_0x8 wrote padding");
                }
            }
        }
    }
}

/// Q4_K scales: packing eight (scale, min) pairs and reading them back
/// (one at a time and eight at once) is the identity on 6-bit values.
#[test]
fn q4_k_scales_pack_round_trip() {
    let mut r = Rng::new(0x4b58);
    for _ in 0..200 {
        let bytes: [u8; 16] = r.bytes();
        let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
        for j in 0..8 {
            sc[j] = bytes[j] & 63;
            mn[j] = bytes[8 + j] & 63;
        }
        let q = q4_k_pack_scales(sc, mn);
        for j in 0..8 {
            assert_eq!(q4_k_scale_min(j, &q), (sc[j], mn[j]));
        }
        let mut x8 = BlockQ4Kx8::default();
        x8.scales[K_SCALE_SIZE..2 * K_SCALE_SIZE].copy_from_slice(&q);
        assert_eq!(x8.scales_mins(1), (sc, mn));
    }
}

/// Q4_K interleaved by eight rows (llama.cpp's 8x4 layout): every table's
/// GEMM equals the per-row reference of the same rounding, bit for bit,
/// per 256 and per 64 elements; packing round-trips.
#[test]
fn interleaved_q4_k_matches_reference() {
    let mut r = Rng::new(0x4b08);
    for k in impls() {
        for &nb in &[1usize, 2, 3, 8] {
            for &(groups, nt) in &[(1usize, 1usize), (1, 5), (2, 4), (2, 9)] {
                let nr = 8 * groups;
                let x: Vec<BlockQ4K> = blocks(&mut r, nr * nb);
                let y = q8_k_acts(&mut r, nt * nb);
                let mut packed = vec![BlockQ4Kx8::default(); groups * nb];
                repack_q4_kx8(&x, nb, &mut packed);
                for g in 0..groups {
                    for b in 0..nb {
                        for row in 0..8 {
                            // The 12 scale bytes hold exactly 16 6-bit fields.
                            assert_eq!(packed[g * nb + b].row(row), x[(8 * g + row) * nb + b]);
                        }
                    }
                }
                let ldo = nt + 1;
                type Gemm = fn(&[BlockQ4Kx8], &[BlockQ8K], usize, &mut [f32], usize);
                type Dot = fn(&[BlockQ4K], &[BlockQ8K]) -> f32;
                let cases: [(&str, Gemm, Dot); 2] = [
                    (
                        "gemm_q4_kx8_q8_k",
                        k.gemm_q4_kx8_q8_k,
                        scalar::vec_dot_q4_k_q8_k,
                    ),
                    (
                        "gemm_q4_kx8_q8_k_sum64",
                        k.gemm_q4_kx8_q8_k_sum64,
                        scalar::vec_dot_q4_k_q8_k_sum64,
                    ),
                ];
                for (name, gemm, dot) in cases {
                    let mut out = vec![-7.5f32; nr * ldo];
                    gemm(&packed, &y, nb, &mut out, ldo);
                    for i in 0..nr {
                        for t in 0..nt {
                            let want = dot(&x[i * nb..(i + 1) * nb], &y[t * nb..(t + 1) * nb]);
                            assert!(
                                same_f32(out[i * ldo + t], want),
                                "{name} [{}] nb={nb} row {i} token {t}: {} != {want}",
                                k.name,
                                out[i * ldo + t]
                            );
                        }
                        assert_eq!(out[i * ldo + nt], -7.5, "{name} wrote padding");
                    }
                }
            }
        }
    }
}
