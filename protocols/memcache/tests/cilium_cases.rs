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

use std::fmt;

use axoneme_datapath::ConnectionError;
use axoneme_memcache::Memcache;
use axoneme_sdk::{ErrorCode, Flow};
use axoneme_testkit::{RulesPolicy, Session};

/// The name the Go cases' policy has (their endpoint's address).
const POLICY: &str = "1.1.1.1";

/// The text denial.
const TEXT_DENIED: &[u8] = b"CLIENT_ERROR access denied\r\n";

/// A connection under a policy of the single `l7` rule `rule`.
fn session(rule: &[(&str, &str)]) -> Session {
    let memcache = Memcache::default();
    let policy = RulesPolicy::compile(&memcache, POLICY, &[rule]);
    Session::new(&memcache, policy)
}

/// What one `OnData` call of a Go case made the proxy send on each side.
#[derive(PartialEq, Eq)]
struct Emitted {
    upstream: Vec<u8>,
    client: Vec<u8>,
}

impl fmt::Debug for Emitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "upstream \"{}\", client \"{}\"",
            self.upstream.escape_ascii(),
            self.client.escape_ascii()
        )
    }
}

/// Bytes sent upstream and to the client.
fn emitted(upstream: &[u8], client: &[u8]) -> Emitted {
    Emitted {
        upstream: upstream.to_vec(),
        client: client.to_vec(),
    }
}

/// Delivers `reads` on `flow`, one after another, and returns what they made the proxy send.
fn deliver(s: &mut Session, flow: Flow, reads: &[&[u8]]) -> Emitted {
    let (upstream, client) = (s.sent.upstream.len(), s.sent.client.len());
    for read in reads {
        s.send(flow, read).expect("the connection stays open");
    }
    Emitted {
        upstream: s.sent.upstream[upstream..].to_vec(),
        client: s.sent.client[client..].to_vec(),
    }
}

/// Nothing sent on either side.
fn nothing() -> Emitted {
    emitted(b"", b"")
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

/// TestMemcache "text set pass" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_set_pass() {
    let mut s = session(&any_key("set"));
    assert_eq!(
        deliver(&mut s, Flow::Request, &[SET_HELLO_TEXT]),
        emitted(SET_HELLO_TEXT, b"")
    );
    assert_eq!(
        deliver(&mut s, Flow::Reply, &[STORED]),
        emitted(b"", STORED)
    );
    assert_eq!(s.log(), ["Request 1.1.1.1 command=set keys=key"]);
}

/// TestMemcache "text set drop" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_set_drop() {
    let mut s = session(&[("keyExact", "trolo"), ("command", "set")]);
    assert_eq!(
        deliver(&mut s, Flow::Request, &[SET_HELLO_TEXT]),
        emitted(b"", TEXT_DENIED),
        "nothing is owed before the denial: it is sent at once"
    );
    assert_eq!(s.log(), ["Denied  command=set keys=key"]);
}

/// TestMemcache "text get pass" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_get_pass() {
    let mut s = session(&any_key("get"));
    let two_gets = [GET_KEYS_TEXT, GET_KEYS_TEXT].concat();
    assert_eq!(
        deliver(&mut s, Flow::Request, &[&two_gets]),
        emitted(&two_gets, b"")
    );
    let two_responses = [GET_RESPONSE, GET_RESPONSE].concat();
    assert_eq!(
        deliver(&mut s, Flow::Reply, &[&two_responses]),
        emitted(b"", &two_responses)
    );
    assert_eq!(
        s.log(),
        [
            "Request 1.1.1.1 command=get keys=key1, key2, key3",
            "Request 1.1.1.1 command=get keys=key1, key2, key3",
        ]
    );
}

/// TestMemcache "text get more" and "text gat more" (proxylib/libcilium/proxylib_memcached_test.go):
/// the first five bytes of a reply line, sent as a request, are not yet a command.
#[test]
fn text_get_more_and_text_gat_more() {
    for command in ["get", "gat"] {
        let mut s = session(&any_key(command));
        assert_eq!(
            deliver(&mut s, Flow::Request, &[&GET_RESPONSE[..5]]),
            nothing()
        );
        assert!(s.log().is_empty());
    }
}

/// TestMemcache "text get drop" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_get_drop() {
    let mut s = session(&any_key("set"));
    assert_eq!(
        deliver(&mut s, Flow::Request, &[GET_KEYS_TEXT]),
        emitted(b"", TEXT_DENIED)
    );
    assert_eq!(s.log(), ["Denied  command=get keys=key1, key2, key3"]);
}

