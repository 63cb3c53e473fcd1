"""Cassandra through a real Envoy running Axoneme's filter in front of cql-fixture, driven by the
real Python Cassandra driver (protocol v4 and v5, without and with LZ4) under the Empire's policy
from examples/cassandra: the standalone proxy's expectations (tests/cql/test_axoneme.py)."""

import os
import subprocess
from pathlib import Path

import pytest

import cql_checks
from bench.procs import Process, free_port, port_open
from conftest import ROOT, Envoy
from cql_checks import OUTPOST, wire  # noqa: F401

EXAMPLE = ROOT / "examples" / "cassandra"


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


@pytest.fixture(scope="module")
def hq(envoy, wire):
    session = cql_checks.connect_hq(envoy.addr[1], wire)
    yield session
    session.cluster.shutdown()


@pytest.fixture(scope="module")
def outpost(envoy, wire, hq):
    session = cql_checks.connect(envoy.addr[1], OUTPOST, wire)
    yield session
    session.cluster.shutdown()


def test_the_outpost_records_attendance_but_reads_nothing_else(envoy, hq, outpost):
    denied = cql_checks.check_the_outpost_records_attendance_but_reads_nothing_else(
        lambda: envoy.entries(0), hq, outpost)
    assert denied["generic_l7"]["proto"] == "cassandra"


def test_prepared_statements_are_checked(hq, outpost):
    cql_checks.check_prepared_statements_are_checked(hq, outpost)


def test_a_batch_with_one_denied_statement_is_denied_whole(hq, outpost):
    cql_checks.check_a_batch_with_one_denied_statement_is_denied_whole(hq, outpost)
