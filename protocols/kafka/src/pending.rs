//! The order of responses on one connection: the correlation ids the broker still owes, and
//! the denials the proxy answers in their place.
//!
//! A Kafka broker answers a connection's requests in order, each response carrying its
//! request's correlation id. A denial is placed where the broker's response would have been:
//! at once when nothing is owed, otherwise behind the responses owed before it. Requests that
//! expect no response (Produce with `acks` 0) are not recorded, and a response to one (some
//! brokers answer them anyway) is recognised by its correlation id being owed by no one. This
//! module is bookkeeping only, over the SDK's [`ReplyOrder`]: the parser frames bytes and calls
//! it. It also says which
//! response answers an allowed Metadata request, by its place in the order, so that only the
//! broker's Metadata responses teach topic ids ([`crate::topic_ids`]); not the answer to a
//! Metadata request sent with the correlation id of an earlier request expecting no response
//! that the broker may still answer (that answer would come first, with the same id); and, the
//! same way, which response answers a Fetch whose session ([`crate::fetch_sessions`]) awaits
//! it. It also marks the answers to Metadata requests narrowed to their allowed topics, which
//! the parser rewrites to carry the topics left out.

use std::collections::VecDeque;

use axoneme_sdk::{Full, ReplyOrder, Run, Turn};

use crate::topic_ids::FIRST_VERSION_WITH_IDS;

/// Most entries kept per connection (a run of denials counts as one); more means a client
/// pipelining without reading.
pub const MAX_SLOTS: usize = 4096;

/// Most bytes of denials waiting for their turn per connection.
pub const MAX_QUEUED_BYTES: usize = 1024 * 1024;

/// A response the broker owes: its correlation id, the version of the Metadata request it
/// answers, when it does and may teach, how many requests expecting no response came before
/// it, and whether none of those the broker might still answer carried its correlation id
/// (so that a response with it can only be its own). Each is an entry of its own
/// (correlation ids differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owed {
    correlation_id: i32,
    metadata: Option<i16>,
    /// The fetch session ticket and the version of the Fetch request it answers.
    fetch: Option<(u64, i16)>,
    /// The version of the narrowed Metadata request it answers, whose response is to be
    /// rewritten to carry the topics left out (whatever the ambiguity: the response that
    /// takes this entry's place is rewritten, or the connection closes).
    rewrite: Option<i16>,
    unanswered_before: u64,
    unambiguous: bool,
}

impl Run for Owed {
    fn absorb(&mut self, _: &Self) -> bool {
        false
    }
}

/// Denials of this many bytes (at the front of the queued bytes) are due here; consecutive
/// denials are one run of their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Denied(usize);

impl Run for Denied {
    fn absorb(&mut self, next: &Self) -> bool {
        self.0 += next.0;
        true
    }
}

/// What to do with a denial.
/// What a response is to be read for ([`Pending::due`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Due {
    /// As [`Pending::metadata_due`].
    pub metadata: Option<i16>,
    /// As [`Pending::rewrite_due`].
    pub rewrite: Option<i16>,
    /// As [`Pending::fetch_due`].
    pub fetch: Option<(u64, i16)>,
}

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
#[derive(Debug)]
pub struct Pending {
    order: ReplyOrder<Owed, Denied>,
    /// The bytes of the queued denials, in order.
    queued: VecDeque<u8>,
    /// The requests expecting no response passed so far.
    unanswered: u64,
    /// The range of the correlation ids of those the broker may still answer (all are settled
    /// once the broker answers, unambiguously, a request sent after all of them): a request
    /// with an id in it may share it with one of them. Clients count ids up, so their next
    /// requests fall outside it. `None` when there are none.
    unsettled: Option<(i32, i32)>,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            order: ReplyOrder::new(MAX_SLOTS),
            queued: VecDeque::new(),
            unanswered: 0,
            unsettled: None,
        }
    }
}

impl Pending {
    /// An allowed request that expects the response with `correlation_id`.
    pub fn expect(&mut self, correlation_id: i32) -> Result<(), PendingError> {
        self.owe(correlation_id, None, None, None)
    }

