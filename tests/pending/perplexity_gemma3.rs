// Belongs in tests/perplexity.rs (it uses that file's helpers); moved here
// while it fails. See README.md beside this file.

#[test]
fn perplexity_gemma3_q4_k_m_tracks_llama_cpp() {
    check_against_llama_cpp("gemma3-q4_k_m");
}
