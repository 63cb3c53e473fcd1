"""Shared pieces of the CQL tests: a cql-fixture server on a free port."""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_BIN = Path(os.environ.get("CQL_FIXTURE_BIN", ROOT / "target" / "debug" / "cql-fixture"))
DEADLINE = 10.0  # seconds any wait in these tests may take before it fails


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    """A cql-fixture on a free port; its log goes to a file shown when a test fails."""
    if not FIXTURE_BIN.exists():
        subprocess.run(["cargo", "build", "-p", "cql-fixture"], cwd=ROOT, check=True)
    port = free_port()
    log_path = tmp_path_factory.mktemp("cql") / "cql-fixture.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(FIXTURE_BIN), "--listen", f"127.0.0.1:{port}"], stderr=log, stdout=log
        )
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"cql-fixture did not start: {log_path.read_text()}")
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE)
        print(log_path.read_text()[-4000:])


