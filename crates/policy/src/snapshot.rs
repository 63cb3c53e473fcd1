//! The compiled, immutable policy state the runtime decides connections with.
//!
//! Owns building a snapshot (the guarded endpoints, in a cluster the other nodes' endpoints as
//! remote identities, identities, compiled rules) and the connection-level decision. It must not change after it is built: a new policy or endpoint set means a new
//! snapshot, which takes over from the one in force every compiled policy that did not change
//! (updated for the identities that did), so that a change costs what it touches.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use axoneme_sdk::{Direction, Registry};

use crate::compile::{covers, slot, Assembly, CompiledPolicy, DirectionPolicy, Reusable, Target};
use crate::endpoint::{identity_text, EndpointInfo, EndpointSpec};
use crate::error::PolicyError;
use crate::identity::{Identity, IdentityTable, IdentityView};
use crate::peer::IdentityChange;
use crate::policy::Policy;
use crate::selector::LabelSet;
use crate::verdict::{ConnectionVerdict, PortPolicy, RequestRule};

/// A port of an endpoint, in one direction, whose traffic policy inspects at L7: the traffic a
/// transparent proxy must receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L7Port {
    /// The endpoint's name.
    pub endpoint: String,
    /// The endpoint's addresses.
    pub ips: Vec<IpAddr>,
    /// Ingress (the endpoint is the destination) or egress (the endpoint is the source).
    pub direction: Direction,
    /// The destination port.
    pub port: u16,
    /// The L7 protocol the policy names for it.
    pub proto: Arc<str>,
}

/// What a node of a cluster brings to a snapshot besides its own endpoints. The default is a
/// node alone: no remote endpoints, and identity numbers allocated locally, stable from one
/// snapshot to the next.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterInputs<'a> {
    /// The endpoints other nodes host, named uniquely (the agent names them `<node>/<name>`).
    pub remote: &'a [EndpointSpec],
    /// The cluster's number of every label set ([`EndpointSpec::identity_labels`]) of the
    /// local and remote endpoints, so that the same labels have the same number on every node;
    /// `None` numbers them locally.
    pub numbers: Option<&'a BTreeMap<Vec<String>, u32>>,
}

/// A remote endpoint checked and ready to be numbered: the addresses it owns here (those no
/// local endpoint has), its selector labels and their identity text.
struct RemoteOwner {
    ips: Vec<IpAddr>,
    labels: BTreeMap<String, String>,
    strings: Vec<String>,
}

/// Checks the remote endpoints against each other, leaving out the addresses this node knows
/// as its own: those of its endpoints (`local`) and of the host (`host`).
fn prepare_remote(
    remote: &[EndpointSpec],
    local: &HashMap<IpAddr, &str>,
    host: &HashSet<IpAddr>,
) -> Result<Vec<RemoteOwner>, PolicyError> {
    let mut names = HashSet::new();
    let mut claimed: HashMap<IpAddr, &str> = HashMap::new();
    let mut prepared = Vec::with_capacity(remote.len());
    for spec in remote {
        if !names.insert(spec.name.as_str()) {
            return Err(PolicyError::Endpoint {
                name: spec.name.clone(),
                message: "the name is used by two remote endpoints".to_owned(),
            });
        }
        let mut ips = Vec::with_capacity(spec.ips.len());
        for ip in &spec.ips {
            let ip = ip.to_canonical();
            if local.contains_key(&ip) || host.contains(&ip) {
                continue;
            }
            if let Some(other) = claimed.insert(ip, &spec.name) {
                return Err(PolicyError::Endpoint {
                    name: spec.name.clone(),
                    message: format!("address {ip} already belongs to remote endpoint {other:?}"),
                });
            }
            ips.push(ip);
        }
        let labels = spec.selector_labels()?;
        let strings = identity_text(&labels);
        prepared.push(RemoteOwner {
            ips,
            labels,
            strings,
        });
    }
    Ok(prepared)
}

/// The names of `policies` that only policies in audit mode carry.
fn audited_names(policies: &[Policy]) -> HashSet<String> {
    let mut audited: HashSet<String> = policies
        .iter()
        .filter(|p| p.audit())
        .map(|p| p.name().to_owned())
        .collect();
    if !audited.is_empty() {
        for policy in policies.iter().filter(|p| !p.audit()) {
            audited.remove(policy.name());
        }
    }
    audited
}

/// One endpoint with its compiled policy.
#[derive(Debug)]
struct Guarded {
    info: EndpointInfo,
    /// `policyAuditMode`: every denial on the endpoint is audited.
    audit: bool,
    /// Ingress, then egress.
    directions: [DirectionPolicy; 2],
}

