//! Prometheus metrics: counters and gauges the proxy updates as it works, rendered in the
//! Prometheus text format.
//!
//! Hot-path updates are single relaxed atomic operations on counters resolved when a connection
//! starts; rare events (parser errors) go through a lock. This module only counts and renders;
//! serving the text is the API's and the metrics listener's job.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use axoneme_sdk::Direction;

use crate::telemetry::policy_verdicts::PolicyVerdicts;

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Verdict counters of one protocol in one direction.
#[derive(Debug, Default)]
pub struct VerdictCounters {
    /// Requests allowed.
    pub allowed: AtomicU64,
    /// Requests denied.
    pub denied: AtomicU64,
    /// Requests a policy in audit mode would have denied, forwarded: counted here only.
    pub audited: AtomicU64,
}

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            elapsed.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }
}

/// Per-protocol metrics.
#[derive(Debug, Default)]
pub struct ProtocolMetrics {
    /// Verdicts for ingress connections.
    pub ingress: VerdictCounters,
    /// Verdicts for egress connections.
    pub egress: VerdictCounters,
    /// Time from a request's arrival to the first byte of its answer reaching the client.
    pub latency: Histogram,
    /// Verdicts by guarded endpoint and deciding policy.
    pub by_policy: PolicyVerdicts,
}

impl ProtocolMetrics {
    /// The verdict counters of `direction`.
    pub fn verdicts(&self, direction: Direction) -> &VerdictCounters {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// Why a connection was closed for waiting too long; see `timeouts` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// No byte from either side of a parsed connection.
    ClientIdle,
    /// A frame begun and not arrived whole.
    RequestProgress,
    /// A request forwarded and no byte from the upstream since.
    UpstreamResponse,
    /// Connecting to the upstream.
    UpstreamConnect,
    /// An API client that did not send a whole request head.
    ApiHeader,
}

impl Timeout {
    /// Every kind, in the order the metrics show them.
    pub const ALL: [Timeout; 5] = [
        Timeout::ClientIdle,
        Timeout::RequestProgress,
        Timeout::UpstreamResponse,
        Timeout::UpstreamConnect,
        Timeout::ApiHeader,
    ];

    /// The kind's label in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Timeout::ClientIdle => "client_idle",
            Timeout::RequestProgress => "request_progress",
            Timeout::UpstreamResponse => "upstream_response",
            Timeout::UpstreamConnect => "upstream_connect",
            Timeout::ApiHeader => "api_header",
        }
    }
}

/// Kinds of limit hits, each counted in `axoneme_limit_hits_total{limit}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// A connection refused because its listener held its `maxConnections`.
    ListenerConnections,
    /// A connection refused because the agent held `limits.maxConnections`.
    AgentConnections,
    /// Listeners stopped accepting because buffered bytes neared `limits.bufferedBytes`.
    AcceptPaused,
    /// A connection closed because buffered bytes went over `limits.bufferedBytes` and it was
    /// among those holding the most.
    BufferedBytes,
}

impl LimitHit {
    /// Every kind, in the order the metrics show them.
    pub const ALL: [LimitHit; 4] = [
        LimitHit::ListenerConnections,
        LimitHit::AgentConnections,
        LimitHit::AcceptPaused,
        LimitHit::BufferedBytes,
    ];

    /// The kind's label in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            LimitHit::ListenerConnections => "listener_connections",
            LimitHit::AgentConnections => "agent_connections",
            LimitHit::AcceptPaused => "accept_paused",
            LimitHit::BufferedBytes => "buffered_bytes",
        }
    }
}

/// Socket errors that end a connection before it is proxied, each counted in
/// `axoneme_socket_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketError {
    /// Accepting failed (usually out of file descriptors).
    Accept,
    /// An accepted connection's destination could not be learned, or the socket could not be
    /// handed to a worker.
    Destination,
    /// The upstream refused or failed the connection (a connect timeout is counted as a
    /// timeout instead).
    UpstreamConnect,
}

impl SocketError {
    /// Every kind, in the order the metrics show them.
    pub const ALL: [SocketError; 3] = [
        SocketError::Accept,
        SocketError::Destination,
        SocketError::UpstreamConnect,
    ];

