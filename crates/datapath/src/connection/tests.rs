//! Engine tests with small test parsers: the operation semantics, the contract checks, the panic
//! sandbox, and the chunking property.

use std::any::Any;
use std::sync::Mutex;

use axoneme_sdk::{
    ConnectionMeta, Context, ErrorCode, Flow, Input, Op, ParseError, Parser, RequestPolicy,
    Verdict, KEPT_CAPACITY,
};
use axoneme_testkit::{split_at_points, RecordingLog};
use proptest::prelude::*;

use super::*;

struct AllowAll;

impl RequestPolicy for AllowAll {
    fn check(&self, _: &mut dyn FnMut(&(dyn Any + Send + Sync)) -> bool) -> Verdict<'_> {
        Verdict {
            allowed: true,
            policy_name: "allow-all",
            audited: false,
        }
    }
}

#[derive(Default, Debug, PartialEq, Eq)]
struct Sent {
    to_upstream: Vec<u8>,
    to_client: Vec<u8>,
}

impl Output for Sent {
    fn emit(&mut self, flow: Flow, bytes: &[u8]) {
        match flow {
            Flow::Request => self.to_upstream.extend_from_slice(bytes),
            Flow::Reply => self.to_client.extend_from_slice(bytes),
        }
    }
}

fn meta() -> ConnectionMeta {
    axoneme_testkit::meta("127.0.0.1:1", "127.0.0.1:1")
}

/// Frames are `type, length (u16 BE), payload`. Requests: `p` passes, `d` is dropped and
/// answered with `DENIED` on the reply flow, `i` is preceded by an injected `HI`, `x` panics,
/// `e` is a protocol error. Replies pass frame by frame.
#[derive(Default)]
struct FrameParser {
    injected_before_frame: bool,
}

impl Parser for FrameParser {
    fn on_data(&mut self, ctx: &mut Context<'_>, flow: Flow, _: bool, input: Input<'_>) -> Op {
        let Some([kind, hi, lo]) = input.peek::<3>(0) else {
            return Op::More(3 - input.len());
        };
        let len = 3 + usize::from(u16::from_be_bytes([hi, lo]));
        if flow == Flow::Reply {
            return Op::Pass(len);
        }
        match kind {
            b'p' => Op::Pass(len),
            b'd' => {
                ctx.log(EntryType::Denied, "", &[Field::text("kind", "d")]);
                ctx.inject(Flow::Reply, b"DENIED");
                Op::Drop(len)
            }
            b'i' if !self.injected_before_frame => {
                self.injected_before_frame = true;
                ctx.inject(Flow::Request, b"HI");
                Op::Inject(2)
            }
            b'i' => {
                self.injected_before_frame = false;
                Op::Pass(len)
            }
            b'x' => panic!("boom"),
            _ => Op::Error(ParseError::new(
                ErrorCode::InvalidFrameType,
                "unknown frame type",
            )),
        }
    }
}

/// One step of a [`Scripted`] parser: bytes to place in an inject buffer, then the answer.
type Step = (Option<(Flow, &'static [u8])>, Op);

/// Answers with a fixed script of operations, then NOP.
struct Scripted {
    steps: Vec<Step>,
}

impl Parser for Scripted {
    fn on_data(&mut self, ctx: &mut Context<'_>, _: Flow, _: bool, _: Input<'_>) -> Op {
        if self.steps.is_empty() {
            return Op::Nop;
        }
        let (inject, op) = self.steps.remove(0);
        if let Some((flow, bytes)) = inject {
            ctx.inject(flow, bytes);
        }
        op
    }
}

fn frame(kind: u8, payload_len: usize) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&(payload_len as u16).to_be_bytes());
    f.extend((0..payload_len).map(|i| (i % 251) as u8));
    f
}

fn run(
    conn: &mut Connection,
    log: &RecordingLog,
    sent: &mut Sent,
    flow: Flow,
    data: &[u8],
) -> Result<(), ConnectionError> {
    let env = Env {
        policy: &AllowAll,
        log,
    };
    conn.on_data(flow, data, false, &env, sent)
}

