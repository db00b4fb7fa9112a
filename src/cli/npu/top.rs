//! Per-core NPU load from the vendor driver's debugfs file
//! (/sys/kernel/debug/rknpu/load), as ntop.sh shows it. The file reads like
//! `NPU load:  Core0: 12%, Core1:  0%, Core2:  3%,`.
//! `rkinfer npu top` prints it once or every interval.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::npu::NpuError;

/// Default location of the load file (needs root and debugfs).
pub const LOAD_FILE: &str = "/sys/kernel/debug/rknpu/load";

/// Parses the load file's text into (core index, percent) pairs.
pub fn parse_load(text: &str) -> Option<Vec<(u32, u32)>> {
    let mut cores = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find("Core") {
        rest = &rest[pos + 4..];
        let colon = rest.find(':')?;
        let idx: u32 = rest[..colon].trim().parse().ok()?;
        let after = &rest[colon + 1..];
        let pct_end = after.find('%')?;
        let pct: u32 = after[..pct_end].trim().parse().ok()?;
        cores.push((idx, pct));
        rest = &after[pct_end + 1..];
    }
    if cores.is_empty() {
        // Single-core builds print just "NPU load: 12%".
        let after = text.split(':').nth(1)?;
        let pct: u32 = after.split('%').next()?.trim().parse().ok()?;
        cores.push((0, pct));
    }
    Some(cores)
}

/// Reads and parses the load file.
pub fn read_load(path: &Path) -> Result<Vec<(u32, u32)>, NpuError> {
    let text = std::fs::read_to_string(path).map_err(|e| NpuError::File {
        path: path.to_path_buf(),
        reason: if e.kind() == std::io::ErrorKind::PermissionDenied {
            "permission denied (debugfs needs root)".into()
        } else {
            format!("{e} (is this an RK3588 with the vendor rknpu driver and debugfs mounted?)")
        },
    })?;
    parse_load(&text).ok_or_else(|| NpuError::File {
        path: path.to_path_buf(),
        reason: format!("unrecognised load format: {:?}", text.trim()),
    })
}

/// One text line with a bar per core.
pub fn format_load(cores: &[(u32, u32)]) -> String {
    cores
        .iter()
        .map(|(i, p)| {
            let filled = (*p).min(100) as usize / 5;
            format!(
                "core{i} [{}{}] {p:>3}%",
                "#".repeat(filled),
                ".".repeat(20 - filled)
            )
        })
        .collect::<Vec<_>>()
        .join("  ")
}

#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// Load file to read (default /sys/kernel/debug/rknpu/load).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Print one sample and exit.
    #[arg(long)]
    pub once: bool,
    /// Refresh interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
}

pub fn top_cmd(a: TopArgs) -> crate::Result<()> {
    let path = a.file.unwrap_or_else(|| PathBuf::from(LOAD_FILE));
    loop {
        let load = read_load(&path)?;
        println!("{}", format_load(&load));
        if a.once {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(a.interval_ms.max(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_three_cores() {
        let l = parse_load("NPU load:  Core0: 12%, Core1:  0%, Core2: 100%,\n").unwrap();
        assert_eq!(l, vec![(0, 12), (1, 0), (2, 100)]);
    }

    #[test]
    fn parses_single_core() {
        assert_eq!(parse_load("NPU load: 7%\n").unwrap(), vec![(0, 7)]);
        assert!(parse_load("garbage").is_none());
    }
}
