"""The benchmark's report on fixed runs: medians and spread, ratios and their per-round spread,
failed rounds, number formatting, the Markdown tables and the layout of results.json."""

import copy

from bench import report


def result(ops, p50=100.0, p99=200.0, p999=300.0, errors=0, cpu=10.0):
    """A load generator's JSON result with the figures the report reads, and the runner's CPU
    time per request (None: not measured)."""
    return {"target": "127.0.0.1:1", "connections": 8, "pipeline": 32, "ops_per_sec": ops,
            "p50_us": p50, "p99_us": p99, "p99_9_us": p999, "errors": errors,
            "cpu_us_per_op": cpu}


def runs_of(figures):
    """Run records from {(shape, target): [result or None per round]}."""
    runs = []
    for (shape, target), results in figures.items():
        for round_number, found in enumerate(results, start=1):
            runs.append(report.run_record(round_number, shape, target, found))
    return runs


# Three rounds of one shape at three targets. Axoneme's ops/s over HAProxy's, round by round:
# 45/50 = 0.9, 66/60 = 1.1, 30/40 = 0.75.
RUNS = runs_of({
    ("small", "direct"): [result(100, p50=10), result(120, p50=30), result(110, p50=20)],
    ("small", "HAProxy"): [result(50, p99=400), result(60, p99=500), result(40, p99=600)],
    ("small", "Axoneme"): [result(45, errors=1, cpu=8.0), result(66, errors=2, cpu=None),
                           result(30, cpu=7.0)],
})


def test_a_run_record_names_round_shape_and_target_and_keeps_the_address():
    run = report.run_record(2, "small", "HAProxy", result(50))
    assert list(run)[:3] == ["round", "shape", "target"]
    assert (run["round"], run["shape"], run["target"]) == (2, "small", "HAProxy")
    assert run["address"] == "127.0.0.1:1"
    assert run["ops_per_sec"] == 50


def test_a_failed_run_is_recorded_as_failed():
    assert report.run_record(1, "small", "Axoneme", None) == {
        "round": 1, "shape": "small", "target": "Axoneme", "failed": True, "address": None}


def test_each_figure_is_the_median_over_the_rounds_with_the_spread_of_ops():
    direct, haproxy, axoneme = report.summaries(RUNS)
    assert direct == {"shape": "small", "target": "direct", "rounds": 3, "failed": 0,
                      "ops_per_sec": 110, "p50_us": 20, "p99_us": 200.0, "p99_9_us": 300.0,
                      "ops_per_sec_min": 100, "ops_per_sec_max": 120, "errors": 0,
                      "cpu_us_per_op": 10.0}
    assert (haproxy["ops_per_sec"], haproxy["p99_us"]) == (50, 500)
    assert axoneme["errors"] == 3, "the errors of every round"
    assert axoneme["cpu_us_per_op"] == 7.5, "the median of the rounds that measured it"


def test_without_a_cpu_figure_in_any_round_there_is_none_and_no_cpu_ratio():
    runs = runs_of({("small", "HAProxy"): [result(50, cpu=None)],
                    ("small", "Axoneme"): [result(60)]})
    haproxy, _ = report.summaries(runs)
    assert haproxy["cpu_us_per_op"] is None
    (ratio,) = report.ratios(runs, report.summaries(runs), ("HAProxy",), rounds=1)
    assert ratio["cpu_us_per_op"] is None


def test_summaries_keep_the_order_of_first_runs():
    runs = runs_of({("big", "Axoneme"): [result(1)], ("small", "direct"): [result(2)],
                    ("big", "direct"): [result(3)]})
    assert [(s["shape"], s["target"]) for s in report.summaries(runs)] == [
        ("big", "Axoneme"), ("small", "direct"), ("big", "direct")]


