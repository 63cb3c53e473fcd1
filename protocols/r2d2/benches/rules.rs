//! R2-D2 rule checks at scale: one READ checked against an `l7` list of 10, 1,000 and 100,000
//! `READ` rules whose `file` is a plain name (`/data/1/report\.txt`), a directory
//! (`/data/1/.*`), a regex (`/data/1/[a-z]+\.log`) or a third of each, for a file that a rule
//! allows (in the middle of the list) and one that none allows. Also prints how long
//! compiling and indexing each list took.

use std::hint::black_box;
use std::time::Instant;

use axoneme_r2d2::{Command, R2d2, Request};
use axoneme_sdk::{L7RuleMap, TypedProtocol};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const SIZES: [usize; 3] = [10, 1_000, 100_000];

/// The kind of rule `i` in a list of `kind`; `mixed` takes each kind in turn.
fn kind_of(kind: &str, i: usize) -> &str {
    match kind {
        "mixed" => ["name", "directory", "regex"][i % 3],
        kind => kind,
    }
}

fn map(kind: &str, i: usize) -> L7RuleMap {
    let file = match kind_of(kind, i) {
        "name" => format!(r"/data/{i}/report\.txt"),
        "directory" => format!("/data/{i}/.*"),
        _ => format!(r"/data/{i}/[a-z]+\.log"),
    };
    [("cmd", "READ".to_owned()), ("file", file)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// A file that rule `i` of a list of `kind` allows.
fn allowed_file(kind: &str, i: usize) -> String {
    match kind_of(kind, i) {
        "name" => format!("/data/{i}/report.txt"),
        "directory" => format!("/data/{i}/plans"),
        _ => format!("/data/{i}/access.log"),
    }
}

fn read(file: &str) -> Request<'_> {
    Request {
        command: Command::Read,
        file: Some(file.as_bytes()),
    }
}

fn checks(c: &mut Criterion) {
    let mut group = c.benchmark_group("r2d2_rules");
    for kind in ["name", "directory", "regex", "mixed"] {
        for &size in axoneme_testkit::bench_sizes(&SIZES) {
            let maps: Vec<L7RuleMap> = (0..size).map(|i| map(kind, i)).collect();
            let started = Instant::now();
            let rules = R2d2.compile(&maps).unwrap();
            eprintln!(
                "{kind} x {size}: compiled in {:.1} ms",
                started.elapsed().as_secs_f64() * 1e3
            );
            let hit = allowed_file(kind, size / 2);
            let miss = "/secret/plans.log";
            assert!(rules.allows(&read(&hit)));
            assert!(!rules.allows(&read(miss)));
            group.bench_function(BenchmarkId::new(format!("{kind}/hit"), size), |b| {
                b.iter(|| rules.allows(&read(black_box(&hit))))
            });
            group.bench_function(BenchmarkId::new(format!("{kind}/miss"), size), |b| {
                b.iter(|| rules.allows(&read(black_box(miss))))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, checks);
criterion_main!(benches);
