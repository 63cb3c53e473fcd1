//! Cassandra parse + lex + policy per core: one request and its reply through the datapath
//! engine, the Cassandra parser and the Empire's policy compiled by the policy engine, access log
//! off: a QUERY, an EXECUTE of a prepared statement, and a BATCH of three inserts. Also reports
//! heap allocations per request in steady state, and the time per request the thread spent on
//! a CPU (Linux's `/proc/thread-self/schedstat`), which on a shared machine leaves out the time
//! it waited for one. The round trips timed that way run in a function of their own for each
//! case (`round_trips_query`, `…_execute`, `…_batch`), so that `valgrind --tool=callgrind
//! --collect-atstart=no --toggle-collect='*round_trips_*'` counts their instructions, each
//! function's inclusive count being 1,010,000 round trips (the warm-up of 10,000, then the
//! 1,000,000).

use std::net::IpAddr;
use std::sync::Arc;

use axoneme_cassandra::frame::opcode;
use axoneme_cassandra::Cassandra;
use axoneme_datapath::{Connection, Env, Limits};
use axoneme_policy::{parse_policies, EndpointSpec, PortPolicy, Snapshot};
use axoneme_sdk::{Direction, Flow, Protocol, Registry};
use axoneme_testkit::{measuring, thread_cpu_ns, CountingAllocator, Discard, NullLog};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const POLICY: &str = include_str!("../../../examples/cassandra/policy.yaml");

fn port_policy() -> Arc<PortPolicy> {
    let mut registry = Registry::new();
    registry.register(Arc::new(Cassandra::default())).unwrap();
    let endpoint = |name: &str, ip: &str, app: &str| EndpointSpec {
        name: name.into(),
        ips: vec![ip.parse().unwrap()],
        labels: [("app".to_string(), app.to_string())].into(),
        namespace: None,
        policy_audit_mode: false,
    };
    let endpoints = [
        endpoint("cassandra", "10.0.0.1", "cassandra"),
        endpoint("outpost", "10.0.0.31", "empire-outpost"),
    ];
    let policies = parse_policies("policy.yaml", POLICY).unwrap();
    let snapshot = Snapshot::build(policies, &endpoints, &[], &registry, None).unwrap();
    let remote: IpAddr = "10.0.0.31".parse().unwrap();
    snapshot.request_policy("cassandra", Direction::Ingress, remote, 9042)
}

