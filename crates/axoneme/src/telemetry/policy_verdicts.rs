//! Request verdicts by guarded endpoint and deciding policy: the series of
//! `axoneme_policy_verdicts_total`, which say which policy lets which endpoint's requests
//! through, or whose requests nothing allows.
//!
//! A connection resolves the counters of every policy its request-level policy can name when
//! it starts (and again after a policy change), under a lock taken only then; a request costs
//! a comparison of names and one relaxed atomic add. The number of series is bounded: past
//! [`MAX_SERIES`] (endpoint, direction, policy) triples per protocol, verdicts of new triples
//! are counted together in `axoneme_policy_verdicts_overflow_total`. Series are never removed
//! while the agent runs, so a counter never goes back. This module only counts and renders.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axoneme_sdk::Direction;

use crate::telemetry::metrics::VerdictCounters;

/// The most (endpoint, direction, policy) series one protocol keeps.
pub const MAX_SERIES: usize = 4096;

/// The series of one guarded endpoint: for each direction (ingress, egress), the counters by
/// policy.
type EndpointSeries = [BTreeMap<Arc<str>, Arc<VerdictCounters>>; 2];

/// The per-policy verdict counters of one protocol.
#[derive(Debug, Default)]
pub struct PolicyVerdicts {
    series: Mutex<Series>,
    /// Verdicts of triples past [`MAX_SERIES`], by direction (ingress, egress).
    overflow: [Arc<VerdictCounters>; 2],
}

/// The series kept, by endpoint, and how many there are.
#[derive(Debug, Default)]
struct Series {
    by_endpoint: BTreeMap<Arc<str>, EndpointSeries>,
    count: usize,
}

/// The counters of the policies one guarded end of a connection can be decided by, resolved
/// when the connection starts.
#[derive(Debug, Default)]
pub struct EndCounters(Vec<(Arc<str>, Arc<VerdictCounters>)>);

impl EndCounters {
    /// The counters of the verdicts a policy named `policy` decides, if it was resolved.
    #[inline]
    pub fn of(&self, policy: &str) -> Option<&VerdictCounters> {
        self.0
            .iter()
            .find(|(name, _)| &**name == policy)
            .map(|(_, counters)| &**counters)
    }
}

impl PolicyVerdicts {
    /// The counters of `endpoint`'s verdicts in `direction` by each of `policies`.
    pub fn resolve<'p>(
        &self,
        endpoint: &str,
        direction: Direction,
        policies: impl Iterator<Item = &'p str>,
    ) -> EndCounters {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let Series { by_endpoint, count } = &mut *series;
        // Names are looked up as given; only a series seen for the first time allocates.
        if !by_endpoint.contains_key(endpoint) {
            by_endpoint.insert(Arc::from(endpoint), EndpointSeries::default());
        }
        let by_policy = &mut by_endpoint
            .get_mut(endpoint)
            .expect("inserted above when missing")[slot(direction)];
        let resolved = policies
            .map(|policy| match by_policy.get_key_value(policy) {
                Some((name, counters)) => (Arc::clone(name), Arc::clone(counters)),
                None if *count < MAX_SERIES => {
                    *count += 1;
                    let name: Arc<str> = Arc::from(policy);
                    let counters = Arc::new(VerdictCounters::default());
                    by_policy.insert(Arc::clone(&name), Arc::clone(&counters));
                    (name, counters)
                }
                None => (
                    Arc::from(policy),
                    Arc::clone(&self.overflow[slot(direction)]),
                ),
            })
            .collect();
        EndCounters(resolved)
    }

    /// Appends the samples of protocol `proto` to `out`: `verdicts` for the series,
    /// `overflow` for those past the bound.
    pub fn render(&self, proto: &str, verdicts: &mut String, overflow: &mut String) {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let all = series
            .by_endpoint
            .iter()
            .flat_map(|(endpoint, directions)| {
                [Direction::Ingress, Direction::Egress]
                    .into_iter()
                    .flat_map(move |direction| {
                        directions[slot(direction)]
                            .iter()
                            .map(move |(policy, counters)| (endpoint, direction, policy, counters))
                    })
            });
        for (endpoint, direction, policy, counters) in all {
            for (verdict, n) in samples(counters) {
                let _ = writeln!(
                    verdicts,
                    "axoneme_policy_verdicts_total{{protocol=\"{proto}\",endpoint=\"{}\",direction=\"{}\",policy=\"{}\",verdict=\"{verdict}\"}} {n}",
                    escape(endpoint),
                    direction_label(direction),
                    escape(policy),
                );
            }
        }
        for direction in [Direction::Ingress, Direction::Egress] {
            for (verdict, n) in samples(&self.overflow[slot(direction)]) {
                let _ = writeln!(
                    overflow,
                    "axoneme_policy_verdicts_overflow_total{{protocol=\"{proto}\",direction=\"{}\",verdict=\"{verdict}\"}} {n}",
                    direction_label(direction),
                );
            }
        }
    }
}

