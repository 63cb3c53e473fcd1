//! The live view of the access log: every entry, as the JSON line the log writes (with field
//! values truncated as the log truncates them), offered to whoever watches (`axoneme observe`),
//! filtered as each watcher asks ([`Filter`]), and the most recent entries replayed from the
//! ring the access log's writer feeds ([`RecentEntries`], `observe --last`).
//!
//! Entries are formatted for watchers only while someone watches, and only when a watcher's
//! filter takes them. Each watcher has a backlog of its own, bounded in bytes: a watcher that
//! falls behind loses its oldest entries rather than slowing the proxy or growing without
//! bound, and is told how many it lost before the next entry it gets. Losses are counted. The
//! recent entries are a ring bounded in bytes (`monitor.recentBytes`), oldest dropped first,
//! holding the lines the access log formats, which its writer thread copies there: keeping them
//! costs the forwarding path nothing beyond the log itself (with no log file configured, the
//! monitor keeps a log that writes nowhere, only to feed the ring). An entry the access log
//! drops when its queue is full is missing from the ring too.
//!
//! A watcher that asks for a replay gets the ring and every later entry, none twice and none
//! missing: the access log numbers its entries, the watcher is added before the number of the
//! next entry is read, the replay holds the entries numbered below it (waiting until the
//! writer has handed them all to the ring) and the watcher only those numbered from it on.
//! When the access log writes the compact form, the ring holds compact lines: a replay gives
//! them in Cilium's form, without labels (a label filter takes none of them).
//! This module does not write the access log.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, SystemTime};

use axoneme_sdk::{AccessLog, LogEntry};
use tokio::sync::Notify;

use serde_json::Value;

use crate::telemetry::access_log::{self, format_entry, JsonAccessLog};
pub use crate::telemetry::flow_filter::Filter;
use crate::telemetry::flow_filter::LoggedFlow;
use crate::telemetry::log_forms::{cilium_form, is_compact};
pub use crate::telemetry::recent::RecentEntries;

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

/// How long a replay waits, at most, for the access log's writer to hand the entries logged
/// before it to the ring: it does within [`access_log`]'s gathering time unless its disk holds
/// it up; past this the replay holds what the ring has.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);

/// Entries waiting for one watcher.
#[derive(Debug, Default)]
struct Backlog {
    /// Each entry's number in the access log and its line.
    lines: VecDeque<(u64, Arc<[u8]>)>,
    /// Bytes of `lines`.
    bytes: usize,
    /// Entries lost since the watcher last took one.
    missed: u64,
    /// Entries numbered below this are not for the watcher: a replay gave them.
    from_seq: u64,
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

/// The access log fanned out: to the log itself (which feeds the ring of recent entries) and
/// to watchers.
pub struct Monitor {
    /// The access log; none when there is no log file and no ring.
    log: Option<Arc<JsonAccessLog>>,
    watchers: Arc<Watchers>,
    /// The ring of recent entries, fed by `log`'s writer; none when `recent_bytes` is 0.
    recent: Option<Arc<RecentEntries>>,
    limits: Limits,
}

impl Monitor {
    /// Fans entries out to `log` and to watchers, holding no more for each than `limits`
    /// allow. When `limits` keep recent entries, `log` (or, without one, a log of its own that
    /// writes nowhere) feeds the ring.
    pub fn new(log: Option<Arc<JsonAccessLog>>, limits: Limits) -> Monitor {
        if limits.recent_bytes == 0 {
            return Monitor {
                log,
                watchers: Arc::default(),
                recent: None,
                limits,
            };
        }
        let log = log.unwrap_or_else(|| {
            let limits = access_log::Limits {
                max_field_bytes: limits.max_field_bytes,
                ..access_log::Limits::default()
            };
            Arc::new(JsonAccessLog::with_sink(Box::new(std::io::sink()), limits))
        });
        let recent = Arc::new(RecentEntries::new(limits.recent_bytes));
        log.keep_recent(Arc::clone(&recent));
        Monitor {
            log: Some(log),
            watchers: Arc::default(),
            recent: Some(recent),
            limits,
        }
    }

