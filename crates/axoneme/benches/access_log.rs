//! The access log's cost on the forwarding path: formatting one memcached request's entry (in
//! Cilium's form and the compact one; and for 200 connections in turn, as a busy worker does), handing it to the log (format plus append to the writer's
//! batch), and handing it to the monitor in front of the log, whose writer also hands it to the
//! ring of recent entries. Then the whole file-write path in each form: entries logged to a
//! file and the writer done with them, per entry, for a connection with one label a side and for
//! one with the labels Cilium gives a Kubernetes pod; the bytes of an entry in each form are
//! printed.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axoneme::telemetry::access_log::{
    format_entry, JsonAccessLog, Limits, LogFormat, DEFAULT_MAX_FIELD_BYTES,
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

/// The labels Cilium gives a pod of `app` in the namespace `default`.
fn pod_labels(app: &str) -> Arc<[String]> {
    [
        format!("k8s:app={app}"),
        "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default".into(),
        "k8s:io.cilium.k8s.policy.cluster=default".into(),
        format!("k8s:io.cilium.k8s.policy.serviceaccount={app}"),
        "k8s:io.kubernetes.pod.namespace=default".into(),
    ]
    .into_iter()
    .collect::<Vec<_>>()
    .into()
}

/// Logs `entries` copies of `entry` to a new file in `format` and waits for the writer to have
/// written them all; the time that took.
fn write_to_file(entry: &LogEntry<'_>, format: LogFormat, entries: u64) -> Duration {
    let path = std::env::temp_dir().join(format!("axoneme-bench-log-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let log = JsonAccessLog::open(
        path.to_str().expect("a UTF-8 temporary path"),
        Limits {
            queue_bytes: 1 << 30,
            format,
            ..Limits::default()
        },
    )
    .expect("opening a temporary file");
    let start = Instant::now();
    for _ in 0..entries {
        log.log(black_box(entry));
    }
    assert_eq!(log.dropped(), 0, "the queue holds every entry");
    // Dropping the log writes what is queued and joins the writer.
    drop(log);
    let elapsed = start.elapsed();
    std::fs::remove_file(&path).expect("removing the temporary file");
    elapsed
}

fn file_write_path(c: &mut Criterion) {
    let plain = meta();
    let pods = ConnectionMeta {
        source_labels: pod_labels("fleet-maintenance"),
        destination_labels: pod_labels("memcached"),
        ..meta()
    };
    let fields = [
        Field::text("command", "get"),
        Field::text("keys", "alliance/fleet/key-682"),
    ];
    for (labels, meta) in [("one label a side", &plain), ("pod labels", &pods)] {
        let entry = LogEntry {
            entry_type: EntryType::Request,
            meta,
            policy_name: "secure-fleet",
            proto: Some("memcache"),
            fields: &fields,
        };
        for (name, format) in [
            ("cilium", LogFormat::Cilium),
            ("compact", LogFormat::Compact),
        ] {
            let mut line = Vec::new();
            format.format(
                &mut line,
                &entry,
                SystemTime::now(),
                DEFAULT_MAX_FIELD_BYTES,
            );
            eprintln!("{name} entry, {labels}: {} bytes", line.len());
            c.bench_function(
                &format!("write memcached get entries to a file, {name}, {labels}"),
                |b| b.iter_custom(|entries| write_to_file(&entry, format, entries)),
            );
        }
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
    // A worker logs for many connections in turn: their shared parts must not push each other
    // out.
    let many: Vec<ConnectionMeta> = (0..200)
        .map(|id| ConnectionMeta {
            id,
            source: format!("127.0.0.11:{}", 40_000 + id).parse().unwrap(),
            ..meta.clone()
        })
        .collect();
    let mut turn = many.iter().cycle();
    c.bench_function("format memcached get entry, 200 connections in turn", |b| {
        b.iter(|| {
            line.clear();
            let entry = LogEntry {
                meta: turn.next().expect("a cycle never ends"),
                ..entry
            };
            format_entry(
                &mut line,
                black_box(&entry),
                SystemTime::now(),
                DEFAULT_MAX_FIELD_BYTES,
            )
        })
    });
    c.bench_function("format memcached get entry, compact", |b| {
        b.iter(|| {
            line.clear();
            LogFormat::Compact.format(
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

criterion_group!(benches, access_log, file_write_path);
criterion_main!(benches);
