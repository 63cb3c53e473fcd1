//! The access log's queue and writer: one JSON object per line, with Cilium's field names
//! ([`format_entry`](crate::format_entry)) or, when configured so, short keys and no label arrays
//! ([`format_compact_entry`](crate::format_compact_entry)), written by a thread of its own so that logging never blocks forwarding.
//! The agent's access log and the Envoy filter's are both this one.
//!
//! Connections format each entry straight into a shared batch; the writer thread takes the
//! whole batch at once and writes it with one call. The writer is woken only when a batch starts
//! (then it waits [`GATHER`] for more entries to join it) or when the batch is half full, so a
//! busy proxy pays neither a thread wake-up nor a write per entry. The queue is bounded in
//! bytes: the formatted entries waiting, together with the batch being written, never exceed
//! [`Limits::queue_bytes`] (nor, when set, [`Limits::queue_entries`] entries); when the writer
//! falls behind, further entries are dropped and counted. A field value longer than
//! [`Limits::max_field_bytes`] is cut to that length as it is formatted, never copied whole,
//! and the entry says so in `generic_l7.truncated` (see [`format_entry`](crate::format_entry)). Written parts of a
//! log file are handed back to the kernel's page cache (see [`file_sink`]), so a busy log does
//! not grow the cache at the cost of everything else. This module decides nothing: it records
//! what it is given, and counts what it could not record; saying so in an operational log is
//! the job of whoever holds the log.
//!
//! A log file can be rotated: [`JsonAccessLog::reopen`] opens its path anew and the writer
//! writes the next batches there, so that "move, then signal" works. The writer also notices,
//! at most every [`CHECK_EVERY`] and only when it has a batch to write, that its file was
//! deleted or replaced, and opens the path anew. Failed writes, and the entries they held, are
//! counted.
//!
//! Entries are numbered in the order they are queued (dropped ones too). When the log keeps
//! recent entries for `observe --last` ([`JsonAccessLog::keep_recent`]), the writer hands each
//! batch's lines, with their numbers, to that ring before writing them: the lines are formatted
//! once, by the connection logging them, and copied into the ring off the forwarding path.

#[allow(unsafe_code)] // sync_file_range and posix_fadvise on the sink's own file
mod file_sink;

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::mem;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use self::file_sink::FileSink;
use crate::recent::{Numbered, RecentEntries};
use crate::LogFormat;
use axoneme_sdk::{AccessLog, LogEntry};

/// How long the writer lets entries gather after the first one of a batch before writing them.
const GATHER: Duration = Duration::from_millis(5);

/// How often, at most, the writer checks that its file is still the one at the log's path.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The bytes of entries that may wait for the writer unless configured otherwise: 16 MiB, some
/// 40,000 entries of the usual few hundred bytes (five times the 8,192 entries the queue held
/// before it was bounded in bytes), or over a thousand with every field cut at the default
/// [`DEFAULT_MAX_FIELD_BYTES`].
pub const DEFAULT_QUEUE_BYTES: usize = 16 << 20;

/// The longest field value logged whole unless configured otherwise: 4 KiB, sixteen memcached
/// keys of the longest kind (250 bytes) with room to spare, or any R2-D2 file name or CQL error.
pub const DEFAULT_MAX_FIELD_BYTES: usize = 4096;

/// How much the access log holds and copies, and the form of its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of formatted entries held in memory, waiting or being written.
    pub queue_bytes: usize,
    /// Most entries waiting, when bounded by count as well.
    pub queue_entries: Option<usize>,
    /// Longest field value copied into an entry; longer ones are cut.
    pub max_field_bytes: usize,
    /// The form each entry is written in.
    pub format: LogFormat,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queue_bytes: DEFAULT_QUEUE_BYTES,
            queue_entries: None,
            max_field_bytes: DEFAULT_MAX_FIELD_BYTES,
            format: LogFormat::Cilium,
        }
    }
}

