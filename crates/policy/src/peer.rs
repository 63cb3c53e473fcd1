//! The remotes a rule talks about: endpoint selectors, CIDRs and entities, first as written
//! ([`PeerSpec`]) and then resolved against the identities of a snapshot ([`PeerSet`]).
//!
//! Owns CIDR and entity semantics, and how a resolved set follows a change of identities
//! ([`IdentityChange`]). It must not know about ports, L7 rules or directions.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::identity::{IdentityView, HOST_ID, WORLD_ID};
use crate::selector::Selector;

/// Entities that exist in Cilium but have no member in an Axoneme deployment: accepted, and
/// they match nothing.
const EMPTY_ENTITIES: [&str; 6] = [
    "remote-node",
    "kube-apiserver",
    "health",
    "init",
    "unmanaged",
    "ingress",
];

/// An IP network, stored with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/len`, `x::y/len`, or a bare address (a single-address network).
    pub(crate) fn parse(text: &str) -> Result<Cidr, String> {
        let bad = || format!("invalid CIDR {text:?}");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(len) => len
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(bad)?,
        };
        Ok(Cidr {
            network: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `addr` is in the network. Families never mix.
    pub(crate) fn contains(self, addr: IpAddr) -> bool {
        match (self.network, addr) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(addr, self.prefix) == self.network
            }
            _ => false,
        }
    }

    /// Whether every address of `other` is in `self`.
    pub(crate) fn covers(self, other: Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network)
    }

    /// Every IPv4 address.
    const ALL_V4: Cidr = Cidr {
        network: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        prefix: 0,
    };

    /// Every IPv6 address.
    const ALL_V6: Cidr = Cidr {
        network: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        prefix: 0,
    };
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `addr` with all but its first `prefix` bits cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let kept = bits
                .checked_shr(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            let masked = kept
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(masked))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let kept = bits
                .checked_shr(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            let masked = kept
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(masked))
        }
    }
}

/// A CIDR with holes (`fromCIDRSet` / `toCIDRSet`); a plain `fromCIDR` has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CidrSet {
    /// The network.
    pub cidr: Cidr,
    /// Sub-networks left out, each inside `cidr`.
    pub except: Vec<Cidr>,
}

impl CidrSet {
    fn contains(&self, addr: IpAddr) -> bool {
        self.cidr.contains(addr) && !self.except.iter().any(|e| e.contains(addr))
    }
}

/// An entity name of `fromEntities` / `toEntities`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entity {
    /// Addresses outside the cluster.
    World,
    /// IPv4 addresses outside the cluster.
    WorldV4,
    /// IPv6 addresses outside the cluster.
    WorldV6,
    /// The local host.
    Host,
    /// Every endpoint and the host.
    Cluster,
    /// Everything.
    All,
    /// A Cilium entity with no member here.
    Empty,
}

impl Entity {
    /// Parses an entity name.
    pub(crate) fn parse(name: &str) -> Result<Entity, String> {
        Ok(match name {
            "world" => Entity::World,
            "world-ipv4" => Entity::WorldV4,
            "world-ipv6" => Entity::WorldV6,
            "host" => Entity::Host,
            "cluster" => Entity::Cluster,
            "all" => Entity::All,
            other if EMPTY_ENTITIES.contains(&other) => Entity::Empty,
            other => {
                return Err(format!(
                    "unknown entity {other:?} (known: world, world-ipv4, world-ipv6, host, \
                     cluster, all, {})",
                    EMPTY_ENTITIES.join(", ")
                ))
            }
        })
    }
}

/// The remotes of one rule as written. No peer field at all means every remote; a peer field
/// written as an empty list means no remote at all (as in Cilium).
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerSpec {
    /// A peer field was written as an empty list (`fromEndpoints: []`): the spec selects no
    /// remote, whatever the other fields say.
    pub names_empty_list: bool,
    /// `fromEndpoints` / `toEndpoints`.
    pub selectors: Vec<Selector>,
    /// `fromCIDR`, `fromCIDRSet` and their egress twins.
    pub cidrs: Vec<CidrSet>,
    /// `fromEntities` / `toEntities`.
    pub entities: Vec<Entity>,
}

impl PeerSpec {
    /// True when the rule names no remote, and so applies to every remote.
    pub(crate) fn is_wildcard(&self) -> bool {
        !self.names_empty_list
            && self.selectors.is_empty()
            && self.cidrs.is_empty()
            && self.entities.is_empty()
    }

    /// Whether the spec selects the endpoint identity `identity` by its labels: a selector
    /// matches it, or it names the cluster entity.
    fn selects(&self, identity: &IdentityView) -> bool {
        if self.names_empty_list {
            return false;
        }
        self.selectors.iter().any(|s| s.matches(&identity.labels))
            || (!identity.labels.reserved && self.entities.contains(&Entity::Cluster))
    }

    /// The set `previous`, resolved from this spec against some identities, resolved against
    /// those identities changed by `change`: the identities that went are taken out, those
    /// that came are added when the spec selects them.
    pub(crate) fn update(&self, previous: &PeerSet, change: &IdentityChange) -> PeerSet {
        let mut set = previous.clone();
        set.ids
            .retain(|id| change.removed.binary_search(id).is_err());
        set.ids.extend(
            change
                .added
                .iter()
                .filter(|identity| self.selects(identity))
                .map(|identity| identity.id),
        );
        set.ids.sort_unstable();
        set.ids.dedup();
        set
    }

