//! Writes the tiny random-weight fixtures of every architecture (see
//! `tests/support/tiny_models.rs`) for `scripts/record-arch-references.py`:
//!
//! `cargo run --release --example tiny_models -- OUT_DIR [TOKENIZER_GGUF]`
//!
//! Prints one line per file: `name type sha256 path`.

#[path = "../tests/support/tiny_models.rs"]
mod tiny_models;

use std::path::PathBuf;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .ok_or("usage: tiny_models OUT_DIR [TOKENIZER_GGUF]")?,
    );
    let src = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let tok = gguf::GgufFile::open(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    for spec in &tiny_models::TINY_SPECS {
        for ty in tiny_models::TINY_TYPES {
            let path = tiny_models::make_tiny_model(spec, ty, &tok, &out)?;
            let sha = tiny_models::sha256_hex(&path)?;
            println!("{} {ty} {sha} {}", spec.name, path.display());
        }
    }
    Ok(())
}