/// Entries waiting for the writer, already formatted.
#[derive(Default)]
struct Batch {
    lines: Vec<u8>,
    /// Bytes of `lines` that are whole entries: loggers format in place, under the lock.
    whole: usize,
    entries: usize,
    /// Bytes of the batch the writer is writing now.
    writing: usize,
    /// The log is being dropped: write what is left and stop.
    closing: bool,
    /// A file opened anew at the log's path, for the writer to write to from its next batch.
    reopened: Option<LogFile>,
    /// Where each entry of `lines` ends, and its number.
    numbered: Vec<Numbered>,
    /// The number the next entry logged gets.
    next_seq: u64,
    /// Every entry numbered below this has been taken by the writer (or dropped).
    taken_through: u64,
    /// The ring the writer hands each batch to, when recent entries are kept.
    recent: Option<Arc<RecentEntries>>,
}

impl Batch {
    /// Bytes held: waiting and being written.
    fn held(&self) -> usize {
        self.lines.len() + self.writing
    }
}

/// What loggers and the writer thread share.
struct Queue {
    batch: Mutex<Batch>,
    /// Wakes the writer: a batch has started, is half full, or the log is closing.
    wake: Condvar,
    /// Most bytes held; see [`Limits::queue_bytes`].
    max_bytes: usize,
    /// Most entries a batch holds.
    max_entries: usize,
    /// Longest field value copied whole.
    max_field_bytes: usize,
    /// The form of the lines.
    format: LogFormat,
    dropped: AtomicU64,
    /// Bytes and entries held when the last entry was dropped, and that entry's bytes (0 when
    /// the queue was full before it was formatted).
    dropped_at: (AtomicUsize, AtomicUsize, AtomicUsize),
    /// Writes that failed.
    write_errors: AtomicU64,
    /// Entries those writes held.
    failed_entries: AtomicU64,
    /// What the last failed write said.
    last_write_error: Mutex<Option<String>>,
    /// Field values cut to `max_field_bytes`.
    truncated: AtomicU64,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Batch> {
        // A logger that panicked while holding the lock may have left part of a line behind:
        // it is cut off, and the whole lines before it kept.
        self.batch.lock().unwrap_or_else(|poisoned| {
            let mut batch = poisoned.into_inner();
            let whole = batch.whole;
            batch.lines.truncate(whole);
            batch
        })
    }

    /// Whether a batch holding `bytes` and `entries` is half full: the writer should not wait.
    fn half_full(&self, bytes: usize, entries: usize) -> bool {
        bytes >= self.max_bytes.div_ceil(2) || entries >= self.max_entries.div_ceil(2)
    }

    /// Counts an entry of `entry_bytes` (0 when not formatted) dropped while the queue held
    /// `bytes` and `entries`.
    fn drop_entry(&self, bytes: usize, entries: usize, entry_bytes: usize) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.dropped_at.0.store(bytes, Ordering::Relaxed);
        self.dropped_at.1.store(entries, Ordering::Relaxed);
        self.dropped_at.2.store(entry_bytes, Ordering::Relaxed);
    }
}

/// What an access log could not record, and its bounds, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Entries dropped because the queue was full.
    pub dropped: u64,
    /// Bytes held when the last entry was dropped.
    pub dropped_at_bytes: usize,
    /// Entries waiting when the last entry was dropped.
    pub dropped_at_entries: usize,
    /// Bytes of the last entry dropped, when it was formatted (not when the queue was full
    /// before it).
    pub dropped_entry_bytes: usize,
    /// Writes that failed (a full disk, say).
    pub write_errors: u64,
    /// Entries those writes held: lost.
    pub failed_entries: u64,
    /// What the last failed write said.
    pub last_write_error: Option<String>,
    /// Field values cut to [`Limits::max_field_bytes`].
    pub truncated: u64,
    /// Bytes held now, waiting or being written.
    pub queued_bytes: usize,
}

/// The access log of a running proxy. Cheap to share; entries are written in the order queued.
pub struct JsonAccessLog {
    queue: Arc<Queue>,
    limits: Limits,
    /// The log file's path; none when the log goes to standard output or another sink.
    path: Option<PathBuf>,
    writer: Option<thread::JoinHandle<()>>,
}

/// A log file opened at the log's path, and the identity it had there.
struct LogFile {
    sink: Box<dyn Write + Send>,
    /// The device and inode of the file when opened.
    id: (u64, u64),
}

