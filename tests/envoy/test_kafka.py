"""Kafka through a real Envoy running Axoneme's filter in front of tansu, driven by kafka-python
under the Empire's policy from examples/kafka: headquarters create topics, produce and list
every topic; an outpost reads the announcements, may not produce, and lists only the topics it
may see; every verdict is in the filter's access log under `kafka`.

tansu listens on 127.0.0.2 and advertises Envoy's listener, so clients keep going through
Envoy after their first request. Clients connect from 127.0.0.1; Envoy is restarted on the same
port with that address labelled as the identity a test plays."""

import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAuthorizationFailedError

from conftest import Envoy
from kafka_identities import BROKER_IP, PlayedIdentities

TIMEOUT = 15
RUN = uuid.uuid4().hex.encode()


class Guarded(PlayedIdentities):
    """tansu, and Envoy in front of it playing one identity at a time."""

    def __init__(self, workdir, module):
        super().__init__(workdir)
        self.module = module

    def start_proxy(self, app: str):
        workdir = self.workdir / app
        workdir.mkdir(exist_ok=True)
        endpoints = workdir / "endpoints.yaml"
        endpoints.write_text(self.endpoints(app))
        envoy = Envoy(workdir, self.module, "kafka", self.broker_port, "kafka",
                      policy=self.policy, endpoints=endpoints, upstream_host=BROKER_IP,
                      port=self.port)
        self.access_log = envoy.access_log
        return envoy


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, module):
    guarded = Guarded(tmp_path_factory.mktemp("envoy-kafka"), module)
    yield guarded
    guarded.stop()


def topics_logged(guarded, entry_type: str, api_key: str, topics: set) -> None:
    """Waits until the filter has logged an entry of `entry_type` for `api_key` naming each of
    `topics`."""
    give_up = time.monotonic() + TIMEOUT
    while time.monotonic() < give_up:
        logged = {e["generic_l7"]["fields"].get("topic") for e in guarded.entries()
                  if e["entry_type"] == entry_type and e["generic_l7"]["proto"] == "kafka"
                  and e["generic_l7"]["fields"].get("api_key") == api_key}
        if topics <= logged:
            return
        time.sleep(0.1)
    raise AssertionError(f"no {entry_type} {api_key} entry for each of {topics}")


def test_headquarters_create_topics_produce_and_list_every_topic(guarded):
    bootstrap = guarded.become_("empire-hq")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, 1, 1) for t in ("deathstar-plans", "empire-announce")])
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        producer.send("empire-announce", b"announcement " + RUN).get(TIMEOUT)
        producer.send("deathstar-plans", b"plans " + RUN).get(TIMEOUT)
        producer.close()
        assert {"deathstar-plans", "empire-announce"} <= set(admin.list_topics())
    finally:
        admin.close()
    topics_logged(guarded, "Request", "produce", {"deathstar-plans", "empire-announce"})


def test_an_outpost_reads_announcements_may_not_produce_and_sees_only_them(guarded):
    bootstrap = guarded.become_("empire-outpost")
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition("empire-announce", 0)])
        consumer.seek_to_beginning()
        read = []
        for _ in range(30):
            for records in consumer.poll(timeout_ms=500).values():
                read += [record.value for record in records]
            if b"announcement " + RUN in read:
                break
        assert b"announcement " + RUN in read
    finally:
        consumer.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, retries=0)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send("empire-announce", b"the rebels are here").get(TIMEOUT)
    finally:
        producer.close()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        assert admin.list_topics() == ["empire-announce"]
    finally:
        admin.close()
    topics_logged(guarded, "Denied", "produce", {"empire-announce"})
