//! The kernel side: ioctl ABI ([`uapi`]), the raw node boundary ([`drm`]),
//! CPU mappings and simulated device memory ([`mem`]), the device trait
//! every backend implements ([`device`]), the vendor [`rknpu`] and upstream
//! [`rocket`] drivers, and finding the node that serves the NPU
//! ([`discover`]).

pub mod device;
pub mod discover;
pub mod drm;
pub mod mem;
pub mod rknpu;
pub mod rocket;
pub mod uapi;
