//! Compiling checked rules for the endpoints of a snapshot: which rules apply to which endpoint
//! in which direction, with peers resolved to identities and L7 rules compiled by their
//! protocol.
//!
//! Owns the one-protocol-per-port check and the per-direction tables decisions read. It must
//! not decide connections (that is `snapshot.rs`) nor parse documents.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axoneme_sdk::{CompiledRules, Direction, Registry};

use crate::error::{FieldError, L7Origin, PolicyError};
use crate::identity::IdentityView;
use crate::peer::PeerSet;
use crate::policy::Policy;
use crate::ports::PortRange;
use crate::rule::{L7Form, L7Spec, Section};
use crate::selector::LabelSet;

/// What one endpoint's policy says in one direction.
#[derive(Debug, Default)]
pub(crate) struct DirectionPolicy {
    /// Whether some rule put the endpoint in default deny this way.
    pub enforced: bool,
    /// Deny entries, in policy order.
    pub deny: Vec<Arc<DenyEntry>>,
    /// Allow entries, in policy order.
    pub allow: Vec<Arc<AllowEntry>>,
    /// The L7 protocol of each port that has one, sorted by port.
    l7_ports: Vec<(u16, Arc<str>)>,
}

impl DirectionPolicy {
    /// The L7 protocol of `port`, whichever remote connects.
    pub(crate) fn l7_proto(&self, port: u16) -> Option<&Arc<str>> {
        self.l7_ports
            .binary_search_by_key(&port, |(p, _)| *p)
            .ok()
            .and_then(|i| self.l7_ports.get(i))
            .map(|(_, proto)| proto)
    }

    /// Every port with an L7 protocol, sorted by port.
    pub(crate) fn l7_ports(&self) -> &[(u16, Arc<str>)] {
        &self.l7_ports
    }
}

/// A deny rule, ready to match.
#[derive(Debug)]
pub(crate) struct DenyEntry {
    /// The policy it belongs to.
    pub policy: Arc<str>,
    /// The remotes it denies.
    pub peers: PeerSet,
    /// The ports it denies.
    pub ranges: Vec<PortRange>,
}

/// One `toPorts` element of an allow rule (or a whole rule without `toPorts`), ready to match.
#[derive(Debug)]
pub(crate) struct AllowEntry {
    /// The policy it belongs to.
    pub policy: Arc<str>,
    /// The remotes it allows.
    pub peers: Arc<PeerSet>,
    /// The ports it allows.
    pub ranges: Vec<PortRange>,
    /// Its L7 protocol and rules.
    pub l7: Option<CompiledL7>,
}

/// The L7 part of an allow entry.
#[derive(Debug)]
pub(crate) struct CompiledL7 {
    /// The protocol's registered name.
    pub proto: Arc<str>,
    /// The compiled rules; `None` when the entry allows every request.
    pub rules: Option<CompiledRules>,
}

/// Whether a remote and port fall under an entry.
pub(crate) fn covers(
    peers: &PeerSet,
    ranges: &[PortRange],
    id: u32,
    addr: IpAddr,
    port: u16,
) -> bool {
    ranges.iter().any(|r| r.contains(port)) && peers.matches(id, addr)
}

/// An endpoint as compilation sees it.
pub(crate) struct Target<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its labels, for the rules' `endpointSelector`.
    pub labels: &'a LabelSet,
}

/// The compiled ingress and egress policy of each target, in the targets' order.
pub(crate) type Compiled = Vec<[DirectionPolicy; 2]>;

