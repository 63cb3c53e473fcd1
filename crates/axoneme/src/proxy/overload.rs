//! Overload protection for the whole agent: how many connections it holds and how many bytes
//! they buffer.
//!
//! Every parsed connection registers a [`Load`] and keeps the bytes it holds on to (kept for
//! its parser, waiting to be written) up to date in it. Their sum is checked against the
//! buffered-bytes budget:
//! - at [`PAUSE_PERCENT`] of the budget, listeners stop accepting (new connections wait in the
//!   kernel's backlog) until the sum falls below [`RESUME_PERCENT`];
//! - above the budget, the connections holding the most are closed until the sum is back under
//!   [`PAUSE_PERCENT`].
//!
//! The connection count is bounded the same way for every listener together (per listener, the
//! listener's own tracker counts). This module decides and counts; it moves no bytes and knows
//! no protocol.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use crate::proxy::sockets;
use crate::telemetry::metrics::{LimitHit, Metrics};
use crate::telemetry::throttle::{throttled_warn, Throttle};

/// Share of the budget at which listeners stop accepting.
pub(crate) const PAUSE_PERCENT: usize = 90;
/// Share of the budget below which paused listeners accept again.
pub(crate) const RESUME_PERCENT: usize = 80;

/// The agent's connection and buffered-bytes limits, and what counts against them.
#[derive(Debug)]
pub(crate) struct Overload {
    max_connections: usize,
    budget: usize,
    open: AtomicUsize,
    buffered: AtomicUsize,
    /// Set at [`PAUSE_PERCENT`] of the budget, cleared below [`RESUME_PERCENT`].
    paused: AtomicBool,
    /// Wakes paused listeners.
    resumed: Notify,
    /// Wakes the shedder when the budget is exceeded.
    exceeded: Notify,
    loads: Mutex<HashMap<u64, Weak<Load>>>,
    metrics: Arc<Metrics>,
    throttle: Arc<Throttle>,
}

impl Overload {
    /// Limits of `max_connections` open connections and `budget` buffered bytes; hits are
    /// counted in `metrics` and logged through `throttle`.
    pub(crate) fn new(
        max_connections: usize,
        budget: usize,
        metrics: Arc<Metrics>,
        throttle: Arc<Throttle>,
    ) -> Arc<Overload> {
        Arc::new(Overload {
            max_connections,
            budget,
            open: AtomicUsize::new(0),
            buffered: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            resumed: Notify::new(),
            exceeded: Notify::new(),
            loads: Mutex::new(HashMap::new()),
            metrics,
            throttle,
        })
    }

