//! The views a node follows equal what etcd holds: after random sequences of puts and
//! deletes written behind the node's back (single writes and transactions of several, values
//! that decode and values that do not), each snapshot equals one the test builds itself from
//! a fresh listing.

use std::collections::BTreeMap;
use std::time::Duration;

use axoneme_cluster::Session;
use axoneme_policy::EndpointSpec;
use etcd_client::{Client, Txn, TxnOp};

use crate::support::{dump, eventually, EtcdExt};
use axoneme_testkit::etcd::Etcd;

/// A small deterministic generator (xorshift64*), seeded from the clock; the seed is printed
/// so that a failure can be replayed.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let next = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        usize::try_from(next >> 33).unwrap() % bound
    }
}

const ROOT: &str = "axoneme/galaxy/";

/// One random write, with its key: a put or a delete of a key among a few dozen in the
/// endpoints, policies or identities prefix.
fn random_op(random: &mut Random) -> (String, TxnOp) {
    let name = random.below(12);
    let delete = random.below(3) == 0;
    let (key, value) = match random.below(3) {
        0 => {
            let node = ["n1", "n2", "n3"][random.below(3)];
            let key = format!("{ROOT}endpoints/{node}/pod-{name}");
            let value = match random.below(8) {
                // Not JSON, or another name than the key's: left out by the node.
                0 => "not json".to_owned(),
                1 => format!(r#"{{"name":"other-{name}","ips":["10.0.0.{name}"]}}"#),
                version => format!(
                    r#"{{"name":"pod-{name}","ips":["10.0.{version}.{name}"],"labels":{{"app":"a{version}"}}}}"#
                ),
            };
            (key, value)
        }
        1 => (
            format!("{ROOT}policies/policy-{name}"),
            format!("text {}", random.below(1000)),
        ),
        _ => {
            // "0260" names number 260 the way no writer does: left out by the node.
            let id = if random.below(6) == 0 {
                format!("0{}", 256 + name)
            } else {
                (256 + name).to_string()
            };
            (
                format!("{ROOT}identities/id/{id}"),
                format!("app=a{};team=t{};", random.below(5), random.below(2)),
            )
        }
    };
    let op = if delete {
        TxnOp::delete(key.clone(), None)
    } else {
        TxnOp::put(key.clone(), value, None)
    };
    (key, op)
}

/// The endpoints snapshot built from a listing: JSON whose name is the key's, grouped by
/// node and sorted by name.
async fn expected_endpoints(client: &mut Client) -> BTreeMap<String, Vec<EndpointSpec>> {
    let prefix = format!("{ROOT}endpoints/");
    let mut nodes: BTreeMap<String, Vec<EndpointSpec>> = BTreeMap::new();
    for (key, value) in dump(client, &prefix).await {
        let (node, name) = key[prefix.len()..].split_once('/').unwrap();
        if let Ok(endpoint) = serde_json::from_str::<EndpointSpec>(&value) {
            if endpoint.name == name {
                nodes.entry(node.to_owned()).or_default().push(endpoint);
            }
        }
    }
    for endpoints in nodes.values_mut() {
        endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    }
    nodes
}

async fn expected_policies(client: &mut Client) -> BTreeMap<String, String> {
    let prefix = format!("{ROOT}policies/");
    dump(client, &prefix)
        .await
        .into_iter()
        .map(|(key, text)| (key[prefix.len()..].to_owned(), text))
        .collect()
}

/// Master keys written in decimal without a leading zero, number → its labels.
async fn expected_identities(client: &mut Client) -> BTreeMap<u32, Vec<String>> {
    let prefix = format!("{ROOT}identities/id/");
    dump(client, &prefix)
        .await
        .into_iter()
        .filter(|(key, _)| !key[prefix.len()..].starts_with('0'))
        .map(|(key, labels)| {
            let id = key[prefix.len()..].parse().unwrap();
            let labels = labels
                .split(';')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            (id, labels)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_equal_a_fresh_listing_after_random_writes() {
    let etcd = Etcd::single();
    let mut config = etcd.config("galaxy", "node-a");
    // The masters written here have no references: nothing may collect them meanwhile.
    config.identity_grace = Duration::from_secs(3600);
    let a = Session::connect(config).await.unwrap();
    let mut client = etcd.client().await;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut random = Random(seed);
    for round in 0..8 {
        for _ in 0..40 {
            if random.below(4) == 0 {
                // Several events in one watch answer (etcd takes one write per key in a
                // transaction: a later one of the same key replaces the earlier).
                let ops: BTreeMap<String, TxnOp> = (0..1 + random.below(6))
                    .map(|_| random_op(&mut random))
                    .collect();
                let ops: Vec<TxnOp> = ops.into_values().collect();
                client.txn(Txn::new().and_then(ops)).await.unwrap();
            } else {
                let (_, op) = random_op(&mut random);
                client.txn(Txn::new().and_then([op])).await.unwrap();
            }
        }
        let expected = (
            expected_endpoints(&mut client).await,
            expected_policies(&mut client).await,
            expected_identities(&mut client).await,
        );
        eventually(
            &format!("round {round}: the views equal a fresh listing (seed {seed})"),
            Duration::from_secs(10),
            || {
                let seen = (
                    a.endpoints().borrow().nodes.clone(),
                    a.policies().borrow().policies.clone(),
                    BTreeMap::clone(&a.identities().borrow().identities),
                );
                let expected = expected.clone();
                async move { seen == expected }
            },
        )
        .await;
    }
}
