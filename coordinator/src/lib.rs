//! The veribench coordinator: accepts workers over WebSocket, challenges every device of a miner
//! at once, times commitments with its own clock, samples and verifies openings, and persists
//! every step (SQLite by default, PostgreSQL in production).
//!
//! [`server::start`] wires the parts: [`store`] (persistence), [`service`] (the state machine),
//! [`session`] (one connection), [`http`] (API and metrics), [`epoch`] (metagraph, scores and
//! weights on chain), [`consensus`] (agreeing on them with the other validators), [`scoring`] (the pure score and weight math), [`leases`] (authenticated
//! lease reports), [`config`]. [`cli`] is the command line of `veribench-coordinator` (and of
//! `veribench coordinator`).

pub mod admission;
pub mod announce;
#[cfg(test)]
mod browser;
pub mod cli;
pub mod config;
pub mod consensus;
pub mod detail;
pub mod epoch;
pub mod failure;
pub mod http;
pub mod leases;
pub mod market;
pub mod metrics;
pub mod ratelimit;
pub mod refusal_kind;
pub mod refusals;
pub mod scoring;
pub mod server;
pub mod service;
pub mod session;
pub mod status;
pub mod store;
pub mod timing;

pub use config::CoordinatorConfig;
pub use server::{Running, ServeError, start};
pub use service::Coordinator;
