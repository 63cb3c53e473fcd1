//! The memcached parser through the real datapath engine: verdicts, denials in reply order,
//! barriers behind quiet requests, streaming of large values, limits, and the chunking property.

use axoneme_datapath::ConnectionError;
use axoneme_sdk::{Context, ErrorCode, Flow, InjectBuffer, Input, Op, Parser, KEPT_CAPACITY};
use axoneme_testkit::{split_at_points, NullLog, RulesPolicy, Session};
use proptest::prelude::*;

use crate::binary::{self, HEADER_LEN};
use crate::Memcache;

use super::{Keys, MemcacheParser};

const MAX_VALUE: usize = 1024 * 1024;

/// The Rebels' fleet-maintenance rules.
fn maintenance() -> Session {
    let memcache = Memcache::new(MAX_VALUE);
    let rules = RulesPolicy::compile(
        &memcache,
        "rebels",
        &[
            &[("command", "writeGroup"), ("keyPrefix", "alliance/fleet/")],
            &[("command", "get"), ("keyPrefix", "alliance/fleet/")],
        ],
    );
    Session::new(&memcache, rules)
}

const DENIED: &[u8] = b"CLIENT_ERROR access denied\r\n";

#[test]
fn text_requests_are_allowed_or_denied_in_reply_order() {
    let mut s = maintenance();
    s.send(Flow::Request, b"get alliance/fleet/a empire/b\r\nset alliance/fleet/a 0 0 9\r\n\r\nEND\r\nxx\r\nget empire/c\r\n")
        .unwrap();
    assert_eq!(
        s.sent.upstream,
        b"set alliance/fleet/a 0 0 9\r\n\r\nEND\r\nxx\r\n"
    );
    assert_eq!(
        s.sent.client, DENIED,
        "the first denial owes nothing to the server: sent at once"
    );
    s.send(Flow::Reply, b"STORED\r\n").unwrap();
    assert_eq!(s.sent.client, [DENIED, b"STORED\r\n", DENIED].concat());
    assert_eq!(
        s.log(),
        vec![
            "Denied  command=get keys=alliance/fleet/a, empire/b",
            "Request rebels command=set keys=alliance/fleet/a",
            "Denied  command=get keys=empire/c",
        ]
    );
}

#[test]
fn a_value_containing_end_cannot_desynchronise_the_reply_stream() {
    let mut s = maintenance();
    s.send(Flow::Request, b"get alliance/fleet/a\r\nget empire/x\r\n")
        .unwrap();
    let reply = b"VALUE alliance/fleet/a 0 9\r\n\r\nEND\r\nxx\r\nEND\r\n";
    s.send(Flow::Reply, &reply[..20]).unwrap();
    s.send(Flow::Reply, &reply[20..33]).unwrap();
    assert_eq!(s.sent.client, &reply[..33], "no denial inside the value");
    s.send(Flow::Reply, &reply[33..]).unwrap();
    assert_eq!(s.sent.client, [&reply[..], DENIED].concat());
}

#[test]
fn a_megabyte_value_streams_through_in_small_reads() {
    let mut s = maintenance();
    let mut request = b"set alliance/fleet/big 0 0 1048576\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'v', MAX_VALUE));
    request.extend_from_slice(b"\r\nget empire/x\r\n");
    for chunk in request.chunks(1000) {
        s.send(Flow::Request, chunk).unwrap();
    }
    assert_eq!(s.sent.upstream, &request[..request.len() - 14]);
    s.send(Flow::Reply, b"STORED\r\n").unwrap();
    assert_eq!(s.sent.client, [b"STORED\r\n", DENIED].concat());
}

#[test]
fn a_denied_large_value_is_dropped_as_it_streams() {
    let mut s = maintenance();
    let mut request = b"set empire/big 0 0 100000\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'v', 100_000));
    request.extend_from_slice(b"\r\nget alliance/fleet/a\r\n");
    for chunk in request.chunks(4096) {
        s.send(Flow::Request, chunk).unwrap();
    }
    assert_eq!(s.sent.upstream, b"get alliance/fleet/a\r\n");
    assert_eq!(s.sent.client, DENIED);
}