/// Index of a direction in a `[DirectionPolicy; 2]`.
pub(crate) fn slot(direction: Direction) -> usize {
    match direction {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

/// Compiles `policies` for `targets`, resolving peers against `identities`.
pub(crate) fn compile(
    policies: &[Policy],
    targets: &[Target<'_>],
    identities: &[IdentityView],
    registry: &Registry,
) -> Result<Compiled, PolicyError> {
    let mut compiled: Compiled = targets.iter().map(|_| Default::default()).collect();
    // Per target and direction: port -> where its L7 protocol was set.
    let mut claims: Vec<[BTreeMap<u16, L7Origin>; 2]> =
        targets.iter().map(|_| Default::default()).collect();
    for policy in policies {
        let name: Arc<str> = Arc::from(policy.name());
        for rule in &policy.rules {
            let selected: Vec<usize> = targets
                .iter()
                .enumerate()
                .filter(|(_, t)| rule.subject.matches(t.labels))
                .map(|(i, _)| i)
                .collect();
            for (direction, section) in [
                (Direction::Ingress, &rule.ingress),
                (Direction::Egress, &rule.egress),
            ] {
                let mut context = SectionContext {
                    policy,
                    name: &name,
                    identities,
                    registry,
                    direction,
                    selected: &selected,
                    targets,
                    compiled: &mut compiled,
                    claims: &mut claims,
                };
                context.add(section)?;
            }
        }
    }
    for (per_target, target_claims) in compiled.iter_mut().zip(claims) {
        for (policy, ports) in per_target.iter_mut().zip(target_claims) {
            policy.l7_ports = ports
                .into_iter()
                .map(|(port, origin)| (port, Arc::from(origin.proto)))
                .collect();
        }
    }
    Ok(compiled)
}

/// Everything needed to add one section of one rule to the targets it selects.
struct SectionContext<'a> {
    policy: &'a Policy,
    name: &'a Arc<str>,
    identities: &'a [IdentityView],
    registry: &'a Registry,
    direction: Direction,
    selected: &'a [usize],
    targets: &'a [Target<'a>],
    compiled: &'a mut [[DirectionPolicy; 2]],
    claims: &'a mut [[BTreeMap<u16, L7Origin>; 2]],
}

impl SectionContext<'_> {
    fn add(&mut self, section: &Section) -> Result<(), PolicyError> {
        let slot = slot(self.direction);
        for rule in &section.deny {
            let entry = Arc::new(DenyEntry {
                policy: self.name.clone(),
                peers: rule.peers.resolve(self.identities),
                ranges: rule.ranges.clone(),
            });
            for &i in self.selected {
                if let Some(per_target) = self.compiled.get_mut(i) {
                    per_target[slot].deny.push(entry.clone());
                }
            }
        }
        for rule in &section.allow {
            let peers = Arc::new(rule.peers.resolve(self.identities));
            for port_rule in &rule.ports {
                // Compiled even when no endpoint is selected, so that errors always surface.
                let l7 = match &port_rule.l7 {
                    Some(spec) => Some(self.compile_l7(spec, &port_rule.path)?),
                    None => None,
                };
                if let Some(l7) = &l7 {
                    self.claim(&l7.proto, &port_rule.ranges, &port_rule.path)?;
                }
                let entry = Arc::new(AllowEntry {
                    policy: self.name.clone(),
                    peers: peers.clone(),
                    ranges: port_rule.ranges.clone(),
                    l7,
                });
                for &i in self.selected {
                    if let Some(per_target) = self.compiled.get_mut(i) {
                        per_target[slot].allow.push(entry.clone());
                    }
                }
            }
        }
        if section.default_deny {
            for &i in self.selected {
                if let Some(per_target) = self.compiled.get_mut(i) {
                    per_target[slot].enforced = true;
                }
            }
        }
        Ok(())
    }

    /// Compiles the `rules` of the `toPorts` element at `path` with its protocol.
    fn compile_l7(&self, spec: &L7Spec, path: &str) -> Result<CompiledL7, PolicyError> {
        let protocol = self.registry.get(&spec.proto).ok_or_else(|| {
            let names = self.registry.names();
            let known = if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            };
            let reason = match spec.form {
                L7Form::Generic => format!("unknown l7proto {:?} (known: {known})", spec.proto),
                L7Form::Kafka => format!("kafka rules need the kafka protocol (known: {known})"),
            };
            self.policy.error(FieldError::new(
                format!("{path}.rules.{}", spec.form.proto_field()),
                reason,
            ))
        })?;
        let rules = if spec.rules.iter().all(|map| map.is_empty()) {
            None
        } else {
            let compiled = protocol.compile_rules(&spec.rules).map_err(|e| {
                let key = e.key.map(|k| format!(".{k}")).unwrap_or_default();
                self.policy.error(FieldError::new(
                    format!("{path}.rules.{}[{}]{key}", spec.form.rules_field(), e.index),
                    e.reason,
                ))
            })?;
            Some(compiled)
        };
        Ok(CompiledL7 {
            proto: Arc::from(protocol.name()),
            rules,
        })
    }

    /// Records that the selected targets parse `ranges` with `proto`, refusing a second
    /// protocol on a port.
    fn claim(&mut self, proto: &str, ranges: &[PortRange], path: &str) -> Result<(), PolicyError> {
        let slot = slot(self.direction);
        let origin = L7Origin {
            proto: proto.to_owned(),
            file: self.policy.source().to_owned(),
            policy: self.policy.name().to_owned(),
            field: path.to_owned(),
        };
        for &i in self.selected {
            let Some(claims) = self.claims.get_mut(i) else {
                continue;
            };
            for port in ranges.iter().filter_map(|r| r.single()) {
                match claims[slot].get(&port) {
                    Some(first) if first.proto != proto => {
                        return Err(PolicyError::Conflict {
                            endpoint: self.targets.get(i).map_or("", |t| t.name).to_owned(),
                            direction: direction_name(self.direction),
                            port,
                            first: Box::new(first.clone()),
                            second: Box::new(origin),
                        })
                    }
                    Some(_) => {}
                    None => {
                        claims[slot].insert(port, origin.clone());
                    }
                }
            }
        }
        Ok(())
    }
}
