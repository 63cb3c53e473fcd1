//! The datapath plus the Kafka parser and a compiled policy must not allocate per request once
//! warm: Produce, Fetch by topic name and by topic id, an incremental Fetch in a fetch session
//! (whose response is read for its session id), Metadata (whose response is held and read for
//! topic ids), Metadata sent on with auto-creation turned off, Metadata narrowed to its allowed
//! topic (whose answer gets the topic left out added), Metadata for every topic (whose answer
//! keeps only the topics the client may see), and a denied Produce, each with its response. Counted with a counting global allocator (a count, not a timing).

pub mod messages;

use axoneme_datapath::{Connection, Env, Limits};
use axoneme_kafka::Kafka;
use axoneme_sdk::{Flow, Protocol};
use axoneme_testkit::{Capture, CountingAllocator, NullLog, RulesPolicy};

use messages::Topic;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const PLANS_ID: [u8; 16] = *b"deathstar-plans!";

/// Reads on one flow.
type Step<'a> = (Flow, &'a [u8]);

/// Allocations while a connection, after `prelude`, carries `steps` 2,000 times, after 100
/// times of warm-up. The first round's output must be `expected` (upstream, client).
fn allocations(prelude: &[Step<'_>], steps: &[Step<'_>], expected: (&[u8], &[u8])) -> u64 {
    let kafka = Kafka::default();
    let policy = RulesPolicy::compile(
        &kafka,
        "empire",
        &[
            &[("role", "produce"), ("topic", "deathstar-plans")],
            &[("role", "consume"), ("topic", "deathstar-plans")],
        ],
    );
    let meta = axoneme_testkit::meta("10.0.0.11:40000", "10.0.0.1:9092");
    let mut conn = Connection::new(kafka.new_parser(&meta), meta, "kafka", Limits::default());
    let env = Env {
        policy: &policy,
        log: &NullLog,
    };
    let mut sent = Capture::default();
    let round = |conn: &mut Connection, steps: &[Step<'_>], sent: &mut Capture| {
        for (flow, read) in steps {
            conn.on_data(*flow, read, false, &env, sent).unwrap();
        }
    };
    round(&mut conn, prelude, &mut Capture::default());
    round(&mut conn, steps, &mut sent);
    assert_eq!(
        (sent.upstream.as_slice(), sent.client.as_slice()),
        expected,
        "the first round"
    );
    for _ in 0..100 {
        sent = Capture::default();
        round(&mut conn, steps, &mut sent);
    }
    // The capture's buffers are warm too: they keep their capacity once cleared.
    let before = CountingAllocator::count();
    for _ in 0..2_000 {
        sent.upstream.clear();
        sent.client.clear();
        round(&mut conn, steps, &mut sent);
    }
    CountingAllocator::count() - before
}

#[test]
fn produce_does_not_allocate_once_warm() {
    let request = messages::produce(7, "deathstar-plans", &[0x5a; 1024]);
    let response = messages::produce_response(7, "deathstar-plans");
    let steps = [
        (Flow::Request, &request[..100]),
        (Flow::Request, &request[100..]),
        (Flow::Reply, &response[..]),
    ];
    assert_eq!(allocations(&[], &steps, (&request, &response)), 0);
}

#[test]
fn fetch_by_name_does_not_allocate_once_warm() {
    let topic = Topic::Name("deathstar-plans");
    let request = messages::fetch(8, topic);
    let response = messages::fetch_response(8, topic, &[0x5a; 4096]);
    let steps = [
        (Flow::Request, &request[..]),
        (Flow::Reply, &response[..1000]),
        (Flow::Reply, &response[1000..]),
    ];
    assert_eq!(allocations(&[], &steps, (&request, &response)), 0);
}

#[test]
fn fetch_by_topic_id_does_not_allocate_once_warm() {
    let learn = messages::metadata(1, &["deathstar-plans"], false);
    let learned = messages::metadata_response(1, &[("deathstar-plans", PLANS_ID)]);
    let prelude = [(Flow::Request, &learn[..]), (Flow::Reply, &learned[..])];
    let topic = Topic::Id(PLANS_ID);
    let request = messages::fetch(9, topic);
    let response = messages::fetch_response(9, topic, &[0x5a; 4096]);
    let steps = [(Flow::Request, &request[..]), (Flow::Reply, &response[..])];
    assert_eq!(allocations(&prelude, &steps, (&request, &response)), 0);
}

