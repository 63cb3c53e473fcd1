//! The access log's cost on the forwarding path: formatting one memcached request's entry,
//! handing it to the log (format plus append to the writer's batch), and handing it to the
//! monitor in front of the log, whose writer also hands it to the ring of recent entries.

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use axoneme::telemetry::access_log::{
    format_entry, JsonAccessLog, Limits, DEFAULT_MAX_FIELD_BYTES,
};
use axoneme::telemetry::monitor::{Limits as MonitorLimits, Monitor};
use axoneme_sdk::{AccessLog, ConnectionMeta, Direction, EntryType, Field, LogEntry};
use criterion::{criterion_group, criterion_main, Criterion};

fn meta() -> ConnectionMeta {
    ConnectionMeta {
        id: 7,
        listener: "memcached".into(),
        endpoint: "memcached".into(),
        direction: Direction::Ingress,
        source: "127.0.0.11:40889".parse().unwrap(),
        destination: "127.0.0.1:11211".parse().unwrap(),
        source_identity: 257,
        destination_identity: 256,
        source_labels: Arc::from(vec!["function=fleet-maintenance".to_string()]),
        destination_labels: Arc::from(vec!["app=memcached".to_string()]),
    }
}

fn access_log(c: &mut Criterion) {
    let meta = meta();
    let fields = [
        Field::text("command", "get"),
        Field::text("keys", "alliance/fleet/key-682"),
    ];
    let entry = LogEntry {
        entry_type: EntryType::Request,
        meta: &meta,
        policy_name: "secure-fleet",
        proto: Some("memcache"),
        fields: &fields,
    };
    let mut line = Vec::new();
    c.bench_function("format memcached get entry", |b| {
        b.iter(|| {
            line.clear();
            format_entry(
                &mut line,
                black_box(&entry),
                SystemTime::now(),
                DEFAULT_MAX_FIELD_BYTES,
            )
        })
    });
    let log = JsonAccessLog::open(
        "/dev/null",
        Limits {
            queue_entries: Some(1 << 20),
            ..Limits::default()
        },
    )
    .expect("opening /dev/null");
    c.bench_function("log memcached get entry", |b| {
        b.iter(|| log.log(black_box(&entry)))
    });
    let monitor = Monitor::new(Some(Arc::new(log)), MonitorLimits::default());
    c.bench_function(
        "log memcached get entry, monitor keeping recent entries",
        |b| b.iter(|| monitor.log(black_box(&entry))),
    );
}

criterion_group!(benches, access_log);
criterion_main!(benches);
