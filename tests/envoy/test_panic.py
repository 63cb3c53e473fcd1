"""A parser panic inside Envoy: the module built with its `fault-injection` protocol, whose parser
panics on the request line `panic`, in front of memcached. The panic closes that connection only,
is logged, and Envoy goes on serving the others."""

from conftest import Envoy, connect_from, expect_closed, read_line

SERVER_CONFIG = """\
endpoints:
  - {name: memcached, ips: ["127.0.0.1"], labels: {app: memcached}}
  - {name: client, ips: ["127.0.0.21"], labels: {app: client}}
"""
CLIENT = "127.0.0.21"
# No policy selects memcached: every connection is allowed, and parsed with the protocol.
UNRELATED_POLICY = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: unrelated}
spec:
  endpointSelector: {matchLabels: {app: nothing-here}}
  ingress: [{fromEndpoints: [{}]}]
"""


def version(sock) -> bytes:
    sock.sendall(b"version\r\n")
    return read_line(sock)


def test_a_parser_panic_closes_only_its_connection_and_is_logged(tmp_path, memcached,
                                                                  fault_module):
    (tmp_path / "endpoints.yaml").write_text(SERVER_CONFIG)
    envoy = Envoy(tmp_path, fault_module, "fault-injection", memcached.port, "memcached",
                  policy=UNRELATED_POLICY, endpoints=tmp_path / "endpoints.yaml")
    try:
        survivor = connect_from(CLIENT, envoy.addr)
        assert version(survivor).startswith(b"VERSION ")
        victim = connect_from(CLIENT, envoy.addr)
        assert version(victim).startswith(b"VERSION ")
        victim.sendall(b"panic\r\n")
        expect_closed(victim)
        assert version(survivor).startswith(b"VERSION "), "the other connection goes on"
        newcomer = connect_from(CLIENT, envoy.addr)
        assert version(newcomer).startswith(b"VERSION "), "new connections are served"
        panics = [e for e in envoy.entries(1) if e["entry_type"] == "Denied"]
        assert len(panics) == 1, panics
        assert panics[0]["generic_l7"]["proto"] == "fault-injection"
        assert panics[0]["generic_l7"]["fields"]["status"] == (
            "Panic: fault injected: the request line was `panic`")
        assert envoy.process.process.poll() is None, "Envoy is still running"
    finally:
        envoy.stop()


def test_a_panic_making_a_connections_parser_refuses_it_and_is_logged(tmp_path, memcached,
                                                                      fault_module):
    """The fault-injection protocol panics making the parser of a connection from 127.0.0.66:
    that connection is closed before any byte reaches memcached, the access log says why, and
    the others are served."""
    (tmp_path / "endpoints.yaml").write_text(SERVER_CONFIG)
    envoy = Envoy(tmp_path, fault_module, "fault-injection", memcached.port, "memcached",
                  policy=UNRELATED_POLICY, endpoints=tmp_path / "endpoints.yaml")
    try:
        victim = connect_from("127.0.0.66", envoy.addr)
        try:
            victim.sendall(b"set alliance/fleet/panic 0 0 1\r\nZ\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        expect_closed(victim)
        assert memcached.get("alliance/fleet/panic") is None
        survivor = connect_from(CLIENT, envoy.addr)
        assert version(survivor).startswith(b"VERSION ")
        panics = [e for e in envoy.entries(1) if e["entry_type"] == "Denied"]
        assert len(panics) == 1, panics
        assert panics[0]["source_address"].startswith("127.0.0.66:")
        assert panics[0]["generic_l7"]["fields"]["status"] == (
            "Panic: fault injected: a connection from 127.0.0.66")
        assert envoy.process.process.poll() is None, "Envoy is still running"
    finally:
        envoy.stop()