def test_failed_rounds_are_counted_and_left_out_of_the_medians():
    runs = runs_of({("small", "direct"): [result(100), None, result(300)],
                    ("small", "HAProxy"): [None, None]})
    partly, wholly = report.summaries(runs)
    assert (partly["rounds"], partly["failed"], partly["ops_per_sec"]) == (2, 1, 200)
    assert wholly == {"shape": "small", "target": "HAProxy", "rounds": 0, "failed": 2}


def test_ratios_divide_axoneme_by_each_other_target_with_the_per_round_spread():
    summary = report.summaries(RUNS)
    by_haproxy, by_direct = report.ratios(RUNS, summary, ("HAProxy", "direct"), rounds=3)
    assert by_haproxy == {"shape": "small", "ratio": "Axoneme/HAProxy", "ops_per_sec": 0.9,
                          "p50_us": 1.0, "p99_us": 0.4, "p99_9_us": 1.0, "cpu_us_per_op": 0.75,
                          "ops_per_sec_rounds_min": 0.75, "ops_per_sec_rounds_max": 1.1}
    assert by_direct["ops_per_sec"] == round(45 / 110, 2)
    assert (by_direct["ops_per_sec_rounds_min"], by_direct["ops_per_sec_rounds_max"]) == (
        round(30 / 110, 2), round(66 / 120, 2))


def test_a_round_in_which_either_side_failed_gives_no_per_round_ratio():
    runs = runs_of({("small", "HAProxy"): [result(50), None],
                    ("small", "Axoneme"): [None, result(60)]})
    (ratio,) = report.ratios(runs, report.summaries(runs), ("HAProxy",), rounds=2)
    assert ratio["ops_per_sec"] == 1.2
    assert "ops_per_sec_rounds_min" not in ratio


def test_no_ratio_to_a_target_without_figures_and_none_over_a_zero():
    runs = runs_of({("small", "HAProxy"): [result(50, p50=0)], ("small", "direct"): [None],
                    ("small", "Axoneme"): [result(60)]})
    (ratio,) = report.ratios(runs, report.summaries(runs), ("HAProxy", "direct"), rounds=1)
    assert ratio["ratio"] == "Axoneme/HAProxy"
    assert ratio["p50_us"] is None


def test_numbers_have_thousands_separators_and_none_is_a_dash():
    assert report.number(1234567.5, 0) == "1,234,568"
    assert report.number(1234.56) == "1,234.6"
    assert report.number(0.955, 2) == "0.95"
    assert report.number(None, 2) == "-"


def section(runs=RUNS):
    summary = report.summaries(runs)
    return {"summary": summary,
            "ratios": report.ratios(runs, summary, ("HAProxy", "direct"), rounds=3),
            "axoneme_access_log": {"lines": 1234567, "denied": 0, "dropped": "0",
                                   "bytes": 3 * 2**20},
            "notes": ["first note", "second note"]}


def test_the_tables_have_a_row_per_target_and_shape_then_a_row_per_ratio():
    lines = report.tables(section())
    figures, ratios, log, notes = lines[0:5], lines[8:12], lines[13], lines[15:]
    assert [line.count("|") for line in figures] == [10] * 5
    assert figures[2:] == [
        "| direct | small | 110 | 100–120 | 10.00 | 20.0 | 200.0 | 300.0 | 0 |",
        "| HAProxy | small | 50 | 40–60 | 10.00 | 100.0 | 500.0 | 300.0 | 0 |",
        "| Axoneme | small | 45 | 30–66 | 7.50 | 100.0 | 200.0 | 300.0 | 3 |",
    ]
    assert lines[6].startswith("Ratios of the medians")
    assert [line.count("|") for line in ratios] == [9] * 4
    assert ratios[2:] == [
        "| small | Axoneme/HAProxy | 0.90 | 0.75–1.10 | 0.75 | 1.00 | 0.40 | 1.00 |",
        "| small | Axoneme/direct | 0.41 | 0.27–0.55 | 0.75 | 5.00 | 1.00 | 1.00 |",
    ]
    assert log == ("Axoneme access log: 1,234,567 lines (3 MiB), 0 denied, 0 dropped by a "
                   "writer that fell behind.")
    assert notes == ["- first note", "- second note"]
    assert [lines[i] for i in (5, 7, 12, 14)] == [""] * 4


