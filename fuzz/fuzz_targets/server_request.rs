//! Any bytes as a chat-completions request body (rkinfer::server::fuzz_chat_request).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rkinfer::server::fuzz_chat_request(data));
