//! CPU backend.
pub mod int8;
