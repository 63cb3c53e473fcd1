//! The order of responses on one connection: the correlation ids the broker still owes, and
//! the denials the proxy answers in their place.
//!
//! A Kafka broker answers a connection's requests in order, each response carrying its
//! request's correlation id. A denial is placed where the broker's response would have been:
//! at once when nothing is owed, otherwise behind the responses owed before it. Requests that
//! expect no response (Produce with `acks` 0) are not recorded, and a response to one (some
//! brokers answer them anyway) is recognised by its correlation id being owed by no one. This
//! module is bookkeeping only: the parser frames bytes and calls it. It also says which
//! response answers an allowed Metadata request, by its place in the order, so that only the
//! broker's Metadata responses teach topic ids ([`crate::topic_ids`]).

use std::collections::VecDeque;

/// Most slots kept per connection; more means a client pipelining without reading.
pub const MAX_SLOTS: usize = 4096;

/// Most bytes of denials waiting for their turn per connection.
pub const MAX_QUEUED_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// The broker owes the response with this correlation id; `metadata` is the version of
    /// the Metadata request it answers, when it does.
    Owed {
        correlation_id: i32,
        metadata: Option<i16>,
    },
    /// A denial of this many bytes (at the front of the queued bytes) is due here.
    Denied(usize),
}

/// What to do with a denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyAction {
    /// Nothing is owed before it: inject it toward the client now.
    InjectNow,
    /// It waits behind the responses owed before it.
    Queued,
}

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseAction {
    /// It answers the oldest request owed: forward it.
    Pass,
    /// No request is owed this correlation id (a response to a request that expects none):
    /// the client does not expect it, so it is discarded.
    Discard,
}

/// Why the bookkeeping cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PendingError {
    /// Too many requests or denials wait.
    #[error("too many requests awaiting responses")]
    Full,
    /// The broker answered a later request before an earlier one.
    #[error("the broker answered correlation id {got} before {owed}")]
    OutOfOrder {
        /// The correlation id the response carries.
        got: i32,
        /// The one owed first.
        owed: i32,
    },
}

/// The queue of responses owed and denials to inject, in response order.
#[derive(Debug, Default)]
pub struct Pending {
    slots: VecDeque<Slot>,
    /// The bytes of the queued denials, in order.
    queued: VecDeque<u8>,
}

impl Pending {
    /// An allowed request that expects the response with `correlation_id`.
    pub fn expect(&mut self, correlation_id: i32) -> Result<(), PendingError> {
        self.push(Slot::Owed {
            correlation_id,
            metadata: None,
        })
    }

    /// An allowed Metadata request of `version` that expects the response with
    /// `correlation_id`.
    pub fn expect_metadata(
        &mut self,
        correlation_id: i32,
        version: i16,
    ) -> Result<(), PendingError> {
        self.push(Slot::Owed {
            correlation_id,
            metadata: Some(version),
        })
    }

    /// The version of the Metadata request that a response with `correlation_id` answers,
    /// when it answers the oldest request owed and that request is a Metadata request.
    pub fn metadata_due(&self, correlation_id: i32) -> Option<i16> {
        match self.slots.front() {
            Some(&Slot::Owed {
                correlation_id: owed,
                metadata,
            }) if owed == correlation_id => metadata,
            _ => None,
        }
    }

    /// A denied request answered with `denial`: injected now when nothing is owed, else
    /// queued (and kept here) until its turn.
    pub fn deny(&mut self, denial: &[u8]) -> Result<DenyAction, PendingError> {
        if self.slots.is_empty() {
            return Ok(DenyAction::InjectNow);
        }
        if self.queued.len() + denial.len() > MAX_QUEUED_BYTES {
            return Err(PendingError::Full);
        }
        self.push(Slot::Denied(denial.len()))?;
        self.queued.extend(denial);
        Ok(DenyAction::Queued)
    }

