"""The benchmark's forwarding part, run for real and briefly: memcached, HAProxy, the plain
forwarders over epoll and over io_uring, and the agent with the Rebels' policy, started by the
part's own targets on free ports, with the load generator's shapes for a second each; every
request of every run answered and checked by the load generator, and the report's ratios of the
io_uring forwarder.

The forwarder is the workspace's debug build (scripts/test.sh builds it), or FORWARD_PROBE_BIN."""

import dataclasses
import os
import shutil
from pathlib import Path

from bench import parts, policies, procs, report, runner
from bench.targets import Axoneme, ForwardProbe, HAProxy, Memcached, Setup
from conftest import ROOT, binaries_dir

FORWARD_PROBE_BIN = Path(os.environ.get("FORWARD_PROBE_BIN", ROOT / "target" / "debug" / "forward-probe"))


def test_a_short_run_measures_every_forwarder_and_the_io_uring_ratios(workdir, tmp_path):
    assert shutil.which("haproxy") and shutil.which("memcached")
    bin_dir = binaries_dir(tmp_path, FORWARD_PROBE_BIN)
    server = procs.free_port()
    _, _, _, _, agent = parts.FORWARDING.targets
    part = dataclasses.replace(parts.FORWARDING, targets=(
        Memcached(server, parts.MEMCACHED_THREADS),
        HAProxy(procs.free_port(), server),
        ForwardProbe(procs.free_port(), server, "epoll"),
        ForwardProbe(procs.free_port(), server, "uring"),
        Axoneme(procs.free_port(), server, agent.listener, agent.endpoints,
                policies.rebels(server)),
    ))
    measured = runner.run_part(part, Setup(workdir, bin_dir, 2), bin_dir / "axoneme-loadgen",
                               seconds=1, rounds=1, threads=parts.MEMCACHED_THREADS)
    results, text = report.build(runner.machine(2), [measured], 1, 1, runner.WARMUP_SECONDS)

    forwarding = results["forwarding"]
    names = ["direct", "HAProxy", "forward epoll", "forward uring", "Axoneme"]
    assert sorted(run["target"] for run in forwarding["runs"]) == sorted(
        names * len(part.shapes))
    for run in forwarding["runs"]:
        assert not run.get("failed"), run
        assert run["errors"] == 0 and run["ops"] > 0, run
        assert run["cpu_us_per_op"] > 0, run
    ratios = {(ratio["shape"], ratio["ratio"]) for ratio in forwarding["ratios"]}
    for shape in part.shapes:
        for ratio in ("forward uring/forward epoll", "forward uring/HAProxy",
                      "Axoneme/forward uring", "Axoneme/HAProxy"):
            assert (shape.name, ratio) in ratios
    assert "## Forwarding path: epoll and io_uring" in text
