//! The datapath plus the R2-D2 parser and a compiled policy must not allocate per request once
//! warm. Counted with a counting global allocator (a count, not a timing).

use std::sync::Arc;

use axoneme_datapath::{Connection, Env, Limits};
use axoneme_policy::{parse_policies, EndpointSpec, Snapshot};
use axoneme_r2d2::R2d2;
use axoneme_sdk::{Direction, Flow, Protocol, Registry};
use axoneme_testkit::{CountingAllocator, Discard, NullLog};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

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
        namespace: None,
        policy_audit_mode: false,
    }];
    let snapshot = Snapshot::build(policies, &endpoints, &[], &registry, None).unwrap();
    let policy = snapshot.request_policy(
        "r2d2",
        Direction::Ingress,
        "10.9.9.9".parse().unwrap(),
        4001,
    );
    let meta = axoneme_testkit::meta("10.9.9.9:1000", "10.0.0.1:4001");
    let mut conn = Connection::new(R2d2.new_parser(&meta), meta, "r2d2", Limits::default());
    let env = Env {
        policy: policy.as_ref(),
        log: &NullLog,
    };
    // Pipelined allowed and denied requests, with lines split across reads.
    let requests: &[&[u8]] = &[b"READ /public/a\r\nWRITE /x\r\nREA", b"D /public/b\r\n"];
    let replies: &[&[u8]] = &[b"OK a\r\nOK", b" b\r\n"];
    let round = |conn: &mut Connection| {
        for chunk in requests {
            conn.on_data(Flow::Request, chunk, false, &env, &mut Discard::default())
                .unwrap();
        }
        for chunk in replies {
            conn.on_data(Flow::Reply, chunk, false, &env, &mut Discard::default())
                .unwrap();
        }
    };
    for _ in 0..100 {
        round(&mut conn);
    }
    let before = CountingAllocator::count();
    for _ in 0..10_000 {
        round(&mut conn);
    }
    assert_eq!(CountingAllocator::count() - before, 0);
}