    /// An allowed Fetch request of `version` that expects the response with `correlation_id`,
    /// which the fetch session awaiting `ticket` must read.
    pub fn expect_fetch(
        &mut self,
        correlation_id: i32,
        version: i16,
        ticket: u64,
    ) -> Result<(), PendingError> {
        self.owe(correlation_id, None, Some((ticket, version)), None)
    }

    /// An allowed Metadata request of `version` that expects the response with
    /// `correlation_id`.
    pub fn expect_metadata(
        &mut self,
        correlation_id: i32,
        version: i16,
    ) -> Result<(), PendingError> {
        self.owe(correlation_id, Some(version), None, None)
    }

    /// A Metadata request of `version`, narrowed to some of its topics, that expects the
    /// response with `correlation_id`: the response is to be rewritten (and, from v10, read
    /// for topic ids like any other Metadata response).
    pub fn expect_rewritten_metadata(
        &mut self,
        correlation_id: i32,
        version: i16,
    ) -> Result<(), PendingError> {
        let learns = Some(version).filter(|&version| version >= FIRST_VERSION_WITH_IDS);
        self.owe(correlation_id, learns, None, Some(version))
    }

    /// An allowed request that expects no response with `correlation_id` (Produce with
    /// `acks` 0), which some brokers answer anyway.
    pub fn expect_none(&mut self, correlation_id: i32) {
        self.unanswered += 1;
        self.unsettled = Some(match self.unsettled {
            Some((low, high)) => (low.min(correlation_id), high.max(correlation_id)),
            None => (correlation_id, correlation_id),
        });
    }

    /// What a response with `correlation_id` is to be read for, all at once: nothing unless
    /// it answers the oldest request owed.
    #[inline]
    pub fn due(&self, correlation_id: i32) -> Due {
        match self.order.peek() {
            Turn::Owed(owed) if owed.correlation_id == correlation_id => Due {
                metadata: owed.metadata,
                rewrite: owed.rewrite,
                fetch: owed.fetch,
            },
            _ => Due::default(),
        }
    }

    /// The version of the Metadata request that a response with `correlation_id` answers,
    /// when it answers the oldest request owed and that request is a Metadata request sent
    /// with a correlation id no request the broker may still answer unasked carried.
    pub fn metadata_due(&self, correlation_id: i32) -> Option<i16> {
        self.due(correlation_id).metadata
    }

    /// The version of the narrowed Metadata request that a response with `correlation_id`
    /// answers, when it answers the oldest request owed and that request is one.
    pub fn rewrite_due(&self, correlation_id: i32) -> Option<i16> {
        self.due(correlation_id).rewrite
    }

    /// The fetch session ticket and Fetch version that a response with `correlation_id`
    /// answers, under the same conditions as [`Pending::metadata_due`].
    pub fn fetch_due(&self, correlation_id: i32) -> Option<(u64, i16)> {
        self.due(correlation_id).fetch
    }

    /// A denied request answered with `denial`: injected now when nothing is owed, else
    /// queued (and kept here) until its turn.
    pub fn deny(&mut self, denial: &[u8]) -> Result<DenyAction, PendingError> {
        if self.order.is_empty() {
            return Ok(DenyAction::InjectNow);
        }
        if self.queued.len() + denial.len() > MAX_QUEUED_BYTES {
            return Err(PendingError::Full);
        }
        self.order.deny(Denied(denial.len()))?;
        self.queued.extend(denial);
        Ok(DenyAction::Queued)
    }

    /// A response with `correlation_id` at a frame boundary of the reply flow.
    pub fn response(&mut self, correlation_id: i32) -> Result<ResponseAction, PendingError> {
        match self.order.peek() {
            Turn::Owed(first) if first.correlation_id == correlation_id => {
                if first.unambiguous && first.unanswered_before == self.unanswered {
                    // Its own answer, to a request sent after every request expecting none:
                    // the broker answered those before it, or never will.
                    self.unsettled = None;
                }
                self.order.pop_front();
                Ok(ResponseAction::Pass)
            }
            _ if !self
                .order
                .owed()
                .any(|owed| owed.correlation_id == correlation_id) =>
            {
                Ok(ResponseAction::Discard)
            }
            _ => Err(PendingError::OutOfOrder {
                got: correlation_id,
                owed: self
                    .order
                    .owed()
                    .next()
                    .map_or(correlation_id, |owed| owed.correlation_id),
            }),
        }
    }

