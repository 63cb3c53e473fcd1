//! The parser through the real datapath engine: verdicts, denials in correlation order,
//! requests that expect no response, streaming, refusals and chunking.

use axoneme_datapath::ConnectionError;
use axoneme_sdk::{ErrorCode, Flow};
use axoneme_testkit::{split_at_points, Emitted, RulesPolicy, Session};
use proptest::prelude::*;

use crate::{Kafka, Request};

/// `message` behind its 4-byte length: a frame.
fn framed(message: Vec<u8>) -> Vec<u8> {
    [&(message.len() as u32).to_be_bytes()[..], &message].concat()
}

/// A request frame: header v1, or v2 when `flexible`, then `body`.
fn frame(key: i16, version: i16, correlation_id: i32, flexible: bool, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::new();
    message.extend_from_slice(&key.to_be_bytes());
    message.extend_from_slice(&version.to_be_bytes());
    message.extend_from_slice(&correlation_id.to_be_bytes());
    message.extend_from_slice(b"\x00\x09outpost-7");
    if flexible {
        message.push(0);
    }
    message.extend_from_slice(body);
    framed(message)
}

/// A flexible Produce v9 request writing 5 bytes of records to partition 0 of each topic.
fn produce(correlation_id: i32, acks: i16, topics: &[&str]) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(&acks.to_be_bytes());
    body.extend_from_slice(&1000i32.to_be_bytes());
    body.push(topics.len() as u8 + 1);
    for topic in topics {
        body.push(topic.len() as u8 + 1);
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(b"\x02\x00\x00\x00\x00\x06RECS!\x00\x00");
    }
    body.push(0);
    frame(0, 9, correlation_id, true, &body)
}

/// A flexible Metadata v12 request for `topics` (all topics when `None`), without leave to
/// create them.
fn metadata(correlation_id: i32, topics: Option<&[&str]>) -> Vec<u8> {
    metadata_creating(correlation_id, topics, false)
}

/// A flexible Metadata v12 request for `topics` (all topics when `None`), letting the broker
/// create those that do not exist when `create`.
fn metadata_creating(correlation_id: i32, topics: Option<&[&str]>, create: bool) -> Vec<u8> {
    let mut body = Vec::new();
    match topics {
        None => body.push(0),
        Some(topics) => {
            body.push(topics.len() as u8 + 1);
            for topic in topics {
                body.extend_from_slice(&[0; 16]);
                body.push(topic.len() as u8 + 1);
                body.extend_from_slice(topic.as_bytes());
                body.push(0);
            }
        }
    }
    // AllowAutoTopicCreation, IncludeTopicAuthorizedOperations, tagged fields.
    body.extend_from_slice(&[u8::from(create), 0, 0]);
    frame(3, 12, correlation_id, true, &body)
}

/// A classic Metadata v3 request for `topics`: v0 to v3 have no AllowAutoTopicCreation, the
/// broker may always create the topics they name.
fn metadata_v3(correlation_id: i32, topics: &[&str]) -> Vec<u8> {
    let mut body = (topics.len() as i32).to_be_bytes().to_vec();
    for topic in topics {
        body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
    }
    frame(3, 3, correlation_id, false, &body)
}

/// A flexible Fetch v16 request for partition 0 of the topic with `id`.
fn fetch_by_id(correlation_id: i32, id: [u8; 16]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&500i32.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&1_000_000i32.to_be_bytes());
    body.push(0);
    body.extend_from_slice(&[0; 8]);
    body.push(2);
    body.extend_from_slice(&id);
    body.push(2);
    body.extend_from_slice(&[0; 4]);
    body.extend_from_slice(&[0xff; 4]);
    body.extend_from_slice(&[0; 8]);
    body.extend_from_slice(&[0xff; 4]);
    body.extend_from_slice(&[0xff; 8]);
    body.extend_from_slice(&1_000_000i32.to_be_bytes());
    body.extend_from_slice(b"\x00\x00\x01\x01\x00");
    frame(1, 16, correlation_id, true, &body)
}

/// A response frame with `correlation_id` and some body.
fn response(correlation_id: i32) -> Vec<u8> {
    framed([&correlation_id.to_be_bytes()[..], b"\x00response"].concat())
}

/// The denial the crate composes for `request`.
fn denial(request: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Request::parse(&request[4..])
        .unwrap()
        .write_denial(&mut out);
    out
}

const EMPIRE: &[&[(&str, &str)]] = &[
    &[("role", "produce"), ("topic", "deathstar-plans")],
    &[("role", "consume"), ("topic", "empire-announce")],
    &[("apiKey", "apiversions")],
    &[
        ("apiKey", "metadata"),
        ("apiVersion", "12"),
        ("clientID", "outpost-7"),
    ],
];

fn session(rules: &[&[(&str, &str)]]) -> Session {
    let kafka = Kafka::default();
    Session::new(&kafka, RulesPolicy::compile(&kafka, "empire", rules))
}

#[test]
fn allowed_requests_and_their_responses_pass() {
    let mut s = session(EMPIRE);
    let request = produce(1, -1, &["deathstar-plans"]);
    assert_eq!(
        s.deliver(Flow::Request, &[&request]),
        Emitted::new(&request, b"")
    );
    assert_eq!(
        s.deliver(Flow::Reply, &[&response(1)]),
        Emitted::new(b"", &response(1))
    );
    assert_eq!(
        s.log(),
        ["Request empire api_key=produce api_version=9 correlation_id=1 topic=deathstar-plans"]
    );
}

#[test]
fn sasl_authentication_passes_whatever_the_rules() {
    let mut s = session(&[&[("role", "consume"), ("topic", "empire-announce")]]);
    // SaslHandshake v1 for PLAIN, then SaslAuthenticate v2 (flexible) with its token.
    let handshake = frame(17, 1, 1, false, b"\x00\x05PLAIN");
    let authenticate = frame(36, 2, 2, true, b"\x0b\x00hq\x00secret\x00");
    for request in [&handshake, &authenticate] {
        assert_eq!(
            s.deliver(Flow::Request, &[request]),
            Emitted::new(request, b"")
        );
    }
    assert_eq!(
        s.log(),
        [
            "Request empire api_key=saslhandshake api_version=1 correlation_id=1",
            "Request empire api_key=saslauthenticate api_version=2 correlation_id=2"
        ]
    );
}

#[test]
fn a_denied_request_is_answered_in_place() {
    let mut s = session(EMPIRE);
    let request = produce(2, 1, &["deathstar-plans", "empire-announce"]);
    assert_eq!(
        s.deliver(Flow::Request, &[&request]),
        Emitted::new(b"", &denial(&request))
    );
    assert_eq!(&denial(&request)[4..8], &2i32.to_be_bytes());
    assert_eq!(
        s.log(),
        ["Denied  api_key=produce api_version=9 correlation_id=2 topic=deathstar-plans, empire-announce"]
    );
    let all = metadata(3, None);
    assert_eq!(
        s.deliver(Flow::Request, &[&all]),
        Emitted::new(&all, b""),
        "metadata v12 from outpost-7"
    );
}

#[test]
fn requests_naming_more_topics_than_are_kept_are_judged_and_logged_on_all() {
    let rules: &[&[(&str, &str)]] = &[&[("role", "produce"), ("topic", "deathstar-plans")]];
    let mut s = session(rules);
    let kept = crate::topics::KEPT_TOPICS;
    let allowed = produce(1, 1, &vec!["deathstar-plans"; kept + 1]);
    assert_eq!(
        s.deliver(Flow::Request, &[&allowed]),
        Emitted::new(&allowed, b"")
    );
    let mut topics = vec!["deathstar-plans"; kept + 1];
    topics.push("empire-announce");
    let denied = produce(2, 1, &topics);
    assert_eq!(
        s.deliver(Flow::Request, &[&denied]),
        Emitted::new(b"", b""),
        "behind the owed response"
    );
    let names = |topics: &[&str]| topics.join(", ");
    assert_eq!(
        s.log(),
        [
            format!(
                "Request empire api_key=produce api_version=9 correlation_id=1 topic={}",
                names(&vec!["deathstar-plans"; kept + 1])
            ),
            format!(
                "Denied  api_key=produce api_version=9 correlation_id=2 topic={}",
                names(&topics)
            ),
        ]
    );
    assert_eq!(
        s.deliver(Flow::Reply, &[&response(1)]),
        Emitted::new(b"", &[response(1), denial(&denied)].concat())
    );
}

#[test]
fn denials_keep_their_place_among_pipelined_responses() {
    let mut s = session(EMPIRE);
    let first = metadata(1, Some(&["empire-announce"]));
    let denied = produce(2, 1, &["empire-announce"]);
    let third = produce(3, 1, &["deathstar-plans"]);
    let sent = s.deliver(
        Flow::Request,
        &[&[first.clone(), denied.clone(), third.clone()].concat()],
    );
    assert_eq!(sent, Emitted::new(&[first, third].concat(), b""));
    assert_eq!(
        s.deliver(Flow::Reply, &[&response(1)]),
        Emitted::new(b"", &[response(1), denial(&denied)].concat())
    );
    assert_eq!(
        s.deliver(Flow::Reply, &[&response(3)]),
        Emitted::new(b"", &response(3))
    );
}

#[test]
fn acks_zero_gets_no_response_and_an_answer_anyway_is_discarded() {
    let mut s = session(EMPIRE);
    let denied = produce(1, 0, &["empire-announce"]);
    assert_eq!(s.deliver(Flow::Request, &[&denied]), Emitted::nothing());
    let allowed = produce(2, 0, &["deathstar-plans"]);
    assert_eq!(
        s.deliver(Flow::Request, &[&allowed]),
        Emitted::new(&allowed, b"")
    );
    let acked = produce(3, 1, &["deathstar-plans"]);
    s.deliver(Flow::Request, &[&acked]);
    assert_eq!(
        s.deliver(Flow::Reply, &[&[response(2), response(3)].concat()]),
        Emitted::new(b"", &response(3)),
        "the answer to the acks=0 request is not forwarded"
    );
}

#[test]
fn requests_without_topics_stream_once_their_header_is_judged() {
    let mut s = session(&[&[("apiKey", "apiversions")]]);
    let versions = frame(18, 3, 5, true, b"\x07rdkafka\x062.10.0\x00");
    let (head, rest) = versions.split_at(25);
    assert_eq!(s.deliver(Flow::Request, &[head]), Emitted::new(head, b""));
    assert_eq!(s.deliver(Flow::Request, &[rest]), Emitted::new(rest, b""));
    let heartbeat = frame(12, 4, 6, true, b"\x02g\x00\x00\x00\x01\x02m\x00\x00");
    assert_eq!(
        s.deliver(Flow::Request, &[&heartbeat]),
        Emitted::nothing(),
        "denied, and queued behind the ApiVersions response"
    );
    assert_eq!(
        s.deliver(Flow::Reply, &[&response(5)]),
        Emitted::new(b"", &[response(5), denial(&heartbeat)].concat())
    );
}

