//! Plumbing that every veribench crate shares, kept once so that every caller gets the same
//! behaviour (and the same fixes):
//!
//! - [`retry`]: the one retry loop ([`retry::retry`]) and the one exponential backoff schedule
//!   ([`retry::Backoff`]), used by chain calls, artifact transfers, the prover-market client and
//!   the worker's reconnections;
//! - [`redact`]: the one URL redaction for logs, errors and printed configurations;
//! - [`fd_limit`]: raising the open-file limit of processes that hold a socket per worker;
//! - [`tls`]: installing the process's rustls crypto provider.
//!
//! It depends on no other veribench crate, so every one of them can reach it.

pub mod fd_limit;
pub mod redact;
pub mod retry;
pub mod tls;

pub use redact::redact_url;
pub use retry::{Backoff, RetryPolicy, Transient, retry};
