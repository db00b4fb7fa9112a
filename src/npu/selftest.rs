//! The self-test: a ladder of matmuls (one task to chained tasks, each
//! precision, each core) run on a device and compared with the CPU
//! reference, recorded as a [`Report`] a board owner can send as a bug
//! report: the environment, every allocation, for each rung the submitted
//! command words' hash beside the known-good one, job results, a verdict
//! per output tile (untouched / wrong / ok), isolating reruns of failed
//! rungs, and the kernel log lines about the NPU. `rkinfer npu selftest`
//! prints it as a table or, with `--json`, whole.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::command::task::MatmulType;
use super::driver::device::{DeviceInfo, NpuDevice};
use super::ops::matmul::{
    self, Activations, MatmulOptions, MatmulOutput, PreparedWeights, RunTrace, Weights,
};

/// One rung of the ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Case {
    #[serde(serialize_with = "type_name")]
    pub ty: MatmulType,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// Run on this core alone instead of the configured cores.
    pub core: Option<u32>,
    pub what: &'static str,
}

fn type_name<S: serde::Serializer>(ty: &MatmulType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(ty.name())
}

/// What became of one output tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TileVerdict {
    /// Still the sentinel: the NPU never wrote it.
    Untouched,
    /// Written, but some value is outside the allowed error.
    Wrong,
    Ok,
    /// The run failed before the output could be compared.
    Unchecked,
}

/// One tile's verdict with where it lies.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TileReport {
    #[serde(flatten)]
    pub tile: matmul::TileTrace,
    pub verdict: TileVerdict,
}

/// Outcome of one rung.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub case: Case,
    pub tasks: usize,
    pub passed: bool,
    pub max_abs_err: f64,
    /// Largest error divided by its allowed bound (<= 1 passes).
    pub worst_vs_bound: f64,
    pub millis: f64,
    pub error: Option<String>,
    /// Hash of the first job's command words (addresses cleared).
    pub words_hash: Option<u64>,
    /// The same hash of the hardware-tested stream, for the rungs that
    /// have one.
    pub known_good_hash: Option<u64>,
    /// Buffers, jobs (task counter, hardware time, wall time, error).
    pub trace: RunTrace,
    pub tiles: Vec<TileReport>,
}

/// The ladder: the two hardware-verified shapes first, then decode (M=1),
/// padding, M / K / N tiling, fp16 output, the known-good int8 task on each
/// of `cores` alone, and int4 when asked.
pub fn ladder(include_int4: bool) -> Vec<Case> {
    ladder_for(include_int4, 0)
}