#[test]
fn noreply_denials_send_nothing_and_later_denials_wait_for_a_barrier() {
    let mut s = maintenance();
    s.send(
        Flow::Request,
        b"set alliance/fleet/a 0 0 1 noreply\r\na\r\nset empire/b 0 0 1 noreply\r\nb\r\n",
    )
    .unwrap();
    assert_eq!(
        s.sent.upstream,
        b"set alliance/fleet/a 0 0 1 noreply\r\na\r\n"
    );
    assert!(s.sent.client.is_empty());
    // Whether the server answers the allowed noreply set cannot be known: the denial of the
    // next request waits behind a barrier of the proxy's own.
    s.send(Flow::Request, b"get empire/c\r\nget alliance/fleet/a\r\n")
        .unwrap();
    assert_eq!(
        s.sent.upstream,
        b"set alliance/fleet/a 0 0 1 noreply\r\na\r\nmn\r\nget alliance/fleet/a\r\n"
    );
    assert!(s.sent.client.is_empty());
    s.send(
        Flow::Reply,
        b"MN\r\nVALUE alliance/fleet/a 0 1\r\na\r\nEND\r\n",
    )
    .unwrap();
    assert_eq!(
        s.sent.client,
        [DENIED, b"VALUE alliance/fleet/a 0 1\r\na\r\nEND\r\n"].concat()
    );
}

#[test]
fn meta_quiet_pipelines_keep_their_shape() {
    let mut s = maintenance();
    s.send(
        Flow::Request,
        b"mg alliance/fleet/a v q Oa1\r\nmg empire/b v q Ob2\r\nmn\r\n",
    )
    .unwrap();
    assert_eq!(
        s.sent.upstream,
        b"mg alliance/fleet/a v q Oa1\r\nmn\r\nmn\r\n"
    );
    s.send(Flow::Reply, b"VA 1 Oa1\r\nx\r\nMN\r\nMN\r\n")
        .unwrap();
    assert_eq!(
        s.sent.client,
        [&b"VA 1 Oa1\r\nx\r\n"[..], DENIED, b"MN\r\n"].concat()
    );
}

#[test]
fn meta_commands_map_onto_policy_commands_and_base64_keys_are_decoded() {
    let mut s = maintenance();
    // "alliance/fleet/x" and "empire/x" in base64.
    s.send(Flow::Request, b"mg YWxsaWFuY2UvZmxlZXQveA== b v\r\nmd ZW1waXJlL3g= b\r\nms alliance/fleet/y 2 MA\r\nhi\r\nma alliance/fleet/n MD\r\nmg alliance/fleet/t T30 v\r\n")
        .unwrap();
    assert_eq!(
        s.log(),
        vec![
            "Request rebels command=get keys=alliance/fleet/x",
            "Denied  command=delete keys=empire/x",
            "Request rebels command=append keys=alliance/fleet/y",
            "Request rebels command=decr keys=alliance/fleet/n",
            "Denied  command=gat keys=alliance/fleet/t",
        ]
    );
}

