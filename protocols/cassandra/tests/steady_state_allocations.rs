//! The datapath plus the Cassandra parser and a compiled policy must not allocate per allowed
//! request once warm: QUERY, EXECUTE of a prepared statement and BATCH, on protocol v4 and on v5
//! in segments with and without LZ4. Counted with a counting global allocator (a count, not a
//! timing).

use axoneme_cassandra::frame::opcode;
use axoneme_cassandra::segment::{self, Format};
use axoneme_cassandra::Cassandra;
use axoneme_datapath::{Connection, Env, Limits};
use axoneme_sdk::{Flow, Protocol};
use axoneme_testkit::{CountingAllocator, Discard, NullLog, RulesPolicy};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const INSERT: &str =
    "INSERT INTO attendance.daily_records (loc, creation, present) VALUES (?, now(), ?)";

fn envelope(version: u8, stream: i16, opcode: u8, body: &[u8]) -> Vec<u8> {
    let mut e = vec![version, 0];
    e.extend_from_slice(&stream.to_be_bytes());
    e.push(opcode);
    e.extend_from_slice(&(body.len() as u32).to_be_bytes());
    e.extend_from_slice(body);
    e
}

fn long_string(s: &str) -> Vec<u8> {
    [&(s.len() as i32).to_be_bytes()[..], s.as_bytes()].concat()
}

/// Two bound values: `<n><value><value>`.
fn values() -> Vec<u8> {
    let mut v = 2u16.to_be_bytes().to_vec();
    for value in [&b"endor"[..], &[1]] {
        v.extend_from_slice(&(value.len() as i32).to_be_bytes());
        v.extend_from_slice(value);
    }
    v
}

/// `<consistency><flags>` with the values flag (flags an [int] in v5), then the values.
fn parameters(version: u8) -> Vec<u8> {
    let mut p = vec![0, 1];
    match version {
        5 => p.extend_from_slice(&1u32.to_be_bytes()),
        _ => p.push(1),
    }
    p.extend(values());
    p
}

/// The requests of one round (QUERY, EXECUTE, BATCH), and the replies to them.
fn round(version: u8) -> (Vec<u8>, Vec<u8>) {
    let id: &[u8] = b"\x0a\x0b";
    let mut execute = [&(id.len() as u16).to_be_bytes()[..], id].concat();
    if version == 5 {
        // The result metadata id.
        execute.extend_from_slice(&[0, 1, 0xee]);
    }
    execute.extend(parameters(version));
    let mut batch = vec![0u8, 0, 3];
    for _ in 0..3 {
        batch.push(0);
        batch.extend(long_string(INSERT));
        batch.extend(values());
    }
    batch.extend_from_slice(&[0, 1]);
    batch.extend_from_slice(if version == 5 {
        &[0, 0, 0, 0][..]
    } else {
        &[0]
    });
    let query = [long_string(INSERT), parameters(version)].concat();
    let requests = [
        envelope(version, 1, opcode::QUERY, &query),
        envelope(version, 2, opcode::EXECUTE, &execute),
        envelope(version, 3, opcode::BATCH, &batch),
    ];
    let void = 1i32.to_be_bytes();
    let replies: Vec<Vec<u8>> = (1..=3)
        .map(|stream| envelope(0x80 | version, stream, opcode::RESULT, &void))
        .collect();
    (requests.concat(), replies.concat())
}

fn startup(version: u8, compression: Option<&str>) -> Vec<u8> {
    let options: Vec<(&str, &str)> = [("CQL_VERSION", "3.0.0")]
        .into_iter()
        .chain(compression.map(|c| ("COMPRESSION", c)))
        .collect();
    let mut body = (options.len() as u16).to_be_bytes().to_vec();
    for (key, value) in options {
        for s in [key, value] {
            body.extend_from_slice(&(s.len() as u16).to_be_bytes());
            body.extend_from_slice(s.as_bytes());
        }
    }
    envelope(version, 0, opcode::STARTUP, &body)
}

/// Allocations while a connection (past its handshake, with the insert prepared) carries a
/// round 2,000 times after 100 times of warm-up, everything after the handshake wrapped by
/// `frame`.
fn allocations(version: u8, compression: Option<&str>, frame: impl Fn(&[u8]) -> Vec<u8>) -> u64 {
    let cassandra = Cassandra::default();
    let policy = RulesPolicy::compile(
        &cassandra,
        "empire",
        &[&[
            ("query_action", "insert"),
            ("query_table", "attendance.daily_records"),
        ]],
    );
    let meta = axoneme_testkit::meta("10.0.0.31:40000", "10.0.0.1:9042");
    let mut conn = Connection::new(
        cassandra.new_parser(&meta),
        meta,
        "cassandra",
        Limits::default(),
    );
    let env = Env {
        policy: &policy,
        log: &NullLog,
    };
    let send = |conn: &mut Connection, flow: Flow, bytes: &[u8]| {
        let mut sink = Discard::default();
        conn.on_data(flow, bytes, false, &env, &mut sink).unwrap();
        assert!(sink.0 > 0, "nothing was forwarded");
    };
    send(&mut conn, Flow::Request, &startup(version, compression));
    let ready = envelope(0x80 | version, 0, opcode::READY, &[]);
    send(&mut conn, Flow::Reply, &ready);
    let mut prepare = long_string(INSERT);
    if version == 5 {
        prepare.extend_from_slice(&0u32.to_be_bytes());
    }
    let prepare = envelope(version, 9, opcode::PREPARE, &prepare);
    send(&mut conn, Flow::Request, &frame(&prepare));
    let mut prepared = [&4i32.to_be_bytes()[..], &[0, 2, 0x0a, 0x0b]].concat();
    if version == 5 {
        prepared.extend_from_slice(&[0, 1, 0xee]);
    }
    prepared.extend_from_slice(&[0; 12]);
    let prepared = envelope(0x80 | version, 9, opcode::RESULT, &prepared);
    send(&mut conn, Flow::Reply, &frame(&prepared));
    let (requests, replies) = round(version);
    let (requests, replies) = (frame(&requests), frame(&replies));
    let carry = |conn: &mut Connection| {
        send(conn, Flow::Request, &requests);
        send(conn, Flow::Reply, &replies);
    };
    for _ in 0..100 {
        carry(&mut conn);
    }
    let before = CountingAllocator::count();
    for _ in 0..2_000 {
        carry(&mut conn);
    }
    CountingAllocator::count() - before
}

#[test]
fn v4_frames_do_not_allocate_once_warm() {
    assert_eq!(allocations(4, None, <[u8]>::to_vec), 0);
}

#[test]
fn v5_segments_do_not_allocate_once_warm() {
    for (format, compression) in [(Format::Plain, None), (Format::Lz4, Some("lz4"))] {
        let framed = |payload: &[u8]| {
            let mut out = Vec::new();
            segment::encode(format, payload, &mut out);
            out
        };
        assert_eq!(allocations(5, compression, framed), 0, "{format:?}");
    }
}
