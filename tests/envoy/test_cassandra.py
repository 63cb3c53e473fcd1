"""Cassandra through a real Envoy running Axoneme's filter in front of cql-fixture, driven by the
real Python Cassandra driver (protocol v4 and v5, without and with LZ4) under the Empire's policy
from examples/cassandra: the standalone proxy's expectations (tests/cql/test_axoneme.py)."""

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from cassandra import Unauthorized
from cassandra.cluster import Cluster
from cassandra.query import BatchStatement

from bench.procs import DEADLINE, Process, free_port, port_open, wait_until
from conftest import ROOT, Envoy

EXAMPLE = ROOT / "examples" / "cassandra"
OUTPOST = "127.0.0.31"  # app: empire-outpost
HQ = "127.0.0.32"  # app: empire-hq


def fixture_bin() -> Path:
    given = os.environ.get("CQL_FIXTURE_BIN")
    if given:
        return Path(given)
    subprocess.run(["cargo", "build", "--quiet", "-p", "cql-fixture"], cwd=ROOT, check=True)
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "cql-fixture"


@pytest.fixture(scope="module")
def envoy(tmp_path_factory, module):
    workdir = tmp_path_factory.mktemp("envoy-cql")
    port = free_port()
    server = Process([fixture_bin(), "--listen", f"127.0.0.1:{port}"], workdir / "cql-fixture.log")
    server.ready(lambda: port_open(port), f"cql-fixture on port {port}")
    policy = (EXAMPLE / "policy.yaml").read_text()
    assert 'port: "9042"' in policy, "the example policy guards port 9042"
    proxy = Envoy(workdir, module, "cassandra", port, "cassandra",
                  policy=policy.replace('port: "9042"', f'port: "{port}"'),
                  endpoints=EXAMPLE / "config.yaml")
    yield proxy
    proxy.stop()
    server.stop()


class BoundSockets:
    """A stand-in for the socket module whose sockets are bound to one source address, so that
    the filter sees the driver as that identity."""

    def __init__(self, source: str):
        self.source = source

    def socket(self, *args):
        import socket

        sock = socket.socket(*args)
        sock.bind((self.source, 0))
        return sock

    def __getattr__(self, name):
        import socket

        return getattr(socket, name)


@pytest.fixture(scope="module", params=[(4, False), (4, "lz4"), (5, False), (5, "lz4")],
                ids=["v4-plain", "v4-lz4", "v5-plain", "v5-lz4"])
def wire(request):
    """The protocol version and compression the driver uses."""
    return request.param


def connect(envoy, source, wire):
    version, compression = wire
    connection_class = type("Bound", (Cluster.connection_class,),
                            {"_socket_impl": BoundSockets(source)})
    cluster = Cluster(["127.0.0.1"], port=envoy.addr[1], protocol_version=version,
                      compression=compression, connect_timeout=DEADLINE,
                      connection_class=connection_class)
    session = cluster.connect()
    session.default_timeout = DEADLINE
    return session


@pytest.fixture(scope="module")
def hq(envoy, wire):
    session = connect(envoy, HQ, wire)
    assert session.cluster.protocol_version == wire[0]
    session.execute("CREATE KEYSPACE IF NOT EXISTS attendance WITH replication = "
                    "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    session.execute("CREATE TABLE IF NOT EXISTS attendance.daily_records "
                    "(loc text, creation timeuuid, present boolean, PRIMARY KEY (loc, creation))")
    yield session
    session.cluster.shutdown()


@pytest.fixture(scope="module")
def outpost(envoy, wire, hq):
    session = connect(envoy, OUTPOST, wire)
    yield session
    session.cluster.shutdown()


def count(hq, loc):
    return hq.execute("SELECT COUNT(*) FROM attendance.daily_records WHERE loc = %s",
                      [loc]).one()[0]


def test_the_outpost_records_attendance_but_reads_nothing_else(envoy, hq, outpost):
    loc = f"endor-{uuid.uuid4().hex[:8]}"
    outpost.execute("INSERT INTO attendance.daily_records (loc, creation, present) "
                    "VALUES (%s, now(), true)", [loc])
    assert count(hq, loc) == 1
    with pytest.raises(Unauthorized):
        outpost.execute("SELECT * FROM attendance.daily_records")
    with pytest.raises(Unauthorized):
        outpost.execute("DELETE FROM attendance.daily_records WHERE loc = %s", [loc])
    assert count(hq, loc) == 1, "the denied delete never reached the server"
    assert outpost.execute("SELECT cluster_name FROM system.local").one() is not None
    denied = wait_until(
        lambda: [e for e in envoy.entries(0) if e["entry_type"] == "Denied"
                 and e["generic_l7"]["fields"].get("query_action") == "delete"],
        "the denied delete in the access log")
    assert denied[-1]["generic_l7"]["fields"]["query_table"] == "attendance.daily_records"
    assert denied[-1]["generic_l7"]["proto"] == "cassandra"
    assert denied[-1]["source_labels"] == ["app=empire-outpost",
                                           "k8s:io.kubernetes.pod.namespace=default"]


def test_prepared_statements_are_checked(hq, outpost):
    insert = outpost.prepare("INSERT INTO attendance.daily_records (loc, creation, present) "
                             "VALUES (?, now(), ?)")
    loc = f"hoth-{uuid.uuid4().hex[:8]}"
    outpost.execute(insert, [loc, True])
    assert count(hq, loc) == 1
    with pytest.raises(Unauthorized):
        outpost.prepare("SELECT * FROM attendance.daily_records WHERE loc = ?")


def test_a_batch_with_one_denied_statement_is_denied_whole(hq, outpost):
    loc = f"bespin-{uuid.uuid4().hex[:8]}"
    batch = BatchStatement()
    batch.add("INSERT INTO attendance.daily_records (loc, creation, present) "
              "VALUES (%s, now(), true)", [loc])
    batch.add("DELETE FROM attendance.daily_records WHERE loc = %s", ["anything"])
    with pytest.raises(Unauthorized):
        outpost.execute(batch)
    assert count(hq, loc) == 0