#[test]
fn topics_named_by_id_match_no_topic_rule() {
    let id = [7; 16];
    let mut s = session(&[&[("role", "consume"), ("topic", "empire-announce")]]);
    let request = fetch_by_id(1, id);
    assert_eq!(
        s.deliver(Flow::Request, &[&request]),
        Emitted::new(b"", &denial(&request))
    );
    assert_eq!(
        s.log(),
        ["Denied  api_key=fetch api_version=16 correlation_id=1 topic=BwcHBwcHBwcHBwcHBwcHBw"]
    );
    let mut s = session(&[&[("role", "consume")]]);
    assert_eq!(
        s.deliver(Flow::Request, &[&request]),
        Emitted::new(&request, b"")
    );
}

/// A Metadata v12 response with `correlation_id` naming `topics` with their ids, each with no
/// partition, written from Kafka's `MetadataResponse.json`.
fn metadata_response(correlation_id: i32, topics: &[(&str, [u8; 16])]) -> Vec<u8> {
    metadata_response_with_rack(correlation_id, topics, None)
}

/// [`metadata_response`] whose broker has `rack` (null when `None`).
fn metadata_response_with_rack(
    correlation_id: i32,
    topics: &[(&str, [u8; 16])],
    rack: Option<&[u8]>,
) -> Vec<u8> {
    let mut message = correlation_id.to_be_bytes().to_vec();
    message.push(0);
    message.extend_from_slice(&0i32.to_be_bytes());
    message.push(2);
    message.extend_from_slice(&1i32.to_be_bytes());
    message.extend_from_slice(b"\x0a127.0.0.1");
    message.extend_from_slice(&9092i32.to_be_bytes());
    match rack {
        None => message.push(0),
        Some(rack) => {
            let mut length = rack.len() + 1;
            while length >= 0x80 {
                message.push((length as u8 & 0x7f) | 0x80);
                length >>= 7;
            }
            message.push(length as u8);
            message.extend_from_slice(rack);
        }
    }
    message.extend_from_slice(b"\x00\x00");
    message.extend_from_slice(&1i32.to_be_bytes());
    message.push(topics.len() as u8 + 1);
    for (name, id) in topics {
        message.extend_from_slice(&0i16.to_be_bytes());
        message.push(name.len() as u8 + 1);
        message.extend_from_slice(name.as_bytes());
        message.extend_from_slice(id);
        message.extend_from_slice(b"\x00\x01");
        message.extend_from_slice(&0i32.to_be_bytes());
        message.push(0);
    }
    message.push(0);
    framed(message)
}

const ANNOUNCE: [u8; 16] = [1; 16];
const PLANS: [u8; 16] = [2; 16];

#[test]
fn topics_named_by_id_are_judged_by_the_names_the_broker_gave_them() {
    let kafka = Kafka::default();
    let rules: &[&[(&str, &str)]] = &[&[("role", "consume"), ("topic", "empire-announce")]];
    let mut s = Session::new(&kafka, RulesPolicy::compile(&kafka, "outposts", rules));
    let unknown = fetch_by_id(1, ANNOUNCE);
    assert_eq!(
        s.deliver(Flow::Request, &[&unknown]),
        Emitted::new(b"", &denial(&unknown)),
        "no Metadata response has named the id yet"
    );
    let ask = metadata(2, Some(&["empire-announce"]));
    assert_eq!(s.deliver(Flow::Request, &[&ask]), Emitted::new(&ask, b""));
    let answer = metadata_response(
        2,
        &[("empire-announce", ANNOUNCE), ("deathstar-plans", PLANS)],
    );
    let (head, rest) = answer.split_at(30);
    assert_eq!(
        s.deliver(Flow::Reply, &[head]),
        Emitted::nothing(),
        "held until whole"
    );
    assert_eq!(s.deliver(Flow::Reply, &[rest]), Emitted::new(b"", &answer));
    let announce = fetch_by_id(3, ANNOUNCE);
    assert_eq!(
        s.deliver(Flow::Request, &[&announce]),
        Emitted::new(&announce, b"")
    );
    let plans = fetch_by_id(4, PLANS);
    let sent = s.deliver(Flow::Request, &[&plans]);
    assert_eq!(sent, Emitted::nothing(), "denied, behind the owed response");
    assert_eq!(
        s.log()[2..],
        [
            "Request outposts api_key=fetch api_version=16 correlation_id=3 topic=empire-announce",
            "Denied  api_key=fetch api_version=16 correlation_id=4 topic=deathstar-plans",
        ]
    );
    let mut other = Session::new(&kafka, RulesPolicy::compile(&kafka, "outposts", rules));
    assert_eq!(
        other.deliver(Flow::Request, &[&announce]),
        Emitted::new(&announce, b""),
        "another connection to the same upstream knows the id"
    );
}

#[test]
fn only_the_answer_to_an_allowed_metadata_request_teaches_ids() {
    let kafka = Kafka::default();
    let rules: &[&[(&str, &str)]] = &[
        &[("role", "consume"), ("topic", "empire-announce")],
        &[("apiKey", "apiversions")],
    ];
    let mut s = Session::new(&kafka, RulesPolicy::compile(&kafka, "outposts", rules));
    // The client gives an ApiVersions request and a Metadata request the same correlation id;
    // the first response with it answers ApiVersions, whatever its bytes look like.
    let versions = frame(18, 3, 5, true, b"\x07rdkafka\x062.10.0\x00");
    let ask = metadata(5, Some(&["empire-announce"]));
    s.deliver(Flow::Request, &[&[versions, ask].concat()]);
    let forged = metadata_response(5, &[("empire-announce", PLANS)]);
    let real = metadata_response(5, &[("empire-announce", ANNOUNCE)]);
    assert_eq!(
        s.deliver(Flow::Reply, &[&[forged.clone(), real.clone()].concat()]),
        Emitted::new(b"", &[forged, real].concat())
    );
    let plans = fetch_by_id(6, PLANS);
    assert_eq!(
        s.deliver(Flow::Request, &[&plans]),
        Emitted::new(b"", &denial(&plans))
    );
    let announce = fetch_by_id(7, ANNOUNCE);
    assert_eq!(
        s.deliver(Flow::Request, &[&announce]),
        Emitted::new(&announce, b"")
    );
}

#[test]
fn a_metadata_request_naming_allowed_and_denied_topics_is_narrowed_to_the_allowed() {
    let rules: &[&[(&str, &str)]] = &[&[("role", "consume"), ("topic", "empire-announce")]];
    let mut s = session(rules);
    let both = metadata(1, Some(&["deathstar-plans", "empire-announce", "x"]));
    let narrowed = metadata(1, Some(&["empire-announce"]));
    assert_eq!(
        s.deliver(Flow::Request, &[&both]),
        Emitted::new(&narrowed, b"")
    );
    assert_eq!(
        s.log(),
        [
            "Request empire api_key=metadata api_version=12 correlation_id=1 topic=empire-announce",
            "Denied  api_key=metadata api_version=12 correlation_id=1 topic=deathstar-plans, x",
        ]
    );
    let answer = answer_v12(1, &[("empire-announce", ANNOUNCE, 0)], b"\x00\x00", b"\x00");
    let told = answer_v12(
        1,
        &[
            ("deathstar-plans", [0; 16], 29),
            ("empire-announce", ANNOUNCE, 0),
            ("x", [0; 16], 29),
        ],
        b"\x00\x00",
        b"\x00",
    );
    assert_eq!(
        s.deliver(Flow::Reply, &[&answer]),
        Emitted::new(b"", &told),
        "the broker's answer, with the topics left out failed, in the request's order"
    );
    let fetch = fetch_by_id(2, ANNOUNCE);
    assert_eq!(
        s.deliver(Flow::Request, &[&fetch]),
        Emitted::new(&fetch, b""),
        "the narrowed request's answer teaches ids"
    );
    let denied = metadata(3, Some(&["deathstar-plans", "x"]));
    assert_eq!(
        s.deliver(Flow::Request, &[&denied]),
        Emitted::new(&metadata(3, Some(&[])), b""),
        "no topic allowed: narrowed to none"
    );
    assert_eq!(
        s.deliver(
            Flow::Reply,
            &[&[response(2), metadata_response(3, &[])].concat()]
        ),
        Emitted::new(
            b"",
            &[
                response(2),
                answer_v12(
                    3,
                    &[("deathstar-plans", [0; 16], 29), ("x", [0; 16], 29)],
                    b"\x00\x00",
                    b"\x00"
                )
            ]
            .concat()
        )
    );
}

/// A Metadata v12 response written from Kafka's `MetadataResponse.json`, independently of
/// the crate: one broker (127.0.0.1:9092, rack null), then `cluster` (the broker's tagged
/// fields and the cluster id as encoded), controller 1, then `topics`, each with its name,
/// id and error code: one without error has partition 0 led by broker 1 and authorized
/// operations 0, one with an error no partition and authorized operations `i32::MIN`, as
/// the proxy fails them; then the top-level tagged fields `tags` as encoded.
fn answer_v12(
    correlation_id: i32,
    topics: &[(&str, [u8; 16], i16)],
    cluster: &[u8],
    tags: &[u8],
) -> Vec<u8> {
    let mut message = correlation_id.to_be_bytes().to_vec();
    message.push(0);
    message.extend_from_slice(&0i32.to_be_bytes());
    message.push(2);
    message.extend_from_slice(&1i32.to_be_bytes());
    message.extend_from_slice(b"\x0a127.0.0.1");
    message.extend_from_slice(&9092i32.to_be_bytes());
    message.push(0);
    message.extend_from_slice(cluster);
    message.extend_from_slice(&1i32.to_be_bytes());
    message.push(topics.len() as u8 + 1);
    for (name, id, error) in topics {
        message.extend_from_slice(&error.to_be_bytes());
        message.push(name.len() as u8 + 1);
        message.extend_from_slice(name.as_bytes());
        message.extend_from_slice(id);
        message.push(0);
        match error {
            0 => {
                message.push(2);
                message.extend_from_slice(&0i16.to_be_bytes());
                message.extend_from_slice(&0i32.to_be_bytes());
                message.extend_from_slice(&1i32.to_be_bytes());
                message.extend_from_slice(&0i32.to_be_bytes());
                message.extend_from_slice(b"\x02\x00\x00\x00\x01\x02\x00\x00\x00\x01\x01\x00");
                message.extend_from_slice(&0i32.to_be_bytes());
            }
            _ => {
                message.push(1);
                message.extend_from_slice(&i32::MIN.to_be_bytes());
            }
        }
        message.push(0);
    }
    message.extend_from_slice(tags);
    framed(message)
}

