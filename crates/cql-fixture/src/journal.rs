//! The journal: what the fixture's reader made of each request, before anything is evaluated,
//! so that a test can compare it with what a proxy in front of the fixture checked.
//!
//! Per request (QUERY, PREPARE, EXECUTE, BATCH): the actions of the statements the reader
//! accepted, each with its table resolved against the request's keyspace, or why the reader
//! refused the request (a syntax error, a table with no keyspace). It records and reports; it
//! reads no CQL and decides nothing.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::cql::Checked;

/// What the reader made of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every statement read: their actions and tables, in order.
    Accepted(Vec<Checked>),
    /// The request was refused before evaluation, for this reason.
    Refused(String),
}

/// One request's journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The connection, numbered from 1 in the order the fixture accepted them.
    pub connection: u64,
    pub stream: i16,
    /// The request's query strings (a prepared statement's for EXECUTE).
    pub queries: Vec<String>,
    pub verdict: Verdict,
}

/// Where the entries go: kept in memory (for a test in the same process to read), written to
/// a file as lines, or nowhere, so that a fixture under load keeps no record it has no use
/// for.
#[derive(Default)]
pub struct Journal {
    /// Whether entries are kept in memory.
    keep: bool,
    entries: Mutex<Vec<Entry>>,
    connections: AtomicU64,
    file: Option<Mutex<File>>,
}

impl Journal {
    /// A journal that records nothing (connections are still numbered).
    pub fn off() -> Journal {
        Journal::default()
    }

    /// A journal kept in memory, in order, for [`Journal::entries`] to read.
    pub fn in_memory() -> Journal {
        Journal {
            keep: true,
            ..Journal::default()
        }
    }

    /// A journal that appends each entry to `path`, one line each: connection, stream,
    /// `accepted` with `action keyspace.table` pairs or `refused` with the reason, and the
    /// queries, separated by tabs, the reason and queries quoted.
    pub fn to_file(path: &Path) -> io::Result<Journal> {
        Ok(Journal {
            file: Some(Mutex::new(File::create(path)?)),
            ..Journal::default()
        })
    }

    /// A number for a new connection.
    pub fn connection(&self) -> u64 {
        self.connections.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records an entry.
    pub fn record(&self, entry: Entry) -> io::Result<()> {
        if let Some(file) = &self.file {
            lock(file).write_all(line(&entry).as_bytes())?;
        }
        if self.keep {
            lock(&self.entries).push(entry);
        }
        Ok(())
    }

    /// Every entry kept so far.
    pub fn entries(&self) -> Vec<Entry> {
        self.since(0)
    }

    /// How many entries were kept so far.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Whether no entry was kept so far.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries kept after the first `n`.
    pub fn since(&self, n: usize) -> Vec<Entry> {
        lock(&self.entries).get(n..).unwrap_or_default().to_vec()
    }

    /// The entries of one connection kept so far.
    pub fn of_connection(&self, connection: u64) -> Vec<Entry> {
        lock(&self.entries)
            .iter()
            .filter(|e| e.connection == connection)
            .cloned()
            .collect()
    }
}

/// An entry as a line of the journal file.
fn line(entry: &Entry) -> String {
    let mut line = format!("{}\t{}\t", entry.connection, entry.stream);
    match &entry.verdict {
        Verdict::Accepted(checked) => {
            line.push_str("accepted\t");
            let pairs: Vec<String> = checked
                .iter()
                .map(|c| format!("{} {}", c.action.name(), c.table))
                .collect();
            line.push_str(&pairs.join(", "));
        }
        Verdict::Refused(reason) => {
            let _ = write!(line, "refused\t{reason:?}");
        }
    }
    for query in &entry.queries {
        let _ = write!(line, "\t{query:?}");
    }
    line.push('\n');
    line
}

/// The value behind a mutex, even if a thread panicked while holding it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cql::Action;

    #[test]
    fn keeps_entries_per_connection_and_writes_lines() {
        let path = std::env::temp_dir().join(format!("cql-journal-{}", std::process::id()));
        let (journal, file) = (Journal::in_memory(), Journal::to_file(&path).unwrap());
        let (first, second) = (journal.connection(), journal.connection());
        assert_eq!((first, second), (1, 2));
        let accepted = Entry {
            connection: first,
            stream: 3,
            queries: vec!["SELECT * FROM system.local".into()],
            verdict: Verdict::Accepted(vec![Checked {
                action: Action::Select,
                table: "system.local".into(),
            }]),
        };
        let refused = Entry {
            connection: second,
            stream: 4,
            queries: vec!["SELECT *".into()],
            verdict: Verdict::Refused("expected FROM".into()),
        };
        for entry in [&accepted, &refused] {
            journal.record(entry.clone()).unwrap();
            file.record(entry.clone()).unwrap();
        }
        assert_eq!(journal.of_connection(2), std::slice::from_ref(&refused));
        assert_eq!(journal.entries(), [accepted.clone(), refused.clone()]);
        assert_eq!(journal.since(1), std::slice::from_ref(&refused));
        assert_eq!((journal.len(), journal.since(2).len()), (2, 0));
        assert!(
            file.entries().is_empty(),
            "a file journal keeps nothing in memory"
        );
        let off = Journal::off();
        off.record(accepted).unwrap();
        assert!(off.is_empty());
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            text,
            "1\t3\taccepted\tselect system.local\t\"SELECT * FROM system.local\"\n\
             2\t4\trefused\t\"expected FROM\"\t\"SELECT *\"\n"
        );
    }
}
