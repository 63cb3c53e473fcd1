//! Cilium proxylib's own memcached test cases, replayed through Axoneme's memcached parser and
//! the real datapath engine.
//!
//! The cases come from cilium/proxy: `TestMemcache` in `proxylib/libcilium/proxylib_memcached_test.go`
//! (its text and binary subtests, each a policy of one `l7` rule, the requests and replies fed to
//! `OnData`, and the operations expected back) and `TestMemcacheGetKey` in
//! `proxylib/memcached/binary/parser_test.go` (which key a binary request carries). Each test
//! names its Go case. The Go operations are restated as what reaches each side: PASS of a
//! request is its bytes upstream, DROP is nothing upstream, INJECT (and the inject buffer) is
//! bytes to the client, MORE is nothing yet. Where the Go harness handed a parser the whole
//! input again after MORE, here only the new bytes are delivered, as the datapath keeps the rest.
//!
//! The Go cases do not check the access log; these tests check Axoneme's entries, one per
//! request and none for replies (deliberate difference: Cilium logged a `Response` entry for
//! every reply). Axoneme's other deliberate differences from Cilium (cilium-compat.md) that
//! these cases touch are named where they apply; every other expectation is Cilium's.

use axoneme_memcache::Memcache;
use axoneme_sdk::{ErrorCode, Flow};
use axoneme_testkit::{Emitted, RulesPolicy, Session};

/// The name the Go cases' policy has (their endpoint's address).
const POLICY: &str = "1.1.1.1";

/// The text denial.
const TEXT_DENIED: &[u8] = b"CLIENT_ERROR access denied\r\n";

/// One `l7` rule: its key/value pairs.
type Rule = [(&'static str, &'static str)];

/// A connection under a policy of the single `l7` rule `rule`.
fn session(rule: &[(&str, &str)]) -> Session {
    let memcache = Memcache::default();
    let policy = RulesPolicy::compile(&memcache, POLICY, &[rule]);
    Session::new(&memcache, policy)
}

// The Go cases' text requests and replies.
const SET_HELLO_TEXT: &[u8] = b"set key 0 0 5\r\nhello\r\n";
const GET_KEYS_TEXT: &[u8] = b"get key1 key2 key3\r\n";
const GAT_KEYS_TEXT: &[u8] = b"gat 5 key1 key2 key3\r\n";
const GET_RESPONSE: &[u8] = b"VALUE key3 0 4\r\nxDDD\r\nVALUE key4 0 3\r\nxDD\r\nEND\r\n";
const DELETE_TEXT: &[u8] = b"delete key\r\n";
const INCR_TEXT: &[u8] = b"incr key 5\r\n";
const TOUCH_TEXT: &[u8] = b"touch key 55\r\n";
const SLABS_TEXT: &[u8] = b"slabs automove 1\r\n";
const OK_TEXT: &[u8] = b"OK\r\n";
const LRU_CRAWLER_TEXT: &[u8] = b"lru_crawler metadump all\r\n";
const STATS_TEXT: &[u8] = b"stats\r\n";
const FLUSH_ALL_TEXT: &[u8] = b"flush_all 15\r\n";
const WATCH_TEXT: &[u8] = b"watch mutations\r\n";
const WATCH_REPLY_LINES: [&[u8]; 6] = [
    b"OK\r\n",
    b"ts=1538135970.404892 gid=5 type=item_store key=key3 status=stored cmd=set ttl=500 clsid=1\r\n",
    b"ts=1538135970.404898 gid=6 type=item_store key=key4 status=stored cmd=set ttl=500 clsid=1\r\n",
    b"ts=1538135974.340708 gid=7 type=item_store key=key3 status=stored cmd=set ttl=500 clsid=1\r\n",
    b"ts=1538135974.340714 gid=8 type=item_store key=key4 status=stored cmd=set ttl=500 clsid=1\r\n",
    b"ts=1538135976.436863 gid=9 type=item_store key=key3 status=stored cmd=set ttl=500 clsid=1\r\n",
];
const LRU_CRAWLER_RESPONSE: &[u8] =
    b"key=key3 exp=1538047402 la=1538046902 cas=1 fetch=no cls=1 size=67\r\n\
key=key4 exp=1538047402 la=1538046902 cas=2 fetch=no cls=1 size=66\r\n\
END\r\n";
const STATS_RESPONSE: &[u8] = b"STAT evictions 0\r\n\
STAT reclaimed 2\r\n\
STAT crawler_reclaimed\r\n\
STAT crawler_items_checked 18\r\n\
STAT lrutail_reflocked 0\r\n\
STAT moves_to_cold 6\r\n\
STAT moves_to_warm 0\r\n\
STAT moves_within_lru 0\r\n\
STAT direct_reclaims 0\r\n\
STAT lru_bumps_dropped 0\r\n\
END\r\n";
const NOT_FOUND: &[u8] = b"NOT_FOUND\r\n";
const STORED: &[u8] = b"STORED\r\n";

