"""The connection sweep run for real and briefly: memcached, HAProxy and the agent with the
Rebels' policy started by the part's own targets on free ports, afresh for each round, two
small connection counts for a second each, and the report's sweep rows with memory per
connection read from /proc.

The agent and the load generator are the workspace's debug builds (scripts/test.sh builds them
first), or AXONEME_BIN and LOADGEN_BIN."""

import dataclasses
import json
import shutil

import pytest

from bench import parts, procs, report, runner
from bench.targets import Axoneme, HAProxy, Memcached, Setup
from conftest import binaries_dir


@pytest.fixture
def bin_dir(tmp_path):
    """The agent and the load generator under the names the benchmark runs them by."""
    for tool in ("memcached", "haproxy"):
        assert shutil.which(tool), f"{tool} is missing"
    return binaries_dir(tmp_path)


def sweep_on_free_ports(counts: tuple):
    """The sweep at `counts`, its targets on free ports (the same kinds, limits, policy and
    endpoints as the benchmark's for this machine's open-file limit, raised as the benchmark
    raises it; the policy guarding the server's port)."""
    sweep = parts.sweep(runner.raise_open_file_limit(parts.OPEN_FILES))
    direct, haproxy, agent = sweep.targets
    server = procs.free_port()
    policy = json.loads(json.dumps(agent.policy).replace(f'"{direct.port}"', f'"{server}"'))
    targets = (
        Memcached(server, direct.threads, direct.max_connections),
        HAProxy(procs.free_port(), server, haproxy.maxconn),
        Axoneme(procs.free_port(), server, agent.listener, agent.endpoints, policy,
                max_connections=agent.max_connections),
    )
    shapes = tuple(parts.Shape(f"{count} conns", count, 1, 64) for count in counts)
    return dataclasses.replace(sweep, targets=targets, shapes=shapes)


def test_a_short_sweep_notes_each_targets_memory_and_reports_a_row_per_count(workdir, bin_dir):
    part = sweep_on_free_ports((1, 50))
    measured = runner.run_part(part, Setup(workdir, bin_dir, 2), bin_dir / "axoneme-loadgen",
                               seconds=1, rounds=2, threads=parts.MEMCACHED_THREADS)
    results, text = report.build(runner.machine(2), [measured], 1, 2, runner.WARMUP_SECONDS)

    runs = results["sweep"]["runs"]
    assert len(runs) == 2 * 2 * 3
    for run in runs:
        assert not run.get("failed"), run
        assert run["errors"] == 0 and run["ops"] > 0, run
        assert 0 < run["rss_idle_kib"] <= run["rss_peak_kib"], run
        assert run[report.MEMORY] == runner.memory_per_connection(
            run["rss_idle_kib"], run["rss_peak_kib"], run["connections"]), run
    rows = results["sweep"]["connection_sweep"]
    assert [row["connections"] for row in rows] == [1, 50]
    for row in rows:
        assert row["ops_per_sec_ratio"] > 0 and row["cpu_us_per_op_ratio"] > 0, row
        assert set(row[report.MEMORY]) == {"direct", "HAProxy", "Axoneme"}, row
    assert report.sweep_table(rows)[0] in text
    log = results["sweep"]["axoneme_access_log"]
    axoneme_ops = sum(run["ops"] for run in runs if run["target"] == "Axoneme")
    assert log["denied"] == 0 and log["lines"] >= axoneme_ops, (log, axoneme_ops)
    assert log["dropped"] == "0", log