fn frame_conn() -> Connection {
    Connection::new(
        Box::<FrameParser>::default(),
        meta(),
        "frame",
        Limits::default(),
    )
}

#[test]
fn a_large_frame_passes_as_it_streams_without_being_kept() {
    let mut conn = frame_conn();
    let log = RecordingLog::default();
    let mut sent = Sent::default();
    let big = frame(b'p', 60_000);
    for chunk in big.chunks(1000) {
        run(&mut conn, &log, &mut sent, Flow::Request, chunk).unwrap();
        assert!(
            conn.flows[0].kept.is_empty(),
            "a passing frame is never buffered"
        );
    }
    assert_eq!(sent.to_upstream, big);
}

/// Frames as [`FrameParser`] reads them, each kept until it is whole and then passed.
struct WholeFrameParser;

impl Parser for WholeFrameParser {
    fn on_data(&mut self, _: &mut Context<'_>, _: Flow, _: bool, input: Input<'_>) -> Op {
        let Some([_, hi, lo]) = input.peek::<3>(0) else {
            return Op::More(3 - input.len());
        };
        let len = 3 + usize::from(u16::from_be_bytes([hi, lo]));
        match input.len() < len {
            true => Op::More(len - input.len()),
            false => Op::Pass(len),
        }
    }
}

#[test]
fn memory_kept_for_a_large_frame_is_given_back_once_it_passed() {
    let mut conn = Connection::new(
        Box::new(WholeFrameParser),
        meta(),
        "whole",
        Limits::default(),
    );
    assert_eq!(conn.buffer_capacity(), 0, "nothing is allocated up front");
    let log = RecordingLog::default();
    let mut sent = Sent::default();
    let big = frame(b'p', 60_000);
    for chunk in big[..big.len() - 1].chunks(1000) {
        run(&mut conn, &log, &mut sent, Flow::Request, chunk).unwrap();
    }
    assert_eq!(conn.buffered_bytes(), big.len() - 1);
    assert!(conn.buffer_capacity() >= big.len() - 1);
    // The last byte, with the first bytes of a small frame.
    let small = frame(b'p', 10);
    let mut last = big[big.len() - 1..].to_vec();
    last.extend_from_slice(&small[..5]);
    run(&mut conn, &log, &mut sent, Flow::Request, &last).unwrap();
    assert_eq!(sent.to_upstream, big);
    assert_eq!(conn.buffered_bytes(), 5);
    assert!(conn.buffer_capacity() <= KEPT_CAPACITY);
    // Small frames keep what is left from one to the next.
    run(&mut conn, &log, &mut sent, Flow::Request, &small[5..]).unwrap();
    let kept = conn.flows[0].kept.as_ptr();
    for _ in 0..3 {
        run(&mut conn, &log, &mut sent, Flow::Request, &small[..5]).unwrap();
        run(&mut conn, &log, &mut sent, Flow::Request, &small[5..]).unwrap();
        assert_eq!(conn.flows[0].kept.as_ptr(), kept, "not reallocated");
    }
    assert_eq!(conn.buffered_bytes(), 0);
}

#[test]
fn a_denial_reaches_the_client_at_once_even_if_the_upstream_is_silent() {
    let mut conn = frame_conn();
    let log = RecordingLog::default();
    let mut sent = Sent::default();
    let mut data = frame(b'p', 2);
    data.extend(frame(b'd', 5));
    run(&mut conn, &log, &mut sent, Flow::Request, &data).unwrap();
    assert_eq!(sent.to_upstream, frame(b'p', 2));
    assert_eq!(sent.to_client, b"DENIED");
    assert_eq!(log.entries(), vec!["Denied  kind=d"]);
}

