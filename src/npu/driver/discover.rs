//! Device discovery: which node under /dev/accel or /dev/dri is served by
//! an NPU driver (`rknpu` or `rocket`), and opening it as an [`NpuDevice`].

use std::path::{Path, PathBuf};

use super::device::NpuDevice;
use super::drm::{drm_version, DrmDriverVersion, NodeFile};
use super::rknpu::RknpuDevice;
use super::rocket::RocketDevice;
use crate::npu::error::NpuError;

/// The driver a sysfs class entry is bound to (readable without opening
/// the node), e.g. /sys/class/drm/renderD129/device/driver -> "RKNPU".
fn sysfs_driver(class: &str, node: &str) -> Option<String> {
    let link = std::fs::read_link(format!("/sys/class/{class}/{node}/device/driver")).ok()?;
    link.file_name().map(|n| n.to_string_lossy().to_string())
}

/// Candidate nodes: /dev/accel/accel*, then /dev/dri/renderD*.
pub fn candidate_nodes() -> (Vec<(PathBuf, &'static str)>, Vec<String>) {
    let mut nodes = Vec::new();
    let mut notes = Vec::new();
    for (dir, prefix, class) in [
        ("/dev/accel", "accel", "accel"),
        ("/dev/dri", "renderD", "drm"),
    ] {
        match std::fs::read_dir(dir) {
            Ok(rd) => {
                let mut found: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .map(|n| n.to_string_lossy().starts_with(prefix))
                            .unwrap_or(false)
                    })
                    .collect();
                found.sort();
                if found.is_empty() {
                    notes.push(format!("{dir} has no {prefix}* node"));
                }
                nodes.extend(found.into_iter().map(|p| (p, class)));
            }
            Err(_) => notes.push(format!("{dir} does not exist")),
        }
    }
    (nodes, notes)
}

/// A node served by an NPU driver.
pub struct FoundNode {
    pub io: NodeFile,
    pub version: DrmDriverVersion,
}

/// Finds the first node whose DRM driver is `rknpu` or `rocket`. The error
/// lists every place looked at and why it did not qualify.
pub fn find_npu_node() -> Result<FoundNode, NpuError> {
    let (nodes, mut reasons) = candidate_nodes();
    let mut denied = None;
    for (path, class) in nodes {
        let node = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        match NodeFile::open(&path) {
            Ok(io) => match drm_version(&io) {
                Ok(v) if v.name == "rknpu" || v.name == "rocket" => {
                    return Ok(FoundNode { io, version: v })
                }
                Ok(v) => reasons.push(format!("{} is driven by {}", path.display(), v.name)),
                Err(e) => reasons.push(format!("{}: {e}", path.display())),
            },
            Err(NpuError::PermissionDenied { path }) => {
                let drv = sysfs_driver(class, &node)
                    .unwrap_or_default()
                    .to_lowercase();
                if drv.contains("rknpu") || drv.contains("rocket") {
                    denied = Some(path);
                } else {
                    reasons.push(format!(
                        "{}: permission denied (driver {drv})",
                        path.display()
                    ));
                }
            }
            Err(e) => reasons.push(e.to_string()),
        }
    }
    if let Some(path) = denied {
        return Err(NpuError::PermissionDenied { path });
    }
    if Path::new("/dev/rknpu").exists() {
        reasons.push(
            "/dev/rknpu (misc-device build of rknpu) is not supported; use a DRM build".into(),
        );
    }
    Err(NpuError::NoDevice { reasons })
}

/// Opens the NPU through whichever kernel driver serves it (`rknpu` or
/// `rocket`), found by DRM driver name over /dev/accel/* and /dev/dri/*.
pub fn open_hardware() -> Result<Box<dyn NpuDevice>, NpuError> {
    let found = find_npu_node()?;
    let version = found.version.version_string();
    if found.version.name == "rknpu" {
        Ok(Box::new(RknpuDevice::open(Box::new(found.io))?))
    } else {
        Ok(Box::new(RocketDevice::open(Box::new(found.io), version)))
    }
}
