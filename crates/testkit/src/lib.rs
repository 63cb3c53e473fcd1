//! Test support for Axoneme's parsers and datapath: the small pieces every parser test, bench
//! and fuzz target needs, so that each of them shows only what it tests.
//!
//! Only for tests, benches and fuzz targets; nothing here is used by the proxy itself.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axoneme_datapath::Output;
use axoneme_sdk::{AccessLog, ConnectionMeta, Direction, Flow, LogEntry};

/// Connection metadata for a test connection from `source` to `destination`.
pub fn meta(source: &str, destination: &str) -> ConnectionMeta {
    let addr = |s: &str| s.parse::<SocketAddr>().expect("a socket address");
    ConnectionMeta {
        id: 1,
        listener: "test".into(),
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

/// Datapath output that is only counted, for benches.
#[derive(Default)]
pub struct Discard(pub usize);

impl Output for Discard {
    fn emit(&mut self, _: Flow, bytes: &[u8]) {
        self.0 += bytes.len();
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

/// A global allocator that counts allocations, for allocations-per-request figures:
/// `#[global_allocator] static ALLOC: CountingAllocator = CountingAllocator;`.
pub struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

impl CountingAllocator {
    /// Allocations (and reallocations) so far, process-wide.
    pub fn count() -> u64 {
        ALLOCATIONS.load(Ordering::Relaxed)
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}
