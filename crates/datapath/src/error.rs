//! Why the datapath closed a connection. Only the error types live here.

use axoneme_sdk::{Op, ParseError};

/// A parser broke the operation contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractViolation {
    /// An operation other than NOP asked for zero bytes.
    #[error("zero-length operation {0:?}")]
    ZeroLength(Op),
    /// INJECT asked for more bytes than the inject buffer holds.
    #[error("inject of {requested} bytes with only {available} in the inject buffer")]
    InjectTooLong {
        /// Bytes the operation asked to inject.
        requested: usize,
        /// Bytes waiting in the inject buffer.
        available: usize,
    },
    /// Bytes placed in the parsed flow's own inject buffer were not injected before the next
    /// operation.
    #[error("{0} bytes left behind in the inject buffer")]
    InjectLeftBehind(usize),
    /// The parser kept answering without consuming input.
    #[error("more than {0} operations in a row without consuming input")]
    NoProgress(usize),
}

/// Why a connection was closed by the datapath.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The parser reported a protocol error.
    #[error("protocol error: {0}")]
    Parse(ParseError),
    /// The parser panicked.
    #[error("parser panicked: {0}")]
    Panic(String),
    /// The parser broke the operation contract.
    #[error("parser contract violation: {0}")]
    Contract(#[from] ContractViolation),
    /// A frame would need more buffering than allowed.
    #[error("frame needs {needed} buffered bytes, more than the limit of {limit}")]
    BufferLimit {
        /// Bytes the parser asked to have buffered.
        needed: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The connection was closed by an earlier error.
    #[error("connection already closed")]
    Closed,
}
