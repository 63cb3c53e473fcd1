//! The Axoneme datapath engine: applies a parser's operations to the two byte streams of a
//! connection, as Cilium's Envoy network filter did, without doing any I/O itself.
//!
//! Per flow it keeps pass and drop countdowns across reads, buffers only what MORE asked for,
//! emits injected bytes at frame boundaries (the other flow's promptly), checks the operation
//! contract, and turns a parser panic into a logged close of that one connection.

mod connection;
mod error;

pub use connection::{Connection, Env, Limits, Output, MAX_OPS_WITHOUT_PROGRESS};
pub use error::{ConnectionError, ContractViolation};
