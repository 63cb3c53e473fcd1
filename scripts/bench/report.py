"""The benchmark's results from its runs: each figure's median over the rounds and the spread of
ops/s, Axoneme's ratios to the other targets, the connection sweep's rows (a connection count
each), the Markdown tables and the document written to results.json.

Pure functions over plain data (the load generator's JSON per run, and what the runner noted
about machine and servers): they read no files, run nothing and print nothing, so that
tests/bench checks them on fixed results."""

import statistics

# The load generator's figures the tables show, with their column names.
METRICS = [("ops_per_sec", "ops/s"), ("p50_us", "p50"), ("p99_us", "p99"), ("p99_9_us", "p99.9")]

# The bytes a second the load carried, both ways, in 10^6 bytes (the Kafka load reports it);
# a part's tables have the column when its runs have the figure.
THROUGHPUT = "mb_per_sec"

# The CPU time the target's process used per request answered (from /proc, user and system,
# all threads, over the measured time): less moved by other work on the machine than ops/s.
CPU = "cpu_us_per_op"

# The resident memory a connection cost the target, in KiB (the connection sweep measures it):
# the highest sample during a run less the target's idle value before it, over the connections.
MEMORY = "rss_kib_per_connection"

# The connection sweep's ratios: this target's figures over the other's.
SWEEP_SUBJECT = "Axoneme"
SWEEP_OTHER = "HAProxy"

CPU_NOTE = (
    "CPU µs/op: the CPU time (user and system, all threads, from /proc) the target's own "
    "process used in the measured time, per request answered; for `direct`, the server's."
)

LATENCY_NOTE = (
    "Closed-loop load: a connection sends a request when a reply frees a place in its pipeline. "
    "Latency is from a request's write to its whole reply, in microseconds."
)


def shared_notes(cores: int, rounds: int) -> list:
    """The notes every part's tables end with, before the part's own."""
    return [
        f"All on one {cores}-core machine over 127.0.0.1: the load generator (tokio, one worker "
        "per core), the server and the proxy under test compete for the same cores; nothing is "
        "pinned.",
        "Targets run one after another; only the one under test has load. Each shape runs "
        f"{rounds} round(s) over every target, the targets' order rotating by one place a round; "
        "each figure is the median over the rounds, and ops/s also shows the lowest and highest "
        "round.",
    ]


def run_record(round_number: int, shape: str, target: str, result: dict | None) -> dict:
    """A run as results.json lists it: its round, shape and target, then the load generator's
    result (with its `target`, the address, as `address`), or `failed` when there is none."""
    run = dict(result) if result else {"failed": True}
    run["address"] = run.pop("target", None)
    return {"round": round_number, "shape": shape, "target": target, **run}


def summaries(runs: list) -> list:
    """Per shape and target, in the order of their first run: each figure's median over the
    rounds that did not fail, the lowest and highest ops/s, and the errors of every round."""
    found = []
    for shape, target in dict.fromkeys((run["shape"], run["target"]) for run in runs):
        mine = [run for run in runs if run["shape"] == shape and run["target"] == target]
        good = [run for run in mine if not run.get("failed")]
        summary = {"shape": shape, "target": target, "rounds": len(good),
                   "failed": len(mine) - len(good)}
        if good:
            for key, _ in METRICS:
                summary[key] = statistics.median(run[key] for run in good)
            summary["ops_per_sec_min"] = min(run["ops_per_sec"] for run in good)
            summary["ops_per_sec_max"] = max(run["ops_per_sec"] for run in good)
            summary["errors"] = sum(run["errors"] for run in good)
            cpu = [run[CPU] for run in good if run.get(CPU) is not None]
            summary[CPU] = statistics.median(cpu) if cpu else None
            for optional in (THROUGHPUT, MEMORY):
                if all(optional in run for run in good):
                    summary[optional] = statistics.median(run[optional] for run in good)
        found.append(summary)
    return found


def ratios(runs: list, summary: list, others: tuple, rounds: int,
           subject: str = "Axoneme") -> list:
    """The `subject` target's median figures (CPU per request too, when both have it) over each
    of the `others` targets', per shape, with the lowest and highest of the per-round ops/s
    ratios: a round's runs are minutes apart at most, so its ratio is less moved by drift on
    the machine than the medians are."""
    def find(shape, target):
        for entry in summary:
            if entry["shape"] == shape and entry["target"] == target and entry["rounds"]:
                return entry
        return None

    def ops(shape, target, round_number):
        for run in runs:
            if (run["shape"], run["target"], run["round"]) == (shape, target, round_number):
                return None if run.get("failed") else run["ops_per_sec"]
        return None

    found = []
    for shape in dict.fromkeys(entry["shape"] for entry in summary):
        figures = find(shape, subject)
        for other in others:
            base = find(shape, other)
            if not (figures and base):
                continue
            ratio = {"shape": shape, "ratio": f"{subject}/{other}"}
            throughput = [THROUGHPUT] if THROUGHPUT in figures and THROUGHPUT in base else []
            for key in [key for key, _ in METRICS] + [CPU] + throughput:
                mine, theirs = figures.get(key), base.get(key)
                ratio[key] = round(mine / theirs, 2) if mine is not None and theirs else None
            per_round = []
            for round_number in range(1, rounds + 1):
                mine, theirs = ops(shape, subject, round_number), ops(shape, other, round_number)
                if mine and theirs:
                    per_round.append(mine / theirs)
            if per_round:
                ratio["ops_per_sec_rounds_min"] = round(min(per_round), 2)
                ratio["ops_per_sec_rounds_max"] = round(max(per_round), 2)
            found.append(ratio)
    return found


