"""The cql-fixture, an in-memory CQL server, driven by the real Python Cassandra driver over
protocol v4, without and with LZ4 compression."""

import datetime
import uuid

import pytest
from cassandra import AlreadyExists, InvalidRequest
from cassandra.cluster import Cluster
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.protocol import SyntaxException
from cassandra.query import BatchStatement, BatchType, SimpleStatement, dict_factory

from conftest import DEADLINE
REPLICATION = "{'class': 'SimpleStrategy', 'replication_factor': 1}"


@pytest.fixture(scope="module", params=[False, "lz4"], ids=["plain", "lz4"])
def cluster(request, port):
    cluster = Cluster(
        ["127.0.0.1"], port=port, protocol_version=4, compression=request.param,
        connect_timeout=DEADLINE,
    )
    yield cluster
    cluster.shutdown()


@pytest.fixture
def session(cluster):
    session = cluster.connect()
    session.default_timeout = DEADLINE
    yield session
    session.shutdown()


def keyspace(session, name):
    """A fresh keyspace, named per compression so both runs share one fixture."""
    name = f"{name}_{'lz4' if session.cluster.compression else 'plain'}"
    session.execute(f"DROP KEYSPACE IF EXISTS {name}")
    session.execute(f"CREATE KEYSPACE {name} WITH replication = {REPLICATION}")
    return name


def test_connects_over_v4_and_reads_system_local(session):
    assert session.cluster.protocol_version == 4
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
    other = Cluster(["127.0.0.1"], port=port, protocol_version=4, connect_timeout=DEADLINE)
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


def test_driver_downgrades_to_v4(port):
    cluster = Cluster(["127.0.0.1"], port=port, connect_timeout=DEADLINE)
    try:
        session = cluster.connect()
        assert cluster.protocol_version == 4
        assert session.execute("SELECT key FROM system.local").one().key == "local"
    finally:
        cluster.shutdown()
