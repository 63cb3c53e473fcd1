//! Checked rules: the serde model turned into what the engine evaluates, with every semantic
//! error reported at its field path.
//!
//! Owns Cilium's rule semantics that do not depend on the deployment (directions, default deny,
//! peers, ports, unsupported features, the namespace scope of a CiliumNetworkPolicy's
//! selectors), and the warnings about accepted but surprising values. It must not resolve
//! selectors against endpoints or compile L7 rules: both need a snapshot's context.

use axoneme_sdk::L7RuleMap;

use crate::error::FieldError;
use crate::model::{
    CidrSetModel, L7RulesModel, PeerRuleModel, PortRuleModel, RuleModel, SelectorModel,
};
use crate::peer::{Cidr, CidrSet, Entity, PeerSpec};
use crate::ports::{parse_port, PortRange};
use crate::selector::Selector;

/// One rule of a policy (`spec`, or an element of `specs`).
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// The endpoints the rule applies to.
    pub subject: Selector,
    /// What the rule says about connections the endpoints accept.
    pub ingress: Section,
    /// What the rule says about connections the endpoints open.
    pub egress: Section,
}

/// One direction of a rule.
#[derive(Debug, Clone, Default)]
pub(crate) struct Section {
    /// Whether the rule puts its endpoints in default deny for this direction.
    pub default_deny: bool,
    /// `ingress` / `egress`.
    pub allow: Vec<AllowRule>,
    /// `ingressDeny` / `egressDeny`.
    pub deny: Vec<DenyRule>,
}

/// An element of `ingress` / `egress`.
#[derive(Debug, Clone)]
pub(crate) struct AllowRule {
    /// The remotes it allows.
    pub peers: PeerSpec,
    /// The ports it allows them, each with its L7 rules. A rule without `toPorts` has one
    /// element covering every port; a rule naming neither remotes nor ports has none.
    pub ports: Vec<PortRule>,
}

/// An element of `toPorts` in an allow rule.
#[derive(Debug, Clone)]
pub(crate) struct PortRule {
    /// Path of the element, for errors about it.
    pub path: String,
    /// The TCP ports it names (UDP and SCTP entries are left out: they never match).
    pub ranges: Vec<PortRange>,
    /// Its `rules`, when it has an `l7proto`.
    pub l7: Option<L7Spec>,
}

/// The `rules` of a `toPorts` element.
#[derive(Debug, Clone)]
pub(crate) struct L7Spec {
    /// `l7proto`, or `kafka` for `rules.kafka`.
    pub proto: String,
    /// The rule maps (`l7` or `kafka`); empty when missing.
    pub rules: Vec<L7RuleMap>,
    /// How the rules were written, for errors about them.
    pub form: L7Form,
}

/// How a `toPorts` element names its L7 protocol and rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum L7Form {
    /// `l7proto` with an `l7` list.
    Generic,
    /// Cilium's `kafka` list, which selects the `kafka` protocol.
    Kafka,
}

impl L7Form {
    /// The field that names the protocol.
    pub(crate) fn proto_field(self) -> &'static str {
        match self {
            L7Form::Generic => "l7proto",
            L7Form::Kafka => "kafka",
        }
    }

    /// The field that holds the rule maps.
    pub(crate) fn rules_field(self) -> &'static str {
        match self {
            L7Form::Generic => "l7",
            L7Form::Kafka => "kafka",
        }
    }
}

/// An element of `ingressDeny` / `egressDeny`.
#[derive(Debug, Clone)]
pub(crate) struct DenyRule {
    /// The remotes it denies.
    pub peers: PeerSpec,
    /// The TCP ports it denies them.
    pub ranges: Vec<PortRange>,
}

/// Which way a section faces; decides which peer fields are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Ingress,
    Egress,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Ingress => "ingress",
            Way::Egress => "egress",
        }
    }
}

/// Checks one rule written at `path`, adding to `warnings` what is accepted but surprising.
pub(crate) fn parse_rule(
    model: &RuleModel,
    path: &str,
    warnings: &mut Vec<FieldError>,
) -> Result<Rule, FieldError> {
    if model.node_selector.is_some() {
        return Err(unsupported(&format!("{path}.nodeSelector"), "nodeSelector"));
    }
    let subject = match &model.endpoint_selector {
        Some(selector) => Selector::parse(selector, &format!("{path}.endpointSelector"))?,
        None => {
            return Err(FieldError::new(
                format!("{path}.endpointSelector"),
                "endpointSelector is required",
            ))
        }
    };
    let defaults = model.enable_default_deny.as_ref();
    let ingress = parse_section(
        model.ingress.as_deref(),
        model.ingress_deny.as_deref(),
        defaults.and_then(|d| d.ingress),
        path,
        Way::Ingress,
        warnings,
    )?;
    let egress = parse_section(
        model.egress.as_deref(),
        model.egress_deny.as_deref(),
        defaults.and_then(|d| d.egress),
        path,
        Way::Egress,
        warnings,
    )?;
    Ok(Rule {
        subject,
        ingress,
        egress,
    })
}