/// A classic Metadata v3 response written from Kafka's `MetadataResponse.json`: throttle
/// time 0, one broker (127.0.0.1:9092, rack "r1"), cluster id "c-1", controller 1, then
/// `topics` with their error codes: one without error has partition 0 led by broker 1, one
/// with an error none.
fn answer_v3(correlation_id: i32, topics: &[(&str, i16)]) -> Vec<u8> {
    let mut message = correlation_id.to_be_bytes().to_vec();
    message.extend_from_slice(&0i32.to_be_bytes());
    message.extend_from_slice(&1i32.to_be_bytes());
    message.extend_from_slice(&1i32.to_be_bytes());
    message.extend_from_slice(b"\x00\x09127.0.0.1");
    message.extend_from_slice(&9092i32.to_be_bytes());
    message.extend_from_slice(b"\x00\x02r1\x00\x03c-1");
    message.extend_from_slice(&1i32.to_be_bytes());
    message.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for (name, error) in topics {
        message.extend_from_slice(&error.to_be_bytes());
        message.extend_from_slice(&(name.len() as i16).to_be_bytes());
        message.extend_from_slice(name.as_bytes());
        message.push(0);
        match error {
            0 => {
                message.extend_from_slice(&1i32.to_be_bytes());
                message.extend_from_slice(&0i16.to_be_bytes());
                message.extend_from_slice(&0i32.to_be_bytes());
                message.extend_from_slice(&1i32.to_be_bytes());
                for _ in 0..2 {
                    message.extend_from_slice(&1i32.to_be_bytes());
                    message.extend_from_slice(&1i32.to_be_bytes());
                }
            }
            _ => message.extend_from_slice(&0i32.to_be_bytes()),
        }
    }
    framed(message)
}

#[test]
fn a_metadata_request_naming_only_denied_topics_asks_the_broker_for_none() {
    // librdkafka drops a broker whose Metadata response lists no brokers: the client must
    // hear the broker's own brokers, cluster id and controller, and error 29 per topic.
    let rules: &[&[(&str, &str)]] = &[&[("role", "consume"), ("topic", "empire-announce")]];
    let mut s = session(rules);
    let denied = metadata(1, Some(&["deathstar-plans", "x"]));
    assert_eq!(
        s.deliver(Flow::Request, &[&denied]),
        Emitted::new(&metadata(1, Some(&[])), b"")
    );
    assert_eq!(
        s.log(),
        ["Denied  api_key=metadata api_version=12 correlation_id=1 topic=deathstar-plans, x"]
    );
    let cluster = b"\x00\x0bcluster-id";
    let tags = b"\x01\x05\x02ab";
    let answer = answer_v12(1, &[], cluster, tags);
    let told = answer_v12(
        1,
        &[("deathstar-plans", [0; 16], 29), ("x", [0; 16], 29)],
        cluster,
        tags,
    );
    let (head, rest) = answer.split_at(20);
    assert_eq!(s.deliver(Flow::Reply, &[head]), Emitted::nothing());
    assert_eq!(s.deliver(Flow::Reply, &[rest]), Emitted::new(b"", &told));
    // A broker that answers a request naming no topic with every topic (tansu does) tells the
    // client nothing of them.
    s.deliver(Flow::Request, &[&metadata(2, Some(&["deathstar-plans"]))]);
    let every_topic = answer_v12(
        2,
        &[
            ("deathstar-plans", PLANS, 0),
            ("empire-announce", ANNOUNCE, 0),
        ],
        cluster,
        tags,
    );
    assert_eq!(
        s.deliver(Flow::Reply, &[&every_topic]),
        Emitted::new(
            b"",
            &answer_v12(2, &[("deathstar-plans", [0; 16], 29)], cluster, tags)
        )
    );

    let mut s = session(rules);
    let classic = metadata_v3(2, &["deathstar-plans"]);
    assert_eq!(
        s.deliver(Flow::Request, &[&classic]),
        Emitted::new(&metadata_v3(2, &[]), b"")
    );
    assert_eq!(
        s.deliver(Flow::Reply, &[&answer_v3(2, &[])]),
        Emitted::new(b"", &answer_v3(2, &[("deathstar-plans", 29)]))
    );
    assert_eq!(
        s.log(),
        ["Denied  api_key=metadata api_version=3 correlation_id=2 topic=deathstar-plans"]
    );
}

#[test]
fn the_answer_to_a_metadata_request_naming_no_topic_keeps_only_the_topics_the_client_may_see() {
    // As Kafka's authorizer lists for all topics only those the principal may describe.
    let rules: &[&[(&str, &str)]] = &[
        &[
            ("role", "consume"),
            ("topic", "empire-announce"),
            ("clientID", "outpost-7"),
        ],
        &[
            ("role", "consume"),
            ("topic", "deathstar-plans"),
            ("clientID", "outpost-9"),
        ],
    ];
    let cluster = b"\x00\x0bcluster-id";
    let tags = b"\x01\x05\x02ab";
    let every_topic = |correlation_id| {
        answer_v12(
            correlation_id,
            &[
                ("deathstar-plans", PLANS, 0),
                ("empire-announce", ANNOUNCE, 0),
                ("x", [7; 16], 3),
            ],
            cluster,
            tags,
        )
    };
    let seen = |correlation_id| {
        answer_v12(
            correlation_id,
            &[("empire-announce", ANNOUNCE, 0)],
            cluster,
            tags,
        )
    };
    let mut s = session(rules);
    // All topics (a null array), then none (an empty one, which some brokers answer with all).
    for (correlation_id, topics) in [(1, None), (2, Some(&[][..]))] {
        let asked = metadata(correlation_id, topics);
        assert_eq!(
            s.deliver(Flow::Request, &[&asked]),
            Emitted::new(&asked, b"")
        );
        let answer = every_topic(correlation_id);
        let (head, rest) = answer.split_at(30);
        assert_eq!(s.deliver(Flow::Reply, &[head]), Emitted::nothing());
        assert_eq!(
            s.deliver(Flow::Reply, &[rest]),
            Emitted::new(b"", &seen(correlation_id))
        );
    }
    assert_eq!(
        s.log(),
        [
            "Request empire api_key=metadata api_version=12 correlation_id=1",
            "Request empire api_key=metadata api_version=12 correlation_id=2",
        ]
    );
    // The ids of the topics left out are still learned, and judged by their names.
    let by_id = fetch_by_id(3, PLANS);
    assert_eq!(
        s.deliver(Flow::Request, &[&by_id]),
        Emitted::new(b"", &denial(&by_id))
    );

    let mut s = session(rules);
    let classic = metadata_v3(1, &[]);
    assert_eq!(
        s.deliver(Flow::Request, &[&classic]),
        Emitted::new(&classic, b"")
    );
    let answer = answer_v3(
        1,
        &[("deathstar-plans", 0), ("empire-announce", 0), ("x", 3)],
    );
    assert_eq!(
        s.deliver(Flow::Reply, &[&answer]),
        Emitted::new(b"", &answer_v3(1, &[("empire-announce", 0)]))
    );

    // A rule without `topic` lets the client see every topic: the answer passes as it is.
    let every: &[&[(&str, &str)]] = &[
        &[("role", "consume"), ("topic", "empire-announce")],
        &[("apiKey", "metadata")],
    ];
    let mut s = session(every);
    s.deliver(Flow::Request, &[&metadata(1, None)]);
    assert_eq!(
        s.deliver(Flow::Reply, &[&every_topic(1)]),
        Emitted::new(b"", &every_topic(1))
    );
}

#[test]
fn an_answer_to_a_metadata_request_naming_no_topic_that_cannot_be_read_closes_the_connection() {
    let rules: &[&[(&str, &str)]] = &[&[("role", "consume"), ("topic", "empire-announce")]];
    let mut s = session(rules);
    s.deliver(Flow::Request, &[&metadata(1, None)]);
    let error = s.send(Flow::Reply, &response(1)).unwrap_err();
    assert!(matches!(error, ConnectionError::Parse(e) if e.code == ErrorCode::MalformedFrame));
}

#[test]
fn a_metadata_request_naming_no_allowed_topic_is_denied_whole_when_it_cannot_be_narrowed() {
    let rules: &[&[(&str, &str)]] = &[&[("role", "consume"), ("topic", "empire-announce")]];
    // v0: an empty topic array asks for every topic.
    let mut v0 = metadata_v3(1, &["deathstar-plans"]);
    v0[7] = 0;
    let mut s = session(rules);
    assert_eq!(
        s.deliver(Flow::Request, &[&v0]),
        Emitted::new(b"", &denial(&v0))
    );
    // Rules that allow no Metadata request from this client naming none.
    let other_client: &[&[(&str, &str)]] = &[&[
        ("role", "consume"),
        ("topic", "empire-announce"),
        ("clientID", "outpost-9"),
    ]];
    let mut s = session(other_client);
    let denied = metadata(2, Some(&["deathstar-plans"]));
    assert_eq!(
        s.deliver(Flow::Request, &[&denied]),
        Emitted::new(b"", &denial(&denied))
    );
}

#[test]
fn a_partly_denied_classic_metadata_request_hears_of_every_topic() {
    let rules: &[&[(&str, &str)]] = &[
        &[("role", "consume"), ("topic", "empire-announce")],
        &[("apiKey", "createtopics"), ("topic", "empire-announce")],
    ];
    let mut s = session(rules);
    let both = metadata_v3(1, &["deathstar-plans", "empire-announce"]);
    assert_eq!(
        s.deliver(Flow::Request, &[&both]),
        Emitted::new(&metadata_v3(1, &["empire-announce"]), b"")
    );
    let answer = answer_v3(1, &[("empire-announce", 0)]);
    let told = answer_v3(1, &[("deathstar-plans", 29), ("empire-announce", 0)]);
    assert_eq!(s.deliver(Flow::Reply, &[&answer]), Emitted::new(b"", &told));
    assert_eq!(
        s.log(),
        [
            "Request empire api_key=metadata api_version=3 correlation_id=1 topic=empire-announce",
            "Denied  api_key=metadata api_version=3 correlation_id=1 topic=deathstar-plans",
        ]
    );
}

#[test]
fn denied_topics_take_their_place_in_request_order_and_unasked_topics_are_left_out() {
    let rules: &[&[(&str, &str)]] = &[
        &[("role", "consume"), ("topic", "empire-announce")],
        &[("role", "consume"), ("topic", "empire-drills")],
    ];
    let mut s = session(rules);
    let asked = [
        "x",
        "empire-drills",
        "deathstar-plans",
        "empire-announce",
        "y",
    ];
    assert_eq!(
        s.deliver(Flow::Request, &[&metadata(1, Some(&asked))]),
        Emitted::new(
            &metadata(1, Some(&["empire-drills", "empire-announce"])),
            b""
        )
    );
    // The broker answers in an order of its own, and of topics nobody asked about, a denied
    // one among them: a client that may not see a topic is not told of it.
    let answer = answer_v12(
        1,
        &[
            ("empire-announce", ANNOUNCE, 0),
            ("unasked", [9; 16], 0),
            ("empire-drills", [3; 16], 0),
            ("deathstar-plans", PLANS, 0),
        ],
        b"\x00\x00",
        b"\x00",
    );
    let told = answer_v12(
        1,
        &[
            ("x", [0; 16], 29),
            ("empire-drills", [3; 16], 0),
            ("deathstar-plans", [0; 16], 29),
            ("empire-announce", ANNOUNCE, 0),
            ("y", [0; 16], 29),
        ],
        b"\x00\x00",
        b"\x00",
    );
    assert_eq!(s.deliver(Flow::Reply, &[&answer]), Emitted::new(b"", &told));
}

