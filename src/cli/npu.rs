//! `rkinfer npu info|selftest|regs|top`: the NPU from the command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use crate::npu::{
    self, matmul, regs::RegWrite, selftest, task, top, MatmulOptions, MatmulType, NpuDevice,
    NpuError,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: NpuCommand,
}

#[derive(Subcommand, Debug)]
pub enum NpuCommand {
    /// Driver, version, cores, IOMMU, memory; or exactly why there is no device.
    Info,
    /// Matmul ladder on the device against the CPU reference (pass/fail table).
    Selftest(SelftestArgs),
    /// The register command stream of a matmul, decoded.
    Regs(RegsArgs),
    /// Per-core NPU load (like ntop.sh).
    Top(TopArgs),
}

#[derive(clap::Args, Debug)]
pub struct SelftestArgs {
    /// npu or npu-sim; default: npu if one is found, else npu-sim (said in one line).
    #[arg(long)]
    pub device: Option<String>,
    /// Cores to spread N over, e.g. 0,1,2.
    #[arg(long, default_value = "0", value_delimiter = ',')]
    pub cores: Vec<u32>,
    /// Also run the experimental int4 path (always run on npu-sim).
    #[arg(long)]
    pub experimental_int4: bool,
    /// Submit timeout in milliseconds.
    #[arg(long, default_value_t = 6000)]
    pub timeout_ms: u32,
}

fn parse_addr(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?} is not a 32-bit address: {e}"))
}

#[derive(clap::Args, Debug)]
pub struct RegsArgs {
    #[arg(long)]
    pub m: usize,
    #[arg(long)]
    pub k: usize,
    #[arg(long)]
    pub n: usize,
    /// int8 | fp16 | fp16-out16 | int4
    #[arg(long = "type")]
    pub ty: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = "0x10000000", value_parser = parse_addr)]
    pub a_addr: u32,
    #[arg(long, default_value = "0x20000000", value_parser = parse_addr)]
    pub b_addr: u32,
    #[arg(long, default_value = "0x30000000", value_parser = parse_addr)]
    pub c_addr: u32,
    /// Where the command buffer lives (used by the chain pointers).
    #[arg(long, default_value = "0x40000000", value_parser = parse_addr)]
    pub regcmd_addr: u32,
    /// Cores to spread N over.
    #[arg(long, default_value = "0", value_delimiter = ',')]
    pub cores: Vec<u32>,
    /// Chaining of tasks: pc (vendor rknpu) or none (rocket).
    #[arg(long, default_value = "pc")]
    pub chain: String,
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

pub fn run(args: Args) -> crate::Result<()> {
    match args.command {
        NpuCommand::Info => info(),
        NpuCommand::Selftest(a) => selftest_cmd(a),
        NpuCommand::Regs(a) => regs_cmd(a),
        NpuCommand::Top(a) => top_cmd(a),
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "unknown".into())
}

fn info() -> crate::Result<()> {
    match npu::open_hardware() {
        Ok(dev) => {
            let i = dev.info();
            println!("driver:        {} {}", i.driver, i.version);
            println!("node:          {}", i.node);
            println!("cores:         {}", i.cores);
            println!(
                "hw version:    {}",
                i.hw_version
                    .map(|v| format!("{v:#x}"))
                    .unwrap_or_else(|| "unknown".into())
            );
            println!(
                "iommu:         {}",
                opt(i.iommu.map(|b| if b { "enabled" } else { "disabled" }))
            );
            println!(
                "clock:         {}",
                opt(i.freq_hz.map(|f| format!("{} MHz", f / 1_000_000)))
            );
            println!(
                "sram:          {} total, {} free",
                opt(i.sram_total),
                opt(i.sram_free)
            );
            println!(
                "address space: {} MiB (32-bit device addresses)",
                i.address_space >> 20
            );
            Ok(())
        }
        Err(NpuError::NoDevice { reasons }) if !reasons.is_empty() => {
            println!("no NPU: {}", reasons.join("; "));
            Ok(())
        }
        Err(e) => {
            println!("no NPU: {e}");
            Ok(())
        }
    }
}

fn selftest_cmd(a: SelftestArgs) -> crate::Result<()> {
    let dev: Box<dyn NpuDevice> = match a.device.as_deref() {
        Some(name) => npu::open_device(name)?,
        None => match npu::open_hardware() {
            Ok(d) => d,
            Err(e) => {
                println!("no NPU ({e}); running the selftest on the simulator (npu-sim) instead");
                Box::new(npu::SimDevice::new())
            }
        },
    };
    let info = dev.info();
    println!(
        "device: {} {} ({}){}",
        info.driver,
        info.version,
        info.node,
        if dev.is_simulated() {
            " [simulated]"
        } else {
            ""
        }
    );
    let opts = MatmulOptions {
        cores: a.cores.clone(),
        timeout_ms: a.timeout_ms,
        allow_experimental: a.experimental_int4,
        ..Default::default()
    };
    let include_int4 = a.experimental_int4 || dev.is_simulated();
    let mut results = Vec::new();
    for (i, case) in selftest::ladder(include_int4).into_iter().enumerate() {
        eprint!(
            "\r[{}/{}] {} {}x{}x{}   ",
            i + 1,
            selftest::ladder(include_int4).len(),
            case.ty.name(),
            case.m,
            case.k,
            case.n
        );
        results.push(selftest::run_case(dev.as_ref(), case, &opts, i as u64 + 1));
    }
    eprintln!();
    print!("{}", selftest::format_table(&results));
    if results.iter().all(|r| r.passed) {
        Ok(())
    } else {
        Err(NpuError::SubmitFailed {
            reason: "selftest failed (see the table)".into(),
        }
        .into())
    }
}

