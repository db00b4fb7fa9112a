//! perplexity (placeholder: being written).
