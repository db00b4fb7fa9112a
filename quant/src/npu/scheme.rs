//! Quantization schemes for NPU matmuls, their names, and the default
//! scheme per source GGML type.
//!
//! A scheme name is `w{16|8|4}a{16|8|4}` followed by dot-separated options:
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `had` | rk-llama.cpp's rotation: K padded to a power of two, one FWHT | no rotation |
//! | `bhad` / `bhadN` | block-diagonal FWHT, block = largest power of two dividing K, at most N (default 4096, and never more than the K segment) | |
//! | `khad` / `khadN` | `bhad` then an orthonormal DCT across the blocks of each K segment: whole-segment spreading without padding | |
//! | `wmse` / `wkl` | weight clip by MSE / KL search | absmax |
//! | `tensor` | one weight scale per tensor (per K segment) | per output channel |
//! | `amse` | activation clip by per-row MSE search | absmax |
//! | `r8` | int4 levels [-8, 7] (sign-flipped rows) | [-7, 7] |
//! | `hilo` | activations as two digits of the NPU's type, `code = B hi + lo` (B = 16 for int4, codes in [-136, 119]; B = 256 for int8): the NPU multiplies 2M rows by the weights in one matmul, the CPU adds `B C_hi + C_lo` | one digit |
//! | `sq` | SmoothQuant balancing (alpha 1/2) per K channel before rotation: `W diag(s)` and `x / s`, `s_j = sqrt(max|x_j| / max|W_j|)` from activation statistics (the harness uses the evaluated rows; a backend folds `1/s` into the preceding norm weight). [`super::prepare_weight`] takes weights already scaled | none |
//! | `zp` | affine weights: levels span [min, max] of each row segment, offset x activation sums added on the CPU (with `seg32` and no rotation this holds Q4_0/Q4_1/Q4_K blocks exactly) | symmetric |
//! | `segN` | at most N of K per NPU matmul, partial sums added on the CPU | 8192 |
//!
//! Examples: `w8a8.had`, `w4a4.had.wkl.tensor` (rk-llama.cpp's int4), `w4a8.bhad.wmse`.

use std::fmt;

use super::hadamard::Rotation;
use super::layout::Precision;
use super::quantize::{Clip, LevelRange};
use super::NpuQuantError;

/// Number format of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Levels {
    F16,
    Int8,
    Int4,
}

impl Levels {
    fn bits(self) -> u32 {
        match self {
            Levels::F16 => 16,
            Levels::Int8 => 8,
            Levels::Int4 => 4,
        }
    }
}

/// Weight-scale granularity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale per tensor and K segment (rk-llama.cpp's first scheme).
    PerTensor,
    /// One scale per output channel and K segment.
    PerChannel,
}

/// Default maximum K per NPU matmul (rk-llama.cpp splits at 8192).
pub const DEFAULT_K_SEGMENT: usize = 8192;
/// Default cap of the block-diagonal Hadamard block.
pub const DEFAULT_MAX_BLOCK: usize = 4096;

/// How one weight matrix and its activations are quantized for the NPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Scheme {
    pub weight: Levels,
    pub act: Levels,
    pub rotation: Rotation,
    pub weight_clip: Clip,
    pub granularity: Granularity,
    pub act_clip: Clip,
    /// Int4 levels [-8, 7] (rows sign-flipped) instead of [-7, 7].
    pub int4_full8: bool,
    /// Activations carried as two digits of the NPU's integer type
    /// (`16 hi + lo` for int4, `256 hi + lo` for int8) stacked along M:
    /// twice the activation bits from one NPU matmul of 2M rows.
    pub act_two_digits: bool,
    /// SmoothQuant balancing of K channels (applied by the caller, see
    /// [`super::eval::smoothing_factors`]).
    pub smooth: bool,
    /// Affine weights: one offset per output channel and K segment
    /// (`w ~= s q + o`, levels spanning [min, max] of the row segment); the
    /// CPU adds `o * sum(x segment)` to the output.
    pub weight_offset: bool,
    /// Maximum K per NPU matmul (a multiple of 32).
    pub k_segment: usize,
}

impl Scheme {
    /// A scheme with no options.
    pub const fn plain(weight: Levels, act: Levels) -> Scheme {
        Scheme {
            weight,
            act,
            rotation: Rotation::None,
            weight_clip: Clip::AbsMax,
            granularity: Granularity::PerChannel,
            act_clip: Clip::AbsMax,
            int4_full8: false,
            act_two_digits: false,
            smooth: false,
            weight_offset: false,
            k_segment: DEFAULT_K_SEGMENT,
        }
    }