#[test]
fn a_denial_waits_for_the_reply_frame_in_flight() {
    let mut conn = frame_conn();
    let log = RecordingLog::default();
    let mut sent = Sent::default();
    let reply = frame(b'r', 100);
    run(&mut conn, &log, &mut sent, Flow::Reply, &reply[..50]).unwrap();
    run(&mut conn, &log, &mut sent, Flow::Request, &frame(b'd', 1)).unwrap();
    assert_eq!(
        sent.to_client,
        &reply[..50],
        "no injection into the middle of a frame"
    );
    run(&mut conn, &log, &mut sent, Flow::Reply, &reply[50..]).unwrap();
    let mut expected = reply.clone();
    expected.extend_from_slice(b"DENIED");
    assert_eq!(sent.to_client, expected);
}

#[test]
fn inject_into_the_parsed_flow_lands_before_the_frame() {
    let mut conn = frame_conn();
    let log = RecordingLog::default();
    let mut sent = Sent::default();
    let mut data = frame(b'i', 1);
    data.extend(frame(b'i', 2));
    run(&mut conn, &log, &mut sent, Flow::Request, &data).unwrap();
    let mut expected = b"HI".to_vec();
    expected.extend(frame(b'i', 1));
    expected.extend_from_slice(b"HI");
    expected.extend(frame(b'i', 2));
    assert_eq!(sent.to_upstream, expected);
}

#[test]
fn more_waits_for_the_bytes_it_asked_for() {
    let mut conn = frame_conn();
    let log = RecordingLog::default();
    let mut sent = Sent::default();
    let f = frame(b'p', 4);
    run(&mut conn, &log, &mut sent, Flow::Request, &f[..1]).unwrap();
    assert_eq!(conn.flows[0].need, 3);
    run(&mut conn, &log, &mut sent, Flow::Request, &f[1..2]).unwrap();
    assert!(sent.to_upstream.is_empty());
    run(&mut conn, &log, &mut sent, Flow::Request, &f[2..]).unwrap();
    assert_eq!(sent.to_upstream, f);
}

#[test]
fn a_panicking_parser_closes_only_its_connection_and_is_logged() {
    let mut conn = frame_conn();
    let mut other = frame_conn();
    let log = RecordingLog::default();
    let mut sent = Sent::default();
    let err = run(&mut conn, &log, &mut sent, Flow::Request, &frame(b'x', 1)).unwrap_err();
    assert_eq!(err, ConnectionError::Panic("boom".into()));
    assert_eq!(log.entries(), vec!["Denied  status=Panic: boom"]);
    assert_eq!(
        run(&mut conn, &log, &mut sent, Flow::Request, b"p"),
        Err(ConnectionError::Closed)
    );
    run(&mut other, &log, &mut sent, Flow::Request, &frame(b'p', 1)).unwrap();
    assert_eq!(sent.to_upstream, frame(b'p', 1));
}

#[test]
fn a_protocol_error_closes_and_logs_its_reason() {
    let mut conn = frame_conn();
    let log = RecordingLog::default();
    let mut sent = Sent::default();
    let err = run(&mut conn, &log, &mut sent, Flow::Request, &frame(b'?', 1)).unwrap_err();
    assert!(matches!(err, ConnectionError::Parse(e) if e.code == ErrorCode::InvalidFrameType));
    assert_eq!(
        log.entries(),
        vec!["Denied  status=Error: protocol error: invalid_frame_type: unknown frame type"]
    );
}

fn scripted(steps: Vec<Step>) -> Result<Sent, ConnectionError> {
    let mut conn = Connection::new(Box::new(Scripted { steps }), meta(), "s", Limits::default());
    let log = RecordingLog::default();
    let mut sent = Sent::default();
    run(&mut conn, &log, &mut sent, Flow::Request, b"abcdef").map(|()| sent)
}

