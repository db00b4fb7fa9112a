//! The ioctl layer (vendor `rknpu` and upstream `rocket`) against in-process
//! fakes of the kernel drivers that check what the real drivers check and
//! run the jobs on the simulator.

use std::sync::Arc;

use nix::errno::Errno;
use rkinfer::npu::driver::drm::{self, DrmIo};
use rkinfer::npu::driver::rknpu::RknpuDevice;
use rkinfer::npu::driver::rocket::RocketDevice;
use rkinfer::npu::driver::uapi::{self, *};
use rkinfer::npu::ops::arena::WeightArena;
use rkinfer::npu::ops::matmul::{self, MatmulOptions, MatmulOutput, Operands};
use rkinfer::npu::selftest::Rng;
use rkinfer::npu::sim::fake::{FakeConfig, FakeRknpu, FakeRocket, HighAddresses};
use rkinfer::npu::{Fault, MatmulType, NpuDevice, NpuError, PreparedWeights};

fn rknpu(cfg: FakeConfig) -> (Arc<FakeRknpu>, RknpuDevice) {
    let fake = FakeRknpu::new(cfg);
    let dev = RknpuDevice::open(Box::new(fake.clone())).unwrap();
    (fake, dev)
}

fn rocket(cfg: FakeConfig) -> (Arc<FakeRocket>, RocketDevice) {
    let fake = FakeRocket::new(cfg);
    let v = drm::drm_version(&fake).unwrap();
    assert_eq!(v.name, "rocket");
    let dev = RocketDevice::open(Box::new(fake.clone()), v.version_string());
    (fake, dev)
}

fn int8_case(
    dev: &dyn NpuDevice,
    m: usize,
    k: usize,
    n: usize,
    cores: Vec<u32>,
) -> Result<(), NpuError> {
    let mut rng = Rng::new((m * k * n) as u64);
    let a: Vec<i8> = (0..m * k).map(|_| rng.i8_in(-128, 127)).collect();
    let b: Vec<i8> = (0..n * k).map(|_| rng.i8_in(-128, 127)).collect();
    let o = MatmulOptions {
        cores,
        k_segment: 128,
        ..Default::default()
    };
    let got = matmul::matmul(
        dev,
        MatmulType::Int8,
        m,
        k,
        n,
        Operands::Int8 { a: &a, b: &b },
        &o,
    )?;
    assert_eq!(
        got,
        MatmulOutput::I32(matmul::reference_int8(&a, &b, m, k, n))
    );
    Ok(())
}

fn fp16_case(dev: &dyn NpuDevice) -> Result<(), NpuError> {
    let (m, k, n) = (9, 96, 32);
    let mut rng = Rng::new(5);
    let a: Vec<u16> = (0..m * k).map(|_| rng.f16()).collect();
    let b: Vec<u16> = (0..n * k).map(|_| rng.f16()).collect();
    let got = matmul::matmul(
        dev,
        MatmulType::Fp16,
        m,
        k,
        n,
        Operands::Fp16 { a: &a, b: &b },
        &MatmulOptions::default(),
    )?;
    let (exact, mag) = matmul::reference_fp16(&a, &b, m, k, n);
    let MatmulOutput::F32(got) = got else {
        panic!("fp32 output expected")
    };
    for i in 0..m * n {
        assert!(
            (f64::from(got[i]) - exact[i]).abs()
                <= matmul::fp16_error_bound(k, mag[i], exact[i], false)
        );
    }
    Ok(())
}

// ------------------------------------------------------------------ rknpu

#[test]
fn rknpu_new_driver_runs_matmuls_and_frees_buffers() {
    let (fake, dev) = rknpu(FakeConfig::default());
    let info = dev.info();
    assert_eq!(
        (info.driver.as_str(), info.version.as_str(), info.iommu),
        ("rknpu", "0.9.8", Some(true))
    );
    assert_eq!(drm::drm_version(&fake).unwrap().name, "rknpu");
    int8_case(&dev, 13, 256, 64, vec![0, 1]).unwrap(); // chained K segments, 2 cores
    fp16_case(&dev).unwrap();
    // Inference keeps no submit records (only the self-test asks for them).
    assert_eq!(dev.last_submit(), None);
    dev.record_submits(true);
    fp16_case(&dev).unwrap();
    assert_eq!(dev.last_submit().unwrap().ioctl, "RKNPU_SUBMIT");
    dev.record_submits(false);
    fp16_case(&dev).unwrap();
    assert_eq!(dev.last_submit(), None);
    assert!(
        fake.log()
            .iter()
            .any(|l| l.starts_with("MEM_CREATE(48 bytes struct)")),
        "{:?}",
        fake.log()
    );
    // Both cores in one submit.
    assert!(fake.log().iter().any(|l| l.contains("core mask 0x3")));
    assert!(
        fake.live_handles().is_empty(),
        "leaked {:?}",
        fake.live_handles()
    );
}

#[test]
fn rknpu_old_driver_uses_40_byte_mem_create_and_non_dma32_meaning() {
    // 0.8.2: bit 7 means NON_DMA32; the fake hands out high addresses to
    // buffers not in DMA32, so a wrong flag would fail the 4 GiB check.
    let cfg = FakeConfig {
        version: uapi::rknpu_version(0, 8, 2),
        iommu: false,
        high_addresses: HighAddresses::UnlessDma32,
        ..Default::default()
    };
    let (fake, dev) = rknpu(cfg);
    int8_case(&dev, 4, 64, 32, vec![0]).unwrap();
    assert!(fake
        .log()
        .iter()
        .any(|l| l.starts_with("MEM_CREATE(40 bytes struct)")));
    assert!(!fake.log().iter().any(|l| l.starts_with("MEM_CREATE(48")));
}

#[test]
fn rknpu_new_driver_sets_dma32() {
    let cfg = FakeConfig {
        version: uapi::rknpu_version(0, 9, 6),
        high_addresses: HighAddresses::UnlessDma32,
        ..Default::default()
    };
    let (_fake, dev) = rknpu(cfg);
    let buf = dev.alloc(4096).unwrap();
    assert!(u64::from(buf.dma_addr()) < 1 << 32);
}

