//! model (placeholder: being written).