    /// The last `last` recent entries `filter` takes, oldest first, and a watcher of those that
    /// come after them (when `follow`). Waits for the access log's writer to hand the ring the
    /// entries logged before the call (a few milliseconds): call it off the async runtime.
    pub fn replay(
        &self,
        filter: Filter,
        last: usize,
        follow: bool,
    ) -> (Vec<Arc<[u8]>>, Option<Watch>) {
        let (Some(recent), Some(log)) = (&self.recent, &self.log) else {
            return (Vec::new(), follow.then(|| self.watch(filter)));
        };
        // The watcher is added before the number of the next entry is read, under the access
        // log's lock: any entry numbered from there on is offered to it.
        let watch = follow.then(|| self.watch(filter.clone()));
        let before = log.next_seq();
        if let Some(watch) = &watch {
            watch.start_at(before);
        }
        let snapshot = recent.before(before, HANDOVER_WAIT);
        if !snapshot.complete {
            tracing::warn!(
                "the access-log writer did not hand over recent entries within {HANDOVER_WAIT:?}; \
                 the replay holds those it has"
            );
        }
        let (bytes, lengths) = (snapshot.bytes, snapshot.lengths);
        let mut lines = Vec::with_capacity(lengths.len());
        let mut start = 0;
        for length in lengths {
            lines.push(&bytes[start..start + length]);
            start += length;
        }
        let mut replayed: Vec<Arc<[u8]>> = lines
            .into_iter()
            .rev()
            .filter_map(|line| replayed_line(line, &filter))
            .take(last)
            .collect();
        replayed.reverse();
        (replayed, watch)
    }