def number(value, digits: int = 1) -> str:
    """`value` with thousands separators and `digits` decimals; "-" for none."""
    return "-" if value is None else f"{value:,.{digits}f}"


def tables(section: dict) -> list:
    """The Markdown lines of a part's figures, ratios, access log and notes; with a MB/s
    column after ops/s when the part's runs measured it."""
    throughput = any(THROUGHPUT in entry for entry in section["summary"])
    mb_head, mb_rule = (" MB/s |", "---:|") if throughput else ("", "")
    md = [
        f"| target | shape | ops/s |{mb_head} ops/s lowest–highest | CPU µs/op | p50 µs "
        "| p99 µs | p99.9 µs | errors |",
        f"|---|---|---:|{mb_rule}---:|---:|---:|---:|---:|---:|",
    ]
    for entry in section["summary"]:
        if not entry["rounds"]:
            blanks = " |" * (6 + throughput)
            md.append(f"| {entry['target']} | {entry['shape']} | failed |{blanks}")
            continue
        failed = f" ({entry['failed']} failed)" if entry["failed"] else ""
        mb = f" {number(entry.get(THROUGHPUT), 1)} |" if throughput else ""
        md.append(
            f"| {entry['target']} | {entry['shape']} | {number(entry['ops_per_sec'], 0)}{failed} |"
            f"{mb} {number(entry['ops_per_sec_min'], 0)}–{number(entry['ops_per_sec_max'], 0)} | "
            f"{number(entry.get(CPU), 2)} | {number(entry['p50_us'])} | "
            f"{number(entry['p99_us'])} | {number(entry['p99_9_us'])} | {entry['errors']} |"
        )
    md += [
        "",
        "Ratios of the medians (ops/s" + (" and MB/s" if throughput else "") + ": above 1 is "
        "faster; CPU and latency: above 1 is more), and the lowest and highest ops/s ratio of a "
        "single round:",
        "",
        f"| shape | ratio | ops/s |{mb_head} ops/s per round | CPU/op | p50 | p99 | p99.9 |",
        f"|---|---|---:|{mb_rule}---:|---:|---:|---:|---:|",
    ]
    for ratio in section["ratios"]:
        spread = "-"
        if "ops_per_sec_rounds_min" in ratio:
            lowest, highest = ratio["ops_per_sec_rounds_min"], ratio["ops_per_sec_rounds_max"]
            spread = f"{lowest:.2f}–{highest:.2f}"
        latencies = " | ".join(number(ratio[key], 2) for key, _ in METRICS[1:])
        mb = f" {number(ratio.get(THROUGHPUT), 2)} |" if throughput else ""
        md.append(f"| {ratio['shape']} | {ratio['ratio']} | {number(ratio['ops_per_sec'], 2)} |"
                  f"{mb} {spread} | {number(ratio.get(CPU), 2)} | {latencies} |")
    log = section["axoneme_access_log"]
    md += [
        "",
        f"Axoneme access log: {log['lines']:,} lines ({log['bytes'] / 2**20:,.0f} MiB), "
        f"{log['denied']} denied, {log['dropped']} dropped by a writer that fell behind.",
    ]
    for name, log in section.get("other_access_logs", {}).items():
        md.append(f"{name} access log: {log['lines']:,} lines ({log['bytes'] / 2**20:,.0f} MiB), "
                  f"{log['denied']} denied, written by the module's writer thread (what it "
                  "dropped, if anything, is in the server's log).")
    md.append("")
    md += [f"- {note}" for note in section["notes"]]
    return md


def sweep_rows(summary: list, found_ratios: list, connections: dict) -> list:
    """The connection sweep's rows, one per shape in `connections` ({shape: connection count},
    in order): each target's median ops/s, p99, CPU per request and memory per connection
    (None where every round failed or it was not measured), and SWEEP_SUBJECT's ratios to
    SWEEP_OTHER (None where either side has no figure)."""
    rows = []
    for shape, count in connections.items():
        mine = [entry for entry in summary if entry["shape"] == shape]
        ratio = next((entry for entry in found_ratios if entry["shape"] == shape
                      and entry["ratio"] == f"{SWEEP_SUBJECT}/{SWEEP_OTHER}"), {})
        row = {"connections": count, "shape": shape}
        for key in ("ops_per_sec", "p99_us", CPU, MEMORY):
            row[key] = {entry["target"]: entry.get(key) for entry in mine}
        row["ratio"] = f"{SWEEP_SUBJECT}/{SWEEP_OTHER}"
        for key in ("ops_per_sec", "p99_us", CPU):
            row[f"{key}_ratio"] = ratio.get(key)
        rows.append(row)
    return rows


