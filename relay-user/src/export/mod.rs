//! Traces for viewers: what relay reads, written in the formats trace
//! viewers open. Each writer streams: it holds what is in flight, never
//! the trace.

pub mod chrome;
pub mod ctf;

pub use chrome::ChromeTrace;
pub use ctf::{ClockInfo, CtfTrace};
