//! Kafka parse + policy per core: one request and its response through the datapath engine,
//! the Kafka parser and a policy compiled by the policy engine (the Empire's headquarters may
//! produce to and consume `deathstar-plans`), access log off: Produce of a 1 KiB record batch,
//! Fetch by topic name and by topic id with a 64 KiB response, Metadata, and a denied Produce.
//! Output is counted, not copied, so the figures exclude moving the payload. Also reports heap
//! allocations per request in steady state (the target is zero), and the time per request the
//! thread spent on a CPU (Linux's `/proc/thread-self/schedstat`), which on a shared machine
//! leaves out the time it waited for one.

#[path = "../tests/messages/mod.rs"]
pub mod messages;

use std::net::IpAddr;
use std::sync::Arc;

use axoneme_datapath::{Connection, Env, Limits};
use axoneme_kafka::Kafka;
use axoneme_policy::{parse_policies, EndpointSpec, PortPolicy, Snapshot};
use axoneme_sdk::{Direction, Flow, Protocol, Registry};
use axoneme_testkit::{measuring, thread_cpu_ns, CountingAllocator, Discard, NullLog};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use messages::Topic;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: empire-kafka}
spec:
  endpointSelector: {matchLabels: {app: kafka}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: empire-hq}}]
      toPorts:
        - ports: [{port: "9092", protocol: TCP}]
          rules:
            kafka:
              - {role: produce, topic: deathstar-plans}
              - {role: consume, topic: deathstar-plans}
"#;

const PLANS_ID: [u8; 16] = *b"deathstar-plans!";

fn port_policy() -> Arc<PortPolicy> {
    let mut registry = Registry::new();
    registry.register(Arc::new(Kafka::default())).unwrap();
    let endpoint = |name: &str, ip: &str, app: &str| EndpointSpec {
        name: name.into(),
        ips: vec![ip.parse().unwrap()],
        labels: [("app".to_string(), app.to_string())].into(),
        namespace: None,
        policy_audit_mode: false,
    };
    let endpoints = [
        endpoint("kafka", "10.0.0.1", "kafka"),
        endpoint("hq", "10.0.0.32", "empire-hq"),
    ];
    let policies = parse_policies("bench.yaml", POLICY).unwrap();
    let snapshot = Snapshot::build(policies, &endpoints, &[], &registry, None).unwrap();
    let remote: IpAddr = "10.0.0.32".parse().unwrap();
    snapshot.request_policy("kafka", Direction::Ingress, remote, 9092)
}

/// A connection that has passed a Metadata response naming `deathstar-plans` by its id.
fn connection(env: &Env<'_>) -> Connection {
    let meta = axoneme_testkit::meta("10.0.0.32:40000", "10.0.0.1:9092");
    let mut conn = Connection::new(
        Kafka::default().new_parser(&meta),
        meta,
        "kafka",
        Limits::default(),
    );
    let learn = Case {
        name: "learn",
        request: messages::metadata(1, &["deathstar-plans"], false),
        reply: messages::metadata_response(1, &[("deathstar-plans", PLANS_ID)]),
    };
    round_trip(&mut conn, env, &mut Discard::default(), &learn);
    conn
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    reply: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let batch = [0x5a; 1024];
    let records = vec![0x5a; 64 * 1024];
    let (by_name, by_id) = (Topic::Name("deathstar-plans"), Topic::Id(PLANS_ID));
    vec![
        Case {
            name: "produce 1 KiB",
            request: messages::produce(2, "deathstar-plans", &batch),
            reply: messages::produce_response(2, "deathstar-plans"),
        },
        Case {
            name: "fetch by name 64 KiB",
            request: messages::fetch(3, by_name),
            reply: messages::fetch_response(3, by_name, &records),
        },
        Case {
            name: "fetch by id 64 KiB",
            request: messages::fetch(4, by_id),
            reply: messages::fetch_response(4, by_id, &records),
        },
        Case {
            name: "metadata",
            request: messages::metadata(5, &["deathstar-plans"], false),
            reply: messages::metadata_response(5, &[("deathstar-plans", PLANS_ID)]),
        },
        Case {
            name: "produce denied",
            request: messages::produce(6, "empire-announce", &batch),
            reply: Vec::new(),
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

/// Checks that the case does what it says (passed both ways, or denied with an answer), then
/// counts allocations per round trip over 100,000 after warm-up.
fn allocations_per_request(env: &Env<'_>, case: &Case) -> f64 {
    let mut conn = connection(env);
    let mut sink = Discard::default();
    round_trip(&mut conn, env, &mut sink, case);
    let passed = case.request.len() + case.reply.len();
    match case.reply.is_empty() {
        false => assert_eq!(sink.0, passed, "{}: passed both ways", case.name),
        true => assert!(sink.0 > 0 && sink.0 < passed, "{}: a denial", case.name),
    }
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

/// On-CPU nanoseconds per round trip over 1,000,000 after warm-up.
fn cpu_time_per_request(env: &Env<'_>, case: &Case) -> Option<f64> {
    let mut conn = connection(env);
    let mut sink = Discard::default();
    for _ in 0..10_000 {
        round_trip(&mut conn, env, &mut sink, case);
    }
    const N: u32 = 1_000_000;
    let before = thread_cpu_ns()?;
    for _ in 0..N {
        round_trip(&mut conn, env, &mut sink, case);
    }
    let after = thread_cpu_ns()?;
    Some(after.saturating_sub(before) as f64 / f64::from(N))
}

fn bench(c: &mut Criterion) {
    let policy = port_policy();
    let env = Env {
        policy: policy.as_ref(),
        log: &NullLog,
    };
    let mut group = c.benchmark_group("kafka");
    group.throughput(Throughput::Elements(1));
    // `KAFKA_BENCH_CASE=<part of a case's name>` measures only the cases so named: to count
    // one case's instructions per round trip under callgrind (`round_trip`'s inclusive cost
    // over its calls).
    let only = std::env::var("KAFKA_BENCH_CASE").ok();
    let measured = cases()
        .into_iter()
        .filter(|case| only.as_deref().is_none_or(|only| case.name.contains(only)));
    for case in measured {
        let allocs = allocations_per_request(&env, &case);
        println!(
            "kafka/{}: {allocs:.3} heap allocations per request in steady state",
            case.name
        );
        let on_cpu = measuring().then(|| cpu_time_per_request(&env, &case));
        if let Some(Some(ns)) = on_cpu {
            println!("kafka/{}: {ns:.0} ns on a CPU per request", case.name);
        }
        let mut conn = connection(&env);
        let mut sink = Discard::default();
        group.bench_function(case.name, |b| {
            b.iter(|| round_trip(&mut conn, &env, &mut sink, &case))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
