//! The datapath plus the memcached parser and a compiled policy must not allocate per request
//! once warm, for text, meta and binary sessions with allowed, denied, multi-key and quiet
//! requests. Counted with a counting global allocator (a count, not a timing).

use axoneme_datapath::{Connection, Env, Limits};
use axoneme_memcache::Memcache;
use axoneme_sdk::{Flow, Protocol};
use axoneme_testkit::{CountingAllocator, Discard, NullLog, RulesPolicy};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations while a connection carries `requests` and `replies` (each a list of reads)
/// 2,000 times, after 100 times of warm-up.
fn allocations(requests: &[&[u8]], replies: &[&[u8]]) -> u64 {
    let memcache = Memcache::default();
    let policy = RulesPolicy::compile(
        &memcache,
        "rebels",
        &[
            &[("command", "writeGroup"), ("keyPrefix", "alliance/fleet/")],
            &[("command", "get"), ("keyRegex", "alliance/fleet/.*")],
        ],
    );
    let meta = axoneme_testkit::meta("10.0.0.11:40000", "10.0.0.1:11211");
    let mut conn = Connection::new(
        memcache.new_parser(&meta),
        meta,
        "memcache",
        Limits::default(),
    );
    let env = Env {
        policy: &policy,
        log: &NullLog,
    };
    let round = |conn: &mut Connection| {
        for (flow, reads) in [(Flow::Request, requests), (Flow::Reply, replies)] {
            for read in reads {
                conn.on_data(flow, read, false, &env, &mut Discard::default())
                    .unwrap();
            }
        }
    };
    for _ in 0..100 {
        round(&mut conn);
    }
    let before = CountingAllocator::count();
    for _ in 0..2_000 {
        round(&mut conn);
    }
    CountingAllocator::count() - before
}

#[test]
fn text_and_meta_sessions_do_not_allocate_once_warm() {
    let requests: &[&[u8]] = &[
        b"get alliance/fleet/a alliance/fleet/b\r\nget empire/x\r\nset alliance/fl",
        b"eet/a 0 0 3\r\nabc\r\nmg alliance/fleet/a v q\r\nmg empire/y v\r\nmn\r\n",
    ];
    let replies: &[&[u8]] = &[
        b"VALUE alliance/fleet/a 0 1\r\nx\r\nEND\r\nSTORED\r\nVA 1\r\n",
        b"x\r\nMN\r\nMN\r\n",
    ];
    assert_eq!(allocations(requests, replies), 0);
}

#[test]
fn binary_sessions_do_not_allocate_once_warm() {
    let get = |opcode: u8, key: &[u8]| {
        let mut packet = vec![
            0x80,
            opcode,
            0,
            key.len() as u8,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            key.len() as u8,
        ];
        packet.extend_from_slice(&[0; 12]);
        packet.extend_from_slice(key);
        packet
    };
    let requests = [
        get(0x00, b"alliance/fleet/a"),
        get(0x09, b"empire/x"),
        get(0x0a, b""),
    ]
    .concat();
    let mut hit = vec![0x81, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    hit.extend_from_slice(&[0; 12]);
    hit.push(b'x');
    let mut noop = vec![0x81, 0x0a];
    noop.extend_from_slice(&[0; 22]);
    let replies = [hit, noop].concat();
    assert_eq!(
        allocations(&[&requests[..10], &requests[10..]], &[&replies]),
        0
    );
}
