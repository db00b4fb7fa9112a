//! Any bytes as a chat-completions request body (rkinfer::fuzz_support::server_chat_request).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rkinfer::fuzz_support::server_chat_request(data));
