//! sampler (placeholder: being written).