    /// The NPU precision: the wider of the two operands (w4a8 runs as int8).
    pub fn precision(&self) -> Precision {
        match self.weight.bits().max(self.act.bits()) {
            16 => Precision::Fp16,
            8 => Precision::Int8,
            _ => Precision::Int4,
        }
    }

    fn range(&self, l: Levels) -> LevelRange {
        match l {
            Levels::Int4 if self.int4_full8 => LevelRange::INT4_FULL8,
            Levels::Int4 => LevelRange::INT4_SYM7,
            _ => LevelRange::INT8,
        }
    }

    /// Integer levels of the weights (meaningless for F16).
    pub fn weight_range(&self) -> LevelRange {
        self.range(self.weight)
    }

    /// Integer levels of the activations (meaningless for F16); with
    /// `hilo` the levels of the two-digit code.
    pub fn act_range(&self) -> LevelRange {
        match self.act {
            Levels::Int4 if self.act_two_digits => LevelRange::INT4_TWO_DIGITS,
            Levels::Int8 if self.act_two_digits => LevelRange::INT8_TWO_DIGITS,
            l => self.range(l),
        }
    }

    /// The base of two-digit activation codes: `code = base * hi + lo`
    /// (16 for int4 digits, 256 for int8).
    pub fn act_digit_base(&self) -> i32 {
        if self.act == Levels::Int4 {
            16
        } else {
            256
        }
    }

    /// Int4 digits per activation code (2 with `hilo`): the NPU's A operand
    /// has this many rows per token.
    pub fn act_digits(&self) -> usize {
        if self.act_two_digits {
            2
        } else {
            1
        }
    }

    /// Checks the combination is one the NPU can run.
    pub fn validate(&self) -> Result<(), NpuQuantError> {
        let ok_pair = matches!(
            (self.weight, self.act),
            (Levels::F16, Levels::F16)
                | (Levels::Int8, Levels::Int8)
                | (Levels::Int4, Levels::Int4)
                | (Levels::Int4, Levels::Int8)
        );
        if !ok_pair {
            return Err(NpuQuantError::BadScheme(format!(
                "{self}: weights and activations must be w16a16, w8a8, w4a4 or w4a8"
            )));
        }
        if self.act_two_digits && (self.weight == Levels::F16 || self.act == Levels::F16) {
            return Err(NpuQuantError::BadScheme(format!(
                "{self}: hilo needs integer operands"
            )));
        }
        if self.weight_offset && self.weight == Levels::F16 {
            return Err(NpuQuantError::BadScheme(format!(
                "{self}: zp needs integer weights"
            )));
        }
        if self.k_segment == 0 || !self.k_segment.is_multiple_of(32) {
            return Err(NpuQuantError::BadScheme(format!(
                "{self}: K segment {} is not a positive multiple of 32",
                self.k_segment
            )));
        }
        if let Rotation::Block { max_block } | Rotation::Kron { max_block } = self.rotation {
            if max_block < 2 || !max_block.is_power_of_two() {
                return Err(NpuQuantError::BadScheme(format!(
                    "{self}: Hadamard block {max_block} is not a power of two >= 2"
                )));
            }
        }
        Ok(())
    }

