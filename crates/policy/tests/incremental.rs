//! A snapshot built from the one in force (taking over its compiled policies) decides exactly as
//! one compiled from scratch: random sequences of policy, endpoint and identity changes are
//! applied one at a time, each built both ways, and every verdict of the two compared.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use axoneme_policy::{
    parse_policies, ClusterInputs, ConnectionVerdict, EndpointSpec, Policy, Snapshot,
};
use axoneme_sdk::Direction;
use common::{registry, request, short};
use proptest::prelude::*;

/// The label values endpoints and selectors use.
const APPS: [&str; 4] = ["a", "b", "c", "d"];
/// Local and remote endpoint slots.
const SLOTS: u8 = 4;
/// The host's address.
const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
/// An address no endpoint has: the world's, inside the CIDR policies name.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

/// The remotes a generated rule names.
#[derive(Debug, Clone)]
enum Peer {
    App(usize),
    Cluster,
    Cidr,
    Host,
    Anyone,
}

/// One generated policy: a rule selecting `app` (every endpoint when `None`).
#[derive(Debug, Clone)]
struct PolicySpec {
    selected: Option<usize>,
    egress: bool,
    peer: Peer,
    port: u16,
    /// The L7 protocol (`test` or `other`) and the command allowed (any when `None`; `bad`
    /// is refused by the protocol).
    l7: Option<(&'static str, Option<&'static str>)>,
    denied: Option<Peer>,
    audit: bool,
}

fn peer_json(peer: &Peer, egress: bool) -> (String, serde_json::Value) {
    let way = if egress { "to" } else { "from" };
    match peer {
        Peer::App(k) => (
            format!("{way}Endpoints"),
            serde_json::json!([{"matchLabels": {"app": APPS[*k]}}]),
        ),
        Peer::Cluster => (format!("{way}Entities"), serde_json::json!(["cluster"])),
        Peer::Host => (format!("{way}Entities"), serde_json::json!(["host"])),
        Peer::Anyone => (format!("{way}Entities"), serde_json::json!(["all"])),
        Peer::Cidr => (format!("{way}CIDR"), serde_json::json!(["203.0.113.0/24"])),
    }
}

impl PolicySpec {
    fn text(&self, name: &str) -> String {
        let selector = match self.selected {
            Some(k) => serde_json::json!({"matchLabels": {"app": APPS[k]}}),
            None => serde_json::json!({}),
        };
        let (peer_key, peer) = peer_json(&self.peer, self.egress);
        let mut port = serde_json::json!({"ports": [{"port": self.port.to_string()}]});
        if let Some((proto, cmd)) = self.l7 {
            let rule = match cmd {
                Some(cmd) => serde_json::json!({"cmd": cmd}),
                None => serde_json::json!({}),
            };
            port["rules"] = serde_json::json!({"l7proto": proto, "l7": [rule]});
        }
        let mut allow = serde_json::json!({"toPorts": [port]});
        allow[peer_key] = peer;
        let (section, deny_section) = if self.egress {
            ("egress", "egressDeny")
        } else {
            ("ingress", "ingressDeny")
        };
        let mut spec = serde_json::json!({"endpointSelector": selector});
        spec[section] = serde_json::json!([allow]);
        if let Some(denied) = &self.denied {
            let (key, value) = peer_json(denied, self.egress);
            let mut deny = serde_json::json!({"toPorts": [{"ports": [{"port": "81"}]}]});
            deny[key] = value;
            spec[deny_section] = serde_json::json!([deny]);
        }
        let mut metadata = serde_json::json!({"name": name});
        if self.audit {
            metadata["annotations"] = serde_json::json!({"axoneme.io/audit": "true"});
        }
        serde_json::json!({
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": metadata,
            "spec": spec,
        })
        .to_string()
    }
}

/// One change of the inputs.
#[derive(Debug, Clone)]
enum Change {
    /// Adds or replaces policy `p<n>`.
    PutPolicy(u8, PolicySpec),
    DeletePolicy(u8),
    /// Puts local endpoint slot `n` with label `app`.
    PutLocal(u8, usize),
    DeleteLocal(u8),
    PutRemote(u8, usize),
    DeleteRemote(u8),
    /// Swaps the identity numbers of two label sets.
    SwapNumbers(usize, usize),
}

