//! Test support for Axoneme's parsers and datapath: the small pieces every parser test, bench
//! and fuzz target needs, so that each of them shows only what it tests.
//!
//! Only for tests, benches and fuzz targets; nothing here is used by the proxy itself.

pub mod etcd;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};

use std::any::Any;
use std::cell::Cell;
use std::fmt;

use axoneme_datapath::{Connection, ConnectionError, Env, Limits, Output};
use axoneme_sdk::{
    logging_audit, AccessLog, CompiledRules, ConnectionMeta, Direction, ErrorCode, Flow, L7RuleMap,
    LogEntry, Protocol, RequestPolicy, Verdict,
};

/// Connection metadata for a test connection from `source` to `destination`.
pub fn meta(source: &str, destination: &str) -> ConnectionMeta {
    let addr = |s: &str| s.parse::<SocketAddr>().expect("a socket address");
    ConnectionMeta {
        id: 1,
        listener: "test".into(),
        endpoint: "test".into(),
        direction: Direction::Ingress,
        source: addr(source),
        destination: addr(destination),
        source_identity: 256,
        destination_identity: 257,
        source_labels: Arc::from(Vec::new()),
        destination_labels: Arc::from(Vec::new()),
    }
}

/// An access log that discards every entry ("logging off").
pub struct NullLog;

impl AccessLog for NullLog {
    fn log(&self, _: &LogEntry<'_>) {}
}

/// An access log that keeps each entry as `"<type> <policy> key=value ..."`.
#[derive(Default)]
pub struct RecordingLog(Mutex<Vec<String>>);

impl RecordingLog {
    /// The entries so far.
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().expect("log lock").clone()
    }
}

impl AccessLog for RecordingLog {
    fn log(&self, entry: &LogEntry<'_>) {
        let mut line = format!("{} {}", entry.entry_type.as_str(), entry.policy_name);
        for field in entry.fields {
            line.push_str(&format!(
                " {}={}",
                field.key,
                String::from_utf8_lossy(field.value)
            ));
        }
        if let Some(reason) = logging_audit() {
            line.push_str(&format!(" (audit: {})", reason.as_str()));
        }
        self.0.lock().expect("log lock").push(line);
    }
}

/// Datapath output kept per destination.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Capture {
    /// Bytes emitted on the request flow.
    pub upstream: Vec<u8>,
    /// Bytes emitted on the reply flow.
    pub client: Vec<u8>,
}

impl Output for Capture {
    fn emit(&mut self, flow: Flow, bytes: &[u8]) {
        match flow {
            Flow::Request => self.upstream.extend_from_slice(bytes),
            Flow::Reply => self.client.extend_from_slice(bytes),
        }
    }
}

/// What one step of a test (some reads on one flow) made the proxy send on each side: the
/// value a test compares with what it expects, as Cilium's Go cases compare operations and
/// injected bytes.
///
/// Its `Debug` shows both sides as escaped text, so that a failed comparison of protocol bytes
/// reads as the protocol does.
#[derive(Default, PartialEq, Eq)]
pub struct Emitted {
    /// Bytes sent upstream (on the request flow).
    pub upstream: Vec<u8>,
    /// Bytes sent to the client (on the reply flow).
    pub client: Vec<u8>,
}

impl Emitted {
    /// `upstream` sent upstream and `client` sent to the client.
    pub fn new(upstream: &[u8], client: &[u8]) -> Emitted {
        Emitted {
            upstream: upstream.to_vec(),
            client: client.to_vec(),
        }
    }

    /// Nothing sent on either side: what a step that leaves the proxy waiting for more emits.
    pub fn nothing() -> Emitted {
        Emitted::default()
    }
}

impl fmt::Debug for Emitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "upstream \"{}\", client \"{}\"",
            self.upstream.escape_ascii(),
            self.client.escape_ascii()
        )
    }
}

/// Datapath output that is only counted, for benches.
#[derive(Default)]
pub struct Discard(pub usize);