#[test]
fn incremental_fetch_in_a_session_does_not_allocate_once_warm() {
    let topic = Topic::Name("deathstar-plans");
    let create = messages::fetch_in_session(1, topic, Some(topic), 0, 0);
    let created = messages::fetch_response_in_session(1, topic, &[0x5a; 64], 77);
    let prelude = [(Flow::Request, &create[..]), (Flow::Reply, &created[..])];
    let request = messages::fetch_in_session(2, topic, None, 77, 1);
    let response = messages::fetch_response_in_session(2, topic, &[0x5a; 4096], 77);
    let steps = [
        (Flow::Request, &request[..]),
        (Flow::Reply, &response[..9]),
        (Flow::Reply, &response[9..]),
    ];
    assert_eq!(allocations(&prelude, &steps, (&request, &response)), 0);
}

#[test]
fn metadata_does_not_allocate_once_warm() {
    let request = messages::metadata(10, &["deathstar-plans"], false);
    let response = messages::metadata_response(10, &[("deathstar-plans", PLANS_ID)]);
    let steps = [
        (Flow::Request, &request[..]),
        (Flow::Reply, &response[..20]),
        (Flow::Reply, &response[20..]),
    ];
    assert_eq!(allocations(&[], &steps, (&request, &response)), 0);
}

#[test]
fn metadata_with_auto_creation_turned_off_does_not_allocate_once_warm() {
    // No createtopics rule: the request goes on without leave to create the topic.
    let request = messages::metadata(12, &["deathstar-plans"], true);
    let rewritten = messages::metadata(12, &["deathstar-plans"], false);
    let response = messages::metadata_response(12, &[("deathstar-plans", PLANS_ID)]);
    let steps = [(Flow::Request, &request[..]), (Flow::Reply, &response[..])];
    assert_eq!(allocations(&[], &steps, (&rewritten, &response)), 0);
}

#[test]
fn a_narrowed_metadata_request_and_its_rewritten_answer_do_not_allocate_once_warm() {
    let request = messages::metadata(13, &["deathstar-plans", "empire-announce"], false);
    let narrowed = messages::metadata(13, &["deathstar-plans"], false);
    let response = messages::metadata_response(13, &[("deathstar-plans", PLANS_ID)]);
    let told = messages::metadata_response_failing(
        13,
        &[("deathstar-plans", PLANS_ID)],
        &["empire-announce"],
    );
    let steps = [
        (Flow::Request, &request[..]),
        (Flow::Reply, &response[..30]),
        (Flow::Reply, &response[30..]),
    ];
    assert_eq!(allocations(&[], &steps, (&narrowed, &told)), 0);
}

#[test]
fn the_filtered_answer_to_metadata_for_every_topic_does_not_allocate_once_warm() {
    let request = messages::metadata_for_all_topics(14);
    let every = messages::metadata_response(
        14,
        &[
            ("deathstar-plans", PLANS_ID),
            ("empire-announce", *b"empire-announce!"),
        ],
    );
    let seen = messages::metadata_response(14, &[("deathstar-plans", PLANS_ID)]);
    let steps = [
        (Flow::Request, &request[..]),
        (Flow::Reply, &every[..30]),
        (Flow::Reply, &every[30..]),
    ];
    assert_eq!(allocations(&[], &steps, (&request, &seen)), 0);
}

#[test]
fn a_denied_produce_does_not_allocate_once_warm() {
    let request = messages::produce(11, "empire-announce", &[0x5a; 1024]);
    // Produce v9's response failing partition 0 with TOPIC_AUTHORIZATION_FAILED (29), offset
    // -1, log start offset -1, no record errors, no message.
    let denial = messages::response(11, |m| {
        m.array(1).compact(b"empire-announce");
        m.array(1).i32(0).i16(29).i64(-1).i64(-1).i64(-1);
        m.array(0).null().tags();
        m.tags();
        m.i32(0).tags();
    });
    let steps = [(Flow::Request, &request[..])];
    assert_eq!(allocations(&[], &steps, (b"", &denial)), 0);
}
