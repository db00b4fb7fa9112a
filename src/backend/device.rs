//! Choosing where matmuls run: the device, its settings, and the backends
//! that go before the CPU for it. The session's load call decides; the
//! model only receives the backends.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use quant::npu::{self as nq, Scheme};

use super::npu::NpuBackend;
use super::{Backend, BackendError};
use crate::npu::ops::cache::WeightCache;
use crate::npu::{MatmulOptions, NpuDevice};

/// Where the matmuls run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// Everything on the CPU.
    #[default]
    Cpu,
    /// The RK3588 NPU through its kernel driver (CPU when none is found).
    Npu,
    /// The bit-exact NPU simulator.
    NpuSim,
}

impl Device {
    /// Parses a device name: `cpu`, `npu` or `npu-sim`.
    pub fn parse(s: &str) -> Result<Device, BackendError> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "npu" => Ok(Device::Npu),
            "npu-sim" => Ok(Device::NpuSim),
            other => Err(BackendError::InvalidSetting(format!(
                "{other:?} is not a device: expected cpu, npu or npu-sim"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Npu => "npu",
            Device::NpuSim => "npu-sim",
        }
    }
}

impl FromStr for Device {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Device, BackendError> {
        Device::parse(s)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How weights are requantized for the NPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NpuQuant {
    /// The default scheme of each weight's GGML type (quant::npu table).
    #[default]
    Auto,
    /// One scheme for every weight (`w16a16`, `w8a8`, `w8a8.had`, `w4a4`, ...).
    Scheme(Scheme),
}

impl NpuQuant {
    /// Parses `auto` or a quant::npu scheme name. Plain `w8a8` gets the
    /// Hadamard rotation quant::npu recommends (`w8a8.had`).
    pub fn parse(s: &str) -> Result<NpuQuant, BackendError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(NpuQuant::Auto);
        }
        let name = match s {
            "w8a8" => "w8a8.had",
            "w4a4" => "w4a4.khad.wmse.amse.r8",
            "w4a8" => "w4a8.r8.zp.seg32",
            other => other,
        };
        let scheme = name.parse::<Scheme>().map_err(|e| {
            BackendError::InvalidSetting(format!(
                "{s:?}: {e} (expected auto, w16a16, w8a8, w4a4 or w4a8)"
            ))
        })?;
        if scheme.smooth {
            // The factors come from activation statistics: the backend has
            // no calibration pass to measure them (docs/quantization.md).
            return Err(BackendError::InvalidSetting(format!(
                "{s:?}: `sq` (SmoothQuant) needs a calibration pass the NPU backend does not have; \
                 drop `.sq` (e.g. w8a8.had.hilo)"
            )));
        }
        Ok(NpuQuant::Scheme(scheme))
    }

    /// The scheme for a weight of `ty`.
    pub fn scheme_for(self, ty: gguf::GgmlType) -> Scheme {
        match self {
            NpuQuant::Auto => nq::default_scheme_for(ty),
            NpuQuant::Scheme(s) => s,
        }
    }
}

impl FromStr for NpuQuant {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<NpuQuant, BackendError> {
        NpuQuant::parse(s)
    }
}

impl fmt::Display for NpuQuant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NpuQuant::Auto => write!(f, "auto"),
            NpuQuant::Scheme(s) => write!(f, "{s}"),
        }
    }
}

/// Cores of the RK3588 NPU.
pub const NPU_CORES: u32 = 3;

/// Parses an NPU core choice: a count `N` (cores `0..N`), a comma list of
/// core numbers (`0,1,2`; one core alone as `2,`), or `auto` (empty: every
/// core the driver reports).
pub fn parse_npu_cores(s: &str) -> Result<Vec<u32>, BackendError> {
    let bad = |why: String| {
        BackendError::InvalidSetting(format!(
            "NPU cores {s:?}: {why} (a count 1-{NPU_CORES}, or a list such as 0,1,2)"
        ))
    };
    let s = s.trim();
    if s == "auto" {
        return Ok(Vec::new());
    }
    if !s.contains(',') {
        let n: u32 = s.parse().map_err(|_| bad("not a number".into()))?;
        if n == 0 || n > NPU_CORES {
            return Err(bad(format!("{n} cores")));
        }
        return Ok((0..n).collect());
    }
    let mut cores = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let c: u32 = part
            .parse()
            .map_err(|_| bad(format!("{part:?} is not a core number")))?;
        if c >= NPU_CORES {
            return Err(bad(format!("core {c} does not exist")));
        }
        if cores.contains(&c) {
            return Err(bad(format!("core {c} given twice")));
        }
        cores.push(c);
    }
    if cores.is_empty() {
        return Err(bad("no cores".into()));
    }
    Ok(cores)
}

/// Where prepared NPU weights are cached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WeightCacheMode {
    /// No cache.
    #[default]
    Off,
    /// `MODEL.gguf.rknpu/` beside the model.
    BesideModel,
    /// This directory (created when missing: the command line asks for
    /// `--npu-cache-create` first).
    Dir(std::path::PathBuf),
}