fn binary_request(opcode: u8, key: &[u8], value: &[u8], opaque: u32) -> Vec<u8> {
    let extras: &[u8] = if opcode == 0x01 { &[0; 8] } else { &[] };
    let body = extras.len() + key.len() + value.len();
    let mut packet = vec![0x80, opcode];
    packet.extend_from_slice(&(key.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[extras.len() as u8, 0, 0, 0]);
    packet.extend_from_slice(&(body as u32).to_be_bytes());
    packet.extend_from_slice(&opaque.to_be_bytes());
    packet.extend_from_slice(&[0; 8]);
    packet.extend_from_slice(extras);
    packet.extend_from_slice(key);
    packet.extend_from_slice(value);
    packet
}

fn binary_response(opcode: u8, key: &[u8], opaque: u32) -> Vec<u8> {
    let mut packet = binary_request(opcode, key, b"", opaque);
    packet[0] = 0x81;
    packet
}

#[test]
fn binary_denials_echo_opcode_and_opaque_in_reply_order() {
    let mut s = maintenance();
    let requests = [
        binary_request(0x00, b"alliance/fleet/a", b"", 1),
        binary_request(0x0c, b"empire/b", b"", 2),
        binary_request(0x01, b"empire/c", b"value", 3),
    ]
    .concat();
    s.send(Flow::Request, &requests).unwrap();
    assert_eq!(
        s.sent.upstream,
        binary_request(0x00, b"alliance/fleet/a", b"", 1)
    );
    assert!(s.sent.client.is_empty());
    let reply = binary_response(0x00, b"", 1);
    s.send(Flow::Reply, &reply).unwrap();
    assert_eq!(
        s.sent.client,
        [
            &reply[..],
            &binary::denial(0x0c, 2),
            &binary::denial(0x01, 3)
        ]
        .concat()
    );
    assert_eq!(
        s.log()[1],
        "Denied  command=get keys=empire/b opcode=12",
        "GETK is policy's get"
    );
}

#[test]
fn binary_quiet_requests_are_followed_by_a_barrier_before_a_denial() {
    let mut s = maintenance();
    let requests = [
        binary_request(0x09, b"alliance/fleet/a", b"", 1),
        binary_request(0x09, b"empire/b", b"", 2),
        binary_request(0x0a, b"", b"", 3),
    ]
    .concat();
    s.send(Flow::Request, &requests).unwrap();
    let mut expected = binary_request(0x09, b"alliance/fleet/a", b"", 1);
    expected.extend_from_slice(&binary::barrier());
    expected.extend(binary_request(0x0a, b"", b"", 3));
    assert_eq!(s.sent.upstream, expected);
    let hit = binary_response(0x09, b"", 1);
    let replies = [
        hit.clone(),
        binary_response(0x0a, b"", binary::BARRIER_OPAQUE),
        binary_response(0x0a, b"", 3),
    ]
    .concat();
    s.send(Flow::Reply, &replies).unwrap();
    assert_eq!(
        s.sent.client,
        [
            hit,
            binary::denial(0x09, 2).to_vec(),
            binary_response(0x0a, b"", 3)
        ]
        .concat()
    );
}

#[test]
fn limits_close_the_connection() {
    let mut s = maintenance();
    let err = s
        .send(Flow::Request, b"set alliance/fleet/a 0 0 1048577\r\n")
        .unwrap_err();
    assert!(matches!(err, ConnectionError::Parse(e) if e.code == ErrorCode::FrameTooLarge));
    let mut s = maintenance();
    let err = s.send(Flow::Request, &vec![b'x'; 2048]).unwrap_err();
    assert!(matches!(err, ConnectionError::Parse(e) if e.code == ErrorCode::FrameTooLarge));
    let mut s = maintenance();
    let mut long_get = b"get ".to_vec();
    long_get.extend(std::iter::repeat_n(b'k', 4000));
    s.send(Flow::Request, &long_get).unwrap();
    let mut s = maintenance();
    let mut packet = binary_request(0x01, b"alliance/fleet/a", b"", 1);
    packet[8..12].copy_from_slice(&((MAX_VALUE + 8 + 16 + 1) as u32).to_be_bytes());
    let err = s.send(Flow::Request, &packet[..HEADER_LEN]).unwrap_err();
    assert!(matches!(err, ConnectionError::Parse(e) if e.code == ErrorCode::FrameTooLarge));
}

/// A recorded text and meta session: requests, and the server's replies to the allowed ones.
const TEXT_REQUESTS: &[u8] = b"set alliance/fleet/a 0 0 9\r\n\r\nEND\r\nxx\r\n\
get alliance/fleet/a empire/b\r\n\
get alliance/fleet/a\r\n\
set empire/x 0 0 3 noreply\r\nabc\r\n\
mg alliance/fleet/a v q\r\n\
mg empire/y v\r\n\
mn\r\n\
delete alliance/fleet/a\r\n\
touch empire/z 10\r\n";
const TEXT_REPLIES: &[u8] = b"STORED\r\n\
VALUE alliance/fleet/a 0 9\r\n\r\nEND\r\nxx\r\nEND\r\n\
VA 9\r\n\r\nEND\r\nxx\r\n\
MN\r\n\
MN\r\n\
DELETED\r\n";

proptest! {
    #[test]
    fn any_chunking_of_a_recorded_session_gives_the_same_streams_and_verdicts(
        request_points in proptest::collection::vec(0usize..TEXT_REQUESTS.len(), 0..25),
        reply_points in proptest::collection::vec(0usize..TEXT_REPLIES.len(), 0..25),
    ) {
        let mut whole = maintenance();
        whole.send(Flow::Request, TEXT_REQUESTS).unwrap();
        whole.send(Flow::Reply, TEXT_REPLIES).unwrap();

        let mut chunked = maintenance();
        for chunk in split_at_points(TEXT_REQUESTS, request_points) {
            chunked.send(Flow::Request, chunk).unwrap();
        }
        for chunk in split_at_points(TEXT_REPLIES, reply_points) {
            chunked.send(Flow::Reply, chunk).unwrap();
        }
        prop_assert_eq!(&chunked.sent.upstream, &whole.sent.upstream);
        prop_assert_eq!(&chunked.sent.client, &whole.sent.client);
        prop_assert_eq!(chunked.log(), whole.log());
    }
}

#[test]
fn the_recorded_session_reads_as_expected() {
    let mut s = maintenance();
    s.send(Flow::Request, TEXT_REQUESTS).unwrap();
    s.send(Flow::Reply, TEXT_REPLIES).unwrap();
    let client = String::from_utf8(s.sent.client.clone()).unwrap();
    assert_eq!(
        client,
        "STORED\r\n\
CLIENT_ERROR access denied\r\n\
VALUE alliance/fleet/a 0 9\r\n\r\nEND\r\nxx\r\nEND\r\n\
VA 9\r\n\r\nEND\r\nxx\r\n\
CLIENT_ERROR access denied\r\n\
MN\r\n\
DELETED\r\n\
CLIENT_ERROR access denied\r\n"
    );
}

#[test]
fn a_thousand_binary_denials_behind_one_reply_keep_their_order() {
    let mut s = maintenance();
    let mut requests = binary_request(0x00, b"alliance/fleet/a", b"", 0);
    for opaque in 1..=1000 {
        requests.extend(binary_request(0x00, b"empire/x", b"", opaque));
    }
    s.send(Flow::Request, &requests).unwrap();
    let reply = binary_response(0x00, b"", 0);
    s.send(Flow::Reply, &reply).unwrap();
    let denials: Vec<u8> = (1..=1000)
        .flat_map(|opaque| binary::denial(0x00, opaque))
        .collect();
    assert_eq!(s.sent.client, [reply, denials].concat());
}

#[test]
fn a_request_cannot_be_smuggled_inside_a_data_block_memcached_would_not_read() {
    let smuggled: [&[u8]; 4] = [
        b"set alliance/fleet/a x 0 16\r\nget empire/plans\r\n",
        b"set alliance/fleet/a 0 0 19 extra junk\r\ndelete empire/plans\r\n",
        b"set alliance/fleet/a\0 0 0 16\r\nget empire/plans\r\n",
        b"cas alliance/fleet/a 0 0 16 noreply\r\nget empire/plans\r\n",
    ];
    for bytes in smuggled {
        let mut s = maintenance();
        assert!(
            s.send(Flow::Request, bytes).is_err(),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        assert!(s.sent.upstream.is_empty(), "nothing reaches memcached");
    }
}

#[test]
fn a_malformed_noreply_command_owes_no_reply() {
    let mut s = maintenance();
    s.send(
        Flow::Request,
        b"touch alliance/fleet/a noreply\r\nget alliance/fleet/a\r\nget empire/x\r\n",
    )
    .unwrap();
    // The touch may or may not be answered; the denial waits behind a barrier of the proxy's.
    assert_eq!(
        s.sent.upstream,
        b"touch alliance/fleet/a noreply\r\nget alliance/fleet/a\r\nmn\r\n"
    );
    s.send(Flow::Reply, b"END\r\nMN\r\n").unwrap();
    assert_eq!(s.sent.client, [&b"END\r\n"[..], DENIED].concat());
}

proptest! {
    #[test]
    fn keys_are_the_non_empty_words_between_spaces(text in "[ab ]{0,24}") {
        let bytes = text.as_bytes();
        let split: Vec<&[u8]> = Keys { rest: bytes, split: true }.collect();
        let words: Vec<&[u8]> = bytes.split(|&b| b == b' ').filter(|k| !k.is_empty()).collect();
        prop_assert_eq!(split, words);
        let whole: Vec<&[u8]> = Keys { rest: bytes, split: false }.collect();
        let expected: Vec<&[u8]> = if bytes.is_empty() { vec![] } else { vec![bytes] };
        prop_assert_eq!(whole, expected);
    }
}

#[test]
fn text_quit_is_never_denied_and_nothing_after_it_reaches_the_server() {
    let mut s = maintenance();
    s.send(
        Flow::Request,
        b"get alliance/fleet/a\r\nget empire/x\r\nquit\r\nget alliance/fleet/b\r\nflush_all\r\n",
    )
    .unwrap();
    assert_eq!(s.sent.upstream, b"get alliance/fleet/a\r\nquit\r\n");
    s.send(Flow::Reply, b"END\r\n").unwrap();
    assert_eq!(
        s.sent.client,
        [&b"END\r\n"[..], DENIED].concat(),
        "the denial owed before the quit is delivered before the server closes"
    );
    assert_eq!(
        s.log(),
        vec![
            "Request rebels command=get keys=alliance/fleet/a",
            "Denied  command=get keys=empire/x",
        ],
        "quit is connection control, not a request to log; what follows it is never read"
    );
}

#[test]
fn text_quit_passes_for_a_client_allowed_nothing() {
    let memcache = Memcache::new(MAX_VALUE);
    let rules = RulesPolicy::compile(
        &memcache,
        "nothing",
        &[&[("command", "get"), ("keyExact", "never/stored")]],
    );
    let mut s = Session::new(&memcache, rules);
    s.send(Flow::Request, b"version\r\nquit\r\n").unwrap();
    assert_eq!(s.sent.upstream, b"quit\r\n");
    assert_eq!(s.sent.client, DENIED);
}

#[test]
fn binary_quit_is_answered_after_the_replies_owed_before_it() {
    let mut s = maintenance();
    let requests = [
        binary_request(0x00, b"alliance/fleet/a", b"", 1),
        binary_request(0x00, b"empire/b", b"", 2),
        binary_request(0x07, b"", b"", 3),
        binary_request(0x00, b"alliance/fleet/c", b"", 4),
    ]
    .concat();
    s.send(Flow::Request, &requests).unwrap();
    assert_eq!(
        s.sent.upstream,
        [
            binary_request(0x00, b"alliance/fleet/a", b"", 1),
            binary_request(0x07, b"", b"", 3),
        ]
        .concat()
    );
    let replies = [binary_response(0x00, b"", 1), binary_response(0x07, b"", 3)].concat();
    s.send(Flow::Reply, &replies).unwrap();
    assert_eq!(
        s.sent.client,
        [
            binary_response(0x00, b"", 1),
            binary::denial(0x00, 2).to_vec(),
            binary_response(0x07, b"", 3),
        ]
        .concat()
    );
    assert_eq!(s.log().len(), 2, "QUIT is not logged: {:?}", s.log());
}

#[test]
fn binary_quitq_passes_unanswered_and_ends_the_request_stream() {
    let mut s = maintenance();
    let requests = [
        binary_request(0x00, b"empire/b", b"", 1),
        binary_request(0x17, b"", b"", 2),
        binary_request(0x08, b"", b"", 3),
    ]
    .concat();
    s.send(Flow::Request, &requests).unwrap();
    assert_eq!(s.sent.upstream, binary_request(0x17, b"", b"", 2));
    assert_eq!(s.sent.client, binary::denial(0x00, 1));
    assert_eq!(s.log(), vec!["Denied  command=get keys=empire/b opcode=0"]);
}

#[test]
fn scratch_grown_by_a_long_multiget_is_given_back() {
    let memcache = Memcache::new(MAX_VALUE);
    let rules = RulesPolicy::compile(&memcache, "gets", &[&[("command", "get")]]);
    let meta = axoneme_testkit::meta("127.0.0.11:40000", "127.0.0.1:11211");
    let mut inject = [InjectBuffer::new(1024), InjectBuffer::new(1024)];
    let mut parser = MemcacheParser::new(MAX_VALUE);
    let mut line = b"get".to_vec();
    for key in 0..50_000 {
        line.extend_from_slice(format!(" key-{key}").as_bytes());
    }
    line.extend_from_slice(b"\r\n");
    // Split across two reads: the line is copied whole into scratch, the keys joined for the log.
    let halves: [&[u8]; 2] = [&line[..line.len() / 2], &line[line.len() / 2..]];
    let mut ctx = Context::new(&meta, "memcache", &rules, &NullLog, &mut inject);
    let op = parser.on_data(&mut ctx, Flow::Request, false, Input::new(&halves));
    assert_eq!(op, Op::Pass(line.len()));
    for (name, scratch) in [("line", &parser.line), ("keys", &parser.keys)] {
        assert!(
            scratch.capacity() <= KEPT_CAPACITY,
            "{name} keeps {} bytes",
            scratch.capacity()
        );
    }
}
