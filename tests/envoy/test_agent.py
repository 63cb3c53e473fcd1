"""Policy from a running agent: Envoy's filter reads the policies, endpoints and identity numbers
of an `axoneme run` through its API socket and follows them, so a policy change made through the
agent (here an edit of its policy file, which the agent watches) reaches connections already open
in Envoy, and both log the same identities."""

import json
import socket
import threading
import os
import subprocess
from pathlib import Path

import pytest

from bench.procs import Agent, wait_until
from conftest import (DENIED, EXAMPLE, JEDI, MONITORING, ROOT, STRANGER, Envoy, bootstrap,
                      connect_from, example_policy, expect_closed, read_get_reply)
from test_config import validate

ALLOWED_GET = b"VALUE alliance/fleet/a 0 1\r\nA\r\nEND\r\n"
AXONEME_BIN = Path(os.environ.get("AXONEME_BIN", ROOT / "target" / "debug" / "axoneme"))


def axoneme_bin() -> Path:
    if not AXONEME_BIN.exists():
        subprocess.run(["cargo", "build", "--quiet", "-p", "axoneme"], cwd=ROOT, check=True)
    return AXONEME_BIN


def agent_config(tmp_path, memcached) -> Path:
    """The configuration of an `axoneme run` with the example's endpoints and policy (in
    agent-policy.yaml, which the agent watches) and one listener that guards memcached too."""
    (tmp_path / "agent-policy.yaml").write_text(example_policy(memcached.port))
    endpoints = (EXAMPLE / "config.yaml").read_text().split("endpoints:\n", 1)[1].split("policies:")[0]
    config = tmp_path / "agent.yaml"
    config.write_text(f"""\
accessLog: {{path: "{tmp_path / 'agent-access.log'}"}}
api: {{socket: "{tmp_path / 'api.sock'}"}}
drainTimeout: 0
endpoints:
{endpoints}policies: [agent-policy.yaml]
listeners:
  - {{name: memcached, listen: "127.0.0.1:0", upstream: "127.0.0.1:{memcached.port}", endpoint: memcached, direction: ingress}}
""")
    return config


def start_agent(config: Path, log: Path) -> Agent:
    """The agent of `config`, once its listener tells it is ready."""
    return Agent(axoneme_bin(), config, log, ["memcached"])


@pytest.fixture
def agent(tmp_path, memcached):
    """A running agent (`agent_config`); its API socket."""
    running = start_agent(agent_config(tmp_path, memcached), tmp_path / "axoneme.log")
    yield tmp_path / "api.sock"
    running.stop()


def envoy_on_agent(tmp_path, module, memcached, api: Path) -> Envoy:
    """Envoy in front of memcached, its filter taking policy from the agent API at `api`."""
    envoy_dir = tmp_path / "envoy"
    envoy_dir.mkdir()
    return Envoy(envoy_dir, module, "memcache", memcached.port, "memcached", agent=api)


def test_a_policy_change_through_the_agent_reaches_open_connections(tmp_path, memcached, module,
                                                                   agent):
    envoy = envoy_on_agent(tmp_path, module, memcached, agent)
    try:
        memcached.put("alliance/fleet/a", b"A")
        monitor = connect_from(MONITORING, envoy.addr)
        monitor.sendall(b"get alliance/fleet/a\r\n")
        assert read_get_reply(monitor) == b"VALUE alliance/fleet/a 0 1\r\nA\r\nEND\r\n"
        # The agent's policy now lets monitoring read nothing under alliance/fleet/.
        (tmp_path / "agent-policy.yaml").write_text(
            example_policy(memcached.port).replace("keyPrefix: alliance/fleet/",
                                                   "keyPrefix: alliance/fleet/moon/"))

        def denied() -> bool:
            monitor.sendall(b"get alliance/fleet/a\r\n")
            return read_get_reply(monitor) == DENIED

        wait_until(denied, "the agent's new policy in the open connection")
        assert memcached.get("alliance/fleet/a") == b"A"
        # The filter's log is written by a thread of its own: the denial's entry follows its
        # reply.
        denials = wait_until(
            lambda: [e for e in envoy.entries(0) if e["entry_type"] == "Denied"],
            "the denial in the access log")
        assert denials[-1]["generic_l7"]["fields"]["keys"] == "alliance/fleet/a"
    finally:
        envoy.stop()


