"""The connection sweep: its part's targets and shapes, the memory a run notes (read from
/proc), its rows and table on fixed runs, where results.json keeps them, and the PNG figure."""

import struct

from bench import parts, plot, policies, report, runner, targets

SHAPES = {f"{count} conns": count for count in (1, 20, 10_000)}


def result(ops, connections, memory=None, p99=200.0, cpu=10.0):
    """A load generator's JSON result with the runner's CPU time per request and, when given,
    its memory per connection."""
    found = {"target": "127.0.0.1:1", "connections": connections, "pipeline": 1,
             "ops_per_sec": ops, "p50_us": 100.0, "p99_us": p99, "p99_9_us": 300.0,
             "errors": 0, "cpu_us_per_op": cpu}
    if memory is not None:
        found[report.MEMORY] = memory
    return found


def sweep_runs():
    """Two rounds at every count: direct, HAProxy and Axoneme, the proxies' memory measured."""
    runs = []
    for shape, count in SHAPES.items():
        for round_number in (1, 2):
            scale = 1000 * count ** 0.5 * round_number
            for target, ops, memory, p99 in (("direct", 3 * scale, 1.0 * round_number, 50.0),
                                             ("HAProxy", 2 * scale, 4.0 * round_number, 80.0),
                                             ("Axoneme", 1.5 * scale, 6.0 * round_number, 60.0)):
                runs.append(report.run_record(round_number, shape, target,
                                              result(ops, count, memory, p99,
                                                     cpu=ops / 1000)))
    return runs


def test_the_sweep_runs_memcached_request_response_at_each_count_at_direct_haproxy_and_axoneme():
    part = parts.SWEEP
    assert [target.name for target in part.targets] == ["direct", "HAProxy", "Axoneme"]
    assert [shape.connections for shape in part.shapes] == list(parts.SWEEP_CONNECTIONS)
    assert {(shape.pipeline, shape.value_size) for shape in part.shapes} == {(1, 64)}
    assert part.memory_per_connection
    assert parts.PARTS[-1] is part, "the default run has it, last"
    memcached = next(p for p in parts.PARTS if p.name == "memcached")
    assert (part.source, part.load_args) == (memcached.source, memcached.load_args)


def test_every_sweep_target_takes_more_connections_than_the_largest_count(tmp_path):
    largest = max(parts.SWEEP_CONNECTIONS)
    direct, haproxy, axoneme = parts.SWEEP.targets
    setup = targets.Setup(tmp_path, tmp_path, 2)
    command = direct.command(setup)
    assert int(command[command.index("-c") + 1]) > largest
    haproxy.command(setup)
    config = (tmp_path / "haproxy.cfg").read_text()
    assert config.count(f"maxconn {haproxy.maxconn}") == 2, "global and frontends alike"
    assert haproxy.maxconn > largest
    agent = policies.agent_config("/w", axoneme.endpoints, "policy.json", axoneme.listener,
                                  axoneme.port, axoneme.upstream, axoneme.max_connections)
    assert agent["limits"]["maxConnections"] > largest
    assert parts.OPEN_FILES > 2 * largest, "a proxy holds two files a connection"


def test_under_a_low_open_file_limit_the_counts_a_proxy_cannot_hold_become_the_most_it_can():
    assert parts.sweep_counts(parts.OPEN_FILES) == parts.SWEEP_CONNECTIONS
    largest = max(parts.SWEEP_CONNECTIONS)
    files = 2 * largest + parts.PROXY_RESERVED_FILES - 1
    counts = parts.sweep_counts(files)
    assert counts[:-1] == parts.SWEEP_CONNECTIONS[:-1]
    assert counts[-1] < largest
    assert 2 * counts[-1] + parts.PROXY_RESERVED_FILES <= files
    assert counts[-1] % 100 == 0
    lowered = parts.sweep(files)
    assert [shape.connections for shape in lowered.shapes] == list(counts)
    assert any(f"{counts[-1]:,}" in note and f"{largest:,}" in note for note in lowered.notes)
    assert not any(f"{files:,}" in note for note in parts.SWEEP.notes)
    proxies = [target for target in lowered.targets if target.name != "direct"]
    assert [target.max_connections if isinstance(target, targets.Axoneme) else target.maxconn
            for target in proxies] == [counts[-1] + parts.PROXY_SPARE_CONNECTIONS] * 2


