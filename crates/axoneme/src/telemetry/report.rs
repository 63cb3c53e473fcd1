//! Reports of what the agent lost or cut short: access-log entries dropped because the queue
//! was full or lost in failed writes, field values truncated, monitor entries dropped. Each is
//! said in the operational log at most once per [`REPORT_EVERY`], with how much it grew since
//! it was last said, for as long as it keeps growing.
//!
//! This module only decides when a count is worth a line and words that line; the counting is
//! done by the access log and the monitor, and the lines are logged by the agent. It reads no
//! clock of its own: every decision takes the instant it is made at.

use std::time::{Duration, Instant};

/// How often, at most, each kind of loss is reported.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// A count that only grows, and how much of it has been reported.
#[derive(Debug, Default)]
pub struct Growth {
    /// The count when it was last reported.
    reported: u64,
    /// When it was last reported.
    at: Option<Instant>,
}

impl Growth {
    /// How much `total` grew since it was last reported, if it grew and that report is at least
    /// `every` old at `now` (or there was none); the growth then counts as reported at `now`.
    pub fn due(&mut self, total: u64, now: Instant, every: Duration) -> Option<u64> {
        let grown = total.saturating_sub(self.reported);
        if grown == 0 {
            return None;
        }
        if self
            .at
            .is_some_and(|at| now.saturating_duration_since(at) < every)
        {
            return None;
        }
        self.reported = total;
        self.at = Some(now);
        Some(grown)
    }
}

/// The loss counts of a running agent at one moment, with what the report lines mention.
#[derive(Debug, Clone, Default)]
pub struct Losses {
    /// Access-log entries dropped because the queue was full.
    pub dropped: u64,
    /// Bytes queued when the last entry was dropped.
    pub dropped_at_bytes: usize,
    /// Entries queued when the last entry was dropped.
    pub dropped_at_entries: usize,
    /// Bytes of the last entry dropped, when known (0 otherwise).
    pub dropped_entry_bytes: usize,
    /// `accessLog.queueBytes`.
    pub queue_bytes: usize,
    /// `accessLog.queue`, when set.
    pub queue_entries: Option<usize>,
    /// Access-log writes that failed.
    pub write_errors: u64,
    /// Entries those writes held.
    pub failed_entries: u64,
    /// The last write error.
    pub last_write_error: Option<String>,
    /// Field values cut to `accessLog.maxFieldBytes`.
    pub truncated: u64,
    /// `accessLog.maxFieldBytes`.
    pub max_field_bytes: usize,
    /// Monitor entries a watcher lost because its backlog was full.
    pub monitor_dropped: u64,
    /// `monitor.queueBytes`.
    pub monitor_queue_bytes: usize,
}

/// How serious a report is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Something was cut short as configured.
    Info,
    /// Entries were lost to a bound.
    Warn,
    /// Entries were lost to a failure.
    Error,
}

/// One line to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// How serious it is.
    pub severity: Severity,
    /// What it says.
    pub message: String,
}

/// What was reported of each kind of loss.
#[derive(Debug, Default)]
pub struct Reporter {
    dropped: Growth,
    write_errors: Growth,
    truncated: Growth,
    monitor_dropped: Growth,
}

