//! Replies in request order: what the server still owes a connection, and the denials the
//! parser answers in place of the server, each where the server's reply would have been.
//!
//! Request/response protocols that pipeline (memcached, R2-D2, Kafka) answer requests in the
//! order they came. When a parser denies a request, its reply must neither overtake the
//! replies the server owes for earlier requests nor wait behind later ones. A [`ReplyOrder`]
//! is the queue that keeps that order: the parser records each allowed request's expected
//! reply ([`ReplyOrder::expect`]) and each denial ([`ReplyOrder::deny`]), and on the reply flow
//! looks at whose turn it is ([`ReplyOrder::front`]). Consecutive entries of one kind merge
//! into runs ([`Run`]), so a long pipeline of alike requests takes one slot. The queue is
//! bounded in slots; past the bound it refuses ([`Full`]) and the parser closes the connection.
//!
//! What an owed reply or a denial is, and when one is complete, is the protocol's: this module
//! only keeps the order and the bound. It knows no bytes and does no I/O.

use std::collections::VecDeque;

use crate::TrimCapacity;

/// An entry of a [`ReplyOrder`] that may stand for several alike ones.
pub trait Run {
    /// Takes `next` into this run when both are alike (for example, one more reply of the same
    /// shape); false when `next` must be an entry of its own.
    fn absorb(&mut self, next: &Self) -> bool;
}

/// A count of alike entries: any two runs absorb each other, up to `u32::MAX`.
impl Run for u32 {
    fn absorb(&mut self, next: &Self) -> bool {
        match self.checked_add(*next) {
            Some(sum) => {
                *self = sum;
                true
            }
            None => false,
        }
    }
}

/// The queue holds as many entries as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many requests awaiting replies")]
pub struct Full;

/// Where a denial goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// Nothing is owed before it: the parser injects it toward the client now; the queue
    /// did not record it.
    Now,
    /// It waits behind the replies owed before it; the queue recorded it.
    Queued,
}

/// Whose turn it is on the reply flow, with the entry at the front (a reference to it, to read
/// or to update).
#[derive(Debug, PartialEq, Eq)]
pub enum Turn<O, D> {
    /// The server's: the oldest reply owed.
    Owed(O),
    /// The parser's: denials due now, nothing being owed before them.
    Denied(D),
    /// Nothing is owed and no denial waits.
    Idle,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry<O, D> {
    Owed(O),
    Denied(D),
}

/// The replies owed by the server (`O`) and the denials to inject (`D`) on one connection, in
/// reply order, in at most `max_entries` entries.
#[derive(Debug, Clone)]
pub struct ReplyOrder<O, D> {
    entries: VecDeque<Entry<O, D>>,
    max_entries: usize,
}

impl<O: Run, D: Run> ReplyOrder<O, D> {
    /// An empty queue of at most `max_entries` entries (runs count as one).
    pub fn new(max_entries: usize) -> Self {
        ReplyOrder {
            entries: VecDeque::new(),
            max_entries,
        }
    }

    /// An allowed request whose reply (`owed`) the server will send.
    pub fn expect(&mut self, owed: O) -> Result<(), Full> {
        if let Some(Entry::Owed(last)) = self.entries.back_mut() {
            if last.absorb(&owed) {
                return Ok(());
            }
        }
        self.push(Entry::Owed(owed))
    }

    /// A denied request: [`Placed::Now`] when nothing waits before its reply (the parser
    /// injects it at once), otherwise it is queued behind what waits.
    pub fn deny(&mut self, denial: D) -> Result<Placed, Full> {
        if self.entries.is_empty() {
            return Ok(Placed::Now);
        }
        if let Some(Entry::Denied(last)) = self.entries.back_mut() {
            if last.absorb(&denial) {
                return Ok(Placed::Queued);
            }
        }
        self.push(Entry::Denied(denial))?;
        Ok(Placed::Queued)
    }

    /// Whose turn it is: the entry at the front, to update in place (a run partly done).
    pub fn front(&mut self) -> Turn<&mut O, &mut D> {
        match self.entries.front_mut() {
            Some(Entry::Owed(owed)) => Turn::Owed(owed),
            Some(Entry::Denied(denial)) => Turn::Denied(denial),
            None => Turn::Idle,
        }
    }

    /// Whose turn it is, to read only.
    pub fn peek(&self) -> Turn<&O, &D> {
        match self.entries.front() {
            Some(Entry::Owed(owed)) => Turn::Owed(owed),
            Some(Entry::Denied(denial)) => Turn::Denied(denial),
            None => Turn::Idle,
        }
    }

    /// The entry at the front is done: the next one's turn comes.
    pub fn pop_front(&mut self) {
        self.entries.pop_front();
    }