def sweep_table(rows: list) -> list:
    """The Markdown lines of the connection sweep's table: per connection count, every target's
    ops/s, SWEEP_SUBJECT's ratios to SWEEP_OTHER, and every proxy's memory per connection."""
    targets = list(dict.fromkeys(target for row in rows for target in row["ops_per_sec"]))
    proxies = [target for target in targets if target != "direct"]
    ratio = f"{SWEEP_SUBJECT}/{SWEEP_OTHER}"
    head = (["connections"] + [f"{target} ops/s" for target in targets]
            + [f"{ratio} ops/s", f"{ratio} p99", f"{ratio} CPU/op"]
            + [f"{target} KiB/conn" for target in proxies])
    md = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for row in rows:
        cells = ([f"{row['connections']:,}"]
                 + [number(row["ops_per_sec"].get(target), 0) for target in targets]
                 + [number(row[f"{key}_ratio"], 2) for key in ("ops_per_sec", "p99_us", CPU)]
                 + [number(row[MEMORY].get(target), 1) for target in proxies])
        md.append("| " + " | ".join(cells) + " |")
    return md


SWEEP_NOTE = (
    "Connection sweep: each figure is the median over the rounds; KiB/conn is the proxy's "
    "resident memory at its highest during a run less its idle value just before it, over the "
    "connections; target/bench/sweep.png plots the ratio and the memory against the connection "
    "count."
)


def machine_line(machine: dict) -> str:
    return (f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, "
            f"Linux {machine['kernel']}, {machine['rustc']}.")


def section(part: dict, cores: int, rounds: int) -> dict:
    """A measured part as results.json has it: `part` holds what the runner noted (`servers`,
    `busy`, `runs`, `access_log`, and `other_access_logs` when it ran Axoneme inside another
    server) and what the parts table says (`notes`, `compare_with`, `other_ratios`: pairs
    of a target and the targets it is divided by, and for the connection sweep `connections`:
    {shape: connection count})."""
    summary = summaries(part["runs"])
    found_ratios = ratios(part["runs"], summary, part["compare_with"], rounds)
    for subject, others in part.get("other_ratios", ()):
        found_ratios += ratios(part["runs"], summary, others, rounds, subject)
    found = {
        "servers": part["servers"],
        "cpu_busy_percent_before": part["busy"],
        "notes": shared_notes(cores, rounds) + part["notes"] + [CPU_NOTE, LATENCY_NOTE],
        "runs": part["runs"],
        "summary": summary,
        "axoneme_access_log": part["access_log"],
        "ratios": found_ratios,
    }
    if part.get("other_access_logs"):
        found["other_access_logs"] = part["other_access_logs"]
    if part.get("connections"):
        found["connection_sweep"] = sweep_rows(summary, found_ratios, part["connections"])
    return found


def heading(part: dict, found: dict, seconds: int, rounds: int, warmup: int) -> list:
    """The Markdown lines that open a part: its title, servers and load."""
    return [
        "",
        f"## {part['title']}",
        "",
        f"Servers: {found['servers']}.",
        f"Load: {part['load']}, {warmup} s warm-up, {seconds} s measured per run, "
        f"{rounds} round(s). "
        f"Cores busy with other work just before the runs: {found['cpu_busy_percent_before']}%.",
        "",
    ]


def build(machine: dict, parts: list, seconds: int, rounds: int, warmup: int) -> tuple:
    """results.json's document and results.md's text from the `machine` and the measured
    `parts` (in the order they ran; see `section` for what each holds)."""
    machine = dict(machine)
    results = {
        "seconds": seconds,
        "rounds": rounds,
        "command": f"BENCH_SECONDS={seconds} BENCH_ROUNDS={rounds} scripts/bench.sh",
        "machine": machine,
    }
    md = [machine_line(machine)]
    for part in parts:
        found = section(part, machine["cores"], rounds)
        md += heading(part, found, seconds, rounds, warmup)
        if "connection_sweep" in found:
            md += sweep_table(found["connection_sweep"]) + ["", SWEEP_NOTE, ""]
        md += tables(found)
        if part["name"] == "memcached":
            # memcached's section stands at the top level, its servers and busy cores under
            # `machine`: so results.json had it before the Cassandra part came, and older
            # results files are read the same way.
            machine["servers"] = found.pop("servers")
            machine["cpu_busy_percent_before"] = found.pop("cpu_busy_percent_before")
            results.update(found)
        else:
            results[part["name"]] = found
    return results, "\n".join(md) + "\n"
