//! Kernel throughput: every quantized dot product and dequantize, plus the
//! float dots, over a realistic weight matrix (ROWS rows of `cols`
//! elements, one activation row), for every kernel table this CPU can run
//! (the scalar reference and each SIMD path), side by side.
//!
//! Throughput is bytes of *weight data* per second.
//! `cargo bench --bench kernels`; KERNELS_BENCH_COLS=576 for a
//! SmolLM2-sized row (default 2048). The `repack/...` groups compare plain
//! and interleaved weights at the models' shapes (see below).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use kernels::*;
use std::time::Duration;

const ROWS: usize = 256;

fn cols() -> usize {
    std::env::var("KERNELS_BENCH_COLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn f32(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        for b in a.iter_mut() {
            *b = self.next() as u8;
        }
        a
    }
    /// A realistic weight scale (random bits would give subnormal products,
    /// which are slow on x86 and unlike real weights).
    fn scale(&mut self) -> u16 {
        f32_to_f16(0.001 + (self.next() % 1000) as f32 * 1e-5)
    }
    fn row(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

trait Random: Block {
    fn random(r: &mut Rng) -> Self;
}

impl Random for BlockQ4_0 {
    fn random(r: &mut Rng) -> Self {
        BlockQ4_0 {
            d: r.scale(),
            qs: r.bytes(),
        }
    }
}
impl Random for BlockQ4_1 {
    fn random(r: &mut Rng) -> Self {
        BlockQ4_1 {
            d: r.scale(),
            m: r.scale(),
            qs: r.bytes(),
        }
    }
}
impl Random for BlockQ5_0 {
    fn random(r: &mut Rng) -> Self {
        BlockQ5_0 {
            d: r.scale(),
            qh: r.bytes(),
            qs: r.bytes(),
        }
    }
}
impl Random for BlockQ5_1 {
    fn random(r: &mut Rng) -> Self {
        BlockQ5_1 {
            d: r.scale(),
            m: r.scale(),
            qh: r.bytes(),
            qs: r.bytes(),
        }
    }
}
impl Random for BlockQ8_0 {
    fn random(r: &mut Rng) -> Self {
        let q: [u8; 32] = r.bytes();
        BlockQ8_0 {
            d: r.scale(),
            qs: q.map(|b| (b as i8).max(-127)),
        }
    }
}
impl Random for BlockQ2K {
    fn random(r: &mut Rng) -> Self {
        BlockQ2K {
            scales: r.bytes(),
            qs: r.bytes(),
            d: r.scale(),
            dmin: r.scale(),
        }
    }
}
impl Random for BlockQ3K {
    fn random(r: &mut Rng) -> Self {
        BlockQ3K {
            hmask: r.bytes(),
            qs: r.bytes(),
            scales: r.bytes(),
            d: r.scale(),
        }
    }
}
impl Random for BlockQ4K {
    fn random(r: &mut Rng) -> Self {
        BlockQ4K {
            d: r.scale(),
            dmin: r.scale(),
            scales: r.bytes(),
            qs: r.bytes(),
        }
    }
}
impl Random for BlockQ5K {
    fn random(r: &mut Rng) -> Self {
        BlockQ5K {
            d: r.scale(),
            dmin: r.scale(),
            scales: r.bytes(),
            qh: r.bytes(),
            qs: r.bytes(),
        }
    }
}
impl Random for BlockQ6K {
    fn random(r: &mut Rng) -> Self {
        let s: [u8; 16] = r.bytes();
        BlockQ6K {
            ql: r.bytes(),
            qh: r.bytes(),
            scales: s.map(|b| b as i8),
            d: r.scale(),
        }
    }
}

fn matrix<B: Random>(r: &mut Rng, blocks_per_row: usize) -> Vec<B> {
    (0..ROWS * blocks_per_row).map(|_| B::random(r)).collect()
}

/// One group per kernel; one benchmark per table ("scalar", "avx2", ...).
macro_rules! bench_dot {
    ($c:expr, $r:expr, $blk:ty, $act:ident, $quant:ident, $per:expr, $f:ident) => {{
        let n = cols();
        let bpr = n / $per;
        let w: Vec<$blk> = matrix($r, bpr);
        let x = $r.row(n);
        let mut a = vec![$act; bpr];
        scalar::$quant(&x, &mut a);
        let mut g = $c.benchmark_group(stringify!($f));
        g.throughput(Throughput::Bytes(std::mem::size_of_val(&w[..]) as u64));
        for k in available() {
            g.bench_function(k.name, |b| {
                b.iter(|| {
                    let mut s = 0.0f32;
                    for row in w.chunks_exact(bpr) {
                        s += (k.$f)(black_box(row), black_box(&a));
                    }
                    s
                })
            });
        }
        g.finish();
    }};
}

macro_rules! bench_deq {
    ($c:expr, $r:expr, $blk:ty, $per:expr, $f:ident) => {{
        let n = cols();
        let bpr = n / $per;
        let w: Vec<$blk> = matrix($r, bpr);
        let mut out = vec![0.0f32; n];
        let mut g = $c.benchmark_group(stringify!($f));
        g.throughput(Throughput::Bytes(std::mem::size_of_val(&w[..]) as u64));
        for k in available() {
            g.bench_function(k.name, |b| {
                b.iter(|| {
                    for row in w.chunks_exact(bpr) {
                        (k.$f)(black_box(row), &mut out);
                    }
                    out[0]
                })
            });
        }
        g.finish();
    }};
}

const Q8_0: BlockQ8_0 = BlockQ8_0 { d: 0, qs: [0; 32] };
const Q8_1: BlockQ8_1 = BlockQ8_1 {
    d: 0,
    s: 0,
    qs: [0; 32],
};
const Q8_K: BlockQ8K = BlockQ8K {
    d: 0.0,
    qs: [0; QK_K],
    bsums: [0; QK_K / 16],
};

fn quantized(c: &mut Criterion) {
    let r = &mut Rng(42);
    bench_dot!(
        c,
        r,
        BlockQ4_0,
        Q8_0,
        quantize_row_q8_0,
        QK4_0,
        vec_dot_q4_0_q8_0
    );
    bench_dot!(
        c,
        r,
        BlockQ4_1,
        Q8_1,
        quantize_row_q8_1,
        QK4_1,
        vec_dot_q4_1_q8_1
    );
    bench_dot!(
        c,
        r,
        BlockQ5_0,
        Q8_0,
        quantize_row_q8_0,
        QK5_0,
        vec_dot_q5_0_q8_0
    );
    bench_dot!(
        c,
        r,
        BlockQ5_1,
        Q8_1,
        quantize_row_q8_1,
        QK5_1,
        vec_dot_q5_1_q8_1
    );
    bench_dot!(
        c,
        r,
        BlockQ8_0,
        Q8_0,
        quantize_row_q8_0,
        QK8_0,
        vec_dot_q8_0_q8_0
    );
    bench_dot!(
        c,
        r,
        BlockQ2K,
        Q8_K,
        quantize_row_q8_k,
        QK_K,
        vec_dot_q2_k_q8_k
    );
    bench_dot!(
        c,
        r,
        BlockQ3K,
        Q8_K,
        quantize_row_q8_k,
        QK_K,
        vec_dot_q3_k_q8_k
    );
    bench_dot!(
        c,
        r,
        BlockQ4K,
        Q8_K,
        quantize_row_q8_k,
        QK_K,
        vec_dot_q4_k_q8_k
    );
    bench_dot!(
        c,
        r,
        BlockQ5K,
        Q8_K,
        quantize_row_q8_k,
        QK_K,
        vec_dot_q5_k_q8_k
    );
    bench_dot!(
        c,
        r,
        BlockQ6K,
        Q8_K,
        quantize_row_q8_k,
        QK_K,
        vec_dot_q6_k_q8_k
    );

    bench_deq!(c, r, BlockQ4_0, QK4_0, dequantize_row_q4_0);
    bench_deq!(c, r, BlockQ4_1, QK4_1, dequantize_row_q4_1);
    bench_deq!(c, r, BlockQ5_0, QK5_0, dequantize_row_q5_0);
    bench_deq!(c, r, BlockQ5_1, QK5_1, dequantize_row_q5_1);
    bench_deq!(c, r, BlockQ8_0, QK8_0, dequantize_row_q8_0);
    bench_deq!(c, r, BlockQ2K, QK_K, dequantize_row_q2_k);
    bench_deq!(c, r, BlockQ3K, QK_K, dequantize_row_q3_k);
    bench_deq!(c, r, BlockQ4K, QK_K, dequantize_row_q4_k);
    bench_deq!(c, r, BlockQ5K, QK_K, dequantize_row_q5_k);
    bench_deq!(c, r, BlockQ6K, QK_K, dequantize_row_q6_k);
}

fn floats(c: &mut Criterion) {
    let n = cols();
    let r = &mut Rng(7);
    let w = r.row(ROWS * n);
    let x = r.row(n);
    let wh: Vec<u16> = w.iter().map(|&v| f32_to_f16(v)).collect();
    let xh: Vec<u16> = x.iter().map(|&v| f32_to_f16(v)).collect();
    let wb: Vec<u16> = w.iter().map(|&v| f32_to_bf16(v)).collect();
    let xb: Vec<u16> = x.iter().map(|&v| f32_to_bf16(v)).collect();
    macro_rules! dot {
        ($name:ident, $w:expr, $x:expr) => {{
            let mut g = c.benchmark_group(stringify!($name));
            g.throughput(Throughput::Bytes(std::mem::size_of_val(&$w[..]) as u64));
            for k in available() {
                g.bench_function(k.name, |b| {
                    b.iter(|| {
                        let mut s = 0.0f32;
                        for row in $w.chunks_exact(n) {
                            s += (k.$name)(black_box(row), black_box(&$x));
                        }
                        s
                    })
                });
            }
            g.finish();
        }};
    }
    dot!(vec_dot_f32, w, x);
    dot!(vec_dot_f16, wh, xh);
    dot!(vec_dot_bf16, wb, xb);

    // Activation quantizers: throughput in bytes of f32 input.
    let row = r.row(n);
    macro_rules! quant {
        ($name:ident, $blk:expr, $per:expr) => {{
            let mut out = vec![$blk; n / $per];
            let mut g = c.benchmark_group(stringify!($name));
            g.throughput(Throughput::Bytes((n * 4) as u64));
            for k in available() {
                g.bench_function(k.name, |b| b.iter(|| (k.$name)(black_box(&row), &mut out)));
            }
            g.finish();
        }};
    }
    quant!(quantize_row_q8_0, Q8_0, QK8_0);
    quant!(quantize_row_q8_1, Q8_1, QK8_1);
    quant!(quantize_row_q8_k, Q8_K, QK_K);
}

// ---------------------------------------------------------------------------
// Plain rows against the layouts the CPU backend interleaves at load
// (llama.cpp's repacked ones): Q4_0 by eight rows (`BlockQ4_0x8`) and Q4_K
// in the 8x4 layout (`BlockQ4Kx8`), each in the rounding rkinfer uses for
// it, on one thread with the table chosen for this CPU.
// `repack/<type>/<model>-<weight>/<tokens>/{plain,interleaved}`: one
// weight matrix of SmolLM2-135M's or Gemma 3 270M's shape against 1
// activation row (decode: the GEMV) or 32 (a prompt tile: the GEMM);
// throughput in weight elements times tokens. On a board:
// `cargo bench --bench kernels -- repack`.

/// (model-weight, rows, cols) of the matrices benched per type: the
/// feed-forward projections (Q4_K needs rows of whole 256-element blocks).
const Q4_0_SHAPES: [(&str, usize, usize); 4] = [
    ("smollm2-ffn_gate", 1536, 576),
    ("smollm2-ffn_down", 576, 1536),
    ("gemma3-ffn_gate", 2048, 640),
    ("gemma3-ffn_down", 640, 2048),
];
const Q4_K_SHAPES: [(&str, usize, usize); 2] = [
    ("smollm2-ffn_down", 576, 1536),
    ("gemma3-ffn_down", 640, 2048),
];
const TOKENS: [usize; 2] = [1, 32];

type Gemm<W, A> = fn(&[W], &[A], usize, &mut [f32], usize);

/// One matrix, plain and interleaved, against `n` activation rows: the
/// backend's call shape (outputs transposed, `ldo` = tokens).
#[allow(clippy::too_many_arguments)]
fn pair<W, P, A>(
    c: &mut Criterion,
    name: &str,
    rows: usize,
    cols: usize,
    n: usize,
    (w, plain): (&[W], Gemm<W, A>),
    (p, interleaved): (&[P], Gemm<P, A>),
    a: &[A],
) {
    let nb = w.len() / rows;
    let mut out = vec![0f32; rows * n];
    let mut g = c.benchmark_group(format!("repack/{name}/{n}"));
    g.throughput(Throughput::Elements((rows * cols * n) as u64));
    g.bench_function("plain", |b| {
        b.iter(|| plain(black_box(w), black_box(a), nb, &mut out, n))
    });
    g.bench_function("interleaved", |b| {
        b.iter(|| interleaved(black_box(p), black_box(a), nb, &mut out, n))
    });
    g.finish();
}

fn repack_q4_0(c: &mut Criterion) {
    let r = &mut Rng(11);
    for (label, rows, cols) in Q4_0_SHAPES {
        let nb = cols / QK4_0;
        let w: Vec<BlockQ4_0> = (0..rows * nb)
            .map(|_| BlockQ4_0 {
                d: r.scale(),
                qs: r.bytes(),
            })
            .collect();
        let mut p = vec![BlockQ4_0x8::default(); w.len() / 8];
        repack_q4_0x8(&w, nb, &mut p);
        for n in TOKENS {
            let mut a = vec![BlockQ8_0 { d: 0, qs: [0; 32] }; n * nb];
            quantize_row_q8_0_round_even(&r.row(n * cols), &mut a);
            pair(
                c,
                &format!("q4_0/{label}"),
                rows,
                cols,
                n,
                (&w, gemm_q4_0_q8_0_block_fma),
                (&p, gemm_q4_0x8_q8_0),
                &a,
            );
        }
    }
}

fn repack_q4_k(c: &mut Criterion) {
    let r = &mut Rng(13);
    for (label, rows, cols) in Q4_K_SHAPES {
        let nb = cols / QK_K;
        let w: Vec<BlockQ4K> = (0..rows * nb)
            .map(|_| BlockQ4K {
                d: r.scale(),
                dmin: r.scale(),
                scales: r.bytes(),
                qs: r.bytes(),
            })
            .collect();
        let mut p = vec![BlockQ4Kx8::default(); w.len() / 8];
        repack_q4_kx8(&w, nb, &mut p);
        for n in TOKENS {
            let zero = BlockQ8K {
                d: 0.0,
                qs: [0; QK_K],
                bsums: [0; QK_K / 16],
            };
            let mut a = vec![zero; n * nb];
            quantize_row_q8_k(&r.row(n * cols), &mut a);
            // The rounding the backend uses: per 256 elements for single
            // tokens (llama.cpp's GEMV), per 64 for batches (its GEMM).
            let (plain, interleaved): (Gemm<BlockQ4K, _>, Gemm<BlockQ4Kx8, _>) = if n == 1 {
                (gemm_q4_k_q8_k, gemm_q4_kx8_q8_k)
            } else {
                (gemm_q4_k_q8_k_sum64, gemm_q4_kx8_q8_k_sum64)
            };
            pair(
                c,
                &format!("q4_k/{label}"),
                rows,
                cols,
                n,
                (&w, plain),
                (&p, interleaved),
                &a,
            );
        }
    }
}

/// Tokens of a prompt tile (the matmul driver's `TOKEN_TILE`).
const PROMPT_TOKENS: usize = 64;

/// Every SIMD table's prompt-batch GEMM on one matrix (`rows` x `cols`)
/// against [`PROMPT_TOKENS`] activation rows, side by side: throughput in
/// multiply-adds (weight elements times tokens).
fn prompt_group<W, A>(
    c: &mut Criterion,
    name: &str,
    (rows, cols): (usize, usize),
    w: &[W],
    a: &[A],
    gemm: impl Fn(&Kernels) -> Gemm<W, A>,
) {
    let per_row = w.len() / rows;
    let mut out = vec![0f32; rows * PROMPT_TOKENS];
    let mut g = c.benchmark_group(format!("prompt/{name}/{rows}x{cols}"));
    g.throughput(Throughput::Elements((rows * cols * PROMPT_TOKENS) as u64));
    for k in available().into_iter().filter(|k| k.name != "scalar") {
        let f = gemm(k);
        g.bench_function(k.name, |b| {
            b.iter(|| f(black_box(w), black_box(a), per_row, &mut out, PROMPT_TOKENS))
        });
    }
    g.finish();
}

/// The prompt-batch kernels of the F16, Q8_0, Q5_0, Q4_1 and Q6_K rows at
/// Gemma 3 270M's feed-forward shapes: `cargo bench --bench kernels -- prompt/`.
fn prompt_gemms(c: &mut Criterion) {
    let r = &mut Rng(17);
    for (rows, cols) in [(2048usize, 640usize), (640, 2048)] {
        let x = r.row(PROMPT_TOKENS * cols);
        let mut x16 = vec![0u16; x.len()];
        f32_to_f16_row(&x, &mut x16);
        let mut xr = vec![0f32; x.len()];
        f16_to_f32_row(&x16, &mut xr);
        let w: Vec<u16> = (0..rows * cols)
            .map(|_| f32_to_f16(r.f32() * 0.1))
            .collect();
        prompt_group(c, "f16", (rows, cols), &w, &xr, |k| k.gemm_f16_lanes16);

        let nb = cols / QK8_0;
        let mut a8 = vec![Q8_0; PROMPT_TOKENS * nb];
        quantize_row_q8_0_round_even(&x, &mut a8);
        let w: Vec<BlockQ8_0> = (0..rows * nb).map(|_| BlockQ8_0::random(r)).collect();
        prompt_group(c, "q8_0", (rows, cols), &w, &a8, |k| k.gemm_q8_0_q8_0);
        let w: Vec<BlockQ5_0> = (0..rows * nb).map(|_| BlockQ5_0::random(r)).collect();
        prompt_group(c, "q5_0", (rows, cols), &w, &a8, |k| k.gemm_q5_0_q8_0);

        let mut a1 = vec![Q8_1; PROMPT_TOKENS * nb];
        quantize_row_q8_1_round_even(&x, &mut a1);
        let w: Vec<BlockQ4_1> = (0..rows * nb).map(|_| BlockQ4_1::random(r)).collect();
        prompt_group(c, "q4_1", (rows, cols), &w, &a1, |k| k.gemm_q4_1_q8_1);

        if cols % QK_K == 0 {
            let nbk = cols / QK_K;
            let mut ak = vec![Q8_K; PROMPT_TOKENS * nbk];
            quantize_row_q8_k(&x, &mut ak);
            let w: Vec<BlockQ6K> = (0..rows * nbk).map(|_| BlockQ6K::random(r)).collect();
            prompt_group(c, "q6_k", (rows, cols), &w, &ak, |k| {
                k.gemm_q6_k_q8_k_block_fma
            });
        }
    }
}

fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200))
        .sample_size(10)
}

criterion_group! {
    name = benches;
    config = short();
    targets = quantized, floats, repack_q4_0, repack_q4_k, prompt_gemms
}
criterion_main!(benches);