def test_a_target_whose_every_round_failed_shows_failed_and_partial_failures_are_counted():
    runs = runs_of({("small", "direct"): [None], ("small", "HAProxy"): [result(50), None],
                    ("small", "Axoneme"): [result(45), result(55)]})
    lines = report.tables(section(runs))
    assert "| direct | small | failed | | | | | | |" in lines
    assert ("| HAProxy | small | 50 (1 failed) | 50–50 | 10.00 | 100.0 | 200.0 | 300.0 | 0 |"
            in lines)
    assert "| small | Axoneme/HAProxy | 1.00 | 0.90–0.90 | 1.00 | 1.00 | 1.00 | 1.00 |" in lines


MACHINE = {"cores": 2, "cpu": "Some CPU", "memory_gib": 8, "kernel": "6.1.0", "rustc": "rustc 1.0"}


def measured(name, title, load):
    return {"name": name, "title": title, "load": load, "notes": [f"{name} note"],
            "compare_with": ("HAProxy", "direct"), "servers": f"{name} 1.0",
            "busy": 4, "runs": RUNS,
            "access_log": {"lines": 10, "denied": 0, "dropped": "0", "bytes": 100}}


def test_results_keep_memcached_at_the_top_level_and_cassandra_in_a_section_of_its_own():
    machine = copy.deepcopy(MACHINE)
    results, _ = report.build(machine, [measured("memcached", "memcached", "m"),
                                        measured("cassandra", "Cassandra", "c")],
                              seconds=10, rounds=3, warmup=1)
    assert machine == MACHINE, "the machine given is left as it was"
    assert list(results) == ["seconds", "rounds", "command", "machine", "notes", "runs",
                             "summary", "axoneme_access_log", "ratios", "cassandra"]
    assert results["command"] == "BENCH_SECONDS=10 BENCH_ROUNDS=3 scripts/bench.sh"
    assert results["machine"] == {**MACHINE, "servers": "memcached 1.0",
                                  "cpu_busy_percent_before": 4}
    assert list(results["cassandra"]) == ["servers", "cpu_busy_percent_before", "notes", "runs",
                                          "summary", "axoneme_access_log", "ratios"]
    notes = results["cassandra"]["notes"]
    assert notes[:2] == report.shared_notes(2, 3)
    assert notes[2:] == ["cassandra note", report.CPU_NOTE, report.LATENCY_NOTE]


def test_the_markdown_heads_each_part_with_its_servers_and_load():
    _, text = report.build(MACHINE, [measured("cassandra", "Cassandra", "some load")],
                           seconds=10, rounds=3, warmup=1)
    lines = text.split("\n")
    assert lines[:7] == [
        "Machine: 2 cores (Some CPU), 8 GiB, Linux 6.1.0, rustc 1.0.",
        "",
        "## Cassandra",
        "",
        "Servers: cassandra 1.0.",
        "Load: some load, 1 s warm-up, 10 s measured per run, 3 round(s). Cores busy with other "
        "work just before the runs: 4%.",
        "",
    ]
    assert lines[7].startswith("| target | shape |")
    assert text.endswith(f"- {report.LATENCY_NOTE}\n")


def with_throughput(found, mb):
    return {**found, "mb_per_sec": mb}


