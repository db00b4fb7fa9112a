//! `rkinfer npu info|selftest|regs|top`: the NPU from the command line.

use clap::Subcommand;

use crate::npu::{self, NpuError};

mod regs;
mod selftest;
mod top;

pub use regs::{regs_json, regs_json_with, RegsArgs, RegsCommand};
pub use selftest::SelftestArgs;
pub use top::TopArgs;

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
    Regs(RegsCommand),
    /// Per-core NPU load (like ntop.sh).
    Top(TopArgs),
}

pub fn run(args: Args) -> crate::Result<()> {
    match args.command {
        NpuCommand::Info => info(),
        NpuCommand::Selftest(a) => selftest::selftest_cmd(a),
        NpuCommand::Regs(a) => regs::regs_cmd(a),
        NpuCommand::Top(a) => top::top_cmd(a),
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
                "address space: {} MiB (32-bit device addresses) x {} IOMMU domain(s)",
                i.address_space >> 20,
                i.iommu_domains.max(1)
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

/// Writes `text` to stdout; a reader that closed the pipe (`| head`) ends
/// the output quietly instead of a panic.
fn print_out(text: &str) -> crate::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(crate::Error::Io {
            path: "standard output".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The `--envelope` flag's value.
fn parse_envelope(name: &str) -> crate::Result<npu::Envelope> {
    npu::Envelope::from_name(name).ok_or_else(|| {
        crate::Error::InvalidArgument(format!("--envelope {name:?}: expected tested or fields"))
    })
}