#[test]
fn a_narrowed_metadata_response_that_cannot_be_rewritten_closes_the_connection() {
    let rules: &[&[(&str, &str)]] = &[&[("role", "consume"), ("topic", "empire-announce")]];
    let mut s = session(rules);
    s.deliver(Flow::Request, &[&metadata(1, Some(&["deathstar-plans"]))]);
    let error = s.send(Flow::Reply, &response(1)).unwrap_err();
    assert!(matches!(error, ConnectionError::Parse(e) if e.code == ErrorCode::MalformedFrame));
    let mut s = session(rules);
    s.deliver(Flow::Request, &[&metadata(1, Some(&["deathstar-plans"]))]);
    // Held whole up to the datapath's `maxBuffered` (1 MiB + 4 KiB by default), no further.
    let mut huge = (1024 * 1024 + 4096u32).to_be_bytes().to_vec();
    huge.extend_from_slice(&1i32.to_be_bytes());
    let error = s.send(Flow::Reply, &huge).unwrap_err();
    assert!(matches!(error, ConnectionError::BufferLimit { .. }));
}

#[test]
fn auto_creation_needs_createtopics_for_every_topic_or_is_turned_off() {
    let produce_plans: &[(&str, &str)] = &[("role", "produce"), ("topic", "deathstar-plans")];
    let creating = metadata_creating(1, Some(&["deathstar-plans"]), true);
    let not_creating = metadata_creating(1, Some(&["deathstar-plans"]), false);
    let logged =
        ["Request empire api_key=metadata api_version=12 correlation_id=1 topic=deathstar-plans"];

    let mut s = session(&[produce_plans]);
    assert_eq!(
        s.deliver(Flow::Request, &[&creating]),
        Emitted::new(&not_creating, b""),
        "no createtopics rule: the same request, auto-creation off"
    );
    assert_eq!(s.log(), logged);
    assert_eq!(
        s.deliver(Flow::Reply, &[&response(1)]),
        Emitted::new(b"", &response(1)),
        "the broker's answer to the rewritten request is the client's"
    );

    let versioned: &[(&str, &str)] = &[("apiKey", "createtopics"), ("apiVersion", "7")];
    let mut s = session(&[produce_plans, versioned]);
    assert_eq!(
        s.deliver(Flow::Request, &[&creating]),
        Emitted::new(&not_creating, b""),
        "a createtopics rule naming a version does not allow auto-creation"
    );

    let other_topic: &[(&str, &str)] = &[("apiKey", "createtopics"), ("topic", "empire-drills")];
    let mut s = session(&[produce_plans, other_topic]);
    assert_eq!(
        s.deliver(Flow::Request, &[&creating]),
        Emitted::new(&not_creating, b""),
        "createtopics for another topic"
    );

    for create in [
        &[("apiKey", "createtopics"), ("topic", "deathstar-plans")][..],
        &[("apiKey", "createtopics")][..],
    ] {
        let mut s = session(&[produce_plans, create]);
        assert_eq!(
            s.deliver(Flow::Request, &[&creating]),
            Emitted::new(&creating, b""),
            "createtopics allowed: passed as it is"
        );
        assert_eq!(s.log(), logged);
    }

    let mut s = session(&[produce_plans]);
    let all = metadata_creating(2, None, true);
    assert_eq!(
        s.deliver(Flow::Request, &[&all]),
        Emitted::new(&all, b""),
        "a request for all topics creates none"
    );
}

#[test]
fn narrowed_metadata_requests_create_only_what_createtopics_allows() {
    let both = metadata_creating(1, Some(&["deathstar-plans", "empire-announce"]), true);
    let produce_plans: &[(&str, &str)] = &[("role", "produce"), ("topic", "deathstar-plans")];
    let mut s = session(&[produce_plans]);
    assert_eq!(
        s.deliver(Flow::Request, &[&both]),
        Emitted::new(
            &metadata_creating(1, Some(&["deathstar-plans"]), false),
            b""
        )
    );
    assert_eq!(
        s.log(),
        [
            "Request empire api_key=metadata api_version=12 correlation_id=1 topic=deathstar-plans",
            "Denied  api_key=metadata api_version=12 correlation_id=1 topic=empire-announce",
        ]
    );
    let create_plans: &[(&str, &str)] = &[("apiKey", "createtopics"), ("topic", "deathstar-plans")];
    let mut s = session(&[produce_plans, create_plans]);
    assert_eq!(
        s.deliver(Flow::Request, &[&both]),
        Emitted::new(&metadata_creating(1, Some(&["deathstar-plans"]), true), b""),
        "the kept topic may be created"
    );
}

#[test]
fn metadata_v3_naming_topics_needs_createtopics() {
    let produce_plans: &[(&str, &str)] = &[("role", "produce"), ("topic", "deathstar-plans")];
    let request = metadata_v3(1, &["deathstar-plans"]);
    let mut s = session(&[produce_plans]);
    assert_eq!(
        s.deliver(Flow::Request, &[&request]),
        Emitted::new(b"", &denial(&request)),
        "no flag to turn off: denied"
    );
    assert_eq!(
        s.log(),
        ["Denied  api_key=metadata api_version=3 correlation_id=1 topic=deathstar-plans"]
    );
    let both = metadata_v3(2, &["deathstar-plans", "empire-announce"]);
    assert_eq!(
        s.deliver(Flow::Request, &[&both]),
        Emitted::new(b"", &denial(&both)),
        "nor narrowed"
    );
    let create_plans: &[(&str, &str)] = &[("apiKey", "createtopics"), ("topic", "deathstar-plans")];
    let mut s = session(&[produce_plans, create_plans]);
    assert_eq!(
        s.deliver(Flow::Request, &[&request]),
        Emitted::new(&request, b"")
    );
    let narrowed = metadata_v3(2, &["deathstar-plans"]);
    assert_eq!(
        s.deliver(Flow::Request, &[&both]),
        Emitted::new(&narrowed, b""),
        "narrowed to the topic that may be created"
    );
}

#[test]
fn unreadable_requests_close_the_connection() {
    let mut s = session(EMPIRE);
    s.assert_refuses(&frame(99, 0, 1, false, b""), ErrorCode::InvalidFrameType);
    let mut s = session(EMPIRE);
    s.assert_refuses(b"\xff\xff\xff\xff", ErrorCode::InvalidFrameLength);
    let mut s = session(EMPIRE);
    let mut truncated = produce(1, 1, &["deathstar-plans"]);
    truncated.pop();
    truncated[3] -= 1;
    s.assert_refuses(&truncated, ErrorCode::MalformedFrame);
    let mut s = session(EMPIRE);
    s.assert_refuses(&frame(0, 2, 1, false, b""), ErrorCode::Unsupported);
    let mut s = session(EMPIRE);
    let partitions = frame(37, 3, 1, true, b"\x01\x00\x00");
    let error = s.send(Flow::Request, &partitions).unwrap_err();
    assert!(matches!(error, ConnectionError::Parse(e) if e.code == ErrorCode::Unsupported));
    assert_eq!(
        s.log(),
        [
            "Denied  api_key=createpartitions api_version=3 correlation_id=1",
            "Denied  status=Error: protocol error: unsupported: denied request of an API whose denial cannot be composed",
        ],
        "a denied request whose denial cannot be composed is logged, then the close"
    );
    let kafka = Kafka::new(16);
    let mut s = Session::new(&kafka, RulesPolicy::compile(&kafka, "all", &[&[]]));
    s.assert_refuses(&produce(1, 1, &["a"]), ErrorCode::FrameTooLarge);
}

#[test]
fn out_of_order_responses_close_the_connection() {
    let mut s = session(EMPIRE);
    s.deliver(
        Flow::Request,
        &[&[
            produce(1, 1, &["deathstar-plans"]),
            produce(2, 1, &["deathstar-plans"]),
        ]
        .concat()],
    );
    assert!(s.send(Flow::Reply, &response(2)).is_err());
}

/// What a session under `rules` sends both ways, round by round, and then logs, when each
/// round's requests and then its responses are delivered cut at `cuts` (two lists per round,
/// requests first; missing lists deliver whole).
fn deliver_cut(
    rules: &[&[(&str, &str)]],
    rounds: &[(Vec<u8>, Vec<u8>)],
    cuts: &[Vec<usize>],
) -> (Vec<Emitted>, Vec<String>) {
    let mut s = session(rules);
    let mut cuts = cuts.iter().cloned();
    let mut emitted = Vec::new();
    for (requests, responses) in rounds {
        let request_cuts = cuts.next().unwrap_or_default();
        emitted.push(s.deliver(Flow::Request, &split_at_points(requests, request_cuts)));
        let response_cuts = cuts.next().unwrap_or_default();
        emitted.push(s.deliver(Flow::Reply, &split_at_points(responses, response_cuts)));
    }
    (emitted, s.log())
}

/// Requests, then responses, of a conversation mixing allowed and denied requests.
fn conversation() -> (Vec<u8>, Vec<u8>) {
    let requests = [
        frame(18, 3, 1, true, b"\x07rdkafka\x062.10.0\x00"),
        metadata(2, Some(&["empire-announce", "deathstar-plans"])),
        produce(3, 1, &["empire-announce"]),
        produce(4, -1, &["deathstar-plans"]),
        produce(5, 0, &["deathstar-plans"]),
        fetch_by_id(6, [1; 16]),
        metadata(7, None),
    ]
    .concat();
    let responses = [response(1), response(2), response(4), response(7)].concat();
    (requests, responses)
}

proptest! {
    /// However the streams are cut into reads, the proxy sends the same bytes and logs the
    /// same entries.
    #[test]
    fn chunking_does_not_change_anything(
        request_cuts in prop::collection::vec(0usize..600, 0..12),
        response_cuts in prop::collection::vec(0usize..100, 0..8),
    ) {
        let rounds = [conversation()];
        prop_assert_eq!(
            deliver_cut(EMPIRE, &rounds, &[request_cuts, response_cuts]),
            deliver_cut(EMPIRE, &rounds, &[])
        );
    }
}

#[test]
fn the_conversation_is_judged_as_the_empire_policy_says() {
    let (requests, responses) = conversation();
    let mut s = session(EMPIRE);
    s.deliver(Flow::Request, &[&requests]);
    s.deliver(Flow::Reply, &[&responses]);
    let verdicts: Vec<String> = s
        .log()
        .iter()
        .map(|entry| entry.split(" api_version").next().unwrap().to_owned())
        .collect();
    assert_eq!(
        verdicts,
        [
            "Request empire api_key=apiversions",
            "Request empire api_key=metadata",
            "Denied  api_key=produce",
            "Request empire api_key=produce",
            "Request empire api_key=produce",
            "Denied  api_key=fetch",
            "Request empire api_key=metadata",
        ]
    );
}

/// A flexible Metadata v12 request whose one topic entry carries both `id` and `name`.
fn metadata_by_id_and_name(correlation_id: i32, id: [u8; 16], name: &str) -> Vec<u8> {
    let mut body = vec![2];
    body.extend_from_slice(&id);
    body.push(name.len() as u8 + 1);
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    body.extend_from_slice(&[0, 0, 0]);
    frame(3, 12, correlation_id, true, &body)
}

