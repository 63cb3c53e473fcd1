//! Protocol v5 through the real datapath engine: the handshake into segments, with and without
//! LZ4; envelopes decided one by one inside a segment; envelopes split over segments both ways;
//! the per-request keyspace; prepared statements; corrupt segments.

use axoneme_datapath::{ConnectionError, Limits};
use axoneme_sdk::{ErrorCode, Flow};
use axoneme_testkit::{split_at_points, RulesPolicy, Session};
use proptest::prelude::*;

use crate::frame::{opcode, Header, HEADER_LEN, UNAUTHORIZED, UNPREPARED};
use crate::segment::{self, Format};
use crate::Cassandra;

fn outpost_rules() -> RulesPolicy {
    RulesPolicy::compile(
        &Cassandra::default(),
        "empire",
        &[
            &[("query_action", "select"), ("query_table", "system\\..*")],
            &[
                ("query_action", "insert"),
                ("query_table", "attendance.daily_records"),
            ],
        ],
    )
}

fn envelope(version: u8, stream: i16, opcode: u8, body: &[u8]) -> Vec<u8> {
    let mut e = vec![version, 0];
    e.extend_from_slice(&stream.to_be_bytes());
    e.push(opcode);
    e.extend_from_slice(&(body.len() as u32).to_be_bytes());
    e.extend_from_slice(body);
    e
}

fn string(s: &str) -> Vec<u8> {
    [&(s.len() as u16).to_be_bytes()[..], s.as_bytes()].concat()
}

fn long_string(s: &str) -> Vec<u8> {
    [&(s.len() as i32).to_be_bytes()[..], s.as_bytes()].concat()
}

/// A v5 QUERY, naming `keyspace` for itself when given.
fn query(stream: i16, cql: &str, keyspace: Option<&str>) -> Vec<u8> {
    let mut body = long_string(cql);
    body.extend_from_slice(&1u16.to_be_bytes());
    match keyspace {
        Some(keyspace) => {
            body.extend_from_slice(&0x80u32.to_be_bytes());
            body.extend(string(keyspace));
        }
        None => body.extend_from_slice(&0u32.to_be_bytes()),
    }
    envelope(5, stream, opcode::QUERY, &body)
}

fn segments(format: Format, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    segment::encode(format, payload, &mut out);
    out
}

/// A session past a v5 handshake with `format` (LZ4 asked for in STARTUP when `Lz4`).
fn v5(format: Format, limits: Limits) -> Session {
    let mut s = Session::with_limits(&Cassandra::default(), outpost_rules(), limits);
    let mut options = vec![("CQL_VERSION", "3.0.0")];
    if format == Format::Lz4 {
        options.push(("COMPRESSION", "lz4"));
    }
    let mut body = (options.len() as u16).to_be_bytes().to_vec();
    for (k, v) in options {
        body.extend(string(k));
        body.extend(string(v));
    }
    s.send(Flow::Request, &envelope(5, 0, opcode::STARTUP, &body))
        .unwrap();
    s.send(Flow::Reply, &envelope(0x85, 0, opcode::READY, &[]))
        .unwrap();
    s.sent = Default::default();
    s
}

/// The envelopes in the segments of `wire`, their payloads joined.
fn unframe(format: Format, mut wire: &[u8]) -> Vec<u8> {
    let mut payloads = Vec::new();
    while !wire.is_empty() {
        let header = segment::parse_header(format, wire).unwrap().unwrap();
        let mut scratch = Vec::new();
        payloads.extend_from_slice(segment::decode_payload(&header, wire, &mut scratch).unwrap());
        wire = &wire[header.segment_len()..];
    }
    payloads
}

/// (stream, error code) of each ERROR envelope in `payload`.
fn errors(payload: &[u8]) -> Vec<(i16, u32)> {
    let mut at = 0;
    let mut found = Vec::new();
    while at < payload.len() {
        let header = Header::parse(payload[at..at + HEADER_LEN].try_into().unwrap());
        assert_eq!((header.version, header.response), (5, true));
        let body = &payload[at + HEADER_LEN..];
        if header.opcode == opcode::ERROR {
            found.push((
                header.stream,
                u32::from_be_bytes(body[..4].try_into().unwrap()),
            ));
        }
        at += HEADER_LEN + header.length as usize;
    }
    found
}

