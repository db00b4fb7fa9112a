//! `rkinfer run` as llama.cpp's users drive it: `-n` and `--truncate`,
//! Ctrl-C in a chat, `-r`, `-i`, `--color`, `--keep`, the llama.cpp flags
//! `-fa`, `-ngl`, `--cpu-mask`, and `--npu-cache` directories.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn smollm2() -> PathBuf {
    common::models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn rkinfer(args: &[&str]) -> Output {
    rkinfer_with_input(args, b"")
}

fn rkinfer_with_input(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rkinfer"))
        .arg("run")
        .arg("-m")
        .arg(smollm2())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rkinfer starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("rkinfer ends")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(o: &Output) -> (String, String) {
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "status {:?}; stderr:\n{err}", o.status);
    assert!(!err.contains("panicked"), "{err}");
    (out, err)
}

fn fails_with(o: &Output, needles: &[&str]) {
    let e = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr:\n{e}");
    assert!(!e.contains("panicked"), "{e}");
    for n in needles {
        assert!(e.contains(n), "stderr lacks {n:?}:\n{e}");
    }
}

fn json(o: &Output) -> serde_json::Value {
    let (out, _) = ok(o);
    serde_json::from_str(&out).expect("one JSON object")
}

#[test]
fn truncate_echoes_the_kept_part_and_refuses_a_context_of_one() {
    let long = format!("first {}", "word ".repeat(100));
    let o = rkinfer(&[
        "-c",
        "32",
        "-p",
        &long,
        "--truncate",
        "-n",
        "2",
        "--temp",
        "0",
    ]);
    let (out, err) = ok(&o);
    assert!(err.contains("truncated to its last 16"), "{err}");
    assert!(
        !out.contains("first"),
        "the dropped head is echoed: {out:?}"
    );
    assert!(out.len() < 16 * 6 + 40, "{out:?}");
    assert!(out.contains("word word"), "{out:?}");

    let o = rkinfer(&["-c", "1", "-p", "Hello there", "--truncate"]);
    fails_with(&o, &["-c 1 is too small", "raise -c"]);
    assert!(!text(&o.stderr).contains("nothing to continue"));
}

#[test]
fn n_predict_follows_llama_cpp() {
    // -1 (and any negative count): until the end of generation or a full
    // context.
    for n in ["-1", "-2"] {
        let v = json(&rkinfer(&[
            "-c",
            "24",
            "-p",
            "1, 2, 3, 4, 5, 6,",
            "-n",
            n,
            "--temp",
            "0",
            "--json",
        ]));
        let generated = v["generated_ids"].as_array().unwrap().len();
        let prompt = v["prompt_ids"].as_array().unwrap().len();
        assert_eq!(v["stop"], "context_full", "{v}");
        assert_eq!(prompt + generated, 24, "{v}");
    }
    // 0: nothing, with -p ...
    let v = json(&rkinfer(&["-p", "Hello", "-n", "0", "--json"]));
    assert_eq!(v["generated_ids"].as_array().unwrap().len(), 0);
    // ... and in a chat: the message is taken, nothing is generated.
    let o = rkinfer_with_input(&["-cnv", "-n", "0", "--temp", "0"], b"Hi\nHow are you?\n");
    let (out, err) = ok(&o);
    assert!(out.trim().is_empty(), "-n 0 generated {out:?}");
    assert!(err.contains("rkinfer_perf"), "{err}");
}

#[test]
fn reverse_prompt_stops_and_is_shown() {
    let o = rkinfer(&[
        "-p",
        "1, 2, 3, 4, 5,",
        "-r",
        " 8",
        "-n",
        "40",
        "--temp",
        "0",
    ]);
    let (out, _) = ok(&o);
    assert!(out.trim_end().ends_with(" 8"), "{out:?}");
    assert!(!out.contains(" 9"), "{out:?}");
}

#[test]
fn interactive_mode_appends_lines_and_shifts_the_context() {
    let o = rkinfer_with_input(
        &["-i", "-p", "1, 2, 3,", "-r", ",", "-n", "8", "--temp", "0"],
        b"10, 11,\n",
    );
    let (out, err) = ok(&o);
    assert!(out.starts_with("1, 2, 3, 4,"), "{out:?}");
    assert!(err.contains("controls:") && err.contains("Ctrl-C"), "{err}");
    assert_eq!(err.matches("\n> ").count(), 2, "{err}");
    assert!(err.contains("rkinfer_perf"), "{err}");

    // 80 tokens in a context of 40: the context shifts (keeping the first
    // 4 tokens) instead of stopping.
    let o = rkinfer_with_input(
        &[
            "-i",
            "-c",
            "40",
            "--keep",
            "4",
            "-p",
            "1, 2, 3, 4, 5,",
            "-n",
            "80",
            "--temp",
            "0",
        ],
        b"",
    );
    let (_, err) = ok(&o);
    // All 80 sampled; the tokens kept after each shift are evaluated again
    // (counted as prompt tokens).
    assert!(err.contains("/    80 tokens"), "{err}");
}

#[test]
fn color_marks_the_prompt() {
    for flag in [
        &["--color"][..],
        &["--color", "on"],
        &["--color=on"],
        &["-co", "on"],
    ] {
        let mut args = flag.to_vec();
        args.extend(["-p", "Hello", "-n", "1", "--temp", "0"]);
        let (out, _) = ok(&rkinfer(&args));
        assert!(out.starts_with("\x1b[33mHello\x1b[0m"), "{flag:?}: {out:?}");
    }
    let (out, _) = ok(&rkinfer(&["-p", "Hello", "-n", "1", "--color=off"]));
    assert!(out.starts_with("Hello"), "{out:?}");
    fails_with(
        &rkinfer(&["-p", "Hello", "-n", "1", "--color=purple"]),
        &["--color", "on, off or auto"],
    );
}

