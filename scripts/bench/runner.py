"""Runs a part of the benchmark: starts its targets (once, or afresh for every round of every
shape when the part measures memory per connection), drives every load shape at every target in
rounds, the targets' order rotating from round to round, and notes each run's result, the
target's CPU time and resident memory, the servers' versions, how busy the cores were before
the runs and what the agent logged; describes the machine; and raises the open-file limit its
servers and load generator inherit.

It prints progress as it goes and computes no figures: medians, ratios and tables are the
report's."""

import contextlib
import json
import os
import platform
import resource
import subprocess
import time

from . import report
from .targets import Axoneme, EnvoyAxoneme, Setup

# Seconds of load before each measured run.
WARMUP_SECONDS = 1

# Seconds between two samples of a target's resident memory during a run.
RSS_INTERVAL = 0.1


def rotation(items: tuple, round_number: int) -> list:
    """`items` in the order of round `round_number` (from 1): rotated by one place a round, so
    that none always runs first or last while the machine drifts."""
    count = len(items)
    return [items[(i + round_number - 1) % count] for i in range(count)]


def raise_open_file_limit(files: int) -> int:
    """Raises this process's open-file limit to `files`, for the servers and the load generator
    that inherit it (a proxy holds two files a connection): the hard limit too where this user
    may (root with CAP_SYS_RESOURCE), else the soft one up to the hard. Returns the limit it
    got, and says so when it is below `files`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= files:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, max(hard, files)))
        return files
    except (ValueError, OSError) as refused:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        print(f"the open-file limit stays at {hard:,} (hard), below the {files:,} asked for: "
              f"{refused}", flush=True)
        return hard


def cpu_times() -> tuple:
    """The time all cores have been busy and idle since boot, in ticks."""
    with open("/proc/stat") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = ticks[:7]
    return user + nice + system + irq + softirq, idle + iowait


def busy_percent(seconds: float = 2) -> int:
    """How busy the cores are over `seconds`, in percent: other work on the machine skews every
    figure, so the report says how much there was just before the runs."""
    busy_start, idle_start = cpu_times()
    time.sleep(seconds)
    busy_end, idle_end = cpu_times()
    busy, idle = busy_end - busy_start, idle_end - idle_start
    return busy * 100 // (busy + idle + 1)


def machine(cores: int) -> dict:
    """The machine the figures were measured on, as the report heads them."""
    def first(path, prefix):
        with open(path) as lines:
            return next((line.split(":", 1)[1].strip() for line in lines
                         if line.startswith(prefix)), None)

    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout
    memory_kib = first("/proc/meminfo", "MemTotal:")
    return {
        "cores": cores,
        "cpu": first("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "memory_gib": round(int(memory_kib.split()[0]) / 1024 / 1024),
        "kernel": platform.release(),
        "rustc": rustc.strip(),
    }


def process_cpu_seconds(pid: int) -> float:
    """The CPU time process `pid` has used so far, user and system, all its threads."""
    with open(f"/proc/{pid}/stat") as stat:
        # Past the command name's closing parenthesis, utime and stime are the 12th and 13th.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_kib(pid: int) -> int:
    """The resident memory of process `pid` (VmRSS of /proc/PID/status), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ValueError(f"/proc/{pid}/status has no VmRSS line: the process has exited")


def memory_per_connection(idle_kib: int, peak_kib: int, connections: int) -> float:
    """KiB of resident memory a connection cost, to two decimals: the highest sample during a
    run less the process's idle value before it, over the run's connections."""
    return round((peak_kib - idle_kib) / connections, 2)


def cpu_per_op(cpu_seconds: float, ops: int) -> float | None:
    """Microseconds of CPU per request answered, to two decimals; None without requests."""
    return round(cpu_seconds * 1e6 / ops, 2) if ops else None


def load(loadgen, part, shape, target, seconds: int, pid: int):
    """One run of the load generator at `target`, whose process is `pid`: its JSON result,
    with the CPU time the target used per request answered in the measured time
    (`cpu_us_per_op`, from /proc after the warm-up to the end), or None when it failed. When
    the part measures memory per connection, the result also has the target's resident memory
    just before the run (`rss_idle_kib`), its highest sample from the warm-up on
    (`rss_peak_kib`) and what that makes per connection (`rss_kib_per_connection`)."""
    args = [loadgen, part.protocol, "--source", shape.source or part.source, *shape.args(),
            *part.load_args,
            "--target", f"127.0.0.1:{target.port}", "--duration", str(seconds),
            "--warmup", str(WARMUP_SECONDS), "--json"]
    idle = resident_kib(pid) if part.memory_per_connection else None
    with subprocess.Popen([str(arg) for arg in args], stdout=subprocess.PIPE, text=True) as run:
        time.sleep(WARMUP_SECONDS)
        start = process_cpu_seconds(pid)
        # A run that hangs fails rather than holding up the rest of the benchmark.
        give_up = time.monotonic() + seconds + 60
        peak = idle
        while run.poll() is None and time.monotonic() < give_up:
            if idle is not None:
                peak = max(peak, resident_kib(pid))
            # The load generator prints one line at the end, which the pipe holds meanwhile.
            time.sleep(RSS_INTERVAL if idle is not None else 0.5)
        if run.poll() is None:
            run.kill()
            run.communicate()
            return None
        out, _ = run.communicate()
        used = process_cpu_seconds(pid) - start
    if run.returncode != 0:
        return None
    result = json.loads(out)
    result["cpu_us_per_op"] = cpu_per_op(used, result["ops"])
    if idle is not None:
        result["rss_idle_kib"] = idle
        result["rss_peak_kib"] = peak
        result["rss_kib_per_connection"] = memory_per_connection(idle, peak, shape.connections)
    return result