#[test]
fn segments_pass_as_they_came_and_denials_are_answered_in_segments() {
    for format in [Format::Plain, Format::Lz4] {
        let mut s = v5(format, Limits::default());
        let allowed = segments(
            format,
            &query(1, "SELECT * FROM system.local WHERE key = 'local'", None),
        );
        s.send(Flow::Request, &allowed).unwrap();
        assert_eq!(s.sent.upstream, allowed, "{format:?}");
        let denied = segments(
            format,
            &query(2, "SELECT * FROM attendance.daily_records", None),
        );
        s.send(Flow::Request, &denied).unwrap();
        assert_eq!(s.sent.upstream, allowed, "{format:?}");
        assert_eq!(
            errors(&unframe(format, &s.sent.client)),
            [(2, UNAUTHORIZED)]
        );
        assert_eq!(
            s.log(),
            [
                "Request empire query_action=select query_table=system.local",
                "Denied  query_action=select query_table=attendance.daily_records",
            ]
        );
    }
}

#[test]
fn a_segment_with_a_denied_envelope_is_replaced_by_one_with_the_others() {
    let insert = "INSERT INTO attendance.daily_records (a) VALUES (1)";
    let a = query(1, insert, None);
    let b = query(2, "DELETE FROM attendance.daily_records WHERE a = 1", None);
    let c = query(3, "SELECT * FROM system.peers", None);
    let d = query(4, &format!("{insert} -- {}\n", "x".repeat(300)), None);
    // A tiny inject buffer: the replacement goes out in several pieces.
    let limits = Limits {
        inject_capacity: 128,
        ..Limits::default()
    };
    for format in [Format::Plain, Format::Lz4] {
        let mut s = v5(format, limits);
        let mixed = segments(
            format,
            &[a.clone(), b.clone(), c.clone(), d.clone()].concat(),
        );
        s.send(Flow::Request, &mixed).unwrap();
        assert_eq!(
            unframe(format, &s.sent.upstream),
            [a.clone(), c.clone(), d.clone()].concat()
        );
        assert_eq!(
            errors(&unframe(format, &s.sent.client)),
            [(2, UNAUTHORIZED)]
        );
        let only_denied = segments(format, &[b.clone(), b.clone()].concat());
        let before = s.sent.upstream.len();
        s.send(Flow::Request, &only_denied).unwrap();
        assert_eq!(s.sent.upstream.len(), before, "nothing to forward");
        assert_eq!(errors(&unframe(format, &s.sent.client)).len(), 3);
    }
}

#[test]
fn split_request_envelopes_pass_or_are_dropped_whole() {
    let blob = "e".repeat(300_000);
    let allowed = query(
        1,
        &format!("INSERT INTO attendance.daily_records (a) VALUES ('{blob}')"),
        None,
    );
    let denied = query(
        2,
        &format!("INSERT INTO attendance.other (a) VALUES ('{blob}')"),
        None,
    );
    for format in [Format::Plain, Format::Lz4] {
        let mut s = v5(format, Limits::default());
        let wire = segments(format, &allowed);
        // Delivered in reads of 16 KiB.
        for chunk in wire.chunks(16 * 1024) {
            s.send(Flow::Request, chunk).unwrap();
        }
        assert_eq!(s.sent.upstream, wire, "{format:?}");
        for chunk in segments(format, &denied).chunks(16 * 1024) {
            s.send(Flow::Request, chunk).unwrap();
        }
        assert_eq!(s.sent.upstream, wire, "{format:?}");
        assert_eq!(
            errors(&unframe(format, &s.sent.client)),
            [(2, UNAUTHORIZED)]
        );
    }
}

#[test]
fn the_per_request_keyspace_never_escapes_a_table_rule() {
    let mut s = v5(Format::Plain, Limits::default());
    let into = "INSERT INTO daily_records (a) VALUES (1)";
    let cases = [
        (query(1, into, Some("attendance")), true),
        (query(2, into, Some("other")), false),
        (
            query(
                3,
                "INSERT INTO attendance.daily_records (a) VALUES (1)",
                Some("other"),
            ),
            true,
        ),
        (
            query(
                4,
                "INSERT INTO other.daily_records (a) VALUES (1)",
                Some("attendance"),
            ),
            false,
        ),
        // Not remembered: the next unqualified name has no keyspace.
        (query(5, into, None), false),
    ];
    for (request, allowed) in cases {
        let wire = segments(Format::Plain, &request);
        let before = s.sent.upstream.len();
        s.send(Flow::Request, &wire).unwrap();
        assert_eq!(s.sent.upstream.len() > before, allowed, "{request:?}");
    }
    assert_eq!(
        errors(&unframe(Format::Plain, &s.sent.client)),
        [(2, UNAUTHORIZED), (4, UNAUTHORIZED), (5, UNAUTHORIZED)]
    );
}