#[test]
fn a_metadata_topic_named_by_both_an_id_and_a_name_closes_the_connection() {
    // Kafka's broker answers a Metadata v12+ request by its topic ids as soon as one entry has
    // a non-zero id, and ignores the names; tansu answers each entry by its name when it has
    // one. Judged by the id, the plans named behind the announcements' id reach tansu, which
    // describes the plans; judged by the name, the reverse reaches Kafka's broker.
    let kafka = Kafka::default();
    let rules: &[&[(&str, &str)]] = &[&[("role", "consume"), ("topic", "empire-announce")]];
    let taught = || {
        let mut s = Session::new(&kafka, RulesPolicy::compile(&kafka, "outposts", rules));
        s.deliver(Flow::Request, &[&metadata(1, Some(&["empire-announce"]))]);
        let answer = metadata_response(
            1,
            &[("empire-announce", ANNOUNCE), ("deathstar-plans", PLANS)],
        );
        s.deliver(Flow::Reply, &[&answer]);
        s
    };
    for (id, name) in [
        (ANNOUNCE, "deathstar-plans"),
        (PLANS, "empire-announce"),
        (ANNOUNCE, "empire-announce"),
    ] {
        let mut s = taught();
        s.assert_refuses(
            &metadata_by_id_and_name(2, id, name),
            ErrorCode::MalformedFrame,
        );
    }
    // An id with an empty name (Kafka's Java client leaves the name empty when it asks by id)
    // names the topic of its id, for either broker.
    let mut s = taught();
    let announce = metadata_by_id_and_name(2, ANNOUNCE, "");
    assert_eq!(
        s.deliver(Flow::Request, &[&announce]),
        Emitted::new(&announce, b"")
    );
    let plans = metadata_by_id_and_name(3, PLANS, "");
    assert_eq!(
        s.deliver(Flow::Request, &[&plans]),
        Emitted::new(&metadata(3, Some(&[])), b""),
        "narrowed to no topic"
    );
    assert_eq!(
        s.log()[2..],
        ["Denied  api_key=metadata api_version=12 correlation_id=3 topic=deathstar-plans"]
    );
}

/// A flexible DeleteTopics v6 request with one topic entry: `name` (null for `None`) and `id`,
/// then a timeout of 5 s.
fn delete_topics_v6(correlation_id: i32, name: Option<&str>, id: [u8; 16]) -> Vec<u8> {
    let mut body = vec![2];
    match name {
        Some(name) => {
            body.push(name.len() as u8 + 1);
            body.extend_from_slice(name.as_bytes());
        }
        None => body.push(0),
    }
    body.extend_from_slice(&id);
    body.push(0);
    body.extend_from_slice(&5000i32.to_be_bytes());
    body.push(0);
    frame(20, 6, correlation_id, true, &body)
}

#[test]
fn a_topic_to_delete_named_by_both_an_id_and_a_name_closes_the_connection() {
    // Kafka's broker refuses such an entry; tansu deletes the topic of the id. Judged by its
    // name, a client allowed to delete the drills would delete the plans.
    let kafka = Kafka::default();
    let rules: &[&[(&str, &str)]] = &[&[("apiKey", "deletetopics"), ("topic", "empire-drills")]];
    let session = || Session::new(&kafka, RulesPolicy::compile(&kafka, "hq", rules));
    session().assert_refuses(
        &delete_topics_v6(1, Some("empire-drills"), PLANS),
        ErrorCode::MalformedFrame,
    );
    session().assert_refuses(
        &delete_topics_v6(1, Some(""), PLANS),
        ErrorCode::MalformedFrame,
    );
    let mut s = session();
    let drills = delete_topics_v6(1, Some("empire-drills"), [0; 16]);
    assert_eq!(
        s.deliver(Flow::Request, &[&drills]),
        Emitted::new(&drills, b"")
    );
    let by_id = delete_topics_v6(2, None, PLANS);
    assert_eq!(s.deliver(Flow::Request, &[&by_id]).upstream, b"");
    assert_eq!(
        s.log()[1],
        "Denied  api_key=deletetopics api_version=6 correlation_id=2 topic=AgICAgICAgICAgICAgICAg"
    );
}

/// A flexible OffsetFetch v8 request: each group with its topics (each asking partition 0),
/// or null (all the group's topics).
fn offset_fetch_groups(correlation_id: i32, groups: &[(&str, Option<&[&str]>)]) -> Vec<u8> {
    let mut body = vec![groups.len() as u8 + 1];
    for (group, topics) in groups {
        body.push(group.len() as u8 + 1);
        body.extend_from_slice(group.as_bytes());
        match topics {
            None => body.push(0),
            Some(topics) => {
                body.push(topics.len() as u8 + 1);
                for topic in *topics {
                    body.push(topic.len() as u8 + 1);
                    body.extend_from_slice(topic.as_bytes());
                    body.extend_from_slice(b"\x02\x00\x00\x00\x00\x00");
                }
            }
        }
        body.push(0);
    }
    // RequireStable, tagged fields.
    body.extend_from_slice(&[0, 0]);
    frame(9, 8, correlation_id, true, &body)
}

#[test]
fn an_offset_fetch_group_asking_for_all_its_topics_needs_a_rule_without_topic() {
    let mut s = session(&[&[("role", "consume"), ("topic", "empire-announce")]]);
    let named = offset_fetch_groups(1, &[("outposts", Some(&["empire-announce"]))]);
    assert_eq!(
        s.deliver(Flow::Request, &[&named]),
        Emitted::new(&named, b"")
    );
    s.deliver(Flow::Reply, &[&response(1)]);
    let smuggled =
        offset_fetch_groups(2, &[("outposts", Some(&["empire-announce"])), ("hq", None)]);
    assert_eq!(
        s.deliver(Flow::Request, &[&smuggled]),
        Emitted::new(b"", &denial(&smuggled)),
        "the broker answers every topic of the second group"
    );
}

#[test]
fn apis_naming_topics_in_unread_bodies_need_a_rule_without_topic() {
    // DescribeTopicPartitions v0: topics [deathstar-plans], a partition limit, a null cursor.
    let mut body = b"\x02\x10deathstar-plans\x00".to_vec();
    body.extend_from_slice(&2000i32.to_be_bytes());
    body.extend_from_slice(b"\xff\x00");
    let describe = frame(75, 0, 1, true, &body);
    // OffsetDelete v0 (classic): group "hq", topics [deathstar-plans partition 0].
    let mut body = b"\x00\x02hq\x00\x00\x00\x01\x00\x0fdeathstar-plans".to_vec();
    body.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    let delete = frame(47, 0, 1, false, &body);
    for (request, rules) in [
        (&describe, &[("topic", "empire-announce")][..]),
        (
            &describe,
            &[
                ("apiKey", "describetopicpartitions"),
                ("topic", "empire-announce"),
            ][..],
        ),
        (&delete, &[("topic", "empire-announce")][..]),
    ] {
        let mut s = session(&[rules]);
        let error = s.send(Flow::Request, request).unwrap_err();
        assert!(
            matches!(error, ConnectionError::Parse(e) if e.code == ErrorCode::Unsupported),
            "{rules:?}"
        );
    }
    let mut s = session(&[&[("apiKey", "describetopicpartitions")]]);
    assert_eq!(
        s.deliver(Flow::Request, &[&describe]),
        Emitted::new(&describe, b""),
        "a rule without topic allows it"
    );
}

#[test]
fn raw_tokens_after_a_version_0_sasl_handshake_close_the_connection() {
    let mut s = session(&[&[("apiKey", "saslhandshake")], &[("apiKey", "apiversions")]]);
    let handshake = frame(17, 0, 1, false, b"\x00\x05PLAIN");
    assert_eq!(
        s.deliver(Flow::Request, &[&handshake]),
        Emitted::new(&handshake, b"")
    );
    // A raw token the client shaped as an allowed request: the broker reads it as a token.
    let token = frame(18, 3, 2, true, b"\x07rdkafka\x062.10.0\x00");
    let error = s.send(Flow::Request, &token).unwrap_err();
    assert!(matches!(error, ConnectionError::Parse(e) if e.code == ErrorCode::Unsupported));
}

#[test]
fn an_incremental_fetch_naming_no_topic_is_not_judged_on_other_keys() {
    let mut s = session(&[&[("role", "consume"), ("topic", "empire-announce")]]);
    // Fetch v12: replica -1, max wait, min bytes, max bytes, isolation, session 1234 at epoch
    // 5, no topics, no forgotten topics, rack "", no tagged fields.
    let mut body = (-1i32).to_be_bytes().to_vec();
    body.extend_from_slice(&500i32.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&1_000_000i32.to_be_bytes());
    body.push(0);
    body.extend_from_slice(&1234i32.to_be_bytes());
    body.extend_from_slice(&5i32.to_be_bytes());
    body.extend_from_slice(b"\x01\x01\x01\x00");
    let incremental = frame(1, 12, 1, true, &body);
    assert_eq!(
        s.deliver(Flow::Request, &[&incremental]),
        Emitted::new(b"", &denial(&incremental))
    );
}

#[test]
fn an_answer_to_an_acks_zero_produce_does_not_teach_topic_ids() {
    let kafka = Kafka::default();
    let rules: &[&[(&str, &str)]] = &[
        &[("role", "consume"), ("topic", "empire-announce")],
        &[("role", "produce"), ("topic", "empire-announce")],
    ];
    let mut s = Session::new(&kafka, RulesPolicy::compile(&kafka, "outposts", rules));
    let unacked = produce(5, 0, &["empire-announce"]);
    let ask = metadata(5, Some(&["empire-announce"]));
    s.deliver(Flow::Request, &[&[unacked, ask].concat()]);
    // The broker answers the Produce first, with bytes the client shaped as a Metadata
    // response, then the Metadata request.
    let shaped = metadata_response(5, &[("empire-announce", PLANS)]);
    let real = metadata_response(5, &[("empire-announce", ANNOUNCE)]);
    s.deliver(Flow::Reply, &[&[shaped, real].concat()]);
    let plans = fetch_by_id(6, PLANS);
    assert_eq!(
        s.deliver(Flow::Request, &[&plans]),
        Emitted::new(b"", &denial(&plans))
    );
}

#[test]
fn a_rule_for_one_topic_does_not_alter_the_configs_of_another() {
    let mut s = session(&[&[("topic", "empire-announce")]]);
    // AlterConfigs v1 (classic): one resource of type topic (2), deathstar-plans, with
    // retention.ms=1; validate only false.
    let mut body = 1i32.to_be_bytes().to_vec();
    body.push(2);
    body.extend_from_slice(b"\x00\x0fdeathstar-plans");
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(b"\x00\x0cretention.ms\x00\x011");
    body.push(0);
    let alter = frame(33, 1, 1, false, &body);
    assert_eq!(
        s.deliver(Flow::Request, &[&alter]),
        Emitted::new(b"", &denial(&alter))
    );
    assert_eq!(
        s.log(),
        ["Denied  api_key=alterconfigs api_version=1 correlation_id=1 topic=deathstar-plans"]
    );
}