#[test]
fn contract_violations_close_the_connection() {
    for op in [Op::More(0), Op::Pass(0), Op::Drop(0), Op::Inject(0)] {
        assert_eq!(
            scripted(vec![(None, op)]),
            Err(ContractViolation::ZeroLength(op).into())
        );
    }
    assert_eq!(
        scripted(vec![(Some((Flow::Request, b"ab")), Op::Inject(3))]),
        Err(ContractViolation::InjectTooLong {
            requested: 3,
            available: 2
        }
        .into())
    );
    assert_eq!(
        scripted(vec![(Some((Flow::Request, b"ab")), Op::Pass(1))]),
        Err(ContractViolation::InjectLeftBehind(2).into())
    );
    let endless = vec![Op::Inject(1); MAX_OPS_WITHOUT_PROGRESS + 1];
    let mut conn = Connection::new(
        Box::new(Refill { ops: endless }),
        meta(),
        "s",
        Limits::default(),
    );
    let log = RecordingLog::default();
    assert_eq!(
        run(&mut conn, &log, &mut Sent::default(), Flow::Request, b"a"),
        Err(ContractViolation::NoProgress(MAX_OPS_WITHOUT_PROGRESS).into())
    );
}

/// Injects one byte into its own flow before every operation.
struct Refill {
    ops: Vec<Op>,
}

impl Parser for Refill {
    fn on_data(&mut self, ctx: &mut Context<'_>, flow: Flow, _: bool, _: Input<'_>) -> Op {
        ctx.inject(flow, b"!");
        self.ops.pop().unwrap_or(Op::Nop)
    }
}

#[test]
fn more_beyond_the_buffer_limit_closes_the_connection() {
    let limits = Limits {
        inject_capacity: 64,
        max_buffered: 100,
    };
    let mut conn = Connection::new(
        Box::new(Scripted {
            steps: vec![(None, Op::More(95))],
        }),
        meta(),
        "s",
        limits,
    );
    let log = RecordingLog::default();
    assert_eq!(
        run(
            &mut conn,
            &log,
            &mut Sent::default(),
            Flow::Request,
            b"abcdef"
        ),
        Err(ConnectionError::BufferLimit {
            needed: 101,
            limit: 100
        })
    );
}

#[test]
fn pass_and_drop_within_the_input_call_the_parser_again_even_when_nothing_remains() {
    let sent = scripted(vec![
        (None, Op::Pass(2)),
        (Some((Flow::Reply, b"late")), Op::Drop(4)),
        (Some((Flow::Request, b"end")), Op::Inject(3)),
    ])
    .unwrap();
    assert_eq!(sent.to_upstream, b"abend");
    assert_eq!(sent.to_client, b"late");
}

/// Passes all the input at hand, saying it has nothing to inject after it when `quiet`; notes
/// the length of the input of every call and whether the stream had ended.
struct PassesAll {
    quiet: bool,
    calls: Arc<Mutex<Vec<(usize, bool)>>>,
}

impl Parser for PassesAll {
    fn on_data(&mut self, ctx: &mut Context<'_>, _: Flow, end: bool, input: Input<'_>) -> Op {
        self.calls.lock().unwrap().push((input.len(), end));
        if input.is_empty() {
            return Op::Nop;
        }
        if self.quiet {
            ctx.nothing_to_inject_at_end();
        }
        Op::Pass(input.len())
    }
}

#[test]
fn a_parser_with_nothing_to_inject_at_the_end_is_not_called_with_no_input() {
    for quiet in [false, true] {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let parser = PassesAll {
            quiet,
            calls: Arc::clone(&calls),
        };
        let mut conn = Connection::new(Box::new(parser), meta(), "p", Limits::default());
        let log = RecordingLog::default();
        let mut sent = Sent::default();
        let env = Env {
            policy: &AllowAll,
            log: &log,
        };
        conn.on_data(Flow::Request, b"abcdef", false, &env, &mut sent)
            .unwrap();
        conn.on_data(Flow::Request, b"gh", false, &env, &mut sent)
            .unwrap();
        conn.on_data(Flow::Request, b"ij", true, &env, &mut sent)
            .unwrap();
        assert_eq!(sent.to_upstream, b"abcdefghij");
        // The end of the stream is always shown to the parser.
        let expected: &[(usize, bool)] = match quiet {
            false => &[
                (6, false),
                (0, false),
                (2, false),
                (0, false),
                (2, true),
                (0, true),
            ],
            true => &[(6, false), (2, false), (2, true), (0, true)],
        };
        assert_eq!(*calls.lock().unwrap(), expected, "quiet: {quiet}");
    }
}

