//! Traces for viewers: what relay reads, written in the formats trace
//! viewers open. Each writer streams: it holds what is in flight, never
//! the trace.

pub mod chrome;

pub use chrome::ChromeTrace;
