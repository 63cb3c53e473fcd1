//! The filter's access log: every entry as one JSON line, in the agent's format (the agent's own
//! formatter, `axoneme_access_log`), appended to the file the configuration names. It
//! writes on the calling worker thread, one whole line per write, so lines of different
//! connections never interleave. It must not decide anything.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use axoneme_sdk::{AccessLog, LogEntry};

/// The longest field value logged whole, as the agent's default (`accessLog.maxFieldBytes`).
const MAX_FIELD_BYTES: usize = 4096;

/// An access log appending to a file.
pub(crate) struct FileLog {
    file: Mutex<File>,
    /// A write failed already (reported once on stderr, which Envoy keeps).
    failed: AtomicBool,
}

impl FileLog {
    /// Opens (creating it if need be) the file at `path` for appending.
    pub(crate) fn open(path: &Path) -> io::Result<FileLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(FileLog {
            file: Mutex::new(file),
            failed: AtomicBool::new(false),
        })
    }
}

impl AccessLog for FileLog {
    fn log(&self, entry: &LogEntry<'_>) {
        let mut line = Vec::with_capacity(512);
        axoneme_access_log::format_entry(&mut line, entry, SystemTime::now(), MAX_FIELD_BYTES);
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(error) = file.write_all(&line) {
            if !self.failed.swap(true, Ordering::Relaxed) {
                eprintln!("axoneme envoy filter: cannot write the access log: {error}");
            }
        }
    }
}