#[test]
fn rknpu_too_old_driver_is_refused() {
    let fake = FakeRknpu::new(FakeConfig {
        version: uapi::rknpu_version(0, 7, 0),
        ..Default::default()
    });
    let err = RknpuDevice::open(Box::new(fake)).err().unwrap().to_string();
    assert!(err.contains("0.7.0") && err.contains("too old"), "{err}");
}

#[test]
fn rknpu_buffer_above_4g_is_rejected_and_freed() {
    let (fake, dev) = rknpu(FakeConfig {
        high_addresses: HighAddresses::Always,
        ..Default::default()
    });
    let err = dev.alloc(4096).err().unwrap();
    assert!(matches!(err, NpuError::AddressAbove4G { .. }), "{err}");
    assert!(err.to_string().contains("above 4 GiB"));
    assert!(fake.live_handles().is_empty());
}

#[test]
fn rknpu_timeout_and_failure_then_recovery() {
    let (fake, dev) = rknpu(FakeConfig::default());
    fake.inject(Fault::Timeout, 1);
    assert!(matches!(
        int8_case(&dev, 4, 64, 32, vec![0]),
        Err(NpuError::SubmitTimeout { timeout_ms: 6000 })
    ));
    fake.inject(Fault::Fail, 1);
    let err = int8_case(&dev, 4, 64, 32, vec![0]).unwrap_err();
    assert!(matches!(err, NpuError::SubmitFailed { .. }), "{err}");
    int8_case(&dev, 4, 64, 32, vec![0]).unwrap();
    assert!(fake.live_handles().is_empty());
}

fn create(fake: &Arc<FakeRknpu>, flags: u32) -> RknpuMemCreateV2 {
    let mut c = RknpuMemCreateV2 {
        flags,
        size: 4096,
        ..Default::default()
    };
    drm::call(fake, RKNPU_MEM_CREATE_V2, &mut c).unwrap();
    c
}

#[test]
fn rknpu_fake_checks_handles_flags_and_ranges() {
    let fake = FakeRknpu::new(FakeConfig::default());
    let io: &dyn DrmIo = &fake;
    // Unknown flag bit.
    let mut c = RknpuMemCreateV2 {
        flags: 1 << 12,
        size: 4096,
        ..Default::default()
    };
    assert_eq!(
        drm::call(io, RKNPU_MEM_CREATE_V2, &mut c),
        Err(Errno::EINVAL)
    );
    // Size 0.
    let mut c = RknpuMemCreateV2 {
        flags: RKNPU_MEM_BIT7_DMA32,
        ..Default::default()
    };
    assert_eq!(
        drm::call(io, RKNPU_MEM_CREATE_V2, &mut c),
        Err(Errno::EINVAL)
    );
    // Bad handle for MEM_MAP.
    let mut m = RknpuMemMap {
        handle: 999,
        ..Default::default()
    };
    assert_eq!(drm::call(io, RKNPU_MEM_MAP, &mut m), Err(Errno::EINVAL));
    // Destroy with an invented kernel pointer.
    let buf = create(&fake, RKNPU_MEM_BIT7_DMA32);
    let mut d = RknpuMemDestroy {
        handle: buf.handle,
        reserved: 0,
        obj_addr: 0xdead_0000,
    };
    assert_eq!(drm::call(io, RKNPU_MEM_DESTROY, &mut d), Err(Errno::EFAULT));
    // MEM_SYNC needs a cacheable buffer, and a range inside it.
    let mut s = RknpuMemSync {
        flags: RKNPU_MEM_SYNC_TO_DEVICE,
        obj_addr: buf.obj_addr,
        size: 4096,
        ..Default::default()
    };
    assert_eq!(drm::call(io, RKNPU_MEM_SYNC, &mut s), Err(Errno::EINVAL));
    assert!(fake.last_error().unwrap().contains("non-cacheable"));
    let cached = create(&fake, RKNPU_MEM_BIT7_DMA32 | RKNPU_MEM_CACHEABLE);
    let mut s = RknpuMemSync {
        flags: RKNPU_MEM_SYNC_FROM_DEVICE,
        obj_addr: cached.obj_addr,
        size: 4096,
        ..Default::default()
    };
    drm::call(io, RKNPU_MEM_SYNC, &mut s).unwrap();
    s.size = 8192;
    assert_eq!(drm::call(io, RKNPU_MEM_SYNC, &mut s), Err(Errno::EINVAL));
    // Wrong argument size for the request, unknown ioctl.
    let mut small = [0u8; 8];
    // SAFETY: the argument is 8 plain bytes; no pointers are involved.
    assert_eq!(
        unsafe { io.ioctl(RKNPU_MEM_SYNC, &mut small) },
        Err(Errno::EINVAL)
    );
    let mut a = RknpuAction::default();
    assert_eq!(
        drm::call(io, uapi::drm_iowr(0x4F, 8), &mut a),
        Err(Errno::ENOTTY)
    );
    // Proper destroy works once.
    let mut d = RknpuMemDestroy {
        handle: buf.handle,
        reserved: 0,
        obj_addr: buf.obj_addr,
    };
    drm::call(io, RKNPU_MEM_DESTROY, &mut d).unwrap();
    assert_eq!(drm::call(io, RKNPU_MEM_DESTROY, &mut d), Err(Errno::EFAULT));
}

