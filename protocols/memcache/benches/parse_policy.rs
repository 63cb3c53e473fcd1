//! Memcached parse + policy per core: one request and its reply through the datapath engine,
//! the memcached parser and a policy compiled by the policy engine (the Rebels' rules), access
//! log off. Text, meta and binary; get and set with 64-byte values. Also reports heap
//! allocations per request in steady state (the target is zero).

use std::net::IpAddr;
use std::sync::Arc;

use axoneme_datapath::{Connection, Env, Limits};
use axoneme_memcache::Memcache;
use axoneme_policy::{parse_policies, EndpointSpec, PortPolicy, Snapshot};
use axoneme_sdk::{Direction, Flow, Protocol, Registry};
use axoneme_testkit::{CountingAllocator, Discard, NullLog};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: rebels}
spec:
  endpointSelector: {matchLabels: {app: memcached}}
  ingress:
    - fromEndpoints: [{matchLabels: {function: fleet-maintenance}}]
      toPorts:
        - ports: [{port: "11211"}]
          rules:
            l7proto: memcache
            l7:
              - {command: writeGroup, keyPrefix: "alliance/fleet/"}
              - {command: get, keyPrefix: "alliance/fleet/"}
"#;

fn port_policy() -> Arc<PortPolicy> {
    let mut registry = Registry::new();
    registry.register(Arc::new(Memcache::default())).unwrap();
    let endpoint = |name: &str, ip: &str, key: &str, value: &str| EndpointSpec {
        name: name.into(),
        ips: vec![ip.parse().unwrap()],
        labels: [(key.to_string(), value.to_string())].into(),
        namespace: None,
        policy_audit_mode: false,
    };
    let endpoints = [
        endpoint("memcached", "10.0.0.1", "app", "memcached"),
        endpoint("maintenance", "10.0.0.11", "function", "fleet-maintenance"),
    ];
    let policies = parse_policies("bench.yaml", POLICY).unwrap();
    let snapshot = Snapshot::build(policies, &endpoints, &[], &registry, None).unwrap();
    let remote: IpAddr = "10.0.0.11".parse().unwrap();
    snapshot.request_policy("memcached", Direction::Ingress, remote, 11211)
}

fn connection() -> Connection {
    let meta = axoneme_testkit::meta("10.0.0.11:40000", "10.0.0.1:11211");
    Connection::new(
        Memcache::default().new_parser(&meta),
        meta,
        "memcache",
        Limits::default(),
    )
}

fn binary(magic: u8, opcode: u8, extras: usize, key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = extras + key.len() + value.len();
    let mut packet = vec![magic, opcode];
    packet.extend_from_slice(&(key.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[extras as u8, 0, 0, 0]);
    packet.extend_from_slice(&(body as u32).to_be_bytes());
    packet.extend_from_slice(&[0; 12]);
    packet.extend(std::iter::repeat_n(0, extras));
    packet.extend_from_slice(key);
    packet.extend_from_slice(value);
    packet
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    reply: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let key = b"alliance/fleet/xwing-42";
    let value = [b'v'; 64];
    let text = |s: &str| s.as_bytes().to_vec();
    let with_value =
        |head: &str, tail: &str| [head.as_bytes(), &value[..], tail.as_bytes()].concat();
    vec![
        Case {
            name: "text get",
            request: text("get alliance/fleet/xwing-42\r\n"),
            reply: with_value("VALUE alliance/fleet/xwing-42 0 64\r\n", "\r\nEND\r\n"),
        },
        Case {
            name: "text set",
            request: with_value("set alliance/fleet/xwing-42 0 0 64\r\n", "\r\n"),
            reply: text("STORED\r\n"),
        },
        Case {
            name: "text get denied",
            request: text("get empire/deathstar\r\n"),
            reply: Vec::new(),
        },
        Case {
            name: "meta get",
            request: text("mg alliance/fleet/xwing-42 v f\r\n"),
            reply: with_value("VA 64 f0\r\n", "\r\n"),
        },
        Case {
            name: "meta set",
            request: with_value("ms alliance/fleet/xwing-42 64 T0\r\n", "\r\n"),
            reply: text("HD\r\n"),
        },
        Case {
            name: "binary get",
            request: binary(0x80, 0x00, 0, key, b""),
            reply: binary(0x81, 0x00, 4, b"", &value),
        },
        Case {
            name: "binary set",
            request: binary(0x80, 0x01, 8, key, &value),
            reply: binary(0x81, 0x01, 0, b"", b""),
        },
    ]
}

fn round_trip(conn: &mut Connection, env: &Env<'_>, sink: &mut Discard, case: &Case) {
    conn.on_data(Flow::Request, &case.request, false, env, sink)
        .unwrap();
    if !case.reply.is_empty() {
        conn.on_data(Flow::Reply, &case.reply, false, env, sink)
            .unwrap();
    }
}

fn allocations_per_request(env: &Env<'_>, case: &Case) -> f64 {
    let mut conn = connection();
    let mut sink = Discard::default();
    for _ in 0..1000 {
        round_trip(&mut conn, env, &mut sink, case);
    }
    let before = CountingAllocator::count();
    const N: u64 = 100_000;
    for _ in 0..N {
        round_trip(&mut conn, env, &mut sink, case);
    }
    (CountingAllocator::count() - before) as f64 / N as f64
}

fn bench(c: &mut Criterion) {
    let policy = port_policy();
    let env = Env {
        policy: policy.as_ref(),
        log: &NullLog,
    };
    let mut group = c.benchmark_group("memcache");
    group.throughput(Throughput::Elements(1));
    for case in cases() {
        let allocs = allocations_per_request(&env, &case);
        println!(
            "memcache/{}: {allocs:.3} heap allocations per request in steady state",
            case.name
        );
        let mut conn = connection();
        let mut sink = Discard::default();
        group.bench_function(case.name, |b| {
            b.iter(|| round_trip(&mut conn, &env, &mut sink, &case))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
