//! The live view of the access log: every entry, as the JSON line the log writes, offered to
//! whoever watches (`axoneme monitor`), filtered by entry type, protocol and endpoint.
//!
//! Entries are formatted for watchers only while someone watches; a watcher that falls behind
//! loses entries rather than slowing the proxy. This module does not write the access log.

use std::sync::Arc;
use std::time::SystemTime;

use axoneme_sdk::{AccessLog, EntryType, LogEntry};
use tokio::sync::broadcast;

use crate::access_log::format_entry;

/// Entries a slow watcher may lag behind before it loses some.
const BACKLOG: usize = 4096;

/// One access-log entry as watchers see it.
#[derive(Debug)]
pub struct Event {
    /// Request, Response or Denied.
    pub entry_type: EntryType,
    /// The L7 protocol, empty for connections that are not parsed.
    pub proto: String,
    /// The endpoint whose listener saw it.
    pub endpoint: Arc<str>,
    /// The JSON line, with its newline.
    pub line: Vec<u8>,
}

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
    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &Event) -> bool {
        self.entry_type
            .as_ref()
            .is_none_or(|t| t.eq_ignore_ascii_case(event.entry_type.as_str()))
            && self.proto.as_ref().is_none_or(|p| *p == event.proto)
            && self
                .endpoint
                .as_ref()
                .is_none_or(|e| **e == *event.endpoint)
    }
}

/// The access log fanned out: to the log itself and to watchers.
pub struct Monitor {
    log: Arc<dyn AccessLog>,
    watchers: broadcast::Sender<Arc<Event>>,
}

impl Monitor {
    /// Fans entries out to `log` and to watchers.
    pub fn new(log: Arc<dyn AccessLog>) -> Monitor {
        Monitor {
            log,
            watchers: broadcast::Sender::new(BACKLOG),
        }
    }

    /// A new watcher's view of the entries from now on.
    pub fn watch(&self) -> broadcast::Receiver<Arc<Event>> {
        self.watchers.subscribe()
    }
}

impl AccessLog for Monitor {
    fn log(&self, entry: &LogEntry<'_>) {
        self.log.log(entry);
        if self.watchers.receiver_count() == 0 {
            return;
        }
        let mut line = Vec::new();
        format_entry(&mut line, entry, SystemTime::now());
        let _ = self.watchers.send(Arc::new(Event {
            entry_type: entry.entry_type,
            proto: entry.proto.unwrap_or_default().to_owned(),
            endpoint: Arc::clone(&entry.meta.endpoint),
            line,
        }));
    }
}