#[test]
fn rknpu_fake_checks_submits() {
    let fake = FakeRknpu::new(FakeConfig::default());
    let io: &dyn DrmIo = &fake;
    let tasks = create(&fake, RKNPU_MEM_BIT7_DMA32 | RKNPU_MEM_KERNEL_MAPPING);
    let plain = create(&fake, RKNPU_MEM_BIT7_DMA32);
    let base = RknpuSubmit {
        flags: RKNPU_JOB_PC | RKNPU_JOB_PINGPONG,
        timeout: 6000,
        task_number: 1,
        task_obj_addr: tasks.obj_addr,
        core_mask: 1,
        fence_fd: -1,
        ..Default::default()
    };
    // Three cores at once.
    let mut s = RknpuSubmit {
        core_mask: 7,
        ..base
    };
    assert_eq!(drm::call(io, RKNPU_SUBMIT, &mut s), Err(Errno::EINVAL));
    // Not PC mode.
    let mut s = RknpuSubmit { flags: 0, ..base };
    assert_eq!(drm::call(io, RKNPU_SUBMIT, &mut s), Err(Errno::EINVAL));
    // Task buffer without a kernel mapping.
    let mut s = RknpuSubmit {
        task_obj_addr: plain.obj_addr,
        ..base
    };
    assert_eq!(drm::call(io, RKNPU_SUBMIT, &mut s), Err(Errno::EINVAL));
    // More task records than the buffer holds.
    let mut s = RknpuSubmit {
        task_number: 200,
        ..base
    };
    assert_eq!(drm::call(io, RKNPU_SUBMIT, &mut s), Err(Errno::EINVAL));
    // A zeroed task record: its regcmd address 0 is outside every buffer.
    let mut s = base;
    assert_eq!(drm::call(io, RKNPU_SUBMIT, &mut s), Err(Errno::EINVAL));
    assert!(fake.last_error().unwrap().contains("outside every buffer"));
}

#[test]
fn rknpu_wrong_int_mask_is_a_silent_timeout() {
    let fake = FakeRknpu::new(FakeConfig::default());
    let io: &dyn DrmIo = &fake;
    let tasks = create(&fake, RKNPU_MEM_BIT7_DMA32 | RKNPU_MEM_KERNEL_MAPPING);
    let cmd = create(&fake, RKNPU_MEM_BIT7_DMA32);
    // Write one task record through the fake's mapping.
    let mut m = RknpuMemMap {
        handle: tasks.handle,
        ..Default::default()
    };
    drm::call(io, RKNPU_MEM_MAP, &mut m).unwrap();
    let mut map = io.mmap(m.offset, 4096).unwrap();
    let rec = RknpuTask {
        enable_mask: RKNPU_TASK_ENABLE_MASK,
        int_mask: 0x100,
        int_clear: RKNPU_TASK_INT_CLEAR,
        regcfg_amount: 104,
        regcmd_addr: cmd.dma_addr,
        ..Default::default()
    };
    map.write(0, bytemuck::bytes_of(&rec)).unwrap();
    let mut s = RknpuSubmit {
        flags: RKNPU_JOB_PC,
        timeout: 100,
        task_number: 1,
        task_obj_addr: tasks.obj_addr,
        core_mask: 1,
        fence_fd: -1,
        ..Default::default()
    };
    assert_eq!(drm::call(io, RKNPU_SUBMIT, &mut s), Err(Errno::ETIMEDOUT));
    assert!(fake.last_error().unwrap().contains("int_mask"));
}

// ----------------------------------------------------------------- rocket

#[test]
fn rocket_runs_matmuls_task_by_task_and_frees_buffers() {
    let (fake, dev) = rocket(FakeConfig::default());
    assert_eq!(dev.chaining(), rkinfer::npu::Chaining::KernelStartsEachTask);
    int8_case(&dev, 21, 256, 64, vec![0]).unwrap();
    fp16_case(&dev).unwrap();
    assert!(
        fake.log()
            .iter()
            .any(|l| l.starts_with("SUBMIT job of 2 tasks")),
        "{:?}",
        fake.log()
    );
    assert!(
        fake.live_handles().is_empty(),
        "leaked {:?}",
        fake.live_handles()
    );
}

#[test]
fn rocket_hang_times_out_in_prep_bo_and_failure_is_reported() {
    let (fake, dev) = rocket(FakeConfig::default());
    fake.inject(Fault::Timeout, 1);
    let err = int8_case(&dev, 4, 64, 32, vec![0]).unwrap_err();
    assert!(matches!(err, NpuError::SubmitTimeout { .. }), "{err}");
    fake.inject(Fault::Fail, 1);
    assert!(matches!(
        int8_case(&dev, 4, 64, 32, vec![0]),
        Err(NpuError::SubmitFailed { .. })
    ));
    int8_case(&dev, 4, 64, 32, vec![0]).unwrap();
}

#[test]
fn rocket_buffer_above_4g_is_rejected_and_closed() {
    let (fake, dev) = rocket(FakeConfig {
        high_addresses: HighAddresses::Always,
        ..Default::default()
    });
    assert!(matches!(
        dev.alloc(4096),
        Err(NpuError::AddressAbove4G { .. })
    ));
    assert!(fake.live_handles().is_empty());
}

fn submit_raw(io: &dyn DrmIo, s: &mut RocketSubmit) -> Result<(), Errno> {
    // SAFETY: the tests pass either a null job pointer (rejected before any
    // read) or pointers to job/task/handle arrays alive across the call.
    unsafe { drm::call_with_pointers(io, ROCKET_SUBMIT, s) }
}

