//! The agent's access log: the log shared with the Envoy filter (`axoneme_access_log`), its
//! formatter, queue and writer thread, under the names the agent's modules use.

pub use axoneme_access_log::writer::{
    Counts, JsonAccessLog, Limits, DEFAULT_MAX_FIELD_BYTES, DEFAULT_QUEUE_BYTES,
};
pub use axoneme_access_log::{format_entry, LogFormat};