    /// Bytes of recent entries kept for replay now.
    pub fn recent_bytes(&self) -> usize {
        self.recent.as_ref().map_or(0, |recent| recent.bytes())
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

    /// Adds `line`, the entry numbered `seq`, to `watcher`'s backlog, making room by dropping
    /// its oldest entries; a line longer than the whole backlog may be is dropped itself.
    fn offer(&self, watcher: &Watcher, seq: u64, line: &Arc<[u8]>) {
        let max = self.limits.queue_bytes;
        let mut backlog = watcher.lock();
        if seq < backlog.from_seq {
            return;
        }
        let mut lost = 0;
        if line.len() > max {
            lost = 1;
        } else {
            while backlog.bytes + line.len() > max {
                let (_, oldest) = backlog
                    .lines
                    .pop_front()
                    .expect("bytes are of queued lines");
                backlog.bytes -= oldest.len();
                lost += 1;
            }
            backlog.bytes += line.len();
            backlog.lines.push_back((seq, Arc::clone(line)));
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
        let seq = self.log.as_ref().map_or(0, |log| log.log_numbered(entry));
        if self.watchers.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut line: Option<Arc<[u8]>> = None;
        for watcher in self.watchers.list().iter() {
            if watcher.filter.matches(entry) {
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
                self.offer(watcher, seq, line);
            }
        }
    }
}

/// The recent entry `line` as a watcher gets it, if `filter` takes it: a line of the compact
/// form in Cilium's (with no labels, so that a label filter does not take it), a Cilium line as
/// it is.
fn replayed_line(line: &[u8], filter: &Filter) -> Option<Arc<[u8]>> {
    let entry = serde_json::from_slice::<Value>(line).ok()?;
    if !is_compact(&entry) {
        return filter.matches(&LoggedFlow(&entry)).then(|| Arc::from(line));
    }
    let entry = cilium_form(entry);
    if !filter.matches(&LoggedFlow(&entry)) {
        return None;
    }
    let mut cilium = serde_json::to_vec(&entry).ok()?;
    cilium.push(b'\n');
    Some(cilium.into())
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
        let (_, line) = backlog.lines.pop_front()?;
        backlog.bytes -= line.len();
        Some(Next::Entry(line))
    }

    /// Makes the watcher take only entries numbered `seq` and later: those before are a
    /// replay's. Those it already holds are let go; losses already counted are still told.
    fn start_at(&self, seq: u64) {
        let mut backlog = self.watcher.lock();
        backlog.from_seq = seq;
        backlog.lines.retain(|(number, _)| *number >= seq);
        backlog.bytes = backlog.lines.iter().map(|(_, line)| line.len()).sum();
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
    use axoneme_access_log::testing::log_meta as meta;

    fn monitor(queue_bytes: usize) -> Monitor {
        Monitor::new(
            None,
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
            None,
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

    #[test]
    fn a_replay_of_a_compact_log_gives_cilium_lines_that_no_label_filter_takes() {
        let log = Arc::new(JsonAccessLog::with_sink(
            Box::new(std::io::sink()),
            access_log::Limits {
                format: access_log::LogFormat::Compact,
                ..access_log::Limits::default()
            },
        ));
        let monitor = Monitor::new(
            Some(log),
            Limits {
                queue_bytes: 1 << 20,
                max_field_bytes: 4096,
                recent_bytes: 4096,
            },
        );
        let meta = meta();
        multiget(&monitor, &meta, b"a");
        multiget(&monitor, &meta, b"b");
        let (replayed, _) = monitor.replay(Filter::default(), 10, false);
        let entries: Vec<_> = replayed
            .iter()
            .map(|line| entry(Some(Next::Entry(Arc::clone(line)))))
            .collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1]["generic_l7"]["fields"]["keys"], "b");
        assert_eq!(entries[1]["entry_type"], "Request");
        assert_eq!(entries[1]["source_security_id"], 257);
        assert!(entries[1].get("source_labels").is_none());
        let by_identity = Filter {
            from_identities: vec![257],
            ..Filter::default()
        };
        assert_eq!(monitor.replay(by_identity, 10, false).0.len(), 2);
        let by_label = Filter {
            from_labels: vec!["app=luke".into()],
            ..Filter::default()
        };
        assert!(monitor.replay(by_label, 10, false).0.is_empty());
    }

    #[test]
    fn a_replay_while_entries_pour_in_gives_each_once_between_it_and_the_watcher() {
        let log = Arc::new(JsonAccessLog::with_sink(
            Box::new(std::io::sink()),
            access_log::Limits {
                queue_bytes: 256 << 20,
                ..access_log::Limits::default()
            },
        ));
        let monitor = Arc::new(Monitor::new(
            Some(log),
            Limits {
                queue_bytes: 64 << 20,
                max_field_bytes: 4096,
                recent_bytes: 64 << 20,
            },
        ));
        const THREADS: usize = 2;
        // Each logger logs until told to stop, or this many entries (some 20 MB in all).
        const MOST: usize = 30_000;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let loggers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (monitor, stop) = (Arc::clone(&monitor), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let meta = meta();
                    let mut logged = 0;
                    while logged < MOST && !stop.load(Ordering::Relaxed) {
                        multiget(&monitor, &meta, format!("{thread}-{logged}").as_bytes());
                        logged += 1;
                    }
                    logged
                })
            })
            .collect();
        // Started while the loggers log, once the ring holds some of their entries.
        while monitor.recent_bytes() == 0 {
            std::thread::yield_now();
        }
        let (replayed, watch) = monitor.replay(Filter::default(), usize::MAX, true);
        stop.store(true, Ordering::Relaxed);
        let logged: Vec<usize> = loggers.into_iter().map(|l| l.join().unwrap()).collect();
        let total: usize = logged.iter().sum();
        let watch = watch.unwrap();
        let key = |line: &Arc<[u8]>| {
            let entry = entry(Some(Next::Entry(Arc::clone(line))));
            entry["generic_l7"]["fields"]["keys"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let mut seen: Vec<String> = replayed.iter().map(key).collect();
        let live_from = seen.len();
        while let Some(next) = watch.try_next() {
            match next {
                Next::Entry(line) => seen.push(key(&line)),
                Next::Missed(n) => panic!("{n} lost"),
            }
        }
        assert!(
            live_from > 0 && live_from < seen.len(),
            "the replay fell amid the logging: {live_from} of {logged:?}"
        );
        assert_eq!(seen.len(), total, "none twice, none missing");
        let unique: std::collections::HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), total);
        // Each thread's entries come in the order it logged them.
        for (thread, &each) in logged.iter().enumerate() {
            let own: Vec<usize> = seen
                .iter()
                .filter_map(|k| k.strip_prefix(&format!("{thread}-")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(own, (0..each).collect::<Vec<_>>());
        }
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