/// The register streams of a matmul plan, as JSON.
pub fn regs_json(a: &RegsArgs) -> Result<serde_json::Value, NpuError> {
    let ty = MatmulType::from_name(&a.ty).ok_or_else(|| {
        NpuError::InvalidShape(format!(
            "unknown type {:?} (int8, fp16, fp16-out16, int4)",
            a.ty
        ))
    })?;
    let chaining = match a.chain.as_str() {
        "pc" => task::Chaining::PcChain,
        "none" => task::Chaining::KernelStartsEachTask,
        other => {
            return Err(NpuError::InvalidShape(format!(
                "unknown chain mode {other:?} (pc or none)"
            )))
        }
    };
    let opts = MatmulOptions {
        cores: a.cores.clone(),
        ..Default::default()
    };
    let plan = matmul::plan(ty, a.m, a.k, a.n, &opts)?;
    let regions = matmul::regions(&plan);
    let (tasks, _) = matmul::plan_tasks(&plan, &regions, a.a_addr, a.b_addr, a.c_addr)?;
    let mut out_tasks = Vec::new();
    // One command buffer per core, tasks back to back, as the runner submits them.
    let mut regcmd = a.regcmd_addr;
    let mut cores: Vec<u32> = tasks.iter().map(|t| t.core).collect();
    cores.sort_unstable();
    cores.dedup();
    for core in cores {
        let mine: Vec<&matmul::PlannedTask> = tasks.iter().filter(|t| t.core == core).collect();
        let descs: Vec<task::TaskDesc> = mine.iter().map(|t| t.desc).collect();
        let (words, offsets) = task::build_command_buffer(&descs, regcmd, chaining)?;
        for (i, t) in mine.iter().enumerate() {
            let w = &words[offsets[i] / 8..offsets[i] / 8 + task::TASK_ENTRIES];
            let entries: Vec<serde_json::Value> = w
                .iter()
                .map(|&word| {
                    let r = RegWrite::decode(word);
                    json!({"block": r.block_name(), "target": r.target, "register": r.register_name(),
                           "offset": r.offset, "value": r.value})
                })
                .collect();
            out_tasks.push(json!({
                "core": t.core, "regcmd_addr": regcmd as u64 + offsets[i] as u64,
                "m": t.desc.m, "k": t.desc.k, "n": t.desc.n,
                "m_start": t.m_tile.start, "n_start": t.n_tile.start, "k_start": t.k_seg.start,
                "a_addr": t.desc.a_addr, "b_addr": t.desc.b_addr, "c_addr": t.desc.c_addr,
                "amount": npu::regs::pc_amount(task::TASK_ENTRIES),
                "words": w, "entries": entries,
            }));
        }
        regcmd = regcmd.saturating_add((words.len() * 8).div_ceil(4096) as u32 * 4096);
    }
    Ok(json!({
        "type": ty.name(), "m": a.m, "k": a.k, "n": a.n, "m_padded": plan.m_pad,
        "experimental": ty.experimental(),
        "a_addr": a.a_addr, "b_addr": a.b_addr, "c_addr": a.c_addr,
        "tasks": out_tasks,
    }))
}

fn regs_cmd(a: RegsArgs) -> crate::Result<()> {
    let v = regs_json(&a)?;
    if a.json {
        println!("{v}");
        return Ok(());
    }
    let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
    println!(
        "{} M={} K={} N={}: {} task(s){}",
        a.ty,
        a.m,
        a.k,
        a.n,
        tasks.len(),
        if v["experimental"].as_bool() == Some(true) {
            " [experimental: no hardware-verified sequence]"
        } else {
            ""
        }
    );
    for (i, t) in tasks.iter().enumerate() {
        println!(
            "task {i}: core {} M={} K={} N={} A={:#x} B={:#x} C={:#x} at {:#x}",
            t["core"],
            t["m"],
            t["k"],
            t["n"],
            t["a_addr"].as_u64().unwrap_or(0),
            t["b_addr"].as_u64().unwrap_or(0),
            t["c_addr"].as_u64().unwrap_or(0),
            t["regcmd_addr"].as_u64().unwrap_or(0)
        );
        println!(
            "  {:>3}  {:<18} {:<8} {:<22} {:>6}  {:>10}",
            "#", "word", "block", "register", "offset", "value"
        );
        let words = t["words"].as_array().cloned().unwrap_or_default();
        let entries = t["entries"].as_array().cloned().unwrap_or_default();
        for (j, (w, e)) in words.iter().zip(&entries).enumerate() {
            println!(
                "  {:>3}  {:016x} {:<8} {:<22} {:#06x}  {:#10x}",
                j,
                w.as_u64().unwrap_or(0),
                e["block"].as_str().unwrap_or("?"),
                e["register"].as_str().unwrap_or("?"),
                e["offset"].as_u64().unwrap_or(0),
                e["value"].as_u64().unwrap_or(0)
            );
        }
    }
    Ok(())
}

fn top_cmd(a: TopArgs) -> crate::Result<()> {
    let path = a.file.unwrap_or_else(|| PathBuf::from(top::LOAD_FILE));
    loop {
        let load = top::read_load(&path)?;
        println!("{}", top::format_load(&load));
        if a.once {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(a.interval_ms.max(100)));
    }
}
