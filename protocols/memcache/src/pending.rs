//! The order of replies on one connection: what the server still owes, where denials go, and
//! when the proxy must ask the server for a barrier.
//!
//! Memcached answers requests in order, so a denial is placed exactly where the server's reply
//! would have been by counting replies. Requests whose reply may or may not come (`noreply`,
//! meta `q`, binary quiet opcodes) make counting impossible until the next barrier (`mn` / NOOP,
//! which is always answered): their replies pass unattributed. A denial queued behind such
//! requests is preceded by a barrier the proxy sends itself, whose reply it swallows. This
//! module is pure bookkeeping over the SDK's [`ReplyOrder`]: the parser frames bytes and calls
//! it.

use axoneme_sdk::{Full, ReplyOrder, Run, Turn};

/// The shape of the reply to one request: when it is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One element (a line, a `VA` value, or one binary packet).
    Single,
    /// `VALUE` elements, then a terminal line (`END` or an error).
    Retrieval,
    /// Lines, then a terminal line (`END`, `EN`, `OK`, `RESET`, `BUSY`, or an error).
    MultiLine,
    /// Binary stat packets, then the one without a key.
    Stat,
    /// Everything from now on (`watch`).
    Watch,
}

/// One element of a reply, as framing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    /// A value: a `VALUE`/`VA` line with its data block.
    Value,
    /// `MN`, or a binary NOOP response: the answer to a barrier.
    Noop,
    /// A line that ends a multi-line reply (`END`, `EN`, `OK`, `RESET`, `BUSY`, errors).
    Terminal,
    /// Any other line, or a binary packet.
    Line,
    /// The binary stat packet without a key, which ends a stat reply.
    StatEnd,
}

impl Shape {
    fn completed_by(self, element: Element) -> bool {
        match self {
            Shape::Single => true,
            Shape::Retrieval => element != Element::Value,
            Shape::MultiLine => matches!(element, Element::Terminal | Element::Noop),
            Shape::Stat => element == Element::StatEnd,
            Shape::Watch => false,
        }
    }
}

/// The reply to a denied request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// `CLIENT_ERROR access denied`.
    Text,
    /// A binary error response echoing the request's opcode and opaque.
    Binary { opcode: u8, opaque: u32 },
}

/// What the server owes, in reply order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// `count` replies of `shape` are owed; the first may be partly passed already.
    Owed { shape: Shape, count: u32 },
    /// Replies that cannot be attributed until the barrier that follows.
    Unattributed,
    /// One barrier reply; the proxy swallows it when it sent the barrier itself.
    Barrier { ours: bool },
}

impl Run for Expected {
    /// Replies of one shape merge (but for `watch`, which never ends); nothing else does.
    fn absorb(&mut self, next: &Self) -> bool {
        match (self, next) {
            (
                Expected::Owed { shape, count },
                Expected::Owed {
                    shape: next_shape,
                    count: more,
                },
            ) if shape == next_shape && *shape != Shape::Watch => count.absorb(more),
            _ => false,
        }
    }
}

/// Denials to inject, `count` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Denied {
    denial: Denial,
    count: u32,
}

impl Run for Denied {
    /// Text denials are all alike; binary ones each echo their own request.
    fn absorb(&mut self, next: &Self) -> bool {
        self.denial == Denial::Text && next.denial == Denial::Text && self.count.absorb(&next.count)
    }
}

/// What to do with a denied request's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyAction {
    /// Nothing is owed before it: inject it toward the client now.
    InjectNow,
    /// It waits its turn.
    Queued,
    /// It waits behind replies that cannot be counted: send a barrier to the server first.
    SendBarrier,
}

/// What to do with a reply element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementAction {
    /// Forward it to the client.
    Pass,
    /// Swallow it: it answers the proxy's own barrier.
    Drop,
}

/// Most slots kept per connection; more means a client pipelining without reading.
pub const MAX_SLOTS: usize = 4096;

/// Most denials waiting for their turn per connection: all of them can then be injected as one
/// run within the datapath's operation bounds.
pub const MAX_QUEUED_DENIALS: u32 = 65_536;