fn frame(version: u8, stream: i16, opcode: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![version, 0];
    f.extend_from_slice(&stream.to_be_bytes());
    f.push(opcode);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn long_string(s: &str) -> Vec<u8> {
    [&(s.len() as i32).to_be_bytes()[..], s.as_bytes()].concat()
}

const INSERT: &str =
    "INSERT INTO attendance.daily_records (loc, creation, present) VALUES (?, now(), ?)";

/// `<consistency><flags>` with two bound values.
fn parameters() -> Vec<u8> {
    let mut p = vec![0, 1, 0x01, 0, 2];
    for value in [&b"endor"[..], &[1]] {
        p.extend_from_slice(&(value.len() as i32).to_be_bytes());
        p.extend_from_slice(value);
    }
    p
}

fn void_result(stream: i16) -> Vec<u8> {
    frame(0x84, stream, opcode::RESULT, &1i32.to_be_bytes())
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    reply: Vec<u8>,
    round_trips: RoundTrips,
}

fn cases() -> Vec<Case> {
    let query = frame(
        4,
        1,
        opcode::QUERY,
        &[long_string(INSERT), parameters()].concat(),
    );
    let execute = frame(
        4,
        2,
        opcode::EXECUTE,
        &[&[0, 2][..], b"\x0a\x0b", &parameters()].concat(),
    );
    let mut batch = vec![0u8, 0, 3];
    for _ in 0..3 {
        batch.push(0);
        batch.extend(long_string(INSERT));
        batch.extend_from_slice(&parameters()[3..]);
    }
    batch.extend_from_slice(&[0, 1, 0]);
    vec![
        Case {
            name: "QUERY insert",
            request: query,
            reply: void_result(1),
            round_trips: round_trips_query,
        },
        Case {
            name: "EXECUTE insert",
            request: execute,
            reply: void_result(2),
            round_trips: round_trips_execute,
        },
        Case {
            name: "BATCH of 3 inserts",
            request: frame(4, 3, opcode::BATCH, &batch),
            reply: void_result(3),
            round_trips: round_trips_batch,
        },
    ]
}

/// A connection that has prepared the insert (id 0x0a0b).
fn connection(env: &Env<'_>) -> Connection {
    let meta = axoneme_testkit::meta("10.0.0.31:40000", "10.0.0.1:9042");
    let mut conn = Connection::new(
        Cassandra::default().new_parser(&meta),
        meta,
        "cassandra",
        Limits::default(),
    );
    let prepare = frame(4, 9, opcode::PREPARE, &long_string(INSERT));
    let prepared = frame(
        0x84,
        9,
        opcode::RESULT,
        &[&4i32.to_be_bytes()[..], &[0, 2, 0x0a, 0x0b], &[0; 12]].concat(),
    );
    conn.on_data(Flow::Request, &prepare, false, env, &mut Discard::default())
        .unwrap();
    conn.on_data(Flow::Reply, &prepared, false, env, &mut Discard::default())
        .unwrap();
    conn
}

fn round_trip(conn: &mut Connection, env: &Env<'_>, sink: &mut Discard, case: &Case) {
    conn.on_data(Flow::Request, &case.request, false, env, sink)
        .unwrap();
    conn.on_data(Flow::Reply, &case.reply, false, env, sink)
        .unwrap();
}

/// `n` round trips of a case.
type RoundTrips = fn(&mut Connection, &Env<'_>, &mut Discard, &Case, u32);

/// Functions running `n` round trips of a case, one per case so that a profile tells them
/// apart (each passes its own tag through `black_box`, so that the build cannot fold them
/// into one).
macro_rules! round_trips {
    ($($name:ident $tag:literal)*) => {$(
        #[inline(never)]
        fn $name(conn: &mut Connection, env: &Env<'_>, sink: &mut Discard, case: &Case, n: u32) {
            std::hint::black_box($tag);
            for _ in 0..n {
                round_trip(conn, env, sink, case);
            }
        }
    )*};
}

round_trips!(round_trips_query 1u8 round_trips_execute 2u8 round_trips_batch 3u8);

/// On-CPU nanoseconds per round trip over 1,000,000 after warm-up.
fn cpu_time_per_request(env: &Env<'_>, case: &Case) -> Option<f64> {
    let mut conn = connection(env);
    let mut sink = Discard::default();
    (case.round_trips)(&mut conn, env, &mut sink, case, 10_000);
    const N: u32 = 1_000_000;
    let before = thread_cpu_ns()?;
    (case.round_trips)(&mut conn, env, &mut sink, case, N);
    let after = thread_cpu_ns()?;
    Some(after.saturating_sub(before) as f64 / f64::from(N))
}

fn bench(c: &mut Criterion) {
    let policy = port_policy();
    let env = Env {
        policy: policy.as_ref(),
        log: &NullLog,
    };
    let mut group = c.benchmark_group("cassandra");
    group.throughput(Throughput::Elements(1));
    for case in cases() {
        let mut conn = connection(&env);
        let mut sink = Discard::default();
        for _ in 0..1000 {
            round_trip(&mut conn, &env, &mut sink, &case);
        }
        let before = CountingAllocator::count();
        const N: u64 = 100_000;
        for _ in 0..N {
            round_trip(&mut conn, &env, &mut sink, &case);
        }
        let allocs = (CountingAllocator::count() - before) as f64 / N as f64;
        println!(
            "cassandra/{}: {allocs:.1} heap allocations per request in steady state",
            case.name
        );
        assert!(sink.0 > 0, "the requests were allowed and forwarded");
        let on_cpu = measuring().then(|| cpu_time_per_request(&env, &case));
        if let Some(Some(ns)) = on_cpu {
            println!("cassandra/{}: {ns:.0} ns on a CPU per request", case.name);
        }
        group.bench_function(case.name, |b| {
            b.iter(|| round_trip(&mut conn, &env, &mut sink, &case))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
