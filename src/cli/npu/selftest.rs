//! `rkinfer npu selftest`: runs the library's ladder and prints its table,
//! or the whole report as JSON (`--json`) for a bug report.

use std::path::Path;

use crate::npu::driver::discover::{self, RealSystem};
use crate::npu::selftest::{self, CaseResult, Report, Rerun};
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
    /// Task shapes: tested (what public projects ran on hardware) or
    /// fields (up to the register fields; untested).
    #[arg(long, default_value = "tested")]
    pub envelope: String,
    /// Print the whole report as JSON (save it for a bug report).
    #[arg(long)]
    pub json: bool,
}

pub fn selftest_cmd(a: SelftestArgs) -> crate::Result<()> {
    let envelope = super::parse_envelope(&a.envelope)?;
    let mut notes = Vec::new();
    let (dev, node, tried): (Box<dyn NpuDevice>, _, _) = match a.device.as_deref() {
        Some("npu") | None => match discover::open_hardware_on(&RealSystem) {
            Ok(o) => (o.device, Some(o.node), o.tried),
            Err(e) if a.device.is_some() => return Err(e.into()),
            Err(e) => {
                notes.push(format!(
                    "no NPU ({e}); running the selftest on the simulator (npu-sim) instead"
                ));
                (Box::new(npu::SimDevice::new()), None, Vec::new())
            }
        },
        Some(name) => (npu::open_device(name)?, None, Vec::new()),
    };
    let info = dev.info();
    notes.push(format!(
        "device: {} {} ({}){}",
        info.driver,
        info.version,
        info.node,
        if dev.is_simulated() {
            " [simulated]"
        } else {
            ""
        }
    ));
    let opts = MatmulOptions {
        cores: a.cores.clone(),
        timeout_ms: a.timeout_ms,
        allow_experimental: a.experimental_int4,
        envelope,
        ..Default::default()
    };
    let include_int4 = a.experimental_int4 || dev.is_simulated();
    let mut report = selftest::run_report(
        dev.as_ref(),
        tried,
        &opts,
        include_int4,
        Path::new("/"),
        |i, total, case| {
            eprint!(
                "\r[{}/{total}] {} {}x{}x{}   ",
                i + 1,
                case.ty.name(),
                case.m,
                case.k,
                case.n
            )
        },
    );
    eprintln!();
    if let Some(used) = node {
        rerun_on_other_node(&mut report, &used, &opts);
    }
    let text = if a.json {
        let mut v = serde_json::to_value(&report).map_err(|e| {
            crate::Error::InvalidArgument(format!("the report does not serialize: {e}"))
        })?;
        v["notes"] = serde_json::json!(notes);
        format!("{v}\n")
    } else {
        let results: Vec<CaseResult> = report.rungs.iter().map(|r| r.result.clone()).collect();
        format!("{}\n{}", notes.join("\n"), format_table(&results))
    };
    super::print_out(&text)?;
    if report.passed == report.total {
        Ok(())
    } else {
        Err(NpuError::SubmitFailed {
            reason: format!(
                "selftest failed: {} of {} rungs passed (see the report)",
                report.passed, report.total
            ),
        }
        .into())
    }
}

/// Reruns each failed rung through the other device node, if there is one.
fn rerun_on_other_node(report: &mut Report, used: &Path, opts: &MatmulOptions) {
    if report.passed == report.total {
        return;
    }
    let Some(other) = discover::open_other_node(&RealSystem, used) else {
        return;
    };
    for (i, rung) in report.rungs.iter_mut().enumerate() {
        if !rung.result.passed {
            rung.reruns.push(Rerun {
                change: "the other device node",
                result: selftest::run_case(
                    other.device.as_ref(),
                    rung.result.case,
                    opts,
                    i as u64 + 1,
                ),
            });
        }
    }
}

/// The pass/fail table.
/// The cores the rung's submits used: `0+1+2` for cores that ran together
/// in one submit, `0,1` for submits one after another.
fn core_use(r: &CaseResult) -> String {
    let mut masks: Vec<u32> = Vec::new();
    for j in &r.trace.jobs {
        if !masks.contains(&j.core_mask) {
            masks.push(j.core_mask);
        }
    }
    let together = |mask: u32| {
        (0..32)
            .filter(|c| mask & (1 << c) != 0)
            .map(|c: u32| c.to_string())
            .collect::<Vec<_>>()
            .join("+")
    };
    let s: Vec<String> = masks.into_iter().map(together).collect();
    if s.is_empty() {
        "-".into()
    } else {
        s.join(",")
    }
}

pub fn format_table(results: &[CaseResult]) -> String {
    let mut s = format!(
        "{:<11} {:>5} {:>6} {:>5} {:>5} {:<7}  {:<6} {:>11} {:>9} {:>9}  {}\n",
        "type", "M", "K", "N", "tasks", "cores", "result", "max |err|", "err/bound", "ms", "what"
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
            "{:<11} {:>5} {:>6} {:>5} {:>5} {:<7}  {:<6} {:>11.3e} {:>9.3} {:>9.1}  {}\n",
            c.ty.name(),
            c.m,
            c.k,
            c.n,
            r.tasks,
            core_use(r),
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
