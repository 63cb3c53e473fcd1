"""What the CQL end-to-end tests share, whichever proxy they run against (the standalone agent in
tests/cql, Envoy with Axoneme's filter in tests/envoy): the Empire's identities, the Python
Cassandra driver bound to an identity's address on each protocol version and compression, the
attendance table, and the checks both proxies must pass under the policy of examples/cassandra.
Each suite starts its own proxy and server; nothing here starts one."""

import socket
import uuid

import pytest
from cassandra import Unauthorized
from cassandra.cluster import Cluster
from cassandra.query import BatchStatement

from bench.procs import DEADLINE, wait_until

OUTPOST = "127.0.0.31"  # app: empire-outpost
HQ = "127.0.0.32"  # app: empire-hq


class BoundSockets:
    """A stand-in for the socket module whose sockets are bound to one source address, so that
    the proxy sees the driver as that identity."""

    def __init__(self, source: str):
        self.source = source

    def socket(self, *args):
        sock = socket.socket(*args)
        sock.bind((self.source, 0))
        return sock

    def __getattr__(self, name):
        return getattr(socket, name)


@pytest.fixture(scope="module", params=[(4, False), (4, "lz4"), (5, False), (5, "lz4")],
                ids=["v4-plain", "v4-lz4", "v5-plain", "v5-lz4"])
def wire(request):
    """The protocol version and compression the driver uses."""
    return request.param


def connect(port: int, source: str, wire, keyspace=None):
    """A driver session to the proxy on 127.0.0.1:`port` from `source`, on `wire`."""
    version, compression = wire
    connection_class = type("Bound", (Cluster.connection_class,),
                            {"_socket_impl": BoundSockets(source)})
    cluster = Cluster(["127.0.0.1"], port=port, protocol_version=version,
                      compression=compression, connect_timeout=DEADLINE,
                      connection_class=connection_class)
    session = cluster.connect(keyspace)
    session.default_timeout = DEADLINE
    return session


def connect_hq(port: int, wire):
    """Headquarters' session, with the attendance keyspace and its daily_records table made."""
    session = connect(port, HQ, wire)
    assert session.cluster.protocol_version == wire[0]
    session.execute("CREATE KEYSPACE IF NOT EXISTS attendance WITH replication = "
                    "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    session.execute("CREATE TABLE IF NOT EXISTS attendance.daily_records "
                    "(loc text, creation timeuuid, present boolean, PRIMARY KEY (loc, creation))")
    return session


def count(hq, loc):
    return hq.execute("SELECT COUNT(*) FROM attendance.daily_records WHERE loc = %s",
                      [loc]).one()[0]


# The checks every proxy must pass. `hq` and `outpost` are sessions through the proxy under
# test from each identity; `entries` returns the proxy's access log as it stands.

def check_the_outpost_records_attendance_but_reads_nothing_else(entries, hq, outpost) -> dict:
    """Returns the access log's entry of the denied delete."""
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
        lambda: [e for e in entries() if e["entry_type"] == "Denied"
                 and e["generic_l7"]["fields"].get("query_action") == "delete"],
        "the denied delete in the access log")
    assert denied[-1]["generic_l7"]["fields"]["query_table"] == "attendance.daily_records"
    assert denied[-1]["source_labels"] == ["app=empire-outpost",
                                           "k8s:io.kubernetes.pod.namespace=default"]
    return denied[-1]


def check_prepared_statements_are_checked(hq, outpost):
    """Returns the prepared insert, which the outpost may execute, and the row it wrote."""
    insert = outpost.prepare("INSERT INTO attendance.daily_records (loc, creation, present) "
                             "VALUES (?, now(), ?)")
    loc = f"hoth-{uuid.uuid4().hex[:8]}"
    outpost.execute(insert, [loc, True])
    assert count(hq, loc) == 1
    with pytest.raises(Unauthorized):
        outpost.prepare("SELECT * FROM attendance.daily_records WHERE loc = ?")
    return insert, loc


def check_a_batch_with_one_denied_statement_is_denied_whole(hq, outpost) -> str:
    """Returns the row the denied batch would have written."""
    loc = f"bespin-{uuid.uuid4().hex[:8]}"
    batch = BatchStatement()
    batch.add("INSERT INTO attendance.daily_records (loc, creation, present) "
              "VALUES (%s, now(), true)", [loc])
    batch.add("DELETE FROM attendance.daily_records WHERE loc = %s", ["anything"])
    with pytest.raises(Unauthorized):
        outpost.execute(batch)
    assert count(hq, loc) == 0
    return loc
