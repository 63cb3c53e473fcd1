//! The endpoints of every node: this node publishes its own under its lease, and every node
//! watches all of them, so an address on any node resolves to its labels.
//!
//! Owns the endpoint keys (`endpoints/<node>/<name>`, JSON of the policy crate's
//! [`EndpointSpec`]) and the snapshot of all nodes' endpoints. It must not allocate
//! identities or compile policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use axoneme_policy::EndpointSpec;
use etcd_client::{GetOptions, PutOptions, TxnOp};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::ClusterError;
use crate::mirror::{self, View};
use crate::session::{Session, Shared};

/// Every node's endpoints at a revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointsSnapshot {
    /// The revision of the last change applied.
    pub revision: i64,
    /// Node name → its endpoints, sorted by name.
    pub nodes: BTreeMap<String, Vec<EndpointSpec>>,
}

impl Session {
    /// Publishes this node's endpoints, replacing those it published before. They are
    /// attached to the node's lease: they vanish when the node dies.
    pub async fn publish_endpoints(&self, endpoints: &[EndpointSpec]) -> Result<(), ClusterError> {
        let shared = self.shared();
        let mut desired = BTreeMap::new();
        for endpoint in endpoints {
            let json = serde_json::to_string(endpoint).map_err(|source| ClusterError::Encode {
                what: format!("endpoint {:?}", endpoint.name),
                source,
            })?;
            desired.insert(endpoint.name.clone(), json);
        }
        let _writes = shared.writes.lock().await;
        shared.owned().endpoints = desired.clone();
        let prefix = shared.keys.node_endpoints(&shared.config.node);
        let current = shared
            .get(
                || format!("list {prefix}"),
                &prefix,
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await?;
        let mut ops = Vec::new();
        for kv in current.kvs() {
            let Some(name) = crate::keys::suffix(kv.key(), &prefix) else {
                continue;
            };
            if !desired.contains_key(name) {
                ops.push((TxnOp::delete(kv.key(), None), kv.key().len()));
            }
        }
        ops.extend(owned_puts(shared, &prefix, desired));
        shared
            .write_batched("publish this node's endpoints", ops)
            .await?;
        Ok(())
    }
}

/// The puts of this node's endpoints under its lease.
fn owned_puts(
    shared: &Shared,
    prefix: &str,
    endpoints: BTreeMap<String, String>,
) -> Vec<(TxnOp, usize)> {
    let options = PutOptions::new().with_lease(shared.lease());
    endpoints
        .into_iter()
        .map(|(name, json)| {
            let key = format!("{prefix}{name}");
            let bytes = key.len() + json.len();
            (TxnOp::put(key, json, Some(options.clone())), bytes)
        })
        .collect()
}

/// Re-creates this node's endpoints under its current lease.
pub(crate) async fn restore(shared: &Arc<Shared>) -> Result<(), ClusterError> {
    let endpoints = shared.owned().endpoints.clone();
    let prefix = shared.keys.node_endpoints(&shared.config.node);
    let ops = owned_puts(shared, &prefix, endpoints);
    shared
        .write_batched("restore this node's endpoints", ops)
        .await?;
    Ok(())
}

/// Starts watching every node's endpoints.
pub(crate) async fn watch(
    shared: &Arc<Shared>,
) -> Result<(watch::Receiver<EndpointsSnapshot>, JoinHandle<()>), ClusterError> {
    mirror::start::<EndpointsView>(shared, shared.keys.endpoints()).await
}

/// Entries `<node>/<name>` → the endpoint's JSON.
struct EndpointsView;

impl View for EndpointsView {
    type Value = EndpointSpec;
    type Snapshot = EndpointsSnapshot;

    /// The endpoint's name must be the key's (as a node publishes it), so that a node's
    /// endpoints are sorted by name and no two keys stand for one endpoint.
    fn decode(key: &str, value: &[u8]) -> Option<EndpointSpec> {
        let Some((_, name)) = key.split_once('/') else {
            tracing::warn!(key, "endpoint in the kvstore ignored: not <node>/<name>");
            return None;
        };
        match serde_json::from_slice::<EndpointSpec>(value) {
            Ok(endpoint) if endpoint.name == name => Some(endpoint),
            Ok(endpoint) => {
                tracing::warn!(key, name = %endpoint.name,
                    "endpoint in the kvstore ignored: its name is not its key's");
                None
            }
            Err(error) => {
                tracing::warn!(key, %error, "endpoint in the kvstore ignored");
                None
            }
        }
    }

