//! Kernel ABI: ioctl numbers and argument structs of the DRM core, the
//! vendor `rknpu` driver (rknpu-ioctl.h) and the upstream `rocket` accel
//! driver (include/uapi/drm/rocket_accel.h), with compile-time size checks.
//! Written from the documented layouts; no kernel header is included.

use bytemuck::{Pod, Zeroable};

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;
/// DRM ioctl type byte ('d').
const DRM_TYPE: u32 = 0x64;
/// First driver-specific DRM ioctl number.
pub const DRM_COMMAND_BASE: u32 = 0x40;

/// Linux generic ioctl encoding (dir 31..30, size 29..16, type 15..8, nr 7..0),
/// shared by x86_64 and aarch64.
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (ty << 8) | nr
}

pub const fn drm_iowr(nr: u32, size: usize) -> u32 {
    ioc(IOC_READ | IOC_WRITE, DRM_TYPE, nr, size)
}

pub const fn drm_iow(nr: u32, size: usize) -> u32 {
    ioc(IOC_WRITE, DRM_TYPE, nr, size)
}

/// Argument size encoded in an ioctl number.
pub const fn ioc_size(request: u32) -> usize {
    ((request >> 16) & 0x3FFF) as usize
}

/// Command number (low byte) of an ioctl number.
pub const fn ioc_nr(request: u32) -> u32 {
    request & 0xFF
}

// ---------------------------------------------------------------- DRM core

/// struct drm_version (64-bit layout): version numbers and three
/// user-supplied string buffers the kernel fills.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct DrmVersion {
    pub version_major: i32,
    pub version_minor: i32,
    pub version_patchlevel: i32,
    pub _pad: u32,
    pub name_len: u64,
    pub name: u64,
    pub date_len: u64,
    pub date: u64,
    pub desc_len: u64,
    pub desc: u64,
}

/// struct drm_gem_close.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct DrmGemClose {
    pub handle: u32,
    pub pad: u32,
}

pub const DRM_IOCTL_VERSION: u32 = drm_iowr(0x00, std::mem::size_of::<DrmVersion>());
pub const DRM_IOCTL_GEM_CLOSE: u32 = drm_iow(0x09, std::mem::size_of::<DrmGemClose>());

// ------------------------------------------------------------ vendor rknpu

/// struct rknpu_action: an action code and an in/out value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RknpuAction {
    pub flags: u32,
    pub value: u32,
}

/// struct rknpu_mem_create as in drivers before 0.9.6 (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RknpuMemCreateV1 {
    pub handle: u32,
    pub flags: u32,
    pub size: u64,
    pub obj_addr: u64,
    pub dma_addr: u64,
    pub sram_size: u64,
}

/// struct rknpu_mem_create from 0.9.6 on (48 bytes: IOMMU domain, core mask).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RknpuMemCreateV2 {
    pub handle: u32,
    pub flags: u32,
    pub size: u64,
    pub obj_addr: u64,
    pub dma_addr: u64,
    pub sram_size: u64,
    pub iommu_domain_id: i32,
    pub core_mask: u32,
}

/// struct rknpu_mem_map: the mmap offset of a handle.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RknpuMemMap {
    pub handle: u32,
    pub reserved: u32,
    pub offset: u64,
}

/// struct rknpu_mem_destroy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RknpuMemDestroy {
    pub handle: u32,
    pub reserved: u32,
    pub obj_addr: u64,
}

/// struct rknpu_mem_sync.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RknpuMemSync {
    pub flags: u32,
    pub reserved: u32,
    pub obj_addr: u64,
    pub offset: u64,
    pub size: u64,
}

/// struct rknpu_task (packed in C; naturally aligned here, 40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RknpuTask {
    pub flags: u32,
    pub op_idx: u32,
    pub enable_mask: u32,
    pub int_mask: u32,
    pub int_clear: u32,
    pub int_status: u32,
    pub regcfg_amount: u32,
    pub regcfg_offset: u32,
    pub regcmd_addr: u64,
}

/// struct rknpu_subcore_task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RknpuSubcoreTask {
    pub task_start: u32,
    pub task_number: u32,
}

/// struct rknpu_submit (104 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RknpuSubmit {
    pub flags: u32,
    pub timeout: u32,
    pub task_start: u32,
    pub task_number: u32,
    pub task_counter: u32,
    pub priority: i32,
    pub task_obj_addr: u64,
    pub iommu_domain_id: u32,
    pub reserved: u32,
    pub task_base_addr: u64,
    pub hw_elapse_time: i64,
    pub core_mask: u32,
    pub fence_fd: i32,
    pub subcore_task: [RknpuSubcoreTask; 5],
}