    /// A place for one more connection, or `None` when the agent holds its maximum (counted
    /// and logged).
    pub(crate) fn admit(self: &Arc<Overload>) -> Option<Admitted> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max_connections).then_some(open + 1)
            })
            .is_ok();
        if !admitted {
            self.hit(
                LimitHit::AgentConnections,
                format_args!(
                    "connection refused: the agent holds limits.maxConnections ({})",
                    self.max_connections
                ),
            );
            return None;
        }
        Some(Admitted(Arc::clone(self)))
    }

    /// Returns at once while buffered bytes are under [`PAUSE_PERCENT`] of the budget;
    /// otherwise waits until they fall below [`RESUME_PERCENT`].
    pub(crate) async fn accepting(&self) {
        loop {
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if !self.paused.load(Ordering::Acquire) {
                return;
            }
            resumed.await;
        }
    }

    /// Registers connection `id`'s load; it counts until the returned handle is dropped.
    pub(crate) fn register(self: &Arc<Overload>, id: u64) -> Registered {
        let load = Arc::new(Load::default());
        self.lock_loads().insert(id, Arc::downgrade(&load));
        Registered {
            overload: Arc::clone(self),
            id,
            load,
        }
    }

    /// Bytes the registered connections buffer now.
    pub(crate) fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Counts a hit of `kind` and logs `message`, at most once per
    /// [`LOG_EVERY`](crate::telemetry::throttle::LOG_EVERY) per kind.
    pub(crate) fn hit(&self, kind: LimitHit, message: std::fmt::Arguments<'_>) {
        let hits = self.metrics.limit_hit(kind);
        throttled_warn!(
            self.throttle,
            kind.name(),
            limit = kind.name(),
            hits,
            "{message}"
        );
    }

    /// Closes the connections holding the most whenever buffered bytes exceed the budget,
    /// until they are back under [`PAUSE_PERCENT`] of it. Runs for the agent's life.
    pub(crate) async fn shed(self: Arc<Overload>) {
        loop {
            self.exceeded.notified().await;
            self.shed_now();
        }
    }

    /// One round of [`Overload::shed`].
    fn shed_now(&self) {
        let mut loads: Vec<Arc<Load>> = {
            let mut registered = self.lock_loads();
            registered.retain(|_, load| load.strong_count() > 0);
            registered.values().filter_map(Weak::upgrade).collect()
        };
        let mut holding: usize = loads
            .iter()
            .filter(|load| !load.shed.load(Ordering::Acquire))
            .map(|load| load.bytes.load(Ordering::Relaxed))
            .sum();
        if holding <= self.budget {
            return;
        }
        loads.sort_unstable_by_key(|load| std::cmp::Reverse(load.bytes.load(Ordering::Relaxed)));
        let target = self.budget / 100 * PAUSE_PERCENT;
        for load in loads {
            if holding <= target {
                break;
            }
            if load.shed.swap(true, Ordering::AcqRel) {
                continue;
            }
            let bytes = load.bytes.load(Ordering::Relaxed);
            holding = holding.saturating_sub(bytes);
            load.close.notify_one();
            self.hit(
                LimitHit::BufferedBytes,
                format_args!(
                    "connection closed: buffered bytes over limits.bufferedBytes ({}); it held {bytes}",
                    self.budget
                ),
            );
        }
    }

    /// Moves the buffered total by one connection's load changing from `old` to `new`.
    fn account(&self, old: usize, new: usize) {
        let total = if new >= old {
            self.buffered.fetch_add(new - old, Ordering::AcqRel) + (new - old)
        } else {
            self.buffered.fetch_sub(old - new, Ordering::AcqRel) - (old - new)
        };
        let paused = self.paused.load(Ordering::Acquire);
        if !paused && total >= self.budget / 100 * PAUSE_PERCENT {
            if !self.paused.swap(true, Ordering::AcqRel) {
                self.hit(
                    LimitHit::AcceptPaused,
                    format_args!(
                        "listeners stopped accepting: {total} bytes buffered, limits.bufferedBytes is {}",
                        self.budget
                    ),
                );
            }
        } else if paused
            && total < self.budget / 100 * RESUME_PERCENT
            && self.paused.swap(false, Ordering::AcqRel)
        {
            tracing::info!(buffered = total, "listeners accept again");
            self.resumed.notify_waiters();
        }
        if total > self.budget {
            self.exceeded.notify_one();
        }
    }

    fn lock_loads(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<Load>>> {
        self.loads.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Files the agent keeps for itself (listeners, the access log, the API, policy files) when
/// the connection maximum is derived from the open-file limit.
const RESERVED_FILES: u64 = 64;

/// The connection maximum when none is configured: as many as the open-file limit allows at two
/// files each, after raising the limit to its hard maximum (as a server expecting many
/// connections should).
pub(crate) fn max_connections_by_file_limit() -> usize {
    let files = sockets::raise_open_file_limit().unwrap_or(1024);
    let connections = files.saturating_sub(RESERVED_FILES) / 2;
    usize::try_from(connections).unwrap_or(usize::MAX).max(1)
}

/// One open connection counted against `limits.maxConnections`, until dropped.
#[derive(Debug)]
pub(crate) struct Admitted(Arc<Overload>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one connection buffers, and whether it is to close to relieve the agent.
#[derive(Debug, Default)]
struct Load {
    bytes: AtomicUsize,
    shed: AtomicBool,
    close: Notify,
}

/// A connection's [`Load`], counted in the agent's total until dropped.
#[derive(Debug)]
pub(crate) struct Registered {
    overload: Arc<Overload>,
    id: u64,
    load: Arc<Load>,
}

impl Registered {
    /// Records that the connection now buffers `bytes`.
    pub(crate) fn set(&self, bytes: usize) {
        let old = self.load.bytes.swap(bytes, Ordering::Relaxed);
        if old != bytes {
            self.overload.account(old, bytes);
        }
    }

    /// Completes when the connection is to close because the agent buffers too much.
    pub(crate) async fn shed(&self) {
        self.load.close.notified().await;
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.set(0);
        self.overload.lock_loads().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    fn ready(future: impl Future<Output = ()>) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        pin!(future).poll(&mut cx) == Poll::Ready(())
    }

    #[test]
    fn refuses_connections_over_the_maximum_and_counts_them() {
        let overload = Overload::new(2, 1000, Arc::new(Metrics::new(&[])), Arc::default());
        let first = overload.admit().unwrap();
        let _second = overload.admit().unwrap();
        assert!(overload.admit().is_none());
        assert_eq!(overload.metrics.limit_hits(LimitHit::AgentConnections), 1);
        drop(first);
        let _third = overload.admit().unwrap();
        assert!(overload.admit().is_none());
    }

    #[test]
    fn pauses_accepting_near_the_budget_and_resumes_well_below_it() {
        let overload = Overload::new(10, 1000, Arc::new(Metrics::new(&[])), Arc::default());
        let a = overload.register(1);
        a.set(850);
        assert!(ready(overload.accepting()));
        a.set(900);
        assert!(!ready(overload.accepting()));
        assert_eq!(overload.metrics.limit_hits(LimitHit::AcceptPaused), 1);
        a.set(810);
        assert!(!ready(overload.accepting()), "resumes only below 80 %");
        a.set(790);
        assert!(ready(overload.accepting()));
        drop(a);
        assert_eq!(overload.buffered(), 0);
    }

    #[test]
    fn over_the_budget_the_largest_connections_are_closed_until_under_the_pause_mark() {
        let overload = Overload::new(10, 1000, Arc::new(Metrics::new(&[])), Arc::default());
        let small = overload.register(1);
        let large = overload.register(2);
        let middle = overload.register(3);
        small.set(100);
        large.set(600);
        middle.set(350);
        overload.shed_now();
        assert!(ready(large.shed()), "the largest is closed");
        assert!(!ready(middle.shed()), "450 bytes left are under 900");
        assert!(!ready(small.shed()));
        assert_eq!(overload.metrics.limit_hits(LimitHit::BufferedBytes), 1);
        drop(large);
        assert_eq!(overload.buffered(), 450);
    }

    #[test]
    fn under_the_budget_nothing_is_closed() {
        let overload = Overload::new(10, 1000, Arc::new(Metrics::new(&[])), Arc::default());
        let a = overload.register(1);
        a.set(1000);
        overload.shed_now();
        assert!(!ready(a.shed()));
        assert_eq!(overload.metrics.limit_hits(LimitHit::BufferedBytes), 0);
    }
}