/// A flexible Fetch v12 request in fetch session `session_id` at `epoch`, reading `topics`
/// (each with its partitions) and forgetting `forgotten`.
fn fetch_in_session(
    correlation_id: i32,
    session_id: i32,
    epoch: i32,
    topics: &[(&str, &[i32])],
    forgotten: &[(&str, &[i32])],
) -> Vec<u8> {
    let mut body = (-1i32).to_be_bytes().to_vec();
    body.extend_from_slice(&500i32.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&1_000_000i32.to_be_bytes());
    body.push(0);
    body.extend_from_slice(&session_id.to_be_bytes());
    body.extend_from_slice(&epoch.to_be_bytes());
    body.push(topics.len() as u8 + 1);
    for (topic, partitions) in topics {
        body.push(topic.len() as u8 + 1);
        body.extend_from_slice(topic.as_bytes());
        body.push(partitions.len() as u8 + 1);
        for partition in *partitions {
            body.extend_from_slice(&partition.to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes());
            body.extend_from_slice(&0i64.to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes());
            body.extend_from_slice(&(-1i64).to_be_bytes());
            body.extend_from_slice(&1_000_000i32.to_be_bytes());
            body.push(0);
        }
        body.push(0);
    }
    body.push(forgotten.len() as u8 + 1);
    for (topic, partitions) in forgotten {
        body.push(topic.len() as u8 + 1);
        body.extend_from_slice(topic.as_bytes());
        body.push(partitions.len() as u8 + 1);
        for partition in *partitions {
            body.extend_from_slice(&partition.to_be_bytes());
        }
        body.push(0);
    }
    // Rack id "", tagged fields.
    body.extend_from_slice(b"\x01\x00");
    frame(1, 12, correlation_id, true, &body)
}

/// A flexible Fetch v12 response with a top-level `error` and `session_id`, followed by
/// bytes standing for the topics and records, which the proxy must not read.
fn fetch_response(correlation_id: i32, error: i16, session_id: i32) -> Vec<u8> {
    let mut message = correlation_id.to_be_bytes().to_vec();
    message.push(0);
    message.extend_from_slice(&0i32.to_be_bytes());
    message.extend_from_slice(&error.to_be_bytes());
    message.extend_from_slice(&session_id.to_be_bytes());
    message.extend_from_slice(&[0xee; 300]);
    framed(message)
}

/// The top-level error code of a flexible Fetch response.
fn fetch_error(response: &[u8]) -> i16 {
    i16::from_be_bytes([response[13], response[14]])
}

const ANNOUNCE_ONLY: &[&[(&str, &str)]] = &[&[("role", "consume"), ("topic", "empire-announce")]];
const ANNOUNCE_AND_PLANS: &[&[(&str, &str)]] = &[
    &[("role", "consume"), ("topic", "empire-announce")],
    &[("role", "consume"), ("topic", "deathstar-plans")],
];

/// A session under `rules` in which a full fetch of `topics` created fetch session 77.
fn with_fetch_session(rules: &[&[(&str, &str)]], topics: &[(&str, &[i32])]) -> Session {
    let mut s = session(rules);
    let full = fetch_in_session(1, 0, 0, topics, &[]);
    assert_eq!(s.deliver(Flow::Request, &[&full]), Emitted::new(&full, b""));
    let created = fetch_response(1, 0, 77);
    assert_eq!(
        s.deliver(Flow::Reply, &[&created]),
        Emitted::new(b"", &created)
    );
    s
}

#[test]
fn an_incremental_fetch_in_a_session_this_connection_created_is_judged_on_its_topics() {
    let mut s = with_fetch_session(ANNOUNCE_ONLY, &[("empire-announce", &[0, 1])]);
    let incremental = fetch_in_session(2, 77, 1, &[], &[]);
    assert_eq!(
        s.deliver(Flow::Request, &[&incremental]),
        Emitted::new(&incremental, b"")
    );
    assert_eq!(
        s.log()[1],
        "Request empire api_key=fetch api_version=12 correlation_id=2 topic=empire-announce"
    );
    let answer = fetch_response(2, 0, 77);
    assert_eq!(
        s.deliver(Flow::Reply, &[&answer]),
        Emitted::new(b"", &answer)
    );
    let adding = fetch_in_session(3, 77, 2, &[("deathstar-plans", &[0])], &[]);
    assert_eq!(
        s.deliver(Flow::Request, &[&adding]),
        Emitted::new(b"", &denial(&adding)),
        "a denied topic added to the session"
    );
    assert_eq!(fetch_error(&denial(&adding)), 70);
    assert_eq!(
        s.log()[2],
        "Denied  api_key=fetch api_version=12 correlation_id=3 topic=deathstar-plans, empire-announce"
    );
    let again = fetch_in_session(4, 77, 2, &[], &[]);
    assert_eq!(
        s.deliver(Flow::Request, &[&again]),
        Emitted::new(b"", &denial(&again)),
        "a denied fetch forgets its session"
    );
}

#[test]
fn an_incremental_fetch_in_an_unknown_session_is_answered_in_order_as_the_broker_would() {
    let mut s = session(ANNOUNCE_ONLY);
    let full = fetch_in_session(1, 0, 0, &[("empire-announce", &[0])], &[]);
    let foreign = fetch_in_session(2, 1234, 5, &[], &[]);
    assert_eq!(
        s.deliver(Flow::Request, &[&[full.clone(), foreign.clone()].concat()]),
        Emitted::new(&full, b""),
        "the answer waits for the broker's answer to the full fetch"
    );
    let created = fetch_response(1, 0, 77);
    let answered = s.deliver(Flow::Reply, &[&created]);
    assert_eq!(
        answered,
        Emitted::new(b"", &[created, denial(&foreign)].concat())
    );
    assert_eq!(&denial(&foreign)[4..8], &2i32.to_be_bytes());
    assert_eq!(fetch_error(&denial(&foreign)), 70);
    assert_eq!(
        s.log()[1],
        "Denied  api_key=fetch api_version=12 correlation_id=2 topic=*"
    );
    let mut open = session(&[&[("role", "consume")]]);
    assert_eq!(
        open.deliver(Flow::Request, &[&foreign]),
        Emitted::new(&foreign, b""),
        "a rule without topic allows every topic, those of any session too"
    );
}

#[test]
fn a_session_built_before_the_policy_changed_is_judged_by_the_policy_in_force() {
    let mut s = with_fetch_session(
        ANNOUNCE_AND_PLANS,
        &[("empire-announce", &[0]), ("deathstar-plans", &[0])],
    );
    let kafka = Kafka::default();
    s.policy = RulesPolicy::compile(&kafka, "empire", ANNOUNCE_ONLY);
    let incremental = fetch_in_session(2, 77, 1, &[], &[]);
    assert_eq!(
        s.deliver(Flow::Request, &[&incremental]),
        Emitted::new(b"", &denial(&incremental))
    );
    assert_eq!(
        s.log()[1],
        "Denied  api_key=fetch api_version=12 correlation_id=2 topic=empire-announce, deathstar-plans"
    );
    let full = fetch_in_session(
        3,
        0,
        0,
        &[("empire-announce", &[0]), ("deathstar-plans", &[0])],
        &[],
    );
    assert_eq!(
        s.deliver(Flow::Request, &[&full]),
        Emitted::new(b"", &denial(&full)),
        "the client's full fetch is judged as any"
    );
    assert_eq!(
        fetch_error(&denial(&full)),
        0,
        "partitions fail, not the session"
    );
}

#[test]
fn forgotten_partitions_leave_the_session_once_the_broker_confirms() {
    let mut s = with_fetch_session(
        ANNOUNCE_AND_PLANS,
        &[("empire-announce", &[0]), ("deathstar-plans", &[0, 1])],
    );
    let forget_one = fetch_in_session(2, 77, 1, &[], &[("deathstar-plans", &[0])]);
    s.deliver(Flow::Request, &[&forget_one]);
    s.deliver(Flow::Reply, &[&fetch_response(2, 0, 77)]);
    let forget_rest = fetch_in_session(3, 77, 2, &[], &[("deathstar-plans", &[1])]);
    s.deliver(Flow::Request, &[&forget_rest]);
    let kafka = Kafka::default();
    s.policy = RulesPolicy::compile(&kafka, "empire", ANNOUNCE_ONLY);
    let early = fetch_in_session(4, 77, 3, &[], &[]);
    assert_eq!(
        s.deliver(Flow::Request, &[&early]),
        Emitted::new(b"", b""),
        "denied: the last fetch is unanswered, its partitions have not left yet"
    );
    let answer = fetch_response(3, 0, 77);
    assert_eq!(
        s.deliver(Flow::Reply, &[&answer]),
        Emitted::new(b"", &[answer.clone(), denial(&early)].concat())
    );
    assert_eq!(
        s.log().last().unwrap(),
        "Denied  api_key=fetch api_version=12 correlation_id=4 topic=*"
    );
    let mut s = with_fetch_session(
        ANNOUNCE_AND_PLANS,
        &[("empire-announce", &[0]), ("deathstar-plans", &[0, 1])],
    );
    s.deliver(Flow::Request, &[&forget_one]);
    s.deliver(Flow::Reply, &[&fetch_response(2, 0, 77)]);
    s.policy = RulesPolicy::compile(&kafka, "empire", ANNOUNCE_ONLY);
    let partly = fetch_in_session(3, 77, 2, &[], &[]);
    assert_eq!(
        s.deliver(Flow::Request, &[&partly]),
        Emitted::new(b"", &denial(&partly)),
        "partition 1 of deathstar-plans is still in the session"
    );
    let mut s = with_fetch_session(
        ANNOUNCE_AND_PLANS,
        &[("empire-announce", &[0]), ("deathstar-plans", &[0, 1])],
    );
    let forget_all = fetch_in_session(2, 77, 1, &[], &[("deathstar-plans", &[0, 1])]);
    s.deliver(Flow::Request, &[&forget_all]);
    s.deliver(Flow::Reply, &[&fetch_response(2, 0, 77)]);
    s.policy = RulesPolicy::compile(&kafka, "empire", ANNOUNCE_ONLY);
    let next = fetch_in_session(3, 77, 2, &[], &[]);
    assert_eq!(s.deliver(Flow::Request, &[&next]), Emitted::new(&next, b""));
    assert_eq!(
        s.log().last().unwrap(),
        "Request empire api_key=fetch api_version=12 correlation_id=3 topic=empire-announce"
    );
}

#[test]
fn a_failed_fetch_forgets_its_session_with_what_it_would_have_forgotten() {
    let mut s = with_fetch_session(
        ANNOUNCE_AND_PLANS,
        &[("empire-announce", &[0]), ("deathstar-plans", &[0])],
    );
    let forget = fetch_in_session(2, 77, 9, &[], &[("deathstar-plans", &[0])]);
    s.deliver(Flow::Request, &[&forget]);
    // INVALID_FETCH_SESSION_EPOCH: the broker kept the session, partitions and all.
    s.deliver(Flow::Reply, &[&fetch_response(2, 71, 0)]);
    let next = fetch_in_session(3, 77, 1, &[], &[]);
    assert_eq!(
        s.deliver(Flow::Request, &[&next]),
        Emitted::new(b"", &denial(&next))
    );
}

#[test]
fn the_final_epoch_and_full_fetches_close_the_session_they_name() {
    for closing in [
        fetch_in_session(2, 77, -1, &[("empire-announce", &[0])], &[]),
        fetch_in_session(2, 77, 0, &[("empire-announce", &[0])], &[]),
    ] {
        let mut s = with_fetch_session(ANNOUNCE_ONLY, &[("empire-announce", &[0])]);
        assert_eq!(
            s.deliver(Flow::Request, &[&closing]),
            Emitted::new(&closing, b"")
        );
        s.deliver(Flow::Reply, &[&fetch_response(2, 0, 0)]);
        let next = fetch_in_session(3, 77, 1, &[], &[]);
        assert_eq!(
            s.deliver(Flow::Request, &[&next]),
            Emitted::new(b"", &denial(&next))
        );
    }
}

