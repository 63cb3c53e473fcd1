//! Compiling checked rules for the endpoints of a snapshot, in two steps: each policy alone
//! ([`CompiledPolicy`]: peers resolved to identities, L7 rules compiled by their protocol), then
//! the per-endpoint tables ([`Assembly`]: which entries apply to which endpoint in which
//! direction). A compiled policy depends only on its document and the snapshot's identities, so
//! a snapshot takes over the previous one's for every policy that did not change
//! ([`CompiledPolicy::for_identities`] updates only the peers a change of identities touches).
//!
//! Owns the one-protocol-per-port check and the per-direction tables decisions read. It must
//! not decide connections (that is `snapshot.rs`) nor parse documents.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use axoneme_sdk::{CompiledRules, Direction, Registry};

use crate::error::{FieldError, L7Origin, PolicyError};
use crate::identity::IdentityView;
use crate::peer::{IdentityChange, PeerSet};
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
    pub l7: Option<Arc<CompiledL7>>,
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

/// One policy compiled against the identities of a snapshot: its entries, rule by rule, ready
/// to be given to the endpoints each rule selects. Shared between snapshots while neither the
/// policy nor the identities change.
#[derive(Debug)]
pub(crate) struct CompiledPolicy {
    /// The policy it was compiled from.
    pub policy: Policy,
    /// One per rule of the policy, in order.
    rules: Vec<CompiledRule>,
}

/// The entries of one rule: ingress, then egress.
#[derive(Debug)]
struct CompiledRule {
    sections: [CompiledSection; 2],
}

/// The entries of one direction of one rule.
#[derive(Debug)]
struct CompiledSection {
    /// Whether the rule puts the endpoints it selects in default deny this way.
    default_deny: bool,
    /// In rule order.
    deny: Vec<Arc<DenyEntry>>,
    /// In rule order, each with the path of its `toPorts` element.
    allow: Vec<(Arc<AllowEntry>, Arc<str>)>,
}

impl CompiledPolicy {
    /// Compiles `policy`: its peers resolved against `identities`, its L7 rules by their
    /// protocol in `registry` (even when no endpoint is selected, so that errors always
    /// surface).
    pub(crate) fn compile(
        policy: &Policy,
        identities: &[IdentityView],
        registry: &Registry,
    ) -> Result<CompiledPolicy, PolicyError> {
        let name: Arc<str> = Arc::from(policy.name());
        let mut rules = Vec::with_capacity(policy.rules.len());
        for rule in policy.rules.iter() {
            let mut sections = [&rule.ingress, &rule.egress].map(|section| CompiledSection {
                default_deny: section.default_deny,
                deny: Vec::new(),
                allow: Vec::new(),
            });
            for (compiled, section) in sections.iter_mut().zip([&rule.ingress, &rule.egress]) {
                for deny in &section.deny {
                    compiled.deny.push(Arc::new(DenyEntry {
                        policy: name.clone(),
                        peers: deny.peers.resolve(identities),
                        ranges: deny.ranges.clone(),
                    }));
                }
                for allow in &section.allow {
                    let peers = Arc::new(allow.peers.resolve(identities));
                    for port_rule in &allow.ports {
                        let l7 = match &port_rule.l7 {
                            Some(spec) => Some(Arc::new(compile_l7(
                                policy,
                                registry,
                                spec,
                                &port_rule.path,
                            )?)),
                            None => None,
                        };
                        let entry = Arc::new(AllowEntry {
                            policy: name.clone(),
                            peers: peers.clone(),
                            ranges: port_rule.ranges.clone(),
                            l7,
                        });
                        compiled
                            .allow
                            .push((entry, Arc::from(port_rule.path.as_str())));
                    }
                }
            }
            rules.push(CompiledRule { sections });
        }
        Ok(CompiledPolicy {
            policy: policy.clone(),
            rules,
        })
    }

