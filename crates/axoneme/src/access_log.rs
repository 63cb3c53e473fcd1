//! The access log: one JSON object per line, with Cilium's field names, written by a thread of
//! its own so that logging never blocks forwarding.
//!
//! Connections format an entry into a buffer taken from a pool and hand it to a bounded queue;
//! when the queue is full the entry is dropped and counted. The writer thread writes the line
//! and returns the buffer to the pool, so steady-state logging does not allocate. This module
//! decides nothing: it records what it is given.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use axoneme_sdk::{AccessLog, Direction, LogEntry};

/// Buffers kept for reuse; more than this are freed.
const POOL_SIZE: usize = 256;

/// The access log of a running proxy. Cheap to share; entries are written in the order queued.
pub struct JsonAccessLog {
    queue: Option<SyncSender<Vec<u8>>>,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
    dropped: AtomicU64,
    writer: Option<thread::JoinHandle<()>>,
}

impl JsonAccessLog {
    /// A log that writes to `path` (`-` for standard output), holding at most `queue` entries
    /// waiting for the writer.
    pub fn open(path: &str, queue: usize) -> io::Result<JsonAccessLog> {
        let sink: Box<dyn Write + Send> = if path == "-" {
            Box::new(io::stdout())
        } else {
            Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(Path::new(path))?,
            )
        };
        Ok(JsonAccessLog::with_sink(sink, queue))
    }

    /// A log that writes to `sink`.
    pub fn with_sink(sink: Box<dyn Write + Send>, queue: usize) -> JsonAccessLog {
        let (tx, rx) = sync_channel(queue.max(1));
        let pool = Arc::new(Mutex::new(Vec::new()));
        let writer_pool = Arc::clone(&pool);
        let writer = thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, io::BufWriter::new(sink), writer_pool))
            .expect("spawning the access-log thread");
        JsonAccessLog {
            queue: Some(tx),
            pool,
            dropped: AtomicU64::new(0),
            writer: Some(writer),
        }
    }

    /// Entries dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl AccessLog for JsonAccessLog {
    fn log(&self, entry: &LogEntry<'_>) {
        let Some(queue) = &self.queue else { return };
        let mut line = self
            .pool
            .lock()
            .map(|mut p| p.pop())
            .ok()
            .flatten()
            .unwrap_or_default();
        format_entry(&mut line, entry, SystemTime::now());
        match queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("access log is falling behind; entries are being dropped");
                }
            }
        }
    }
}

impl Drop for JsonAccessLog {
    /// Writes every queued entry before returning.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn write_lines(rx: Receiver<Vec<u8>>, mut out: impl Write, pool: Arc<Mutex<Vec<Vec<u8>>>>) {
    while let Ok(mut line) = rx.recv() {
        let mut result = out.write_all(&line);
        recycle(&pool, &mut line);
        while let Ok(mut more) = rx.try_recv() {
            result = result.and_then(|()| out.write_all(&more));
            recycle(&pool, &mut more);
        }
        if let Err(error) = result.and_then(|()| out.flush()) {
            tracing::error!(%error, "writing the access log failed");
        }
    }
}

fn recycle(pool: &Mutex<Vec<Vec<u8>>>, line: &mut Vec<u8>) {
    if let Ok(mut pool) = pool.lock() {
        if pool.len() < POOL_SIZE {
            line.clear();
            pool.push(std::mem::take(line));
        }
    }
}