impl LogFile {
    /// Opens (creating it if needed) the file at `path` for appending.
    fn open(path: &Path) -> io::Result<LogFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let metadata = file.metadata()?;
        let id = (metadata.dev(), metadata.ino());
        let sink: Box<dyn Write + Send> = if metadata.is_file() {
            Box::new(FileSink::new(file, metadata.len()))
        } else {
            Box::new(file)
        };
        Ok(LogFile { sink, id })
    }
}

impl JsonAccessLog {
    /// A log that writes to `path` (`-` for standard output), holding and copying no more than
    /// `limits` allow.
    pub fn open(path: &str, limits: Limits) -> io::Result<JsonAccessLog> {
        if path == "-" {
            return Ok(JsonAccessLog::with_sink(Box::new(io::stdout()), limits));
        }
        let path = PathBuf::from(path);
        let file = LogFile::open(&path)?;
        let output = Output {
            sink: file.sink,
            file: Some(WatchedFile {
                path: path.clone(),
                id: file.id,
                checked: Instant::now(),
                missing: false,
            }),
        };
        Ok(JsonAccessLog::start(output, Some(path), limits))
    }

    /// A log that writes to `sink`.
    pub fn with_sink(sink: Box<dyn Write + Send>, limits: Limits) -> JsonAccessLog {
        JsonAccessLog::start(Output { sink, file: None }, None, limits)
    }

    fn start(output: Output, path: Option<PathBuf>, limits: Limits) -> JsonAccessLog {
        let queue = Arc::new(Queue {
            batch: Mutex::new(Batch::default()),
            wake: Condvar::new(),
            max_bytes: limits.queue_bytes,
            max_entries: limits.queue_entries.unwrap_or(usize::MAX).max(1),
            max_field_bytes: limits.max_field_bytes,
            format: limits.format,
            dropped: AtomicU64::new(0),
            dropped_at: (
                AtomicUsize::new(0),
                AtomicUsize::new(0),
                AtomicUsize::new(0),
            ),
            write_errors: AtomicU64::new(0),
            failed_entries: AtomicU64::new(0),
            last_write_error: Mutex::new(None),
            truncated: AtomicU64::new(0),
        });
        let writer_queue = Arc::clone(&queue);
        let writer = thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_batches(&writer_queue, output))
            .expect("spawning the access-log thread");
        JsonAccessLog {
            queue,
            limits,
            path,
            writer: Some(writer),
        }
    }

    /// Entries dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped.load(Ordering::Relaxed)
    }

    /// Writes that failed (a full disk, say); their entries are lost.
    pub fn write_errors(&self) -> u64 {
        self.queue.write_errors.load(Ordering::Relaxed)
    }

    /// The bounds the log was opened with.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// What the log could not record so far, and what it holds now.
    pub fn counts(&self) -> Counts {
        let queue = &*self.queue;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        Counts {
            dropped: load(&queue.dropped),
            dropped_at_bytes: queue.dropped_at.0.load(Ordering::Relaxed),
            dropped_at_entries: queue.dropped_at.1.load(Ordering::Relaxed),
            dropped_entry_bytes: queue.dropped_at.2.load(Ordering::Relaxed),
            write_errors: load(&queue.write_errors),
            failed_entries: load(&queue.failed_entries),
            last_write_error: queue
                .last_write_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            truncated: load(&queue.truncated),
            queued_bytes: queue.lock().held(),
        }
    }

    /// The log file's path; none when the log goes to standard output.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Keeps recent entries in `recent` from now on: the writer hands it every batch it takes,
    /// before writing it.
    pub fn keep_recent(&self, recent: Arc<RecentEntries>) {
        self.queue.lock().recent = Some(recent);
    }

    /// The number the next entry logged will get. Wakes the writer, so that the entries logged
    /// before are handed to the ring of recent entries within moments.
    pub fn next_seq(&self) -> u64 {
        let next = self.queue.lock().next_seq;
        self.queue.wake.notify_one();
        next
    }

    /// Logs `entry` (as [`AccessLog::log`] does); the number it got, whether it was queued or
    /// dropped.
    pub fn log_numbered(&self, entry: &LogEntry<'_>) -> u64 {
        let now = SystemTime::now();
        let queue = &*self.queue;
        let mut batch = queue.lock();
        let seq = batch.next_seq;
        batch.next_seq += 1;
        let (held, entries) = (batch.held(), batch.entries);
        if entries >= queue.max_entries || held >= queue.max_bytes {
            drop(batch);
            queue.drop_entry(held, entries, 0);
            return seq;
        }
        let start = batch.lines.len();
        let truncated = queue
            .format
            .format(&mut batch.lines, entry, now, queue.max_field_bytes);
        if batch.held() > queue.max_bytes {
            let entry_bytes = batch.lines.len() - start;
            batch.lines.truncate(start);
            drop(batch);
            queue.drop_entry(held, entries, entry_bytes);
            return seq;
        }
        let end = batch.lines.len();
        batch.whole = end;
        batch.numbered.push(Numbered { seq, end });
        batch.entries += 1;
        let was_half_full = queue.half_full(start, entries);
        if batch.entries == 1 || (!was_half_full && queue.half_full(end, batch.entries)) {
            queue.wake.notify_one();
        }
        drop(batch);
        if truncated > 0 {
            queue.truncated.fetch_add(truncated, Ordering::Relaxed);
        }
        seq
    }

    /// Opens the log file's path anew (creating the file if needed); the writer writes its next
    /// batches there. Entries queued before are written to whichever file the writer holds when
    /// it takes them. Does nothing for a log on standard output.
    pub fn reopen(&self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = LogFile::open(path)?;
        self.queue.lock().reopened = Some(file);
        // The writer lets go of the old file at once, not only with the next entry.
        self.queue.wake.notify_one();
        Ok(())
    }
}