pub const RKNPU_ACTION: u32 = drm_iowr(DRM_COMMAND_BASE, 8);
pub const RKNPU_SUBMIT: u32 = drm_iowr(DRM_COMMAND_BASE + 0x01, std::mem::size_of::<RknpuSubmit>());
pub const RKNPU_MEM_CREATE_V1: u32 = drm_iowr(
    DRM_COMMAND_BASE + 0x02,
    std::mem::size_of::<RknpuMemCreateV1>(),
);
pub const RKNPU_MEM_CREATE_V2: u32 = drm_iowr(
    DRM_COMMAND_BASE + 0x02,
    std::mem::size_of::<RknpuMemCreateV2>(),
);
pub const RKNPU_MEM_MAP: u32 =
    drm_iowr(DRM_COMMAND_BASE + 0x03, std::mem::size_of::<RknpuMemMap>());
pub const RKNPU_MEM_DESTROY: u32 = drm_iowr(
    DRM_COMMAND_BASE + 0x04,
    std::mem::size_of::<RknpuMemDestroy>(),
);
pub const RKNPU_MEM_SYNC: u32 =
    drm_iowr(DRM_COMMAND_BASE + 0x05, std::mem::size_of::<RknpuMemSync>());

/// Actions.
pub const RKNPU_GET_HW_VERSION: u32 = 0;
pub const RKNPU_GET_DRV_VERSION: u32 = 1;
pub const RKNPU_GET_FREQ: u32 = 2;
pub const RKNPU_ACT_RESET: u32 = 6;
pub const RKNPU_GET_IOMMU_EN: u32 = 18;
pub const RKNPU_GET_TOTAL_SRAM_SIZE: u32 = 22;
pub const RKNPU_GET_FREE_SRAM_SIZE: u32 = 23;
/// Current IOMMU domain (drivers with several domains; others refuse it).
pub const RKNPU_GET_IOMMU_DOMAIN_ID: u32 = 24;
pub const RKNPU_SET_IOMMU_DOMAIN_ID: u32 = 25;

/// IOMMU domains of drivers that have them (RKNPU_MAX_IOMMU_DOMAIN_NUM).
pub const RKNPU_MAX_IOMMU_DOMAINS: u32 = 16;

/// Which `subcore_task[]` entry core `core` reads under `core_mask`, as
/// the vendor driver picks it: a single core its own index, cores 0+1
/// their index, all three `index + 2`. Other masks (0+2, 1+2) are not
/// handled by the driver: None.
pub fn subcore_slot(core_mask: u32, core: u32) -> Option<usize> {
    let slot = match core_mask {
        1 | 2 | 4 if core_mask == 1 << core => core,
        3 if core < 2 => core,
        7 if core < 3 => core + 2,
        _ => return None,
    };
    Some(slot as usize)
}

/// Memory flags.
pub const RKNPU_MEM_NON_CONTIGUOUS: u32 = 1 << 0;
pub const RKNPU_MEM_CACHEABLE: u32 = 1 << 1;
pub const RKNPU_MEM_WRITE_COMBINE: u32 = 1 << 2;
pub const RKNPU_MEM_KERNEL_MAPPING: u32 = 1 << 3;
pub const RKNPU_MEM_IOMMU: u32 = 1 << 4;
pub const RKNPU_MEM_ZEROING: u32 = 1 << 5;
pub const RKNPU_MEM_SECURE: u32 = 1 << 6;
/// Bit 7: "allocate from the DMA32 zone" in newer drivers, "allocate
/// outside the DMA32 zone" (NON_DMA32) in older ones; see
/// [`dma32_flag_is_positive`].
pub const RKNPU_MEM_BIT7_DMA32: u32 = 1 << 7;
pub const RKNPU_MEM_TRY_ALLOC_SRAM: u32 = 1 << 8;
pub const RKNPU_MEM_TRY_ALLOC_NBUF: u32 = 1 << 9;
pub const RKNPU_MEM_IOMMU_LIMIT_IOVA_ALIGNMENT: u32 = 1 << 10;
/// Flags of older drivers (bits 0..8) and of newer ones (bits 0..10).
pub const RKNPU_MEM_MASK_OLD: u32 = (1 << 9) - 1;
pub const RKNPU_MEM_MASK_NEW: u32 = (1 << 11) - 1;

pub const RKNPU_MEM_SYNC_TO_DEVICE: u32 = 1 << 0;
pub const RKNPU_MEM_SYNC_FROM_DEVICE: u32 = 1 << 1;

/// Job flags.
pub const RKNPU_JOB_PC: u32 = 1 << 0;
pub const RKNPU_JOB_NONBLOCK: u32 = 1 << 1;
pub const RKNPU_JOB_PINGPONG: u32 = 1 << 2;
pub const RKNPU_JOB_FENCE_IN: u32 = 1 << 3;
pub const RKNPU_JOB_FENCE_OUT: u32 = 1 << 4;

/// Task record values of the known-good matmul: CNA|CORE|DPU enabled, DPU
/// done interrupt, clear all.
pub const RKNPU_TASK_ENABLE_MASK: u32 = 0xD;
pub const RKNPU_TASK_INT_MASK_DPU: u32 = 0x300;
pub const RKNPU_TASK_INT_CLEAR: u32 = 0x1FFFF;

