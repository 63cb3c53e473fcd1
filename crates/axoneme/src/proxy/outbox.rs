//! What waits to be written to the two sockets of a parsed connection.
//!
//! Most bytes the engine passes on are a run of the read buffer they arrived in (the engine says
//! so, and where: [`Output::pass_input`]), and are written out before anything else is read into
//! that buffer. Such a run is kept as a range of that buffer instead of being copied; only a run its socket could not take before the buffer is
//! read into again is copied, as is everything else (the proxy's own replies, bytes the engine
//! kept between reads). A read buffer must stay where it is while a run of it waits; once none
//! does, the connection may give it back, and the copies' buffer gives back what a burst made it
//! take once it has been written. This module moves no bytes over sockets and knows no protocol.

use std::ops::Range;

use axoneme_datapath::Output;
use axoneme_sdk::{Flow, TrimCapacity};

/// Output toward one socket: first a run of the source read buffer, then copied bytes.
#[derive(Debug, Default)]
pub(crate) struct OutBuf {
    /// A run of the read buffer of the other socket, not yet written.
    borrowed: Option<Range<usize>>,
    copied: Vec<u8>,
    /// Bytes of `copied` already written.
    written: usize,
}

impl OutBuf {
    /// Bytes waiting.
    pub(crate) fn len(&self) -> usize {
        self.borrowed.as_ref().map_or(0, Range::len) + self.copied.len() - self.written
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a run of the source buffer waits: the buffer must not be read into or given
    /// back before [`OutBuf::release`].
    pub(crate) fn borrows(&self) -> bool {
        self.borrowed.is_some()
    }

    /// The next bytes to write: the borrowed run of `source` (the buffer runs are borrowed
    /// from) first, then what was copied.
    pub(crate) fn pending<'a>(&'a self, source: &'a [u8]) -> &'a [u8] {
        match &self.borrowed {
            Some(run) => &source[run.clone()],
            None => &self.copied[self.written..],
        }
    }

    /// Drops `n` bytes written from the front of [`OutBuf::pending`].
    pub(crate) fn advance(&mut self, n: usize) {
        if let Some(run) = &mut self.borrowed {
            run.start += n;
            if run.start == run.end {
                self.borrowed = None;
            }
            return;
        }
        self.written += n;
        if self.written == self.copied.len() {
            self.copied.clear();
            self.copied.trim_capacity();
            self.written = 0;
        }
    }

    /// Copies the borrowed run out of `source`, which is about to be read into again.
    pub(crate) fn release(&mut self, source: &[u8]) {
        if let Some(run) = self.borrowed.take() {
            self.copied
                .splice(..self.written, source[run].iter().copied());
            self.written = 0;
        }
    }

    /// Appends `bytes`, found at offset `at` of the source buffer when `at` is given.
    fn push(&mut self, bytes: &[u8], at: Option<usize>) {
        let nothing_copied = self.written == self.copied.len();
        match (&mut self.borrowed, at) {
            (None, Some(at)) if nothing_copied => {
                self.borrowed = Some(at..at + bytes.len());
            }
            (Some(run), Some(at)) if nothing_copied && run.end == at => run.end += bytes.len(),
            _ => self.copied.extend_from_slice(bytes),
        }
    }
}

/// The engine's output toward both sockets.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Toward the upstream; runs are borrowed from the client's read buffer.
    pub(crate) to_upstream: OutBuf,
    /// Toward the client; runs are borrowed from the upstream's read buffer.
    pub(crate) to_client: OutBuf,
}

impl Outbox {
    pub(crate) fn new() -> Outbox {
        Outbox {
            to_upstream: OutBuf::default(),
            to_client: OutBuf::default(),
        }
    }

    /// Bytes waiting for both sockets.
    pub(crate) fn len(&self) -> usize {
        self.to_upstream.len() + self.to_client.len()
    }

    /// Whether more input may be read: neither socket has too much waiting.
    pub(crate) fn has_room(&self, high_water: usize) -> bool {
        self.to_upstream.len() < high_water && self.to_client.len() < high_water
    }

