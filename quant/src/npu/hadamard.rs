//! Fast Walsh-Hadamard transform (FWHT) and the per-tensor random signs.
//!
//! A rotation `R = H D` (D = diagonal of random +-1 signs, H = Sylvester
//! Hadamard matrix) is applied to every weight row and to every activation
//! row along K. Because `H^T H = n I`, `(H D w) . (H D x) = n (w . x)`, so the
//! product is unchanged up to the factor `n` (1 with the orthonormal
//! transform), while outlier channels are spread over all positions, which
//! is what makes low-bit quantization of both sides tolerable.
//!
//! Signs come from splitmix64 seeded with FNV-1a-64 of the tensor name, so
//! they are identical on every run, machine and architecture (integer math
//! only, no float or platform-dependent hashing).

/// In-place unnormalized FWHT (Sylvester ordering): `x <- H x` with entries
/// +-1. `x.len()` must be a power of two (0 and 1 are identities).
///
/// The butterfly loop over contiguous halves is written so that the compiler
/// vectorises it (no SIMD intrinsics here; see the kernels crate for those).
pub fn fwht(x: &mut [f32]) {
    let n = x.len();
    debug_assert!(
        n == 0 || n.is_power_of_two(),
        "fwht length {n} is not a power of two"
    );
    let mut h = 1;
    while h < n {
        for pair in x.chunks_exact_mut(2 * h) {
            let (lo, hi) = pair.split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (u, v) = (*a, *b);
                *a = u + v;
                *b = u - v;
            }
        }
        h *= 2;
    }
}

/// In-place orthonormal FWHT: `x <- H x / sqrt(n)`. Its own inverse.
pub fn fwht_orthonormal(x: &mut [f32]) {
    fwht(x);
    if x.len() > 1 {
        let s = 1.0 / (x.len() as f32).sqrt();
        for v in x.iter_mut() {
            *v *= s;
        }
    }
}

/// Block-diagonal unnormalized FWHT: an independent transform on each
/// consecutive block of `block` elements. `block` must be a power of two
/// dividing `x.len()`.
pub fn fwht_blocks(x: &mut [f32], block: usize) {
    debug_assert!(block.is_power_of_two() && x.len().is_multiple_of(block));
    for b in x.chunks_exact_mut(block) {
        fwht(b);
    }
}

/// Naive O(n^2) Hadamard product `y = H x` (reference for tests):
/// `H[i][j] = (-1)^popcount(i & j)`.
pub fn hadamard_naive(x: &[f32]) -> Vec<f32> {
    let n = x.len();
    (0..n)
        .map(|i| {
            let mut acc = 0.0f64;
            for (j, &v) in x.iter().enumerate() {
                if (i & j).count_ones() % 2 == 0 {
                    acc += v as f64;
                } else {
                    acc -= v as f64;
                }
            }
            acc as f32
        })
        .collect()
}

/// FNV-1a, 64 bit, over the bytes of `name`: the per-tensor seed.
pub fn seed_from_name(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64 (Steele, Lea, Flood 2014): a small, well-mixed PRNG whose
/// whole state is one u64.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 random bits (exact in f32).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }
}

/// `len` signs (+1.0 / -1.0): position `i` takes bit `i % 64` of the
/// `i / 64`-th splitmix64 output (bit set = -1).
pub fn signs(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let bits = rng.next_u64();
        let take = (len - out.len()).min(64);
        for b in 0..take {
            out.push(if (bits >> b) & 1 == 1 { -1.0 } else { 1.0 });
        }
    }
    out
}

/// How K is rotated before quantization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rotation {
    /// No rotation.
    None,
    /// rk-llama.cpp's: K zero-padded to the next power of two, one FWHT over
    /// all of it.
    WholeK,
    /// Block-diagonal FWHT, block = largest power of two dividing K (after
    /// padding K to the NPU's multiple of 32), capped at `max_block`. No
    /// padding beyond the NPU alignment, and blocks never straddle a K
    /// segment boundary.
    Block { max_block: usize },
    /// `Block`, then an orthonormal DCT-II across the q = segment/block
    /// blocks of each K segment at every in-block offset (a Kronecker
    /// product `DCT_q x H_block`): outliers spread over the whole segment
    /// like `WholeK`, without padding K to a power of two. Skipped when q is
    /// 1 or above [`MAX_MIX`].
    Kron { max_block: usize },
}

/// Largest number of blocks mixed by [`Rotation::Kron`] (cost q per element).
pub const MAX_MIX: usize = 64;