fn prepared_result(stream: i16, id: &[u8]) -> Vec<u8> {
    let body = [
        &4i32.to_be_bytes()[..],
        &(id.len() as u16).to_be_bytes(),
        id,
        &[0, 2, 0xee, 0xff],
        &[0; 12],
    ]
    .concat();
    envelope(0x85, stream, opcode::RESULT, &body)
}

fn execute(stream: i16, id: &[u8]) -> Vec<u8> {
    let body = [
        &(id.len() as u16).to_be_bytes()[..],
        id,
        &[0, 2, 0xee, 0xff],
        &[0, 1, 0, 0, 0, 0],
    ]
    .concat();
    envelope(5, stream, opcode::EXECUTE, &body)
}

#[test]
fn prepared_statements_are_learnt_from_response_segments() {
    for format in [Format::Plain, Format::Lz4] {
        let mut s = v5(format, Limits::default());
        let mut prepare = long_string("INSERT INTO attendance.daily_records (a) VALUES (?)");
        prepare.extend_from_slice(&0u32.to_be_bytes());
        let prepare = envelope(5, 7, opcode::PREPARE, &prepare);
        s.send(Flow::Request, &segments(format, &prepare)).unwrap();
        let result = segments(format, &prepared_result(7, b"\x0a\x0b"));
        s.send(Flow::Reply, &result).unwrap();
        assert_eq!(s.sent.client, result);
        let known = segments(format, &execute(8, b"\x0a\x0b"));
        s.send(Flow::Request, &known).unwrap();
        assert!(s.sent.upstream.ends_with(&known), "{format:?}");
        s.send(Flow::Request, &segments(format, &execute(9, b"\x01")))
            .unwrap();
        let client = unframe(format, &s.sent.client[result.len()..]);
        assert_eq!(errors(&client), [(9, UNPREPARED)]);
    }
}

/// A RESULT envelope of `len` bytes of rows, for stream `stream`.
fn large_result(stream: i16, len: usize) -> Vec<u8> {
    let body = [&2i32.to_be_bytes()[..], &vec![b'r'; len]].concat();
    envelope(0x85, stream, opcode::RESULT, &body)
}

#[test]
fn a_denial_waits_for_a_split_response_to_end() {
    let mut s = v5(Format::Lz4, Limits::default());
    let result = segments(Format::Lz4, &large_result(1, 300_000));
    let header = segment::parse_header(Format::Lz4, &result)
        .unwrap()
        .unwrap();
    let (first, rest) = result.split_at(header.segment_len());
    s.send(Flow::Reply, first).unwrap();
    let denied = segments(
        Format::Lz4,
        &query(2, "DROP TABLE attendance.daily_records", None),
    );
    s.send(Flow::Request, &denied).unwrap();
    assert_eq!(s.sent.client, first, "the denial waits");
    s.send(Flow::Reply, rest).unwrap();
    assert_eq!(&s.sent.client[..result.len()], &result[..]);
    let after = unframe(Format::Lz4, &s.sent.client[result.len()..]);
    assert_eq!(errors(&after), [(2, UNAUTHORIZED)]);
}

#[test]
fn a_prepared_result_split_over_segments_is_read() {
    let mut s = v5(Format::Plain, Limits::default());
    let mut prepare = long_string("SELECT * FROM system.local");
    prepare.extend_from_slice(&0u32.to_be_bytes());
    let prepare = envelope(5, 3, opcode::PREPARE, &prepare);
    s.send(Flow::Request, &segments(Format::Plain, &prepare))
        .unwrap();
    let mut result = prepared_result(3, b"\x42");
    result.extend(vec![0; 200_000]);
    let length = (result.len() - HEADER_LEN) as u32;
    result[5..9].copy_from_slice(&length.to_be_bytes());
    s.send(Flow::Reply, &segments(Format::Plain, &result))
        .unwrap();
    let execute = segments(Format::Plain, &execute(4, b"\x42"));
    s.send(Flow::Request, &execute).unwrap();
    assert!(s.sent.upstream.ends_with(&execute));
}

