//! The policy documents exactly as written: serde types with Cilium's field names.
//!
//! These types only describe the shape of a document; every field a document may carry is listed
//! here so that a misspelt one is rejected with its path. Meaning (selectors, CIDRs, ports,
//! unsupported features) is checked in `rule.rs`, and nothing here may interpret values.

use std::collections::BTreeMap;
use std::fmt;

use axoneme_sdk::L7RuleMap;
use serde::de::{self, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer};

/// One CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy document, without `apiVersion` and
/// `kind`: those are checked and removed before this type is read, so that a foreign document
/// gets a clear error instead of a list of unknown fields.
///
/// Fields named with a leading underscore are accepted for compatibility and never read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Document {
    pub metadata: Metadata,
    pub spec: Option<RuleModel>,
    pub specs: Option<Vec<RuleModel>>,
    /// Free text for people (Cilium's own examples carry one).
    #[serde(rename = "description")]
    pub _description: Option<String>,
    /// Written by the cluster; accepted so that exported objects load.
    #[serde(rename = "status")]
    pub _status: Option<IgnoredAny>,
}

/// The object metadata: `name`, `namespace` and `annotations` are read (of the annotations,
/// only `axoneme.io/audit` means anything); `labels` and the fields the API server sets (as
/// `kubectl get -o yaml` prints them) are tolerated.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Metadata {
    pub name: String,
    pub namespace: Option<String>,
    #[serde(rename = "labels")]
    pub _labels: Option<BTreeMap<String, String>>,
    /// Read for [`crate::AUDIT_ANNOTATION`] only.
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(rename = "uid")]
    pub _uid: Option<IgnoredAny>,
    #[serde(rename = "resourceVersion")]
    pub _resource_version: Option<IgnoredAny>,
    #[serde(rename = "generation")]
    pub _generation: Option<IgnoredAny>,
    #[serde(rename = "creationTimestamp")]
    pub _creation_timestamp: Option<IgnoredAny>,
    #[serde(rename = "deletionTimestamp")]
    pub _deletion_timestamp: Option<IgnoredAny>,
    #[serde(rename = "deletionGracePeriodSeconds")]
    pub _deletion_grace_period_seconds: Option<IgnoredAny>,
    #[serde(rename = "managedFields")]
    pub _managed_fields: Option<IgnoredAny>,
    #[serde(rename = "ownerReferences")]
    pub _owner_references: Option<IgnoredAny>,
    #[serde(rename = "finalizers")]
    pub _finalizers: Option<IgnoredAny>,
    #[serde(rename = "selfLink")]
    pub _self_link: Option<IgnoredAny>,
    #[serde(rename = "generateName")]
    pub _generate_name: Option<IgnoredAny>,
}

/// One rule: the endpoints it applies to and what it allows or denies each way.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RuleModel {
    pub endpoint_selector: Option<SelectorModel>,
    pub node_selector: Option<IgnoredAny>,
    pub ingress: Option<Vec<PeerRuleModel>>,
    pub ingress_deny: Option<Vec<PeerRuleModel>>,
    pub egress: Option<Vec<PeerRuleModel>>,
    pub egress_deny: Option<Vec<PeerRuleModel>>,
    #[serde(rename = "description")]
    pub _description: Option<String>,
    pub enable_default_deny: Option<DefaultDenyModel>,
    #[serde(rename = "labels")]
    pub _labels: Option<IgnoredAny>,
}

/// `enableDefaultDeny`: per direction, whether a selecting rule turns enforcement on.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DefaultDenyModel {
    pub ingress: Option<bool>,
    pub egress: Option<bool>,
}

/// A label selector.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SelectorModel {
    pub match_labels: Option<BTreeMap<String, String>>,
    pub match_expressions: Option<Vec<ExpressionModel>>,
}

/// One `matchExpressions` element.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExpressionModel {
    pub key: String,
    pub operator: Operator,
    pub values: Option<Vec<String>>,
}

/// The operators of `matchExpressions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// An element of `ingress`, `ingressDeny`, `egress` or `egressDeny`. Ingress and egress share
/// one type; a field of the wrong direction is rejected by `rule.rs` with its path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PeerRuleModel {
    pub from_endpoints: Option<Vec<SelectorModel>>,
    #[serde(rename = "fromCIDR")]
    pub from_cidr: Option<Vec<String>>,
    #[serde(rename = "fromCIDRSet")]
    pub from_cidr_set: Option<Vec<CidrSetModel>>,
    pub from_entities: Option<Vec<String>>,
    pub to_endpoints: Option<Vec<SelectorModel>>,
    #[serde(rename = "toCIDR")]
    pub to_cidr: Option<Vec<String>>,
    #[serde(rename = "toCIDRSet")]
    pub to_cidr_set: Option<Vec<CidrSetModel>>,
    pub to_entities: Option<Vec<String>>,
    pub to_ports: Option<Vec<PortRuleModel>>,
    pub from_requires: Option<IgnoredAny>,
    pub to_requires: Option<IgnoredAny>,
    pub to_services: Option<IgnoredAny>,
    #[serde(rename = "toFQDNs")]
    pub to_fqdns: Option<IgnoredAny>,
    pub to_groups: Option<IgnoredAny>,
    pub from_groups: Option<IgnoredAny>,
    pub from_nodes: Option<IgnoredAny>,
    pub to_nodes: Option<IgnoredAny>,
    pub icmps: Option<IgnoredAny>,
    pub authentication: Option<IgnoredAny>,
}

/// An element of `fromCIDRSet` / `toCIDRSet`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CidrSetModel {
    pub cidr: Option<String>,
    pub except: Option<Vec<String>>,
    pub cidr_group_ref: Option<IgnoredAny>,
    pub cidr_group_selector: Option<IgnoredAny>,
}

/// An element of `toPorts`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PortRuleModel {
    pub ports: Option<Vec<PortModel>>,
    pub rules: Option<L7RulesModel>,
    #[serde(rename = "serverNames")]
    pub server_names: Option<IgnoredAny>,
    #[serde(rename = "originatingTLS")]
    pub originating_tls: Option<IgnoredAny>,
    #[serde(rename = "terminatingTLS")]
    pub terminating_tls: Option<IgnoredAny>,
    pub listener: Option<IgnoredAny>,
}

/// An element of `ports`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PortModel {
    pub port: Option<PortValue>,
    pub end_port: Option<i64>,
    pub protocol: Option<String>,
}

/// `rules` of a `toPorts` element.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct L7RulesModel {
    pub l7proto: Option<String>,
    pub l7: Option<Vec<L7RuleMap>>,
    pub http: Option<IgnoredAny>,
    /// Cilium's `kafka` rules: maps of `role`, `apiKey`, `apiVersion`, `clientID` and `topic`,
    /// whose keys and values the `kafka` protocol checks as it compiles them.
    pub kafka: Option<Vec<L7RuleMap>>,
    pub dns: Option<IgnoredAny>,
}

/// A `port` as written: Cilium accepts both `80` and `"80"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PortValue {
    /// A number (never negative).
    Number(u64),
    /// A string, numeric or not.
    Text(String),
}

impl<'de> Deserialize<'de> for PortValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;

        impl Visitor<'_> for PortVisitor {
            type Value = PortValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a string")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortValue, E> {
                Ok(PortValue::Number(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortValue, E> {
                u64::try_from(v)
                    .map(PortValue::Number)
                    .map_err(|_| E::custom(format!("port {v} is out of range 0-65535")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortValue, E> {
                Ok(PortValue::Text(v.to_owned()))
            }
        }

        deserializer.deserialize_any(PortVisitor)
    }
}
