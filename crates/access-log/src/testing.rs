//! What tests of the access log build their entries from: one connection and two entries of it.
//! Compiled for this crate's tests and, with the `testing` feature, for the tests of the crates
//! that log; never part of a release build.

use std::sync::Arc;

use axoneme_sdk::{ConnectionMeta, Direction, EntryType, Field, LogEntry};

/// The connection of the tests: luke (257) to r2d2 (256), ingress.
pub fn log_meta() -> ConnectionMeta {
    ConnectionMeta {
        id: 1,
        listener: "r2d2".into(),
        endpoint: "r2d2".into(),
        direction: Direction::Ingress,
        source: "127.0.0.21:5000".parse().unwrap(),
        destination: "127.0.0.1:4001".parse().unwrap(),
        source_identity: 257,
        destination_identity: 256,
        source_labels: Arc::from(vec!["app=luke".to_string()]),
        destination_labels: Arc::from(vec!["app=r2d2".to_string()]),
    }
}

/// A request entry of `meta` with no protocol and no fields.
pub fn bare_entry(meta: &ConnectionMeta) -> LogEntry<'_> {
    LogEntry {
        entry_type: EntryType::Request,
        meta,
        policy_name: "p",
        proto: None,
        fields: &[],
    }
}

/// A memcached request entry of `meta` with `fields`.
pub fn multiget<'a>(meta: &'a ConnectionMeta, fields: &'a [Field<'a>]) -> LogEntry<'a> {
    LogEntry {
        entry_type: EntryType::Request,
        meta,
        policy_name: "p",
        proto: Some("memcache"),
        fields,
    }
}
