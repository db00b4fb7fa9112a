//! Any bytes as an NPU weight-cache entry (rkinfer::fuzz_support::npu_cache_reader).
#![no_main]
use std::sync::OnceLock;
static KEY: OnceLock<rkinfer::npu::ops::cache::CacheKey> = OnceLock::new();
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let key = KEY.get_or_init(|| rkinfer::fuzz_support::npu_cache_entry().0);
    rkinfer::fuzz_support::npu_cache_reader(key, data);
});
