//! The memcached parser: detects the wire protocol, frames requests and replies, checks each
//! request against policy, and answers denied ones where the server's reply would have been.
//!
//! Requests are framed by their own structure (a line and the data block it announces, or a
//! binary header and its body) and passed or dropped whole, streaming large values without
//! buffering them. Reply order is kept by [`Pending`]. Connection control is not data access and
//! passes unchecked: `mn` and NOOP (barriers), and `quit`, QUIT and QUITQ, after which the server
//! closes the connection once it has answered what came before; the proxy then drops whatever the
//! client sends after the quit, as the server never reads it. The parser never allocates per request
//! once warm: lines that straddle input slices and joined keys for the log go through scratch
//! buffers that keep their capacity up to [`KEPT_CAPACITY`]; what a long line made
//! them take beyond that is given back once it has been read.

use axoneme_sdk::{
    Context, EntryType, ErrorCode, Field, Flow, Input, Op, ParseError, Parser, TrimCapacity,
    KEPT_CAPACITY,
};

use crate::base64;
use crate::binary::{self, Header, HEADER_LEN, NOOP, RESPONSE_MAGIC, STAT};
use crate::command::Command;
use crate::pending::{Denial, DenyAction, Element, ElementAction, Pending};
use crate::rules::RuleSet;
use crate::text::request::{is_retrieval, Answer, TextRequest, MAX_LINE, MAX_RETRIEVAL_LINE};
use crate::text::{self, response};

/// Which protocol a connection speaks, decided by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Text,
    Binary,
}

/// Parser state for one memcached connection.
#[derive(Debug)]
pub struct MemcacheParser {
    max_value: usize,
    wire: Option<Wire>,
    pending: Pending,
    /// A barrier must be sent to the server before the next request.
    barrier_due: bool,
    /// The client quit: the server closes the connection and reads nothing after the quit, so
    /// neither does the proxy.
    quit: bool,
    /// Per flow: bytes of the line at the start of the input already searched for its end in
    /// vain, so a long line arriving in small reads is searched once, not once per read.
    searched: [usize; 2],
    /// Scratch space for a line or key that straddles input slices.
    line: Vec<u8>,
    /// Scratch space for the keys of a multi-key request, joined for the access log.
    keys: Vec<u8>,
    /// Scratch space for a base64 key, decoded.
    decoded: Vec<u8>,
}

const TOO_MANY_PENDING: ParseError =
    ParseError::new(ErrorCode::StateLimit, "too many requests awaiting replies");
const LINE_TOO_LONG: ParseError = ParseError::new(
    ErrorCode::FrameTooLarge,
    "command line longer than memcached accepts",
);

impl MemcacheParser {
    /// A parser that refuses data blocks longer than `max_value` bytes.
    pub fn new(max_value: usize) -> Self {
        MemcacheParser {
            max_value,
            wire: None,
            pending: Pending::default(),
            barrier_due: false,
            quit: false,
            searched: [0; 2],
            line: Vec::new(),
            keys: Vec::new(),
            decoded: Vec::new(),
        }
    }
}

impl Parser for MemcacheParser {
    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        flow: Flow,
        _end_stream: bool,
        input: Input<'_>,
    ) -> Op {
        let op = match flow {
            Flow::Request => self.on_request(ctx, input),
            Flow::Reply => self.on_reply(ctx, input),
        };
        // What a call with no input after this answer would inject: a barrier after a denied
        // request, denials due after a reply.
        let due_at_end = match flow {
            Flow::Request => self.barrier_due,
            Flow::Reply => self.pending.due_denials().is_some(),
        };
        if matches!(op, Op::Pass(_) | Op::Drop(_)) && !due_at_end {
            ctx.nothing_to_inject_at_end();
        }
        let largest = self.line.capacity().max(self.keys.capacity());
        if largest.max(self.decoded.capacity()) > KEPT_CAPACITY {
            self.give_back_scratch();
        }
        self.pending.trim_capacity();
        op
    }
}

impl MemcacheParser {
    /// Gives back what a long line made the scratch buffers take.
    #[cold]
    fn give_back_scratch(&mut self) {
        for scratch in [&mut self.line, &mut self.keys, &mut self.decoded] {
            scratch.clear();
            scratch.trim_capacity();
        }
    }