fn frames_strategy() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        (prop_oneof![Just(b'p'), Just(b'd'), Just(b'i')], 0usize..300),
        0..20,
    )
    .prop_map(|frames| frames.into_iter().flat_map(|(k, n)| frame(k, n)).collect())
}

proptest! {
    #[test]
    fn any_chunking_gives_identical_output_and_verdicts(
        requests in frames_strategy(),
        replies in proptest::collection::vec(0usize..300, 0..10),
        req_points in proptest::collection::vec(0usize..6000, 0..30),
        rep_points in proptest::collection::vec(0usize..3000, 0..30),
        interleave in proptest::collection::vec(any::<bool>(), 0..80),
    ) {
        let replies: Vec<u8> = replies.into_iter().flat_map(|n| frame(b'r', n)).collect();
        let reference = {
            let mut conn = frame_conn();
            let log = RecordingLog::default();
            let mut sent = Sent::default();
            run(&mut conn, &log, &mut sent, Flow::Request, &requests).unwrap();
            run(&mut conn, &log, &mut sent, Flow::Reply, &replies).unwrap();
            (sent, log.entries())
        };
        let mut conn = frame_conn();
        let log = RecordingLog::default();
        let mut sent = Sent::default();
        let mut req_chunks = split_at_points(&requests, req_points).into_iter();
        let mut rep_chunks = split_at_points(&replies, rep_points).into_iter();
        let mut choose = interleave.into_iter();
        let mut rep_done = false;
        // Requests always lead replies, so that a denial meant for an idle reply flow is sent
        // at once in both runs; replies are interleaved otherwise freely.
        for chunk in req_chunks.by_ref() {
            run(&mut conn, &log, &mut sent, Flow::Request, chunk).unwrap();
            if choose.next().unwrap_or(false) {
                match rep_chunks.next() {
                    Some(c) => run(&mut conn, &log, &mut sent, Flow::Reply, c).unwrap(),
                    None => rep_done = true,
                }
            }
        }
        if !rep_done {
            for chunk in rep_chunks {
                run(&mut conn, &log, &mut sent, Flow::Reply, chunk).unwrap();
            }
        }
        prop_assert_eq!(&sent.to_upstream, &reference.0.to_upstream);
        prop_assert_eq!(log.entries(), reference.1);
        let client = sent.to_client.clone();
        let expected = reference.0.to_client.clone();
        // Denials go out at the first reply frame boundary after the request was seen, so their
        // position relative to reply frames depends on timing; the bytes of each stream do not.
        let denials = |v: &[u8]| v.windows(6).filter(|w| w == b"DENIED").count();
        prop_assert_eq!(denials(&client), denials(&expected));
        prop_assert_eq!(strip_denials(&client), strip_denials(&expected));
    }
}

fn strip_denials(stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < stream.len() {
        if stream[i..].starts_with(b"DENIED") && (i == 0 || at_frame_boundary(&stream[..i])) {
            i += 6;
        } else {
            out.push(stream[i]);
            i += 1;
        }
    }
    out
}

/// True when `prefix` (with earlier denials removed) ends exactly after a whole number of
/// frames: denials are only ever placed there.
fn at_frame_boundary(prefix: &[u8]) -> bool {
    let mut i = 0;
    while i < prefix.len() {
        if prefix[i..].starts_with(b"DENIED") {
            i += 6;
            continue;
        }
        if i + 3 > prefix.len() {
            return false;
        }
        i += 3 + usize::from(u16::from_be_bytes([prefix[i + 1], prefix[i + 2]]));
    }
    i == prefix.len()
}

/// Passes every frame, but holds requests (NOP with the input at hand) until a reply has
/// passed since the last request did: a request that waits for the answer before it.
#[derive(Default)]
struct WaitsForReply {
    reply_seen: bool,
}