    /// Whether a denial is due now (what [`Pending::due_denial`] would give).
    pub fn has_due_denial(&self) -> bool {
        matches!(self.order.peek(), Turn::Denied(_))
    }

    /// The rest of the denials due now (nothing owed before them), if any.
    pub fn due_denial(&mut self) -> Option<&[u8]> {
        match self.order.peek() {
            Turn::Denied(&Denied(len)) => Some(&self.queued.make_contiguous()[..len]),
            _ => None,
        }
    }

    /// `n` bytes of the due denials were injected.
    pub fn denial_sent(&mut self, n: usize) {
        if let Turn::Denied(Denied(len)) = self.order.front() {
            let n = n.min(*len);
            *len -= n;
            let done = *len == 0;
            self.queued.drain(..n);
            if done {
                self.order.pop_front();
            }
        }
    }

    /// Whether nothing is owed and no denial waits.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn owe(
        &mut self,
        correlation_id: i32,
        metadata: Option<i16>,
        fetch: Option<(u64, i16)>,
        rewrite: Option<i16>,
    ) -> Result<(), PendingError> {
        let unambiguous = self
            .unsettled
            .is_none_or(|(low, high)| !(low..=high).contains(&correlation_id));
        self.order.expect(Owed {
            correlation_id,
            metadata: metadata.filter(|_| unambiguous),
            fetch: fetch.filter(|_| unambiguous),
            rewrite,
            unanswered_before: self.unanswered,
            unambiguous,
        })?;
        Ok(())
    }
}

impl From<Full> for PendingError {
    fn from(_: Full) -> Self {
        PendingError::Full
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
    fn an_answer_to_a_request_expecting_none_may_carry_a_metadata_requests_id() {
        let mut p = Pending::default();
        p.expect_none(5);
        p.expect_none(5);
        p.expect_metadata(5, 12).unwrap();
        p.expect_metadata(5, 12).unwrap();
        assert_eq!(p.metadata_due(5), None, "maybe an acks=0 answer");
        assert_eq!(p.response(5), Ok(ResponseAction::Pass));
        p.expect_metadata(5, 12).unwrap();
        assert_eq!(p.metadata_due(5), None, "still maybe an acks=0 answer");
        assert_eq!(p.response(5), Ok(ResponseAction::Pass));
        assert_eq!(p.response(5), Ok(ResponseAction::Pass));
        p.expect_metadata(6, 12).unwrap();
        assert_eq!(p.metadata_due(6), Some(12), "no acks=0 request carried 6");
        assert_eq!(p.response(6), Ok(ResponseAction::Pass));
        p.expect_metadata(5, 12).unwrap();
        assert_eq!(p.metadata_due(5), Some(12), "settled by the answer to 6");
        assert_eq!(p.response(5), Ok(ResponseAction::Pass));
        p.expect_none(10);
        p.expect_none(20);
        p.expect_metadata(15, 12).unwrap();
        assert_eq!(
            p.metadata_due(15),
            None,
            "within the range of the unsettled ids"
        );
        p.expect_metadata(21, 12).unwrap();
        assert_eq!(p.response(15), Ok(ResponseAction::Pass));
        assert_eq!(p.metadata_due(21), Some(12), "clients count ids up");
    }

    #[test]
    fn the_answer_to_a_narrowed_metadata_request_is_known_by_its_place() {
        let mut p = Pending::default();
        p.expect(5).unwrap();
        p.expect_rewritten_metadata(5, 12).unwrap();
        p.expect_rewritten_metadata(6, 3).unwrap();
        assert_eq!(
            p.rewrite_due(5),
            None,
            "the first 5 answers the other request"
        );
        assert_eq!(p.response(5), Ok(ResponseAction::Pass));
        assert_eq!(p.rewrite_due(5), Some(12));
        assert_eq!(p.metadata_due(5), Some(12), "and teaches ids");
        assert_eq!(p.response(5), Ok(ResponseAction::Pass));
        assert_eq!(p.rewrite_due(6), Some(3));
        assert_eq!(p.metadata_due(6), None, "v3 carries no ids");
        assert_eq!(p.response(6), Ok(ResponseAction::Pass));
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