/// Orthonormal DCT-II matrix of order q, row-major: `Q[i][j] = c_i cos(pi
/// (j + 1/2) i / q)`, computed in f64 then rounded.
pub fn dct_matrix(q: usize) -> Vec<f32> {
    let mut m = Vec::with_capacity(q * q);
    for i in 0..q {
        let c = if i == 0 {
            (1.0 / q as f64).sqrt()
        } else {
            (2.0 / q as f64).sqrt()
        };
        for j in 0..q {
            m.push(
                (c * (std::f64::consts::PI * (j as f64 + 0.5) * i as f64 / q as f64).cos()) as f32,
            );
        }
    }
    m
}

/// Concrete rotation of one tensor: the rotated length, the transform block
/// and the signs.
#[derive(Clone, Debug, PartialEq)]
pub struct RotationPlan {
    pub rotation: Rotation,
    /// Logical K of the tensor.
    pub k: usize,
    /// Length of a rotated row (>= k; the tail beyond k is zero before the
    /// transform).
    pub k_rot: usize,
    /// FWHT block length (k_rot for whole-K, 1 = no rotation).
    pub block: usize,
    /// Seed of the signs (FNV-1a of the tensor name).
    pub seed: u64,
    signs: Vec<f32>,
    /// Kron mixing: (segment start, blocks q, DCT matrix q x q) per segment.
    mixes: Vec<(usize, usize, Vec<f32>)>,
}

/// Round `k` up to a multiple of `a`.
pub fn round_up(k: usize, a: usize) -> usize {
    k.div_ceil(a) * a
}

impl RotationPlan {
    /// Plan for a tensor with rows of length `k`, padded at least to a
    /// multiple of `align` (the NPU's K alignment, 32), cut into K segments
    /// of `segment` (only `Kron` looks at it: it mixes within segments).
    pub fn new(rotation: Rotation, k: usize, align: usize, seed: u64) -> RotationPlan {
        Self::with_segment(rotation, k, align, seed, usize::MAX)
    }

    /// [`RotationPlan::new`] with the K segment length.
    pub fn with_segment(
        rotation: Rotation,
        k: usize,
        align: usize,
        seed: u64,
        segment: usize,
    ) -> RotationPlan {
        let k_al = round_up(k.max(1), align);
        let (k_rot, block) = match rotation {
            Rotation::None => (k_al, 1),
            Rotation::WholeK => {
                let kr = k_al.next_power_of_two();
                (kr, kr)
            }
            Rotation::Block { max_block } | Rotation::Kron { max_block } => {
                let largest_pow2_divisor = 1usize << k_al.trailing_zeros();
                let cap = max_block.max(1).next_power_of_two();
                (k_al, largest_pow2_divisor.min(cap))
            }
        };
        let signs = if block > 1 {
            signs(seed, k_rot)
        } else {
            Vec::new()
        };
        let mut mixes = Vec::new();
        if matches!(rotation, Rotation::Kron { .. }) && block > 1 {
            let seg = segment.max(block);
            let mut start = 0;
            while start < k_rot {
                let len = seg.min(k_rot - start);
                let q = len / block;
                if q > 1 && q <= MAX_MIX {
                    mixes.push((start, q, dct_matrix(q)));
                }
                start += len;
            }
        }
        RotationPlan {
            rotation,
            k,
            k_rot,
            block,
            seed,
            signs,
            mixes,
        }
    }

    /// Whether this plan changes the data at all.
    pub fn is_identity(&self) -> bool {
        self.block <= 1
    }

    /// Factor that multiplies a rotated dot product back to the original:
    /// `1 / block` for the unnormalized transform used here.
    pub fn output_factor(&self) -> f32 {
        1.0 / self.block as f32
    }

    /// Rotates one row: copies `src` (length k) into `dst` (length k_rot),
    /// zero-pads, applies the signs and the unnormalized FWHT per block.
    pub fn rotate_into(&self, src: &[f32], dst: &mut [f32]) {
        debug_assert_eq!(dst.len(), self.k_rot);
        let n = src.len().min(self.k_rot);
        dst[..n].copy_from_slice(&src[..n]);
        for v in dst[n..].iter_mut() {
            *v = 0.0;
        }
        if self.is_identity() {
            return;
        }
        for (v, s) in dst.iter_mut().zip(self.signs.iter()) {
            *v *= *s;
        }
        fwht_blocks(dst, self.block);
        let b = self.block;
        let mut v = [0.0f32; MAX_MIX];
        for (start, q, dct) in &self.mixes {
            let seg = &mut dst[*start..*start + q * b];
            for j in 0..b {
                for (i, vi) in v[..*q].iter_mut().enumerate() {
                    *vi = seg[i * b + j];
                }
                for (i, row) in dct.chunks_exact(*q).enumerate() {
                    seg[i * b + j] = row.iter().zip(&v[..*q]).map(|(a, x)| a * x).sum();
                }
            }
        }
    }