    /// The same policy for identities that differ from those it was compiled for by `change`:
    /// itself when the change is empty, else new entries whose peers take the change in, and
    /// whose L7 rules are shared with these.
    pub(crate) fn for_identities(self: &Arc<Self>, change: &IdentityChange) -> Arc<Self> {
        if change.is_empty() {
            return Arc::clone(self);
        }
        let rules = self
            .policy
            .rules
            .iter()
            .zip(&self.rules)
            .map(|(rule, compiled)| {
                let [ingress, egress] = &compiled.sections;
                CompiledRule {
                    sections: [
                        ingress.for_identities(&rule.ingress, change),
                        egress.for_identities(&rule.egress, change),
                    ],
                }
            })
            .collect();
        Arc::new(CompiledPolicy {
            policy: self.policy.clone(),
            rules,
        })
    }
}

impl CompiledSection {
    /// The section compiled from `spec` for identities that differ by `change` from those it
    /// was compiled for: its peers updated, the rest shared.
    fn for_identities(&self, spec: &Section, change: &IdentityChange) -> CompiledSection {
        let deny = spec
            .deny
            .iter()
            .zip(&self.deny)
            .map(|(deny, entry)| {
                Arc::new(DenyEntry {
                    policy: entry.policy.clone(),
                    peers: deny.peers.update(&entry.peers, change),
                    ranges: entry.ranges.clone(),
                })
            })
            .collect();
        let mut entries = self.allow.iter();
        let mut allow = Vec::with_capacity(self.allow.len());
        for rule in &spec.allow {
            let group: Vec<_> = entries.by_ref().take(rule.ports.len()).collect();
            let Some((first, _)) = group.first() else {
                continue;
            };
            let peers = Arc::new(rule.peers.update(&first.peers, change));
            for (entry, path) in group {
                let updated = AllowEntry {
                    policy: entry.policy.clone(),
                    peers: peers.clone(),
                    ranges: entry.ranges.clone(),
                    l7: entry.l7.clone(),
                };
                allow.push((Arc::new(updated), path.clone()));
            }
        }
        CompiledSection {
            default_deny: self.default_deny,
            deny,
            allow,
        }
    }
}

