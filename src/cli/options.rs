//! Flags shared by several subcommands, each parsed once into the library's
//! option structs. Library errors never name a flag: the CLI adds it here.

use std::path::PathBuf;

use crate::backend::device::{
    parse_npu_cores, Device, NpuPlacement, NpuQuant, NpuSettings, WeightCacheMode,
};
use crate::backend::DeviceOptions;
use crate::model::ModelOptions;
use crate::session::LoadOptions;
use crate::{Error, Result};

/// Where the matmuls run.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Device: cpu, npu or npu-sim.
    #[arg(long = "device", default_value = "cpu")]
    pub device: String,
    /// NPU requantization: auto, w16a16, w8a8, w4a4, w4a8 (or a quant::npu scheme name).
    #[arg(long = "npu-quant", default_value = "auto")]
    pub npu_quant: String,
    /// NPU cores each matmul is split across, running at the same time: a
    /// count (1-3), a list such as 0,1,2, or auto (default: every core the
    /// driver reports).
    #[arg(long = "npu-cores")]
    pub npu_cores: Option<String>,
    /// Cache prepared NPU weights: `model` (MODEL.gguf.rknpu/ beside the
    /// model, created when missing) or an existing directory.
    #[arg(long = "npu-cache")]
    pub npu_cache: Option<String>,
    /// Create the --npu-cache directory when it does not exist.
    #[arg(long = "npu-cache-create")]
    pub npu_cache_create: bool,
    /// Layers whose matmuls go to the NPU (also -ngl, --gpu-layers), as
    /// llama.cpp's GPU offload; default: all. Ignored on the CPU.
    #[arg(long = "n-gpu-layers", alias = "gpu-layers", value_name = "N")]
    pub n_gpu_layers: Option<usize>,
}

impl DeviceArgs {
    /// The device options these flags ask for.
    pub fn to_options(&self) -> Result<DeviceOptions> {
        let flag = |name: &str| {
            let name = name.to_string();
            move |e: crate::backend::BackendError| Error::InvalidArgument(format!("{name}: {e}"))
        };
        Ok(DeviceOptions {
            device: Device::parse(&self.device).map_err(flag("--device"))?,
            npu: NpuSettings {
                quant: NpuQuant::parse(&self.npu_quant).map_err(flag("--npu-quant"))?,
                cores: match &self.npu_cores {
                    Some(c) => parse_npu_cores(c).map_err(flag("--npu-cores"))?,
                    None => Vec::new(),
                },
                cache: self.cache_mode()?,
                progress: false,
            },
        })
    }

    /// `-ngl N`: the NPU's layers. On the CPU there is nothing to offload
    /// (said once); `-ngl 0` keeps every matmul on the CPU.
    pub fn offloaded_layers(&self) -> Option<usize> {
        let n = self.n_gpu_layers?;
        if self.device == "cpu" {
            log::warn!(
                "-ngl {n}: ignored on --device cpu (give --device npu to offload layers to the NPU)"
            );
            return None;
        }
        Some(n)
    }

    /// `--npu-cache DIR` must name a directory: a missing one is created
    /// only with `--npu-cache-create` (a typo must not create directories,
    /// and as root anywhere); a file gets one warning and no cache.
    fn cache_mode(&self) -> Result<WeightCacheMode> {
        let mode = WeightCacheMode::from_arg(self.npu_cache.as_deref());
        let WeightCacheMode::Dir(dir) = &mode else {
            return Ok(mode);
        };
        if dir.is_dir() || (self.npu_cache_create && !dir.exists()) {
            return Ok(mode);
        }
        if dir.exists() {
            log::warn!(
                "--npu-cache {}: not a directory; running without the weight cache",
                dir.display()
            );
            return Ok(WeightCacheMode::Off);
        }
        Err(Error::InvalidArgument(format!(
            "--npu-cache {}: no such directory (create it, add --npu-cache-create, or give `model` for MODEL.gguf.rknpu/ beside the model)",
            dir.display()
        )))
    }
}

/// Which matmuls the NPU takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PlacementArgs {
    /// Matmuls go to the NPU from this many rows (a prompt batch) on, or
    /// `auto`: where the board cost model says the NPU wins (the default
    /// on --device npu; npu-sim takes every matmul).
    #[arg(long = "npu-min-batch", value_name = "N|auto")]
    pub npu_min_batch: Option<String>,
}

impl PlacementArgs {
    /// The placement these flags ask for.
    pub fn to_placement(&self) -> Result<NpuPlacement> {
        match &self.npu_min_batch {
            None => Ok(NpuPlacement::DeviceDefault),
            Some(s) => NpuPlacement::parse(s)
                .map_err(|e| Error::InvalidArgument(format!("--npu-min-batch: {e}"))),
        }
    }
}

