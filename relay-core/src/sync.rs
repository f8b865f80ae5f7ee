//! The atomics the protocol runs on, swapped for loom's under `cfg(loom)`.
//!
//! Every word of a channel is accessed through [`AtomicU64`], so the loom
//! models exercise exactly the code that runs in the kernel and in userspace.

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU64, Ordering};

#[cfg(not(loom))]
pub use core::sync::atomic::{fence, AtomicU64, Ordering};
