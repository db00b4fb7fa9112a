//! The register command stream, independent of any driver: the u64 entry
//! encoding and register names ([`regs`]), the matmul task builder and its
//! chaining tails ([`task`]), and the native data layouts ([`layout`]).

pub mod layout;
pub mod regs;
pub mod task;
