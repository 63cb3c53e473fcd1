//! Rate limits for log lines about events that can come in floods (timeouts, protocol errors,
//! refused connections, limit hits): at most one line per kind of event per interval, the line
//! saying how many of that kind went unlogged since the last one. Every event is still counted
//! in its metric; this module only decides whether a line is written. Losses the agent counts
//! without an event to hang a line on (access-log and monitor drops) are summed up by
//! [`crate::telemetry::report`] on the same period instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines of one kind are written at most once per this long.
pub(crate) const LOG_EVERY: Duration = crate::telemetry::report::REPORT_EVERY;

/// When each kind of event was last logged, and how many went unlogged since.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    kinds: Mutex<HashMap<&'static str, Slot>>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    logged_at: Instant,
    unlogged: u64,
}

impl Throttle {
    /// Whether an event of `kind` happening at `now` is to be logged: `Some(n)` with the number
    /// of events of that kind left unlogged since the last line, or `None` (the event is then
    /// counted as unlogged).
    pub(crate) fn allow(&self, kind: &'static str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        match kinds.get_mut(kind) {
            Some(slot) if now.saturating_duration_since(slot.logged_at) < LOG_EVERY => {
                slot.unlogged += 1;
                None
            }
            Some(slot) => {
                let unlogged = slot.unlogged;
                *slot = Slot {
                    logged_at: now,
                    unlogged: 0,
                };
                Some(unlogged)
            }
            None => {
                kinds.insert(
                    kind,
                    Slot {
                        logged_at: now,
                        unlogged: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// Logs a warning through `throttle` for an event of `kind`, adding `unlogged` (events of the
/// kind not logged since the last line) to the given fields.
macro_rules! throttled_warn {
    ($throttle:expr, $kind:expr, $($field:tt)*) => {
        if let Some(unlogged) = $throttle.allow($kind, std::time::Instant::now()) {
            tracing::warn!(unlogged, $($field)*);
        }
    };
}

pub(crate) use throttled_warn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_interval_with_the_count_left_out() {
        let throttle = Throttle::default();
        let start = Instant::now();
        assert_eq!(throttle.allow("timeout", start), Some(0));
        assert_eq!(
            throttle.allow("timeout", start + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            throttle.allow("timeout", start + Duration::from_secs(9)),
            None
        );
        assert_eq!(
            throttle.allow("parse", start + Duration::from_secs(9)),
            Some(0),
            "kinds are limited apart"
        );
        assert_eq!(
            throttle.allow("timeout", start + LOG_EVERY),
            Some(2),
            "the next line says two went unlogged"
        );
        assert_eq!(throttle.allow("timeout", start + LOG_EVERY), None);
        assert_eq!(throttle.allow("timeout", start + LOG_EVERY * 3), Some(1));
    }
}