    fn on_request(&mut self, ctx: &mut Context<'_>, input: Input<'_>) -> Op {
        if self.barrier_due {
            self.barrier_due = false;
            let barrier = binary::barrier();
            let bytes = match self.wire {
                Some(Wire::Binary) => &barrier[..],
                _ => text::BARRIER,
            };
            return inject_all(ctx, Flow::Request, bytes);
        }
        let Some(first) = input.byte(0) else {
            return Op::Nop;
        };
        if self.quit {
            return Op::Drop(input.len());
        }
        let wire = *self.wire.get_or_insert(if first == binary::REQUEST_MAGIC {
            Wire::Binary
        } else {
            Wire::Text
        });
        let result = match wire {
            Wire::Text => self.text_request(ctx, input),
            Wire::Binary => self.binary_request(ctx, input),
        };
        result.unwrap_or_else(Op::Error)
    }

    fn text_request(&mut self, ctx: &mut Context<'_>, input: Input<'_>) -> Result<Op, ParseError> {
        // Only retrievals may be longer than MAX_LINE; the verb is looked at only past it.
        let too_long = |len: usize| {
            let mut head = [0u8; 5];
            let head_len = input.len().min(head.len());
            input.copy_to(0, &mut head[..head_len]);
            let limit = match is_retrieval(&head[..head_len]) {
                true => MAX_RETRIEVAL_LINE,
                false => MAX_LINE,
            };
            len >= limit
        };
        let Some(newline) = input.find_byte(b'\n', self.searched[0]) else {
            self.searched[0] = input.len();
            return if input.len() >= MAX_LINE && too_long(input.len()) {
                Err(LINE_TOO_LONG)
            } else {
                Ok(Op::More(1))
            };
        };
        self.searched[0] = 0;
        if newline >= MAX_LINE && too_long(newline) {
            return Err(LINE_TOO_LONG);
        }
        let end = if newline > 0 && input.byte(newline - 1) == Some(b'\r') {
            newline - 1
        } else {
            newline
        };
        let line = input.contiguous(0..end, &mut self.line).unwrap_or_default();
        let request = TextRequest::parse(line, self.max_value)?;
        let frame = newline + 1 + request.data_len.map_or(0, |len| len + 2);
        // Connection control, not data access: never denied, never logged.
        match request.answer {
            Answer::Noop => {
                self.pending.barrier(false).map_err(|_| TOO_MANY_PENDING)?;
                return Ok(Op::Pass(frame));
            }
            Answer::Close => {
                self.quit = true;
                return Ok(Op::Pass(frame));
            }
            Answer::One(_) | Answer::Maybe => {}
        }
        let keys: &[u8] = match request.base64_key {
            true => {
                self.decoded.resize(request.keys.len(), 0);
                base64::decode(request.keys, &mut self.decoded).map_or(&[], |n| &self.decoded[..n])
            }
            false => request.keys,
        };
        let key_list = Keys {
            rest: keys,
            split: !request.base64_key,
        };
        // A request that creates a missing item (meta `N`) is also an `add`.
        let verdict = ctx.check::<RuleSet>(|rules| {
            rules.allows(request.command, key_list.clone())
                && (!request.creates || rules.allows(Command::Add, key_list.clone()))
        });
        let command: &[u8] = match request.command {
            Command::Other => request.verb,
            known => known.name().as_bytes(),
        };
        let logged_keys = join_keys(&mut self.keys, key_list);
        let fields = [
            Field::bytes("command", command),
            Field::bytes("keys", logged_keys),
        ];
        if verdict.allowed {
            ctx.log(EntryType::Request, verdict.policy_name, &fields);
            let expected = match request.answer {
                Answer::One(shape) => self.pending.expect(shape),
                Answer::Maybe => self.pending.expect_maybe(),
                Answer::Noop | Answer::Close => Ok(()),
            };
            expected.map_err(|_| TOO_MANY_PENDING)?;
            return Ok(Op::Pass(frame));
        }
        ctx.log(EntryType::Denied, verdict.policy_name, &fields);
        if request.answer_denial {
            self.deny(ctx, Denial::Text)?;
        }
        Ok(Op::Drop(frame))
    }