#[test]
fn rocket_fake_checks_handles_and_reserved_fields() {
    let fake = FakeRocket::new(FakeConfig::default());
    let io: &dyn DrmIo = &fake;
    let mut c = RocketCreateBo {
        size: 0,
        ..Default::default()
    };
    assert_eq!(drm::call(io, ROCKET_CREATE_BO, &mut c), Err(Errno::EINVAL));
    let mut g = DrmGemClose { handle: 42, pad: 0 };
    assert_eq!(
        drm::call(io, DRM_IOCTL_GEM_CLOSE, &mut g),
        Err(Errno::ENOENT)
    );
    let mut f = RocketFiniBo {
        handle: 42,
        reserved: 0,
    };
    assert_eq!(drm::call(io, ROCKET_FINI_BO, &mut f), Err(Errno::ENOENT));
    let mut c = RocketCreateBo {
        size: 4096,
        ..Default::default()
    };
    drm::call(io, ROCKET_CREATE_BO, &mut c).unwrap();
    let mut p = RocketPrepBo {
        handle: c.handle,
        reserved: 1,
        timeout_ns: 0,
    };
    assert_eq!(drm::call(io, ROCKET_PREP_BO, &mut p), Err(Errno::EINVAL));
    let mut s = RocketSubmit {
        jobs: 0,
        job_count: 1,
        job_struct_size: 40,
        reserved: 1,
    };
    assert_eq!(submit_raw(io, &mut s), Err(Errno::EINVAL));
    let mut s = RocketSubmit {
        jobs: 0,
        job_count: 1,
        job_struct_size: 16,
        reserved: 0,
    };
    assert_eq!(submit_raw(io, &mut s), Err(Errno::EINVAL));
    // A job naming a handle that does not exist.
    let tasks = [RocketTask {
        regcmd: c.dma_address as u32,
        regcmd_count: 108,
    }];
    let bad = [77u32];
    let job = RocketJob {
        tasks: tasks.as_ptr() as u64,
        in_bo_handles: bad.as_ptr() as u64,
        out_bo_handles: 0,
        task_count: 1,
        task_struct_size: 8,
        in_bo_handle_count: 1,
        out_bo_handle_count: 0,
    };
    let mut s = RocketSubmit {
        jobs: &job as *const RocketJob as u64,
        job_count: 1,
        job_struct_size: 40,
        reserved: 0,
    };
    assert_eq!(submit_raw(io, &mut s), Err(Errno::ENOENT));
    // A task whose commands run past the buffer.
    let tasks = [RocketTask {
        regcmd: c.dma_address as u32 + 4000,
        regcmd_count: 108,
    }];
    let job = RocketJob {
        tasks: tasks.as_ptr() as u64,
        in_bo_handle_count: 0,
        ..job
    };
    let mut s = RocketSubmit {
        jobs: &job as *const RocketJob as u64,
        job_count: 1,
        job_struct_size: 40,
        reserved: 0,
    };
    assert_eq!(submit_raw(io, &mut s), Err(Errno::EINVAL));
    let mut g = DrmGemClose {
        handle: c.handle,
        pad: 0,
    };
    drm::call(io, DRM_IOCTL_GEM_CLOSE, &mut g).unwrap();
}

#[test]
fn rocket_rejects_pc_chained_tails() {
    // A command buffer built for the vendor driver (tails chained) would run
    // tasks twice under rocket; the fake refuses it.
    let fake = FakeRocket::new(FakeConfig::default());
    let dev = RocketDevice::open(Box::new(fake.clone()), "1.0.0".into());
    let a = dev.alloc(4096).unwrap();
    let b = dev.alloc(4096).unwrap();
    let c = dev.alloc(4096).unwrap();
    let mut cmd = dev.alloc(2 * 108 * 8).unwrap();
    let desc = rkinfer::npu::TaskDesc {
        ty: MatmulType::Int8,
        m: 4,
        k: 64,
        n: 32,
        a_addr: a.dma_addr(),
        b_addr: b.dma_addr(),
        c_addr: c.dma_addr(),
    };
    let (words, offsets) = rkinfer::npu::command::task::build_command_buffer(
        &[desc, desc],
        cmd.dma_addr(),
        rkinfer::npu::Chaining::PcChain,
    )
    .unwrap();
    cmd.write_words(0, &words).unwrap();
    let refs: Vec<_> = offsets
        .iter()
        .map(|&o| rkinfer::npu::TaskRef {
            offset: o,
            body_entries: 104,
        })
        .collect();
    let job = rkinfer::npu::Job {
        regcmd: &cmd,
        tasks: &refs,
        shares: &[rkinfer::npu::CoreShare {
            core: 0,
            first: 0,
            count: refs.len(),
            outputs: &[&c],
        }],
        inputs: &[&a, &b],
        timeout_ms: 500,
    };
    let err = dev.submit(&job).unwrap_err();
    assert!(matches!(err, NpuError::SubmitFailed { .. }), "{err}");
    assert!(fake.last_error().unwrap().contains("chains"));
}

#[test]
fn rknpu_dma32_only_without_iommu() {
    // With the IOMMU on, DMA32 would confine every page to the low 4 GiB of
    // RAM: a 1 MiB zone must not stop an 8 MiB allocation.
    let (fake, dev) = rknpu(FakeConfig::default());
    fake.limit_dma32(1 << 20);
    dev.alloc(8 << 20).unwrap();
    assert!(fake
        .created_flags()
        .iter()
        .all(|f| f & RKNPU_MEM_BIT7_DMA32 == 0 && f & RKNPU_MEM_IOMMU != 0));
    // Without it the pages themselves must be below 4 GiB: DMA32 is asked.
    let (fake, dev) = rknpu(FakeConfig {
        iommu: false,
        ..Default::default()
    });
    fake.limit_dma32(1 << 20);
    let err = dev.alloc(8 << 20).err().unwrap();
    assert!(err.to_string().contains("RKNPU_MEM_CREATE"), "{err}");
    assert!(fake.last_error().unwrap().contains("DMA32 zone exhausted"));
    dev.alloc(4096).unwrap();
    assert!(fake
        .created_flags()
        .iter()
        .all(|f| f & RKNPU_MEM_BIT7_DMA32 != 0));
}

#[test]
fn rknpu_old_submit_layout_reports_unknown_hw_time() {
    use rkinfer::npu::{Job, TaskDesc, TaskRef};
    let run = |version: u32| {
        let (_fake, dev) = rknpu(FakeConfig {
            version,
            iommu: false,
            high_addresses: HighAddresses::Never,
            ..Default::default()
        });
        let (a, b, c) = (
            dev.alloc(4 * 64).unwrap(),
            dev.alloc(32 * 64).unwrap(),
            dev.alloc(4 * 32 * 4).unwrap(),
        );
        let desc = TaskDesc {
            ty: MatmulType::Int8,
            m: 4,
            k: 64,
            n: 32,
            a_addr: a.dma_addr(),
            b_addr: b.dma_addr(),
            c_addr: c.dma_addr(),
        };
        let mut regcmd = dev
            .alloc(rkinfer::npu::command::task::TASK_ENTRIES * 8)
            .unwrap();
        let (words, offsets) = rkinfer::npu::command::task::build_command_buffer(
            &[desc],
            regcmd.dma_addr(),
            rkinfer::npu::Chaining::PcChain,
        )
        .unwrap();
        regcmd.write_words(0, &words).unwrap();
        let tasks = [TaskRef {
            offset: offsets[0],
            body_entries: rkinfer::npu::command::task::BODY_ENTRIES as u32,
        }];
        dev.submit(&Job {
            regcmd: &regcmd,
            tasks: &tasks,
            shares: &[rkinfer::npu::CoreShare {
                core: 0,
                first: 0,
                count: 1,
                outputs: &[&c],
            }],
            inputs: &[&a, &b],
            timeout_ms: 1000,
        })
        .unwrap()
    };
    assert_eq!(run(uapi::rknpu_version(0, 8, 2)).hw_time_us, None);
    assert!(run(uapi::rknpu_version(0, 9, 8)).hw_time_us.is_some());
}

