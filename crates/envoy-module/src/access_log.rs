//! The filter's access log: the agent's own ([`JsonAccessLog`], from `axoneme_access_log`), so
//! that Envoy's worker threads only format each entry into a queue bounded in bytes and a
//! thread of the log's own writes the queued lines to the configured file in batches: a worker
//! never waits for the disk, and an entry that finds the queue full is dropped and counted.
//! What the log loses (entries dropped, writes failed) is said on stderr, which Envoy keeps, at
//! most every [`REPORT_EVERY`] while it grows, and once more when the configuration goes. It
//! must not decide anything.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axoneme_access_log::writer::{JsonAccessLog, Limits};
use axoneme_sdk::{AccessLog, LogEntry};

/// How often, at most, losses are reported while they grow.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// An access log appending to a file through the agent's queue and writer thread, with the
/// agent's default bounds (`accessLog.queueBytes`, `accessLog.maxFieldBytes`).
pub(crate) struct FileLog {
    log: JsonAccessLog,
    /// Entries dropped and writes failed as last reported.
    reported_dropped: AtomicU64,
    reported_write_errors: AtomicU64,
    /// When losses were last reported.
    last_report: Mutex<Option<Instant>>,
}

impl FileLog {
    /// Opens (creating it if need be) the file at `path` for appending, and starts its writer.
    pub(crate) fn open(path: &Path) -> io::Result<FileLog> {
        Ok(FileLog {
            log: JsonAccessLog::open(&path.to_string_lossy(), Limits::default())?,
            reported_dropped: AtomicU64::new(0),
            reported_write_errors: AtomicU64::new(0),
            last_report: Mutex::new(None),
        })
    }

    /// Whether the log lost something since the last report.
    fn lost_more(&self) -> bool {
        self.log.dropped() > self.reported_dropped.load(Ordering::Relaxed)
            || self.log.write_errors() > self.reported_write_errors.load(Ordering::Relaxed)
    }

    /// Says on stderr what the log lost since the last report; unless `always`, only if the
    /// last report is [`REPORT_EVERY`] old and no other thread is reporting.
    fn report(&self, always: bool) {
        let mut last = match self.last_report.try_lock() {
            Ok(last) => last,
            Err(_) if !always => return,
            Err(_) => self.last_report.lock().unwrap_or_else(|p| p.into_inner()),
        };
        let at = Instant::now();
        if !always && last.is_some_and(|reported| at.duration_since(reported) < REPORT_EVERY) {
            return;
        }
        *last = Some(at);
        let counts = self.log.counts();
        let dropped = counts.dropped
            - self
                .reported_dropped
                .swap(counts.dropped, Ordering::Relaxed);
        if dropped > 0 {
            eprintln!(
                "axoneme envoy filter: {dropped} access-log entries dropped: the writer fell \
                 behind and the queue was full ({} bytes)",
                self.log.limits().queue_bytes
            );
        }
        let failed = counts.write_errors
            - self
                .reported_write_errors
                .swap(counts.write_errors, Ordering::Relaxed);
        if failed > 0 {
            eprintln!(
                "axoneme envoy filter: {failed} access-log writes failed ({} entries lost in all), \
                 the last: {}",
                counts.failed_entries,
                counts.last_write_error.unwrap_or_default()
            );
        }
    }
}

impl AccessLog for FileLog {
    /// Queues the entry; two relaxed loads tell whether anything was lost to report.
    fn log(&self, entry: &LogEntry<'_>) {
        self.log.log(entry);
        if self.lost_more() {
            self.report(false);
        }
    }
}

impl Drop for FileLog {
    /// Reports what is still unreported; the log's own drop then writes what is queued.
    fn drop(&mut self) {
        self.report(true);
    }
}
