"""The cql-fixture, an in-memory CQL server, driven by the real Python Cassandra driver over
protocol v4 and v5, without and with LZ4 compression."""

import datetime
import uuid

import pytest
from cassandra import AlreadyExists, InvalidRequest
from cassandra.cluster import Cluster
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.protocol import SyntaxException
from cassandra.query import BatchStatement, BatchType, SimpleStatement, dict_factory

from bench.procs import DEADLINE
REPLICATION = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
COMPRESSIONS = {"plain": False, "lz4": "lz4"}
# A value larger than a v5 segment's payload (128 KiB - 1), which LZ4 compresses.
LARGE = "".join(f"{i:07d}," for i in range(25_000))


def open_cluster(port, protocol_version, compression):
    return Cluster(
        ["127.0.0.1"], port=port, protocol_version=protocol_version, compression=compression,
        connect_timeout=DEADLINE,
    )


@pytest.fixture(
    scope="module",
    params=[(version, name) for version in (4, 5) for name in COMPRESSIONS],
    ids=lambda param: f"v{param[0]}-{param[1]}",
)
def cluster(request, port):
    version, name = request.param
    cluster = open_cluster(port, version, COMPRESSIONS[name])
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module", params=list(COMPRESSIONS), ids=lambda name: f"v5-{name}")
def cluster_v5(request, port):
    """Protocol v5 only: what v4 cannot express."""
    cluster = open_cluster(port, 5, COMPRESSIONS[request.param])
    yield cluster
    cluster.shutdown()


def open_session(cluster):
    session = cluster.connect()
    session.default_timeout = DEADLINE
    return session


@pytest.fixture
def session(cluster):
    session = open_session(cluster)
    yield session
    session.shutdown()


@pytest.fixture
def session_v5(cluster_v5):
    session = open_session(cluster_v5)
    yield session
    session.shutdown()


def keyspace(session, name):
    """A fresh keyspace, named per protocol version and compression so all runs share one
    fixture."""
    cluster = session.cluster
    name = f"{name}_v{cluster.protocol_version}_{'lz4' if cluster.compression else 'plain'}"
    session.execute(f"DROP KEYSPACE IF EXISTS {name}")
    session.execute(f"CREATE KEYSPACE {name} WITH replication = {REPLICATION}")
    return name


def test_connects_and_reads_system_local(cluster, session):
    version = cluster.protocol_version
    # v5 carries every message after STARTUP in checksummed segments.
    assert cluster.control_connection._connection._is_checksumming_enabled == (version == 5)
    row = session.execute("SELECT cluster_name, release_version FROM system.local WHERE key='local'").one()
    assert row.cluster_name == "cql-fixture"
    assert list(session.execute("SELECT * FROM system.peers")) == []
    assert len(session.cluster.metadata.all_hosts()) == 1


def test_create_insert_select_update_delete(session):
    ks = keyspace(session, "basic")
    session.execute(
        f"CREATE TABLE {ks}.people (id int PRIMARY KEY, name text, score double, active boolean,"
        " uid uuid, born timestamp, visits bigint, seen timeuuid)"
    )
    uid = uuid.uuid4()
    born = datetime.datetime(1990, 5, 17, 8, 30)
    session.execute(
        f"INSERT INTO {ks}.people (id, name, score, active, uid, born, visits, seen)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, now())",
        (1, "Ada", 9.5, True, uid, born, 2**40),
    )
    session.execute(f"INSERT INTO {ks}.people (id, name) VALUES (2, 'Bob O''Brien')")
    rows = {row.id: row for row in session.execute(f"SELECT * FROM {ks}.people")}
    assert sorted(rows) == [1, 2]
    ada = rows[1]
    assert (ada.name, ada.score, ada.active, ada.uid, ada.born, ada.visits) == (
        "Ada", 9.5, True, uid, born, 2**40,
    )
    assert isinstance(ada.seen, uuid.UUID) and ada.seen.version == 1
    assert rows[2].name == "Bob O'Brien" and rows[2].score is None

    session.execute(f"UPDATE {ks}.people SET score = 1.25 WHERE id = 2")
    row = session.execute(f"SELECT name, score FROM {ks}.people WHERE id = %s", (2,)).one()
    assert (row.name, row.score) == ("Bob O'Brien", 1.25)
    session.execute(f"DELETE FROM {ks}.people WHERE id = 1")
    assert [r.id for r in session.execute(f"SELECT id FROM {ks}.people")] == [2]
    assert session.execute(f"SELECT COUNT(*) FROM {ks}.people").one().count == 1