impl WeightCacheMode {
    /// absent = off, `model` = beside the model, else a directory.
    pub fn from_arg(arg: Option<&str>) -> WeightCacheMode {
        match arg {
            None => WeightCacheMode::Off,
            Some("model") => WeightCacheMode::BesideModel,
            Some(dir) => WeightCacheMode::Dir(dir.into()),
        }
    }
}

/// NPU settings of a model load.
#[derive(Clone, Debug, Default)]
pub struct NpuSettings {
    pub quant: NpuQuant,
    /// Cores each matmul is split across, running together (empty: every
    /// core the device reports).
    pub cores: Vec<u32>,
    pub cache: WeightCacheMode,
    /// Log one line per prepared weight (at info level).
    pub progress: bool,
}

/// Which matmuls the NPU backend takes (`--npu-min-batch`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NpuPlacement {
    /// The device's default: the cost model on `npu`; every matmul on
    /// `npu-sim`, which exists to exercise the NPU path.
    #[default]
    DeviceDefault,
    /// Where the board cost model says the NPU wins (`auto`).
    CostModel,
    /// Matmuls of at least this many rows (a prompt batch), whatever the
    /// cost model says; 1 offloads decode as well.
    MinBatch(usize),
}

impl NpuPlacement {
    /// Parses `auto` or a row count of at least 1.
    pub fn parse(s: &str) -> Result<NpuPlacement, BackendError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(NpuPlacement::CostModel);
        }
        match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(NpuPlacement::MinBatch(n)),
            _ => Err(BackendError::InvalidSetting(format!(
                "{s:?}: expected auto or a batch size of at least 1"
            ))),
        }
    }

    /// The placement `device` uses for this setting.
    pub fn resolve(self, device: Device) -> NpuPlacement {
        match (self, device) {
            (NpuPlacement::DeviceDefault, Device::NpuSim) => NpuPlacement::MinBatch(1),
            (NpuPlacement::DeviceDefault, _) => NpuPlacement::CostModel,
            (p, _) => p,
        }
    }
}

/// The device a model is loaded for, with its settings.
#[derive(Clone, Debug, Default)]
pub struct DeviceOptions {
    pub device: Device,
    pub npu: NpuSettings,
}

impl DeviceOptions {
    /// The backends to put before the CPU for the model at `model`.
    pub fn backends(&self, model: &Path) -> Result<Vec<Box<dyn Backend>>, BackendError> {
        backends_for_layers(self.device, &self.npu, model, None)
    }
}

/// The backends to put before the CPU for `device`: none for the CPU; the
/// NPU backend on the simulator or the hardware. Without an NPU, `Npu`
/// logs why in one line and the model runs on the CPU.
pub fn backends_for_model(
    device: Device,
    settings: &NpuSettings,
    model: &Path,
) -> Result<Vec<Box<dyn Backend>>, BackendError> {
    backends_for_layers(device, settings, model, None)
}

/// Like [`backends_for_model`], offloading only the first `max_layers`
/// blocks (llama.cpp's `-ngl N`; `None`: all, `Some(0)`: none).
pub fn backends_for_layers(
    device: Device,
    settings: &NpuSettings,
    model: &Path,
    max_layers: Option<usize>,
) -> Result<Vec<Box<dyn Backend>>, BackendError> {
    backends_with_placement(
        device,
        settings,
        model,
        max_layers,
        NpuPlacement::DeviceDefault,
    )
}

/// Like [`backends_for_layers`], with the NPU's matmul placement.
pub fn backends_with_placement(
    device: Device,
    settings: &NpuSettings,
    model: &Path,
    max_layers: Option<usize>,
    placement: NpuPlacement,
) -> Result<Vec<Box<dyn Backend>>, BackendError> {
    if max_layers == Some(0) {
        return Ok(Vec::new());
    }
    let mut opts = MatmulOptions::default();
    let dev: Arc<dyn NpuDevice> = match device {
        Device::Cpu => return Ok(Vec::new()),
        Device::NpuSim => Arc::new(crate::npu::SimDevice::new()),
        Device::Npu => match crate::npu::open_hardware() {
            Ok(d) => Arc::from(d),
            Err(e) => {
                log::warn!("device npu: {e}; running on the CPU");
                return Ok(Vec::new());
            }
        },
    };
    let cores = dev.info().cores;
    opts.cores = if settings.cores.is_empty() {
        (0..cores.max(1)).collect()
    } else {
        settings.cores.clone()
    };
    if let Some(c) = opts.cores.iter().find(|&&c| c >= cores) {
        return Err(BackendError::InvalidSetting(format!(
            "NPU core {c} does not exist on {} ({cores} cores)",
            dev.info().driver
        )));
    }
    let mut b = NpuBackend::new(dev, settings.quant, opts)
        .with_progress(settings.progress)
        .with_max_layers(max_layers)
        .with_placement(placement.resolve(device));
    match &settings.cache {
        WeightCacheMode::Off => {}
        WeightCacheMode::BesideModel => b = b.with_weight_cache(WeightCache::beside_model(model)),
        WeightCacheMode::Dir(d) => b = b.with_weight_cache(WeightCache::new(d.clone())),
    }
    Ok(vec![Box::new(b)])
}
