"""Fixtures for the memcached end-to-end tests: a real memcached (tests/shared), Axoneme in front
of it with the example's Rebels policy, and connections of each client library bound to an
identity's address."""

import os
import socket
import sys
from pathlib import Path

import bmemcached
import pytest
from meta_memcache import BaseSerializer, CacheClient, ConnectionPool, ServerAddress
from meta_memcache.base.base_serializer import EncodedValue
from pymemcache.client.base import Client as TextClient

ROOT = Path(__file__).resolve().parents[2]
# Starting and stopping servers is shared with the benchmark, in scripts/bench/procs.py; memcached,
# the identities, the helpers and the checks with the Envoy tests, in tests/shared.
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests" / "shared"))
from bench.procs import DEADLINE, Agent, wait_until
from memcached_checks import (BINARY_HEADER, DENIED, EXAMPLE, JEDI, MAINTENANCE, MIB,  # noqa: F401
                              MONITORING, POLICY_NAME, STRANGER, AccessLogReader, Memcached,
                              binary_request, connect_from, example_policy, expect_closed,
                              memcached, read_binary_response, read_exactly, read_get_reply,
                              read_line, read_text_reply)

AXONEME_BIN = Path(os.environ.get("AXONEME_BIN", ROOT / "target" / "debug" / "axoneme"))


def monitoring_policy(name: str, memcached_port: int, rules: list) -> str:
    """A policy named `name` that lets fleet-monitoring reach memcached with the memcache L7
    `rules` (each a YAML flow map, e.g. `{command: stats}`)."""
    l7 = "".join(f"              - {rule}\n" for rule in rules)
    return f"""\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: {name}}}
spec:
  endpointSelector: {{matchLabels: {{app: memcached}}}}
  ingress:
    - fromEndpoints: [{{matchLabels: {{function: fleet-monitoring}}}}]
      toPorts:
        - ports: [{{port: "{memcached_port}", protocol: TCP}}]
          rules:
            l7proto: memcache
            l7:
{l7}"""


def allows_nothing_policy(memcached_port: int) -> str:
    """A policy that lets fleet-monitoring connect to memcached but allows it no request: its
    only rule names a key nothing stores or asks for."""
    return monitoring_policy("monitoring-allowed-nothing", memcached_port,
                             ["{command: get, keyExact: never/asked}"])


def write_config(workdir: Path, memcached_port: int, policy: str, extra_config: str = "",
                 extra_api: str = "") -> Path:
    """Writes the proxy's configuration and `policy` into `workdir`; returns the config's path.

    Listener `memcached` guards the memcached endpoint; listener `unguarded` guards an endpoint
    that no policy selects, so its traffic is forwarded unparsed. `extra_api` adds settings to
    the `api` section (e.g. `listen: ..., token: ...`).
    """
    (workdir / "policy.yaml").write_text(policy)
    upstream = f"127.0.0.1:{memcached_port}"
    config = workdir / "config.yaml"
    # Each proxy has an API socket of its own, and stops at once at teardown, without waiting
    # for the connections a test left open.
    config.write_text(f"""\
accessLog: {{path: "{workdir / 'access.log'}"}}
api: {{socket: "{workdir / 'api.sock'}"{", " + extra_api if extra_api else ""}}}
drainTimeout: 0
endpoints:
  - {{name: memcached, ips: ["127.0.0.1"], labels: {{app: memcached}}}}
  - {{name: unguarded, ips: ["127.0.0.2"], labels: {{app: unguarded}}}}
  - {{name: maintenance, ips: ["{MAINTENANCE}"], labels: {{function: fleet-maintenance}}}}
  - {{name: monitoring, ips: ["{MONITORING}"], labels: {{function: fleet-monitoring}}}}
  - {{name: jedi, ips: ["{JEDI}"], labels: {{role: jedi}}}}
  - {{name: stranger, ips: ["{STRANGER}"], labels: {{app: empire}}}}
policies: [policy.yaml]
listeners:
  - {{name: memcached, listen: "127.0.0.1:0", upstream: "{upstream}", endpoint: memcached, direction: ingress}}
  - {{name: unguarded, listen: "127.0.0.1:0", upstream: "{upstream}", endpoint: unguarded, direction: ingress}}
{extra_config}""")
    return config


def axoneme_bin() -> Path:
    if not AXONEME_BIN.exists():
        pytest.fail(f"{AXONEME_BIN} does not exist: run `cargo build -p axoneme` or set AXONEME_BIN")
    return AXONEME_BIN