    /// Resolves the spec against the identities of a snapshot.
    pub(crate) fn resolve(&self, identities: &[IdentityView]) -> PeerSet {
        if self.names_empty_list {
            return PeerSet {
                any: false,
                ids: Vec::new(),
                cidrs: Vec::new(),
            };
        }
        let mut set = PeerSet {
            any: self.is_wildcard(),
            ids: Vec::new(),
            cidrs: self.cidrs.clone(),
        };
        for identity in identities {
            if self.selectors.iter().any(|s| s.matches(&identity.labels)) {
                set.ids.push(identity.id);
            }
        }
        for entity in &self.entities {
            match entity {
                Entity::World => set.ids.push(WORLD_ID),
                Entity::Host => set.ids.push(HOST_ID),
                Entity::Cluster => {
                    set.ids.push(HOST_ID);
                    set.ids.extend(
                        identities
                            .iter()
                            .filter(|i| !i.labels.reserved)
                            .map(|i| i.id),
                    );
                }
                Entity::All => set.any = true,
                Entity::WorldV4 => set.cidrs.push(CidrSet {
                    cidr: Cidr::ALL_V4,
                    except: vec![],
                }),
                Entity::WorldV6 => set.cidrs.push(CidrSet {
                    cidr: Cidr::ALL_V6,
                    except: vec![],
                }),
                Entity::Empty => {}
            }
        }
        set.ids.sort_unstable();
        set.ids.dedup();
        set
    }
}

/// How the identities of one snapshot differ from those of another. The reserved identities
/// never change; an endpoint identity whose number now stands for other labels went and came.
#[derive(Debug, Default)]
pub(crate) struct IdentityChange {
    /// The numbers of the identities that went.
    removed: Vec<u32>,
    /// The identities that came.
    added: Vec<IdentityView>,
}

impl IdentityChange {
    /// The change from the identities `before` to `after`.
    pub(crate) fn between(before: &[IdentityView], after: &[IdentityView]) -> IdentityChange {
        let old: HashMap<u32, &IdentityView> = before.iter().map(|v| (v.id, v)).collect();
        let new: HashMap<u32, &IdentityView> = after.iter().map(|v| (v.id, v)).collect();
        let same = |a: &IdentityView, b: &IdentityView| a.labels == b.labels;
        let mut removed: Vec<u32> = before
            .iter()
            .filter(|v| !new.get(&v.id).is_some_and(|n| same(v, n)))
            .map(|v| v.id)
            .collect();
        removed.sort_unstable();
        let added = after
            .iter()
            .filter(|v| !old.get(&v.id).is_some_and(|o| same(v, o)))
            .cloned()
            .collect();
        IdentityChange { removed, added }
    }

    /// Whether both sides have the same identities.
    pub(crate) fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }
}

/// The remotes of one rule within a snapshot.
#[derive(Debug, Clone)]
pub(crate) struct PeerSet {
    any: bool,
    ids: Vec<u32>,
    cidrs: Vec<CidrSet>,
}

impl PeerSet {
    /// Whether a remote with identity `id` at `addr` is one of these. CIDRs only select
    /// addresses outside the cluster (the world identity), never endpoints or the host.
    pub(crate) fn matches(&self, id: u32, addr: IpAddr) -> bool {
        self.any
            || self.ids.binary_search(&id).is_ok()
            || (id == WORLD_ID && self.cidrs.iter().any(|c| c.contains(addr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SelectorModel;
    use crate::selector::LabelSet;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parsing_and_containment() {
        let net = Cidr::parse("10.1.2.3/16").unwrap();
        assert_eq!(net.to_string(), "10.1.0.0/16");
        assert!(net.contains(ip("10.1.255.1")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(!net.contains(ip("::ffff:10.1.0.1")));
        let single = Cidr::parse("192.0.2.7").unwrap();
        assert!(single.contains(ip("192.0.2.7")) && !single.contains(ip("192.0.2.8")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("203.0.113.9")));
        assert!(net.covers(Cidr::parse("10.1.3.0/24").unwrap()));
        assert!(!net.covers(Cidr::parse("10.0.0.0/8").unwrap()));
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "fe80::/129",
            "",
            "x/1",
            "10.0.0.0/-1",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    fn view(id: u32, app: &str) -> IdentityView {
        IdentityView {
            id,
            labels: LabelSet {
                labels: [("app".to_owned(), app.to_owned())].into(),
                reserved: false,
            },
        }
    }

    #[test]
    fn an_updated_set_is_the_set_resolved_against_the_changed_identities() {
        let model: SelectorModel = serde_yaml::from_str("{matchLabels: {app: luke}}").unwrap();
        let spec = PeerSpec {
            selectors: vec![Selector::parse(&model, "s").unwrap()],
            ..PeerSpec::default()
        };
        let before = [view(300, "luke"), view(301, "leia"), view(302, "luke")];
        // 300 now stands for other labels, 302 went, 303 and 304 came.
        let after = [
            view(300, "han"),
            view(301, "leia"),
            view(303, "luke"),
            view(304, "leia"),
        ];
        let change = IdentityChange::between(&before, &after);
        assert_eq!(change.removed, [300, 302]);
        let added: Vec<u32> = change.added.iter().map(|v| v.id).collect();
        assert_eq!(added, [300, 303, 304]);
        let updated = spec.update(&spec.resolve(&before), &change);
        assert_eq!(updated.ids, spec.resolve(&after).ids);
        assert_eq!(updated.ids, [303]);
        assert!(IdentityChange::between(&after, &after).is_empty());
    }

    #[test]
    fn entity_names() {
        assert_eq!(Entity::parse("cluster"), Ok(Entity::Cluster));
        assert_eq!(Entity::parse("kube-apiserver"), Ok(Entity::Empty));
        assert!(Entity::parse("everything")
            .unwrap_err()
            .contains("unknown entity"));
    }
}