#[test]
fn corrupt_segments_close_the_connection() {
    let good = segments(Format::Lz4, &query(1, "SELECT * FROM system.local", None));
    let mut bad_header = good.clone();
    bad_header[0] ^= 0x01;
    let mut bad_payload = good.clone();
    bad_payload[Format::Lz4.header_len() + 1] ^= 0x01;
    let split = segments(Format::Plain, &large_result(0, 200_000));
    let first = segment::parse_header(Format::Plain, &split)
        .unwrap()
        .unwrap();
    let whole_reply = segments(Format::Plain, &large_result(1, 10));
    let split_then_whole = [&split[..first.segment_len()], &whole_reply[..]].concat();
    for (flow, bytes) in [
        (Flow::Request, bad_header),
        (Flow::Request, bad_payload.clone()),
        (Flow::Reply, bad_payload),
        (
            Flow::Request,
            segments(Format::Lz4, &query(1, "x", None)[..12]),
        ),
        (
            Flow::Request,
            segments(Format::Lz4, &envelope(4, 1, opcode::OPTIONS, &[])),
        ),
    ] {
        let mut s = v5(Format::Lz4, Limits::default());
        let error = s.send(flow, &bytes).unwrap_err();
        assert!(
            matches!(error, ConnectionError::Parse(e) if e.code == ErrorCode::MalformedFrame || e.code == ErrorCode::Unsupported),
            "{error:?}"
        );
    }
    let mut s = v5(Format::Plain, Limits::default());
    let error = s.send(Flow::Reply, &split_then_whole).unwrap_err();
    assert!(matches!(error, ConnectionError::Parse(e) if e.code == ErrorCode::MalformedFrame));
}

#[test]
fn snappy_is_refused_on_v5() {
    let mut s = Session::new(&Cassandra::default(), outpost_rules());
    let mut body = 1u16.to_be_bytes().to_vec();
    body.extend(string("COMPRESSION"));
    body.extend(string("snappy"));
    s.send(Flow::Request, &envelope(5, 0, opcode::STARTUP, &body))
        .unwrap();
    let error = s
        .send(Flow::Reply, &envelope(0x85, 0, opcode::READY, &[]))
        .unwrap_err();
    assert!(matches!(error, ConnectionError::Parse(e) if e.code == ErrorCode::Unsupported));
}

proptest! {
    #[test]
    fn any_read_boundaries_give_the_same_bytes(points in prop::collection::vec(0usize..2000, 0..12)) {
        let format = Format::Lz4;
        let insert = "INSERT INTO attendance.daily_records (a) VALUES (1)";
        let wire = [
            segments(format, &query(1, insert, None)),
            segments(format, &[query(2, "DROP TABLE x.y", None), query(3, insert, None)].concat()),
            segments(format, &query(4, &format!("{insert} -- {}", "z".repeat(500)), None)),
        ]
        .concat();
        let mut whole = v5(format, Limits::default());
        whole.send(Flow::Request, &wire).unwrap();
        let mut cut = v5(format, Limits::default());
        for chunk in split_at_points(&wire, points) {
            cut.send(Flow::Request, chunk).unwrap();
        }
        prop_assert_eq!(&cut.sent.upstream, &whole.sent.upstream);
        prop_assert_eq!(&cut.sent.client, &whole.sent.client);
    }
}

fn set_keyspace_result(stream: i16, keyspace: &str) -> Vec<u8> {
    let body = [&3i32.to_be_bytes()[..], &string(keyspace)].concat();
    envelope(0x85, stream, opcode::RESULT, &body)
}

#[test]
fn segments_behind_an_unanswered_use_wait_and_a_use_in_the_same_segment_counts_both_keyspaces() {
    for format in [Format::Plain, Format::Lz4] {
        let mut s = v5(format, Limits::default());
        // In one segment: USE, then an unqualified insert, judged under both keyspaces (no
        // keyspace is set yet, so only under the USE's).
        let first = segments(
            format,
            &[
                query(1, "USE attendance", None),
                query(2, "INSERT INTO daily_records(a) VALUES(1)", None),
            ]
            .concat(),
        );
        s.send(Flow::Request, &first).unwrap();
        assert_eq!(s.sent.upstream, first, "{format:?}");
        // The next segment waits for the USE's answer.
        let second = segments(format, &query(3, "SELECT * FROM local", None));
        s.send(Flow::Request, &second).unwrap();
        assert_eq!(s.sent.upstream, first, "{format:?}");
        let answers = segments(
            format,
            &[
                set_keyspace_result(1, "system"),
                envelope(0x85, 2, opcode::RESULT, &1i32.to_be_bytes()),
            ]
            .concat(),
        );
        s.send(Flow::Reply, &answers).unwrap();
        // The server set `system`: the SELECT is judged against it and passes.
        assert_eq!(s.sent.upstream, [first, second].concat(), "{format:?}");
        assert_eq!(
            s.log(),
            [
                "Request  query_action=use query_table=",
                "Request empire query_action=insert query_table=attendance.daily_records",
                "Request empire query_action=select query_table=system.local",
            ]
        );
        // Now a USE and an unqualified name in one segment: both keyspaces must allow it.
        let mixed = segments(
            format,
            &[
                query(4, "USE attendance", None),
                query(5, "SELECT * FROM local", None),
            ]
            .concat(),
        );
        s.send(Flow::Request, &mixed).unwrap();
        assert_eq!(
            &s.log()[3..],
            [
                "Request  query_action=use query_table=",
                "Denied  query_action=select query_table=system.local \
                 status=dropped: another statement of the request was denied",
                "Denied  query_action=select query_table=attendance.local",
            ]
        );
        assert_eq!(
            errors(&unframe(format, &s.sent.client)[answers_len(format, &answers)..]),
            [(5, UNAUTHORIZED)]
        );
    }
}

