//! etcd's faults: a member lost, the quorum lost, the data lost.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axoneme_cluster::{ClusterError, Session};
use axoneme_policy::EndpointSpec;

use crate::support::{dump, eventually, EtcdExt};
use axoneme_testkit::etcd::Etcd;

fn endpoint(name: &str, ip: &str) -> EndpointSpec {
    EndpointSpec {
        name: name.to_owned(),
        ips: vec![ip.parse().unwrap()],
        labels: BTreeMap::from([("app".to_owned(), name.to_owned())]),
        namespace: None,
        policy_audit_mode: false,
    }
}

/// Waits until `session` has seen `count` policies.
async fn policies_seen(session: &Session, count: usize) {
    let mut policies = session.policies();
    eventually("policies seen", Duration::from_secs(10), || {
        let seen = policies.borrow_and_update().policies.len();
        async move { seen == count }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_member_changes_nothing() {
    let mut etcd = Etcd::cluster(3);
    // The test does not wait for leases to expire: a longer one (as in production) keeps a
    // leader election on a loaded machine from outliving it.
    let config = |node: &str| {
        let mut config = etcd.config("galaxy", node);
        config.lease_ttl = Duration::from_secs(10);
        config
    };
    let a = Session::connect(config("node-a")).await.unwrap();
    let b = Session::connect(config("node-b")).await.unwrap();
    let id = a.allocate_identity(&["app=luke"]).await.unwrap();
    a.put_policy("p1", "one").await.unwrap();
    policies_seen(&b, 1).await;

    etcd.stop(0);
    a.put_policy("p2", "two").await.unwrap();
    policies_seen(&b, 2).await;
    assert_eq!(b.allocate_identity(&["app=luke"]).await.unwrap(), id);
    b.publish_endpoints(&[endpoint("r2d2", "10.0.0.2")])
        .await
        .unwrap();
    // Keepalive rounds (a third of 10 s each) pass without the node going stale.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!a.is_stale() && !b.is_stale());
    assert_eq!(a.health().borrow().lease_losses, 0);
    eventually("b's endpoint reaches a", Duration::from_secs(5), || {
        let nodes = a.endpoints().borrow().nodes.len();
        async move { nodes == 1 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_quorum_is_reported_stale_and_the_last_state_kept() {
    let mut etcd = Etcd::cluster(3);
    let a = Session::connect(etcd.config("galaxy", "node-a"))
        .await
        .unwrap();
    let b = Session::connect(etcd.config("galaxy", "node-b"))
        .await
        .unwrap();
    a.put_policy("deny-all", "deny").await.unwrap();
    a.publish_endpoints(&[endpoint("luke", "10.0.0.1")])
        .await
        .unwrap();
    policies_seen(&b, 1).await;
    eventually("a's endpoint reaches b", Duration::from_secs(5), || {
        let nodes = b.endpoints().borrow().nodes.len();
        async move { nodes == 1 }
    })
    .await;
    let policies_before = b.policies().borrow().clone();
    let endpoints_before = b.endpoints().borrow().clone();

    etcd.stop(1);
    etcd.stop(2);
    eventually("both nodes report stale", Duration::from_secs(10), || {
        let stale = a.is_stale() && b.is_stale();
        async move { stale }
    })
    .await;
    let since = b.stale_since().unwrap();
    // Writes fail with an error that says why; the last state stays in place.
    let error = a.put_policy("allow-all", "allow").await.unwrap_err();
    assert!(
        matches!(
            error,
            ClusterError::Unavailable { .. } | ClusterError::Kvstore { .. }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("policy \"allow-all\""),
        "{error}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(*b.policies().borrow(), policies_before);
    assert_eq!(*b.endpoints().borrow(), endpoints_before);
    assert_eq!(b.stale_since(), Some(since));

    // The quorum returns: both converge, a's endpoint is still there (its lease was not
    // lost, or was re-created), and the write refused meanwhile did not happen.
    etcd.start(1);
    etcd.start(2);
    eventually("both nodes fresh again", Duration::from_secs(20), || {
        let fresh = !a.is_stale() && !b.is_stale();
        async move { fresh }
    })
    .await;
    a.put_policy("allow-luke", "luke").await.unwrap();
    let mut policies = b.policies();
    eventually("the new policy reaches b", Duration::from_secs(10), || {
        let names: Vec<String> = policies
            .borrow_and_update()
            .policies
            .keys()
            .cloned()
            .collect();
        async move { names == ["allow-luke", "deny-all"] }
    })
    .await;
    eventually(
        "a's endpoint still seen by b",
        Duration::from_secs(10),
        || {
            let nodes = b.endpoints().borrow().nodes.clone();
            async move { nodes.get("node-a").is_some_and(|e| e.len() == 1) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_store_is_recreated_with_the_same_numbers() {
    let mut etcd = Etcd::single();
    let a = Session::connect(etcd.config("galaxy", "node-a"))
        .await
        .unwrap();
    let b = Session::connect(etcd.config("galaxy", "node-b"))
        .await
        .unwrap();
    let luke = a.allocate_identity(&["app=luke"]).await.unwrap();
    let r2d2 = b.allocate_identity(&["app=r2d2"]).await.unwrap();
    assert_eq!(b.allocate_identity(&["app=luke"]).await.unwrap(), luke);
    a.publish_endpoints(&[endpoint("luke", "10.0.0.1")])
        .await
        .unwrap();
    b.publish_endpoints(&[endpoint("r2d2", "10.0.0.2")])
        .await
        .unwrap();
    a.put_policy("p1", "one").await.unwrap();
    b.put_policy("p2", "two").await.unwrap();
    policies_seen(&a, 2).await;
    policies_seen(&b, 2).await;
    eventually("endpoints seen", Duration::from_secs(5), || {
        let counts = (
            a.endpoints().borrow().nodes.len(),
            b.endpoints().borrow().nodes.len(),
        );
        async move { counts == (2, 2) }
    })
    .await;
    let policies_before = a.policies().borrow().policies.clone();
    let endpoints_before = a.endpoints().borrow().nodes.clone();

    // Record every snapshot node a publishes from now on: none may lose anything.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = {
        let seen = seen.clone();
        let mut policies = a.policies();
        let mut endpoints = a.endpoints();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = policies.changed() => if changed.is_err() { return },
                    changed = endpoints.changed() => if changed.is_err() { return },
                }
                let snapshot = (
                    policies.borrow_and_update().policies.clone(),
                    endpoints.borrow_and_update().nodes.clone(),
                );
                seen.lock().unwrap().push(snapshot);
            }
        })
    };

    etcd.wipe();
    eventually(
        "both nodes handled the data loss",
        Duration::from_secs(15),
        || {
            let losses = (
                a.health().borrow().data_losses,
                b.health().borrow().data_losses,
            );
            async move { losses.0 >= 1 && losses.1 >= 1 }
        },
    )
    .await;
    let mut client = etcd.client().await;
    eventually(
        "etcd holds everything again",
        Duration::from_secs(10),
        || {
            let mut client = client.clone();
            async move {
                let masters = dump(&mut client, "axoneme/galaxy/identities/id/").await;
                let references = dump(&mut client, "axoneme/galaxy/identities/value/").await;
                let endpoints = dump(&mut client, "axoneme/galaxy/endpoints/").await;
                let policies = dump(&mut client, "axoneme/galaxy/policies/").await;
                masters.len() == 2
                    && references.len() == 3
                    && endpoints.len() == 2
                    && policies.len() == 2
            }
        },
    )
    .await;
    let masters = dump(&mut client, "axoneme/galaxy/identities/id/").await;
    assert_eq!(
        masters,
        vec![
            (
                format!("axoneme/galaxy/identities/id/{luke}"),
                "app=luke;".to_owned()
            ),
            (
                format!("axoneme/galaxy/identities/id/{r2d2}"),
                "app=r2d2;".to_owned()
            ),
        ]
        .into_iter()
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    assert_eq!(a.allocate_identity(&["app=r2d2"]).await.unwrap(), r2d2);
    eventually("node a's view converges", Duration::from_secs(10), || {
        let now = (
            a.policies().borrow().policies.clone(),
            a.endpoints().borrow().nodes.clone(),
        );
        let before = (policies_before.clone(), endpoints_before.clone());
        async move { now == before }
    })
    .await;
    recorder.abort();
    for (policies, endpoints) in seen.lock().unwrap().iter() {
        assert_eq!(
            policies, &policies_before,
            "a policy vanished during the recovery"
        );
        assert_eq!(
            endpoints, &endpoints_before,
            "an endpoint vanished during the recovery"
        );
    }
    assert!(!a.is_stale());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_while_its_revision_is_compacted_relists_and_converges() {
    let mut etcd = Etcd::cluster(3);
    let endpoints = etcd.endpoints();
    // Node a reaches etcd only through member 0; node b through the two others.
    let mut config_a = etcd.config("galaxy", "node-a");
    config_a.kvstore.endpoints = vec![endpoints[0].clone()];
    let mut config_b = etcd.config("galaxy", "node-b");
    config_b.kvstore.endpoints = endpoints[1..].to_vec();
    let a = Session::connect(config_a).await.unwrap();
    let b = Session::connect(config_b).await.unwrap();
    b.put_policy("p1", "one").await.unwrap();
    policies_seen(&a, 1).await;

    etcd.stop(0);
    eventually("node a reports stale", Duration::from_secs(10), || {
        let stale = a.is_stale();
        async move { stale }
    })
    .await;
    b.put_policy("p2", "two").await.unwrap();
    b.delete_policy("p1").await.unwrap();
    let revision = b.put_policy("p3", "three").await.unwrap();
    let mut client = etcd_client::Client::connect(&endpoints[1..], None)
        .await
        .unwrap();
    client.compact(revision, None).await.unwrap();
    // Node a still enforces what it had.
    assert_eq!(
        a.policies().borrow().policies.keys().collect::<Vec<_>>(),
        ["p1"]
    );

    etcd.start(0);
    eventually("node a converges", Duration::from_secs(20), || {
        let names: Vec<String> = a.policies().borrow().policies.keys().cloned().collect();
        async move { names == ["p2", "p3"] }
    })
    .await;
    eventually("node a fresh again", Duration::from_secs(10), || {
        let fresh = !a.is_stale();
        async move { fresh }
    })
    .await;
    assert!(a.revision() >= revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_keys_deleted_by_hand_are_written_again() {
    let etcd = Etcd::single();
    let a = Session::connect(etcd.config("galaxy", "node-a"))
        .await
        .unwrap();
    let id = a.allocate_identity(&["app=luke"]).await.unwrap();
    a.publish_endpoints(&[endpoint("luke", "10.0.0.1")])
        .await
        .unwrap();
    let mut client = etcd.client().await;
    for prefix in [
        "axoneme/galaxy/endpoints/",
        "axoneme/galaxy/identities/value/",
    ] {
        let options = etcd_client::DeleteOptions::new().with_prefix();
        let deleted = client.delete(prefix, Some(options)).await.unwrap();
        assert_eq!(deleted.deleted(), 1);
    }
    eventually(
        "node a writes its keys again",
        Duration::from_secs(5),
        || {
            let mut client = client.clone();
            async move {
                let endpoints = dump(&mut client, "axoneme/galaxy/endpoints/").await;
                let references = dump(&mut client, "axoneme/galaxy/identities/value/").await;
                endpoints.len() == 1 && references.len() == 1
            }
        },
    )
    .await;
    assert_eq!(
        dump(&mut client, "axoneme/galaxy/identities/value/").await,
        vec![(
            "axoneme/galaxy/identities/value/app=luke;/node-a".to_owned(),
            id.to_string()
        )]
    );
    assert!(a.health().borrow().repairs >= 1);
    assert_eq!(a.health().borrow().data_losses, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_without_a_reachable_etcd_fails_with_a_clear_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = axoneme_cluster::ClusterConfig::new(
        "galaxy",
        "node-a",
        vec![format!("http://127.0.0.1:{port}")],
    );
    let started = std::time::Instant::now();
    let error = Session::connect(config).await.err().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let message = error.to_string();
    assert!(
        message.contains("the kvstore") && message.contains("epoch"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_longer_than_its_lease_comes_back_with_the_same_keys() {
    let mut etcd = Etcd::cluster(3);
    let endpoints = etcd.endpoints();
    let mut config_a = etcd.config("galaxy", "node-a");
    config_a.kvstore.endpoints = vec![endpoints[0].clone()];
    let mut config_b = etcd.config("galaxy", "node-b");
    config_b.kvstore.endpoints = endpoints[1..].to_vec();
    let a = Session::connect(config_a).await.unwrap();
    let b = Session::connect(config_b).await.unwrap();
    let id = a.allocate_identity(&["app=luke"]).await.unwrap();
    a.publish_endpoints(&[endpoint("luke", "10.0.0.1")])
        .await
        .unwrap();
    let a_seen = |session: &Session| {
        let nodes = session.endpoints().borrow().nodes.clone();
        nodes.contains_key("node-a")
    };
    eventually("b sees a's endpoint", Duration::from_secs(5), || {
        let seen = a_seen(&b);
        async move { seen }
    })
    .await;

    // Cut off for longer than its lease (3 s): to the others node a is dead, its keys go,
    // and its identity, unreferenced, is collected after the grace period (1 s).
    etcd.stop(0);
    eventually(
        "a's endpoint expires for b",
        Duration::from_secs(10),
        || {
            let seen = a_seen(&b);
            async move { !seen }
        },
    )
    .await;
    assert!(a_seen(&a), "node a keeps its last state while cut off");

    etcd.start(0);
    eventually(
        "a's endpoint is back for b",
        Duration::from_secs(20),
        || {
            let seen = a_seen(&b);
            async move { seen }
        },
    )
    .await;
    assert!(a.health().borrow().lease_losses >= 1);
    let mut client = etcd.client().await;
    assert_eq!(
        dump(&mut client, "axoneme/galaxy/identities/value/").await,
        vec![(
            "axoneme/galaxy/identities/value/app=luke;/node-a".to_owned(),
            id.to_string()
        )]
    );
    assert_eq!(b.allocate_identity(&["app=luke"]).await.unwrap(), id);
}

/// A restore of many keys after a wipe ends within the lease it restores them under: a node
/// with a 2 s lease, 2,000 endpoints, 100 identities and 100 policies has everything back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wipe_of_many_keys_is_restored_under_a_short_lease() {
    const ENDPOINTS: usize = 2_000;
    const IDENTITIES: usize = 100;
    const POLICIES: usize = 100;
    let mut etcd = Etcd::single();
    let mut config = etcd.config("galaxy", "node-a");
    config.lease_ttl = Duration::from_secs(2);
    let a = Session::connect(config).await.unwrap();
    let endpoints: Vec<EndpointSpec> = (0..ENDPOINTS)
        .map(|i| {
            endpoint(
                &format!("pod-{i:04}"),
                &format!("10.1.{}.{}", i / 250, i % 250),
            )
        })
        .collect();
    a.publish_endpoints(&endpoints).await.unwrap();
    let mut numbers = BTreeMap::new();
    for k in 0..IDENTITIES {
        let labels = [format!("app=sim-{k}")];
        numbers.insert(
            labels[0].clone(),
            a.allocate_identity(&labels).await.unwrap(),
        );
    }
    for k in 0..POLICIES {
        a.put_policy(&format!("policy-{k:03}"), &format!("text {k}"))
            .await
            .unwrap();
    }
    policies_seen(&a, POLICIES).await;
    let mut client = etcd.client().await;
    let before = [
        dump(&mut client, "axoneme/galaxy/endpoints/").await,
        dump(&mut client, "axoneme/galaxy/identities/").await,
        dump(&mut client, "axoneme/galaxy/policies/").await,
    ];
    assert_eq!(before[0].len(), ENDPOINTS);
    assert_eq!(before[1].len(), 2 * IDENTITIES);

    etcd.wipe();
    let wiped = tokio::time::Instant::now();
    eventually(
        "etcd holds every key again",
        Duration::from_secs(20),
        || {
            let mut client = client.clone();
            let before = before.clone();
            async move {
                let now = [
                    dump(&mut client, "axoneme/galaxy/endpoints/").await,
                    dump(&mut client, "axoneme/galaxy/identities/").await,
                    dump(&mut client, "axoneme/galaxy/policies/").await,
                ];
                now == before
            }
        },
    )
    .await;
    println!("restored {:?} after etcd came back", wiped.elapsed());
    // Still there two lease times later: they were written under the lease the node keeps.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let endpoints_now = dump(&mut client, "axoneme/galaxy/endpoints/").await;
    assert_eq!(endpoints_now, before[0]);
    let health = a.health().borrow().clone();
    assert_eq!(health.data_losses, 1, "{health:?}");
    assert_eq!(
        health.lease_losses, 0,
        "the lease outlived the restore: {health:?}"
    );
    assert!(!a.is_stale());
    for (labels, number) in numbers {
        assert_eq!(a.allocate_identity(&[labels]).await.unwrap(), number);
    }
}

/// A session on a thread of its own, which the test can freeze: while frozen none of its
/// tasks run (its health checks and watches included), as if its host were suspended.
struct Freezable {
    commands: tokio::sync::mpsc::UnboundedSender<std::sync::mpsc::Receiver<()>>,
    health: tokio::sync::watch::Receiver<axoneme_cluster::Health>,
    policies: tokio::sync::watch::Receiver<axoneme_cluster::PoliciesSnapshot>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Freezable {
    fn connect(config: axoneme_cluster::ClusterConfig) -> Freezable {
        let (commands, mut frozen) = tokio::sync::mpsc::unbounded_channel();
        let (ready, started) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let session = Session::connect(config).await.unwrap();
                ready.send((session.health(), session.policies())).unwrap();
                while let Some(thaw) = frozen.recv().await {
                    // Blocks the runtime's only thread: nothing of the session runs.
                    let thaw: std::sync::mpsc::Receiver<()> = thaw;
                    let _ = thaw.recv();
                }
            });
        });
        let (health, policies) = started.recv().unwrap();
        Freezable {
            commands,
            health,
            policies,
            thread: Some(thread),
        }
    }

    /// Freezes the session until the sender returned is used or dropped.
    fn freeze(&self) -> std::sync::mpsc::Sender<()> {
        let (thaw, frozen) = std::sync::mpsc::channel();
        self.commands.send(frozen).unwrap();
        thaw
    }
}

impl Drop for Freezable {
    fn drop(&mut self) {
        let (closed, _) = tokio::sync::mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.commands, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Two wipes in a row, seen by a node that checks only after the second, once the store's
/// revision is past anything it saw: the epoch written by the second recovery differs from
/// the one it knows, so it recovers too and sees what was written since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_checks_only_after_two_wipes_still_finds_its_data_lost() {
    let mut etcd = Etcd::single();
    let a = Session::connect(etcd.config("galaxy", "node-a"))
        .await
        .unwrap();
    let b = Freezable::connect(etcd.config("galaxy", "node-b"));
    a.put_policy("before", "one").await.unwrap();
    policies_seen(&a, 1).await;
    let mut b_policies = b.policies.clone();
    eventually("node b sees the policy", Duration::from_secs(10), || {
        let seen = b_policies.borrow_and_update().policies.len();
        async move { seen == 1 }
    })
    .await;
    let b_revision = b.health.borrow().revision;
    let thaw = b.freeze();

    let mut client = etcd.client().await;
    for wipe in 1..=2 {
        etcd.wipe();
        eventually("node a recovered", Duration::from_secs(15), || {
            let losses = a.health().borrow().data_losses;
            async move { losses >= wipe }
        })
        .await;
    }
    a.put_policy("after", "two").await.unwrap();
    // Past every revision node b has seen, so that only the epoch can tell it.
    let mut revision = 0;
    while revision <= b_revision + 50 {
        let put = client.put("elsewhere/padding", "x", None).await.unwrap();
        revision = put.header().unwrap().revision();
    }
    drop(thaw);

    let expected: BTreeMap<String, String> = dump(&mut client, "axoneme/galaxy/policies/")
        .await
        .into_iter()
        .map(|(key, text)| (key["axoneme/galaxy/policies/".len()..].to_owned(), text))
        .collect();
    assert_eq!(expected.len(), 2, "{expected:?}");
    let mut b_policies = b.policies.clone();
    eventually(
        "node b sees the policy written after the second wipe",
        Duration::from_secs(15),
        || {
            let seen = b_policies.borrow_and_update().policies.clone();
            let expected = expected.clone();
            async move { seen == expected }
        },
    )
    .await;
    let health = b.health.borrow().clone();
    assert!(health.data_losses >= 1, "{health:?}");
}
