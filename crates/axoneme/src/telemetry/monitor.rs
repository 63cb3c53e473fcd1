//! The live view of the access log: every entry, as the JSON line the log writes (with field
//! values truncated as the log truncates them), offered to whoever watches (`axoneme monitor`),
//! filtered by entry type, protocol and endpoint.
//!
//! Entries are formatted for watchers only while someone watches, and only when a watcher's
//! filter takes them. Each watcher has a backlog of its own, bounded in bytes: a watcher that
//! falls behind loses its oldest entries rather than slowing the proxy or growing without
//! bound, and is told how many it lost before the next entry it gets. Losses are counted. This
//! module does not write the access log.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::SystemTime;

use axoneme_sdk::{AccessLog, LogEntry};
use tokio::sync::Notify;

use crate::telemetry::access_log::format_entry;

/// The bytes of entries a watcher may lag behind unless configured otherwise: 4 MiB, some ten
/// thousand entries of the usual size, or about a thousand with every field truncated.
pub const DEFAULT_QUEUE_BYTES: usize = 4 << 20;

/// What a watcher wants to see; `None` fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only entries of this type (`request`, `response` or `denied`, any case).
    pub entry_type: Option<String>,
    /// Only entries of this protocol.
    pub proto: Option<String>,
    /// Only entries about this endpoint.
    pub endpoint: Option<String>,
}

impl Filter {
    /// Whether `entry` passes the filter.
    pub fn matches(&self, entry: &LogEntry<'_>) -> bool {
        self.entry_type
            .as_ref()
            .is_none_or(|t| t.eq_ignore_ascii_case(entry.entry_type.as_str()))
            && self
                .proto
                .as_ref()
                .is_none_or(|p| p == entry.proto.unwrap_or_default())
            && self
                .endpoint
                .as_ref()
                .is_none_or(|e| **e == *entry.meta.endpoint)
    }
}

/// What a watcher gets next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// An entry: its JSON line, with its newline.
    Entry(Arc<[u8]>),
    /// This many entries were lost since the previous one this watcher got.
    Missed(u64),
}

/// Entries waiting for one watcher.
#[derive(Debug, Default)]
struct Backlog {
    lines: VecDeque<Arc<[u8]>>,
    /// Bytes of `lines`.
    bytes: usize,
    /// Entries lost since the watcher last took one.
    missed: u64,
}

/// One watcher, as the monitor holds it.
#[derive(Debug)]
struct Watcher {
    filter: Filter,
    backlog: Mutex<Backlog>,
    /// Woken when an entry or a loss is added to the backlog.
    added: Notify,
}

impl Watcher {
    fn lock(&self) -> MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The watchers, and what they lost.
#[derive(Debug, Default)]
struct Watchers {
    list: RwLock<Vec<Arc<Watcher>>>,
    /// How many are in `list`, read without its lock for every entry.
    count: AtomicUsize,
    /// Entries watchers lost, in all.
    dropped: AtomicU64,
}

impl Watchers {
    fn list(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Watcher>>> {
        self.list.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// How much the monitor holds and copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of entries waiting for each watcher.
    pub queue_bytes: usize,
    /// Longest field value copied into an entry, as in the access log.
    pub max_field_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queue_bytes: DEFAULT_QUEUE_BYTES,
            max_field_bytes: crate::telemetry::access_log::DEFAULT_MAX_FIELD_BYTES,
        }
    }
}

/// The access log fanned out: to the log itself and to watchers.
pub struct Monitor {
    log: Arc<dyn AccessLog>,
    watchers: Arc<Watchers>,
    limits: Limits,
}

impl Monitor {
    /// Fans entries out to `log` and to watchers, holding no more for each than `limits`
    /// allow.
    pub fn new(log: Arc<dyn AccessLog>, limits: Limits) -> Monitor {
        Monitor {
            log,
            watchers: Arc::default(),
            limits,
        }
    }

