//! Any text as a chat template, rendered under small limits (rkinfer::fuzz_support::chat_template).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rkinfer::fuzz_support::chat_template(data));
