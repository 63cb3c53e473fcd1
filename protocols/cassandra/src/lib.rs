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

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use axoneme_sdk::{CompiledRules, ConnectionMeta, L7RuleMap, Parser, Protocol, RuleError};

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

impl Protocol for Cassandra {
    fn name(&self) -> &'static str {
        "cassandra"
    }

    fn new_parser(&self, _meta: &ConnectionMeta) -> Box<dyn Parser> {
        Box::new(CassandraParser::new(self.max_frame))
    }

    fn compile_rules(&self, rules: &[L7RuleMap]) -> Result<CompiledRules, RuleError> {
        Ok(Arc::new(rules::compile(rules)?))
    }

    /// Traces `query_action=<action>` with `query_table=<keyspace.table>`.
    fn trace(
        &self,
        rules: &(dyn Any + Send + Sync),
        fields: &BTreeMap<String, String>,
    ) -> Result<bool, String> {
        let rules = rules
            .downcast_ref::<RuleSet>()
            .ok_or("not a cassandra rule set")?;
        if let Some(unknown) = fields
            .keys()
            .find(|k| !["query_action", "query_table"].contains(&k.as_str()))
        {
            return Err(format!(
                "unknown cassandra field {unknown:?} (expected query_action, query_table)"
            ));
        }
        let name = fields
            .get("query_action")
            .ok_or("cassandra requests need query_action")?;
        let action =
            Action::from_name(name).ok_or_else(|| format!("unknown query_action {name:?}"))?;
        let table = fields.get("query_table").map(String::as_str);
        Ok(rules.allows(action, table))
    }
}