    /// A new watcher's view of the entries `filter` takes, from now on.
    pub fn watch(&self, filter: Filter) -> Watch {
        let watcher = Arc::new(Watcher {
            filter,
            backlog: Mutex::default(),
            added: Notify::new(),
        });
        let mut list = self
            .watchers
            .list
            .write()
            .unwrap_or_else(|p| p.into_inner());
        list.push(Arc::clone(&watcher));
        self.watchers.count.store(list.len(), Ordering::Relaxed);
        Watch {
            watcher,
            watchers: Arc::downgrade(&self.watchers),
        }
    }

    /// The bounds the monitor was made with.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Entries watchers lost so far because their backlog was full.
    pub fn dropped(&self) -> u64 {
        self.watchers.dropped.load(Ordering::Relaxed)
    }

    /// Watchers now.
    pub fn watchers(&self) -> usize {
        self.watchers.count.load(Ordering::Relaxed)
    }

    /// Bytes of entries waiting for all watchers now.
    pub fn backlog_bytes(&self) -> usize {
        self.watchers.list().iter().map(|w| w.lock().bytes).sum()
    }

    /// Adds `line` to `watcher`'s backlog, making room by dropping its oldest entries; a line
    /// longer than the whole backlog may be is dropped itself.
    fn offer(&self, watcher: &Watcher, line: &Arc<[u8]>) {
        let max = self.limits.queue_bytes;
        let mut backlog = watcher.lock();
        let mut lost = 0;
        if line.len() > max {
            lost = 1;
        } else {
            while backlog.bytes + line.len() > max {
                let oldest = backlog
                    .lines
                    .pop_front()
                    .expect("bytes are of queued lines");
                backlog.bytes -= oldest.len();
                lost += 1;
            }
            backlog.bytes += line.len();
            backlog.lines.push_back(Arc::clone(line));
        }
        backlog.missed += lost;
        drop(backlog);
        if lost > 0 {
            self.watchers.dropped.fetch_add(lost, Ordering::Relaxed);
        }
        watcher.added.notify_one();
    }
}

impl AccessLog for Monitor {
    fn log(&self, entry: &LogEntry<'_>) {
        self.log.log(entry);
        if self.watchers.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut line: Option<Arc<[u8]>> = None;
        for watcher in self.watchers.list().iter() {
            if !watcher.filter.matches(entry) {
                continue;
            }
            let line = line.get_or_insert_with(|| {
                let mut line = Vec::new();
                format_entry(
                    &mut line,
                    entry,
                    SystemTime::now(),
                    self.limits.max_field_bytes,
                );
                line.into()
            });
            self.offer(watcher, line);
        }
    }
}

/// One watcher's view of the access log; it stops watching when dropped.
pub struct Watch {
    watcher: Arc<Watcher>,
    watchers: Weak<Watchers>,
}

impl Watch {
    /// The next entry, or the number lost before it; waits for one.
    pub async fn next(&self) -> Next {
        loop {
            if let Some(next) = self.try_next() {
                return next;
            }
            self.watcher.added.notified().await;
        }
    }

    /// The next entry, or the number lost before it, if there is one already.
    pub fn try_next(&self) -> Option<Next> {
        let mut backlog = self.watcher.lock();
        if backlog.missed > 0 {
            return Some(Next::Missed(std::mem::take(&mut backlog.missed)));
        }
        let line = backlog.lines.pop_front()?;
        backlog.bytes -= line.len();
        Some(Next::Entry(line))
    }