    fn binary_request(
        &mut self,
        ctx: &mut Context<'_>,
        input: Input<'_>,
    ) -> Result<Op, ParseError> {
        let Some(header) = input.peek::<HEADER_LEN>(0) else {
            return Ok(Op::More(HEADER_LEN - input.len()));
        };
        let header = Header::parse(&header);
        header.check_request(self.max_value)?;
        let key_end = header.key_end();
        if input.len() < key_end {
            return Ok(Op::More(key_end - input.len()));
        }
        let opcode = binary::opcode(header.opcode);
        let frame = header.packet_len();
        // Connection control, not data access: never denied, never logged. QUIT is answered
        // before the server closes; QUITQ is not.
        match opcode.command {
            Command::Noop => {
                self.pending.barrier(false).map_err(|_| TOO_MANY_PENDING)?;
                return Ok(Op::Pass(frame));
            }
            Command::Quit => {
                if !opcode.quiet {
                    self.pending
                        .expect(opcode.shape)
                        .map_err(|_| TOO_MANY_PENDING)?;
                }
                self.quit = true;
                return Ok(Op::Pass(frame));
            }
            _ => {}
        }
        let key_start = key_end - usize::from(header.key_len);
        let key = input
            .contiguous(key_start..key_end, &mut self.line)
            .unwrap_or_default();
        let key_list = Some(key).into_iter().filter(|k| !k.is_empty());
        let verdict = ctx.check::<RuleSet>(|rules| rules.allows(opcode.command, key_list.clone()));
        let mut number = [0u8; 3];
        let fields = [
            Field::text("command", opcode.command.name()),
            Field::bytes("keys", key),
            Field::bytes("opcode", decimal(header.opcode, &mut number)),
        ];
        if verdict.allowed {
            ctx.log(EntryType::Request, verdict.policy_name, &fields);
            let expected = match opcode.quiet {
                true => self.pending.expect_maybe(),
                false => self.pending.expect(opcode.shape),
            };
            expected.map_err(|_| TOO_MANY_PENDING)?;
            return Ok(Op::Pass(frame));
        }
        ctx.log(EntryType::Denied, verdict.policy_name, &fields);
        self.deny(
            ctx,
            Denial::Binary {
                opcode: header.opcode,
                opaque: header.opaque,
            },
        )?;
        Ok(Op::Drop(frame))
    }

    /// Places a denial's reply: toward the client now, in the queue, or behind a barrier.
    fn deny(&mut self, ctx: &mut Context<'_>, denial: Denial) -> Result<(), ParseError> {
        match self.pending.deny(denial).map_err(|_| TOO_MANY_PENDING)? {
            DenyAction::InjectNow => {
                let packet = binary_denial(denial);
                let bytes = match denial {
                    Denial::Text => text::DENIAL,
                    Denial::Binary { .. } => &packet[..],
                };
                if ctx.inject_room(Flow::Reply) < bytes.len() {
                    return Err(TOO_MANY_PENDING);
                }
                ctx.inject(Flow::Reply, bytes);
            }
            DenyAction::Queued => {}
            DenyAction::SendBarrier => self.barrier_due = true,
        }
        Ok(())
    }

    fn on_reply(&mut self, ctx: &mut Context<'_>, input: Input<'_>) -> Op {
        if let Some(op) = self.inject_denials(ctx) {
            return op;
        }
        if input.is_empty() {
            return Op::Nop;
        }
        if self.pending.watching() {
            self.searched[1] = 0;
            return Op::Pass(input.len());
        }
        let element = match self.wire {
            Some(Wire::Binary) => binary_reply(input),
            _ => response::next_element(input, &mut self.searched[1], &mut self.line),
        };
        match element {
            Ok(Some((element, len))) => match self.pending.on_element(element) {
                ElementAction::Pass => Op::Pass(len),
                ElementAction::Drop => Op::Drop(len),
            },
            Ok(None) => Op::More(1),
            Err(error) => Op::Error(error),
        }
    }