/// Threads, pinning and device of a model load.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Threads (0: all cores).
    #[arg(short = 't', long = "threads", default_value_t = 0)]
    pub threads: usize,
    /// Cores to pin the threads to, e.g. "4-7" or "0,2,4-5".
    #[arg(long = "cpus", conflicts_with = "cpu_mask")]
    pub cpus: Option<String>,
    /// Cores to pin the threads to as llama.cpp's hex mask (also -C), e.g.
    /// 0xF0 for cores 4-7.
    #[arg(short = 'C', long = "cpu-mask", value_name = "HEX")]
    pub cpu_mask: Option<String>,
    /// Accepted for llama.cpp compatibility (also -fa); a no-op: rkinfer has
    /// one attention path, which on, off and auto all run.
    #[arg(
        long = "flash-attn",
        value_name = "on|off|auto",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "on",
        value_parser = ["on", "off", "auto"]
    )]
    pub flash_attn: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub placement: PlacementArgs,
}

impl LoadArgs {
    /// The load options these flags ask for.
    pub fn to_options(&self) -> Result<LoadOptions> {
        let cpus = match (&self.cpus, &self.cpu_mask) {
            (Some(s), _) => parse_cpu_list(s)?,
            (None, Some(m)) => parse_cpu_mask(m)?,
            (None, None) => Vec::new(),
        };
        Ok(LoadOptions {
            model: ModelOptions {
                n_threads: cap_threads(self.threads),
                cpus,
            },
            device: self.device.to_options()?,
            npu_layers: self.device.offloaded_layers(),
            npu_placement: self.placement.to_placement()?,
        })
    }
}

/// More threads than cores only take turns on them: capped, and said.
pub fn cap_threads(threads: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads > cores {
        log::warn!("-t {threads}: {threads} threads on {cores} cores; using {cores}");
        cores
    } else {
        threads
    }
}

/// Parses "4-7" / "0,2,4-5" into core numbers.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>> {
    let bad =
        || Error::InvalidArgument(format!("--cpus {s:?}: expected a list like 4-7 or 0,2,4-5"));
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if a > b || b >= 1024 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// Parses llama.cpp's `--cpu-mask` (hex, optional 0x; bit i = core i):
/// "0xF0" is cores 4-7.
pub fn parse_cpu_mask(s: &str) -> Result<Vec<usize>> {
    let bad = |why: &str| Error::InvalidArgument(format!("--cpu-mask {s:?}: {why}"));
    let hex = s.trim();
    let hex = hex
        .strip_prefix("0x")
        .or_else(|| hex.strip_prefix("0X"))
        .unwrap_or(hex);
    if hex.is_empty() || hex.len() > 256 {
        return Err(bad("expected a hex mask such as 0xF0 (cores 4-7)"));
    }
    let mut cpus = Vec::new();
    // The last digit holds cores 0-3.
    for (i, c) in hex.chars().rev().enumerate() {
        let digit = c
            .to_digit(16)
            .ok_or_else(|| bad("expected a hex mask such as 0xF0 (cores 4-7)"))?;
        cpus.extend((0..4).filter(|b| digit & (1 << b) != 0).map(|b| i * 4 + b));
    }
    if cpus.is_empty() {
        return Err(bad("the mask selects no core"));
    }
    Ok(cpus)
}

/// Resolves the model path from `-m` or the positional argument.
pub fn model_path(m: &Option<PathBuf>, pos: &Option<PathBuf>) -> Result<PathBuf> {
    match (m, pos) {
        (Some(a), None) | (None, Some(a)) => Ok(a.clone()),
        (Some(a), Some(b)) if a == b => Ok(a.clone()),
        (Some(_), Some(b)) => Err(Error::InvalidArgument(format!(
            "two models given: -m and {}",
            b.display()
        ))),
        (None, None) => Err(Error::InvalidArgument(
            "no model: give -m MODEL.gguf (or the path as the first argument)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("4-7").unwrap(), vec![4, 5, 6, 7]);
        assert_eq!(parse_cpu_list("0,2,4-5").unwrap(), vec![0, 2, 4, 5]);
        assert!(parse_cpu_list("7-4").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("").is_err());
        assert_eq!(parse_cpu_mask("0xF0").unwrap(), vec![4, 5, 6, 7]);
        assert_eq!(parse_cpu_mask("5").unwrap(), vec![0, 2]);
        assert_eq!(parse_cpu_mask("0X100").unwrap(), vec![8]);
        assert!(parse_cpu_mask("0x0").is_err());
        assert!(parse_cpu_mask("0xG").is_err());
        assert!(parse_cpu_mask("").is_err());
    }

    #[test]
    fn device_errors_name_the_flag() {
        let args = DeviceArgs {
            device: "gpu".into(),
            npu_quant: "auto".into(),
            npu_cores: None,
            npu_cache: None,
            npu_cache_create: false,
            n_gpu_layers: None,
        };
        let e = args.to_options().unwrap_err().to_string();
        assert!(e.starts_with("--device: "), "{e}");
        let e = crate::backend::Device::parse("gpu")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("--"), "library errors name no flag: {e}");
    }
}