    /// Bytes of entries waiting for this watcher.
    pub fn backlog_bytes(&self) -> usize {
        self.watcher.lock().bytes
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(watchers) = self.watchers.upgrade() else {
            return;
        };
        let mut list = watchers.list.write().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| !Arc::ptr_eq(w, &self.watcher));
        watchers.count.store(list.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axoneme_sdk::{ConnectionMeta, EntryType, Field};

    use super::*;
    use crate::testing::log_meta as meta;

    struct NoLog;

    impl AccessLog for NoLog {
        fn log(&self, _: &LogEntry<'_>) {}
    }

    fn monitor(queue_bytes: usize) -> Monitor {
        Monitor::new(
            Arc::new(NoLog),
            Limits {
                queue_bytes,
                max_field_bytes: 4096,
            },
        )
    }

    /// Logs a memcached multiget of `keys` through `monitor`.
    fn multiget(monitor: &Monitor, meta: &ConnectionMeta, keys: &[u8]) {
        let fields = [Field::text("command", "get"), Field::bytes("keys", keys)];
        monitor.log(&LogEntry {
            entry_type: EntryType::Request,
            meta,
            policy_name: "p",
            proto: Some("memcache"),
            fields: &fields,
        });
    }

    fn entry(next: Option<Next>) -> serde_json::Value {
        match next {
            Some(Next::Entry(line)) => serde_json::from_slice(&line).unwrap(),
            other => panic!("expected an entry, got {other:?}"),
        }
    }

    #[test]
    fn a_watcher_that_never_reads_holds_no_more_than_its_bytes_and_losses_are_counted() {
        let monitor = monitor(64 << 10);
        let meta = meta();
        let idle = monitor.watch(Filter::default());
        let keys = vec![b'k'; 1 << 20];
        for _ in 0..200 {
            multiget(&monitor, &meta, &keys);
            assert!(idle.backlog_bytes() <= 64 << 10, "{}", idle.backlog_bytes());
        }
        // Each entry holds a 4 KiB cut of its megabyte of keys: about fourteen fit.
        let held = idle.backlog_bytes();
        assert!(held > 56 << 10, "the backlog is used: {held}");
        assert_eq!(monitor.backlog_bytes(), held);
        let dropped = monitor.dropped();
        assert!((180..200).contains(&dropped), "{dropped}");
        // The watcher is told what it lost, then gets the newest entries, truncated.
        assert_eq!(idle.try_next(), Some(Next::Missed(dropped)));
        let first = entry(idle.try_next());
        assert_eq!(
            first["generic_l7"]["fields"]["keys"]
                .as_str()
                .unwrap()
                .len(),
            4096
        );
        assert_eq!(first["generic_l7"]["truncated"]["keys"], 1 << 20);
        let mut rest = 1;
        while let Some(next) = idle.try_next() {
            entry(Some(next));
            rest += 1;
        }
        assert_eq!(rest as u64, 200 - dropped);
        assert_eq!(idle.backlog_bytes(), 0);
    }

    #[test]
    fn an_entry_longer_than_the_backlog_is_lost_and_the_backlog_kept() {
        let monitor = monitor(1000);
        let meta = meta();
        let watch = monitor.watch(Filter::default());
        multiget(&monitor, &meta, b"a");
        multiget(&monitor, &meta, &[b'k'; 2000]);
        assert_eq!(monitor.dropped(), 1);
        assert_eq!(watch.try_next(), Some(Next::Missed(1)));
        assert_eq!(entry(watch.try_next())["generic_l7"]["fields"]["keys"], "a");
        assert_eq!(watch.try_next(), None);
    }

    #[test]
    fn watchers_get_what_their_filter_takes_and_leave_when_dropped() {
        let monitor = monitor(1 << 20);
        let meta = meta();
        let denied = monitor.watch(Filter {
            entry_type: Some("DENIED".into()),
            ..Filter::default()
        });
        let cache = monitor.watch(Filter {
            endpoint: Some("r2d2".into()),
            proto: Some("memcache".into()),
            ..Filter::default()
        });
        assert_eq!(monitor.watchers(), 2);
        multiget(&monitor, &meta, b"a");
        assert_eq!(denied.try_next(), None);
        assert_eq!(entry(cache.try_next())["generic_l7"]["fields"]["keys"], "a");
        drop(cache);
        assert_eq!(monitor.watchers(), 1);
        multiget(&monitor, &meta, b"b");
        assert_eq!(monitor.backlog_bytes(), 0, "no one left takes requests");
    }

    #[tokio::test]
    async fn a_waiting_watcher_is_woken_by_the_next_entry() {
        let monitor = Arc::new(monitor(1 << 20));
        let watch = monitor.watch(Filter::default());
        let logger = Arc::clone(&monitor);
        let logged = tokio::task::spawn_blocking(move || multiget(&logger, &meta(), b"late"));
        let next = watch.next().await;
        logged.await.unwrap();
        assert_eq!(entry(Some(next))["generic_l7"]["fields"]["keys"], "late");
    }
}
