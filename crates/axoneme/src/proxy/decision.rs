//! The connection decision: which endpoints' policies a connection falls under, the identities
//! of its two sides as each of those endpoints sees them, what each policy says, and so whether
//! the connection is refused (by which end, under which policy, why), forwarded as plain bytes,
//! or parsed, with which protocol.
//!
//! [`decide`] is pure: it reads a policy snapshot and the protocol registry and touches no
//! socket, clock, metric or log. A connection being accepted and `axoneme policy trace` both ask
//! it, so the two cannot disagree.

use std::net::SocketAddr;
use std::sync::Arc;

use axoneme_policy::{ConnectionVerdict, Snapshot};
use axoneme_sdk::{ConnectionMeta, Direction, Protocol, Registry};

use crate::proxy::connection::{Ends, Route};
use crate::proxy::guards::{Guard, Guarded};

/// How a connection is to be handled.
pub(crate) enum Outcome {
    /// Refused by the policy of the guarded end in direction `by`.
    Refuse {
        by: Direction,
        policy_name: String,
        reason: String,
    },
    /// Forwarded as plain bytes: no end asks for a protocol.
    Forward,
    /// Parsed with this protocol, every request checked against every end.
    Parse(Arc<dyn Protocol>),
}

/// One guarded end, decided.
pub(crate) struct DecidedEnd {
    /// The end.
    pub guard: Guard,
    /// The connection as the end's policy sees it: its identities and addresses.
    pub meta: ConnectionMeta,
    /// What the end's policy says of the connection.
    pub verdict: ConnectionVerdict,
}

/// The decision on one connection.
pub(crate) struct Decision {
    /// The connection's metadata under the listener's own end; under no endpoint (an empty
    /// name) when no endpoint owns the address the listener guards.
    pub meta: ConnectionMeta,
    /// Every guarded end in the order a request meets them (the client's egress, then the
    /// server's ingress); empty when no endpoint owns the guarded address.
    pub ends: Vec<DecidedEnd>,
    pub outcome: Outcome,
}

impl Decision {
    /// The metadata of the end that refused the connection (or of the listener's own end).
    pub(crate) fn refusing_meta(&self) -> &ConnectionMeta {
        let by = match &self.outcome {
            Outcome::Refuse { by, .. } => *by,
            _ => self.meta.direction,
        };
        self.ends
            .iter()
            .find(|end| end.guard.direction == by)
            .map_or(&self.meta, |end| &end.meta)
    }

    /// The metadata of the guarded end other than the listener's own, if there is one.
    pub(crate) fn other_meta(&self) -> Option<&ConnectionMeta> {
        self.ends
            .iter()
            .find(|end| end.guard.direction != self.meta.direction)
            .map(|end| &end.meta)
    }
}

/// Decides connection `id` between `ends`, accepted by `route`'s listener, under `snapshot`,
/// with the parsers of `registry`:
/// - refused when no endpoint owns the address the listener guards, or when any guarded end
///   refuses it (the first in the order a request meets them), or when the ends (or the
///   listener's `l7proto`) ask for different protocols, or for one with no parser;
/// - parsed when any end's policy has L7 rules on the port or the listener names a protocol;
/// - forwarded as plain bytes otherwise.
pub(crate) fn decide(
    snapshot: &Snapshot,
    registry: &Registry,
    route: &Route,
    ends: Ends,
    id: u64,
) -> Decision {
    let guarded = match Guarded::of(route, snapshot, ends) {
        Ok(guarded) => guarded,
        Err(reason) => {
            let nobody = Guard {
                endpoint: Arc::from(""),
                direction: route.direction,
            };
            return Decision {
                meta: connection_meta(snapshot, route, &nobody, ends, id),
                ends: Vec::new(),
                outcome: Outcome::Refuse {
                    by: route.direction,
                    policy_name: String::new(),
                    reason,
                },
            };
        }
    };
    let meta = connection_meta(snapshot, route, &guarded.own, ends, id);
    let decided: Vec<DecidedEnd> = guarded
        .in_order()
        .map(|guard| DecidedEnd {
            guard: guard.clone(),
            meta: connection_meta(snapshot, route, guard, ends, id),
            verdict: guard.decide(snapshot, ends),
        })
        .collect();
    let outcome = combine(route, &decided, ends.upstream.port(), registry);
    Decision {
        meta,
        ends: decided,
        outcome,
    }
}

/// The outcome of every end's verdict together: the first refusal wins; otherwise the one
/// protocol they ask for, or plain forwarding when none does.
fn combine(route: &Route, ends: &[DecidedEnd], port: u16, registry: &Registry) -> Outcome {
    let mut chosen = Outcome::Forward;
    for end in ends {
        let by = end.guard.direction;
        match (of_end(route, &end.verdict, by, port, registry), &chosen) {
            (refuse @ Outcome::Refuse { .. }, _) => return refuse,
            (Outcome::Parse(protocol), Outcome::Parse(before))
                if protocol.name() != before.name() =>
            {
                return Outcome::Refuse {
                    by,
                    policy_name: String::new(),
                    reason: format!(
                        "the client's egress policy requires l7proto {:?} and the server's ingress policy {:?} on port {port}",
                        before.name(),
                        protocol.name()
                    ),
                }
            }
            (Outcome::Parse(protocol), _) => chosen = Outcome::Parse(protocol),
            (Outcome::Forward, _) => {}
        }
    }
    chosen
}

