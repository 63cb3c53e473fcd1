//! The datapath plus the R2-D2 parser and a compiled policy must not allocate per request once
//! warm. Counted with a counting global allocator (a count, not a timing).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axoneme_datapath::{Connection, Env, Limits, Output};
use axoneme_policy::{parse_policies, EndpointSpec, Snapshot};
use axoneme_r2d2::R2d2;
use axoneme_sdk::{AccessLog, ConnectionMeta, Direction, Flow, LogEntry, Protocol, Registry};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Off;

impl AccessLog for Off {
    fn log(&self, _: &LogEntry<'_>) {}
}

struct Sink;

impl Output for Sink {
    fn emit(&mut self, _: Flow, _: &[u8]) {}
}

#[test]
fn no_heap_allocation_per_request_once_warm() {
    let mut registry = Registry::new();
    registry.register(Arc::new(R2d2)).unwrap();
    let policies = parse_policies(
        "test.yaml",
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: droids}
spec:
  endpointSelector: {matchLabels: {app: r2d2}}
  ingress:
    - toPorts:
        - ports: [{port: "4001"}]
          rules: {l7proto: r2d2, l7: [{cmd: READ, file: "/public/.*"}]}
"#,
    )
    .unwrap();
    let endpoints = [EndpointSpec {
        name: "r2d2".into(),
        ips: vec!["10.0.0.1".parse().unwrap()],
        labels: [("app".to_string(), "r2d2".to_string())].into(),
    }];
    let snapshot = Snapshot::build(policies, &endpoints, &[], &registry, None).unwrap();
    let policy = snapshot.request_policy(
        "r2d2",
        Direction::Ingress,
        "10.9.9.9".parse().unwrap(),
        4001,
    );
    let meta = ConnectionMeta {
        id: 1,
        listener: "t".into(),
        direction: Direction::Ingress,
        source: "10.9.9.9:1000".parse().unwrap(),
        destination: "10.0.0.1:4001".parse().unwrap(),
        source_identity: 2,
        destination_identity: 256,
        source_labels: Arc::from(Vec::new()),
        destination_labels: Arc::from(Vec::new()),
    };
    let mut conn = Connection::new(R2d2.new_parser(&meta), meta, "r2d2", Limits::default());
    let env = Env {
        policy: policy.as_ref(),
        log: &Off,
    };
    // Pipelined allowed and denied requests, with lines split across reads.
    let requests: &[&[u8]] = &[b"READ /public/a\r\nWRITE /x\r\nREA", b"D /public/b\r\n"];
    let replies: &[&[u8]] = &[b"OK a\r\nOK", b" b\r\n"];
    let round = |conn: &mut Connection| {
        for chunk in requests {
            conn.on_data(Flow::Request, chunk, false, &env, &mut Sink)
                .unwrap();
        }
        for chunk in replies {
            conn.on_data(Flow::Reply, chunk, false, &env, &mut Sink)
                .unwrap();
        }
    };
    for _ in 0..100 {
        round(&mut conn);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..10_000 {
        round(&mut conn);
    }
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed) - before, 0);
}