    /// Injects as many of the due denials as fit into the reply flow, here in the stream (one
    /// operation for all of them, so a long run of denials costs few operations).
    fn inject_denials(&mut self, ctx: &mut Context<'_>) -> Option<Op> {
        let mut injected = 0;
        while let Some((denial, count)) = self.pending.due_denials() {
            let packet = binary_denial(denial);
            let bytes = match denial {
                Denial::Text => text::DENIAL,
                Denial::Binary { .. } => &packet[..],
            };
            let fit = (ctx.inject_room(Flow::Reply) / bytes.len()).min(count as usize);
            if fit == 0 {
                break;
            }
            for _ in 0..fit {
                ctx.inject(Flow::Reply, bytes);
            }
            self.pending.denials_sent(fit as u32);
            injected += fit * bytes.len();
        }
        match injected {
            0 if self.pending.due_denials().is_some() => Some(Op::Error(TOO_MANY_PENDING)),
            0 => None,
            n => Some(Op::Inject(n)),
        }
    }
}

/// The binary denial packet for `denial` (unused for text denials).
fn binary_denial(denial: Denial) -> [u8; binary::DENIAL_LEN] {
    match denial {
        Denial::Binary { opcode, opaque } => binary::denial(opcode, opaque),
        Denial::Text => [0; binary::DENIAL_LEN],
    }
}

/// Injects `bytes` into `flow` here in the stream.
fn inject_all(ctx: &mut Context<'_>, flow: Flow, bytes: &[u8]) -> Op {
    if ctx.inject(flow, bytes) < bytes.len() {
        return Op::Error(TOO_MANY_PENDING);
    }
    Op::Inject(bytes.len())
}

/// Frames one binary response packet.
fn binary_reply(input: Input<'_>) -> Result<Option<(Element, usize)>, ParseError> {
    let Some(header) = input.peek::<HEADER_LEN>(0) else {
        return Ok(None);
    };
    let header = Header::parse(&header);
    if header.magic != RESPONSE_MAGIC {
        return Err(ParseError::new(
            ErrorCode::InvalidFrameType,
            "binary response with a bad magic byte",
        ));
    }
    let element = match header.opcode {
        NOOP => Element::Noop,
        STAT if header.key_len == 0 => Element::StatEnd,
        _ => Element::Line,
    };
    Ok(Some((element, header.packet_len())))
}

/// The keys of a request: space-separated, or one decoded key whatever bytes it holds.
#[derive(Debug, Clone)]
struct Keys<'k> {
    rest: &'k [u8],
    split: bool,
}

impl<'k> Iterator for Keys<'k> {
    type Item = &'k [u8];

    fn next(&mut self) -> Option<&'k [u8]> {
        while !self.rest.is_empty() {
            let rest = self.rest;
            let (key, after) = match self.split.then(|| memchr::memchr(b' ', rest)).flatten() {
                Some(space) => (&rest[..space], &rest[space + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            self.rest = after;
            if !key.is_empty() {
                return Some(key);
            }
        }
        None
    }
}

/// Keys as the access log shows them: one key as it is, several joined with ", " in `scratch`.
fn join_keys<'k>(scratch: &'k mut Vec<u8>, mut keys: impl Iterator<Item = &'k [u8]>) -> &'k [u8] {
    let Some(first) = keys.next() else {
        return b"";
    };
    let Some(second) = keys.next() else {
        return first;
    };
    scratch.clear();
    scratch.extend_from_slice(first);
    for key in std::iter::once(second).chain(keys) {
        scratch.extend_from_slice(b", ");
        scratch.extend_from_slice(key);
    }
    scratch
}

/// `n` in decimal, written into `buf`.
fn decimal(n: u8, buf: &mut [u8; 3]) -> &[u8] {
    let digits = [n / 100, n / 10 % 10, n % 10];
    let skip = if n >= 100 {
        0
    } else if n >= 10 {
        1
    } else {
        2
    };
    for (slot, digit) in buf.iter_mut().zip(digits) {
        *slot = b'0' + digit;
    }
    &buf[skip..]
}

#[cfg(test)]
mod tests;
