//! npu (placeholder: being written).