/// How one end's `verdict` (in direction `by`) would have the connection handled.
fn of_end(
    route: &Route,
    verdict: &ConnectionVerdict,
    by: Direction,
    port: u16,
    registry: &Registry,
) -> Outcome {
    let by_name = |name: &str| match registry.get(name) {
        Some(protocol) => Outcome::Parse(Arc::clone(protocol)),
        None => Outcome::Refuse {
            by,
            policy_name: String::new(),
            reason: format!("no parser for l7proto {name:?}"),
        },
    };
    match verdict {
        ConnectionVerdict::Refused {
            policy_name,
            reason,
        } => Outcome::Refuse {
            by,
            policy_name: policy_name.clone(),
            reason: reason.clone(),
        },
        ConnectionVerdict::Unrestricted | ConnectionVerdict::Allowed { l7: None, .. } => {
            match &route.l7proto {
                Some(name) => by_name(name),
                None => Outcome::Forward,
            }
        }
        ConnectionVerdict::Allowed {
            policy_name,
            l7: Some(port_policy),
        } => {
            let required = port_policy.proto().unwrap_or_default();
            match &route.l7proto {
                Some(name) if name != required => Outcome::Refuse {
                    by,
                    policy_name: policy_name.clone(),
                    reason: format!(
                        "listener parses {name:?} but policy requires l7proto {required:?} on port {port}"
                    ),
                },
                _ => by_name(required),
            }
        }
    }
}