impl Output for Discard {
    fn emit(&mut self, _: Flow, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// Whether a bench binary runs as a benchmark (`cargo bench` passes `--bench`) rather than as
/// the smoke test `cargo test --all-targets` makes of it, running each bench once: set-ups too
/// slow to build unoptimised (100,000 regex rules) are then left out.
fn benchmarking() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// The list sizes a rule bench runs at: all of `sizes` as a benchmark, all but the last (the
/// largest) as a test (see [`benchmarking`]).
pub fn bench_sizes(sizes: &[usize]) -> &[usize] {
    match benchmarking() {
        true => sizes,
        false => &sizes[..sizes.len().saturating_sub(1)],
    }
}

/// `data` cut at `points` (out-of-range points are ignored), as reads might deliver it.
pub fn split_at_points(data: &[u8], mut points: Vec<usize>) -> Vec<&[u8]> {
    points.retain(|&p| p <= data.len());
    points.sort_unstable();
    let mut chunks = Vec::with_capacity(points.len() + 1);
    let mut last = 0;
    for p in points {
        chunks.push(&data[last..p]);
        last = p;
    }
    chunks.push(&data[last..]);
    chunks
}

/// A global allocator that counts allocations per thread, for allocations-per-request figures
/// that other threads (a test harness, a logger) cannot disturb, and the bytes live in the
/// process, for what a structure holds; threads that call [`CountingAllocator::not_this_thread`]
/// are left out of the live count:
/// `#[global_allocator] static ALLOC: CountingAllocator = CountingAllocator;`.
pub struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Bytes allocated and not yet freed by the counted threads together.
static LIVE: AtomicIsize = AtomicIsize::new(0);

impl CountingAllocator {
    /// Allocations (and reallocations) made so far by the calling thread.
    pub fn count() -> u64 {
        ALLOCATIONS.with(Cell::get)
    }

    /// Bytes allocated and not yet freed by the counted threads.
    pub fn live_bytes() -> usize {
        LIVE.load(Ordering::Relaxed).max(0) as usize
    }

    /// Leaves the calling thread's allocations out of [`CountingAllocator::live_bytes`] from now
    /// on (a client or a server a test runs beside the code it measures). Such a thread must
    /// free what it allocates itself.
    pub fn not_this_thread() {
        UNCOUNTED.with(|uncounted| uncounted.set(true));
    }

    fn record() {
        // During thread teardown the counter may be gone; such allocations are not counted.
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }

    fn live(change: isize) {
        if !UNCOUNTED.try_with(Cell::get).unwrap_or(false) {
            LIVE.fetch_add(change, Ordering::Relaxed);
        }
    }
}

// A global allocator can only be written with `unsafe`; this one adds counts and nothing else.
#[allow(unsafe_code)]
// SAFETY: every call is forwarded unchanged to the system allocator, whose contract is the
// caller's; counting touches only an atomic and const-initialised thread-locals, which never
// allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        CountingAllocator::record();
        // SAFETY: as for the impl.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            CountingAllocator::live(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        CountingAllocator::record();
        // SAFETY: as for the impl.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            CountingAllocator::live(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for the impl.
        unsafe { System.dealloc(ptr, layout) };
        CountingAllocator::live(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        CountingAllocator::record();
        // SAFETY: as for the impl.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            CountingAllocator::live(new_size as isize - layout.size() as isize);
        }
        new
    }
}

/// Whether a bench was started to measure (`cargo bench` passes `--bench`) rather than run once
/// as a test by `cargo test --all-targets`: long measurements outside criterion's own are made
/// only then.
pub fn measuring() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// Nanoseconds the calling thread has run on a CPU (Linux's schedstat), for benches that report
/// on-CPU time beside wall-clock time on a shared machine; `None` where schedstat is absent.
pub fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// An `l7` list written as key/value pairs per map, as policies hold it.
pub fn rule_maps(maps: &[&[(&str, &str)]]) -> Vec<L7RuleMap> {
    maps.iter()
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// A policy of one compiled `l7` list, allowing in the name of `name`: the L7 part of a policy
/// without the L3/L4 part, for parser tests. Cloning shares the compiled rules.
#[derive(Clone)]
pub struct RulesPolicy {
    rules: CompiledRules,
    name: &'static str,
    audited: bool,
}

impl RulesPolicy {
    /// Compiles `maps` (each a list of key/value pairs) with `protocol`'s rule compiler.
    pub fn compile(
        protocol: &dyn Protocol,
        name: &'static str,
        maps: &[&[(&str, &str)]],
    ) -> RulesPolicy {
        let rules = protocol
            .compile_rules(&rule_maps(maps))
            .expect("test rules compile");
        RulesPolicy {
            rules,
            name,
            audited: false,
        }
    }

    /// The same rules in audit mode: what they do not allow is let through, audited.
    pub fn in_audit_mode(self) -> RulesPolicy {
        RulesPolicy {
            audited: true,
            ..self
        }
    }
}

impl RequestPolicy for RulesPolicy {
    fn check(&self, matches: &mut dyn FnMut(&(dyn Any + Send + Sync)) -> bool) -> Verdict<'_> {
        let allowed = matches(self.rules.as_ref());
        Verdict {
            allowed: allowed || self.audited,
            policy_name: if allowed { self.name } else { "" },
            audited: !allowed && self.audited,
        }
    }
}