#[test]
fn a_session_is_created_only_by_the_answer_to_its_own_fetch() {
    let mut s = session(ANNOUNCE_ONLY);
    // An acks=0 Produce the broker may answer, then a full fetch with the same correlation id:
    // the first answer with it may be the Produce's, shaped by the client.
    let produce_rules: &[&[(&str, &str)]] = &[
        &[("role", "consume"), ("topic", "empire-announce")],
        &[("role", "produce"), ("topic", "empire-announce")],
    ];
    let kafka = Kafka::default();
    s.policy = RulesPolicy::compile(&kafka, "empire", produce_rules);
    let unacked = produce(5, 0, &["empire-announce"]);
    let full = fetch_in_session(5, 0, 0, &[("empire-announce", &[0])], &[]);
    s.deliver(Flow::Request, &[&[unacked, full].concat()]);
    s.deliver(
        Flow::Reply,
        &[&[fetch_response(5, 0, 1234), fetch_response(5, 0, 77)].concat()],
    );
    for (id, correlation_id) in [(1234, 6), (77, 7)] {
        let incremental = fetch_in_session(correlation_id, id, 1, &[], &[]);
        assert_eq!(
            s.deliver(Flow::Request, &[&incremental]),
            Emitted::new(b"", &denial(&incremental)),
            "session {id}"
        );
    }
}

#[test]
fn a_connection_keeps_a_few_sessions_and_forgets_the_oldest() {
    let mut s = session(ANNOUNCE_ONLY);
    let sessions = crate::fetch_sessions::MAX_SESSIONS as i32 + 1;
    for n in 1..=sessions {
        let full = fetch_in_session(n, 0, 0, &[("empire-announce", &[0])], &[]);
        s.deliver(Flow::Request, &[&full]);
        s.deliver(Flow::Reply, &[&fetch_response(n, 0, 100 + n)]);
    }
    let oldest = fetch_in_session(50, 101, 1, &[], &[]);
    assert_eq!(
        s.deliver(Flow::Request, &[&oldest]),
        Emitted::new(b"", &denial(&oldest))
    );
    for n in 2..=sessions {
        let kept = fetch_in_session(50 + n, 100 + n, 1, &[], &[]);
        assert_eq!(s.deliver(Flow::Request, &[&kept]), Emitted::new(&kept, b""));
        s.deliver(Flow::Reply, &[&fetch_response(50 + n, 0, 100 + n)]);
    }
}

/// A config resource's body: its type and name, in the version's encoding.
fn resource(out: &mut Vec<u8>, flexible: bool, kind: i8, name: &str) {
    out.push(kind as u8);
    match flexible {
        true => out.push(name.len() as u8 + 1),
        false => out.extend_from_slice(&(name.len() as i16).to_be_bytes()),
    }
    out.extend_from_slice(name.as_bytes());
}

/// An array length in the version's encoding.
fn array_len(out: &mut Vec<u8>, flexible: bool, n: usize) {
    match flexible {
        true => out.push(n as u8 + 1),
        false => out.extend_from_slice(&(n as i32).to_be_bytes()),
    }
}