/// An immutable, compiled view of the policies over a set of endpoints.
#[derive(Debug)]
pub struct Snapshot {
    revision: u64,
    policies: Vec<Policy>,
    /// Each policy compiled, in the policies' order; the next snapshot takes over those that
    /// do not change.
    compiled: Vec<Arc<CompiledPolicy>>,
    /// The identities selectors matched when the policies were compiled.
    views: Vec<IdentityView>,
    /// The names every policy of which is in audit mode (empty when none is).
    audited_policies: HashSet<String>,
    identities: IdentityTable,
    endpoints: HashMap<String, Guarded>,
    owners: HashMap<IpAddr, Identity>,
    host_ips: HashSet<IpAddr>,
    host: Identity,
    world: Identity,
}

impl Snapshot {
    /// Compiles `policies` for `endpoints`. `host_ips` are the addresses of the local host.
    /// `previous`, the snapshot in force, keeps identity numbers stable, sets the revision and
    /// lends its compiled policies: a policy whose document did not change is not compiled
    /// again, only updated for the identities that changed. The result is the same as
    /// without it, numbers aside, provided `previous` was built with the same `registry`.
    ///
    /// Fails on an unknown `l7proto`, L7 rules the protocol rejects, two L7 protocols on one
    /// port of one endpoint and direction, and inconsistent endpoints (a name or an address
    /// used twice, bad label keys).
    pub fn build(
        policies: Vec<Policy>,
        endpoints: &[EndpointSpec],
        host_ips: &[IpAddr],
        registry: &Registry,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, PolicyError> {
        let cluster = ClusterInputs::default();
        Snapshot::build_in_cluster(policies, endpoints, cluster, host_ips, registry, previous)
    }

    /// As [`Snapshot::build`], for a node of a cluster: with the endpoints other nodes host,
    /// and the cluster's identity numbers (see [`ClusterInputs`]). A remote endpoint is a remote identity only: its addresses resolve to its labels'
    /// identity, which selectors match, but no listener of this node guards it, so it gets no
    /// policy of its own and [`Snapshot::endpoint`] does not know it.
    ///
    /// An address of a local endpoint stays the local endpoint's, and one of `host_ips` the
    /// host's: this node knows what it hosts, and a remote claim on it is ignored. Remote names
    /// must be unique among remote endpoints (the agent names them `<node>/<name>`), and so must
    /// their other addresses: an address two remote endpoints claim fails the build, as two local
    /// ones do.
    ///
    /// With numbers given, a label set they leave out, or a number below 256 or given to two
    /// label sets, fails the build: an endpoint must not be numbered differently from the
    /// cluster.
    pub fn build_in_cluster(
        policies: Vec<Policy>,
        endpoints: &[EndpointSpec],
        cluster: ClusterInputs<'_>,
        host_ips: &[IpAddr],
        registry: &Registry,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, PolicyError> {
        let mut names = HashSet::new();
        let mut owner_names: HashMap<IpAddr, &str> = HashMap::new();
        let mut prepared = Vec::with_capacity(endpoints.len());
        for spec in endpoints {
            if !names.insert(spec.name.as_str()) {
                return Err(PolicyError::Endpoint {
                    name: spec.name.clone(),
                    message: "the name is used by two endpoints".to_owned(),
                });
            }
            for ip in &spec.ips {
                if let Some(other) = owner_names.insert(ip.to_canonical(), &spec.name) {
                    return Err(PolicyError::Endpoint {
                        name: spec.name.clone(),
                        message: format!("address {ip} already belongs to endpoint {other:?}"),
                    });
                }
            }
            let labels = spec.selector_labels()?;
            let strings = identity_text(&labels);
            prepared.push((spec, labels, strings));
        }
        let host_ips: HashSet<IpAddr> = host_ips.iter().map(|ip| ip.to_canonical()).collect();
        let remote = prepare_remote(cluster.remote, &owner_names, &host_ips)?;

        let sets: BTreeSet<Vec<String>> = prepared
            .iter()
            .map(|(_, _, s)| s)
            .chain(remote.iter().map(|r| &r.strings))
            .cloned()
            .collect();
        let identities =
            match cluster.numbers {
                None => IdentityTable::allocate(previous.map(|p| &p.identities), sets).ok_or_else(
                    || PolicyError::Endpoint {
                        name: String::new(),
                        message: "identity numbers are exhausted".to_owned(),
                    },
                )?,
                Some(numbers) => IdentityTable::given(numbers, sets).map_err(|message| {
                    PolicyError::Endpoint {
                        name: String::new(),
                        message,
                    }
                })?,
            };
        let host = Identity::host();
        let world = Identity::world();
        let mut views: Vec<IdentityView> = vec![host.reserved_view(), world.reserved_view()];
        let mut viewed: HashSet<u32> = views.iter().map(|v| v.id).collect();
        let mut infos = Vec::with_capacity(prepared.len());
        let mut label_sets = Vec::with_capacity(prepared.len());
        for (spec, labels, strings) in prepared {
            let id = identities.id(&strings).unwrap_or_default();
            let identity = Identity {
                id,
                labels: Arc::from(strings),
            };
            if viewed.insert(id) {
                views.push(identity.view(&labels));
            }
            label_sets.push(LabelSet {
                labels,
                reserved: false,
            });
            infos.push((
                EndpointInfo {
                    name: spec.name.clone(),
                    ips: spec.ips.clone(),
                    identity,
                },
                spec.policy_audit_mode,
            ));
        }

        let mut owners = HashMap::new();
        for endpoint in remote {
            let id = identities.id(&endpoint.strings).unwrap_or_default();
            let identity = Identity {
                id,
                labels: Arc::from(endpoint.strings),
            };
            if viewed.insert(id) {
                views.push(identity.view(&endpoint.labels));
            }
            for ip in endpoint.ips {
                owners.insert(ip, identity.clone());
            }
        }

        let targets: Vec<Target<'_>> = infos
            .iter()
            .zip(&label_sets)
            .map(|((info, _), labels)| Target {
                name: &info.name,
                labels,
            })
            .collect();
        let reusable = match previous {
            Some(previous) => Reusable::new(
                &previous.compiled,
                IdentityChange::between(&previous.views, &views),
            ),
            None => Reusable::new(&[], IdentityChange::default()),
        };
        let mut assembly = Assembly::new(&targets);
        let mut compiled_policies = Vec::with_capacity(policies.len());
        for policy in &policies {
            let compiled = reusable.compiled(policy, &views, registry)?;
            assembly.add(&compiled)?;
            compiled_policies.push(compiled);
        }
        let compiled = assembly.finish();

        let mut guarded = HashMap::with_capacity(infos.len());
        for ((info, audit), directions) in infos.into_iter().zip(compiled) {
            for ip in &info.ips {
                owners.insert(ip.to_canonical(), info.identity.clone());
            }
            let guarded_endpoint = Guarded {
                info,
                audit,
                directions,
            };
            guarded.insert(guarded_endpoint.info.name.clone(), guarded_endpoint);
        }
        Ok(Snapshot {
            revision: previous.map_or(1, |p| p.revision.saturating_add(1)),
            audited_policies: audited_names(&policies),
            policies,
            compiled: compiled_policies,
            views,
            identities,
            endpoints: guarded,
            owners,
            host_ips,
            host,
            world,
        })
    }

    /// Whether the endpoint `name` is in audit mode (`policyAuditMode`); `None` for an endpoint
    /// the snapshot does not guard.
    pub fn audited(&self, name: &str) -> Option<bool> {
        self.endpoints.get(name).map(|g| g.audit)
    }

    /// Whether every policy named `name` is in audit mode (and there is one).
    fn policy_audited(&self, name: &str) -> bool {
        !self.audited_policies.is_empty() && self.audited_policies.contains(name)
    }

    /// The snapshot's number: one more than the previous snapshot's, 1 for the first.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The policies it was built from, in order.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The identity of a remote address: the endpoint owning it (local, or remote in cluster
    /// mode), else the host when it is one of the host's addresses, else the world.
    pub fn identity_of(&self, addr: IpAddr) -> &Identity {
        let addr = addr.to_canonical();
        match self.owners.get(&addr) {
            Some(identity) => identity,
            None if self.host_ips.contains(&addr) => &self.host,
            None => &self.world,
        }
    }

    /// The reserved identities: host, then world.
    pub fn reserved_identities(&self) -> [&Identity; 2] {
        [&self.host, &self.world]
    }

    /// An endpoint by name.
    pub fn endpoint(&self, name: &str) -> Option<&EndpointInfo> {
        self.endpoints.get(name).map(|g| &g.info)
    }

    /// Whether policy is enforced on the endpoint `name` in `direction` (some rule selecting it
    /// puts it in default deny), like Cilium's `POLICY (ingress|egress) ENFORCEMENT`; `None`
    /// for an unknown endpoint. An endpoint without enforcement allows everything that way.
    pub fn enforced(&self, name: &str, direction: Direction) -> Option<bool> {
        self.endpoints
            .get(name)
            .map(|g| g.directions[slot(direction)].enforced)
    }

    /// The endpoint owning `addr`, if any.
    pub fn endpoint_at(&self, addr: IpAddr) -> Option<&EndpointInfo> {
        let addr = addr.to_canonical();
        self.endpoints
            .values()
            .map(|g| &g.info)
            .find(|info| info.ips.iter().any(|ip| ip.to_canonical() == addr))
    }

    /// Every endpoint, direction and port with L7 rules, sorted by endpoint name, direction
    /// (ingress first) and port.
    pub fn l7_ports(&self) -> Vec<L7Port> {
        let mut ports = Vec::new();
        for guarded in self.endpoints.values() {
            for direction in [Direction::Ingress, Direction::Egress] {
                for (port, proto) in guarded.directions[slot(direction)].l7_ports() {
                    ports.push(L7Port {
                        endpoint: guarded.info.name.clone(),
                        ips: guarded.info.ips.clone(),
                        direction,
                        port: *port,
                        proto: Arc::clone(proto),
                    });
                }
            }
        }
        ports.sort_by(|a, b| {
            (a.endpoint.as_str(), slot(a.direction), a.port).cmp(&(
                b.endpoint.as_str(),
                slot(b.direction),
                b.port,
            ))
        });
        ports
    }

    /// Decides a new connection of `endpoint` with the remote `remote`, on `port` (the
    /// upstream's port: the endpoint's own for ingress, the remote's for egress).
    ///
    /// A deny rule that matches refuses, whatever allows. Otherwise an endpoint that no rule
    /// puts in default deny this way is unrestricted; one that is needs an allow rule matching
    /// the remote and the port. When the port has an L7 protocol, the verdict carries the
    /// request-level policy of this remote.
    pub fn decide_connection(
        &self,
        endpoint: &str,
        direction: Direction,
        remote: IpAddr,
        port: u16,
    ) -> ConnectionVerdict {
        let Some(guarded) = self.endpoints.get(endpoint) else {
            return ConnectionVerdict::Refused {
                policy_name: String::new(),
                reason: format!("unknown endpoint {endpoint:?}"),
            };
        };
        let policy = &guarded.directions[slot(direction)];
        let remote = remote.to_canonical();
        let id = self.identity_of(remote).id;
        if let Some(deny) = policy
            .deny
            .iter()
            .find(|d| covers(&d.peers, &d.ranges, id, remote, port))
        {
            let section = match direction {
                Direction::Ingress => "ingressDeny",
                Direction::Egress => "egressDeny",
            };
            return ConnectionVerdict::Refused {
                policy_name: deny.policy.to_string(),
                reason: format!("denied by {section} rule"),
            };
        }
        if !policy.enforced {
            return ConnectionVerdict::Unrestricted;
        }
        let mut allowing = policy
            .allow
            .iter()
            .filter(|a| covers(&a.peers, &a.ranges, id, remote, port))
            .peekable();
        let Some(first) = allowing.peek() else {
            return ConnectionVerdict::Refused {
                policy_name: String::new(),
                reason: format!("no rule allows this remote on port {port}"),
            };
        };
        let policy_name = first.policy.to_string();
        let l7 = policy.l7_proto(port).map(|proto| {
            let rules: Vec<RequestRule> = allowing
                .map(|entry| RequestRule {
                    policy: entry.policy.clone(),
                    rules: entry.l7.as_ref().and_then(|l7| l7.rules.clone()),
                })
                .collect();
            let audited = guarded.audit || rules.iter().all(|r| self.policy_audited(&r.policy));
            Arc::new(PortPolicy::allowing(Some(proto.clone()), rules).in_audit_mode(audited))
        });
        ConnectionVerdict::Allowed { policy_name, l7 }
    }

    /// The request-level policy a connection already open on `endpoint` falls under in this
    /// snapshot: deny-all if the connection would now be refused, allow-all if it would be
    /// unrestricted or allowed without L7, else the L7 rules for its remote.
    pub fn request_policy(
        &self,
        endpoint: &str,
        direction: Direction,
        remote: IpAddr,
        port: u16,
    ) -> Arc<PortPolicy> {
        let proto = self
            .endpoints
            .get(endpoint)
            .and_then(|g| g.directions[slot(direction)].l7_proto(port))
            .map(|p| &**p);
        match self.decide_connection(endpoint, direction, remote, port) {
            ConnectionVerdict::Unrestricted => Arc::new(PortPolicy::allow_all(proto)),
            ConnectionVerdict::Refused { policy_name, .. } => {
                let audited = self.endpoints.get(endpoint).is_some_and(|g| g.audit)
                    || (!policy_name.is_empty() && self.policy_audited(&policy_name));
                Arc::new(PortPolicy::deny_all(proto, &policy_name).in_audit_mode(audited))
            }
            ConnectionVerdict::Allowed { l7: Some(l7), .. } => l7,
            ConnectionVerdict::Allowed {
                policy_name,
                l7: None,
            } => Arc::new(PortPolicy::allowing(
                proto.map(Arc::from),
                vec![RequestRule {
                    policy: Arc::from(policy_name),
                    rules: None,
                }],
            )),
        }
    }
}