/// The rule most Go cases use: `command` with an empty `keyExact`, which constrains nothing.
fn any_key(command: &'static str) -> [(&'static str, &'static str); 2] {
    [("keyExact", ""), ("command", command)]
}

/// TestMemcache's text cases in which every request is allowed
/// (proxylib/libcilium/proxylib_memcached_test.go): the requests pass upstream, the server's
/// reply (where the case has one) passes to the client, and each request is logged.
#[test]
fn text_requests_pass() {
    let two_gets = [GET_KEYS_TEXT, GET_KEYS_TEXT].concat();
    let two_gats = [GAT_KEYS_TEXT, GAT_KEYS_TEXT].concat();
    let two_responses = [GET_RESPONSE, GET_RESPONSE].concat();
    let watch_reply = WATCH_REPLY_LINES.concat();
    let get = "Request 1.1.1.1 command=get keys=key1, key2, key3";
    let gat = "Request 1.1.1.1 command=gat keys=key1, key2, key3";
    // The Go case, its rule, the requests (one read), the reply (one read, where the case has
    // one) and the log.
    type Case<'a> = (&'a str, &'a Rule, &'a [u8], Option<&'a [u8]>, &'a [&'a str]);
    let cases: [Case; 10] = [
        (
            "text set pass",
            &any_key("set"),
            SET_HELLO_TEXT,
            Some(STORED),
            &["Request 1.1.1.1 command=set keys=key"],
        ),
        (
            "text get pass",
            &any_key("get"),
            &two_gets,
            Some(&two_responses),
            &[get, get],
        ),
        (
            "text gat pass",
            &any_key("gat"),
            &two_gats,
            Some(&two_responses),
            &[gat, gat],
        ),
        (
            "text delete pass",
            &any_key("delete"),
            DELETE_TEXT,
            Some(NOT_FOUND),
            &["Request 1.1.1.1 command=delete keys=key"],
        ),
        (
            "text incr pass",
            &any_key("incr"),
            INCR_TEXT,
            Some(NOT_FOUND),
            &["Request 1.1.1.1 command=incr keys=key"],
        ),
        (
            "text touch pass",
            &[("keyExact", "key"), ("command", "touch")],
            TOUCH_TEXT,
            Some(NOT_FOUND),
            &["Request 1.1.1.1 command=touch keys=key"],
        ),
        (
            "text slabs pass",
            &[("command", "slabs")],
            SLABS_TEXT,
            Some(OK_TEXT),
            &["Request 1.1.1.1 command=slabs keys="],
        ),
        (
            "text flush_all pass",
            &[("command", "flush_all")],
            FLUSH_ALL_TEXT,
            None,
            &["Request 1.1.1.1 command=flush_all keys="],
        ),
        // After `watch`, every reply line passes.
        (
            "text watch passed",
            &[("command", "watch")],
            WATCH_TEXT,
            Some(&watch_reply),
            &["Request 1.1.1.1 command=watch keys="],
        ),
        // An `l7` rule without keys allows every request.
        (
            "text set pass on empty rule",
            &[],
            SET_HELLO_TEXT,
            Some(STORED),
            &["Request 1.1.1.1 command=set keys=key"],
        ),
    ];
    for (case, rule, requests, reply, log) in cases {
        let mut s = session(rule);
        assert_eq!(
            s.deliver(Flow::Request, &[requests]),
            Emitted::new(requests, b""),
            "{case}"
        );
        if let Some(reply) = reply {
            assert_eq!(
                s.deliver(Flow::Reply, &[reply]),
                Emitted::new(b"", reply),
                "{case}"
            );
        }
        assert_eq!(s.log(), log, "{case}");
    }
}

/// TestMemcache's text cases in which the request is denied
/// (proxylib/libcilium/proxylib_memcached_test.go): it is dropped, answered with the text
/// denial, and logged as denied.
#[test]
fn text_requests_denied() {
    let touch_other_key: &Rule = &[("keyExact", "otherKey"), ("command", "touch")];
    // The Go case, its rule, the request and its log entry.
    let cases: [(&str, &Rule, &[u8], &str); 8] = [
        (
            "text set drop",
            &[("keyExact", "trolo"), ("command", "set")],
            SET_HELLO_TEXT,
            "Denied  command=set keys=key",
        ),
        (
            "text get drop",
            &any_key("set"),
            GET_KEYS_TEXT,
            "Denied  command=get keys=key1, key2, key3",
        ),
        (
            "text gat drop",
            &any_key("set"),
            GAT_KEYS_TEXT,
            "Denied  command=gat keys=key1, key2, key3",
        ),
        (
            "text delete drop",
            &any_key("set"),
            DELETE_TEXT,
            "Denied  command=delete keys=key",
        ),
        (
            "text incr drop",
            &[("keyExact", "otherKey"), ("command", "incr")],
            INCR_TEXT,
            "Denied  command=incr keys=key",
        ),
        (
            "text touch drop",
            touch_other_key,
            TOUCH_TEXT,
            "Denied  command=touch keys=key",
        ),
        (
            "text slabs drop",
            touch_other_key,
            SLABS_TEXT,
            "Denied  command=slabs keys=",
        ),
        (
            "text flush_all denied",
            &[("command", "get")],
            FLUSH_ALL_TEXT,
            "Denied  command=flush_all keys=",
        ),
    ];
    for (case, rule, request, entry) in cases {
        let mut s = session(rule);
        assert_eq!(
            s.deliver(Flow::Request, &[request]),
            Emitted::new(b"", TEXT_DENIED),
            "{case}: nothing is owed before the denial: it is sent at once"
        );
        assert_eq!(s.log(), [entry], "{case}");
    }
}

/// TestMemcache "text lru_crawler response req more and pass" and "text stats response req
/// more and pass" (proxylib/libcilium/proxylib_memcached_test.go): a reply is passed only once
/// it is whole.
#[test]
fn text_response_req_more_and_pass() {
    // The Go case, the command its rule allows, the request, the reply and the request's entry.
    let cases = [
        (
            "text lru_crawler response req more and pass",
            "lru_crawler",
            LRU_CRAWLER_TEXT,
            LRU_CRAWLER_RESPONSE,
            "Request 1.1.1.1 command=lru_crawler keys=",
        ),
        (
            "text stats response req more and pass",
            "stats",
            STATS_TEXT,
            STATS_RESPONSE,
            "Request 1.1.1.1 command=stats keys=",
        ),
    ];
    for (case, command, request, response, entry) in cases {
        let mut s = session(&[("command", command)]);
        assert_eq!(
            s.deliver(Flow::Request, &[request]),
            Emitted::new(request, b""),
            "{case}"
        );
        let (head, rest) = response.split_at(5);
        assert_eq!(
            s.deliver(Flow::Reply, &[head]),
            Emitted::nothing(),
            "{case}"
        );
        assert_eq!(
            s.deliver(Flow::Reply, &[rest]),
            Emitted::new(b"", response),
            "{case}"
        );
        assert_eq!(s.log(), [entry], "{case}");
    }
}

// The Go cases' binary packets.

/// GET of the key `Hello`, opaque 0.
const GET_HELLO: [u8; 29] = [
    0x80, 0x00, 0x00, 0x05, // magic, GET, key length 5
    0x00, 0x00, 0x00, 0x00, // no extras, data type, vbucket
    0x00, 0x00, 0x00, 0x05, // body length 5
    0x00, 0x00, 0x00, 0x00, // opaque
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // CAS
    b'H', b'e', b'l', b'l', b'o',
];

/// A GET response: flags 0 and the value `World`.
const GET_HELLO_RESP: [u8; 33] = [
    0x81, 0x00, 0x00, 0x00, // magic, GET, no key
    0x04, 0x00, 0x00, 0x00, // 4 bytes of extras, data type, status 0
    0x00, 0x00, 0x00, 0x09, // body length 9
    0x00, 0x00, 0x00, 0x00, // opaque
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // CAS
    0x00, 0x00, 0x00, 0x00, // flags
    b'W', b'o', b'r', b'l', b'd',
];

/// SET of the key `Hello` to `World`, flags and expiry 0.
const SET_HELLO: [u8; 42] = [
    0x80, 0x01, 0x00, 0x05, // magic, SET, key length 5
    0x08, 0x00, 0x00, 0x00, // 8 bytes of extras, data type, vbucket
    0x00, 0x00, 0x00, 0x12, // body length 18
    0x00, 0x00, 0x00, 0x00, // opaque
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // CAS
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // flags, expiry
    b'H', b'e', b'l', b'l', b'o', b'W', b'o', b'r', b'l', b'd',
];

/// The denial of a GET with opaque 0: status 0x0008, body `access denied`. Axoneme copies the
/// request's opcode and opaque into it; both are 0 here, so these are also the bytes Cilium
/// sent.
const BINARY_DENIED_GET: [u8; 37] = [
    0x81, 0x00, 0x00, 0x00, // magic, GET, no key
    0x00, 0x00, 0x00, 0x08, // no extras, data type, status 0x0008
    0x00, 0x00, 0x00, 0x0d, // body length 13
    0x00, 0x00, 0x00, 0x00, // opaque
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // CAS
    b'a', b'c', b'c', b'e', b's', b's', b' ', b'd', b'e', b'n', b'i', b'e', b'd',
];

/// TestMemcache "bin get pass exact key", "bin get pass prefix key" and "bin get pass regex key"
/// (proxylib/libcilium/proxylib_memcached_test.go).
///
/// Binary entries carry `command`, `keys` and `opcode` (deliberate difference: Cilium logged
/// `opcode` and `key`, under the proto `binarymemcached`).
#[test]
fn bin_get_pass_exact_prefix_and_regex_key() {
    for (case, key_rule) in [
        ("bin get pass exact key", ("keyExact", "Hello")),
        ("bin get pass prefix key", ("keyPrefix", "Hell")),
        ("bin get pass regex key", ("keyRegex", "^.el.o$")),
    ] {
        let mut s = session(&[key_rule, ("command", "get")]);
        assert_eq!(
            s.deliver(Flow::Request, &[&GET_HELLO]),
            Emitted::new(&GET_HELLO, b""),
            "{case}"
        );
        assert_eq!(
            s.log(),
            ["Request 1.1.1.1 command=get keys=Hello opcode=0"],
            "{case}"
        );
    }
}

/// TestMemcache "bin get drop" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn bin_get_drop() {
    let mut s = session(&any_key("set"));
    assert_eq!(
        s.deliver(Flow::Request, &[&GET_HELLO]),
        Emitted::new(b"", &BINARY_DENIED_GET)
    );
    assert_eq!(s.log(), ["Denied  command=get keys=Hello opcode=0"]);
}

