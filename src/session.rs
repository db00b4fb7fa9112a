//! session (placeholder: being written).
