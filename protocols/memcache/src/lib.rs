//! Memcached L7 policy for Axoneme, registered as `memcache` (the name Cilium policies use).
//!
//! Every protocol modern clients speak: the classic text commands, the meta commands (`mg`,
//! `ms`, `md`, `ma`, `mn`, `me`, base64 keys, opaque and quiet flags) and the binary protocol
//! (every opcode, quiet variants included), told apart by a connection's first byte. Rules name
//! a `command` (Cilium's command and group names) and optionally one of `keyExact`,
//! `keyPrefix`, `keyRegex`; every key of a request must match. A denied request is dropped and
//! answered with `CLIENT_ERROR access denied` (text, meta) or a status 0x0008 response with the
//! request's opcode and opaque (binary), in order with the replies to other requests. `mn`,
//! NOOP, `quit`, QUIT and QUITQ control the connection and are never denied.

mod base64;
pub mod binary;
pub mod command;
mod parser;
pub mod pending;
pub mod rules;
pub mod text;

use axoneme_sdk::{ConnectionMeta, L7RuleMap, Parser, RuleError, TraceFields, TypedProtocol};

pub use command::{Command, CommandSet};
pub use parser::MemcacheParser;
pub use rules::RuleSet;

/// Memcached's default item size: the default limit on one value.
pub const DEFAULT_MAX_VALUE: usize = 1024 * 1024;

/// The memcached protocol.
#[derive(Debug, Clone, Copy)]
pub struct Memcache {
    max_value: usize,
}

impl Memcache {
    /// Memcached, refusing values longer than `max_value` bytes (the connection is closed).
    pub fn new(max_value: usize) -> Self {
        Memcache { max_value }
    }
}

impl Default for Memcache {
    fn default() -> Self {
        Memcache::new(DEFAULT_MAX_VALUE)
    }
}

impl TypedProtocol for Memcache {
    type Rules = RuleSet;
    const TRACE_FIELDS: &'static [&'static str] = &["command", "key", "keys"];

    fn name(&self) -> &'static str {
        "memcache"
    }

    fn parser(&self, _meta: &ConnectionMeta) -> Box<dyn Parser> {
        Box::new(MemcacheParser::new(self.max_value))
    }

    fn compile(&self, rules: &[L7RuleMap]) -> Result<RuleSet, RuleError> {
        rules::compile(rules)
    }

    /// Traces `command=<name>` with `key=<key>` or `keys=<k1,k2,...>`.
    fn trace_request(&self, rules: &RuleSet, fields: &TraceFields<'_>) -> Result<bool, String> {
        let name = fields.require("command")?;
        let command =
            Command::from_name(name).ok_or_else(|| format!("unknown memcache command {name:?}"))?;
        let keys: Vec<&[u8]> = fields
            .get("key")
            .into_iter()
            .chain(fields.get("keys"))
            .flat_map(|k| k.split(',').map(str::trim).filter(|k| !k.is_empty()))
            .map(str::as_bytes)
            .collect();
        Ok(rules.allows(command, keys.iter().copied()))
    }
}