impl AccessLog for JsonAccessLog {
    /// Formats the entry straight into the batch, under the lock: formatting takes less time
    /// than copying a line formatted elsewhere would, and loggers rarely meet there. An entry
    /// that would take the queue past its bytes is taken back out and dropped.
    fn log(&self, entry: &LogEntry<'_>) {
        self.log_numbered(entry);
    }
}

impl Drop for JsonAccessLog {
    /// Writes every queued entry before returning.
    fn drop(&mut self) {
        self.queue.lock().closing = true;
        self.queue.wake.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Where the writer writes.
struct Output {
    sink: Box<dyn Write + Send>,
    /// The log file, when the log is written to one.
    file: Option<WatchedFile>,
}

/// A log file the writer checks is still the one at its path.
struct WatchedFile {
    path: PathBuf,
    /// The device and inode of the open file.
    id: (u64, u64),
    /// When the path was last checked.
    checked: Instant,
    /// The path was found without the open file and could not be opened anew: said once.
    missing: bool,
}

impl Output {
    /// Takes a file opened anew by [`JsonAccessLog::reopen`], or, at most every
    /// [`CHECK_EVERY`], opens the path anew if the file there is no longer the open one.
    fn follow_path(&mut self, reopened: Option<LogFile>) {
        let Some(file) = &mut self.file else {
            return;
        };
        if let Some(reopened) = reopened {
            self.sink = reopened.sink;
            file.id = reopened.id;
            file.missing = false;
            return;
        }
        let now = Instant::now();
        if now.duration_since(file.checked) < CHECK_EVERY {
            return;
        }
        file.checked = now;
        let at_path = std::fs::metadata(&file.path).map(|m| (m.dev(), m.ino()));
        if at_path.as_ref().is_ok_and(|&id| id == file.id) {
            return;
        }
        match LogFile::open(&file.path) {
            Ok(reopened) => {
                tracing::warn!(
                    path = %file.path.display(),
                    "the access-log file was deleted or replaced; writing to the path anew"
                );
                self.sink = reopened.sink;
                file.id = reopened.id;
                file.missing = false;
            }
            Err(error) if !file.missing => {
                file.missing = true;
                tracing::error!(
                    path = %file.path.display(),
                    %error,
                    "the access-log file was deleted or replaced and cannot be opened anew"
                );
            }
            Err(_) => {}
        }
    }
}

/// The writer thread: takes whole batches and writes each with one call, until the log closes.
fn write_batches(queue: &Queue, mut out: Output) {
    // The buffers written last, given back to the loggers as the next batch's, so that neither
    // side allocates once both have grown to the usual batch size.
    let mut spare = Vec::new();
    let mut spare_numbered = Vec::new();
    loop {
        let mut batch = queue.lock();
        batch.writing = 0;
        // Entries dropped after the last batch taken are taken too, so that the ring of recent
        // entries learns that they will never come.
        while batch.entries == 0
            && batch.taken_through == batch.next_seq
            && !batch.closing
            && batch.reopened.is_none()
        {
            batch = queue.wake.wait(batch).unwrap_or_else(|p| p.into_inner());
        }
        if batch.entries > 0 && !batch.closing && !queue.half_full(batch.whole, batch.entries) {
            // Let a batch gather; a half-full batch or closing cuts the wait short.
            batch = queue
                .wake
                .wait_timeout(batch, GATHER)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let closing = batch.closing;
        let reopened = batch.reopened.take();
        // Only whole lines: waiting above does not cut off what a dying logger left.
        let whole = batch.whole;
        batch.lines.truncate(whole);
        let mut lines = mem::replace(&mut batch.lines, mem::take(&mut spare));
        let mut numbered = mem::replace(&mut batch.numbered, mem::take(&mut spare_numbered));
        let entries = mem::take(&mut batch.entries);
        batch.whole = 0;
        batch.writing = lines.len();
        batch.taken_through = batch.next_seq;
        let (through, recent) = (batch.taken_through, batch.recent.clone());
        drop(batch);
        // Handed over before writing, so that a slow disk does not hold up a replay.
        if let Some(recent) = recent {
            recent.hand_over(&lines, &numbered, through);
        }
        numbered.clear();
        spare_numbered = numbered;
        if !lines.is_empty() || reopened.is_some() {
            out.follow_path(reopened);
        }
        if !lines.is_empty() {
            let sink = &mut out.sink;
            if let Err(error) = sink.write_all(&lines).and_then(|()| sink.flush()) {
                queue.write_errors.fetch_add(1, Ordering::Relaxed);
                queue
                    .failed_entries
                    .fetch_add(entries as u64, Ordering::Relaxed);
                *queue
                    .last_write_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
            }
        }
        lines.clear();
        spare = lines;
        if closing {
            queue.lock().writing = 0;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axoneme_sdk::{EntryType, Field};

    use super::file_sink::RELEASE_STEP;
    use crate::format_entry;

    use super::*;
    use crate::testing::{bare_entry, log_meta as meta, multiget};

    /// Whether a [`Gated`] sink's writes may go on, and the signal that they may.
    type Gate = Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>;

    /// A sink whose writes wait until the gate opens, standing for a slow disk; it says when a
    /// write has started waiting.
    struct Gated {
        gate: Gate,
        waiting: std::sync::mpsc::Sender<()>,
        written: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (open, opened) = &*self.gate;
            let mut open = open.lock().unwrap();
            if !*open {
                let _ = self.waiting.send(());
            }
            while !*open {
                open = opened.wait(open).unwrap();
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A log within `limits` over a [`Gated`] sink whose gate starts `open`; with the gate,
    /// what was written, and the sink's word that a write is waiting.
    fn gated_log(
        open: bool,
        limits: Limits,
    ) -> (
        JsonAccessLog,
        Gate,
        Arc<std::sync::Mutex<Vec<u8>>>,
        std::sync::mpsc::Receiver<()>,
    ) {
        let gate = Arc::new((std::sync::Mutex::new(open), std::sync::Condvar::new()));
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (waiting_tx, waiting) = std::sync::mpsc::channel();
        let sink = Gated {
            gate: Arc::clone(&gate),
            waiting: waiting_tx,
            written: Arc::clone(&written),
        };
        let log = JsonAccessLog::with_sink(Box::new(sink), limits);
        (log, gate, written, waiting)
    }

    /// The default limits, but holding at most `n` entries.
    fn entries(n: usize) -> Limits {
        Limits {
            queue_entries: Some(n),
            ..Limits::default()
        }
    }

    #[test]
    fn a_log_file_keeps_every_line_while_its_pages_are_released() {
        let path = std::env::temp_dir().join(format!("axoneme-log-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, b"earlier line\n").unwrap();
        let meta = meta();
        let fields = [Field::text("cmd", "READ")];
        let entry = LogEntry {
            entry_type: EntryType::Request,
            meta: &meta,
            policy_name: "p",
            proto: Some("r2d2"),
            fields: &fields,
        };
        let mut one = Vec::new();
        format_entry(&mut one, &entry, SystemTime::now(), 64);
        // Enough lines for several release steps, logged faster than the writer gathers them.
        let lines = (3 * RELEASE_STEP as usize) / one.len() + 1;
        let log = JsonAccessLog::open(path.to_str().unwrap(), entries(lines)).unwrap();
        for _ in 0..lines {
            log.log(&entry);
        }
        assert_eq!(log.dropped(), 0);
        drop(log);
        let written = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut rest = written.strip_prefix(b"earlier line\n".as_slice()).unwrap();
        let mut count = 0;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let line: serde_json::Value = serde_json::from_slice(&rest[..end]).unwrap();
            assert_eq!(line["generic_l7"]["fields"]["cmd"], "READ");
            rest = &rest[end + 1..];
            count += 1;
        }
        assert_eq!((count, rest.len()), (lines, 0));
    }

    #[test]
    fn a_compact_log_writes_compact_lines() {
        let path =
            std::env::temp_dir().join(format!("axoneme-compact-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let meta = meta();
        let fields = [Field::text("cmd", "READ")];
        let limits = Limits {
            format: LogFormat::Compact,
            ..Limits::default()
        };
        let log = JsonAccessLog::open(path.to_str().unwrap(), limits).unwrap();
        log.log(&multiget(&meta, &fields));
        log.log(&bare_entry(&meta));
        drop(log);
        let written = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<serde_json::Value> = written
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["f"]["cmd"], "READ");
        assert_eq!(lines[0]["pr"], "memcache");
        assert_eq!(lines[1]["t"], "q");
        assert!(lines[1].get("source_labels").is_none() && lines[1].get("f").is_none());
    }

    /// The lines of the file at `path` once it has `n` of them (what it has after 5 s).
    fn lines_once(path: &Path, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// A fresh directory for one test's log files.
    fn log_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("axoneme-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_reopened_log_writes_to_its_path_anew_and_the_moved_file_keeps_the_old_entries() {
        let dir = log_dir("reopen");
        let path = dir.join("access.log");
        let moved = dir.join("access.log.1");
        let log = JsonAccessLog::open(path.to_str().unwrap(), entries(16)).unwrap();
        let meta = meta();
        let entry = bare_entry(&meta);
        log.log(&entry);
        assert_eq!(lines_once(&path, 1).len(), 1);
        std::fs::rename(&path, &moved).unwrap();
        log.reopen().unwrap();
        log.log(&entry);
        log.log(&entry);
        assert_eq!(lines_once(&path, 2).len(), 2);
        drop(log);
        assert_eq!(lines_once(&moved, 1).len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_deleted_log_file_is_made_anew_within_a_check() {
        let dir = log_dir("deleted");
        let path = dir.join("access.log");
        let log = JsonAccessLog::open(path.to_str().unwrap(), entries(16)).unwrap();
        let meta = meta();
        let entry = bare_entry(&meta);
        log.log(&entry);
        assert_eq!(lines_once(&path, 1).len(), 1);
        std::fs::remove_file(&path).unwrap();
        let deadline = Instant::now() + 3 * CHECK_EVERY;
        while !path.exists() {
            assert!(Instant::now() < deadline, "the log file was not made anew");
            log.log(&entry);
            thread::sleep(Duration::from_millis(50));
        }
        let before = lines_once(&path, 1).len();
        log.log(&entry);
        assert_eq!(lines_once(&path, before + 1).len(), before + 1);
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_writes_are_counted() {
        let log = JsonAccessLog::open("/dev/full", entries(16)).unwrap();
        let meta = meta();
        let entry = bare_entry(&meta);
        log.log(&entry);
        let deadline = Instant::now() + Duration::from_secs(5);
        while log.write_errors() == 0 {
            assert!(
                Instant::now() < deadline,
                "the failed write was not counted"
            );
            thread::sleep(Duration::from_millis(10));
        }
        log.log(&entry);
        log.log(&entry);
        let queue = Arc::clone(&log.queue);
        drop(log);
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let failed = (load(&queue.write_errors), load(&queue.failed_entries));
        // The last two entries were written together or apart.
        assert!(failed == (2, 3) || failed == (3, 3), "{failed:?}");
        let error = queue.last_write_error.lock().unwrap().clone().unwrap();
        assert!(error.contains("No space left on device"), "{error}");
    }

    #[test]
    fn a_slow_writer_never_blocks_logging_and_drops_are_counted() {
        let (log, gate, written, waiting) = gated_log(false, entries(1));
        let meta = meta();
        let entry = bare_entry(&meta);
        log.log(&entry);
        waiting
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer is stuck on the first entry");
        // One entry fits in the queue behind the stuck one; the other nine are dropped at once.
        for _ in 0..10 {
            log.log(&entry);
        }
        let dropped = log.dropped();
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(log);
        let lines = written
            .lock()
            .unwrap()
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        assert_eq!((dropped, lines), (9, 2));
    }

    #[test]
    fn a_queue_bounded_in_bytes_never_holds_more_and_drops_are_counted() {
        const QUEUE: usize = 64 << 10;
        let limits = Limits {
            queue_bytes: QUEUE,
            ..Limits::default()
        };
        let (log, gate, written, waiting) = gated_log(false, limits);
        let meta = meta();
        let keys = vec![b'k'; 1 << 20];
        let fields = [Field::text("command", "get"), Field::bytes("keys", &keys)];
        let entry = multiget(&meta, &fields);
        log.log(&entry);
        waiting
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer is stuck on the first entry");
        let mut most = 0;
        for _ in 0..100 {
            log.log(&entry);
            most = most.max(log.counts().queued_bytes);
        }
        let counts = log.counts();
        // The writer goes on before anything is checked: a failed check does not leave it stuck.
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(log);
        assert!(most <= QUEUE, "{most} bytes held");
        // A megabyte of keys takes some 4.5 KiB once cut: the queue is nearly full, not over.
        assert!(counts.queued_bytes > QUEUE - 5000, "{counts:?}");
        assert!(counts.dropped > 80, "{counts:?}");
        assert!(counts.dropped_at_bytes > QUEUE - 5000, "{counts:?}");
        assert_eq!(counts.truncated, 101 - counts.dropped);
        let written = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len() as u64 + counts.dropped, 101);
        for line in lines {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            let l7 = &entry["generic_l7"];
            assert_eq!(l7["fields"]["keys"].as_str().unwrap().len(), 4096);
            assert_eq!(l7["truncated"]["keys"], 1 << 20);
        }
    }

    #[test]
    fn an_entry_longer_than_the_whole_queue_is_dropped_and_shorter_ones_still_fit() {
        let limits = Limits {
            queue_bytes: 1000,
            ..Limits::default()
        };
        let (log, _, written, _) = gated_log(true, limits);
        let meta = meta();
        let keys = vec![b'k'; 2000];
        let fields = [Field::bytes("keys", &keys)];
        log.log(&multiget(&meta, &fields));
        log.log(&bare_entry(&meta));
        let counts = log.counts();
        assert_eq!(counts.dropped, 1);
        assert!(counts.dropped_entry_bytes > 2000, "{counts:?}");
        drop(log);
        let written = written.lock().unwrap();
        assert_eq!(written.iter().filter(|&&b| b == b'\n').count(), 1);
    }

    #[test]
    fn a_logger_that_panics_mid_line_leaves_only_whole_lines() {
        let (log, _, written, _) = gated_log(true, entries(1 << 10));
        let meta = meta();
        let entry = bare_entry(&meta);
        log.log(&entry);
        // A logger dies halfway through a line, poisoning the lock.
        let queue = Arc::clone(&log.queue);
        let died = thread::spawn(move || {
            let mut batch = queue.lock();
            batch.lines.extend_from_slice(b"{\"timestamp\":17");
            panic!("a logger dies mid-line");
        })
        .join();
        assert!(died.is_err());
        log.log(&entry);
        drop(log);
        let written = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 2, "{written}");
        for line in lines {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }
}
