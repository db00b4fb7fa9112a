//! Any text through both tokenizer families (rkinfer::fuzz_support::tokenizers).
#![no_main]
use std::sync::OnceLock;
static VOCABS: OnceLock<Vec<rkinfer::tokenizer::Tokenizer>> = OnceLock::new();
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let vocabs = VOCABS.get_or_init(rkinfer::fuzz_support::vocabularies);
    rkinfer::fuzz_support::tokenizers(vocabs, data);
});