    fn update(snapshot: &mut EndpointsSnapshot, key: &str, endpoint: Option<&EndpointSpec>) {
        let Some((node, name)) = key.split_once('/') else {
            return;
        };
        let endpoints = match snapshot.nodes.get_mut(node) {
            Some(endpoints) => endpoints,
            None if endpoint.is_some() => snapshot.nodes.entry(node.to_owned()).or_default(),
            None => return,
        };
        let position = endpoints.binary_search_by(|e| e.name.as_str().cmp(name));
        match (endpoint, position) {
            (Some(endpoint), Ok(at)) => endpoints[at] = endpoint.clone(),
            (Some(endpoint), Err(at)) => endpoints.insert(at, endpoint.clone()),
            (None, Ok(at)) => {
                endpoints.remove(at);
            }
            (None, Err(_)) => {}
        }
        if endpoints.is_empty() {
            snapshot.nodes.remove(node);
        }
    }

    fn set_revision(snapshot: &mut EndpointsSnapshot, revision: i64) {
        snapshot.revision = revision;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::Entries;

    #[test]
    fn entries_group_by_node_and_bad_values_are_left_out() {
        let luke = br#"{"name":"luke","ips":["10.0.0.1"],"labels":{"app":"luke"}}"#;
        let r2d2 = br#"{"name":"r2d2","ips":["10.0.0.2"]}"#;
        assert!(EndpointsView::decode("node-b/bad", b"not json").is_none());
        assert!(EndpointsView::decode("no-node", r2d2).is_none());
        assert!(
            EndpointsView::decode("node-a/leia", r2d2).is_none(),
            "a name that is not the key's"
        );
        let mut entries = Entries::new();
        for (key, value) in [("node-a/luke", &luke[..]), ("node-a/r2d2", &r2d2[..])] {
            entries.insert(key.to_owned(), EndpointsView::decode(key, value).unwrap());
        }
        let snapshot = EndpointsView::build(&entries, 7);
        assert_eq!(snapshot.revision, 7);
        assert_eq!(snapshot.nodes.len(), 1);
        let names: Vec<_> = snapshot.nodes["node-a"].iter().map(|e| &e.name).collect();
        assert_eq!(names, ["luke", "r2d2"]);
        assert_eq!(snapshot.nodes["node-a"][0].labels["app"], "luke");
    }

    #[test]
    fn updates_one_key_at_a_time_give_the_snapshot_built_whole() {
        let spec = |name: &str, ip: &str| EndpointSpec {
            name: name.to_owned(),
            ips: vec![ip.parse().unwrap()],
            labels: BTreeMap::new(),
            namespace: None,
            policy_audit_mode: false,
        };
        let steps: [(&str, Option<EndpointSpec>); 7] = [
            ("node-b/r2d2", Some(spec("r2d2", "10.0.0.2"))),
            ("node-a/luke", Some(spec("luke", "10.0.0.1"))),
            ("node-b/c3po", Some(spec("c3po", "10.0.0.3"))),
            ("node-b/r2d2", Some(spec("r2d2", "10.0.0.9"))),
            ("node-a/luke", None),
            ("node-a/leia", None),
            ("node-b/bb8", Some(spec("bb8", "10.0.0.4"))),
        ];
        let mut entries = Entries::new();
        let mut snapshot = EndpointsSnapshot::default();
        for (key, endpoint) in steps {
            match &endpoint {
                Some(endpoint) => entries.insert(key.to_owned(), endpoint.clone()),
                None => entries.remove(key),
            };
            EndpointsView::update(&mut snapshot, key, endpoint.as_ref());
            EndpointsView::set_revision(&mut snapshot, 3);
            // Grouped by node, in key order, as the keys stand now.
            let mut expected = EndpointsSnapshot {
                revision: 3,
                nodes: BTreeMap::new(),
            };
            for (key, endpoint) in &entries {
                let node = key.split('/').next().unwrap().to_owned();
                expected
                    .nodes
                    .entry(node)
                    .or_default()
                    .push(endpoint.clone());
            }
            assert_eq!(snapshot, expected, "after {key}");
        }
        assert!(
            !snapshot.nodes.contains_key("node-a"),
            "a node left empty is gone"
        );
        let names: Vec<_> = snapshot.nodes["node-b"].iter().map(|e| &e.name).collect();
        assert_eq!(names, ["bb8", "c3po", "r2d2"]);
    }
}
