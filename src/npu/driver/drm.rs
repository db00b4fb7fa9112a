//! The raw kernel boundary: a small trait ([`DrmIo`]) for "issue this ioctl
//! on the node" and "map this offset of the node", implemented by the real
//! device file ([`NodeFile`], through `nix`) and by the in-process fakes of
//! the `rknpu` and `rocket` drivers (`npu::sim::fake`).

use std::fs::{File, OpenOptions};
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bytemuck::Pod;
use nix::errno::Errno;

use super::mem::Mapping;
use super::uapi;
use crate::npu::error::NpuError;

/// One open DRM / accel node, as the drivers see it.
pub trait DrmIo: Send + Sync {
    /// Issues `request` with `arg` as the in/out argument struct (its length
    /// equals the size encoded in `request`).
    ///
    /// # Safety
    /// Pointers stored inside `arg` (user buffers the driver reads or
    /// writes, e.g. DRM_IOCTL_VERSION's name, rocket's job arrays) must be
    /// valid for those accesses for the duration of the call.
    unsafe fn ioctl(&self, request: u32, arg: &mut [u8]) -> Result<(), Errno>;
    /// Maps `len` bytes of the node at `offset` (from MEM_MAP / CREATE_BO).
    fn mmap(&self, offset: u64, len: usize) -> Result<Mapping, NpuError>;
    /// Node path for messages.
    fn path(&self) -> String;
}

/// Argument structs without pointer fields: the driver touches only the
/// struct itself, so passing them is safe.
///
/// # Safety
/// Implement only for structs that hold no user pointers.
pub unsafe trait PlainArg: Pod {}

macro_rules! plain_args {
    ($($t:ty),*) => {
        // SAFETY: each of these uapi structs holds only integers, handles,
        // device addresses and kernel cookies, never a user pointer.
        $(unsafe impl PlainArg for $t {})*
    };
}
plain_args!(
    uapi::DrmGemClose,
    uapi::RknpuAction,
    uapi::RknpuMemCreateV1,
    uapi::RknpuMemCreateV2,
    uapi::RknpuMemMap,
    uapi::RknpuMemDestroy,
    uapi::RknpuMemSync,
    uapi::RknpuSubmit,
    uapi::RocketCreateBo,
    uapi::RocketPrepBo,
    uapi::RocketFiniBo
);

/// Typed ioctl for pointer-free structs; checks the size in the number.
pub fn call<T: PlainArg>(io: &dyn DrmIo, request: u32, arg: &mut T) -> Result<(), Errno> {
    if uapi::ioc_size(request) != std::mem::size_of::<T>() {
        return Err(Errno::EINVAL);
    }
    // SAFETY: T holds no pointers (PlainArg), so only `arg` is accessed.
    unsafe { io.ioctl(request, bytemuck::bytes_of_mut(arg)) }
}

/// Typed ioctl for structs that carry user pointers.
///
/// # Safety
/// Every pointer inside `arg` must be valid for what the ioctl does with it
/// (see [`DrmIo::ioctl`]).
pub unsafe fn call_with_pointers<T: Pod>(
    io: &dyn DrmIo,
    request: u32,
    arg: &mut T,
) -> Result<(), Errno> {
    if uapi::ioc_size(request) != std::mem::size_of::<T>() {
        return Err(Errno::EINVAL);
    }
    // SAFETY: the caller guarantees the pointers inside `arg`.
    unsafe { io.ioctl(request, bytemuck::bytes_of_mut(arg)) }
}

/// A device node opened read-write.
pub struct NodeFile {
    file: File,
    path: PathBuf,
}

impl NodeFile {
    pub fn open(path: &Path) -> Result<NodeFile, NpuError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error().map(Errno::from_raw) {
                Some(Errno::EACCES) | Some(Errno::EPERM) => NpuError::PermissionDenied {
                    path: path.to_path_buf(),
                },
                Some(errno) => NpuError::Open {
                    path: path.to_path_buf(),
                    errno,
                },
                None => NpuError::Open {
                    path: path.to_path_buf(),
                    errno: Errno::EIO,
                },
            })?;
        Ok(NodeFile {
            file,
            path: path.to_path_buf(),
        })
    }
}

impl DrmIo for NodeFile {
    unsafe fn ioctl(&self, request: u32, arg: &mut [u8]) -> Result<(), Errno> {
        if arg.len() != uapi::ioc_size(request) {
            return Err(Errno::EINVAL);
        }
        loop {
            // SAFETY: the fd is open for self's lifetime; `arg` is a live,
            // writable buffer of exactly the size the request encodes, so the
            // kernel's copy_from_user/copy_to_user stay inside it. Pointers
            // inside the struct are set by the callers to buffers that
            // outlive this call.
            let ret = unsafe {
                nix::libc::ioctl(
                    self.file.as_raw_fd(),
                    request as nix::libc::Ioctl,
                    arg.as_mut_ptr(),
                )
            };
            if ret >= 0 {
                return Ok(());
            }
            match Errno::last() {
                Errno::EINTR | Errno::EAGAIN => continue,
                e => return Err(e),
            }
        }
    }

    fn mmap(&self, offset: u64, len: usize) -> Result<Mapping, NpuError> {
        let length = NonZeroUsize::new(len).ok_or(NpuError::Mmap {
            len,
            errno: Errno::EINVAL,
        })?;
        let off = i64::try_from(offset).map_err(|_| NpuError::Mmap {
            len,
            errno: Errno::EINVAL,
        })?;
        // SAFETY: a fresh shared mapping chosen by the kernel (no fixed
        // address), so no existing memory is replaced; it is owned by the
        // returned Mapping, which unmaps it exactly once.
        let ptr = unsafe {
            nix::sys::mman::mmap(
                None,
                length,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
                &self.file,
                off,
            )
        }
        .map_err(|errno| NpuError::Mmap { len, errno })?;
        // SAFETY: ptr/len describe the mapping just created.
        Ok(unsafe { Mapping::from_mmap(ptr.cast(), len) })
    }

    fn path(&self) -> String {
        self.path.display().to_string()
    }
}

/// DRM name and version of a node (DRM_IOCTL_VERSION).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrmDriverVersion {
    pub name: String,
    pub major: i32,
    pub minor: i32,
    pub patch: i32,
}

impl DrmDriverVersion {
    pub fn version_string(&self) -> String {
        format!("{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Asks the node which DRM driver serves it.
pub fn drm_version(io: &dyn DrmIo) -> Result<DrmDriverVersion, NpuError> {
    let mut name = vec![0u8; 64];
    let mut v = uapi::DrmVersion {
        name_len: name.len() as u64,
        name: name.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: `name` points at a live buffer of `name_len` bytes for the
    // whole call; the date/desc pointers are null with length 0.
    unsafe { call_with_pointers(io, uapi::DRM_IOCTL_VERSION, &mut v) }.map_err(|errno| {
        NpuError::Ioctl {
            op: "DRM_IOCTL_VERSION",
            errno,
        }
    })?;
    let len = (v.name_len as usize).min(name.len());
    let text = String::from_utf8_lossy(&name[..len])
        .trim_end_matches('\0')
        .to_string();
    Ok(DrmDriverVersion {
        name: text,
        major: v.version_major,
        minor: v.version_minor,
        patch: v.version_patchlevel,
    })
}
