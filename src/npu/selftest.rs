//! The self-test ladder: matmul shapes and precisions run on a device and
//! compared with the CPU reference. `rkinfer npu selftest` prints it; it is
//! what a board owner runs first and pastes into a bug report.

use std::time::Instant;

use super::command::task::MatmulType;
use super::driver::device::NpuDevice;
use super::ops::matmul::{self, MatmulOptions, MatmulOutput, Operands};

/// One rung of the ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    pub ty: MatmulType,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub what: &'static str,
}

/// Outcome of one rung.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub case: Case,
    pub tasks: usize,
    pub passed: bool,
    pub max_abs_err: f64,
    /// Largest error divided by its allowed bound (<= 1 passes).
    pub worst_vs_bound: f64,
    pub millis: f64,
    pub error: Option<String>,
}

/// The ladder: the two hardware-verified shapes first, then decode (M=1),
/// padding, M / K / N tiling, fp16 output, and int4 when asked.
pub fn ladder(include_int4: bool) -> Vec<Case> {
    use MatmulType::*;
    let mut v = vec![
        Case {
            ty: Int8,
            m: 4,
            k: 64,
            n: 32,
            what: "known-good int8",
        },
        Case {
            ty: Fp16,
            m: 4,
            k: 32,
            n: 16,
            what: "known-good fp16",
        },
        Case {
            ty: Fp16Out16,
            m: 4,
            k: 32,
            n: 16,
            what: "fp16 output",
        },
        Case {
            ty: Int8,
            m: 1,
            k: 256,
            n: 64,
            what: "decode M=1",
        },
        Case {
            ty: Fp16,
            m: 1,
            k: 512,
            n: 64,
            what: "decode M=1",
        },
        Case {
            ty: Fp16,
            m: 37,
            k: 256,
            n: 48,
            what: "M padded to 40",
        },
        Case {
            ty: Int8,
            m: 64,
            k: 512,
            n: 96,
            what: "N over cores",
        },
        Case {
            ty: Fp16,
            m: 200,
            k: 1024,
            n: 32,
            what: "M split (chained tasks)",
        },
        Case {
            ty: Int8,
            m: 8,
            k: 9216,
            n: 32,
            what: "K split (CPU sum)",
        },
        Case {
            ty: Fp16,
            m: 4,
            k: 9216,
            n: 16,
            what: "K split (CPU sum)",
        },
        Case {
            ty: Fp16Out16,
            m: 64,
            k: 2048,
            n: 64,
            what: "fp16 output, larger",
        },
    ];
    if include_int4 {
        v.push(Case {
            ty: Int4,
            m: 4,
            k: 64,
            n: 64,
            what: "int4 (experimental)",
        });
        v.push(Case {
            ty: Int4,
            m: 16,
            k: 512,
            n: 128,
            what: "int4 (experimental)",
        });
    }
    v
}

/// Deterministic inputs (xorshift), independent of any crate's RNG.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
    pub fn i8_in(&mut self, lo: i32, hi: i32) -> i8 {
        (lo + (self.next_u32() % (hi - lo + 1) as u32) as i32) as i8
    }
    /// FP16 in [-1, 1).
    pub fn f16(&mut self) -> u16 {
        let x = (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
        half::f16::from_f32(x).to_bits()
    }
}

/// Runs one case and compares with the CPU reference: int8/int4 must be
/// bit-exact, fp16 within the FP32-accumulation (and FP16-output) bound.
pub fn run_case(dev: &dyn NpuDevice, case: Case, opts: &MatmulOptions, seed: u64) -> CaseResult {
    let Case { ty, m, k, n, .. } = case;
    let mut rng = Rng::new(seed);
    let tasks = matmul::plan(ty, m, k, n, opts)
        .map(|p| p.tasks())
        .unwrap_or(0);
    let start = Instant::now();
    let mut res = CaseResult {
        case,
        tasks,
        passed: false,
        max_abs_err: 0.0,
        worst_vs_bound: 0.0,
        millis: 0.0,
        error: None,
    };
    let outcome = match ty {
        MatmulType::Int8 | MatmulType::Int4 => {
            let (lo, hi) = if ty == MatmulType::Int8 {
                (-128, 127)
            } else {
                (-8, 7)
            };
            let a: Vec<i8> = (0..m * k).map(|_| rng.i8_in(lo, hi)).collect();
            let b: Vec<i8> = (0..n * k).map(|_| rng.i8_in(lo, hi)).collect();
            let ops = if ty == MatmulType::Int8 {
                Operands::Int8 { a: &a, b: &b }
            } else {
                Operands::Int4 { a: &a, b: &b }
            };
            matmul::matmul(dev, ty, m, k, n, ops, opts).map(|out| {
                let want = if ty == MatmulType::Int8 {
                    matmul::reference_int8(&a, &b, m, k, n)
                } else {
                    let segs = matmul::plan(ty, m, k, n, opts)
                        .map(|p| p.k_segs)
                        .unwrap_or_default();
                    matmul::reference_int4(&a, &b, m, k, n, &segs)
                };
                match out {
                    MatmulOutput::I32(got) => {
                        let err = got
                            .iter()
                            .zip(&want)
                            .map(|(g, w)| (i64::from(*g) - i64::from(*w)).abs())
                            .max()
                            .unwrap_or(0);
                        (err as f64, if err == 0 { 0.0 } else { f64::INFINITY })
                    }
                    _ => (f64::INFINITY, f64::INFINITY),
                }
            })
        }
        MatmulType::Fp16 | MatmulType::Fp16Out16 => {
            let a: Vec<u16> = (0..m * k).map(|_| rng.f16()).collect();
            let b: Vec<u16> = (0..n * k).map(|_| rng.f16()).collect();
            matmul::matmul(dev, ty, m, k, n, Operands::Fp16 { a: &a, b: &b }, opts).map(|out| {
                let (exact, mag) = matmul::reference_fp16(&a, &b, m, k, n);
                let got: Vec<f64> = match out {
                    MatmulOutput::F32(v) => v.iter().map(|x| f64::from(*x)).collect(),
                    MatmulOutput::F16(v) => v
                        .iter()
                        .map(|h| f64::from(half::f16::from_bits(*h).to_f32()))
                        .collect(),
                    MatmulOutput::I32(_) => vec![f64::INFINITY; m * n],
                };
                let out16 = ty == MatmulType::Fp16Out16;
                let mut worst = (0f64, 0f64);
                for i in 0..m * n {
                    let err = (got[i] - exact[i]).abs();
                    let ratio = err / matmul::fp16_error_bound(k, mag[i], exact[i], out16);
                    worst.0 = worst.0.max(if err.is_nan() { f64::INFINITY } else { err });
                    worst.1 = worst
                        .1
                        .max(if ratio.is_nan() { f64::INFINITY } else { ratio });
                }
                worst
            })
        }
    };
    res.millis = start.elapsed().as_secs_f64() * 1e3;
    match outcome {
        Ok((err, ratio)) => {
            res.max_abs_err = err;
            res.worst_vs_bound = ratio;
            res.passed = ratio <= 1.0;
        }
        Err(e) => res.error = Some(e.to_string()),
    }
    res
}