impl Rule {
    /// Scopes the rule to the namespace of its CiliumNetworkPolicy: the endpoints it applies to
    /// and the endpoints its peers select are those of `namespace`, unless a peer selector names
    /// the namespace itself. Returns the namespaces `endpointSelector` named that no longer
    /// count (an `endpointSelector` always applies in the policy's namespace).
    pub(crate) fn scope_to_namespace(&mut self, namespace: &str) -> Vec<String> {
        let dropped = self.subject.select_in_namespace(namespace);
        for section in [&mut self.ingress, &mut self.egress] {
            let allow = section.allow.iter_mut().map(|r| &mut r.peers);
            let deny = section.deny.iter_mut().map(|r| &mut r.peers);
            for peers in allow.chain(deny) {
                for selector in &mut peers.selectors {
                    selector.peer_in_namespace(namespace);
                }
            }
        }
        dropped
    }
}

fn parse_section(
    allow: Option<&[PeerRuleModel]>,
    deny: Option<&[PeerRuleModel]>,
    default_deny: Option<bool>,
    path: &str,
    way: Way,
    warnings: &mut Vec<FieldError>,
) -> Result<Section, FieldError> {
    let (allow_name, deny_name) = match way {
        Way::Ingress => ("ingress", "ingressDeny"),
        Way::Egress => ("egress", "egressDeny"),
    };
    let allow = allow.unwrap_or_default();
    let deny = deny.unwrap_or_default();
    let mut section = Section {
        default_deny: default_deny.unwrap_or(!allow.is_empty() || !deny.is_empty()),
        ..Section::default()
    };
    for (index, model) in allow.iter().enumerate() {
        let at = format!("{path}.{allow_name}[{index}]");
        let peers = parse_peers(model, &at, way, warnings)?;
        let ports = match &model.to_ports {
            Some(list) if !list.is_empty() => list
                .iter()
                .enumerate()
                .map(|(i, p)| parse_port_rule(p, &format!("{at}.toPorts[{i}]"), warnings))
                .collect::<Result<_, _>>()?,
            // Neither remotes nor ports: the rule only turns default deny on.
            _ if peers.is_wildcard() => Vec::new(),
            _ => vec![PortRule {
                path: at,
                ranges: vec![PortRange::ALL],
                l7: None,
            }],
        };
        section.allow.push(AllowRule { peers, ports });
    }
    for (index, model) in deny.iter().enumerate() {
        let at = format!("{path}.{deny_name}[{index}]");
        let peers = parse_peers(model, &at, way, warnings)?;
        let mut ranges = Vec::new();
        match &model.to_ports {
            Some(list) if !list.is_empty() => {
                for (i, port_rule) in list.iter().enumerate() {
                    let rule_at = format!("{at}.toPorts[{i}]");
                    if port_rule.rules.is_some() {
                        return Err(FieldError::new(
                            format!("{rule_at}.rules"),
                            "L7 rules are not allowed in deny rules",
                        ));
                    }
                    ranges.extend(parse_port_rule(port_rule, &rule_at, warnings)?.ranges);
                }
            }
            _ if peers.is_wildcard() => {}
            _ => ranges.push(PortRange::ALL),
        }
        section.deny.push(DenyRule { peers, ranges });
    }
    Ok(section)
}

fn unsupported(field: &str, name: &str) -> FieldError {
    FieldError::new(field, format!("{name} is not supported by axoneme"))
}

