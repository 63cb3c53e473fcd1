//! Which endpoints' policies a connection falls under, and requests checked and logged against
//! all of them.
//!
//! A listener naming an endpoint guards that one. A transparent listener guarding by address
//! guards the endpoint its direction names (the server's for ingress, the client's for egress)
//! and, when the other end is an endpoint too, that one as well: as in Cilium, a flow between
//! two endpoints needs the client's egress policy and the server's ingress policy to allow it,
//! whichever rule steered it to the proxy. A request meets the ends in the order its packets
//! would: the client's egress first, then the server's ingress; it passes only if both allow,
//! and each end that decided writes its own access-log entry under its endpoint and direction.
//! A denial is the parser's to answer, once. This module decides which ends there are and
//! combines their verdicts; the connection task only applies the outcome.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use axoneme_policy::{ConnectionVerdict, PortPolicy, Snapshot};
use axoneme_sdk::{
    logging_audit_as, AccessLog, ConnectionMeta, DenyReason, Direction, EntryType, LogEntry,
    RequestPolicy, Verdict,
};

use crate::proxy::connection::{Ends, Guards, Route};
use crate::telemetry::metrics::{ProtocolMetrics, VerdictCounters};
use crate::telemetry::policy_verdicts::EndCounters;

/// One guarded end of a connection: an endpoint, and the direction its policy is read in.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    /// The endpoint.
    pub endpoint: Arc<str>,
    /// Ingress when the endpoint is the server, egress when it is the client.
    pub direction: Direction,
}

impl Guard {
    /// The address of the remote side, whose identity the endpoint's policy is checked for.
    pub(crate) fn remote(&self, ends: Ends) -> SocketAddr {
        match self.direction {
            Direction::Ingress => ends.client,
            Direction::Egress => ends.upstream,
        }
    }

    /// The endpoint's verdict on the connection.
    pub(crate) fn decide(&self, snapshot: &Snapshot, ends: Ends) -> ConnectionVerdict {
        snapshot.decide_connection(
            &self.endpoint,
            self.direction,
            self.remote(ends).ip(),
            ends.upstream.port(),
        )
    }
}

/// The guarded ends of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Guarded {
    /// The end the listener guards: always checked; its metadata is the connection's.
    pub own: Guard,
    /// The other end, when a transparent listener guarding by address finds an endpoint there.
    pub other: Option<Guard>,
}

impl Guarded {
    /// The ends of a connection accepted by `route`'s listener, or why it has none.
    pub(crate) fn of(route: &Route, snapshot: &Snapshot, ends: Ends) -> Result<Guarded, String> {
        let at = |addr: SocketAddr| snapshot.endpoint_at(addr.ip()).map(|e| Arc::from(&*e.name));
        let side = |direction: Direction| match direction {
            Direction::Ingress => ends.upstream,
            Direction::Egress => ends.client,
        };
        match &route.guards {
            Guards::Endpoint(name) => Ok(Guarded {
                own: Guard {
                    endpoint: Arc::clone(name),
                    direction: route.direction,
                },
                other: None,
            }),
            Guards::ByAddress => {
                let own = side(route.direction);
                let endpoint = at(own).ok_or_else(|| format!("no endpoint owns {}", own.ip()))?;
                let opposite = match route.direction {
                    Direction::Ingress => Direction::Egress,
                    Direction::Egress => Direction::Ingress,
                };
                Ok(Guarded {
                    own: Guard {
                        endpoint,
                        direction: route.direction,
                    },
                    other: at(side(opposite)).map(|endpoint| Guard {
                        endpoint,
                        direction: opposite,
                    }),
                })
            }
        }
    }

    /// Every end, in the order a request meets them: the client's egress, then the server's
    /// ingress.
    pub(crate) fn in_order(&self) -> impl Iterator<Item = &Guard> {
        let (first, second) = match (self.own.direction, &self.other) {
            (Direction::Ingress, Some(other)) => (other, Some(&self.own)),
            (_, other) => (&self.own, other.as_ref()),
        };
        std::iter::once(first).chain(second)
    }
}