def agent_identities(api: Path) -> dict:
    """The agent's identity numbers by label set, as `axoneme identity list` shows them."""
    listed = subprocess.run([axoneme_bin(), "--api", str(api), "identity", "list", "-o", "json"],
                            capture_output=True, text=True, check=True).stdout
    return {tuple(sorted(identity["labels"])): identity["id"] for identity in json.loads(listed)}


def test_the_filter_logs_the_agents_identity_numbers(tmp_path, memcached, module, agent):
    # An endpoint added after the others, whose labels sort before theirs: the agent keeps the
    # numbers it gave, so numbering the label sets afresh would give different ones.
    subprocess.run([axoneme_bin(), "--api", str(agent), "endpoint", "add", "aaa-probe",
                    "--ip", "127.0.0.99", "--label", "app=aaa-probe"],
                   capture_output=True, check=True)
    numbers = agent_identities(agent)
    envoy = envoy_on_agent(tmp_path, module, memcached, agent)
    try:
        monitor = connect_from(MONITORING, envoy.addr)
        monitor.sendall(b"get alliance/fleet/a\r\n")
        read_get_reply(monitor)
        entry = envoy.entries(1)[-1]
        assert entry["source_security_id"] == numbers[tuple(sorted(entry["source_labels"]))]
        assert entry["destination_security_id"] == \
            numbers[tuple(sorted(entry["destination_labels"]))]
        probe = [labels for labels in numbers if "app=aaa-probe" in labels]
        assert probe and numbers[probe[0]] > entry["source_security_id"], numbers
    finally:
        envoy.stop()


def test_an_unreachable_agent_refuses_the_configuration(tmp_path, memcached, module):
    filter_config = {"l7proto": "memcache", "endpoint": "memcached", "direction": "ingress",
                     "upstream": f"127.0.0.1:{memcached.port}", "agent": str(tmp_path / "no.sock"),
                     "access_log": str(tmp_path / "access.log")}
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap(11212, 9901, memcached.port, filter_config)))
    result = validate(config, module, cwd=tmp_path)
    assert result.returncode != 0
    assert (f"configuration refused: agent API {tmp_path / 'no.sock'}: /v1/status: "
            in result.stdout + result.stderr)


def reply_to(sock, request: bytes) -> bytes:
    sock.sendall(request)
    return read_get_reply(sock)


