"""confluent-kafka (librdkafka) through `axoneme run` to tansu, under the Empire's policy:
headquarters create topics and produce to every topic, outposts consume empire-announce only,
the backup reads deathstar-plans only. Every denial must reach the client as an authorization
error for that topic, and the same client must go on working for what it may do.

librdkafka reports a denied produce, create or delete as TOPIC_AUTHORIZATION_FAILED. A consumer
of a topic it may not read learns it from the topic's metadata (the error is the topic's, in
`list_topics`) and consumes nothing; librdkafka does not raise it from `poll`. librdkafka then
goes on asking for that topic's metadata together with its other topics', in one request,
which the proxy narrows to the allowed topics, so the same consumer goes on reading those.

The tests run in order: headquarters set up the topics and records the others read."""

import time
import uuid

import pytest
from bench.procs import wait_until
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import BACKUP, HQ, OUTPOST

TIMEOUT = 15  # seconds any one client operation may take

# Short group timeouts: tansu holds a JoinGroup until the rebalance timeout's worth of members
# have had their chance to join.
GROUP = {"session.timeout.ms": 6000, "max.poll.interval.ms": 6000,
         "auto.offset.reset": "earliest", "enable.auto.commit": False}


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap})


def produce(bootstrap, topic: str, value: bytes) -> KafkaError:
    """Produces one record and returns its delivery error (None when stored)."""
    producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": TIMEOUT * 1000})
    results = []
    producer.produce(topic, value, on_delivery=lambda err, msg: results.append(err))
    assert producer.flush(TIMEOUT) == 0
    return results[0]


def first_message(consumer, deadline=TIMEOUT):
    """The first record or error the consumer delivers."""
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        message = consumer.poll(0.5)
        if message is not None:
            return message
    raise AssertionError("nothing consumed")


def read_from_start(consumer, topic: str):
    consumer.assign([TopicPartition(topic, 0, 0)])
    return first_message(consumer)


def entries_for(empire, api_key: str, entry_type: str, topic: str = None) -> list:
    """The access-log entries of `entry_type` for `api_key` (naming `topic`, when given), once
    there is one."""
    def found():
        return [e for e in empire.entries()
                if e["entry_type"] == entry_type
                and e["generic_l7"]["fields"].get("api_key") == api_key
                and (topic is None or e["generic_l7"]["fields"].get("topic") == topic)]
    return wait_until(found, f"a {entry_type} entry for {api_key} {topic or ''}")


def assert_may_not_read(consumer, topic: str):
    """The consumer is told that it may not read `topic`, and receives none of its records."""
    error = consumer.list_topics(topic, timeout=TIMEOUT).topics[topic].error
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    give_up = time.monotonic() + 3
    while time.monotonic() < give_up:
        message = consumer.poll(0.5)
        assert message is None or message.topic() != topic or message.error() is not None


def test_headquarters_create_topics_and_produce_to_every_topic(empire):
    bootstrap = empire.become_(HQ)
    client = admin(bootstrap)
    topics = ["deathstar-plans", "empire-announce", "empire-drills"]
    for future in client.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        future.result(TIMEOUT)
    assert produce(bootstrap, "deathstar-plans", b"exhaust port") is None
    assert produce(bootstrap, "empire-announce", b"the emperor arrives") is None
    for topic in ["deathstar-plans", "empire-announce"]:
        stored = entries_for(empire, "produce", "Request", topic)
        assert stored[-1]["policy_name"] == "empire-kafka"


def test_headquarters_may_delete_drills_but_not_the_plans(empire):
    bootstrap = empire.become_(HQ)
    client = admin(bootstrap)
    client.delete_topics(["empire-drills"])["empire-drills"].result(TIMEOUT)
    with pytest.raises(Exception) as denied:
        client.delete_topics(["deathstar-plans"])["deathstar-plans"].result(TIMEOUT)
    assert denied.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert "deathstar-plans" in client.list_topics(timeout=TIMEOUT).topics


