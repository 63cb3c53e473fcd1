//! The live view of the access log: every entry, as the JSON line the log writes (with field
//! values truncated as the log truncates them), offered to whoever watches (`axoneme observe`),
//! filtered as each watcher asks ([`Filter`]), and the most recent entries kept for replay
//! (`observe --last N`).
//!
//! Entries are formatted for watchers only while someone watches, and only when a watcher's
//! filter takes them. Each watcher has a backlog of its own, bounded in bytes: a watcher that
//! falls behind loses its oldest entries rather than slowing the proxy or growing without
//! bound, and is told how many it lost before the next entry it gets. Losses are counted. The
//! recent entries are a ring bounded in bytes (`monitor.recentBytes`), oldest dropped first;
//! while it is on, every entry is formatted for it, into a buffer each thread reuses and then
//! copied into the ring's own bytes, so that keeping entries allocates nothing once the ring is
//! full. A watcher that asks for a replay gets the
//! ring and every later entry, none twice and none missing. This module does not write the
//! access log.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::SystemTime;

use axoneme_sdk::{AccessLog, LogEntry};
use tokio::sync::Notify;

use serde_json::Value;

use crate::telemetry::access_log::format_entry;
pub use crate::telemetry::flow_filter::Filter;
use crate::telemetry::flow_filter::LoggedFlow;

/// The bytes of entries a watcher may lag behind unless configured otherwise: 4 MiB, some ten
/// thousand entries of the usual size, or about a thousand with every field truncated.
pub const DEFAULT_QUEUE_BYTES: usize = 4 << 20;

/// The bytes of recent entries kept for replay unless configured otherwise: 1 MiB, a few
/// thousand entries of the usual size.
pub const DEFAULT_RECENT_BYTES: usize = 1 << 20;

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
    /// Most bytes of recent entries kept for replay; 0 keeps none.
    pub recent_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queue_bytes: DEFAULT_QUEUE_BYTES,
            max_field_bytes: crate::telemetry::access_log::DEFAULT_MAX_FIELD_BYTES,
            recent_bytes: DEFAULT_RECENT_BYTES,
        }
    }
}

/// The most recent entries, oldest first, bounded in bytes: their lines one after another,
/// and the length of each.
#[derive(Debug, Default)]
struct Recent {
    bytes: VecDeque<u8>,
    lengths: VecDeque<usize>,
}

impl Recent {
    /// Adds `line`, dropping the oldest lines to keep within `max` bytes; a line longer than
    /// `max` is not kept.
    fn push(&mut self, line: &[u8], max: usize) {
        if line.len() > max {
            return;
        }
        while self.bytes.len() + line.len() > max {
            let oldest = self.lengths.pop_front().expect("bytes are of kept lines");
            self.bytes.drain(..oldest);
        }
        self.bytes.extend(line);
        self.lengths.push_back(line.len());
    }
}

/// The most a thread's formatting buffer keeps between entries: one entry with long fields
/// may grow it, but it does not stay that large.
const SCRATCH_KEPT_BYTES: usize = 64 << 10;

