"""Fixtures of the flow view's browser tests: the memcached suite's memcached and agent
(tests/python/conftest.py, loaded here under the name `memcached_suite`), the agent with its API
on TCP behind a token and the flow view on a loopback port, and headless Chromium (Debian's
`chromium` and `chromium-driver`) driven by Selenium, with no network but the agent's."""

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("memcached_suite", ROOT / "tests" / "python" / "conftest.py")
suite = importlib.util.module_from_spec(_spec)
sys.modules["memcached_suite"] = suite
_spec.loader.exec_module(suite)

# The memcached suite's fixture, used as it is.
memcached = suite.memcached
from bench.procs import free_port  # noqa: E402  (the suite's conftest put scripts/ on the path)

TOKEN = "flow-view-s3cret"
LOADGEN_BIN = os.environ.get("AXONEME_LOADGEN_BIN", str(ROOT / "target" / "debug" / "axoneme-loadgen"))


class FlowViewAgent(suite.Proxy):
    """The memcached suite's agent, with the API on TCP (`api_url`, behind `TOKEN`) and the
    flow view on a loopback port of its own (`web_url`)."""

    def __init__(self, workdir: Path, memcached):
        api_port, web_port = free_port(), free_port()
        super().__init__(workdir, memcached,
                         extra_config=f'web: {{listen: "127.0.0.1:{web_port}"}}\n',
                         extra_api=f'listen: "127.0.0.1:{api_port}", token: "{TOKEN}"')
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.web_url = f"http://127.0.0.1:{web_port}"
        suite.wait_until(lambda: "flow view listening" in self.agent.log_text(), "the flow view")


@pytest.fixture
def agent(tmp_path, memcached):
    running = FlowViewAgent(tmp_path, memcached)
    yield running
    running.stop()


@pytest.fixture
def browser():
    """Headless Chromium. Selenium is given both binaries, so it looks nothing up online."""
    chromium = shutil.which("chromium")
    driver_binary = shutil.which("chromedriver")
    if chromium is None or driver_binary is None:
        pytest.fail("chromium and chromium-driver are not installed (scripts/test.sh installs them)")
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1400,1100", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_binary), options=options)
    driver.set_page_load_timeout(suite.DEADLINE)
    yield driver
    driver.quit()
