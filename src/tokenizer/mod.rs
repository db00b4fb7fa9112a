//! tokenizer (placeholder: being written).
