//! Identity allocation: race-free across nodes, the same number everywhere, references that
//! die with their node's lease, numbers released after the grace period and kept across a
//! node's restart.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axoneme_cluster::{ClusterError, Session, FIRST_CLUSTER_IDENTITY, LAST_CLUSTER_IDENTITY};

use crate::support::{dump, eventually, EtcdExt};
use axoneme_testkit::etcd::Etcd;

fn label_sets() -> Vec<Vec<String>> {
    (0..6)
        .map(|i| {
            vec![
                format!("app=service-{i}"),
                "k8s:io.kubernetes.pod.namespace=default".to_owned(),
            ]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_nodes_get_one_number_per_label_set() {
    let etcd = Etcd::single();
    let mut nodes = Vec::new();
    for node in ["node-a", "node-b", "node-c", "node-d"] {
        nodes.push(Arc::new(
            Session::connect(etcd.config("galaxy", node)).await.unwrap(),
        ));
    }
    // Every node allocates every label set at once, each in its own task.
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for (l, labels) in label_sets().into_iter().enumerate() {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                // Bounded: an allocation that livelocks fails the test instead of hanging it.
                let id =
                    tokio::time::timeout(Duration::from_secs(30), node.allocate_identity(&labels))
                        .await
                        .expect("allocation did not finish in 30 s")
                        .unwrap();
                (n, l, id)
            }));
        }
    }
    let mut by_label = vec![BTreeSet::new(); label_sets().len()];
    for task in tasks {
        let (_, l, id) = task.await.unwrap();
        assert!((FIRST_CLUSTER_IDENTITY..=LAST_CLUSTER_IDENTITY).contains(&id));
        by_label[l].insert(id);
    }
    for ids in &by_label {
        assert_eq!(ids.len(), 1, "one label set got several numbers: {ids:?}");
    }
    let distinct: BTreeSet<u32> = by_label.iter().flatten().copied().collect();
    assert_eq!(
        distinct.len(),
        label_sets().len(),
        "two label sets share a number"
    );

    // etcd holds one master key per label set and one reference per node and label set.
    let mut client = etcd.client().await;
    let masters = dump(&mut client, "axoneme/galaxy/identities/id/").await;
    assert_eq!(masters.len(), label_sets().len());
    let references = dump(&mut client, "axoneme/galaxy/identities/value/").await;
    assert_eq!(references.len(), label_sets().len() * nodes.len());

    // Every node's identity watch sees them all.
    for node in &nodes {
        let mut identities = node.identities();
        eventually(
            "every node sees every identity",
            Duration::from_secs(5),
            || {
                let seen = identities.borrow_and_update().identities.len();
                async move { seen == label_sets().len() }
            },
        )
        .await;
    }
    let snapshot = nodes[0].identities().borrow().clone();
    let labels = &snapshot.identities[by_label[2].first().unwrap()];
    assert_eq!(
        labels,
        &vec![
            "app=service-2".to_owned(),
            "k8s:io.kubernetes.pod.namespace=default".to_owned()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_numbers() {
    let etcd = Etcd::single();
    let luke = ["app=luke"];
    let leia = ["app=leia"];
    let node = Session::connect(etcd.config("galaxy", "node-a"))
        .await
        .unwrap();
    let luke_id = node.allocate_identity(&luke).await.unwrap();
    let leia_id = node.allocate_identity(&leia).await.unwrap();
    assert_ne!(luke_id, leia_id);
    // A crash: the tasks stop, the lease is left to expire.
    drop(node);
    let node = Session::connect(etcd.config("galaxy", "node-a"))
        .await
        .unwrap();
    assert_eq!(node.allocate_identity(&leia).await.unwrap(), leia_id);
    assert_eq!(node.allocate_identity(&luke).await.unwrap(), luke_id);
    // A clean stop revokes the lease: the references go at once, the master keys stay for
    // the grace period, and a node starting within it finds them.
    node.close().await.unwrap();
    let mut client = etcd.client().await;
    assert!(dump(&mut client, "axoneme/galaxy/identities/value/")
        .await
        .is_empty());
    let node = Session::connect(etcd.config("galaxy", "node-a"))
        .await
        .unwrap();
    assert_eq!(node.allocate_identity(&luke).await.unwrap(), luke_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_die_with_the_lease_and_numbers_are_released_after_the_grace_period() {
    let etcd = Etcd::single();
    let mut client = etcd.client().await;
    let a = Session::connect(etcd.config("galaxy", "node-a"))
        .await
        .unwrap();
    let b = Session::connect(etcd.config("galaxy", "node-b"))
        .await
        .unwrap();
    let shared = ["app=shared"];
    let only_a = ["app=only-a"];
    let shared_id = a.allocate_identity(&shared).await.unwrap();
    assert_eq!(b.allocate_identity(&shared).await.unwrap(), shared_id);
    let only_a_id = a.allocate_identity(&only_a).await.unwrap();
    let reference = "axoneme/galaxy/identities/value/app=only-a;/node-a".to_owned();
    assert_eq!(
        dump(&mut client, &reference).await,
        vec![(reference.clone(), only_a_id.to_string())]
    );

    // Node a dies: its references expire with its lease (3 s), then its unreferenced number
    // is released after the grace period (1 s); node b's reference keeps the shared one.
    drop(a);
    let only_a_master = format!("axoneme/galaxy/identities/id/{only_a_id}");
    let shared_master = format!("axoneme/galaxy/identities/id/{shared_id}");
    eventually("node a's reference expires", Duration::from_secs(8), || {
        let mut client = client.clone();
        let reference = reference.clone();
        async move { dump(&mut client, &reference).await.is_empty() }
    })
    .await;
    eventually(
        "the unreferenced number is released",
        Duration::from_secs(8),
        || {
            let mut client = client.clone();
            let key = only_a_master.clone();
            async move { dump(&mut client, &key).await.is_empty() }
        },
    )
    .await;
    assert_eq!(
        dump(&mut client, &shared_master).await,
        vec![(shared_master.clone(), "app=shared;".to_owned())],
        "a referenced number was released"
    );

    // Released by b as well: the number is collected after the grace period; allocating the
    // label set again writes a master key anew.
    b.release_identity(&shared).await.unwrap();
    eventually(
        "the released number is collected",
        Duration::from_secs(8),
        || {
            let mut client = client.clone();
            let key = shared_master.clone();
            async move { dump(&mut client, &key).await.is_empty() }
        },
    )
    .await;
    let again = b.allocate_identity(&shared).await.unwrap();
    let master = format!("axoneme/galaxy/identities/id/{again}");
    assert_eq!(
        dump(&mut client, &master).await,
        vec![(master.clone(), "app=shared;".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_that_would_break_the_layout_are_refused() {
    let etcd = Etcd::single();
    let node = Session::connect(etcd.config("galaxy", "node-a"))
        .await
        .unwrap();
    let error = node.allocate_identity(&["a=b;c=d"]).await.unwrap_err();
    assert!(
        matches!(error, ClusterError::InvalidLabel { .. }),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_to_another_label_sets_number_is_an_error_not_a_livelock() {
    let etcd = Etcd::single();
    let mut client = etcd.client().await;
    // Written by hand: node-z says app=x is 999, but 999's master key holds app=y.
    client
        .put("axoneme/galaxy/identities/id/999", "app=y;", None)
        .await
        .unwrap();
    client
        .put("axoneme/galaxy/identities/value/app=x;/node-z", "999", None)
        .await
        .unwrap();
    // A grace period longer than the test: 999, unreferenced, is not collected meanwhile.
    let mut config = etcd.config("galaxy", "node-a");
    config.identity_grace = Duration::from_secs(60);
    let node = Session::connect(config).await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(30), node.allocate_identity(&["app=x"]))
        .await
        .expect("the allocation gave up in time")
        .unwrap_err();
    assert!(
        matches!(error, ClusterError::AllocationConflict { attempts: 32, .. }),
        "{error}"
    );
    // Other label sets are not affected.
    assert_eq!(node.allocate_identity(&["app=y"]).await.unwrap(), 999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_stalled_on_etcd_does_not_delay_an_allocation() {
    let mut etcd = Etcd::single();
    let node = Arc::new(
        Session::connect(etcd.config("galaxy", "node-a"))
            .await
            .unwrap(),
    );
    let luke = ["app=luke"];
    let leia = ["app=leia"];
    let luke_id = node.allocate_identity(&luke).await.unwrap();
    let leia_id = node.allocate_identity(&leia).await.unwrap();

    // etcd stops answering: releasing leia's last allocation waits on etcd for seconds.
    etcd.stop(0);
    let releasing = {
        let node = node.clone();
        tokio::spawn(async move { node.release_identity(&leia).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !releasing.is_finished(),
        "the release must be waiting on etcd"
    );
    // Meanwhile a label set the node holds is allocated again at once.
    let started = tokio::time::Instant::now();
    assert_eq!(node.allocate_identity(&luke).await.unwrap(), luke_id);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "allocation took {:?}",
        started.elapsed()
    );
    assert!(!releasing.is_finished(), "the release was still waiting");
    let failed = releasing.await.unwrap();
    assert!(failed.is_err(), "etcd was down: {failed:?}");

    // etcd back: the keepalive deletes the reference whose deletion failed, and leia's
    // number is kept by its master key for the grace period.
    etcd.start(0);
    etcd.wait_healthy(&[0]);
    let client = etcd.client().await;
    eventually("leia's reference deleted", Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            let references = dump(&mut client, "axoneme/galaxy/identities/value/").await;
            references.len() == 1 && references[0].0.contains("app=luke;")
        }
    })
    .await;
    assert_ne!(luke_id, leia_id);
}
