//! The ring of recent access-log entries (`observe --last N`): the very lines the access log
//! formats, handed over by its writer thread a batch at a time, oldest dropped first to stay
//! within a bound in bytes. Each entry carries the number the access log gave it, so that a
//! replay can take exactly the entries logged before a given one, once the writer has handed
//! them all over. This module formats nothing and filters nothing.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where one entry ends in a batch of lines, and its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbered {
    /// The entry's number in the access log's order.
    pub seq: u64,
    /// The offset just past its newline in the batch.
    pub end: usize,
}

/// The kept lines, oldest first.
#[derive(Debug, Default)]
struct Ring {
    bytes: VecDeque<u8>,
    /// Each kept line's length and number.
    lines: VecDeque<(usize, u64)>,
    /// Every entry numbered below this has been handed over (kept, or not kept because it was
    /// longer than the ring, or dropped by the access log before it was formatted).
    through: u64,
}

/// The most recent entries the access log wrote, bounded in bytes.
#[derive(Debug)]
pub struct RecentEntries {
    ring: Mutex<Ring>,
    /// Signalled when `through` moves on.
    advanced: Condvar,
    max_bytes: usize,
}

/// The kept lines of entries numbered below some number, oldest first.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The lines one after another.
    pub bytes: Vec<u8>,
    /// The length of each.
    pub lengths: Vec<usize>,
    /// Whether every entry below the number had been handed over (false when the writer did not
    /// hand them over in time).
    pub complete: bool,
}

impl RecentEntries {
    /// A ring keeping at most `max_bytes` of lines.
    pub fn new(max_bytes: usize) -> RecentEntries {
        RecentEntries {
            ring: Mutex::default(),
            advanced: Condvar::new(),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the lines of one batch, `entries` saying where each ends and its number; every
    /// entry numbered below `through` has now been handed over. A line longer than the whole
    /// ring is not kept.
    pub fn hand_over(&self, lines: &[u8], entries: &[Numbered], through: u64) {
        let mut ring = self.lock();
        let mut start = 0;
        for entry in entries {
            let line = &lines[start..entry.end];
            start = entry.end;
            if line.len() > self.max_bytes {
                continue;
            }
            while ring.bytes.len() + line.len() > self.max_bytes {
                let (oldest, _) = ring.lines.pop_front().expect("bytes are of kept lines");
                ring.bytes.drain(..oldest);
            }
            ring.bytes.extend(line);
            ring.lines.push_back((line.len(), entry.seq));
        }
        ring.through = ring.through.max(through);
        drop(ring);
        self.advanced.notify_all();
    }

    /// The kept lines of the entries numbered below `before`, once every one of them has been
    /// handed over, waiting at most `wait` for that.
    pub fn before(&self, before: u64, wait: Duration) -> Snapshot {
        let deadline = Instant::now() + wait;
        let mut ring = self.lock();
        while ring.through < before {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            ring = self
                .advanced
                .wait_timeout(ring, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let complete = ring.through >= before;
        let kept = ring.lines.iter().take_while(|(_, seq)| *seq < before);
        let lengths: Vec<usize> = kept.map(|(length, _)| *length).collect();
        let (front, back) = ring.bytes.as_slices();
        let total: usize = lengths.iter().sum();
        let mut bytes = Vec::with_capacity(total);
        bytes.extend_from_slice(&front[..total.min(front.len())]);
        bytes.extend_from_slice(&back[..total.saturating_sub(front.len())]);
        Snapshot {
            bytes,
            lengths,
            complete,
        }
    }

    /// Bytes of lines kept now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of `lines` numbered from `first`, with where each ends.
    fn batch(first: u64, lines: &[&str]) -> (Vec<u8>, Vec<Numbered>) {
        let mut bytes = Vec::new();
        let mut entries = Vec::new();
        for (seq, line) in (first..).zip(lines) {
            bytes.extend_from_slice(line.as_bytes());
            entries.push(Numbered {
                seq,
                end: bytes.len(),
            });
        }
        (bytes, entries)
    }

    #[test]
    fn the_oldest_lines_go_first_and_a_line_longer_than_the_ring_is_not_kept() {
        let recent = RecentEntries::new(8);
        let (bytes, entries) = batch(0, &["aaa\n", "bbb\n", "ccc\n", "0123456789\n", "dd\n"]);
        recent.hand_over(&bytes, &entries, 5);
        let all = recent.before(5, Duration::ZERO);
        assert_eq!(all.bytes, b"ccc\ndd\n");
        assert_eq!(all.lengths, [4, 3]);
        assert!(all.complete);
        assert_eq!(recent.bytes(), 7);
    }

    #[test]
    fn a_snapshot_holds_only_entries_numbered_below_and_waits_for_them() {
        let recent = std::sync::Arc::new(RecentEntries::new(1 << 10));
        let (bytes, entries) = batch(0, &["a\n", "b\n"]);
        // Entry 2 was dropped by the log: handed over without a line.
        recent.hand_over(&bytes, &entries, 3);
        let (bytes, entries) = batch(3, &["d\n", "e\n"]);
        recent.hand_over(&bytes, &entries, 5);
        let below_four = recent.before(4, Duration::ZERO);
        assert_eq!(
            (below_four.bytes.as_slice(), below_four.complete),
            (&b"a\nb\nd\n"[..], true)
        );
        let late = recent.before(7, Duration::from_millis(20));
        assert!(!late.complete, "entries 5 and 6 were never handed over");
        assert_eq!(late.bytes, b"a\nb\nd\ne\n");
        let writer = std::sync::Arc::clone(&recent);
        let handing = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let (bytes, entries) = batch(5, &["f\n", "g\n"]);
            writer.hand_over(&bytes, &entries, 7);
        });
        let waited = recent.before(7, Duration::from_secs(10));
        handing.join().unwrap();
        assert!(waited.complete);
        assert_eq!(waited.bytes, b"a\nb\nd\ne\nf\ng\n");
    }

    #[test]
    fn a_snapshot_across_the_ring_s_wrap_is_whole() {
        let recent = RecentEntries::new(6);
        for (seq, line) in (0..).zip(["ab\n", "cd\n", "ef\n", "gh\n"]) {
            let (bytes, entries) = batch(seq, &[line]);
            recent.hand_over(&bytes, &entries, seq + 1);
        }
        assert_eq!(recent.before(4, Duration::ZERO).bytes, b"ef\ngh\n");
        assert_eq!(recent.before(3, Duration::ZERO).bytes, b"ef\n");
    }
}
