//! The simulator's arithmetic, fast enough to run whole models on.
//!
//! The operands are first decoded from the native layouts into plain
//! arrays: A row-major (`M x K`), B as panels of 16 kernels
//! (`[N/16][K][16]`), so that one A value meets 16 kernels in a row of
//! independent lanes. Every lane keeps its own accumulator and adds its
//! products in increasing k, exactly as the scalar definition in `sim.rs`
//! says (FP16: each product exact in FP32, summed in FP32 in k order; INT8:
//! exact INT32; INT4: exact, saturated to INT16 by the caller), so the
//! vectorised loops give the same bits as the plain ones; mul and add stay
//! separate operations (Rust never fuses them).

/// Kernels per panel.
pub const LANES: usize = 16;

/// Rows of A handled together (each B panel value is loaded once for them).
const ROWS: usize = 4;

/// Element `i` of a run of `bits`-wide little-endian elements (the low
/// nibble is the even int4 element).
#[inline(always)]
fn element(bytes: &[u8], i: usize, bits: u32) -> u32 {
    match bits {
        4 => u32::from((bytes[i / 2] >> ((i % 2) * 4)) & 0xF),
        8 => u32::from(bytes[i]),
        _ => u32::from(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])),
    }
}

/// A (`rows` x `depth`, native layout, 16-byte atoms of `bits`-wide
/// elements: 4, 8 or 16) row-major, each element through `conv`.
pub fn decode_a<T: Copy + Default>(
    buf: &[u8],
    rows: usize,
    depth: usize,
    bits: u32,
    conv: impl Fn(u32) -> T,
) -> Vec<T> {
    let atom = (128 / bits) as usize;
    let mut out = vec![T::default(); rows * depth];
    for (i, chunk) in buf.chunks_exact(16).take(rows * depth / atom).enumerate() {
        let (kb, m) = (i / rows, i % rows);
        let dst = &mut out[m * depth + kb * atom..][..atom];
        for (j, d) in dst.iter_mut().enumerate() {
            *d = conv(element(chunk, j, bits));
        }
    }
    out
}

/// B (`cols` x `depth`, native layout with kernel groups of `group`, a
/// multiple of [`LANES`]) as panels `[cols/16][depth][16]`, each element
/// through `conv`.
pub fn decode_b_panels<T: Copy + Default>(
    buf: &[u8],
    cols: usize,
    depth: usize,
    bits: u32,
    group: usize,
    conv: impl Fn(u32) -> T,
) -> Vec<T> {
    let mut out = vec![T::default(); cols * depth];
    let kblocks = depth / 32;
    let run = 32 * bits as usize / 8; // bytes of one kernel's 32 k values
    for (i, src) in buf.chunks_exact(run).take(cols * kblocks).enumerate() {
        // Native order: [group][k block][kernel in group][32].
        let j = i % group;
        let kb = (i / group) % kblocks;
        let n = (i / group / kblocks) * group + j;
        let panel = &mut out[(n / LANES) * depth * LANES..][..depth * LANES];
        let lane = n % LANES;
        for kk in 0..32 {
            panel[(kb * 32 + kk) * LANES + lane] = conv(element(src, kk, bits));
        }
    }
    out
}

/// Accumulator arithmetic of one precision.
pub trait Acc: Copy + Default {
    fn mul_add(self, a: Self, b: Self) -> Self;
}

impl Acc for f32 {
    #[inline(always)]
    fn mul_add(self, a: f32, b: f32) -> f32 {
        // Product rounded to f32 (exact for fp16 inputs), then the sum.
        self + a * b
    }
}

impl Acc for i32 {
    #[inline(always)]
    fn mul_add(self, a: i32, b: i32) -> i32 {
        self.wrapping_add(a.wrapping_mul(b))
    }
}

/// `c[m][n] = sum_k a[m][k] * b[n][k]` for row-major `a` (`rows` x `depth`)
/// and panels `b`; `c` row-major `rows` x `cols`, each sum in k order.
#[inline(always)]
fn matmul_generic<T: Acc>(
    a: &[T],
    panels: &[T],
    rows: usize,
    depth: usize,
    cols: usize,
    c: &mut [T],
) {
    for (p, panel) in panels
        .chunks_exact(depth * LANES)
        .enumerate()
        .take(cols / LANES)
    {
        let mut m = 0;
        while m + ROWS <= rows {
            let mut acc = [[T::default(); LANES]; ROWS];
            for (k, bk) in panel.chunks_exact(LANES).enumerate() {
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let x = a[(m + r) * depth + k];
                    for (s, &y) in acc_r.iter_mut().zip(bk) {
                        *s = s.mul_add(x, y);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                c[(m + r) * cols + p * LANES..][..LANES].copy_from_slice(acc_r);
            }
            m += ROWS;
        }
        while m < rows {
            let mut acc = [T::default(); LANES];
            let ar = &a[m * depth..(m + 1) * depth];
            for (&x, bk) in ar.iter().zip(panel.chunks_exact(LANES)) {
                for (s, &y) in acc.iter_mut().zip(bk) {
                    *s = s.mul_add(x, y);
                }
            }
            c[m * cols + p * LANES..][..LANES].copy_from_slice(&acc);
            m += 1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn matmul_avx2<T: Acc>(a: &[T], panels: &[T], rows: usize, depth: usize, cols: usize, c: &mut [T]) {
    matmul_generic(a, panels, rows, depth, cols, c)
}

/// The matmul of [`matmul_generic`], on AVX2 when the CPU has it (same
/// operations, wider registers: the same bits).
pub fn matmul<T: Acc>(a: &[T], panels: &[T], rows: usize, depth: usize, cols: usize, c: &mut [T]) {
    debug_assert!(
        a.len() >= rows * depth && panels.len() >= cols * depth && c.len() >= rows * cols
    );
    debug_assert!(cols.is_multiple_of(LANES));
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only
        // requirement of calling a function compiled with that feature.
        unsafe { matmul_avx2(a, panels, rows, depth, cols, c) };
        return;
    }
    matmul_generic(a, panels, rows, depth, cols, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_match_the_plain_loops_bit_for_bit() {
        let (rows, depth, cols) = (6, 64, 32);
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            ((seed >> 8) % 2001) as f32 / 1000.0 - 1.0
        };
        let a: Vec<f32> = (0..rows * depth).map(|_| next()).collect();
        let b: Vec<f32> = (0..cols * depth).map(|_| next() * 1e3).collect();
        let mut panels = vec![0f32; cols * depth];
        for n in 0..cols {
            for k in 0..depth {
                panels[(n / LANES) * depth * LANES + k * LANES + n % LANES] = b[n * depth + k];
            }
        }
        let mut c = vec![0f32; rows * cols];
        matmul(&a, &panels, rows, depth, cols, &mut c);
        for m in 0..rows {
            for n in 0..cols {
                let mut s = 0f32;
                for k in 0..depth {
                    s += a[m * depth + k] * b[n * depth + k];
                }
                assert_eq!(c[m * cols + n].to_bits(), s.to_bits(), "m={m} n={n}");
            }
        }
    }
}
