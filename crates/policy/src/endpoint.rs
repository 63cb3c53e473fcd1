//! The endpoints Axoneme guards, as the runtime describes them, and what a snapshot knows of
//! each.
//!
//! Owns the checks on endpoint descriptions (label keys, names). It must not allocate
//! identities or evaluate policies.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::error::PolicyError;
use crate::identity::Identity;
use crate::selector::{parse_label_key, LabelKey};

/// An endpoint as configured: a name, its addresses and its labels.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    /// The labels with source prefixes dropped, keyed as selectors see them.
    pub(crate) fn plain_labels(&self) -> Result<BTreeMap<String, String>, PolicyError> {
        let fail = |message: String| PolicyError::Endpoint {
            name: self.name.clone(),
            message,
        };
        let mut labels = BTreeMap::new();
        for (key, value) in &self.labels {
            let plain = match parse_label_key(key) {
                Ok(LabelKey::Plain(plain)) => plain,
                Ok(LabelKey::Reserved(_)) => {
                    return Err(fail(format!(
                        "label {key:?}: reserved labels cannot be given"
                    )))
                }
                Err(message) => return Err(fail(format!("label {key:?}: {message}"))),
            };
            if let Some(previous) = labels.insert(plain.clone(), value.clone()) {
                if previous != *value {
                    return Err(fail(format!("label {plain:?} is given twice")));
                }
            }
        }
        Ok(labels)
    }
}
