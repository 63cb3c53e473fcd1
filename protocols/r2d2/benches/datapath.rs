//! Datapath plus R2-D2 parser plus policy, per core: one request and its reply through the
//! engine, allowed and denied, with the access log off. Also reports heap allocations per
//! request in steady state (the target is zero).

use std::net::IpAddr;
use std::sync::Arc;

use axoneme_datapath::{Connection, Env, Limits};
use axoneme_policy::{parse_policies, EndpointSpec, PortPolicy, Snapshot};
use axoneme_r2d2::R2d2;
use axoneme_sdk::{Direction, Flow, Protocol, Registry};
use axoneme_testkit::{CountingAllocator, Discard, NullLog};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bench}
spec:
  endpointSelector: {matchLabels: {app: r2d2}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: luke}}]
      toPorts:
        - ports: [{port: "4001"}]
          rules:
            l7proto: r2d2
            l7:
              - {cmd: READ, file: "/public/.*"}
              - {cmd: HALT}
"#;

fn port_policy() -> Arc<PortPolicy> {
    let mut registry = Registry::new();
    registry.register(Arc::new(R2d2)).unwrap();
    let endpoint = |name: &str, ip: &str| EndpointSpec {
        name: name.into(),
        ips: vec![ip.parse().unwrap()],
        labels: [("app".to_string(), name.to_string())].into(),
        namespace: None,
        policy_audit_mode: false,
    };
    let endpoints = [endpoint("r2d2", "10.0.0.1"), endpoint("luke", "10.0.0.21")];
    let policies = parse_policies("bench.yaml", POLICY).unwrap();
    let snapshot = Snapshot::build(policies, &endpoints, &[], &registry, None).unwrap();
    snapshot.request_policy(
        "r2d2",
        Direction::Ingress,
        "10.0.0.21".parse::<IpAddr>().unwrap(),
        4001,
    )
}

fn connection() -> Connection {
    let meta = axoneme_testkit::meta("10.0.0.21:40000", "10.0.0.1:4001");
    Connection::new(R2d2.new_parser(&meta), meta, "r2d2", Limits::default())
}

fn round_trip(
    conn: &mut Connection,
    env: &Env<'_>,
    sink: &mut Discard,
    request: &[u8],
    reply: &[u8],
) {
    conn.on_data(Flow::Request, request, false, env, sink)
        .unwrap();
    if !reply.is_empty() {
        conn.on_data(Flow::Reply, reply, false, env, sink).unwrap();
    }
}

fn allocations_per_request(env: &Env<'_>, request: &[u8], reply: &[u8]) -> f64 {
    let mut conn = connection();
    let mut sink = Discard::default();
    for _ in 0..1000 {
        round_trip(&mut conn, env, &mut sink, request, reply);
    }
    let before = CountingAllocator::count();
    const N: u64 = 100_000;
    for _ in 0..N {
        round_trip(&mut conn, env, &mut sink, request, reply);
    }
    (CountingAllocator::count() - before) as f64 / N as f64
}

fn bench(c: &mut Criterion) {
    let policy = port_policy();
    let env = Env {
        policy: policy.as_ref(),
        log: &NullLog,
    };
    let cases: [(&str, &[u8], &[u8]); 2] = [
        (
            "allowed READ + reply",
            b"READ /public/plans\r\n",
            b"OK the rebel base is on Hoth\r\n",
        ),
        ("denied WRITE", b"WRITE /public/plans\r\n", b""),
    ];
    let mut group = c.benchmark_group("r2d2");
    group.throughput(Throughput::Elements(1));
    for (name, request, reply) in cases {
        let allocs = allocations_per_request(&env, request, reply);
        println!("r2d2/{name}: {allocs:.3} heap allocations per request in steady state");
        let mut conn = connection();
        let mut sink = Discard::default();
        group.bench_function(name, |b| {
            b.iter(|| round_trip(&mut conn, &env, &mut sink, request, reply))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
