//! `rkinfer npu regs`: the register command stream of a matmul, decoded.

use std::fmt::Write as _;

use serde_json::json;

use crate::npu::command::{regs::RegWrite, task};
use crate::npu::ops::matmul;
use crate::npu::{self, Envelope, MatmulOptions, MatmulType, NpuError};

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

/// `npu regs`: the matmul's arguments and the tiling envelope.
#[derive(clap::Args, Debug)]
pub struct RegsCommand {
    #[command(flatten)]
    pub args: RegsArgs,
    /// Task shapes: tested (what public projects ran on hardware) or
    /// fields (up to the register fields; untested).
    #[arg(long, default_value = "tested")]
    pub envelope: String,
}

/// Most tasks `npu regs` prints (each is 108 entries).
pub const MAX_PRINTED_TASKS: usize = 1024;

/// The register streams of a matmul plan in the tested envelope, as JSON.
pub fn regs_json(a: &RegsArgs) -> Result<serde_json::Value, NpuError> {
    regs_json_with(a, Envelope::Tested)
}

/// The register streams of a matmul plan, as JSON.
pub fn regs_json_with(a: &RegsArgs, envelope: Envelope) -> Result<serde_json::Value, NpuError> {
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
        envelope,
        ..Default::default()
    };
    let plan = matmul::plan(ty, a.m, a.k, a.n, &opts)?;
    if plan.tasks() > MAX_PRINTED_TASKS {
        return Err(NpuError::InvalidShape(format!(
            "M={} K={} N={} takes {} tasks; npu regs prints at most {MAX_PRINTED_TASKS}",
            a.m,
            a.k,
            a.n,
            plan.tasks()
        )));
    }
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
                "amount": npu::command::regs::pc_amount(task::TASK_ENTRIES),
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

pub fn regs_cmd(c: RegsCommand) -> crate::Result<()> {
    let envelope = Envelope::from_name(&c.envelope).ok_or_else(|| {
        crate::Error::InvalidArgument(format!(
            "--envelope {:?}: expected tested or fields",
            c.envelope
        ))
    })?;
    let a = c.args;
    let v = regs_json_with(&a, envelope)?;
    let text = if a.json {
        format!("{v}\n")
    } else {
        table(&a, &v).map_err(|_| {
            crate::Error::InvalidArgument("formatting the register table failed".into())
        })?
    };
    super::print_out(&text)
}

/// The decoded streams as a text table.
fn table(a: &RegsArgs, v: &serde_json::Value) -> Result<String, std::fmt::Error> {
    let mut s = String::new();
    let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
    writeln!(
        s,
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
    )?;
    for (i, t) in tasks.iter().enumerate() {
        writeln!(
            s,
            "task {i}: core {} M={} K={} N={} A={:#x} B={:#x} C={:#x} at {:#x}",
            t["core"],
            t["m"],
            t["k"],
            t["n"],
            t["a_addr"].as_u64().unwrap_or(0),
            t["b_addr"].as_u64().unwrap_or(0),
            t["c_addr"].as_u64().unwrap_or(0),
            t["regcmd_addr"].as_u64().unwrap_or(0)
        )?;
        writeln!(
            s,
            "  {:>3}  {:<18} {:<8} {:<22} {:>6}  {:>10}",
            "#", "word", "block", "register", "offset", "value"
        )?;
        let words = t["words"].as_array().cloned().unwrap_or_default();
        let entries = t["entries"].as_array().cloned().unwrap_or_default();
        for (j, (w, e)) in words.iter().zip(&entries).enumerate() {
            writeln!(
                s,
                "  {:>3}  {:016x} {:<8} {:<22} {:#06x}  {:#10x}",
                j,
                w.as_u64().unwrap_or(0),
                e["block"].as_str().unwrap_or("?"),
                e["register"].as_str().unwrap_or("?"),
                e["offset"].as_u64().unwrap_or(0),
                e["value"].as_u64().unwrap_or(0)
            )?;
        }
    }
    Ok(s)
}