fn parse_peers(
    model: &PeerRuleModel,
    at: &str,
    way: Way,
    warnings: &mut Vec<FieldError>,
) -> Result<PeerSpec, FieldError> {
    let unsupported_fields = [
        ("fromRequires", model.from_requires.is_some()),
        ("toRequires", model.to_requires.is_some()),
        ("toServices", model.to_services.is_some()),
        ("toFQDNs", model.to_fqdns.is_some()),
        ("toGroups", model.to_groups.is_some()),
        ("fromGroups", model.from_groups.is_some()),
        ("fromNodes", model.from_nodes.is_some()),
        ("toNodes", model.to_nodes.is_some()),
        ("icmps", model.icmps.is_some()),
        ("authentication", model.authentication.is_some()),
    ];
    if let Some((name, _)) = unsupported_fields.iter().find(|(_, present)| *present) {
        return Err(unsupported(&format!("{at}.{name}"), name));
    }
    let used = PeerFields::of(model, way);
    let other_way = match way {
        Way::Ingress => Way::Egress,
        Way::Egress => Way::Ingress,
    };
    if let Some(name) = PeerFields::of(model, other_way).first_present() {
        return Err(FieldError::new(
            format!("{at}.{name}"),
            format!("{name} is not allowed in an {} rule", way.name()),
        ));
    }
    let [endpoints_name, cidr_name, cidr_set_name, entities_name] = used.names;
    let mut spec = PeerSpec {
        selectors: parse_selectors(used.endpoints, &format!("{at}.{endpoints_name}"))?,
        names_empty_list: used.first_empty().is_some(),
        ..PeerSpec::default()
    };
    if let Some(name) = used.first_empty() {
        warnings.push(FieldError::new(
            format!("{at}.{name}"),
            "the empty list selects no remote, so this rule allows (or denies) nothing \
             (as in Cilium; leave the field out to mean every remote)",
        ));
    }
    for (i, text) in used.cidr.unwrap_or_default().iter().enumerate() {
        let field = format!("{at}.{cidr_name}[{i}]");
        let cidr = Cidr::parse(text).map_err(|m| FieldError::new(field, m))?;
        spec.cidrs.push(CidrSet {
            cidr,
            except: Vec::new(),
        });
    }
    for (i, set) in used.cidr_set.unwrap_or_default().iter().enumerate() {
        spec.cidrs
            .push(parse_cidr_set(set, &format!("{at}.{cidr_set_name}[{i}]"))?);
    }
    for (i, name) in used.entities.unwrap_or_default().iter().enumerate() {
        let field = format!("{at}.{entities_name}[{i}]");
        spec.entities
            .push(Entity::parse(name).map_err(|m| FieldError::new(field, m))?);
    }
    Ok(spec)
}

/// The four peer fields of one direction, with their names.
struct PeerFields<'a> {
    names: [&'static str; 4],
    endpoints: Option<&'a [SelectorModel]>,
    cidr: Option<&'a [String]>,
    cidr_set: Option<&'a [CidrSetModel]>,
    entities: Option<&'a [String]>,
}

impl<'a> PeerFields<'a> {
    fn of(model: &'a PeerRuleModel, way: Way) -> PeerFields<'a> {
        match way {
            Way::Ingress => PeerFields {
                names: ["fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities"],
                endpoints: model.from_endpoints.as_deref(),
                cidr: model.from_cidr.as_deref(),
                cidr_set: model.from_cidr_set.as_deref(),
                entities: model.from_entities.as_deref(),
            },
            Way::Egress => PeerFields {
                names: ["toEndpoints", "toCIDR", "toCIDRSet", "toEntities"],
                endpoints: model.to_endpoints.as_deref(),
                cidr: model.to_cidr.as_deref(),
                cidr_set: model.to_cidr_set.as_deref(),
                entities: model.to_entities.as_deref(),
            },
        }
    }

    /// The name of the first field written as an empty list.
    fn first_empty(&self) -> Option<&'static str> {
        let empty = [
            self.endpoints.is_some_and(|l| l.is_empty()),
            self.cidr.is_some_and(|l| l.is_empty()),
            self.cidr_set.is_some_and(|l| l.is_empty()),
            self.entities.is_some_and(|l| l.is_empty()),
        ];
        self.names
            .iter()
            .zip(empty)
            .find(|(_, e)| *e)
            .map(|(name, _)| *name)
    }

    /// The name of the first field that is written.
    fn first_present(&self) -> Option<&'static str> {
        let present = [
            self.endpoints.is_some(),
            self.cidr.is_some(),
            self.cidr_set.is_some(),
            self.entities.is_some(),
        ];
        self.names
            .iter()
            .zip(present)
            .find(|(_, p)| *p)
            .map(|(name, _)| *name)
    }
}

fn parse_selectors(list: Option<&[SelectorModel]>, at: &str) -> Result<Vec<Selector>, FieldError> {
    list.unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, s)| Selector::parse(s, &format!("{at}[{i}]")))
        .collect()
}