fn peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        4 => (0..APPS.len()).prop_map(Peer::App),
        1 => Just(Peer::Cluster),
        1 => Just(Peer::Cidr),
        1 => Just(Peer::Host),
        1 => Just(Peer::Anyone),
    ]
}

fn policy_spec() -> impl Strategy<Value = PolicySpec> {
    let l7 = prop_oneof![
        3 => Just(None),
        5 => prop_oneof![Just(None), Just(Some("get")), Just(Some("put"))]
            .prop_map(|cmd| Some(("test", cmd))),
        1 => Just(Some(("other", None))),
        1 => Just(Some(("test", Some("bad")))),
    ];
    (
        prop::option::weighted(0.8, 0..APPS.len()),
        prop::bool::weighted(0.3),
        peer(),
        prop_oneof![Just(80u16), Just(81u16)],
        l7,
        prop::option::weighted(0.3, peer()),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(selected, egress, peer, port, l7, denied, audit)| PolicySpec {
                selected,
                egress,
                peer,
                port,
                l7,
                denied,
                audit,
            },
        )
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (0..4u8, policy_spec()).prop_map(|(n, p)| Change::PutPolicy(n, p)),
        1 => (0..4u8).prop_map(Change::DeletePolicy),
        2 => (0..SLOTS, 0..APPS.len()).prop_map(|(n, k)| Change::PutLocal(n, k)),
        1 => (0..SLOTS).prop_map(Change::DeleteLocal),
        2 => (0..SLOTS, 0..APPS.len()).prop_map(|(n, k)| Change::PutRemote(n, k)),
        1 => (0..SLOTS).prop_map(Change::DeleteRemote),
        1 => (0..APPS.len(), 0..APPS.len()).prop_map(|(a, b)| Change::SwapNumbers(a, b)),
    ]
}

fn endpoint(name: String, ip: Ipv4Addr, app: usize) -> EndpointSpec {
    EndpointSpec {
        name,
        ips: vec![IpAddr::V4(ip)],
        labels: BTreeMap::from([("app".to_owned(), APPS[app].to_owned())]),
        namespace: None,
        policy_audit_mode: false,
    }
}

fn local(slot: u8, app: usize) -> EndpointSpec {
    endpoint(
        format!("local-{slot}"),
        Ipv4Addr::new(10, 0, 0, slot + 1),
        app,
    )
}

fn remote(slot: u8, app: usize) -> EndpointSpec {
    endpoint(
        format!("node/remote-{slot}"),
        Ipv4Addr::new(10, 1, 0, slot + 1),
        app,
    )
}

/// The inputs of a snapshot.
struct Inputs {
    /// Policy name → its text and what it parsed into (kept while the text is unchanged, as
    /// an agent keeps the policies of unchanged texts).
    policies: BTreeMap<String, (String, Vec<Policy>)>,
    local: BTreeMap<u8, usize>,
    remote: BTreeMap<u8, usize>,
    numbers: BTreeMap<Vec<String>, u32>,
}

impl Inputs {
    fn new() -> Inputs {
        let numbers = (0..APPS.len())
            .map(|k| {
                let labels = local(0, k).identity_labels().unwrap();
                (labels, 1000 + u32::try_from(k).unwrap())
            })
            .collect();
        Inputs {
            policies: BTreeMap::new(),
            local: BTreeMap::new(),
            remote: BTreeMap::new(),
            numbers,
        }
    }

    fn apply(&mut self, change: &Change) {
        match change {
            Change::PutPolicy(n, spec) => {
                let name = format!("p{n}");
                let text = spec.text(&name);
                if self.policies.get(&name).map(|(t, _)| t) != Some(&text) {
                    let parsed = parse_policies(&name, &text).unwrap();
                    self.policies.insert(name, (text, parsed));
                }
            }
            Change::DeletePolicy(n) => {
                self.policies.remove(&format!("p{n}"));
            }
            Change::PutLocal(n, k) => {
                self.local.insert(*n, *k);
            }
            Change::DeleteLocal(n) => {
                self.local.remove(n);
            }
            Change::PutRemote(n, k) => {
                self.remote.insert(*n, *k);
            }
            Change::DeleteRemote(n) => {
                self.remote.remove(n);
            }
            Change::SwapNumbers(a, b) => {
                let a = local(0, *a).identity_labels().unwrap();
                let b = local(0, *b).identity_labels().unwrap();
                let (x, y) = (self.numbers[&a], self.numbers[&b]);
                self.numbers.insert(a, y);
                self.numbers.insert(b, x);
            }
        }
    }

