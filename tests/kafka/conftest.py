"""Shared pieces of the Kafka tests: a tansu broker behind `axoneme run` with the Empire's
policy from examples/kafka, playing one identity at a time (tests/shared/kafka_identities.py)."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Starting and stopping servers is shared with the benchmark, in scripts/bench/procs.py; the
# broker and its identities with the Envoy tests, in tests/shared.
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests" / "shared"))
from bench.procs import Agent
from kafka_identities import BROKER_IP, POLICY, PlayedIdentities

AXONEME_BIN = Path(os.environ.get("AXONEME_BIN", ROOT / "target" / "debug" / "axoneme"))

HQ = "empire-hq"
OUTPOST = "empire-outpost"
BACKUP = "empire-backup"


class Empire(PlayedIdentities):
    """tansu, and the agent in front of it playing one identity at a time, under the Empire's
    policy or `policy`."""

    def __init__(self, workdir: Path, policy: Path = POLICY):
        super().__init__(workdir, policy)
        (workdir / "policy.yaml").write_text(self.policy)

    @property
    def agent(self):
        return self.proxy

    def start_proxy(self, app: str):
        (self.workdir / "config.yaml").write_text(f"""\
accessLog: {{path: "{self.access_log}"}}
api: {{socket: "{self.workdir / 'api.sock'}"}}
drainTimeout: 0
{self.endpoints(app)}policies: [policy.yaml]
listeners:
  - {{name: kafka, listen: "{self.bootstrap}", upstream: "{BROKER_IP}:{self.broker_port}", endpoint: kafka, direction: ingress}}
""")
        return Agent(AXONEME_BIN, self.workdir / "config.yaml", self.workdir / "axoneme.log",
                     ["kafka"])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report ends with the agent's log and the last access-log entries, which
    say what the proxy did with the client's requests."""
    outcome = yield
    report = outcome.get_result()
    empire = item.funcargs.get("empire")
    if report.failed and empire is not None:
        if empire.agent is not None:
            report.sections.append(("axoneme log", empire.agent.log_text()[-6000:]))
        if empire.access_log.exists():
            lines = empire.access_log.read_text().splitlines()[-30:]
            report.sections.append(("access log (last 30 entries)", "\n".join(lines)))


@pytest.fixture(scope="session")
def empire(tmp_path_factory):
    """The broker and the agent for the whole session (topics and records carry over from test
    to test); the agent's and the broker's logs are printed when the session ends."""
    empire = Empire(tmp_path_factory.mktemp("kafka"))
    try:
        yield empire
    finally:
        agent_log = empire.agent.log_text() if empire.agent else ""
        empire.stop()
        print(agent_log[-4000:])
        print(empire.broker.log_text()[-4000:])
