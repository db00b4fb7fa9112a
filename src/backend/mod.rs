//! backend (placeholder: being written).
