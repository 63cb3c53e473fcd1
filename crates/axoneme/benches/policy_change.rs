//! What one change costs a node's policy state: one policy text changed among 100 or 1,000
//! (`State::set_cluster_policies`, the kvstore's whole set as the cluster watch applies it),
//! and one remote endpoint changed among 1,000 (`State::set_remote_endpoints`). Both alternate
//! between two versions, so every iteration is a real change with a new revision.

#[path = "shared/simulated.rs"]
mod simulated;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use axoneme::builtin_protocols;
use axoneme::config::ProtocolsConfig;
use axoneme::control::state::{ConfigSources, State};
use axoneme_policy::EndpointSpec;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// Remote endpoints per label set, as in the cluster bench.
const ENDPOINTS_PER_LABEL_SET: usize = 10;
/// The remote endpoints of the node.
const REMOTE_ENDPOINTS: usize = 1_000;

fn endpoint(name: String, ip: Ipv4Addr, app: String) -> EndpointSpec {
    EndpointSpec {
        name,
        ips: vec![IpAddr::V4(ip)],
        labels: BTreeMap::from([("app".to_owned(), app)]),
        namespace: None,
        policy_audit_mode: false,
    }
}

fn remote(i: usize, generation: usize) -> EndpointSpec {
    let [_, b, c, d] = u32::try_from(i + 1).unwrap_or(0).to_be_bytes();
    endpoint(
        format!("node-{}/pod-{i}-{generation}", i / 100),
        Ipv4Addr::new(10, b, c, d),
        format!("sim-{}", i / ENDPOINTS_PER_LABEL_SET),
    )
}

/// Policy `k`: r2d2 on port 9000 of the `app=r2d2` endpoints takes READs under `/sim-k-v/`
/// from label set `k`.
fn policy(k: usize, version: usize) -> String {
    simulated::policy(k, 9000, &format!("/sim-{k}-{version}/.*"))
}

fn state(policies: usize) -> (State, BTreeMap<String, String>) {
    let config = ConfigSources {
        endpoints: vec![
            endpoint("r2d2".into(), Ipv4Addr::new(127, 0, 0, 1), "r2d2".into()),
            endpoint("luke".into(), Ipv4Addr::new(127, 0, 0, 21), "luke".into()),
        ],
        ..ConfigSources::default()
    };
    let state = State::new(builtin_protocols(&ProtocolsConfig::default()), config).unwrap();
    state
        .set_remote_endpoints((0..REMOTE_ENDPOINTS).map(|i| remote(i, 0)).collect())
        .unwrap();
    let texts: BTreeMap<String, String> = (0..policies)
        .map(|k| (format!("sim-{k}"), policy(k, 0)))
        .collect();
    state.set_cluster_policies(&texts).unwrap();
    (state, texts)
}

fn one_change(c: &mut Criterion) {
    let mut group = c.benchmark_group("one change, 1,000 remote endpoints");
    group.sample_size(20);
    for policies in [100, 1_000] {
        let (state, mut texts) = state(policies);
        let mut version = 0;
        group.bench_with_input(
            BenchmarkId::new("one policy changed", policies),
            &policies,
            |b, _| {
                b.iter(|| {
                    version += 1;
                    texts.insert("sim-0".into(), policy(0, version % 2));
                    state.set_cluster_policies(&texts).unwrap()
                })
            },
        );
        let mut remote_set: Vec<EndpointSpec> =
            (0..REMOTE_ENDPOINTS).map(|i| remote(i, 0)).collect();
        group.bench_with_input(
            BenchmarkId::new("one remote endpoint changed", policies),
            &policies,
            |b, _| {
                b.iter(|| {
                    version += 1;
                    remote_set[0] = remote(0, version % 2);
                    state.set_remote_endpoints(remote_set.clone()).unwrap()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, one_change);
criterion_main!(benches);
