//! The endpoints Axoneme guards, as the runtime describes them, and what a snapshot knows of
//! each.
//!
//! Owns the checks on endpoint descriptions (label keys, names, namespaces) and the labels an
//! endpoint's identity carries: its own, plus the namespace label
//! `k8s:io.kubernetes.pod.namespace` as Cilium gives every pod. It must not allocate identities
//! or evaluate policies.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;
use crate::identity::Identity;
use crate::selector::{parse_label_key, LabelKey, NAMESPACE_LABEL};

/// The namespace of an endpoint that names none, as in Kubernetes.
pub(crate) const DEFAULT_NAMESPACE: &str = "default";

/// An endpoint as configured: a name, its addresses and its labels.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// A name unique among endpoints; listeners refer to endpoints by it.
    pub name: String,
    /// The addresses the endpoint owns. An address belongs to at most one endpoint.
    pub ips: Vec<IpAddr>,
    /// Its labels, which policies select it by. Keys may carry a `k8s:`, `any:`, `container:`
    /// or `unspec:` prefix, which is dropped.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its namespace (`default` when not given): CiliumNetworkPolicies select and admit only
    /// endpoints of their own namespace unless a selector names another.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Audit mode (`policyAuditMode`): a request its policy would deny is forwarded and logged
    /// as audited instead.
    #[serde(default, rename = "policyAuditMode", skip_serializing_if = "is_false")]
    pub policy_audit_mode: bool,
}

/// For `skip_serializing_if`: audit mode off is left out, as older readers expect.
fn is_false(value: &bool) -> bool {
    !value
}

/// An endpoint as a snapshot knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The endpoint's name.
    pub name: String,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
    /// The identity of its labels.
    pub identity: Identity,
}

impl EndpointSpec {
    /// The endpoint's namespace.
    pub fn namespace(&self) -> &str {
        self.namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE)
    }

    /// The labels as selectors see them: source prefixes dropped, and the namespace label
    /// added.
    pub(crate) fn selector_labels(&self) -> Result<BTreeMap<String, String>, PolicyError> {
        let fail = |message: String| PolicyError::Endpoint {
            name: self.name.clone(),
            message,
        };
        let mut labels = plain_labels(&self.labels).map_err(fail)?;
        if labels.contains_key(NAMESPACE_LABEL) {
            return Err(fail(format!(
                "label {NAMESPACE_LABEL:?}: give the namespace as `namespace`"
            )));
        }
        labels.insert(NAMESPACE_LABEL.to_owned(), self.namespace().to_owned());
        Ok(labels)
    }

    /// The labels of the endpoint's identity, sorted `key=value` texts (the namespace label as
    /// `k8s:io.kubernetes.pod.namespace=<namespace>`): what an identity number stands for.
    pub fn identity_labels(&self) -> Result<Vec<String>, PolicyError> {
        Ok(identity_text(&self.selector_labels()?))
    }

    /// Whether `labels` (keys with or without a source prefix such as `k8s:`) are exactly this
    /// endpoint's labels, with or without its namespace label: how `policy trace` finds the
    /// endpoint a set of labels describes.
    pub fn has_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        let (Ok(given), Ok(mut own)) = (plain_labels(labels), plain_labels(&self.labels)) else {
            return false;
        };
        if given.contains_key(NAMESPACE_LABEL) {
            own.insert(NAMESPACE_LABEL.to_owned(), self.namespace().to_owned());
        }
        given == own
    }
}

/// The identity label text of a selector key and value: `key=value`, and the namespace label
/// with its `k8s:` source, as Cilium shows it.
pub(crate) fn label_text(key: &str, value: &str) -> String {
    if key == NAMESPACE_LABEL {
        format!("k8s:{key}={value}")
    } else {
        format!("{key}={value}")
    }
}

/// The identity label texts of selector labels, sorted.
pub(crate) fn identity_text(labels: &BTreeMap<String, String>) -> Vec<String> {
    let mut strings: Vec<String> = labels.iter().map(|(k, v)| label_text(k, v)).collect();
    strings.sort();
    strings
}

/// Labels with their source prefixes dropped; reserved labels and a key given twice with
/// different values are refused.
fn plain_labels(labels: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    let mut plain_labels = BTreeMap::new();
    for (key, value) in labels {
        let plain = match parse_label_key(key) {
            Ok(LabelKey::Plain(plain)) => plain,
            Ok(LabelKey::Reserved(_)) => {
                return Err(format!("label {key:?}: reserved labels cannot be given"))
            }
            Err(message) => return Err(format!("label {key:?}: {message}")),
        };
        if let Some(previous) = plain_labels.insert(plain.clone(), value.clone()) {
            if previous != *value {
                return Err(format!("label {plain:?} is given twice"));
            }
        }
    }
    Ok(plain_labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(labels: &[(&str, &str)], namespace: Option<&str>) -> EndpointSpec {
        EndpointSpec {
            name: "e".into(),
            ips: Vec::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            namespace: namespace.map(str::to_owned),
            policy_audit_mode: false,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_namespace_is_a_label() {
        let luke = spec(&[("k8s:app", "luke")], None);
        assert_eq!(
            luke.selector_labels().unwrap(),
            labels(&[("app", "luke"), (NAMESPACE_LABEL, "default")])
        );
        let rebel = spec(&[("app", "luke")], Some("rebels"));
        assert_eq!(rebel.namespace(), "rebels");
        let error = spec(&[("k8s:io.kubernetes.pod.namespace", "x")], None)
            .selector_labels()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("give the namespace as `namespace`"),
            "{error}"
        );
        assert_eq!(
            label_text(NAMESPACE_LABEL, "default"),
            "k8s:io.kubernetes.pod.namespace=default"
        );
    }

    #[test]
    fn labels_are_compared_with_or_without_prefixes_and_namespace() {
        let luke = spec(&[("app", "luke")], Some("rebels"));
        assert!(luke.has_labels(&labels(&[("app", "luke")])));
        assert!(luke.has_labels(&labels(&[("k8s:app", "luke")])));
        assert!(luke.has_labels(&labels(&[
            ("app", "luke"),
            ("k8s:io.kubernetes.pod.namespace", "rebels")
        ])));
        assert!(!luke.has_labels(&labels(&[
            ("app", "luke"),
            ("io.kubernetes.pod.namespace", "default")
        ])));
        assert!(!luke.has_labels(&labels(&[("app", "luke"), ("tier", "x")])));
    }
}
