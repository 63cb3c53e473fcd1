//! What the crate's unit tests build their worlds from: endpoints, policy snapshots, routes,
//! connection ends and access-log entries. Compiled for tests only.

use std::net::SocketAddr;

use axoneme_policy::{parse_policies, EndpointSpec, Snapshot};
use std::sync::Arc;

use axoneme_sdk::{ConnectionMeta, Direction, EntryType, Field, LogEntry};

use crate::builtin_protocols;
use crate::config::ProtocolsConfig;
use crate::proxy::connection::{Ends, Guards, Route};
use crate::proxy::sockets::UpstreamOptions;

/// An endpoint labelled `app: <name>` at `ip`.
pub(crate) fn endpoint(name: &str, ip: &str) -> EndpointSpec {
    EndpointSpec {
        name: name.into(),
        ips: vec![ip.parse().unwrap()],
        labels: [("app".to_owned(), name.to_owned())].into(),
        namespace: None,
        policy_audit_mode: false,
    }
}

/// The snapshot of the policy documents `text` over `endpoints`, with the built-in protocols.
pub(crate) fn snapshot(text: &str, endpoints: &[EndpointSpec]) -> Snapshot {
    Snapshot::build(
        parse_policies("policy.yaml", text).unwrap(),
        endpoints,
        &[],
        &builtin_protocols(&ProtocolsConfig::default()),
        None,
    )
    .unwrap()
}

/// A listener's route guarding `guards` in `direction`, parsing `l7proto` when given.
pub(crate) fn route(guards: Guards, direction: Direction, l7proto: Option<&str>) -> Route {
    Route {
        listener: "listener".into(),
        guards,
        direction,
        l7proto: l7proto.map(str::to_owned),
        upstream: UpstreamOptions::default(),
    }
}

/// The ends of a connection from `client` to `upstream` (`address:port` each).
pub(crate) fn ends(client: &str, upstream: &str) -> Ends {
    Ends {
        client: client.parse::<SocketAddr>().unwrap(),
        upstream: upstream.parse::<SocketAddr>().unwrap(),
    }
}

/// The connection of the access-log tests: luke (257) to r2d2 (256), ingress.
pub(crate) fn log_meta() -> ConnectionMeta {
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
pub(crate) fn bare_entry(meta: &ConnectionMeta) -> LogEntry<'_> {
    LogEntry {
        entry_type: EntryType::Request,
        meta,
        policy_name: "p",
        proto: None,
        fields: &[],
    }
}

/// A memcached request entry of `meta` with `fields`.
pub(crate) fn multiget<'a>(meta: &'a ConnectionMeta, fields: &'a [Field<'a>]) -> LogEntry<'a> {
    LogEntry {
        entry_type: EntryType::Request,
        meta,
        policy_name: "p",
        proto: Some("memcache"),
        fields,
    }
}
