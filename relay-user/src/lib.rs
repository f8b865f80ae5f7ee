pub use relay_core;
