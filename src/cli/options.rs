//! Flags shared by several subcommands, each parsed once into the library's
//! option structs. Library errors never name a flag: the CLI adds it here.

use std::path::PathBuf;

use crate::backend::device::{parse_npu_cores, Device, NpuQuant, NpuSettings, WeightCacheMode};
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
    /// NPU cores: a count (1-3) or a list such as 0,1,2.
    #[arg(long = "npu-cores")]
    pub npu_cores: Option<String>,
    /// Cache prepared NPU weights: `model` (beside the model) or a directory.
    #[arg(long = "npu-cache")]
    pub npu_cache: Option<String>,
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
                cache: WeightCacheMode::from_arg(self.npu_cache.as_deref()),
                progress: false,
            },
        })
    }
}

/// Threads, pinning and device of a model load.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Threads (0: all cores).
    #[arg(short = 't', long = "threads", default_value_t = 0)]
    pub threads: usize,
    /// Cores to pin the threads to, e.g. "4-7" or "0,2,4-5".
    #[arg(long = "cpus", alias = "cpu-mask")]
    pub cpus: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl LoadArgs {
    /// The load options these flags ask for.
    pub fn to_options(&self) -> Result<LoadOptions> {
        let cpus = match &self.cpus {
            Some(s) => parse_cpu_list(s)?,
            None => Vec::new(),
        };
        Ok(LoadOptions {
            model: ModelOptions {
                n_threads: cap_threads(self.threads),
                cpus,
            },
            device: self.device.to_options()?,
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
    }

    #[test]
    fn device_errors_name_the_flag() {
        let args = DeviceArgs {
            device: "gpu".into(),
            npu_quant: "auto".into(),
            npu_cores: None,
            npu_cache: None,
        };
        let e = args.to_options().unwrap_err().to_string();
        assert!(e.starts_with("--device: "), "{e}");
        let e = crate::backend::Device::parse("gpu")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("--"), "library errors name no flag: {e}");
    }
}
