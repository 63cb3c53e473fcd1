"""Runs a part of the benchmark: starts its targets, drives every load shape at every target in
rounds, the targets' order rotating from round to round, and notes each run's result, the
servers' versions, how busy the cores were before the runs and what the agent logged; and
describes the machine.

It prints progress as it goes and computes no figures: medians, ratios and tables are the
report's."""

import json
import platform
import subprocess
import time

from . import report
from .targets import Axoneme, Setup

# Seconds of load before each measured run.
WARMUP_SECONDS = 1


def rotation(items: tuple, round_number: int) -> list:
    """`items` in the order of round `round_number` (from 1): rotated by one place a round, so
    that none always runs first or last while the machine drifts."""
    count = len(items)
    return [items[(i + round_number - 1) % count] for i in range(count)]


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


def load(loadgen, part, shape, target, seconds: int):
    """One run of the load generator at `target`: its JSON result, or None when it failed."""
    args = [loadgen, part.protocol, "--source", part.source, *shape.args(), *part.load_args,
            "--target", f"127.0.0.1:{target.port}", "--duration", str(seconds),
            "--warmup", str(WARMUP_SECONDS), "--json"]
    try:
        # A run that hangs fails rather than holding up the rest of the benchmark.
        done = subprocess.run([str(arg) for arg in args], stdout=subprocess.PIPE, text=True,
                              timeout=WARMUP_SECONDS + seconds + 60)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(done.stdout) if done.returncode == 0 else None


def run_part(part, setup: Setup, loadgen, seconds: int, rounds: int, threads: int) -> dict:
    """Runs `part` with its targets set up in `setup`; returns what the report takes of it."""
    words = {"cores": setup.cores, "threads": threads}
    processes = []
    try:
        for target in part.targets:
            processes.append(target.start(setup))
        servers = "; ".join(version for target in part.targets if (version := target.version()))
        print(f"\n{part.intro.format(**words)}\n")
        busy = busy_percent()
        print(f"cores busy before the runs: {busy}%")
        runs = []
        for shape in part.shapes:
            for round_number in range(1, rounds + 1):
                for target in rotation(part.targets, round_number):
                    print(f"== round {round_number}: {shape.name} -> {target.name} "
                          f"(127.0.0.1:{target.port})", flush=True)
                    result = load(loadgen, part, shape, target, seconds)
                    compact = json.dumps(result, separators=(",", ":"))
                    print(f"   {compact}" if result else "   failed", flush=True)
                    runs.append(report.run_record(round_number, shape.name, target.name, result))
        agent = next(target for target in part.targets if isinstance(target, Axoneme))
        access_log = agent.access_log_stats(setup)
    finally:
        for process in reversed(processes):
            process.stop()
    return {
        "name": part.name,
        "title": part.title,
        "load": part.load,
        "notes": [note.format(**words) for note in part.notes],
        "compare_with": part.compare_with,
        "servers": servers,
        "busy": busy,
        "runs": runs,
        "access_log": access_log,
    }