def prepare(loadgen, part, target) -> None:
    """Runs the load generator with the part's `prepare` arguments at `target`, if it has any:
    what the loads need written before they run."""
    if part.prepare:
        print(f"preparing: {' '.join(part.prepare)} -> 127.0.0.1:{target.port}", flush=True)
        subprocess.run([str(loadgen), *part.prepare, "--target", f"127.0.0.1:{target.port}"],
                       check=True, stdout=subprocess.DEVNULL)


@contextlib.contextmanager
def started(part, setup: Setup):
    """The part's targets started in order, as {name: pid} while the block runs; every one that
    started stops, last first, when it ends."""
    processes = []
    try:
        for target in part.targets:
            processes.append(target.start(setup))
        yield {target.name: process.process.pid
               for target, process in zip(part.targets, processes)}
    finally:
        for process in reversed(processes):
            process.stop()


def run_round(loadgen, part, shape, round_number: int, seconds: int, pids: dict) -> list:
    """One round of `shape`: a run at every target, in the round's order, as run records."""
    runs = []
    for target in rotation(part.targets, round_number):
        print(f"== round {round_number}: {shape.name} -> {target.name} "
              f"(127.0.0.1:{target.port})", flush=True)
        result = load(loadgen, part, shape, target, seconds, pids[target.name])
        compact = json.dumps(result, separators=(",", ":"))
        print(f"   {compact}" if result else "   failed", flush=True)
        runs.append(report.run_record(round_number, shape.name, target.name, result))
    return runs


def run_part(part, setup: Setup, loadgen, seconds: int, rounds: int, threads: int) -> dict:
    """Runs `part` with its targets set up in `setup`; returns what the report takes of it."""
    words = {"cores": setup.cores, "threads": threads}
    servers = "; ".join(version for target in part.targets if (version := target.version()))
    print(f"\n{part.intro.format(**words)}\n")
    agent = next(target for target in part.targets if target.name == Axoneme.name)
    with started(part, setup) as pids:
        prepare(loadgen, part, part.targets[0])
        busy = busy_percent()
        print(f"cores busy before the runs: {busy}%")
        runs = [] if part.memory_per_connection else [
            run for shape in part.shapes for round_number in range(1, rounds + 1)
            for run in run_round(loadgen, part, shape, round_number, seconds, pids)]
        access_log = agent.access_log_stats(setup)
        # The access logs of Axoneme inside other servers (Envoy's module), by target.
        other_access_logs = {target.name: target.access_log_stats(setup)
                             for target in part.targets if isinstance(target, EnvoyAxoneme)}
    if part.memory_per_connection:
        # Every round of every shape at targets started afresh, each proxy measured from idle.
        for shape in part.shapes:
            for round_number in range(1, rounds + 1):
                with started(part, setup) as pids:
                    runs += run_round(loadgen, part, shape, round_number, seconds, pids)
                    counted = agent.access_log_stats(setup)
                # The agents append to one access log, so the last count is the whole; the
                # entries they dropped add up over the processes.
                access_log = {**counted,
                              "dropped": add_counts(access_log["dropped"], counted["dropped"])}
    return {
        "name": part.name,
        "title": part.title,
        "load": part.load,
        "notes": [note.format(**words) for note in part.notes],
        "compare_with": part.compare_with,
        "other_ratios": part.other_ratios,
        "servers": servers,
        "busy": busy,
        "runs": runs,
        "access_log": access_log,
        "other_access_logs": other_access_logs,
        # The connection sweep's shapes and their connection counts, for its table.
        **({"connections": {shape.name: shape.connections for shape in part.shapes}}
           if part.memory_per_connection else {}),
    }


def add_counts(first: str, second: str) -> str:
    """Two counts read from the agent's metrics, added, or "unknown" when either is."""
    if first.isdigit() and second.isdigit():
        return str(int(first) + int(second))
    return "unknown"
