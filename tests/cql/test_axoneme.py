"""Axoneme in front of cql-fixture, driven by the real Python Cassandra driver (protocol v4 and
v5, each without and with LZ4): the Empire's policy from examples/cassandra, allowed and denied
queries, prepared statements (also across a policy change), batches, USE, quoted names and
comments; on v5 also the per-request keyspace and messages split over several segments."""

import json
import os
import socket
import struct
import uuid
from pathlib import Path

import pytest
from cassandra import Unauthorized
from cassandra.cluster import Cluster
from cassandra.query import BatchStatement, SimpleStatement

import cql_checks
from bench.procs import DEADLINE, Agent, free_port, wait_until
from conftest import ROOT
from cql_checks import HQ, OUTPOST, BoundSockets, count, wire  # noqa: F401

AXONEME_BIN = Path(os.environ.get("AXONEME_BIN", ROOT / "target" / "debug" / "axoneme"))
POLICY = ROOT / "examples" / "cassandra" / "policy.yaml"


class Proxy:
    """`axoneme run` guarding cql-fixture with the Empire's policy."""

    def __init__(self, workdir: Path, upstream_port: int):
        self.workdir = workdir
        self.upstream_port = upstream_port
        self.port = free_port()
        self.access_log = workdir / "access.log"
        self.write_policy(POLICY.read_text())
        (workdir / "config.yaml").write_text(f"""\
accessLog: {{path: "{self.access_log}"}}
api: {{socket: "{workdir / 'api.sock'}"}}
drainTimeout: 0
endpoints:
  - {{name: cassandra, ips: ["127.0.0.1"], labels: {{app: cassandra}}}}
  - {{name: outpost, ips: ["{OUTPOST}"], labels: {{app: empire-outpost}}}}
  - {{name: hq, ips: ["{HQ}"], labels: {{app: empire-hq}}}}
policies: [policy.yaml]
listeners:
  - {{name: cassandra, listen: "127.0.0.1:{self.port}", upstream: "127.0.0.1:{upstream_port}", endpoint: cassandra, direction: ingress}}
""")
        self.agent = Agent(AXONEME_BIN, workdir / "config.yaml", workdir / "axoneme.log",
                           ["cassandra"])

    def write_policy(self, text: str):
        (self.workdir / "policy.yaml").write_text(text.replace('port: "9042"', f'port: "{self.upstream_port}"'))

    def entries(self):
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().split("\n")[:-1]]

    def stop(self):
        self.agent.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, port):
    if not AXONEME_BIN.exists():
        pytest.fail(f"{AXONEME_BIN} does not exist: run `cargo build -p axoneme`")
    running = Proxy(tmp_path_factory.mktemp("axoneme"), port)
    yield running
    running.stop()


def connect(proxy, source, wire, keyspace=None):
    return cql_checks.connect(proxy.port, source, wire, keyspace)


@pytest.fixture(scope="module")
def hq(proxy, wire):
    session = cql_checks.connect_hq(proxy.port, wire)
    session.execute('CREATE TABLE IF NOT EXISTS attendance."Secret_Plans" (id int PRIMARY KEY, plan text)')
    yield session
    session.cluster.shutdown()


@pytest.fixture(scope="module")
def outpost(proxy, wire, hq):
    session = connect(proxy, OUTPOST, wire)
    yield session
    session.cluster.shutdown()


def test_the_outpost_records_attendance_but_reads_nothing_else(proxy, hq, outpost):
    cql_checks.check_the_outpost_records_attendance_but_reads_nothing_else(proxy.entries, hq,
                                                                          outpost)


def test_prepared_statements_follow_the_policy_in_force_at_execution(proxy, hq, outpost):
    insert, loc = cql_checks.check_prepared_statements_are_checked(hq, outpost)
    # Headquarters withdraws the outpost's insert right: the prepared insert is now refused.
    original = POLICY.read_text()
    proxy.write_policy(original.replace(
        '              - query_action: insert\n                query_table: "attendance.daily_records"\n', ''))
    try:
        def refused():
            try:
                outpost.execute(insert, [loc, False])
                return False
            except Unauthorized:
                return True
        wait_until(refused, "the policy change to reach the prepared insert")
    finally:
        proxy.write_policy(original)
        wait_until(lambda: _allowed(outpost, insert), "the policy to come back")


