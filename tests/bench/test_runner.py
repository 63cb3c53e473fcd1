"""The benchmark's schedule and bookkeeping: the targets' order from round to round, the load
shapes' arguments, and counting an access log read in pieces."""

import os
import socket

import pytest

from bench import parts, procs, runner, targets


def test_the_order_rotates_by_one_place_a_round_and_comes_back():
    order = ("direct", "HAProxy", "twemproxy", "Axoneme")
    assert runner.rotation(order, 1) == list(order)
    assert runner.rotation(order, 2) == ["HAProxy", "twemproxy", "Axoneme", "direct"]
    assert runner.rotation(order, 4) == ["Axoneme", "direct", "HAProxy", "twemproxy"]
    assert runner.rotation(order, 5) == list(order)


def test_over_as_many_rounds_as_targets_each_runs_once_in_every_place():
    order = ("direct", "HAProxy", "Axoneme")
    rounds = [runner.rotation(order, number) for number in (1, 2, 3)]
    for place in range(3):
        assert sorted(run[place] for run in rounds) == sorted(order)


def test_every_part_runs_direct_first_in_the_first_round():
    # The Cassandra part's first direct run creates the keyspace the later runs use.
    for part in parts.PARTS:
        assert runner.rotation(part.targets, 1)[0].name == "direct"


def test_shapes_give_the_load_generator_their_value_size_only_when_they_have_one():
    assert parts.Shape("s", 8, 32, 64).args() == [
        "--connections", "8", "--pipeline", "32", "--value-size", "64"]
    assert parts.Shape("s", 20, 1).args() == ["--connections", "20", "--pipeline", "1"]
    assert parts.Shape("s", 8, 1, 1024, ("--op", "produce")).args() == [
        "--connections", "8", "--pipeline", "1", "--value-size", "1024", "--op", "produce"]


def test_the_kafka_fetch_shapes_read_another_topic_than_the_produce_shapes_grow():
    topics = {shape.load_args[1]: set() for shape in parts.KAFKA.shapes}
    for shape in parts.KAFKA.shapes:
        topics[shape.load_args[1]].add(shape.load_args[3])
    assert topics["produce"].isdisjoint(topics["fetch"])
    prepare = parts.KAFKA.prepare
    assert {prepare[prepare.index("--topic") + 1]} == topics["fetch"]


def test_every_target_of_a_part_has_ports_of_its_own():
    ports = [port for part in parts.PARTS for target in part.targets for port in target.ports]
    assert len(ports) == len(set(ports))


@pytest.mark.parametrize("chunk", [1, 2, 5, 7, 21, 22, 23, 1000])
def test_lines_and_needles_are_counted_across_the_pieces_of_a_read(tmp_path, chunk):
    log = tmp_path / "access.log"
    log.write_bytes(b'{"entry_type":"Denied"}\n{"entry_type":"Request"}\n' * 3
                    + b'{"entry_type":"Denied"}')
    assert targets.count_lines(log, (b'"entry_type":"Denied"',), chunk) == (6, 4)


@pytest.mark.parametrize("chunk", [1, 3, 17, 1000])
def test_denied_entries_are_counted_in_either_form_of_the_log(tmp_path, chunk):
    log = tmp_path / "access.log"
    log.write_bytes(b'{"ts":1,"in":true,"t":"d","si":2}\n'
                    b'{"ts":2,"in":false,"t":"d","f":{"t":"d"}}\n'
                    b'{"ts":3,"in":true,"t":"q","f":{"x":"\\"in\\":true,\\"t\\":\\"d\\""}}\n'
                    b'{"timestamp":4,"is_ingress":true,"entry_type":"Denied"}\n')
    assert targets.count_lines(log, targets.DENIED_MARKS, chunk) == (4, 3)


def test_a_process_cpu_time_is_read_from_proc_and_grows_as_it_works():
    before = runner.process_cpu_seconds(os.getpid())
    spin = 0
    while runner.process_cpu_seconds(os.getpid()) - before < 0.05:
        spin += 1
    assert runner.process_cpu_seconds(os.getpid()) >= before + 0.05


def test_cpu_per_request_is_in_microseconds_and_none_without_requests():
    assert runner.cpu_per_op(2.5, 1_000_000) == 2.5
    assert runner.cpu_per_op(1.0, 3) == 333333.33
    assert runner.cpu_per_op(1.0, 0) is None


def test_a_baseline_runs_the_same_agent_from_its_own_binary_and_directory(tmp_path):
    part = parts.with_baseline(parts.PARTS[0])
    agent = next(target for target in part.targets if target.name == "Axoneme")
    baseline = part.targets[-1]
    assert (baseline.name, baseline.binary) == ("baseline", "axoneme-baseline")
    assert (baseline.policy, baseline.listener) == (agent.policy, agent.listener)
    assert baseline.port not in [port for target in parts.PARTS[0].targets
                                 for port in target.ports]
    setup = targets.Setup(tmp_path, tmp_path, 2)
    assert agent.workdir(setup) != baseline.workdir(setup)
    assert part.compare_with[0] == "baseline"


def test_a_free_port_lies_below_the_ephemeral_range_and_can_be_bound():
    low, high = procs.ephemeral_ports()
    assert 0 < low <= high
    ports = {procs.free_port() for _ in range(20)}
    for port in ports:
        if low > procs.LOWEST_PORT + 1000:
            assert procs.LOWEST_PORT <= port < low, port
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
