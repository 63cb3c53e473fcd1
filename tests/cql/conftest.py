"""Shared pieces of the CQL tests: a cql-fixture server on a free port."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Starting and stopping servers is shared with the benchmark, in scripts/bench/procs.py; the
# driver's sessions and the checks with the Envoy tests, in tests/shared.
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests" / "shared"))
from bench.procs import Process, free_port, port_open

FIXTURE_BIN = Path(os.environ.get("CQL_FIXTURE_BIN", ROOT / "target" / "debug" / "cql-fixture"))


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    """A cql-fixture on a free port; its log goes to a file shown when a test fails."""
    if not FIXTURE_BIN.exists():
        subprocess.run(["cargo", "build", "-p", "cql-fixture"], cwd=ROOT, check=True)
    port = free_port()
    server = Process([FIXTURE_BIN, "--listen", f"127.0.0.1:{port}"],
                     tmp_path_factory.mktemp("cql") / "cql-fixture.log")
    server.ready(lambda: port_open(port), f"cql-fixture on port {port}")
    try:
        yield port
    finally:
        server.stop()
        print(server.log_text()[-4000:])
