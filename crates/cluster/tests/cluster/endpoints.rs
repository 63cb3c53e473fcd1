//! Endpoints: published by each node under its lease, seen by every node, gone with their
//! node.

use std::collections::BTreeMap;
use std::time::Duration;

use axoneme_cluster::Session;
use axoneme_policy::EndpointSpec;

use crate::support::{eventually, EtcdExt};
use axoneme_testkit::etcd::Etcd;

fn endpoint(name: &str, ip: &str, app: &str) -> EndpointSpec {
    EndpointSpec {
        name: name.to_owned(),
        ips: vec![ip.parse().unwrap()],
        labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
        namespace: None,
        policy_audit_mode: false,
    }
}

fn names(session: &Session) -> BTreeMap<String, Vec<String>> {
    session
        .endpoints()
        .borrow()
        .nodes
        .iter()
        .map(|(node, endpoints)| {
            (
                node.clone(),
                endpoints.iter().map(|e| e.name.clone()).collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_published_watched_and_vanish_with_their_node() {
    let etcd = Etcd::single();
    let a = Session::connect(etcd.config("galaxy", "node-a"))
        .await
        .unwrap();
    let b = Session::connect(etcd.config("galaxy", "node-b"))
        .await
        .unwrap();
    let luke = endpoint("luke", "10.0.0.1", "luke");
    a.publish_endpoints(&[luke.clone(), endpoint("leia", "10.0.0.2", "leia")])
        .await
        .unwrap();
    b.publish_endpoints(&[endpoint("r2d2", "10.0.1.1", "r2d2")])
        .await
        .unwrap();
    let both = BTreeMap::from([
        (
            "node-a".to_owned(),
            vec!["leia".to_owned(), "luke".to_owned()],
        ),
        ("node-b".to_owned(), vec!["r2d2".to_owned()]),
    ]);
    for session in [&a, &b] {
        eventually("both nodes' endpoints seen", Duration::from_secs(5), || {
            let seen = names(session);
            let both = both.clone();
            async move { seen == both }
        })
        .await;
    }
    // The endpoint arrives whole, as published.
    assert_eq!(b.endpoints().borrow().nodes["node-a"][1], luke);
    assert!(b.revision() > 0);

    // Republishing replaces: leia is gone.
    a.publish_endpoints(std::slice::from_ref(&luke))
        .await
        .unwrap();
    eventually("leia removed", Duration::from_secs(5), || {
        let seen = names(&b);
        async move { seen["node-a"] == ["luke"] }
    })
    .await;

    // Node b dies: its endpoints vanish from a's view when its lease (3 s) expires.
    drop(b);
    eventually("node b's endpoints expire", Duration::from_secs(8), || {
        let seen = names(&a);
        async move { !seen.contains_key("node-b") }
    })
    .await;
    assert_eq!(names(&a)["node-a"], ["luke"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_renewed_and_a_closed_node_vanishes_at_once() {
    let etcd = Etcd::single();
    // A long lease: what vanishes within seconds was removed by the close, not by expiry.
    let long_lease = |node: &str| {
        let mut config = etcd.config("galaxy", node);
        config.lease_ttl = Duration::from_secs(60);
        config
    };
    let mut short = etcd.config("galaxy", "node-a");
    short.lease_ttl = Duration::from_secs(3);
    let a = Session::connect(short).await.unwrap();
    let b = Session::connect(long_lease("node-b")).await.unwrap();
    b.publish_endpoints(&[endpoint("r2d2", "10.0.1.1", "r2d2")])
        .await
        .unwrap();
    eventually("both heartbeats seen", Duration::from_secs(5), || {
        let nodes: Vec<String> = a.nodes().borrow().heartbeats.keys().cloned().collect();
        async move { nodes == ["node-a", "node-b"] }
    })
    .await;
    // A's heartbeat is written at each renewal (every second with a 3 s lease), by its clock.
    let first = b.nodes().borrow().heartbeats["node-a"];
    let age = std::time::SystemTime::now()
        .duration_since(first)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(5), "heartbeat {age:?} old");
    eventually("A's heartbeat renewed", Duration::from_secs(5), || {
        let latest = b.nodes().borrow().heartbeats["node-a"];
        async move { latest > first }
    })
    .await;

    b.close().await.unwrap();
    let closed = tokio::time::Instant::now();
    eventually(
        "B's heartbeat and endpoints gone",
        Duration::from_secs(3),
        || {
            let beating = a.nodes().borrow().heartbeats.contains_key("node-b");
            let hosting = names(&a).contains_key("node-b");
            async move { !beating && !hosting }
        },
    )
    .await;
    assert!(closed.elapsed() < Duration::from_secs(3));
    // Writes after the close fail: the lease is revoked.
    assert!(b
        .publish_endpoints(&[endpoint("r2d2", "10.0.1.1", "r2d2")])
        .await
        .is_err());
}