def test_an_outpost_may_not_produce_but_its_client_goes_on(empire):
    bootstrap = empire.become_(OUTPOST)
    producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": TIMEOUT * 1000})
    results = []
    producer.produce("empire-announce", b"rebels!", on_delivery=lambda err, msg: results.append(err))
    assert producer.flush(TIMEOUT) == 0
    assert results[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    metadata = producer.list_topics("empire-announce", timeout=TIMEOUT)
    assert metadata.topics["empire-announce"].error is None
    denied = entries_for(empire, "produce", "Denied", "empire-announce")
    assert denied[-1]["reason"] == "no-allow"
    assert denied[-1]["source_labels"][0] == "app=empire-outpost"


def test_an_outpost_reads_announcements(empire):
    bootstrap = empire.become_(OUTPOST)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"outpost-{uuid.uuid4()}",
                         **GROUP})
    try:
        message = read_from_start(consumer, "empire-announce")
        assert message.error() is None, message.error()
        assert message.value() == b"the emperor arrives"
    finally:
        consumer.close()


def test_an_outpost_assigned_the_plans_is_told_it_may_not_and_goes_on_reading_announcements(empire):
    bootstrap = empire.become_(OUTPOST)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"outpost-{uuid.uuid4()}",
                         **GROUP})
    try:
        consumer.assign([TopicPartition("deathstar-plans", 0, 0)])
        assert_may_not_read(consumer, "deathstar-plans")
        denied = entries_for(empire, "metadata", "Denied", "deathstar-plans")
        assert denied[-1]["reason"] == "no-allow"
        consumer.assign([TopicPartition("deathstar-plans", 0, 0),
                         TopicPartition("empire-announce", 0, 0)])
        # librdkafka backs off its metadata requests after the denial before it asks again.
        message = first_message(consumer, deadline=30)
        assert message.error() is None, message.error()
        assert (message.topic(), message.value()) == ("empire-announce", b"the emperor arrives")
    finally:
        consumer.close()


def test_an_outpost_subscribes_to_announcements_in_a_group(empire):
    bootstrap = empire.become_(OUTPOST)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"outpost-{uuid.uuid4()}",
                         **GROUP})
    try:
        consumer.subscribe(["empire-announce"])
        message = first_message(consumer, deadline=30)
        assert message.error() is None, message.error()
        assert message.value() == b"the emperor arrives"
        consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()


def test_an_outpost_subscribing_to_the_plans_is_told_it_may_not(empire):
    bootstrap = empire.become_(OUTPOST)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"outpost-{uuid.uuid4()}",
                         **GROUP})
    try:
        consumer.subscribe(["deathstar-plans"])
        assert_may_not_read(consumer, "deathstar-plans")
        entries_for(empire, "metadata", "Denied", "deathstar-plans")
    finally:
        consumer.close()


def test_metadata_of_a_forbidden_topic_is_an_authorization_error(empire):
    bootstrap = empire.become_(OUTPOST)
    client = admin(bootstrap)
    plans = client.list_topics("deathstar-plans", timeout=TIMEOUT).topics["deathstar-plans"]
    assert plans.error is not None
    assert plans.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    announce = client.list_topics("empire-announce", timeout=TIMEOUT).topics["empire-announce"]
    assert announce.error is None
    assert list(announce.partitions) == [0]


def test_listing_every_topic_shows_only_the_topics_the_client_may_see(empire):
    # As Kafka's authorizer answers Metadata for all topics: only those the principal may
    # describe, silently. Headquarters, with a rule without `topic`, see them all.
    everything = admin(empire.become_(HQ)).list_topics(timeout=TIMEOUT).topics
    assert {"deathstar-plans", "empire-announce"} <= set(everything)
    for who, seen in [(OUTPOST, "empire-announce"), (BACKUP, "deathstar-plans")]:
        topics = admin(empire.become_(who)).list_topics(timeout=TIMEOUT).topics
        assert set(topics) == {seen}
        assert topics[seen].error is None and list(topics[seen].partitions) == [0]


def test_an_outpost_may_not_create_topics(empire):
    bootstrap = empire.become_(OUTPOST)
    client = admin(bootstrap)
    with pytest.raises(Exception) as denied:
        client.create_topics([NewTopic("rebel-base", 1, 1)])["rebel-base"].result(TIMEOUT)
    assert denied.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    entries_for(empire, "createtopics", "Denied", "rebel-base")


def test_the_backup_reads_the_plans_and_not_the_announcements(empire):
    bootstrap = empire.become_(BACKUP)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"backup-{uuid.uuid4()}",
                         **GROUP})
    try:
        message = read_from_start(consumer, "deathstar-plans")
        assert message.error() is None, message.error()
        assert message.value() == b"exhaust port"
        consumer.assign([TopicPartition("empire-announce", 0, 0)])
        assert_may_not_read(consumer, "empire-announce")
    finally:
        consumer.close()