/// Formats `entry` as one JSON line into `out` (which is cleared first).
pub fn format_entry(out: &mut Vec<u8>, entry: &LogEntry<'_>, now: SystemTime) {
    let meta = entry.meta;
    let timestamp = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    out.clear();
    let _ = write!(
        out,
        "{{\"timestamp\":{timestamp},\"is_ingress\":{},\"entry_type\":\"{}\",\"policy_name\":",
        meta.direction == Direction::Ingress,
        entry.entry_type.as_str()
    );
    json_string(out, entry.policy_name.as_bytes());
    let _ = write!(
        out,
        ",\"source_security_id\":{},\"destination_security_id\":{},\"source_address\":\"{}\",\"destination_address\":\"{}\",\"source_labels\":",
        meta.source_identity, meta.destination_identity, meta.source, meta.destination
    );
    json_list(out, &meta.source_labels);
    out.extend_from_slice(b",\"destination_labels\":");
    json_list(out, &meta.destination_labels);
    out.extend_from_slice(b",\"listener\":");
    json_string(out, meta.listener.as_bytes());
    out.extend_from_slice(b",\"endpoint\":");
    json_string(out, meta.endpoint.as_bytes());
    out.extend_from_slice(b",\"generic_l7\":{\"proto\":");
    json_string(out, entry.proto.unwrap_or("").as_bytes());
    out.extend_from_slice(b",\"fields\":{");
    for (i, field) in entry.fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(out, field.key.as_bytes());
        out.push(b':');
        json_string(out, field.value);
    }
    out.extend_from_slice(b"}}}\n");
}

fn json_list(out: &mut Vec<u8>, items: &[String]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(out, item.as_bytes());
    }
    out.push(b']');
}

/// Writes `bytes` as a JSON string, replacing invalid UTF-8 with U+FFFD.
fn json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let mut utf8 = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
            }
        }
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axoneme_sdk::{ConnectionMeta, EntryType, Field};

    use super::*;

    fn meta() -> ConnectionMeta {
        ConnectionMeta {
            id: 1,
            listener: "r2d2".into(),
            endpoint: "r2d2".into(),
            direction: Direction::Ingress,
            source: "127.0.0.21:5000".parse().unwrap(),
            destination: "127.0.0.1:4001".parse().unwrap(),
            source_identity: 257,
            destination_identity: 256,
            source_labels: Arc::from(vec!["app=luke".to_string()]),
            destination_labels: Arc::from(vec!["app=r2d2".to_string()]),
        }
    }

    #[test]
    fn entries_are_json_with_cilium_names() {
        let meta = meta();
        let mut line = Vec::new();
        let fields = [
            Field::text("cmd", "READ"),
            Field::bytes("file", b"/tmp/\"x\"\n\xff"),
        ];
        let entry = LogEntry {
            entry_type: EntryType::Denied,
            meta: &meta,
            policy_name: "rule1",
            proto: Some("r2d2"),
            fields: &fields,
        };
        format_entry(&mut line, &entry, UNIX_EPOCH + Duration::from_nanos(42));
        assert_eq!(
            String::from_utf8(line).unwrap(),
            concat!(
                r#"{"timestamp":42,"is_ingress":true,"entry_type":"Denied","policy_name":"rule1","#,
                r#""source_security_id":257,"destination_security_id":256,"#,
                r#""source_address":"127.0.0.21:5000","destination_address":"127.0.0.1:4001","#,
                r#""source_labels":["app=luke"],"destination_labels":["app=r2d2"],"listener":"r2d2","endpoint":"r2d2","#,
                r#""generic_l7":{"proto":"r2d2","fields":{"cmd":"READ","file":"/tmp/\"x\"\n�"}}}"#,
                "\n"
            )
        );
    }

    /// A sink whose writes wait until the gate opens, standing for a slow disk; it says when a
    /// write has started waiting.
    struct Gated {
        gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
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

    #[test]
    fn a_slow_writer_never_blocks_logging_and_drops_are_counted() {
        let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (waiting_tx, waiting) = std::sync::mpsc::channel();
        let sink = Gated {
            gate: Arc::clone(&gate),
            waiting: waiting_tx,
            written: Arc::clone(&written),
        };
        let log = JsonAccessLog::with_sink(Box::new(sink), 1);
        let meta = meta();
        let entry = LogEntry {
            entry_type: EntryType::Request,
            meta: &meta,
            policy_name: "p",
            proto: None,
            fields: &[],
        };
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
}