/// One connection of a protocol through the real datapath engine, with its policy, access log
/// and output kept for inspection.
pub struct Session {
    /// The engine with the protocol's parser.
    pub conn: Connection,
    /// The policy requests are checked against.
    pub policy: RulesPolicy,
    /// What was logged.
    pub log: RecordingLog,
    /// What was emitted.
    pub sent: Capture,
}

impl Session {
    /// A connection parsed by `protocol` under `policy`.
    pub fn new(protocol: &dyn Protocol, policy: RulesPolicy) -> Session {
        Session::with_limits(protocol, policy, Limits::default())
    }

    /// A connection parsed by `protocol` under `policy`, with the datapath's `limits`.
    pub fn with_limits(protocol: &dyn Protocol, policy: RulesPolicy, limits: Limits) -> Session {
        let meta = meta("127.0.0.11:40000", "127.0.0.1:11211");
        let conn = Connection::new(protocol.new_parser(&meta), meta, protocol.name(), limits);
        Session {
            conn,
            policy,
            log: RecordingLog::default(),
            sent: Capture::default(),
        }
    }

    /// Hands `data` arriving on `flow` to the engine.
    pub fn send(&mut self, flow: Flow, data: &[u8]) -> Result<(), ConnectionError> {
        let env = Env {
            policy: &self.policy,
            log: &self.log,
        };
        self.conn.on_data(flow, data, false, &env, &mut self.sent)
    }

    /// Delivers `reads` on `flow`, one after another, and returns what they made the proxy
    /// send (only what these reads made it send, not what earlier steps did).
    ///
    /// Panics if a read closes the connection: a step is expected to leave it open.
    #[track_caller]
    pub fn deliver(&mut self, flow: Flow, reads: &[&[u8]]) -> Emitted {
        let (upstream, client) = (self.sent.upstream.len(), self.sent.client.len());
        for read in reads {
            self.send(flow, read).expect("the connection stays open");
        }
        Emitted {
            upstream: self.sent.upstream[upstream..].to_vec(),
            client: self.sent.client[client..].to_vec(),
        }
    }

    /// Delivers `request`, which the parser must refuse to read with `code`: the connection
    /// closes, the request sends nothing to either side, and the close is logged as one denial.
    #[track_caller]
    pub fn assert_refuses(&mut self, request: &[u8], code: ErrorCode) {
        let (upstream, client) = (self.sent.upstream.len(), self.sent.client.len());
        let entries = self.log().len();
        let error = self.send(Flow::Request, request).unwrap_err();
        assert!(
            matches!(&error, ConnectionError::Parse(e) if e.code == code),
            "expected a parse error {code:?}, got {error:?}"
        );
        assert_eq!(
            (self.sent.upstream.len(), self.sent.client.len()),
            (upstream, client),
            "nothing sent"
        );
        let log = self.log();
        assert_eq!(log.len(), entries + 1, "the close is logged: {log:?}");
        assert!(log[entries].starts_with("Denied "), "{log:?}");
    }

    /// The access-log entries so far.
    pub fn log(&self) -> Vec<String> {
        self.log.entries()
    }

    /// Replays arbitrary bytes as a sequence of reads, as fuzz targets do: each read is one
    /// control byte (its flow in the top bit, its length in the other seven) and that many
    /// bytes. Stops at the first error, which it returns.
    pub fn replay(&mut self, data: &[u8]) -> Result<(), ConnectionError> {
        let mut rest = data;
        while let Some((&control, tail)) = rest.split_first() {
            let flow = if control & 0x80 == 0 {
                Flow::Request
            } else {
                Flow::Reply
            };
            let len = usize::from(control & 0x7f).min(tail.len());
            let (chunk, tail) = tail.split_at(len);
            rest = tail;
            self.send(flow, chunk)?;
        }
        Ok(())
    }
}