/// Driver versions as GET_DRV_VERSION encodes them.
pub const fn rknpu_version(major: u32, minor: u32, patch: u32) -> u32 {
    major * 10000 + minor * 100 + patch
}

/// "0.9.8" from the encoded number.
pub fn rknpu_version_string(v: u32) -> String {
    format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100)
}

/// Oldest vendor driver this code drives.
pub const RKNPU_MIN_VERSION: u32 = rknpu_version(0, 8, 0);
/// First version with the 48-byte MEM_CREATE (IOMMU domain, core mask).
pub const RKNPU_MEM_CREATE_V2_SINCE: u32 = rknpu_version(0, 9, 6);
/// First version where bit 7 means DMA32 (before: NON_DMA32). Unverified on
/// hardware: the dma_addr < 4 GiB check backs it up either way.
pub const RKNPU_DMA32_POSITIVE_SINCE: u32 = rknpu_version(0, 9, 0);

/// True when bit 7 requests DMA32 memory; false when it requests non-DMA32
/// memory (older drivers default to DMA32 when the bit is clear).
pub fn dma32_flag_is_positive(version: u32) -> bool {
    version >= RKNPU_DMA32_POSITIVE_SINCE
}

// ---------------------------------------------------------- upstream rocket

/// struct drm_rocket_create_bo.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RocketCreateBo {
    pub size: u32,
    pub handle: u32,
    pub dma_address: u64,
    pub offset: u64,
}

/// struct drm_rocket_task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RocketTask {
    pub regcmd: u32,
    pub regcmd_count: u32,
}

/// struct drm_rocket_job.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RocketJob {
    pub tasks: u64,
    pub in_bo_handles: u64,
    pub out_bo_handles: u64,
    pub task_count: u32,
    pub task_struct_size: u32,
    pub in_bo_handle_count: u32,
    pub out_bo_handle_count: u32,
}

/// struct drm_rocket_submit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RocketSubmit {
    pub jobs: u64,
    pub job_count: u32,
    pub job_struct_size: u32,
    pub reserved: u64,
}

/// struct drm_rocket_prep_bo: wait (absolute CLOCK_MONOTONIC deadline) and
/// prepare for CPU access.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RocketPrepBo {
    pub handle: u32,
    pub reserved: u32,
    pub timeout_ns: i64,
}

/// struct drm_rocket_fini_bo: CPU access finished.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RocketFiniBo {
    pub handle: u32,
    pub reserved: u32,
}

pub const ROCKET_CREATE_BO: u32 = drm_iowr(DRM_COMMAND_BASE, std::mem::size_of::<RocketCreateBo>());
pub const ROCKET_SUBMIT: u32 =
    drm_iow(DRM_COMMAND_BASE + 0x01, std::mem::size_of::<RocketSubmit>());
pub const ROCKET_PREP_BO: u32 =
    drm_iow(DRM_COMMAND_BASE + 0x02, std::mem::size_of::<RocketPrepBo>());
pub const ROCKET_FINI_BO: u32 =
    drm_iow(DRM_COMMAND_BASE + 0x03, std::mem::size_of::<RocketFiniBo>());

/// The rocket scheduler's job timeout (JOB_TIMEOUT_MS in rocket_job.c): a
/// job still running after it is aborted and the core reset.
pub const ROCKET_JOB_TIMEOUT_MS: u32 = 500;

// Compile-time ABI checks.
const _: () = {
    use std::mem::size_of;
    assert!(size_of::<DrmVersion>() == 64);
    assert!(size_of::<DrmGemClose>() == 8);
    assert!(size_of::<RknpuAction>() == 8);
    assert!(size_of::<RknpuMemCreateV1>() == 40);
    assert!(size_of::<RknpuMemCreateV2>() == 48);
    assert!(size_of::<RknpuMemMap>() == 16);
    assert!(size_of::<RknpuMemDestroy>() == 16);
    assert!(size_of::<RknpuMemSync>() == 32);
    assert!(size_of::<RknpuTask>() == 40);
    assert!(size_of::<RknpuSubmit>() == 104);
    assert!(size_of::<RocketCreateBo>() == 24);
    assert!(size_of::<RocketTask>() == 8);
    assert!(size_of::<RocketJob>() == 40);
    assert!(size_of::<RocketSubmit>() == 24);
    assert!(size_of::<RocketPrepBo>() == 16);
    assert!(size_of::<RocketFiniBo>() == 8);
    assert!(ROCKET_CREATE_BO == 0xC018_6440);
    assert!(ROCKET_SUBMIT == 0x4018_6441);
    assert!(ROCKET_PREP_BO == 0x4010_6442);
    assert!(ROCKET_FINI_BO == 0x4008_6443);
    assert!(RKNPU_SUBMIT == 0xC068_6441);
    assert!(DRM_IOCTL_GEM_CLOSE == 0x4008_6409);
};

#[cfg(not(target_pointer_width = "64"))]
compile_error!("the NPU ioctl structs are laid out for 64-bit targets");
