"""kafka-python through `axoneme run` to tansu, under the Empire's policy (see
test_confluent.py). kafka-python raises a denial as `TopicAuthorizationFailedError`, from a
produce's future and in the admin client's answers. A topic it may not see, assigned or
subscribed, it marks unauthorized from the Metadata answer, as with Kafka's own authorizer: it
never learns the topic's leader, so it fetches nothing and, subscribed, is assigned none of its
partitions; the same client then goes on with what it may do.

Records carry a value unique to this run, so the tests find their own whatever else the
topics hold."""

import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, TopicAuthorizationFailedError

from conftest import BACKUP, HQ, OUTPOST

TIMEOUT = 15
RUN = uuid.uuid4().hex.encode()
PLANS = b"plans " + RUN
ANNOUNCEMENT = b"announcement " + RUN
GROUP = {"auto_offset_reset": "earliest", "enable_auto_commit": False,
         "session_timeout_ms": 6000, "max_poll_interval_ms": 6000,
         "request_timeout_ms": 10000}


def consumed(consumer, wanted: bytes, polls: int = 30) -> bool:
    """Whether `wanted` arrives within `polls` polls of half a second."""
    for _ in range(polls):
        for records in consumer.poll(timeout_ms=500).values():
            if any(record.value == wanted for record in records):
                return True
    return False


def test_headquarters_create_topics_and_produce(empire):
    bootstrap = empire.become_(HQ)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        for topic in ["deathstar-plans", "empire-announce", "empire-drills"]:
            try:
                admin.create_topics([NewTopic(topic, 1, 1)])
            except TopicAlreadyExistsError:
                pass
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        producer.send("deathstar-plans", PLANS).get(TIMEOUT)
        producer.send("empire-announce", ANNOUNCEMENT).get(TIMEOUT)
        producer.close()
        admin.delete_topics(["empire-drills"])
        with pytest.raises(TopicAuthorizationFailedError):
            admin.delete_topics(["deathstar-plans"])
        assert "deathstar-plans" in admin.list_topics()
    finally:
        admin.close()


def test_an_outpost_may_not_produce_and_its_producer_goes_on(empire):
    bootstrap = empire.become_(OUTPOST)
    producer = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, retries=0)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send("empire-announce", b"rebels!").get(TIMEOUT)
        assert producer.partitions_for("empire-announce") == {0}
    finally:
        producer.close()
    # An idempotent producer asks for a producer id first, which the outposts may not: Kafka
    # answers CLUSTER_AUTHORIZATION_FAILED there, and so does the proxy.
    idempotent = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        with pytest.raises(KafkaError, match="ClusterAuthorizationFailedError"):
            idempotent.send("empire-announce", b"rebels!").get(TIMEOUT)
    finally:
        idempotent.close()


def test_an_outpost_may_not_create_topics(empire):
    bootstrap = empire.become_(OUTPOST)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            admin.create_topics([NewTopic("rebel-base", 1, 1)])
    finally:
        admin.close()


def test_an_outpost_listing_every_topic_sees_only_the_announcements(empire):
    admin = KafkaAdminClient(bootstrap_servers=empire.become_(OUTPOST))
    try:
        assert admin.list_topics() == ["empire-announce"]
    finally:
        admin.close()


def test_an_outpost_assigned_the_plans_gets_none_then_reads_announcements(empire):
    bootstrap = empire.become_(OUTPOST)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, **GROUP)
    try:
        consumer.assign([TopicPartition("deathstar-plans", 0)])
        assert not consumed(consumer, PLANS, polls=6)
        consumer.assign([TopicPartition("empire-announce", 0)])
        consumer.seek_to_beginning()
        assert consumed(consumer, ANNOUNCEMENT)
    finally:
        consumer.close()


def test_an_outpost_subscribed_to_the_plans_is_refused(empire):
    bootstrap = empire.become_(OUTPOST)
    consumer = KafkaConsumer("deathstar-plans", bootstrap_servers=bootstrap,
                             group_id=f"outpost-plans-{RUN.decode()}", **GROUP)
    try:
        # As from Kafka's own authorizer, the topic's metadata is an authorization error
        # without partitions (whatever the broker would have told): kafka-python marks the
        # topic unauthorized and logs it, the group assigns it nothing, and it reads nothing.
        assert not consumed(consumer, PLANS, polls=10)
        assert "deathstar-plans" in consumer._client.cluster.unauthorized_topics
        assert consumer.assignment() == set()
    finally:
        consumer.close()


def test_an_outpost_reads_announcements_in_a_group(empire):
    bootstrap = empire.become_(OUTPOST)
    consumer = KafkaConsumer("empire-announce", bootstrap_servers=bootstrap,
                             group_id=f"outpost-{RUN.decode()}", **GROUP)
    try:
        assert consumed(consumer, ANNOUNCEMENT)
        consumer.commit()
    finally:
        consumer.close()


def test_the_backup_reads_the_plans_in_a_group(empire):
    bootstrap = empire.become_(BACKUP)
    consumer = KafkaConsumer("deathstar-plans", bootstrap_servers=bootstrap,
                             group_id=f"backup-{RUN.decode()}", **GROUP)
    try:
        assert consumed(consumer, PLANS)
    finally:
        consumer.close()
