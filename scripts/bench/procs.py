"""Servers run in the background on 127.0.0.1, for the benchmark and for the end-to-end tests
(tests/python, tests/cql and tests/kafka import this module): free ports, waiting with a
deadline, a process whose output goes to a log file and which stops cleanly, and the command lines
of memcached and the agent that both need.

It knows nothing of pytest, of load or of results: a wait that gives up raises `GaveUp`, which
a test reports as its failure and the benchmark as its reason to stop."""

import os
import random
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

DEADLINE = 10.0  # seconds any wait for a server may take before it gives up


class GaveUp(Exception):
    """A wait ran out of time, or the process waited for exited first."""


# Where free ports are looked for when the kernel's ephemeral range leaves no room below it.
LOWEST_PORT = 10000


def ephemeral_ports() -> tuple:
    """The kernel's range of ports for outgoing connections (ip_local_port_range)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A port of 127.0.0.1 nothing is bound to, below the kernel's ephemeral range: a server is
    often started well after its port is chosen (a benchmark part starts each target when its
    turn comes), and a port of that range could meanwhile become the local port of one of the
    many connections the runs before it open."""
    low, _ = ephemeral_ports()
    candidates = list(range(LOWEST_PORT, low)) if low > LOWEST_PORT + 1000 else []
    random.shuffle(candidates)
    for port in candidates[:200]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on `host`:`port`."""
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def envoy_live(admin_port: int):
    """A readiness check of the Envoy whose admin interface is on 127.0.0.1:`admin_port`: its
    `/ready` says LIVE. (A probe of a listener would reach its filters as a client.)"""
    ready_url = f"http://127.0.0.1:{admin_port}/ready"

    def live() -> bool:
        try:
            with urllib.request.urlopen(ready_url, timeout=1) as response:
                return response.read().strip() == b"LIVE"
        except OSError:
            return False

    return live


def wait_until(condition, what: str, deadline: float = DEADLINE, interval: float = 0.02):
    """Polls `condition` until it returns something truthy and returns that; raises `GaveUp`
    after `deadline` seconds."""
    give_up = time.monotonic() + deadline
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > give_up:
            raise GaveUp(f"gave up waiting for {what}")
        time.sleep(interval)


class Process:
    """A command in the background, its stdout and stderr in the file `log`."""

    def __init__(self, args: list, log: Path):
        self.name = Path(str(args[0])).name
        self.log = Path(log)
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen([str(arg) for arg in args], stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def log_text(self) -> str:
        """The log so far, without terminal colour codes."""
        return re.sub(r"\x1b\[[0-9;]*m", "", self.log.read_text(errors="replace"))

    def ready(self, condition, what: str, deadline: float = DEADLINE):
        """Waits until `condition` returns something truthy and returns that, for `deadline`
        seconds at most. If the process exits first or the wait gives up, it is stopped and
        `GaveUp` carries its log."""
        try:
            result = wait_until(lambda: self.process.poll() is not None or condition(), what,
                                deadline)
            if self.process.poll() is not None:
                raise GaveUp(f"{self.name} exited with {self.process.returncode} before {what}")
            return result
        except GaveUp as gave_up:
            self.stop()
            raise GaveUp(f"{gave_up}; {self.name} logged:\n{self.log_text()}") from None
        except BaseException:
            self.stop()
            raise

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Sends `sig` and waits for the exit; kills the process if it takes over DEADLINE."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def memcached_command(binary: str, port: int, *options: str) -> list:
    """memcached on 127.0.0.1:`port`, TCP only, with `options`."""
    args = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", *options]
    # memcached refuses to run as root unless told which user to be.
    if os.geteuid() == 0:
        args += ["-u", "root"]
    return args


class Agent(Process):
    """`axoneme run --config CONFIG`, ready once each listener named in `listeners` has logged
    the address it listens on (`addresses`, by listener name).

    Readiness is read from the log rather than probed: a probe connection would come from
    127.0.0.1, an endpoint's own address, and be refused and logged like any other."""

    def __init__(self, binary: Path, config: Path, log: Path, listeners):
        super().__init__([binary, "run", "--config", config], log)
        wanted = set(listeners)

        def listening():
            found = {name: (host, int(port)) for name, host, port in
                     re.findall(r"listening listener=(\S+) addr=(\S+):(\d+)", self.log_text())}
            return found if wanted <= found.keys() else None

        self.addresses = self.ready(listening, f"the agent's listeners {sorted(wanted)}")
