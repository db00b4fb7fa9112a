//! How `rkinfer quantize` writes its output: through a uniquely named
//! temporary file in the output's directory, synced and renamed when
//! complete, removed on error and on SIGINT/SIGTERM. Two runs to one output
//! never mix their bytes, and a file named like the old fixed temporary
//! (`OUT.tmp`) is never touched.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A fresh directory for one test, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = common::temp_path(tag);
        std::fs::create_dir_all(&p).expect("mkdir");
        Dir(p)
    }
    /// Names of the files in the directory, sorted.
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn quantize(input: &Path, output: &Path, ty: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rkinfer"));
    c.arg("quantize")
        .args(["--allow-requantize", "-q", "-t", "1"])
        .args(extra)
        .arg(input)
        .arg(output)
        .arg(ty);
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn two_runs_to_one_output_never_corrupt_it() {
    let dir = Dir::new("quantize-race");
    let input = common::model_path("smollm2-q4_1");
    let expected = std::fs::read(common::model_path("smollm2-q8_0")).expect("reference");
    let out = dir.0.join("out.gguf");
    // Without --force exactly one run may write OUT; the other says it exists.
    let a = quantize(&input, &out, "Q8_0", &[]).output_async();
    let b = quantize(&input, &out, "Q8_0", &[]).output_async();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let ok = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 1, "a: {}\nb: {}", stderr(&a), stderr(&b));
    let failed = if a.status.success() { &b } else { &a };
    assert!(stderr(failed).contains("exists"), "{}", stderr(failed));
    assert!(std::fs::read(&out).unwrap() == expected, "output differs");
    assert_eq!(dir.names(), ["out.gguf"]);
    // With --force both succeed and the output is one of them, whole.
    let a = quantize(&input, &out, "Q8_0", &["--force"]).output_async();
    let b = quantize(&input, &out, "Q8_0", &["--force"]).output_async();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    assert!(std::fs::read(&out).unwrap() == expected, "output differs");
    assert_eq!(dir.names(), ["out.gguf"]);
}

#[test]
fn an_existing_out_tmp_is_left_alone() {
    let dir = Dir::new("quantize-tmp");
    let out = dir.0.join("out.gguf");
    let tmp = dir.0.join("out.gguf.tmp");
    std::fs::write(&tmp, b"somebody's file").unwrap();
    let o = quantize(&common::model_path("smollm2-q4_1"), &out, "Q8_0", &[])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&tmp).unwrap(), b"somebody's file");
    assert_eq!(dir.names(), ["out.gguf", "out.gguf.tmp"]);
}

/// Starts a long quantization, waits for its temporary file, sends `signal`.
fn interrupt_with(signal: &str) {
    let dir = Dir::new(&format!("quantize-{signal}"));
    let out = dir.0.join("out.gguf");
    let mut child: Child = quantize(&common::model_path("gemma3-q4_k_m"), &out, "F16", &[])
        .stderr(Stdio::piped())
        .spawn()
        .expect("rkinfer starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while dir.names().is_empty() {
        assert!(Instant::now() < deadline, "no temporary file appeared");
        assert!(child.try_wait().unwrap().is_none(), "finished too early");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success(), "{signal}: quantize reported success");
    assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
    assert_eq!(dir.names(), Vec::<String>::new(), "{signal}: files left");
}

#[test]
fn sigint_removes_the_temporary_file() {
    interrupt_with("INT");
}

#[test]
fn sigterm_removes_the_temporary_file() {
    interrupt_with("TERM");
}

/// `Command::output` on a spawned child, so that two runs overlap.
trait OutputAsync {
    fn output_async(&mut self) -> Child;
}

impl OutputAsync for Command {
    fn output_async(&mut self) -> Child {
        self.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rkinfer starts")
    }
}