/// TestMemcache "text gat pass" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_gat_pass() {
    let mut s = session(&any_key("gat"));
    let two_gats = [GAT_KEYS_TEXT, GAT_KEYS_TEXT].concat();
    assert_eq!(
        deliver(&mut s, Flow::Request, &[&two_gats]),
        emitted(&two_gats, b"")
    );
    let two_responses = [GET_RESPONSE, GET_RESPONSE].concat();
    assert_eq!(
        deliver(&mut s, Flow::Reply, &[&two_responses]),
        emitted(b"", &two_responses)
    );
    assert_eq!(
        s.log(),
        [
            "Request 1.1.1.1 command=gat keys=key1, key2, key3",
            "Request 1.1.1.1 command=gat keys=key1, key2, key3",
        ]
    );
}

/// TestMemcache "text gat drop" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_gat_drop() {
    let mut s = session(&any_key("set"));
    assert_eq!(
        deliver(&mut s, Flow::Request, &[GAT_KEYS_TEXT]),
        emitted(b"", TEXT_DENIED)
    );
    assert_eq!(s.log(), ["Denied  command=gat keys=key1, key2, key3"]);
}

/// TestMemcache "text delete pass" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_delete_pass() {
    let mut s = session(&any_key("delete"));
    assert_eq!(
        deliver(&mut s, Flow::Request, &[DELETE_TEXT]),
        emitted(DELETE_TEXT, b"")
    );
    assert_eq!(
        deliver(&mut s, Flow::Reply, &[NOT_FOUND]),
        emitted(b"", NOT_FOUND)
    );
    assert_eq!(s.log(), ["Request 1.1.1.1 command=delete keys=key"]);
}

/// TestMemcache "text delete drop" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_delete_drop() {
    let mut s = session(&any_key("set"));
    assert_eq!(
        deliver(&mut s, Flow::Request, &[DELETE_TEXT]),
        emitted(b"", TEXT_DENIED)
    );
    assert_eq!(s.log(), ["Denied  command=delete keys=key"]);
}

/// TestMemcache "text incr pass" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_incr_pass() {
    let mut s = session(&any_key("incr"));
    assert_eq!(
        deliver(&mut s, Flow::Request, &[INCR_TEXT]),
        emitted(INCR_TEXT, b"")
    );
    assert_eq!(
        deliver(&mut s, Flow::Reply, &[NOT_FOUND]),
        emitted(b"", NOT_FOUND)
    );
    assert_eq!(s.log(), ["Request 1.1.1.1 command=incr keys=key"]);
}

/// TestMemcache "text incr drop" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_incr_drop() {
    let mut s = session(&[("keyExact", "otherKey"), ("command", "incr")]);
    assert_eq!(
        deliver(&mut s, Flow::Request, &[INCR_TEXT]),
        emitted(b"", TEXT_DENIED)
    );
    assert_eq!(s.log(), ["Denied  command=incr keys=key"]);
}

/// TestMemcache "text touch pass" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_touch_pass() {
    let mut s = session(&[("keyExact", "key"), ("command", "touch")]);
    assert_eq!(
        deliver(&mut s, Flow::Request, &[TOUCH_TEXT]),
        emitted(TOUCH_TEXT, b"")
    );
    assert_eq!(
        deliver(&mut s, Flow::Reply, &[NOT_FOUND]),
        emitted(b"", NOT_FOUND)
    );
    assert_eq!(s.log(), ["Request 1.1.1.1 command=touch keys=key"]);
}

/// TestMemcache "text touch drop" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_touch_drop() {
    let mut s = session(&[("keyExact", "otherKey"), ("command", "touch")]);
    assert_eq!(
        deliver(&mut s, Flow::Request, &[TOUCH_TEXT]),
        emitted(b"", TEXT_DENIED)
    );
    assert_eq!(s.log(), ["Denied  command=touch keys=key"]);
}

/// TestMemcache "text slabs pass" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_slabs_pass() {
    let mut s = session(&[("command", "slabs")]);
    assert_eq!(
        deliver(&mut s, Flow::Request, &[SLABS_TEXT]),
        emitted(SLABS_TEXT, b"")
    );
    assert_eq!(
        deliver(&mut s, Flow::Reply, &[OK_TEXT]),
        emitted(b"", OK_TEXT)
    );
    assert_eq!(s.log(), ["Request 1.1.1.1 command=slabs keys="]);
}

