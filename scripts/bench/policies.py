"""What Axoneme is given in the benchmark, as data: the examples' endpoints and policies
(examples/memcached, examples/cassandra and examples/kafka) with the changes the benchmark
needs, and the configuration of an agent with one ingress listener.

tests/bench checks that these stay the examples' own apart from those changes. This module
writes no files and starts nothing."""


def ingress_rules(identity: dict, port: int, l7proto: str, l7: list) -> dict:
    """An ingress rule: `identity`'s labels may reach `port` under the `l7` rules."""
    return {
        "fromEndpoints": [{"matchLabels": identity}],
        "toPorts": [{
            "ports": [{"port": str(port), "protocol": "TCP"}],
            "rules": {"l7proto": l7proto, "l7": l7},
        }],
    }


def endpoint(name: str, ip: str, labels: dict) -> dict:
    return {"name": name, "ips": [ip], "labels": labels}


# examples/memcached/config.yaml's endpoints: the load comes from maintenance's address.
MEMCACHED_ENDPOINTS = [
    endpoint("memcached", "127.0.0.1", {"app": "memcached"}),
    endpoint("maintenance", "127.0.0.11", {"function": "fleet-maintenance"}),
    endpoint("monitoring", "127.0.0.12", {"function": "fleet-monitoring"}),
    endpoint("jedi", "127.0.0.13", {"role": "jedi"}),
    endpoint("stormtrooper", "127.0.0.66", {"app": "empire"}),
]

# examples/cassandra/config.yaml's endpoints: the load comes from the outpost's address.
CASSANDRA_ENDPOINTS = [
    endpoint("cassandra", "127.0.0.1", {"app": "cassandra"}),
    endpoint("outpost", "127.0.0.31", {"app": "empire-outpost"}),
    endpoint("hq", "127.0.0.32", {"app": "empire-hq"}),
]


# examples/kafka/config.yaml's endpoints: produce comes from headquarters' address, fetch from
# the outpost's.
KAFKA_ENDPOINTS = [
    endpoint("kafka", "127.0.0.1", {"app": "kafka"}),
    endpoint("outpost", "127.0.0.31", {"app": "empire-outpost"}),
    endpoint("hq", "127.0.0.32", {"app": "empire-hq"}),
    endpoint("backup", "127.0.0.33", {"app": "empire-backup"}),
]


def rebels(port: int) -> dict:
    """The Rebels' fleet policy of examples/memcached, guarding memcached on `port` instead of
    11211."""
    fleet = {"keyPrefix": "alliance/fleet/"}
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "secure-fleet"},
        "spec": {
            "description": "fleet-maintenance: writeGroup and get on alliance/fleet/*; "
                           "fleet-monitoring: get on alliance/fleet/*; jedi: everything",
            "endpointSelector": {"matchLabels": {"app": "memcached"}},
            "ingress": [
                ingress_rules({"function": "fleet-maintenance"}, port, "memcache",
                              [{"command": "writeGroup", **fleet}, {"command": "get", **fleet}]),
                ingress_rules({"function": "fleet-monitoring"}, port, "memcache",
                              [{"command": "get", **fleet}]),
                ingress_rules({"role": "jedi"}, port, "memcache", [{}]),
            ],
        },
    }


def empire(port: int) -> dict:
    """The Empire's attendance policy of examples/cassandra, guarding `port` instead of 9042,
    with one rule more: the outpost may also select from attendance.daily_records, the rows the
    load reads back."""
    def select(table: str) -> dict:
        return {"query_action": "select", "query_table": table}

    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "secure-empire-cassandra"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "cassandra"}},
            "ingress": [
                ingress_rules({"app": "empire-outpost"}, port, "cassandra", [
                    select("system\\..*"),
                    select("system_schema\\..*"),
                    select("system_virtual_schema\\..*"),
                    select("attendance.daily_records"),
                    {"query_action": "insert", "query_table": "attendance.daily_records"},
                ]),
                ingress_rules({"app": "empire-hq"}, port, "cassandra", [{}]),
            ],
        },
    }


def empire_kafka(port: int) -> dict:
    """The Empire's Kafka policy of examples/kafka, guarding the broker on `port` instead of
    9092."""
    def kafka_rule(identity: dict, rules: list) -> dict:
        return {
            "fromEndpoints": [{"matchLabels": identity}],
            "toPorts": [{
                "ports": [{"port": str(port), "protocol": "TCP"}],
                "rules": {"kafka": rules},
            }],
        }

    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "empire-kafka"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "kafka"}},
            "ingress": [
                kafka_rule({"app": "empire-hq"}, [
                    {"role": "produce"},
                    {"apiKey": "initproducerid"},
                    {"apiKey": "createtopics"},
                    {"apiKey": "deletetopics", "topic": "empire-drills"},
                ]),
                kafka_rule({"app": "empire-outpost"},
                           [{"role": "consume", "topic": "empire-announce"}]),
                kafka_rule({"app": "empire-backup"},
                           [{"role": "consume", "topic": "deathstar-plans"}]),
            ],
        },
    }


def agent_config(workdir: str, endpoints: list, policy_file: str, listener: str, port: int,
                 upstream_port: int, max_connections: int | None = None) -> dict:
    """An agent with the access log and API socket in `workdir`, `endpoints`, the policies of
    `policy_file`, and one ingress listener on 127.0.0.1:`port` guarding the endpoint named
    `listener` at 127.0.0.1:`upstream_port`. The access log is a file, as a deployment would
    keep it: writing it is part of what the benchmark measures. `max_connections`, when given,
    is limits.maxConnections."""
    limits = {} if max_connections is None else {"limits": {"maxConnections": max_connections}}
    return {
        **limits,
        "accessLog": {"path": f"{workdir}/access.log"},
        "api": {"socket": f"{workdir}/axoneme.sock"},
        "endpoints": endpoints,
        "policies": [policy_file],
        "listeners": [{
            "name": listener,
            "listen": f"127.0.0.1:{port}",
            "upstream": f"127.0.0.1:{upstream_port}",
            "endpoint": listener,
            "direction": "ingress",
        }],
    }
