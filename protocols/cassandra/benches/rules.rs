//! Cassandra rule checks at scale: one statement's action and table checked against an `l7`
//! list of 10, 1,000 and 100,000 `select` rules whose `query_table` is a plain name
//! (`ks1\.events`), a keyspace (`ks1\..*`), a regex (`ks1\.events_[0-9]+`) or a third of
//! each, for a table that a rule allows (in the middle of the list) and one that none allows.
//! Also prints how long compiling and indexing each list took.

use std::hint::black_box;
use std::time::Instant;

use axoneme_cassandra::{rules, Action};
use axoneme_sdk::L7RuleMap;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const SIZES: [usize; 3] = [10, 1_000, 100_000];

/// The kind of rule `i` in a list of `kind`; `mixed` takes each kind in turn.
fn kind_of(kind: &str, i: usize) -> &str {
    match kind {
        "mixed" => ["name", "keyspace", "regex"][i % 3],
        kind => kind,
    }
}

fn map(kind: &str, i: usize) -> L7RuleMap {
    let table = match kind_of(kind, i) {
        "name" => format!(r"ks{i}\.events"),
        "keyspace" => format!(r"ks{i}\..*"),
        _ => format!(r"ks{i}\.events_[0-9]+"),
    };
    [
        ("query_action", "select".to_owned()),
        ("query_table", table),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A table that rule `i` of a list of `kind` allows.
fn allowed_table(kind: &str, i: usize) -> String {
    match kind_of(kind, i) {
        "name" => format!("ks{i}.events"),
        "keyspace" => format!("ks{i}.anything"),
        _ => format!("ks{i}.events_2026"),
    }
}

fn checks(c: &mut Criterion) {
    let mut group = c.benchmark_group("cassandra_rules");
    for kind in ["name", "keyspace", "regex", "mixed"] {
        for &size in axoneme_testkit::bench_sizes(&SIZES) {
            let maps: Vec<L7RuleMap> = (0..size).map(|i| map(kind, i)).collect();
            let started = Instant::now();
            let rules = rules::compile(&maps).unwrap();
            eprintln!(
                "{kind} x {size}: compiled in {:.1} ms",
                started.elapsed().as_secs_f64() * 1e3
            );
            let hit = allowed_table(kind, size / 2);
            let miss = "archive.events_2026";
            assert!(rules.allows(Action::Select, Some(&hit)));
            assert!(!rules.allows(Action::Select, Some(miss)));
            group.bench_function(BenchmarkId::new(format!("{kind}/hit"), size), |b| {
                b.iter(|| rules.allows(Action::Select, Some(black_box(&hit))))
            });
            group.bench_function(BenchmarkId::new(format!("{kind}/miss"), size), |b| {
                b.iter(|| rules.allows(Action::Select, Some(black_box(miss))))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, checks);
criterion_main!(benches);