/// TestMemcache "text slabs drop" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_slabs_drop() {
    let mut s = session(&[("keyExact", "otherKey"), ("command", "touch")]);
    assert_eq!(
        deliver(&mut s, Flow::Request, &[SLABS_TEXT]),
        emitted(b"", TEXT_DENIED)
    );
    assert_eq!(s.log(), ["Denied  command=slabs keys="]);
}

/// TestMemcache "text lru_crawler response req more and pass"
/// (proxylib/libcilium/proxylib_memcached_test.go): a reply is passed only once it is whole.
#[test]
fn text_lru_crawler_response_req_more_and_pass() {
    let mut s = session(&[("command", "lru_crawler")]);
    assert_eq!(
        deliver(&mut s, Flow::Request, &[LRU_CRAWLER_TEXT]),
        emitted(LRU_CRAWLER_TEXT, b"")
    );
    let (head, rest) = LRU_CRAWLER_RESPONSE.split_at(5);
    assert_eq!(deliver(&mut s, Flow::Reply, &[head]), nothing());
    assert_eq!(
        deliver(&mut s, Flow::Reply, &[rest]),
        emitted(b"", LRU_CRAWLER_RESPONSE)
    );
    assert_eq!(s.log(), ["Request 1.1.1.1 command=lru_crawler keys="]);
}

/// TestMemcache "text stats response req more and pass"
/// (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_stats_response_req_more_and_pass() {
    let mut s = session(&[("command", "stats")]);
    assert_eq!(
        deliver(&mut s, Flow::Request, &[STATS_TEXT]),
        emitted(STATS_TEXT, b"")
    );
    let (head, rest) = STATS_RESPONSE.split_at(5);
    assert_eq!(deliver(&mut s, Flow::Reply, &[head]), nothing());
    assert_eq!(
        deliver(&mut s, Flow::Reply, &[rest]),
        emitted(b"", STATS_RESPONSE)
    );
    assert_eq!(s.log(), ["Request 1.1.1.1 command=stats keys="]);
}

/// TestMemcache "text flush_all pass" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_flush_all_pass() {
    let mut s = session(&[("command", "flush_all")]);
    assert_eq!(
        deliver(&mut s, Flow::Request, &[FLUSH_ALL_TEXT]),
        emitted(FLUSH_ALL_TEXT, b"")
    );
    assert_eq!(s.log(), ["Request 1.1.1.1 command=flush_all keys="]);
}

/// TestMemcache "text flush_all denied" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn text_flush_all_denied() {
    let mut s = session(&[("command", "get")]);
    assert_eq!(
        deliver(&mut s, Flow::Request, &[FLUSH_ALL_TEXT]),
        emitted(b"", TEXT_DENIED)
    );
    assert_eq!(s.log(), ["Denied  command=flush_all keys="]);
}

/// TestMemcache "text watch passed" (proxylib/libcilium/proxylib_memcached_test.go): after
/// `watch`, every reply line passes.
#[test]
fn text_watch_passed() {
    let mut s = session(&[("command", "watch")]);
    assert_eq!(
        deliver(&mut s, Flow::Request, &[WATCH_TEXT]),
        emitted(WATCH_TEXT, b"")
    );
    let reply = WATCH_REPLY_LINES.concat();
    assert_eq!(
        deliver(&mut s, Flow::Reply, &[&reply]),
        emitted(b"", &reply)
    );
    assert_eq!(s.log(), ["Request 1.1.1.1 command=watch keys="]);
}

/// TestMemcache "text partial linefeed" (proxylib/libcilium/proxylib_memcached_test.go): a
/// command line without its final `\n` is not yet a command.
#[test]
fn text_partial_linefeed() {
    let mut s = session(&any_key("set"));
    assert_eq!(
        deliver(
            &mut s,
            Flow::Request,
            &[&GET_KEYS_TEXT[..GET_KEYS_TEXT.len() - 1]]
        ),
        nothing()
    );
    assert!(s.log().is_empty());
}