    fn build(&self, previous: Option<&Snapshot>) -> Result<Snapshot, String> {
        let policies: Vec<Policy> = self
            .policies
            .values()
            .flat_map(|(_, parsed)| parsed.iter().cloned())
            .collect();
        let local: Vec<EndpointSpec> = self.local.iter().map(|(n, k)| local(*n, *k)).collect();
        let remote: Vec<EndpointSpec> = self.remote.iter().map(|(n, k)| remote(*n, *k)).collect();
        let cluster = ClusterInputs {
            remote: &remote,
            numbers: Some(&self.numbers),
        };
        Snapshot::build_in_cluster(
            policies,
            &local,
            cluster,
            &[IpAddr::V4(HOST)],
            &registry(),
            previous,
        )
        .map_err(|e| e.to_string())
    }
}

/// Every address a verdict may depend on.
fn addresses() -> Vec<IpAddr> {
    let mut addresses = vec![IpAddr::V4(HOST), IpAddr::V4(OUTSIDE)];
    for slot in 0..SLOTS {
        addresses.push(IpAddr::V4(Ipv4Addr::new(10, 0, 0, slot + 1)));
        addresses.push(IpAddr::V4(Ipv4Addr::new(10, 1, 0, slot + 1)));
    }
    addresses
}

/// Everything the runtime can read from a snapshot, in words.
fn verdicts(snapshot: &Snapshot) -> Vec<String> {
    let mut seen = Vec::new();
    for addr in addresses() {
        let identity = snapshot.identity_of(addr);
        seen.push(format!("{addr} is {} {:?}", identity.id, identity.labels));
    }
    seen.push(format!("{:?}", snapshot.l7_ports()));
    for slot in 0..SLOTS + 1 {
        let name = format!("local-{slot}");
        seen.push(format!(
            "{name}: {:?} {:?}",
            snapshot.endpoint(&name),
            snapshot.audited(&name)
        ));
        for direction in [Direction::Ingress, Direction::Egress] {
            seen.push(format!("{:?}", snapshot.enforced(&name, direction)));
            for remote in addresses() {
                for port in [80, 81, 82] {
                    let verdict = snapshot.decide_connection(&name, direction, remote, port);
                    let mut line =
                        format!("{name} {direction:?} {remote}:{port} {}", short(&verdict));
                    if let ConnectionVerdict::Refused { reason, .. } = &verdict {
                        line.push_str(&format!(" ({reason})"));
                    }
                    let policy = snapshot.request_policy(&name, direction, remote, port);
                    line.push_str(&format!(
                        " {:?} {:?} audited={}",
                        policy.proto(),
                        policy.policy_names(),
                        policy.is_audited()
                    ));
                    for cmd in ["get", "put"] {
                        line.push_str(&format!(" {cmd}={}", request(&policy, cmd)));
                    }
                    seen.push(line);
                }
            }
        }
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn an_incremental_build_decides_as_a_build_from_scratch(
        changes in prop::collection::vec(change(), 1..40)
    ) {
        let mut inputs = Inputs::new();
        let mut in_force: Option<Snapshot> = None;
        for change in &changes {
            inputs.apply(change);
            let incremental = inputs.build(in_force.as_ref());
            let scratch = inputs.build(None);
            match (incremental, scratch) {
                (Ok(incremental), Ok(scratch)) => {
                    let (seen, expected) = (verdicts(&incremental), verdicts(&scratch));
                    let differing: Vec<(&String, &String)> =
                        seen.iter().zip(&expected).filter(|(a, b)| a != b).take(3).collect();
                    prop_assert_eq!(seen.len(), expected.len());
                    prop_assert!(differing.is_empty(), "after {:?}: {:?}", change, differing);
                    in_force = Some(incremental);
                }
                (Err(incremental), Err(scratch)) => {
                    prop_assert_eq!(incremental, scratch, "after {:?}", change);
                }
                (incremental, scratch) => {
                    prop_assert!(
                        false,
                        "after {:?}: incremental {:?}, from scratch {:?}",
                        change,
                        incremental.map(|s| s.revision()),
                        scratch.map(|s| s.revision())
                    );
                }
            }
        }
    }
}
