//! What can be wrong with a Kafka request, as one typed error.
//!
//! Every reading function of this crate reports through [`Error`]; turning an error into a
//! closed connection and a log entry is the parser's business, not this module's.

use crate::wire::WireError;

/// Why a request cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The 4-byte length is negative.
    #[error("negative frame length {0}")]
    NegativeLength(i32),
    /// The frame is longer than the configured maximum.
    #[error("frame of {length} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The frame's length, without its 4-byte length field.
        length: usize,
        /// The maximum.
        max: usize,
    },
    /// No API has this key.
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    /// The API exists but this version is not one a Kafka 4.x broker accepts.
    #[error("{api} v{version} is not a version a Kafka 4.x broker accepts")]
    UnsupportedVersion {
        /// Kafka's name of the API.
        api: &'static str,
        /// The version asked for.
        version: i16,
    },
    /// The header or body does not follow the message definition.
    #[error(transparent)]
    Wire(#[from] WireError),
}
