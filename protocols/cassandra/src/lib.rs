//! Cassandra L7 policy for Axoneme, registered as `cassandra` (the name Cilium policies use).
//!
//! [`lexer`] splits CQL as Cassandra's grammar does (case-insensitive keywords, quoted
//! identifiers, string literals, comments), [`statement`] turns a query, or a text batch, into
//! the actions and tables that rules constrain, and [`rules`] compiles `query_action` and
//! `query_table` rules. [`frame`] reads the request frames policy inspects and composes error
//! frames, [`compression`] handles LZ4 and Snappy bodies, [`segment`] the v5 segments that carry
//! frames once STARTUP is answered, and [`parser`] applies them to a connection: protocol v3, v4
//! and v5.

pub mod compression;
pub mod frame;
pub mod lexer;
mod parser;
mod prepared;
pub mod rules;
pub mod segment;
pub mod statement;

use axoneme_sdk::{ConnectionMeta, L7RuleMap, Parser, RuleError, TraceFields, TypedProtocol};

pub use parser::{CassandraParser, MAX_PENDING_PREPARES, MAX_PREPARED};
pub use rules::RuleSet;
pub use statement::{classify, statements, Action, ClassifyError, Name, Statement, TableName};

/// The default limit on a frame's length (the protocol allows 256 MiB).
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// The most bytes a connection holds to read a frame of up to `max_frame` bytes whole: its
/// header, and in v5 the headers and CRCs of the segments it is split over. The datapath's
/// buffer limit must allow this much.
pub fn held_bytes(max_frame: usize) -> usize {
    let envelope = frame::HEADER_LEN + max_frame;
    let segments = envelope.div_ceil(segment::MAX_PAYLOAD);
    envelope + segments * (segment::Format::Lz4.header_len() + segment::TRAILER_LEN)
}

/// The Cassandra protocol.
#[derive(Debug, Clone, Copy)]
pub struct Cassandra {
    max_frame: usize,
}

impl Cassandra {
    /// Cassandra, refusing frames longer than `max_frame` bytes (the connection is closed).
    pub fn new(max_frame: usize) -> Self {
        Cassandra { max_frame }
    }
}

impl Default for Cassandra {
    fn default() -> Self {
        Cassandra::new(DEFAULT_MAX_FRAME)
    }
}

impl TypedProtocol for Cassandra {
    type Rules = RuleSet;
    const TRACE_FIELDS: &'static [&'static str] = &["query_action", "query_table"];

    fn name(&self) -> &'static str {
        "cassandra"
    }

    fn parser(&self, _meta: &ConnectionMeta) -> Box<dyn Parser> {
        Box::new(CassandraParser::new(self.max_frame))
    }

    fn compile(&self, rules: &[L7RuleMap]) -> Result<RuleSet, RuleError> {
        rules::compile(rules)
    }

    /// Traces `query_action=<action>` with `query_table=<keyspace.table>`.
    fn trace_request(&self, rules: &RuleSet, fields: &TraceFields<'_>) -> Result<bool, String> {
        let name = fields.require("query_action")?;
        let action =
            Action::from_name(name).ok_or_else(|| format!("unknown query_action {name:?}"))?;
        Ok(rules.allows(action, fields.get("query_table")))
    }
}