impl Parser for WaitsForReply {
    fn on_data(&mut self, _: &mut Context<'_>, flow: Flow, _: bool, input: Input<'_>) -> Op {
        let Some([_, hi, lo]) = input.peek::<3>(0) else {
            return match input.len() {
                0 => Op::Nop,
                n => Op::More(3 - n),
            };
        };
        let len = 3 + usize::from(u16::from_be_bytes([hi, lo]));
        match flow {
            Flow::Reply => {
                self.reply_seen = true;
                Op::Pass(len)
            }
            Flow::Request if !self.reply_seen => Op::Nop,
            Flow::Request => {
                self.reply_seen = false;
                Op::Pass(len)
            }
        }
    }
}

#[test]
fn held_input_is_handed_back_once_the_other_flow_moves() {
    let mut conn = Connection::new(
        Box::<WaitsForReply>::default(),
        meta(),
        "wait",
        Limits::default(),
    );
    let log = RecordingLog::default();
    let mut sent = Sent::default();
    let (first, second) = (frame(b'p', 2), frame(b'q', 1));
    run(
        &mut conn,
        &log,
        &mut sent,
        Flow::Request,
        &[first.clone(), second.clone()].concat(),
    )
    .unwrap();
    assert!(sent.to_upstream.is_empty(), "held until a reply");
    run(&mut conn, &log, &mut sent, Flow::Reply, &frame(b'r', 0)).unwrap();
    assert_eq!(sent.to_upstream, first, "one reply releases one request");
    assert_eq!(sent.to_client, frame(b'r', 0));
    run(&mut conn, &log, &mut sent, Flow::Reply, &frame(b'r', 0)).unwrap();
    assert_eq!(sent.to_upstream, [first, second].concat());
}

#[test]
fn an_unfinished_frame_is_reported_until_it_has_arrived() {
    let mut conn = frame_conn();
    let log = RecordingLog::default();
    let mut sent = Sent::default();
    assert_eq!(conn.unfinished_frame(Flow::Request), None);
    let kept = frame(b'p', 4);
    run(&mut conn, &log, &mut sent, Flow::Request, &kept[..2]).unwrap();
    assert_eq!(conn.unfinished_frame(Flow::Request), Some(0), "kept header");
    run(&mut conn, &log, &mut sent, Flow::Request, &kept[2..5]).unwrap();
    assert_eq!(
        conn.unfinished_frame(Flow::Request),
        Some(1),
        "passing payload"
    );
    run(&mut conn, &log, &mut sent, Flow::Request, &kept[5..]).unwrap();
    assert_eq!(conn.unfinished_frame(Flow::Request), None);
    let mut next = frame(b'd', 3);
    next.extend(frame(b'p', 1));
    run(&mut conn, &log, &mut sent, Flow::Request, &next[..4]).unwrap();
    assert_eq!(
        conn.unfinished_frame(Flow::Request),
        Some(2),
        "dropping payload"
    );
    run(&mut conn, &log, &mut sent, Flow::Request, &next[4..7]).unwrap();
    assert_eq!(
        conn.unfinished_frame(Flow::Request),
        Some(2),
        "the next frame's start kept, not yet decided"
    );
    let rest = [&next[7..], &frame(b'p', 1)[..2]].concat();
    run(&mut conn, &log, &mut sent, Flow::Request, &rest).unwrap();
    assert_eq!(
        conn.unfinished_frame(Flow::Request),
        Some(3),
        "a frame decided since: the count moved on"
    );
    assert_eq!(conn.unfinished_frame(Flow::Reply), None);
}

#[test]
fn input_held_for_the_other_flow_is_no_unfinished_frame() {
    let mut conn = Connection::new(
        Box::<WaitsForReply>::default(),
        meta(),
        "wait",
        Limits::default(),
    );
    let log = RecordingLog::default();
    let mut sent = Sent::default();
    run(&mut conn, &log, &mut sent, Flow::Request, &frame(b'p', 2)).unwrap();
    assert!(sent.to_upstream.is_empty(), "held until a reply");
    assert_eq!(conn.unfinished_frame(Flow::Request), None);
}