def test_when_the_agent_stops_the_last_policy_it_gave_stays_in_force(tmp_path, memcached,
                                                                      module):
    """Neither allow-all nor deny-all: what the agent's policy allowed is allowed, what it
    denied is denied, on open and new connections, and Envoy's log says the policy in force is
    kept."""
    running = start_agent(agent_config(tmp_path, memcached), tmp_path / "axoneme.log")
    envoy = envoy_on_agent(tmp_path, module, memcached, tmp_path / "api.sock")
    try:
        memcached.put("alliance/fleet/a", b"A")
        monitor = connect_from(MONITORING, envoy.addr)
        assert reply_to(monitor, b"get alliance/fleet/a\r\n") == ALLOWED_GET
        running.stop()
        wait_until(lambda: "keeping the policy in force: agent API" in envoy.process.log_text(),
                   "Envoy's log saying the agent is gone")
        fresh = connect_from(MONITORING, envoy.addr)
        for sock in (monitor, fresh):
            assert reply_to(sock, b"get alliance/fleet/a\r\n") == ALLOWED_GET
            assert reply_to(sock, b"delete alliance/fleet/a\r\n") == DENIED
        assert memcached.get("alliance/fleet/a") == b"A"
        stranger = connect_from(STRANGER, envoy.addr)
        try:
            stranger.sendall(b"get alliance/fleet/a\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        expect_closed(stranger)
    finally:
        envoy.stop()
        running.stop()


def test_a_restarted_agent_with_another_policy_is_followed(tmp_path, memcached, module):
    """An agent started again numbers its policy revisions from the start: the policy it then
    holds reaches Envoy all the same, though its revision is the one Envoy last saw."""
    config = agent_config(tmp_path, memcached)
    running = start_agent(config, tmp_path / "axoneme.log")
    envoy = envoy_on_agent(tmp_path, module, memcached, tmp_path / "api.sock")
    try:
        memcached.put("alliance/fleet/a", b"A")
        monitor = connect_from(MONITORING, envoy.addr)
        assert reply_to(monitor, b"get alliance/fleet/a\r\n") == ALLOWED_GET
        running.stop()
        (tmp_path / "agent-policy.yaml").write_text(
            example_policy(memcached.port).replace("keyPrefix: alliance/fleet/",
                                                   "keyPrefix: alliance/fleet/moon/"))
        running = start_agent(config, tmp_path / "axoneme-again.log")
        wait_until(lambda: reply_to(monitor, b"get alliance/fleet/a\r\n") == DENIED,
                   "the restarted agent's policy in the open connection")
        assert reply_to(connect_from(MONITORING, envoy.addr),
                        b"get alliance/fleet/a\r\n") == DENIED
    finally:
        envoy.stop()
        running.stop()


def test_an_endpoint_the_agent_no_longer_has_is_refused_not_allowed(tmp_path, memcached, module,
                                                                    agent):
    """The guarded endpoint deleted from the agent: Envoy refuses new connections and denies the
    requests of open ones, rather than falling back to allowing them."""
    envoy = envoy_on_agent(tmp_path, module, memcached, agent)
    try:
        memcached.put("alliance/fleet/a", b"A")
        jedi = connect_from(JEDI, envoy.addr)
        assert reply_to(jedi, b"get alliance/fleet/a\r\n") == ALLOWED_GET
        # The agent's own listener guards the endpoint too: it goes first.
        for kind in ("listener", "endpoint"):
            deleted = subprocess.run([axoneme_bin(), "--api", str(agent), kind, "delete",
                                      "memcached"], capture_output=True, text=True)
            assert deleted.returncode == 0, deleted.stderr
        wait_until(lambda: reply_to(jedi, b"get alliance/fleet/a\r\n") == DENIED,
                   "the open connection's requests denied")
        assert reply_to(jedi, b"delete alliance/fleet/a\r\n") == DENIED
        assert memcached.get("alliance/fleet/a") == b"A"
        late = connect_from(JEDI, envoy.addr)
        try:
            late.sendall(b"delete alliance/fleet/a\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        expect_closed(late)
        assert memcached.get("alliance/fleet/a") == b"A"
        refusal = wait_until(lambda: [e for e in envoy.entries(0)
                                      if e["generic_l7"]["fields"].get("status")],
                             "the refusal in the access log")[-1]
        assert refusal["entry_type"] == "Denied"
        assert refusal["generic_l7"]["fields"]["status"] == 'unknown endpoint "memcached"'
    finally:
        envoy.stop()


def agent_get(api: Path, path: str) -> bytes:
    """The whole HTTP response of the agent behind `api` to `GET path`."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(api))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: axoneme\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return response


def http_response(status: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class ReplayedAgent:
    """An API socket that answers each path with the response set for it: first what a real
    agent answered, then what a broken agent could answer. Answers are read when asked, so a
    change takes effect at the filter's next poll."""

    PATHS = ("/v1/status", "/v1/policy", "/v1/endpoint", "/v1/identity")

    def __init__(self, path: Path, real_agent: Path):
        self.path = path
        self.answers = {p: agent_get(real_agent, p) for p in self.PATHS}
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen(16)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request and (chunk := conn.recv(4096)):
                    request += chunk
                path = request.split(b" ")[1].decode() if request.count(b" ") >= 2 else ""
                conn.sendall(self.answers.get(path, http_response("404 Not Found", b"{}")))

    def body(self, path: str) -> dict:
        return json.loads(self.answers[path].split(b"\r\n\r\n", 1)[1])

    def set_revision(self, revision: int) -> None:
        status = self.body("/v1/status") | {"policy_revision": revision}
        self.answers["/v1/status"] = http_response("200 OK", json.dumps(status).encode())

    def close(self) -> None:
        self.server.close()


BROKEN_ANSWERS = {
    "not JSON": http_response("200 OK", b"<html>maintenance</html>"),
    "an error status": http_response("500 Internal Server Error", b'{"error": "boom"}'),
    "no end of headers": b"HTTP/1.1 200 OK\r\nContent-Length: 10",
    "a policy that does not parse": http_response("200 OK", json.dumps({
        "revision": 7, "policies": [{"document": {
            "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "broken"},
            "spec": {"endpointSelector": {"matchLabels": {"app": "memcached"}},
                     "ingress": [{"toPorts": [{"ports": [{"port": "eleven", "protocol": "TCP"}],
                                               "rules": {"l7proto": "memcache"}}]}]}}}]}).encode()),
    "a policy naming a protocol with no parser": http_response("200 OK", json.dumps({
        "revision": 7, "policies": [{"document": {
            "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "unknown-protocol"},
            "spec": {"endpointSelector": {"matchLabels": {"app": "memcached"}},
                     "ingress": [{"toPorts": [{"ports": [{"port": "11211", "protocol": "TCP"}],
                                               "rules": {"l7proto": "redis",
                                                         "l7": [{"cmd": "get"}]}}]}]}}}]}).encode()),
}


@pytest.mark.parametrize("broken", sorted(BROKEN_ANSWERS))
def test_an_agent_answering_a_broken_policy_leaves_the_last_good_one_in_force(
        tmp_path, memcached, module, agent, broken):
    replayed = ReplayedAgent(tmp_path / "replayed.sock", agent)
    envoy = envoy_on_agent(tmp_path, module, memcached, replayed.path)
    try:
        memcached.put("alliance/fleet/a", b"A")
        monitor = connect_from(MONITORING, envoy.addr)
        assert reply_to(monitor, b"get alliance/fleet/a\r\n") == ALLOWED_GET
        replayed.answers["/v1/policy"] = BROKEN_ANSWERS[broken]
        replayed.set_revision(7)
        wait_until(lambda: "keeping the policy in force: " in envoy.process.log_text(),
                   "Envoy's log saying the agent's answer was refused")
        fresh = connect_from(MONITORING, envoy.addr)
        for sock in (monitor, fresh):
            assert reply_to(sock, b"get alliance/fleet/a\r\n") == ALLOWED_GET
            assert reply_to(sock, b"delete alliance/fleet/a\r\n") == DENIED
        assert memcached.get("alliance/fleet/a") == b"A"
    finally:
        envoy.stop()
        replayed.close()


@pytest.mark.parametrize("broken", sorted(BROKEN_ANSWERS))
def test_an_agent_answering_a_broken_policy_refuses_the_configuration(tmp_path, memcached,
                                                                      module, agent, broken):
    replayed = ReplayedAgent(tmp_path / "replayed.sock", agent)
    replayed.answers["/v1/policy"] = BROKEN_ANSWERS[broken]
    filter_config = {"l7proto": "memcache", "endpoint": "memcached", "direction": "ingress",
                     "upstream": f"127.0.0.1:{memcached.port}", "agent": str(replayed.path),
                     "access_log": str(tmp_path / "access.log")}
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap(11212, 9901, memcached.port, filter_config)))
    try:
        result = validate(config, module, cwd=tmp_path)
    finally:
        replayed.close()
    assert result.returncode != 0
    output = result.stdout + result.stderr
    refusals = [line for line in output.splitlines()
                if line.startswith("axoneme envoy filter: configuration refused: agent ")]
    assert len(refusals) == 1 and str(replayed.path) in refusals[0], output


