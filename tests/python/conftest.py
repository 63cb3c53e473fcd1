"""Fixtures for the memcached end-to-end tests: a real memcached, Axoneme in front of it with the
example's Rebels policy, and connections of each client library bound to an identity's address."""

import json
import os
import shutil
import signal
import socket
import struct
import sys
from pathlib import Path

import bmemcached
import pytest
from meta_memcache import BaseSerializer, CacheClient, ConnectionPool, ServerAddress
from meta_memcache.base.base_serializer import EncodedValue
from pymemcache.client.base import Client as TextClient

ROOT = Path(__file__).resolve().parents[2]
# Starting and stopping servers is shared with the benchmark, in scripts/bench/procs.py.
sys.path.insert(0, str(ROOT / "scripts"))
from bench.procs import DEADLINE, Agent, Process, free_port, memcached_command, wait_until

EXAMPLE = ROOT / "examples" / "memcached"
AXONEME_BIN = Path(os.environ.get("AXONEME_BIN", ROOT / "target" / "debug" / "axoneme"))

# Source addresses of the identities; the proxy's configuration gives each its labels.
MAINTENANCE = "127.0.0.11"  # function: fleet-maintenance: writeGroup and get on alliance/fleet/*
MONITORING = "127.0.0.12"  # function: fleet-monitoring: get on alliance/fleet/*
JEDI = "127.0.0.13"  # role: jedi: everything
STRANGER = "127.0.0.66"  # app: empire: no policy lets it reach memcached
POLICY_NAME = "secure-fleet"

DENIED = b"CLIENT_ERROR access denied\r\n"
MIB = 1 << 20

BINARY_HEADER = struct.Struct("!BBHBBHLLQ")


def connect_from(source: str, addr: tuple[str, int]) -> socket.socket:
    """A TCP connection to `addr` from `source`, so the proxy sees that identity."""
    sock = socket.socket()
    sock.settimeout(DEADLINE)
    sock.bind((source, 0))
    sock.connect(addr)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes: {bytes(data)!r}")
        data += chunk
    return bytes(data)


def read_line(sock: socket.socket) -> bytes:
    """Reads one CRLF-terminated line, byte by byte so nothing after it is consumed."""
    line = bytearray()
    while not line.endswith(b"\r\n"):
        line += read_exactly(sock, 1)
    return bytes(line)


def read_text_reply(sock: socket.socket) -> bytes:
    """Reads one reply line of the text or meta protocol, with its data block for VALUE and VA."""
    line = read_line(sock)
    words = line.split()
    if words[0] == b"VALUE":
        return line + read_exactly(sock, int(words[3]) + 2)
    if words[0] == b"VA":
        return line + read_exactly(sock, int(words[1]) + 2)
    return line


def read_get_reply(sock: socket.socket) -> bytes:
    """Reads the reply to a text get: VALUE blocks through END, or a single error line."""
    reply = bytearray()
    while True:
        part = read_text_reply(sock)
        reply += part
        if not part.startswith(b"VALUE"):
            return bytes(reply)


def expect_closed(sock: socket.socket) -> None:
    """Asserts that the peer closes the connection (EOF or reset) within the deadline."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


def binary_request(opcode: int, key: bytes = b"", extras: bytes = b"", value: bytes = b"",
                   opaque: int = 0, cas: int = 0) -> bytes:
    body = extras + key + value
    header = BINARY_HEADER.pack(0x80, opcode, len(key), len(extras), 0, 0, len(body), opaque, cas)
    return header + body


def read_binary_response(sock: socket.socket) -> dict:
    magic, opcode, keylen, extlen, datatype, status, bodylen, opaque, cas = BINARY_HEADER.unpack(
        read_exactly(sock, BINARY_HEADER.size))
    body = read_exactly(sock, bodylen)
    return {
        "magic": magic, "opcode": opcode, "datatype": datatype, "status": status,
        "opaque": opaque, "cas": cas, "extras": body[:extlen],
        "key": body[extlen:extlen + keylen], "value": body[extlen + keylen:],
    }


class Memcached:
    """A real memcached on a free loopback port; `command` talks to it directly, past the proxy."""

    def __init__(self, log_dir: Path):
        binary = shutil.which("memcached")
        if binary is None:
            pytest.fail("memcached is not installed (scripts/test.sh installs it)")
        self.port = free_port()
        # -I 2m: items up to 2 MiB, so a 1 MiB value plus its key and header fits one item.
        self.process = Process(memcached_command(binary, self.port, "-I", "2m"),
                               log_dir / "memcached.log")
        self.process.ready(self._answers, f"memcached on port {self.port}")

    def _answers(self) -> bool:
        try:
            return self.command(b"version\r\n").startswith(b"VERSION ")
        except OSError:
            return False

    def command(self, request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE) as sock:
            sock.sendall(request)
            return read_get_reply(sock)

    def get(self, key: str) -> bytes | None:
        """The value stored under `key`, read directly from memcached."""
        reply = self.command(b"get " + key.encode() + b"\r\n")
        if reply == b"END\r\n":
            return None
        header, rest = reply.split(b"\r\n", 1)
        return rest[: int(header.split()[3])]

    def put(self, key: str, value: bytes) -> None:
        """Stores `value` directly in memcached."""
        reply = self.command(b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(value), value))
        assert reply == b"STORED\r\n", reply

    def stop(self) -> None:
        # It holds nothing worth a clean shutdown, which would take it most of a second.
        self.process.stop(signal.SIGKILL)


def example_policy(memcached_port: int) -> str:
    """The example's policy, guarding the port the test's memcached listens on."""
    policy = (EXAMPLE / "policy.yaml").read_text()
    assert 'port: "11211"' in policy, "the example policy guards memcached's port 11211"
    return policy.replace('port: "11211"', f'port: "{memcached_port}"')


def allows_nothing_policy(memcached_port: int) -> str:
    """A policy that lets fleet-monitoring connect to memcached but allows it no request: its
    only rule names a key nothing stores or asks for."""
    return f"""\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: monitoring-allowed-nothing}}
spec:
  endpointSelector: {{matchLabels: {{app: memcached}}}}
  ingress:
    - fromEndpoints: [{{matchLabels: {{function: fleet-monitoring}}}}]
      toPorts:
        - ports: [{{port: "{memcached_port}", protocol: TCP}}]
          rules:
            l7proto: memcache
            l7: [{{command: get, keyExact: never/asked}}]
"""


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


class Proxy:
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

    def entries(self, n: int) -> list[dict]:
        """The access log once it holds at least `n` entries (all of them, which may be more)."""
        def read() -> list[dict] | None:
            if not self.access_log.exists():
                return None
            # Only lines already ended by a newline: the last one may still be being written.
            complete = self.access_log.read_text().split("\n")[:-1]
            entries = [json.loads(line) for line in complete]
            return entries if len(entries) >= n else None

        if n == 0:
            return read() or []
        return wait_until(read, f"{n} access log entries")

    def summary(self, n: int) -> list[tuple]:
        """(entry_type, command, keys) of every entry, once there are at least `n`."""
        return [
            (e["entry_type"], e["generic_l7"]["fields"].get("command"),
             e["generic_l7"]["fields"].get("keys", ""))
            for e in self.entries(n)
        ]

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
def memcached(tmp_path):
    server = Memcached(tmp_path)
    yield server
    server.stop()


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