    /// The replies owed, oldest first (denials skipped).
    pub fn owed(&self) -> impl Iterator<Item = &O> {
        self.entries.iter().filter_map(|entry| match entry {
            Entry::Owed(owed) => Some(owed),
            Entry::Denied(_) => None,
        })
    }

    /// The last entry when it is an owed reply.
    pub fn last_owed(&self) -> Option<&O> {
        match self.entries.back() {
            Some(Entry::Owed(owed)) => Some(owed),
            _ => None,
        }
    }

    /// Whether nothing is owed and no denial waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries (runs count as one).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Gives back what a long pipeline made the queue take, once it is short again.
    pub fn trim_capacity(&mut self) {
        self.entries.trim_capacity();
    }

    fn push(&mut self, entry: Entry<O, D>) -> Result<(), Full> {
        if self.entries.len() >= self.max_entries {
            return Err(Full);
        }
        self.entries.push_back(entry);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A run of replies owed for requests of one kind (`kind`), `count` of them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Owed {
        kind: u8,
        count: u32,
    }

    impl Run for Owed {
        fn absorb(&mut self, next: &Self) -> bool {
            self.kind == next.kind && self.count.absorb(&next.count)
        }
    }

    #[test]
    fn a_denial_with_nothing_owed_goes_now_and_is_not_recorded() {
        let mut order: ReplyOrder<u32, u32> = ReplyOrder::new(4);
        assert_eq!(order.deny(1), Ok(Placed::Now));
        assert!(order.is_empty());
        assert_eq!(order.front(), Turn::Idle);
    }

    #[test]
    fn denials_wait_behind_owed_replies_and_alike_entries_merge() {
        let mut order: ReplyOrder<Owed, u32> = ReplyOrder::new(8);
        order.expect(Owed { kind: 1, count: 1 }).unwrap();
        order.expect(Owed { kind: 1, count: 1 }).unwrap();
        order.expect(Owed { kind: 2, count: 1 }).unwrap();
        assert_eq!(order.deny(1), Ok(Placed::Queued));
        assert_eq!(order.deny(1), Ok(Placed::Queued));
        order.expect(Owed { kind: 2, count: 1 }).unwrap();
        assert_eq!(order.len(), 4);
        assert_eq!(order.front(), Turn::Owed(&mut Owed { kind: 1, count: 2 }));
        order.pop_front();
        assert_eq!(order.front(), Turn::Owed(&mut Owed { kind: 2, count: 1 }));
        order.pop_front();
        assert_eq!(order.peek(), Turn::Denied(&2));
        assert_eq!(order.owed().count(), 1);
        assert_eq!(order.last_owed(), Some(&Owed { kind: 2, count: 1 }));
    }

    #[test]
    fn the_bound_counts_entries_and_runs_still_grow_at_it() {
        let mut order: ReplyOrder<Owed, u32> = ReplyOrder::new(2);
        order.expect(Owed { kind: 1, count: 1 }).unwrap();
        order.deny(1).unwrap();
        assert_eq!(order.expect(Owed { kind: 1, count: 1 }), Err(Full));
        assert_eq!(order.deny(1), Ok(Placed::Queued));
        assert_eq!(order.len(), 2);
    }

    #[test]
    fn a_count_that_would_overflow_starts_a_run_of_its_own() {
        let mut order: ReplyOrder<u32, u32> = ReplyOrder::new(4);
        order.expect(u32::MAX).unwrap();
        order.expect(1).unwrap();
        assert_eq!(order.len(), 2);
    }

    proptest! {
        /// Whatever requests are allowed and denied and however replies interleave, every reply
        /// comes out in request order: the queue's turns replay the requests' sequence.
        #[test]
        fn turns_replay_the_requests_in_order(
            requests in proptest::collection::vec((any::<bool>(), 0u8..3), 0..200),
        ) {
            let mut order: ReplyOrder<Owed, u32> = ReplyOrder::new(usize::MAX);
            let mut expected = Vec::new();
            for &(allowed, kind) in &requests {
                if allowed {
                    order.expect(Owed { kind, count: 1 }).unwrap();
                    expected.push(Some(kind));
                } else if order.deny(1).unwrap() == Placed::Queued {
                    expected.push(None);
                }
            }
            let mut replayed = Vec::new();
            loop {
                match order.front() {
                    Turn::Owed(owed) => {
                        replayed.push(Some(owed.kind));
                        owed.count -= 1;
                        if owed.count == 0 {
                            order.pop_front();
                        }
                    }
                    Turn::Denied(count) => {
                        replayed.push(None);
                        *count -= 1;
                        if *count == 0 {
                            order.pop_front();
                        }
                    }
                    Turn::Idle => break,
                }
            }
            prop_assert_eq!(replayed, expected);
        }
    }
}