    /// The kind's label in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            SocketError::Accept => "accept",
            SocketError::Destination => "destination",
            SocketError::UpstreamConnect => "upstream_connect",
        }
    }
}

/// Everything the proxy counts.
#[derive(Debug)]
pub struct Metrics {
    protocols: BTreeMap<&'static str, ProtocolMetrics>,
    /// Connections open now.
    pub connections_active: AtomicI64,
    /// Connections accepted.
    pub connections_total: AtomicU64,
    /// Connections refused at L3/L4.
    pub connections_refused: AtomicU64,
    /// Bytes from clients to upstreams.
    pub bytes_to_upstream: AtomicU64,
    /// Bytes from upstreams (and the proxy's own replies) to clients.
    pub bytes_to_client: AtomicU64,
    /// Parser panics.
    pub parser_panics: AtomicU64,
    /// TCP API requests refused for a missing or wrong bearer token.
    pub api_unauthorized: AtomicU64,
    parser_errors: Mutex<BTreeMap<String, u64>>,
    /// Connections closed for a timeout, indexed like [`Timeout::ALL`].
    timeouts: [AtomicU64; Timeout::ALL.len()],
    /// Limit hits, indexed like [`LimitHit::ALL`].
    limit_hits: [AtomicU64; LimitHit::ALL.len()],
    /// Socket errors, indexed like [`SocketError::ALL`].
    socket_errors: [AtomicU64; SocketError::ALL.len()],
}

/// Values the metrics do not hold themselves, read when rendering.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    /// The policy revision in force.
    pub policy_revision: u64,
    /// Policy changes refused.
    pub policy_import_errors: u64,
    /// Access-log entries dropped.
    pub access_log_dropped: u64,
    /// Access-log writes that failed.
    pub access_log_write_errors: u64,
    /// Bytes parsed connections buffer now.
    pub buffered_bytes: u64,
    /// The access-log and monitor queues.
    pub log_queues: LogQueueGauges,
    /// The kvstore's health, in cluster mode.
    pub kvstore: Option<KvstoreGauges>,
}

/// Whether this node's view of the kvstore is stale (cluster mode).
#[derive(Debug, Clone, Copy, Default)]
pub struct KvstoreGauges {
    /// The kvstore stopped answering; the last state is enforced meanwhile.
    pub stale: bool,
    /// For how long, in seconds (0 when not stale).
    pub stale_seconds: f64,
}

impl KvstoreGauges {
    /// Appends the kvstore's families.
    fn render(&self, out: &mut String) {
        family(
            out,
            "axoneme_kvstore_stale",
            "gauge",
            "1 while the kvstore does not answer this node (the last state is enforced), else 0.",
        );
        let _ = writeln!(out, "axoneme_kvstore_stale {}", u8::from(self.stale));
        family(
            out,
            "axoneme_kvstore_stale_seconds",
            "gauge",
            "Seconds since the kvstore stopped answering this node; 0 when it answers.",
        );
        let _ = writeln!(
            out,
            "axoneme_kvstore_stale_seconds {:.3}",
            self.stale_seconds
        );
    }
}

/// The access-log and monitor queues: what they hold and what they lost or cut.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogQueueGauges {
    /// Bytes of access-log entries held now, waiting or being written.
    pub access_log_queue_bytes: usize,
    /// Access-log entries lost in failed writes.
    pub access_log_failed_entries: u64,
    /// Access-log field values truncated.
    pub access_log_truncated_fields: u64,
    /// Monitor entries watchers lost because their backlog was full.
    pub monitor_dropped: u64,
    /// Bytes of monitor entries waiting for watchers now.
    pub monitor_queue_bytes: usize,
    /// Monitor watchers now.
    pub monitor_watchers: usize,
    /// Bytes of recent entries the monitor keeps for replay now.
    pub monitor_recent_bytes: usize,
}