#[test]
fn llama_cpp_flags_are_taken() {
    let o = rkinfer(&[
        "-fa",
        "-ngl",
        "99",
        "--cpu-mask",
        "0x1",
        "-p",
        "The capital of France is",
        "-n",
        "2",
        "--temp",
        "0",
    ]);
    let (out, err) = ok(&o);
    assert!(out.starts_with("The capital of France is Paris"), "{out}");
    assert_eq!(
        err.matches("-ngl 99: ignored on --device cpu").count(),
        1,
        "{err}"
    );
    for fa in [
        &["-fa", "off"][..],
        &["--flash-attn=auto"],
        &["--flash-attn", "on"],
    ] {
        let mut args = fa.to_vec();
        args.extend(["-p", "Hi", "-n", "1", "--temp", "0"]);
        ok(&rkinfer(&args));
    }
    let o = rkinfer(&["--cpus", "0", "--cpu-mask", "0x1", "-p", "Hi"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("cannot be used with '--cpu-mask"));
    fails_with(
        &rkinfer(&["--cpu-mask", "0xZ", "-p", "Hi"]),
        &["--cpu-mask", "hex"],
    );
}

/// `-ngl N` on the NPU: only blocks 0..N go to it.
#[test]
fn ngl_offloads_the_first_layers() {
    let graph = |ngl: &str| {
        let (out, _) = ok(&rkinfer(&[
            "--device",
            "npu-sim",
            "--npu-quant",
            "w16a16",
            "-ngl",
            ngl,
            "--dump-graph",
            "-p",
            "Hi",
        ]));
        out
    };
    let on_npu = |g: &str, name: &str| {
        g.lines()
            .any(|l| l.contains(name) && l.contains("MUL_MAT") && l.contains("NPU"))
    };
    let g = graph("1");
    assert!(on_npu(&g, "blk.0."), "{g}");
    assert!(!on_npu(&g, "blk.1."), "{g}");
    let g = graph("0");
    assert!(!g.contains("NPU"), "{g}");
}

#[test]
fn npu_cache_directories_are_not_created_silently() {
    let base = common::temp_path("npu-cache-dirs");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let missing = base.join("missing/cache");
    let args = |dir: &PathBuf| {
        vec![
            "--device".to_string(),
            "npu-sim".into(),
            "--npu-quant".into(),
            "w16a16".into(),
            "--npu-cache".into(),
            dir.display().to_string(),
            "--dump-graph".into(),
            "-p".into(),
            "Hi".into(),
        ]
    };
    let a = args(&missing);
    fails_with(
        &rkinfer(&strs(&a)),
        &["no such directory", "--npu-cache-create"],
    );
    assert!(!base.join("missing").exists());

    let mut a = args(&missing);
    a.push("--npu-cache-create".into());
    ok(&rkinfer(&strs(&a)));
    assert!(std::fs::read_dir(&missing).unwrap().count() > 0);

    let file = base.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let (_, err) = ok(&rkinfer(&strs(&args(&file))));
    assert_eq!(err.matches("warning").count(), 1, "{err}");
    assert!(err.contains("not a directory"), "{err}");
    let _ = std::fs::remove_dir_all(&base);
}

/// Reads a pipe on a thread, sending what arrives.
fn pipe_reader(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects from `rx` into `acc` until `done(acc)` (panics after a minute
/// without it, with what came).
fn wait_for(rx: &mpsc::Receiver<Vec<u8>>, acc: &mut Vec<u8>, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(&text(acc)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(bytes) => acc.extend(bytes),
            Err(_) => panic!("timed out; so far:\n{}", text(acc)),
        }
    }
}

fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Ctrl-C during a reply stops it and the prompt comes back; Ctrl-C at the
/// prompt ends the chat with the timings.
#[test]
fn ctrl_c_stops_a_reply_then_exits_at_the_prompt() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rkinfer"))
        .arg("run")
        .arg("-m")
        .arg(smollm2())
        .args(["-cnv", "--temp", "0", "-c", "2048"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rkinfer starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let out_rx = pipe_reader(child.stdout.take().expect("stdout"));
    let err_rx = pipe_reader(child.stderr.take().expect("stderr"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    wait_for(&err_rx, &mut err, |e| e.contains("\n> "));
    assert!(text(&err).contains("controls:"), "{}", text(&err));
    stdin
        .write_all(b"Write a very long story about a dragon who lives in a castle.\n")
        .unwrap();
    stdin.flush().unwrap();
    wait_for(&out_rx, &mut out, |o| o.len() >= 16);
    interrupt(&child);
    wait_for(&err_rx, &mut err, |e| e.matches("\n> ").count() == 2);
    let e = text(&err);
    assert!(e.contains("(interrupted"), "{e}");
    assert!(!e.contains("rkinfer_perf"), "{e}");
    assert!(child.try_wait().unwrap().is_none(), "the chat goes on");

    interrupt(&child);
    let status = child.wait().expect("rkinfer ends");
    drop(stdin);
    wait_for(&err_rx, &mut err, |e| e.contains("total time"));
    assert_eq!(status.code(), Some(130), "{}", text(&err));
}