/// One guarded end as requests are checked against it.
struct End<'s> {
    meta: Arc<ConnectionMeta>,
    /// The end's request-level policy for this connection, as of the last refresh.
    policy: Arc<PortPolicy>,
    /// Whether requests are checked against this end: always for the listener's own end; for
    /// the other end while its policy restricts the connection at all, so that an end that
    /// enforces nothing neither decides nor doubles the access log.
    checked: bool,
    verdicts: Option<&'s VerdictCounters>,
    /// The counters of each policy that can decide this end's requests, resolved again on
    /// every policy change.
    by_policy: EndCounters,
    metrics: Option<&'s ProtocolMetrics>,
}

impl<'s> End<'s> {
    /// The end `meta` describes, with its policy in `snapshot`.
    fn new(
        meta: Arc<ConnectionMeta>,
        snapshot: &Snapshot,
        always_checked: bool,
        metrics: Option<&'s ProtocolMetrics>,
    ) -> End<'s> {
        let (policy, checked) = read(&meta, snapshot, always_checked);
        let mut end = End {
            verdicts: metrics.map(|m| m.verdicts(meta.direction)),
            meta,
            policy,
            checked,
            by_policy: EndCounters::default(),
            metrics,
        };
        end.resolve_counters();
        end
    }

    /// Reads the end's policy in `snapshot` again.
    fn refresh(&mut self, snapshot: &Snapshot, always_checked: bool) {
        (self.policy, self.checked) = read(&self.meta, snapshot, always_checked);
        self.resolve_counters();
    }

    fn resolve_counters(&mut self) {
        if let Some(metrics) = self.metrics {
            self.by_policy = metrics.by_policy.resolve(
                &self.meta.endpoint,
                self.meta.direction,
                // The empty name is that of a denial because nothing allows.
                std::iter::once("").chain(self.policy.policy_names()),
            );
        }
    }

    fn check(&self, matches: &mut dyn FnMut(&(dyn Any + Send + Sync)) -> bool) -> Verdict<'_> {
        let verdict = self.policy.check(matches);
        let by_policy = self.by_policy.of(verdict.policy_name);
        for counters in self.verdicts.into_iter().chain(by_policy) {
            let counter = match (verdict.allowed, verdict.audited) {
                (true, false) => &counters.allowed,
                (true, true) => &counters.audited,
                (false, _) => &counters.denied,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }
}

/// The request-level policy of the end `meta` describes, and whether it is checked.
fn read(
    meta: &ConnectionMeta,
    snapshot: &Snapshot,
    always_checked: bool,
) -> (Arc<PortPolicy>, bool) {
    let remote = match meta.direction {
        Direction::Ingress => meta.source.ip(),
        Direction::Egress => meta.destination.ip(),
    };
    let (endpoint, direction, port) = (&*meta.endpoint, meta.direction, meta.destination_port());
    let policy = snapshot.request_policy(endpoint, direction, remote, port);
    let checked = always_checked
        || !matches!(
            snapshot.decide_connection(endpoint, direction, remote, port),
            ConnectionVerdict::Unrestricted
        );
    (policy, checked)
}

/// Which end decided the request checked last, until the parser writes its entry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Decided {
    /// No check since the last entry, or only one end was checked: the entry is the
    /// connection's own.
    #[default]
    Alone,
    /// The first end denied; the second was not asked.
    First,
    /// The first end allowed; the second decided.
    Second,
}

#[derive(Debug, Default)]
struct LastCheck {
    decided: Decided,
    /// Why each end (first, second) would have denied the request its audit mode let through.
    audits: [Option<DenyReason>; 2],
    /// The policy that allowed the request at the first end (reused, so a request costs no
    /// allocation).
    first_policy: String,
}

/// The request-level policy and the access log of one parsed connection, across its guarded
/// ends: what the datapath engine is handed as its policy and its log.
pub(crate) struct RequestChecks<'s> {
    own: End<'s>,
    /// Boxed: only connections between two endpoints of a transparent listener have one, and
    /// every other connection would hold its room.
    other: Option<Box<OtherEnd<'s>>>,
    log: &'s dyn AccessLog,
}