impl LogQueueGauges {
    /// Appends the families of the access-log and monitor queues.
    fn render(&self, out: &mut String) {
        let samples: [(&str, &str, &str, u64); 7] = [
            (
                "axoneme_access_log_queue_bytes",
                "gauge",
                "Bytes of access-log entries held now, waiting for the writer or being written.",
                self.access_log_queue_bytes as u64,
            ),
            (
                "axoneme_access_log_failed_entries_total",
                "counter",
                "Access-log entries lost because the write holding them failed.",
                self.access_log_failed_entries,
            ),
            (
                "axoneme_access_log_truncated_fields_total",
                "counter",
                "Access-log field values truncated to accessLog.maxFieldBytes.",
                self.access_log_truncated_fields,
            ),
            (
                "axoneme_monitor_dropped_total",
                "counter",
                "Monitor entries lost by watchers whose backlog was full.",
                self.monitor_dropped,
            ),
            (
                "axoneme_monitor_queue_bytes",
                "gauge",
                "Bytes of monitor entries waiting for watchers now.",
                self.monitor_queue_bytes as u64,
            ),
            (
                "axoneme_monitor_watchers",
                "gauge",
                "Monitor watchers now.",
                self.monitor_watchers as u64,
            ),
            (
                "axoneme_monitor_recent_bytes",
                "gauge",
                "Bytes of recent entries kept for observe --last, at most monitor.recentBytes.",
                self.monitor_recent_bytes as u64,
            ),
        ];
        for (name, kind, help, value) in samples {
            family(out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
    }
}

impl Metrics {
    /// Metrics for the given protocols.
    pub fn new(protocols: &[&'static str]) -> Metrics {
        Metrics {
            protocols: protocols
                .iter()
                .map(|&p| (p, ProtocolMetrics::default()))
                .collect(),
            connections_active: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            bytes_to_upstream: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            parser_panics: AtomicU64::new(0),
            api_unauthorized: AtomicU64::new(0),
            parser_errors: Mutex::new(BTreeMap::new()),
            timeouts: Default::default(),
            limit_hits: Default::default(),
            socket_errors: Default::default(),
        }
    }

    /// The metrics of `protocol`, if it is known.
    pub fn protocol(&self, protocol: &str) -> Option<&ProtocolMetrics> {
        self.protocols.get(protocol)
    }

    /// Counts a connection closed for a protocol error of kind `reason`.
    pub fn parser_error(&self, reason: &str) {
        if let Ok(mut errors) = self.parser_errors.lock() {
            *errors.entry(reason.to_owned()).or_default() += 1;
        }
    }

    /// Counts a connection closed for the timeout `kind`.
    pub fn timed_out(&self, kind: Timeout) {
        self.timeouts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed so far for the timeout `kind`.
    pub fn timeouts(&self, kind: Timeout) -> u64 {
        self.timeouts[kind as usize].load(Ordering::Relaxed)
    }

    /// Counts a hit of the limit `kind`; the hits so far, this one included.
    pub fn limit_hit(&self, kind: LimitHit) -> u64 {
        self.limit_hits[kind as usize].fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Hits of the limit `kind` so far.
    pub fn limit_hits(&self, kind: LimitHit) -> u64 {
        self.limit_hits[kind as usize].load(Ordering::Relaxed)
    }

    /// Counts a socket error of `kind`.
    pub fn socket_error(&self, kind: SocketError) {
        self.socket_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Socket errors of `kind` so far.
    pub fn socket_errors(&self, kind: SocketError) -> u64 {
        self.socket_errors[kind as usize].load(Ordering::Relaxed)
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::new();
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        family(
            &mut out,
            "axoneme_l7_requests_total",
            "counter",
            "L7 requests by protocol, verdict and direction.",
        );
        for (proto, m) in &self.protocols {
            for (direction, counters) in [("ingress", &m.ingress), ("egress", &m.egress)] {
                for (verdict, n) in [
                    ("allowed", &counters.allowed),
                    ("denied", &counters.denied),
                    ("audit", &counters.audited),
                ] {
                    let _ = writeln!(
                        out,
                        "axoneme_l7_requests_total{{protocol=\"{proto}\",verdict=\"{verdict}\",direction=\"{direction}\"}} {}",
                        load(n)
                    );
                }
            }
        }
        let (mut by_policy, mut overflow) = (String::new(), String::new());
        for (proto, m) in &self.protocols {
            m.by_policy.render(proto, &mut by_policy, &mut overflow);
        }
        family(
            &mut out,
            "axoneme_policy_verdicts_total",
            "counter",
            "L7 requests by protocol, guarded endpoint, direction, deciding policy (empty: none \
             allowed it) and verdict.",
        );
        out.push_str(&by_policy);
        family(
            &mut out,
            "axoneme_policy_verdicts_overflow_total",
            "counter",
            "L7 requests of endpoint and policy pairs past the bound on series, by protocol, \
             direction and verdict.",
        );
        out.push_str(&overflow);
        family(
            &mut out,
            "axoneme_connections_active",
            "gauge",
            "Connections open now.",
        );
        let _ = writeln!(
            out,
            "axoneme_connections_active {}",
            self.connections_active.load(Ordering::Relaxed)
        );
        let counters = [
            (
                "axoneme_connections_total",
                "Connections accepted.",
                load(&self.connections_total),
            ),
            (
                "axoneme_connections_refused_total",
                "Connections refused at L3/L4.",
                load(&self.connections_refused),
            ),
            (
                "axoneme_parser_panics_total",
                "Parser panics (each closed its connection).",
                load(&self.parser_panics),
            ),
            (
                "axoneme_api_unauthorized_total",
                "TCP API requests refused for a missing or wrong bearer token.",
                load(&self.api_unauthorized),
            ),
            (
                "axoneme_access_log_dropped_total",
                "Access-log entries dropped because the queue was full (accessLog.queueBytes).",
                gauges.access_log_dropped,
            ),
            (
                "axoneme_access_log_write_errors_total",
                "Access-log writes that failed (their entries are lost).",
                gauges.access_log_write_errors,
            ),
            (
                "axoneme_policy_import_errors_total",
                "Policy changes refused as invalid.",
                gauges.policy_import_errors,
            ),
        ];
        for (name, help, value) in counters {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        }
        family(
            &mut out,
            "axoneme_policy_revision",
            "gauge",
            "The policy revision in force.",
        );
        let _ = writeln!(out, "axoneme_policy_revision {}", gauges.policy_revision);
        family(
            &mut out,
            "axoneme_bytes_total",
            "counter",
            "Bytes received from clients (to_upstream) and from upstreams (to_client).",
        );
        let _ = writeln!(
            out,
            "axoneme_bytes_total{{direction=\"to_upstream\"}} {}",
            load(&self.bytes_to_upstream)
        );
        let _ = writeln!(
            out,
            "axoneme_bytes_total{{direction=\"to_client\"}} {}",
            load(&self.bytes_to_client)
        );
        family(
            &mut out,
            "axoneme_parser_errors_total",
            "counter",
            "Connections closed for a protocol error, by reason.",
        );
        if let Ok(errors) = self.parser_errors.lock() {
            for (reason, n) in errors.iter() {
                let _ = writeln!(
                    out,
                    "axoneme_parser_errors_total{{reason=\"{reason}\"}} {n}"
                );
            }
        }
        family(
            &mut out,
            "axoneme_timeouts_total",
            "counter",
            "Connections closed for waiting too long, by kind of timeout.",
        );
        for kind in Timeout::ALL {
            let _ = writeln!(
                out,
                "axoneme_timeouts_total{{kind=\"{}\"}} {}",
                kind.name(),
                self.timeouts(kind)
            );
        }
        family(
            &mut out,
            "axoneme_limit_hits_total",
            "counter",
            "Limits reached: connections refused or closed, or accepting paused, by limit.",
        );
        for kind in LimitHit::ALL {
            let _ = writeln!(
                out,
                "axoneme_limit_hits_total{{limit=\"{}\"}} {}",
                kind.name(),
                self.limit_hits(kind)
            );
        }
        family(
            &mut out,
            "axoneme_socket_errors_total",
            "counter",
            "Connections ended by a socket error before being proxied, by kind.",
        );
        for kind in SocketError::ALL {
            let _ = writeln!(
                out,
                "axoneme_socket_errors_total{{kind=\"{}\"}} {}",
                kind.name(),
                self.socket_errors(kind)
            );
        }
        family(
            &mut out,
            "axoneme_buffered_bytes",
            "gauge",
            "Bytes parsed connections buffer now (kept for parsers, waiting to be written).",
        );
        let _ = writeln!(out, "axoneme_buffered_bytes {}", gauges.buffered_bytes);
        family(
            &mut out,
            "axoneme_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to the first byte of its answer reaching the client.",
        );
        for (proto, m) in &self.protocols {
            let mut cumulative = 0;
            for (bound, n) in LATENCY_BUCKETS.iter().zip(&m.latency.buckets) {
                cumulative += load(n);
                let _ = writeln!(
                    out,
                    "axoneme_request_duration_seconds_bucket{{protocol=\"{proto}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = load(&m.latency.count);
            let _ = writeln!(out, "axoneme_request_duration_seconds_bucket{{protocol=\"{proto}\",le=\"+Inf\"}} {count}");
            let sum = load(&m.latency.sum_nanos) as f64 / 1e9;
            let _ = writeln!(
                out,
                "axoneme_request_duration_seconds_sum{{protocol=\"{proto}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "axoneme_request_duration_seconds_count{{protocol=\"{proto}\"}} {count}"
            );
        }
        gauges.log_queues.render(&mut out);
        if let Some(kvstore) = gauges.kvstore {
            kvstore.render(&mut out);
        }
        out
    }
}

/// Appends the HELP and TYPE lines of the family `name`.
pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::new(&["memcache"]);
        let m = metrics.protocol("memcache").unwrap();
        m.verdicts(Direction::Ingress)
            .denied
            .fetch_add(2, Ordering::Relaxed);
        m.latency.observe(Duration::from_micros(300));
        metrics.parser_error("frame_too_large");
        metrics.timed_out(Timeout::RequestProgress);
        metrics.timed_out(Timeout::RequestProgress);
        metrics.limit_hit(LimitHit::AcceptPaused);
        metrics.socket_error(SocketError::UpstreamConnect);
        let text = metrics.render(Gauges {
            policy_revision: 3,
            policy_import_errors: 1,
            access_log_dropped: 0,
            access_log_write_errors: 2,
            buffered_bytes: 4096,
            log_queues: LogQueueGauges {
                access_log_queue_bytes: 4096,
                monitor_dropped: 7,
                monitor_recent_bytes: 512,
                ..LogQueueGauges::default()
            },
            kvstore: Some(KvstoreGauges {
                stale: true,
                stale_seconds: 2.5,
            }),
        });
        for line in [
            "axoneme_l7_requests_total{protocol=\"memcache\",verdict=\"denied\",direction=\"ingress\"} 2",
            "axoneme_l7_requests_total{protocol=\"memcache\",verdict=\"allowed\",direction=\"egress\"} 0",
            "axoneme_policy_revision 3",
            "axoneme_policy_import_errors_total 1",
            "axoneme_access_log_write_errors_total 2",
            "axoneme_parser_errors_total{reason=\"frame_too_large\"} 1",
            "axoneme_timeouts_total{kind=\"request_progress\"} 2",
            "axoneme_timeouts_total{kind=\"api_header\"} 0",
            "axoneme_buffered_bytes 4096",
            "axoneme_monitor_recent_bytes 512",
            "axoneme_limit_hits_total{limit=\"accept_paused\"} 1",
            "axoneme_limit_hits_total{limit=\"buffered_bytes\"} 0",
            "axoneme_socket_errors_total{kind=\"upstream_connect\"} 1",
            "axoneme_socket_errors_total{kind=\"accept\"} 0",
            "axoneme_request_duration_seconds_bucket{protocol=\"memcache\",le=\"0.00025\"} 0",
            "axoneme_request_duration_seconds_bucket{protocol=\"memcache\",le=\"0.0005\"} 1",
            "axoneme_request_duration_seconds_count{protocol=\"memcache\"} 1",
            "axoneme_access_log_queue_bytes 4096",
            "axoneme_access_log_failed_entries_total 0",
            "axoneme_monitor_dropped_total 7",
            "axoneme_kvstore_stale 1",
            "axoneme_kvstore_stale_seconds 2.500",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        let alone = metrics.render(Gauges {
            policy_revision: 3,
            policy_import_errors: 0,
            access_log_dropped: 0,
            access_log_write_errors: 0,
            buffered_bytes: 0,
            log_queues: LogQueueGauges::default(),
            kvstore: None,
        });
        assert!(
            !alone.contains("axoneme_kvstore"),
            "no kvstore families without cluster mode:\n{alone}"
        );
    }
}
