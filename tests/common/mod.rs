//! Shared helpers of the end-to-end tests: where the real models, the
//! corpus and llama.cpp's reference outputs are, and the derived models
//! (made on demand with `rkinfer::quantize`).
//!
//! Missing fetched files make tests fail, never skip: run
//! `scripts/fetch-models.sh` first.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rkinfer::quantize::{quantize_model, FileType, QuantizeOptions};

/// The repository root.
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `$RKINFER_MODELS`, or `<repo>/models`.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("RKINFER_MODELS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => repo_dir().join("models"),
    }
}

/// llama.cpp's reference outputs: `$RKINFER_REFERENCE`, or the copy in
/// the repository, `<repo>/tests/data/llamacpp` (see its README.md).
pub fn reference_dir() -> PathBuf {
    match std::env::var_os("RKINFER_REFERENCE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => repo_dir().join("tests/data/llamacpp"),
    }
}

fn require_fetched(path: PathBuf) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-models.sh (or set RKINFER_MODELS)",
        path.display()
    );
    path
}

/// The fetched models: (short name, file name).
const FETCHED: [(&str, &str); 2] = [
    ("smollm2-q4_1", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("gemma3-q4_k_m", "gemma-3-270m-q4_k_m.gguf"),
];

/// The derived models: (short name, source short name, file type, file
/// name as llama-quantize's output is called in model-files.json).
const DERIVED: [(&str, &str, FileType, &str); 6] = [
    (
        "smollm2-q4_0",
        "smollm2-q4_1",
        FileType::Q4_0,
        "SmolLM2-135M-Instruct.Q4_0.gguf",
    ),
    (
        "smollm2-q8_0",
        "smollm2-q4_1",
        FileType::Q8_0,
        "SmolLM2-135M-Instruct.Q8_0.gguf",
    ),
    (
        "smollm2-f16",
        "smollm2-q4_1",
        FileType::F16,
        "SmolLM2-135M-Instruct.F16.gguf",
    ),
    (
        "gemma3-q4_0",
        "gemma3-q4_k_m",
        FileType::Q4_0,
        "gemma-3-270m.Q4_0.gguf",
    ),
    (
        "gemma3-q8_0",
        "gemma3-q4_k_m",
        FileType::Q8_0,
        "gemma-3-270m.Q8_0.gguf",
    ),
    (
        "gemma3-f16",
        "gemma3-q4_k_m",
        FileType::F16,
        "gemma-3-270m.F16.gguf",
    ),
];

/// Every model name [`model_path`] knows.
pub const MODEL_NAMES: [&str; 8] = [
    "smollm2-q4_1",
    "gemma3-q4_k_m",
    "smollm2-q4_0",
    "smollm2-q8_0",
    "smollm2-f16",
    "gemma3-q4_0",
    "gemma3-q8_0",
    "gemma3-f16",
];

/// The file name of a model, as the keys of model-files.json name it.
pub fn model_file_name(name: &str) -> &'static str {
    if let Some((_, file)) = FETCHED.iter().find(|(n, _)| *n == name) {
        return file;
    }
    if let Some((_, _, _, file)) = DERIVED.iter().find(|(n, ..)| *n == name) {
        return file;
    }
    panic!("unknown model {name:?}; known: {MODEL_NAMES:?}")
}

/// Path of a test model by short name: "smollm2-q4_1" and "gemma3-q4_k_m"
/// are the fetched files; "smollm2-{q4_0,q8_0,f16}" and
/// "gemma3-{q4_0,q8_0,f16}" are derived from them with
/// `quantize --allow-requantize` on first use, under `models/derived/`.
/// Safe when several test processes ask at once (each writes a unique
/// temporary file and renames it into place).
pub fn model_path(name: &str) -> PathBuf {
    if let Some((_, file)) = FETCHED.iter().find(|(n, _)| *n == name) {
        return require_fetched(models_dir().join(file));
    }
    let Some(&(_, source, file_type, file)) = DERIVED.iter().find(|(n, ..)| *n == name) else {
        panic!("unknown model {name:?}; known: {MODEL_NAMES:?}");
    };
    let dir = models_dir().join("derived");
    let path = dir.join(file);
    if path.is_file() {
        return path;
    }
    let input = model_path(source);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let unique = dir.join(format!(
        "{file}.{}.{}.part",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let mut opts = QuantizeOptions::new(file_type);
    opts.allow_requantize = true;
    opts.force = true;
    opts.progress = false;
    quantize_model(&input, &unique, &opts)
        .unwrap_or_else(|e| panic!("deriving {name} from {}: {e}", input.display()));
    std::fs::rename(&unique, &path)
        .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", unique.display(), path.display()));
    path
}

/// The perplexity corpus fetched next to the models.
pub fn corpus_path() -> PathBuf {
    require_fetched(models_dir().join("corpus.txt"))
}

/// A llama.cpp reference file, `<reference dir>/<name>.json`, parsed
/// (`name` is e.g. "greedy", "tokenize", "perplexity", "model-files").
pub fn reference(name: &str) -> serde_json::Value {
    let path = reference_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set RKINFER_REFERENCE to the llamacpp reference directory)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A path under the system temp dir unique to this process and call.
pub fn temp_path(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "rkinfer-test-{}-{}-{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// True if `path` exists (helper for bad-input tests).
pub fn exists(path: &Path) -> bool {
    path.exists()
}
