//! The key layout in etcd, and the encoding of label sets into keys.
//!
//! Owns every key name this crate reads or writes, so the layout is in one place (the crate
//! documentation shows it). It must not talk to etcd.

use crate::error::ClusterError;

/// The first number of the cluster identity range, as in Cilium.
pub const FIRST_CLUSTER_IDENTITY: u32 = 256;
/// The last number of the cluster identity range, as in Cilium (16 bits).
pub const LAST_CLUSTER_IDENTITY: u32 = 65535;

/// The keys of one cluster: everything lives under `axoneme/<cluster>/`.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    root: String,
}

impl Keys {
    pub(crate) fn new(cluster: &str) -> Keys {
        Keys {
            root: format!("axoneme/{cluster}/"),
        }
    }

    /// Created once per store with create-if-absent, holding a value unique to the store's
    /// life; a different value (or none) means the store lost its data.
    pub(crate) fn epoch(&self) -> String {
        format!("{}epoch", self.root)
    }

    /// Master keys: `identities/id/<id>` holds the encoded labels.
    pub(crate) fn identity_ids(&self) -> String {
        format!("{}identities/id/", self.root)
    }

    pub(crate) fn identity_id(&self, id: u32) -> String {
        format!("{}{id}", self.identity_ids())
    }

    /// Every reference: `identities/value/`.
    pub(crate) fn all_identity_references(&self) -> String {
        format!("{}identities/value/", self.root)
    }

    /// The references to one label set: `identities/value/<labels>/`.
    pub(crate) fn identity_references(&self, labels: &LabelsKey) -> String {
        format!("{}{}/", self.all_identity_references(), labels.as_str())
    }

    /// This node's reference: `identities/value/<labels>/<node>` holds the id.
    pub(crate) fn identity_reference(&self, labels: &LabelsKey, node: &str) -> String {
        format!("{}{node}", self.identity_references(labels))
    }

    /// Every node's endpoints: `endpoints/<node>/<endpoint>` holds the endpoint as JSON.
    pub(crate) fn endpoints(&self) -> String {
        format!("{}endpoints/", self.root)
    }

    pub(crate) fn node_endpoints(&self, node: &str) -> String {
        format!("{}{node}/", self.endpoints())
    }

    /// Every node's heartbeat: `nodes/<node>` holds when the node last renewed its lease.
    pub(crate) fn nodes(&self) -> String {
        format!("{}nodes/", self.root)
    }

    pub(crate) fn node(&self, node: &str) -> String {
        format!("{}{node}", self.nodes())
    }

    /// Policies: `policies/<name>` holds the policy text.
    pub(crate) fn policies(&self) -> String {
        format!("{}policies/", self.root)
    }

    pub(crate) fn policy(&self, name: &str) -> String {
        format!("{}{name}", self.policies())
    }
}

/// A label set encoded as Cilium's kvstore allocator encodes a label array: the labels
/// sorted, each followed by `;` (`k8s:app=luke;k8s:io.kubernetes.pod.namespace=default;`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelsKey(String);

impl LabelsKey {
    /// Encodes labels given as `key=value` or `source:key=value`; order and duplicates do not
    /// matter. A label must not be empty, contain `;` (the separator) or start with `/` (the
    /// key would then be a prefix of another label set's keys).
    pub fn new<S: AsRef<str>>(labels: &[S]) -> Result<LabelsKey, ClusterError> {
        let mut sorted: Vec<&str> = labels.iter().map(AsRef::as_ref).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut encoded = String::new();
        for label in sorted {
            let reason = if label.is_empty() {
                Some("a label must not be empty")
            } else if label.contains(';') {
                Some("`;` separates labels in the key")
            } else if label.starts_with('/') {
                Some("a label must not start with `/`")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(ClusterError::InvalidLabel {
                    label: label.to_owned(),
                    reason,
                });
            }
            encoded.push_str(label);
            encoded.push(';');
        }
        if encoded.is_empty() {
            return Err(ClusterError::InvalidLabel {
                label: String::new(),
                reason: "an identity needs at least one label",
            });
        }
        Ok(LabelsKey(encoded))
    }

    /// The encoded form, as stored in etcd.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The labels, in order.
    pub fn labels(&self) -> Vec<String> {
        split_labels(&self.0)
    }

    /// Takes an encoded form read from etcd as it is.
    pub(crate) fn from_stored(encoded: &str) -> LabelsKey {
        LabelsKey(encoded.to_owned())
    }
}

/// The labels of an encoded label set (Cilium's or ours): the `;`-terminated items.
pub(crate) fn split_labels(encoded: &str) -> Vec<String> {
    encoded
        .split(';')
        .filter(|label| !label.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The part of `key` after `prefix`, when `key` starts with it and is valid UTF-8.
pub(crate) fn suffix<'k>(key: &'k [u8], prefix: &str) -> Option<&'k str> {
    let rest = key.strip_prefix(prefix.as_bytes())?;
    std::str::from_utf8(rest).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_encode_sorted_with_a_trailing_semicolon_like_cilium() {
        let key = LabelsKey::new(&[
            "k8s:io.kubernetes.pod.namespace=default",
            "k8s:app=luke",
            "k8s:app=luke",
        ])
        .unwrap();
        assert_eq!(
            key.as_str(),
            "k8s:app=luke;k8s:io.kubernetes.pod.namespace=default;"
        );
        assert_eq!(
            key.labels(),
            vec!["k8s:app=luke", "k8s:io.kubernetes.pod.namespace=default"]
        );
    }

    #[test]
    fn labels_that_would_break_the_key_are_refused() {
        for bad in ["a=b;c=d", "", "/x=y"] {
            let error = LabelsKey::new(&[bad]).unwrap_err().to_string();
            assert!(error.contains("cannot be stored"), "{error}");
        }
        let none: [&str; 0] = [];
        assert!(LabelsKey::new(&none).is_err());
    }

    #[test]
    fn the_layout_is_under_the_cluster_prefix() {
        let keys = Keys::new("galaxy");
        let labels = LabelsKey::new(&["app=luke"]).unwrap();
        assert_eq!(keys.identity_id(300), "axoneme/galaxy/identities/id/300");
        assert_eq!(
            keys.identity_reference(&labels, "node-a"),
            "axoneme/galaxy/identities/value/app=luke;/node-a"
        );
        assert_eq!(
            keys.node_endpoints("node-a"),
            "axoneme/galaxy/endpoints/node-a/"
        );
        assert_eq!(keys.policy("p"), "axoneme/galaxy/policies/p");
        assert_eq!(keys.epoch(), "axoneme/galaxy/epoch");
        assert_eq!(keys.node("node-a"), "axoneme/galaxy/nodes/node-a");
        assert_eq!(
            suffix(b"axoneme/galaxy/policies/p", &keys.policies()),
            Some("p")
        );
        assert_eq!(suffix(b"other", &keys.policies()), None);
    }
}