fn parse_cidr_set(model: &CidrSetModel, at: &str) -> Result<CidrSet, FieldError> {
    if model.cidr_group_ref.is_some() {
        return Err(unsupported(&format!("{at}.cidrGroupRef"), "cidrGroupRef"));
    }
    if model.cidr_group_selector.is_some() {
        return Err(unsupported(
            &format!("{at}.cidrGroupSelector"),
            "cidrGroupSelector",
        ));
    }
    let text = model
        .cidr
        .as_deref()
        .ok_or_else(|| FieldError::new(format!("{at}.cidr"), "cidr is required"))?;
    let cidr = Cidr::parse(text).map_err(|m| FieldError::new(format!("{at}.cidr"), m))?;
    let mut except = Vec::new();
    for (i, text) in model.except.iter().flatten().enumerate() {
        let field = format!("{at}.except[{i}]");
        let hole = Cidr::parse(text).map_err(|m| FieldError::new(field.clone(), m))?;
        if !cidr.covers(hole) {
            return Err(FieldError::new(
                field,
                format!("{hole} is not inside {cidr}"),
            ));
        }
        except.push(hole);
    }
    Ok(CidrSet { cidr, except })
}

/// The L7 part of a `toPorts` element's `rules`: `l7proto` with `l7`, or Cilium's `kafka`
/// list, which selects the `kafka` protocol. Cilium allows one kind of L7 rules per object.
fn parse_l7(
    rules: &L7RulesModel,
    at: &str,
    warnings: &mut Vec<FieldError>,
) -> Result<Option<L7Spec>, FieldError> {
    let kinds = [("http", rules.http.is_some()), ("dns", rules.dns.is_some())];
    if let Some((name, _)) = kinds.iter().find(|(_, present)| *present) {
        return Err(FieldError::new(
            format!("{at}.rules.{name}"),
            format!("{name} rules are not supported by axoneme"),
        ));
    }
    let combined = |other: &str| {
        FieldError::new(
            format!("{at}.rules.{other}"),
            format!(
                "{other} cannot be combined with kafka rules in one rules object (as in Cilium)"
            ),
        )
    };
    let (form, proto, maps) = match (&rules.kafka, &rules.l7proto, &rules.l7) {
        (Some(kafka), None, None) => (L7Form::Kafka, "kafka", Some(kafka)),
        (Some(_), Some(_), _) => return Err(combined("l7proto")),
        (Some(_), None, Some(_)) => return Err(combined("l7")),
        (None, Some(proto), l7) => (L7Form::Generic, proto.as_str(), l7.as_ref()),
        (None, None, Some(_)) => {
            return Err(FieldError::new(
                format!("{at}.rules.l7proto"),
                "l7proto is required with l7",
            ))
        }
        (None, None, None) => return Ok(None),
    };
    for (index, map) in maps.into_iter().flatten().enumerate() {
        for (key, _) in map.iter().filter(|(_, value)| value.is_empty()) {
            warnings.push(FieldError::new(
                format!("{at}.rules.{}[{index}].{key}", form.rules_field()),
                format!("the empty value puts no constraint on {key} (as in Cilium)"),
            ));
        }
    }
    Ok(Some(L7Spec {
        proto: proto.to_owned(),
        rules: maps.cloned().unwrap_or_default(),
        form,
    }))
}

fn parse_port_rule(
    model: &PortRuleModel,
    at: &str,
    warnings: &mut Vec<FieldError>,
) -> Result<PortRule, FieldError> {
    let tls_fields = [
        ("serverNames", model.server_names.is_some()),
        ("originatingTLS", model.originating_tls.is_some()),
        ("terminatingTLS", model.terminating_tls.is_some()),
        ("listener", model.listener.is_some()),
    ];
    if let Some((name, _)) = tls_fields.iter().find(|(_, present)| *present) {
        return Err(unsupported(&format!("{at}.{name}"), name));
    }
    let l7 = match &model.rules {
        None => None,
        Some(rules) => parse_l7(rules, at, warnings)?,
    };
    let ports = model.ports.as_deref().unwrap_or_default();
    let mut ranges = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let field = format!("{at}.ports[{i}]");
        let entry = parse_port(port, &field)?;
        if l7.is_some() && entry.range.single().is_none() {
            return Err(FieldError::new(field, "L7 rules need a single port"));
        }
        if entry.tcp {
            ranges.push(entry.range);
        }
    }
    if ports.is_empty() {
        return Err(FieldError::new(
            format!("{at}.ports"),
            "a toPorts element without ports matches no port (as in Cilium); list the ports, \
             or write ports: [{port: \"0\"}] for every port",
        ));
    }
    Ok(PortRule {
        path: at.to_owned(),
        ranges,
        l7,
    })
}