/// The guarded end other than the listener's own, and what a request checked against both ends
/// leaves for its log entries.
struct OtherEnd<'s> {
    end: End<'s>,
    last: Mutex<LastCheck>,
}

impl<'s> RequestChecks<'s> {
    /// The checks of a connection whose ends `own` (the listener's) and `other` describe, as
    /// of `snapshot`.
    pub(crate) fn new(
        own: impl Into<Arc<ConnectionMeta>>,
        other: Option<ConnectionMeta>,
        snapshot: &Snapshot,
        log: &'s dyn AccessLog,
        metrics: Option<&'s ProtocolMetrics>,
    ) -> RequestChecks<'s> {
        RequestChecks {
            own: End::new(own.into(), snapshot, true, metrics),
            other: other.map(|meta| {
                Box::new(OtherEnd {
                    end: End::new(Arc::new(meta), snapshot, false, metrics),
                    last: Mutex::new(LastCheck::default()),
                })
            }),
            log,
        }
    }

    /// Follows a policy change: the next request is checked against `snapshot`.
    pub(crate) fn refresh(&mut self, snapshot: &Snapshot) {
        self.own.refresh(snapshot, true);
        if let Some(other) = &mut self.other {
            other.end.refresh(snapshot, false);
        }
    }

    /// Both ends in the order a request meets them, when both are checked, and the last
    /// request's check.
    fn both(&self) -> Option<(&End<'s>, &End<'s>, MutexGuard<'_, LastCheck>)> {
        let other = self.other.as_deref().filter(|o| o.end.checked)?;
        let last = other.last.lock().unwrap_or_else(|p| p.into_inner());
        Some(match self.own.meta.direction {
            Direction::Egress => (&self.own, &other.end, last),
            Direction::Ingress => (&other.end, &self.own, last),
        })
    }
}

impl RequestPolicy for RequestChecks<'_> {
    fn check(&self, matches: &mut dyn FnMut(&(dyn Any + Send + Sync)) -> bool) -> Verdict<'_> {
        let Some((first, second, mut last)) = self.both() else {
            return self.own.check(matches);
        };
        let verdict = first.check(matches);
        last.audits = [DenyReason::of_audited(&verdict), None];
        if !verdict.allowed {
            last.decided = Decided::First;
            return verdict;
        }
        last.first_policy.clear();
        last.first_policy.push_str(verdict.policy_name);
        last.decided = Decided::Second;
        let second_verdict = second.check(matches);
        last.audits[1] = DenyReason::of_audited(&second_verdict);
        Verdict {
            audited: verdict.audited || second_verdict.audited,
            ..second_verdict
        }
    }
}

