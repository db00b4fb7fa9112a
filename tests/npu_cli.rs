//! `rkinfer npu ...` end to end through the binary.

use std::process::Command;

fn rkinfer(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rkinfer"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn has_npu() -> bool {
    rkinfer::npu::open_hardware().is_ok()
}

#[test]
fn npu_info_says_why_there_is_no_device_in_one_line() {
    let (ok, out, _) = rkinfer(&["npu", "info"]);
    assert!(ok);
    if has_npu() {
        assert!(out.contains("driver:"), "{out}");
    } else {
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.starts_with("no NPU: "), "{out}");
    }
}

#[test]
fn npu_regs_json_matches_the_known_good_stream() {
    let (ok, out, err) = rkinfer(&[
        "npu", "regs", "--m", "4", "--k", "64", "--n", "32", "--type", "int8", "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/npu-regs-expected.json")).unwrap();
    let want: Vec<u64> = expected["cases"][0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["u64"].as_u64().unwrap())
        .collect();
    let got: Vec<u64> = v["tasks"][0]["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap())
        .collect();
    assert_eq!(got, want);

    let (ok, table, _) = rkinfer(&[
        "npu", "regs", "--m", "4", "--k", "32", "--n", "16", "--type", "fp16",
    ]);
    assert!(ok);
    assert!(
        table.contains("DATA_FORMAT") && table.contains("0xa8000002"),
        "{table}"
    );

    let (ok, _, err) = rkinfer(&[
        "npu", "regs", "--m", "4", "--k", "33", "--n", "16", "--type", "fp16",
    ]);
    assert!(!ok && err.contains("multiple of 32"), "{err}");
}

#[test]
fn npu_top_reads_a_fake_load_file() {
    let path = std::env::temp_dir().join(format!("rkinfer-npu-load-{}", std::process::id()));
    std::fs::write(&path, "NPU load:  Core0: 42%, Core1:  0%, Core2:  7%,\n").unwrap();
    let (ok, out, err) = rkinfer(&["npu", "top", "--once", "--file", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert!(ok, "{err}");
    assert!(
        out.contains("core0") && out.contains("42%") && out.contains("core2") && out.contains("7%"),
        "{out}"
    );
    let (ok, _, err) = rkinfer(&["npu", "top", "--once", "--file", "/nonexistent/load"]);
    assert!(!ok && err.contains("/nonexistent/load"), "{err}");
}

#[test]
fn npu_selftest_on_the_simulator_passes() {
    let (ok, out, err) = rkinfer(&["npu", "selftest", "--device", "npu-sim", "--cores", "0,1,2"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("[simulated]"), "{out}");
    assert!(out.contains("int4"), "{out}");
    let last = out.lines().last().unwrap();
    let (passed, total) = last
        .split_once(" passed")
        .unwrap()
        .0
        .split_once('/')
        .unwrap();
    assert_eq!(passed, total, "{out}");
}

#[test]
fn npu_regs_checks_its_arguments_before_allocating() {
    let start = std::time::Instant::now();
    let (ok, _, err) = rkinfer(&[
        "npu",
        "regs",
        "--m",
        "4294967295",
        "--k",
        "64",
        "--n",
        "32",
        "--type",
        "int8",
    ]);
    assert!(!ok && err.contains("split the matmul"), "{err}");
    assert!(start.elapsed().as_secs() < 20);
    let (ok, _, err) = rkinfer(&[
        "npu",
        "regs",
        "--m",
        "4",
        "--k",
        "64",
        "--n",
        "32",
        "--type",
        "int8",
        "--envelope",
        "wide",
    ]);
    assert!(!ok && err.contains("--envelope"), "{err}");
}

#[test]
fn npu_regs_into_a_closed_pipe_does_not_panic() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    for json in [false, true] {
        let mut args = vec![
            "npu", "regs", "--m", "8192", "--k", "1024", "--n", "4096", "--type", "int8",
        ];
        if json {
            args.push("--json");
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_rkinfer"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs");
        // Like `| head -c 10`: read a little, then close the pipe.
        let mut first = Vec::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_until(b' ', &mut first).unwrap();
        drop(out);
        let done = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&done.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_ne!(done.status.code(), Some(101), "{err}");
    }
}

#[test]
fn npu_selftest_json_is_a_bug_report() {
    let (ok, out, err) = rkinfer(&["npu", "selftest", "--device", "npu-sim", "--json"]);
    assert!(ok, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["environment"].is_object(), "{v}");
    assert!(v["environment"]["devfreq"].is_array());
    assert_eq!(v["device"]["driver"], "npu-sim");
    assert_eq!(v["device"]["simulated"], true);
    assert_eq!(v["options"]["envelope"], "tested");
    assert!(v["kernel_log"].is_array());
    let rungs = v["rungs"].as_array().unwrap();
    assert_eq!(v["passed"], v["total"]);
    assert_eq!(v["total"].as_u64().unwrap() as usize, rungs.len());
    // The known-good rungs submit exactly the hardware-tested words.
    for r in &rungs[..2] {
        assert!(r["known_good_hash"].is_u64(), "{r}");
        assert_eq!(r["words_hash"], r["known_good_hash"]);
    }
    // One rung per core alone.
    let per_core: Vec<u64> = rungs
        .iter()
        .filter_map(|r| r["case"]["core"].as_u64())
        .collect();
    assert_eq!(per_core, vec![0, 1, 2]);
    for r in rungs {
        let buffers = r["trace"]["buffers"].as_array().unwrap();
        assert!(buffers
            .iter()
            .all(|b| b["dma_addr"].is_u64() && b["bytes"].is_u64()));
        let jobs = r["trace"]["jobs"].as_array().unwrap();
        assert!(!jobs.is_empty(), "{r}");
        for j in jobs {
            assert!(j["words_hash"].is_u64() && j["wall_us"].is_u64());
            assert!(j["stats"]["tasks_done"].as_u64().unwrap() >= 1);
            // int4 tasks start with the capture's four leading writes.
            let entries = if r["case"]["ty"] == "int4" { 112 } else { 108 };
            assert_eq!(j["first_words"].as_array().unwrap().len(), entries);
            assert!(j["error"].is_null());
            // What was handed to the device, as the report shows it.
            let sub = &j["submit"];
            assert_eq!(sub["ioctl"], "npu-sim", "{j}");
            assert_eq!(sub["tasks_total"], j["tasks"]);
            assert_eq!(sub["submit"]["task_counter"], j["tasks"]);
            assert_eq!(sub["submit"]["core"], j["core"]);
            let first_task = &sub["tasks"][0];
            assert_eq!(first_task["regcmd_addr"], j["regcmd"]["dma_addr"]);
            assert!(first_task["body_entries"].as_u64().unwrap() >= 104);
        }
        let tiles = r["tiles"].as_array().unwrap();
        assert_eq!(tiles.len() as u64, r["tasks"].as_u64().unwrap());
        assert!(tiles.iter().all(|t| t["verdict"] == "ok"), "{r}");
        assert!(r["reruns"].as_array().unwrap().is_empty());
    }
}

/// `bench --device npu-sim` runs the simulator (not the CPU): the backend
/// column gives the share of matmul work each backend did, and the board
/// estimate sits beside the measured host speed; `--npu-min-batch` moves
/// the work back to the CPU.
#[test]
fn bench_on_npu_sim_uses_the_simulator() {
    let m = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        .display()
        .to_string();
    let args = [
        "bench",
        "-m",
        &m,
        "-p",
        "4",
        "-n",
        "1",
        "-r",
        "1",
        "-t",
        "1",
        "--device",
        "npu-sim",
        "--npu-quant",
        "w8a8",
    ];
    let (ok, out, err) = rkinfer(&args);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].contains("RK3588 t/s (estimate)"), "{out}");
    for line in &lines[2..] {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 8, "{line}");
        assert_eq!(cells[3], "npu-sim 100%", "{line}");
        let est: f64 = cells[7]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .expect("estimate");
        assert!(est > 0.0 && cells[7].contains("NPU 100%"), "{line}");
    }
    let mut cpu_args = args.to_vec();
    cpu_args.extend(["--npu-min-batch", "8", "-o", "json"]);
    let (ok, out, err) = rkinfer(&cpu_args);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    for r in v.as_array().expect("rows") {
        assert_eq!(r["backends"], "CPU 100%", "{r}");
        assert!(r["matmul_macs_by_backend"]["NPU"].is_null(), "{r}");
        assert!(r["board_estimate"]["ts"].as_f64().unwrap() > 0.0, "{r}");
    }
}
