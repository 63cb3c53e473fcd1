"""The memcached example's demo, run as a new user would, with the binary under test."""

import json
import os
import subprocess

from conftest import EXAMPLE, axoneme_bin


def test_the_memcached_demo_shows_each_identity_allowed_and_denied():
    demo = subprocess.run(["bash", str(EXAMPLE / "demo.sh"), "--once"],
                          env={**os.environ, "AXONEME_BIN": str(axoneme_bin())},
                          capture_output=True, text=True, timeout=120)
    out = demo.stdout
    assert demo.returncode == 0, f"{out}\n{demo.stderr}"
    for line in [
        "  set alliance/fleet/x-wing red-five               -> STORED",
        "  get alliance/fleet/x-wing                        -> VALUE alliance/fleet/x-wing 0 8 | red-five | END",
        "  set empire/deathstar stolen                      -> CLIENT_ERROR access denied",
        "  flush_all                                        -> CLIENT_ERROR access denied",
        "  set alliance/fleet/x-wing scrap                  -> CLIENT_ERROR access denied",
        "  get alliance/fleet/x-wing empire/deathstar       -> CLIENT_ERROR access denied",
        "  get empire/deathstar                             -> VALUE empire/deathstar 0 12 | exhaust-port | END",
        "  delete alliance/fleet/x-wing                     -> DELETED",
        "  get alliance/fleet/x-wing                        -> connection closed by the proxy",
    ]:
        assert line + "\n" in out, f"missing {line!r} in:\n{out}"
    entries = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [e["entry_type"] for e in entries] == (
        ["Request"] * 2 + ["Denied"] * 2 + ["Request"] + ["Denied"] * 3 + ["Request"] * 3
        + ["Denied"])
    assert entries[0]["generic_l7"] == {
        "proto": "memcache", "fields": {"command": "set", "keys": "alliance/fleet/x-wing"}}
