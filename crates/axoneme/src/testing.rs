//! What the crate's unit tests build their worlds from: endpoints, policy snapshots, routes,
//! connection ends (access-log entries come from `axoneme_access_log::testing`). Compiled for tests only.

use std::net::SocketAddr;

use axoneme_policy::{parse_policies, EndpointSpec, Snapshot};
use axoneme_sdk::Direction;

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
