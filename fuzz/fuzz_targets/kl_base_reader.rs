//! Any bytes as a KL-divergence base file (rkinfer::fuzz_support::kl_base_reader).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rkinfer::fuzz_support::kl_base_reader(data));