/// TestMemcache "bin get split" (proxylib/libcilium/proxylib_memcached_test.go): a packet in two
/// reads.
#[test]
fn bin_get_split() {
    let mut s = session(&any_key("get"));
    assert_eq!(
        s.deliver(Flow::Request, &[&GET_HELLO[..10], &GET_HELLO[10..]]),
        Emitted::new(&GET_HELLO, b"")
    );
    assert_eq!(s.log(), ["Request 1.1.1.1 command=get keys=Hello opcode=0"]);
}

/// TestMemcache's cases in which a request is not yet whole
/// (proxylib/libcilium/proxylib_memcached_test.go): nothing is sent and nothing is logged.
#[test]
fn requests_not_yet_whole() {
    // The Go case, the command its rule allows (with any key) and the partial request.
    let cases: [(&str, &str, &[u8]); 5] = [
        // The first five bytes of a reply line, sent as a request, are not yet a command.
        ("text get more", "get", &GET_RESPONSE[..5]),
        ("text gat more", "gat", &GET_RESPONSE[..5]),
        // A command line without its final `\n`.
        (
            "text partial linefeed",
            "set",
            &GET_KEYS_TEXT[..GET_KEYS_TEXT.len() - 1],
        ),
        // Ten bytes of a header.
        ("bin get more", "get", &GET_HELLO[..10]),
        // The header and two bytes of the key.
        ("bin get remaining key", "get", &GET_HELLO[..26]),
    ];
    for (case, command, partial) in cases {
        let mut s = session(&any_key(command));
        assert_eq!(
            s.deliver(Flow::Request, &[partial]),
            Emitted::nothing(),
            "{case}"
        );
        assert!(s.log().is_empty(), "{case}: {:?}", s.log());
    }
}