    /// The Hadamard block cap actually used: never more than the largest
    /// power of two dividing the K segment, so blocks do not straddle
    /// segments.
    pub fn effective_rotation(&self) -> Rotation {
        match self.rotation {
            Rotation::Block { max_block } => {
                let seg_pow2 = 1usize << self.k_segment.trailing_zeros();
                Rotation::Block {
                    max_block: max_block.min(seg_pow2),
                }
            }
            Rotation::Kron { max_block } => {
                let seg_pow2 = 1usize << self.k_segment.trailing_zeros();
                Rotation::Kron {
                    max_block: max_block.min(seg_pow2),
                }
            }
            r => r,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}a{}", self.weight.bits(), self.act.bits())?;
        match self.rotation {
            Rotation::None => {}
            Rotation::WholeK => write!(f, ".had")?,
            Rotation::Block { max_block } if max_block == DEFAULT_MAX_BLOCK => write!(f, ".bhad")?,
            Rotation::Block { max_block } => write!(f, ".bhad{max_block}")?,
            Rotation::Kron { max_block } if max_block == DEFAULT_MAX_BLOCK => write!(f, ".khad")?,
            Rotation::Kron { max_block } => write!(f, ".khad{max_block}")?,
        }
        match self.weight_clip {
            Clip::AbsMax => {}
            Clip::Mse => write!(f, ".wmse")?,
            Clip::Kl => write!(f, ".wkl")?,
        }
        if self.granularity == Granularity::PerTensor {
            write!(f, ".tensor")?;
        }
        match self.act_clip {
            Clip::AbsMax => {}
            Clip::Mse => write!(f, ".amse")?,
            Clip::Kl => write!(f, ".akl")?,
        }
        if self.int4_full8 {
            write!(f, ".r8")?;
        }
        if self.act_two_digits {
            write!(f, ".hilo")?;
        }
        if self.smooth {
            write!(f, ".sq")?;
        }
        if self.weight_offset {
            write!(f, ".zp")?;
        }
        if self.k_segment != DEFAULT_K_SEGMENT {
            write!(f, ".seg{}", self.k_segment)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Scheme {
    type Err = NpuQuantError;

    fn from_str(s: &str) -> Result<Scheme, NpuQuantError> {
        let bad = |what: &str| NpuQuantError::BadScheme(format!("{s:?}: {what}"));
        let mut parts = s.trim().split('.');
        let head = parts.next().unwrap_or("").to_ascii_lowercase();
        let levels = |t: &str| match t {
            "16" => Some(Levels::F16),
            "8" => Some(Levels::Int8),
            "4" => Some(Levels::Int4),
            _ => None,
        };
        let (w, a) = head
            .strip_prefix('w')
            .and_then(|r| r.split_once('a'))
            .and_then(|(w, a)| Some((levels(w)?, levels(a)?)))
            .ok_or_else(|| bad("expected w16a16, w8a8, w4a4 or w4a8 first"))?;
        let mut sc = Scheme::plain(w, a);
        for opt in parts {
            let num = |prefix: &str| -> Result<Option<usize>, NpuQuantError> {
                match opt.strip_prefix(prefix) {
                    Some("") => Ok(None),
                    Some(n) => n
                        .parse()
                        .map(Some)
                        .map_err(|_| bad(&format!("option {opt:?}: {n:?} is not a number"))),
                    None => Err(bad("internal")),
                }
            };
            match opt {
                "had" => sc.rotation = Rotation::WholeK,
                o if o.starts_with("bhad") => {
                    sc.rotation = Rotation::Block {
                        max_block: num("bhad")?.unwrap_or(DEFAULT_MAX_BLOCK),
                    }
                }
                o if o.starts_with("khad") => {
                    sc.rotation = Rotation::Kron {
                        max_block: num("khad")?.unwrap_or(DEFAULT_MAX_BLOCK),
                    }
                }
                "wmse" => sc.weight_clip = Clip::Mse,
                "wkl" => sc.weight_clip = Clip::Kl,
                "tensor" => sc.granularity = Granularity::PerTensor,
                "amse" => sc.act_clip = Clip::Mse,
                "akl" => sc.act_clip = Clip::Kl,
                "r8" => sc.int4_full8 = true,
                "hilo" => sc.act_two_digits = true,
                "sq" => sc.smooth = true,
                "zp" => sc.weight_offset = true,
                o if o.starts_with("seg") => {
                    sc.k_segment = num("seg")?.ok_or_else(|| bad("seg needs a number"))?
                }
                o => return Err(bad(&format!("unknown option {o:?}"))),
            }
        }
        sc.validate()?;
        Ok(sc)
    }
}

/// rk-llama.cpp's int4 scheme, the baseline to beat: rotated (whole-K),
/// one KL-clipped scale per tensor, activations absmax/7 per row.
pub const RK_LLAMA_INT4: &str = "w4a4.had.wkl.tensor";

/// Schemes the accuracy harness compares (baseline first).
pub const EVAL_SCHEMES: &[&str] = &[
    RK_LLAMA_INT4,
    "w16a16",
    "w8a8",
    "w8a8.had",
    "w8a8.khad",
    "w8a8.had.seg128",
    "w8a8.had.hilo",
    "w8a8.had.wmse.hilo.seg64",
    "w8a8.hilo.zp.seg32",
    "w8a8.had.sq",
    "w8a8.had.hilo.sq",
    "w4a4.had.wmse.amse.r8",
    "w4a4.had.wmse.amse.r8.seg32",
    "w4a4.had.wmse.amse.r8.sq",
    "w4a4.had.wmse.amse.r8.sq.seg32",
    "w4a4.had.wmse.r8.hilo.seg256",
    "w4a4.r8.hilo.zp.seg32",
    "w4a8.had.wmse",
    "w4a8.r8.zp.seg32",
];

/// The default NPU scheme per source GGML type name (as printed by
/// llama.cpp, e.g. "Q4_K"); overridable with `--npu-quant`. Types not
/// listed use the `*` row. Chosen from the measurements in
/// docs/quantization.md (`rkinfer quant-eval`, real activations of 256
/// corpus tokens), among the schemes the NPU backend runs today (one digit
/// per activation, no calibration data):
/// - 16-bit sources run as fp16 (w16a16, 0.02% matrix error).
/// - 8/6/5-bit sources: rotated int8 with rk-llama.cpp's whole-K Hadamard
///   (`w8a8.had`: 0.83% / 0.94% mean on SmolLM2 / gemma, worst matrices
///   3.5% / 1.8%). Measured better, once the backend has them: `hilo`
///   activations with SmoothQuant factors from a calibration pass
///   (`w8a8.had.hilo.sq`, every gemma matrix below 0.9%), or the GGUF
///   blocks kept exactly (`w8a8.hilo.zp.seg32`, 0.06% on gemma, at one NPU
///   matmul per 32 of K).
/// - 4-bit and lower sources: rotated int8 as well (`w8a8.had`: 0.83% on
///   SmolLM2's Q4_1, 0.90% on gemma's Q4_K matrices). The exact-block
///   `w4a8.r8.zp.seg32` (0.96% / 0.77%) needs one NPU matmul per 32 of K
///   whose partial sums the CPU adds: the board cost model (`rkinfer::npu::
///   cost`, docs/quantization.md) puts Gemma3 1B Q4_0 at half the prompt
///   speed and a quarter of the decode speed of `w8a8.had`, for no better
///   accuracy on SmolLM2. It stays available with `--npu-quant w4a8`.
pub const DEFAULT_SCHEMES: &[(&str, &str)] = &[
    ("F16", "w16a16"),
    ("BF16", "w16a16"),
    ("F32", "w16a16"),
    ("Q8_0", "w8a8.had"),
    ("Q6_K", "w8a8.had"),
    ("Q5_0", "w8a8.had"),
    ("Q5_1", "w8a8.had"),
    ("Q5_K", "w8a8.had"),
    ("Q4_0", "w8a8.had"),
    ("Q4_1", "w8a8.had"),
    ("Q4_K", "w8a8.had"),
    ("Q3_K", "w8a8.had"),
    ("Q2_K", "w8a8.had"),
    ("*", "w8a8.had"),
];

/// The default scheme for a GGML type name (see [`DEFAULT_SCHEMES`]).
pub fn default_scheme(ggml_type_name: &str) -> Scheme {
    let name = DEFAULT_SCHEMES
        .iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(ggml_type_name))
        .or_else(|| DEFAULT_SCHEMES.iter().find(|(t, _)| *t == "*"))
        .map(|(_, s)| *s)
        .unwrap_or("w8a8.had");
    // The table is static and covered by a test, so parsing cannot fail.
    name.parse()
        .unwrap_or(Scheme::plain(Levels::Int8, Levels::Int8))
}

/// [`default_scheme`] for a GGML type.
pub fn default_scheme_for(ty: gguf::GgmlType) -> Scheme {
    default_scheme(ty.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in EVAL_SCHEMES {
            let sc: Scheme = s.parse().unwrap();
            assert_eq!(sc.to_string(), *s);
        }
        for (_, s) in DEFAULT_SCHEMES {
            let sc: Scheme = s.parse().unwrap();
            assert_eq!(&sc.to_string(), s);
        }
        assert_eq!(
            "w4a4.bhad64.seg512".parse::<Scheme>().unwrap().to_string(),
            "w4a4.bhad64.seg512"
        );
    }

    #[test]
    fn bad_names_are_errors() {
        for s in [
            "",
            "w8a4",
            "w3a3",
            "w16a16.hilo",
            "w8a8.foo",
            "w8a8.seg",
            "w8a8.seg33",
            "w4a4.bhad3",
            "x8a8",
        ] {
            assert!(s.parse::<Scheme>().is_err(), "{s} parsed");
        }
    }

    #[test]
    fn precision_and_defaults() {
        assert_eq!(
            "w4a8".parse::<Scheme>().unwrap().precision(),
            Precision::Int8
        );
        assert_eq!(
            "w4a4".parse::<Scheme>().unwrap().precision(),
            Precision::Int4
        );
        assert_eq!(default_scheme("F16").precision(), Precision::Fp16);
        assert_eq!(default_scheme("q8_0").to_string(), "w8a8.had");
        assert_eq!(default_scheme("IQ2_XXS").to_string(), "w8a8.had");
        assert_eq!(default_scheme("Q4_K").precision(), Precision::Int8);
    }
}