#[test]
fn silently_rejected_jobs_are_caught_by_the_sentinel() {
    // rocket's SUBMIT returns 0 for a job its scheduler rejects: the stale
    // output must not be taken for a result.
    let (fake, dev) = rocket(FakeConfig::default());
    int8_case(&dev, 4, 64, 32, vec![0]).unwrap();
    fake.inject(Fault::SilentReject, 1);
    let err = int8_case(&dev, 4, 64, 32, vec![0]).unwrap_err();
    assert!(
        matches!(err, NpuError::OutputNotWritten { ref tasks, total: 1 } if tasks == &[0]),
        "{err}"
    );
    assert!(err.to_string().contains("never wrote"), "{err}");
    int8_case(&dev, 4, 64, 32, vec![0]).unwrap();
    // The same on the vendor fake and the simulator.
    let (fake, dev) = rknpu(FakeConfig::default());
    fake.inject(Fault::SilentReject, 1);
    assert!(matches!(
        int8_case(&dev, 4, 64, 32, vec![0]),
        Err(NpuError::OutputNotWritten { .. })
    ));
    let sim = rkinfer::npu::SimDevice::new();
    sim.inject(Fault::SilentReject, 1);
    assert!(matches!(
        int8_case(&sim, 4, 64, 32, vec![0]),
        Err(NpuError::OutputNotWritten { .. })
    ));
}

#[test]
fn rocket_jobs_fit_its_500_ms_timeout() {
    use rkinfer::npu::ops::matmul::{job_groups, task_time_bound_us};
    let (_fake, dev) = rocket(FakeConfig::default());
    assert_eq!(dev.job_time_limit_ms(), Some(500));
    // Forty of the largest tested int8 tasks (32 MiB of weights each): the
    // old 256 tasks per job would have run far past 500 ms.
    let big = rkinfer::npu::TaskDesc {
        ty: MatmulType::Int8,
        m: 544,
        k: 8192,
        n: 4096,
        a_addr: 0x1000_0000,
        b_addr: 0x2000_0000,
        c_addr: 0x3000_0000,
    };
    let tasks = vec![big; 40];
    assert!(tasks.iter().map(task_time_bound_us).sum::<u64>() > 500_000);
    let groups = job_groups(&tasks, 256, 500);
    assert!(groups.len() > 1);
    assert_eq!(groups.iter().map(|g| g.len()).sum::<usize>(), 40);
    for g in &groups {
        let us: u64 = tasks[g.clone()].iter().map(task_time_bound_us).sum();
        assert!(us <= 250_000 || g.len() == 1, "{g:?}: {us} us");
    }
    // Small tasks still share one job up to the task limit.
    let small = rkinfer::npu::TaskDesc {
        m: 4,
        k: 64,
        n: 32,
        ..big
    };
    assert_eq!(job_groups(&vec![small; 300], 256, 500).len(), 2);
}

/// A /dev and /sys answered from a table: node name -> how opening it goes.
struct TableSystem {
    nodes: Vec<(&'static str, &'static str)>,
    owners: Vec<(&'static str, &'static str)>,
}

impl rkinfer::npu::driver::discover::NodeSystem for TableSystem {
    fn list(&self, dir: &str) -> Option<Vec<String>> {
        let names: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|(p, _)| p.strip_prefix(dir)?.strip_prefix('/').map(String::from))
            .collect();
        (!names.is_empty()).then_some(names)
    }

    fn open(&self, path: &std::path::Path) -> Result<Box<dyn DrmIo>, NpuError> {
        let how = self
            .nodes
            .iter()
            .find(|(p, _)| std::path::Path::new(p) == path)
            .map(|(_, h)| *h)
            .unwrap();
        match how {
            "rknpu" => Ok(Box::new(FakeRknpu::new(FakeConfig::default()))),
            "rocket" => Ok(Box::new(FakeRocket::new(FakeConfig::default()))),
            "denied" => Err(NpuError::PermissionDenied {
                path: path.to_path_buf(),
            }),
            _ => Err(NpuError::Open {
                path: path.to_path_buf(),
                errno: Errno::ENODEV,
            }),
        }
    }

    fn sysfs_owner(&self, _class: &str, node: &str) -> Option<String> {
        self.owners
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, o)| o.to_string())
    }
}

#[test]
fn discovery_tries_card_nodes_and_says_which_worked() {
    use rkinfer::npu::driver::discover::open_hardware_on;
    // The render node fails; the vendor driver answers on card1.
    let sys = TableSystem {
        nodes: vec![
            ("/dev/dri/renderD128", "gone"),
            ("/dev/dri/card0", "gone"),
            ("/dev/dri/card1", "rknpu"),
        ],
        owners: vec![],
    };
    let opened = open_hardware_on(&sys).map_err(|e| e.to_string()).unwrap();
    assert_eq!(opened.node, std::path::Path::new("/dev/dri/card1"));
    assert_eq!(opened.device.info().driver, "rknpu");
    assert!(opened.tried.iter().any(|t| t.contains("renderD128")));
    assert!(opened.tried.iter().any(|t| t.contains("card0")));
    assert!(opened.tried.iter().any(|t| t.contains("/dev/accel")));
    // rocket on /dev/accel comes first.
    let sys = TableSystem {
        nodes: vec![("/dev/accel/accel0", "rocket"), ("/dev/dri/card1", "rknpu")],
        owners: vec![],
    };
    let opened = open_hardware_on(&sys).map_err(|e| e.to_string()).unwrap();
    assert_eq!(opened.node, std::path::Path::new("/dev/accel/accel0"));
}