def _allowed(session, statement):
    try:
        session.execute(statement, [f"restore-{uuid.uuid4().hex[:8]}", True])
        return True
    except Unauthorized:
        return False


def test_a_batch_with_one_denied_statement_is_denied_whole(hq, outpost):
    loc = cql_checks.check_a_batch_with_one_denied_statement_is_denied_whole(hq, outpost)
    allowed = BatchStatement()
    allowed.add("INSERT INTO attendance.daily_records (loc, creation, present) VALUES (%s, now(), true)", [loc])
    outpost.execute(allowed)
    assert count(hq, loc) == 1


def test_use_lets_unqualified_names_resolve_to_the_keyspace(proxy, wire, hq):
    session = connect(proxy, OUTPOST, wire, keyspace="attendance")
    try:
        loc = f"yavin-{uuid.uuid4().hex[:8]}"
        session.execute("INSERT INTO daily_records (loc, creation, present) VALUES (%s, now(), true)", [loc])
        assert count(hq, loc) == 1
        with pytest.raises(Unauthorized):
            session.execute("SELECT * FROM daily_records")
    finally:
        session.cluster.shutdown()


def test_quoted_names_keep_their_case_and_comments_hide_nothing(hq, outpost):
    with pytest.raises(Unauthorized):
        outpost.execute('INSERT INTO attendance."Secret_Plans" (id, plan) VALUES (1, %s)', ["exhaust port"])
    hq.execute('INSERT INTO attendance."Secret_Plans" (id, plan) VALUES (1, %s)', ["shield generator"])
    assert hq.execute('SELECT plan FROM attendance."Secret_Plans" WHERE id = 1').one()[0] == "shield generator"
    loc = f"dagobah-{uuid.uuid4().hex[:8]}"
    outpost.execute("INSERT /* FROM attendance.\"Secret_Plans\" */ INTO attendance.daily_records "
                    "(loc, creation, present) VALUES (%s, now(), true) -- or select\r", [loc])
    assert count(hq, loc) == 1
    with pytest.raises(Unauthorized):
        outpost.execute("SELECT * FROM attendance.daily_records -- FROM system.local\n")
    # Cassandra's grammar wants a line end after a line comment: without one, it is refused.
    with pytest.raises(Unauthorized):
        outpost.execute("INSERT INTO attendance.daily_records (loc, creation, present) "
                        "VALUES (%s, now(), true) -- no line end", [loc])
    assert count(hq, loc) == 1


def test_a_request_keyspace_resolves_names_but_never_escapes_a_rule(wire, hq, outpost):
    if wire[0] < 5:
        pytest.skip("a keyspace per request is protocol v5")
    loc = f"scarif-{uuid.uuid4().hex[:8]}"
    insert = "INSERT INTO daily_records (loc, creation, present) VALUES (%s, now(), true)"
    outpost.execute(SimpleStatement(insert, keyspace="attendance"), [loc])
    assert count(hq, loc) == 1
    with pytest.raises(Unauthorized):
        outpost.execute(SimpleStatement("SELECT * FROM daily_records", keyspace="attendance"))
    hq.execute("CREATE KEYSPACE IF NOT EXISTS rebels WITH replication = "
               "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    hq.execute("CREATE TABLE IF NOT EXISTS rebels.daily_records "
               "(loc text, creation timeuuid, present boolean, PRIMARY KEY (loc, creation))")
    with pytest.raises(Unauthorized):
        outpost.execute(SimpleStatement(insert, keyspace="rebels"), [loc])
    assert hq.execute("SELECT COUNT(*) FROM rebels.daily_records WHERE loc = %s", [loc]).one()[0] == 0
    insert_bound = insert.replace("%s", "?")
    prepared = outpost.prepare(insert_bound, keyspace="attendance")
    outpost.execute(prepared, [loc])
    assert count(hq, loc) == 2
    with pytest.raises(Unauthorized):
        outpost.prepare(insert_bound, keyspace="rebels")


