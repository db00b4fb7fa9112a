//! `rkinfer npu selftest`: runs the library's ladder and prints its table.

use crate::npu::selftest::{self, CaseResult};
use crate::npu::{self, MatmulOptions, NpuDevice, NpuError};

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

pub fn selftest_cmd(a: SelftestArgs) -> crate::Result<()> {
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
    print!("{}", format_table(&results));
    if results.iter().all(|r| r.passed) {
        Ok(())
    } else {
        Err(NpuError::SubmitFailed {
            reason: "selftest failed (see the table)".into(),
        }
        .into())
    }
}

/// The pass/fail table.
pub fn format_table(results: &[CaseResult]) -> String {
    let mut s = format!(
        "{:<11} {:>5} {:>6} {:>5} {:>5}  {:<6} {:>11} {:>9} {:>9}  {}\n",
        "type", "M", "K", "N", "tasks", "result", "max |err|", "err/bound", "ms", "what"
    );
    for r in results {
        let c = r.case;
        let verdict = if r.error.is_some() {
            "ERROR"
        } else if r.passed {
            "pass"
        } else {
            "FAIL"
        };
        s += &format!(
            "{:<11} {:>5} {:>6} {:>5} {:>5}  {:<6} {:>11.3e} {:>9.3} {:>9.1}  {}\n",
            c.ty.name(),
            c.m,
            c.k,
            c.n,
            r.tasks,
            verdict,
            r.max_abs_err,
            r.worst_vs_bound,
            r.millis,
            c.what
        );
        if let Some(e) = &r.error {
            s += &format!("            error: {e}\n");
        }
    }
    let passed = results.iter().filter(|r| r.passed).count();
    s += &format!("{passed}/{} passed\n", results.len());
    s
}