impl AccessLog for RequestChecks<'_> {
    /// Writes the parser's entry under the end that decided; when the second end decided, the
    /// first end's allowing entry comes before it. Each entry is marked audited by its own end's
    /// verdict (see [`axoneme_sdk::logging_audit`]).
    fn log(&self, entry: &LogEntry<'_>) {
        let Some((first, second, mut last)) = self.both() else {
            return self.log.log(entry);
        };
        let audits = std::mem::take(&mut last.audits);
        let own_audit = |end: usize| audits[end].filter(|_| entry.entry_type == EntryType::Request);
        match std::mem::take(&mut last.decided) {
            Decided::Alone => self.log.log(entry),
            Decided::First => logging_audit_as(own_audit(0), || {
                self.log.log(&LogEntry {
                    meta: &first.meta,
                    ..*entry
                })
            }),
            Decided::Second => {
                logging_audit_as(audits[0], || {
                    self.log.log(&LogEntry {
                        entry_type: EntryType::Request,
                        meta: &first.meta,
                        policy_name: &last.first_policy,
                        ..*entry
                    })
                });
                logging_audit_as(own_audit(1), || {
                    self.log.log(&LogEntry {
                        meta: &second.meta,
                        ..*entry
                    })
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, endpoint, ends, snapshot as snapshot_of};
    use axoneme_policy::EndpointSpec;
    use axoneme_sdk::logging_audit;

    const LUKE: &str = "10.0.0.1:40000";
    const CACHE: &str = "10.0.0.2:11211";
    const WORLD: &str = "192.0.2.9:40000";

    /// The policies of luke's egress and cache's ingress on 11211, each with the `l7` list
    /// given.
    fn policies(egress_l7: &str, ingress_l7: &str) -> String {
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: luke-out}}\nspec:\n  endpointSelector: {{matchLabels: {{app: luke}}}}\n  egress: [{{toPorts: [{{ports: [{{port: '11211'}}], rules: {{l7proto: memcache, l7: {egress_l7}}}}}]}}]\n\
             ---\n\
             apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: cache-in}}\nspec:\n  endpointSelector: {{matchLabels: {{app: cache}}}}\n  ingress: [{{toPorts: [{{ports: [{{port: '11211'}}], rules: {{l7proto: memcache, l7: {ingress_l7}}}}}]}}]\n"
        )
    }

    /// luke and cache under [`policies`].
    fn snapshot(egress_l7: &str, ingress_l7: &str) -> Snapshot {
        snapshot_of(
            &policies(egress_l7, ingress_l7),
            &[endpoint("luke", "10.0.0.1"), endpoint("cache", "10.0.0.2")],
        )
    }

    fn route(guards: Guards, direction: Direction) -> Route {
        testing::route(guards, direction, None)
    }

    fn names(guarded: &Guarded) -> Vec<(String, Direction)> {
        guarded
            .in_order()
            .map(|g| (g.endpoint.to_string(), g.direction))
            .collect()
    }

    #[test]
    fn a_listener_guarding_by_address_guards_both_endpoints_client_first() {
        let snapshot = snapshot("[{}]", "[{}]");
        let both = [
            ("luke".to_owned(), Direction::Egress),
            ("cache".to_owned(), Direction::Ingress),
        ];
        for direction in [Direction::Ingress, Direction::Egress] {
            let route = route(Guards::ByAddress, direction);
            let guarded = Guarded::of(&route, &snapshot, ends(LUKE, CACHE)).unwrap();
            assert_eq!(guarded.own.direction, direction);
            assert_eq!(names(&guarded), both);
        }
        let from_world = Guarded::of(
            &route(Guards::ByAddress, Direction::Ingress),
            &snapshot,
            ends(WORLD, CACHE),
        )
        .unwrap();
        assert_eq!(names(&from_world), [both[1].clone()]);
        let egress_to_world = route(Guards::ByAddress, Direction::Egress);
        assert_eq!(
            Guarded::of(&egress_to_world, &snapshot, ends(WORLD, CACHE)).unwrap_err(),
            "no endpoint owns 192.0.2.9"
        );
        let sidecar = route(Guards::Endpoint("cache".into()), Direction::Ingress);
        let guarded = Guarded::of(&sidecar, &snapshot, ends(LUKE, CACHE)).unwrap();
        assert_eq!(names(&guarded), [both[1].clone()]);
    }

    /// Records entries as `type endpoint direction policy`.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<String>>);

    impl AccessLog for Recorded {
        fn log(&self, entry: &LogEntry<'_>) {
            let direction = match entry.meta.direction {
                Direction::Ingress => "ingress",
                Direction::Egress => "egress",
            };
            let audit = match logging_audit() {
                Some(reason) => format!(" audit:{}", reason.as_str()),
                None => String::new(),
            };
            self.0.lock().unwrap().push(format!(
                "{} {} {direction} {}{audit}",
                entry.entry_type.as_str(),
                entry.meta.endpoint,
                entry.policy_name
            ));
        }
    }

    /// Checks one request through both ends of luke's connection to cache, as a parser does:
    /// `satisfies` says whether the request satisfies an L7 rule set; the verdict's policy is
    /// logged as the parser would. The verdict and the entries written.
    fn request(snapshot: &Snapshot, satisfies: bool) -> (bool, Vec<String>) {
        let route = route(Guards::ByAddress, Direction::Ingress);
        let ends = ends(LUKE, CACHE);
        let guarded = Guarded::of(&route, snapshot, ends).unwrap();
        let meta = |guard: &Guard| ConnectionMeta {
            id: 1,
            listener: "node".into(),
            endpoint: Arc::clone(&guard.endpoint),
            direction: guard.direction,
            source: ends.client,
            destination: ends.upstream,
            source_identity: 0,
            destination_identity: 0,
            source_labels: Arc::new([]),
            destination_labels: Arc::new([]),
        };
        let log = Recorded::default();
        let checks = RequestChecks::new(
            meta(&guarded.own),
            guarded.other.as_ref().map(meta),
            snapshot,
            &log,
            None,
        );
        let verdict = checks.check(&mut |_| satisfies);
        let entry_type = match verdict.allowed {
            true => EntryType::Request,
            false => EntryType::Denied,
        };
        checks.log(&LogEntry {
            entry_type,
            meta: &meta(&guarded.own),
            policy_name: verdict.policy_name,
            proto: Some("memcache"),
            fields: &[],
        });
        let entries = log.0.lock().unwrap().clone();
        (verdict.allowed, entries)
    }

    #[test]
    fn a_request_passes_only_when_both_ends_allow_and_each_deciding_end_logs() {
        let rules = "[{command: get}]";
        // The client's egress decides first: its denial is the only entry.
        let (allowed, entries) = request(&snapshot(rules, "[{}]"), false);
        assert!(!allowed);
        assert_eq!(entries, ["Denied luke egress "]);
        // The client's egress allows, the server's ingress denies.
        let (allowed, entries) = request(&snapshot("[{}]", rules), false);
        assert!(!allowed);
        assert_eq!(
            entries,
            ["Request luke egress luke-out", "Denied cache ingress "]
        );
        // Both allow: an entry for each.
        let (allowed, entries) = request(&snapshot(rules, rules), true);
        assert!(allowed);
        assert_eq!(
            entries,
            [
                "Request luke egress luke-out",
                "Request cache ingress cache-in"
            ]
        );
    }

    #[test]
    fn each_end_marks_its_own_entry_audited() {
        let rules = "[{command: get}]";
        let audited = |name: &str, ip: &str| EndpointSpec {
            policy_audit_mode: true,
            ..endpoint(name, ip)
        };
        // The server's ingress is in audit mode and would deny: only its entry is marked.
        let server_audited = snapshot_of(
            &policies("[{}]", rules),
            &[endpoint("luke", "10.0.0.1"), audited("cache", "10.0.0.2")],
        );
        assert_eq!(
            request(&server_audited, false),
            (
                true,
                vec![
                    "Request luke egress luke-out".into(),
                    "Request cache ingress  audit:no-allow".into()
                ]
            )
        );
        // The client's egress is in audit mode and would deny, the server's allows.
        let client_audited = snapshot_of(
            &policies(rules, "[{}]"),
            &[audited("luke", "10.0.0.1"), endpoint("cache", "10.0.0.2")],
        );
        assert_eq!(
            request(&client_audited, false),
            (
                true,
                vec![
                    "Request luke egress  audit:no-allow".into(),
                    "Request cache ingress cache-in".into()
                ]
            )
        );
    }

    #[test]
    fn an_end_that_enforces_nothing_neither_decides_nor_logs() {
        let text = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: cache-in}\nspec:\n  endpointSelector: {matchLabels: {app: cache}}\n  ingress: [{toPorts: [{ports: [{port: '11211'}], rules: {l7proto: memcache, l7: [{command: get}]}}]}]\n";
        let snapshot = snapshot_of(
            text,
            &[endpoint("luke", "10.0.0.1"), endpoint("cache", "10.0.0.2")],
        );
        assert_eq!(
            request(&snapshot, true),
            (true, vec!["Request cache ingress cache-in".into()])
        );
        assert_eq!(
            request(&snapshot, false),
            (false, vec!["Denied cache ingress ".into()])
        );
    }
}