def test_an_agent_run_that_changed_between_two_polls_is_read_whole(tmp_path, memcached, module,
                                                                   agent):
    """An agent restarted between two of the filter's polls answers every one of them, with the
    revision the filter last saw but another run's name (`instance`): its policy is read."""
    replayed = ReplayedAgent(tmp_path / "replayed.sock", agent)
    envoy = envoy_on_agent(tmp_path, module, memcached, replayed.path)
    try:
        memcached.put("alliance/fleet/a", b"A")
        monitor = connect_from(MONITORING, envoy.addr)
        assert reply_to(monitor, b"get alliance/fleet/a\r\n") == ALLOWED_GET
        policy = json.dumps(replayed.body("/v1/policy")).replace(
            '"keyPrefix": "alliance/fleet/"', '"keyPrefix": "alliance/fleet/moon/"')
        assert "alliance/fleet/moon/" in policy
        status = replayed.body("/v1/status")
        replayed.answers["/v1/policy"] = http_response("200 OK", policy.encode())
        replayed.answers["/v1/status"] = http_response("200 OK", json.dumps(
            status | {"instance": status["instance"] + "-again"}).encode())
        wait_until(lambda: reply_to(monitor, b"get alliance/fleet/a\r\n") == DENIED,
                   "the new run's policy in the open connection")
    finally:
        envoy.stop()
        replayed.close()