impl Reporter {
    /// The lines due at `now` for the counts `losses`: one per kind of loss that grew and was
    /// not reported within the last [`REPORT_EVERY`].
    pub fn due(&mut self, losses: &Losses, now: Instant) -> Vec<Report> {
        let every = REPORT_EVERY;
        let period = every.as_secs();
        let mut reports = Vec::new();
        if let Some(n) = self.dropped.due(losses.dropped, now, every) {
            let mut held = format!(
                "{} of {} bytes held",
                losses.dropped_at_bytes, losses.queue_bytes
            );
            if let Some(max) = losses.queue_entries {
                held += &format!(", {} of {max} entries", losses.dropped_at_entries);
            }
            if losses.dropped_entry_bytes > 0 {
                held += &format!(", the last entry needed {}", losses.dropped_entry_bytes);
            }
            reports.push(Report {
                severity: Severity::Warn,
                message: format!(
                    "{n} access-log entries dropped in the last {period} s: queue full ({held})"
                ),
            });
        }
        if let Some(n) = self.write_errors.due(losses.write_errors, now, every) {
            reports.push(Report {
                severity: Severity::Error,
                message: format!(
                    "{n} access-log writes failed in the last {period} s ({} entries lost so \
                     far): {}",
                    losses.failed_entries,
                    losses
                        .last_write_error
                        .as_deref()
                        .unwrap_or("unknown error")
                ),
            });
        }
        if let Some(n) = self.truncated.due(losses.truncated, now, every) {
            reports.push(Report {
                severity: Severity::Info,
                message: format!(
                    "{n} access-log field values truncated in the last {period} s: longer than \
                     accessLog.maxFieldBytes ({} bytes)",
                    losses.max_field_bytes
                ),
            });
        }
        if let Some(n) = self.monitor_dropped.due(losses.monitor_dropped, now, every) {
            reports.push(Report {
                severity: Severity::Warn,
                message: format!(
                    "{n} monitor entries dropped in the last {period} s: a watcher's backlog was \
                     full (monitor.queueBytes is {} bytes)",
                    losses.monitor_queue_bytes
                ),
            });
        }
        reports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_count_is_reported_at_most_once_per_period_and_only_when_it_grew() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let every = Duration::from_secs(10);
        let mut growth = Growth::default();
        assert_eq!(growth.due(0, at(0), every), None, "nothing to say");
        assert_eq!(
            growth.due(3, at(1), every),
            Some(3),
            "the first is said at once"
        );
        assert_eq!(growth.due(7, at(2), every), None, "too soon");
        assert_eq!(growth.due(9, at(10), every), None, "still too soon");
        assert_eq!(
            growth.due(9, at(11), every),
            Some(6),
            "said again, with all since"
        );
        assert_eq!(growth.due(9, at(30), every), None, "it did not grow");
        assert_eq!(
            growth.due(10, at(31), every),
            Some(1),
            "long after: at once"
        );
    }

    #[test]
    fn each_loss_is_reported_every_period_while_it_grows() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut losses = Losses {
            queue_bytes: 4096,
            max_field_bytes: 64,
            monitor_queue_bytes: 1024,
            ..Losses::default()
        };
        let mut reporter = Reporter::default();
        assert!(reporter.due(&losses, at(0)).is_empty());
        losses.dropped = 5;
        losses.dropped_at_bytes = 4000;
        let reports = reporter.due(&losses, at(10));
        assert_eq!(
            reports,
            [Report {
                severity: Severity::Warn,
                message: "5 access-log entries dropped in the last 10 s: queue full (4000 of \
                          4096 bytes held)"
                    .into()
            }]
        );
        // Dropping goes on: a line every period, not only the first time.
        for (tick, total) in [(20, 9), (30, 10), (40, 30)] {
            losses.dropped = total;
            let reports = reporter.due(&losses, at(tick));
            assert_eq!(reports.len(), 1, "at {tick} s");
            assert!(reports[0].message.starts_with(&format!(
                "{} access-log entries dropped in the last 10 s",
                [4, 1, 20][(tick / 10 - 2) as usize]
            )));
        }
        assert!(
            reporter.due(&losses, at(50)).is_empty(),
            "it stopped growing"
        );
        losses.queue_entries = Some(8);
        losses.dropped_at_entries = 8;
        losses.dropped_entry_bytes = 512;
        losses.dropped += 1;
        losses.write_errors = 2;
        losses.failed_entries = 12;
        losses.last_write_error = Some("No space left on device (os error 28)".into());
        losses.truncated = 3;
        losses.monitor_dropped = 40;
        let messages: Vec<(Severity, String)> = reporter
            .due(&losses, at(60))
            .into_iter()
            .map(|r| (r.severity, r.message))
            .collect();
        assert_eq!(
            messages,
            [
                (
                    Severity::Warn,
                    "1 access-log entries dropped in the last 10 s: queue full (4000 of 4096 \
                     bytes held, 8 of 8 entries, the last entry needed 512)"
                        .to_string()
                ),
                (
                    Severity::Error,
                    "2 access-log writes failed in the last 10 s (12 entries lost so far): No \
                     space left on device (os error 28)"
                        .to_string()
                ),
                (
                    Severity::Info,
                    "3 access-log field values truncated in the last 10 s: longer than \
                     accessLog.maxFieldBytes (64 bytes)"
                        .to_string()
                ),
                (
                    Severity::Warn,
                    "40 monitor entries dropped in the last 10 s: a watcher's backlog was full \
                     (monitor.queueBytes is 1024 bytes)"
                        .to_string()
                ),
            ]
        );
        losses.monitor_dropped += 1;
        assert!(
            reporter.due(&losses, at(65)).is_empty(),
            "within the period nothing is said again"
        );
    }
}