/// A DescribeConfigs request (v1 classic, v4 flexible) for `resources` (type, name), all
/// their keys.
fn describe_configs(correlation_id: i32, version: i16, resources: &[(i8, &str)]) -> Vec<u8> {
    let flexible = version >= 4;
    let mut body = Vec::new();
    array_len(&mut body, flexible, resources.len());
    for (kind, name) in resources {
        resource(&mut body, flexible, *kind, name);
        match flexible {
            true => body.extend_from_slice(b"\x00\x00"),
            false => body.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    body.push(0);
    if version >= 3 {
        body.push(0);
    }
    if flexible {
        body.push(0);
    }
    frame(32, version, correlation_id, flexible, &body)
}

/// An IncrementalAlterConfigs request (v0 classic, v1 flexible) setting retention.ms=1 on
/// each resource.
fn incremental_alter_configs(
    correlation_id: i32,
    version: i16,
    resources: &[(i8, &str)],
) -> Vec<u8> {
    let flexible = version >= 1;
    let mut body = Vec::new();
    array_len(&mut body, flexible, resources.len());
    for (kind, name) in resources {
        resource(&mut body, flexible, *kind, name);
        array_len(&mut body, flexible, 1);
        match flexible {
            true => body.extend_from_slice(b"\x0dretention.ms\x00\x021\x00\x00"),
            false => body.extend_from_slice(b"\x00\x0cretention.ms\x00\x00\x011"),
        }
    }
    body.push(0);
    if flexible {
        body.push(0);
    }
    frame(44, version, correlation_id, flexible, &body)
}

/// An ACL or filter: resource type, name (`None`: null, filters only), pattern type.
type Acl<'a> = (i8, Option<&'a str>, i8);

fn acl_fields(out: &mut Vec<u8>, flexible: bool, (kind, name, pattern): Acl<'_>, filter: bool) {
    out.push(kind as u8);
    let string = |out: &mut Vec<u8>, s: Option<&str>| match (flexible, s) {
        (true, Some(s)) => {
            out.push(s.len() as u8 + 1);
            out.extend_from_slice(s.as_bytes());
        }
        (true, None) => out.push(0),
        (false, Some(s)) => {
            out.extend_from_slice(&(s.len() as i16).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        (false, None) => out.extend_from_slice(&(-1i16).to_be_bytes()),
    };
    string(out, name);
    out.push(pattern as u8);
    let principal = if filter { None } else { Some("User:outpost") };
    string(out, principal);
    string(out, if filter { None } else { Some("*") });
    // Operation READ (3), permission ALLOW (3).
    out.extend_from_slice(&[3, 3]);
    if flexible {
        out.push(0);
    }
}

/// A CreateAcls (30), DescribeAcls (29) or DeleteAcls (31) request of `version` (v1 classic,
/// v2 and v3 flexible).
fn acls(key: i16, correlation_id: i32, version: i16, entries: &[Acl<'_>]) -> Vec<u8> {
    let flexible = version >= 2;
    let mut body = Vec::new();
    if key == 29 {
        acl_fields(&mut body, flexible, entries[0], true);
        if flexible {
            // The filter's tagged fields are the body's.
            body.pop();
        }
    } else {
        array_len(&mut body, flexible, entries.len());
        for entry in entries {
            acl_fields(&mut body, flexible, *entry, key == 31);
        }
    }
    if flexible {
        body.push(0);
    }
    frame(key, version, correlation_id, flexible, &body)
}

#[test]
fn config_apis_are_judged_on_their_topic_resources() {
    let rules: &[&[(&str, &str)]] = &[
        &[("apiKey", "describeconfigs"), ("topic", "empire-announce")],
        &[
            ("apiKey", "incrementalalterconfigs"),
            ("topic", "empire-announce"),
        ],
    ];
    for version in [1, 4] {
        let mut s = session(rules);
        let allowed = describe_configs(1, version, &[(2, "empire-announce")]);
        assert_eq!(
            s.deliver(Flow::Request, &[&allowed]),
            Emitted::new(&allowed, b""),
            "v{version}"
        );
        s.deliver(Flow::Reply, &[&response(1)]);
        let both = describe_configs(
            2,
            version,
            &[(2, "empire-announce"), (2, "deathstar-plans")],
        );
        let broker = describe_configs(3, version, &[(4, "1")]);
        let unknown = describe_configs(4, version, &[(0, "empire-announce")]);
        for denied in [&both, &broker, &unknown] {
            assert_eq!(
                s.deliver(Flow::Request, &[denied]),
                Emitted::new(b"", &denial(denied)),
                "v{version}"
            );
        }
        assert_eq!(
            s.log()[1..],
            [
                format!("Denied  api_key=describeconfigs api_version={version} correlation_id=2 topic=empire-announce, deathstar-plans"),
                format!("Denied  api_key=describeconfigs api_version={version} correlation_id=3"),
                format!("Denied  api_key=describeconfigs api_version={version} correlation_id=4 topic=*"),
            ]
        );
        let mut open = session(&[&[("apiKey", "describeconfigs")]]);
        assert_eq!(
            open.deliver(Flow::Request, &[&broker]),
            Emitted::new(&broker, b""),
            "a rule without topic allows the broker's configs"
        );
    }
    for version in [0, 1] {
        let mut s = session(rules);
        let allowed = incremental_alter_configs(1, version, &[(2, "empire-announce")]);
        assert_eq!(
            s.deliver(Flow::Request, &[&allowed]),
            Emitted::new(&allowed, b""),
            "v{version}"
        );
        let denied = incremental_alter_configs(2, version, &[(2, "deathstar-plans"), (8, "1")]);
        s.deliver(Flow::Reply, &[&response(1)]);
        assert_eq!(
            s.deliver(Flow::Request, &[&denied]),
            Emitted::new(b"", &denial(&denied)),
            "v{version}"
        );
    }
}

#[test]
fn acls_name_a_topic_only_by_one_literal_name() {
    let rules: &[&[(&str, &str)]] = &[&[("topic", "empire-announce")]];
    const TOPIC: i8 = 2;
    const LITERAL: i8 = 3;
    for version in [1, 2, 3] {
        for key in [29, 30, 31] {
            let mut s = session(rules);
            let literal = acls(
                key,
                1,
                version,
                &[(TOPIC, Some("empire-announce"), LITERAL)],
            );
            assert_eq!(
                s.deliver(Flow::Request, &[&literal]),
                Emitted::new(&literal, b""),
                "key {key} v{version}"
            );
            s.deliver(Flow::Reply, &[&response(1)]);
            let mut denied = vec![
                acls(key, 2, version, &[(TOPIC, Some("empire"), 4)]),
                acls(key, 3, version, &[(TOPIC, Some("*"), LITERAL)]),
                acls(key, 4, version, &[(1, Some("empire-announce"), LITERAL)]),
                acls(key, 5, version, &[(3, Some("outposts"), LITERAL)]),
            ];
            if key != 30 {
                denied.push(acls(key, 6, version, &[(TOPIC, None, LITERAL)]));
                denied.push(acls(
                    key,
                    7,
                    version,
                    &[(TOPIC, Some("empire-announce"), 1)],
                ));
                denied.push(acls(
                    key,
                    8,
                    version,
                    &[(TOPIC, Some("empire-announce"), 2)],
                ));
            }
            if key == 31 {
                denied.push(acls(
                    key,
                    9,
                    version,
                    &[
                        (TOPIC, Some("empire-announce"), LITERAL),
                        (TOPIC, Some("deathstar-plans"), LITERAL),
                    ],
                ));
            }
            for request in &denied {
                assert_eq!(
                    s.deliver(Flow::Request, &[request]),
                    Emitted::new(b"", &denial(request)),
                    "key {key} v{version}: {:?}",
                    s.log().last()
                );
            }
            let topics: Vec<String> = s.log()[1..]
                .iter()
                .map(|entry| entry.split(" topic=").nth(1).unwrap_or("-").to_owned())
                .collect();
            let mut expected = vec!["*", "*", "*", "-"];
            if key != 30 {
                expected.extend(["*", "*", "*"]);
            }
            if key == 31 {
                expected.push("empire-announce, deathstar-plans");
            }
            assert_eq!(topics, expected, "key {key} v{version}");
        }
    }
}

/// A conversation in two rounds (requests, then responses, each): a full fetch creating
/// session 77, an incremental fetch in a session never seen, a denied DescribeConfigs and an
/// allowed one; then an incremental fetch in session 77 adding a partition and its answer.
fn session_conversation() -> [(Vec<u8>, Vec<u8>); 2] {
    let first = [
        fetch_in_session(1, 0, 0, &[("empire-announce", &[0])], &[]),
        fetch_in_session(2, 1234, 5, &[], &[]),
        describe_configs(3, 4, &[(2, "deathstar-plans")]),
        describe_configs(4, 1, &[(2, "empire-announce")]),
    ]
    .concat();
    let first_answers = [fetch_response(1, 0, 77), response(4)].concat();
    let second = fetch_in_session(5, 77, 1, &[("empire-announce", &[1])], &[]);
    [(first, first_answers), (second, fetch_response(5, 0, 77))]
}

const SESSION_RULES: &[&[(&str, &str)]] = &[
    &[("role", "consume"), ("topic", "empire-announce")],
    &[("apiKey", "describeconfigs"), ("topic", "empire-announce")],
];

proptest! {
    /// However the streams of a conversation with fetch sessions and config requests are cut
    /// into reads, the proxy sends the same bytes and logs the same entries.
    #[test]
    fn chunking_does_not_change_fetch_sessions(
        cuts in prop::collection::vec(prop::collection::vec(0usize..200, 0..8), 4),
    ) {
        let rounds = session_conversation();
        prop_assert_eq!(
            deliver_cut(SESSION_RULES, &rounds, &cuts),
            deliver_cut(SESSION_RULES, &rounds, &[])
        );
    }
}

#[test]
fn the_session_conversation_is_judged_as_its_rules_say() {
    let mut s = session(SESSION_RULES);
    let [(first, first_answers), (second, second_answer)] = session_conversation();
    s.deliver(Flow::Request, &[&first]);
    s.deliver(Flow::Reply, &[&first_answers]);
    let emitted = s.deliver(Flow::Request, &[&second]);
    assert_eq!(emitted, Emitted::new(&second, b""));
    s.deliver(Flow::Reply, &[&second_answer]);
    assert_eq!(
        s.log(),
        [
            "Request empire api_key=fetch api_version=12 correlation_id=1 topic=empire-announce",
            "Denied  api_key=fetch api_version=12 correlation_id=2 topic=*",
            "Denied  api_key=describeconfigs api_version=4 correlation_id=3 topic=deathstar-plans",
            "Request empire api_key=describeconfigs api_version=1 correlation_id=4 topic=empire-announce",
            "Request empire api_key=fetch api_version=12 correlation_id=5 topic=empire-announce",
        ]
    );
}

#[test]
fn log_numbers_are_written_as_rust_formats_them() {
    for n in [
        0,
        7,
        -1,
        10,
        -10,
        12_345,
        i32::from(i16::MIN),
        i32::MAX,
        i32::MIN,
    ] {
        let mut out = Vec::new();
        super::write_decimal(&mut out, n);
        assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
    }
}

/// Every API at versions outside the table: a request whose body is read, of a removed key or
/// of a negative version closes the connection with a logged parse error; any other is judged
/// by its header,
/// so it passes when a rule allows it, and a denial at a version this crate cannot answer
/// closes the connection.
#[test]
fn versions_the_table_does_not_know_fail_closed_for_every_api() {
    let kafka = Kafka::default();
    for api in crate::Api::all() {
        let Some((low, high)) = api.versions else {
            let mut s = session(EMPIRE);
            s.assert_refuses(&frame(api.key, 1, 1, false, b""), ErrorCode::Unsupported);
            continue;
        };
        let request = |version: i16| {
            frame(
                api.key,
                version,
                1,
                api.is_flexible(version),
                b"\x00\x00\x00",
            )
        };
        let outside = [Some(high + 1), low.checked_sub(1)];
        for version in outside.into_iter().flatten() {
            let what = format!("{} v{version}", api.name);
            if crate::parser::reads_body(api.key) || version < 0 {
                let mut s = session(&[&[]]);
                s.assert_refuses(&request(version), ErrorCode::Unsupported);
                assert!(
                    s.log()[0].ends_with("API version the broker does not accept"),
                    "{what}: {:?}",
                    s.log()
                );
                continue;
            }
            let mut s = Session::new(&kafka, RulesPolicy::compile(&kafka, "all", &[&[]]));
            assert_eq!(
                s.deliver(Flow::Request, &[&request(version)]),
                Emitted::new(&request(version), b""),
                "{what}: allowed by a rule without keys"
            );
            let mut s = session(&[&[("apiKey", "produce")]]);
            let sent = s.send(Flow::Request, &request(version));
            match api.key {
                // Authentication passes whatever the rules.
                crate::api::SASL_HANDSHAKE | crate::api::SASL_AUTHENTICATE => {
                    assert!(sent.is_ok(), "{what}")
                }
                _ => assert!(
                    matches!(sent, Err(ConnectionError::Parse(e)) if e.code == ErrorCode::Unsupported),
                    "{what}: denied, with no denial of that version to answer"
                ),
            }
        }
    }
}

/// A Metadata response longer than the parser holds to learn ids (1 MiB) reaches the client
/// untouched and teaches nothing: a request naming one of its ids is judged as naming an
/// unknown topic, so only a rule without `topic` allows it.
#[test]
fn a_metadata_response_too_long_to_hold_teaches_no_ids_and_their_requests_are_denied() {
    let rules: &[&[(&str, &str)]] = &[&[("role", "consume"), ("topic", "empire-announce")]];
    let mut s = session(rules);
    let ask = metadata(1, Some(&["empire-announce"]));
    assert_eq!(s.deliver(Flow::Request, &[&ask]), Emitted::new(&ask, b""));
    let rack = vec![b'r'; 1024 * 1024];
    let answer = metadata_response_with_rack(1, &[("empire-announce", ANNOUNCE)], Some(&rack));
    assert!(answer.len() > 1024 * 1024 + 4);
    let (head, rest) = answer.split_at(64 * 1024);
    let (first, second) = (
        s.deliver(Flow::Reply, &[head]),
        s.deliver(Flow::Reply, &[rest]),
    );
    assert_eq!(
        Emitted::new(b"", &answer),
        Emitted::new(
            &[first.upstream, second.upstream].concat(),
            &[first.client, second.client].concat()
        ),
        "streamed to the client"
    );
    let fetch = fetch_by_id(2, ANNOUNCE);
    assert_eq!(
        s.deliver(Flow::Request, &[&fetch]),
        Emitted::new(b"", &denial(&fetch)),
        "the id was not learned: an unknown topic"
    );
    let mut learning = session(rules);
    let short = metadata_response(1, &[("empire-announce", ANNOUNCE)]);
    learning.deliver(Flow::Request, &[&ask]);
    learning.deliver(Flow::Reply, &[&short]);
    assert_eq!(
        learning.deliver(Flow::Request, &[&fetch]),
        Emitted::new(&fetch, b""),
        "the same answer within the bound teaches the id"
    );
}

/// Requests, then responses, of a conversation with narrowed Metadata requests: one naming
/// only denied topics, a denied Produce behind it, one naming an allowed and a denied topic,
/// and a classic one naming only a denied topic.
fn narrowing_conversation() -> (Vec<u8>, Vec<u8>) {
    let requests = [
        metadata(1, Some(&["deathstar-plans", "x"])),
        produce(2, 1, &["deathstar-plans"]),
        metadata(3, Some(&["empire-announce", "deathstar-plans"])),
        metadata_v3(4, &["deathstar-plans"]),
    ]
    .concat();
    let responses = [
        answer_v12(1, &[], b"\x00\x0bcluster-id", b"\x01\x05\x02ab"),
        answer_v12(3, &[("empire-announce", ANNOUNCE, 0)], b"\x00\x00", b"\x00"),
        answer_v3(4, &[]),
    ]
    .concat();
    (requests, responses)
}

const NARROWING_RULES: &[&[(&str, &str)]] = &[&[("role", "consume"), ("topic", "empire-announce")]];

#[test]
fn the_narrowing_conversation_tells_the_client_of_every_topic() {
    let (requests, responses) = narrowing_conversation();
    let mut s = session(NARROWING_RULES);
    assert_eq!(
        s.deliver(Flow::Request, &[&requests]),
        Emitted::new(
            &[
                metadata(1, Some(&[])),
                metadata(3, Some(&["empire-announce"])),
                metadata_v3(4, &[]),
            ]
            .concat(),
            b""
        )
    );
    let produce = produce(2, 1, &["deathstar-plans"]);
    let told = [
        answer_v12(
            1,
            &[("deathstar-plans", [0; 16], 29), ("x", [0; 16], 29)],
            b"\x00\x0bcluster-id",
            b"\x01\x05\x02ab",
        ),
        denial(&produce),
        answer_v12(
            3,
            &[
                ("empire-announce", ANNOUNCE, 0),
                ("deathstar-plans", [0; 16], 29),
            ],
            b"\x00\x00",
            b"\x00",
        ),
        answer_v3(4, &[("deathstar-plans", 29)]),
    ]
    .concat();
    assert_eq!(
        s.deliver(Flow::Reply, &[&responses]),
        Emitted::new(b"", &told)
    );
}

proptest! {
    /// However the streams of the narrowing conversation are cut into reads, the proxy sends
    /// the same bytes and logs the same entries.
    #[test]
    fn chunking_does_not_change_narrowed_metadata(
        request_cuts in prop::collection::vec(0usize..300, 0..10),
        response_cuts in prop::collection::vec(0usize..400, 0..10),
    ) {
        let rounds = [narrowing_conversation()];
        prop_assert_eq!(
            deliver_cut(NARROWING_RULES, &rounds, &[request_cuts, response_cuts]),
            deliver_cut(NARROWING_RULES, &rounds, &[])
        );
    }
}

#[test]
fn a_burst_of_rewrites_leaves_at_most_a_few_spare_buffers_behind() {
    use super::{Rewrite, Slot, SpareBuffers, MAX_SPARE};
    let mut spare = SpareBuffers::default();
    let done: Vec<Rewrite> = (0..MAX_SPARE + 4)
        .map(|_| {
            let mut left_out = spare.left_out();
            left_out.bytes.extend_from_slice(b"empire-announce");
            left_out.order.push(Slot::KeptId([7; 16]));
            Rewrite::Narrowed(left_out)
        })
        .collect();
    for rewrite in done {
        spare.keep(rewrite);
    }
    assert_eq!(
        (spare.bytes.len(), spare.orders.len()),
        (MAX_SPARE, MAX_SPARE)
    );
    let reused = spare.left_out();
    assert!(
        reused.bytes.is_empty() && reused.order.is_empty(),
        "emptied"
    );
    assert!(
        reused.bytes.capacity() >= 15,
        "with the capacity of a rewrite done"
    );
}