/// The queue of what the server owes and what the proxy will inject, in reply order.
#[derive(Debug)]
pub struct Pending {
    order: ReplyOrder<Expected, Denied>,
    /// True when the last entry is `Unattributed` (no barrier after it yet).
    open_unattributed: bool,
    /// Denials waiting in the queue.
    queued_denials: u32,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            order: ReplyOrder::new(MAX_SLOTS),
            open_unattributed: false,
            queued_denials: 0,
        }
    }
}

impl Pending {
    /// Gives back what a long pipeline made the queue take, once it is short again.
    pub fn trim_capacity(&mut self) {
        self.order.trim_capacity();
    }

    /// An allowed request whose reply has `shape`.
    pub fn expect(&mut self, shape: Shape) -> Result<(), Full> {
        if self.open_unattributed {
            return Ok(());
        }
        self.order.expect(Expected::Owed { shape, count: 1 })
    }

    /// An allowed request that may or may not be answered.
    pub fn expect_maybe(&mut self) -> Result<(), Full> {
        if self.open_unattributed {
            return Ok(());
        }
        self.order.expect(Expected::Unattributed)?;
        self.open_unattributed = true;
        Ok(())
    }

    /// A barrier request (`mn` or NOOP) on its way to the server; `ours` when the proxy sent it.
    pub fn barrier(&mut self, ours: bool) -> Result<(), Full> {
        self.order.expect(Expected::Barrier { ours })?;
        self.open_unattributed = false;
        Ok(())
    }

    /// A denied request whose denial is to be answered.
    pub fn deny(&mut self, denial: Denial) -> Result<DenyAction, Full> {
        if self.order.is_empty() {
            return Ok(DenyAction::InjectNow);
        }
        if self.queued_denials >= MAX_QUEUED_DENIALS {
            return Err(Full);
        }
        let action = if self.open_unattributed {
            self.barrier(true)?;
            DenyAction::SendBarrier
        } else {
            DenyAction::Queued
        };
        self.order.deny(Denied { denial, count: 1 })?;
        self.queued_denials += 1;
        Ok(action)
    }

    /// The denials due now (at the front), if any.
    pub fn due_denials(&self) -> Option<(Denial, u32)> {
        match self.order.peek() {
            Turn::Denied(&Denied { denial, count }) => Some((denial, count)),
            _ => None,
        }
    }

    /// `n` of the due denials were injected.
    pub fn denials_sent(&mut self, n: u32) {
        if let Turn::Denied(Denied { count, .. }) = self.order.front() {
            let n = n.min(*count);
            *count -= n;
            let done = *count == 0;
            self.queued_denials -= n;
            if done {
                self.order.pop_front();
            }
        }
    }

    /// Whether everything the server sends from now on is a `watch` stream.
    pub fn watching(&self) -> bool {
        matches!(
            self.order.peek(),
            Turn::Owed(Expected::Owed {
                shape: Shape::Watch,
                ..
            })
        )
    }

    /// A reply element arrived: account for it and say whether to pass it.
    pub fn on_element(&mut self, element: Element) -> ElementAction {
        match self.order.front() {
            Turn::Owed(Expected::Owed { shape, count }) => {
                if shape.completed_by(element) {
                    *count -= 1;
                    if *count == 0 {
                        self.order.pop_front();
                    }
                }
                ElementAction::Pass
            }
            Turn::Owed(Expected::Unattributed) if element == Element::Noop => {
                self.order.pop_front();
                if self.order.is_empty() {
                    self.open_unattributed = false;
                }
                self.on_barrier_reply()
            }
            Turn::Owed(Expected::Barrier { .. }) if element == Element::Noop => {
                self.on_barrier_reply()
            }
            _ => ElementAction::Pass,
        }
    }

