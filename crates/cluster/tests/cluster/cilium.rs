//! `identitySource: cilium`: Cilium's identities and IP cache read from etcd, written here
//! exactly as a Cilium agent writes them:
//! - `cilium/state/identities/v1/id/<identity>` → the label array, each label
//!   `source:key=value;` (Cilium's Documentation/kvstore.rst "Identities";
//!   pkg/identity/key/global_identity.go `GetKey`; pkg/labels `FormatForKVStore`);
//! - `cilium/state/identities/v1/value/<labels>/<node IP>` → the identity number (same doc);
//! - `cilium/state/ip/v1/<cluster>/<ip>` → `IPIdentityPair` as JSON with the fields `IP`,
//!   `Mask`, `HostIP`, `ID`, `Key`, `Metadata`, `K8sNamespace`, `K8sPodName`
//!   (Documentation/kvstore.rst "Endpoints"; pkg/identity/identity.go `IPIdentityPair`).

use std::net::IpAddr;
use std::time::Duration;

use axoneme_cluster::{ClusterError, IdentitySource, Session};

use crate::support::{dump, eventually, EtcdExt};
use axoneme_testkit::etcd::Etcd;

const LUKE_LABELS: &str = "k8s:app=luke;k8s:io.cilium.k8s.policy.cluster=default;k8s:io.kubernetes.pod.namespace=default;";

fn ip_pair(ip: &str, id: u32) -> String {
    format!(
        r#"{{"IP":"{ip}","Mask":null,"HostIP":"192.168.56.11","ID":{id},"Key":0,"Metadata":"cilium-global:default:k8s1:1234","K8sNamespace":"default","K8sPodName":"luke-7d9c"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cilium_identities_and_ip_cache_are_read() {
    let etcd = Etcd::single();
    let mut client = etcd.client().await;
    client
        .put("cilium/state/identities/v1/id/31337", LUKE_LABELS, None)
        .await
        .unwrap();
    client
        .put(
            format!("cilium/state/identities/v1/value/{LUKE_LABELS}/192.168.56.11"),
            "31337",
            None,
        )
        .await
        .unwrap();
    client
        .put(
            "cilium/state/ip/v1/default/10.0.0.1",
            ip_pair("10.0.0.1", 31337),
            None,
        )
        .await
        .unwrap();
    // Another Cilium cluster's IP cache is not this one's.
    client
        .put(
            "cilium/state/ip/v1/other/10.0.0.9",
            ip_pair("10.0.0.9", 4000),
            None,
        )
        .await
        .unwrap();
    let cilium_keys = dump(&mut client, "cilium/").await;

    let mut config = etcd.config("default", "node-a");
    config.identity_source = IdentitySource::Cilium;
    let node = Session::connect(config).await.unwrap();
    let snapshot = node.identities().borrow().clone();
    assert_eq!(
        snapshot.identities[&31337],
        vec![
            "k8s:app=luke",
            "k8s:io.cilium.k8s.policy.cluster=default",
            "k8s:io.kubernetes.pod.namespace=default"
        ]
    );
    let luke_ip: IpAddr = "10.0.0.1".parse().unwrap();
    assert_eq!(snapshot.ips.get(&luke_ip), Some(&31337));
    assert_eq!(snapshot.ips.len(), 1);

    // Cilium moves the address to another identity: the snapshot follows.
    client
        .put(
            "cilium/state/ip/v1/default/10.0.0.1",
            ip_pair("10.0.0.1", 31338),
            None,
        )
        .await
        .unwrap();
    let mut identities = node.identities();
    eventually(
        "the IP cache change is seen",
        Duration::from_secs(5),
        || {
            let id = identities.borrow_and_update().ips.get(&luke_ip).copied();
            async move { id == Some(31338) }
        },
    )
    .await;

    // This node only reads Cilium's keys.
    let error = node.allocate_identity(&["app=luke"]).await.unwrap_err();
    assert!(matches!(error, ClusterError::ReadOnlyIdentities), "{error}");
    let mut after = dump(&mut client, "cilium/").await;
    after.retain(|(key, _)| key != "cilium/state/ip/v1/default/10.0.0.1");
    let mut before = cilium_keys;
    before.retain(|(key, _)| key != "cilium/state/ip/v1/default/10.0.0.1");
    assert_eq!(after, before);
}