thread_local! {
    /// The line this thread formats an entry into for the ring, kept between entries.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The access log fanned out: to the log itself, to the ring of recent entries and to
/// watchers.
pub struct Monitor {
    log: Arc<dyn AccessLog>,
    watchers: Arc<Watchers>,
    /// Held while an entry is added to the ring and offered to watchers, so that a watcher
    /// that starts with a replay gets each entry exactly once.
    recent: Mutex<Recent>,
    limits: Limits,
}

impl Monitor {
    /// Fans entries out to `log` and to watchers, holding no more for each than `limits`
    /// allow.
    pub fn new(log: Arc<dyn AccessLog>, limits: Limits) -> Monitor {
        Monitor {
            log,
            watchers: Arc::default(),
            recent: Mutex::default(),
            limits,
        }
    }

    fn lock_recent(&self) -> MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last `last` recent entries `filter` takes, oldest first, and a watcher of those that
    /// come after them (when `follow`).
    pub fn replay(
        &self,
        filter: Filter,
        last: usize,
        follow: bool,
    ) -> (Vec<Arc<[u8]>>, Option<Watch>) {
        // The lines are taken and the watcher added under the lock, so that no entry falls
        // between them; they are parsed and filtered after it, not holding up logging threads.
        let recent = self.lock_recent();
        let (front, back) = recent.bytes.as_slices();
        let bytes = [front, back].concat();
        let lengths: Vec<usize> = recent.lengths.iter().copied().collect();
        let watch = follow.then(|| self.watch(filter.clone()));
        drop(recent);
        let mut lines = Vec::with_capacity(lengths.len());
        let mut start = 0;
        for length in lengths {
            lines.push(&bytes[start..start + length]);
            start += length;
        }
        let mut replayed: Vec<Arc<[u8]>> = lines
            .into_iter()
            .rev()
            .filter(|line| {
                serde_json::from_slice::<Value>(line)
                    .is_ok_and(|entry| filter.matches(&LoggedFlow(&entry)))
            })
            .take(last)
            .map(Arc::from)
            .collect();
        replayed.reverse();
        (replayed, watch)
    }

    /// Bytes of recent entries kept for replay now.
    pub fn recent_bytes(&self) -> usize {
        self.lock_recent().bytes.len()
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
        let keep_recent = self.limits.recent_bytes > 0;
        if !keep_recent && self.watchers.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let format = || -> Arc<[u8]> {
            let mut line = Vec::new();
            format_entry(
                &mut line,
                entry,
                SystemTime::now(),
                self.limits.max_field_bytes,
            );
            line.into()
        };
        if !keep_recent {
            return self.offer_to_watchers(entry, &format);
        }
        // Formatted before the lock, into this thread's own buffer, and copied into the ring
        // under it; a watcher that takes the entry gets a copy of the same line.
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            format_entry(
                scratch,
                entry,
                SystemTime::now(),
                self.limits.max_field_bytes,
            );
            let mut recent = self.lock_recent();
            recent.push(scratch, self.limits.recent_bytes);
            self.offer_to_watchers(entry, &|| Arc::from(scratch.as_slice()));
            drop(recent);
            if scratch.capacity() > SCRATCH_KEPT_BYTES {
                *scratch = Vec::new();
            }
        });
    }
}

impl Monitor {
    /// Offers `entry` to the watchers whose filter takes it, as the line `format` makes (made
    /// once, and only if one does). Called under the ring's lock.
    fn offer_to_watchers(&self, entry: &LogEntry<'_>, format: &dyn Fn() -> Arc<[u8]>) {
        if self.watchers.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut line: Option<Arc<[u8]>> = None;
        for watcher in self.watchers.list().iter() {
            if watcher.filter.matches(entry) {
                let line = line.get_or_insert_with(format);
                self.offer(watcher, line);
            }
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
                recent_bytes: 0,
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
            entry_types: vec![EntryType::Denied],
            ..Filter::default()
        });
        let cache = monitor.watch(Filter {
            endpoints: vec!["r2d2".into()],
            protocols: vec!["memcache".into()],
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

    #[test]
    fn a_replay_gives_the_last_matching_entries_then_each_later_one_once() {
        let monitor = Monitor::new(
            Arc::new(NoLog),
            Limits {
                queue_bytes: 1 << 20,
                max_field_bytes: 4096,
                recent_bytes: 4096,
            },
        );
        let meta = meta();
        for i in 0..100 {
            multiget(&monitor, &meta, format!("k{i}").as_bytes());
        }
        assert!(monitor.recent_bytes() <= 4096, "{}", monitor.recent_bytes());
        let (replayed, none) = monitor.replay(Filter::default(), 3, false);
        assert!(none.is_none());
        let keys: Vec<_> = replayed
            .iter()
            .map(|line| {
                entry(Some(Next::Entry(Arc::clone(line))))["generic_l7"]["fields"]["keys"].clone()
            })
            .collect();
        assert_eq!(keys, ["k97", "k98", "k99"]);
        let only_k5 = Filter {
            l7: [("keys".to_owned(), vec!["k5".to_owned()])].into(),
            ..Filter::default()
        };
        let (replayed, _) = monitor.replay(only_k5, 10, false);
        assert!(replayed.is_empty(), "k5 is older than the ring holds");
        let (replayed, watch) = monitor.replay(Filter::default(), 1000, true);
        let kept = replayed.len();
        assert!((5..100).contains(&kept), "{kept}");
        let watch = watch.unwrap();
        multiget(&monitor, &meta, b"after");
        assert_eq!(
            entry(watch.try_next())["generic_l7"]["fields"]["keys"],
            "after"
        );
        assert_eq!(watch.try_next(), None);
        let mut huge = Vec::new();
        huge.resize(8192, b'h');
        multiget(&monitor, &meta, &huge);
        let (replayed, _) = monitor.replay(Filter::default(), 1, false);
        assert_eq!(
            entry(Some(Next::Entry(Arc::clone(&replayed[0]))))["generic_l7"]["fields"]["keys"],
            "after",
            "an entry longer than the ring is not kept"
        );
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