    fn on_barrier_reply(&mut self) -> ElementAction {
        match self.order.peek() {
            Turn::Owed(&Expected::Barrier { ours }) => {
                self.order.pop_front();
                if ours {
                    ElementAction::Drop
                } else {
                    ElementAction::Pass
                }
            }
            _ => ElementAction::Pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_replies_place_denials_in_order() {
        let mut p = Pending::default();
        assert_eq!(p.deny(Denial::Text), Ok(DenyAction::InjectNow));
        p.expect(Shape::Retrieval).unwrap();
        assert_eq!(p.deny(Denial::Text), Ok(DenyAction::Queued));
        p.expect(Shape::Single).unwrap();
        assert_eq!(p.on_element(Element::Value), ElementAction::Pass);
        assert_eq!(p.due_denials(), None);
        assert_eq!(p.on_element(Element::Terminal), ElementAction::Pass);
        assert_eq!(p.due_denials(), Some((Denial::Text, 1)));
        p.denials_sent(1);
        assert_eq!(p.due_denials(), None);
        assert_eq!(p.on_element(Element::Line), ElementAction::Pass);
        assert_eq!(p.deny(Denial::Text), Ok(DenyAction::InjectNow));
    }

    #[test]
    fn a_denial_behind_uncountable_replies_waits_for_a_barrier_of_its_own() {
        let mut p = Pending::default();
        p.expect_maybe().unwrap();
        p.expect(Shape::Single).unwrap();
        assert_eq!(p.deny(Denial::Text), Ok(DenyAction::SendBarrier));
        // Replies to the quiet and the counted request pass, unattributed.
        assert_eq!(p.on_element(Element::Value), ElementAction::Pass);
        assert_eq!(p.on_element(Element::Line), ElementAction::Pass);
        assert_eq!(p.due_denials(), None);
        assert_eq!(
            p.on_element(Element::Noop),
            ElementAction::Drop,
            "our barrier's reply is swallowed"
        );
        assert_eq!(p.due_denials(), Some((Denial::Text, 1)));
    }

    #[test]
    fn the_clients_own_barrier_passes_and_resynchronises() {
        let mut p = Pending::default();
        p.expect_maybe().unwrap();
        p.barrier(false).unwrap();
        assert_eq!(p.deny(Denial::Text), Ok(DenyAction::Queued));
        assert_eq!(p.on_element(Element::Noop), ElementAction::Pass);
        assert_eq!(p.due_denials(), Some((Denial::Text, 1)));
    }

    #[test]
    fn binary_denials_keep_their_own_opaque() {
        let mut p = Pending::default();
        p.expect(Shape::Single).unwrap();
        p.deny(Denial::Binary {
            opcode: 0,
            opaque: 1,
        })
        .unwrap();
        p.deny(Denial::Binary {
            opcode: 0,
            opaque: 2,
        })
        .unwrap();
        p.on_element(Element::Line);
        assert_eq!(
            p.due_denials(),
            Some((
                Denial::Binary {
                    opcode: 0,
                    opaque: 1
                },
                1
            ))
        );
        p.denials_sent(1);
        assert_eq!(
            p.due_denials(),
            Some((
                Denial::Binary {
                    opcode: 0,
                    opaque: 2
                },
                1
            ))
        );
    }

    #[test]
    fn stat_replies_end_with_the_keyless_packet() {
        let mut p = Pending::default();
        p.expect(Shape::Stat).unwrap();
        p.deny(Denial::Text).unwrap();
        p.on_element(Element::Line);
        assert_eq!(p.due_denials(), None);
        p.on_element(Element::StatEnd);
        assert!(p.due_denials().is_some());
    }

    #[test]
    fn memory_is_bounded() {
        let mut p = Pending::default();
        for _ in 0..MAX_SLOTS / 2 {
            p.expect(Shape::Single).unwrap();
            p.deny(Denial::Binary {
                opcode: 1,
                opaque: 1,
            })
            .unwrap();
        }
        assert_eq!(p.expect(Shape::Retrieval), Err(Full));
        let mut quiet = Pending::default();
        for _ in 0..100_000 {
            quiet.expect_maybe().unwrap();
            quiet.expect(Shape::Single).unwrap();
        }
        assert_eq!(
            quiet.order.len(),
            1,
            "everything after an unattributed slot folds into it"
        );
    }
}
