//! The operations a parser answers with: the whole of the `OnData` contract.
//!
//! This module only names the operations and the errors a parser may report; applying them to
//! byte streams is the datapath's job, and must never be done here.

use std::fmt;

/// What a parser wants done with the input it was handed.
///
/// Input always starts at a frame boundary. After `Pass`, `Drop` and `Inject` the parser is called
/// again with the input that remains, even when none remains, so that it can inject at the end of
/// a frame; a parser with nothing to inject there says so while answering
/// ([`crate::Context::nothing_to_inject_at_end`]) and is then spared the call with no input.
/// `More`, `Nop`, `Error`, and a `Pass` or `Drop` longer than the input at hand end the call: the
/// parser is next called when new bytes arrive (or when that pass or drop has completed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Keep the unconsumed input; call again once at least this many more bytes have arrived.
    More(usize),
    /// Forward this many bytes. May exceed the input at hand: the rest of the frame is then
    /// forwarded as it streams in, without being buffered.
    Pass(usize),
    /// Discard this many bytes, with the same streaming rule as `Pass`.
    Drop(usize),
    /// Emit this many bytes from this direction's inject buffer, here in the stream.
    Inject(usize),
    /// The input violates the protocol: close the connection.
    Error(ParseError),
    /// Nothing more to do with this input; call again when more arrives. Unconsumed input is
    /// held: the parser is also called again once the other direction has moved, so that a
    /// request can wait for the reply that decides how to read it.
    Nop,
}

/// Why a parser gave up on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame's type or command is not one the protocol knows.
    InvalidFrameType,
    /// The frame's length is inconsistent or out of range.
    InvalidFrameLength,
    /// The frame is well formed but larger than the configured maximum.
    FrameTooLarge,
    /// The frame is malformed in some other way.
    MalformedFrame,
    /// The peer uses a protocol feature that this parser does not support.
    Unsupported,
    /// The connection would need more per-connection state than the parser allows.
    StateLimit,
}

impl ErrorCode {
    /// A stable, lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidFrameType => "invalid_frame_type",
            ErrorCode::InvalidFrameLength => "invalid_frame_length",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::StateLimit => "state_limit",
        }
    }
}

/// A protocol error: a code for machines and a reason for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// The class of error.
    pub code: ErrorCode,
    /// What was wrong with the input, in a few words.
    pub reason: &'static str,
}

impl ParseError {
    /// A protocol error with its reason.
    pub const fn new(code: ErrorCode, reason: &'static str) -> Self {
        ParseError { code, reason }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.reason)
    }
}

impl std::error::Error for ParseError {}