/// [`ladder`] with a single-core rung for each of `cores` cores.
pub fn ladder_for(include_int4: bool, cores: u32) -> Vec<Case> {
    use MatmulType::*;
    let mut v = vec![
        Case {
            ty: Int8,
            m: 4,
            k: 64,
            n: 32,
            core: None,
            what: "known-good int8",
        },
        Case {
            ty: Fp16,
            m: 4,
            k: 32,
            n: 16,
            core: None,
            what: "known-good fp16",
        },
        Case {
            ty: Fp16Out16,
            m: 4,
            k: 32,
            n: 16,
            core: None,
            what: "fp16 output",
        },
        Case {
            ty: Int8,
            m: 1,
            k: 256,
            n: 64,
            core: None,
            what: "decode M=1",
        },
        Case {
            ty: Fp16,
            m: 1,
            k: 512,
            n: 64,
            core: None,
            what: "decode M=1",
        },
        Case {
            ty: Fp16,
            m: 37,
            k: 256,
            n: 48,
            core: None,
            what: "M padded to 40",
        },
        Case {
            ty: Int8,
            m: 64,
            k: 512,
            n: 96,
            core: None,
            what: "N over cores",
        },
        Case {
            ty: Fp16,
            m: 200,
            k: 1024,
            n: 32,
            core: None,
            what: "M split (chained tasks)",
        },
        Case {
            ty: Int8,
            m: 8,
            k: 9216,
            n: 32,
            core: None,
            what: "K split (CPU sum)",
        },
        Case {
            ty: Fp16,
            m: 4,
            k: 9216,
            n: 16,
            core: None,
            what: "K split (CPU sum)",
        },
        Case {
            ty: Fp16Out16,
            m: 64,
            k: 2048,
            n: 64,
            core: None,
            what: "fp16 output, larger",
        },
    ];
    v.extend((0..cores).map(|c| Case {
        ty: Int8,
        m: 4,
        k: 64,
        n: 32,
        core: Some(c),
        what: "known-good int8, one core",
    }));
    if include_int4 {
        v.push(Case {
            ty: Int4,
            m: 4,
            k: 64,
            n: 64,
            core: None,
            what: "int4 (experimental)",
        });
        v.push(Case {
            ty: Int4,
            m: 16,
            k: 512,
            n: 128,
            core: None,
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

/// Hashes ([`matmul::words_hash`]) of the single-task streams that public
/// projects ran on hardware (tests/fixtures/npu-regs-expected.json).
pub const KNOWN_GOOD: [(MatmulType, usize, usize, usize, u64); 2] = [
    (MatmulType::Int8, 4, 64, 32, KNOWN_GOOD_INT8),
    (MatmulType::Fp16, 4, 32, 16, KNOWN_GOOD_FP16),
];
const KNOWN_GOOD_INT8: u64 = 0x095d_61cd_e14d_4b52;
const KNOWN_GOOD_FP16: u64 = 0x6878_38dc_4abc_ae11;

/// The known-good hash of a rung's shape, if it has one.
pub fn known_good_hash(case: &Case) -> Option<u64> {
    KNOWN_GOOD
        .iter()
        .find(|(ty, m, k, n, _)| (*ty, *m, *k, *n) == (case.ty, case.m, case.k, case.n))
        .map(|g| g.4)
}

/// Operands of a rung, row-major.
enum Inputs {
    Int { a: Vec<i8>, b: Vec<i8> },
    Fp16 { a: Vec<u16>, b: Vec<u16> },
}

/// Per output element: the error and its allowed bound.
fn errors(
    case: &Case,
    inputs: &Inputs,
    out: &MatmulOutput,
    k_segs: &[matmul::Span],
) -> Vec<(f64, f64)> {
    let Case { ty, m, k, n, .. } = *case;
    match (inputs, out) {
        (Inputs::Int { a, b }, MatmulOutput::I32(got)) => {
            let want = if ty == MatmulType::Int4 {
                matmul::reference_int4(a, b, m, k, n, k_segs)
            } else {
                matmul::reference_int8(a, b, m, k, n)
            };
            got.iter()
                .zip(&want)
                .map(|(g, w)| ((i64::from(*g) - i64::from(*w)).abs() as f64, 0.0))
                .collect()
        }
        (Inputs::Fp16 { a, b }, out) => {
            let (exact, mag) = matmul::reference_fp16(a, b, m, k, n);
            let got: Vec<f64> = match out {
                MatmulOutput::F32(v) => v.iter().map(|x| f64::from(*x)).collect(),
                MatmulOutput::F16(v) => v
                    .iter()
                    .map(|h| f64::from(half::f16::from_bits(*h).to_f32()))
                    .collect(),
                MatmulOutput::I32(_) => vec![f64::NAN; m * n],
            };
            let out16 = ty == MatmulType::Fp16Out16;
            (0..m * n)
                .map(|i| {
                    let err = (got[i] - exact[i]).abs();
                    let err = if err.is_nan() { f64::INFINITY } else { err };
                    (err, matmul::fp16_error_bound(k, mag[i], exact[i], out16))
                })
                .collect()
        }
        _ => vec![(f64::INFINITY, 0.0); m * n],
    }
}

/// Runs one case and compares with the CPU reference: int8/int4 must be
/// bit-exact, fp16 within the FP32-accumulation (and FP16-output) bound.
pub fn run_case(dev: &dyn NpuDevice, case: Case, opts: &MatmulOptions, seed: u64) -> CaseResult {
    let _recording = RecordSubmits::on(dev);
    let Case { ty, m, k, n, .. } = case;
    let mut opts = opts.clone();
    if let Some(core) = case.core {
        opts.cores = vec![core];
    }
    let mut rng = Rng::new(seed);
    let plan = matmul::plan(ty, m, k, n, &opts);
    let tasks = plan.as_ref().map(|p| p.tasks()).unwrap_or(0);
    let k_segs = plan.map(|p| p.k_segs).unwrap_or_default();
    let inputs = match ty {
        MatmulType::Int8 | MatmulType::Int4 => {
            let (lo, hi) = if ty == MatmulType::Int8 {
                (-128, 127)
            } else {
                (-8, 7)
            };
            Inputs::Int {
                a: (0..m * k).map(|_| rng.i8_in(lo, hi)).collect(),
                b: (0..n * k).map(|_| rng.i8_in(lo, hi)).collect(),
            }
        }
        MatmulType::Fp16 | MatmulType::Fp16Out16 => Inputs::Fp16 {
            a: (0..m * k).map(|_| rng.f16()).collect(),
            b: (0..n * k).map(|_| rng.f16()).collect(),
        },
    };
    let (weights, acts) = match (&inputs, ty) {
        (Inputs::Int { a, b }, MatmulType::Int4) => (Weights::Int4(b), Activations::Int4(a)),
        (Inputs::Int { a, b }, _) => (Weights::Int8(b), Activations::Int8(a)),
        (Inputs::Fp16 { a, b }, _) => (Weights::Fp16(b), Activations::Fp16(a)),
    };
    let start = Instant::now();
    let mut trace = RunTrace::default();
    let outcome = PreparedWeights::new(dev, ty, k, n, weights, &opts)
        .and_then(|w| w.matmul_traced(dev, acts, m, &mut trace));
    let millis = start.elapsed().as_secs_f64() * 1e3;
    let mut res = CaseResult {
        case,
        tasks,
        passed: false,
        max_abs_err: 0.0,
        worst_vs_bound: 0.0,
        millis,
        error: None,
        words_hash: trace.jobs.first().map(|j| j.words_hash),
        known_good_hash: known_good_hash(&case),
        tiles: Vec::new(),
        trace,
    };
    let errs = match &outcome {
        Ok(out) => Some(errors(&case, &inputs, out, &k_segs)),
        Err(e) => {
            res.error = Some(e.to_string());
            None
        }
    };
    for t in &res.trace.tiles {
        let verdict = match &errs {
            _ if t.untouched => TileVerdict::Untouched,
            None => TileVerdict::Unchecked,
            Some(e) => {
                let rows = t.m_start..(t.m_start + t.m_len).min(m);
                let bad = rows.into_iter().any(|r| {
                    (t.n_start..t.n_start + t.n_len).any(|c| {
                        let (err, bound) = e[r * n + c];
                        err > bound
                    })
                });
                if bad {
                    TileVerdict::Wrong
                } else {
                    TileVerdict::Ok
                }
            }
        };
        res.tiles.push(TileReport {
            tile: t.clone(),
            verdict,
        });
    }
    if let Some(e) = errs {
        res.max_abs_err = e.iter().map(|p| p.0).fold(0.0, f64::max);
        res.worst_vs_bound = e
            .iter()
            .map(|&(err, bound)| {
                if err == 0.0 {
                    0.0
                } else if bound == 0.0 {
                    f64::INFINITY // exact types: any error fails
                } else {
                    err / bound
                }
            })
            .fold(0.0, f64::max);
        res.passed = res.worst_vs_bound <= 1.0;
    }
    res
}

/// A rerun of a failed rung with one thing changed.
#[derive(Clone, Debug, Serialize)]
pub struct Rerun {
    /// What was changed ("task chaining off", "uncached buffers", ...).
    pub change: &'static str,
    pub result: CaseResult,
}

/// Keeps the device's submit records on for one case: the report needs
/// them, inference does not pay for them.
struct RecordSubmits<'a>(&'a dyn NpuDevice);

impl<'a> RecordSubmits<'a> {
    fn on(dev: &'a dyn NpuDevice) -> Self {
        dev.record_submits(true);
        RecordSubmits(dev)
    }
}

impl Drop for RecordSubmits<'_> {
    fn drop(&mut self) {
        self.0.record_submits(false);
    }
}

/// Reruns a failed rung to isolate the cause: every task in its own job
/// (chaining off), and uncached buffers without cache maintenance where
/// the device offers it. Reruns on another device node are the caller's
/// (it knows the nodes).
pub fn isolate(dev: &dyn NpuDevice, case: Case, opts: &MatmulOptions, seed: u64) -> Vec<Rerun> {
    let mut out = Vec::new();
    let unchained = MatmulOptions {
        max_tasks_per_submit: 1,
        ..opts.clone()
    };
    out.push(Rerun {
        change: "task chaining off (one task per job)",
        result: run_case(dev, case, &unchained, seed),
    });
    if dev.set_uncached(true) {
        let result = run_case(dev, case, opts, seed);
        dev.set_uncached(false);
        out.push(Rerun {
            change: "uncached buffers without cache sync",
            result,
        });
    }
    out
}

/// The machine around the NPU, read from /proc and /sys under `root`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Environment {
    pub kernel_release: Option<String>,
    /// NPU nodes of the device tree and their status ("okay", "disabled").
    pub device_tree: Vec<(String, String)>,
    /// devfreq governors and current frequencies of the NPU and the DDR
    /// controller: (device, governor, frequency in Hz).
    pub devfreq: Vec<(String, String, Option<u64>)>,
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    Some(
        text.trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_string(),
    )
}

fn sorted_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

impl Environment {
    /// Reads what exists; every missing file is simply absent.
    pub fn probe(root: &Path) -> Environment {
        let dt = root.join("proc/device-tree");
        let device_tree = sorted_entries(&dt)
            .into_iter()
            .filter(|n| n.starts_with("npu") || n.starts_with("rknn"))
            .map(|n| {
                let status = read_trimmed(&dt.join(&n).join("status"))
                    .unwrap_or_else(|| "okay (no status property)".into());
                (n, status)
            })
            .collect();
        let df = root.join("sys/class/devfreq");
        let devfreq = sorted_entries(&df)
            .into_iter()
            .filter(|n| n.contains("npu") || n.contains("dmc"))
            .map(|n| {
                let gov = read_trimmed(&df.join(&n).join("governor")).unwrap_or_default();
                let freq = read_trimmed(&df.join(&n).join("cur_freq")).and_then(|f| f.parse().ok());
                (n, gov, freq)
            })
            .collect();
        Environment {
            kernel_release: read_trimmed(&root.join("proc/sys/kernel/osrelease")),
            device_tree,
            devfreq,
        }
    }
}

/// Kernel log lines about the NPU or the IOMMU, the last `keep` of them.
pub fn npu_log_lines(log: &str, keep: usize) -> Vec<String> {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_lowercase();
            ["npu", "rknn", "rocket", "iommu"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    lines[lines.len().saturating_sub(keep)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// Reads the kernel log without blocking (/dev/kmsg; needs root on most
/// boards). The message part of each record only.
pub fn read_kernel_log() -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .map_err(|e| format!("/dev/kmsg: {e}"))?;
    let mut text = String::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                let msg = rec.split_once(';').map_or(&*rec, |(_, m)| m);
                text.push_str(msg.lines().next().unwrap_or(""));
                text.push('\n');
            }
            // EPIPE: a record was overwritten while reading; go on.
            Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    Ok(text)
}

/// The device as the report shows it.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceReport {
    pub driver: String,
    pub version: String,
    pub node: String,
    /// Nodes passed over before it, with why.
    pub nodes_tried: Vec<String>,
    pub hw_version: Option<u32>,
    pub cores: u32,
    pub iommu: Option<bool>,
    pub freq_hz: Option<u64>,
    pub simulated: bool,
    pub job_time_limit_ms: Option<u32>,
}

impl DeviceReport {
    pub fn of(dev: &dyn NpuDevice, nodes_tried: Vec<String>) -> Self {
        let DeviceInfo {
            driver,
            node,
            version,
            hw_version,
            cores,
            iommu,
            freq_hz,
            ..
        } = dev.info();
        DeviceReport {
            driver,
            version,
            node,
            nodes_tried,
            hw_version,
            cores,
            iommu,
            freq_hz,
            simulated: dev.is_simulated(),
            job_time_limit_ms: dev.job_time_limit_ms(),
        }
    }
}

/// One rung with its isolating reruns.
#[derive(Clone, Debug, Serialize)]
pub struct Rung {
    #[serde(flatten)]
    pub result: CaseResult,
    pub reruns: Vec<Rerun>,
}

/// The whole self-test: what a bug report needs.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub rkinfer_version: &'static str,
    pub environment: Environment,
    pub device: DeviceReport,
    pub options: ReportOptions,
    pub rungs: Vec<Rung>,
    pub passed: usize,
    pub total: usize,
    /// Kernel log lines about the NPU or IOMMU (or why none could be read).
    pub kernel_log: Vec<String>,
}

