"""Topic configs through `axoneme run` to tansu, with both clients' admin APIs, under a policy
that lets the Empire's quartermaster read and change the configs of empire-announce only.

The config APIs name the topics of their resources, so a rule with `topic` constrains them: a
client allowed one topic's configs may not read or change another's. Denials reach the clients
as TOPIC_AUTHORIZATION_FAILED for that resource, and the same client goes on working. tansu
answers DescribeConfigs (librdkafka sends v1) and IncrementalAlterConfigs (flexible v1)."""

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as PyConfigResource
from kafka.admin import ConfigResourceType
from kafka.errors import TopicAuthorizationFailedError

from bench.procs import wait_until
from conftest import Empire

TIMEOUT = 15  # seconds any one client operation may take
QUARTERMASTER = "empire-quartermaster"
ANNOUNCE = "empire-announce"
PLANS = "deathstar-plans"

POLICY = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: empire-configs
spec:
  endpointSelector:
    matchLabels: {app: kafka}
  ingress:
    - fromEndpoints:
        - matchLabels: {app: empire-quartermaster}
      toPorts:
        - ports: [{port: "9092", protocol: TCP}]
          rules:
            kafka:
              - apiKey: apiversions
              - apiKey: metadata
              - apiKey: createtopics
              - apiKey: gettelemetrysubscriptions
              - apiKey: describeconfigs
                topic: empire-announce
              - apiKey: incrementalalterconfigs
                topic: empire-announce
"""


@pytest.fixture(scope="module")
def quartermaster(tmp_path_factory):
    """tansu with empire-announce and deathstar-plans, behind the agent playing the
    quartermaster under the policy above."""
    workdir = tmp_path_factory.mktemp("kafka-configs")
    policy = workdir / "configs-policy.yaml"
    policy.write_text(POLICY)
    empire = Empire(workdir, policy)
    try:
        bootstrap = empire.become_(QUARTERMASTER)
        client = AdminClient({"bootstrap.servers": bootstrap})
        created = client.create_topics([NewTopic(topic, 1, 1) for topic in (ANNOUNCE, PLANS)])
        for future in created.values():
            future.result(TIMEOUT)
        yield empire
    finally:
        empire.stop()


def denials(empire, api_key: str, topic: str) -> list:
    """The access log's denials of `api_key` requests naming `topic` so far."""
    return [e for e in empire.entries()
            if e["entry_type"] == "Denied"
            and e["generic_l7"]["fields"].get("api_key") == api_key
            and e["generic_l7"]["fields"].get("topic") == topic]


def wait_for_denial(empire, api_key: str, topic: str, seen: int):
    """Waits until the access log holds more than `seen` such denials."""
    wait_until(lambda: len(denials(empire, api_key, topic)) > seen,
               f"a denial of {api_key} for {topic}")


def describe(client, topic: str):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return client.describe_configs([resource])[resource].result(TIMEOUT)


def set_retention(client, topic: str):
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET)])
    return client.incremental_alter_configs([resource])[resource].result(TIMEOUT)


def authorization_error(call) -> int:
    with pytest.raises(KafkaException) as raised:
        call()
    return raised.value.args[0].code()


def test_confluent_reads_and_changes_only_the_configs_it_may(quartermaster):
    client = AdminClient({"bootstrap.servers": quartermaster.bootstrap})
    described = len(denials(quartermaster, "describeconfigs", PLANS))
    altered = len(denials(quartermaster, "incrementalalterconfigs", PLANS))
    describe(client, ANNOUNCE)
    assert authorization_error(lambda: describe(client, PLANS)) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    wait_for_denial(quartermaster, "describeconfigs", PLANS, described)
    set_retention(client, ANNOUNCE)
    assert authorization_error(lambda: set_retention(client, PLANS)) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    wait_for_denial(quartermaster, "incrementalalterconfigs", PLANS, altered)
    describe(client, ANNOUNCE)


def test_kafka_python_changes_only_the_configs_it_may(quartermaster):
    """kafka-python reports each resource's error as text in its result, not raised."""
    client = KafkaAdminClient(bootstrap_servers=quartermaster.bootstrap,
                              request_timeout_ms=TIMEOUT * 1000)
    altered = len(denials(quartermaster, "incrementalalterconfigs", PLANS))

    def set_retention_of(topic: str) -> str:
        resource = PyConfigResource(ConfigResourceType.TOPIC, topic,
                                    configs={"retention.ms": "86400000"})
        result = client.alter_configs([resource], raise_on_unknown=False, incremental=True)
        return result["topic"][topic]

    try:
        assert set_retention_of(ANNOUNCE) == "OK"
        assert TopicAuthorizationFailedError.__name__ in set_retention_of(PLANS)
        assert set_retention_of(ANNOUNCE) == "OK"
    finally:
        client.close()
    wait_for_denial(quartermaster, "incrementalalterconfigs", PLANS, altered)