/// The connection's metadata as `guard`'s endpoint sees it: the identities of both sides (the
/// guarded side is the endpoint's identity even when it is reached by another address).
fn connection_meta(
    snapshot: &Snapshot,
    route: &Route,
    guard: &Guard,
    ends: Ends,
    id: u64,
) -> ConnectionMeta {
    let guarded = snapshot
        .endpoint(&guard.endpoint)
        .map(|e| e.identity.clone());
    let identity = |addr: SocketAddr| snapshot.identity_of(addr.ip()).clone();
    let (source, destination) = match guard.direction {
        Direction::Ingress => (
            identity(ends.client),
            guarded.unwrap_or_else(|| identity(ends.upstream)),
        ),
        Direction::Egress => (
            guarded.unwrap_or_else(|| identity(ends.client)),
            identity(ends.upstream),
        ),
    };
    ConnectionMeta {
        id,
        listener: Arc::clone(&route.listener),
        endpoint: Arc::clone(&guard.endpoint),
        direction: guard.direction,
        source: ends.client,
        destination: ends.upstream,
        source_identity: source.id,
        destination_identity: destination.id,
        source_labels: source.labels,
        destination_labels: destination.labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin_protocols;
    use crate::config::ProtocolsConfig;
    use crate::proxy::connection::Guards;
    use crate::testing::{endpoint, ends, route, snapshot as snapshot_of};

    const LUKE: &str = "10.0.0.1:40000";
    const CACHE: &str = "10.0.0.2:11211";
    const DB: &str = "10.0.0.3:9042";
    const WORLD: &str = "192.0.2.9:40000";

    fn policy(name: &str, app: &str, direction: &str, port: u16, rules: &str) -> String {
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}}}\n\
             spec:\n  endpointSelector: {{matchLabels: {{app: {app}}}}}\n  \
             {direction}: [{{toPorts: [{{ports: [{{port: '{port}'}}]{rules}}}]}}]\n"
        )
    }

    /// luke, cache and db as endpoints, under the policies given (YAML documents).
    fn snapshot(policies: &[String]) -> Snapshot {
        snapshot_of(
            &policies.join("---\n"),
            &[
                endpoint("luke", "10.0.0.1"),
                endpoint("cache", "10.0.0.2"),
                endpoint("db", "10.0.0.3"),
            ],
        )
    }

    fn sidecar(endpoint: &str, l7proto: Option<&str>) -> Route {
        route(
            Guards::Endpoint(endpoint.into()),
            Direction::Ingress,
            l7proto,
        )
    }

    /// The outcome in short: `forward`, `parse <protocol>`, or `refuse <direction> <policy>:
    /// <reason>`.
    fn outcome(snapshot: &Snapshot, route: &Route, client: &str, upstream: &str) -> String {
        let registry = builtin_protocols(&ProtocolsConfig::default());
        match decide(snapshot, &registry, route, ends(client, upstream), 7).outcome {
            Outcome::Forward => "forward".into(),
            Outcome::Parse(protocol) => format!("parse {}", protocol.name()),
            Outcome::Refuse {
                by,
                policy_name,
                reason,
            } => format!("refuse {by:?} {policy_name}: {reason}"),
        }
    }

    const MEMCACHE_GETS: &str = ", rules: {l7proto: memcache, l7: [{command: get}]}";

    #[test]
    fn an_endpoint_no_policy_selects_is_forwarded_unless_the_listener_parses() {
        let snapshot = snapshot(&[policy("db-in", "db", "ingress", 9042, "")]);
        assert_eq!(
            outcome(&snapshot, &sidecar("cache", None), LUKE, CACHE),
            "forward"
        );
        assert_eq!(
            outcome(&snapshot, &sidecar("cache", Some("memcache")), LUKE, CACHE),
            "parse memcache"
        );
        assert_eq!(
            outcome(&snapshot, &sidecar("cache", Some("mysql")), LUKE, CACHE),
            "refuse Ingress : no parser for l7proto \"mysql\""
        );
    }

    #[test]
    fn l7_rules_choose_the_parser_and_a_listener_naming_another_is_refused() {
        let snapshot = snapshot(&[policy("cache-in", "cache", "ingress", 11211, MEMCACHE_GETS)]);
        assert_eq!(
            outcome(&snapshot, &sidecar("cache", None), LUKE, CACHE),
            "parse memcache"
        );
        assert_eq!(
            outcome(&snapshot, &sidecar("cache", Some("memcache")), LUKE, CACHE),
            "parse memcache"
        );
        assert_eq!(
            outcome(&snapshot, &sidecar("cache", Some("r2d2")), LUKE, CACHE),
            "refuse Ingress cache-in: listener parses \"r2d2\" but policy requires l7proto \
             \"memcache\" on port 11211"
        );
    }

    #[test]
    fn a_port_without_l7_rules_is_forwarded_and_another_port_refused() {
        let snapshot = snapshot(&[policy("cache-in", "cache", "ingress", 11211, "")]);
        assert_eq!(
            outcome(&snapshot, &sidecar("cache", None), LUKE, CACHE),
            "forward"
        );
        assert!(
            outcome(&snapshot, &sidecar("cache", None), LUKE, "10.0.0.2:11212")
                .starts_with("refuse Ingress : "),
            "a selected endpoint allows only what a rule allows"
        );
    }

    #[test]
    fn a_transparent_listener_guards_the_endpoint_owning_its_side_and_the_other_end_too() {
        let snapshot = snapshot(&[
            policy("cache-in", "cache", "ingress", 11211, MEMCACHE_GETS),
            policy("luke-out", "luke", "egress", 9042, ""),
        ]);
        let ingress = route(Guards::ByAddress, Direction::Ingress, None);
        let egress = route(Guards::ByAddress, Direction::Egress, None);
        let refused = outcome(&snapshot, &ingress, LUKE, CACHE);
        assert!(
            refused.starts_with("refuse Egress : "),
            "luke's egress is met first and allows only 9042: {refused}"
        );
        assert_eq!(outcome(&snapshot, &ingress, WORLD, CACHE), "parse memcache");
        assert_eq!(
            outcome(&snapshot, &egress, WORLD, CACHE),
            "refuse Egress : no endpoint owns 192.0.2.9"
        );
        assert_eq!(outcome(&snapshot, &egress, LUKE, DB), "forward");

        let registry = builtin_protocols(&ProtocolsConfig::default());
        let decision = decide(&snapshot, &registry, &ingress, ends(LUKE, CACHE), 7);
        let decided: Vec<_> = decision
            .ends
            .iter()
            .map(|end| (end.meta.endpoint.to_string(), end.meta.direction))
            .collect();
        assert_eq!(
            decided,
            [
                ("luke".to_owned(), Direction::Egress),
                ("cache".to_owned(), Direction::Ingress)
            ]
        );
        assert_eq!(&*decision.meta.endpoint, "cache");
        assert_eq!(&*decision.refusing_meta().endpoint, "luke");
        assert_eq!(decision.other_meta().map(|m| &*m.endpoint), Some("luke"));
        assert_eq!(decision.meta.id, 7);
    }

    #[test]
    fn ends_asking_for_different_protocols_are_refused() {
        let snapshot = snapshot(&[
            policy("cache-in", "cache", "ingress", 11211, MEMCACHE_GETS),
            policy(
                "luke-out",
                "luke",
                "egress",
                11211,
                ", rules: {l7proto: r2d2, l7: [{cmd: READ}]}",
            ),
        ]);
        let ingress = route(Guards::ByAddress, Direction::Ingress, None);
        assert_eq!(
            outcome(&snapshot, &ingress, LUKE, CACHE),
            "refuse Ingress : the client's egress policy requires l7proto \"r2d2\" and the \
             server's ingress policy \"memcache\" on port 11211"
        );
    }
}
