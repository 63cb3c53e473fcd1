//! The R2-D2 parser: frames requests and replies by line, checks each request against policy,
//! and answers a denied request with `ERROR\r\n` exactly where the server's reply would have been.
//!
//! Every request gets one reply line. The parser keeps the order of expected replies (the
//! server's, or its own denials) in a [`ReplyOrder`] of runs, so pipelined clients see replies
//! in request order. It holds no other state and never blocks or allocates per request once warm.

use axoneme_sdk::{
    Context, EntryType, ErrorCode, Field, Flow, Full, Input, Op, ParseError, Parser, Placed,
    ReplyOrder, Run, Turn,
};

use crate::request::Request;
use crate::rules::RuleSet;

/// The reply injected for a denied request.
pub const DENIAL: &[u8] = b"ERROR\r\n";

/// Longest line, `\r\n` included, in either direction.
pub const MAX_LINE: usize = 8 * 1024;

/// Most runs of pending replies before the connection is closed (bounds memory per connection
/// against a client that pipelines without ever reading).
pub const MAX_PENDING_RUNS: usize = 4096;

/// Most denials in one run: a run is injected within the datapath's operation bounds.
const MAX_DENIALS_PER_RUN: u32 = 65_536;

/// A run of consecutive denials, injected together once the server's replies before them have
/// passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Denials(u32);

impl Run for Denials {
    fn absorb(&mut self, next: &Self) -> bool {
        self.0 + next.0 <= MAX_DENIALS_PER_RUN && self.0.absorb(&next.0)
    }
}

/// Parser state for one R2-D2 connection.
#[derive(Debug)]
pub struct R2d2Parser {
    /// Replies the server owes (runs of counts) and denials, in reply order.
    pending: ReplyOrder<u32, Denials>,
    /// Scratch space for a line that straddles input slices.
    line: Vec<u8>,
}

impl Default for R2d2Parser {
    fn default() -> Self {
        R2d2Parser {
            pending: ReplyOrder::new(MAX_PENDING_RUNS),
            line: Vec::new(),
        }
    }
}

impl Parser for R2d2Parser {
    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        flow: Flow,
        _end_stream: bool,
        input: Input<'_>,
    ) -> Op {
        match flow {
            Flow::Request => self.on_request(ctx, input),
            Flow::Reply => self.on_reply(ctx, input),
        }
    }
}

impl R2d2Parser {
    fn on_request(&mut self, ctx: &mut Context<'_>, input: Input<'_>) -> Op {
        let Some(end) = input.find_crlf(0) else {
            return more_or_too_long(input);
        };
        if end + 2 > MAX_LINE {
            return Op::Error(LINE_TOO_LONG);
        }
        let Some(line) = input.contiguous(0..end, &mut self.line) else {
            return Op::Error(ParseError::new(
                ErrorCode::MalformedFrame,
                "line out of range",
            ));
        };
        let request = match Request::parse(line) {
            Ok(request) => request,
            Err(error) => return Op::Error(error),
        };
        let verdict = ctx.check::<RuleSet>(|rules| rules.allows(&request));
        let fields = [
            Field::text("cmd", request.command.as_str()),
            Field::bytes("file", request.file.unwrap_or_default()),
        ];
        let fields = if request.file.is_some() {
            &fields[..]
        } else {
            &fields[..1]
        };
        // Nothing is ever injected into the request flow.
        ctx.nothing_to_inject_at_end();
        if verdict.allowed {
            ctx.log(EntryType::Request, verdict.policy_name, fields);
            if self.pending.expect(1).is_err() {
                return Op::Error(TOO_MANY_PENDING);
            }
            return Op::Pass(end + 2);
        }
        ctx.log(EntryType::Denied, verdict.policy_name, fields);
        match self.pending.deny(Denials(1)) {
            // Nothing is owed before this reply: it goes to the client at once.
            Ok(Placed::Now) if ctx.inject_room(Flow::Reply) >= DENIAL.len() => {
                ctx.inject(Flow::Reply, DENIAL);
            }
            Ok(Placed::Queued) => {}
            Ok(Placed::Now) | Err(Full) => return Op::Error(TOO_MANY_PENDING),
        }
        Op::Drop(end + 2)
    }

    fn on_reply(&mut self, ctx: &mut Context<'_>, input: Input<'_>) -> Op {
        if let Turn::Denied(Denials(count)) = self.pending.front() {
            let fit = (ctx.inject_room(Flow::Reply) / DENIAL.len()).min(*count as usize);
            if fit == 0 {
                return Op::Error(TOO_MANY_PENDING);
            }
            for _ in 0..fit {
                ctx.inject(Flow::Reply, DENIAL);
            }
            *count -= fit as u32;
            if *count == 0 {
                self.pending.pop_front();
            }
            return Op::Inject(fit * DENIAL.len());
        }
        if input.is_empty() {
            return Op::Nop;
        }
        let Some(end) = input.find_crlf(0) else {
            return more_or_too_long(input);
        };
        if end + 2 > MAX_LINE {
            return Op::Error(LINE_TOO_LONG);
        }
        if let Turn::Owed(count) = self.pending.front() {
            *count -= 1;
            if *count == 0 {
                self.pending.pop_front();
            }
        }
        // Denials owed after this reply are injected by the call that follows it.
        if !matches!(self.pending.front(), Turn::Denied(_)) {
            ctx.nothing_to_inject_at_end();
        }
        Op::Pass(end + 2)
    }
}

