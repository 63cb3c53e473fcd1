"""memcached through a real Envoy running Axoneme's dynamic-module filter under the Rebels policy:
the same expectations as the standalone proxy's tests (tests/python), on raw sockets where the
exact bytes and their order matter."""

import socket
import threading
import time
from pathlib import Path

import memcached_checks
from conftest import (DENIED, EXAMPLE, JEDI, MAINTENANCE, MIB, MONITORING, POLICY_NAME,
                      STRANGER, Envoy, connect_from, example_policy, expect_closed, read_exactly,
                      read_get_reply, read_line)
from memcached_checks import FLEET, big_value, binary_request, read_binary_response

GET, SET, DELETE = 0x00, 0x01, 0x04
ACCESS_DENIED = 0x0008


def exchange(sock, request: bytes) -> bytes:
    sock.sendall(request)
    return read_get_reply(sock)


def test_maintenance_may_write_and_read_the_fleet_keys(envoy, memcached):
    droid = connect_from(MAINTENANCE, envoy.addr)
    key = FLEET + "x-wing"
    assert exchange(droid, b"set %s 0 0 8\r\nred five\r\n" % key.encode()) == b"STORED\r\n"
    assert exchange(droid, b"get %s\r\n" % key.encode()) == (
        b"VALUE alliance/fleet/x-wing 0 8\r\nred five\r\nEND\r\n")
    assert memcached.get(key) == b"red five"
    entries = envoy.entries(2)
    assert envoy.summary(2) == [("Request", "set", key), ("Request", "get", key)]
    first = entries[0]
    assert first["policy_name"] == POLICY_NAME
    assert first["is_ingress"] is True
    assert first["generic_l7"]["proto"] == "memcache"
    assert first["source_address"].startswith(MAINTENANCE + ":")
    assert first["destination_address"] == f"127.0.0.1:{memcached.port}"
    assert first["source_labels"] == ["function=fleet-maintenance",
                                      "k8s:io.kubernetes.pod.namespace=default"]
    assert first["destination_labels"] == ["app=memcached",
                                           "k8s:io.kubernetes.pod.namespace=default"]
    assert (first["listener"], first["endpoint"]) == ("memcached", "memcached")


def test_denied_requests_get_the_protocol_reply_and_never_reach_memcached(envoy, memcached):
    memcached.put(FLEET + "falcon", b"original")
    monitor = connect_from(MONITORING, envoy.addr)
    assert exchange(monitor, b"set alliance/fleet/falcon 0 0 5\r\nscrap\r\n") == DENIED
    assert exchange(monitor, b"delete alliance/fleet/falcon\r\n") == DENIED
    assert exchange(monitor, b"get alliance/fleet/falcon empire/plans\r\n") == DENIED
    assert exchange(monitor, b"get alliance/fleet/falcon\r\n") == (
        b"VALUE alliance/fleet/falcon 0 8\r\noriginal\r\nEND\r\n")
    assert memcached.get(FLEET + "falcon") == b"original"
    assert envoy.summary(4) == [
        ("Denied", "set", FLEET + "falcon"),
        ("Denied", "delete", FLEET + "falcon"),
        ("Denied", "get", "alliance/fleet/falcon, empire/plans"),
        ("Request", "get", FLEET + "falcon"),
    ]
    assert envoy.entries(4)[0]["reason"] == "no-allow"


def test_the_jedi_may_do_anything(envoy, memcached):
    jedi = connect_from(JEDI, envoy.addr)
    assert exchange(jedi, b"set empire/deathstar 0 0 12\r\nexhaust-port\r\n") == b"STORED\r\n"
    assert exchange(jedi, b"delete empire/deathstar\r\n") == b"DELETED\r\n"
    assert memcached.get("empire/deathstar") is None