    /// Rotates `rows` rows of length k from `src` into a new buffer of rows
    /// of length k_rot.
    pub fn rotate_rows(&self, src: &[f32], rows: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; rows * self.k_rot];
        if self.k == 0 {
            return out;
        }
        for (s, d) in src
            .chunks_exact(self.k)
            .zip(out.chunks_exact_mut(self.k_rot))
        {
            self.rotate_into(s, d);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_vec(seed: u64, n: usize) -> Vec<f32> {
        let mut r = SplitMix64(seed);
        (0..n).map(|_| r.next_f32() * 2.0 - 1.0).collect()
    }

    #[test]
    fn fwht_matches_naive() {
        for log in 0..=10 {
            let n = 1 << log;
            let x = rand_vec(log as u64, n);
            let mut y = x.clone();
            fwht(&mut y);
            let r = hadamard_naive(&x);
            for (a, b) in y.iter().zip(r.iter()) {
                assert!(
                    (a - b).abs() <= 1e-4 * (n as f32).sqrt(),
                    "n={n}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn fwht_orthogonality_h_ht_is_n_identity() {
        // Columns of H are H applied to unit vectors; check H H^T = n I exactly.
        for log in 0..=7 {
            let n = 1usize << log;
            let cols: Vec<Vec<f32>> = (0..n)
                .map(|j| {
                    let mut e = vec![0.0f32; n];
                    e[j] = 1.0;
                    fwht(&mut e);
                    e
                })
                .collect();
            for i in 0..n {
                for j in 0..n {
                    let dot: f32 = cols[i].iter().zip(cols[j].iter()).map(|(a, b)| a * b).sum();
                    let want = if i == j { n as f32 } else { 0.0 };
                    assert_eq!(dot, want, "n={n} ({i},{j})");
                }
            }
        }
    }

    #[test]
    fn fwht_is_involution_up_to_n_and_orthonormal_is_exact_involution() {
        let x = rand_vec(7, 256);
        let mut y = x.clone();
        fwht(&mut y);
        fwht(&mut y);
        for (a, b) in y.iter().zip(x.iter()) {
            assert!((a / 256.0 - b).abs() < 1e-5);
        }
        let mut z = x.clone();
        fwht_orthonormal(&mut z);
        fwht_orthonormal(&mut z);
        for (a, b) in z.iter().zip(x.iter()) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn signs_are_stable_and_balanced() {
        // Golden values pin the PRNG and the hash across machines.
        assert_eq!(seed_from_name(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(seed_from_name("a"), 0xaf63_dc4c_8601_ec8c);
        let mut r = SplitMix64(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        let s = signs(seed_from_name("blk.0.attn_q.weight"), 4096);
        let neg = s.iter().filter(|&&v| v < 0.0).count();
        assert!((1800..2300).contains(&neg), "{neg} negative of 4096");
        assert_eq!(s, signs(seed_from_name("blk.0.attn_q.weight"), 4096));
        assert_ne!(s, signs(seed_from_name("blk.1.attn_q.weight"), 4096));
    }

    #[test]
    fn rotation_preserves_dot_products() {
        for (rot, k) in [
            (Rotation::WholeK, 576),
            (Rotation::Block { max_block: 4096 }, 576),
            (Rotation::Block { max_block: 64 }, 1536),
            (Rotation::WholeK, 33),
            (Rotation::Kron { max_block: 4096 }, 576),
            (Rotation::Kron { max_block: 64 }, 1536),
        ] {
            let plan = RotationPlan::new(rot, k, 32, 42);
            let w = rand_vec(1, k);
            let x = rand_vec(2, k);
            let want: f64 = w
                .iter()
                .zip(x.iter())
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum();
            let wr = plan.rotate_rows(&w, 1);
            let xr = plan.rotate_rows(&x, 1);
            let got: f64 = wr
                .iter()
                .zip(xr.iter())
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
                * plan.output_factor() as f64;
            let norm: f64 = (w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>()
                * x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>())
            .sqrt();
            assert!(
                (got - want).abs() <= 1e-5 * norm,
                "{rot:?} k={k}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn block_plan_sizes() {
        let p = RotationPlan::new(Rotation::Block { max_block: 4096 }, 576, 32, 0);
        assert_eq!((p.k_rot, p.block), (576, 64));
        let p = RotationPlan::new(Rotation::Block { max_block: 4096 }, 640, 32, 0);
        assert_eq!((p.k_rot, p.block), (640, 128));
        let p = RotationPlan::new(Rotation::WholeK, 576, 32, 0);
        assert_eq!((p.k_rot, p.block), (1024, 1024));
        let p = RotationPlan::new(Rotation::None, 33, 32, 0);
        assert_eq!((p.k_rot, p.block), (64, 1));
    }
}