fn samples(counters: &VerdictCounters) -> [(&'static str, u64); 3] {
    let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
    [
        ("allowed", load(&counters.allowed)),
        ("denied", load(&counters.denied)),
        ("audit", load(&counters.audited)),
    ]
}

fn slot(direction: Direction) -> usize {
    match direction {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

fn direction_label(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

/// A label value as Prometheus' text format writes it: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_triple_counts_apart_and_the_same_triple_shares_its_counters() {
        let verdicts = PolicyVerdicts::default();
        let a = verdicts.resolve("cache", Direction::Ingress, ["", "fleet"].into_iter());
        let b = verdicts.resolve("cache", Direction::Ingress, ["fleet"].into_iter());
        let c = verdicts.resolve("cache", Direction::Egress, ["fleet"].into_iter());
        a.of("fleet")
            .unwrap()
            .allowed
            .fetch_add(2, Ordering::Relaxed);
        b.of("fleet")
            .unwrap()
            .allowed
            .fetch_add(1, Ordering::Relaxed);
        c.of("fleet")
            .unwrap()
            .denied
            .fetch_add(1, Ordering::Relaxed);
        a.of("").unwrap().denied.fetch_add(4, Ordering::Relaxed);
        assert!(a.of("other").is_none());
        let (mut out, mut overflow) = (String::new(), String::new());
        verdicts.render("memcache", &mut out, &mut overflow);
        let line = |endpoint: &str, direction: &str, policy: &str, verdict: &str| {
            format!(
                "axoneme_policy_verdicts_total{{protocol=\"memcache\",endpoint=\"{endpoint}\",direction=\"{direction}\",policy=\"{policy}\",verdict=\"{verdict}\"}}"
            )
        };
        for (expected, value) in [
            (line("cache", "ingress", "fleet", "allowed"), 3),
            (line("cache", "egress", "fleet", "denied"), 1),
            (line("cache", "ingress", "", "denied"), 4),
            (line("cache", "ingress", "", "allowed"), 0),
        ] {
            assert!(out.contains(&format!("{expected} {value}\n")), "{out}");
        }
        assert_eq!(out.lines().count(), 3 * 3, "{out}");
        assert!(overflow.lines().all(|l| l.ends_with(" 0")), "{overflow}");
    }

    #[test]
    fn series_past_the_bound_are_counted_together() {
        let verdicts = PolicyVerdicts::default();
        for i in 0..MAX_SERIES {
            let name = format!("p{i}");
            verdicts.resolve("cache", Direction::Ingress, [name.as_str()].into_iter());
        }
        let late = verdicts.resolve("cache", Direction::Ingress, ["late"].into_iter());
        late.of("late")
            .unwrap()
            .denied
            .fetch_add(5, Ordering::Relaxed);
        let (mut out, mut overflow) = (String::new(), String::new());
        verdicts.render("memcache", &mut out, &mut overflow);
        assert_eq!(out.lines().count(), MAX_SERIES * 3);
        assert!(!out.contains("policy=\"late\""));
        assert!(overflow.contains(
            "axoneme_policy_verdicts_overflow_total{protocol=\"memcache\",direction=\"ingress\",verdict=\"denied\"} 5\n"
        ));
        // A triple kept before the bound keeps its own series.
        let early = verdicts.resolve("cache", Direction::Ingress, ["p7"].into_iter());
        assert!(!std::ptr::eq(
            early.of("p7").unwrap(),
            &*verdicts.overflow[0]
        ));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