#[test]
fn permission_hint_recognises_rockets_facade_device() {
    use rkinfer::npu::driver::discover::open_hardware_on;
    // rocket's accel node hangs off the driverless "rknn" platform device.
    let sys = TableSystem {
        nodes: vec![
            ("/dev/accel/accel0", "denied"),
            ("/dev/dri/renderD128", "denied"),
        ],
        owners: vec![("accel0", "rknn"), ("renderD128", "panfrost")],
    };
    let err = open_hardware_on(&sys).err().unwrap();
    assert!(
        matches!(&err, NpuError::PermissionDenied { path } if path.ends_with("accel0")),
        "{err}"
    );
    assert!(err.to_string().contains("permission denied"));
    // A denied node of another driver is only a note.
    let sys = TableSystem {
        nodes: vec![("/dev/dri/renderD128", "denied")],
        owners: vec![("renderD128", "panfrost")],
    };
    let err = open_hardware_on(&sys).err().unwrap().to_string();
    assert!(
        err.starts_with("no NPU device found") && err.contains("panfrost"),
        "{err}"
    );
}

fn selftest_report(dev: &dyn NpuDevice, root: &std::path::Path) -> rkinfer::npu::selftest::Report {
    rkinfer::npu::selftest::run_report(
        dev,
        vec!["/dev/dri/renderD128 is driven by panfrost".into()],
        &MatmulOptions::default(),
        false,
        root,
        |_, _, _| {},
    )
}