class Proxy(AccessLogReader):
    """An `axoneme run` process in front of `memcached`, by default with the example's policy."""

    def __init__(self, workdir: Path, memcached: Memcached, extra_config: str = "",
                 policy: str | None = None, extra_api: str = ""):
        self.access_log = workdir / "access.log"
        config = write_config(workdir, memcached.port,
                              policy or example_policy(memcached.port), extra_config, extra_api)
        self.agent = Agent(axoneme_bin(), config, workdir / "axoneme.log",
                           ["memcached", "unguarded"])
        self.addr = self.agent.addresses["memcached"]
        self.unguarded_addr = self.agent.addresses["unguarded"]

    def keyed_summary(self, n: int) -> list[tuple]:
        """Like `summary`, but of the entries naming keys only (leaving out e.g. noops), once
        there are at least `n` of them."""
        def keyed() -> list[tuple] | None:
            found = [entry for entry in self.summary(0) if entry[2]]
            return found if len(found) >= n else None

        return wait_until(keyed, f"{n} access log entries with keys")

    def wait_for_entry(self, matches, what: str) -> dict:
        """The first access log entry for which `matches` is true, once it has been written."""
        def find() -> dict | None:
            return next((e for e in self.entries(0) if matches(e)), None)

        return wait_until(find, what)

    def stop(self) -> None:
        self.agent.stop()


@pytest.fixture
def proxy(tmp_path, memcached):
    running = Proxy(tmp_path, memcached)
    yield running
    running.stop()


@pytest.fixture
def start_proxy(tmp_path, memcached):
    """Starts a proxy with extra top-level configuration (e.g. a `protocols:` section) and, when
    given, a policy of its own instead of the example's."""
    started = []

    def start(extra_config: str = "", policy: str | None = None) -> Proxy:
        started.append(Proxy(tmp_path, memcached, extra_config, policy))
        return started[-1]

    yield start
    for running in started:
        running.stop()


class SourceBoundSockets:
    """Stands in for the socket module in pymemcache: every socket it makes is bound to `source`."""

    def __init__(self, source: str):
        self.source = source

    def __getattr__(self, name):
        return getattr(socket, name)

    def socket(self, *args, **kwargs) -> socket.socket:
        sock = socket.socket(*args, **kwargs)
        sock.bind((self.source, 0))
        return sock


def text_client(proxy: Proxy, source: str) -> TextClient:
    """A pymemcache client from `source`'s address; it awaits replies unless told noreply=True."""
    return TextClient(proxy.addr, socket_module=SourceBoundSockets(source),
                      connect_timeout=DEADLINE, timeout=DEADLINE, default_noreply=False)


class RawBytes(BaseSerializer):
    """Stores bytes values as they are (no compression), so the wire carries exactly the value."""

    def serialize(self, key, value: bytes) -> EncodedValue:
        return EncodedValue(data=value, encoding_id=0)

    def unserialize(self, data, encoding_id: int) -> bytes:
        return bytes(data)


def meta_client(proxy: Proxy, source: str):
    """A meta-memcache client whose single pooled connection comes from `source`'s address."""
    def pool(server: ServerAddress) -> ConnectionPool:
        return ConnectionPool(
            server=str(server),
            socket_factory_fn=lambda: connect_from(source, (server.host, server.port)),
            initial_pool_size=1,
            max_pool_size=1,
            mark_down_period_s=0,
            # With the default 4 KiB buffer the library takes half a minute to read 1 MiB.
            read_buffer_size=64 * 1024,
        )

    host, port = proxy.addr
    return CacheClient.cache_client_from_servers([ServerAddress(host, port)], pool,
                                                 serializer=RawBytes())


def binary_client(proxy: Proxy, source: str) -> bmemcached.Client:
    """A python-binary-memcached client (bytes values, no compression) from `source`'s address.

    The library opens a socket only when it has none, so it is handed one already connected from
    `source`; if that one is closed, the library's own reconnection would come from 127.0.0.1,
    the memcached endpoint's address, which the policy refuses (and the test would fail loudly).
    """
    host, port = proxy.addr
    client = bmemcached.Client([f"{host}:{port}"], socket_timeout=DEADLINE, raw_data=True)
    for server in client.servers:
        server.connection = connect_from(source, proxy.addr)
    return client