/// The length of the payloads of `wire`'s segments.
fn answers_len(format: Format, wire: &[u8]) -> usize {
    unframe(format, wire).len()
}

#[test]
fn a_request_in_the_segment_of_a_use_and_on_its_stream_closes_the_connection() {
    // Its answer could be taken for the USE's and let the Set_keyspace pass unread.
    for format in [Format::Plain, Format::Lz4] {
        let mut s = v5(format, Limits::default());
        let segment = segments(
            format,
            &[
                query(4, "USE secret", None),
                query(4, "SELECT * FROM system.local", None),
            ]
            .concat(),
        );
        let error = s.send(Flow::Request, &segment).unwrap_err();
        assert!(
            matches!(error, ConnectionError::Parse(e) if e.code == ErrorCode::MalformedFrame),
            "{format:?}: {error:?}"
        );
        assert!(s.sent.upstream.is_empty(), "{format:?}");
    }
}

#[test]
fn requests_sent_before_the_answer_to_a_v5_startup_close_the_connection() {
    // A client may send segments only once READY has come. One sent earlier reaches a server
    // that may read it as a segment, but would be read here as a v3-v5 frame: this one, found
    // by its length, has a header that reads as a frame of an opcode that passes unread.
    let inspected = [
        opcode::STARTUP,
        opcode::QUERY,
        opcode::PREPARE,
        opcode::EXECUTE,
        opcode::BATCH,
    ];
    // The segment header's first byte is the low byte of the payload's length: a version.
    let cql = "DELETE FROM secret.vault WHERE k = 1";
    let base = query(1, cql, None).len();
    let disguised = (1..512)
        .flat_map(|high| (3..=5).map(move |version| high * 256 + version))
        .map(|length| {
            let padded = format!("{cql}{}", " ".repeat(length - base));
            segments(Format::Plain, &query(1, &padded, None))
        })
        .find(|wire| {
            let header = Header::parse(wire[..HEADER_LEN].try_into().unwrap());
            (3..=5).contains(&header.version)
                && !header.response
                && !inspected.contains(&header.opcode)
                && (header.length as usize) < crate::DEFAULT_MAX_FRAME
        })
        .expect("a segment whose header reads as a frame that passes");
    let mut s = Session::new(&Cassandra::default(), outpost_rules());
    let body = [
        1u16.to_be_bytes().to_vec(),
        string("CQL_VERSION"),
        string("3.0.0"),
    ]
    .concat();
    let startup = envelope(5, 0, opcode::STARTUP, &body);
    let error = s
        .send(Flow::Request, &[startup.clone(), disguised].concat())
        .unwrap_err();
    assert!(
        matches!(error, ConnectionError::Parse(e) if e.code == ErrorCode::MalformedFrame),
        "{error:?}"
    );
    assert_eq!(s.sent.upstream, startup);
}

#[test]
fn a_second_use_in_the_segment_of_an_unanswered_one_is_refused() {
    // Their answers may come in another order than the server ran them: which keyspace it
    // ends in would not be known.
    for format in [Format::Plain, Format::Lz4] {
        let mut s = v5(format, Limits::default());
        let first = query(1, "USE system", None);
        let segment = segments(
            format,
            &[first.clone(), query(2, "USE secret", None)].concat(),
        );
        s.send(Flow::Request, &segment).unwrap();
        assert_eq!(unframe(format, &s.sent.upstream), first, "{format:?}");
        assert_eq!(
            errors(&unframe(format, &s.sent.client)),
            [(2, UNAUTHORIZED)]
        );
        assert_eq!(
            s.log(),
            [
                "Request  query_action=use query_table=",
                "Denied  error=use: another USE is not yet answered",
            ]
        );
    }
}