/// A /proc and /sys with the NPU's device-tree node and devfreq entries.
fn fake_root() -> std::path::PathBuf {
    let root = std::env::temp_dir().join(format!("rkinfer-selftest-root-{}", std::process::id()));
    let w = |p: &str, text: &str| {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    w("proc/sys/kernel/osrelease", "6.1.75-rockchip\n");
    w("proc/device-tree/npu@fdab0000/status", "okay\0");
    w(
        "sys/class/devfreq/fdab0000.npu/governor",
        "rknpu_ondemand\n",
    );
    w("sys/class/devfreq/fdab0000.npu/cur_freq", "1000000000\n");
    w("sys/class/devfreq/dmc/governor", "dmc_ondemand\n");
    w("sys/class/devfreq/dmc/cur_freq", "2112000000\n");
    root
}

#[test]
fn selftest_report_on_each_fake_driver() {
    use rkinfer::npu::selftest::TileVerdict;
    let root = fake_root();
    let (_fake, dev) = rknpu(FakeConfig::default());
    let r = selftest_report(&dev, &root);
    assert_eq!(r.passed, r.total, "{r:#?}");
    assert_eq!(
        r.environment.kernel_release.as_deref(),
        Some("6.1.75-rockchip")
    );
    assert_eq!(
        r.environment.device_tree,
        vec![("npu@fdab0000".to_string(), "okay".to_string())]
    );
    assert_eq!(r.environment.devfreq.len(), 2);
    assert_eq!(r.device.driver, "rknpu");
    assert_eq!(r.device.nodes_tried.len(), 1);
    assert!(!r.kernel_log.is_empty());
    let first = &r.rungs[0].result;
    assert_eq!(first.words_hash, first.known_good_hash);
    assert!(first.trace.jobs[0].stats.unwrap().hw_time_us.is_some());
    // The kernel structures as the driver left them: the submit with its
    // task counter, and the last task with the interrupt status written in.
    for g in &r.rungs {
        for job in &g.result.trace.jobs {
            let sub = job.submit.as_ref().expect("every job records its submit");
            assert_eq!(sub.ioctl, "RKNPU_SUBMIT");
            assert_eq!(sub.struct_size, 104);
            assert_eq!(sub.errno, None);
            assert_eq!(sub.tasks_total, job.tasks);
            let n = job.tasks as i64;
            assert_eq!(sub.submit.get("task_number"), Some(n));
            assert_eq!(sub.submit.get("task_counter"), Some(n));
            // The cores of a submit run together: the mask has them all.
            assert_eq!(sub.submit.get("core_mask"), Some(i64::from(job.core_mask)));
            assert_eq!(sub.submit.get("hw_elapse_time"), Some(1000 * n));
            let first_task = &sub.tasks[0];
            assert_eq!(
                first_task.get("regcmd_addr"),
                Some(job.regcmd.dma_addr as i64)
            );
            let last = sub.tasks.last().unwrap();
            assert_eq!(last.get("index"), Some(n - 1));
            assert_eq!(last.get("int_status"), Some(0x300));
        }
    }
    assert!(r
        .rungs
        .iter()
        .all(|g| g.result.tiles.iter().all(|t| t.verdict == TileVerdict::Ok)));

    // rocket rejecting every job silently: every tile untouched, and the
    // isolating reruns are in the report.
    let (fake, dev) = rocket(FakeConfig::default());
    fake.inject(Fault::SilentReject, u32::MAX);
    let r = selftest_report(&dev, &root);
    assert_eq!(r.passed, 0);
    assert_eq!(r.device.job_time_limit_ms, Some(500));
    for g in &r.rungs {
        assert!(g
            .result
            .tiles
            .iter()
            .all(|t| t.verdict == TileVerdict::Untouched));
        assert!(g.result.error.as_deref().unwrap().contains("never wrote"));
        assert!(g.reruns.iter().any(|x| x.change.contains("chaining off")));
    }
    assert!(r.rungs[0].result.trace.jobs[0]
        .stats
        .unwrap()
        .hw_time_us
        .is_none());
    let job = &r.rungs[0].result.trace.jobs[0];
    let sub = job.submit.as_ref().unwrap();
    assert_eq!(sub.ioctl, "ROCKET_SUBMIT");
    assert_eq!(sub.struct_size, 24);
    assert_eq!(sub.submit.get("task_count"), Some(job.tasks as i64));
    assert_eq!(
        sub.submit.get("regcmd_bo_handle"),
        Some(job.regcmd.handle as i64)
    );
    assert_eq!(sub.tasks[0].get("regcmd"), Some(job.regcmd.dma_addr as i64));

    // The vendor driver failing once: the rung reports the error, its
    // reruns (chaining off, uncached buffers) pass and say so.
    let (fake, dev) = rknpu(FakeConfig::default());
    fake.inject(Fault::Fail, 1);
    let r = selftest_report(&dev, &root);
    assert_eq!(r.passed, r.total - 1);
    let failed = &r.rungs[0];
    assert!(failed.result.trace.jobs[0]
        .error
        .as_deref()
        .unwrap()
        .contains("EIO"));
    let sub = failed.result.trace.jobs[0].submit.as_ref().unwrap();
    assert_eq!(sub.errno, Some(5), "EIO is errno 5: {sub:?}");
    assert_eq!(sub.submit.get("task_counter"), Some(0));
    assert!(failed
        .result
        .tiles
        .iter()
        .all(|t| t.verdict == TileVerdict::Unchecked));
    let changes: Vec<&str> = failed.reruns.iter().map(|x| x.change).collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(failed.reruns.iter().all(|x| x.result.passed));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn int4_is_off_on_hardware_unless_asked() {
    let (_fake, dev) = rknpu(FakeConfig::default());
    let (a, b) = (vec![1i8; 4 * 64], vec![1i8; 64 * 64]);
    let run = |allow: bool| {
        matmul::matmul(
            &dev,
            MatmulType::Int4,
            4,
            64,
            64,
            Operands::Int4 { a: &a, b: &b },
            &MatmulOptions {
                allow_experimental: allow,
                ..Default::default()
            },
        )
    };
    let err = run(false).unwrap_err().to_string();
    assert!(err.contains("experimental"), "{err}");
    // Asked for, it runs the capture's register sequence (on the fake's sim).
    assert_eq!(run(true).unwrap(), MatmulOutput::I32(vec![64; 4 * 64]));
}

// ------------------------------------------------------------ three cores

/// fp16 (FP32 out) with the given options, as raw output bits.
fn fp16_bits(dev: &dyn NpuDevice, m: usize, k: usize, n: usize, o: &MatmulOptions) -> Vec<u32> {
    let mut rng = Rng::new((m + k + n) as u64);
    let a: Vec<u16> = (0..m * k).map(|_| rng.f16()).collect();
    let b: Vec<u16> = (0..n * k).map(|_| rng.f16()).collect();
    match matmul::matmul(
        dev,
        MatmulType::Fp16,
        m,
        k,
        n,
        Operands::Fp16 { a: &a, b: &b },
        o,
    )
    .unwrap()
    {
        MatmulOutput::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        other => panic!("fp32 output expected, got {other:?}"),
    }
}

#[test]
fn three_core_submits_on_both_fake_drivers() {
    let three = MatmulOptions {
        cores: vec![0, 1, 2],
        ..Default::default()
    };
    // By N (N = 3 x 32 int8 kernels) and by M (96 rows through 32 kernels).
    for (m, k, n) in [(4, 64, 96), (96, 64, 32)] {
        let (fake, dev) = rknpu(FakeConfig::default());
        int8_case(&dev, m, k, n, vec![0, 1, 2]).unwrap();
        let sub = fake.submits().last().cloned().unwrap();
        assert_eq!(sub.core_mask, 7, "{sub:?}");
        assert!(sub.concurrent);
        assert_eq!(
            sub.ranges.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        // Consecutive, disjoint, covering the submit's tasks.
        let mut next = 0;
        for &(_, first, count) in &sub.ranges {
            assert_eq!(first, next, "{sub:?}");
            assert!(count > 0);
            next += count;
        }
        let (fake, dev) = rocket(FakeConfig::default());
        int8_case(&dev, m, k, n, vec![0, 1, 2]).unwrap();
        let sub = fake.submits().last().cloned().unwrap();
        assert_eq!((sub.core_mask, sub.ranges.len()), (7, 3), "{sub:?}");
        assert!(sub.concurrent, "one output buffer per job");
        assert!(fake.last_error().is_none(), "{:?}", fake.last_error());
    }
    // fp16 bits on three cores equal one core's, on both drivers.
    let one = MatmulOptions::default();
    let (_f, dev) = rknpu(FakeConfig::default());
    for (m, k, n) in [(8, 96, 48), (64, 96, 16)] {
        let want = fp16_bits(&dev, m, k, n, &one);
        assert_eq!(fp16_bits(&dev, m, k, n, &three), want, "rknpu {m}x{k}x{n}");
        let (_f, rdev) = rocket(FakeConfig::default());
        assert_eq!(
            fp16_bits(&rdev, m, k, n, &three),
            want,
            "rocket {m}x{k}x{n}"
        );
    }
}

/// A raw RKNPU_SUBMIT of three valid task records on all three cores with
/// the given subcore ranges (entries 2..4 are cores 0..2).
fn three_core_submit(fake: &Arc<FakeRknpu>, ranges: [(u32, u32); 3]) -> Result<(), Errno> {
    let io: &dyn DrmIo = fake;
    let tasks = create(fake, RKNPU_MEM_KERNEL_MAPPING);
    let cmd = create(fake, 0);
    let mut m = RknpuMemMap {
        handle: tasks.handle,
        ..Default::default()
    };
    drm::call(io, RKNPU_MEM_MAP, &mut m).unwrap();
    let mut map = io.mmap(m.offset, 4096).unwrap();
    let rec = RknpuTask {
        enable_mask: RKNPU_TASK_ENABLE_MASK,
        int_mask: RKNPU_TASK_INT_MASK_DPU,
        int_clear: RKNPU_TASK_INT_CLEAR,
        regcfg_amount: 104,
        regcmd_addr: cmd.dma_addr,
        ..Default::default()
    };
    for i in 0..3 {
        map.write(i * 40, bytemuck::bytes_of(&rec)).unwrap();
    }
    let mut s = RknpuSubmit {
        flags: RKNPU_JOB_PC | RKNPU_JOB_PINGPONG,
        timeout: 100,
        task_number: 3,
        task_obj_addr: tasks.obj_addr,
        core_mask: 7,
        fence_fd: -1,
        ..Default::default()
    };
    for (i, (start, number)) in ranges.into_iter().enumerate() {
        s.subcore_task[i + 2] = RknpuSubcoreTask {
            task_start: start,
            task_number: number,
        };
    }
    drm::call(io, RKNPU_SUBMIT, &mut s)
}

#[test]
fn wrong_core_partitions_are_caught_by_the_fake() {
    let cases: [([(u32, u32); 3], &str); 4] = [
        ([(0, 2), (1, 1), (2, 1)], "overlap"),
        ([(0, 2), (2, 1), (2, 1)], "overlap"),
        ([(0, 1), (2, 1), (3, 0)], "no tasks"),
        ([(1, 1), (2, 1), (0, 0)], "no tasks"),
    ];
    for (ranges, why) in cases {
        let fake = FakeRknpu::new(FakeConfig::default());
        assert_eq!(three_core_submit(&fake, ranges), Err(Errno::EINVAL));
        let err = fake.last_error().unwrap();
        assert!(err.contains(why), "{ranges:?}: {err}");
    }
    // A gap: tasks that run on no core.
    let fake = FakeRknpu::new(FakeConfig::default());
    assert_eq!(
        three_core_submit(&fake, [(0, 1), (1, 1), (3, 1)]),
        Err(Errno::EINVAL)
    );
    assert!(fake.last_error().unwrap().contains("run on no core"));
    // Cores 0 and 2 together: a mask the vendor driver does not handle, so
    // the device submits each core's share on its own.
    let (fake, dev) = rknpu(FakeConfig::default());
    assert!(!dev.runs_cores_together(&[0, 2]));
    int8_case(&dev, 4, 64, 64, vec![0, 2]).unwrap();
    let masks: Vec<u32> = fake.submits().iter().map(|s| s.core_mask).collect();
    assert_eq!(masks, vec![1, 4]);
}

// ------------------------------------------------------- IOMMU domains

/// `count` int8 weights of N = K = 1024 (1 MiB each) prepared in `arena`.
fn mib_weights(
    dev: &dyn NpuDevice,
    arena: &WeightArena,
    count: usize,
) -> (Vec<i8>, Vec<Result<PreparedWeights, NpuError>>) {
    let mut rng = Rng::new(77);
    let b: Vec<i8> = (0..1024 * 1024).map(|_| rng.i8_in(-128, 127)).collect();
    let o = MatmulOptions {
        cores: vec![0, 1, 2],
        ..Default::default()
    };
    let prepared = (0..count)
        .map(|_| {
            PreparedWeights::new_in(
                dev,
                Some(arena),
                MatmulType::Int8,
                1024,
                1024,
                matmul::Weights::Int8(&b),
                &o,
            )
        })
        .collect();
    (b, prepared)
}

/// A fake vendor driver whose `domains` IOMMU domains hold 16 MiB each.
fn rknpu_of_16_mib(domains: u32) -> (Arc<FakeRknpu>, RknpuDevice) {
    let (fake, dev) = rknpu(FakeConfig {
        address_space: 16 << 20,
        domains,
        ..Default::default()
    });
    (fake, dev.with_address_space(16 << 20))
}

#[test]
fn weights_beyond_one_address_space_spread_over_iommu_domains() {
    // 16 domains of 16 MiB: 8 MiB of weights each; 24 MiB of weights.
    let (fake, dev) = rknpu_of_16_mib(16);
    assert_eq!(dev.info().iommu_domains, 16);
    let arena = WeightArena::new(4 << 20);
    let (b, prepared) = mib_weights(&dev, &arena, 24);
    let prepared: Vec<PreparedWeights> = prepared.into_iter().map(Result::unwrap).collect();
    assert_eq!(arena.domains_used(), 3);
    // One buffer per group of weights (4 MiB chunks), not per tensor.
    assert_eq!(arena.chunks(), 6);
    assert_eq!(fake.live_handles().len(), arena.chunks());
    assert_eq!(fake.buffers_per_domain()[..4], [2, 2, 2, 0]);
    // A weight of the third domain runs there, with the right result.
    let last = prepared.last().unwrap();
    assert_eq!(last.domain(), 2);
    let mut rng = Rng::new(3);
    let a: Vec<i8> = (0..8 * 1024).map(|_| rng.i8_in(-128, 127)).collect();
    let got = last.matmul(&dev, matmul::Activations::Int8(&a), 8).unwrap();
    assert_eq!(
        got,
        MatmulOutput::I32(matmul::reference_int8(&a, &b, 8, 1024, 1024))
    );
    let sub = fake.submits().last().cloned().unwrap();
    assert_eq!((sub.domain, sub.core_mask), (2, 7));
    assert!(fake.last_error().is_none(), "{:?}", fake.last_error());
    // The buffers go with the last weight and the arena.
    drop((prepared, arena));
    assert!(fake.live_handles().is_empty());
}

#[test]
fn without_domains_the_weights_that_fit_are_offloaded() {
    // One 16 MiB address space: 14 MiB for weights, the rest for submits.
    let (fake, dev) = rknpu_of_16_mib(1);
    assert_eq!(dev.info().iommu_domains, 1);
    let arena = WeightArena::new(4 << 20);
    let (b, prepared) = mib_weights(&dev, &arena, 24);
    let fitted: Vec<&PreparedWeights> = prepared.iter().filter_map(|p| p.as_ref().ok()).collect();
    assert_eq!(fitted.len(), 14, "whole weights within the budget");
    assert!(prepared[14..]
        .iter()
        .all(|p| matches!(p, Err(NpuError::OutOfDeviceMemory { .. }))));
    assert!(arena.chunks() <= 4);
    assert_eq!(fake.live_handles().len(), arena.chunks());
    // What fitted still runs: the submits have room.
    let a = vec![1i8; 4 * 1024];
    let got = fitted[13]
        .matmul(&dev, matmul::Activations::Int8(&a), 4)
        .unwrap();
    assert_eq!(
        got,
        MatmulOutput::I32(matmul::reference_int8(&a, &b, 4, 1024, 1024))
    );
}