def test_the_other_parts_agents_keep_their_default_connection_limit():
    for part in parts.PARTS[:-1]:
        for target in part.targets:
            if isinstance(target, targets.Axoneme):
                config = policies.agent_config("/w", target.endpoints, "p", target.listener,
                                               target.port, target.upstream,
                                               target.max_connections)
                assert "limits" not in config


def test_resident_memory_is_read_from_proc_and_grows_with_what_a_process_holds():
    import os
    before = runner.resident_kib(os.getpid())
    held = bytearray(b"\x01" * (64 << 20))
    after = runner.resident_kib(os.getpid())
    assert after - before >= 60 * 1024, (before, after)
    assert held[-1] == 1


def test_memory_per_connection_is_the_growth_over_the_connections_in_kib():
    assert runner.memory_per_connection(1000, 3000, 200) == 10.0
    assert runner.memory_per_connection(1000, 1000, 20) == 0.0
    assert runner.memory_per_connection(500, 1500, 3) == 333.33


def test_entries_dropped_add_up_over_the_agents_unless_one_is_unknown():
    assert runner.add_counts("0", "3") == "3"
    assert runner.add_counts("2", "5") == "7"
    assert runner.add_counts("unknown", "5") == "unknown"


def test_summaries_take_the_median_memory_per_connection_only_where_runs_measured_it():
    summary = report.summaries(sweep_runs())
    haproxy = next(entry for entry in summary
                   if (entry["shape"], entry["target"]) == ("20 conns", "HAProxy"))
    assert haproxy[report.MEMORY] == 6.0, "the median of 4.0 and 8.0"
    without = report.summaries([report.run_record(1, "s", "HAProxy", result(10, 1))])
    assert report.MEMORY not in without[0]


def test_a_sweep_row_per_count_holds_each_targets_figures_and_axonemes_ratios_to_haproxy():
    runs = sweep_runs()
    summary = report.summaries(runs)
    found_ratios = report.ratios(runs, summary, ("HAProxy", "direct"), rounds=2)
    rows = report.sweep_rows(summary, found_ratios, SHAPES)
    assert [row["connections"] for row in rows] == list(SHAPES.values())
    for row in rows:
        scale = 1000 * row["connections"] ** 0.5 * 1.5  # the median of rounds 1 and 2
        assert row["ops_per_sec"] == {"direct": 3 * scale, "HAProxy": 2 * scale,
                                      "Axoneme": 1.5 * scale}
        assert row["ops_per_sec_ratio"] == round(1.5 / 2, 2)
        assert row["p99_us_ratio"] == round(60 / 80, 2)
        assert row[report.CPU] == {target: ops / 1000
                                   for target, ops in row["ops_per_sec"].items()}
        assert row[f"{report.CPU}_ratio"] == round(1.5 / 2, 2)
        assert row[report.MEMORY] == {"direct": 1.5, "HAProxy": 6.0, "Axoneme": 9.0}
        assert row["ratio"] == "Axoneme/HAProxy"


def test_a_count_at_which_haproxy_failed_has_no_ratio_and_no_haproxy_figures():
    runs = [report.run_record(1, "1 conns", "HAProxy", None),
            report.run_record(1, "1 conns", "Axoneme", result(10, 1, 5.0))]
    summary = report.summaries(runs)
    (row,) = report.sweep_rows(summary, report.ratios(runs, summary, ("HAProxy",), 1),
                               {"1 conns": 1})
    assert row["ops_per_sec_ratio"] is None
    assert row["ops_per_sec"] == {"HAProxy": None, "Axoneme": 10}
    assert row[report.MEMORY] == {"HAProxy": None, "Axoneme": 5.0}


