//! Number formats: GGML blocks bit-exact with ggml, and NPU requantization.
