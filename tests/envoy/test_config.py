"""The filter's configuration as Envoy loads it (`envoy --mode validate`, which creates the
filter's configuration without serving): the example's configuration loads, and a bad one is
refused, Envoy saying why."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import EXAMPLE, ROOT, bootstrap, envoy_bin, example_policy

ENVOY_EXAMPLE = ROOT / "examples" / "envoy"


def validate(config: Path, module: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=str(module))
    return subprocess.run([str(envoy_bin()), "--mode", "validate", "-c", str(config),
                           "--base-id", str(os.getpid())],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_the_example_configuration_loads(tmp_path, module):
    # The example's paths are relative to its directory; its access log goes to the test's.
    text = (ENVOY_EXAMPLE / "envoy.yaml").read_text()
    assert text.count("/tmp/axoneme-envoy-access.log") == 2
    text = text.replace("/tmp/axoneme-envoy-access.log", str(tmp_path / "access.log"))
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    result = validate(config, module, cwd=ENVOY_EXAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "access.log").exists()


def good_filter_config(tmp_path: Path) -> dict:
    (tmp_path / "policy.yaml").write_text(example_policy(11211))
    return {
        "l7proto": "memcache",
        "endpoint": "memcached",
        "direction": "ingress",
        "upstream": "127.0.0.1:11211",
        "policies": [str(tmp_path / "policy.yaml")],
        "endpoints": str(EXAMPLE / "config.yaml"),
        "access_log": str(tmp_path / "access.log"),
    }


@pytest.mark.parametrize("change, reason", [
    ({"l7proto": "redis"}, 'l7proto "redis" has no parser (known: '),
    ({"endpoint": "deathstar"}, 'endpoint "deathstar" is not in the endpoints file'),
    ({"direction": "sideways"}, "filter_config: unknown variant `sideways`"),
    ({"upstream": "memcached"}, "filter_config: invalid socket address syntax"),
    ({"policies": ["/nonexistent/policy.yaml"]}, "/nonexistent/policy.yaml"),
    ({"endpoints": "/nonexistent/endpoints.yaml"}, "endpoints file /nonexistent/endpoints.yaml: "),
    ({"acess_log": "typo.log"}, "filter_config: unknown field `acess_log`"),
    ({"agent": "/run/axoneme.sock"}, "name either `policies` and `endpoints`, or `agent`"),
    ({"policies": None}, "name either `policies` and `endpoints`, or `agent`"),
    ({"access_log": "/nonexistent/access.log"}, "access log /nonexistent/access.log: "),
    ({"upstream": "127.0.0.1:70000"}, "filter_config: invalid socket address syntax"),
    ({"l7proto": "Memcache"}, 'l7proto "Memcache" has no parser (known: '),
])
def test_a_bad_filter_configuration_is_refused_with_its_reason(tmp_path, module, change, reason):
    filter_config = good_filter_config(tmp_path) | change
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap(11212, 9901, 11211, filter_config)))
    result = validate(config, module, cwd=tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "axoneme envoy filter: configuration refused: " + reason in output, output


def test_the_good_configuration_of_the_refusal_tests_loads(tmp_path, module):
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap(11212, 9901, 11211, good_filter_config(tmp_path))))
    result = validate(config, module, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("text, reason", [
    ("", "filter_config: EOF while parsing a value"),
    ("l7proto: memcache", "filter_config: expected value"),
    ("{}", "filter_config: missing field `l7proto`"),
])
def test_a_filter_configuration_that_is_not_a_json_object_is_refused(tmp_path, module, text,
                                                                     reason):
    bootstrap_config = bootstrap(11212, 9901, 11211, {})
    typed = bootstrap_config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    typed["typed_config"]["filter_config"]["value"] = text
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap_config))
    result = validate(config, module, cwd=tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "axoneme envoy filter: configuration refused: " + reason in output, output


@pytest.mark.parametrize("file, text, reason", [
    ("policy.yaml", "kind: CiliumNetworkPolicy\nspec: [", "policy.yaml"),
    ("policy.yaml", "", "policy.yaml"),
    ("endpoints.yaml", "endpoints: {memcached: 1}", "endpoints file "),
    ("endpoints.yaml", "- name: memcached\n  ips: [not-an-address]\n", "endpoints file "),
])
def test_a_policy_or_endpoints_file_that_does_not_read_is_refused(tmp_path, module, file, text,
                                                                  reason):
    filter_config = good_filter_config(tmp_path)
    (tmp_path / file).write_text(text)
    if file == "endpoints.yaml":
        filter_config["endpoints"] = str(tmp_path / file)
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap(11212, 9901, 11211, filter_config)))
    result = validate(config, module, cwd=tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    refusals = [line for line in output.splitlines()
                if line.startswith("axoneme envoy filter: configuration refused: ")]
    assert len(refusals) == 1 and reason in refusals[0], output