def test_the_sweep_table_has_a_row_per_count_and_memory_columns_for_the_proxies_only():
    runs = sweep_runs()
    summary = report.summaries(runs)
    rows = report.sweep_rows(summary, report.ratios(runs, summary, ("HAProxy",), 2), SHAPES)
    head, rule, *body = report.sweep_table(rows)
    columns = [cell.strip() for cell in head.strip("|").split("|")]
    assert columns == ["connections", "direct ops/s", "HAProxy ops/s", "Axoneme ops/s",
                       "Axoneme/HAProxy ops/s", "Axoneme/HAProxy p99",
                       "Axoneme/HAProxy CPU/op", "HAProxy KiB/conn", "Axoneme KiB/conn"]
    assert rule.count("---:") == len(columns)
    assert len(body) == len(SHAPES)
    for line, row in zip(body, rows):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == len(columns)
        assert cells[0] == f"{row['connections']:,}"
        assert cells[2] == report.number(row["ops_per_sec"]["HAProxy"], 0)
        assert cells[4] == report.number(row["ops_per_sec_ratio"], 2)
        assert cells[-1] == report.number(row[report.MEMORY]["Axoneme"], 1)


def test_results_keep_the_sweep_in_a_section_of_its_own_with_its_rows_and_table_first():
    machine = {"cores": 2, "cpu": "Some CPU", "memory_gib": 8, "kernel": "6.1.0",
               "rustc": "rustc 1.0"}
    part = {"name": "sweep", "title": "Connection sweep", "load": "l", "notes": ["n"],
            "compare_with": ("HAProxy", "direct"), "servers": "s", "busy": 3,
            "runs": sweep_runs(), "connections": SHAPES,
            "access_log": {"lines": 10, "denied": 0, "dropped": "0", "bytes": 100}}
    results, text = report.build(machine, [part], seconds=3, rounds=2, warmup=1)
    rows = results["sweep"]["connection_sweep"]
    assert [row["connections"] for row in rows] == list(SHAPES.values())
    lines = text.split("\n")
    table = lines.index(report.sweep_table(rows)[0])
    assert lines[table:table + 2 + len(rows)] == report.sweep_table(rows)
    assert lines.index(report.SWEEP_NOTE) < lines.index(next(
        line for line in lines if line.startswith("| target | shape |")))


def png_size(path) -> tuple:
    """The PNG's signature and its width and height from the IHDR chunk."""
    data = path.read_bytes()
    signature, (length, kind) = data[:8], struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return signature, width, height


def test_the_figure_is_a_png_of_the_configured_size(tmp_path):
    runs = sweep_runs()
    summary = report.summaries(runs)
    rows = report.sweep_rows(summary, report.ratios(runs, summary, ("HAProxy",), 2), SHAPES)
    png = tmp_path / "sweep.png"
    plot.draw(rows, png)
    signature, width, height = png_size(png)
    assert signature == b"\x89PNG\r\n\x1a\n"
    assert (width, height) == (round(plot.WIDTH_INCHES * plot.DPI),
                               round(plot.HEIGHT_INCHES * plot.DPI))


def test_memory_is_drawn_on_a_logarithmic_axis_unless_a_proxys_figure_is_not_above_zero():
    proxies = ["HAProxy", "Axoneme"]
    # The server's own growth (direct) is not drawn: its zero must not flatten the proxies'.
    rows = [{report.MEMORY: {"direct": 0.0, "HAProxy": 24.0, "Axoneme": 3700.0}},
            {report.MEMORY: {"direct": 0.03, "HAProxy": 3.3, "Axoneme": None}}]
    assert plot.memory_scale(rows, proxies) == "log"
    rows[1][report.MEMORY]["HAProxy"] = 0.0
    assert plot.memory_scale(rows, proxies) == "linear"


def test_the_figure_is_drawn_from_results_json_and_a_file_without_a_sweep_is_refused(tmp_path):
    import json
    runs = sweep_runs()
    summary = report.summaries(runs)
    rows = report.sweep_rows(summary, report.ratios(runs, summary, ("HAProxy",), 2), SHAPES)
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"sweep": {"connection_sweep": rows}}))
    png = tmp_path / "sweep.png"
    assert plot.main([str(results), str(png)]) == 0
    assert png_size(png)[0] == b"\x89PNG\r\n\x1a\n"
    results.write_text(json.dumps({"summary": []}))
    assert plot.main([str(results), str(tmp_path / "other.png")]) == 1
    assert not (tmp_path / "other.png").exists()


def test_the_open_file_limit_is_raised_as_far_as_allowed_and_the_limit_got_is_in_force():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert runner.raise_open_file_limit(1) == soft, "a limit high enough is left as it is"
    got = runner.raise_open_file_limit(parts.OPEN_FILES)
    assert got >= min(parts.OPEN_FILES, hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == got