def test_prepared_statements(session):
    ks = keyspace(session, "prepared")
    session.execute(f"CREATE TABLE {ks}.events (day text, seq int, what text, PRIMARY KEY (day, seq))")
    insert = session.prepare(f"INSERT INTO {ks}.events (day, seq, what) VALUES (?, ?, ?)")
    for seq in (3, 1, 2):
        session.execute(insert, ("mon", seq, f"event {seq}"))
    session.execute(insert, ("tue", 1, None))
    select = session.prepare(f"SELECT seq, what FROM {ks}.events WHERE day = ?")
    assert [(r.seq, r.what) for r in session.execute(select, ("mon",))] == [
        (1, "event 1"), (2, "event 2"), (3, "event 3"),
    ]
    assert [(r.seq, r.what) for r in session.execute(select, ["tue"])] == [(1, None)]
    assert session.prepare(f"INSERT INTO {ks}.events (day, seq, what) VALUES (?, ?, ?)").query_id == insert.query_id


def test_batches(session):
    ks = keyspace(session, "batches")
    session.execute(f"CREATE TABLE {ks}.kv (k text PRIMARY KEY, v int)")
    insert = session.prepare(f"INSERT INTO {ks}.kv (k, v) VALUES (?, ?)")
    for batch_type in (BatchType.LOGGED, BatchType.UNLOGGED):
        batch = BatchStatement(batch_type=batch_type)
        batch.add(insert, ("a", 1))
        batch.add(SimpleStatement(f"INSERT INTO {ks}.kv (k, v) VALUES (%s, %s)"), ("b", 2))
        batch.add(f"UPDATE {ks}.kv SET v = 3 WHERE k = 'c'")
        session.execute(batch)
    session.execute(
        f"BEGIN UNLOGGED BATCH INSERT INTO {ks}.kv (k, v) VALUES ('d', 4);"
        f" DELETE FROM {ks}.kv WHERE k = 'a'; APPLY BATCH"
    )
    assert sorted((r.k, r.v) for r in session.execute(f"SELECT * FROM {ks}.kv")) == [
        ("b", 2), ("c", 3), ("d", 4),
    ]


def test_concurrent_requests_and_connections(cluster, port, session):
    ks = keyspace(session, "concurrent")
    session.execute(f"CREATE TABLE {ks}.n (k int PRIMARY KEY, v text)")
    insert = session.prepare(f"INSERT INTO {ks}.n (k, v) VALUES (?, ?)")
    results = execute_concurrent_with_args(
        session, insert, [(i, str(i)) for i in range(300)], concurrency=50
    )
    assert all(ok for ok, _ in results)
    other = open_cluster(port, cluster.protocol_version, False)
    try:
        rows = other.connect().execute(f"SELECT k, v FROM {ks}.n")
        assert sorted((r.k, r.v) for r in rows) == [(i, str(i)) for i in range(300)]
    finally:
        other.shutdown()


def test_use_keyspace_and_unqualified_names(cluster, session):
    ks = keyspace(session, "used")
    session.execute(f"USE {ks}")
    session.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    session.execute("INSERT INTO notes (id, body) VALUES (1, 'hello')")
    assert session.execute("SELECT body FROM notes WHERE id = 1").one().body == "hello"
    other = cluster.connect(ks)
    try:
        prepared = other.prepare("SELECT body FROM notes WHERE id = ?")
        assert other.execute(prepared, (1,)).one().body == "hello"
    finally:
        other.shutdown()


def test_quoted_identifiers(session):
    ks = keyspace(session, "Quoted")
    session.execute(f'CREATE TABLE {ks}."MixedCase" ("UserId" int PRIMARY KEY, "Display Name" text, plain text)')
    session.execute(f'INSERT INTO {ks}."MixedCase" ("UserId", "Display Name", PLAIN) VALUES (7, \'Ada\', \'x\')')
    session.row_factory = dict_factory
    row = session.execute(f'SELECT "UserId", "Display Name", plain FROM {ks}."MixedCase" WHERE "UserId" = 7').one()
    assert row == {"UserId": 7, "Display Name": "Ada", "plain": "x"}
    with pytest.raises(InvalidRequest):
        session.execute(f"SELECT * FROM {ks}.mixedcase")