def test_messages_larger_than_a_segment_pass_whole_or_are_denied_whole(hq, outpost):
    # Over 128 KiB: on v5 the request and the result are each spread over several segments.
    # (Compressible, as the driver misreads large LZ4 segments sent uncompressed.)
    plan = "the shield generator is on the forest moon. " * 4000
    hq.execute('INSERT INTO attendance."Secret_Plans" (id, plan) VALUES (2, %s)', [plan])
    assert hq.execute('SELECT plan FROM attendance."Secret_Plans" WHERE id = 2').one()[0] == plan
    with pytest.raises(Unauthorized):
        outpost.execute('INSERT INTO attendance."Secret_Plans" (id, plan) VALUES (3, %s)', [plan])
    assert hq.execute('SELECT plan FROM attendance."Secret_Plans" WHERE id = 3').one() is None


def test_a_driver_that_names_no_version_settles_on_v5_through_the_proxy(proxy, hq):
    connection_class = type("Bound", (Cluster.connection_class,), {"_socket_impl": BoundSockets(OUTPOST)})
    cluster = Cluster(["127.0.0.1"], port=proxy.port, connect_timeout=DEADLINE,
                      connection_class=connection_class)
    try:
        session = cluster.connect()
        session.default_timeout = DEADLINE
        assert cluster.protocol_version == 5
        with pytest.raises(Unauthorized):
            session.execute("SELECT * FROM attendance.daily_records")
    finally:
        cluster.shutdown()


def _frame(stream: int, opcode: int, body: bytes) -> bytes:
    return struct.pack(">BBhBI", 4, 0, stream, opcode, len(body)) + body


def _query(stream: int, cql: str) -> bytes:
    text = cql.encode()
    return _frame(stream, 0x07, struct.pack(">i", len(text)) + text + b"\x00\x01\x00")


def _answer(sock) -> tuple:
    """The stream, opcode and body of the next frame `sock` receives."""
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data

    _, _, stream, opcode, length = struct.unpack(">BBhBI", exactly(9))
    return stream, opcode, exactly(length)


def test_an_answer_on_the_stream_of_a_use_never_hides_the_keyspace_it_sets(proxy, hq):
    # A SELECT and a USE pipelined on one stream: the SELECT's answer comes first there. Taken
    # for the USE's, it let the Set_keyspace pass unread, and the outpost read
    # attendance.daily_records as system.daily_records.
    with _v4_session(proxy.port, OUTPOST) as sock:
        sock.sendall(_query(5, "SELECT * FROM system.local") + _query(5, "USE attendance"))
        answers = [_answer(sock), _answer(sock)]
        # The fixture answers both, on stream 5: rows (kind 2), then Set_keyspace (kind 3).
        assert [(stream, opcode, body[:4]) for stream, opcode, body in answers] == [
            (5, 0x08, b"\x00\x00\x00\x02"), (5, 0x08, b"\x00\x00\x00\x03")]
        sock.sendall(_query(6, "SELECT * FROM daily_records"))
        stream, opcode, body = _answer(sock)
        assert (stream, opcode, body[:4]) == (6, 0x00, b"\x00\x00\x21\x00")


def _v4_session(port: int, source: str):
    """A raw v4 connection from `source`, started, in keyspace `system`."""
    sock = socket.socket()
    sock.settimeout(DEADLINE)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    startup = b"\x00\x01" + b"".join(struct.pack(">H", len(s)) + s for s in (b"CQL_VERSION", b"3.0.0"))
    sock.sendall(_frame(0, 0x01, startup))
    assert _answer(sock)[:2] == (0, 0x02)
    sock.sendall(_query(1, "USE system"))
    assert _answer(sock)[:2] == (1, 0x08)
    return sock


def test_a_v4_query_naming_its_own_keyspace_is_refused(port, proxy, hq):
    # Flag 0x80 (v5's keyspace flag) in a v4 QUERY's flags byte: Cassandra reads the keyspace
    # after it, and so does the fixture; the proxy judged the name against `system`.
    text = b"SELECT * FROM daily_records"
    named = _frame(6, 0x07, struct.pack(">i", len(text)) + text + b"\x00\x01\x80"
                   + struct.pack(">H", len(b"attendance")) + b"attendance")
    with _v4_session(port, "127.0.0.1") as direct:
        direct.sendall(named)
        stream, opcode, body = _answer(direct)
        assert (stream, opcode, body[:4]) == (6, 0x08, b"\x00\x00\x00\x02")
    with _v4_session(proxy.port, OUTPOST) as sock:
        sock.sendall(named)
        stream, opcode, body = _answer(sock)
        assert (stream, opcode, body[:4]) == (6, 0x00, b"\x00\x00\x21\x00")
