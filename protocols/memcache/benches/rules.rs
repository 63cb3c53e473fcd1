//! Memcached rule checks at scale: one request checked against an `l7` list of 10, 1,000 and
//! 100,000 rules of one kind (`keyExact`, `keyPrefix`, `keyRegex`) or a third of each, for a
//! key that a rule allows (in the middle of the list) and one that none allows. Also prints,
//! per list, how long compiling and indexing it took and the heap bytes the compiled list holds.

use std::hint::black_box;
use std::time::Instant;

use axoneme_memcache::{rules, Command};
use axoneme_sdk::L7RuleMap;
use axoneme_testkit::CountingAllocator;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const SIZES: [usize; 3] = [10, 1_000, 100_000];

/// The `l7` map of rule `i` of a list of `kind`; `mixed` takes each kind in turn.
fn map(kind: &str, i: usize) -> L7RuleMap {
    let kind = match kind {
        "mixed" => ["exact", "prefix", "regex"][i % 3],
        kind => kind,
    };
    let (key, value) = match kind {
        "exact" => ("keyExact", format!("user/{i}/profile")),
        "prefix" => ("keyPrefix", format!("tenant/{i}/")),
        _ => ("keyRegex", format!("session/{i}/[0-9a-f]{{8}}")),
    };
    [("command", "get".to_owned()), (key, value)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// A key that rule `i` of a list of `kind` allows.
fn allowed_key(kind: &str, i: usize) -> String {
    let kind = match kind {
        "mixed" => ["exact", "prefix", "regex"][i % 3],
        kind => kind,
    };
    match kind {
        "exact" => format!("user/{i}/profile"),
        "prefix" => format!("tenant/{i}/cart"),
        _ => format!("session/{i}/0badf00d"),
    }
}

fn checks(c: &mut Criterion) {
    let mut group = c.benchmark_group("memcache_rules");
    for kind in ["exact", "prefix", "regex", "mixed"] {
        for &size in axoneme_testkit::bench_sizes(&SIZES) {
            let maps: Vec<L7RuleMap> = (0..size).map(|i| map(kind, i)).collect();
            let before = CountingAllocator::live_bytes();
            let started = Instant::now();
            let rules = rules::compile(&maps).unwrap();
            let took = started.elapsed();
            let held = CountingAllocator::live_bytes().saturating_sub(before);
            eprintln!(
                "{kind} x {size}: compiled in {:.1} ms, holds {:.1} KiB",
                took.as_secs_f64() * 1e3,
                held as f64 / 1024.0
            );
            let hit = allowed_key(kind, size / 2);
            let misses = [
                "guest/none".to_owned(),
                format!("session/{}/not-hex!", size / 2),
            ];
            assert!(rules.allows(Command::Get, [hit.as_bytes()].into_iter()));
            for miss in &misses {
                assert!(!rules.allows(Command::Get, [miss.as_bytes()].into_iter()));
            }
            group.bench_function(BenchmarkId::new(format!("{kind}/hit"), size), |b| {
                b.iter(|| rules.allows(Command::Get, [black_box(hit.as_bytes())].into_iter()))
            });
            group.bench_function(BenchmarkId::new(format!("{kind}/miss"), size), |b| {
                b.iter(|| rules.allows(Command::Get, [black_box(misses[0].as_bytes())].into_iter()))
            });
            if kind == "regex" || kind == "mixed" {
                group.bench_function(BenchmarkId::new(format!("{kind}/near-miss"), size), |b| {
                    b.iter(|| {
                        rules.allows(Command::Get, [black_box(misses[1].as_bytes())].into_iter())
                    })
                });
            }
            if kind == "prefix" {
                let keys: Vec<String> = (0..3)
                    .map(|n| format!("tenant/{}/item{n}", size / 2))
                    .collect();
                group.bench_function(BenchmarkId::new("prefix/hit-3-keys", size), |b| {
                    b.iter(|| {
                        rules.allows(Command::Get, black_box(&keys).iter().map(|k| k.as_bytes()))
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, checks);
criterion_main!(benches);
