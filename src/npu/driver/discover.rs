//! Device discovery: which node under /dev/accel or /dev/dri is served by
//! an NPU driver (`rknpu` or `rocket`), and opening it as an [`NpuDevice`].
//!
//! Candidates in order: /dev/accel/accel* (rocket), /dev/dri/renderD*, then
//! /dev/dri/card* (every hardware-tested raw-ioctl project opens the card
//! node of the vendor driver). Each node is asked for its DRM driver name;
//! the first `rknpu` or `rocket` node wins, and what was tried is kept for
//! the self-test's report.

use std::path::{Path, PathBuf};

use super::device::NpuDevice;
use super::drm::{drm_version, DrmDriverVersion, DrmIo, NodeFile};
use super::rknpu::RknpuDevice;
use super::rocket::RocketDevice;
use crate::npu::error::NpuError;

/// Where to look: directory, node name prefix, sysfs class.
const CANDIDATES: [(&str, &str, &str); 3] = [
    ("/dev/accel", "accel", "accel"),
    ("/dev/dri", "renderD", "drm"),
    ("/dev/dri", "card", "drm"),
];

/// Names by which sysfs shows an NPU node's owner: the vendor driver
/// ("RKNPU"), rocket's core driver, and the driverless "rknn" facade device
/// that rocket hangs its accel node from.
const NPU_OWNERS: [&str; 3] = ["rknpu", "rocket", "rknn"];

/// What discovery asks of the system; [`RealSystem`] reads /dev and /sys,
/// tests answer from a table.
pub trait NodeSystem {
    /// File names in `dir`, or None when it does not exist.
    fn list(&self, dir: &str) -> Option<Vec<String>>;
    /// Opens a node read-write.
    fn open(&self, path: &Path) -> Result<Box<dyn DrmIo>, NpuError>;
    /// Who owns a node according to sysfs, without opening it: the bound
    /// driver's name, else the name of the device it hangs from.
    fn sysfs_owner(&self, class: &str, node: &str) -> Option<String>;
}

/// The machine's /dev and /sys.
pub struct RealSystem;

impl NodeSystem for RealSystem {
    fn list(&self, dir: &str) -> Option<Vec<String>> {
        let rd = std::fs::read_dir(dir).ok()?;
        Some(
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect(),
        )
    }

    fn open(&self, path: &Path) -> Result<Box<dyn DrmIo>, NpuError> {
        Ok(Box::new(NodeFile::open(path)?))
    }

    fn sysfs_owner(&self, class: &str, node: &str) -> Option<String> {
        let device = format!("/sys/class/{class}/{node}/device");
        let link = std::fs::read_link(format!("{device}/driver"))
            .or_else(|_| std::fs::canonicalize(&device))
            .ok()?;
        link.file_name().map(|n| n.to_string_lossy().to_string())
    }
}

/// A node served by an NPU driver.
pub struct FoundNode {
    pub io: Box<dyn DrmIo>,
    pub path: PathBuf,
    pub version: DrmDriverVersion,
    /// Every node looked at before, and why it did not qualify.
    pub tried: Vec<String>,
}

/// Candidate nodes in order, and notes on directories without any.
pub fn candidate_nodes(sys: &dyn NodeSystem) -> (Vec<(PathBuf, &'static str)>, Vec<String>) {
    let mut nodes = Vec::new();
    let mut notes = Vec::new();
    for (dir, prefix, class) in CANDIDATES {
        match sys.list(dir) {
            Some(names) => {
                let mut found: Vec<&String> = names
                    .iter()
                    .filter(|n| {
                        n.strip_prefix(prefix)
                            .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit()))
                    })
                    .collect();
                found.sort_by_key(|n| (n.len(), n.as_str()));
                if found.is_empty() {
                    notes.push(format!("{dir} has no {prefix}* node"));
                }
                nodes.extend(found.into_iter().map(|n| (Path::new(dir).join(n), class)));
            }
            None if !notes.iter().any(|n| n.starts_with(dir)) => {
                notes.push(format!("{dir} does not exist"))
            }
            None => {}
        }
    }
    (nodes, notes)
}

/// Finds the first node whose DRM driver is `rknpu` or `rocket`. The error
/// lists every place looked at and why it did not qualify; a node that
/// sysfs shows as the NPU's but that may not be opened gives the
/// permission hint.
pub fn find_npu_node(sys: &dyn NodeSystem) -> Result<FoundNode, NpuError> {
    let (nodes, mut reasons) = candidate_nodes(sys);
    let mut denied = None;
    for (path, class) in nodes {
        let node = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        match sys.open(&path) {
            Ok(io) => match drm_version(io.as_ref()) {
                Ok(v) if v.name == "rknpu" || v.name == "rocket" => {
                    return Ok(FoundNode {
                        io,
                        path,
                        version: v,
                        tried: reasons,
                    })
                }
                Ok(v) => reasons.push(format!("{} is driven by {}", path.display(), v.name)),
                Err(e) => reasons.push(format!("{}: {e}", path.display())),
            },
            Err(NpuError::PermissionDenied { path }) => {
                let owner = sys.sysfs_owner(class, &node).unwrap_or_default();
                let lower = owner.to_lowercase();
                if NPU_OWNERS.iter().any(|o| lower.contains(o)) {
                    denied.get_or_insert(path);
                } else {
                    reasons.push(format!(
                        "{}: permission denied (owner {})",
                        path.display(),
                        if owner.is_empty() { "unknown" } else { &owner }
                    ));
                }
            }
            Err(e) => reasons.push(e.to_string()),
        }
    }
    if let Some(path) = denied {
        return Err(NpuError::PermissionDenied { path });
    }
    if sys
        .list("/dev")
        .is_some_and(|n| n.iter().any(|n| n == "rknpu"))
    {
        reasons.push(
            "/dev/rknpu (misc-device build of rknpu) is not supported; use a DRM build".into(),
        );
    }
    Err(NpuError::NoDevice { reasons })
}

/// An opened NPU and how it was found.
pub struct Opened {
    pub device: Box<dyn NpuDevice>,
    /// The node that worked.
    pub node: PathBuf,
    /// Nodes tried before it, with the reason each was passed over.
    pub tried: Vec<String>,
}

/// Opens the NPU behind a found node with the driver it names.
pub fn open_found(found: FoundNode) -> Result<Opened, NpuError> {
    let device: Box<dyn NpuDevice> = if found.version.name == "rknpu" {
        Box::new(RknpuDevice::open(found.io)?)
    } else {
        let version = found.version.version_string();
        Box::new(RocketDevice::open(found.io, version))
    };
    Ok(Opened {
        device,
        node: found.path,
        tried: found.tried,
    })
}

/// Finds and opens the NPU on `sys`.
pub fn open_hardware_on(sys: &dyn NodeSystem) -> Result<Opened, NpuError> {
    open_found(find_npu_node(sys)?)
}

/// Opens the NPU through whichever kernel driver serves it (`rknpu` or
/// `rocket`), found by DRM driver name over /dev/accel/* and /dev/dri/*.
pub fn open_hardware() -> Result<Box<dyn NpuDevice>, NpuError> {
    Ok(open_hardware_on(&RealSystem)?.device)
}