/// The options the ladder ran with.
#[derive(Clone, Debug, Serialize)]
pub struct ReportOptions {
    pub cores: Vec<u32>,
    pub timeout_ms: u32,
    pub envelope: &'static str,
    pub int4: bool,
}

/// Runs the ladder on `dev`, rerunning failed rungs to isolate the cause;
/// `progress` hears of each rung before it runs.
pub fn run_ladder(
    dev: &dyn NpuDevice,
    opts: &MatmulOptions,
    include_int4: bool,
    mut progress: impl FnMut(usize, usize, &Case),
) -> Vec<Rung> {
    let cases = ladder_for(include_int4, dev.info().cores);
    let total = cases.len();
    cases
        .into_iter()
        .enumerate()
        .map(|(i, case)| {
            progress(i, total, &case);
            let seed = i as u64 + 1;
            let result = run_case(dev, case, opts, seed);
            let reruns = if result.passed {
                Vec::new()
            } else {
                isolate(dev, case, opts, seed)
            };
            Rung { result, reruns }
        })
        .collect()
}

/// Runs the ladder on `dev` and gathers everything else the report holds
/// (environment under `root`, normally "/", and the kernel log).
pub fn run_report(
    dev: &dyn NpuDevice,
    nodes_tried: Vec<String>,
    opts: &MatmulOptions,
    include_int4: bool,
    root: &Path,
    progress: impl FnMut(usize, usize, &Case),
) -> Report {
    let rungs = run_ladder(dev, opts, include_int4, progress);
    let kernel_log = if dev.is_simulated() {
        Vec::new()
    } else {
        match read_kernel_log() {
            Ok(log) => {
                let lines = npu_log_lines(&log, KERNEL_LOG_LINES);
                if lines.is_empty() {
                    vec!["(no kernel log line mentions the NPU or the IOMMU)".into()]
                } else {
                    lines
                }
            }
            Err(why) => vec![format!("kernel log not readable: {why}")],
        }
    };
    Report::new(
        Environment::probe(root),
        DeviceReport::of(dev, nodes_tried),
        opts,
        include_int4,
        rungs,
        kernel_log,
    )
}