def test_runs_that_measure_mb_per_sec_get_its_median_ratio_and_a_column():
    runs = runs_of({
        ("produce", "direct"): [with_throughput(result(100), 10.0),
                                with_throughput(result(120), 14.0), None],
        ("produce", "Axoneme"): [with_throughput(result(50), 5.0),
                                 with_throughput(result(60), 6.0),
                                 with_throughput(result(70), 9.0)],
    })
    found = section(runs)
    direct, axoneme = found["summary"]
    assert (direct["mb_per_sec"], axoneme["mb_per_sec"]) == (12.0, 6.0)
    (ratio,) = found["ratios"]
    assert ratio["mb_per_sec"] == 0.5
    lines = report.tables(found)
    assert lines[:2] == [
        "| target | shape | ops/s | MB/s | ops/s lowest–highest | CPU µs/op | p50 µs | p99 µs "
        "| p99.9 µs | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    assert ("| direct | produce | 110 (1 failed) | 12.0 | 100–120 | 10.00 | 100.0 | 200.0 | "
            "300.0 | 0 |" in lines)
    assert ("| shape | ratio | ops/s | MB/s | ops/s per round | CPU/op | p50 | p99 | p99.9 |"
            in lines)
    assert ("| produce | Axoneme/direct | 0.55 | 0.50 | 0.50–0.50 | 1.00 | 1.00 | 1.00 | 1.00 |"
            in lines)


def test_runs_without_mb_per_sec_have_no_such_figure_nor_column():
    found = section(RUNS)
    assert all("mb_per_sec" not in entry for entry in found["summary"] + found["ratios"])
    assert "MB/s" not in "\n".join(report.tables(found))


def test_a_failed_target_row_has_as_many_cells_as_the_header_with_or_without_mb_per_sec():
    for extra in ({}, {"mb_per_sec": 1.0}):
        runs = runs_of({("s", "direct"): [None], ("s", "Axoneme"): [{**result(45), **extra}]})
        lines = report.tables(section(runs))
        failed = next(line for line in lines if "failed" in line)
        assert failed.count("|") == lines[0].count("|")


def test_other_ratios_divide_their_own_target_and_its_access_log_gets_a_line():
    # Envoy + Axoneme's ops/s over Envoy's, round by round: 40/50 = 0.8, 30/60 = 0.5.
    runs = runs_of({
        ("small", "HAProxy"): [result(80), result(100)],
        ("small", "Axoneme"): [result(60), result(70)],
        ("small", "Envoy"): [result(50, cpu=4.0), result(60, cpu=6.0)],
        ("small", "Envoy + Axoneme"): [result(40, cpu=10.0), result(30, cpu=5.0)],
    })
    part = {**measured("memcached", "memcached", "m"), "runs": runs,
            "other_ratios": (("Envoy + Axoneme", ("Envoy", "Axoneme")), ("Envoy", ("HAProxy",))),
            "other_access_logs": {"Envoy + Axoneme": {"lines": 2048, "denied": 1,
                                                      "bytes": 2**20}}}
    found = report.section(part, cores=2, rounds=2)
    by_ratio = {ratio["ratio"]: ratio for ratio in found["ratios"]}
    assert list(by_ratio) == ["Axoneme/HAProxy", "Envoy + Axoneme/Envoy",
                              "Envoy + Axoneme/Axoneme", "Envoy/HAProxy"]
    by_envoy = by_ratio["Envoy + Axoneme/Envoy"]
    assert (by_envoy["ops_per_sec"], by_envoy["cpu_us_per_op"]) == (round(35 / 55, 2), 1.5)
    assert (by_envoy["ops_per_sec_rounds_min"], by_envoy["ops_per_sec_rounds_max"]) == (0.5, 0.8)
    assert by_ratio["Envoy/HAProxy"]["ops_per_sec"] == round(55 / 90, 2)
    assert found["other_access_logs"] == part["other_access_logs"]
    assert ("Envoy + Axoneme access log: 2,048 lines (1 MiB), 1 denied, written by the module's "
            "writer thread (what it dropped, if anything, is in the server's log)."
            in report.tables(found))


def test_a_part_without_axoneme_inside_another_server_has_no_other_access_log():
    found = report.section(measured("memcached", "memcached", "m"), cores=2, rounds=3)
    assert "other_access_logs" not in found