    fn toward(&mut self, flow: Flow) -> &mut OutBuf {
        match flow {
            Flow::Request => &mut self.to_upstream,
            Flow::Reply => &mut self.to_client,
        }
    }
}

/// The engine is fed straight from the read buffers: a flow's input of one call is the start of
/// the read buffer of the socket it came from, which stays where it is until the run is written
/// or released.
impl Output for Outbox {
    fn emit(&mut self, flow: Flow, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.toward(flow).push(bytes, None);
        }
    }

    fn pass_input(&mut self, flow: Flow, at: usize, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.toward(flow).push(bytes, Some(at));
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Everything `out` holds, as the socket would receive it.
    fn drain(out: &mut OutBuf, source: &[u8]) -> Vec<u8> {
        let mut written = Vec::new();
        while !out.is_empty() {
            let pending = out.pending(source);
            let n = pending.len().min(3);
            written.extend_from_slice(&pending[..n]);
            out.advance(n);
        }
        written
    }

    #[test]
    fn runs_of_the_read_buffer_are_borrowed_and_other_bytes_copied() {
        let client = b"get a\r\nget b\r\n".to_vec();
        let mut outbox = Outbox::new();
        outbox.pass_input(Flow::Request, 0, &client[..7]);
        outbox.pass_input(Flow::Request, 7, &client[7..]);
        assert_eq!(outbox.to_upstream.borrowed, Some(0..14));
        assert!(outbox.to_upstream.copied.is_empty());
        outbox.emit(Flow::Request, b"mn\r\n");
        outbox.pass_input(Flow::Request, 0, &client[..3]);
        assert_eq!(outbox.to_upstream.copied, b"mn\r\nget");
        assert_eq!(
            drain(&mut outbox.to_upstream, &client),
            b"get a\r\nget b\r\nmn\r\nget"
        );
    }

    #[test]
    fn a_run_not_yet_written_is_copied_before_its_buffer_is_reused() {
        let mut client = b"set k 0 0 1\r\nx\r\n".to_vec();
        let mut outbox = Outbox::new();
        outbox.pass_input(Flow::Request, 0, &client[..]);
        outbox.to_upstream.advance(4);
        outbox.to_upstream.release(&client);
        client.fill(b'!');
        assert_eq!(drain(&mut outbox.to_upstream, &client), b"k 0 0 1\r\nx\r\n");
    }

    #[test]
    fn copies_of_a_burst_give_their_memory_back_once_written() {
        let mut out = OutBuf::default();
        out.push(&vec![b'x'; 1 << 20], None);
        out.advance(1 << 19);
        assert!(out.copied.capacity() >= 1 << 20, "half still waits");
        out.advance(1 << 19);
        assert!(out.is_empty());
        assert!(out.copied.capacity() <= axoneme_sdk::KEPT_CAPACITY);
    }

    proptest! {
        /// Whatever mix of borrowed runs, copies, partial writes and reuses of the buffer, the
        /// socket receives exactly the emitted bytes in order.
        #[test]
        fn the_socket_receives_what_was_emitted(
            steps in proptest::collection::vec((0usize..16, 0usize..16, any::<bool>(), 0usize..20), 1..30),
        ) {
            let mut client = vec![0u8; 16];
            let mut outbox = Outbox::new();
            let (mut expected, mut received) = (Vec::new(), Vec::new());
            let mut fill = 0u8;
            for (from, len, own, write) in steps {
                let end = (from + len).min(client.len());
                if own {
                    let bytes = vec![fill; end - from];
                    outbox.emit(Flow::Request, &bytes);
                    expected.extend_from_slice(&bytes);
                } else {
                    outbox.pass_input(Flow::Request, from, &client[from..end]);
                    expected.extend_from_slice(&client[from..end]);
                }
                let pending = outbox.to_upstream.pending(&client);
                let n = write.min(pending.len());
                received.extend_from_slice(&pending[..n]);
                outbox.to_upstream.advance(n);
                // A new read into the buffer.
                outbox.to_upstream.release(&client);
                fill = fill.wrapping_add(1);
                client.fill(fill);
            }
            received.extend(drain(&mut outbox.to_upstream, &client));
            prop_assert_eq!(received, expected);
        }
    }
}
