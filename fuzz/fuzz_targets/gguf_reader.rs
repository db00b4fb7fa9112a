//! Any bytes as a GGUF file (rkinfer::fuzz_support::gguf_reader).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rkinfer::fuzz_support::gguf_reader(data));
