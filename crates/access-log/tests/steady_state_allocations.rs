//! Formatting entries allocates nothing once warm, in either form, when a thread logs for many
//! connections in turn as a worker does: more than a handful, each with its own identities and
//! labels, and both guarded ends of one connection.

use std::sync::Arc;
use std::time::SystemTime;

use axoneme_access_log::writer::DEFAULT_MAX_FIELD_BYTES;
use axoneme_access_log::LogFormat;
use axoneme_sdk::{ConnectionMeta, Direction, EntryType, Field, LogEntry};
use axoneme_testkit::CountingAllocator;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Connections a worker serves at once in the benchmark's 200-connection shape, per worker.
const CONNECTIONS: u64 = 200;

fn connections() -> Vec<ConnectionMeta> {
    let labels = |app: &str| -> Arc<[String]> { Arc::from(vec![format!("app={app}")]) };
    let (client, server) = (labels("fleet-maintenance"), labels("memcached"));
    let (listener, endpoint): (Arc<str>, Arc<str>) = ("memcached".into(), "memcached".into());
    (0..CONNECTIONS)
        .flat_map(|id| {
            let ingress = ConnectionMeta {
                id,
                listener: Arc::clone(&listener),
                endpoint: Arc::clone(&endpoint),
                direction: Direction::Ingress,
                source: format!("127.0.0.11:{}", 40_000 + id).parse().unwrap(),
                destination: "127.0.0.1:11211".parse().unwrap(),
                source_identity: 257,
                destination_identity: 256,
                source_labels: Arc::clone(&client),
                destination_labels: Arc::clone(&server),
            };
            // Every tenth connection is guarded at both ends: its entries are logged under each.
            let egress = (id % 10 == 0).then(|| ConnectionMeta {
                direction: Direction::Egress,
                endpoint: "fleet-maintenance".into(),
                ..ingress.clone()
            });
            std::iter::once(ingress).chain(egress)
        })
        .collect()
}

#[test]
fn formatting_entries_for_many_connections_in_turn_allocates_nothing_once_warm() {
    let metas = connections();
    let fields = [
        Field::text("command", "get"),
        Field::text("keys", "alliance/fleet/key-682"),
    ];
    let mut line = Vec::with_capacity(4096);
    for format in [LogFormat::Cilium, LogFormat::Compact] {
        let mut log_all = || {
            for meta in &metas {
                let entry = LogEntry {
                    entry_type: EntryType::Request,
                    meta,
                    policy_name: "secure-fleet",
                    proto: Some("memcache"),
                    fields: &fields,
                };
                line.clear();
                format.format(
                    &mut line,
                    &entry,
                    SystemTime::now(),
                    DEFAULT_MAX_FIELD_BYTES,
                );
            }
        };
        log_all();
        let before = CountingAllocator::count();
        for _ in 0..10 {
            log_all();
        }
        let allocations = CountingAllocator::count() - before;
        assert_eq!(
            allocations,
            0,
            "{format:?}: {allocations} allocations formatting 10 rounds of {} entries",
            metas.len()
        );
    }
}
