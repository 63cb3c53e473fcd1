"""From audit to enforcement with the real Python Cassandra driver, through `axoneme run` in front
of cql-fixture: an application runs while its database's endpoint is in audit mode with no L7
rules, `axoneme policy suggest` writes a policy from the access log, the policy is imported and
audit switched off; the application (connection set-up and schema queries included) keeps
working, and a statement it never ran is refused."""

import json
import subprocess
from pathlib import Path

import pytest
from cassandra import Unauthorized

from bench.procs import Agent, free_port, wait_until
from test_axoneme import AXONEME_BIN, connect

APP = "127.0.0.33"  # app: shop


class Audited:
    """`axoneme run` guarding cql-fixture, its endpoint in audit mode and no policy."""

    def __init__(self, workdir: Path, upstream_port: int):
        self.workdir = workdir
        self.port = free_port()
        self.access_log = workdir / "access.log"
        (workdir / "config.yaml").write_text(f"""\
accessLog: {{path: "{self.access_log}"}}
api: {{socket: "{workdir / 'api.sock'}"}}
drainTimeout: 0
endpoints:
  - {{name: cassandra, ips: ["127.0.0.1"], labels: {{app: cassandra}}, policyAuditMode: true}}
  - {{name: shop, ips: ["{APP}"], labels: {{app: shop}}}}
listeners:
  - {{name: cassandra, listen: "127.0.0.1:{self.port}", upstream: "127.0.0.1:{upstream_port}", endpoint: cassandra, direction: ingress, l7proto: cassandra}}
""")
        self.agent = Agent(AXONEME_BIN, workdir / "config.yaml", workdir / "axoneme.log",
                           ["cassandra"])

    def cli(self, *args) -> str:
        done = subprocess.run([AXONEME_BIN, "--api", self.workdir / "api.sock", *args],
                              capture_output=True, text=True)
        assert done.returncode == 0, f"axoneme {args}: {done.stderr}"
        return done.stdout

    def requests(self):
        if not self.access_log.exists():
            return []
        entries = [json.loads(line) for line in self.access_log.read_text().splitlines()]
        return [e for e in entries if e["entry_type"] == "Request"]


@pytest.fixture
def audited(tmp_path, port):
    running = Audited(tmp_path, port)
    yield running
    running.agent.stop()


def shop(proxy):
    """The application: its schema, an order written, the order read back."""
    session = connect(proxy, APP, (4, False))
    try:
        session.execute("CREATE KEYSPACE IF NOT EXISTS shop WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        session.execute("CREATE TABLE IF NOT EXISTS shop.orders (id int PRIMARY KEY, item text)")
        session.execute("INSERT INTO shop.orders (id, item) VALUES (1, 'kyber crystal')")
        return [row.item for row in session.execute("SELECT item FROM shop.orders WHERE id = 1")]
    finally:
        session.cluster.shutdown()


def test_the_app_keeps_working_once_its_suggested_policy_enforces(audited):
    assert shop(audited) == ["kyber crystal"]
    # The driver's own reads of the system tables come first: wait for the application's last
    # statement, the read of its order, so that the log holds every one of them.
    def read_back(entries):
        return any(e["generic_l7"]["fields"].get("query_table") == "shop.orders"
                   and e["generic_l7"]["fields"].get("query_action") == "select"
                   for e in entries)
    wait_until(lambda: read_back(audited.requests()),
               "the application's requests in the access log")

    suggested = audited.cli("policy", "suggest", "--from-log", str(audited.access_log),
                            "--endpoint", "cassandra")
    assert "query_table: \"shop\\\\.orders\"" in suggested, suggested
    (audited.workdir / "suggested.yaml").write_text(suggested)
    audited.cli("policy", "import", str(audited.workdir / "suggested.yaml"))
    audited.cli("endpoint", "add", "cassandra", "--ip", "127.0.0.1", "--label", "app=cassandra")

    assert shop(audited) == ["kyber crystal"], "the application keeps working"
    session = connect(audited, APP, (4, False))
    try:
        with pytest.raises(Unauthorized):
            session.execute("DELETE FROM shop.orders WHERE id = 1")
        assert [r.item for r in session.execute("SELECT item FROM shop.orders WHERE id = 1")] \
            == ["kyber crystal"], "the refused delete never reached the database"
    finally:
        session.cluster.shutdown()