/// Kernel log lines the report keeps.
pub const KERNEL_LOG_LINES: usize = 40;

impl Report {
    /// Puts a report together from the parts the caller gathered.
    pub fn new(
        environment: Environment,
        device: DeviceReport,
        opts: &MatmulOptions,
        include_int4: bool,
        rungs: Vec<Rung>,
        kernel_log: Vec<String>,
    ) -> Report {
        Report {
            rkinfer_version: env!("CARGO_PKG_VERSION"),
            environment,
            device,
            options: ReportOptions {
                cores: opts.cores.clone(),
                timeout_ms: opts.timeout_ms,
                envelope: opts.envelope.name(),
                int4: include_int4,
            },
            passed: rungs.iter().filter(|r| r.result.passed).count(),
            total: rungs.len(),
            rungs,
            kernel_log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npu::command::task::{build_command_buffer, Chaining, TaskDesc};

    #[test]
    fn known_good_hashes_are_the_builders_streams() {
        for (ty, m, k, n, hash) in KNOWN_GOOD {
            for chaining in [Chaining::PcChain, Chaining::KernelStartsEachTask] {
                let desc = TaskDesc {
                    ty,
                    m: m as u32,
                    k: k as u32,
                    n: n as u32,
                    a_addr: 0x1234_5600,
                    b_addr: 0x2345_6700,
                    c_addr: 0x3456_7800,
                };
                let (words, _) = build_command_buffer(&[desc], 0x4000_0000, chaining).unwrap();
                assert_eq!(
                    matmul::words_hash(&words),
                    hash,
                    "{ty:?} {:#x}",
                    matmul::words_hash(&words)
                );
            }
        }
    }

    #[test]
    fn kernel_log_keeps_the_last_npu_lines() {
        let log = "usb 1-1: new device\nRKNPU fdab0000.npu: RKNPU: failed to submit\narm-smmu: iommu fault\nrocket fdab0000.npu: job timeout\nfoo\n";
        assert_eq!(
            npu_log_lines(log, 2),
            vec!["arm-smmu: iommu fault", "rocket fdab0000.npu: job timeout"]
        );
    }
}
