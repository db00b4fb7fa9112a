//! Detects a compiler new enough (1.89+) for the AVX-512 target features,
//! so the AVX512-VNNI kernel table can be compiled with all 32 vector
//! registers and EVEX encodings. Older compilers (the crate's 1.63 floor)
//! build the same table with AVX2 code generation only.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // RKINFER_NO_AVX512=1 builds what an older compiler would (to compare).
    println!("cargo:rerun-if-env-changed=RKINFER_NO_AVX512");
    // Declared either way, so that builds without it lint clean too.
    println!("cargo:rustc-check-cfg=cfg(rkinfer_avx512)");
    if env::var_os("RKINFER_NO_AVX512").is_some_and(|v| v != "0") {
        return;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .and_then(|v| v.split('.').nth(1).and_then(|m| m.parse::<u32>().ok()));
    if minor.is_some_and(|m| m >= 89) {
        println!("cargo:rustc-cfg=rkinfer_avx512");
    }
}