const LINE_TOO_LONG: ParseError =
    ParseError::new(ErrorCode::FrameTooLarge, "line longer than 8 KiB");
const TOO_MANY_PENDING: ParseError =
    ParseError::new(ErrorCode::StateLimit, "too many requests awaiting replies");

/// Asks for more of an unterminated line, unless it is already too long to be valid.
fn more_or_too_long(input: Input<'_>) -> Op {
    if input.len() >= MAX_LINE {
        Op::Error(LINE_TOO_LONG)
    } else {
        Op::More(1)
    }
}

#[cfg(test)]
mod tests {
    use axoneme_datapath::ConnectionError;
    use axoneme_testkit::{split_at_points, RulesPolicy, Session};
    use proptest::prelude::*;

    use super::*;
    use crate::R2d2;

    fn droid_session() -> Session {
        let rules = RulesPolicy::compile(
            &R2d2,
            "droids",
            &[
                &[("cmd", "READ"), ("file", "/public/.*")],
                &[("cmd", "HALT")],
            ],
        );
        Session::new(&R2d2, rules)
    }

    #[test]
    fn allowed_requests_pass_and_denied_ones_get_error() {
        let mut s = droid_session();
        s.send(Flow::Request, b"READ /public/plans\r\n").unwrap();
        assert_eq!(s.sent.upstream, b"READ /public/plans\r\n");
        s.send(Flow::Reply, b"OK plans\r\n").unwrap();
        s.send(Flow::Request, b"WRITE /public/plans\r\n").unwrap();
        assert_eq!(
            s.sent.upstream, b"READ /public/plans\r\n",
            "denied request never reaches upstream"
        );
        assert_eq!(s.sent.client, b"OK plans\r\nERROR\r\n");
        assert_eq!(
            s.log(),
            vec![
                "Request droids cmd=READ file=/public/plans",
                "Denied  cmd=WRITE file=/public/plans"
            ]
        );
    }

    #[test]
    fn pipelined_denials_keep_their_place_among_replies() {
        let mut s = droid_session();
        s.send(
            Flow::Request,
            b"READ /public/a\r\nRESET\r\nRESET\r\nHALT\r\nREAD /x\r\n",
        )
        .unwrap();
        assert_eq!(s.sent.upstream, b"READ /public/a\r\nHALT\r\n");
        assert!(
            s.sent.client.is_empty(),
            "denials wait for the reply ahead of them"
        );
        s.send(Flow::Reply, b"OK a\r\n").unwrap();
        assert_eq!(s.sent.client, b"OK a\r\nERROR\r\nERROR\r\n");
        s.send(Flow::Reply, b"OK halted\r\n").unwrap();
        assert_eq!(
            s.sent.client,
            b"OK a\r\nERROR\r\nERROR\r\nOK halted\r\nERROR\r\n"
        );
    }

    #[test]
    fn malformed_and_oversized_lines_close_the_connection() {
        let mut s = droid_session();
        let err = s.send(Flow::Request, b"FLY away\r\n").unwrap_err();
        assert!(matches!(err, ConnectionError::Parse(e) if e.code == ErrorCode::InvalidFrameType));
        let mut s = droid_session();
        let err = s.send(Flow::Request, &vec![b'A'; MAX_LINE]).unwrap_err();
        assert!(matches!(err, ConnectionError::Parse(e) if e.code == ErrorCode::FrameTooLarge));
    }

    const REQUESTS: [&[u8]; 6] = [
        b"READ /public/a\r\n",
        b"READ /secret\r\n",
        b"HALT\r\n",
        b"RESET\r\n",
        b"WRITE /public/b\r\n",
        b"READ /public/c/d\r\n",
    ];

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_streams_and_verdicts(
            picks in proptest::collection::vec(0usize..REQUESTS.len(), 1..40),
            req_points in proptest::collection::vec(0usize..700, 0..20),
            rep_points in proptest::collection::vec(0usize..400, 0..20),
        ) {
            let requests: Vec<u8> = picks.iter().flat_map(|&i| REQUESTS[i].iter().copied()).collect();
            let allowed = picks.iter().filter(|&&i| [0, 2, 5].contains(&i)).count();
            let replies: Vec<u8> = (0..allowed).flat_map(|i| format!("OK {i}\r\n").into_bytes()).collect();

            let mut whole = droid_session();
            whole.send(Flow::Request, &requests).unwrap();
            whole.send(Flow::Reply, &replies).unwrap();

            let mut chunked = droid_session();
            for chunk in split_at_points(&requests, req_points) {
                chunked.send(Flow::Request, chunk).unwrap();
            }
            for chunk in split_at_points(&replies, rep_points) {
                chunked.send(Flow::Reply, chunk).unwrap();
            }
            prop_assert_eq!(&chunked.sent.upstream, &whole.sent.upstream);
            prop_assert_eq!(&chunked.sent.client, &whole.sent.client);
            prop_assert_eq!(chunked.log(), whole.log());
            let lines = whole.sent.client.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
            prop_assert_eq!(lines, picks.len(), "one reply per request, in order");
        }
    }
}
