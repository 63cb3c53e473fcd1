"""The benchmark's tests import its package, scripts/bench, as `bench`. The tests that run the
benchmark's targets for real share here a short working directory and the directory of the
binaries the benchmark runs."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

AXONEME_BIN = Path(os.environ.get("AXONEME_BIN", ROOT / "target" / "debug" / "axoneme"))
LOADGEN_BIN = Path(os.environ.get("LOADGEN_BIN", ROOT / "target" / "debug" / "axoneme-loadgen"))


@pytest.fixture
def workdir():
    """A directory short enough by name for the agent's API socket below it (a Unix socket's
    path has at most 107 bytes), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-") as directory:
        yield Path(directory)


def binaries_dir(tmp_path: Path, *extra: Path) -> Path:
    """A directory with the agent, the load generator and `extra` files under the names the
    benchmark runs them by (their own, but for the first two)."""
    for built in (AXONEME_BIN, LOADGEN_BIN, *extra):
        assert built.exists(), f"{built} is missing: build the workspace first (scripts/test.sh does)"
    directory = tmp_path / "bin"
    directory.mkdir()
    shutil.copy(AXONEME_BIN, directory / "axoneme")
    shutil.copy(LOADGEN_BIN, directory / "axoneme-loadgen")
    for built in extra:
        shutil.copy(built, directory / built.name)
    return directory
