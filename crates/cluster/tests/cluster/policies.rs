//! Policies: written by any node, watched by all with the etcd revision.

use std::time::Duration;

use axoneme_cluster::{ClusterError, Session};

use crate::support::{eventually, EtcdExt};
use axoneme_testkit::etcd::Etcd;

const DENY_ALL: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_written_and_watched_with_their_revision() {
    let etcd = Etcd::single();
    let a = Session::connect(etcd.config("galaxy", "node-a"))
        .await
        .unwrap();
    let b = Session::connect(etcd.config("galaxy", "node-b"))
        .await
        .unwrap();
    // Another cluster in the same etcd is not seen.
    let other = Session::connect(etcd.config("other", "node-a"))
        .await
        .unwrap();
    other.put_policy("foreign", "x").await.unwrap();

    let revision = a.put_policy("deny-all", DENY_ALL).await.unwrap();
    let mut policies = b.policies();
    eventually("the policy reaches node b", Duration::from_secs(5), || {
        let snapshot = policies.borrow_and_update().clone();
        async move { snapshot.policies.get("deny-all").map(String::as_str) == Some(DENY_ALL) }
    })
    .await;
    let snapshot = b.policies().borrow().clone();
    assert!(snapshot.revision >= revision);
    assert_eq!(snapshot.policies.len(), 1);

    assert!(!b
        .create_policy_if_absent("deny-all", "changed")
        .await
        .unwrap());
    assert!(b
        .create_policy_if_absent("allow-luke", "luke")
        .await
        .unwrap());
    assert!(a.delete_policy("deny-all").await.unwrap());
    assert!(!a.delete_policy("deny-all").await.unwrap());
    eventually(
        "the deletion and creation reach node a",
        Duration::from_secs(5),
        || {
            let names: Vec<String> = a.policies().borrow().policies.keys().cloned().collect();
            async move { names == ["allow-luke"] }
        },
    )
    .await;
    let error = a.put_policy("a/b", "x").await.unwrap_err();
    assert!(matches!(error, ClusterError::InvalidPolicyName { .. }));
}
