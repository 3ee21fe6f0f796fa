//! The veribench worker: computes challenges on this machine's devices.
//!
//! Today it offers `bench`, which runs one challenge end to end on a backend and checks it with
//! the protocol's own verifier; the daemon that serves a coordinator builds on the same parts.

pub mod bench;
pub mod daemon;
pub mod select;