def test_a_stranger_is_refused_at_connect_and_logged(envoy, memcached):
    stranger = connect_from(STRANGER, envoy.addr)
    try:
        stranger.sendall(b"set alliance/fleet/x 0 0 1\r\nZ\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    expect_closed(stranger)
    assert memcached.get(FLEET + "x") is None
    refusal = envoy.entries(1)[0]
    assert refusal["entry_type"] == "Denied"
    assert refusal["source_address"].startswith(STRANGER + ":")
    assert refusal["generic_l7"]["fields"]["status"] == (
        f"no rule allows this remote on port {memcached.port}")


def test_pipelined_requests_get_their_replies_and_denials_in_order(envoy, memcached):
    memcached_checks.check_pipelined_requests_get_their_replies_and_denials_in_order(envoy, memcached)


def test_a_thousand_denials_pipelined_behind_an_allowed_request(envoy, memcached):
    memcached_checks.check_a_thousand_denials_pipelined_behind_an_allowed_request(envoy, memcached)


def test_a_mebibyte_value_passes_intact_through_envoys_chunks(envoy, memcached):
    droid = connect_from(MAINTENANCE, envoy.addr)
    value = big_value()
    droid.sendall(b"set alliance/fleet/plans 0 0 %d\r\n" % len(value) + value + b"\r\n")
    assert read_line(droid) == b"STORED\r\n"
    assert memcached.get(FLEET + "plans") == value
    assert exchange(droid, b"get alliance/fleet/plans\r\n") == (
        b"VALUE alliance/fleet/plans 0 %d\r\n" % len(value) + value + b"\r\nEND\r\n")


def test_meta_requests_are_checked_and_denied_in_order(envoy, memcached):
    memcached.put(FLEET + "a", b"A")
    monitor = connect_from(MONITORING, envoy.addr)
    monitor.sendall(b"mg alliance/fleet/a v\r\nms alliance/fleet/a 1\r\nZ\r\nmg empire/plans v\r\n"
                    b"mn\r\n")
    expected = b"VA 1\r\nA\r\n" + DENIED + DENIED + b"MN\r\n"
    assert read_exactly(monitor, len(expected)) == expected
    assert memcached.get(FLEET + "a") == b"A"
    assert envoy.summary(3)[:3] == [("Request", "get", FLEET + "a"),
                                    ("Denied", "set", FLEET + "a"),
                                    ("Denied", "get", "empire/plans")]


def test_binary_denials_carry_status_8_and_keep_their_place(envoy, memcached):
    memcached.put(FLEET + "a", b"A")
    monitor = connect_from(MONITORING, envoy.addr)
    monitor.sendall(binary_request(GET, b"alliance/fleet/a", opaque=1)
                    + binary_request(SET, b"alliance/fleet/a", bytes(8), b"Z", opaque=2)
                    + binary_request(DELETE, b"empire/plans", opaque=3)
                    + binary_request(GET, b"alliance/fleet/a", opaque=4))
    replies = [read_binary_response(monitor) for _ in range(4)]
    assert [(reply["opcode"], reply["status"], reply["opaque"]) for reply in replies] == [
        (GET, 0, 1), (SET, ACCESS_DENIED, 2), (DELETE, ACCESS_DENIED, 3), (GET, 0, 4)]
    assert replies[0]["body"].endswith(b"A")
    assert replies[1]["body"] == b"access denied"
    assert memcached.get(FLEET + "a") == b"A"


def test_malformed_input_closes_only_its_connection(envoy, memcached):
    monitor = connect_from(MONITORING, envoy.addr)
    memcached.put(FLEET + "a", b"A")
    assert exchange(monitor, b"get alliance/fleet/a\r\n") == b"VALUE alliance/fleet/a 0 1\r\nA\r\nEND\r\n"
    jedi = connect_from(JEDI, envoy.addr)
    try:
        # A command line longer than memcached accepts: the parser's protocol error.
        jedi.sendall(b"delete " + b"k" * 4096 + b"\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    expect_closed(jedi)
    # The connection opened before goes on, and new ones are served.
    assert exchange(monitor, b"get alliance/fleet/a\r\n") == b"VALUE alliance/fleet/a 0 1\r\nA\r\nEND\r\n"
    droid = connect_from(MAINTENANCE, envoy.addr)
    assert exchange(droid, b"set alliance/fleet/b 0 0 1\r\nB\r\n") == b"STORED\r\n"
    closing = [e for e in envoy.entries(4) if e["source_address"].startswith(JEDI + ":")]
    assert len(closing) == 1
    assert closing[0]["entry_type"] == "Denied"
    assert closing[0]["generic_l7"]["fields"]["status"].startswith("Error: protocol error")


def test_a_client_that_half_closes_still_gets_its_replies(envoy, memcached):
    memcached.put(FLEET + "a", b"A")
    monitor = connect_from(MONITORING, envoy.addr)
    monitor.sendall(b"get alliance/fleet/a\r\ndelete alliance/fleet/a\r\n")
    monitor.shutdown(socket.SHUT_WR)
    expected = b"VALUE alliance/fleet/a 0 1\r\nA\r\nEND\r\n" + DENIED
    assert read_exactly(monitor, len(expected)) == expected
    expect_closed(monitor)
    assert memcached.get(FLEET + "a") == b"A"


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/status has no VmRSS")


def test_a_client_that_does_not_read_its_denials_is_held_back_and_loses_none(envoy, memcached):
    """Denials are written by the filter itself, so Envoy's own flow control (the upstream
    stops being read) does not hold back a client that sends denied requests without reading
    the replies: the filter stops reading it while the replies waiting for it are over the
    connection's buffer limit. Its sends then block long before 64 MiB, Envoy's memory stays
    bounded, and every denial arrives, in order, once it reads."""
    memcached.put(FLEET + "a", b"A")
    request = b"delete alliance/fleet/a\r\n"
    batch = request * 4096
    pid = envoy.process.process.pid
    before = resident_kib(pid)
    monitor = connect_from(MONITORING, envoy.addr)
    monitor.settimeout(3)
    sent = 0
    try:
        while sent < 64 * MIB:
            sent += monitor.send(batch[sent % len(batch):])
    except TimeoutError:
        pass
    assert sent < 64 * MIB, "Envoy read 64 MiB of requests whose replies nobody read"
    grown = resident_kib(pid) - before
    assert grown < 48 * 1024, f"Envoy grew by {grown} KiB"
    monitor.settimeout(30)
    whole, part = divmod(sent, len(request))
    assert read_exactly(monitor, whole * len(DENIED)) == DENIED * whole
    if part:
        assert exchange(monitor, request[part:]) == DENIED
    assert exchange(monitor, b"get alliance/fleet/a\r\n") == (
        b"VALUE alliance/fleet/a 0 1\r\nA\r\nEND\r\n")
    assert memcached.get(FLEET + "a") == b"A"


def test_a_stopped_envoy_writes_every_entry_still_queued(envoy):
    """The log's writer thread gathers entries for a few milliseconds before writing them: when
    Envoy stops (SIGTERM) right after the last reply, the queued entries are written all the
    same, as the filter's configuration is destroyed."""
    droid = connect_from(MAINTENANCE, envoy.addr)
    requests = 200
    for i in range(requests):
        assert exchange(droid, b"get %s%d\r\n" % (FLEET.encode(), i)) == b"END\r\n"
    envoy.stop()
    logged = envoy.entries(0)
    assert [entry["generic_l7"]["fields"]["keys"] for entry in logged] == \
        [f"{FLEET}{i}" for i in range(requests)]


def test_a_filter_parsing_another_protocol_than_the_policy_names_refuses_connections(
        tmp_path, memcached, module):
    """The filter set to parse r2d2 in front of a port whose policy has memcache rules: every
    connection is refused and logged, none is passed unchecked."""
    proxy = Envoy(tmp_path, module, "r2d2", memcached.port, "memcached",
                  policy=example_policy(memcached.port), endpoints=EXAMPLE / "config.yaml")
    try:
        for client in (JEDI, MONITORING):
            sock = connect_from(client, proxy.addr)
            try:
                sock.sendall(b"set alliance/fleet/r2 0 0 1\r\nZ\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            expect_closed(sock)
        assert memcached.get(FLEET + "r2") is None
        refusals = proxy.entries(2)
        assert {entry["entry_type"] for entry in refusals} == {"Denied"}
        assert {entry["generic_l7"]["fields"]["status"] for entry in refusals} == {
            f'the filter parses "r2d2" but policy requires l7proto "memcache" on port '
            f'{memcached.port}'}
    finally:
        proxy.stop()


def test_a_pipeline_sent_one_byte_at_a_time_is_decided_as_if_sent_whole(envoy, memcached):
    """Envoy hands the filter what each read brought: here one byte per read, so that every
    frame, a stored value holding CRLF among them, is split at every place."""
    memcached.put(FLEET + "a", b"A")
    monitor = connect_from(MONITORING, envoy.addr)
    pipeline = (b"get alliance/fleet/a\r\n"
                b"set alliance/fleet/a 0 0 9\r\nsplit\r\nup\r\n"
                b"delete alliance/fleet/a\r\n"
                b"mg alliance/fleet/a v\r\n"
                b"get empire/plans\r\n"
                b"get alliance/fleet/a\r\n")
    for byte in pipeline:
        monitor.sendall(bytes([byte]))
        time.sleep(0.002)
    value = b"VALUE alliance/fleet/a 0 1\r\nA\r\nEND\r\n"
    expected = value + DENIED + DENIED + b"VA 1\r\nA\r\n" + DENIED + value
    assert read_exactly(monitor, len(expected)) == expected
    assert memcached.get(FLEET + "a") == b"A"
    assert envoy.summary(6) == [
        ("Request", "get", FLEET + "a"), ("Denied", "set", FLEET + "a"),
        ("Denied", "delete", FLEET + "a"), ("Request", "get", FLEET + "a"),
        ("Denied", "get", "empire/plans"), ("Request", "get", FLEET + "a")]


def test_a_64_mib_frame_closes_its_connection_without_reaching_memcached(envoy, memcached):
    """An allowed binary set whose value is 64 MiB, over the largest value memcached takes: the
    filter closes that connection when the header says so and logs why; the 64 MiB do not
    pile up in Envoy, nothing reaches memcached, and another connection is served."""
    memcached.put(FLEET + "a", b"A")
    pid = envoy.process.process.pid
    before = resident_kib(pid)
    droid = connect_from(MAINTENANCE, envoy.addr)
    value = bytes(range(256)) * (64 * MIB // 256)
    try:
        droid.sendall(binary_request(SET, b"alliance/fleet/a", bytes(8), value, opaque=1))
    except (BrokenPipeError, ConnectionResetError):
        pass
    expect_closed(droid)
    grown = resident_kib(pid) - before
    assert grown < 32 * 1024, f"Envoy grew by {grown} KiB"
    assert memcached.get(FLEET + "a") == b"A"
    monitor = connect_from(MONITORING, envoy.addr)
    assert exchange(monitor, b"get alliance/fleet/a\r\n") == (
        b"VALUE alliance/fleet/a 0 1\r\nA\r\nEND\r\n")
    closing = [e for e in envoy.entries(2) if e["source_address"].startswith(MAINTENANCE + ":")]
    assert [e["generic_l7"]["fields"]["status"] for e in closing] == [
        "Error: protocol error: frame_too_large: value larger than the configured maximum"]


def test_a_malformed_reply_closes_its_connection_and_reaches_no_client(tmp_path, module):
    """Replies go through the parser too: an upstream answering a line longer than any
    memcached reply line (something memcached itself never does, hence a server of the test's
    own) has that connection closed and logged, and none of its bytes reach the client."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer_badly():
        with server:
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"VALUE " + b"x" * 9000 + b"\r\n")
                conn.recv(4096)

    threading.Thread(target=answer_badly, daemon=True).start()
    proxy = Envoy(tmp_path, module, "memcache", port, "memcached", policy=example_policy(port),
                  endpoints=EXAMPLE / "config.yaml")
    try:
        jedi = connect_from(JEDI, proxy.addr)
        jedi.sendall(b"get alliance/fleet/a\r\n")
        received = b""
        try:
            while chunk := jedi.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        assert received == b""
        entries = proxy.entries(2)
        assert [e["generic_l7"]["fields"] for e in entries] == [
            {"command": "get", "keys": "alliance/fleet/a"},
            {"status": "Error: protocol error: frame_too_large: reply line longer than 8 KiB"}]
    finally:
        proxy.stop()