    /// A response with `correlation_id` at a frame boundary of the reply flow.
    pub fn response(&mut self, correlation_id: i32) -> Result<ResponseAction, PendingError> {
        let owed = |slot: &Slot| match *slot {
            Slot::Owed { correlation_id, .. } => Some(correlation_id),
            Slot::Denied(_) => None,
        };
        match self.slots.front().and_then(owed) {
            Some(first) if first == correlation_id => {
                self.slots.pop_front();
                Ok(ResponseAction::Pass)
            }
            _ if !self
                .slots
                .iter()
                .any(|slot| owed(slot) == Some(correlation_id)) =>
            {
                Ok(ResponseAction::Discard)
            }
            _ => Err(PendingError::OutOfOrder {
                got: correlation_id,
                owed: self.slots.iter().find_map(owed).unwrap_or(correlation_id),
            }),
        }
    }

    /// The rest of the denial due now (nothing owed before it), if any.
    pub fn due_denial(&mut self) -> Option<&[u8]> {
        match self.slots.front() {
            Some(&Slot::Denied(len)) => Some(&self.queued.make_contiguous()[..len]),
            _ => None,
        }
    }

    /// `n` bytes of the due denial were injected.
    pub fn denial_sent(&mut self, n: usize) {
        if let Some(Slot::Denied(len)) = self.slots.front_mut() {
            let n = n.min(*len);
            *len -= n;
            self.queued.drain(..n);
            if *len == 0 {
                self.slots.pop_front();
            }
        }
    }

    /// Whether nothing is owed and no denial waits.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn push(&mut self, slot: Slot) -> Result<(), PendingError> {
        if self.slots.len() >= MAX_SLOTS {
            return Err(PendingError::Full);
        }
        self.slots.push_back(slot);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_wait_behind_owed_responses() {
        let mut p = Pending::default();
        assert_eq!(p.deny(b"first"), Ok(DenyAction::InjectNow));
        p.expect(1).unwrap();
        assert_eq!(p.deny(b"second"), Ok(DenyAction::Queued));
        p.expect(3).unwrap();
        assert_eq!(p.deny(b"third"), Ok(DenyAction::Queued));
        assert_eq!(p.due_denial(), None);
        assert_eq!(p.response(1), Ok(ResponseAction::Pass));
        assert_eq!(p.due_denial(), Some(&b"second"[..]));
        p.denial_sent(2);
        assert_eq!(p.due_denial(), Some(&b"cond"[..]));
        p.denial_sent(4);
        assert_eq!(p.due_denial(), None);
        assert_eq!(p.response(3), Ok(ResponseAction::Pass));
        assert_eq!(p.due_denial(), Some(&b"third"[..]));
        p.denial_sent(5);
        assert!(p.is_empty());
    }

    #[test]
    fn unexpected_and_out_of_order_responses() {
        let mut p = Pending::default();
        assert_eq!(p.response(9), Ok(ResponseAction::Discard));
        p.expect(1).unwrap();
        p.expect(2).unwrap();
        assert_eq!(p.response(7), Ok(ResponseAction::Discard));
        assert_eq!(
            p.response(2),
            Err(PendingError::OutOfOrder { got: 2, owed: 1 })
        );
        assert_eq!(p.response(1), Ok(ResponseAction::Pass));
        assert_eq!(p.response(2), Ok(ResponseAction::Pass));
    }

    #[test]
    fn metadata_responses_are_known_by_their_place_not_their_id() {
        let mut p = Pending::default();
        p.expect(5).unwrap();
        p.expect_metadata(5, 12).unwrap();
        assert_eq!(
            p.metadata_due(5),
            None,
            "the first 5 answers the other request"
        );
        assert_eq!(p.response(5), Ok(ResponseAction::Pass));
        assert_eq!(p.metadata_due(4), None);
        assert_eq!(p.metadata_due(5), Some(12));
        assert_eq!(p.response(5), Ok(ResponseAction::Pass));
        assert_eq!(p.metadata_due(5), None);
        assert!(p.is_empty());
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut p = Pending::default();
        for id in 0..MAX_SLOTS as i32 {
            p.expect(id).unwrap();
        }
        assert_eq!(p.expect(-1), Err(PendingError::Full));
        let mut p = Pending::default();
        p.expect(0).unwrap();
        assert_eq!(
            p.deny(&vec![0; MAX_QUEUED_BYTES + 1]),
            Err(PendingError::Full)
        );
    }
}