def test_errors(session):
    ks = keyspace(session, "errors")
    with pytest.raises(AlreadyExists):
        session.execute(f"CREATE KEYSPACE {ks} WITH replication = {REPLICATION}")
    with pytest.raises(SyntaxException, match="does not support create-index"):
        session.execute(f"CREATE INDEX ON {ks}.t (v)")
    with pytest.raises(SyntaxException):
        session.execute("FROBNICATE everything")
    with pytest.raises(InvalidRequest, match="unconfigured table"):
        session.execute(f"SELECT * FROM {ks}.missing")


def test_large_values_round_trip(session):
    ks = keyspace(session, "large")
    session.execute(f"CREATE TABLE {ks}.docs (id int PRIMARY KEY, body text, raw blob)")
    insert = session.prepare(f"INSERT INTO {ks}.docs (id, body, raw) VALUES (?, ?, ?)")
    raw = LARGE.encode()[::-1]
    session.execute(insert, (1, LARGE, raw))
    session.execute(f"INSERT INTO {ks}.docs (id, body) VALUES (%s, %s)", (2, LARGE[:1000]))
    rows = {row.id: row for row in session.execute(f"SELECT * FROM {ks}.docs")}
    assert (rows[1].body, rows[1].raw) == (LARGE, raw)
    assert (rows[2].body, rows[2].raw) == (LARGE[:1000], None)


def test_driver_negotiates_v5(port):
    """Without a version the driver starts above v5 and steps down to the highest the fixture
    speaks."""
    cluster = Cluster(["127.0.0.1"], port=port, connect_timeout=DEADLINE)
    try:
        session = cluster.connect()
        assert cluster.protocol_version == 5
        assert session.execute("SELECT key FROM system.local").one().key == "local"
    finally:
        cluster.shutdown()


def test_keyspace_per_request(session_v5):
    ks = keyspace(session_v5, "per_request")
    session_v5.execute(f"CREATE TABLE {ks}.notes (id int PRIMARY KEY, body text)")
    with pytest.raises(InvalidRequest, match="No keyspace has been specified"):
        session_v5.execute("SELECT * FROM notes")
    session_v5.execute(SimpleStatement("INSERT INTO notes (id, body) VALUES (1, 'one')", keyspace=ks))
    select = SimpleStatement("SELECT body FROM notes WHERE id = %s", keyspace=ks)
    assert session_v5.execute(select, (1,)).one().body == "one"

    insert = session_v5.prepare("INSERT INTO notes (id, body) VALUES (?, ?)", keyspace=ks)
    batch = BatchStatement()
    batch.add(insert, (2, "two"))
    batch.add(SimpleStatement("INSERT INTO notes (id, body) VALUES (3, 'three')"))
    assert batch.keyspace == ks
    session_v5.execute(batch)
    rows = session_v5.execute(f"SELECT id, body FROM {ks}.notes")
    assert sorted((r.id, r.body) for r in rows) == [(1, "one"), (2, "two"), (3, "three")]
    assert session_v5.keyspace is None


def test_prepared_select_after_its_table_changed(session_v5):
    """The driver executes a prepared SELECT without asking for metadata; when the table was
    recreated with other columns, the rows carry the new metadata and its id."""
    ks = keyspace(session_v5, "changed")
    session_v5.execute(f"CREATE TABLE {ks}.t (k int PRIMARY KEY, v text)")
    session_v5.execute(f"INSERT INTO {ks}.t (k, v) VALUES (1, 'a')")
    select = session_v5.prepare(f"SELECT * FROM {ks}.t WHERE k = ?")
    assert select.result_metadata_id
    assert session_v5.execute(select, (1,)).one() == (1, "a")
    session_v5.execute(f"DROP TABLE {ks}.t")
    session_v5.execute(f"CREATE TABLE {ks}.t (k int PRIMARY KEY, v text, w int)")
    session_v5.execute(f"INSERT INTO {ks}.t (k, v, w) VALUES (1, 'b', 7)")
    row = session_v5.execute(select, (1,)).one()
    assert (row.k, row.v, row.w) == (1, "b", 7)