/// TestMemcache "bin set drop and allow" (proxylib/libcilium/proxylib_memcached_test.go): the
/// denial of the GET waits for the reply owed to the SET before it.
#[test]
fn bin_set_drop_and_allow() {
    let mut s = session(&any_key("set"));
    let requests = [&SET_HELLO[..], &GET_HELLO[..]].concat();
    assert_eq!(
        s.deliver(Flow::Request, &[&requests]),
        Emitted::new(&SET_HELLO, b"")
    );
    assert_eq!(
        s.deliver(Flow::Reply, &[&GET_HELLO_RESP]),
        Emitted::new(b"", &[&GET_HELLO_RESP[..], &BINARY_DENIED_GET].concat())
    );
    assert_eq!(
        s.log(),
        [
            "Request 1.1.1.1 command=set keys=Hello opcode=1",
            "Denied  command=get keys=Hello opcode=0",
        ]
    );
}

/// A binary request of `opcode` with `extras`, `key` and a body length of `body_len`.
fn binary_packet(opcode: u8, extras: &[u8], key: &[u8], body_len: u32) -> Vec<u8> {
    let mut packet = vec![0x80, opcode];
    packet.extend_from_slice(&(key.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[extras.len() as u8, 0, 0, 0]);
    packet.extend_from_slice(&body_len.to_be_bytes());
    packet.extend_from_slice(&[0; 12]);
    packet.extend_from_slice(extras);
    packet.extend_from_slice(key);
    packet
}

/// TestMemcacheGetKey (proxylib/memcached/binary/parser_test.go), first packet: a GET whose key
/// `Test1` follows the header.
#[test]
fn get_key_right_after_the_header() {
    let packet = binary_packet(0x00, b"", b"Test1", 5);
    let mut s = session(&[("command", "get"), ("keyExact", "Test1")]);
    assert_eq!(
        s.deliver(Flow::Request, &[&packet]),
        Emitted::new(&packet, b"")
    );
    assert_eq!(s.log(), ["Request 1.1.1.1 command=get keys=Test1 opcode=0"]);
}

/// TestMemcacheGetKey (proxylib/memcached/binary/parser_test.go), second packet: the key `Test1`
/// after four bytes of extras, in a packet whose body length (5) leaves no room for the extras.
///
/// Malformed frames close the connection and are logged (deliberate difference: Cilium read
/// the key past the stated body and passed five bytes, leaving the rest to be read as a new
/// packet). With a body length that holds extras and key, the key is `Test1`.
#[test]
fn get_key_after_extras() {
    let short_body = binary_packet(0x00, b"extr", b"Test1", 5);
    let mut s = session(&[("command", "get"), ("keyExact", "Test1")]);
    s.assert_refuses(&short_body, ErrorCode::InvalidFrameLength);

    let whole_body = binary_packet(0x00, b"extr", b"Test1", 9);
    let mut s = session(&[("command", "get"), ("keyExact", "Test1")]);
    assert_eq!(
        s.deliver(Flow::Request, &[&whole_body]),
        Emitted::new(&whole_body, b"")
    );
    assert_eq!(s.log(), ["Request 1.1.1.1 command=get keys=Test1 opcode=0"]);
}

/// TestMemcacheGetKey (proxylib/memcached/binary/parser_test.go), third packet: a FLUSH with
/// four bytes of extras (an expiry of 7200 s) and no key.
#[test]
fn get_key_of_a_request_without_one() {
    let packet = binary_packet(0x08, &[0x00, 0x00, 0x1c, 0x20], b"", 4);
    let mut s = session(&[("command", "flush_all")]);
    assert_eq!(
        s.deliver(Flow::Request, &[&packet]),
        Emitted::new(&packet, b"")
    );
    assert_eq!(
        s.log(),
        ["Request 1.1.1.1 command=flush_all keys= opcode=8"]
    );
}
