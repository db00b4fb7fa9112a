//! `rkinfer bench` on the command line: llama-bench's markdown table and
//! JSON fields on SmolLM2, sweeps, and clean errors on bad input. Speed is
//! never asserted (only that rates are positive and finite).

mod common;

use std::process::{Command, Output};

fn smollm2() -> String {
    common::model_path("smollm2-q4_1").display().to_string()
}

fn rkinfer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rkinfer"))
        .args(args)
        .output()
        .expect("rkinfer starts")
}

fn ok_stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "rkinfer bench failed: {:?}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("UTF-8 output")
}

fn cells(line: &str) -> Vec<String> {
    let t = line.trim();
    assert!(
        t.starts_with('|') && t.ends_with('|'),
        "not a table row: {t}"
    );
    t[1..t.len() - 1]
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

/// "123.45 ± 6.78" -> (123.45, 6.78)
fn rate(cell: &str) -> (f64, f64) {
    let (m, s) = cell
        .split_once(" ± ")
        .unwrap_or_else(|| panic!("t/s cell {cell:?} is not 'mean ± sd'"));
    (m.parse().expect("mean"), s.parse().expect("stddev"))
}

#[test]
fn markdown_table_has_llama_bench_shape() {
    let m = smollm2();
    let o = rkinfer(&[
        "bench", "-m", &m, "-p", "8", "-n", "4", "-r", "1", "-t", "1",
    ]);
    let out = ok_stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "header, separator, pp8, tg4:\n{out}");
    assert_eq!(
        cells(lines[0]),
        ["model", "size", "params", "backend", "threads", "test", "t/s"]
    );
    assert!(cells(lines[1])
        .iter()
        .all(|c| c.trim_matches(':').chars().all(|ch| ch == '-') && c.len() >= 3));
    for (line, test) in lines[2..].iter().zip(["pp8", "tg4"]) {
        let c = cells(line);
        assert_eq!(c.len(), 7, "{line}");
        assert!(
            c[0].starts_with("llama ") && c[0].ends_with("Q4_1"),
            "{line}"
        );
        assert!(c[1].ends_with(" MiB"), "{line}");
        assert_eq!(c[2], "134.52 M", "{line}");
        assert_eq!(c[3], "CPU");
        assert_eq!(c[4], "1");
        assert_eq!(c[5], test);
        let (mean, sd) = rate(&c[6]);
        assert!(mean.is_finite() && mean > 0.0, "{line}");
        assert_eq!(sd, 0.0, "one repetition has no spread: {line}");
    }
}

#[test]
fn json_has_the_same_fields_and_sweeps() {
    let m = smollm2();
    let o = rkinfer(&[
        "bench", "-m", &m, "-p", "8,4", "-n", "4", "-r", "2", "-t", "1", "-o", "json",
    ]);
    let out = ok_stdout(&o);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    let rows = v.as_array().expect("a JSON array");
    let tests: Vec<&str> = rows
        .iter()
        .map(|r| r["test"].as_str().expect("test"))
        .collect();
    assert_eq!(tests, ["pp8", "pp4", "tg4"]);
    for r in rows {
        assert!(r["model_filename"].as_str().unwrap().ends_with(".gguf"));
        assert!(r["model_type"].as_str().unwrap().starts_with("llama "));
        assert!(r["model_size"].as_u64().unwrap() > 50_000_000);
        assert_eq!(r["model_n_params"].as_u64(), Some(134_515_008));
        assert_eq!(r["backends"].as_str(), Some("CPU"));
        assert_eq!(r["n_threads"].as_u64(), Some(1));
        let samples = r["samples_ts"].as_array().expect("samples_ts");
        assert_eq!(samples.len(), 2);
        assert_eq!(r["samples_ns"].as_array().expect("samples_ns").len(), 2);
        let avg = r["avg_ts"].as_f64().expect("avg_ts");
        let mean: f64 = samples.iter().map(|s| s.as_f64().unwrap()).sum::<f64>() / 2.0;
        assert!(
            (avg - mean).abs() <= 1e-9 * mean,
            "avg_ts is the mean of samples_ts"
        );
        assert!(r["stddev_ts"].as_f64().expect("stddev_ts") >= 0.0);
        assert!(r["avg_ns"].as_u64().expect("avg_ns") > 0);
        let (p, n) = (
            r["n_prompt"].as_u64().unwrap(),
            r["n_gen"].as_u64().unwrap(),
        );
        let t = r["test"].as_str().unwrap();
        assert_eq!(
            t,
            if p > 0 {
                format!("pp{p}")
            } else {
                format!("tg{n}")
            }
        );
    }
}

#[test]
fn bad_arguments_fail_cleanly() {
    let m = smollm2();
    for (args, needle) in [
        (vec!["bench", "-m", &m, "-o", "csv"], "expected md or json"),
        (
            vec!["bench", "-m", &m, "-p", "0", "-n", "0"],
            "nothing to measure",
        ),
        (vec!["bench", "-m", &m, "-t", "0"], "-t 0"),
        (vec!["bench", "-m", &m, "-r", "0"], "-r 0"),
        (
            vec!["bench", "-m", &m, "--device", "gpu"],
            "expected cpu, npu or npu-sim",
        ),
        (
            vec![
                "bench",
                "-m",
                "/nonexistent/model.gguf",
                "-p",
                "4",
                "-n",
                "0",
            ],
            "/nonexistent/model.gguf",
        ),
    ] {
        let o = rkinfer(&args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert!(e.contains(needle), "{args:?}: {e}");
        assert!(!e.contains("panicked"), "{args:?}: {e}");
    }
}
