"""The benchmark gives Axoneme the examples' endpoints and policies, changed only where it says:
the guarded port, and for Cassandra the outpost's select on the table it writes."""

from pathlib import Path

import yaml

from bench import parts, policies
from bench.targets import Axoneme

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name, file):
    return yaml.safe_load((EXAMPLES / name / file).read_text())


def test_the_rebels_policy_is_the_memcached_examples():
    assert policies.rebels(11211) == example("memcached", "policy.yaml")


def test_the_empires_policy_is_the_cassandra_examples_with_a_select_for_the_outpost():
    policy = example("cassandra", "policy.yaml")
    outpost_rules = policy["spec"]["ingress"][0]["toPorts"][0]["rules"]["l7"]
    insert = outpost_rules.index({"query_action": "insert",
                                  "query_table": "attendance.daily_records"})
    outpost_rules.insert(insert, {"query_action": "select",
                                  "query_table": "attendance.daily_records"})
    assert policies.empire(9042) == policy


def test_the_empires_kafka_policy_is_the_kafka_examples():
    assert policies.empire_kafka(9092) == example("kafka", "policy.yaml")


def test_the_endpoints_are_the_examples():
    assert policies.MEMCACHED_ENDPOINTS == example("memcached", "config.yaml")["endpoints"]
    assert policies.CASSANDRA_ENDPOINTS == example("cassandra", "config.yaml")["endpoints"]
    assert policies.KAFKA_ENDPOINTS == example("kafka", "config.yaml")["endpoints"]


def guarded_ports(policy):
    return {port["port"] for rule in policy["spec"]["ingress"] for to in rule["toPorts"]
            for port in to["ports"]}


def test_each_parts_agent_guards_the_server_it_forwards_to():
    for part in parts.PARTS:
        direct = next(target for target in part.targets if target.name == "direct")
        (agent,) = [target for target in part.targets if isinstance(target, Axoneme)]
        assert agent.upstream == direct.port
        assert guarded_ports(agent.policy) == {str(direct.port)}
        config = policies.agent_config("/w", agent.endpoints, "policy.json", agent.listener,
                                       agent.port, agent.upstream)
        (listener,) = config["listeners"]
        assert listener["upstream"] == f"127.0.0.1:{direct.port}"
        assert listener["endpoint"] in {endpoint["name"] for endpoint in agent.endpoints}


def test_the_load_comes_from_an_endpoint_the_policy_admits():
    for part in parts.PARTS:
        (agent,) = [target for target in part.targets if isinstance(target, Axoneme)]
        admitted = [rule["fromEndpoints"][0]["matchLabels"]
                    for rule in agent.policy["spec"]["ingress"]]
        for shape in part.shapes:
            address = shape.source or part.source
            (source,) = [endpoint["labels"] for endpoint in agent.endpoints
                         if address in endpoint["ips"]]
            assert source in admitted, (part.name, shape.name)


def kafka_rules(labels):
    policy = policies.empire_kafka(parts.KAFKA_PORT)
    (rule,) = [rule for rule in policy["spec"]["ingress"]
               if rule["fromEndpoints"][0]["matchLabels"] == labels]
    return rule["toPorts"][0]["rules"]["kafka"]


def labels_of(address):
    (labels,) = [endpoint["labels"] for endpoint in policies.KAFKA_ENDPOINTS
                 if address in endpoint["ips"]]
    return labels


def test_kafka_produce_comes_from_who_may_produce_and_fetch_from_who_may_consume_the_topic():
    for shape in parts.KAFKA.shapes:
        op, topic = shape.load_args[1], shape.load_args[3]
        rules = kafka_rules(labels_of(shape.source or parts.KAFKA.source))
        if op == "produce":
            assert {"role": "produce"} in rules, shape.name
        else:
            assert {"role": "consume", "topic": topic} in rules, shape.name
    # The records fetched are written before the runs by headquarters, who may produce them.
    prepare = parts.KAFKA.prepare
    assert prepare[prepare.index("--op") + 1] == "fill"
    assert {"role": "produce"} in kafka_rules(labels_of(prepare[prepare.index("--source") + 1]))