/// Compiles the `rules` of the `toPorts` element at `path` of `policy` with its protocol.
fn compile_l7(
    policy: &Policy,
    registry: &Registry,
    spec: &L7Spec,
    path: &str,
) -> Result<CompiledL7, PolicyError> {
    let protocol = registry.get(&spec.proto).ok_or_else(|| {
        let names = registry.names();
        let known = if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        };
        let reason = match spec.form {
            L7Form::Generic => format!("unknown l7proto {:?} (known: {known})", spec.proto),
            L7Form::Kafka => format!("kafka rules need the kafka protocol (known: {known})"),
        };
        policy.error(FieldError::new(
            format!("{path}.rules.{}", spec.form.proto_field()),
            reason,
        ))
    })?;
    let rules = if spec.rules.iter().all(|map| map.is_empty()) {
        None
    } else {
        let compiled = protocol.compile_rules(&spec.rules).map_err(|e| {
            let key = e.key.map(|k| format!(".{k}")).unwrap_or_default();
            policy.error(FieldError::new(
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

/// The per-endpoint tables of a snapshot, built policy by policy in the snapshot's order.
pub(crate) struct Assembly<'a> {
    targets: &'a [Target<'a>],
    compiled: Compiled,
    /// Per target and direction: port -> where its L7 protocol was set.
    claims: Vec<[BTreeMap<u16, L7Origin>; 2]>,
}

impl<'a> Assembly<'a> {
    /// Empty tables for `targets`.
    pub(crate) fn new(targets: &'a [Target<'a>]) -> Assembly<'a> {
        Assembly {
            targets,
            compiled: targets.iter().map(|_| Default::default()).collect(),
            claims: targets.iter().map(|_| Default::default()).collect(),
        }
    }

    /// Gives the entries of `policy` to the targets its rules select, refusing a second L7
    /// protocol on a port of a target and direction.
    pub(crate) fn add(&mut self, policy: &CompiledPolicy) -> Result<(), PolicyError> {
        for (rule, compiled) in policy.policy.rules.iter().zip(&policy.rules) {
            let selected: Vec<usize> = self
                .targets
                .iter()
                .enumerate()
                .filter(|(_, t)| rule.subject.matches(t.labels))
                .map(|(i, _)| i)
                .collect();
            if selected.is_empty() {
                continue;
            }
            for (direction, section) in [Direction::Ingress, Direction::Egress]
                .into_iter()
                .zip(&compiled.sections)
            {
                self.add_section(&policy.policy, direction, section, &selected)?;
            }
        }
        Ok(())
    }

    fn add_section(
        &mut self,
        policy: &Policy,
        direction: Direction,
        section: &CompiledSection,
        selected: &[usize],
    ) -> Result<(), PolicyError> {
        let slot = slot(direction);
        for entry in &section.deny {
            for &i in selected {
                if let Some(per_target) = self.compiled.get_mut(i) {
                    per_target[slot].deny.push(entry.clone());
                }
            }
        }
        for (entry, path) in &section.allow {
            if let Some(l7) = &entry.l7 {
                self.claim(policy, direction, &l7.proto, &entry.ranges, path, selected)?;
            }
            for &i in selected {
                if let Some(per_target) = self.compiled.get_mut(i) {
                    per_target[slot].allow.push(entry.clone());
                }
            }
        }
        if section.default_deny {
            for &i in selected {
                if let Some(per_target) = self.compiled.get_mut(i) {
                    per_target[slot].enforced = true;
                }
            }
        }
        Ok(())
    }

    /// Records that the `selected` targets parse `ranges` with `proto`, refusing a second
    /// protocol on a port.
    fn claim(
        &mut self,
        policy: &Policy,
        direction: Direction,
        proto: &str,
        ranges: &[PortRange],
        path: &str,
        selected: &[usize],
    ) -> Result<(), PolicyError> {
        let slot = slot(direction);
        let origin = L7Origin {
            proto: proto.to_owned(),
            file: policy.source().to_owned(),
            policy: policy.name().to_owned(),
            field: path.to_owned(),
        };
        for &i in selected {
            let Some(claims) = self.claims.get_mut(i) else {
                continue;
            };
            for port in ranges.iter().filter_map(|r| r.single()) {
                match claims[slot].get(&port) {
                    Some(first) if first.proto != proto => {
                        return Err(PolicyError::Conflict {
                            endpoint: self.targets.get(i).map_or("", |t| t.name).to_owned(),
                            direction: direction_name(direction),
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

    /// The compiled ingress and egress policy of each target, in the targets' order.
    pub(crate) fn finish(self) -> Compiled {
        let mut compiled = self.compiled;
        for (per_target, target_claims) in compiled.iter_mut().zip(self.claims) {
            for (policy, ports) in per_target.iter_mut().zip(target_claims) {
                policy.l7_ports = ports
                    .into_iter()
                    .map(|(port, origin)| (port, Arc::from(origin.proto)))
                    .collect();
            }
        }
        compiled
    }
}

/// The compiled policies of a previous snapshot, by policy name, to be taken over by the next
/// one for the policies that did not change.
pub(crate) struct Reusable<'a> {
    by_name: HashMap<&'a str, Vec<&'a Arc<CompiledPolicy>>>,
    change: IdentityChange,
}

impl<'a> Reusable<'a> {
    /// The compiled policies of the snapshot in force, compiled for identities that differ by
    /// `change` from the next snapshot's.
    pub(crate) fn new(previous: &'a [Arc<CompiledPolicy>], change: IdentityChange) -> Self {
        let mut by_name: HashMap<&str, Vec<&Arc<CompiledPolicy>>> = HashMap::new();
        for compiled in previous {
            by_name
                .entry(compiled.policy.name())
                .or_default()
                .push(compiled);
        }
        Reusable { by_name, change }
    }

    /// `policy` compiled for the next snapshot's identities, taken over when the previous
    /// snapshot had it, else compiled.
    pub(crate) fn compiled(
        &self,
        policy: &Policy,
        identities: &[IdentityView],
        registry: &Registry,
    ) -> Result<Arc<CompiledPolicy>, PolicyError> {
        let previous = self
            .by_name
            .get(policy.name())
            .and_then(|list| list.iter().find(|c| c.policy.same_as(policy)));
        match previous {
            Some(compiled) => Ok(compiled.for_identities(&self.change)),
            None => CompiledPolicy::compile(policy, identities, registry).map(Arc::new),
        }
    }
}
