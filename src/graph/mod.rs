//! graph (placeholder: being written).