/// TestMemcache "text set pass on empty rule" (proxylib/libcilium/proxylib_memcached_test.go):
/// an `l7` rule without keys allows every request.
#[test]
fn text_set_pass_on_empty_rule() {
    let mut s = session(&[]);
    assert_eq!(
        deliver(&mut s, Flow::Request, &[SET_HELLO_TEXT]),
        emitted(SET_HELLO_TEXT, b"")
    );
    assert_eq!(
        deliver(&mut s, Flow::Reply, &[STORED]),
        emitted(b"", STORED)
    );
    assert_eq!(s.log(), ["Request 1.1.1.1 command=set keys=key"]);
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
    for key_rule in [
        ("keyExact", "Hello"),
        ("keyPrefix", "Hell"),
        ("keyRegex", "^.el.o$"),
    ] {
        let mut s = session(&[key_rule, ("command", "get")]);
        assert_eq!(
            deliver(&mut s, Flow::Request, &[&GET_HELLO]),
            emitted(&GET_HELLO, b""),
            "{key_rule:?}"
        );
        assert_eq!(
            s.log(),
            ["Request 1.1.1.1 command=get keys=Hello opcode=0"],
            "{key_rule:?}"
        );
    }
}

/// TestMemcache "bin get drop" (proxylib/libcilium/proxylib_memcached_test.go).
#[test]
fn bin_get_drop() {
    let mut s = session(&any_key("set"));
    assert_eq!(
        deliver(&mut s, Flow::Request, &[&GET_HELLO]),
        emitted(b"", &BINARY_DENIED_GET)
    );
    assert_eq!(s.log(), ["Denied  command=get keys=Hello opcode=0"]);
}

/// TestMemcache "bin get more" (proxylib/libcilium/proxylib_memcached_test.go): ten bytes of a
/// header.
#[test]
fn bin_get_more() {
    let mut s = session(&any_key("get"));
    assert_eq!(
        deliver(&mut s, Flow::Request, &[&GET_HELLO[..10]]),
        nothing()
    );
    assert!(s.log().is_empty());
}

/// TestMemcache "bin get split" (proxylib/libcilium/proxylib_memcached_test.go): a packet in two
/// reads.
#[test]
fn bin_get_split() {
    let mut s = session(&any_key("get"));
    assert_eq!(
        deliver(&mut s, Flow::Request, &[&GET_HELLO[..10], &GET_HELLO[10..]]),
        emitted(&GET_HELLO, b"")
    );
    assert_eq!(s.log(), ["Request 1.1.1.1 command=get keys=Hello opcode=0"]);
}

/// TestMemcache "bin get remaining key" (proxylib/libcilium/proxylib_memcached_test.go): the
/// header and two bytes of the key.
#[test]
fn bin_get_remaining_key() {
    let mut s = session(&any_key("get"));
    assert_eq!(
        deliver(&mut s, Flow::Request, &[&GET_HELLO[..26]]),
        nothing()
    );
    assert!(s.log().is_empty());
}

/// TestMemcache "bin set drop and allow" (proxylib/libcilium/proxylib_memcached_test.go): the
/// denial of the GET waits for the reply owed to the SET before it.
#[test]
fn bin_set_drop_and_allow() {
    let mut s = session(&any_key("set"));
    let requests = [&SET_HELLO[..], &GET_HELLO[..]].concat();
    assert_eq!(
        deliver(&mut s, Flow::Request, &[&requests]),
        emitted(&SET_HELLO, b"")
    );
    assert_eq!(
        deliver(&mut s, Flow::Reply, &[&GET_HELLO_RESP]),
        emitted(b"", &[&GET_HELLO_RESP[..], &BINARY_DENIED_GET].concat())
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
        deliver(&mut s, Flow::Request, &[&packet]),
        emitted(&packet, b"")
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
    let error = s.send(Flow::Request, &short_body).unwrap_err();
    assert!(
        matches!(&error, ConnectionError::Parse(e) if e.code == ErrorCode::InvalidFrameLength),
        "{error:?}"
    );
    assert!(s.sent.upstream.is_empty() && s.sent.client.is_empty());
    assert_eq!(s.log().len(), 1, "the close is logged: {:?}", s.log());
    assert!(s.log()[0].starts_with("Denied "), "{:?}", s.log());

    let whole_body = binary_packet(0x00, b"extr", b"Test1", 9);
    let mut s = session(&[("command", "get"), ("keyExact", "Test1")]);
    assert_eq!(
        deliver(&mut s, Flow::Request, &[&whole_body]),
        emitted(&whole_body, b"")
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
        deliver(&mut s, Flow::Request, &[&packet]),
        emitted(&packet, b"")
    );
    assert_eq!(
        s.log(),
        ["Request 1.1.1.1 command=flush_all keys= opcode=8"]
    );
}
